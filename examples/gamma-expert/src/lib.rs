//! A researcher's own exponential family, written outside the mdem workspace against its
//! public traits only, and plugged into mixtures of experts.
//!
//! **The family.** The two-parameter Gamma law (shape $k > 0$ and rate $\lambda > 0$ both
//! unknown) is an exponential family in $s > 0$ with
//! $$ T(s) = (s,\ \log s),\qquad \theta = (-\lambda,\ k - 1),\qquad h(s) = 1, $$
//! $$ A(\theta) = \log\Gamma(\theta_2 + 1) - (\theta_2 + 1)\log(-\theta_1), $$
//! natural domain $\{\theta_1 < 0,\ \theta_2 > -1\}$ and
//! $$ \nabla A = \Big(\frac{k}{\lambda},\ \psi(k) - \log\lambda\Big),\qquad
//!    \nabla^2 A = \begin{pmatrix} k/\lambda^2 & 1/\lambda\\ 1/\lambda & \psi_1(k)\end{pmatrix}, $$
//! with $\psi$, $\psi_1$ the digamma and trigamma functions ([`mirror::special`]).
//! Its mean map has no closed-form inverse, so [`ExponentialFamily::natural_from_mean`] is
//! mirror's default Newton inversion, started at [`ExponentialFamily::newton_start`].
//!
//! **As an expert.** `em_as_md::Glm` regresses the first natural component on the
//! features, $-\lambda(x) = \beta^\top x$ (the canonical link), and keeps $k - 1$ as a
//! per-expert constant ([`gamma_expert`]). Registered once under [`FAMILY`] ([`register`]),
//! the family is saved by name in model files and rebuilt on load.

use em_as_md::model::expert::{Glm, Params};
use em_as_md::model::registry::{self, FamilyEntry};
use mirror::special::{digamma, ln_gamma, trigamma};
use mirror::{faer, rand, ExponentialFamily, MirrorError};
use rand_distr::Distribution;
use std::sync::Arc;

/// The name the family is registered under (and saved with).
pub const FAMILY: &str = "gamma-shape-rate";

/// The Gamma family with unknown shape and rate (see the [crate documentation](crate)).
#[derive(Debug, Clone, Copy, Default)]
pub struct GammaShapeRate;

impl GammaShapeRate {
    /// $(k, \lambda) = (\theta_2 + 1, -\theta_1)$, or `OutsideDomain`.
    fn shape_rate(&self, theta: &[f64]) -> mirror::Result<(f64, f64)> {
        if !self.in_natural_domain(theta) {
            return Err(MirrorError::OutsideDomain {
                what: "natural parameter",
                reason: format!("Gamma needs θ₁ < 0 and θ₂ > −1, got {theta:?}"),
            });
        }
        Ok((theta[1] + 1.0, -theta[0]))
    }
}

impl ExponentialFamily for GammaShapeRate {
    fn name(&self) -> String {
        "Gamma(shape, rate)".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s.len() == 1 && s[0] > 0.0 && s[0].is_finite()
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta.len() == 2 && theta[0] < 0.0 && theta[1] > -1.0 && theta[1].is_finite()
    }
    /// $\mu = (k/\lambda, \psi(k) - \log\lambda)$ is attained exactly when
    /// $\mu_2 < \log\mu_1$ (Jensen: $\mathbb E\log s < \log\mathbb E s$).
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu.len() == 2 && mu[0] > 0.0 && mu[0].is_finite() && mu[1] < mu[0].ln()
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = s[0];
        t[1] = s[0].ln();
    }
    fn log_base_measure(&self, _s: &[f64]) -> f64 {
        0.0
    }
    fn log_partition(&self, theta: &[f64]) -> mirror::Result<f64> {
        let (k, rate) = self.shape_rate(theta)?;
        Ok(ln_gamma(k) - k * rate.ln())
    }
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> mirror::Result<()> {
        let (k, rate) = self.shape_rate(theta)?;
        mu[0] = k / rate;
        mu[1] = digamma(k) - rate.ln();
        Ok(())
    }
    fn fisher(&self, theta: &[f64]) -> mirror::Result<faer::Mat<f64>> {
        let (k, rate) = self.shape_rate(theta)?;
        let f = [[k / (rate * rate), 1.0 / rate], [1.0 / rate, trigamma(k)]];
        Ok(faer::Mat::from_fn(2, 2, |a, b| f[a][b]))
    }
    fn sample(
        &self,
        theta: &[f64],
        rng: &mut dyn rand::RngCore,
        s: &mut [f64],
    ) -> mirror::Result<()> {
        let (k, rate) = self.shape_rate(theta)?;
        // rand_distr parametrises by shape and scale = 1 / rate.
        let gamma =
            rand_distr::Gamma::new(k, 1.0 / rate).map_err(|e| MirrorError::OutsideDomain {
                what: "natural parameter",
                reason: format!("Gamma sampler: {e}"),
            })?;
        s[0] = gamma.sample(rng);
        Ok(())
    }
    /// Shape 1, rate 1 (the default start, θ = 0, is outside the domain).
    fn newton_start(&self, theta: &mut [f64]) {
        theta[0] = -1.0;
        theta[1] = 0.0;
    }
}

/// Builds the family for the registry (it takes no parameters).
fn build(_params: &[f64]) -> em_as_md::Result<Arc<dyn ExponentialFamily>> {
    Ok(Arc::new(GammaShapeRate))
}

/// Registers [`GammaShapeRate`] under [`FAMILY`] (call once; calling again is a no-op), so
/// that a model with it can be saved and loaded.
///
/// # Errors
/// `Registry(Duplicate)` if another family was registered under the same name.
pub fn register() -> em_as_md::Result<()> {
    registry::register_family(
        FamilyEntry::new(FAMILY, &[], build).summary("Gamma with unknown shape and rate"),
    )
}

/// The Gamma-regression expert: $-\lambda(x) = \beta^\top x$ regressed, the shape a
/// per-expert constant starting at $k = 1$ ($\theta_2 = 0$). Registers the family first.
///
/// # Errors
/// As [`register`] and `Glm::registered`.
pub fn gamma_expert() -> em_as_md::Result<Glm> {
    register()?;
    Glm::registered(FAMILY, &Params::new())?.regressing(1, vec![0.0])
}
