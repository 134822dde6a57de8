//! Executor behaviour on small dummy problems and solvers: stop reasons, best vs current,
//! observers, checkpoints.

use em_as_md::solve::executor::{relative_change, Checkpoint, Objective};
use em_as_md::{
    Executor, FitState, InnerStats, IterRecord, MoeError, ObserverMode, Result, Solver,
    Termination, TraceObserver, INEXACT_WINDOW,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// $f(\theta) = \frac12\|\theta - c\|^2$.
#[derive(Clone, Copy)]
struct Quad<'a> {
    c: &'a [f64],
}

impl Objective for Quad<'_> {
    fn objective(&self, theta: &[f64]) -> Result<f64> {
        Ok(0.5
            * theta
                .iter()
                .zip(self.c)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>())
    }
}

/// A record of an exact step (these dummy solvers have no inner solve).
fn record(objective: f64, grad_norm: f64) -> IterRecord {
    IterRecord {
        iter: 0,
        objective,
        grad_norm,
        bregman_step: f64::NAN,
        inner: InnerStats {
            converged: true,
            ..InnerStats::default()
        },
        step: Default::default(),
        elapsed: 0.0,
    }
}

/// Gradient descent with a constant step on `Quad`.
struct Gd {
    step: f64,
}

impl<'a> Solver<Quad<'a>> for Gd {
    fn name(&self) -> String {
        "GD".into()
    }
    fn next_iter(&mut self, p: &Quad<'a>, mut s: FitState) -> Result<(FitState, IterRecord)> {
        for (t, c) in s.theta.iter_mut().zip(p.c) {
            *t -= self.step * (*t - c);
        }
        s.objective = p.objective(&s.theta)?;
        let g = (2.0 * s.objective).sqrt();
        s.iter += 1;
        let r = record(s.objective, g);
        Ok((s, r))
    }
}

/// Jumps through a fixed schedule of scalar parameters: deliberately non-monotone.
struct Schedule {
    points: Vec<f64>,
    at: usize,
}

impl<'a> Solver<Quad<'a>> for Schedule {
    fn name(&self) -> String {
        "schedule".into()
    }
    fn next_iter(&mut self, p: &Quad<'a>, mut s: FitState) -> Result<(FitState, IterRecord)> {
        s.theta = vec![self.points[self.at % self.points.len()]];
        self.at += 1;
        s.objective = p.objective(&s.theta)?;
        // A careless solver that also claims its own iterate is the best: the executor
        // must not believe it.
        s.best_theta = s.theta.clone();
        s.best_objective = s.objective;
        let r = record(s.objective, f64::NAN);
        Ok((s, r))
    }
}

/// GD that raises a cancel flag after a given number of steps, or sleeps each step.
struct Side {
    inner: Gd,
    flag: Arc<AtomicBool>,
    raise_after: u64,
    sleep: Duration,
}

impl<'a> Solver<Quad<'a>> for Side {
    fn name(&self) -> String {
        "side".into()
    }
    fn next_iter(&mut self, p: &Quad<'a>, s: FitState) -> Result<(FitState, IterRecord)> {
        std::thread::sleep(self.sleep);
        let out = self.inner.next_iter(p, s)?;
        if out.0.iter >= self.raise_after {
            self.flag.store(true, Ordering::Relaxed);
        }
        Ok(out)
    }
}

/// GD whose inner report says "not converged" (with the given residual) at the listed
/// iterations: an M-step that gave up, as the executor sees it.
struct InexactAt {
    inner: Gd,
    at: Vec<u64>,
    residual: f64,
}

impl<'a> Solver<Quad<'a>> for InexactAt {
    fn name(&self) -> String {
        "inexact-at".into()
    }
    fn next_iter(&mut self, p: &Quad<'a>, s: FitState) -> Result<(FitState, IterRecord)> {
        let (s, mut r) = self.inner.next_iter(p, s)?;
        if self.at.contains(&s.iter) {
            r.inner.converged = false;
            r.inner.residual = self.residual;
        }
        Ok((s, r))
    }
}

fn inexact_at(at: Vec<u64>, residual: f64) -> Executor<Quad<'static>, InexactAt> {
    Executor::new(
        Quad { c: &C },
        InexactAt {
            inner: Gd { step: 0.1 },
            at,
            residual,
        },
    )
    .theta0(vec![4.0, 3.0, -1.0])
}

/// Returns NaN after the first step.
struct Breaks;

impl<'a> Solver<Quad<'a>> for Breaks {
    fn name(&self) -> String {
        "breaks".into()
    }
    fn next_iter(&mut self, _p: &Quad<'a>, mut s: FitState) -> Result<(FitState, IterRecord)> {
        s.objective = f64::NAN;
        Ok((s, record(f64::NAN, f64::NAN)))
    }
}

const C: [f64; 3] = [1.0, -2.0, 0.5];

fn gd(step: f64) -> Executor<Quad<'static>, Gd> {
    Executor::new(Quad { c: &C }, Gd { step }).theta0(vec![4.0, 3.0, -1.0])
}

#[test]
fn max_iters_is_a_reason_and_records_match_the_objective() {
    let res = gd(0.1).max_iters(5).run().unwrap();
    assert_eq!(res.termination, Termination::MaxIters);
    assert_eq!(res.trace.len(), 5);
    assert_eq!(res.state.iter, 5);
    assert_eq!(
        res.trace.iter().map(|r| r.iter).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    // Recorded objective equals the objective recomputed at the returned parameters.
    let recomputed = Quad { c: &C }.objective(&res.state.theta).unwrap();
    assert_eq!(res.state.objective, recomputed);
    assert_eq!(res.trace[4].objective, recomputed);
    // Independent closed form: θ_t − c = (1 − s)^t (θ_0 − c).
    let d0: f64 = [3.0f64, 5.0, -1.5].iter().map(|v| v * v).sum();
    let expected = 0.5 * 0.9f64.powi(10) * d0;
    assert!((recomputed - expected).abs() < 1e-12 * expected);
    // Elapsed times are non-decreasing.
    assert!(res.trace.windows(2).all(|w| w[0].elapsed <= w[1].elapsed));
}

#[test]
fn tolerance_stops_with_the_exact_relative_change() {
    let res = gd(0.1).max_iters(10_000).tol(1e-6).run().unwrap();
    let n = res.trace.len();
    let rel = relative_change(res.trace[n - 2].objective, res.trace[n - 1].objective).unwrap();
    assert_eq!(res.termination, Termination::Converged { rel_change: rel });
    assert!(rel < 1e-6);
    // …and not one step earlier.
    let prev = relative_change(res.trace[n - 3].objective, res.trace[n - 2].objective).unwrap();
    assert!(prev >= 1e-6);
}

#[test]
fn an_inexact_inner_solve_in_the_last_window_is_not_convergence() {
    let clean = gd(0.1).max_iters(10_000).tol(1e-6).run().unwrap();
    let Termination::Converged { rel_change } = clean.termination else {
        panic!("{:?}", clean.termination);
    };
    assert!(clean.termination.is_converged());
    let stop = clean.state.iter;
    assert!(stop > INEXACT_WINDOW as u64 + 2, "{stop}");
    // Inexact at the stop, and at the oldest iteration the window still holds: the same
    // criterion is met at the same iteration, but the run is not converged.
    let oldest = stop - INEXACT_WINDOW as u64 + 1;
    for at in [vec![stop], vec![oldest], vec![oldest, stop - 1]] {
        let res = inexact_at(at.clone(), 0.5)
            .max_iters(10_000)
            .tol(1e-6)
            .run()
            .unwrap();
        assert_eq!(res.state.iter, stop, "{at:?}");
        assert_eq!(
            res.termination,
            Termination::InexactMStep {
                inexact: at.len(),
                window: INEXACT_WINDOW,
                worst_residual: Some(0.5),
                rel_change: Some(rel_change),
            },
            "{at:?}"
        );
        assert!(!res.termination.is_converged());
        assert_eq!(
            res.termination.to_string(),
            format!(
                "M-step inexact in {} of the last {INEXACT_WINDOW} iterations (worst residual 5.000e-1)",
                at.len()
            )
        );
    }
}

#[test]
fn an_inexact_inner_solve_before_the_window_is_forgotten() {
    let clean = gd(0.1).max_iters(10_000).tol(1e-6).run().unwrap();
    let stop = clean.state.iter;
    // Inexact only before the window (the first iterations, and the newest one outside).
    let res = inexact_at(vec![1, 2, stop - INEXACT_WINDOW as u64], 0.5)
        .max_iters(10_000)
        .tol(1e-6)
        .run()
        .unwrap();
    assert_eq!(res.termination, clean.termination);
    assert!(res.termination.is_converged());
}

#[test]
fn the_window_is_shorter_at_the_start_and_residuals_may_be_missing() {
    // A tolerance met at the first step: the window holds one record.
    let res = inexact_at(vec![1], f64::NAN).tol(1e300).run().unwrap();
    assert_eq!(res.state.iter, 1);
    let Termination::InexactMStep {
        inexact: 1,
        window: 1,
        worst_residual: None,
        rel_change: Some(_),
    } = res.termination
    else {
        panic!("{:?}", res.termination);
    };
    assert!(res.termination.to_string().contains("no finite residual"));
}

#[test]
fn the_gradient_criterion_obeys_the_same_rule() {
    let clean = gd(0.1).max_iters(10_000).grad_tol(1e-3).run().unwrap();
    assert_eq!(clean.termination, Termination::GradientSmall);
    let stop = clean.state.iter;
    let res = inexact_at(vec![stop - 1], 2.0)
        .max_iters(10_000)
        .grad_tol(1e-3)
        .run()
        .unwrap();
    assert_eq!(res.state.iter, stop);
    let n = res.trace.len();
    let rel = relative_change(res.trace[n - 2].objective, res.trace[n - 1].objective);
    assert_eq!(
        res.termination,
        Termination::InexactMStep {
            inexact: 1,
            window: INEXACT_WINDOW,
            worst_residual: Some(2.0),
            rel_change: rel,
        }
    );
}

#[test]
fn limits_and_interrupts_are_not_converged_and_from_window_keeps_them() {
    let inexact = {
        let mut r = record(1.0, 1.0);
        r.inner.converged = false;
        r
    };
    for t in [
        Termination::MaxIters,
        Termination::TimeLimit,
        Termination::Interrupted,
    ] {
        assert!(!t.is_converged());
        assert_eq!(
            Termination::from_window(t, std::slice::from_ref(&inexact), None),
            t
        );
    }
    assert!(Termination::GradientSmall.is_converged());
    assert_eq!(
        Termination::from_window(Termination::GradientSmall, &[], None),
        Termination::GradientSmall
    );
}

#[test]
fn terminations_round_trip_through_json_and_old_names_still_read() {
    for t in [
        Termination::MaxIters,
        Termination::Converged { rel_change: 1e-9 },
        Termination::GradientSmall,
        Termination::InexactMStep {
            inexact: 2,
            window: 5,
            worst_residual: Some(0.5),
            rel_change: Some(1e-10),
        },
        Termination::InexactMStep {
            inexact: 1,
            window: 1,
            worst_residual: None,
            rel_change: None,
        },
        Termination::TimeLimit,
        Termination::Interrupted,
    ] {
        let j = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Termination>(&j).unwrap(), t, "{j}");
    }
    // The spelling of files written before InexactMStep existed.
    assert_eq!(
        serde_json::from_str::<Termination>("{\"Converged\":{\"rel_change\":1e-9}}").unwrap(),
        Termination::Converged { rel_change: 1e-9 }
    );
    assert_eq!(
        serde_json::from_str::<Termination>("\"MaxIters\"").unwrap(),
        Termination::MaxIters
    );
}

#[test]
fn a_resumed_run_counts_the_inexact_records_of_its_checkpoint() {
    let clean = gd(0.1).max_iters(10_000).tol(1e-6).run().unwrap();
    let stop = clean.state.iter;
    let path = std::env::temp_dir().join(format!(
        "mdem_executor_inexact_resume_{}.json",
        std::process::id()
    ));
    // The first part ends just after an inexact step inside the final window …
    inexact_at(vec![stop - 2], 0.5)
        .max_iters(stop - 1)
        .checkpoint(&path, 1)
        .run()
        .unwrap();
    // … and the resumed part, all exact, still sees it.
    let res = gd(0.1)
        .resume(&path)
        .unwrap()
        .max_iters(10_000)
        .tol(1e-6)
        .run()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(res.state.iter, stop);
    assert!(
        matches!(
            res.termination,
            Termination::InexactMStep {
                inexact: 1,
                window: INEXACT_WINDOW,
                ..
            }
        ),
        "{:?}",
        res.termination
    );
}

#[test]
fn gradient_tolerance_stops_when_the_norm_falls_below() {
    let res = gd(0.1).max_iters(10_000).grad_tol(1e-3).run().unwrap();
    assert_eq!(res.termination, Termination::GradientSmall);
    let n = res.trace.len();
    assert!(res.trace[n - 1].grad_norm < 1e-3);
    assert!(res.trace[n - 2].grad_norm >= 1e-3);
}

#[test]
fn nan_gradient_norm_never_stops_a_run() {
    let res = Executor::new(
        Quad { c: &[0.0] },
        Schedule {
            points: vec![1.0],
            at: 0,
        },
    )
    .theta0(vec![1.0])
    .grad_tol(1e300)
    .max_iters(4)
    .run()
    .unwrap();
    assert_eq!(res.termination, Termination::MaxIters);
}

#[test]
fn time_limit_is_reached() {
    let res = gd(0.1)
        .max_iters(10)
        .time_limit(Duration::ZERO)
        .run()
        .unwrap();
    assert_eq!(res.termination, Termination::TimeLimit);
    assert!(res.trace.is_empty());
    let flag = Arc::new(AtomicBool::new(false));
    let res = Executor::new(
        Quad { c: &C },
        Side {
            inner: Gd { step: 0.1 },
            flag,
            raise_after: u64::MAX,
            sleep: Duration::from_millis(15),
        },
    )
    .theta0(vec![0.0; 3])
    .max_iters(1000)
    .time_limit(Duration::from_millis(40))
    .run()
    .unwrap();
    assert_eq!(res.termination, Termination::TimeLimit);
    // 15 ms steps against a 40 ms limit: at most 5 steps run (the limit is checked before
    // each step). A loaded machine may stretch each sleep, so only one step is certain.
    assert!((1..=5).contains(&res.trace.len()), "{}", res.trace.len());
}

#[test]
fn cancel_flag_interrupts_before_the_next_step() {
    let flag = Arc::new(AtomicBool::new(false));
    let res = Executor::new(
        Quad { c: &C },
        Side {
            inner: Gd { step: 0.1 },
            flag: flag.clone(),
            raise_after: 3,
            sleep: Duration::ZERO,
        },
    )
    .theta0(vec![0.0; 3])
    .max_iters(100)
    .cancel(flag)
    .run()
    .unwrap();
    assert_eq!(res.termination, Termination::Interrupted);
    assert_eq!(res.trace.len(), 3);
}

#[test]
fn best_is_kept_apart_from_current_and_observer_modes_fire() {
    let all = TraceObserver::new();
    let best = TraceObserver::new();
    let every = TraceObserver::new();
    let res = Executor::new(
        Quad { c: &[0.0] },
        Schedule {
            points: vec![3.0, 1.0, 2.0, 0.5, 4.0],
            at: 0,
        },
    )
    .theta0(vec![5.0])
    .max_iters(5)
    .add_observer(Box::new(all.clone()), ObserverMode::Always)
    .add_observer(Box::new(best.clone()), ObserverMode::NewBest)
    .add_observer(Box::new(every.clone()), ObserverMode::Every(2))
    .run()
    .unwrap();
    assert_eq!(res.termination, Termination::MaxIters);
    assert_eq!(res.state.theta, vec![4.0]);
    assert_eq!(res.state.objective, 8.0);
    assert_eq!(res.state.best_theta, vec![0.5]);
    assert_eq!(res.state.best_objective, 0.125);
    assert_eq!(res.best.theta, vec![0.5]);
    assert_eq!(res.best.iter, 4);
    assert_eq!(res.best.objective, 0.125);
    let iters = |t: &TraceObserver| t.records().iter().map(|r| r.iter).collect::<Vec<_>>();
    assert_eq!(iters(&all), vec![1, 2, 3, 4, 5]);
    assert_eq!(iters(&best), vec![1, 2, 4]);
    assert_eq!(iters(&every), vec![2, 4]);
    assert_eq!(all.terminations(), vec![Termination::MaxIters]);
    let objs = |t: &[IterRecord]| t.iter().map(|r| r.objective).collect::<Vec<_>>();
    assert_eq!(objs(&all.records()), objs(&res.trace));
    assert_eq!(objs(&res.trace), vec![4.5, 0.5, 2.0, 0.125, 8.0]);
}

#[test]
fn a_start_that_is_already_best_stays_best() {
    let res = Executor::new(
        Quad { c: &[0.0] },
        Schedule {
            points: vec![3.0, 1.0],
            at: 0,
        },
    )
    .theta0(vec![0.25])
    .max_iters(3)
    .run()
    .unwrap();
    assert_eq!(res.best.theta, vec![0.25]);
    assert_eq!(res.best.iter, 0);
    assert_eq!(res.state.theta, vec![3.0]);
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("em_as_md_{}_{name}.json", std::process::id()))
}

#[test]
fn checkpoint_then_resume_equals_an_uninterrupted_run() {
    let full = gd(0.3).max_iters(20).run().unwrap();
    let path = tmp("resume");
    let first = gd(0.3).max_iters(7).checkpoint(&path, 3).run().unwrap();
    assert_eq!(first.termination, Termination::MaxIters);
    let c = Checkpoint::load(&path).unwrap();
    assert_eq!(c.state.iter, 7);
    assert_eq!(c.solver, "GD");
    let resumed = Executor::new(Quad { c: &C }, Gd { step: 0.3 })
        .resume(&path)
        .unwrap()
        .max_iters(20)
        .run()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(resumed.termination, Termination::MaxIters);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&resumed.state.theta), bits(&full.state.theta));
    assert_eq!(
        resumed.state.objective.to_bits(),
        full.state.objective.to_bits()
    );
    assert_eq!(resumed.trace.len(), 20);
    assert_eq!(
        resumed.trace.iter().map(|r| r.iter).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    for (a, b) in resumed.trace.iter().zip(&full.trace) {
        assert_eq!(a.objective.to_bits(), b.objective.to_bits());
    }
}

#[test]
fn broken_checkpoints_are_typed_errors() {
    let path = tmp("broken");
    std::fs::write(&path, "{not json").unwrap();
    let e = Executor::new(Quad { c: &C }, Gd { step: 0.3 })
        .resume(&path)
        .err()
        .unwrap();
    assert!(matches!(e, MoeError::Io(_)));
    let mut s = FitState::new(vec![1.0, 2.0], 0.5);
    s.best_theta = vec![1.0];
    Checkpoint {
        solver: "GD".into(),
        state: s,
        best_iter: 0,
        trace: vec![],
        seconds: 0.0,
    }
    .save(&path)
    .unwrap();
    let e = Checkpoint::load(&path).unwrap_err();
    std::fs::remove_file(&path).ok();
    assert!(matches!(
        e,
        MoeError::InvalidParam {
            name: "checkpoint",
            ..
        }
    ));
    let e = Checkpoint::load(&tmp("missing")).unwrap_err();
    assert!(matches!(e, MoeError::Io(_)));
}

#[test]
fn invalid_settings_name_the_field() {
    let cases: Vec<(Executor<Quad<'static>, Gd>, &str)> = vec![
        (gd(0.1).tol(0.0), "tol"),
        (gd(0.1).tol(f64::NAN), "tol"),
        (gd(0.1).tol(-1e-3), "tol"),
        (gd(0.1).grad_tol(f64::INFINITY), "grad_tol"),
        (
            gd(0.1).add_observer(Box::new(TraceObserver::new()), ObserverMode::Every(0)),
            "observer mode",
        ),
        (gd(0.1).checkpoint(tmp("never"), 0), "checkpoint"),
        (Executor::new(Quad { c: &C }, Gd { step: 0.1 }), "theta0"),
    ];
    for (ex, field) in cases {
        let e = ex.run().unwrap_err();
        assert!(
            matches!(e, MoeError::InvalidParam { name, .. } if name == field),
            "{field}: {e:?}"
        );
    }
}

#[test]
fn a_non_finite_step_is_an_error() {
    let e = Executor::new(Quad { c: &C }, Breaks)
        .theta0(vec![0.0; 3])
        .run()
        .unwrap_err();
    // The executor names the iteration of the step that failed.
    assert_eq!(e.iteration(), Some(1), "{e:?}");
    assert!(matches!(e.root(), MoeError::NonFinite { .. }), "{e:?}");
}

mod with_em {
    //! The executor driving the real EM solver on a generated two-expert mixture.
    use super::*;
    use em_as_md::{Dataset, Em, Gating, LinearGaussian, MixtureOfExperts, Problem};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn setup() -> (MixtureOfExperts, Dataset, Vec<f64>) {
        let model =
            MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 2, Gating::Softmax).unwrap();
        let mut truth = vec![0.5, 1.5];
        for (beta, s2) in [([1.0, 2.0], 0.25), ([-1.0, -1.0], 0.25)] {
            let mut b = vec![0.0; 3];
            LinearGaussian::natural_from_beta(&beta, s2, &mut b).unwrap();
            truth.extend(b);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..400 {
            let xi: f64 = rng.random_range(-2.0..2.0);
            y.push(model.sample(&truth, &[1.0, xi], &mut rng).unwrap().0[0]);
            x.push(xi);
        }
        let data = Dataset::from_rows(&x, 1, &y, 1).unwrap().with_intercept();
        let start = model.random_params(&mut rng, 0.5);
        (model, data, start)
    }

    #[test]
    fn recorded_objective_equals_the_recomputed_objective() {
        let (model, data, start) = setup();
        let problem = Problem::new(&model, &data).unwrap();
        let res = Executor::new(problem, Em::new())
            .theta0(start)
            .max_iters(300)
            .tol(1e-9)
            .run()
            .unwrap();
        assert!(matches!(res.termination, Termination::Converged { .. }));
        let l = problem.objective(&res.state.theta).unwrap();
        assert!((res.state.objective - l).abs() <= 1e-12 * l.abs().max(1.0));
        assert_eq!(res.trace.last().unwrap().objective, res.state.objective);
        let lb = problem.objective(&res.best.theta).unwrap();
        assert!((res.best.objective - lb).abs() <= 1e-12 * lb.abs().max(1.0));
    }

    #[test]
    fn em_checkpoint_then_resume_equals_an_uninterrupted_run() {
        let (model, data, start) = setup();
        let problem = Problem::new(&model, &data).unwrap();
        let full = Executor::new(problem, Em::new())
            .theta0(start.clone())
            .max_iters(25)
            .run()
            .unwrap();
        let path = tmp("em_resume");
        Executor::new(problem, Em::new())
            .theta0(start)
            .max_iters(10)
            .checkpoint(&path, 5)
            .run()
            .unwrap();
        let resumed = Executor::new(problem, Em::new())
            .resume(&path)
            .unwrap()
            .max_iters(25)
            .run()
            .unwrap();
        std::fs::remove_file(&path).ok();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&resumed.state.theta), bits(&full.state.theta));
        assert_eq!(resumed.trace.len(), 25);
    }
}
