//! `mdem demo`: the project in one command, no files needed.
//!
//! Generates a SymMoLinE data set (the paper's symmetric mixture of two linear experts,
//! experts $\pm\beta^*$, sigmoid gate $w^*$, $x \sim N(0, I_d)$, seeded), fits it from one
//! random start $\theta_0$ with EM, gradient EM and gradient descent (both with Armijo
//! backtracking) through the same [`Executor`], and prints
//!
//! * a comparison: iterations run and needed to reach $L(\theta_t) - L^\star \le 10^{-6}$,
//!   wall time, final $L$, suboptimality, relative parameter errors
//!   $\|\beta_T - \beta^*\|/\|\beta^*\|$ and $\|w_T - w^*\|/\|w^*\|$ (up to the model's
//!   label swap $(\beta, w) \leftrightarrow (-\beta, -w)$);
//! * the convergence certificate of the EM run ([`diagnostics::certificate::certify`]):
//!   measured relative smoothness $\hat L$ and strong convexity $\hat\alpha$ with respect
//!   to the KL mirror map, the certified rate $1 - \hat\alpha$ and the observed one;
//!
//! and draws $L(\theta_t) - L^\star$ on a log scale against $t$ for every solver
//! (`mdem-demo.svg`, or `--out`). $L^\star$ is the objective of a reference EM run from the
//! same start, continued until $L$ stops changing (and never above any value seen).

use crate::error::CliError;
use crate::report::{num, print_stdout, Table};
use clap::Args;
use diagnostics::certificate::{certify, CertifyConfig};
use em_as_md::TrajectoryObserver;
use em_as_md::{
    Em, Executor, FitResult, GradientDescent, GradientEm, MoeError, ObserverMode, Problem, Step,
    SymMoLinE,
};
use experiments::plot::{Chart, Series};
use std::path::PathBuf;

/// Arguments of `mdem demo` (all optional).
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where to write the figure (.svg or .png).
    #[arg(long, default_value = "mdem-demo.svg")]
    pub out: PathBuf,
    /// Number of rows.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(20..=10_000_000))]
    pub n: u64,
    /// Number of features.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub d: u64,
    /// Signal-to-noise ratio ‖β*‖/σ (σ = 1).
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub snr: f64,
    /// Norm of the true gate vector ‖w*‖.
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    pub gate_norm: f64,
    /// Iterations per solver.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub iters: u64,
    /// Seed of the data (the start uses seed + 2).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Suboptimality at which "iterations to" is counted.
pub const TARGET_GAP: f64 = 1e-6;

/// One solver's run in the demo.
#[derive(Debug, Clone)]
pub struct DemoRun {
    /// Solver name.
    pub name: String,
    /// The executor's result.
    pub result: FitResult,
    /// $L(\theta_t)$ for $t = 0..T$.
    pub objectives: Vec<f64>,
    /// $\theta_t$ for $t = 0..T$.
    pub iterates: Vec<Vec<f64>>,
}

/// Suboptimality below which differences are round-off: $10^{-13}\max(1, |L^\star|)$.
pub const NOISE_FLOOR: f64 = 1e-13;

/// The curve $(t, L_t - L^\star)$, ending at the first point at or below `floor` (drawn at
/// `floor`): beyond it the differences are round-off, not progress.
pub fn gap_curve(objectives: &[f64], l_star: f64, floor: f64) -> Vec<(f64, f64)> {
    let mut pts = Vec::with_capacity(objectives.len());
    for (t, l) in objectives.iter().enumerate() {
        let gap = l - l_star;
        if gap <= floor {
            pts.push((t as f64, floor));
            break;
        }
        pts.push((t as f64, gap));
    }
    pts
}

/// $\|a - b\|_2 / \|b\|_2$.
pub fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// Relative errors of $\beta$ and $w$ after aligning the label swap
/// $(\beta, w) \mapsto (-\beta, -w)$ (the sign that makes $\beta$ closer to $\beta^*$).
pub fn aligned_errors(model: &SymMoLinE, theta: &[f64], truth: &[f64]) -> (f64, f64) {
    let (b, w) = (model.beta(theta), model.gate(theta));
    let (bs, ws) = (model.beta(truth), model.gate(truth));
    let flip: Vec<f64> = b.iter().map(|v| -v).collect();
    if relative_error(&flip, bs) < relative_error(b, bs) {
        let wf: Vec<f64> = w.iter().map(|v| -v).collect();
        (relative_error(&flip, bs), relative_error(&wf, ws))
    } else {
        (relative_error(b, bs), relative_error(w, ws))
    }
}

/// The first $t$ with $L_t - L^\star \le \varepsilon$.
pub fn iterations_to(objectives: &[f64], l_star: f64, eps: f64) -> Option<usize> {
    objectives.iter().position(|l| l - l_star <= eps)
}

fn run_solver<S>(
    problem: Problem<'_, SymMoLinE>,
    solver: S,
    theta0: &[f64],
    iters: u64,
    tol: Option<f64>,
) -> Result<DemoRun, MoeError>
where
    S: for<'a> em_as_md::Solver<Problem<'a, SymMoLinE>>,
{
    let traj = TrajectoryObserver::new();
    let name = solver.name();
    let mut ex = Executor::new(problem, solver)
        .theta0(theta0.to_vec())
        .max_iters(iters)
        .add_observer(Box::new(traj.clone()), ObserverMode::Always)
        .cancel(crate::interrupt::flag());
    if let Some(t) = tol {
        ex = ex.tol(t).grad_tol(1e-10);
    }
    let result = ex.run()?;
    let (iterates, objectives) = traj.take();
    Ok(DemoRun {
        name,
        result,
        objectives,
        iterates,
    })
}

/// Runs `mdem demo`.
///
/// # Errors
/// [`CliError::BadInput`] for invalid settings, [`CliError::Compute`] when a solver
/// fails, [`CliError::Plot`] when the figure cannot be written.
pub fn run_demo(args: &DemoArgs) -> Result<(), CliError> {
    use crate::output::{check_outputs, Output, FIGURE_EXTENSIONS};
    check_outputs(
        &[Output {
            flag: "--out",
            path: &args.out,
            extensions: FIGURE_EXTENSIONS,
        }],
        &[],
    )?;
    let ctx = |what: &str| {
        let what = what.to_string();
        move |e: MoeError| CliError::compute(format!("demo: {what}"), e)
    };
    if !(args.snr.is_finite() && args.snr > 0.0) {
        return Err(CliError::BadInput(format!(
            "invalid value '{}' for '--snr': expected a finite number > 0",
            args.snr
        )));
    }
    if !(args.gate_norm.is_finite() && args.gate_norm >= 0.0) {
        return Err(CliError::BadInput(format!(
            "invalid value '{}' for '--gate-norm': expected a finite number >= 0",
            args.gate_norm
        )));
    }
    let (n, d) = (args.n as usize, args.d as usize);
    let model = SymMoLinE::new(d, 1.0).map_err(ctx("model"))?;
    let truth = model
        .random_theta(args.snr, args.gate_norm, args.seed)
        .map_err(ctx("true parameters"))?;
    let (data, _) = model
        .simulate(&truth, n, args.seed.wrapping_add(1))
        .map_err(ctx("simulating data"))?;
    let theta0 = model
        .random_theta(args.snr, args.gate_norm, args.seed.wrapping_add(2))
        .map_err(ctx("start"))?;
    let problem = Problem::new(&model, &data).map_err(ctx("problem"))?;

    // Reference optimum: EM from the same start until L stops changing (or ‖∇L‖ < 1e-10).
    let reference = run_solver(
        problem,
        Em::new(),
        &theta0,
        20 * args.iters.max(100),
        Some(1e-15),
    )
    .map_err(ctx("reference EM run"))?;
    let em = run_solver(problem, Em::new(), &theta0, args.iters, None).map_err(ctx("EM"))?;
    let gem = run_solver(
        problem,
        GradientEm::new(Step::armijo()).map_err(ctx("gradient EM"))?,
        &theta0,
        args.iters,
        None,
    )
    .map_err(ctx("gradient EM"))?;
    let gd = run_solver(
        problem,
        GradientDescent::new(Step::armijo()).map_err(ctx("GD"))?,
        &theta0,
        args.iters,
        None,
    )
    .map_err(ctx("gradient descent"))?;
    let runs = [em, gem, gd];
    let l_star = runs
        .iter()
        .chain(std::iter::once(&reference))
        .flat_map(|r| r.objectives.iter().copied())
        .fold(reference.result.best.objective, f64::min);

    let mut table = Table::new([
        "solver",
        "iterations",
        "to L−L* ≤ 1e-6",
        "time (ms)",
        "final L",
        "L − L*",
        "‖β−β*‖/‖β*‖",
        "‖w−w*‖/‖w*‖",
    ]);
    for r in &runs {
        let theta = &r.result.best.theta;
        let (eb, ew) = aligned_errors(&model, theta, &truth);
        table.row([
            r.name.clone(),
            r.result.state.iter.to_string(),
            iterations_to(&r.objectives, l_star, TARGET_GAP)
                .map_or_else(|| format!("> {}", args.iters), |t| t.to_string()),
            num(1e3 * r.result.seconds, 3),
            num(r.result.best.objective, 10),
            num(r.result.best.objective - l_star, 3),
            num(eb, 3),
            num(ew, 3),
        ]);
    }
    let (eb_star, ew_star) = aligned_errors(&model, &reference.result.best.theta, &truth);

    // Certificate of EM: the reference run (EM to convergence) is the trajectory.
    let cfg = CertifyConfig {
        snr: Some(model.snr(&truth)),
        ..CertifyConfig::default()
    };
    let cert = certify(&problem, &reference.iterates, &reference.objectives, &cfg);

    let mut text = format!(
        "mdem demo: SymMoLinE (two linear experts ±β*, sigmoid gate w*; Fruytier, Mokhtari & Sanghavi, ICML 2025)\n\
         data: n = {n}, d = {d}, x ~ N(0, I), σ = 1, SNR = ‖β*‖/σ = {}, ‖w*‖ = {}, seed {}\n\
         start: one random θ_0 (seed {}) shared by all solvers; GD and gradient EM use Armijo backtracking\n\
         (gradient EM's step on the M-step objective has GD's direction, ∇Q_t(θ_t) = ∇L(θ_t): their curves nearly coincide)\n\
         L* = {} (reference EM run; its ‖β−β*‖/‖β*‖ = {}, ‖w−w*‖/‖w*‖ = {}: the statistical error at this n)\n\n{table}\n",
        num(args.snr, 4),
        num(args.gate_norm, 4),
        args.seed,
        args.seed.wrapping_add(2),
        num(l_star, 12),
        num(eb_star, 3),
        num(ew_star, 3),
    );
    match cert {
        Ok(c) => text.push_str(&format!("{c}\n")),
        Err(e) => text.push_str(&format!("certificate not available: {e}\n\n")),
    }

    let mut chart = Chart::new(
        format!("SymMoLinE, n = {n}, d = {d}, SNR = {}", num(args.snr, 3)),
        "iteration t",
        "L(θ_t) − L*",
    )
    .log_y(true);
    let floor = NOISE_FLOOR * l_star.abs().max(1.0);
    for r in &runs {
        chart = chart.series(Series::new(
            r.name.clone(),
            gap_curve(&r.objectives, l_star, floor),
        ));
    }
    chart.save(&args.out)?;
    text.push_str(&format!("figure: {}\n", args.out.display()));
    print_stdout(&text)
}

/// Runs `mdem demo` (see [`run_demo`]).
///
/// # Errors
/// As [`run_demo`].
pub fn run(args: &DemoArgs) -> Result<(), CliError> {
    run_demo(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_error_and_alignment() {
        assert!((relative_error(&[1.0, 1.0], &[1.0, 0.0]) - 1.0).abs() < 1e-15);
        let m = SymMoLinE::new(2, 1.0).unwrap();
        let truth = SymMoLinE::theta(&[1.0, 0.0], &[0.0, 2.0]);
        let swapped = SymMoLinE::theta(&[-1.0, 0.0], &[0.0, -2.0]);
        assert_eq!(aligned_errors(&m, &swapped, &truth), (0.0, 0.0));
        let (eb, ew) = aligned_errors(&m, &SymMoLinE::theta(&[1.0, 0.5], &[0.0, 1.0]), &truth);
        assert!((eb - 0.5).abs() < 1e-15 && (ew - 0.5).abs() < 1e-15);
    }

    #[test]
    fn gap_curve_stops_at_the_floor() {
        let c = gap_curve(&[2.0, 1.5, 1.0 + 1e-15, 1.0 + 2e-15], 1.0, 1e-13);
        assert_eq!(c, vec![(0.0, 1.0), (1.0, 0.5), (2.0, 1e-13)]);
    }

    #[test]
    fn iterations_to_threshold() {
        let l = [3.0, 1.5, 1.0 + 1e-7, 1.0];
        assert_eq!(iterations_to(&l, 1.0, 1e-6), Some(2));
        assert_eq!(iterations_to(&l, 0.0, 1e-6), None);
    }
}
