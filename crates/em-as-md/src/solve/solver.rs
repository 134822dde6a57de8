//! The solver abstraction: a solver is a step function, the
//! [`Executor`](crate::solve::executor::Executor) owns the loop (as in `argmin`).

use crate::error::Result;
use crate::inner::InnerStats;
use serde::{Deserialize, Serialize};

/// The state carried from one iteration to the next.
///
/// Invariant (tested for every solver): `objective` is $L(\theta)$ evaluated at `theta`
/// itself, never at the previous iterate. `best_*` are kept apart from the current
/// iterate because mirror descent with $\eta > 1$ and gradient descent are not monotone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitState {
    /// Current parameters $\theta_t$ (flattened, model-specific layout).
    pub theta: Vec<f64>,
    /// $L(\theta_t)$: average negative log-likelihood.
    pub objective: f64,
    /// Completed outer iterations $t$.
    pub iter: u64,
    /// Best parameters seen so far.
    pub best_theta: Vec<f64>,
    /// $L$ at `best_theta`.
    pub best_objective: f64,
}

impl FitState {
    /// A state at iteration 0 with its objective already evaluated.
    pub fn new(theta: Vec<f64>, objective: f64) -> Self {
        FitState {
            best_theta: theta.clone(),
            best_objective: objective,
            theta,
            objective,
            iter: 0,
        }
    }

    /// The state after one step to `theta` with objective $L(\theta)$ = `objective`:
    /// the iteration count advances and the best pair is kept apart from the current one
    /// (mirror descent with $\eta > 1$ and gradient descent are not monotone). Every solver
    /// builds its next state through this one function.
    pub fn advance(self, theta: Vec<f64>, objective: f64) -> FitState {
        let (best_theta, best_objective) = if objective < self.best_objective {
            (theta.clone(), objective)
        } else {
            (self.best_theta, self.best_objective)
        };
        FitState {
            theta,
            objective,
            iter: self.iter + 1,
            best_theta,
            best_objective,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_keeps_best_apart_from_current() {
        let s = FitState::new(vec![0.0], 2.0);
        let s = s.advance(vec![1.0], 1.0); // improves
        assert_eq!(
            (s.iter, s.best_theta.clone(), s.best_objective),
            (1, vec![1.0], 1.0)
        );
        let s = s.advance(vec![2.0], 3.0); // worse: current moves, best stays
        assert_eq!((s.iter, s.theta.clone(), s.objective), (2, vec![2.0], 3.0));
        assert_eq!((s.best_theta, s.best_objective), (vec![1.0], 1.0));
    }
}

/// One row of the per-iteration record passed to observers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterRecord {
    /// Outer iteration index $t+1$ of the state this record describes.
    pub iter: u64,
    /// $L(\theta_{t+1})$.
    pub objective: f64,
    /// $\|\nabla L(\theta_{t+1})\|_2$ (NaN when the solver does not compute it).
    pub grad_norm: f64,
    /// $D_{\mathcal A}(\Phi_{t+1}, \Phi_t)$, the average KL between successive complete-data
    /// laws (NaN when not computed).
    pub bregman_step: f64,
    /// Inner-solver work.
    pub inner: InnerStats,
    /// The outer step taken: EM-equivalent passes, step size $\eta$, measured relative
    /// smoothness $\hat L_t$, backtracks and safeguard (see [`StepInfo`]).
    #[serde(default)]
    pub step: StepInfo,
    /// Seconds since the run started.
    pub elapsed: f64,
}

/// What an outer step did, for comparing solvers by their cost and for reading the
/// accelerated solvers' steps as mirror-descent steps.
///
/// `passes` counts **EM-equivalent passes**: one per evaluation of the EM map
/// $F = $ M-step ∘ E-step (EM: 1 per iteration; SQUAREM: 2 or 3), and for the solvers
/// that do not evaluate $F$ one per pass over the data (an objective, gradient, target or
/// subproblem evaluation: mirror descent, gradient descent, Adam). An E-step is itself one
/// pass and an iterative M-step adds more, so counting one pass per data pass favours the
/// gradient-type solvers, never EM. 0 means not counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    /// EM-equivalent passes of this iteration (0: not counted).
    pub passes: u64,
    /// The step size taken: $\eta$ of a mirror-descent step (1 for EM), $-\alpha \ge 1$ of
    /// a SQUAREM step; `None` when the solver has none.
    pub eta: Option<f64>,
    /// The measured relative-smoothness ratio $\hat L_t$ of this step
    /// ([`step_smoothness`](crate::solve::md_adaptive::step_smoothness)), when measured.
    pub smoothness: Option<f64>,
    /// Trial steps rejected before the one taken (halvings of $\eta$).
    pub backtracks: u64,
    /// Whether a safeguard replaced the extrapolated step by the plain EM step.
    pub safeguard: bool,
    /// The weight $\beta$ of the missing information in a Newton step's Hessian
    /// $I_c + C - \beta I_m$ ([`Newton`](crate::solve::newton::Newton): 1 is Newton's
    /// step, 0 the EM-gradient step); `None` for the other solvers. Absent in records
    /// written before it existed.
    #[serde(default)]
    pub missing_weight: Option<f64>,
}

impl StepInfo {
    /// The record of one EM step: one pass, $\eta = 1$.
    pub fn em() -> StepInfo {
        StepInfo {
            passes: 1,
            eta: Some(1.0),
            ..StepInfo::default()
        }
    }
    /// The record of a mirror-descent step with step `eta` that took `passes` passes.
    pub fn mirror_step(passes: u64, eta: f64) -> StepInfo {
        StepInfo {
            passes,
            eta: Some(eta),
            ..StepInfo::default()
        }
    }
    /// The record of an extrapolated EM step (SQUAREM, Anderson) that took `passes`
    /// evaluations of the EM map, with length `eta` relative to the EM step (1 when the
    /// `safeguard` took the plain EM step).
    pub fn extrapolated(passes: u64, eta: f64, safeguard: bool) -> StepInfo {
        StepInfo {
            passes,
            eta: Some(eta),
            safeguard,
            ..StepInfo::default()
        }
    }
}

impl IterRecord {
    /// The record of iteration `iter` of a solver built on the EM map (EM, SQUAREM,
    /// Anderson), which computes neither $\Vert\nabla L\Vert$ nor the Bregman step (NaN);
    /// the executor fills `elapsed`.
    pub fn em_map_step(iter: u64, objective: f64, inner: InnerStats, step: StepInfo) -> Self {
        IterRecord {
            iter,
            objective,
            grad_norm: f64::NAN,
            bregman_step: f64::NAN,
            inner,
            step,
            elapsed: 0.0,
        }
    }
}

/// How many of the last outer iterations [`Termination::from_window`] inspects for an
/// inexact inner solve (an M-step or mirror-descent subproblem that missed its tolerance)
/// when an outer stopping criterion is met.
///
/// Why a window and not only the last step: an inexact M-step often stalls the outer
/// iterate (the inner solver gives up and leaves the block where it was), which makes the
/// objective stop changing — exactly what the relative-change criterion reads as
/// convergence. Looking back a few iterations catches a stall that began just before the
/// stop; steps further back are forgotten, because a fit whose early M-steps were inexact
/// (a poor start) and whose last [`INEXACT_WINDOW`] were exact has converged to a point
/// where the exact M-step holds.
pub const INEXACT_WINDOW: usize = 5;

/// Why a run stopped. Reaching the iteration limit is a reason, not an error.
///
/// **"Converged" always means converged.** The executor
/// ([`Executor`](crate::solve::executor::Executor)) ends with [`Termination::Converged`] or
/// [`Termination::GradientSmall`] only when the outer criterion is met *and* every inner
/// solve of the last [`INEXACT_WINDOW`] iterations (fewer at the start of a run) reported
/// `converged` in its [`InnerStats`]; when the criterion is met but at least one of them
/// did not, the run ends with [`Termination::InexactMStep`] instead (the rule is
/// [`Termination::from_window`]). [`Termination::is_converged`] is the test to use.
///
/// Not `#[non_exhaustive]`: every front end matches it exhaustively, so a new reason
/// cannot be silently reported as something else.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Termination {
    /// The iteration limit was reached.
    MaxIters,
    /// The relative change of $L$ fell below the tolerance, and every inner solve of the
    /// last [`INEXACT_WINDOW`] iterations converged.
    Converged {
        /// $|L_{t+1} - L_t| / \max(1, |L_t|)$ at the stop.
        rel_change: f64,
    },
    /// $\|\nabla L\|$ fell below its tolerance, and every inner solve of the last
    /// [`INEXACT_WINDOW`] iterations converged.
    GradientSmall,
    /// An outer criterion (relative change or gradient norm) was met, but the inner solve
    /// (M-step, mirror-descent subproblem) missed its tolerance in `inexact` of the last
    /// `window` iterations: the iterate may have stopped moving because the step could
    /// not be computed, not because it is a fixed point. Not converged.
    InexactMStep {
        /// Iterations among the last `window` whose inner solve reported not converged.
        inexact: usize,
        /// Iterations inspected: [`INEXACT_WINDOW`], or fewer when the run had fewer.
        window: usize,
        /// Largest finite inner residual among those inexact iterations (`None` when none
        /// of them reported a finite residual).
        worst_residual: Option<f64>,
        /// $|L_{t+1} - L_t| / \max(1, |L_t|)$ at the stop (`None` if not a finite number,
        /// possible only when the gradient criterion fired).
        rel_change: Option<f64>,
    },
    /// The time limit was reached.
    TimeLimit,
    /// The caller's cancellation flag was raised.
    Interrupted,
    /// An outer criterion was met, but the weighted data of a classifying expert are
    /// separated ([`crate::fit::separation`]): its M-step has no maximiser, its
    /// coefficients grow without bound and $L$ creeps towards its supremum by ever smaller
    /// steps. Not converged. Set by the product layer
    /// ([`MoeValidParams::fit`](crate::MoeValidParams::fit)), not by the executor.
    Separated {
        /// The expert (0-based).
        expert: usize,
        /// Its mean weighted negative log-likelihood (at most
        /// [`SEPARATION_MEAN_NLL`](crate::fit::separation::SEPARATION_MEAN_NLL)).
        mean_nll: f64,
    },
}

impl Termination {
    /// Whether the run converged: `true` only for [`Termination::Converged`] and
    /// [`Termination::GradientSmall`] (which the executor returns only when the recent
    /// inner solves were exact); `false` for an inexact M-step, the iteration or time
    /// limit and an interrupt.
    pub fn is_converged(&self) -> bool {
        match self {
            Termination::Converged { .. } | Termination::GradientSmall => true,
            Termination::InexactMStep { .. }
            | Termination::Separated { .. }
            | Termination::MaxIters
            | Termination::TimeLimit
            | Termination::Interrupted => false,
        }
    }

    /// The termination for a run whose outer criterion (`criterion`:
    /// [`Termination::Converged`] or [`Termination::GradientSmall`]) was just met, given
    /// the records of the run so far (`trace`, oldest first, the stopping iteration last)
    /// and the relative change at the stop:
    ///
    /// * `criterion` itself when every inner solve of the last
    ///   `min(`[`INEXACT_WINDOW`]`, trace.len())` records converged;
    /// * otherwise [`Termination::InexactMStep`] with the count of inexact records among
    ///   them, the window size, their worst finite residual and `rel_change`.
    ///
    /// Any other `criterion` is returned unchanged (the limits and the interrupt do not
    /// claim convergence, so there is nothing to correct).
    pub fn from_window(
        criterion: Termination,
        trace: &[IterRecord],
        rel_change: Option<f64>,
    ) -> Termination {
        match criterion {
            Termination::Converged { .. } | Termination::GradientSmall => {}
            Termination::InexactMStep { .. }
            | Termination::Separated { .. }
            | Termination::MaxIters
            | Termination::TimeLimit
            | Termination::Interrupted => return criterion,
        }
        let recent = &trace[trace.len().saturating_sub(INEXACT_WINDOW)..];
        let inexact: Vec<&IterRecord> = recent.iter().filter(|r| !r.inner.converged).collect();
        if inexact.is_empty() {
            return criterion;
        }
        let worst_residual = inexact
            .iter()
            .map(|r| r.inner.residual)
            .filter(|v| v.is_finite())
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.max(v)))
            });
        Termination::InexactMStep {
            inexact: inexact.len(),
            window: recent.len(),
            worst_residual,
            rel_change,
        }
    }
}

impl std::fmt::Display for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Termination::MaxIters => write!(f, "maximum number of iterations reached"),
            Termination::Converged { rel_change } => {
                write!(f, "converged (relative change {rel_change:.3e})")
            }
            Termination::GradientSmall => write!(f, "gradient norm below tolerance"),
            Termination::InexactMStep {
                inexact,
                window,
                worst_residual,
                ..
            } => {
                write!(
                    f,
                    "M-step inexact in {inexact} of the last {window} iterations "
                )?;
                match worst_residual {
                    Some(r) => write!(f, "(worst residual {r:.3e})"),
                    None => write!(f, "(no finite residual reported)"),
                }
            }
            Termination::Separated { expert, mean_nll } => write!(
                f,
                "expert {} separates its weighted data (mean negative log-likelihood \
                 {mean_nll:.1e}): its coefficients grow without bound",
                expert + 1
            ),
            Termination::TimeLimit => write!(f, "time limit reached"),
            Termination::Interrupted => write!(f, "interrupted"),
        }
    }
}

/// What [`Solver::next_iter`] returns: the state at $\theta_{t+1}$ and the iteration's
/// record.
pub type NextIter = Result<(FitState, IterRecord)>;

/// A solver: one step $\theta_t \to \theta_{t+1}$ on a problem `P`.
pub trait Solver<P: ?Sized> {
    /// Short name for reports ("EM", "MD(η=0.5)", "GD", "gradient EM").
    fn name(&self) -> String;
    /// Called once before the first step (allocate work buffers here).
    fn init(&mut self, _problem: &P, state: FitState) -> Result<FitState> {
        Ok(state)
    }
    /// $\theta_t \to \theta_{t+1}$. The returned state holds $L(\theta_{t+1})$.
    fn next_iter(&mut self, problem: &P, state: FitState) -> NextIter;
}
