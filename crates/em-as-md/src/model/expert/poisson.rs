//! The Poisson expert ([`Poisson`]): counts with the canonical (log) link.

use super::{Expert, ExpertSpec};
use crate::error::{MoeError, Result};
use mirror::ExponentialFamily;

/// Poisson regression with log link: $y \mid x, z = k \sim \text{Poisson}(e^{b^\top x})$
/// ($\nabla A = \nabla^2 A = e^\eta$).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Poisson {
    family: mirror::Poisson,
}

impl Poisson {
    /// The expert.
    pub fn new() -> Self {
        Poisson {
            family: mirror::Poisson::new(),
        }
    }
}

impl Expert for Poisson {
    fn name(&self) -> String {
        "Poisson".into()
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
        Some(ExpertSpec::new("poisson"))
    }
}
