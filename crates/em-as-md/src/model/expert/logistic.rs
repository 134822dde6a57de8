//! The logistic expert ([`Logistic`]): Bernoulli with the canonical (logit) link.

use super::{check_ridge, with_ridge_name, Expert, ExpertSpec};
use crate::data::Dataset;
use crate::error::Result;
use crate::inner::softmax::{Labels, SoftmaxRegression};
use crate::inner::sums::NewtonSums;
use mirror::batch_exp::exp_in_place;
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
    /// $y\eta - \log(1 + e^\eta)$ with $\log(1+e^\eta) = \max(\eta, 0) + \log(1 +
    /// e^{-|\eta|})$ (the family's [`log1p_exp`](mirror::special::log1p_exp) split),
    /// the exponentials of the block taken at once ([`exp_in_place`]).
    fn add_log_densities(&self, y: &[f64], eta: &[f64], out: &mut [f64], work: &mut [f64]) -> bool {
        let m = eta.len();
        let e = &mut work[..m];
        for (w, h) in e.iter_mut().zip(eta) {
            *w = -h.abs();
        }
        exp_in_place(e);
        for (o, ((yi, h), ei)) in out.iter_mut().zip(y.iter().zip(eta).zip(e.iter())) {
            *o += yi * h - (h.max(0.0) + ei.ln_1p());
        }
        true
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The batched log densities against the family's own $\log p_F(y;\eta)$, one row at
    /// a time, across the range of $\eta$ (both signs, $|\eta|$ up to 700, 0) and both
    /// labels; a non-finite $\eta$ gives a non-finite value.
    #[test]
    fn batched_log_densities_are_the_familys() {
        let e = Logistic::new();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let m = 1000;
        let eta: Vec<f64> = (0..m)
            .map(|l| match l % 4 {
                0 => rng.random_range(-5.0..5.0),
                1 => rng.random_range(-60.0..60.0),
                2 => rng.random_range(-700.0..700.0),
                _ => 0.0,
            })
            .collect();
        let y: Vec<f64> = (0..m).map(|_| f64::from(rng.random_bool(0.5))).collect();
        let start: Vec<f64> = (0..m).map(|_| rng.random_range(-3.0..3.0)).collect();
        let mut out = start.clone();
        let mut work = vec![f64::NAN; m];
        assert!(e.add_log_densities(&y, &eta, &mut out, &mut work));
        let fam = e.family();
        for l in 0..m {
            let direct = start[l] + fam.log_density(&[eta[l]], &[y[l]]).unwrap();
            assert!(
                (out[l] - direct).abs() <= 4.0 * f64::EPSILON * direct.abs().max(1.0),
                "row {l}: eta {} y {}: {} vs {direct}",
                eta[l],
                y[l],
                out[l]
            );
        }
        let mut bad = vec![0.0; 3];
        e.add_log_densities(
            &[1.0, 0.0, 1.0],
            &[f64::NAN, f64::INFINITY, 1.0],
            &mut bad,
            &mut work,
        );
        assert!(!bad[0].is_finite() && !bad[1].is_finite(), "{bad:?}");
        assert!(bad[2].is_finite());
    }
}
