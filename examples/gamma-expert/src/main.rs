//! A gated mixture of two Gamma-regression experts with unknown shapes, fitted, saved,
//! reloaded, used to predict and certified — through mdem's public API only.
//! Run with `cargo run --release` in this folder.

use diagnostics::stderr::standard_errors;
use diagnostics::{certify, CertifyConfig};
use em_as_md::fit::align::{align_components, layout_of};
use em_as_md::{
    Dataset, Em, Executor, FittedMoe, Gating, MixtureOfExperts, MoeParams, ObserverMode, Problem,
    TrajectoryObserver,
};
use gamma_expert::gamma_expert;
use mirror::rand::{Rng, SeedableRng};
use std::sync::Arc;

/// θ = (gate w₀ (intercept, slope); expert 0: −rate (intercept, slope), shape − 1;
/// expert 1: the same), features (1, x).
const TRUTH: [f64; 8] = [1.0, -1.5, -0.5, -0.25, 1.0, -4.0, -1.0, 4.0];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Data drawn from the model itself: x ~ U(0, 2), (z, y) ~ p(· | x; θ*).
    let truth_model = MixtureOfExperts::new(Arc::new(gamma_expert()?), 2, 2, Gating::Softmax)?;
    let n = 4000;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let (mut x, mut y) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let xi: f64 = rng.random_range(0.0..2.0);
        y.push(truth_model.sample(&TRUTH, &[1.0, xi], &mut rng)?.0[0]);
        x.push(xi);
    }
    let data = Dataset::from_rows(&x, 1, &y, 1)?.with_intercept();

    // The high-level fit: validated settings, 8 seeded restarts, the best one kept.
    let params = MoeParams::new(2)
        .expert(gamma_expert()?)
        .n_init(8)
        .seed(7)
        .tol(1e-10)
        .check()?;
    let fitted = params.fit(&data)?;
    let report = fitted.report();
    println!(
        "n = {n}: log-likelihood {:.4} after {} iterations, {}",
        report.log_likelihood, report.iterations, report.termination
    );
    if let Some(s) = report.spread {
        println!(
            "best of {} restarts (restart {}); final log-likelihoods from {:.4} to {:.4}",
            report.restarts.len(),
            report.best_restart,
            s.min,
            s.max
        );
    }
    println!(
        "AIC {:.2}, BIC {:.2}, ICL {:.2}",
        fitted.aic(),
        fitted.bic(),
        fitted.icl()
    );

    // Labels are arbitrary: align the fit's components with the truth before comparing;
    // standard errors (computed in the fit's labels) follow the same permutation.
    let layout = layout_of(fitted.model());
    let perm = align_components(&TRUTH, fitted.theta(), &layout)?;
    let aligned = fitted.permuted(&perm)?;
    let problem = Problem::new(fitted.model(), &data)?;
    let se = standard_errors(&problem, fitted.theta(), 1e12)?.permuted(&layout, &perm)?;
    println!("\ncomponent permutation {perm:?}\n           true     fitted   std. error");
    let names = [
        "gate int.",
        "gate x",
        "β0 int.",
        "β0 x",
        "k0 − 1",
        "β1 int.",
        "β1 x",
        "k1 − 1",
    ];
    for (((name, t), f), e) in names.iter().zip(TRUTH).zip(aligned.theta()).zip(&se.se) {
        let e = e.map_or("-".to_string(), |v| format!("{v:.4}"));
        println!("  {name:9} {t:8.3} {f:10.4} {e:>10}");
    }

    // Save, reload (the family is found by its registered name), predict bit for bit.
    let path = std::env::temp_dir().join(format!("gamma-expert-{}.json", std::process::id()));
    fitted.save(&path)?;
    let back = FittedMoe::load(&path)?;
    std::fs::remove_file(&path)?;
    let (before, after) = (fitted.predict_mean(&data)?, back.predict_mean(&data)?);
    assert_eq!(before, after, "a reloaded model predicts bit for bit");
    let (lo, hi) = (0..n).fold((0, 0), |(lo, hi), i| {
        (
            if x[i] < x[lo] { i } else { lo },
            if x[i] > x[hi] { i } else { hi },
        )
    });
    println!(
        "\nreloaded model predicts as saved: E[y | x = {:.3}] = {:.4}, E[y | x = {:.3}] = {:.4}",
        x[lo], after[lo], x[hi], after[hi]
    );

    // Certificate: re-run the winning restart's EM path, keeping every iterate.
    let model = fitted.model();
    let theta0 = params.kept_theta0(model, &data, report)?;
    let path = TrajectoryObserver::new();
    Executor::new(problem, Em::new())
        .theta0(theta0)
        .tol(1e-12)
        .max_iters(2000)
        .add_observer(Box::new(path.clone()), ObserverMode::Always)
        .run()?;
    let (iterates, values) = path.take();
    let cert = certify(&problem, &iterates, &values, &CertifyConfig::default())?;
    println!("\n{cert}");
    Ok(())
}
