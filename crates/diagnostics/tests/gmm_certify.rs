//! Certificates on the 1-D two-Gaussian mixture (test family in `src/testkit.rs`): rates
//! agree when the components are separated, the certificate degrades as they merge, a
//! non-EM run gets no false certificate, L̂ ≤ 1 along EM runs, missing information
//! matches SEM, and standard errors cover.

#[path = "../src/testkit.rs"]
mod testkit;

use diagnostics::certificate::{certify, certify_with_em_map, Certificate, CertifyConfig, Verdict};
use diagnostics::information::{information, louis_em_rate, missing_fraction};
use diagnostics::rates::em_map_jacobian;
use diagnostics::ratios::RatioConfig;
use diagnostics::stderr::standard_errors;
use diagnostics::DiagnosticsError;
use em_as_md::Problem;
use mirror::ExponentialFamily;
use proptest::prelude::*;
use testkit::*;

fn fit(sep: f64, seed: u64, iters: usize) -> (em_as_md::Dataset, Vec<Vec<f64>>, Vec<f64>) {
    fit_n(sep, seed, iters, 2000)
}

fn fit_n(
    sep: f64,
    seed: u64,
    iters: usize,
    n: usize,
) -> (em_as_md::Dataset, Vec<Vec<f64>>, Vec<f64>) {
    let data = gmm_data(n, 0.4, -sep / 2.0, sep / 2.0, seed);
    let th0 = gmm_theta(false, 0.5, -sep / 2.0 - 0.5, sep / 2.0 + 0.3);
    let (traj, vals) = run_gmm_em(&GmmNatural, &data, false, &th0, iters);
    (data, traj, vals)
}

fn cfg(radius: f64) -> CertifyConfig {
    CertifyConfig {
        ratios: RatioConfig {
            radius,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn well_separated_certified_observed_and_sem_rates_agree_within_10_percent() {
    for (sep, seed) in [(4.0, 1), (3.0, 2)] {
        let (data, traj, vals) = fit(sep, seed, 400);
        let p = Problem::new(&GmmNatural, &data).unwrap();
        let c = certify(&p, &traj, &vals, &cfg(0.05)).unwrap();
        assert_eq!(c.verdict, Verdict::Certified, "{c}");
        let certified = c.predicted_rate.unwrap();
        let observed = c.observed.as_ref().unwrap().contraction;
        let sem = c.sem_rate.unwrap();
        assert!(
            rel(certified, sem) < 0.1,
            "certified {certified} vs SEM {sem}"
        );
        assert!(rel(observed, sem) < 0.1, "observed {observed} vs SEM {sem}");
        assert!(rel(observed, certified) < 0.1);
        // The certified rate bounds the observed objective rate q ≈ λ².
        assert!(c.observed.as_ref().unwrap().rate <= certified);
    }
}

#[test]
fn as_separation_shrinks_alpha_vanishes_and_certificate_is_withdrawn() {
    let mut alphas = Vec::new();
    let mut sems = Vec::new();
    let mut verdicts = Vec::new();
    for sep in [4.0, 3.0, 2.0, 1.0, 0.0] {
        let (data, traj, vals) = fit_n(sep, 1, 2000, 1000);
        let p = Problem::new(&GmmNatural, &data).unwrap();
        let c = certify(&p, &traj, &vals, &cfg(0.05)).unwrap();
        alphas.push(c.alpha_hat.unwrap());
        sems.push(c.sem_rate.unwrap());
        verdicts.push(c.verdict);
    }
    for w in alphas.windows(2) {
        assert!(w[1] < w[0], "α̂ not decreasing: {alphas:?}");
    }
    for w in sems.windows(2) {
        assert!(w[1] > w[0], "SEM rate not increasing: {sems:?}");
    }
    assert!(alphas[3] < 0.01 && alphas[4] <= 0.0, "{alphas:?}");
    assert!(sems[4] > 0.99);
    assert_eq!(&verdicts[..3], &[Verdict::Certified; 3]);
    assert_ne!(verdicts[3], Verdict::Certified);
    assert_ne!(verdicts[4], Verdict::Certified);
}

/// Mirror descent with η = 2 in the natural parametrisation (linear realisation, all rows
/// share φ): ∇A(θ⁺) = ∇A(θ_t) − 2∇L(θ_t) = 2 s̄ − ∇A(θ_t), computed here from the E-step
/// sums only.
fn md_eta2(data: &em_as_md::Dataset, th0: &[f64], iters: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
    let p = Problem::new(&GmmNatural, data).unwrap();
    let mut traj = vec![th0.to_vec()];
    let mut vals = vec![p.objective(th0).unwrap()];
    let mut mu = [0.0; 3];
    for _ in 0..iters {
        let th = traj.last().unwrap().clone();
        let (s, _) = gmm_e_step(data, false, &th);
        let n = s[3];
        TwoGauss.mean(&th, &mut mu).unwrap();
        let target = [
            2.0 * s[0] / n - mu[0],
            2.0 * s[1] / n - mu[1],
            2.0 * s[2] / n - mu[2],
        ];
        let mut next = [0.0; 3];
        TwoGauss.natural_from_mean(&target, &mut next).unwrap();
        vals.push(p.objective(&next).unwrap());
        traj.push(next.to_vec());
    }
    (traj, vals)
}

#[test]
fn eta_two_mirror_descent_gets_no_false_certificate() {
    // Well separated: EM's missing-information eigenvalues are small, so the η = 2 map
    // 2·DM − I has eigenvalues near −1 (ill-conditioned, slowly oscillating).
    let data = gmm_data(2000, 0.4, -2.5, 2.5, 4);
    let th0 = gmm_theta(false, 0.45, -2.4, 2.6);
    let (traj, vals) = md_eta2(&data, &th0, 3000);
    let p = Problem::new(&GmmNatural, &data).unwrap();
    let c = certify(&p, &traj, &vals, &cfg(0.05)).unwrap();
    println!("η = 2 mirror descent:\n{c}");
    assert_ne!(c.verdict, Verdict::Certified, "{c}");
    // …whereas EM on the same data and start is certified.
    let (traj, vals) = run_gmm_em(&GmmNatural, &data, false, &th0, 300);
    let c = certify(&p, &traj, &vals, &cfg(0.05)).unwrap();
    assert_eq!(c.verdict, Verdict::Certified, "{c}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, rng_seed: proptest::test_runner::RngSeed::Fixed(1001), failure_persistence: None, ..ProptestConfig::default() })]

    /// L̂ ≤ 1 + 1e-9 over trajectory, neighbourhood and probe pairs of EM runs, in both the
    /// linear and the curved parametrisation (pairs whose round-off estimate exceeds 1e-10
    /// are skipped, so the bound is not blurred by cancellation).
    #[test]
    fn smoothness_ratio_at_most_one_along_em(
        seed in 0u64..10_000, sep in 0.5f64..4.0, pi in 0.2f64..0.8, curved in any::<bool>(),
    ) {
        let data = gmm_data(300, pi, -sep / 2.0, sep / 2.0, seed);
        let th0 = gmm_theta(curved, 0.5, -sep / 2.0 - 0.7, sep / 2.0 + 0.4);
        let mut c = cfg(0.3);
        c.ratios.max_ratio_error = 1e-10;
        c.ratios.n_samples = 12;
        c.ratios.seed = seed;
        c.standard_errors = false;
        let cert = if curved {
            let (traj, vals) = run_gmm_em(&GmmCurved, &data, true, &th0, 60);
            certify(&Problem::new(&GmmCurved, &data).unwrap(), &traj, &vals, &c).unwrap()
        } else {
            let (traj, vals) = run_gmm_em(&GmmNatural, &data, false, &th0, 60);
            certify(&Problem::new(&GmmNatural, &data).unwrap(), &traj, &vals, &c).unwrap()
        };
        prop_assert!(cert.pairs_used >= 20);
        prop_assert!(cert.l_hat.unwrap() <= 1.0 + 1e-9, "L̂ = {:?}", cert.l_hat);
        prop_assert_ne!(cert.verdict, Verdict::Violated);
    }

    /// At convergence, λ_max(I_c⁻¹ I_m) (natural) and λ_max((I_c + C)⁻¹ I_m) (curved) equal
    /// the spectral radius of the finite-difference EM-map Jacobian.
    #[test]
    fn missing_information_matches_sem_at_convergence(
        seed in 0u64..10_000, sep in 2.0f64..4.0, pi in 0.3f64..0.7,
    ) {
        let data = gmm_data(500, pi, -sep / 2.0, sep / 2.0, seed);
        for curved in [false, true] {
            let th0 = gmm_theta(curved, 0.5, -sep / 2.0, sep / 2.0);
            let (lam, louis, sem) = if curved {
                let (traj, _) = run_gmm_em(&GmmCurved, &data, true, &th0, 800);
                let p = Problem::new(&GmmCurved, &data).unwrap();
                let th = traj.last().unwrap();
                let info = information(&p, th, true).unwrap();
                let map = |t: &[f64], o: &mut [f64]| gmm_em_map(&data, true, t, o);
                (missing_fraction(&info).unwrap().max(), louis_em_rate(&info).unwrap(),
                 em_map_jacobian(&map, th, 1e-5).unwrap().radius)
            } else {
                let (traj, _) = run_gmm_em(&GmmNatural, &data, false, &th0, 800);
                let p = Problem::new(&GmmNatural, &data).unwrap();
                let th = traj.last().unwrap();
                let info = information(&p, th, true).unwrap();
                let map = |t: &[f64], o: &mut [f64]| gmm_em_map(&data, false, t, o);
                (missing_fraction(&info).unwrap().max(), louis_em_rate(&info).unwrap(),
                 em_map_jacobian(&map, th, 1e-5).unwrap().radius)
            };
            prop_assert!((louis - sem).abs() < 1e-5, "Louis {louis} vs SEM {sem}");
            prop_assert!((lam - sem).abs() < 1e-5, "MI {lam} vs SEM {sem}");
        }
    }
}

#[test]
fn standard_errors_cover_over_resimulations() {
    // True (π0, μ0, μ1) = (0.4, −1.5, 1.5); 200 seeded re-simulations of n = 500.
    let truth = gmm_theta(false, 0.4, -1.5, 1.5);
    let reps = 200;
    let mut covered = [0usize; 3];
    let mut est = vec![Vec::new(); 3];
    let mut se_mean = [0.0; 3];
    for r in 0..reps {
        let data = gmm_data(500, 0.4, -1.5, 1.5, 10_000 + r as u64);
        let (traj, _) = run_gmm_em(&GmmNatural, &data, false, &truth, 120);
        let th = traj.last().unwrap();
        let p = Problem::new(&GmmNatural, &data).unwrap();
        let s = standard_errors(&p, th, 1e8).unwrap();
        assert!(s.warnings.is_empty());
        for j in 0..3 {
            let se = s.se[j].unwrap();
            se_mean[j] += se / reps as f64;
            est[j].push(th[j]);
            if (th[j] - truth[j]).abs() <= 1.96 * se {
                covered[j] += 1;
            }
        }
    }
    for j in 0..3 {
        let cov = covered[j] as f64 / reps as f64;
        assert!((0.89..=0.995).contains(&cov), "coverage of θ_{j}: {cov}");
        let m = est[j].iter().sum::<f64>() / reps as f64;
        let sd = (est[j].iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (reps - 1) as f64).sqrt();
        assert!(
            rel(se_mean[j], sd) < 0.2,
            "θ_{j}: mean se {} vs spread {sd}",
            se_mean[j]
        );
    }
}

#[test]
fn certificate_round_trips_through_json_and_renders_one_screen() {
    let (data, traj, vals) = fit(3.0, 5, 300);
    let p = Problem::new(&GmmNatural, &data).unwrap();
    let c = certify(&p, &traj, &vals, &cfg(0.05)).unwrap();
    let json = c.to_json().unwrap();
    let back: Certificate = serde_json::from_str(&json).unwrap();
    assert_eq!(back.verdict, c.verdict);
    assert_eq!(back.pairs_used, c.pairs_used);
    assert_eq!(back.alpha_hat, c.alpha_hat);
    let text = c.to_string();
    assert!(text.lines().count() <= 30, "{text}");
    assert!(text.contains("CERTIFIED") && text.contains("α̂"));
}

#[test]
fn a_certificate_of_a_run_that_did_not_converge_says_so_and_is_not_certified() {
    use em_as_md::Termination;
    let (data, traj, vals) = fit(3.0, 5, 300);
    let p = Problem::new(&GmmNatural, &data).unwrap();
    let c = certify(&p, &traj, &vals, &cfg(0.05)).unwrap();
    assert_eq!(
        (c.verdict, c.run_termination, c.run_converged()),
        (Verdict::Certified, None, None)
    );

    // A converged run keeps its certificate, and the report names the termination.
    let mut ok = c.clone();
    let conv = Termination::Converged { rel_change: 1e-15 };
    ok.account_for(&conv);
    assert_eq!(
        (ok.verdict, ok.run_converged()),
        (Verdict::Certified, Some(true))
    );
    assert_eq!(ok.reason, c.reason);
    assert!(ok.to_string().contains("run: converged"), "{ok}");

    // An inexact M-step at the end withdraws it, with the reason first.
    let inexact = Termination::InexactMStep {
        inexact: 5,
        window: 5,
        worst_residual: Some(0.5),
        rel_change: Some(0.0),
    };
    let mut bad = c.clone();
    bad.account_for(&inexact);
    bad.account_for(&inexact); // idempotent
    assert_eq!(
        (bad.verdict, bad.run_converged()),
        (Verdict::Inconclusive, Some(false))
    );
    assert_eq!(
        bad.reason,
        format!("the run did not converge ({inexact}); {}", c.reason)
    );
    let text = bad.to_string();
    assert!(
        text.contains(
            "WARNING: the run did not converge: M-step inexact in 5 of the last 5 iterations"
        ),
        "{text}"
    );
    // The field survives JSON, and a certificate written before it existed still reads.
    let back: Certificate = serde_json::from_str(&bad.to_json().unwrap()).unwrap();
    assert_eq!(
        (back.verdict, &back.reason, back.run_termination),
        (bad.verdict, &bad.reason, bad.run_termination)
    );
    let mut old: serde_json::Value = serde_json::from_str(&c.to_json().unwrap()).unwrap();
    old.as_object_mut().unwrap().remove("run_termination");
    let back: Certificate = serde_json::from_value(old).unwrap();
    assert_eq!(back.run_termination, None);

    // A Violated verdict keeps its evidence.
    let mut v = c.clone();
    v.verdict = Verdict::Violated;
    v.account_for(&Termination::MaxIters);
    assert_eq!(v.verdict, Verdict::Violated);
    assert!(v
        .reason
        .starts_with("the run did not converge (maximum number"));
}

#[test]
fn invalid_configurations_and_trajectories_are_typed() {
    let (data, traj, vals) = fit(3.0, 5, 50);
    let p = Problem::new(&GmmNatural, &data).unwrap();
    let table: Vec<(CertifyConfig, &str)> = vec![
        (
            CertifyConfig {
                probe_fraction: 0.0,
                ..Default::default()
            },
            "probe_fraction",
        ),
        (
            CertifyConfig {
                alpha_min: 1.0,
                ..Default::default()
            },
            "alpha_min",
        ),
        (
            CertifyConfig {
                rate_tol: f64::NAN,
                ..Default::default()
            },
            "rate_tol",
        ),
        (
            CertifyConfig {
                grad_tol: -1.0,
                ..Default::default()
            },
            "grad_tol",
        ),
        (
            CertifyConfig {
                min_pairs: 0,
                ..Default::default()
            },
            "min_pairs",
        ),
        (
            CertifyConfig {
                snr: Some(f64::INFINITY),
                ..Default::default()
            },
            "snr",
        ),
        (
            CertifyConfig {
                ratios: RatioConfig {
                    radius: 0.0,
                    ..Default::default()
                },
                ..Default::default()
            },
            "radius",
        ),
    ];
    for (c, name) in table {
        let err = certify(&p, &traj, &vals, &c).unwrap_err();
        assert!(
            matches!(err, DiagnosticsError::InvalidConfig { field, .. } if field == name),
            "{name}: {err}"
        );
    }
    let ok = CertifyConfig::default();
    assert!(matches!(
        certify(&p, &[], &[], &ok),
        Err(DiagnosticsError::InvalidTrajectory { .. })
    ));
    assert!(matches!(
        certify(&p, &traj, &vals[1..], &ok),
        Err(DiagnosticsError::InvalidTrajectory { .. })
    ));
    let mut wrong_last = vals.clone();
    *wrong_last.last_mut().unwrap() += 1e-3;
    assert!(matches!(
        certify(&p, &traj, &wrong_last, &ok),
        Err(DiagnosticsError::InvalidTrajectory { .. })
    ));
    let short = vec![vec![0.0; 2]];
    assert!(matches!(
        certify_with_em_map(&p, &short, &[1.0], &ok, None),
        Err(DiagnosticsError::DimensionMismatch {
            expected: 3,
            found: 2,
            ..
        })
    ));
}

/// A family whose mean map is deliberately wrong (half the gradient of its log-partition):
/// D_𝒜 then takes negative values and the certificate must say so.
struct HalfA;

impl ExponentialFamily for HalfA {
    fn name(&self) -> String {
        "TwoGauss with A/2".into()
    }
    fn dim(&self) -> usize {
        3
    }
    fn obs_dim(&self) -> usize {
        2
    }
    fn in_support(&self, s: &[f64]) -> bool {
        TwoGauss.in_support(s)
    }
    fn in_natural_domain(&self, t: &[f64]) -> bool {
        TwoGauss.in_natural_domain(t)
    }
    fn in_mean_domain(&self, m: &[f64]) -> bool {
        TwoGauss.in_mean_domain(m)
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        TwoGauss.sufficient_stats(s, t)
    }
    fn log_base_measure(&self, s: &[f64]) -> f64 {
        TwoGauss.log_base_measure(s)
    }
    fn log_partition(&self, t: &[f64]) -> mirror::Result<f64> {
        TwoGauss.log_partition(t)
    }
    fn mean(&self, t: &[f64], m: &mut [f64]) -> mirror::Result<()> {
        TwoGauss.mean(t, m)?;
        m.iter_mut().for_each(|v| *v *= 0.5);
        Ok(())
    }
    fn fisher(&self, t: &[f64]) -> mirror::Result<faer::Mat<f64>> {
        TwoGauss.fisher(t)
    }
    fn sample(&self, t: &[f64], rng: &mut dyn rand::RngCore, s: &mut [f64]) -> mirror::Result<()> {
        TwoGauss.sample(t, rng, s)
    }
}

struct BrokenGmm;

impl em_as_md::ConditionalFamily for BrokenGmm {
    fn complete(&self) -> &dyn ExponentialFamily {
        &HalfA
    }
    fn n_latent(&self) -> usize {
        2
    }
    fn n_params(&self) -> usize {
        3
    }
    fn n_features(&self) -> usize {
        1
    }
    fn realise(&self, theta: &[f64], _x: &[f64], phi: &mut [f64]) {
        phi.copy_from_slice(theta);
    }
    fn realise_vjp(&self, _theta: &[f64], _x: &[f64], v: &[f64], grad: &mut [f64]) {
        grad.iter_mut().zip(v).for_each(|(g, u)| *g += u);
    }
    fn is_linear(&self) -> bool {
        true
    }
}

#[test]
fn inconsistent_family_is_caught_by_negative_bregman_divergences() {
    let data = gmm_data(500, 0.4, -1.5, 1.5, 9);
    let (traj, _) = run_gmm_em(
        &GmmNatural,
        &data,
        false,
        &gmm_theta(false, 0.5, -1.0, 1.0),
        100,
    );
    let p = Problem::new(&BrokenGmm, &data).unwrap();
    let vals: Vec<f64> = traj.iter().map(|t| p.objective(t).unwrap()).collect();
    let c = diagnostics::certify_with_em_map(&p, &traj, &vals, &cfg(0.1), None).unwrap();
    assert_eq!(c.verdict, Verdict::Violated, "{c}");
    assert!(
        c.pairs_negative_bregman > 0 && c.reason.contains("D_𝒜 < 0"),
        "{c}"
    );
    // The correct family on the same run has no negative divergence.
    let good = Problem::new(&GmmNatural, &data).unwrap();
    let c = diagnostics::certify_with_em_map(&good, &traj, &vals_of(&good, &traj), &cfg(0.1), None)
        .unwrap();
    assert_eq!(c.pairs_negative_bregman, 0);
    assert_eq!(c.verdict, Verdict::Certified, "{c}");
}

fn vals_of(p: &Problem<'_, GmmNatural>, traj: &[Vec<f64>]) -> Vec<f64> {
    traj.iter().map(|t| p.objective(t).unwrap()).collect()
}
