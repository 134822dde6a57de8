//! $L(\theta)$ by the mixture's own E-step pass (`ConditionalFamily::objective_pass`, what
//! `Problem::objective` uses) against the generic per-row sum
//! $\frac1n\big(R(\theta) - \sum_i \log p(y_i\mid x_i)\big)$ formed here from `realise` and
//! `row_posterior`: linear-Gaussian (with and without a ridge), logistic, Poisson and
//! multinomial experts, softmax and constant gating, $K = 1, 2, 3$, random points; the
//! Gaussian mixture at a fitted point; the same bits for 1, 2 and 3 threads; and a point
//! outside the natural domain is an error on both paths.

use em_as_md::solve::problem::{row_posterior, RowScratch};
use em_as_md::testkit::{draw, DrawConfig};
use em_as_md::{
    ConditionalFamily, CovarianceType, Dataset, Expert, Gating, GaussianCluster, InitMethod,
    LinearGaussian, Logistic, MixtureOfExperts, MoeParams, Multinomial, Poisson, Problem,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

mod common;
use common::with_threads;

/// The generic sum, row by row (the definition, independent of the E-step's pass).
fn generic_objective<M: ConditionalFamily>(model: &M, data: &Dataset, theta: &[f64]) -> f64 {
    let mut s = RowScratch::new(model);
    let mut ll = 0.0;
    for i in 0..data.n() {
        model.realise(theta, data.x(i), &mut s.phi);
        ll += row_posterior(model, data.y(i), i, &mut s).unwrap();
    }
    (model.penalty(theta) - ll) / data.n() as f64
}

fn experts() -> Vec<(&'static str, Arc<dyn Expert>)> {
    vec![
        ("linear", Arc::new(LinearGaussian::new())),
        (
            "linear ridge",
            Arc::new(LinearGaussian::with_ridge(0.7).unwrap()),
        ),
        ("logistic", Arc::new(Logistic::new())),
        ("Poisson", Arc::new(Poisson::new())),
        ("multinomial", Arc::new(Multinomial::new(3).unwrap())),
    ]
}

#[test]
fn the_e_pass_objective_is_the_generic_row_sum() {
    let d = 3;
    for (name, e) in experts() {
        for gating in [Gating::Softmax, Gating::Constant] {
            for k in 1..=3 {
                let model = MixtureOfExperts::new(e.clone(), k, d, gating).unwrap();
                for seed in 0..3 {
                    let dr = draw(&model, &DrawConfig::default(), 5000, seed).unwrap();
                    for theta in [&dr.theta0, &dr.theta_true] {
                        let fast = model
                            .objective_pass(&dr.data, theta)
                            .expect("the mixture has its own pass")
                            .unwrap();
                        let generic = generic_objective(&model, &dr.data, theta);
                        let rel = (fast - generic).abs() / generic.abs().max(1.0);
                        assert!(
                            rel < 1e-12,
                            "{name}, {gating:?}, K = {k}, seed {seed}: {fast} vs {generic}"
                        );
                        // Problem::objective is this pass.
                        let p = Problem::new(&model, &dr.data).unwrap();
                        assert_eq!(p.objective(theta).unwrap().to_bits(), fast.to_bits());
                    }
                }
            }
        }
    }
}

#[test]
fn the_e_pass_objective_does_not_depend_on_the_thread_count() {
    let model = MixtureOfExperts::new(Arc::new(Logistic::new()), 3, 4, Gating::Softmax).unwrap();
    // Several row chunks, so that the chunks' sums are merged.
    let dr = draw(&model, &DrawConfig::default(), 9000, 4).unwrap();
    let run = |t| {
        with_threads(t, || {
            model.objective_pass(&dr.data, &dr.theta0).unwrap().unwrap()
        })
    };
    let one = run(1);
    assert_eq!(one.to_bits(), run(2).to_bits());
    assert_eq!(one.to_bits(), run(3).to_bits());
}

#[test]
fn the_gaussian_mixture_objective_is_the_generic_row_sum() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let n = 3000;
    let y: Vec<f64> = (0..n)
        .flat_map(|i| {
            let c = (i % 3) as f64 * 3.0;
            [c + rng.random::<f64>(), -c + 2.0 * rng.random::<f64>()]
        })
        .collect();
    let data = Dataset::from_rows(&[], 0, &y, 2).unwrap().with_intercept();
    for cov in [
        CovarianceType::Full,
        CovarianceType::Diag,
        CovarianceType::Spherical,
    ] {
        let e = GaussianCluster::new(2, cov, 1e-6).unwrap();
        let fitted = MoeParams::new(3)
            .expert(e)
            .gating(Gating::Constant)
            .init(InitMethod::KMeansPlusPlus)
            .max_iters(5)
            .seed(1)
            .check()
            .unwrap()
            .fit(&data)
            .unwrap();
        let (model, theta) = (fitted.model(), fitted.theta());
        let fast = model.objective_pass(&data, theta).unwrap().unwrap();
        let generic = generic_objective(model, &data, theta);
        assert!(
            (fast - generic).abs() < 1e-12 * generic.abs().max(1.0),
            "{cov:?}: {fast} vs {generic}"
        );
    }
}

#[test]
fn a_point_outside_the_domain_is_an_error_on_both_paths() {
    let model =
        MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 2, Gating::Softmax).unwrap();
    let dr = draw(&model, &DrawConfig::default(), 200, 1).unwrap();
    // Every entry NaN: no expert's variance is valid, no gate logit finite.
    let bad = vec![f64::NAN; model.n_params()];
    assert!(model.objective_pass(&dr.data, &bad).unwrap().is_err());
    let p = Problem::new(&model, &dr.data).unwrap();
    assert!(p.objective(&bad).is_err());
}
