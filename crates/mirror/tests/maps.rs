//! Property tests of the built-in mirror maps: gradients against central finite
//! differences, $\nabla\psi^*\circ\nabla\psi = \mathrm{id}$, Bregman divergences against
//! their closed forms (KL for negative entropy), and constructor errors.

use mirror::{bregman, BlockSum, Euclidean, MapKind, MirrorError, MirrorMap, NegEntropy};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const CASES: u32 = 48;

fn runner() -> TestRunner {
    TestRunner::new_with_rng(
        Config::with_cases(CASES),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    )
}

/// A point in the open simplex from positive weights.
fn simplex(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(0.02f64..1.0, n).prop_map(|w| {
        let s: f64 = w.iter().sum();
        w.into_iter().map(|v| v / s).collect()
    })
}

/// Two points of the open simplex of the same dimension.
fn simplex_pair() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (1usize..7).prop_flat_map(|n| (simplex(n..n + 1), simplex(n..n + 1)))
}

fn scaled_pair() -> impl Strategy<Value = (Vec<f64>, Vec<f64>, Vec<f64>)> {
    (1usize..7).prop_flat_map(|n| {
        (
            proptest::collection::vec(0.1f64..10.0, n),
            proptest::collection::vec(-5.0f64..5.0, n),
            proptest::collection::vec(-5.0f64..5.0, n),
        )
    })
}

/// Central difference of ψ along direction v, $(\psi(x+hv) - \psi(x-hv))/2h$.
fn directional_fd(map: &dyn MirrorMap, x: &[f64], v: &[f64], h: f64) -> f64 {
    let plus: Vec<f64> = x.iter().zip(v).map(|(a, b)| a + h * b).collect();
    let minus: Vec<f64> = x.iter().zip(v).map(|(a, b)| a - h * b).collect();
    (map.potential(&plus).unwrap() - map.potential(&minus).unwrap()) / (2.0 * h)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The independent KL divergence $\sum_j a_j \log(a_j/b_j)$ on the simplex.
fn kl(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| p * (p / q).ln()).sum()
}

#[test]
fn euclidean_gradient_inverse_and_bregman() {
    runner()
        .run(&scaled_pair(), |(d, x, z)| {
            let m = Euclidean::scaled(d.clone()).unwrap();
            let n = d.len();
            let mut g = vec![0.0; n];
            m.grad(&x, &mut g).unwrap();
            for j in 0..n {
                let mut e = vec![0.0; n];
                e[j] = 1.0;
                let fd = directional_fd(&m, &x, &e, 1e-5);
                prop_assert!(
                    (fd - g[j]).abs() < 1e-7 * (1.0 + g[j].abs()),
                    "{fd} vs {}",
                    g[j]
                );
            }
            let mut back = vec![0.0; n];
            m.grad_conj(&g, &mut back).unwrap();
            for (a, b) in back.iter().zip(&x) {
                prop_assert!((a - b).abs() < 1e-12 * (1.0 + b.abs()));
            }
            let closed: f64 = 0.5 * (0..n).map(|j| d[j] * (x[j] - z[j]).powi(2)).sum::<f64>();
            let b = bregman(&m, &x, &z).unwrap();
            prop_assert!(b >= 0.0);
            prop_assert!((b - closed).abs() < 1e-10 * (1.0 + closed));
            prop_assert_eq!(bregman(&m, &x, &x).unwrap(), 0.0);
            Ok(())
        })
        .unwrap();
}

#[test]
fn neg_entropy_gradient_along_the_simplex_and_softmax_inverse() {
    let strategy = (simplex(2..7), any::<u64>());
    runner()
        .run(&strategy, |(x, seed)| {
            let n = x.len();
            let m = NegEntropy::new(n).unwrap();
            let mut g = vec![0.0; n];
            m.grad(&x, &mut g).unwrap();
            // ψ lives on the simplex: differentiate along tangent directions e_i − e_j
            // (and one pseudo-random tangent direction).
            let h = 1e-6;
            for i in 0..n {
                let j = (i + 1 + (seed as usize) % (n - 1)) % n;
                if i == j {
                    continue;
                }
                let mut v = vec![0.0; n];
                v[i] = 1.0;
                v[j] = -1.0;
                let fd = directional_fd(&m, &x, &v, h);
                prop_assert!((fd - dot(&g, &v)).abs() < 1e-6, "{fd} vs {}", dot(&g, &v));
            }
            let mut back = vec![0.0; n];
            m.grad_conj(&g, &mut back).unwrap();
            for (a, b) in back.iter().zip(&x) {
                prop_assert!((a - b).abs() < 1e-13);
            }
            // The dual point is defined up to the normal direction 1.
            let shifted: Vec<f64> = g.iter().map(|v| v + 3.7).collect();
            m.grad_conj(&shifted, &mut back).unwrap();
            for (a, b) in back.iter().zip(&x) {
                prop_assert!((a - b).abs() < 1e-13);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn neg_entropy_bregman_is_kl_nonnegative_and_zero_on_the_diagonal() {
    runner()
        .run(&simplex_pair(), |(a, b)| {
            let m = NegEntropy::new(a.len()).unwrap();
            let d = bregman(&m, &a, &b).unwrap();
            let k = kl(&a, &b);
            prop_assert!(d >= 0.0);
            prop_assert!((d - k).abs() < 1e-12 * (1.0 + k), "{d} vs KL {k}");
            prop_assert!(bregman(&m, &a, &a).unwrap().abs() < 1e-14);
            Ok(())
        })
        .unwrap();
}

#[test]
fn neg_entropy_potential_accepts_the_boundary_with_zero_log_zero() {
    let m = NegEntropy::new(3).unwrap();
    let v = m.potential(&[0.5, 0.5, 0.0]).unwrap();
    assert!((v - 0.5f64.ln()).abs() < 1e-15);
    // KL(a‖b) with a on the boundary is finite: 0·log 0 = 0.
    let d = bregman(&m, &[0.5, 0.5, 0.0], &[0.25, 0.25, 0.5]).unwrap();
    assert!((d - 2f64.ln()).abs() < 1e-14);
    // …but the gradient at the boundary is −∞: a typed error, not NaN.
    let mut g = [0.0; 3];
    let err = m.grad(&[0.5, 0.5, 0.0], &mut g).unwrap_err();
    assert!(matches!(err, MirrorError::OutsideDomain { .. }), "{err:?}");
}

/// Block maps: $\psi(x) = 2\,\tfrac12\|x_1\|^2 + 0.5\,\mathrm{negent}(x_2)$.
fn block_map(n1: usize, n2: usize) -> BlockSum<'static> {
    BlockSum::new(vec![
        (Box::new(Euclidean::new(n1).unwrap()), 2.0),
        (Box::new(NegEntropy::new(n2).unwrap()), 0.5),
    ])
    .unwrap()
}

#[test]
fn block_sum_gradient_inverse_and_bregman_are_the_weighted_blocks() {
    let strategy = (
        proptest::collection::vec(-3.0f64..3.0, 1..4),
        proptest::collection::vec(-3.0f64..3.0, 1..4),
        simplex_pair(),
    );
    runner()
        .run(&strategy, |(x1, z1raw, (x2, z2))| {
            let n1 = x1.len();
            let z1: Vec<f64> = (0..n1).map(|j| z1raw[j % z1raw.len()]).collect();
            let m = block_map(n1, x2.len());
            let x: Vec<f64> = x1.iter().chain(&x2).copied().collect();
            let z: Vec<f64> = z1.iter().chain(&z2).copied().collect();
            let n = x.len();
            prop_assert!(m.in_domain(&x));
            let mut g = vec![0.0; n];
            m.grad(&x, &mut g).unwrap();
            // Euclidean block: plain finite differences.
            for j in 0..n1 {
                let mut e = vec![0.0; n];
                e[j] = 1.0;
                let fd = directional_fd(&m, &x, &e, 1e-5);
                prop_assert!((fd - g[j]).abs() < 1e-7 * (1.0 + g[j].abs()));
            }
            // Entropy block: tangent directions.
            for i in n1..n - 1 {
                let mut v = vec![0.0; n];
                v[i] = 1.0;
                v[i + 1] = -1.0;
                let fd = directional_fd(&m, &x, &v, 1e-6);
                prop_assert!((fd - dot(&g, &v)).abs() < 1e-6);
            }
            let mut back = vec![0.0; n];
            m.grad_conj(&g, &mut back).unwrap();
            for (a, b) in back.iter().zip(&x) {
                prop_assert!((a - b).abs() < 1e-12 * (1.0 + b.abs()));
            }
            let closed = 2.0 * 0.5 * (0..n1).map(|j| (x1[j] - z1[j]).powi(2)).sum::<f64>()
                + 0.5 * kl(&x2, &z2);
            let d = bregman(&m, &x, &z).unwrap();
            prop_assert!(d >= 0.0);
            prop_assert!(
                (d - closed).abs() < 1e-11 * (1.0 + closed),
                "{d} vs {closed}"
            );
            prop_assert!(bregman(&m, &x, &x).unwrap().abs() < 1e-13);
            Ok(())
        })
        .unwrap();
}

#[test]
fn kinds_report_the_structure() {
    let e = Euclidean::scaled(vec![1.0, 2.0]).unwrap();
    assert_eq!(e.kind(), MapKind::Euclidean { scale: &[1.0, 2.0] });
    assert_eq!(NegEntropy::new(3).unwrap().kind(), MapKind::NegEntropy);
    let all_euclid = BlockSum::new(vec![
        (Box::new(Euclidean::new(1).unwrap()), 3.0),
        (Box::new(Euclidean::scaled(vec![2.0, 4.0]).unwrap()), 0.5),
    ])
    .unwrap();
    assert_eq!(
        all_euclid.kind(),
        MapKind::Euclidean {
            scale: &[3.0, 1.0, 2.0]
        }
    );
    assert_eq!(all_euclid.dim(), 3);
    assert_eq!(all_euclid.block_range(1), Some(1..3));
    assert_eq!(all_euclid.weight(0), Some(3.0));
    assert_eq!(all_euclid.block_range(2), None);
    assert_eq!(block_map(2, 3).kind(), MapKind::General);
    // A 1-D entropy block is the point {1}: still tagged NegEntropy, so not separable.
    assert_eq!(block_map(2, 1).kind(), MapKind::General);
}

#[test]
fn constructors_reject_bad_input_with_the_exact_variant() {
    let cases: Vec<(&str, MirrorError)> = vec![
        ("Euclidean dim 0", Euclidean::new(0).unwrap_err()),
        ("empty scale", Euclidean::scaled(vec![]).unwrap_err()),
        ("zero scale", Euclidean::scaled(vec![1.0, 0.0]).unwrap_err()),
        ("NaN scale", Euclidean::scaled(vec![f64::NAN]).unwrap_err()),
        (
            "inf scale",
            Euclidean::scaled(vec![f64::INFINITY]).unwrap_err(),
        ),
        ("NegEntropy dim 0", NegEntropy::new(0).unwrap_err()),
        ("no blocks", BlockSum::new(vec![]).unwrap_err()),
        (
            "negative weight",
            BlockSum::new(vec![(Box::new(Euclidean::new(1).unwrap()), -1.0)]).unwrap_err(),
        ),
        (
            "NaN weight",
            BlockSum::new(vec![(Box::new(Euclidean::new(1).unwrap()), f64::NAN)]).unwrap_err(),
        ),
    ];
    for (name, err) in cases {
        assert!(
            matches!(err, MirrorError::InvalidParameter { .. }),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn bad_points_give_typed_errors_not_nan() {
    let e = Euclidean::new(2).unwrap();
    let mut out = [0.0; 2];
    assert!(matches!(
        e.grad(&[1.0], &mut out).unwrap_err(),
        MirrorError::DimensionMismatch { .. }
    ));
    assert!(matches!(
        e.potential(&[f64::NAN, 0.0]).unwrap_err(),
        MirrorError::NonFinite { .. }
    ));
    let h = NegEntropy::new(2).unwrap();
    for bad in [[0.7, 0.7], [-0.1, 1.1], [f64::NAN, 1.0]] {
        assert!(!h.in_domain(&bad));
        assert!(
            matches!(
                h.grad(&bad, &mut out).unwrap_err(),
                MirrorError::OutsideDomain { .. }
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        h.grad_conj(&[f64::INFINITY, 0.0], &mut out).unwrap_err(),
        MirrorError::NonFinite { .. }
    ));
    assert!(matches!(
        bregman(&h, &[0.5, 0.5], &[0.6, 0.6]).unwrap_err(),
        MirrorError::OutsideDomain { .. }
    ));
}

#[test]
fn maps_are_send_and_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Euclidean>();
    ok::<NegEntropy>();
    ok::<BlockSum<'static>>();
}
