//! A researcher's own exponential family used as a mixture-of-experts expert, without
//! touching `em-as-md`: the Gamma family with known shape of `plug_in_family`
//! (`examples/common/gamma.rs`) becomes a Gamma-regression expert through
//! [`em_as_md::Glm`] with the canonical link, $\theta(x) = \beta^\top x$ ($\theta = -$rate),
//! in a 2-expert softmax-gated mixture fitted by EM — exactly as the built-in experts are:
//!
//! 1. the family is registered once under a name, with its parameter (`shape`), so that a
//!    model with it can be saved and loaded (`em_as_md::model::registry`);
//! 2. `Glm::registered` builds the expert from the registry (checking the family's shape);
//! 3. `MoeParams` fits it with 4 seeded k-means++ restarts, the fit is aligned to the truth
//!    (`FittedMoe::aligned_to`), and saved, loaded and checked to predict bit for bit the
//!    same.
//!
//! The canonical link needs $\beta^\top x < 0$ on every row, so the truth has strongly
//! negative intercepts, non-positive slopes and $x \in [0, 2]$.
//! Run with `cargo run --release --example plug_in_expert`.

#[path = "common/gamma.rs"]
mod gamma;

use em_as_md::model::registry::{register_family, FamilyEntry};
use em_as_md::{Dataset, FittedMoe, Gating, Glm, MixtureOfExperts, MoeParams, Params};
use gamma::GammaKnownShape;
use mirror::ExponentialFamily;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// The registry's builder: the declared parameters arrive in order (here the shape).
fn gamma_known_shape(values: &[f64]) -> em_as_md::Result<Arc<dyn ExponentialFamily>> {
    let k = values[0];
    if !(k.is_finite() && k > 0.0) {
        return Err(em_as_md::MoeError::InvalidParam {
            name: "shape",
            reason: format!("finite and > 0, got {k}"),
        });
    }
    Ok(Arc::new(GammaKnownShape { k }))
}

fn main() -> anyhow::Result<()> {
    register_family(
        FamilyEntry::new("gamma-known-shape", &["shape"], gamma_known_shape)
            .summary("Gamma with known shape, T(s) = s, θ = −rate"),
    )?;
    let expert = Glm::registered("gamma-known-shape", &Params::new().with("shape", 3.0))?;
    let model = MixtureOfExperts::new(Arc::new(expert.clone()), 2, 2, Gating::Softmax)?;
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

    // As for any built-in expert: seeded restarts from k-means++ starts, the best kept.
    let fit = MoeParams::new(2)
        .expert(expert)
        .n_init(4)
        .seed(3)
        .tol(1e-10)
        .check()?
        .fit(&data)?;
    let reference = FittedMoe::new(
        model,
        truth.to_vec(),
        fit.feature_names().to_vec(),
        fit.report().clone(),
    )?;
    let (aligned, perm) = fit.aligned_to(&reference)?;

    println!("n = {n}, 2 Gamma(shape 3) regression experts, softmax gate, features (1, x)\n");
    println!("                 true      fitted   (fitted labels {perm:?})");
    let names = ["gate w0", "gate w1", "β0 int.", "β0 x", "β1 int.", "β1 x"];
    for ((name, t), f) in names.iter().zip(truth).zip(aligned.theta()) {
        println!("  {name:8}  {t:8.3}  {f:10.4}");
    }
    let rep = fit.report();
    println!(
        "\n{} after {} iterations in {:.3} s (best of {} restarts); log-likelihood {:.4}, AIC {:.2}, BIC {:.2}",
        rep.termination,
        rep.iterations,
        rep.seconds,
        rep.restarts.len(),
        rep.log_likelihood,
        fit.aic(),
        fit.bic()
    );

    // Saved with the family's registered name and shape; loaded back through the registry.
    let path = std::env::temp_dir().join("mdem-plug-in-expert.json");
    fit.save(&path)?;
    let back = FittedMoe::load(&path)?;
    std::fs::remove_file(&path).ok();
    let same = back
        .predict_mean(&data)?
        .iter()
        .zip(fit.predict_mean(&data)?)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    println!(
        "saved as {:?}; reloaded predictions identical bit for bit: {same}",
        back.model().spec()?.expert.family.map(|f| f.name)
    );
    if !same {
        std::process::exit(1);
    }
    Ok(())
}
