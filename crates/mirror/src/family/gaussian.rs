//! The Gaussian family with known variance $\sigma^2$ (unknown mean).
//!
//! $$ p(s;\theta) = h(s)\exp\big(s\,\theta - A(\theta)\big),\qquad
//!    T(s) = s,\quad h(s) = \mathcal N(s; 0, \sigma^2)
//!    = \frac{1}{\sqrt{2\pi\sigma^2}} e^{-s^2/(2\sigma^2)},\quad
//!    \theta = \frac{\mu}{\sigma^2} \in \mathbb R, $$
//! $$ A(\theta) = \frac{\sigma^2\theta^2}{2},\qquad \nabla A(\theta) = \sigma^2\theta,
//!    \qquad \nabla^2 A(\theta) = \sigma^2,\qquad \nabla A^*(\mu) = \frac{\mu}{\sigma^2}. $$

use super::{domain_guard, mean_guard, ExponentialFamily};
use crate::error::{check_len, MirrorError, Result};
use faer::Mat;
use rand::RngCore;
use rand_distr::Distribution;

/// The Gaussian family with known variance; see the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianKnownVariance {
    sigma2: f64,
}

impl GaussianKnownVariance {
    /// The family $\mathcal N(\mu, \sigma^2)$ with the variance $\sigma^2$ fixed.
    ///
    /// # Errors
    /// `InvalidParameter` unless `sigma2` is finite and $> 0$.
    pub fn new(sigma2: f64) -> Result<Self> {
        if !(sigma2 > 0.0 && sigma2.is_finite()) {
            return Err(MirrorError::InvalidParameter {
                name: "sigma2",
                value: sigma2,
                reason: "a finite variance > 0",
            });
        }
        Ok(GaussianKnownVariance { sigma2 })
    }

    /// The known variance $\sigma^2$.
    pub fn variance(&self) -> f64 {
        self.sigma2
    }
}

impl ExponentialFamily for GaussianKnownVariance {
    fn name(&self) -> String {
        format!("Gaussian(known variance {})", self.sigma2)
    }
    fn dim(&self) -> usize {
        1
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s.len() == 1 && s[0].is_finite()
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta.len() == 1 && theta[0].is_finite()
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu.len() == 1 && mu[0].is_finite()
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = s[0];
    }
    /// $\log h(s) = -\tfrac12\log(2\pi\sigma^2) - s^2/(2\sigma^2)$.
    fn log_base_measure(&self, s: &[f64]) -> f64 {
        -0.5 * (2.0 * std::f64::consts::PI * self.sigma2).ln() - s[0] * s[0] / (2.0 * self.sigma2)
    }
    /// $A(\theta) = \sigma^2\theta^2/2$.
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        domain_guard(self, theta)?;
        Ok(0.5 * self.sigma2 * theta[0] * theta[0])
    }
    /// $\nabla A(\theta) = \sigma^2\theta$.
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        domain_guard(self, theta)?;
        check_len("mean: output", 1, mu.len())?;
        mu[0] = self.sigma2 * theta[0];
        Ok(())
    }
    /// $\nabla^2 A(\theta) = \sigma^2$.
    fn fisher(&self, theta: &[f64]) -> Result<Mat<f64>> {
        domain_guard(self, theta)?;
        Ok(Mat::from_fn(1, 1, |_, _| self.sigma2))
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()> {
        domain_guard(self, theta)?;
        check_len("sample: output", 1, s.len())?;
        let m = self.sigma2 * theta[0];
        let d =
            rand_distr::Normal::new(m, self.sigma2.sqrt()).map_err(|_| MirrorError::NonFinite {
                what: "Gaussian mean",
            })?;
        s[0] = d.sample(rng);
        Ok(())
    }
    /// Closed form $\nabla A^*(\mu) = \mu/\sigma^2$.
    fn natural_from_mean(&self, mu: &[f64], theta: &mut [f64]) -> Result<()> {
        mean_guard(self, mu)?;
        check_len("natural_from_mean: theta", 1, theta.len())?;
        theta[0] = mu[0] / self.sigma2;
        Ok(())
    }
}
