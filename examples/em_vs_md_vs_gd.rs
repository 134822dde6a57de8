//! EM vs mirror descent (η = 0.5, 1, 1.5) vs gradient descent vs gradient EM, from the
//! same initialisation, on a SymMoLinE instance and a small gated linear MoE.
//!
//! For each method it prints the iterations and wall time until $L(\theta_t) - L^\ast \le
//! 10^{-6}$ (or "not reached in N"), with $L^\ast$ estimated by a long EM run (and the best
//! value any method reached, if lower). Constant steps of GD and gradient EM are the best of
//! a small grid; Armijo variants are listed beside them.
//!
//! Run with `cargo run --release --example em_vs_md_vs_gd [-- SNR N D]`
//! (defaults: SNR = ‖β*‖/σ = 2, n = 5000, d = 10).

use em_as_md::{
    ConditionalFamily, Dataset, Em, EmModel, Executor, Gating, GradientDescent, GradientEm,
    LinearGaussian, MirrorDescent, MixtureOfExperts, ObserverMode, Problem, Solver, Step,
    SymMoLinE, TraceObserver,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::sync::Arc;

const TARGET: f64 = 1e-6;
const GRID: [f64; 8] = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0];

/// One method's run: objective and elapsed seconds per iteration, and how it ended.
struct Run {
    name: String,
    objective: Vec<f64>,
    elapsed: Vec<f64>,
    end: String,
}

fn run_solver<M, S>(p: Problem<'_, M>, solver: S, theta0: &[f64], max_iters: u64) -> Run
where
    M: ConditionalFamily + ?Sized,
    for<'a> S: Solver<Problem<'a, M>>,
{
    let name = solver.name();
    let trace = TraceObserver::new();
    let res = Executor::new(p, solver)
        .theta0(theta0.to_vec())
        .max_iters(max_iters)
        .tol(1e-15)
        .add_observer(Box::new(trace.clone()), ObserverMode::Always)
        .run();
    let recs = trace.records();
    let end = match res {
        Ok(r) => r.termination.to_string(),
        Err(e) => format!("stopped by error: {e}"),
    };
    Run {
        name,
        objective: recs.iter().map(|r| r.objective).collect(),
        elapsed: recs.iter().map(|r| r.elapsed).collect(),
        end,
    }
}

impl Run {
    /// First iteration (1-based) with $L - L^\ast \le$ TARGET and its elapsed time.
    fn reached(&self, l_star: f64) -> Option<(usize, f64)> {
        self.objective
            .iter()
            .position(|l| l - l_star <= TARGET)
            .map(|t| (t + 1, self.elapsed[t]))
    }
    fn best(&self) -> f64 {
        self.objective.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// Best constant step of the grid: fewest iterations to the target, else lowest final L.
fn best_of_grid(runs: Vec<(f64, Run)>, l_star: f64) -> Option<Run> {
    runs.into_iter()
        .filter(|(_, r)| !r.objective.is_empty())
        .min_by(|(_, a), (_, b)| {
            let key = |r: &Run| match r.reached(l_star) {
                Some((t, _)) => (0, t as f64),
                None => (1, *r.objective.last().unwrap_or(&f64::INFINITY)),
            };
            key(a)
                .partial_cmp(&key(b))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .map(|(_, r)| r)
}

fn compare<M>(title: &str, model: &M, data: &Dataset, theta0: &[f64], max_em: u64, max_gd: u64)
where
    M: EmModel + ?Sized,
    M::Stats: 'static,
{
    let p = Problem::new(model, data).expect("data fit the model");
    println!("\n== {title} ==");
    // L* from a long EM run.
    let long = run_solver(p, Em::new(), theta0, 5000);
    let mut l_star = long.best();

    let mut runs = vec![run_solver(p, Em::new(), theta0, max_em)];
    for eta in [0.5, 1.0, 1.5] {
        let md = MirrorDescent::with_eta(eta)
            .expect("valid η")
            .with_bregman(false);
        runs.push(run_solver(p, md, theta0, max_em));
    }
    let gd_grid: Vec<(f64, Run)> = GRID
        .iter()
        .map(|&a| {
            (
                a,
                run_solver(
                    p,
                    GradientDescent::new(Step::Constant(a)).unwrap(),
                    theta0,
                    max_gd,
                ),
            )
        })
        .collect();
    let gem_grid: Vec<(f64, Run)> = GRID
        .iter()
        .map(|&a| {
            (
                a,
                run_solver(
                    p,
                    GradientEm::new(Step::Constant(a)).unwrap(),
                    theta0,
                    max_gd,
                ),
            )
        })
        .collect();
    for r in gd_grid.iter().chain(&gem_grid).map(|(_, r)| r).chain(&runs) {
        l_star = l_star.min(r.best());
    }
    for (label, grid) in [("GD", &gd_grid), ("gradient EM", &gem_grid)] {
        println!("{label} constant-step grid:");
        for (a, r) in grid.iter() {
            let status = match r.reached(l_star) {
                Some((t, _)) => format!("reached in {t}"),
                None => format!(
                    "not reached in {} (final L - L* = {:.2e})",
                    r.objective.len(),
                    r.objective.last().map_or(f64::NAN, |l| l - l_star)
                ),
            };
            let note = if r.end.starts_with("stopped by error") {
                format!("; {}", r.end)
            } else {
                String::new()
            };
            println!("  α = {a:<6} {status}{note}");
        }
    }
    let mut table = runs;
    if let Some(r) = best_of_grid(gd_grid, l_star) {
        table.push(r);
    }
    table.push(run_solver(
        p,
        GradientDescent::new(Step::armijo()).unwrap(),
        theta0,
        max_gd,
    ));
    if let Some(r) = best_of_grid(gem_grid, l_star) {
        table.push(r);
    }
    table.push(run_solver(
        p,
        GradientEm::new(Step::armijo()).unwrap(),
        theta0,
        max_gd,
    ));
    for r in &table {
        l_star = l_star.min(r.best());
    }
    println!(
        "L* = {l_star:.12} (long EM run: {}, {} iterations); target L - L* <= {TARGET:e}",
        long.end,
        long.objective.len()
    );
    println!(
        "{:<24} {:>12} {:>14} {:>14}  end",
        "method", "iterations", "time [ms]", "final L - L*"
    );
    for r in &table {
        let fin = r.objective.last().map_or(f64::NAN, |l| l - l_star);
        match r.reached(l_star) {
            Some((t, s)) => println!(
                "{:<24} {:>12} {:>14.2} {:>14.3e}  {}",
                r.name,
                t,
                s * 1e3,
                fin,
                r.end
            ),
            None => println!(
                "{:<24} {:>12} {:>14} {:>14.3e}  {}",
                r.name,
                format!("not reached in {}", r.objective.len()),
                "-",
                fin,
                r.end
            ),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let snr: f64 = args.first().map_or(Ok(2.0), |s| s.parse())?;
    let n: usize = args.get(1).map_or(Ok(5000), |s| s.parse())?;
    let d: usize = args.get(2).map_or(Ok(10), |s| s.parse())?;

    // SymMoLinE: x ~ N(0, I_d), ‖β*‖ = SNR·σ, ‖w*‖ = 2, start at an independent random θ0.
    let sigma = 1.0;
    let model = SymMoLinE::new(d, sigma)?;
    let star = model.random_theta(snr, 2.0, 1)?;
    let (data, _) = model.simulate(&star, n, 2)?;
    let theta0 = model.random_theta(snr, 0.5, 3)?;
    println!(
        "SymMoLinE: n = {n}, d = {d}, σ = {sigma}, SNR = ‖β*‖/σ = {:.2}, ‖w*‖ = 2",
        model.snr(&star)
    );
    compare("SymMoLinE", &model, &data, &theta0, 500, 1000);

    // A small gated linear MoE: K = 2, intercept + 2 features.
    let moe = MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 3, Gating::Softmax)?;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let truth = moe.random_params(&mut rng, 1.5);
    let m = 500;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..m {
        let r: Vec<f64> = (0..2).map(|_| StandardNormal.sample(&mut rng)).collect();
        y.extend(moe.sample(&truth, &[1.0, r[0], r[1]], &mut rng)?.0);
        x.extend(r);
    }
    let data = Dataset::from_rows(&x, 2, &y, 1)?.with_intercept();
    let theta0 = moe.random_params(&mut rng, 0.5);
    println!("\nGated linear MoE: K = 2, d = 3 (intercept + 2), n = {m}");
    compare("gated linear MoE", &moe, &data, &theta0, 150, 3000);
    Ok(())
}
