//! The built-in exponential families against independent computations: log-partitions
//! by summation or quadrature, log-densities against statrs or hand-written densities,
//! closed-form mean inversions against the generic Newton solver, the multivariate
//! Gaussian's packing and conversions, and tables of bad inputs with their exact error
//! variants. (Derivatives and Monte-Carlo identities are in `check_family.rs`.)

use faer::Mat;
use mirror::family::newton_natural_from_mean;
use mirror::{
    Bernoulli, Categorical, Exponential, ExponentialFamily, Gaussian, GaussianKnownVariance,
    MirrorError, MultivariateGaussian, Poisson,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use rand::SeedableRng;
use statrs::distribution::{Continuous, Discrete};

fn pconfig(seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases: 32,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Composite Simpson rule on `[a, b]` with `n` (even) intervals.
fn simpson(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
    let h = (b - a) / n as f64;
    let mut s = f(a) + f(b);
    for i in 1..n {
        let w = if i % 2 == 1 { 4.0 } else { 2.0 };
        s += w * f(a + i as f64 * h);
    }
    s * h / 3.0
}

/// $\log\int h(s) e^{\langle T(s),\theta\rangle} ds$ by Simpson on `[a, b]` (1-D families).
fn log_partition_by_quadrature(f: &dyn ExponentialFamily, theta: &[f64], a: f64, b: f64) -> f64 {
    let integrand = |s: f64| {
        let mut t = vec![0.0; f.dim()];
        f.sufficient_stats(&[s], &mut t);
        let inner: f64 = t.iter().zip(theta).map(|(x, y)| x * y).sum();
        (f.log_base_measure(&[s]) + inner).exp()
    };
    simpson(integrand, a, b, 20_000).ln()
}

/// A boxed family, for tables over all built-ins.
type Fam = Box<dyn ExponentialFamily>;

fn is_invalid(e: &MirrorError) -> bool {
    matches!(e, MirrorError::InvalidParameter { .. })
}
fn is_outside(e: &MirrorError) -> bool {
    matches!(e, MirrorError::OutsideDomain { .. })
}

#[test]
fn families_are_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Bernoulli>();
    assert_send_sync::<Categorical>();
    assert_send_sync::<Poisson>();
    assert_send_sync::<Exponential>();
    assert_send_sync::<GaussianKnownVariance>();
    assert_send_sync::<Gaussian>();
    assert_send_sync::<MultivariateGaussian>();
    assert_send_sync::<Box<dyn ExponentialFamily>>();
}

#[test]
fn constructors_and_conversions_reject_bad_parameters() {
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let mut errors: Vec<(&str, MirrorError)> = vec![
        ("categorical k=0", Categorical::new(0).unwrap_err()),
        ("categorical k=1", Categorical::new(1).unwrap_err()),
        (
            "known variance 0",
            GaussianKnownVariance::new(0.0).unwrap_err(),
        ),
        (
            "known variance < 0",
            GaussianKnownVariance::new(-1.0).unwrap_err(),
        ),
        (
            "known variance NaN",
            GaussianKnownVariance::new(nan).unwrap_err(),
        ),
        (
            "known variance inf",
            GaussianKnownVariance::new(inf).unwrap_err(),
        ),
        ("mvn d=0", MultivariateGaussian::new(0).unwrap_err()),
        (
            "gaussian var 0",
            Gaussian::natural_from_mean_var(0.0, 0.0).unwrap_err(),
        ),
        (
            "gaussian var < 0",
            Gaussian::natural_from_mean_var(0.0, -2.0).unwrap_err(),
        ),
        (
            "gaussian var NaN",
            Gaussian::natural_from_mean_var(0.0, nan).unwrap_err(),
        ),
        (
            "gaussian mean NaN",
            Gaussian::natural_from_mean_var(nan, 1.0).unwrap_err(),
        ),
        (
            "poisson rate 0",
            Poisson::natural_from_rate(0.0).unwrap_err(),
        ),
        (
            "poisson rate < 0",
            Poisson::natural_from_rate(-1.0).unwrap_err(),
        ),
        (
            "poisson rate NaN",
            Poisson::natural_from_rate(nan).unwrap_err(),
        ),
        (
            "poisson rate inf",
            Poisson::natural_from_rate(inf).unwrap_err(),
        ),
        (
            "exponential rate 0",
            Exponential::natural_from_rate(0.0).unwrap_err(),
        ),
        (
            "exponential rate NaN",
            Exponential::natural_from_rate(nan).unwrap_err(),
        ),
        (
            "exponential rate inf",
            Exponential::natural_from_rate(inf).unwrap_err(),
        ),
    ];
    for p in [0.0, 1.0, -0.1, 1.5, nan, inf] {
        errors.push(("bernoulli p", Bernoulli::natural_from_prob(p).unwrap_err()));
    }
    let cat = Categorical::new(3).unwrap();
    for p in [
        [0.5, 0.6, -0.1],
        [1.0, 0.0, 0.0],
        [0.2, nan, 0.8],
        [0.2, 0.2, 0.2],
    ] {
        errors.push(("categorical probs", cat.natural_from_probs(&p).unwrap_err()));
    }
    let mvn = MultivariateGaussian::new(2).unwrap();
    let asym = Mat::from_fn(2, 2, |i, j| if i == j { 1.0 } else { 0.1 * (i as f64) });
    errors.push((
        "mvn asymmetric",
        mvn.natural_from_mean_cov(&[0.0, 0.0], &asym).unwrap_err(),
    ));
    let nan_cov = Mat::from_fn(2, 2, |i, j| if i == j { nan } else { 0.0 });
    errors.push((
        "mvn NaN cov",
        mvn.natural_from_mean_cov(&[0.0, 0.0], &nan_cov)
            .unwrap_err(),
    ));
    let eye = Mat::<f64>::identity(2, 2);
    errors.push((
        "mvn NaN mean",
        mvn.natural_from_mean_cov(&[nan, 0.0], &eye).unwrap_err(),
    ));
    for (what, e) in &errors {
        assert!(is_invalid(e), "{what}: {e:?}");
    }

    // Wrong sizes are dimension mismatches.
    let e = cat.natural_from_probs(&[0.5, 0.5]).unwrap_err();
    assert!(matches!(e, MirrorError::DimensionMismatch { .. }), "{e:?}");
    let e = mvn.natural_from_mean_cov(&[0.0], &eye).unwrap_err();
    assert!(matches!(e, MirrorError::DimensionMismatch { .. }), "{e:?}");
    let e = mvn
        .natural_from_mean_cov(&[0.0, 0.0], &Mat::<f64>::identity(3, 3))
        .unwrap_err();
    assert!(matches!(e, MirrorError::DimensionMismatch { .. }), "{e:?}");

    // Symmetric but not positive definite: NotPositiveDefinite with the failing pivot.
    for (cov, pivot) in [
        (Mat::from_fn(2, 2, |i, j| if i == j { 1.0 } else { 2.0 }), 1),
        (
            Mat::from_fn(2, 2, |i, j| if i == j { -1.0 } else { 0.0 }),
            0,
        ),
        (Mat::<f64>::zeros(2, 2), 0),
    ] {
        let e = mvn.natural_from_mean_cov(&[0.0, 0.0], &cov).unwrap_err();
        assert!(
            matches!(e, MirrorError::NotPositiveDefinite { pivot: p, .. } if p == pivot),
            "{e:?}"
        );
    }
}

#[test]
fn means_outside_the_mean_domain_are_rejected() {
    let nan = f64::NAN;
    let cases: Vec<(Fam, Vec<Vec<f64>>)> = vec![
        (
            Box::new(Bernoulli),
            vec![vec![0.0], vec![1.0], vec![1.2], vec![nan]],
        ),
        (
            Box::new(Categorical::new(3).unwrap()),
            vec![
                vec![0.6, 0.5],
                vec![-0.1, 0.2],
                vec![0.0, 0.5],
                vec![nan, 0.1],
            ],
        ),
        (Box::new(Poisson), vec![vec![0.0], vec![-1.0], vec![nan]]),
        (
            Box::new(Exponential),
            vec![vec![0.0], vec![-1.0], vec![nan]],
        ),
        (
            Box::new(GaussianKnownVariance::new(2.0).unwrap()),
            vec![vec![nan], vec![f64::INFINITY]],
        ),
        // μ₂ ≤ μ₁²: zero or negative variance.
        (
            Box::new(Gaussian),
            vec![vec![1.0, 1.0], vec![1.0, 0.5], vec![nan, 1.0]],
        ),
        // Second moment minus m mᵀ not positive definite.
        (
            Box::new(MultivariateGaussian::new(2).unwrap()),
            vec![vec![0.0, 0.0, 1.0, 2.0, 1.0], vec![1.0, 0.0, 1.0, 0.0, 1.0]],
        ),
    ];
    for (fam, mus) in cases {
        for mu in mus {
            let mut theta = vec![0.0; fam.dim()];
            let e = fam.natural_from_mean(&mu, &mut theta).unwrap_err();
            assert!(is_outside(&e), "{}: {mu:?} gave {e:?}", fam.name());
            assert!(!fam.in_mean_domain(&mu));
        }
        // Wrong length.
        let mut theta = vec![0.0; fam.dim()];
        let e = fam
            .natural_from_mean(&vec![0.5; fam.dim() + 1], &mut theta)
            .unwrap_err();
        assert!(matches!(e, MirrorError::DimensionMismatch { .. }), "{e:?}");
    }
}

#[test]
fn natural_parameters_outside_the_domain_are_errors_not_nan() {
    let nan = f64::NAN;
    let cases: Vec<(Fam, Vec<Vec<f64>>)> = vec![
        (Box::new(Bernoulli), vec![vec![nan], vec![f64::INFINITY]]),
        (Box::new(Categorical::new(3).unwrap()), vec![vec![0.0, nan]]),
        (Box::new(Poisson), vec![vec![nan], vec![50.0]]),
        (Box::new(Exponential), vec![vec![0.0], vec![0.5], vec![nan]]),
        (
            Box::new(GaussianKnownVariance::new(1.0).unwrap()),
            vec![vec![nan]],
        ),
        (
            Box::new(Gaussian),
            vec![vec![0.0, 0.0], vec![1.0, 0.5], vec![nan, -1.0]],
        ),
        (
            Box::new(MultivariateGaussian::new(2).unwrap()),
            // λ₀₀ > 0 (negative precision) and an off-diagonal too large for P ≻ 0.
            vec![
                vec![0.0, 0.0, 0.5, 0.0, -0.5],
                vec![0.0, 0.0, -0.5, 3.0, -0.5],
            ],
        ),
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for (fam, thetas) in cases {
        for theta in thetas {
            assert!(!fam.in_natural_domain(&theta));
            let mut mu = vec![0.0; fam.dim()];
            let mut s = vec![0.0; fam.obs_dim()];
            let errs = [
                fam.log_partition(&theta).unwrap_err(),
                fam.mean(&theta, &mut mu).unwrap_err(),
                fam.fisher(&theta).unwrap_err(),
                fam.sample(&theta, &mut rng, &mut s).unwrap_err(),
            ];
            for e in errs {
                assert!(is_outside(&e), "{}: {theta:?} gave {e:?}", fam.name());
            }
        }
    }
}

#[test]
fn log_density_is_minus_infinity_outside_the_support() {
    let cases: Vec<(Fam, Vec<f64>, Vec<Vec<f64>>)> = vec![
        (
            Box::new(Bernoulli),
            vec![0.3],
            vec![vec![0.5], vec![2.0], vec![-1.0]],
        ),
        (
            Box::new(Categorical::new(3).unwrap()),
            vec![0.1, 0.2],
            vec![vec![3.0], vec![-1.0], vec![0.5]],
        ),
        (Box::new(Poisson), vec![1.0], vec![vec![-1.0], vec![1.5]]),
        (Box::new(Exponential), vec![-1.0], vec![vec![-0.1]]),
    ];
    for (fam, theta, ss) in cases {
        for s in ss {
            assert!(!fam.in_support(&s));
            assert_eq!(fam.log_density(&theta, &s).unwrap(), f64::NEG_INFINITY);
        }
    }
}

#[test]
fn extreme_natural_parameters_stay_finite() {
    let b = Bernoulli;
    for th in [-800.0, 800.0] {
        let a = b.log_partition(&[th]).unwrap();
        assert!(a.is_finite() && a >= 0.0);
        let mut mu = [0.0];
        b.mean(&[th], &mut mu).unwrap();
        assert!(mu[0].is_finite());
        assert!(b.fisher(&[th]).unwrap()[(0, 0)].is_finite());
        assert!(b.log_density(&[th], &[1.0]).unwrap().is_finite() || th < 0.0);
    }
    let c = Categorical::new(4).unwrap();
    let th = [1000.0, -1000.0, 999.0];
    assert!((c.log_partition(&th).unwrap() - (1000.0 + (1.0 + (-1f64).exp()).ln())).abs() < 1e-9);
    let p = c.probabilities(&th).unwrap();
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
}

proptest! {
    #![proptest_config(pconfig(11))]

    /// Bernoulli: A by summation over {0, 1}, density against statrs.
    #[test]
    fn bernoulli_against_summation_and_statrs(theta in -30.0f64..30.0) {
        let b = Bernoulli;
        let naive = (1.0 + theta.exp()).ln();
        prop_assert!((b.log_partition(&[theta]).unwrap() - naive).abs() < 1e-12 * naive.max(1.0));
        let p = Bernoulli::prob_from_natural(theta).unwrap();
        // statrs evaluates ln(1 - p) from p, which loses digits for large |θ|.
        if theta.abs() < 8.0 {
            let d = statrs::distribution::Bernoulli::new(p).unwrap();
            for s in [0u64, 1] {
                let ld = b.log_density(&[theta], &[s as f64]).unwrap();
                prop_assert!((ld - d.ln_pmf(s)).abs() < 1e-10);
            }
            prop_assert!((Bernoulli::natural_from_prob(p).unwrap() - theta).abs() < 1e-9);
        }
    }

    /// Categorical: A by the naive sum, density by hand, probabilities round trip.
    #[test]
    fn categorical_against_naive_sum(theta in proptest::collection::vec(-5.0f64..5.0, 1..6)) {
        let k = theta.len() + 1;
        let c = Categorical::new(k).unwrap();
        let z: f64 = 1.0 + theta.iter().map(|t| t.exp()).sum::<f64>();
        prop_assert!((c.log_partition(&theta).unwrap() - z.ln()).abs() < 1e-12);
        for s in 0..k {
            let num = if s < k - 1 { theta[s].exp() } else { 1.0 };
            let ld = c.log_density(&theta, &[s as f64]).unwrap();
            prop_assert!((ld - (num / z).ln()).abs() < 1e-10);
        }
        let p = c.probabilities(&theta).unwrap();
        let back = c.natural_from_probs(&p).unwrap();
        for (a, b) in back.iter().zip(&theta) {
            prop_assert!((a - b).abs() < 1e-9);
        }
    }

    /// Poisson: A by summing e^{sθ}/s!, density against statrs.
    #[test]
    fn poisson_against_summation_and_statrs(theta in -3.0f64..4.0) {
        let fam = Poisson;
        let mut terms = Vec::new();
        for s in 0..400u64 {
            terms.push(s as f64 * theta - statrs::function::factorial::ln_factorial(s));
        }
        let a = mirror::special::log_sum_exp(&terms);
        prop_assert!((fam.log_partition(&[theta]).unwrap() - a).abs() < 1e-10 * a.abs().max(1.0));
        let d = statrs::distribution::Poisson::new(theta.exp()).unwrap();
        for s in [0u64, 1, 3, 17] {
            let ld = fam.log_density(&[theta], &[s as f64]).unwrap();
            prop_assert!((ld - d.ln_pmf(s)).abs() < 1e-9);
        }
    }

    /// Exponential: A by quadrature of e^{θs} on [0, ∞), density against statrs.
    #[test]
    fn exponential_against_quadrature_and_statrs(theta in -4.0f64..-0.3) {
        let fam = Exponential;
        let a = log_partition_by_quadrature(&fam, &[theta], 0.0, 60.0 / -theta);
        prop_assert!((fam.log_partition(&[theta]).unwrap() - a).abs() < 1e-8);
        let d = statrs::distribution::Exp::new(-theta).unwrap();
        for s in [0.0, 0.3, 2.5] {
            prop_assert!((fam.log_density(&[theta], &[s]).unwrap() - d.ln_pdf(s)).abs() < 1e-10);
        }
    }

    /// Known-variance Gaussian: A by quadrature, density against statrs.
    #[test]
    fn known_variance_against_quadrature_and_statrs(sigma2 in 0.2f64..4.0, theta in -2.0f64..2.0) {
        let fam = GaussianKnownVariance::new(sigma2).unwrap();
        let m = sigma2 * theta;
        let sd = sigma2.sqrt();
        let a = log_partition_by_quadrature(&fam, &[theta], m - 14.0 * sd, m + 14.0 * sd);
        prop_assert!((fam.log_partition(&[theta]).unwrap() - a).abs() < 1e-8);
        let d = statrs::distribution::Normal::new(m, sd).unwrap();
        for s in [-1.0, 0.0, 2.0] {
            prop_assert!((fam.log_density(&[theta], &[s]).unwrap() - d.ln_pdf(s)).abs() < 1e-10);
        }
    }

    /// Gaussian (mean and variance): A by quadrature, density against statrs,
    /// conversions round trip.
    #[test]
    fn gaussian_against_quadrature_and_statrs(m in -3.0f64..3.0, v in 0.1f64..4.0) {
        let fam = Gaussian;
        let theta = Gaussian::natural_from_mean_var(m, v).unwrap();
        let sd = v.sqrt();
        let a = log_partition_by_quadrature(&fam, &theta, m - 14.0 * sd, m + 14.0 * sd);
        prop_assert!((fam.log_partition(&theta).unwrap() - a).abs() < 1e-8);
        let d = statrs::distribution::Normal::new(m, sd).unwrap();
        for s in [-1.0, 0.0, 2.0] {
            prop_assert!((fam.log_density(&theta, &[s]).unwrap() - d.ln_pdf(s)).abs() < 1e-10);
        }
        let (m2, v2) = Gaussian::mean_var_from_natural(&theta).unwrap();
        prop_assert!((m2 - m).abs() < 1e-12 && (v2 - v).abs() < 1e-12);
    }

    /// Every closed-form ∇A* agrees with the generic damped-Newton inversion.
    #[test]
    fn closed_form_inverses_match_newton(
        x in -2.0f64..2.0,
        y in -1.5f64..1.5,
        v in 0.3f64..3.0,
        c in -0.6f64..0.6,
    ) {
        let mvn = MultivariateGaussian::new(2).unwrap();
        let cov = Mat::from_fn(2, 2, |i, j| if i == j { v + i as f64 } else { c });
        let cases: Vec<(Box<dyn ExponentialFamily>, Vec<f64>)> = vec![
            (Box::new(Bernoulli), vec![x]),
            (Box::new(Categorical::new(3).unwrap()), vec![x, y]),
            (Box::new(Poisson), vec![x]),
            (Box::new(Exponential), vec![-v]),
            (Box::new(GaussianKnownVariance::new(v).unwrap()), vec![x]),
            (Box::new(Gaussian), Gaussian::natural_from_mean_var(x, v).unwrap().to_vec()),
            (Box::new(mvn.clone()), mvn.natural_from_mean_cov(&[x, y], &cov).unwrap()),
        ];
        for (fam, theta) in cases {
            let p = fam.dim();
            let mut mu = vec![0.0; p];
            fam.mean(&theta, &mut mu).unwrap();
            let (mut closed, mut newton) = (vec![0.0; p], vec![0.0; p]);
            fam.natural_from_mean(&mu, &mut closed).unwrap();
            match newton_natural_from_mean(&*fam, &mu, &mut newton) {
                Ok(()) => {}
                // The generic solver's stopping rule is an absolute 1e-12 on ∇A, below
                // the round-off floor of a 5-dimensional MVN mean of size ~10: accept its
                // final iterate once the residual is at that floor.
                Err(MirrorError::NoConvergence { residual, .. }) if residual < 1e-9 => {}
                Err(e) => panic!("{} at {:?}: {:?}", fam.name(), theta, e),
            }
            for j in 0..p {
                let tol = 1e-7 * (1.0 + theta[j].abs());
                prop_assert!((closed[j] - theta[j]).abs() < tol, "{} closed {:?} vs {:?}", fam.name(), closed, theta);
                prop_assert!((newton[j] - theta[j]).abs() < tol, "{} newton {:?} vs {:?}", fam.name(), newton, theta);
            }
        }
    }

    /// Multivariate Gaussian: conversions round trip, packing matches T, the density
    /// against the textbook formula, A at d = 1 against the univariate family.
    #[test]
    fn multivariate_gaussian_against_hand_formulas(
        m0 in -2.0f64..2.0, m1 in -2.0f64..2.0,
        v0 in 0.3f64..3.0, v1 in 0.3f64..3.0, r in -0.8f64..0.8,
        s0 in -3.0f64..3.0, s1 in -3.0f64..3.0,
    ) {
        let fam = MultivariateGaussian::new(2).unwrap();
        let c01 = r * (v0 * v1).sqrt();
        let cov = Mat::from_fn(2, 2, |i, j| match (i, j) { (0, 0) => v0, (1, 1) => v1, _ => c01 });
        let theta = fam.natural_from_mean_cov(&[m0, m1], &cov).unwrap();
        prop_assert_eq!(theta.len(), 5);
        let (m, c) = fam.mean_cov_from_natural(&theta).unwrap();
        prop_assert!((m[0] - m0).abs() < 1e-10 && (m[1] - m1).abs() < 1e-10);
        for i in 0..2 { for j in 0..2 {
            prop_assert!((c[(i, j)] - cov[(i, j)]).abs() < 1e-10);
        }}
        // Packing: (0,0), (0,1), (1,1) after the two linear coordinates; λ₀₁ = −P₀₁.
        prop_assert_eq!(fam.packed_index(0, 0), 2);
        prop_assert_eq!(fam.packed_index(1, 0), 3);
        prop_assert_eq!(fam.packed_index(1, 1), 4);
        let mut t = vec![0.0; 5];
        fam.sufficient_stats(&[s0, s1], &mut t);
        prop_assert_eq!(t, vec![s0, s1, s0 * s0, s0 * s1, s1 * s1]);
        let det = v0 * v1 - c01 * c01;
        let prec01 = -c01 / det;
        prop_assert!((theta[3] + prec01).abs() < 1e-9);
        prop_assert!((theta[2] + 0.5 * v1 / det).abs() < 1e-9);
        // Density: −log 2π − ½ log det Σ − ½ (s−m)ᵀ Σ⁻¹ (s−m).
        let (d0, d1) = (s0 - m0, s1 - m1);
        let quad = (v1 * d0 * d0 - 2.0 * c01 * d0 * d1 + v0 * d1 * d1) / det;
        let want = -(2.0 * std::f64::consts::PI).ln() - 0.5 * det.ln() - 0.5 * quad;
        prop_assert!((fam.log_density(&theta, &[s0, s1]).unwrap() - want).abs() < 1e-9);

        let one = MultivariateGaussian::new(1).unwrap();
        let th1 = Gaussian::natural_from_mean_var(m0, v0).unwrap();
        prop_assert!((one.log_partition(&th1).unwrap() - Gaussian.log_partition(&th1).unwrap()).abs() < 1e-12);
        let f1 = one.fisher(&th1).unwrap();
        let g1 = Gaussian.fisher(&th1).unwrap();
        for i in 0..2 { for j in 0..2 {
            prop_assert!((f1[(i, j)] - g1[(i, j)]).abs() < 1e-9 * (1.0 + g1[(i, j)].abs()));
        }}
    }
}

#[test]
fn multivariate_gaussian_packing_order_for_d3() {
    let fam = MultivariateGaussian::new(3).unwrap();
    assert_eq!(fam.dim(), 9);
    let s = [2.0, 3.0, 5.0];
    let mut t = vec![0.0; 9];
    fam.sufficient_stats(&s, &mut t);
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(t[fam.packed_index(i, j)], s[i] * s[j]);
        }
    }
    assert_eq!(
        (0..3)
            .flat_map(|i| (i..3).map(move |j| (i, j)))
            .map(|(i, j)| fam.packed_index(i, j))
            .collect::<Vec<_>>(),
        (3..9).collect::<Vec<_>>()
    );
}
