//! The exponential family of exponential distributions on $[0, \infty)$.
//!
//! $$ p(s;\theta) = \exp\big(s\,\theta - A(\theta)\big),\qquad s \ge 0,\qquad
//!    T(s) = s,\quad h(s) = \mathbb 1[s \ge 0],\quad \theta = -\lambda < 0, $$
//! $$ A(\theta) = -\log(-\theta),\qquad \nabla A(\theta) = -\frac1\theta = \frac1\lambda,
//!    \qquad \nabla^2 A(\theta) = \frac1{\theta^2},\qquad \nabla A^*(\mu) = -\frac1\mu, $$
//! on the natural domain $\theta < 0$ (with $1/\theta$ finite, so that the mean is) and the
//! mean domain $\mu > 0$.

use super::{domain_guard, mean_guard, ExponentialFamily};
use crate::error::{check_len, MirrorError, Result};
use faer::Mat;
use rand::RngCore;
use rand_distr::Distribution;

/// The exponential-distribution family (no hyperparameters); see the
/// [module documentation](self).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Exponential;

impl Exponential {
    /// The family (it has no hyperparameters to validate).
    pub fn new() -> Self {
        Exponential
    }

    /// The natural parameter $\theta = -\lambda$ of a rate $\lambda$.
    ///
    /// # Errors
    /// `InvalidParameter` unless $\lambda$ is finite and $> 0$.
    pub fn natural_from_rate(rate: f64) -> Result<f64> {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(MirrorError::InvalidParameter {
                name: "rate",
                value: rate,
                reason: "a finite rate > 0",
            });
        }
        Ok(-rate)
    }
}

impl ExponentialFamily for Exponential {
    fn name(&self) -> String {
        "Exponential".into()
    }
    fn dim(&self) -> usize {
        1
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s.len() == 1 && s[0] >= 0.0 && s[0].is_finite()
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta.len() == 1 && theta[0] < 0.0 && (1.0 / theta[0]).is_finite()
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu.len() == 1 && mu[0] > 0.0 && mu[0].is_finite()
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = s[0];
    }
    fn log_base_measure(&self, _s: &[f64]) -> f64 {
        0.0
    }
    /// $A(\theta) = -\log(-\theta)$.
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        domain_guard(self, theta)?;
        Ok(-(-theta[0]).ln())
    }
    /// $\nabla A(\theta) = -1/\theta$.
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        domain_guard(self, theta)?;
        check_len("mean: output", 1, mu.len())?;
        mu[0] = -1.0 / theta[0];
        Ok(())
    }
    /// $\nabla^2 A(\theta) = 1/\theta^2$.
    fn fisher(&self, theta: &[f64]) -> Result<Mat<f64>> {
        domain_guard(self, theta)?;
        Ok(Mat::from_fn(1, 1, |_, _| 1.0 / (theta[0] * theta[0])))
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()> {
        domain_guard(self, theta)?;
        check_len("sample: output", 1, s.len())?;
        let rate = -theta[0];
        let d = rand_distr::Exp::new(rate).map_err(|_| MirrorError::InvalidParameter {
            name: "rate",
            value: rate,
            reason: "a finite rate > 0",
        })?;
        s[0] = d.sample(rng);
        Ok(())
    }
    /// Newton (if used through [`newton_natural_from_mean`](super::newton_natural_from_mean))
    /// starts at $\theta = -1$, inside the domain.
    fn newton_start(&self, theta: &mut [f64]) {
        theta[0] = -1.0;
    }
    /// Closed form $\nabla A^*(\mu) = -1/\mu$.
    fn natural_from_mean(&self, mu: &[f64], theta: &mut [f64]) -> Result<()> {
        mean_guard(self, mu)?;
        check_len("natural_from_mean: theta", 1, theta.len())?;
        theta[0] = -1.0 / mu[0];
        Ok(())
    }
}
