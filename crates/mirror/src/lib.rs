//! # mirror
//!
//! Mirror maps, Bregman divergences, exponential families and generic projected mirror
//! descent. This crate knows nothing of EM or mixtures.
//!
//! ## The identities it implements
//!
//! * **Bregman divergence** of a convex potential $\psi$ ([`bregman`]):
//!   $D_\psi(a, b) = \psi(a) - \psi(b) - \langle \nabla\psi(b), a - b\rangle \ge 0$,
//!   with equality iff $a = b$ when $\psi$ is strictly convex.
//! * **Exponential family** ([`ExponentialFamily`]):
//!   $p(s;\theta) = h(s)\exp(\langle T(s),\theta\rangle - A(\theta))$, mean
//!   $\mu = \nabla A(\theta) = \mathbb E_\theta\[T\]$, Fisher information
//!   $\nabla^2 A(\theta) = \operatorname{Cov}_\theta\[T\]$.
//! * **KL is the swapped Bregman divergence of the log-partition**:
//!   $\mathrm{KL}(p_{\theta_1}\|p_{\theta_2}) = D_A(\theta_2, \theta_1)$.
//! * **Duality**: with the conjugate $A^*(\mu) = \sup_\theta \langle\mu,\theta\rangle - A(\theta)$,
//!   $\nabla A^* = (\nabla A)^{-1}$ and $D_A(\theta_2,\theta_1) = D_{A^*}(\mu_1, \mu_2)$.
//! * **Mirror descent** (module `descent`): $\theta^+ = \arg\min_{\theta\in C}
//!   \langle g, \theta\rangle + \tfrac1\eta D_\psi(\theta, \theta_t)$, computed as the dual
//!   step $\nabla\psi(\theta_t) - \eta g$ followed by the Bregman projection onto $C$.
//!
//! ## Numerical kernels
//!
//! [`special`] holds log-sum-exp with $-\infty$ handled, softmax (of a vector, or of every
//! row of a block at once), sums of logarithms taken one logarithm per block of factors,
//! $\log(1 + e^x)$, the logistic function, and the digamma and trigamma functions
//! $\psi$, $\psi_1$; [`batch_exp`] takes $e^x$ over a whole slice,
//! vectorised with the widest instruction set the CPU has and with the same bits on every
//! machine (the E-step's and the gate's exponentials go through it); [`quadrature`]
//! integrates a function of one variable over a finite, half-infinite or infinite range
//! by adaptive double-exponential quadrature, endpoint singularities included.
//!
//! [`linalg`] is the workspace's one Cholesky policy: faer's $LL^\top$, rejecting a pivot
//! with $L_{jj}^2 \le$ [`linalg::PIVOT_TOL`] $\cdot \max_i G_{ii}$ (relative, so an exactly
//! singular Gram matrix fails whatever its scale), with the failing pivot in a typed
//! error. [`newton`] is the one damped Newton driver for smooth convex minimisation that
//! the inverse mean map ([`family::newton_natural_from_mean`]) and the M-steps run on:
//! $p = -H^{-1}\nabla f$, Armijo backtracking, and two rules driven by the objective's own
//! round-off estimate $\delta$ instead of a fixed threshold (the full step when the
//! decrement $\lambda^2/2 \le \delta$; a step whose value change is within round-off when
//! it lowers $\|\nabla f\|$), with optional Hessian reuse and BFGS updates.
//!
//! ## Writing your own family
//!
//! An [`ExponentialFamily`] samples through `&mut dyn rand::RngCore` and returns its
//! Fisher information as a `faer::Mat<f64>`, so an implementation must use the same `rand`
//! and `faer` as this crate. Both are re-exported ([`mirror::rand`](rand),
//! [`mirror::faer`](faer)): import them from here and the versions always match, with
//! nothing to add to your `Cargo.toml` (a `rand_distr` of your own must be the release
//! that pairs with this `rand`, 0.5 for `rand` 0.9). Then let [`check_family`] (or
//! [`check_family_sweep`], which adds points near the boundary of the natural domain)
//! audit it. A Laplace family with location $0$ and unknown scale $b = -1/\theta$,
//! $p(s;\theta) = \tfrac12 e^{\theta|s| - A(\theta)}$, $T(s) = |s|$,
//! $A(\theta) = -\log(-\theta)$ (with $h = \tfrac12$), $\nabla A = -1/\theta$,
//! $\nabla^2 A = 1/\theta^2$:
//!
//! ```
//! use mirror::{faer, rand};
//! use mirror::{check_family, CheckConfig, ExponentialFamily, Result};
//! use rand::Rng;
//!
//! struct Laplace;
//!
//! impl ExponentialFamily for Laplace {
//!     fn name(&self) -> String { "Laplace(0, b)".into() }
//!     fn dim(&self) -> usize { 1 }
//!     fn obs_dim(&self) -> usize { 1 }
//!     fn in_support(&self, s: &[f64]) -> bool { s.len() == 1 && s[0].is_finite() }
//!     fn in_natural_domain(&self, t: &[f64]) -> bool { t.len() == 1 && t[0] < 0.0 }
//!     fn in_mean_domain(&self, m: &[f64]) -> bool { m.len() == 1 && m[0] > 0.0 }
//!     fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) { t[0] = s[0].abs(); }
//!     fn log_base_measure(&self, _s: &[f64]) -> f64 { -std::f64::consts::LN_2 }
//!     fn log_partition(&self, t: &[f64]) -> Result<f64> { Ok(-(-t[0]).ln()) }
//!     fn mean(&self, t: &[f64], mu: &mut [f64]) -> Result<()> {
//!         mu[0] = -1.0 / t[0];
//!         Ok(())
//!     }
//!     fn fisher(&self, t: &[f64]) -> Result<faer::Mat<f64>> {
//!         Ok(faer::Mat::from_fn(1, 1, |_, _| 1.0 / (t[0] * t[0])))
//!     }
//!     fn sample(&self, t: &[f64], rng: &mut dyn rand::RngCore, s: &mut [f64]) -> Result<()> {
//!         // |s| ~ Exponential(−θ) by inversion, with a random sign.
//!         let u: f64 = rng.random();
//!         let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
//!         s[0] = sign * (-(1.0 - u).ln()) / -t[0];
//!         Ok(())
//!     }
//!     fn newton_start(&self, t: &mut [f64]) { t[0] = -1.0; }
//! }
//!
//! let report = check_family(&Laplace, &[-2.0], &CheckConfig::default())?;
//! assert!(report.passed(), "{report}");
//! # Ok::<(), mirror::MirrorError>(())
//! ```
//!
//! ## Checking a family
//!
//! [`check_family`] runs every consistency check of the [`check`] module at one natural
//! parameter: finite differences of $A$ and $\nabla A$, the inverse mean map, Bregman
//! and KL identities, Monte-Carlo moments, and the normalisation of the density, which
//! for a one-dimensional continuous family is a deterministic adaptive quadrature
//! ([`quadrature`]) over the support found by probing `in_support`, held to $10^{-8}$.
//! [`check_family_sweep`] runs it at several parameters plus points generated near the
//! boundary of the natural domain and names the worst check. A failed vector or matrix
//! check names its worst entry ([`WorstEntry`]): index, the value found, the value
//! expected. [`special`] has [`digamma`](special::digamma) and
//! [`trigamma`](special::trigamma) for families with Gamma or Beta factors.

pub use faer;
pub use rand;

pub mod batch_exp;
pub mod check;
pub mod descent;
pub mod error;
pub mod family;
pub mod linalg;
pub mod map;
pub mod newton;
pub mod quadrature;
pub mod special;

pub use check::{
    check_family, check_family_sweep, CheckConfig, CheckKind, CheckResult, CheckStatus,
    FamilyReport, SupportKind, SweepConfig, SweepOrigin, SweepReport, WorstEntry,
};
pub use descent::{
    BoxSet, Constant, ConstraintSet, InvSqrt, MirrorDescent, Simplex, StepFn, StepSize, Trajectory,
    Unconstrained,
};
pub use error::{MirrorError, Result};
pub use family::{
    Bernoulli, Categorical, Exponential, Gaussian, GaussianKnownVariance, MultivariateGaussian,
    Poisson,
};
pub use family::{ExponentialFamily, LogPartition};
pub use map::{bregman, MirrorMap};
pub use map::{BlockSum, Euclidean, MapKind, NegEntropy};
