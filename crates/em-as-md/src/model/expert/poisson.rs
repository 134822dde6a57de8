//! The Poisson expert ([`Poisson`]): counts with the canonical (log) link.

use super::{check_ridge, with_ridge_name, Expert, ExpertSpec};
use crate::error::{MoeError, Result};
use mirror::ExponentialFamily;

/// Poisson regression with log link: $y \mid x, z = k \sim \text{Poisson}(e^{b^\top x})$
/// ($\nabla A = \nabla^2 A = e^\eta$).
///
/// With a ridge $\lambda > 0$ ([`Poisson::with_ridge`]) the M-step maximises
/// $Q - \frac\lambda2\|b\|^2$ ([`Expert::penalty`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Poisson {
    family: mirror::Poisson,
    ridge: f64,
}

impl Poisson {
    /// The expert.
    pub fn new() -> Self {
        Poisson {
            family: mirror::Poisson::new(),
            ridge: 0.0,
        }
    }
    /// With ridge $\lambda \ge 0$ on its coefficients (see [`Expert::ridge`]).
    ///
    /// # Errors
    /// `InvalidParam { name: "ridge" }` unless $\lambda$ is finite and $\ge 0$.
    pub fn with_ridge(ridge: f64) -> Result<Self> {
        Ok(Poisson {
            ridge: check_ridge(ridge)?,
            ..Poisson::new()
        })
    }
}

impl Expert for Poisson {
    fn name(&self) -> String {
        with_ridge_name("Poisson", self.ridge)
    }
    fn ridge(&self) -> f64 {
        self.ridge
    }
    fn family(&self) -> &dyn ExponentialFamily {
        &self.family
    }
    fn n_regressed(&self) -> usize {
        1
    }
    /// $\mu = F = e^\eta$.
    fn moments(&self, eta: &[f64], mu: &mut [f64], fisher: &mut [f64]) -> Result<()> {
        let e = eta[0].exp();
        if !e.is_finite() {
            return Err(MoeError::NonFinite {
                what: "Poisson rate",
            });
        }
        mu[0] = e;
        fisher[0] = e;
        Ok(())
    }
    fn spec(&self) -> Option<ExpertSpec> {
        Some(ExpertSpec::new("poisson").ridge(self.ridge))
    }
}
