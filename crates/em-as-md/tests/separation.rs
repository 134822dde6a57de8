//! Separated classifying experts end "separated", never "converged"
//! ([`em_as_md::fit::separation`]).

use em_as_md::fit::separation::{separated_experts, SEPARATION_MEAN_NLL};
use em_as_md::{Dataset, FittedMoe, Gating, Logistic, MoeParams, Termination};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` rows with an intercept and one feature x ~ U(−2, 2); the class is `label(x, u)` for
/// a uniform `u`.
fn data(n: usize, seed: u64, label: impl Fn(f64, f64) -> bool) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let xi: f64 = rng.random_range(-2.0..2.0);
        let u: f64 = rng.random();
        x.push(xi);
        y.push(if label(xi, u) { 1.0 } else { 0.0 });
    }
    Dataset::from_rows(&x, 1, &y, 1).unwrap().with_intercept()
}

/// `k` logistic experts fitted to `d` with two seeded starts.
fn fit_logistic(k: usize, gating: Gating, d: &Dataset) -> FittedMoe {
    MoeParams::new(k)
        .expert(Logistic::new())
        .gating(gating)
        .n_init(2)
        .seed(3)
        .check()
        .unwrap()
        .fit(d)
        .unwrap()
}

#[test]
fn separable_classes_end_separated_with_the_mean_loss_of_the_data() {
    let d = data(200, 1, |x, _| x > 0.0);
    let fit = fit_logistic(1, Gating::Constant, &d);
    let rep = fit.report();
    let Termination::Separated { expert, mean_nll } = rep.termination else {
        panic!("{:?}", rep.termination)
    };
    assert!(!rep.termination.is_converged());
    assert!(!rep.converged());
    assert_eq!(expert, 0);
    // With one expert the mean loss is −L/n, computed here from the predictive densities.
    let lpd = fit.log_predictive_density(&d).unwrap();
    let direct = -lpd.iter().sum::<f64>() / d.n() as f64;
    assert!(
        (mean_nll - direct).abs() <= 1e-9 * direct.max(1e-300) + 1e-15,
        "{mean_nll} vs {direct}"
    );
    assert!(mean_nll <= SEPARATION_MEAN_NLL);
    // The report's text says what happened.
    assert!(rep.termination.to_string().contains("expert 1 separates"));
}

#[test]
fn a_gated_mixture_on_separable_classes_is_not_converged() {
    let d = data(200, 2, |x, _| x > 0.3);
    let fit = fit_logistic(2, Gating::Softmax, &d);
    let t = fit.report().termination;
    assert!(matches!(t, Termination::Separated { .. }), "{t:?}");
}

#[test]
fn overlapping_classes_converge_and_no_expert_is_separated() {
    // P(y = 1 | x) = σ(x): every x carries both classes.
    let d = data(400, 3, |x, u| u < 1.0 / (1.0 + (-x).exp()));
    let fit = fit_logistic(1, Gating::Constant, &d);
    let rep = fit.report();
    assert!(rep.termination.is_converged(), "{:?}", rep.termination);
    let seps = separated_experts(fit.model(), &d, fit.theta()).unwrap();
    assert!(seps.is_empty(), "{seps:?}");
}

#[test]
fn a_streamed_fit_finds_the_separation_over_its_chunks() {
    use em_as_md::data::source::InMemory;
    use em_as_md::fit::separation::SeparationSums;
    use em_as_md::fit::stream::stream_summaries;
    let d = data(300, 4, |x, _| x > 0.0);
    let params = MoeParams::new(1)
        .expert(Logistic::new())
        .gating(Gating::Constant)
        .n_init(2)
        .seed(3)
        .check()
        .unwrap();
    // Chunks of 70 rows: the sums of the test add up over five chunks.
    let source = InMemory::new(&d, 70).unwrap();
    let fit = params.fit_stream(&source, &d).unwrap();
    let t = fit.report().termination;
    let Termination::Separated { expert, mean_nll } = t else {
        panic!("{t:?}")
    };
    assert_eq!(expert, 0);
    // The chunked sums give the one-pass test's mean loss, to round-off.
    let whole = separated_experts(fit.model(), &d, fit.theta()).unwrap();
    assert_eq!(whole.len(), 1);
    assert!((whole[0].mean_nll - mean_nll).abs() <= 1e-9 * mean_nll.max(1e-300));
    let s = stream_summaries(fit.model(), &source, fit.theta()).unwrap();
    assert_eq!(s.separated.first().map(|s| s.expert), Some(0));
    // Overlapping classes: nothing separated, and the sums merge associatively.
    let d = data(300, 5, |x, u| u < 1.0 / (1.0 + (-x).exp()));
    let fit = params
        .fit_stream(&InMemory::new(&d, 70).unwrap(), &d)
        .unwrap();
    assert!(fit.report().termination.is_converged());
    let (stats, _) = em_as_md::EmModel::e_step(fit.model(), &d, fit.theta()).unwrap();
    let mut all = SeparationSums::new(1);
    all.add_rows(fit.model(), &d, fit.theta(), &stats.resp)
        .unwrap();
    assert!(all.separated().is_empty() && all.loss[0] > 0.0 && all.weight[0] > 299.0);
    let mut bad = SeparationSums::new(1);
    assert!(bad
        .add_rows(fit.model(), &d, fit.theta(), &stats.resp[1..])
        .is_err());
}
