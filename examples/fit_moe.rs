//! Fit a 3-expert gated linear mixture of experts on generated data and compare the
//! fitted parameters (labels aligned to the truth) with the true ones.
//!
//! Run with `cargo run --release --example fit_moe`.

use em_as_md::fit::align::{align_to, layout_of};
use em_as_md::{Dataset, Gating, LinearGaussian, MixtureOfExperts, MoeParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    // Truth: y | x, z=k ~ N(β_kᵀ(1, x), σ_k²), gate softmax((w_0ᵀ(1,x), w_1ᵀ(1,x), 0)).
    let model = MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 3, 2, Gating::Softmax)?;
    let betas = [[2.0, 1.0], [-2.0, 0.5], [0.0, -1.5]];
    let variances = [0.09, 0.16, 0.04];
    let mut truth = vec![1.0, 2.0, 0.5, -2.0];
    for (b, s2) in betas.iter().zip(variances) {
        let mut block = vec![0.0; 3];
        LinearGaussian::natural_from_beta(b, s2, &mut block)?;
        truth.extend(block);
    }

    let n = 5000;
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let (mut x, mut y) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let xi: f64 = rng.random_range(-2.0..2.0);
        y.push(model.sample(&truth, &[1.0, xi], &mut rng)?.0[0]);
        x.push(xi);
    }
    let data = Dataset::from_rows(&x, 1, &y, 1)?.with_intercept();

    let fit = MoeParams::new(3)
        .expert(LinearGaussian::new())
        .gating(Gating::Softmax)
        .tol(1e-10)
        .n_init(4)
        .seed(1)
        .check()?
        .fit(&data)?;
    let r = fit.report();
    let layout = layout_of(fit.model());
    let aligned = align_to(&truth, fit.theta(), &layout)?;

    println!("n = {n}, K = 3, d = 2 (intercept, x)\n");
    println!("expert   β true          β fitted           σ² true  σ² fitted");
    for k in 0..3 {
        let (bt, st) = LinearGaussian::beta_from_natural(model.expert_block(&truth, k))?;
        let (bf, sf) = LinearGaussian::beta_from_natural(model.expert_block(&aligned, k))?;
        println!(
            "  {k}     ({:5.2}, {:5.2})   ({:6.3}, {:6.3})     {st:6.3}   {sf:6.3}",
            bt[0], bt[1], bf[0], bf[1]
        );
    }
    println!("\ngate     w true          w fitted   (reference expert 2: w = 0)");
    for k in 0..2 {
        println!(
            "  {k}     ({:5.2}, {:5.2})   ({:6.3}, {:6.3})",
            truth[2 * k],
            truth[2 * k + 1],
            aligned[2 * k],
            aligned[2 * k + 1]
        );
    }

    println!("\nlog-likelihood trace of the best restart (−n·L):");
    let t = &r.trace;
    for (i, rec) in t.iter().enumerate() {
        if i < 5 || i % 10 == 9 || i + 1 == t.len() {
            println!("  iter {:4}   {:.6}", rec.iter, -(n as f64) * rec.objective);
        }
    }
    let s = r.spread.expect("at least one restart succeeded");
    println!(
        "\n{}: {} iterations, {:.3} s for {} restarts; final log-likelihood {:.4}",
        r.termination,
        r.iterations,
        r.seconds,
        r.restarts.len(),
        r.log_likelihood
    );
    println!(
        "restart log-likelihoods: min {:.4}, median {:.4}, max {:.4}",
        s.min, s.median, s.max
    );
    println!(
        "AIC {:.2}  BIC {:.2}  ICL {:.2}",
        fit.aic(),
        fit.bic(),
        fit.icl()
    );
    Ok(())
}
