//! `mdem compare DATA.csv --target y --experts K --expert … [--etas 0.5,1,1.5]
//! [--no-standardize] [--max-iter N] [--seed S] [--out DIR]`: EM, mirror descent at
//! several steps $\eta$, gradient descent and gradient EM on one data set, all from **one**
//! initialisation. As in `mdem fit`, the solvers run on standardised feature columns
//! ([`ModelArgs::standardise`]) unless `--no-standardize`; the objective $L$ is the same
//! either way (an exact reparametrisation), the start and the iterates are not.
//!
//! * EM: the library's [`Em`] (exact or Newton M-step).
//! * Accelerated EM: SQUAREM with the monotone safeguard ([`Squarem`]), Anderson
//!   acceleration with the monotone safeguard ([`Anderson`]), mirror descent with
//!   $\eta_t = 1/\hat L_t$ measured along the run ([`AdaptiveMirrorDescent`]) and Newton's
//!   method on $L$ with the observed information under the EM safeguard ([`Newton`]) —
//!   what `mdem fit --accel squarem|anderson|md|newton` runs.
//! * Adam ([`Adam`], full batch, default $\beta_1, \beta_2, \epsilon$) at every learning
//!   rate of [`ADAM_LEARNING_RATES`], all reported.
//! * Mirror descent with step $\eta$ ([`MirrorDescent`]): the projected step
//!   $\theta^+ = \arg\min_\theta \langle\nabla\ell(\Phi_t), \Phi(\theta)\rangle + \frac1\eta
//!   D_{\mathcal A}(\Phi(\theta), \Phi_t)$ by L-BFGS; $\eta = 1$ is EM (the two rows should
//!   agree), $\eta < 1$ is damped EM, an $\eta > 1$ step that leaves the domain stops
//!   that run and is reported.
//! * Gradient descent with a constant step (the step of a small grid with the smallest
//!   final $L$, [`GD_STEPS`]) and with Armijo backtracking; gradient EM (one Armijo step on
//!   the M-step objective).
//!
//! $L^\star$ is estimated by a long EM run from the same start (relative change
//! $< 10^{-14}$ or $\|\nabla L\| < 10^{-10}$, at most `--ref-iter` iterations), and never
//! above any value seen. The table gives, per solver, the iterations and wall time to
//! reach $L_t - L^\star \le$ `--eps` (default $10^{-6}$) or "not reached", the
//! EM-equivalent passes over the data spent by then ([`em_as_md::StepInfo::passes`]: one
//! per EM-map evaluation for EM and SQUAREM, one per E-step for Anderson, one per data
//! pass for the others — a Newton pass forms the observed information too), and the final
//! $L$; two figures show $L_t - L^\star$ (log scale) against iterations and against time
//! (`DIR/compare_iterations.{svg,png}`, `DIR/compare_time.{svg,png}`), and
//! `DIR/compare_trace.csv` holds every iteration of every run ([`write_traces`]) for
//! analysis elsewhere.
//!
//! Ctrl-C ([`crate::interrupt`]) stops the running solver at its next iteration and every
//! later one at its start; the table and the figures are still written, with the cut
//! runs marked "interrupted" and a line saying that $L^\star$ is then only the best value
//! seen.

use super::fit::ModelArgs;
use crate::error::CliError;
use crate::interrupt;
use crate::report::{num, print_stdout, Align, Table};
use clap::Args;
use em_as_md::fit::init::InitMethod;
use em_as_md::fit::initial_theta;
use em_as_md::model::mixture::MixtureOfExperts;
use em_as_md::{
    Adam, AdaptiveMirrorDescent, Anderson, ConditionalFamily, Em, GradientDescent, GradientEm,
    MirrorDescent, MoeError, Newton, Problem, Squarem, Step, ADAM_LEARNING_RATES,
};
use experiments::plot::{Chart, Series};
use std::path::PathBuf;

use experiments::common::{run_recorded, save_both, Run, RunSettings};
use experiments::synthetic::{tune_gd_step, GD_STEPS};

/// Floor of $L_t - L^\star$ in the figures (round-off level; zero gaps cannot be drawn on a
/// log axis).
pub const GAP_FLOOR: f64 = 1e-16;

/// Arguments of `mdem compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Data, expert, gate and standardisation (as for `mdem fit`: every solver runs on
    /// standardised columns unless `--no-standardize`).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Mirror-descent steps η, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,1.5")]
    pub etas: Vec<f64>,
    /// Iterations per solver.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_iter: u64,
    /// Iteration cap of the reference EM run that estimates L*.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub ref_iter: u64,
    /// Suboptimality L − L* at which iterations and time are counted.
    #[arg(long, default_value_t = 1e-6)]
    pub eps: f64,
    /// Inner tolerance of the mirror-descent subproblem (‖∇F_η‖∞ of its L-BFGS solve).
    #[arg(long, default_value_t = 1e-9)]
    pub md_inner_tol: f64,
    /// Floor of the inner L-BFGS iteration cap of each mirror-descent step (the cap grows
    /// with the subproblem: em_as_md::solve::md::inner_iteration_cap).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub md_inner_max: u64,
    /// Seed of the (k-means++) initialisation shared by all solvers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory for the figures (created).
    #[arg(long, default_value = "compare")]
    pub out: PathBuf,
}

fn bad(flag: &str, v: f64, what: &str) -> CliError {
    CliError::BadInput(format!(
        "invalid value '{v}' for '--{flag}': expected {what}"
    ))
}

/// One row of the comparison table, computed from a run and $L^\star$.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Solver name.
    pub name: String,
    /// Iterations run.
    pub iterations: usize,
    /// First iteration with $L_t - L^\star \le \varepsilon$ and the seconds at it.
    pub reached: Option<(usize, f64)>,
    /// EM-equivalent passes spent by that iteration (when recorded).
    pub passes: Option<u64>,
    /// Wall seconds of the whole run.
    pub seconds: f64,
    /// Final $L$.
    pub final_objective: f64,
    /// How the run ended.
    pub status: String,
}

/// Summarises `run` against `l_star` at threshold `eps`.
pub fn summarise(run: &Run, l_star: f64, eps: f64) -> Summary {
    Summary {
        name: run.name.clone(),
        iterations: run.iterations(),
        reached: run.first_below(l_star, eps),
        passes: run
            .first_below(l_star, eps)
            .and_then(|(t, _)| run.passes_at(t)),
        seconds: run.times.last().copied().unwrap_or(0.0),
        final_objective: run.final_objective(),
        status: match &run.failure {
            Some(f) => format!("stopped after {} iterations: {f}", run.iterations()),
            None if run.interrupted => {
                format!("interrupted (Ctrl-C) after {} iterations", run.iterations())
            }
            None => "ok".into(),
        },
    }
}

/// Header of `DIR/compare_trace.csv` ([`write_traces`]).
pub const TRACE_COLUMNS: [&str; 12] = [
    "solver",
    "iteration",
    "objective",
    "gap",
    "seconds",
    "passes",
    "eta",
    "smoothness",
    "backtracks",
    "safeguard",
    "inner_converged",
    "missing_weight",
];

/// Writes every recorded iteration of every run as CSV rows ([`TRACE_COLUMNS`]): the
/// solver, $t$, $L(\theta_t)$, $L(\theta_t) - L^\star$, seconds since the run's start,
/// cumulative EM-equivalent passes, and what step $t$ did ($\eta$, $\hat L_t$,
/// backtracks, safeguard, whether every inner solve met its tolerance, and for a Newton
/// step the weight $\beta$ of $I_m$ in its Hessian $I_c + C - \beta I_m$; empty at $t = 0$
/// and where the solver has none). Numbers in Rust's shortest round-trip form.
///
/// # Errors
/// An I/O error of `w`.
pub fn write_traces(w: impl std::io::Write, runs: &[Run], l_star: f64) -> std::io::Result<()> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record(TRACE_COLUMNS)?;
    let opt = |v: Option<f64>| v.map_or_else(String::new, |x| x.to_string());
    for r in runs {
        for (t, &l) in r.objectives.iter().enumerate() {
            let step = t.checked_sub(1).and_then(|s| r.steps.get(s));
            let converged = t.checked_sub(1).and_then(|s| r.inner_converged.get(s));
            out.write_record([
                r.name.clone(),
                t.to_string(),
                l.to_string(),
                (l - l_star).to_string(),
                r.times.get(t).map_or_else(String::new, f64::to_string),
                r.passes.get(t).map_or_else(String::new, u64::to_string),
                opt(step.and_then(|s| s.eta)),
                opt(step.and_then(|s| s.smoothness)),
                step.map_or_else(String::new, |s| s.backtracks.to_string()),
                step.map_or_else(String::new, |s| s.safeguard.to_string()),
                converged.map_or_else(String::new, bool::to_string),
                opt(step.and_then(|s| s.missing_weight)),
            ])?;
        }
    }
    out.flush()
}

/// Runs `mdem compare`.
///
/// # Errors
/// [`CliError::Data`]/[`CliError::BadInput`] for bad input, [`CliError::Compute`] when a
/// solver fails at the start, [`CliError::Plot`] when a figure cannot be written.
pub fn run(args: &CompareArgs) -> Result<(), CliError> {
    crate::output::prepare_dir("--out", &args.out)?;
    if let Some(&e) = args.etas.iter().find(|e| !(e.is_finite() && **e > 0.0)) {
        return Err(bad("etas", e, "finite steps > 0"));
    }
    if !(args.md_inner_tol.is_finite() && args.md_inner_tol > 0.0) {
        return Err(bad(
            "md-inner-tol",
            args.md_inner_tol,
            "a finite number > 0",
        ));
    }
    if !(args.eps.is_finite() && args.eps > 0.0) {
        return Err(bad("eps", args.eps, "a finite number > 0"));
    }
    if args.model.ridge.is_some() {
        // Mirror descent at η ≠ 1 and gradient EM have no penalised step to compare.
        return Err(CliError::BadInput(
            "--ridge: not available in `mdem compare` (its mirror-descent steps have no \
             penalised form); use it with `mdem fit`"
                .into(),
        ));
    }
    let (mut loaded, spec) = args.model.load(false)?;
    let standardised = args.model.standardise(&mut loaded)?;
    let data = &loaded.dataset;
    let (n, d, k) = (data.n(), data.d(), args.model.experts as usize);
    let gating = args.model.gating();
    let expert = args.model.build_expert(&loaded, &spec)?;
    let model = MixtureOfExperts::new(expert, k, d, gating)
        .map_err(|e| CliError::BadInput(format!("{}: {e}", loaded.file)))?;
    if k > n || model.n_params() > n {
        return Err(CliError::BadInput(format!(
            "{}: {n} data rows for {k} experts and {} parameters; expected at least as many rows as parameters",
            loaded.file,
            model.n_params()
        )));
    }
    let ctx = |what: String| move |e: MoeError| CliError::compute(what, e);
    let theta0 = initial_theta(&model, data, &InitMethod::KMeansPlusPlus, args.seed, 0)
        .map_err(ctx("initialisation".into()))?;
    let problem = Problem::new(&model, data).map_err(ctx("problem".into()))?;
    let fixed = RunSettings::fixed(args.max_iter).cancel(Some(interrupt::flag()));

    let mut runs: Vec<Run> = Vec::new();
    runs.push(run_recorded(problem, Em::new(), &theta0, &fixed).map_err(ctx("EM".into()))?);
    runs.push(
        run_recorded(problem, Squarem::new(), &theta0, &fixed).map_err(ctx("SQUAREM".into()))?,
    );
    runs.push(
        run_recorded(problem, Anderson::new(), &theta0, &fixed).map_err(ctx("Anderson".into()))?,
    );
    let md = AdaptiveMirrorDescent::new();
    runs.push(run_recorded(problem, md, &theta0, &fixed).map_err(ctx("MD(1/L̂)".into()))?);
    runs.push(run_recorded(problem, Newton::new(), &theta0, &fixed).map_err(ctx("Newton".into()))?);
    for &eta in &args.etas {
        let md = MirrorDescent::new(eta, args.md_inner_tol, args.md_inner_max as usize)
            .map_err(|e| CliError::BadInput(format!("--etas {eta}: {e}")))?
            .with_bregman(false);
        runs.push(run_recorded(problem, md, &theta0, &fixed).map_err(ctx(format!("MD(η={eta})")))?);
    }
    let tuned = tune_gd_step(problem, &theta0, &fixed, &GD_STEPS);
    if let Some(w) = tuned.and_then(|t| t.warning()) {
        eprintln!("warning: {w}");
    }
    let step = tuned.map_or(GD_STEPS[0], |t| t.step);
    let gd = GradientDescent::new(Step::Constant(step)).map_err(ctx("GD".into()))?;
    runs.push(run_recorded(problem, gd, &theta0, &fixed).map_err(ctx("GD".into()))?);
    let gd = GradientDescent::new(Step::armijo()).map_err(ctx("GD".into()))?;
    runs.push(run_recorded(problem, gd, &theta0, &fixed).map_err(ctx("GD(Armijo)".into()))?);
    let gem = GradientEm::new(Step::armijo()).map_err(ctx("gradient EM".into()))?;
    runs.push(run_recorded(problem, gem, &theta0, &fixed).map_err(ctx("gradient EM".into()))?);
    for lr in ADAM_LEARNING_RATES {
        let adam = Adam::with_lr(lr).map_err(ctx("Adam".into()))?;
        runs.push(
            run_recorded(problem, adam, &theta0, &fixed).map_err(ctx(format!("Adam(lr={lr})")))?,
        );
    }

    let reference = run_recorded(
        problem,
        Em::new(),
        &theta0,
        &RunSettings::fixed(args.ref_iter)
            .until(1e-14, 1e-10)
            .cancel(Some(interrupt::flag())),
    )
    .map_err(ctx("reference EM run".into()))?;
    let l_star = runs
        .iter()
        .map(Run::best_objective)
        .fold(reference.best_objective(), f64::min);
    let cut = reference.interrupted || runs.iter().any(|r| r.interrupted);

    let eps_s = num(args.eps, 2);
    let mut table = Table::new([
        "solver".to_string(),
        format!("iters to L−L* ≤ {eps_s}"),
        format!("time to ≤ {eps_s} (ms)"),
        format!("passes to ≤ {eps_s}"),
        "iterations".to_string(),
        "time (ms)".to_string(),
        "final L".to_string(),
        "final L − L*".to_string(),
        "status".to_string(),
    ])
    .align(8, Align::Left);
    for r in &runs {
        let s = summarise(r, l_star, args.eps);
        table.row([
            s.name.clone(),
            s.reached
                .map_or_else(|| "not reached".into(), |(t, _)| t.to_string()),
            s.reached
                .map_or_else(|| "not reached".into(), |(_, sec)| num(1e3 * sec, 3)),
            s.passes
                .map_or_else(|| "not reached".into(), |p| p.to_string()),
            s.iterations.to_string(),
            num(1e3 * s.seconds, 3),
            num(s.final_objective, 10),
            num(s.final_objective - l_star, 3),
            s.status.clone(),
        ]);
    }

    let title = |x: &str| {
        format!(
            "{}: {k} {} experts, n = {n}, d = {d} — L_t − L* against {x}",
            loaded.file, args.model.expert
        )
    };
    let gap = |r: &Run, t: usize| (r.objectives[t] - l_star).max(GAP_FLOOR);
    let mut by_iter = Chart::new(title("iterations"), "iteration t", "L(θ_t) − L*").log_y(true);
    let mut by_time = Chart::new(title("time"), "seconds", "L(θ_t) − L*").log_y(true);
    for r in &runs {
        let pi = (0..r.objectives.len())
            .map(|t| (t as f64, gap(r, t)))
            .collect();
        let pt = (0..r.objectives.len())
            .map(|t| (r.times[t], gap(r, t)))
            .collect();
        by_iter = by_iter.series(Series::new(r.name.clone(), pi));
        by_time = by_time.series(Series::new(r.name.clone(), pt));
    }
    save_both(&by_iter, &args.out, "compare_iterations")?;
    save_both(&by_time, &args.out, "compare_time")?;
    let trace_path = args.out.join("compare_trace.csv");
    crate::output::write_file(&trace_path, |w| write_traces(w, &runs, l_star))?;

    let text = format!(
        "mdem compare: {} (n = {n}, d = {d} design columns), {k} {} experts{}, one k-means++ start (seed {}), {}\n\
         L* = {} (reference EM run: {} iterations{}; never above any value seen)\n\
         GD constant step {}; mirror-descent steps solved by L-BFGS to ‖∇F_η‖∞ ≤ {} (inner iteration cap: at least {}, scaled with the subproblem)\n\n{table}\n\
         figures: {dir}/compare_iterations.{{svg,png}}, {dir}/compare_time.{{svg,png}}; every iteration of every run: {dir}/compare_trace.csv\n{}",
        loaded.file,
        args.model.expert,
        if args.model.no_gate { ", no gate" } else { ", softmax gate" },
        args.seed,
        if standardised.is_some() {
            "on standardised features (mean 0, sd 1; --no-standardize for the raw columns)"
        } else {
            "on the raw feature columns (--no-standardize)"
        },
        num(l_star, 12),
        reference.iterations(),
        match (&reference.failure, reference.interrupted) {
            (Some(f), _) => format!(", stopped: {f}"),
            (None, true) => ", interrupted (Ctrl-C)".into(),
            (None, false) => String::new(),
        },
        match tuned.map(|t| t.step) {
            Some(a) => format!(
                "{a} chosen from {{{}}} by the smallest final L among the steps whose L never increases (by more than round-off), among all steps if none does",
                GD_STEPS.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
            ),
            None => format!("{step}: no step of the grid ran without leaving the domain; the smallest is shown"),
        },
        num(args.md_inner_tol, 2),
        args.md_inner_max,
        if cut {
            "\ninterrupted (Ctrl-C): the runs marked interrupted stopped early (those started after the interrupt stopped at their start), so L* is only the best value seen so far and the GD step was chosen from cut runs\n"
        } else {
            ""
        },
        dir = args.out.display(),
    );
    print_stdout(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_iterations_and_time_to_threshold() {
        let r = Run {
            name: "X".into(),
            objectives: vec![2.0, 1.5, 1.0 + 5e-7, 1.0],
            times: vec![0.0, 0.1, 0.2, 0.3],
            failure: Some("left the domain".into()),
            ..Run::default()
        };
        let s = summarise(&r, 1.0, 1e-6);
        assert_eq!(s.reached, Some((2, 0.2)));
        assert_eq!(s.iterations, 3);
        assert_eq!(s.final_objective, 1.0);
        assert!(s
            .status
            .contains("stopped after 3 iterations: left the domain"));
        assert_eq!(summarise(&r, 0.0, 1e-6).reached, None);
        let cut = Run {
            interrupted: true,
            ..r.clone()
        };
        let cut = Run {
            failure: None,
            ..cut
        };
        assert_eq!(
            summarise(&cut, 1.0, 1e-6).status,
            "interrupted (Ctrl-C) after 3 iterations"
        );
    }
}
