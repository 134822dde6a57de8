//! The logistic expert ([`Logistic`]): Bernoulli with the canonical (logit) link.

use super::{Expert, ExpertSpec};
use crate::error::Result;
use mirror::special::sigmoid;
use mirror::ExponentialFamily;

/// Logistic regression: $P(y = 1 \mid x, z = k) = \sigma(b^\top x)$ in the Bernoulli
/// family ($\eta = b^\top x$, $\nabla A = \sigma(\eta)$, $\nabla^2 A = \sigma(1-\sigma)$).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Logistic {
    family: mirror::Bernoulli,
}

impl Logistic {
    /// The expert.
    pub fn new() -> Self {
        Logistic {
            family: mirror::Bernoulli::new(),
        }
    }
}

impl Expert for Logistic {
    fn name(&self) -> String {
        "logistic".into()
    }
    fn family(&self) -> &dyn ExponentialFamily {
        &self.family
    }
    fn n_regressed(&self) -> usize {
        1
    }
    /// $\mu = \sigma(\eta)$, $F = \mu(1-\mu)$.
    fn moments(&self, eta: &[f64], mu: &mut [f64], fisher: &mut [f64]) -> Result<()> {
        let s = sigmoid(eta[0]);
        mu[0] = s;
        fisher[0] = s * (1.0 - s);
        Ok(())
    }
    fn spec(&self) -> Option<ExpertSpec> {
        Some(ExpertSpec::new("logistic"))
    }
    fn n_classes(&self) -> Option<usize> {
        Some(2)
    }
    /// $(1 - \sigma(\eta), \sigma(\eta))$.
    fn class_probs(&self, params: &[f64], x: &[f64], out: &mut [f64]) -> Result<()> {
        let mut eta = [0.0];
        self.natural(params, x, &mut eta);
        let p = sigmoid(eta[0]);
        out[0] = 1.0 - p;
        out[1] = p;
        Ok(())
    }
    /// `prob_1`: the predictive mean is $P(y = 1 \mid x)$.
    fn prediction_names(&self) -> Vec<String> {
        vec!["prob_1".into()]
    }
}
