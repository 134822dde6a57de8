//! The logistic expert ([`Logistic`]): Bernoulli with the canonical (logit) link.

use super::{check_ridge, with_ridge_name, Expert, ExpertSpec};
use crate::data::Dataset;
use crate::error::Result;
use crate::inner::softmax::{Labels, SoftmaxRegression};
use crate::inner::sums::NewtonSums;
use mirror::newton::Need;
use mirror::special::sigmoid;
use mirror::ExponentialFamily;

/// Logistic regression: $P(y = 1 \mid x, z = k) = \sigma(b^\top x)$ in the Bernoulli
/// family ($\eta = b^\top x$, $\nabla A = \sigma(\eta)$, $\nabla^2 A = \sigma(1-\sigma)$).
///
/// With a ridge $\lambda > 0$ ([`Logistic::with_ridge`]) the M-step maximises
/// $Q - \frac\lambda2\|b\|^2$ ([`Expert::penalty`]), finite even on separable data.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Logistic {
    family: mirror::Bernoulli,
    ridge: f64,
}

impl Logistic {
    /// The expert.
    pub fn new() -> Self {
        Logistic {
            family: mirror::Bernoulli::new(),
            ridge: 0.0,
        }
    }
    /// With ridge $\lambda \ge 0$ on its coefficients (see [`Expert::ridge`]).
    ///
    /// # Errors
    /// `InvalidParam { name: "ridge" }` unless $\lambda$ is finite and $\ge 0$.
    pub fn with_ridge(ridge: f64) -> Result<Self> {
        Ok(Logistic {
            ridge: check_ridge(ridge)?,
            ..Logistic::new()
        })
    }
}

impl Expert for Logistic {
    fn name(&self) -> String {
        with_ridge_name("logistic", self.ridge)
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
    /// $\mu = \sigma(\eta)$, $F = \mu(1-\mu)$.
    fn moments(&self, eta: &[f64], mu: &mut [f64], fisher: &mut [f64]) -> Result<()> {
        let s = sigmoid(eta[0]);
        mu[0] = s;
        fisher[0] = s * (1.0 - s);
        Ok(())
    }
    /// The two-class softmax regression's pass ([`SoftmaxRegression`] with
    /// [`Labels::Binary`] $t_i = y_i$ and row weights: logits by one matrix product per
    /// block, the Hessian $\sum_i w_i\sigma_i(1-\sigma_i)x_ix_i^\top$ from weighted Gram
    /// blocks) instead of the generic per-row moments — the same sums.
    fn weighted_round(
        &self,
        data: &Dataset,
        weights: &[f64],
        params: &[f64],
        need: Option<Need>,
    ) -> Result<NewtonSums> {
        SoftmaxRegression::for_pass(data, 2, Labels::Binary(data.y_all()), Some(weights))?
            .round(params, need == Some(Need::Hessian))
    }
    fn spec(&self) -> Option<ExpertSpec> {
        Some(ExpertSpec::new("logistic").ridge(self.ridge))
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
