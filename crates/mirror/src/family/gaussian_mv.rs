//! The univariate Gaussian family with unknown mean and variance.
//!
//! With $m$ the mean and $v = \sigma^2$ the variance,
//! $$ p(s;\theta) = \frac{1}{\sqrt{2\pi}}\exp\big(\langle T(s),\theta\rangle - A(\theta)\big),
//!    \qquad T(s) = (s, s^2),\quad h(s) = \frac1{\sqrt{2\pi}},\quad
//!    \theta = \Big(\frac{m}{v}, -\frac{1}{2v}\Big), $$
//! natural domain $\theta_2 < 0$, and
//! $$ A(\theta) = -\frac{\theta_1^2}{4\theta_2} - \frac12\log(-2\theta_2),\qquad
//!    \nabla A(\theta) = (m,\ m^2 + v), $$
//! $$ \nabla^2 A(\theta) = \begin{pmatrix} v & 2mv \\ 2mv & 4m^2v + 2v^2\end{pmatrix},
//!    \qquad \nabla A^*(\mu) = \Big(\frac{\mu_1}{\mu_2-\mu_1^2},\
//!    -\frac{1}{2(\mu_2-\mu_1^2)}\Big), $$
//! on the mean domain $\mu_2 > \mu_1^2$.

use super::{domain_guard, mean_guard, ExponentialFamily};
use crate::error::{check_len, MirrorError, Result};
use faer::Mat;
use rand::RngCore;
use rand_distr::Distribution;

/// The Gaussian family with unknown mean and variance; see the
/// [module documentation](self).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gaussian;

impl Gaussian {
    /// The family (it has no hyperparameters to validate).
    pub fn new() -> Self {
        Gaussian
    }

    /// The natural parameter $\theta = (m/v, -1/(2v))$ of mean $m$ and variance $v$.
    ///
    /// # Errors
    /// `InvalidParameter` if $m$ is not finite or $v$ is not finite and $> 0$.
    pub fn natural_from_mean_var(mean: f64, var: f64) -> Result<[f64; 2]> {
        if !mean.is_finite() {
            return Err(MirrorError::InvalidParameter {
                name: "mean",
                value: mean,
                reason: "a finite mean",
            });
        }
        if !(var > 0.0 && var.is_finite()) {
            return Err(MirrorError::InvalidParameter {
                name: "var",
                value: var,
                reason: "a finite variance > 0",
            });
        }
        Ok([mean / var, -0.5 / var])
    }

    /// Mean and variance $(m, v) = (-\theta_1/(2\theta_2), -1/(2\theta_2))$ of a natural
    /// parameter.
    ///
    /// # Errors
    /// `OutsideDomain` unless $\theta$ is finite with $\theta_2 < 0$.
    pub fn mean_var_from_natural(theta: &[f64]) -> Result<(f64, f64)> {
        domain_guard(&Gaussian, theta)?;
        let v = -0.5 / theta[1];
        let m = theta[0] * v;
        if !(m.is_finite() && v.is_finite()) {
            return Err(MirrorError::NonFinite {
                what: "Gaussian mean and variance",
            });
        }
        Ok((m, v))
    }
}

impl ExponentialFamily for Gaussian {
    fn name(&self) -> String {
        "Gaussian(mean and variance)".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s.len() == 1 && s[0].is_finite()
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta.len() == 2 && theta[0].is_finite() && theta[1].is_finite() && theta[1] < 0.0
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu.len() == 2 && mu[0].is_finite() && mu[1].is_finite() && mu[1] - mu[0] * mu[0] > 0.0
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = s[0];
        t[1] = s[0] * s[0];
    }
    /// $\log h(s) = -\tfrac12\log 2\pi$.
    fn log_base_measure(&self, _s: &[f64]) -> f64 {
        -0.5 * (2.0 * std::f64::consts::PI).ln()
    }
    /// $A(\theta) = -\theta_1^2/(4\theta_2) - \tfrac12\log(-2\theta_2)$.
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        domain_guard(self, theta)?;
        Ok(-theta[0] * theta[0] / (4.0 * theta[1]) - 0.5 * (-2.0 * theta[1]).ln())
    }
    /// $\nabla A(\theta) = (m, m^2 + v)$ with $(m, v)$ from
    /// [`Gaussian::mean_var_from_natural`].
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        check_len("mean: output", 2, mu.len())?;
        let (m, v) = Gaussian::mean_var_from_natural(theta)?;
        mu[0] = m;
        mu[1] = m * m + v;
        Ok(())
    }
    /// $\nabla^2 A(\theta) = \operatorname{Cov}(s, s^2)$: $v$, $2mv$, $4m^2v + 2v^2$.
    fn fisher(&self, theta: &[f64]) -> Result<Mat<f64>> {
        let (m, v) = Gaussian::mean_var_from_natural(theta)?;
        let c = 2.0 * m * v;
        let d = 4.0 * m * m * v + 2.0 * v * v;
        Ok(Mat::from_fn(2, 2, |i, j| match (i, j) {
            (0, 0) => v,
            (1, 1) => d,
            _ => c,
        }))
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()> {
        check_len("sample: output", 1, s.len())?;
        let (m, v) = Gaussian::mean_var_from_natural(theta)?;
        let d = rand_distr::Normal::new(m, v.sqrt()).map_err(|_| MirrorError::NonFinite {
            what: "Gaussian standard deviation",
        })?;
        s[0] = d.sample(rng);
        Ok(())
    }
    /// Newton (if used through [`newton_natural_from_mean`](super::newton_natural_from_mean))
    /// starts at the standard normal, $\theta = (0, -\tfrac12)$.
    fn newton_start(&self, theta: &mut [f64]) {
        theta[0] = 0.0;
        theta[1] = -0.5;
    }
    /// Closed form $\nabla A^*(\mu)$ through $v = \mu_2 - \mu_1^2$.
    fn natural_from_mean(&self, mu: &[f64], theta: &mut [f64]) -> Result<()> {
        mean_guard(self, mu)?;
        check_len("natural_from_mean: theta", 2, theta.len())?;
        let v = mu[1] - mu[0] * mu[0];
        theta[0] = mu[0] / v;
        theta[1] = -0.5 / v;
        Ok(())
    }
}
