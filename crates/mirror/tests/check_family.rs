//! The `check_family` harness: every built-in family passes it at random parameters
//! (proptest, fixed seeds), deliberately broken families fail exactly the checks that
//! should catch them, and bad configurations or parameters are typed errors.

use faer::Mat;
use mirror::{
    check_family, check_family_sweep, Bernoulli, Categorical, CheckConfig, CheckKind, CheckStatus,
    Exponential, ExponentialFamily, FamilyReport, Gaussian, GaussianKnownVariance, MirrorError,
    MultivariateGaussian, Poisson, Result, SweepConfig, SweepOrigin,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use rand::RngCore;

fn config() -> CheckConfig {
    CheckConfig {
        mc_samples: 2000,
        ..CheckConfig::default()
    }
}

fn proptest_config(seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases: 16,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn status(r: &FamilyReport, k: CheckKind) -> CheckStatus {
    r.result(k).expect("every check is reported").status
}

proptest! {
    #![proptest_config(proptest_config(1))]

    #[test]
    fn bernoulli_passes(theta in -4.0f64..4.0, seed in 0u64..1000) {
        let r = check_family(&Bernoulli::new(), &[theta], &CheckConfig { seed, ..config() }).unwrap();
        prop_assert!(r.passed(), "{}", r);
        prop_assert_eq!(r.checks.len(), 9);
    }

    #[test]
    fn categorical_passes(theta in proptest::collection::vec(-3.0f64..3.0, 1..5)) {
        let fam = Categorical::new(theta.len() + 1).unwrap();
        let r = check_family(&fam, &theta, &config()).unwrap();
        prop_assert!(r.passed(), "{}", r);
    }

    #[test]
    fn poisson_passes(theta in -2.0f64..4.0) {
        let r = check_family(&Poisson::new(), &[theta], &config()).unwrap();
        prop_assert!(r.passed(), "{}", r);
        // A lattice family is normalised by summation, to round-off.
        prop_assert!(r.result(CheckKind::Normalisation).unwrap().error < 1e-12, "{}", r);
    }

    #[test]
    fn exponential_passes(theta in -5.0f64..-0.2) {
        let r = check_family(&Exponential::new(), &[theta], &config()).unwrap();
        prop_assert!(r.passed(), "{}", r);
    }

    #[test]
    fn gaussian_known_variance_passes(sigma2 in 0.1f64..5.0, theta in -3.0f64..3.0) {
        let fam = GaussianKnownVariance::new(sigma2).unwrap();
        let r = check_family(&fam, &[theta], &config()).unwrap();
        prop_assert!(r.passed(), "{}", r);
    }

    #[test]
    fn gaussian_passes(mean in -3.0f64..3.0, var in 0.2f64..4.0) {
        let theta = Gaussian::natural_from_mean_var(mean, var).unwrap();
        let r = check_family(&Gaussian::new(), &theta, &config()).unwrap();
        prop_assert!(r.passed(), "{}", r);
    }

    #[test]
    fn multivariate_gaussian_passes(
        (d, mean, b) in (1usize..4).prop_flat_map(|d| (
            Just(d),
            proptest::collection::vec(-2.0f64..2.0, d),
            proptest::collection::vec(-1.0f64..1.0, d * d),
        ))
    ) {
        let fam = MultivariateGaussian::new(d).unwrap();
        // Σ = B Bᵀ + 0.3 I is positive definite.
        let cov = Mat::from_fn(d, d, |i, j| {
            (0..d).map(|k| b[i * d + k] * b[j * d + k]).sum::<f64>() + if i == j { 0.3 } else { 0.0 }
        });
        let theta = fam.natural_from_mean_cov(&mean, &cov).unwrap();
        let r = check_family(&fam, &theta, &config()).unwrap();
        prop_assert!(r.passed(), "{}", r);
    }
}

/// What is wrong with a [`Broken`] Poisson family.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// ∇A = 1.05 e^θ (A and the rest correct).
    Mean,
    /// A = 2e^θ with ∇A, ∇²A and ∇A* consistent with it, while the sampler and h stay
    /// Poisson's: every analytic identity holds, only the Monte-Carlo checks can see it.
    Partition,
    /// h = 1 instead of 1/s!.
    BaseMeasure,
    /// ∇²A = 2e^θ.
    Fisher,
    /// ∇A*(μ) = log μ + 0.01.
    Inverse,
}

/// A Poisson family with one deliberate fault.
struct Broken(Fault);

impl ExponentialFamily for Broken {
    fn name(&self) -> String {
        format!("Poisson with a wrong {:?}", self.0)
    }
    fn dim(&self) -> usize {
        1
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        Poisson.in_support(s)
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        Poisson.in_natural_domain(theta)
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        Poisson.in_mean_domain(mu)
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = s[0];
    }
    fn log_base_measure(&self, s: &[f64]) -> f64 {
        if self.0 == Fault::BaseMeasure {
            0.0
        } else {
            Poisson.log_base_measure(s)
        }
    }
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        let a = Poisson.log_partition(theta)?;
        Ok(if self.0 == Fault::Partition {
            2.0 * a
        } else {
            a
        })
    }
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        Poisson.mean(theta, mu)?;
        match self.0 {
            Fault::Mean => mu[0] *= 1.05,
            Fault::Partition => mu[0] *= 2.0,
            _ => {}
        }
        Ok(())
    }
    fn fisher(&self, theta: &[f64]) -> Result<Mat<f64>> {
        let mut f = Poisson.fisher(theta)?;
        if matches!(self.0, Fault::Fisher | Fault::Partition) {
            f[(0, 0)] *= 2.0;
        }
        Ok(f)
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()> {
        Poisson.sample(theta, rng, s)
    }
    fn natural_from_mean(&self, mu: &[f64], theta: &mut [f64]) -> Result<()> {
        match self.0 {
            Fault::Partition => Poisson.natural_from_mean(&[mu[0] / 2.0], theta),
            Fault::Inverse => {
                Poisson.natural_from_mean(mu, theta)?;
                theta[0] += 0.01;
                Ok(())
            }
            // A wrong mean map still inverts with the true inverse: the fault shows there.
            _ => Poisson.natural_from_mean(mu, theta),
        }
    }
}

#[test]
fn correct_poisson_passes_where_broken_ones_are_checked() {
    let r = check_family(&Poisson, &[1.0], &config()).unwrap();
    assert!(r.passed(), "{r}");
    assert!(r.to_string().contains("PASSED"));
}

#[test]
fn wrong_mean_fails_gradient_check() {
    let r = check_family(&Broken(Fault::Mean), &[1.0], &config()).unwrap();
    assert!(!r.passed(), "{r}");
    assert_eq!(status(&r, CheckKind::GradientFd), CheckStatus::Failed);
    assert_eq!(status(&r, CheckKind::MeanInverse), CheckStatus::Failed);
    assert!(r.to_string().contains("FAIL"));
    // The failure names the entry: ∇A = 1.05 e found, e = dA/dθ expected.
    let w = r.result(CheckKind::GradientFd).unwrap().worst.unwrap();
    let e = 1f64.exp();
    assert_eq!((w.row, w.col, w.found_by), (0, None, "mean"), "{r}");
    assert!(
        (w.found - 1.05 * e).abs() < 1e-12 && (w.expected - e).abs() < 1e-7,
        "{w:?}"
    );
    assert!(r.to_string().contains(&w.to_string()), "{r}");
}

#[test]
fn wrong_partition_fails_only_the_monte_carlo_checks() {
    let r = check_family(&Broken(Fault::Partition), &[1.0], &config()).unwrap();
    assert!(!r.passed(), "{r}");
    // Internally consistent: the analytic checks cannot see it ...
    for k in [
        CheckKind::GradientFd,
        CheckKind::FisherFd,
        CheckKind::MeanInverse,
        CheckKind::Bregman,
        CheckKind::KlDual,
    ] {
        assert_eq!(status(&r, k), CheckStatus::Passed, "{k:?}\n{r}");
    }
    // ... the sampler and the density do.
    for k in [
        CheckKind::MeanMonteCarlo,
        CheckKind::FisherMonteCarlo,
        CheckKind::Normalisation,
    ] {
        assert_eq!(status(&r, k), CheckStatus::Failed, "{k:?}\n{r}");
    }
}

#[test]
fn wrong_base_measure_fails_normalisation_only() {
    let r = check_family(&Broken(Fault::BaseMeasure), &[1.0], &config()).unwrap();
    assert_eq!(r.failures().len(), 1, "{r}");
    assert_eq!(status(&r, CheckKind::Normalisation), CheckStatus::Failed);
}

#[test]
fn wrong_fisher_fails_both_fisher_checks() {
    let r = check_family(&Broken(Fault::Fisher), &[1.0], &config()).unwrap();
    // ∇²A = 2e found where the finite differences of ∇A = e^θ give e.
    let w = r.result(CheckKind::FisherFd).unwrap().worst.unwrap();
    let e = 1f64.exp();
    assert_eq!(w.index(), (0, 0));
    assert!(
        (w.found - 2.0 * e).abs() < 1e-12 && (w.expected - e).abs() < 1e-7,
        "{w:?}"
    );
    assert_eq!(status(&r, CheckKind::FisherFd), CheckStatus::Failed, "{r}");
    assert_eq!(
        status(&r, CheckKind::FisherMonteCarlo),
        CheckStatus::Failed,
        "{r}"
    );
    assert_eq!(
        status(&r, CheckKind::GradientFd),
        CheckStatus::Passed,
        "{r}"
    );
}

#[test]
fn wrong_inverse_fails_inverse_checks() {
    let r = check_family(&Broken(Fault::Inverse), &[1.0], &config()).unwrap();
    let w = r.result(CheckKind::MeanInverse).unwrap().worst.unwrap();
    assert_eq!((w.row, w.expected), (0, 1.0), "{w:?}");
    assert!((w.found - 1.01).abs() < 1e-12, "{w:?}");
    assert_eq!(
        status(&r, CheckKind::MeanInverse),
        CheckStatus::Failed,
        "{r}"
    );
    assert_eq!(status(&r, CheckKind::KlDual), CheckStatus::Failed, "{r}");
    assert_eq!(
        status(&r, CheckKind::GradientFd),
        CheckStatus::Passed,
        "{r}"
    );
}

/// An exponential distribution whose density is 1.5 times too large: only the
/// (importance-sampling) normalisation check of a continuous family sees it.
struct LoudExponential;

impl ExponentialFamily for LoudExponential {
    fn name(&self) -> String {
        "Exponential with h = 1.5".into()
    }
    fn dim(&self) -> usize {
        1
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        Exponential.in_support(s)
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        Exponential.in_natural_domain(theta)
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        Exponential.in_mean_domain(mu)
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = s[0];
    }
    fn log_base_measure(&self, _s: &[f64]) -> f64 {
        1.5f64.ln()
    }
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        Exponential.log_partition(theta)
    }
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        Exponential.mean(theta, mu)
    }
    fn fisher(&self, theta: &[f64]) -> Result<Mat<f64>> {
        Exponential.fisher(theta)
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()> {
        Exponential.sample(theta, rng, s)
    }
    // The default Newton start θ = 0 is outside this natural domain.
    fn newton_start(&self, theta: &mut [f64]) {
        theta[0] = -1.0;
    }
}

#[test]
fn continuous_density_with_wrong_base_measure_fails() {
    let r = check_family(&LoudExponential, &[-2.0], &config()).unwrap();
    assert_eq!(r.failures().len(), 1, "{r}");
    assert_eq!(status(&r, CheckKind::Normalisation), CheckStatus::Failed);
    // The Newton default of natural_from_mean (not overridden here) passes.
    assert_eq!(status(&r, CheckKind::MeanInverse), CheckStatus::Passed);
}

#[test]
fn same_seed_same_report() {
    let fam = MultivariateGaussian::new(2).unwrap();
    let theta = fam
        .natural_from_mean_cov(
            &[0.5, -1.0],
            &Mat::from_fn(2, 2, |i, j| if i == j { 1.0 } else { 0.4 }),
        )
        .unwrap();
    let a = check_family(&fam, &theta, &config()).unwrap();
    let b = check_family(&fam, &theta, &config()).unwrap();
    assert_eq!(a, b);
    assert!(a.passed(), "{a}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let p = Poisson::new();
    let cases: Vec<(CheckConfig, Vec<f64>, &str)> = vec![
        (
            CheckConfig {
                mc_samples: 10,
                ..config()
            },
            vec![0.0],
            "invalid",
        ),
        (
            CheckConfig {
                fd_step: 0.0,
                ..config()
            },
            vec![0.0],
            "invalid",
        ),
        (
            CheckConfig {
                fd_tol: f64::NAN,
                ..config()
            },
            vec![0.0],
            "invalid",
        ),
        (
            CheckConfig {
                mc_sigmas: -1.0,
                ..config()
            },
            vec![0.0],
            "invalid",
        ),
        (config(), vec![0.0, 1.0], "dimension"),
        (config(), vec![f64::NAN], "domain"),
        (
            CheckConfig {
                theta2: Some(vec![f64::INFINITY]),
                ..config()
            },
            vec![0.0],
            "domain",
        ),
        (
            CheckConfig {
                theta2: Some(vec![]),
                ..config()
            },
            vec![0.0],
            "dimension",
        ),
    ];
    for (cfg, theta, want) in cases {
        let err = check_family(&p, &theta, &cfg).unwrap_err();
        let ok = match want {
            "invalid" => matches!(err, MirrorError::InvalidParameter { .. }),
            "dimension" => matches!(err, MirrorError::DimensionMismatch { .. }),
            _ => matches!(err, MirrorError::OutsideDomain { .. }),
        };
        assert!(ok, "{want}: got {err:?}");
    }
    let err = check_family(&Exponential, &[0.5], &config()).unwrap_err();
    assert!(matches!(err, MirrorError::OutsideDomain { .. }));
}

#[test]
fn explicit_theta2_is_used() {
    let cfg = CheckConfig {
        theta2: Some(vec![-1.0]),
        ..config()
    };
    let r = check_family(&Exponential, &[-2.0], &cfg).unwrap();
    assert_eq!(r.theta2, vec![-1.0]);
    assert!(r.passed(), "{r}");
}

#[test]
fn works_through_trait_objects_at_fixed_parameters() {
    let mvn = MultivariateGaussian::new(2).unwrap();
    let mvn_theta = mvn
        .natural_from_mean_cov(
            &[1.0, -0.5],
            &Mat::from_fn(2, 2, |i, j| if i == j { 0.5 } else { -0.2 }),
        )
        .unwrap();
    let cases: Vec<(Box<dyn ExponentialFamily>, Vec<f64>)> = vec![
        (Box::new(Bernoulli), vec![2.0]),
        (Box::new(Categorical::new(4).unwrap()), vec![0.5, -1.0, 2.0]),
        (Box::new(Poisson), vec![3.0]),
        (Box::new(Exponential), vec![-0.05]),
        (
            Box::new(GaussianKnownVariance::new(0.01).unwrap()),
            vec![50.0],
        ),
        (Box::new(Gaussian), vec![10.0, -5.0]),
        (Box::new(mvn), mvn_theta),
    ];
    for (fam, theta) in cases {
        let r = check_family(fam.as_ref(), &theta, &config()).unwrap();
        assert!(r.passed(), "{r}");
        let table = r.to_string();
        for c in &r.checks {
            assert!(table.contains(c.kind.label()), "{table}");
            assert!(c.error.is_finite() && c.error <= c.tolerance, "{c:?}");
        }
    }
}

/// A multivariate Gaussian whose Fisher information drops the mean-dependent cross block
/// $\operatorname{Cov}(s_a, s_is_j) = m_i\Sigma_{aj} + m_j\Sigma_{ai}$ (Isserlis' theorem
/// applied as if the mean were zero): the finite-difference and Monte-Carlo Fisher
/// checks must both catch it.
struct ZeroMeanIsserlis(MultivariateGaussian);

impl ExponentialFamily for ZeroMeanIsserlis {
    fn name(&self) -> String {
        "MVN with zero-mean Isserlis Fisher".into()
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn obs_dim(&self) -> usize {
        self.0.obs_dim()
    }
    fn in_support(&self, s: &[f64]) -> bool {
        self.0.in_support(s)
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        self.0.in_natural_domain(theta)
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        self.0.in_mean_domain(mu)
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        self.0.sufficient_stats(s, t)
    }
    fn log_base_measure(&self, s: &[f64]) -> f64 {
        self.0.log_base_measure(s)
    }
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        self.0.log_partition(theta)
    }
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        self.0.mean(theta, mu)
    }
    fn fisher(&self, theta: &[f64]) -> Result<Mat<f64>> {
        let mut f = self.0.fisher(theta)?;
        let d = self.0.obs_dimension();
        for a in 0..d {
            for k in d..self.dim() {
                f[(a, k)] = 0.0;
                f[(k, a)] = 0.0;
            }
        }
        Ok(f)
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()> {
        self.0.sample(theta, rng, s)
    }
    fn natural_from_mean(&self, mu: &[f64], theta: &mut [f64]) -> Result<()> {
        self.0.natural_from_mean(mu, theta)
    }
}

#[test]
fn mvn_fisher_without_mean_terms_fails() {
    let mvn = MultivariateGaussian::new(2).unwrap();
    let cov = Mat::from_fn(2, 2, |i, j| if i == j { 1.0 } else { 0.3 });
    let theta = mvn.natural_from_mean_cov(&[1.5, -1.0], &cov).unwrap();
    let r = check_family(&ZeroMeanIsserlis(mvn), &theta, &config()).unwrap();
    assert_eq!(status(&r, CheckKind::FisherFd), CheckStatus::Failed, "{r}");
    // The worst entry lies in the dropped cross block (one index a mean coordinate, the
    // other a second-moment one), where the family says 0.
    for kind in [CheckKind::FisherFd, CheckKind::FisherMonteCarlo] {
        let w = r.result(kind).unwrap().worst.unwrap();
        let (i, j) = w.index();
        assert!((i < 2) != (j < 2), "{kind:?}: {w:?}\n{r}");
        assert_eq!(w.found, 0.0, "{kind:?}: {w:?}");
        assert!(w.expected.abs() > 0.1, "{kind:?}: {w:?}");
    }
    assert_eq!(
        status(&r, CheckKind::FisherMonteCarlo),
        CheckStatus::Failed,
        "{r}"
    );
    assert_eq!(
        status(&r, CheckKind::GradientFd),
        CheckStatus::Passed,
        "{r}"
    );
}

fn sweep_config() -> SweepConfig {
    SweepConfig {
        check: config(),
        ..SweepConfig::default()
    }
}

#[test]
fn sweep_of_built_in_families_passes_with_points_near_the_boundary() {
    // Exponential: θ < 0, so one boundary point per given θ, at 0.1 of the way left.
    let r = check_family_sweep(&Exponential, &[[-2.0], [-0.5]], &sweep_config()).unwrap();
    assert!(r.passed(), "{r}");
    assert_eq!(r.reports.len(), 4, "{r}");
    for (k, (base, want)) in [(0, -0.2), (1, -0.05)].into_iter().enumerate() {
        let o = r.origins[2 + k];
        let SweepOrigin::NearBoundary {
            base: b,
            coordinate,
            direction,
            boundary_distance,
            fraction,
        } = o
        else {
            panic!("point {} should be near the boundary: {o:?}", 2 + k);
        };
        assert_eq!((b, coordinate, direction, fraction), (base, 0, 1.0, 0.1));
        assert!((boundary_distance - [2.0, 0.5][base]).abs() < 1e-9, "{o:?}");
        assert!((r.reports[2 + k].theta[0] - want).abs() < 1e-9, "{r}");
    }
    // Bernoulli and Categorical have no boundary: only the given points.
    let r = check_family_sweep(&Bernoulli, &[vec![0.3]], &sweep_config()).unwrap();
    assert_eq!(r.reports.len(), 1);
    // Gaussian (θ₂ = −1/(2σ²) < 0) and a 2-D MVN (precision positive definite).
    let g = check_family_sweep(&Gaussian, &[[1.0, -0.5]], &sweep_config()).unwrap();
    assert!(g.passed() && g.reports.len() == 2, "{g}");
    assert!((g.reports[1].theta[1] + 0.05).abs() < 1e-9, "{g}");
    let mvn = MultivariateGaussian::new(2).unwrap();
    let cov = Mat::from_fn(2, 2, |i, j| if i == j { 0.5 } else { -0.2 });
    let theta = mvn.natural_from_mean_cov(&[1.0, -0.5], &cov).unwrap();
    let r = check_family_sweep(&mvn, &[theta], &sweep_config()).unwrap();
    assert!(r.passed() && r.reports.len() > 3, "{r}");
    for (k, rep) in r.reports.iter().enumerate().skip(1) {
        assert!(mvn.in_natural_domain(&rep.theta), "point {k}: {rep}");
    }
    // Poisson's domain ends where its sampler does (λ ≤ 1.8e19); there the lattice is
    // too wide to sum, which the report says (skipped, not passed silently).
    let r = check_family_sweep(&Poisson, &[[1.0]], &sweep_config()).unwrap();
    assert!(r.passed(), "{r}");
    let far = r.reports[1].result(CheckKind::Normalisation).unwrap();
    assert_eq!(far.status, CheckStatus::Skipped, "{r}");
    assert!(far.detail.contains("not summed"), "{far}");
    assert!(r.to_string().contains("1 skipped"), "{r}");
}

#[test]
fn sweep_is_deterministic_and_names_its_worst_check() {
    let cfg = sweep_config();
    let a = check_family_sweep(&Exponential, &[[-1.0]], &cfg).unwrap();
    let b = check_family_sweep(&Exponential, &[[-1.0]], &cfg).unwrap();
    assert_eq!(a, b);
    // Points get different seeds: their Monte-Carlo errors differ.
    let kl = |k: usize| a.reports[k].result(CheckKind::KlMonteCarlo).unwrap().error;
    assert_ne!(kl(0), kl(1));
    let (k, worst) = a.worst().unwrap();
    let ratio = |c: &mirror::CheckResult| c.error / c.tolerance;
    for rep in &a.reports {
        for c in &rep.checks {
            assert!(ratio(c) <= ratio(worst), "{c:?} is worse than {worst:?}");
        }
    }
    let text = a.to_string();
    assert!(
        text.contains("worst check") && text.contains(worst.kind.label()),
        "{text}"
    );
    assert!(text.contains(&format!("at [{k}]")), "{text}");
}

/// An exponential family whose mean is 1 % off only for θ > −0.5 (rates below 1/2), as a
/// series expansion valid for large rates would be: a check at θ = −2 alone passes, the
/// sweep's point near the boundary catches it.
struct LowRateBug;

impl ExponentialFamily for LowRateBug {
    fn name(&self) -> String {
        "Exponential with a low-rate bug".into()
    }
    fn dim(&self) -> usize {
        1
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        Exponential.in_support(s)
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        Exponential.in_natural_domain(theta)
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        Exponential.in_mean_domain(mu)
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = s[0];
    }
    fn log_base_measure(&self, _s: &[f64]) -> f64 {
        0.0
    }
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        Exponential.log_partition(theta)
    }
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        Exponential.mean(theta, mu)?;
        if theta[0] > -0.5 {
            mu[0] *= 1.01;
        }
        Ok(())
    }
    fn fisher(&self, theta: &[f64]) -> Result<Mat<f64>> {
        Exponential.fisher(theta)
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()> {
        Exponential.sample(theta, rng, s)
    }
    fn natural_from_mean(&self, mu: &[f64], theta: &mut [f64]) -> Result<()> {
        Exponential.natural_from_mean(mu, theta)
    }
}

#[test]
fn sweep_catches_a_fault_near_the_boundary() {
    let single = check_family(&LowRateBug, &[-2.0], &config()).unwrap();
    assert!(single.passed(), "{single}");
    let r = check_family_sweep(&LowRateBug, &[[-2.0]], &sweep_config()).unwrap();
    assert!(!r.passed(), "{r}");
    let (k, worst) = r.worst().unwrap();
    assert_eq!(k, 1, "{r}");
    assert!(
        matches!(worst.kind, CheckKind::GradientFd | CheckKind::MeanInverse),
        "{r}"
    );
    assert!(r.failures().iter().all(|(k, _)| *k == 1), "{r}");
    assert!(r.to_string().contains("FAILED"), "{r}");
}

#[test]
fn sweep_rejects_bad_settings_with_typed_errors() {
    for fractions in [vec![0.0], vec![1.0], vec![f64::NAN], vec![0.1, -0.2]] {
        let cfg = SweepConfig {
            boundary_fractions: fractions.clone(),
            ..sweep_config()
        };
        let e = check_family_sweep(&Exponential, &[[-1.0]], &cfg).unwrap_err();
        assert!(
            matches!(e, MirrorError::InvalidParameter { .. }),
            "{fractions:?}: {e:?}"
        );
    }
    let cfg = SweepConfig {
        max_boundary_distance: f64::INFINITY,
        ..sweep_config()
    };
    assert!(matches!(
        check_family_sweep(&Exponential, &[[-1.0]], &cfg).unwrap_err(),
        MirrorError::InvalidParameter { .. }
    ));
    let e = check_family_sweep(&Exponential, &[[-1.0], [1.0]], &sweep_config()).unwrap_err();
    assert!(matches!(e, MirrorError::OutsideDomain { .. }), "{e:?}");
    let e = check_family_sweep(&Exponential, &[vec![-1.0, 2.0]], &sweep_config()).unwrap_err();
    assert!(matches!(e, MirrorError::DimensionMismatch { .. }), "{e:?}");
    // No parameters: an empty, passing sweep with no worst check.
    let r = check_family_sweep(&Exponential, &[] as &[[f64; 1]], &sweep_config()).unwrap();
    assert!(r.passed() && r.worst().is_none() && r.reports.is_empty());
}
