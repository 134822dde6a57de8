//! One damped Newton driver for smooth convex minimisation, shared by every smooth inner
//! solve of the workspace (the inverse mean map [`crate::family::newton_natural_from_mean`],
//! and the experts', the gate's and the symmetric models' M-steps in `em-as-md`).
//!
//! ## The iteration
//!
//! To minimise a smooth convex $f:\mathbb R^n \to \mathbb R\cup\{+\infty\}$ from $x_0$, at
//! an iterate $x$ with gradient $g = \nabla f(x)$ and a positive definite matrix $H$ (the
//! Hessian $\nabla^2 f(x)$ when *fresh*, or an older Hessian carried forward by BFGS when
//! *reused*, see below) the driver takes the direction and the Newton decrement
//! $$ p = -H^{-1} g, \qquad \lambda^2 = g^\top H^{-1} g = -g^\top p, $$
//! and tries $x + t p$ for $t = 1, \tfrac12, \tfrac14, \dots \ge$
//! [`NewtonSettings::min_step`]. A trial is accepted by the first of these rules that
//! holds, with $\delta(x)$ the absolute round-off of the computed $f(x)$ reported by the
//! objective ([`EvalOut::noise`], see [`sum_noise`]):
//!
//! 1. **Pure Newton** (full step only): $\lambda^2/2 \le \delta(x)$. The step is taken
//!    without looking at $f(x + p)$.
//! 2. **Armijo**: $f(x + tp) \le f(x) - c_1\,t\,\lambda^2$ ($c_1$ =
//!    [`NewtonSettings::armijo`], default $10^{-4}$).
//! 3. **Gradient, inside round-off**: $|f(x + tp) - f(x)| \le \delta(x) + \delta(x + tp)$
//!    and $\|\nabla f(x + tp)\|_2 < \|\nabla f(x)\|_2$.
//!
//! A trial with $f(x + tp) = +\infty$ (outside the domain) is never accepted: the step is
//! halved. A trial that rounds to $x$ itself ends the line search (a zero step would pass
//! Armijo, since $f - c_1 t\lambda^2$ rounds to $f$, and make no progress). The iteration stops when $\|\nabla f(x)\|_2 \le$ [`NewtonSettings::tol`]
//! ([`NewtonEnd::Converged`], the only outcome reported as converged), after
//! [`NewtonSettings::max_iter`] accepted steps ([`NewtonEnd::IterationLimit`]), or when no
//! step size is acceptable with a fresh Hessian ([`NewtonEnd::NoAcceptableStep`]); the
//! last two are reported with the residual $\|\nabla f\|_2$, not as errors.
//!
//! **Why rule 1.** On the quadratic model the full step decreases $f$ by $\lambda^2/2$.
//! When that is below $\delta(x)$, the computed difference $f(x+p) - f(x)$ is a difference
//! of two values each uncertain by about $\delta$: the Armijo test then accepts or rejects
//! by the sign of round-off, and rejecting a correct step at every $t$ stalls the solve
//! far from its gradient tolerance (the bug this driver fixes: a decrement of
//! $1.6\cdot10^{-14}$ above a hard-coded threshold of $10^{-14}$, with round-off of
//! $10^{-13}$, left $\|\nabla f\|$ 400 times above tolerance). Taking the step is safe: a
//! decrement that small puts $x$ deep inside the region where the full Newton step is
//! accepted and converges quadratically (Nocedal & Wright, Thm. 3.5; for self-concordant
//! $f$ already when $\lambda < 0.38$, Boyd & Vandenberghe, *Convex Optimization*, §9.6).
//! Unlike a fixed threshold, $\delta$ follows the size of the objective.
//!
//! **Why rule 3.** When the value change is within round-off, the value carries no
//! information, but the gradient still does: near a minimiser $f(x) - f^\star \approx
//! \tfrac12\|g\|^2_{H^{-1}}$ is second order in the distance and $g$ first order, so the
//! gradient resolves progress long after the value stops doing so. Requiring a strictly
//! smaller $\|\nabla f\|_2$ — the quantity the stopping rule measures — means such steps
//! cannot cycle, and an increase of $f$ beyond round-off is never accepted.
//!
//! ## Hessian reuse and BFGS
//!
//! With [`NewtonSettings::reuse_below`] $= 0$ this is plain damped Newton: a fresh
//! Hessian at every iterate. With $r = $ `reuse_below` $> 0$ the factored Hessian is
//! reused while the last accepted step contracted the gradient by
//! $\|g^+\|/\|g\| \le r$, each reused step folding its secant pair
//! $s = x^+ - x$, $y = \nabla f(x^+) - \nabla f(x)$ into the inverse by
//! [`bfgs_inverse_update`] (Nocedal & Wright, §6.1): the chord method alone converges
//! linearly, with BFGS superlinearly, and a reused step costs a value-and-gradient
//! evaluation instead of a Hessian. The exact rules (those of the softmax gate's M-step):
//!
//! * The Hessian is requested *speculatively* in the evaluation of the full-step trial
//!   (a backtracked trial never forms one), when a fresh Hessian will be wanted next —
//!   i.e. reuse is off for the next step — and the step is not predicted to converge.
//! * A step taken with a fresh factor forms no Hessian at its own trial point: reuse
//!   stays on until its contraction is known (the previous ratio measured the stale matrix).
//! * Predicted $\|g^+\| = \|g\|\rho^2$ after a fresh factor (quadratic rate, the constant
//!   estimated from the last contraction $\rho$) and $\|g\|\rho$ after a stale one (linear
//!   rate); "predicted to converge" is $\le 0.1\,$`tol`.
//! * A reused (stale) direction that no step size accepts is replaced by a fresh Hessian
//!   at the current point before giving up.
//!
//! With `reuse_below` $= 0$ the speculative Hessian is requested in the full-step trial
//! unless that step is predicted to converge or the previous step was backtracked (then
//! the full trial is likely rejected again and its Hessian wasted); an iterate reached
//! without a Hessian gets one from an extra evaluation before its step. So while full
//! steps are accepted a Newton step costs one evaluation (with the Hessian); while steps
//! are backtracked, one Hessian per iterate plus a value-and-gradient evaluation per
//! trial (a speculative Hessian is wasted only at the first rejected full step).
//!
//! ## Cost and memory
//!
//! One solve allocates its scratch once ($\sim 8$ vectors of length $n$, the Hessian
//! buffer [`EvalOut::hess`], a [`Cholesky`] factor, and with reuse an $n\times n$ inverse);
//! nothing is allocated per iteration. Every evaluation writes into those buffers.
//! [`NewtonReport`] counts accepted steps, evaluations and Hessians. The Cholesky policy
//! is [`crate::linalg`]'s (relative pivot tolerance).
//!
//! ## Example
//!
//! Minimise $f(x) = e^{x_0 + 3x_1 - 0.1} + e^{x_0 - 3x_1 - 0.1} + e^{-x_0 - 0.1}$, whose
//! minimiser is $(-\tfrac12\log 2, 0)$:
//!
//! ```
//! use mirror::newton::{minimize, sum_noise, EvalOut, Need, NewtonFailure, NewtonObjective,
//!                      NewtonSettings};
//!
//! struct Boyd;
//! impl NewtonObjective for Boyd {
//!     type Error = NewtonFailure;
//!     fn dim(&self) -> usize { 2 }
//!     fn eval(&mut self, x: &[f64], need: Need, out: &mut EvalOut<'_>) -> Result<(), NewtonFailure> {
//!         let e = [(x[0] + 3.0 * x[1] - 0.1).exp(), (x[0] - 3.0 * x[1] - 0.1).exp(),
//!                  (-x[0] - 0.1).exp()];
//!         out.value = e[0] + e[1] + e[2];
//!         out.noise = sum_noise(out.value, 3); // all terms positive: Σ|t| = f
//!         out.grad[0] = e[0] + e[1] - e[2];
//!         out.grad[1] = 3.0 * (e[0] - e[1]);
//!         if need == Need::Hessian {
//!             out.hess[(0, 0)] = e[0] + e[1] + e[2];
//!             out.hess[(1, 0)] = 3.0 * (e[0] - e[1]); // lower triangle suffices
//!             out.hess[(1, 1)] = 9.0 * (e[0] + e[1]);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let mut x = [1.0, 1.0];
//! let report = minimize(&mut Boyd, &mut x, &NewtonSettings::default(), None)?;
//! assert!(report.converged && report.residual <= 1e-10);
//! assert!((x[0] + 0.5 * 2f64.ln()).abs() < 1e-9 && x[1].abs() < 1e-9);
//! # Ok::<(), NewtonFailure>(())
//! ```
//!
//! References: J. Nocedal & S. J. Wright, *Numerical Optimization*, 2nd ed., Springer
//! 2006: ch. 3 (line search, Armijo condition, Newton's method) and ch. 6 (BFGS, the
//! inverse update (6.17)); N. J. Higham, *Accuracy and Stability of Numerical
//! Algorithms*, 2nd ed., SIAM 2002, ch. 4 (round-off of sums, behind [`sum_noise`]).

use crate::error::MirrorError;
use crate::linalg::{Cholesky, CholeskyError};
use faer::{Mat, MatMut, MatRef};
use std::marker::PhantomData;
use thiserror::Error;

/// Ulps of evaluation error allowed per term in [`sum_noise`] (an `exp`/`log` and a
/// product or two each carry a few).
pub const NOISE_TERM_ULPS: f64 = 8.0;

/// The recommended absolute round-off estimate of a value computed as a sum of `terms`
/// floating-point terms whose absolute values sum to `abs_sum`:
/// $$ \delta = \varepsilon_{\text{mach}}\,\big(8 + \sqrt m\big)\sum_{i=1}^m |t_i|. $$
///
/// `abs_sum` must be the sum of the absolute values of the summands *before* any
/// cancellation — for $f = \sum_i w_i\,(A(\eta_i) - \langle T_i, \eta_i\rangle)$ accumulate
/// $\sum_i |w_i|\,(|A(\eta_i)| + |\langle T_i, \eta_i\rangle|)$ — since cancellation keeps
/// the absolute errors of the parts. Each term carries a few ulps of its own evaluation
/// ([`NOISE_TERM_ULPS`]), and the rounding errors of a sum of $m$ terms behave like a
/// random walk, $\sim\sqrt m\,\varepsilon\sum|t_i|$ (Higham, §4.2: the worst case $m\varepsilon$ is
/// rarely approached). For a weighted average divide `abs_sum` by the total weight, as the
/// value is. Overestimating $\delta$ by a modest factor is harmless (see the
/// [module documentation](self)); reporting $0$ turns the round-off rules off.
pub fn sum_noise(abs_sum: f64, terms: usize) -> f64 {
    f64::EPSILON * (NOISE_TERM_ULPS + (terms as f64).sqrt()) * abs_sum.abs()
}

/// What an evaluation must compute besides the value and the gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Value, round-off estimate and gradient only; [`EvalOut::hess`] must be left alone
    /// or may be clobbered (it is a staging buffer), but is not read.
    Gradient,
    /// Value, round-off estimate, gradient and Hessian.
    Hessian,
}

/// Where [`NewtonObjective::eval`] writes its results (buffers owned by the driver and
/// reused across evaluations: every entry that is read must be written).
#[derive(Debug)]
pub struct EvalOut<'a> {
    /// $f(x)$; $+\infty$ when $x$ is outside the domain of $f$ (then nothing else is
    /// read). Set to NaN before each call, so a value not written is a
    /// [`NewtonFailure::NonFinite`].
    pub value: f64,
    /// Absolute round-off estimate $\delta(x) \ge 0$ of `value` (see [`sum_noise`]);
    /// set to 0 before each call. A negative or non-finite estimate is read as 0.
    pub noise: f64,
    /// $\nabla f(x)$, length [`NewtonObjective::dim`]; holds stale numbers on entry.
    pub grad: &'a mut [f64],
    /// $\nabla^2 f(x)$, $n\times n$, with [`Need::Hessian`]: the lower triangle must be
    /// written (the upper one is never read). Holds stale numbers on entry (zero it
    /// first when accumulating).
    pub hess: MatMut<'a, f64>,
}

/// A smooth convex objective for [`minimize`].
///
/// Evaluations must be deterministic (the same $x$ gives the same numbers) and must not
/// panic on a point outside the domain: report `value = +∞` instead (the line search then
/// halves the step).
pub trait NewtonObjective {
    /// The caller's error type; the driver's own failures convert into it.
    type Error: From<NewtonFailure>;
    /// Dimension $n$ of $x$.
    fn dim(&self) -> usize;
    /// $f(x)$, $\delta(x)$ and $\nabla f(x)$ into `out`, and $\nabla^2 f(x)$ when `need`
    /// is [`Need::Hessian`].
    ///
    /// # Errors
    /// Whatever the objective needs to report (passed through by [`minimize`]).
    fn eval(&mut self, x: &[f64], need: Need, out: &mut EvalOut<'_>) -> Result<(), Self::Error>;
}

/// A [`NewtonObjective`] from a closure `(x, need, out) -> Result<(), E>`.
pub struct FnObjective<F, E> {
    dim: usize,
    f: F,
    _error: PhantomData<fn() -> E>,
}

impl<F, E> FnObjective<F, E>
where
    F: FnMut(&[f64], Need, &mut EvalOut<'_>) -> Result<(), E>,
    E: From<NewtonFailure>,
{
    /// The objective of dimension `dim` evaluated by `f`.
    pub fn new(dim: usize, f: F) -> Self {
        FnObjective {
            dim,
            f,
            _error: PhantomData,
        }
    }
}

impl<F, E> NewtonObjective for FnObjective<F, E>
where
    F: FnMut(&[f64], Need, &mut EvalOut<'_>) -> Result<(), E>,
    E: From<NewtonFailure>,
{
    type Error = E;
    fn dim(&self) -> usize {
        self.dim
    }
    fn eval(&mut self, x: &[f64], need: Need, out: &mut EvalOut<'_>) -> Result<(), E> {
        (self.f)(x, need, out)
    }
}

/// An invalid [`NewtonSettings`] field; each variant names its field and holds the value.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// `tol` must be finite and $> 0$.
    #[error("invalid Newton setting `tol` = {0}: must be finite and > 0")]
    Tol(f64),
    /// `max_iter` must be $\ge 1$.
    #[error("invalid Newton setting `max_iter` = {0}: must be >= 1")]
    MaxIter(usize),
    /// `reuse_below` must lie in $[0, 1)$.
    #[error("invalid Newton setting `reuse_below` = {0}: must be in [0, 1)")]
    ReuseBelow(f64),
    /// `armijo` must lie in $(0, \tfrac12)$.
    #[error("invalid Newton setting `armijo` = {0}: must be in (0, 0.5)")]
    Armijo(f64),
    /// `min_step` must lie in $(0, 1]$.
    #[error("invalid Newton setting `min_step` = {0}: must be in (0, 1]")]
    MinStep(f64),
}

impl SettingsError {
    /// The name of the offending field.
    pub fn field(&self) -> &'static str {
        match self {
            SettingsError::Tol(_) => "tol",
            SettingsError::MaxIter(_) => "max_iter",
            SettingsError::ReuseBelow(_) => "reuse_below",
            SettingsError::Armijo(_) => "armijo",
            SettingsError::MinStep(_) => "min_step",
        }
    }
}

/// Settings of [`minimize`]; validated by [`NewtonSettings::check`] (which `minimize`
/// calls).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewtonSettings {
    /// Stop when $\|\nabla f\|_2 \le$ `tol`. Default $10^{-10}$.
    pub tol: f64,
    /// Cap on accepted steps. Default 50.
    pub max_iter: usize,
    /// Hessian reuse threshold on the contraction $\|g^+\|/\|g\|$ (see the
    /// [module documentation](self)); `0` = plain Newton. Default `0`.
    pub reuse_below: f64,
    /// Armijo constant $c_1$. Default $10^{-4}$.
    pub armijo: f64,
    /// Smallest step size $t$ tried. Default $10^{-12}$.
    pub min_step: f64,
    /// Whether a Hessian that fails the Cholesky policy is shifted instead of failing the
    /// run (see [`SHIFT_START`]). Default `false`.
    pub shift_singular: bool,
}

/// First Levenberg shift, relative to $\max_j |H_{jj}|$: with
/// [`NewtonSettings::shift_singular`], a Hessian that fails the Cholesky policy is factored
/// as $H + \mu I$ with $\mu = \mu_0 \max_j|H_{jj}|$, $\mu_0 =$ `SHIFT_START`, multiplied by
/// 100 until it factors (at most [`SHIFT_TRIES`] shifts). The shifted direction
/// $-(H + \mu I)^{-1} g$ is still a descent direction, so the line search and the stopping
/// rule on $\|\nabla f\|$ are unchanged; each shifted factorisation is counted in
/// [`NewtonReport::shifted`]. Why: an objective whose infimum lies at infinity along some
/// direction (a weighted softmax fit in which a class has almost no weight) has a Hessian
/// that degenerates along it while $f$ is still well defined and decreasing.
pub const SHIFT_START: f64 = 1e-8;
/// Most shifts tried per factorisation ($\mu_0 \cdot 100^{k}$, $k < $ `SHIFT_TRIES`, i.e.
/// up to $\max_j|H_{jj}|$).
pub const SHIFT_TRIES: usize = 5;

impl Default for NewtonSettings {
    fn default() -> Self {
        NewtonSettings {
            tol: 1e-10,
            max_iter: 50,
            reuse_below: 0.0,
            armijo: 1e-4,
            min_step: 1e-12,
            shift_singular: false,
        }
    }
}

impl NewtonSettings {
    /// The defaults with tolerance `tol` and step cap `max_iter`, checked.
    ///
    /// # Errors
    /// [`SettingsError::Tol`] or [`SettingsError::MaxIter`].
    pub fn new(tol: f64, max_iter: usize) -> Result<Self, SettingsError> {
        let s = NewtonSettings {
            tol,
            max_iter,
            ..NewtonSettings::default()
        };
        s.check()?;
        Ok(s)
    }

    /// With Hessian reuse threshold `reuse_below` (unchecked until [`check`](Self::check)).
    pub fn with_reuse_below(mut self, reuse_below: f64) -> Self {
        self.reuse_below = reuse_below;
        self
    }

    /// With Armijo constant `armijo` (unchecked until [`check`](Self::check)).
    pub fn with_armijo(mut self, armijo: f64) -> Self {
        self.armijo = armijo;
        self
    }

    /// With (or without) the Levenberg shift of a singular Hessian ([`SHIFT_START`]).
    pub fn with_shift_singular(mut self, shift: bool) -> Self {
        self.shift_singular = shift;
        self
    }

    /// With smallest step `min_step` (unchecked until [`check`](Self::check)).
    pub fn with_min_step(mut self, min_step: f64) -> Self {
        self.min_step = min_step;
        self
    }

    /// Validates every field, in declaration order.
    ///
    /// # Errors
    /// The [`SettingsError`] variant of the first invalid field: `tol` finite $> 0$,
    /// `max_iter` $\ge 1$, `reuse_below` $\in [0, 1)$, `armijo` $\in (0, \tfrac12)$ (below
    /// $\tfrac12$ so that full Newton steps are eventually accepted), `min_step`
    /// $\in (0, 1]$.
    pub fn check(&self) -> Result<&Self, SettingsError> {
        if !(self.tol > 0.0 && self.tol.is_finite()) {
            return Err(SettingsError::Tol(self.tol));
        }
        if self.max_iter == 0 {
            return Err(SettingsError::MaxIter(self.max_iter));
        }
        if !(self.reuse_below >= 0.0 && self.reuse_below < 1.0) {
            return Err(SettingsError::ReuseBelow(self.reuse_below));
        }
        if !(self.armijo > 0.0 && self.armijo < 0.5) {
            return Err(SettingsError::Armijo(self.armijo));
        }
        if !(self.min_step > 0.0 && self.min_step <= 1.0) {
            return Err(SettingsError::MinStep(self.min_step));
        }
        Ok(self)
    }
}

/// The driver's own failures, converted into the objective's error type.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum NewtonFailure {
    /// The Hessian (fresh, at the current or the trial point) failed the Cholesky policy
    /// of [`crate::linalg`] at `pivot`.
    #[error("Newton Hessian is not positive definite (Cholesky pivot {pivot})")]
    NotPositiveDefinite {
        /// Index of the failing pivot.
        pivot: usize,
    },
    /// A non-finite number where a finite one is required: `"value"` (NaN or $-\infty$;
    /// $+\infty$ is the domain signal, but not at the start), `"gradient"`, `"starting
    /// point"` or `"Newton direction"`.
    #[error("non-finite {what} in the Newton solve")]
    NonFinite {
        /// Which quantity.
        what: &'static str,
    },
    /// A length disagrees with [`NewtonObjective::dim`].
    #[error("dimension mismatch in {what}: expected {expected}, found {found}")]
    DimensionMismatch {
        /// Which argument.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        found: usize,
    },
    /// Invalid settings.
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

impl From<CholeskyError> for NewtonFailure {
    fn from(e: CholeskyError) -> Self {
        match e {
            CholeskyError::NotPositiveDefinite { pivot } => {
                NewtonFailure::NotPositiveDefinite { pivot }
            }
            CholeskyError::NonFiniteSolution => NewtonFailure::NonFinite {
                what: "Newton direction",
            },
            CholeskyError::DimensionMismatch {
                what,
                expected,
                found,
            } => NewtonFailure::DimensionMismatch {
                what,
                expected,
                found,
            },
        }
    }
}

impl From<NewtonFailure> for MirrorError {
    fn from(e: NewtonFailure) -> Self {
        match e {
            NewtonFailure::NotPositiveDefinite { pivot } => MirrorError::NotPositiveDefinite {
                what: "Newton Hessian",
                pivot,
            },
            NewtonFailure::NonFinite { what } => MirrorError::NonFinite { what },
            NewtonFailure::DimensionMismatch {
                what,
                expected,
                found,
            } => MirrorError::DimensionMismatch {
                what,
                expected,
                found,
            },
            NewtonFailure::Settings(s) => MirrorError::InvalidParameter {
                name: s.field(),
                value: match s {
                    SettingsError::MaxIter(m) => m as f64,
                    SettingsError::Tol(v)
                    | SettingsError::ReuseBelow(v)
                    | SettingsError::Armijo(v)
                    | SettingsError::MinStep(v) => v,
                },
                reason: "invalid Newton setting",
            },
        }
    }
}

/// Value, round-off estimate, gradient and Hessian at the start point that the caller
/// already has (e.g. from the pass of an E-step). [`minimize`] uses it — and saves one
/// evaluation — only when `x` equals the start point exactly and every size matches;
/// otherwise it evaluates as usual.
#[derive(Debug, Clone, Copy)]
pub struct InitialEval<'a> {
    /// The point it was computed at.
    pub x: &'a [f64],
    /// $f(x)$.
    pub value: f64,
    /// $\delta(x)$.
    pub noise: f64,
    /// $\nabla f(x)$.
    pub grad: &'a [f64],
    /// $\nabla^2 f(x)$ (lower triangle read).
    pub hess: MatRef<'a, f64>,
}

/// How a [`minimize`] run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NewtonEnd {
    /// $\|\nabla f\|_2 \le$ `tol`.
    Converged,
    /// `max_iter` steps were taken without reaching `tol`.
    IterationLimit,
    /// No step size down to `min_step` was acceptable with a fresh Hessian (round-off
    /// floor, or a problem that is not convex / smooth there).
    NoAcceptableStep,
}

/// What a [`minimize`] run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewtonReport {
    /// Accepted steps.
    pub iterations: usize,
    /// Hessians requested from the objective ([`Need::Hessian`]), including speculative
    /// ones in a trial that was then rejected, plus a supplied [`InitialEval`]'s (formed
    /// by the caller's own pass).
    pub hessians: usize,
    /// Calls of [`NewtonObjective::eval`] (a supplied [`InitialEval`] is not one).
    pub evaluations: usize,
    /// Final $\|\nabla f(x)\|_2$.
    pub residual: f64,
    /// Final $f(x)$.
    pub value: f64,
    /// Whether $\|\nabla f(x)\|_2 \le$ `tol` (exactly when `end` is
    /// [`NewtonEnd::Converged`]).
    pub converged: bool,
    /// How the run ended.
    pub end: NewtonEnd,
    /// Steps accepted by the pure-Newton rule ($\lambda^2/2 \le \delta$).
    pub pure_steps: usize,
    /// Steps accepted on the gradient with the value change inside round-off.
    pub gradient_steps: usize,
    /// Hessians factored with a Levenberg shift ([`NewtonSettings::shift_singular`]).
    pub shifted: usize,
}

/// The BFGS update of an inverse-Hessian approximation $H \approx (\nabla^2 f)^{-1}$ with
/// the step $s = x^+ - x$ and the gradient change $y = \nabla f(x^+) - \nabla f(x)$
/// (Nocedal & Wright, eq. 6.17):
/// $$ H^+ = (I - \rho s y^\top) H (I - \rho y s^\top) + \rho s s^\top,\qquad
///    \rho = 1 / y^\top s, $$
/// computed in $O(n^2)$ as $H^+ = H - \rho(s u^\top + u s^\top) + (\rho^2 y^\top u + \rho)
/// s s^\top$ with $u = Hy$ (`work`, length $\ge n$). $H^+$ satisfies the secant equation
/// $H^+ y = s$ and stays symmetric positive definite. `h` must be symmetric (both triangles
/// are read and written).
///
/// Returns `Ok(false)` and leaves $H$ alone when $y^\top s \le 10^{-12}\|y\|\|s\|$ or is
/// NaN (no usable curvature: a step of round-off size, or a non-convex region).
///
/// # Errors
/// `DimensionMismatch` when `h` is not $n\times n$ for $n$ = `s.len()`, or `y` / `work` are
/// too short.
pub fn bfgs_inverse_update(
    mut h: MatMut<'_, f64>,
    s: &[f64],
    y: &[f64],
    work: &mut [f64],
) -> Result<bool, NewtonFailure> {
    let n = s.len();
    for (what, found) in [
        ("BFGS matrix rows", h.nrows()),
        ("BFGS matrix columns", h.ncols()),
        ("BFGS gradient change", y.len()),
    ] {
        if found != n {
            return Err(NewtonFailure::DimensionMismatch {
                what,
                expected: n,
                found,
            });
        }
    }
    if work.len() < n {
        return Err(NewtonFailure::DimensionMismatch {
            what: "BFGS work buffer",
            expected: n,
            found: work.len(),
        });
    }
    let ys = dot(y, s);
    // (written so that a NaN pair is also skipped)
    if ys.is_nan() || ys <= 1e-12 * dot(y, y).sqrt() * dot(s, s).sqrt() {
        return Ok(false);
    }
    let rho = 1.0 / ys;
    let u = &mut work[..n];
    for (a, ua) in u.iter_mut().enumerate() {
        *ua = (0..n).map(|b| h[(a, b)] * y[b]).sum();
    }
    let c = rho * rho * dot(y, u) + rho;
    for b in 0..n {
        for a in 0..n {
            h[(a, b)] += c * s[a] * s[b] - rho * (s[a] * u[b] + u[a] * s[b]);
        }
    }
    Ok(true)
}

#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(u, v)| u * v).sum()
}

#[inline]
fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// A round-off estimate as the driver uses it: negative or non-finite reads as 0.
#[inline]
fn clean_noise(noise: f64) -> f64 {
    if noise.is_finite() && noise > 0.0 {
        noise
    } else {
        0.0
    }
}

/// The scratch of one solve, allocated once.
struct Work {
    g: Vec<f64>,
    g_trial: Vec<f64>,
    dir: Vec<f64>,
    trial: Vec<f64>,
    s: Vec<f64>,
    y: Vec<f64>,
    u: Vec<f64>,
    /// Staging buffer the objective writes Hessians into.
    hess: Mat<f64>,
    chol: Cholesky,
    /// BFGS inverse approximation between fresh Hessians (0×0 without reuse).
    hinv: Mat<f64>,
}

/// Forms the Hessian at `x` (one evaluation; value and gradient go to scratch, the ones
/// held are the same since evaluations are deterministic) and factors it.
fn hessian_at<O: NewtonObjective + ?Sized>(
    objective: &mut O,
    x: &[f64],
    w: &mut Work,
    settings: &NewtonSettings,
    rep: &mut NewtonReport,
) -> Result<(), O::Error> {
    rep.evaluations += 1;
    rep.hessians += 1;
    evaluate(objective, x, Need::Hessian, &mut w.g_trial, &mut w.hess)?;
    factor_hessian(w, settings, rep)?;
    Ok(())
}

/// Factors `w.hess` into `w.chol`; with [`NewtonSettings::shift_singular`], a Hessian that
/// fails the Cholesky policy is retried as $H + \mu I$ ([`SHIFT_START`], [`SHIFT_TRIES`];
/// `w.hess` keeps the shift), counting one in [`NewtonReport::shifted`] when a shift was
/// needed.
fn factor_hessian(
    w: &mut Work,
    settings: &NewtonSettings,
    rep: &mut NewtonReport,
) -> Result<(), NewtonFailure> {
    let (chol, hess) = (&mut w.chol, &mut w.hess);
    let shift = settings.shift_singular;
    let first = chol.refactor(hess.as_ref());
    let Err(CholeskyError::NotPositiveDefinite { .. }) = first else {
        return first.map_err(NewtonFailure::from);
    };
    let n = hess.nrows();
    let scale = (0..n).map(|j| hess[(j, j)].abs()).fold(0.0f64, f64::max);
    if !(shift && scale.is_finite() && scale > 0.0) {
        return first.map_err(NewtonFailure::from);
    }
    let mut added = 0.0;
    let mut mu = SHIFT_START * scale;
    for _ in 0..SHIFT_TRIES {
        for j in 0..n {
            hess[(j, j)] += mu - added;
        }
        added = mu;
        if chol.refactor(hess.as_ref()).is_ok() {
            rep.shifted += 1;
            return Ok(());
        }
        mu *= 100.0;
    }
    first.map_err(NewtonFailure::from)
}

/// One evaluation into the given buffers; returns (value, noise) after checking them.
/// A value of +∞ is returned as is (the domain signal); NaN, −∞ or a non-finite gradient
/// at a finite value are failures.
fn evaluate<O: NewtonObjective + ?Sized>(
    obj: &mut O,
    x: &[f64],
    need: Need,
    grad: &mut [f64],
    hess: &mut Mat<f64>,
) -> Result<(f64, f64), O::Error> {
    let mut out = EvalOut {
        value: f64::NAN,
        noise: 0.0,
        grad,
        hess: hess.as_mut(),
    };
    obj.eval(x, need, &mut out)?;
    let (value, noise) = (out.value, clean_noise(out.noise));
    if value == f64::INFINITY {
        return Ok((value, noise));
    }
    if !value.is_finite() {
        return Err(NewtonFailure::NonFinite { what: "value" }.into());
    }
    if !out.grad.iter().all(|v| v.is_finite()) {
        return Err(NewtonFailure::NonFinite { what: "gradient" }.into());
    }
    Ok((value, noise))
}

/// Minimises `objective` from the start point in `x` by damped Newton (see the
/// [module documentation](self)); `x` holds the last accepted iterate on return.
/// `initial` is used only if it was computed at exactly the start point.
///
/// Not reaching `tol` is not an error: the report says `converged = false`, why
/// ([`NewtonReport::end`]) and the residual.
///
/// # Errors
/// The objective's own errors, passed through; and, converted by `From`:
/// [`NewtonFailure::Settings`] for invalid settings, `DimensionMismatch` when `x` does not
/// have length [`NewtonObjective::dim`], `NonFinite` for a non-finite start, value
/// ($+\infty$ is allowed at trial points only) or gradient, `NotPositiveDefinite
/// { pivot }` when a Hessian the driver factors fails the Cholesky policy.
pub fn minimize<O: NewtonObjective + ?Sized>(
    objective: &mut O,
    x: &mut [f64],
    settings: &NewtonSettings,
    initial: Option<InitialEval<'_>>,
) -> Result<NewtonReport, O::Error> {
    settings.check().map_err(NewtonFailure::from)?;
    let n = objective.dim();
    if x.len() != n {
        return Err(NewtonFailure::DimensionMismatch {
            what: "starting point",
            expected: n,
            found: x.len(),
        }
        .into());
    }
    if !x.iter().all(|v| v.is_finite()) {
        return Err(NewtonFailure::NonFinite {
            what: "starting point",
        }
        .into());
    }
    let reuse_on = settings.reuse_below > 0.0;
    let mut w = Work {
        g: vec![0.0; n],
        g_trial: vec![0.0; n],
        dir: vec![0.0; n],
        trial: vec![0.0; n],
        s: vec![0.0; n],
        y: vec![0.0; n],
        u: vec![0.0; n],
        hess: Mat::zeros(n, n),
        chol: Cholesky::with_dim(n),
        hinv: if reuse_on {
            Mat::zeros(n, n)
        } else {
            Mat::zeros(0, 0)
        },
    };
    let mut rep = NewtonReport {
        iterations: 0,
        hessians: 0,
        evaluations: 0,
        residual: f64::NAN,
        value: f64::NAN,
        converged: false,
        end: NewtonEnd::IterationLimit,
        pure_steps: 0,
        gradient_steps: 0,
        shifted: 0,
    };

    let usable = initial
        .filter(|i| i.x == &*x && i.grad.len() == n && i.hess.nrows() == n && i.hess.ncols() == n);
    let (mut f, mut noise) = match usable {
        Some(i) => {
            w.g.copy_from_slice(i.grad);
            w.hess.copy_from(i.hess);
            if !i.value.is_finite() {
                return Err(NewtonFailure::NonFinite { what: "value" }.into());
            }
            if !i.grad.iter().all(|v| v.is_finite()) {
                return Err(NewtonFailure::NonFinite { what: "gradient" }.into());
            }
            (i.value, clean_noise(i.noise))
        }
        None => {
            rep.evaluations += 1;
            let (f0, d0) = evaluate(objective, x, Need::Hessian, &mut w.g, &mut w.hess)?;
            if !f0.is_finite() {
                // +∞ at the start: the start is outside the domain.
                return Err(NewtonFailure::NonFinite { what: "value" }.into());
            }
            (f0, d0)
        }
    };
    rep.hessians += 1;
    factor_hessian(&mut w, settings, &mut rep)?;
    // Whether the factor is the Hessian at the current x (no BFGS update since).
    let mut fresh = true;
    // Whether `w.hinv` holds the BFGS-updated inverse that steers reused steps.
    let mut have_hinv = false;
    // ‖∇f‖ contraction of the last accepted step (NaN before the first).
    let mut ratio = f64::NAN;
    // Plain Newton only: whether the last accepted step was a full one. After a
    // backtracked step the next full trial is likely rejected too, so its speculative
    // Hessian would be wasted: the Hessian is then formed at the accepted point instead.
    let mut last_full = true;

    loop {
        let gnorm = norm(&w.g);
        rep.residual = gnorm;
        rep.value = f;
        if gnorm <= settings.tol {
            rep.converged = true;
            rep.end = NewtonEnd::Converged;
            break;
        }
        if rep.iterations >= settings.max_iter {
            rep.end = NewtonEnd::IterationLimit;
            break;
        }
        if !reuse_on && !fresh {
            // Plain Newton: this iterate was reached without a Hessian (a backtracked or
            // predicted-converging step), so form it now. Its value and gradient are the
            // ones already held (evaluations are deterministic).
            hessian_at(objective, x, &mut w, settings, &mut rep)?;
            fresh = true;
        }
        // Direction p = −H⁻¹g, from the BFGS inverse when reusing, else from the factor.
        if have_hinv {
            // (H⁻¹ is symmetric: row a is column a, which is contiguous.)
            for (a, da) in w.dir.iter_mut().enumerate() {
                *da = -dot(w.hinv.col_as_slice(a), &w.g);
            }
        } else {
            w.dir.copy_from_slice(&w.g);
            w.chol
                .solve_in_place(&mut w.dir)
                .map_err(NewtonFailure::from)?;
            w.dir.iter_mut().for_each(|v| *v = -*v);
        }
        let lambda2 = -dot(&w.g, &w.dir);
        // Keep reusing the factor while steps contract well. A step about to be taken with
        // a fresh factor is a Newton step: no new Hessian at its trial point until its own
        // contraction is known (the last ratio measured the stale matrix it replaced).
        let reuse = reuse_on && (fresh || ratio <= settings.reuse_below);
        // Predicted ‖g⁺‖: quadratic rate after a fresh factor (constant estimated from the
        // last step as ratio/‖g‖), linear after a stale one.
        let predicted = if fresh {
            gnorm * ratio * ratio
        } else {
            gnorm * ratio
        };
        let converging = predicted.is_finite() && predicted <= 0.1 * settings.tol;
        // The predicted decrease λ²/2 is below what f's round-off can resolve.
        let pure = lambda2 / 2.0 <= noise;
        let mut accepted = None;
        let mut t = 1.0;
        // (λ² ≤ 0 or NaN: not a descent direction — round-off in a stale matrix or at a
        // vanishing gradient; treated as a failed line search.)
        while lambda2 > 0.0 && t >= settings.min_step {
            for ((tr, xa), da) in w.trial.iter_mut().zip(x.iter()).zip(&w.dir) {
                *tr = xa + t * da;
            }
            if w.trial == *x {
                // The step is below the resolution of x: no smaller one can do anything
                // (and Armijo would "accept" the zero step, as f − tiny rounds to f).
                break;
            }
            let full = t == 1.0;
            let want_h = full && !reuse && !converging && (reuse_on || last_full);
            rep.evaluations += 1;
            if want_h {
                rep.hessians += 1;
            }
            let need = if want_h {
                Need::Hessian
            } else {
                Need::Gradient
            };
            let (ft, dt) = evaluate(objective, &w.trial, need, &mut w.g_trial, &mut w.hess)?;
            if ft < f64::INFINITY {
                let rule = if full && pure {
                    Some(Rule::Pure)
                } else if ft <= f - settings.armijo * t * lambda2 {
                    Some(Rule::Armijo)
                } else if (ft - f).abs() <= noise + dt && norm(&w.g_trial) < gnorm {
                    Some(Rule::Gradient)
                } else {
                    None
                };
                if let Some(rule) = rule {
                    accepted = Some((rule, want_h, full, ft, dt));
                    break;
                }
            }
            t *= 0.5;
        }
        let Some((rule, with_hessian, full, ft, dt)) = accepted else {
            if fresh {
                rep.end = NewtonEnd::NoAcceptableStep;
                break;
            }
            // A stale matrix's direction failed: form the Hessian at x and retry.
            hessian_at(objective, x, &mut w, settings, &mut rep)?;
            have_hinv = false;
            fresh = true;
            ratio = f64::INFINITY;
            continue;
        };
        match rule {
            Rule::Pure => rep.pure_steps += 1,
            Rule::Gradient => rep.gradient_steps += 1,
            Rule::Armijo => {}
        }
        if with_hessian {
            factor_hessian(&mut w, settings, &mut rep)?;
            have_hinv = false;
        } else if reuse_on {
            // The factor will be reused: fold this step's curvature in.
            if !have_hinv {
                w.chol
                    .inverse_into(w.hinv.as_mut())
                    .map_err(NewtonFailure::from)?;
                have_hinv = true;
            }
            for (sa, (ta, xa)) in w.s.iter_mut().zip(w.trial.iter().zip(x.iter())) {
                *sa = ta - xa;
            }
            for (ya, (gt, ga)) in w.y.iter_mut().zip(w.g_trial.iter().zip(&w.g)) {
                *ya = gt - ga;
            }
            bfgs_inverse_update(w.hinv.as_mut(), &w.s, &w.y, &mut w.u)?;
        }
        fresh = with_hessian;
        last_full = full;
        rep.iterations += 1;
        ratio = norm(&w.g_trial) / gnorm;
        x.copy_from_slice(&w.trial);
        std::mem::swap(&mut w.g, &mut w.g_trial);
        f = ft;
        noise = dt;
    }
    Ok(rep)
}

/// Which acceptance rule took a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Pure,
    Armijo,
    Gradient,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Direct BFGS update of B ≈ ∇²f: B⁺ = B − BssᵀB/sᵀBs + yyᵀ/yᵀs.
    fn direct_bfgs(b: &Mat<f64>, s: &[f64], y: &[f64]) -> Mat<f64> {
        let n = s.len();
        let bs: Vec<f64> = (0..n)
            .map(|a| (0..n).map(|c| b[(a, c)] * s[c]).sum())
            .collect();
        let sbs = dot(s, &bs);
        let ys = dot(y, s);
        Mat::from_fn(n, n, |a, c| {
            b[(a, c)] - bs[a] * bs[c] / sbs + y[a] * y[c] / ys
        })
    }

    #[test]
    fn bfgs_inverse_update_inverts_the_direct_update_and_meets_the_secant_equation() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 6;
        for _ in 0..20 {
            let a = Mat::from_fn(n + 2, n, |_, _| rng.random_range(-1.0..1.0));
            let mut b = a.transpose() * &a;
            for i in 0..n {
                b[(i, i)] += 0.5;
            }
            let h = crate::linalg::cholesky_factor(b.as_ref())
                .unwrap()
                .inverse()
                .unwrap();
            let s: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            // y = M s for an SPD M, so yᵀs > 0.
            let m = {
                let c = Mat::from_fn(n, n, |_, _| rng.random_range(-1.0..1.0));
                let mut m = c.transpose() * &c;
                for i in 0..n {
                    m[(i, i)] += 1.0;
                }
                m
            };
            let y: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|j| m[(i, j)] * s[j]).sum())
                .collect();
            let mut hp = h.clone();
            let mut work = vec![0.0; n];
            assert!(bfgs_inverse_update(hp.as_mut(), &s, &y, &mut work).unwrap());
            // Secant equation H⁺y = s.
            for i in 0..n {
                let hy: f64 = (0..n).map(|j| hp[(i, j)] * y[j]).sum();
                assert!((hy - s[i]).abs() < 1e-10 * (1.0 + s[i].abs()));
            }
            // H⁺ is the inverse of the direct update B⁺.
            let bp = direct_bfgs(&b, &s, &y);
            let prod = &bp * &hp;
            for i in 0..n {
                for j in 0..n {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((prod[(i, j)] - want).abs() < 1e-8, "({i}, {j})");
                }
            }
        }
    }

    #[test]
    fn bfgs_skips_pairs_without_curvature_and_checks_sizes() {
        let mut h = Mat::<f64>::identity(2, 2);
        let mut work = vec![0.0; 2];
        let before = h.clone();
        assert!(!bfgs_inverse_update(h.as_mut(), &[1.0, 0.0], &[-1.0, 0.0], &mut work).unwrap());
        assert!(
            !bfgs_inverse_update(h.as_mut(), &[1.0, 0.0], &[f64::NAN, 0.0], &mut work).unwrap()
        );
        assert_eq!(h, before);
        assert!(matches!(
            bfgs_inverse_update(h.as_mut(), &[1.0, 0.0], &[1.0], &mut work),
            Err(NewtonFailure::DimensionMismatch { .. })
        ));
        assert!(matches!(
            bfgs_inverse_update(h.as_mut(), &[1.0, 0.0], &[1.0, 0.0], &mut []),
            Err(NewtonFailure::DimensionMismatch { .. })
        ));
    }

    #[test]
    fn sum_noise_formula() {
        let e = f64::EPSILON;
        assert_eq!(sum_noise(2.0, 16), e * 12.0 * 2.0);
        assert_eq!(sum_noise(-2.0, 0), e * 8.0 * 2.0);
        assert_eq!(clean_noise(f64::NAN), 0.0);
        assert_eq!(clean_noise(-1.0), 0.0);
        assert_eq!(clean_noise(f64::INFINITY), 0.0);
    }
}
