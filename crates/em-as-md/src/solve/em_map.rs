//! What EM and its extrapolations need of a problem ([`EmMap`]): the E-step, the M-step
//! and the objective — not where the rows live. [`Problem`] (rows in memory) is one
//! implementation; [`crate::shard::ShardProblem`] (rows streamed from a
//! [`RowSource`](crate::data::source::RowSource), statistics merged from chunks) is
//! another, so [`Em`](crate::solve::em::Em) and [`Squarem`](crate::solve::squarem::Squarem)
//! are one step function each for both.

use crate::error::Result;
use crate::inner::InnerStats;
use crate::model::EmModel;
use crate::solve::executor::Objective;
use crate::solve::problem::Problem;

/// The EM map $F = M \circ E$ of a problem, split into its two halves.
pub trait EmMap: Objective {
    /// Merged posterior statistics of an E-step.
    type Stats: Send + 'static;
    /// Number of parameters $\dim\theta$.
    fn n_params(&self) -> usize;
    /// E-step at θ: merged statistics and $L(\theta)$.
    ///
    /// # Errors
    /// Whatever the model's E-step reports (θ outside the domain, a bad row).
    fn e_step(&self, theta: &[f64]) -> Result<(Self::Stats, f64)>;
    /// M-step from the statistics of the E-step at `theta` into `next`.
    ///
    /// # Errors
    /// Whatever the model's M-step reports (a singular Hessian, an empty component).
    fn m_step(&self, stats: &Self::Stats, theta: &[f64], next: &mut [f64]) -> Result<InnerStats>;
    /// $D_{\mathcal A}(\Phi(\theta_{\text{next}}), \Phi(\theta))$ for the iteration
    /// record, or NaN when the problem does not compute it.
    ///
    /// # Errors
    /// As the problem's Bregman divergence.
    fn bregman_step(&self, _next: &[f64], _theta: &[f64]) -> Result<f64> {
        Ok(f64::NAN)
    }
}

impl<M> EmMap for Problem<'_, M>
where
    M: EmModel + ?Sized,
    M::Stats: 'static,
{
    type Stats = M::Stats;
    fn n_params(&self) -> usize {
        self.model.n_params()
    }
    fn e_step(&self, theta: &[f64]) -> Result<(M::Stats, f64)> {
        self.model.e_step(self.data, theta)
    }
    fn m_step(&self, stats: &M::Stats, theta: &[f64], next: &mut [f64]) -> Result<InnerStats> {
        self.model.m_step(self.data, stats, theta, next)
    }
    fn bregman_step(&self, next: &[f64], theta: &[f64]) -> Result<f64> {
        self.stacked_bregman(next, theta)
    }
}
