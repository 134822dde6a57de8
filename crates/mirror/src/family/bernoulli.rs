//! The Bernoulli family on $\{0, 1\}$ in its logit parametrisation.
//!
//! $$ p(s;\theta) = \exp\big(s\,\theta - A(\theta)\big),\qquad s \in \{0,1\}, $$
//! with $T(s) = s$, $h(s) = 1$, natural parameter $\theta = \operatorname{logit} p
//! = \log\frac{p}{1-p} \in \mathbb R$ and
//! $$ A(\theta) = \log(1 + e^\theta),\qquad \nabla A(\theta) = \sigma(\theta) = p,\qquad
//!    \nabla^2 A(\theta) = p(1-p),\qquad \nabla A^*(\mu) = \log\frac{\mu}{1-\mu}, $$
//! on the mean domain $\mu \in (0, 1)$.

use super::{domain_guard, mean_guard, ExponentialFamily};
use crate::error::{check_len, MirrorError, Result};
use crate::special::{log1p_exp, sigmoid};
use faer::Mat;
use rand::RngCore;
use rand_distr::Distribution;

/// The Bernoulli family (no hyperparameters); see the [module documentation](self).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bernoulli;

impl Bernoulli {
    /// The family (it has no hyperparameters to validate).
    pub fn new() -> Self {
        Bernoulli
    }

    /// The natural parameter of success probability $p$: $\theta = \log p - \log(1-p)$.
    ///
    /// # Errors
    /// `InvalidParameter` unless $p \in (0, 1)$ (NaN included).
    pub fn natural_from_prob(p: f64) -> Result<f64> {
        if !(p > 0.0 && p < 1.0) {
            return Err(MirrorError::InvalidParameter {
                name: "p",
                value: p,
                reason: "a success probability in the open interval (0, 1)",
            });
        }
        Ok(p.ln() - (-p).ln_1p())
    }

    /// The success probability $p = \sigma(\theta)$ of a natural parameter.
    ///
    /// # Errors
    /// `OutsideDomain` if $\theta$ is not finite.
    pub fn prob_from_natural(theta: f64) -> Result<f64> {
        domain_guard(&Bernoulli, &[theta])?;
        Ok(sigmoid(theta))
    }
}

impl ExponentialFamily for Bernoulli {
    fn name(&self) -> String {
        "Bernoulli".into()
    }
    fn dim(&self) -> usize {
        1
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s.len() == 1 && (s[0] == 0.0 || s[0] == 1.0)
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta.len() == 1 && theta[0].is_finite()
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu.len() == 1 && mu[0] > 0.0 && mu[0] < 1.0
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = s[0];
    }
    fn log_base_measure(&self, _s: &[f64]) -> f64 {
        0.0
    }
    /// $A(\theta) = \log(1 + e^\theta)$, evaluated without overflow.
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        domain_guard(self, theta)?;
        Ok(log1p_exp(theta[0]))
    }
    /// $\nabla A(\theta) = \sigma(\theta) = 1/(1+e^{-\theta})$.
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        domain_guard(self, theta)?;
        check_len("mean: output", 1, mu.len())?;
        mu[0] = sigmoid(theta[0]);
        Ok(())
    }
    /// $\nabla^2 A(\theta) = \sigma(\theta)\,\sigma(-\theta) = p(1-p)$.
    fn fisher(&self, theta: &[f64]) -> Result<Mat<f64>> {
        domain_guard(self, theta)?;
        Ok(Mat::from_fn(1, 1, |_, _| {
            sigmoid(theta[0]) * sigmoid(-theta[0])
        }))
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()> {
        domain_guard(self, theta)?;
        check_len("sample: output", 1, s.len())?;
        let p = sigmoid(theta[0]);
        let d = rand_distr::Bernoulli::new(p).map_err(|_| MirrorError::InvalidParameter {
            name: "p",
            value: p,
            reason: "a probability in [0, 1]",
        })?;
        s[0] = if d.sample(rng) { 1.0 } else { 0.0 };
        Ok(())
    }
    /// Closed form $\nabla A^*(\mu) = \log\mu - \log(1-\mu)$.
    fn natural_from_mean(&self, mu: &[f64], theta: &mut [f64]) -> Result<()> {
        mean_guard(self, mu)?;
        check_len("natural_from_mean: theta", 1, theta.len())?;
        theta[0] = mu[0].ln() - (-mu[0]).ln_1p();
        Ok(())
    }
}
