//! The executor: one loop that runs any [`Solver`] (EM, mirror descent with step η,
//! gradient descent, gradient EM) with the same stopping rules, observers and
//! checkpoints, so comparisons between solvers share every line but the step.
//!
//! The loop (as in `argmin`'s executor):
//!
//! 1. `state ← solver.init(problem, state₀)`, observers' `observe_init`;
//! 2. repeat: check the stop rules that need no new step (cancel flag, iteration limit,
//!    time limit) → `solver.next_iter` → set iteration counters and the elapsed time →
//!    update the best iterate (kept apart from the current one: mirror descent with
//!    $\eta > 1$ and gradient descent are not monotone) → observers → checkpoint → the
//!    stop rules that read the new step:
//!    * relative change ([`Executor::tol`]):
//!      $$ \frac{|L_{t+1} - L_t|}{\max(1, |L_t|)} < \text{tol}, $$
//!      evaluated by [`relative_change`] and guarded with `is_finite` (a NaN never stops
//!      and never passes silently: a non-finite objective is an error);
//!    * gradient norm ([`Executor::grad_tol`]): $\|\nabla L(\theta_{t+1})\|_2 <$ `grad_tol`,
//!      only when the solver's record carries a finite gradient norm;
//!
//!    a met criterion ends the run with [`Termination::Converged`] /
//!    [`Termination::GradientSmall`] only if every record among the last
//!    [`INEXACT_WINDOW`](crate::solve::solver::INEXACT_WINDOW) of the trace (the stopping
//!    iteration included; records restored from a checkpoint count) has
//!    `inner.converged`; otherwise it ends with [`Termination::InexactMStep`] (the rule is
//!    [`Termination::from_window`]). "Converged" therefore always means the outer
//!    criterion held *and* the recent steps were the exact steps of the method;
//! 3. observers' `observe_final`, and the [`FitResult`].
//!
//! Reaching the iteration limit, the time limit or the cancel flag is a
//! [`Termination`] reason, not an error; `Err` is returned only when a step fails.
//!
//! Checkpoints are JSON files holding the [`FitState`] and the trace (see
//! [`Checkpoint`]); [`Executor::resume`] continues from one and, for a deterministic
//! solver, reaches the same final parameters as an uninterrupted run.

use crate::error::{MoeError, Result};
use crate::inner::InnerStats;
use crate::model::conditional::ConditionalFamily;
use crate::solve::observer::{Observer, ObserverMode};
use crate::solve::problem::Problem;
use crate::solve::solver::{FitState, IterRecord, Solver, StepInfo, Termination};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A problem whose objective $L(\theta)$ the executor can evaluate (to build the initial
/// state from parameters alone).
pub trait Objective {
    /// $L(\theta)$.
    fn objective(&self, theta: &[f64]) -> Result<f64>;
}

impl<M: ConditionalFamily + ?Sized> Objective for Problem<'_, M> {
    fn objective(&self, theta: &[f64]) -> Result<f64> {
        Problem::objective(self, theta)
    }
}

/// The relative change of the objective used by the tolerance rule:
/// $$ \frac{|L_{t+1} - L_t|}{\max(1, |L_t|)}, $$
/// or `None` when it is not a finite number (so it can never satisfy a tolerance).
pub fn relative_change(previous: f64, next: f64) -> Option<f64> {
    let r = (next - previous).abs() / previous.abs().max(1.0);
    r.is_finite().then_some(r)
}

/// What a run returns.
#[derive(Debug, Clone, PartialEq)]
pub struct FitResult {
    /// The current (last) state; `state.best_theta`/`best_objective` mirror [`Self::best`].
    pub state: FitState,
    /// The best iterate seen, as a state at its own iteration.
    pub best: FitState,
    /// Why the run stopped.
    pub termination: Termination,
    /// One record per iteration, including those of a resumed run's earlier part.
    pub trace: Vec<IterRecord>,
    /// Wall-clock seconds, including those recorded in a resumed checkpoint.
    pub seconds: f64,
}

/// The content of a checkpoint file (serde JSON).
///
/// Non-finite record fields (NaN gradient norms of solvers that do not compute them) are
/// stored as `null` and read back as NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Name of the solver that wrote it (checked on resume only by the caller).
    pub solver: String,
    /// The state after the last completed iteration.
    pub state: FitState,
    /// Iteration of the best iterate.
    pub best_iter: u64,
    /// Records of the iterations so far.
    pub trace: Vec<RecordJson>,
    /// Seconds spent so far.
    pub seconds: f64,
}

/// An [`IterRecord`] with its possibly non-finite fields as `Option` (JSON has no NaN).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordJson {
    /// See [`IterRecord::iter`].
    pub iter: u64,
    /// See [`IterRecord::objective`].
    pub objective: Option<f64>,
    /// See [`IterRecord::grad_norm`].
    pub grad_norm: Option<f64>,
    /// See [`IterRecord::bregman_step`].
    pub bregman_step: Option<f64>,
    /// Inner iterations.
    pub inner_iterations: u64,
    /// Inner residual.
    pub inner_residual: Option<f64>,
    /// Inner convergence flag.
    pub inner_converged: bool,
    /// Gram-sized Hessians formed.
    pub inner_hessians: u64,
    /// Inner fallbacks (see [`InnerStats::fallbacks`]); 0 in checkpoints written before it.
    #[serde(default)]
    pub inner_fallbacks: u64,
    /// See [`IterRecord::step`]; the default in checkpoints written before it existed.
    #[serde(default)]
    pub step: StepInfo,
    /// See [`IterRecord::elapsed`].
    pub elapsed: f64,
}

fn opt(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

impl From<&IterRecord> for RecordJson {
    fn from(r: &IterRecord) -> Self {
        RecordJson {
            iter: r.iter,
            objective: opt(r.objective),
            grad_norm: opt(r.grad_norm),
            bregman_step: opt(r.bregman_step),
            inner_iterations: r.inner.iterations,
            inner_residual: opt(r.inner.residual),
            inner_converged: r.inner.converged,
            inner_hessians: r.inner.hessians,
            inner_fallbacks: r.inner.fallbacks,
            step: r.step.clone(),
            elapsed: r.elapsed,
        }
    }
}

impl From<&RecordJson> for IterRecord {
    fn from(r: &RecordJson) -> Self {
        IterRecord {
            iter: r.iter,
            objective: r.objective.unwrap_or(f64::NAN),
            grad_norm: r.grad_norm.unwrap_or(f64::NAN),
            bregman_step: r.bregman_step.unwrap_or(f64::NAN),
            inner: InnerStats {
                iterations: r.inner_iterations,
                residual: r.inner_residual.unwrap_or(f64::NAN),
                converged: r.inner_converged,
                hessians: r.inner_hessians,
                fallbacks: r.inner_fallbacks,
            },
            step: r.step.clone(),
            elapsed: r.elapsed,
        }
    }
}

impl Checkpoint {
    /// Writes the checkpoint as JSON (to a temporary file renamed into place, so a crash
    /// never leaves a half-written checkpoint).
    ///
    /// # Errors
    /// `Io` when the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self).map_err(|e| MoeError::Io(e.to_string()))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, text).map_err(|e| MoeError::Io(format!("{}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(|e| MoeError::Io(format!("{}: {e}", path.display())))
    }

    /// Reads a checkpoint written by [`Checkpoint::save`].
    ///
    /// # Errors
    /// `Io` when the file cannot be read or parsed, `InvalidParam { name: "checkpoint" }`
    /// when its state is inconsistent (lengths differ, non-finite objective).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| MoeError::Io(format!("{}: {e}", path.display())))?;
        let c: Checkpoint = serde_json::from_str(&text)
            .map_err(|e| MoeError::Io(format!("{}: {e}", path.display())))?;
        let s = &c.state;
        if s.theta.len() != s.best_theta.len()
            || !s.objective.is_finite()
            || !s.best_objective.is_finite()
            || s.theta.iter().chain(&s.best_theta).any(|v| !v.is_finite())
            || c.best_iter > s.iter
        {
            return Err(MoeError::InvalidParam {
                name: "checkpoint",
                reason: format!("{}: inconsistent state", path.display()),
            });
        }
        Ok(c)
    }
}

enum Start {
    Nothing,
    Theta(Vec<f64>),
    State {
        state: FitState,
        best_iter: u64,
        trace: Vec<IterRecord>,
        seconds: f64,
    },
}

/// Runs a [`Solver`] on a problem. See the module documentation for the loop.
pub struct Executor<P, S> {
    problem: P,
    solver: S,
    start: Start,
    max_iters: u64,
    tol: Option<f64>,
    grad_tol: Option<f64>,
    time_limit: Option<Duration>,
    cancel: Option<Arc<AtomicBool>>,
    observers: Vec<(Box<dyn Observer>, ObserverMode)>,
    checkpoint: Option<(PathBuf, u64)>,
}

/// Default iteration limit.
pub const DEFAULT_MAX_ITERS: u64 = 1000;

impl<P: Objective, S: Solver<P>> Executor<P, S> {
    /// An executor with no stopping rule but the iteration limit ([`DEFAULT_MAX_ITERS`]).
    /// Give the start with [`Self::theta0`], [`Self::from_state`] or [`Self::resume`].
    pub fn new(problem: P, solver: S) -> Self {
        Executor {
            problem,
            solver,
            start: Start::Nothing,
            max_iters: DEFAULT_MAX_ITERS,
            tol: None,
            grad_tol: None,
            time_limit: None,
            cancel: None,
            observers: Vec::new(),
            checkpoint: None,
        }
    }
    /// Starts from parameters $\theta_0$ ($L(\theta_0)$ is evaluated by `run`).
    pub fn theta0(mut self, theta: Vec<f64>) -> Self {
        self.start = Start::Theta(theta);
        self
    }
    /// Starts from a state (its `iter` is kept; its best is kept apart).
    pub fn from_state(mut self, state: FitState) -> Self {
        let best_iter = state.iter;
        self.start = Start::State {
            state,
            best_iter,
            trace: Vec::new(),
            seconds: 0.0,
        };
        self
    }
    /// Continues from a checkpoint file (state, best, trace and elapsed seconds).
    ///
    /// # Errors
    /// As [`Checkpoint::load`].
    pub fn resume(mut self, path: impl AsRef<Path>) -> Result<Self> {
        let c = Checkpoint::load(path.as_ref())?;
        self.start = Start::State {
            state: c.state,
            best_iter: c.best_iter,
            trace: c.trace.iter().map(IterRecord::from).collect(),
            seconds: c.seconds,
        };
        Ok(self)
    }
    /// Iteration limit: the run stops with [`Termination::MaxIters`] once `state.iter`
    /// reaches `n` (counted from 0, including iterations before a resume).
    pub fn max_iters(mut self, n: u64) -> Self {
        self.max_iters = n;
        self
    }
    /// Relative tolerance on the change of $L$ (see [`relative_change`]); must be finite
    /// and > 0.
    pub fn tol(mut self, rel: f64) -> Self {
        self.tol = Some(rel);
        self
    }
    /// Tolerance on $\|\nabla L\|_2$, used when the solver records a finite gradient norm;
    /// must be finite and > 0.
    pub fn grad_tol(mut self, g: f64) -> Self {
        self.grad_tol = Some(g);
        self
    }
    /// Wall-clock limit of this call to `run` (checked before each step).
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }
    /// A flag the caller may raise (from a signal handler, another thread, a UI) to stop
    /// the run before the next step with [`Termination::Interrupted`].
    pub fn cancel(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }
    /// Adds an observer.
    pub fn add_observer(mut self, observer: Box<dyn Observer>, mode: ObserverMode) -> Self {
        self.observers.push((observer, mode));
        self
    }
    /// Writes a [`Checkpoint`] to `path` after every `every`-th iteration and at the end.
    pub fn checkpoint(mut self, path: impl Into<PathBuf>, every: u64) -> Self {
        self.checkpoint = Some((path.into(), every));
        self
    }

    fn validate(&self) -> Result<()> {
        if let Some(t) = self.tol {
            if !(t.is_finite() && t > 0.0) {
                return Err(MoeError::InvalidParam {
                    name: "tol",
                    reason: "finite and > 0".into(),
                });
            }
        }
        if let Some(g) = self.grad_tol {
            if !(g.is_finite() && g > 0.0) {
                return Err(MoeError::InvalidParam {
                    name: "grad_tol",
                    reason: "finite and > 0".into(),
                });
            }
        }
        if self
            .observers
            .iter()
            .any(|(_, m)| *m == ObserverMode::Every(0))
        {
            return Err(MoeError::InvalidParam {
                name: "observer mode",
                reason: "Every(n) needs n ≥ 1".into(),
            });
        }
        if let Some((_, 0)) = self.checkpoint {
            return Err(MoeError::InvalidParam {
                name: "checkpoint",
                reason: "every ≥ 1".into(),
            });
        }
        Ok(())
    }

    fn write_checkpoint(
        &self,
        state: &FitState,
        best_iter: u64,
        trace: &[IterRecord],
        seconds: f64,
    ) -> Result<()> {
        if let Some((path, _)) = &self.checkpoint {
            Checkpoint {
                solver: self.solver.name(),
                state: state.clone(),
                best_iter,
                trace: trace.iter().map(RecordJson::from).collect(),
                seconds,
            }
            .save(path)?;
        }
        Ok(())
    }

    /// Runs the loop.
    ///
    /// # Errors
    /// `InvalidParam` for an invalid setting or a missing start, any error of the
    /// solver's step, `NonFinite` when a step returns a non-finite objective, `Io` when
    /// a checkpoint cannot be written.
    pub fn run(mut self) -> Result<FitResult> {
        self.validate()?;
        let (state, mut best_iter, mut trace, seconds0) =
            match std::mem::replace(&mut self.start, Start::Nothing) {
                Start::Nothing => {
                    return Err(MoeError::InvalidParam {
                        name: "theta0",
                        reason: "give a start: theta0, from_state or resume".into(),
                    })
                }
                Start::Theta(theta) => {
                    let l = self
                        .problem
                        .objective(&theta)
                        .map_err(|e| e.at_iteration(0))?;
                    (FitState::new(theta, l), 0, Vec::new(), 0.0)
                }
                Start::State {
                    state,
                    best_iter,
                    trace,
                    seconds,
                } => (state, best_iter, trace, seconds),
            };
        if !state.objective.is_finite() {
            return Err(MoeError::NonFinite {
                what: "initial objective",
            }
            .at_iteration(state.iter));
        }
        let clock = Instant::now();
        let start_iter = state.iter;
        let mut state = self
            .solver
            .init(&self.problem, state)
            .map_err(|e| e.at_iteration(start_iter))?;
        let name = self.solver.name();
        for (o, _) in self.observers.iter_mut() {
            o.observe_init(&name, &state);
        }
        let termination = loop {
            if let Some(flag) = &self.cancel {
                if flag.load(Ordering::Relaxed) {
                    break Termination::Interrupted;
                }
            }
            if state.iter >= self.max_iters {
                break Termination::MaxIters;
            }
            if let Some(limit) = self.time_limit {
                if clock.elapsed() >= limit {
                    break Termination::TimeLimit;
                }
            }
            let previous = state.objective;
            let (best_theta, best_objective) = (state.best_theta.clone(), state.best_objective);
            let iter = state.iter + 1;
            let (mut next, mut record) = self
                .solver
                .next_iter(&self.problem, state)
                .map_err(|e| e.at_iteration(iter))?;
            if !next.objective.is_finite() || next.theta.iter().any(|v| !v.is_finite()) {
                return Err(MoeError::NonFinite {
                    what: "objective or parameters after a step",
                }
                .at_iteration(iter));
            }
            next.iter = iter;
            record.iter = iter;
            record.objective = next.objective;
            record.elapsed = seconds0 + clock.elapsed().as_secs_f64();
            // Best is the executor's business: kept apart from the current iterate.
            let improved = next.objective < best_objective;
            if improved {
                next.best_theta = next.theta.clone();
                next.best_objective = next.objective;
                best_iter = iter;
            } else {
                next.best_theta = best_theta;
                next.best_objective = best_objective;
            }
            state = next;
            for (o, mode) in self.observers.iter_mut() {
                if mode.fires(iter, improved) {
                    o.observe_iter(&state, &record);
                }
            }
            let grad_norm = record.grad_norm;
            trace.push(record);
            if let Some((_, every)) = &self.checkpoint {
                if iter % every == 0 {
                    self.write_checkpoint(
                        &state,
                        best_iter,
                        &trace,
                        seconds0 + clock.elapsed().as_secs_f64(),
                    )?;
                }
            }
            // The outer criteria; a met criterion becomes `InexactMStep` when an inner
            // solve of the last INEXACT_WINDOW iterations missed its tolerance (a stalled
            // M-step also stops L from changing, which is not convergence).
            let rel = relative_change(previous, state.objective);
            if let (Some(tol), Some(r)) = (self.tol, rel) {
                if r < tol {
                    break Termination::from_window(
                        Termination::Converged { rel_change: r },
                        &trace,
                        rel,
                    );
                }
            }
            if let Some(g) = self.grad_tol {
                if grad_norm.is_finite() && grad_norm < g {
                    break Termination::from_window(Termination::GradientSmall, &trace, rel);
                }
            }
        };
        let seconds = seconds0 + clock.elapsed().as_secs_f64();
        self.write_checkpoint(&state, best_iter, &trace, seconds)?;
        for (o, _) in self.observers.iter_mut() {
            o.observe_final(&state, termination);
        }
        let best = FitState {
            theta: state.best_theta.clone(),
            objective: state.best_objective,
            iter: best_iter,
            best_theta: state.best_theta.clone(),
            best_objective: state.best_objective,
        };
        Ok(FitResult {
            state,
            best,
            termination,
            trace,
            seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_change_matches_definition_and_rejects_nan() {
        assert_eq!(relative_change(0.5, 0.25), Some(0.25));
        assert_eq!(relative_change(-4.0, -2.0), Some(0.5));
        assert_eq!(relative_change(f64::NAN, 1.0), None);
        assert_eq!(relative_change(1.0, f64::INFINITY), None);
    }

    #[test]
    fn record_json_round_trips_nan_as_null() {
        let r = IterRecord {
            iter: 3,
            objective: 1.25,
            grad_norm: f64::NAN,
            bregman_step: 0.5,
            inner: InnerStats {
                iterations: 4,
                residual: 1e-12,
                converged: true,
                hessians: 2,
                fallbacks: 1,
            },
            step: StepInfo {
                passes: 3,
                eta: Some(2.0),
                smoothness: None,
                backtracks: 1,
                safeguard: true,
                missing_weight: Some(0.5),
            },
            elapsed: 0.125,
        };
        let j = serde_json::to_string(&RecordJson::from(&r)).unwrap();
        assert!(j.contains("\"grad_norm\":null"), "{j}");
        let back: RecordJson = serde_json::from_str(&j).unwrap();
        let back = IterRecord::from(&back);
        assert!(back.grad_norm.is_nan());
        assert_eq!((back.iter, back.objective, back.inner), (3, 1.25, r.inner));
    }
}
