//! Acceptance tests of `check_family` on a family it does not ship, written as a user would
//! write it: the two-parameter Gamma family with unknown shape and rate,
//! $$ p(s;\theta) = \exp\big(\langle T(s), \theta\rangle - A(\theta)\big),\quad s > 0,\qquad
//!    T(s) = (s, \log s),\quad \theta = (-\text{rate}, \text{shape} - 1),\quad h = 1, $$
//! $$ A(\theta) = \log\Gamma(\theta_2 + 1) - (\theta_2 + 1)\log(-\theta_1),\qquad
//!    \nabla A = \Big(\frac{\theta_2 + 1}{-\theta_1},\ \psi(\theta_2 + 1) - \log(-\theta_1)\Big), $$
//! $$ \nabla^2 A = \begin{pmatrix} (\theta_2+1)/\theta_1^2 & -1/\theta_1 \\
//!    -1/\theta_1 & \psi_1(\theta_2 + 1)\end{pmatrix}. $$
//!
//! The correct family passes `check_family` and `check_family_sweep` over shapes
//! 0.6, 1, 3, 30 and rates 0.1, 1, 10. Deliberately wrong variants fail at shape 0.6 (the
//! density is singular like $s^{-0.4}$ at 0) for every one of 20 seeds: a wrong base
//! measure, a 5 % normalisation error (both seen by the deterministic quadrature), a wrong
//! mean (gradient check) and a wrong off-diagonal Fisher entry, whose failure names the
//! entry.

use mirror::special::{digamma, trigamma};
use mirror::{
    check_family, check_family_sweep, CheckConfig, CheckKind, CheckStatus, ExponentialFamily,
    FamilyReport, MirrorError, Result, SweepConfig,
};
use mirror::{faer, rand};
use rand_distr::Distribution;
use statrs::function::gamma::ln_gamma;

/// What is wrong with a [`GammaShape`] family (`None`: nothing).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// $\log h(s) = 0.1$ instead of 0.
    BaseMeasure,
    /// $\log h(s) = -\log\Gamma(\text{shape})$ as well as $\log\Gamma$ in $A$ (counted
    /// twice, as when a textbook density is pasted into $h$).
    BaseMeasureLnGamma,
    /// $\log h(s) = \log 1.05$: the density integrates to 1.05.
    FivePercent,
    /// $\nabla A$ multiplied by 1.1.
    Mean,
    /// The off-diagonal entries of $\nabla^2 A$ multiplied by 1.1.
    FisherOffDiagonal,
}

/// The Gamma family with unknown shape and rate, optionally with one fault.
struct GammaShape(Option<Fault>);

impl GammaShape {
    /// (shape, rate) of θ.
    fn shape_rate(theta: &[f64]) -> (f64, f64) {
        (theta[1] + 1.0, -theta[0])
    }
    fn guard(&self, theta: &[f64]) -> Result<(f64, f64)> {
        if theta.len() == 2 && self.in_natural_domain(theta) {
            Ok(Self::shape_rate(theta))
        } else {
            Err(MirrorError::OutsideDomain {
                what: "natural parameter",
                reason: format!("{theta:?}: need theta_1 < 0 < theta_2 + 1"),
            })
        }
    }
}

impl ExponentialFamily for GammaShape {
    fn name(&self) -> String {
        match self.0 {
            None => "Gamma(shape, rate)".into(),
            Some(f) => format!("Gamma(shape, rate) with a wrong {f:?}"),
        }
    }
    fn dim(&self) -> usize {
        2
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s.len() == 1 && s[0] > 0.0 && s[0].is_finite()
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta.len() == 2
            && theta[0] < 0.0
            && theta[0].is_finite()
            && theta[1] > -1.0
            && theta[1].is_finite()
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        // E[log s] < log E[s] (Jensen, strict for a non-degenerate law).
        mu.len() == 2 && mu[0] > 0.0 && mu[0].is_finite() && mu[1].is_finite() && mu[1] < mu[0].ln()
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = s[0];
        t[1] = s[0].ln();
    }
    fn log_base_measure(&self, _s: &[f64]) -> f64 {
        match self.0 {
            Some(Fault::BaseMeasure) => 0.1,
            Some(Fault::BaseMeasureLnGamma) => -ln_gamma(0.6),
            Some(Fault::FivePercent) => 1.05f64.ln(),
            _ => 0.0,
        }
    }
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        let (shape, rate) = self.guard(theta)?;
        Ok(ln_gamma(shape) - shape * rate.ln())
    }
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        let (shape, rate) = self.guard(theta)?;
        mu[0] = shape / rate;
        mu[1] = digamma(shape) - rate.ln();
        if self.0 == Some(Fault::Mean) {
            mu[0] *= 1.1;
            mu[1] *= 1.1;
        }
        Ok(())
    }
    fn fisher(&self, theta: &[f64]) -> Result<faer::Mat<f64>> {
        let (shape, rate) = self.guard(theta)?;
        let off = if self.0 == Some(Fault::FisherOffDiagonal) {
            1.1 / rate
        } else {
            1.0 / rate
        };
        Ok(faer::Mat::from_fn(2, 2, |i, j| match (i, j) {
            (0, 0) => shape / (rate * rate),
            (1, 1) => trigamma(shape),
            _ => off,
        }))
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn rand::RngCore, s: &mut [f64]) -> Result<()> {
        let (shape, rate) = self.guard(theta)?;
        // rand_distr parametrises by shape and scale = 1/rate.
        let g = rand_distr::Gamma::new(shape, 1.0 / rate).map_err(|_| {
            MirrorError::InvalidParameter {
                name: "shape",
                value: shape,
                reason: "a Gamma law rand_distr can sample",
            }
        })?;
        s[0] = g.sample(rng);
        Ok(())
    }
    /// $\nabla A^*(\mu)$: the shape solves $\log k - \psi(k) = \log\mu_1 - \mu_2$ (Newton in
    /// $k$ from Minka's starting value; the left side decreases from $+\infty$ to 0), then
    /// rate $= k/\mu_1$.
    fn natural_from_mean(&self, mu: &[f64], theta: &mut [f64]) -> Result<()> {
        if !self.in_mean_domain(mu) {
            return Err(MirrorError::OutsideDomain {
                what: "mean parameter",
                reason: format!("{mu:?}: need mu_1 > 0 and mu_2 < log mu_1"),
            });
        }
        let c = mu[0].ln() - mu[1];
        let mut k = (3.0 - c + ((c - 3.0).powi(2) + 24.0 * c).sqrt()) / (12.0 * c);
        for _ in 0..100 {
            let g = k.ln() - digamma(k) - c;
            let dg = 1.0 / k - trigamma(k);
            let mut next = k - g / dg;
            while next <= 0.0 {
                next = 0.5 * (next + k).max(0.5 * k);
            }
            let done = (next - k).abs() <= 1e-15 * k;
            k = next;
            if done {
                break;
            }
        }
        theta[0] = -k / mu[0];
        theta[1] = k - 1.0;
        Ok(())
    }
}

fn status(r: &FamilyReport, k: CheckKind) -> CheckStatus {
    r.result(k).expect("every check is reported").status
}

/// θ of a shape and a rate.
fn theta(shape: f64, rate: f64) -> [f64; 2] {
    [-rate, shape - 1.0]
}

#[test]
fn correct_gamma_passes_check_family_and_the_sweep() {
    let mut thetas = Vec::new();
    for shape in [0.6, 1.0, 3.0, 30.0] {
        for rate in [0.1, 1.0, 10.0] {
            thetas.push(theta(shape, rate));
        }
    }
    let r = check_family_sweep(&GammaShape(None), &thetas, &SweepConfig::default()).unwrap();
    assert!(r.passed(), "{r}");
    // Each given point adds two near the boundary (rate → 0 and shape → 0), none the
    // other ways (the domain is unbounded there).
    assert_eq!(r.reports.len(), 3 * thetas.len(), "{r}");
    for (k, rep) in r.reports.iter().enumerate() {
        // The normalisation was integrated by quadrature, to far below its tolerance.
        let norm = rep.result(CheckKind::Normalisation).unwrap();
        assert!(norm.detail.contains("quadrature"), "{norm}");
        assert!(norm.error < 1e-10, "point {k}: {norm}");
        assert_eq!(rep.checks.len(), 9);
    }
}

#[test]
fn wrong_base_measure_and_normalisation_fail_at_every_seed() {
    let th = theta(0.6, 1.0);
    for fault in [
        Fault::BaseMeasure,
        Fault::BaseMeasureLnGamma,
        Fault::FivePercent,
    ] {
        // The integral the quadrature must find: e^{log h}, h constant here.
        let want = GammaShape(Some(fault)).log_base_measure(&[1.0]).exp();
        for seed in 0..20 {
            let cfg = CheckConfig {
                seed,
                ..CheckConfig::default()
            };
            let r = check_family(&GammaShape(Some(fault)), &th, &cfg).unwrap();
            assert_eq!(
                status(&r, CheckKind::Normalisation),
                CheckStatus::Failed,
                "{fault:?}, seed {seed}\n{r}"
            );
            // Nothing else is wrong, and nothing else fails.
            assert_eq!(r.failures().len(), 1, "{fault:?}, seed {seed}\n{r}");
            // Deterministic: the error is |∫ − 1| to quadrature accuracy, whatever the seed.
            let err = r.result(CheckKind::Normalisation).unwrap().error;
            assert!(
                (err - (want - 1.0).abs()).abs() < 1e-9,
                "{fault:?}, seed {seed}\n{r}"
            );
        }
    }
}

#[test]
fn wrong_mean_fails_the_gradient_check_at_every_seed() {
    let th = theta(0.6, 1.0);
    for seed in 0..20 {
        let cfg = CheckConfig {
            seed,
            ..CheckConfig::default()
        };
        let r = check_family(&GammaShape(Some(Fault::Mean)), &th, &cfg).unwrap();
        assert_eq!(
            status(&r, CheckKind::GradientFd),
            CheckStatus::Failed,
            "seed {seed}\n{r}"
        );
        let w = r.result(CheckKind::GradientFd).unwrap().worst.unwrap();
        assert_eq!(w.found_by, "mean");
        assert!(
            (w.found / w.expected - 1.1).abs() < 1e-6,
            "seed {seed}: {w:?}"
        );
    }
}

#[test]
fn wrong_fisher_entry_fails_and_is_named_at_every_seed() {
    let (shape, rate) = (0.6, 1.0);
    let th = theta(shape, rate);
    for seed in 0..20 {
        let cfg = CheckConfig {
            seed,
            ..CheckConfig::default()
        };
        let r = check_family(&GammaShape(Some(Fault::FisherOffDiagonal)), &th, &cfg).unwrap();
        let c = r.result(CheckKind::FisherFd).unwrap();
        assert_eq!(c.status, CheckStatus::Failed, "seed {seed}\n{r}");
        // The entry: off-diagonal, value 1.1/rate found, 1/rate (= ∂μ₁/∂θ₂) expected.
        let w = c.worst.unwrap();
        assert!(matches!(w.index(), (0, 1) | (1, 0)), "seed {seed}: {w:?}");
        assert_eq!(w.found, 1.1 / rate);
        assert!((w.expected - 1.0 / rate).abs() < 1e-7, "seed {seed}: {w:?}");
        // ... and the report says so.
        let text = r.to_string();
        let (i, j) = w.index();
        assert!(
            text.contains(&format!("worst entry ({i}, {j}): found {:.10e}", w.found)),
            "{text}"
        );
        assert!(
            text.contains(&format!("expected {:.10e}", w.expected)),
            "{text}"
        );
        // The diagonal, the gradient and the normalisation are right.
        assert_eq!(
            status(&r, CheckKind::GradientFd),
            CheckStatus::Passed,
            "{r}"
        );
        assert_eq!(
            status(&r, CheckKind::Normalisation),
            CheckStatus::Passed,
            "{r}"
        );
    }
}
#[test]
fn the_limit_of_f64_near_a_singular_end_is_reported_not_hidden() {
    // Shape 0.04 (the density overflows f64 at the smallest floats, its terms do not):
    // certified. Shape 0.02: the mass below the smallest positive double,
    // (5e-324)^{0.02}/Γ(1.02) ≈ 3.4e-7, cannot be integrated; a correct family then fails
    // the normalisation with the quadrature saying so, and the reported error covers what
    // is missing.
    let r = check_family(
        &GammaShape(None),
        &theta(0.04, 1.0),
        &CheckConfig::default(),
    )
    .unwrap();
    assert!(r.passed(), "{r}");
    let r = check_family(
        &GammaShape(None),
        &theta(0.02, 1.0),
        &CheckConfig::default(),
    )
    .unwrap();
    let norm = r.result(CheckKind::Normalisation).unwrap();
    assert_eq!(norm.status, CheckStatus::Failed, "{r}");
    assert!(
        norm.detail.contains("did not reach its tolerance"),
        "{norm}"
    );
    let missing = (-744.44f64 * 0.02).exp() / statrs::function::gamma::gamma(1.02);
    assert!(
        norm.error >= missing && norm.error < 10.0 * missing,
        "{norm}"
    );
    assert_eq!(r.failures().len(), 1, "{r}");
}
