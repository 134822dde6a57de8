//! The Poisson family on $\{0, 1, 2, \dots\}$ in its log-rate parametrisation.
//!
//! $$ p(s;\theta) = \frac{1}{s!}\exp\big(s\,\theta - A(\theta)\big),\qquad
//!    T(s) = s,\quad h(s) = \frac{1}{s!},\quad \theta = \log\lambda \in \mathbb R, $$
//! $$ A(\theta) = e^\theta,\qquad \nabla A(\theta) = e^\theta = \lambda,\qquad
//!    \nabla^2 A(\theta) = e^\theta,\qquad \nabla A^*(\mu) = \log\mu, $$
//! on the mean domain $\mu > 0$. The natural domain is taken as
//! $\theta < \log(\texttt{MAX\_LAMBDA})$ of the sampler (about $44$), where the rate is
//! finite and can be sampled.

use super::{domain_guard, mean_guard, ExponentialFamily};
use crate::error::{check_len, MirrorError, Result};
use faer::Mat;
use rand::RngCore;
use rand_distr::Distribution;
use statrs::function::factorial::ln_factorial;

/// The Poisson family (no hyperparameters); see the [module documentation](self).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Poisson;

/// Largest rate accepted (that of `rand_distr::Poisson`).
const MAX_RATE: f64 = rand_distr::Poisson::<f64>::MAX_LAMBDA;

impl Poisson {
    /// Largest rate $e^\theta$ in the natural domain ($1.844\cdot10^{19}$, the sampler's
    /// maximum): [`ExponentialFamily::in_natural_domain`] is $e^\theta \le$ this.
    pub const MAX_RATE: f64 = MAX_RATE;

    /// The family (it has no hyperparameters to validate).
    pub fn new() -> Self {
        Poisson
    }

    /// The natural parameter $\theta = \log\lambda$ of a rate $\lambda$.
    ///
    /// # Errors
    /// `InvalidParameter` unless $0 < \lambda \le$ the sampler's maximum rate
    /// ($1.844\cdot 10^{19}$); NaN is rejected.
    pub fn natural_from_rate(rate: f64) -> Result<f64> {
        if !(rate > 0.0 && rate <= MAX_RATE) {
            return Err(MirrorError::InvalidParameter {
                name: "rate",
                value: rate,
                reason: "a Poisson rate in (0, 1.844e19]",
            });
        }
        Ok(rate.ln())
    }
}

impl ExponentialFamily for Poisson {
    fn name(&self) -> String {
        "Poisson".into()
    }
    fn dim(&self) -> usize {
        1
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s.len() == 1 && s[0] >= 0.0 && s[0].is_finite() && s[0].fract() == 0.0
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta.len() == 1 && theta[0].is_finite() && theta[0].exp() <= MAX_RATE
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu.len() == 1 && mu[0] > 0.0 && mu[0] <= MAX_RATE
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = s[0];
    }
    /// $\log h(s) = -\log s!$ (statrs' `ln_factorial`).
    fn log_base_measure(&self, s: &[f64]) -> f64 {
        -ln_factorial(s[0] as u64)
    }
    /// $A(\theta) = e^\theta$.
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        domain_guard(self, theta)?;
        Ok(theta[0].exp())
    }
    /// $\nabla A(\theta) = e^\theta$.
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        domain_guard(self, theta)?;
        check_len("mean: output", 1, mu.len())?;
        mu[0] = theta[0].exp();
        Ok(())
    }
    /// $\nabla^2 A(\theta) = e^\theta$.
    fn fisher(&self, theta: &[f64]) -> Result<Mat<f64>> {
        domain_guard(self, theta)?;
        Ok(Mat::from_fn(1, 1, |_, _| theta[0].exp()))
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()> {
        domain_guard(self, theta)?;
        check_len("sample: output", 1, s.len())?;
        let rate = theta[0].exp();
        let d = rand_distr::Poisson::new(rate).map_err(|_| MirrorError::InvalidParameter {
            name: "rate",
            value: rate,
            reason: "a Poisson rate in (0, 1.844e19]",
        })?;
        s[0] = d.sample(rng);
        Ok(())
    }
    /// Closed form $\nabla A^*(\mu) = \log\mu$.
    fn natural_from_mean(&self, mu: &[f64], theta: &mut [f64]) -> Result<()> {
        mean_guard(self, mu)?;
        check_len("natural_from_mean: theta", 1, theta.len())?;
        theta[0] = mu[0].ln();
        Ok(())
    }
}
