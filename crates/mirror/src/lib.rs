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
//! $\log(1 + e^x)$ and the logistic function; [`batch_exp`] takes $e^x$ over a whole slice,
//! vectorised with the widest instruction set the CPU has and with the same bits on every
//! machine (the E-step's and the gate's exponentials go through it).

pub mod batch_exp;
pub mod check;
pub mod descent;
pub mod error;
pub mod family;
pub mod map;
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
