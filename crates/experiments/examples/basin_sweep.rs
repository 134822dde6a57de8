//! Does an accelerated solver end where plain EM ends? For each GLM expert, 150 gated
//! mixtures ($K = 2$, $d = 3$, $n = 300$, [`em_as_md::testkit::draw`] seeds 5000–5149,
//! each from its draw's start, to relative change $10^{-12}$, at most 4000 iterations),
//! SQUAREM, Anderson and Newton are run beside plain EM and their final $L$ compared:
//! lower or higher than EM's by more than $10^{-8}$ relative, split by where the two runs
//! ended — *inside* ($\max_j|\theta_j| \le 50$) or *out* along a direction in which $L$
//! keeps falling towards an infimum at infinity (a separated logistic expert, a Poisson
//! rate going to 0 on zero counts). Quoted in `docs/08-accelerated-em.md`.
//!
//! `cargo run --release -p mdem-experiments --example basin_sweep`

use em_as_md::testkit::{draw, DrawConfig};
use em_as_md::{
    Anderson, Em, Executor, Expert, FitResult, Gating, LinearGaussian, Logistic, MixtureOfExperts,
    MoeError, Newton, Poisson, Problem, Solver, Squarem,
};
use std::sync::Arc;

/// Where a run ended: inside the ball $\max_j|\theta_j| \le 50$, or out of it.
const INSIDE: f64 = 50.0;

/// Counts by (solver inside?, EM inside?): both inside, solver inside and EM out, solver
/// out and EM inside, both out.
#[derive(Default)]
struct Split([usize; 4]);

impl Split {
    fn add(&mut self, solver_inside: bool, em_inside: bool) {
        self.0[match (solver_inside, em_inside) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        }] += 1;
    }
    fn total(&self) -> usize {
        self.0.iter().sum()
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{} ({a} / {b} / {c} / {d})", self.total())
    }
}

fn run<S>(p: Problem<'_, MixtureOfExperts>, solver: S, start: &[f64]) -> Result<FitResult, MoeError>
where
    S: for<'a> Solver<Problem<'a, MixtureOfExperts>>,
{
    Executor::new(p, solver)
        .theta0(start.to_vec())
        .max_iters(4000)
        .tol(1e-12)
        .run()
}

fn main() -> Result<(), MoeError> {
    let experts: Vec<(&str, Arc<dyn Expert>)> = vec![
        ("linear", Arc::new(LinearGaussian::new())),
        ("logistic", Arc::new(Logistic::new())),
        ("Poisson", Arc::new(Poisson::new())),
    ];
    println!("| expert | solver | lower L than EM | higher L than EM | errors (EM's) |");
    println!("|---|---|---|---|---|");
    let inside = |r: &FitResult| r.best.theta.iter().all(|x| x.abs() <= INSIDE);
    for (name, e) in experts {
        let model = MixtureOfExperts::new(e, 2, 3, Gating::Softmax)?;
        let mut lower: [Split; 3] = Default::default();
        let mut higher: [Split; 3] = Default::default();
        let (mut errors, mut em_errors) = ([0usize; 3], 0usize);
        for seed in 5000..5150u64 {
            let d = draw(&model, &DrawConfig::default(), 300, seed)?;
            let p = Problem::new(&model, &d.data)?;
            let Ok(em) = run(p, Em::new(), &d.theta0) else {
                em_errors += 1;
                continue;
            };
            let others = [
                run(p, Squarem::new(), &d.theta0),
                run(p, Anderson::new(), &d.theta0),
                run(p, Newton::new(), &d.theta0),
            ];
            let b = em.best.objective;
            for (j, r) in others.into_iter().enumerate() {
                let Ok(r) = r else {
                    errors[j] += 1;
                    continue;
                };
                let a = r.best.objective;
                if a < b - 1e-8 * b.abs() {
                    lower[j].add(inside(&r), inside(&em));
                } else if a > b + 1e-8 * b.abs() {
                    higher[j].add(inside(&r), inside(&em));
                }
            }
        }
        for (j, solver) in ["SQUAREM", "Anderson", "Newton"].iter().enumerate() {
            println!(
                "| {name} | {solver} | {} | {} | {} ({em_errors}) |",
                lower[j], higher[j], errors[j]
            );
        }
    }
    println!(
        "\n150 draws per expert; counts (both inside / solver inside, EM out / solver out, EM inside / both out), inside = max|θ_j| ≤ {INSIDE}."
    );
    Ok(())
}
