//! Observers: code that watches a run without owning it (as in `argmin`).
//!
//! The [`Executor`](crate::solve::executor::Executor) calls [`Observer::observe_init`] once after
//! the solver's `init`, [`Observer::observe_iter`] after each accepted step (subject to
//! the observer's [`ObserverMode`]), and [`Observer::observe_final`] once with the
//! [`Termination`] reason. Every hook defaults to a no-op, so an observer implements only
//! what it needs. Built-ins: [`TraceObserver`] (collects the per-iteration records) and
//! [`LogObserver`] (one line per iteration on stderr). The library never installs signal
//! handlers; a front end that wants Ctrl-C passes a cancellation flag to the executor.

use crate::solve::solver::{FitState, IterRecord, Termination};
use std::sync::{Arc, Mutex, PoisonError};

/// When an observer's [`Observer::observe_iter`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObserverMode {
    /// After every iteration.
    Always,
    /// After iterations whose index is a multiple of `n` (`n ≥ 1`; `Every(0)` is rejected
    /// by [`Executor::run`](crate::solve::executor::Executor::run)).
    Every(u64),
    /// Only after iterations that improved the best objective seen so far.
    NewBest,
}

impl ObserverMode {
    /// Whether the observer fires at iteration `iter` (`improved`: the step set a new best).
    pub fn fires(&self, iter: u64, improved: bool) -> bool {
        match *self {
            ObserverMode::Always => true,
            ObserverMode::Every(n) => n > 0 && iter.is_multiple_of(n),
            ObserverMode::NewBest => improved,
        }
    }
}

/// Hooks called by the executor. All default to doing nothing.
pub trait Observer: Send {
    /// Called once, after the solver's `init`, with the solver's name and the initial state.
    fn observe_init(&mut self, _solver: &str, _state: &FitState) {}
    /// Called after an iteration (as allowed by the observer's mode) with the new state
    /// and its record.
    fn observe_iter(&mut self, _state: &FitState, _record: &IterRecord) {}
    /// Called once when the run stops, with the final state and the reason.
    fn observe_final(&mut self, _state: &FitState, _termination: Termination) {}
}

/// Collects every record it observes into a shared buffer.
///
/// Cloning shares the buffer: keep one clone, box the other into the executor, and read
/// [`TraceObserver::records`] after the run.
#[derive(Debug, Clone, Default)]
pub struct TraceObserver {
    records: Arc<Mutex<Vec<IterRecord>>>,
    terminations: Arc<Mutex<Vec<Termination>>>,
}

impl TraceObserver {
    /// An observer with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }
    /// A copy of the records collected so far.
    pub fn records(&self) -> Vec<IterRecord> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
    /// The termination reasons seen by `observe_final` (one per finished run).
    pub fn terminations(&self) -> Vec<Termination> {
        self.terminations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Observer for TraceObserver {
    fn observe_iter(&mut self, _state: &FitState, record: &IterRecord) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record.clone());
    }
    fn observe_final(&mut self, _state: &FitState, termination: Termination) {
        self.terminations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(termination);
    }
}

/// Prints one line per observed iteration to stderr:
/// `solver iter L ‖∇L‖ D_A inner elapsed`.
#[derive(Debug, Clone, Default)]
pub struct LogObserver {
    solver: String,
}

impl LogObserver {
    /// A logger (the solver name is filled in by `observe_init`).
    pub fn new() -> Self {
        Self::default()
    }
    /// The line printed for one record (exposed for tests and other front ends).
    pub fn format_record(solver: &str, r: &IterRecord) -> String {
        format!(
            "[{solver}] iter {:>5}  L = {:.10e}  |grad L| = {:.3e}  D_A = {:.3e}  inner = {} ({})  {:.3}s",
            r.iter,
            r.objective,
            r.grad_norm,
            r.bregman_step,
            r.inner.iterations,
            if r.inner.converged { "ok" } else { "inexact" },
            r.elapsed
        )
    }
}

impl Observer for LogObserver {
    fn observe_init(&mut self, solver: &str, state: &FitState) {
        self.solver = solver.to_string();
        eprintln!(
            "[{solver}] start at iter {}  L = {:.10e}",
            state.iter, state.objective
        );
    }
    fn observe_iter(&mut self, _state: &FitState, record: &IterRecord) {
        eprintln!("{}", Self::format_record(&self.solver, record));
    }
    fn observe_final(&mut self, state: &FitState, termination: Termination) {
        eprintln!(
            "[{}] stopped after {} iterations: {termination}; best L = {:.10e}",
            self.solver, state.iter, state.best_objective
        );
    }
}

// ---------------------------------------------------------------------------
// Iterates, for certificates.

/// Iterates and objective values, in order.
type Points = (Vec<Vec<f64>>, Vec<f64>);

/// Collects $(\theta_t, L(\theta_t))$ for $t = 0, 1, \dots$ (the start from
/// `observe_init`, then every observed iteration). Clones share the buffer.
#[derive(Debug, Clone, Default)]
pub struct TrajectoryObserver {
    points: Arc<Mutex<Points>>,
}

impl TrajectoryObserver {
    /// An empty trajectory.
    pub fn new() -> Self {
        Self::default()
    }
    /// The iterates and their objective values so far (equal lengths).
    pub fn take(&self) -> (Vec<Vec<f64>>, Vec<f64>) {
        let g = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        (g.0.clone(), g.1.clone())
    }
}

impl Observer for TrajectoryObserver {
    fn observe_init(&mut self, _solver: &str, state: &FitState) {
        let mut g = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        g.0.clear();
        g.1.clear();
        g.0.push(state.theta.clone());
        g.1.push(state.objective);
    }
    fn observe_iter(&mut self, state: &FitState, record: &IterRecord) {
        let mut g = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        g.0.push(state.theta.clone());
        g.1.push(record.objective);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inner::InnerStats;

    fn rec(iter: u64) -> IterRecord {
        IterRecord {
            iter,
            objective: 1.5,
            grad_norm: f64::NAN,
            bregman_step: 0.25,
            inner: InnerStats::default(),
            step: Default::default(),
            elapsed: 0.0,
        }
    }

    #[test]
    fn modes_fire_as_documented() {
        assert!(ObserverMode::Always.fires(3, false));
        assert!(ObserverMode::Every(2).fires(4, false));
        assert!(!ObserverMode::Every(2).fires(3, true));
        assert!(!ObserverMode::Every(0).fires(0, true));
        assert!(ObserverMode::NewBest.fires(7, true));
        assert!(!ObserverMode::NewBest.fires(7, false));
    }

    #[test]
    fn trace_clones_share_the_buffer() {
        let keep = TraceObserver::new();
        let mut boxed: Box<dyn Observer> = Box::new(keep.clone());
        let st = FitState::new(vec![0.0], 1.0);
        boxed.observe_iter(&st, &rec(1));
        boxed.observe_iter(&st, &rec(2));
        boxed.observe_final(&st, Termination::MaxIters);
        let r = keep.records();
        assert_eq!(r.iter().map(|r| r.iter).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(keep.terminations(), vec![Termination::MaxIters]);
    }

    #[test]
    fn log_line_names_solver_and_values() {
        let line = LogObserver::format_record("EM", &rec(12));
        assert!(line.starts_with("[EM] iter    12"), "{line}");
        assert!(line.contains("L = 1.5000000000e0"), "{line}");
        assert!(line.contains("NaN"), "{line}");
    }

    #[test]
    fn observers_are_send() {
        fn is_send<T: Send>() {}
        is_send::<TraceObserver>();
        is_send::<LogObserver>();
    }
}

#[cfg(test)]
mod trajectory_tests {
    use super::*;
    use crate::inner::InnerStats;
    use crate::solve::solver::{FitState, IterRecord};

    #[test]
    fn keeps_start_and_iterates_in_order() {
        let keep = TrajectoryObserver::new();
        let mut o: Box<dyn Observer> = Box::new(keep.clone());
        o.observe_init("EM", &FitState::new(vec![0.0, 1.0], 3.0));
        for t in 1..=2u32 {
            let st = FitState::new(vec![f64::from(t), 1.0], 3.0 - f64::from(t));
            let rec = IterRecord {
                iter: u64::from(t),
                objective: st.objective,
                grad_norm: f64::NAN,
                bregman_step: f64::NAN,
                inner: InnerStats::default(),
                step: Default::default(),
                elapsed: 0.0,
            };
            o.observe_iter(&st, &rec);
        }
        let (th, l) = keep.take();
        assert_eq!(th, vec![vec![0.0, 1.0], vec![1.0, 1.0], vec![2.0, 1.0]]);
        assert_eq!(l, vec![3.0, 2.0, 1.0]);
    }
}
