//! Projected mirror descent against independent computations: the exponentiated-gradient
//! closed form, projected gradient descent with projections written here (bisection on
//! the multiplier, coordinate clamp checked by the variational inequality), and the
//! textbook linear rates on a strongly convex quadratic and on a KL objective.

use mirror::descent::{simplex_project_euclidean, ConstraintSet};
use mirror::{
    BlockSum, BoxSet, Constant, Euclidean, InvSqrt, MirrorDescent, MirrorError, MirrorMap,
    NegEntropy, Simplex, StepFn, Unconstrained,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        Config::with_cases(cases),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[11; 32]),
    )
}

fn simplex_point(n: usize) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(0.02f64..1.0, n).prop_map(|w| {
        let s: f64 = w.iter().sum();
        w.into_iter().map(|v| v / s).collect()
    })
}

/// (θ on the simplex, gradient, step) in a random dimension.
fn simplex_case() -> impl Strategy<Value = (Vec<f64>, Vec<f64>, f64)> {
    (2usize..8).prop_flat_map(|n| {
        (
            simplex_point(n),
            proptest::collection::vec(-5.0f64..5.0, n),
            0.01f64..3.0,
        )
    })
}

/// Euclidean projection onto the simplex by bisection on the multiplier τ of
/// $\sum_j \max(0, x_j - \tau/d_j) = 1$: independent of the library's sort-based rule.
fn bisection_simplex_projection(x: &[f64], d: &[f64]) -> Vec<f64> {
    let total = |tau: f64| -> f64 {
        x.iter()
            .zip(d)
            .map(|(v, d)| (v - tau / d).max(0.0))
            .sum::<f64>()
    };
    // total(lo) ≥ 1 ≥ total(hi).
    let mut lo = x
        .iter()
        .zip(d)
        .map(|(v, d)| d * (v - 1.0))
        .fold(f64::INFINITY, f64::min);
    let mut hi = x
        .iter()
        .zip(d)
        .map(|(v, d)| d * v)
        .fold(f64::NEG_INFINITY, f64::max);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if total(mid) > 1.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let tau = 0.5 * (lo + hi);
    x.iter()
        .zip(d)
        .map(|(v, d)| (v - tau / d).max(0.0))
        .collect()
}

#[test]
fn entropic_md_is_exponentiated_gradient() {
    runner(48)
        .run(&simplex_case(), |(theta, g, eta)| {
            let n = theta.len();
            // Closed form x⁺_j ∝ x_j exp(−η g_j), computed directly.
            let w: Vec<f64> = theta
                .iter()
                .zip(&g)
                .map(|(x, g)| x * (-eta * g).exp())
                .collect();
            let z: f64 = w.iter().sum();
            let eg: Vec<f64> = w.iter().map(|v| v / z).collect();
            for set in [
                Box::new(Simplex::new(n).unwrap()) as Box<dyn ConstraintSet>,
                Box::new(Unconstrained),
            ] {
                let md = MirrorDescent::new(
                    NegEntropy::new(n).unwrap(),
                    set,
                    Constant::new(eta).unwrap(),
                )
                .unwrap();
                let next = md.step(&theta, &g, 0).unwrap();
                for (a, b) in next.iter().zip(&eg) {
                    prop_assert!((a - b).abs() < 1e-13, "{next:?} vs {eg:?}");
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn euclidean_md_on_the_simplex_is_projected_gradient_descent() {
    runner(48)
        .run(&simplex_case(), |(theta, g, eta)| {
            let n = theta.len();
            let md = MirrorDescent::new(
                Euclidean::new(n).unwrap(),
                Simplex::new(n).unwrap(),
                Constant::new(eta).unwrap(),
            )
            .unwrap();
            let next = md.step(&theta, &g, 0).unwrap();
            let x: Vec<f64> = theta.iter().zip(&g).map(|(t, g)| t - eta * g).collect();
            let pgd = bisection_simplex_projection(&x, &vec![1.0; n]);
            for (a, b) in next.iter().zip(&pgd) {
                prop_assert!((a - b).abs() < 1e-12, "{next:?} vs {pgd:?}");
            }
            prop_assert!((next.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            Ok(())
        })
        .unwrap();
}

#[test]
fn weighted_euclidean_simplex_projection_matches_bisection() {
    let strategy = (2usize..9).prop_flat_map(|n| {
        (
            proptest::collection::vec(-3.0f64..3.0, n),
            proptest::collection::vec(0.1f64..10.0, n),
        )
    });
    runner(64)
        .run(&strategy, |(x, d)| {
            let mut out = vec![0.0; x.len()];
            simplex_project_euclidean(&x, &d, &mut out).unwrap();
            let reference = bisection_simplex_projection(&x, &d);
            for (a, b) in out.iter().zip(&reference) {
                prop_assert!((a - b).abs() < 1e-12, "{out:?} vs {reference:?}");
            }
            // And through the scaled map: MD with ψ = ½Σ d x² is θ − η g ⊘ d, projected
            // in the d-weighted norm.
            let n = x.len();
            let theta = vec![1.0 / n as f64; n];
            let g: Vec<f64> = x
                .iter()
                .zip(&d)
                .map(|(x, d)| -(x - 1.0 / n as f64) * d)
                .collect();
            let md = MirrorDescent::new(
                Euclidean::scaled(d.clone()).unwrap(),
                Simplex::new(n).unwrap(),
                Constant::new(1.0).unwrap(),
            )
            .unwrap();
            let next = md.step(&theta, &g, 0).unwrap();
            for (a, b) in next.iter().zip(&reference) {
                prop_assert!((a - b).abs() < 1e-12);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn euclidean_md_on_a_box_is_projected_gradient_descent() {
    let strategy = (1usize..7).prop_flat_map(|n| {
        (
            proptest::collection::vec(-1.0f64..1.0, n),
            proptest::collection::vec(-10.0f64..10.0, n),
            0.01f64..2.0,
            proptest::collection::vec(0.0f64..1.0, n),
        )
    });
    runner(48)
        .run(&strategy, |(theta, g, eta, probe)| {
            let n = theta.len();
            let (lo, hi) = (-1.0, 1.0);
            let md = MirrorDescent::new(
                Euclidean::new(n).unwrap(),
                BoxSet::uniform(n, lo, hi).unwrap(),
                Constant::new(eta).unwrap(),
            )
            .unwrap();
            let p = md.step(&theta, &g, 0).unwrap();
            let x: Vec<f64> = theta.iter().zip(&g).map(|(t, g)| t - eta * g).collect();
            // Independent characterisation of the projection: p ∈ C and the variational
            // inequality ⟨x − p, z − p⟩ ≤ 0 for every z ∈ C (here all corners and a
            // random interior point).
            prop_assert!(p.iter().all(|&v| (lo..=hi).contains(&v)));
            let vi =
                |z: &[f64]| -> f64 { (0..n).map(|j| (x[j] - p[j]) * (z[j] - p[j])).sum::<f64>() };
            for mask in 0u32..(1 << n) {
                let corner: Vec<f64> = (0..n)
                    .map(|j| if mask >> j & 1 == 1 { hi } else { lo })
                    .collect();
                prop_assert!(vi(&corner) <= 1e-12);
            }
            let z: Vec<f64> = probe.iter().map(|u| lo + (hi - lo) * u).collect();
            prop_assert!(vi(&z) <= 1e-12);
            Ok(())
        })
        .unwrap();
}

/// $f(x) = \tfrac12\sum_j \lambda_j (x_j - c_j)^2$: Euclidean MD with $\eta = 1/L$ has
/// error $\le (1-\mu/L)^t \|x_0 - c\|$, and the measured per-step contraction of the error
/// equals $1 - \mu/L$ (the slowest coordinate dominates).
#[test]
fn euclidean_md_on_a_strongly_convex_quadratic_has_rate_one_minus_mu_over_l() {
    let lambda = [1.0, 2.5, 7.0, 20.0, 50.0];
    let centre = [0.3, -1.2, 2.0, 0.0, 4.0];
    let (mu, l) = (1.0, 50.0);
    let rate = 1.0 - mu / l;
    let n = lambda.len();
    let md = MirrorDescent::new(
        Euclidean::new(n).unwrap(),
        Unconstrained,
        Constant::new(1.0 / l).unwrap(),
    )
    .unwrap();
    let f = |x: &[f64]| {
        0.5 * (0..n)
            .map(|j| lambda[j] * (x[j] - centre[j]).powi(2))
            .sum::<f64>()
    };
    let grad = |x: &[f64]| {
        (0..n)
            .map(|j| lambda[j] * (x[j] - centre[j]))
            .collect::<Vec<f64>>()
    };
    let x0 = [5.0, 5.0, -5.0, 5.0, -5.0];
    let iters = 200;
    let traj = md.minimize(f, grad, &x0, iters).unwrap();
    let err = |x: &[f64]| {
        (0..n)
            .map(|j| (x[j] - centre[j]).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let e0 = err(&x0);
    for (t, x) in traj.iterates.iter().enumerate() {
        assert!(
            err(x) <= e0 * rate.powi(t as i32) * (1.0 + 1e-12),
            "bound fails at t = {t}"
        );
    }
    let (a, b) = (150, 200);
    let measured = (err(&traj.iterates[b]) / err(&traj.iterates[a])).powf(1.0 / (b - a) as f64);
    assert!(
        (measured / rate - 1.0).abs() < 0.02,
        "measured {measured} vs predicted {rate}"
    );
    // A wrong rate is rejected: the next-slowest mode would give 1 − 2.5/50.
    assert!((measured / (1.0 - 2.5 / l) - 1.0).abs() > 0.02);
    // Recorded objective equals the objective recomputed at the stored iterates.
    for (x, v) in traj.iterates.iter().zip(&traj.objective) {
        assert_eq!(*v, f(x));
    }
}

/// The same rate with a box that contains the minimiser in its interior: once inside,
/// the clamp is inactive and the contraction is again $1 - \mu/L$.
#[test]
fn euclidean_md_in_a_box_keeps_the_rate() {
    let lambda = [2.0, 10.0, 40.0];
    let centre = [0.5, -0.5, 0.25];
    let (mu, l) = (2.0, 40.0);
    let n = 3;
    let md = MirrorDescent::new(
        Euclidean::new(n).unwrap(),
        BoxSet::uniform(n, -1.0, 1.0).unwrap(),
        Constant::new(1.0 / l).unwrap(),
    )
    .unwrap();
    let f = |x: &[f64]| {
        0.5 * (0..n)
            .map(|j| lambda[j] * (x[j] - centre[j]).powi(2))
            .sum::<f64>()
    };
    let grad = |x: &[f64]| {
        (0..n)
            .map(|j| lambda[j] * (x[j] - centre[j]))
            .collect::<Vec<f64>>()
    };
    let traj = md.minimize(f, grad, &[-1.0, 1.0, -1.0], 150).unwrap();
    let err = |x: &[f64]| {
        (0..n)
            .map(|j| (x[j] - centre[j]).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let measured = (err(&traj.iterates[150]) / err(&traj.iterates[100])).powf(1.0 / 50.0);
    assert!((measured / (1.0 - mu / l) - 1.0).abs() < 0.02, "{measured}");
}

/// Entropic MD on $f(x) = \mathrm{KL}(x\|q)$ over the simplex: $\nabla f = \log(x/q) + 1$,
/// so $\log(x_{t+1}/q) = (1-\eta)\log(x_t/q) + c_t\mathbf 1$. The centred log-ratio
/// contracts by exactly $1-\eta$ per step.
#[test]
fn entropic_md_on_a_kl_objective_contracts_log_ratio_by_one_minus_eta() {
    let strategy = (
        (3usize..7).prop_flat_map(|n| (simplex_point(n), simplex_point(n))),
        0.05f64..0.95,
    );
    runner(32)
        .run(&strategy, |((q, x0), eta)| {
            let n = q.len();
            let md = MirrorDescent::new(
                NegEntropy::new(n).unwrap(),
                Simplex::new(n).unwrap(),
                Constant::new(eta).unwrap(),
            )
            .unwrap();
            let f = |x: &[f64]| x.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum::<f64>();
            let grad = |x: &[f64]| x.iter().zip(&q).map(|(a, b)| (a / b).ln() + 1.0).collect();
            let traj = md.minimize(f, grad, &x0, 8).unwrap();
            let centred = |x: &[f64]| -> Vec<f64> {
                let r: Vec<f64> = x.iter().zip(&q).map(|(a, b)| (a / b).ln()).collect();
                let m = r.iter().sum::<f64>() / n as f64;
                r.into_iter().map(|v| v - m).collect()
            };
            let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
            let u0 = norm(&centred(&traj.iterates[0]));
            prop_assume!(u0 > 1e-3);
            for t in 0..4 {
                let a = centred(&traj.iterates[t]);
                let b = centred(&traj.iterates[t + 1]);
                let measured = norm(&b) / norm(&a);
                prop_assert!(
                    (measured - (1.0 - eta)).abs() < 1e-8,
                    "t = {t}: measured {measured} vs 1 − η = {}",
                    1.0 - eta
                );
                // Componentwise, not only in norm.
                for (x, y) in a.iter().zip(&b) {
                    prop_assert!((y - (1.0 - eta) * x).abs() < 1e-9);
                }
            }
            // The objective decreases to KL(q‖q) = 0.
            prop_assert!(traj.objective[8] < traj.objective[0]);
            Ok(())
        })
        .unwrap();
}

#[test]
fn step_schedules() {
    let c = Constant::new(0.3).unwrap();
    let s = InvSqrt::new(2.0).unwrap();
    let u = StepFn(|t: usize| 1.0 / (t as f64 + 4.0));
    use mirror::StepSize;
    assert_eq!(c.eta(17), 0.3);
    assert_eq!(s.eta(0), 2.0);
    assert!((s.eta(3) - 1.0).abs() < 1e-15);
    assert_eq!(u.eta(0), 0.25);
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            Constant::new(bad).unwrap_err(),
            MirrorError::InvalidParameter { .. }
        ));
        assert!(matches!(
            InvSqrt::new(bad).unwrap_err(),
            MirrorError::InvalidParameter { .. }
        ));
    }
    // A user schedule that goes bad is caught at the step that uses it.
    let md = MirrorDescent::new(
        Euclidean::new(1).unwrap(),
        Unconstrained,
        StepFn(|t: usize| if t < 2 { 0.1 } else { -0.1 }),
    )
    .unwrap();
    assert!(md.step(&[1.0], &[1.0], 1).is_ok());
    assert!(matches!(
        md.step(&[1.0], &[1.0], 2).unwrap_err(),
        MirrorError::InvalidParameter { .. }
    ));
    // The decaying schedule is what the driver uses: one step from 0 with g = 1 moves by η_t.
    let md = MirrorDescent::new(Euclidean::new(1).unwrap(), Unconstrained, s).unwrap();
    let x = md.step(&[0.0], &[1.0], 8).unwrap();
    assert!((x[0] + 2.0 / 3.0).abs() < 1e-15);
}

#[test]
fn block_sum_md_is_blockwise_md() {
    // ψ = 2·½‖x₁‖² + 0.5·negent(x₂): the step is x₁ − (η/2) g₁ and the EG step with η/0.5
    // on x₂; projection onto the whole space is the identity.
    let map = BlockSum::new(vec![
        (Box::new(Euclidean::new(2).unwrap()), 2.0),
        (Box::new(NegEntropy::new(3).unwrap()), 0.5),
    ])
    .unwrap();
    let eta = 0.4;
    let md = MirrorDescent::new(&map, Unconstrained, Constant::new(eta).unwrap()).unwrap();
    let theta = [1.0, -1.0, 0.2, 0.3, 0.5];
    let g = [0.5, 1.0, 1.0, -2.0, 0.5];
    let next = md.step(&theta, &g, 0).unwrap();
    assert!((next[0] - (1.0 - eta / 2.0 * 0.5)).abs() < 1e-15);
    assert!((next[1] - (-1.0 - eta / 2.0 * 1.0)).abs() < 1e-15);
    let w: Vec<f64> = (2..5)
        .map(|j| theta[j] * (-(eta / 0.5) * g[j]).exp())
        .collect();
    let z: f64 = w.iter().sum();
    for j in 0..3 {
        assert!((next[2 + j] - w[j] / z).abs() < 1e-14);
    }
    // A box cannot be projected onto with an entropy block: refused, not approximated.
    let md = MirrorDescent::new(
        &map,
        BoxSet::uniform(5, 0.0, 1.0).unwrap(),
        Constant::new(eta).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        md.step(&theta, &g, 0).unwrap_err(),
        MirrorError::Unsupported { .. }
    ));
}

#[test]
fn bad_inputs_give_typed_errors() {
    let ent = NegEntropy::new(3).unwrap();
    let md =
        MirrorDescent::new(ent, Simplex::new(3).unwrap(), Constant::new(1.0).unwrap()).unwrap();
    let theta = [0.2, 0.3, 0.5];
    assert!(matches!(
        md.step(&[0.5, 0.5, 0.5], &[0.0; 3], 0).unwrap_err(),
        MirrorError::OutsideDomain { .. }
    ));
    assert!(matches!(
        md.step(&theta, &[0.0; 2], 0).unwrap_err(),
        MirrorError::DimensionMismatch { .. }
    ));
    assert!(matches!(
        md.step(&theta, &[f64::NAN, 0.0, 0.0], 0).unwrap_err(),
        MirrorError::NonFinite { .. }
    ));
    // A start outside C is refused by the driver.
    let e = MirrorDescent::new(
        Euclidean::new(2).unwrap(),
        Simplex::new(2).unwrap(),
        Constant::new(1.0).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        e.minimize(|_| 0.0, |_| vec![0.0; 2], &[2.0, 0.0], 3)
            .unwrap_err(),
        MirrorError::OutsideDomain { .. }
    ));
    // An objective that returns NaN is reported, not recorded.
    assert!(matches!(
        e.minimize(|_| f64::NAN, |_| vec![0.0; 2], &[0.5, 0.5], 3)
            .unwrap_err(),
        MirrorError::NonFinite { .. }
    ));
    // Set constructors.
    assert!(matches!(
        Simplex::new(0).unwrap_err(),
        MirrorError::InvalidParameter { .. }
    ));
    assert!(matches!(
        BoxSet::new(vec![0.0], vec![1.0, 2.0]).unwrap_err(),
        MirrorError::DimensionMismatch { .. }
    ));
    assert!(matches!(
        BoxSet::new(vec![1.0], vec![0.0]).unwrap_err(),
        MirrorError::InvalidParameter { .. }
    ));
    assert!(matches!(
        BoxSet::new(vec![f64::NAN], vec![0.0]).unwrap_err(),
        MirrorError::InvalidParameter { .. }
    ));
    assert!(matches!(
        BoxSet::new(vec![], vec![]).unwrap_err(),
        MirrorError::InvalidParameter { .. }
    ));
    // Entropy is tagged NegEntropy even in 1-D (the simplex is the point {1}), so a box
    // refuses it rather than clamping.
    let one = NegEntropy::new(1).unwrap();
    let mut out = [0.0];
    assert!(matches!(
        BoxSet::uniform(1, 0.0, 0.5)
            .unwrap()
            .project(&one, &[1.0], &mut out)
            .unwrap_err(),
        MirrorError::Unsupported { .. }
    ));
    assert!(one.in_domain(&[1.0]));
}

#[test]
fn scaled_euclidean_box_clamp_satisfies_the_weighted_variational_inequality() {
    // For ψ = ½Σ d x², the Bregman projection p of x onto a box is characterised by
    // ⟨d ⊙ (x − p), z − p⟩ ≤ 0 for all z in the box (checked at every corner).
    let strategy = (1usize..6).prop_flat_map(|n| {
        (
            proptest::collection::vec(-3.0f64..3.0, n),
            proptest::collection::vec(0.1f64..10.0, n),
        )
    });
    runner(48)
        .run(&strategy, |(x, d)| {
            let n = x.len();
            let map = Euclidean::scaled(d.clone()).unwrap();
            let set = BoxSet::uniform(n, -1.0, 0.5).unwrap();
            let mut p = vec![0.0; n];
            set.project(&map, &x, &mut p).unwrap();
            prop_assert!(set.contains(&p));
            for mask in 0u32..(1 << n) {
                let z: Vec<f64> = (0..n)
                    .map(|j| if mask >> j & 1 == 1 { 0.5 } else { -1.0 })
                    .collect();
                let vi: f64 = (0..n).map(|j| d[j] * (x[j] - p[j]) * (z[j] - p[j])).sum();
                prop_assert!(vi <= 1e-12);
            }
            Ok(())
        })
        .unwrap();
}

/// Mirror descent with the log-partition of the Bernoulli family as the mirror map is a
/// gradient step in the mean parameter: $\sigma(\theta^+) = \sigma(\theta) - \eta g$.
/// A step that leaves the mean domain $(0, 1)$ is a typed error.
#[test]
fn md_with_a_log_partition_map_steps_in_the_mean_parameter() {
    use mirror::{Bernoulli, LogPartition};
    let sigmoid = |t: f64| 1.0 / (1.0 + (-t).exp());
    runner(32)
        .run(
            &(-3.0f64..3.0, -1.0f64..1.0, 0.01f64..1.0),
            |(theta, g, eta)| {
                let mu_next = sigmoid(theta) - eta * g;
                let md = MirrorDescent::new(
                    LogPartition::new(Bernoulli::new()),
                    Unconstrained,
                    Constant::new(eta).unwrap(),
                )
                .unwrap();
                match md.step(&[theta], &[g], 0) {
                    Ok(next) => {
                        prop_assert!(mu_next > 0.0 && mu_next < 1.0);
                        prop_assert!((sigmoid(next[0]) - mu_next).abs() < 1e-10);
                    }
                    Err(e) => {
                        prop_assert!(!(mu_next > 0.0 && mu_next < 1.0), "{e:?}");
                        prop_assert!(matches!(e, MirrorError::OutsideDomain { .. }), "{e:?}");
                    }
                }
                // A 1-D log-partition is separable, so a box projection is the clamp.
                let boxed = MirrorDescent::new(
                    LogPartition::new(Bernoulli::new()),
                    BoxSet::uniform(1, -0.5, 0.5).unwrap(),
                    Constant::new(eta).unwrap(),
                )
                .unwrap();
                if mu_next > 0.0 && mu_next < 1.0 {
                    let next = boxed.step(&[theta], &[g], 0).unwrap();
                    let free = (mu_next / (1.0 - mu_next)).ln();
                    prop_assert!((next[0] - free.clamp(-0.5, 0.5)).abs() < 1e-10);
                }
                Ok(())
            },
        )
        .unwrap();
}
