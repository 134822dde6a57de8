//! The Gamma family with known shape $k$, written as a researcher would write a new
//! [`mirror::ExponentialFamily`] (shared by the `plug_in_family` and `plug_in_expert`
//! examples through `#[path]`):
//! $$ p(s;\theta) = \frac{s^{k-1}}{\Gamma(k)}\exp\big(s\theta + k\log(-\theta)\big),\quad
//!    T(s) = s,\ \theta = -\text{rate} < 0,\ A(\theta) = -k\log(-\theta). $$

use mirror::{ExponentialFamily, Result};
use rand::RngCore;
use rand_distr::Distribution;

/// Gamma distributions with a fixed shape `k > 0` (validate it in a real constructor).
pub struct GammaKnownShape {
    /// The shape $k > 0$.
    pub k: f64,
}

impl ExponentialFamily for GammaKnownShape {
    fn name(&self) -> String {
        format!("Gamma(shape {})", self.k)
    }
    fn dim(&self) -> usize {
        1
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s[0] > 0.0 && s[0].is_finite()
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta[0] < 0.0 && theta[0].is_finite()
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu[0] > 0.0 && mu[0].is_finite()
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = s[0];
    }
    fn log_base_measure(&self, s: &[f64]) -> f64 {
        (self.k - 1.0) * s[0].ln() - statrs::function::gamma::ln_gamma(self.k)
    }
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        Ok(-self.k * (-theta[0]).ln())
    }
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        mu[0] = -self.k / theta[0];
        Ok(())
    }
    fn fisher(&self, theta: &[f64]) -> Result<faer::Mat<f64>> {
        Ok(faer::Mat::from_fn(1, 1, |_, _| {
            self.k / (theta[0] * theta[0])
        }))
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()> {
        // rand_distr parametrises by shape and scale = 1 / rate.
        let gamma = rand_distr::Gamma::new(self.k, -1.0 / theta[0]).expect("valid parameters");
        s[0] = gamma.sample(rng);
        Ok(())
    }
    // The default Newton inversion of the mean map starts here (θ = 0 is outside).
    fn newton_start(&self, theta: &mut [f64]) {
        theta[0] = -1.0;
    }
}
