//! Pieces shared by the experiments and by `mdem compare`: running any solver through the
//! [`Executor`] while recording its trajectory (also when it fails part-way or is stopped
//! by its cancellation flag, e.g. the command line's Ctrl-C), summary statistics over
//! instances (mean and quantile bands) and small formatting and output helpers.

use crate::error::ExperimentsError;
use crate::plot::{Chart, PlotError, Series};
use em_as_md::{
    Adam, Em, Executor, FitState, GradientDescent, GradientEm, IterRecord, MoeError, Observer,
    ObserverMode, Solver, Step, StepInfo, Termination, ADAM_LEARNING_RATES,
};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

/// What one solver run produced: $L(\theta_t)$ and the elapsed seconds for
/// $t = 0, 1, \dots$ ($t = 0$ is the start, at 0 s), optionally the iterates, and the
/// failure message if the run stopped with an error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    /// Solver name.
    pub name: String,
    /// $L(\theta_t)$, $t = 0..T$.
    pub objectives: Vec<f64>,
    /// Seconds since the start at each $t$.
    pub times: Vec<f64>,
    /// $\theta_t$ (only when asked for).
    pub thetas: Vec<Vec<f64>>,
    /// Inner iterations per outer step (for inexact M-steps), $t = 1..T$.
    pub inner_iterations: Vec<u64>,
    /// Whether every inner solve of each step reached its tolerance, $t = 1..T$.
    pub inner_converged: Vec<bool>,
    /// EM-equivalent passes over the data up to each $t$, cumulative ($t = 0$: 0); see
    /// [`em_as_md::StepInfo::passes`].
    pub passes: Vec<u64>,
    /// What each step did ($\eta$, $\hat L_t$, backtracks, safeguard), $t = 1..T$.
    pub steps: Vec<StepInfo>,
    /// `Some(message)` if the run stopped with an error after the recorded iterations.
    pub failure: Option<String>,
    /// Whether the run was stopped by its cancellation flag (Ctrl-C) before its own
    /// stopping rules ended it.
    pub interrupted: bool,
}

impl Run {
    /// The last recorded $L$.
    pub fn final_objective(&self) -> f64 {
        self.objectives.last().copied().unwrap_or(f64::NAN)
    }
    /// The smallest recorded $L$.
    pub fn best_objective(&self) -> f64 {
        self.objectives
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
    }
    /// Completed iterations.
    pub fn iterations(&self) -> usize {
        self.objectives.len().saturating_sub(1)
    }
    /// The first $t$ with $L_t - L^\star \le \varepsilon$, and the seconds at that $t$.
    pub fn first_below(&self, l_star: f64, eps: f64) -> Option<(usize, f64)> {
        first_below(&self.objectives, l_star, eps).map(|t| (t, self.times[t]))
    }
    /// The EM-equivalent passes spent up to iteration `t` (`None` when not recorded).
    pub fn passes_at(&self, t: usize) -> Option<u64> {
        self.passes.get(t).copied()
    }
}

/// The first $t$ with $L_t - L^\star \le \varepsilon$.
pub fn first_below(objectives: &[f64], l_star: f64, eps: f64) -> Option<usize> {
    objectives.iter().position(|l| l - l_star <= eps)
}

#[derive(Debug, Default)]
struct Buffer {
    run: Run,
    keep_thetas: bool,
}

/// An observer writing into a shared [`Run`].
#[derive(Debug, Clone)]
struct Recorder(Arc<Mutex<Buffer>>);

impl Observer for Recorder {
    fn observe_init(&mut self, solver: &str, state: &FitState) {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        g.run.name = solver.to_string();
        g.run.objectives = vec![state.objective];
        g.run.times = vec![0.0];
        g.run.passes = vec![0];
        if g.keep_thetas {
            g.run.thetas = vec![state.theta.clone()];
        }
    }
    fn observe_iter(&mut self, state: &FitState, record: &IterRecord) {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        g.run.objectives.push(record.objective);
        g.run.times.push(record.elapsed);
        g.run.inner_iterations.push(record.inner.iterations);
        g.run.inner_converged.push(record.inner.converged);
        let total = g.run.passes.last().copied().unwrap_or(0) + record.step.passes;
        g.run.passes.push(total);
        g.run.steps.push(record.step.clone());
        if g.keep_thetas {
            g.run.thetas.push(state.theta.clone());
        }
    }
}

/// Settings of [`run_recorded`].
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Iteration limit.
    pub max_iters: u64,
    /// Relative tolerance on the change of $L$ (`None`: run all iterations).
    pub tol: Option<f64>,
    /// Gradient-norm tolerance (`None`: none).
    pub grad_tol: Option<f64>,
    /// Keep every iterate.
    pub keep_thetas: bool,
    /// Cancellation flag checked before every step (`None`: the run cannot be
    /// interrupted).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl RunSettings {
    /// Exactly `max_iters` iterations, iterates not kept, no cancellation flag (set one
    /// with [`RunSettings::cancel`]).
    pub fn fixed(max_iters: u64) -> Self {
        RunSettings {
            max_iters,
            tol: None,
            grad_tol: None,
            keep_thetas: false,
            cancel: None,
        }
    }
    /// Stop at `rel` relative change of $L$ and at $\|\nabla L\| <$ `grad` (the
    /// iteration limit stays).
    pub fn until(mut self, rel: f64, grad: f64) -> Self {
        self.tol = Some(rel);
        self.grad_tol = Some(grad);
        self
    }
    /// Use `flag` (or none) as the cancellation flag: a raised flag stops the run before
    /// its next step.
    pub fn cancel(mut self, flag: Option<Arc<AtomicBool>>) -> Self {
        self.cancel = flag;
        self
    }
    /// Keep the iterates.
    pub fn keep(mut self) -> Self {
        self.keep_thetas = true;
        self
    }
}

/// Runs `solver` on `problem` from `theta0` through the [`Executor`], recording
/// $L(\theta_t)$, times and (optionally) iterates. A run that fails part-way (e.g. mirror
/// descent with $\eta > 1$ leaving the domain) returns what it recorded with
/// [`Run::failure`] set; only a failure at the start is an error. A run stopped by
/// `settings.cancel` returns what it recorded with [`Run::interrupted`] set (a flag
/// raised before the start records $L(\theta_0)$ only).
///
/// # Errors
/// The executor's error when not even $L(\theta_0)$ could be recorded.
pub fn run_recorded<P, S>(
    problem: P,
    solver: S,
    theta0: &[f64],
    settings: &RunSettings,
) -> Result<Run, MoeError>
where
    P: em_as_md::solve::executor::Objective,
    S: Solver<P>,
{
    let buffer = Arc::new(Mutex::new(Buffer {
        run: Run::default(),
        keep_thetas: settings.keep_thetas,
    }));
    let name = solver.name();
    let mut ex = Executor::new(problem, solver)
        .theta0(theta0.to_vec())
        .max_iters(settings.max_iters)
        .add_observer(Box::new(Recorder(buffer.clone())), ObserverMode::Always);
    if let Some(flag) = &settings.cancel {
        ex = ex.cancel(flag.clone());
    }
    if let Some(t) = settings.tol {
        ex = ex.tol(t);
    }
    if let Some(g) = settings.grad_tol {
        ex = ex.grad_tol(g);
    }
    let outcome = ex.run();
    let mut run = std::mem::take(&mut buffer.lock().unwrap_or_else(PoisonError::into_inner).run);
    if run.name.is_empty() {
        run.name = name;
    }
    match outcome {
        Ok(result) => {
            run.interrupted = result.termination == Termination::Interrupted;
            Ok(run)
        }
        Err(e) if !run.objectives.is_empty() => {
            run.failure = Some(e.to_string());
            Ok(run)
        }
        Err(e) => Err(e),
    }
}

/// The paper's three solvers from one start, in this order: EM, gradient EM (one
/// Armijo-backtracked gradient step on the M-step objective) and GD with the constant
/// step `gd_step`, each through [`run_recorded`] with `settings`, with its wall time in
/// seconds.
///
/// # Errors
/// As [`run_recorded`]; `InvalidParam` for a bad `gd_step`.
pub fn em_gem_gd_runs<P>(
    problem: P,
    theta0: &[f64],
    settings: &RunSettings,
    gd_step: f64,
) -> Result<[(Run, f64); 3], MoeError>
where
    P: em_as_md::solve::executor::Objective + Copy,
    Em: Solver<P>,
    GradientEm: Solver<P>,
    GradientDescent: Solver<P>,
{
    Ok([
        timed(|| run_recorded(problem, Em::new(), theta0, settings))?,
        timed(|| run_recorded(problem, GradientEm::new(Step::armijo())?, theta0, settings))?,
        timed(|| {
            let gd = GradientDescent::new(Step::Constant(gd_step))?;
            run_recorded(problem, gd, theta0, settings)
        })?,
    ])
}

/// `f`'s run and its wall time in seconds.
fn timed(f: impl FnOnce() -> Result<Run, MoeError>) -> Result<(Run, f64), MoeError> {
    let t = std::time::Instant::now();
    let r = f()?;
    Ok((r, t.elapsed().as_secs_f64()))
}

/// Adam ([`em_as_md::Adam`], default $\beta_1, \beta_2, \epsilon$) from one start at
/// every learning rate of [`ADAM_LEARNING_RATES`], each through [`run_recorded`] with
/// `settings`, with its wall time in seconds: the whole grid is reported, not its best.
///
/// # Errors
/// As [`run_recorded`].
pub fn adam_runs<P>(
    problem: P,
    theta0: &[f64],
    settings: &RunSettings,
) -> Result<Vec<(Run, f64)>, MoeError>
where
    P: em_as_md::solve::executor::Objective + Copy,
    Adam: Solver<P>,
{
    ADAM_LEARNING_RATES
        .iter()
        .map(|&lr| timed(|| run_recorded(problem, Adam::with_lr(lr)?, theta0, settings)))
        .collect()
}

/// The `q`-quantile ($0 \le q \le 1$) of the finite values, by linear interpolation
/// between order statistics (type 7, as R's default); NaN if there is none.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let h = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// Mean and sample standard deviation of the finite values (sd 0 for one value, NaN
/// for none).
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() == 1 {
        return (m, 0.0);
    }
    let s2 = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, s2.sqrt())
}

/// Pointwise summary of curves over instances: for each $t$ the mean and the
/// `lo`/`hi` quantiles of the values present at $t$ (curves may have different lengths).
/// Returns $(t, \text{mean}, q_{lo}, q_{hi})$ rows.
pub fn band(curves: &[Vec<f64>], lo: f64, hi: f64) -> Vec<(f64, f64, f64, f64)> {
    let len = curves.iter().map(Vec::len).max().unwrap_or(0);
    (0..len)
        .map(|t| {
            let at: Vec<f64> = curves.iter().filter_map(|c| c.get(t).copied()).collect();
            (
                t as f64,
                mean_sd(&at).0,
                quantile(&at, lo),
                quantile(&at, hi),
            )
        })
        .collect()
}

/// A [`Series`] of the band's mean with its quantile band.
pub fn band_series(name: &str, rows: &[(f64, f64, f64, f64)]) -> Series {
    Series::new(name, rows.iter().map(|r| (r.0, r.1)).collect())
        .with_band(rows.iter().map(|r| (r.0, r.2, r.3)).collect())
}

/// Saves `chart` as `dir/stem.svg` and `dir/stem.png`.
///
/// # Errors
/// The [`PlotError`] of the first file that cannot be drawn.
pub fn save_both(chart: &Chart, dir: &Path, stem: &str) -> Result<(), PlotError> {
    chart.save(dir.join(format!("{stem}.svg")))?;
    chart.save(dir.join(format!("{stem}.png")))?;
    Ok(())
}

/// Creates `dir` (and parents).
///
/// # Errors
/// [`ExperimentsError::Output`] when it cannot be created.
pub fn create_dir(dir: &Path) -> Result<(), ExperimentsError> {
    std::fs::create_dir_all(dir).map_err(|e| ExperimentsError::output(dir.display(), e))
}

/// $\|a - b\|_2 / \|b\|_2$.
pub fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// Relative errors $(\|\beta - \beta^*\|/\|\beta^*\|, \|w - w^*\|/\|w^*\|)$ for the
/// symmetric two-expert models, whose labels are only defined up to the swap
/// $(\beta, w) \leftrightarrow (-\beta, -w)$: the sign giving the smaller
/// $\|\beta - \beta^*\|^2/\|\beta^*\|^2 + \|w - w^*\|^2/\|w^*\|^2$ is chosen (the same
/// sign for both blocks, so the pair stays a valid parameter).
pub fn sym_aligned_errors(
    beta: &[f64],
    w: &[f64],
    beta_star: &[f64],
    w_star: &[f64],
) -> (f64, f64) {
    let neg = |v: &[f64]| v.iter().map(|x| -x).collect::<Vec<f64>>();
    let (bp, wp) = (relative_error(beta, beta_star), relative_error(w, w_star));
    let (bn, wn) = (
        relative_error(&neg(beta), beta_star),
        relative_error(&neg(w), w_star),
    );
    let sq = |a: f64, b: f64| {
        let a = if a.is_finite() { a * a } else { 0.0 };
        let b = if b.is_finite() { b * b } else { 0.0 };
        a + b
    };
    if sq(bn, wn) < sq(bp, wp) {
        (bn, wn)
    } else {
        (bp, wp)
    }
}

/// `v` formatted with `sig` significant digits, or "–" when not finite.
pub fn fmt_or_dash(v: f64, sig: usize) -> String {
    if v.is_finite() {
        crate::report::num(v, sig)
    } else {
        "–".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_hand_computed_type7() {
        let v = [4.0, 1.0, 3.0, 2.0, f64::NAN];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!((quantile(&v, 0.5) - 2.5).abs() < 1e-15);
        // h = 0.1 * 3 = 0.3 -> 1 + 0.3 * (2 - 1)
        assert!((quantile(&v, 0.1) - 1.3).abs() < 1e-15);
        assert!(quantile(&[], 0.5).is_nan());
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-15 && (s - 1.0).abs() < 1e-15);
    }

    #[test]
    fn band_handles_ragged_curves() {
        let b = band(&[vec![1.0, 2.0], vec![3.0]], 0.0, 1.0);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0], (0.0, 2.0, 1.0, 3.0));
        assert_eq!(b[1], (1.0, 2.0, 2.0, 2.0));
    }

    #[test]
    fn sign_alignment_picks_the_closer_label() {
        let (eb, ew) = sym_aligned_errors(&[-1.0, 0.0], &[0.0, -2.0], &[1.0, 0.0], &[0.0, 2.0]);
        assert_eq!((eb, ew), (0.0, 0.0));
        let (eb, ew) = sym_aligned_errors(&[1.0, 0.5], &[0.0, 1.0], &[1.0, 0.0], &[0.0, 2.0]);
        assert!((eb - 0.5).abs() < 1e-15 && (ew - 0.5).abs() < 1e-15);
    }

    /// EM that raises `flag` after its `after`-th step (a Ctrl-C arriving mid-run).
    struct RaiseAfter {
        inner: em_as_md::Em,
        flag: Arc<AtomicBool>,
        after: u64,
        steps: u64,
    }

    impl<'a> Solver<em_as_md::Problem<'a, em_as_md::SymMoLinE>> for RaiseAfter {
        fn name(&self) -> String {
            "EM".into()
        }
        fn next_iter(
            &mut self,
            problem: &em_as_md::Problem<'a, em_as_md::SymMoLinE>,
            state: FitState,
        ) -> Result<(FitState, IterRecord), MoeError> {
            let out = self.inner.next_iter(problem, state)?;
            self.steps += 1;
            if self.steps == self.after {
                self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(out)
        }
    }

    #[test]
    fn a_raised_flag_stops_a_recorded_run_at_the_next_iteration() {
        use em_as_md::{Em, Problem, SymMoLinE};
        use std::sync::atomic::Ordering;
        let model = SymMoLinE::new(3, 1.0).unwrap();
        let truth = model.random_theta(2.0, 1.0, 1).unwrap();
        let (data, _) = model.simulate(&truth, 400, 2).unwrap();
        let problem = Problem::new(&model, &data).unwrap();
        let theta0: Vec<f64> = truth.iter().map(|v| 0.5 * v + 0.1).collect();

        // Raised before the start: L(θ_0) only, marked interrupted.
        let raised = Arc::new(AtomicBool::new(true));
        let settings = RunSettings::fixed(50).keep().cancel(Some(raised));
        let r = run_recorded(problem, Em::new(), &theta0, &settings).unwrap();
        assert!(r.interrupted && r.failure.is_none());
        assert_eq!(r.iterations(), 0);
        assert_eq!(r.thetas, vec![theta0.clone()]);
        assert!(r.final_objective().is_finite());

        // Raised during step 3: exactly 3 iterations recorded, the best so far kept.
        let flag = Arc::new(AtomicBool::new(false));
        let solver = RaiseAfter {
            inner: Em::new(),
            flag: flag.clone(),
            after: 3,
            steps: 0,
        };
        let settings = RunSettings::fixed(50).cancel(Some(flag.clone()));
        let r = run_recorded(problem, solver, &theta0, &settings).unwrap();
        assert!(flag.load(Ordering::SeqCst));
        assert!(r.interrupted);
        assert_eq!(r.iterations(), 3);
        assert!(r.best_objective() < r.objectives[0]);

        // The same with no flag runs all 50 iterations and is not marked.
        let r = run_recorded(
            problem,
            Em::new(),
            &theta0,
            &RunSettings::fixed(50).cancel(None),
        )
        .unwrap();
        assert!(!r.interrupted);
        assert_eq!(r.iterations(), 50);
    }

    #[test]
    fn first_below_threshold() {
        assert_eq!(first_below(&[3.0, 1.5, 1.0 + 1e-7], 1.0, 1e-6), Some(2));
        assert_eq!(first_below(&[3.0], 1.0, 1e-6), None);
    }
}
