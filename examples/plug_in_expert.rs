//! A researcher's own exponential family used as a mixture-of-experts expert, without
//! touching `em-as-md`: the Gamma family with known shape of `plug_in_family`
//! (`examples/common/gamma.rs`) becomes a Gamma-regression expert through
//! [`em_as_md::Glm`] with the canonical link, $\theta(x) = \beta^\top x$ ($\theta = -$rate),
//! in a 2-expert softmax-gated mixture fitted by EM.
//!
//! The canonical link needs $\beta^\top x < 0$ on every row, so the truth has strongly
//! negative intercepts, non-positive slopes and $x \in [0, 2]$. `MoeParams` builds only
//! the built-in expert kinds, so the fit runs the [`Executor`] with the [`Em`] solver on a
//! [`Problem`] directly, from an M-step on responsibilities split at the median of $y$.
//! Run with `cargo run --release --example plug_in_expert`.

#[path = "common/gamma.rs"]
mod gamma;

use em_as_md::fit::align::{align_to, layout_of};
use em_as_md::fit::init::{hard_responsibilities, HARD_FLOOR};
use em_as_md::{Dataset, Em, EmModel, Executor, Gating, Glm, MixtureOfExperts, Problem};
use gamma::GammaKnownShape;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let expert = Glm::new(Arc::new(GammaKnownShape { k: 3.0 }));
    let model = MixtureOfExperts::new(Arc::new(expert), 2, 2, Gating::Softmax)?;
    // θ = (gate w_0; expert 0 β_0; expert 1 β_1), features (1, x).
    let truth = [1.0, -1.5, -0.5, -0.25, -4.0, -1.0];

    let n = 4000;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut x, mut y) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let xi: f64 = rng.random_range(0.0..2.0);
        y.push(model.sample(&truth, &[1.0, xi], &mut rng)?.0[0]);
        x.push(xi);
    }
    let data = Dataset::from_rows(&x, 1, &y, 1)?.with_intercept();

    // Start: label rows by y above / below its median, one M-step from an in-domain θ.
    let mut sorted = y.clone();
    sorted.sort_by(f64::total_cmp);
    let labels: Vec<usize> = y.iter().map(|v| usize::from(*v < sorted[n / 2])).collect();
    let stats =
        model.stats_from_responsibilities(&data, &hard_responsibilities(&labels, 2, HARD_FLOOR))?;
    let mut theta0 = vec![0.0; 6];
    model.m_step(
        &data,
        &stats,
        &[0.0, 0.0, -1.0, 0.0, -1.0, 0.0],
        &mut theta0,
    )?;

    let fit = Executor::new(Problem::new(&model, &data)?, Em::new())
        .theta0(theta0)
        .tol(1e-10)
        .max_iters(1000)
        .run()?;
    let fitted = align_to(&truth, &fit.best.theta, &layout_of(&model))?;

    println!("n = {n}, 2 Gamma(shape 3) regression experts, softmax gate, features (1, x)\n");
    println!("                 true      fitted");
    let names = ["gate w0", "gate w1", "β0 int.", "β0 x", "β1 int.", "β1 x"];
    for ((name, t), f) in names.iter().zip(truth).zip(&fitted) {
        println!("  {name:8}  {t:8.3}  {f:10.4}");
    }
    let trace: Vec<f64> = fit.trace.iter().map(|r| r.objective).collect();
    let monotone = trace
        .windows(2)
        .all(|w| w[1] <= w[0] + 1e-10 * w[0].abs().max(1.0));
    println!("\nL trace (average negative log-likelihood):");
    for (i, l) in trace.iter().enumerate() {
        if i < 5 || i + 1 == trace.len() {
            println!("  iter {:4}  {l:.10}", i + 1);
        }
    }
    println!(
        "{} after {} iterations in {:.3} s; L non-increasing: {monotone}",
        fit.termination,
        trace.len(),
        fit.seconds
    );
    Ok(())
}
