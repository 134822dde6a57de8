//! Test code shared by em-as-md's integration tests (`mod common;`).

/// The two-parameter Gamma family with unknown shape and rate (`GammaShapeRate`,
/// `register()`, `gamma_expert()`): the very file of the user's crate in
/// `examples/gamma-expert`, included by path so that the family exists once.
#[path = "../../../../examples/gamma-expert/src/lib.rs"]
#[allow(dead_code)] // each test binary uses a different part of it
pub mod gamma;

use em_as_md::{Glm, MoeError};
use mirror::MultivariateGaussian;
use std::sync::Arc;

/// A regression expert on the bivariate normal with unknown covariance: the mean part
/// $\eta = Pm$ regressed on $x$, the precision part $\lambda$ a per-expert constant
/// starting at the identity ($\lambda_{00} = \lambda_{11} = -1/2$, $\lambda_{01} = 0$), so
/// every row's natural parameter stays in the domain $P \succ 0$ whatever the features.
#[allow(dead_code)] // not every test binary uses it
pub fn mvn_expert() -> Result<Glm, MoeError> {
    let mvn = MultivariateGaussian::new(2)?;
    Glm::with_constants(Arc::new(mvn), 2, vec![-0.5, 0.0, -0.5])
}

/// $\Vert a - b\Vert_\infty / \max(1, \Vert b\Vert_\infty)$ ([`relative_gap`](em_as_md::testkit::relative_gap));
/// panics when the lengths differ.
#[allow(dead_code)] // not every test binary uses it
pub fn rel_vec(a: &[f64], b: &[f64]) -> f64 {
    em_as_md::testkit::relative_gap(a, b).unwrap()
}

/// One feature row of length `d`: the intercept 1, then `d - 1` values from `draw`
/// (called in column order, so the random stream is that of a plain loop).
#[allow(dead_code)] // not every test binary uses it
pub fn intercept_row(d: usize, mut draw: impl FnMut() -> f64) -> Vec<f64> {
    (0..d).map(|j| if j == 0 { 1.0 } else { draw() }).collect()
}

/// `f` run inside a fresh rayon pool of `threads` threads.
#[allow(dead_code)] // not every test binary uses it
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// The restarts' outcomes without their wall-clock seconds, which differ between runs:
/// what a determinism test compares.
#[allow(dead_code)]
pub fn untimed(
    restarts: &[em_as_md::fit::predict::RestartSummary],
) -> Vec<em_as_md::fit::predict::RestartSummary> {
    restarts
        .iter()
        .map(|r| em_as_md::fit::predict::RestartSummary {
            seconds: 0.0,
            start_seconds: 0.0,
            start_em_seconds: 0.0,
            ..r.clone()
        })
        .collect()
}

/// Whether a run's error is the typed end of a path towards an optimum the likelihood does
/// not attain — unbounded for a Gaussian (linear) expert whose variance goes to 0 on a few
/// rows, an infimum at infinity for a separated logistic expert (weights $p(1-p) \to 0$):
/// that expert's weighted Gram matrix or Hessian becomes singular and the run ends with
/// `NotPositiveDefinite`, naming it, instead of NaN.
#[allow(dead_code)]
pub fn towards_unattained_optimum(expert: &str, e: &MoeError) -> bool {
    matches!(expert, "linear" | "logistic")
        && matches!(e.root(), MoeError::NotPositiveDefinite { .. })
}

/// Fails unless no objective along `res` is above the one before it (from $L(\theta_0)$ =
/// `l0`), not even by round-off.
#[allow(dead_code)]
pub fn assert_never_rises(
    res: &em_as_md::FitResult,
    l0: f64,
    what: &str,
) -> Result<(), em_as_md::testkit::proptest::test_runner::TestCaseError> {
    let mut prev = l0;
    for r in &res.trace {
        em_as_md::testkit::proptest::prop_assert!(
            r.objective <= prev,
            "{what}: L rose from {prev} to {} at iteration {} ({:?})",
            r.objective,
            r.iter,
            r.step
        );
        prev = r.objective;
    }
    Ok(())
}
