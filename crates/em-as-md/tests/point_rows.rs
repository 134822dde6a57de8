//! The mixture's row evaluator at one parameter point (`ConditionalFamily::point_rows`,
//! `MixtureRows` with the experts' `Expert::prepare`) against the generic row functions
//! (`GenericPointRows`: `realise`, `row_posterior_given`, `complete_mean`) on random
//! parameter points and rows for linear-Gaussian, logistic, Poisson and multinomial
//! experts, softmax and constant gating, $K = 1, 2, 3$: $\varphi_i$, $A(\varphi_i)$,
//! $\log p(y_i\mid x_i)$ and $\nabla A(\varphi_i)$ **bit for bit**, the posterior and
//! $\mathbb E_{\text{post}}\[T\]$ (taken from the log-sum-exp's exponentials rather than
//! recomputed) to $10^{-14}$ relative; and the errors of points outside the natural
//! domain, which must be the generic ones word for word.

use em_as_md::solve::problem::{
    point_rows, GenericPointRows, PointRows, RowObservation, RowScratch,
};
use em_as_md::{
    ConditionalFamily, Expert, FamilyPrepared, Gating, LinearGaussian, Logistic, MixtureOfExperts,
    Multinomial, Poisson, PreparedExpert,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

fn experts() -> Vec<Arc<dyn Expert>> {
    vec![
        Arc::new(LinearGaussian::new()),
        Arc::new(Logistic::new()),
        Arc::new(Poisson::new()),
        Arc::new(Multinomial::new(3).unwrap()),
    ]
}

fn models(d: usize) -> Vec<MixtureOfExperts> {
    let mut out = Vec::new();
    for e in experts() {
        for gating in [Gating::Softmax, Gating::Constant] {
            for k in 1..=3 {
                out.push(MixtureOfExperts::new(e.clone(), k, d, gating).unwrap());
            }
        }
    }
    out
}

fn random_x(rng: &mut ChaCha8Rng, d: usize) -> Vec<f64> {
    (0..d)
        .map(|j| {
            if j == 0 {
                1.0
            } else {
                2.0 * rng.random::<f64>() - 1.0
            }
        })
        .collect()
}

/// A scratch whose buffers hold garbage: the evaluators must not read stale contents.
fn dirty(m: &MixtureOfExperts) -> RowScratch {
    let mut s = RowScratch::new(m);
    for v in [
        &mut s.phi,
        &mut s.mean,
        &mut s.post_stats,
        &mut s.resp,
        &mut s.work,
    ] {
        v.fill(f64::NAN);
    }
    s
}

fn same_bits(what: &str, a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (j, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{what}[{j}]: {x} vs {y}");
    }
}

/// Equal to $10^{-14}$ relative, or to $10^{-15}$ of the largest entry (a posterior
/// probability of $10^{-50}$ is $e^{-115}$: $e^{x}$ of an $x$ with round-off $115\,\varepsilon$).
fn close(what: &str, a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (j, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = 1e-14 * x.abs().max(y.abs()) + 1e-15 * scale;
        assert!((x - y).abs() <= tol, "{what}[{j}]: {x} vs {y}");
    }
}

/// Evaluates `rows` rows of data drawn at `truth` with both evaluators at `theta`;
/// compares every output bit for bit (or the error messages); returns how many rows
/// succeeded.
fn compare(m: &MixtureOfExperts, truth: &[f64], theta: &[f64], seed: u64, rows: usize) -> usize {
    let d = m.n_features();
    let fast = point_rows(m, theta);
    let generic = GenericPointRows::new(m, theta);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ob = RowObservation::new(m);
    let (mut s1, mut s2) = (dirty(m), dirty(m));
    let mut ok = 0;
    for i in 0..rows {
        let x = random_x(&mut rng, d);
        let (y, _) = m.sample(truth, &x, &mut rng).unwrap();
        ob.set(m, &y);
        let a = fast.posterior(&x, &ob, i, &mut s1);
        let b = generic.posterior(&x, &ob, i, &mut s2);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.to_bits(), b.to_bits(), "log p: {a} vs {b}");
                assert_eq!(s1.log_partition.to_bits(), s2.log_partition.to_bits());
                same_bits("phi", &s1.phi, &s2.phi);
                close("resp", &s1.resp, &s2.resp);
                close("post_stats", &s1.post_stats, &s2.post_stats);
                match (fast.mean(&mut s1), generic.mean(&mut s2)) {
                    (Ok(()), Ok(())) => same_bits("mean", &s1.mean, &s2.mean),
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => panic!("mean: fast {a:?}, generic {b:?}"),
                }
                ok += 1;
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("posterior: fast {a:?}, generic {b:?}"),
        }
    }
    ok
}

#[test]
fn mixture_rows_equal_generic_rows() {
    for (t, m) in models(3).iter().enumerate() {
        assert!(m.point_rows(&vec![0.0; m.n_params()]).is_some());
        for rep in 0..6u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(100 * t as u64 + rep);
            let truth = m.random_params(&mut rng, 1.0);
            // A nearby point and a far one (large logits, separated components).
            let scale = if rep % 2 == 0 { 0.3 } else { 3.0 };
            let theta = m.random_params(&mut rng, scale);
            let n = compare(m, &truth, &theta, rep, 60);
            assert_eq!(
                n,
                60,
                "{} K={} {:?}",
                m.expert().name(),
                m.n_experts(),
                m.gating()
            );
        }
    }
}

#[test]
fn points_outside_the_domain_fail_as_the_generic_rows_do() {
    for gating in [Gating::Softmax, Gating::Constant] {
        let m = MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 3, 2, gating).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let truth = m.random_params(&mut rng, 1.0);
        // τ ≥ 0 (no variance), τ NaN, a NaN coefficient, an overflowing coefficient.
        let (gl, el) = (m.gate_len(), m.expert_len());
        let tau = |th: &mut Vec<f64>, c: usize, v: f64| th[gl + c * el + el - 1] = v;
        let mut bad = Vec::new();
        for (c, v) in [(0, 0.0), (1, 0.5), (2, f64::NAN)] {
            let mut th = truth.clone();
            tau(&mut th, c, v);
            bad.push(th);
        }
        let mut th = truth.clone();
        th[gl] = f64::NAN;
        bad.push(th);
        let mut th = truth.clone();
        th[gl + 1] = 1e200;
        bad.push(th);
        for th in &bad {
            assert_eq!(compare(&m, &truth, th, 3, 10), 0, "{th:?}");
        }
        // An expert left alone by a bad gate value: both give the same non-finite error.
        let mut th = truth.clone();
        if gl > 0 {
            th[0] = f64::INFINITY;
            compare(&m, &truth, &th, 4, 10);
        }
    }
}

#[test]
fn wrong_length_points_use_the_generic_rows() {
    let m = MixtureOfExperts::new(Arc::new(Logistic::new()), 2, 2, Gating::Softmax).unwrap();
    assert!(m.point_rows(&[0.0; 3]).is_none());
}

#[test]
fn prepared_linear_expert_equals_the_family() {
    let e = LinearGaussian::new();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..50 {
        let params: Vec<f64> = (0..4)
            .map(|j| {
                if j == 3 {
                    -0.05 - 3.0 * rng.random::<f64>()
                } else {
                    4.0 * rng.random::<f64>() - 2.0
                }
            })
            .collect();
        let x = random_x(&mut rng, 3);
        let fast = e.prepare(&params).unwrap();
        let generic = FamilyPrepared::new(&e, &params);
        let (mut e1, mut e2) = ([0.0; 2], [0.0; 2]);
        let a1 = fast.natural_and_log_partition(&x, &mut e1).unwrap();
        let a2 = generic.natural_and_log_partition(&x, &mut e2).unwrap();
        assert_eq!(a1.to_bits(), a2.to_bits());
        same_bits("eta", &e1, &e2);
        let (mut m1, mut m2) = ([0.0; 2], [0.0; 2]);
        fast.mean(&e1, &mut m1).unwrap();
        generic.mean(&e2, &mut m2).unwrap();
        same_bits("mean", &m1, &m2);
    }
    assert!(e.prepare(&[1.0, 2.0, 0.0]).is_none());
    assert!(e.prepare(&[1.0, 2.0, f64::NAN]).is_none());
    assert!(Logistic::new().prepare(&[1.0, 2.0]).is_none());
}
