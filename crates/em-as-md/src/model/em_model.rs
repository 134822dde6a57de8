//! The E-/M-step capability a model offers to EM ([`EmModel`]); the solver that drives
//! it is [`crate::solve::em::Em`].

use crate::data::Dataset;
use crate::error::Result;
use crate::inner::{InnerStats, Mergeable};
use crate::model::ConditionalFamily;

/// A model EM can fit: a [`ConditionalFamily`] with an E-step producing mergeable posterior
/// statistics and an M-step consuming them.
pub trait EmModel: ConditionalFamily {
    /// Merged posterior statistics.
    type Stats: Mergeable;
    /// E-step at θ: merged posterior statistics and L(θ) (average negative log-likelihood).
    fn e_step(&self, data: &Dataset, theta: &[f64]) -> Result<(Self::Stats, f64)>;
    /// M-step: θ_next = argmax of the expected complete-data log-likelihood given the stats
    /// (θ = current parameters, a warm start for iterative inner solvers).
    fn m_step(
        &self,
        data: &Dataset,
        stats: &Self::Stats,
        theta: &[f64],
        next: &mut [f64],
    ) -> Result<InnerStats>;
}
