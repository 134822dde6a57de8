//! Newton (`--accel newton`) against SQUAREM on random draws: for each GLM expert, 60
//! gated mixtures ($K = 2$, $d = 3$, $n = 500$, [`em_as_md::testkit::draw`] seeds
//! 1000–1059, each from its draw's start), how many runs do not converge, on how many
//! draws Newton ends at a higher or lower $L$ than SQUAREM (by more than $10^{-6}$
//! relative, and whether SQUAREM's end has $\max_j|\theta_j| > 50$, a supremum at
//! infinity), and the passes of all runs. Quoted in `docs/08-accelerated-em.md`.
//!
//! `cargo run --release -p mdem-experiments --example newton_sweep`

use em_as_md::testkit::{draw, DrawConfig};
use em_as_md::{
    Executor, Expert, FitResult, Gating, LinearGaussian, Logistic, MixtureOfExperts, MoeError,
    Multinomial, Newton, Poisson, Problem, Squarem,
};
use std::sync::Arc;

fn main() -> Result<(), MoeError> {
    let experts: Vec<(&str, Arc<dyn Expert>)> = vec![
        ("linear", Arc::new(LinearGaussian::new())),
        ("logistic", Arc::new(Logistic::new())),
        ("Poisson", Arc::new(Poisson::new())),
        ("multinomial (3)", Arc::new(Multinomial::new(3)?)),
    ];
    println!("| expert | not converged: Newton / SQUAREM | Newton higher L (SQUAREM at infinity) | Newton lower L | passes Newton / SQUAREM |");
    println!("|---|---|---|---|---|");
    let big = |r: &FitResult| r.best.theta.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let passes = |r: &FitResult| r.trace.iter().map(|t| t.step.passes).sum::<u64>();
    for (name, e) in experts {
        let model = MixtureOfExperts::new(e, 2, 3, Gating::Softmax)?;
        let (mut nc, mut higher, mut at_inf, mut lower, mut pn, mut ps) = ([0; 2], 0, 0, 0, 0, 0);
        for seed in 1000..1060u64 {
            let d = draw(&model, &DrawConfig::default(), 500, seed)?;
            let p = Problem::new(&model, &d.data)?;
            let run = |newton: bool| {
                let start = d.theta0.clone();
                if newton {
                    Executor::new(p, Newton::new())
                        .theta0(start)
                        .max_iters(3000)
                        .tol(1e-10)
                        .run()
                } else {
                    Executor::new(p, Squarem::new())
                        .theta0(start)
                        .max_iters(3000)
                        .tol(1e-10)
                        .run()
                }
            };
            let (n, s) = (run(true)?, run(false)?);
            nc[0] += usize::from(!n.termination.is_converged());
            nc[1] += usize::from(!s.termination.is_converged());
            let rel = (n.best.objective - s.best.objective) / s.best.objective.abs();
            if rel > 1e-6 {
                higher += 1;
                at_inf += usize::from(big(&s) > 50.0);
            } else if rel < -1e-6 {
                lower += 1;
            }
            pn += passes(&n);
            ps += passes(&s);
        }
        println!(
            "| {name} | {} / {} | {higher} ({at_inf}) | {lower} | {pn} / {ps} |",
            nc[0], nc[1]
        );
    }
    Ok(())
}
