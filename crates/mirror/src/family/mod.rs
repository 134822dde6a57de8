//! Exponential families in natural parameters.
//!
//! A (regular, minimal unless stated) exponential family on a sample space $\mathcal S$ is
//! $$ p(s;\theta) = h(s)\,\exp\big(\langle T(s), \theta\rangle - A(\theta)\big),
//! \qquad \theta \in \Omega = \{\theta : A(\theta) < \infty\}, $$
//! with sufficient statistic $T$, base measure $h$ and log-partition
//! $A(\theta) = \log \int h(s) e^{\langle T(s), \theta\rangle}\,ds$. Its derivatives are the
//! moments of $T$: the mean parameter $\mu = \nabla A(\theta) = \mathbb E_\theta\[T\]$ and the
//! Fisher information $\nabla^2 A(\theta) = \operatorname{Cov}_\theta\[T\]$. The inverse map
//! $\nabla A^* = (\nabla A)^{-1}$ takes a mean parameter back to the natural one, and
//! $$ \mathrm{KL}(p_{\theta_1} \,\|\, p_{\theta_2}) = D_A(\theta_2, \theta_1)
//!    = D_{A^*}(\mu_1, \mu_2) \quad(\text{note the swap}). $$
//!
//! Observations are passed as `&[f64]` of length [`ExponentialFamily::obs_dim`]
//! (a class label is one entry holding its index).

use crate::error::{check_len, MirrorError, Result};
use crate::map::{bregman, MirrorMap};
use crate::newton::{minimize, sum_noise, EvalOut, FnObjective, Need, NewtonEnd, NewtonSettings};
use faer::Mat;
use rand::RngCore;

/// Relative tolerance of the generic Newton inversion of
/// [`ExponentialFamily::natural_from_mean`]: it stops when
/// $\|\nabla A(\theta) - \mu\|_2 \le \texttt{NEWTON\_TOL}\,(1 + \|\mu\|_\infty)$.
pub const NEWTON_TOL: f64 = 1e-12;
/// Iteration cap of that Newton inversion.
pub const NEWTON_MAX_ITER: usize = 100;

/// An exponential family in its natural parametrisation.
///
/// Required: the statistic $T$, $\log h$, $A$, $\nabla A$, $\nabla^2 A$, domains and a
/// sampler. Provided (override where a closed form exists): $\nabla A^*$ by damped Newton,
/// the log-density, KL as the swapped Bregman divergence of $A$, and the conjugate
/// $A^*(\mu) = \langle\mu, \nabla A^*(\mu)\rangle - A(\nabla A^*(\mu))$.
///
/// Family hyperparameters (known variance, number of classes, known shape) live in the
/// implementing struct and are validated by its constructor.
pub trait ExponentialFamily: Send + Sync {
    /// Short human-readable name, e.g. `"Bernoulli"`.
    fn name(&self) -> String;
    /// Dimension of the natural parameter $\theta$ (and of $T(s)$).
    fn dim(&self) -> usize;
    /// Length of one observation $s$.
    fn obs_dim(&self) -> usize;
    /// Whether `s` lies in the support (e.g. $s \in \{0, 1\}$ for Bernoulli).
    fn in_support(&self, s: &[f64]) -> bool;
    /// Whether $\theta$ lies in the natural domain $\Omega$.
    fn in_natural_domain(&self, theta: &[f64]) -> bool;
    /// Whether $\mu$ lies in the interior of the mean domain $\nabla A(\Omega)$.
    fn in_mean_domain(&self, mu: &[f64]) -> bool;
    /// The sufficient statistic $T(s)$ written into `t` (length [`dim`](Self::dim)).
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]);
    /// $\log h(s)$ (the log base measure).
    fn log_base_measure(&self, s: &[f64]) -> f64;
    /// The log-partition $A(\theta)$.
    fn log_partition(&self, theta: &[f64]) -> Result<f64>;
    /// The mean parameter $\mu = \nabla A(\theta) = \mathbb E_\theta\[T\]$.
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()>;
    /// The Fisher information $\nabla^2 A(\theta) = \operatorname{Cov}_\theta\[T\]$.
    fn fisher(&self, theta: &[f64]) -> Result<Mat<f64>>;
    /// Draw one observation from $p(\cdot;\theta)$ into `s`.
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()>;

    /// The inverse mean map $\theta = \nabla A^*(\mu)$.
    ///
    /// Default: Newton's method ([`newton_natural_from_mean`], the workspace's driver
    /// [`crate::newton`]) on the convex problem
    /// $\min_\theta A(\theta) - \langle \mu, \theta \rangle$, started at $\theta = 0$ (or
    /// wherever [`newton_start`](Self::newton_start) says), with step halving to stay in
    /// the natural domain and decrease the objective; stops when
    /// $\|\nabla A(\theta) - \mu\|_2 \le$ [`NEWTON_TOL`] $(1 + \|\mu\|_\infty)$.
    ///
    /// # Errors
    /// `OutsideDomain` if $\mu$ is not in the mean domain, `NoConvergence` if Newton
    /// does not reach the tolerance in [`NEWTON_MAX_ITER`] iterations.
    fn natural_from_mean(&self, mu: &[f64], theta: &mut [f64]) -> Result<()> {
        newton_natural_from_mean(self, mu, theta)
    }

    /// Starting point of the default Newton inversion (must be in the natural domain).
    fn newton_start(&self, theta: &mut [f64]) {
        theta.iter_mut().for_each(|t| *t = 0.0);
    }

    /// $\log p(s;\theta) = \log h(s) + \langle T(s), \theta\rangle - A(\theta)$;
    /// $-\infty$ outside the support.
    fn log_density(&self, theta: &[f64], s: &[f64]) -> Result<f64> {
        check_len("log_density: theta", self.dim(), theta.len())?;
        check_len("log_density: observation", self.obs_dim(), s.len())?;
        if !self.in_support(s) {
            return Ok(f64::NEG_INFINITY);
        }
        let mut t = vec![0.0; self.dim()];
        self.sufficient_stats(s, &mut t);
        let inner: f64 = t.iter().zip(theta).map(|(a, b)| a * b).sum();
        Ok(self.log_base_measure(s) + inner - self.log_partition(theta)?)
    }

    /// $\mathrm{KL}(p_{\theta_1}\|p_{\theta_2}) = D_A(\theta_2, \theta_1)
    ///  = A(\theta_2) - A(\theta_1) - \langle \nabla A(\theta_1), \theta_2 - \theta_1\rangle$.
    fn kl(&self, theta1: &[f64], theta2: &[f64]) -> Result<f64> {
        bregman(&LogPartition::new(self), theta2, theta1)
    }

    /// The convex conjugate (negative entropy up to $h$)
    /// $A^*(\mu) = \langle \mu, \theta\rangle - A(\theta)$ at $\theta = \nabla A^*(\mu)$.
    fn conjugate(&self, mu: &[f64]) -> Result<f64> {
        let mut theta = vec![0.0; self.dim()];
        self.natural_from_mean(mu, &mut theta)?;
        let inner: f64 = mu.iter().zip(&theta).map(|(a, b)| a * b).sum();
        Ok(inner - self.log_partition(&theta)?)
    }
}

impl<F: ExponentialFamily + ?Sized> ExponentialFamily for &F {
    fn name(&self) -> String {
        (**self).name()
    }
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn obs_dim(&self) -> usize {
        (**self).obs_dim()
    }
    fn in_support(&self, s: &[f64]) -> bool {
        (**self).in_support(s)
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        (**self).in_natural_domain(theta)
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        (**self).in_mean_domain(mu)
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        (**self).sufficient_stats(s, t)
    }
    fn log_base_measure(&self, s: &[f64]) -> f64 {
        (**self).log_base_measure(s)
    }
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        (**self).log_partition(theta)
    }
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        (**self).mean(theta, mu)
    }
    fn fisher(&self, theta: &[f64]) -> Result<Mat<f64>> {
        (**self).fisher(theta)
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()> {
        (**self).sample(theta, rng, s)
    }
    fn natural_from_mean(&self, mu: &[f64], theta: &mut [f64]) -> Result<()> {
        (**self).natural_from_mean(mu, theta)
    }
    fn newton_start(&self, theta: &mut [f64]) {
        (**self).newton_start(theta)
    }
    fn log_density(&self, theta: &[f64], s: &[f64]) -> Result<f64> {
        (**self).log_density(theta, s)
    }
    fn kl(&self, theta1: &[f64], theta2: &[f64]) -> Result<f64> {
        (**self).kl(theta1, theta2)
    }
    fn conjugate(&self, mu: &[f64]) -> Result<f64> {
        (**self).conjugate(mu)
    }
}

/// The log-partition of a family as a mirror map: $\psi = A$, $\nabla\psi = \nabla A$
/// (natural → mean), $\nabla\psi^* = \nabla A^*$ (mean → natural). Every exponential
/// family is thereby a mirror map, and $D_A(\theta_2,\theta_1)$ is a KL divergence.
#[derive(Debug, Clone, Copy)]
pub struct LogPartition<F>(F);

impl<F: ExponentialFamily> LogPartition<F> {
    /// Wraps a family (pass `&family` to borrow).
    pub fn new(family: F) -> Self {
        LogPartition(family)
    }
    /// The wrapped family.
    pub fn family(&self) -> &F {
        &self.0
    }
}

impl<F: ExponentialFamily> MirrorMap for LogPartition<F> {
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn in_domain(&self, x: &[f64]) -> bool {
        x.len() == self.0.dim() && self.0.in_natural_domain(x)
    }
    fn potential(&self, x: &[f64]) -> Result<f64> {
        domain_guard(&self.0, x)?;
        self.0.log_partition(x)
    }
    fn grad(&self, x: &[f64], out: &mut [f64]) -> Result<()> {
        domain_guard(&self.0, x)?;
        self.0.mean(x, out)
    }
    fn grad_conj(&self, y: &[f64], out: &mut [f64]) -> Result<()> {
        self.0.natural_from_mean(y, out)
    }
}

fn domain_guard<F: ExponentialFamily + ?Sized>(f: &F, theta: &[f64]) -> Result<()> {
    check_len("natural parameter", f.dim(), theta.len())?;
    if f.in_natural_domain(theta) {
        Ok(())
    } else {
        Err(MirrorError::OutsideDomain {
            what: "natural parameter",
            reason: format!("{theta:?} is not in the natural domain of {}", f.name()),
        })
    }
}

/// Damped Newton inversion of the mean map (see
/// [`ExponentialFamily::natural_from_mean`]); public so that families overriding the
/// method can still fall back to it.
///
/// Minimises $\phi(\theta) = A(\theta) - \langle\mu, \theta\rangle$ (gradient
/// $\nabla A(\theta) - \mu$, Hessian the Fisher information) with the workspace's Newton
/// driver ([`crate::newton::minimize`], plain Newton) from
/// [`ExponentialFamily::newton_start`]. A trial outside the natural domain has
/// $\phi = +\infty$, so the line search halves the step back into it. The round-off of
/// $\phi$ is estimated by [`crate::newton::sum_noise`] over the parts
/// $|A(\theta)| + \sum_j |\mu_j\theta_j|$, which lets the driver finish on the gradient
/// where the value no longer resolves the decrease (large means). Stops when
/// $\|\nabla A(\theta) - \mu\|_2 \le$ [`NEWTON_TOL`] $(1 + \|\mu\|_\infty)$.
///
/// # Errors
/// `DimensionMismatch` for wrong lengths; `OutsideDomain` if $\mu$ is not in the mean
/// domain; `NoConvergence` (with the final $\|\nabla A(\theta) - \mu\|_2$) if the
/// tolerance is not reached in [`NEWTON_MAX_ITER`] steps or no step is acceptable;
/// `NotPositiveDefinite { what: "Fisher information" }` if the Fisher information is
/// singular; the family's own errors.
pub fn newton_natural_from_mean<F: ExponentialFamily + ?Sized>(
    f: &F,
    mu: &[f64],
    theta: &mut [f64],
) -> Result<()> {
    let p = f.dim();
    check_len("natural_from_mean: mu", p, mu.len())?;
    check_len("natural_from_mean: theta", p, theta.len())?;
    if !f.in_mean_domain(mu) {
        return Err(MirrorError::OutsideDomain {
            what: "mean parameter",
            reason: format!("{mu:?} is not in the mean domain of {}", f.name()),
        });
    }
    f.newton_start(theta);
    // Relative to the scale of μ: an absolute 1e-12 is below round-off for large means.
    let tol = NEWTON_TOL * (1.0 + mu.iter().fold(0.0f64, |m, v| m.max(v.abs())));
    let settings = NewtonSettings {
        tol,
        max_iter: NEWTON_MAX_ITER,
        ..NewtonSettings::default()
    };
    let mut objective = FnObjective::new(p, |th: &[f64], need: Need, out: &mut EvalOut<'_>| {
        if !f.in_natural_domain(th) {
            out.value = f64::INFINITY;
            return Ok(());
        }
        let a = f.log_partition(th)?;
        f.mean(th, out.grad)?;
        let mut inner = 0.0;
        let mut abs_sum = a.abs();
        for ((g, m), t) in out.grad.iter_mut().zip(mu).zip(th) {
            *g -= m;
            inner += m * t;
            abs_sum += (m * t).abs();
        }
        out.value = a - inner;
        out.noise = sum_noise(abs_sum, p + 1);
        if need == Need::Hessian {
            let h = f.fisher(th)?;
            check_len("Fisher information rows", p, h.nrows())?;
            check_len("Fisher information columns", p, h.ncols())?;
            out.hess.copy_from(&h);
        }
        Ok::<(), MirrorError>(())
    });
    let report = minimize(&mut objective, theta, &settings, None).map_err(|e| match e {
        MirrorError::NotPositiveDefinite {
            what: "Newton Hessian",
            pivot,
        } => MirrorError::NotPositiveDefinite {
            what: "Fisher information",
            pivot,
        },
        e => e,
    })?;
    match report.end {
        NewtonEnd::Converged => Ok(()),
        NewtonEnd::NoAcceptableStep => Err(MirrorError::NoConvergence {
            what: "Newton inversion of the mean map (line search)",
            iterations: report.iterations,
            residual: report.residual,
        }),
        _ => Err(MirrorError::NoConvergence {
            what: "Newton inversion of the mean map",
            iterations: report.iterations,
            residual: report.residual,
        }),
    }
}

/// `Ok` when `mu` has length `f.dim()` and lies in the mean domain of `f`; the check every
/// closed-form [`ExponentialFamily::natural_from_mean`] runs first.
fn mean_guard<F: ExponentialFamily + ?Sized>(f: &F, mu: &[f64]) -> Result<()> {
    check_len("natural_from_mean: mu", f.dim(), mu.len())?;
    if f.in_mean_domain(mu) {
        Ok(())
    } else {
        Err(MirrorError::OutsideDomain {
            what: "mean parameter",
            reason: format!("{mu:?} is not in the mean domain of {}", f.name()),
        })
    }
}

pub mod bernoulli;
pub mod categorical;
pub mod exponential;
pub mod gaussian;
pub mod gaussian_mv;
pub mod mvn;
pub mod poisson;

pub use bernoulli::Bernoulli;
pub use categorical::Categorical;
pub use exponential::Exponential;
pub use gaussian::GaussianKnownVariance;
pub use gaussian_mv::Gaussian;
pub use mvn::MultivariateGaussian;
pub use poisson::Poisson;
