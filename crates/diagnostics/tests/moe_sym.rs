//! Diagnostics on the models of `em-as-md`: gated mixtures of linear experts (curved
//! realisation) and the paper's SymMoLinE / SymMoLogE (linear realisations).

use diagnostics::certificate::{certify, CertifyConfig, Verdict};
use diagnostics::ratios::RatioConfig;
use em_as_md::{
    Dataset, Em, EmModel, FitState, Gating, LinearGaussian, MixtureOfExperts, Problem, Solver,
    SymMoLinE, SymMoLogE, UnprojectedMirrorDescent,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// Runs EM by hand (the `Em` solver's step) and records θ_t and L(θ_t).
fn em_run<M: EmModel + ?Sized>(
    p: &Problem<'_, M>,
    th0: Vec<f64>,
    iters: usize,
) -> (Vec<Vec<f64>>, Vec<f64>)
where
    M::Stats: 'static,
{
    try_em_run(p, th0, iters).expect("EM run")
}

/// As [`em_run`], `None` when an M-step fails (e.g. a separable gate on a random instance).
fn try_em_run<M: EmModel + ?Sized>(
    p: &Problem<'_, M>,
    th0: Vec<f64>,
    iters: usize,
) -> Option<(Vec<Vec<f64>>, Vec<f64>)>
where
    M::Stats: 'static,
{
    let mut em = Em::new();
    let l0 = p.objective(&th0).ok()?;
    let mut st = em.init(p, FitState::new(th0, l0)).ok()?;
    let mut traj = vec![st.theta.clone()];
    let mut vals = vec![st.objective];
    for _ in 0..iters {
        let (s, _) = em.next_iter(p, st).ok()?;
        traj.push(s.theta.clone());
        vals.push(s.objective);
        st = s;
    }
    Some((traj, vals))
}

fn moe_instance(seed: u64, n: usize) -> (MixtureOfExperts, Dataset, Vec<f64>) {
    let model =
        MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 2, Gating::Softmax).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let truth = model.random_params(&mut rng, 1.5);
    let mut x = Vec::with_capacity(2 * n);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let xi = [
            1.0,
            rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng),
        ];
        let (yi, _) = model.sample(&truth, &xi, &mut rng).unwrap();
        x.extend_from_slice(&xi);
        y.push(yi[0]);
    }
    (model, Dataset::from_rows(&x, 2, &y, 1).unwrap(), truth)
}

fn quick_cfg(radius: f64, seed: u64) -> CertifyConfig {
    CertifyConfig {
        ratios: RatioConfig {
            radius,
            n_samples: 10,
            seed,
            max_ratio_error: 1e-10,
            ..Default::default()
        },
        standard_errors: false,
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, rng_seed: proptest::test_runner::RngSeed::Fixed(1001), failure_persistence: None, ..ProptestConfig::default() })]

    /// L̂ ≤ 1 + 1e-9 along EM runs on random gated mixtures of two linear experts
    /// (curved realisation), from a perturbed start.
    #[test]
    fn moe_smoothness_ratio_at_most_one_along_em(seed in 0u64..10_000, shift in -0.5f64..0.5) {
        let (model, data, truth) = moe_instance(seed, 300);
        let p = Problem::new(&model, &data).unwrap();
        let th0: Vec<f64> = truth.iter().enumerate().map(|(j, v)| v + shift * ((j % 3) as f64 - 1.0)).collect();
        let run = try_em_run(&p, th0, 40);
        prop_assume!(run.is_some());
        let (traj, vals) = run.unwrap();
        let c = certify(&p, &traj, &vals, &quick_cfg(0.3, seed)).unwrap();
        prop_assert!(c.pairs_used >= 20, "{c}");
        prop_assert!(c.l_hat.unwrap() <= 1.0 + 1e-9, "L̂ = {:?}", c.l_hat);
    }

    /// At convergence on random gated mixtures, Louis' λ_max((I_c + C)⁻¹ I_m) (with the
    /// realisation-curvature term) equals the SEM spectral radius of the EM map.
    #[test]
    fn moe_louis_rate_matches_sem_at_convergence(seed in 0u64..10_000) {
        let (model, data, truth) = moe_instance(seed, 400);
        let p = Problem::new(&model, &data).unwrap();
        let run = try_em_run(&p, truth, 400);
        prop_assume!(run.is_some());
        let (traj, vals) = run.unwrap();
        let c = certify(&p, &traj, &vals, &quick_cfg(0.05, seed)).unwrap();
        prop_assume!(c.converged && c.sem_rate.is_some_and(|r| r < 0.99));
        let (louis, sem) = (c.louis_em_rate.unwrap(), c.sem_rate.unwrap());
        prop_assert!((louis - sem).abs() < 2e-4, "Louis {louis} vs SEM {sem}");
        prop_assert!((c.missing_info_rate.unwrap() - sem).abs() < 0.02);
    }
}

/// α̂ from the Bregman ratios vs 1 − max λ_max(M) over the same sampled points, on the
/// paper's symmetric models at high and low SNR. Stated tolerance:
/// |α̂ − α_MI| ≤ 0.01 + 0.05·|α_MI|.
#[test]
fn sym_models_bregman_alpha_matches_missing_information_alpha() {
    let mut rows = Vec::new();
    for (name, snr, iters) in [("SymMoLinE", 4.0, 300), ("SymMoLinE", 1.0, 600)] {
        let m = SymMoLinE::new(3, 1.0).unwrap();
        let truth = m.random_theta(snr, 1.0, 7).unwrap();
        let (data, _) = m.simulate(&truth, 1000, 8).unwrap();
        let p = Problem::new(&m, &data).unwrap();
        let (traj, vals) = em_run(&p, truth.clone(), iters);
        let mut cfg = quick_cfg(0.05, 3);
        cfg.ratios.max_ratio_error = 1e-8;
        cfg.snr = Some(m.snr(&truth));
        rows.push((name, snr, certify(&p, &traj, &vals, &cfg).unwrap()));
    }
    for (name, norm, iters) in [("SymMoLogE", 4.0, 800), ("SymMoLogE", 1.5, 1500)] {
        let m = SymMoLogE::new(3).unwrap();
        let truth = m.random_theta(norm, 1.0, 7).unwrap();
        let (data, _) = m.simulate(&truth, 1000, 8).unwrap();
        let p = Problem::new(&m, &data).unwrap();
        let (traj, vals) = em_run(&p, truth.clone(), iters);
        let mut cfg = quick_cfg(0.05, 3);
        cfg.ratios.max_ratio_error = 1e-8;
        cfg.snr = Some(m.snr(&truth));
        rows.push((name, norm, certify(&p, &traj, &vals, &cfg).unwrap()));
    }
    for (name, snr, c) in &rows {
        let a = c.alpha_hat.unwrap();
        let b = c.alpha_missing_info.unwrap();
        assert!(
            (a - b).abs() <= 0.01 + 0.05 * b.abs(),
            "{name} snr {snr}: α̂ {a} vs α_MI {b}\n{c}"
        );
        assert!(c.snr.is_some());
        assert!(c.l_hat.unwrap() <= 1.0 + 1e-9 + c.l_hat_roundoff);
        assert!(c.pairs_used >= 30, "{c}");
        println!(
            "{name} snr {snr:.2}: α̂ = {a:.4}, 1 − max λ(M) = {b:.4}, SEM {:?}, verdict {}",
            c.sem_rate, c.verdict
        );
    }
    // Higher SNR ⇒ less missing information ⇒ larger α, for both models.
    assert!(rows[0].2.alpha_hat.unwrap() > rows[1].2.alpha_hat.unwrap());
    assert!(rows[2].2.alpha_hat.unwrap() > rows[3].2.alpha_hat.unwrap());
}

/// Unprojected mirror descent with η = 2 (the `em-as-md` solver) on a well-separated
/// SymMoLinE: the run is not EM and must not be certified.
#[test]
fn sym_eta_two_mirror_descent_gets_no_false_certificate() {
    let m = SymMoLinE::new(2, 1.0).unwrap();
    let truth = m.random_theta(4.0, 0.5, 3).unwrap();
    let (data, _) = m.simulate(&truth, 800, 4).unwrap();
    let p = Problem::new(&m, &data).unwrap();
    let mut md = UnprojectedMirrorDescent::new(2.0, 1e-12, 200).unwrap();
    let th0: Vec<f64> = truth.iter().map(|v| v * 0.9).collect();
    let l0 = p.objective(&th0).unwrap();
    let mut st = md.init(&p, FitState::new(th0, l0)).unwrap();
    let mut traj = vec![st.theta.clone()];
    let mut vals = vec![st.objective];
    for _ in 0..300 {
        match md.next_iter(&p, st.clone()) {
            Ok((s, _)) => {
                traj.push(s.theta.clone());
                vals.push(s.objective);
                st = s;
            }
            Err(_) => break,
        }
    }
    let c = certify(&p, &traj, &vals, &quick_cfg(0.05, 1)).unwrap();
    assert_ne!(c.verdict, Verdict::Certified, "{c}");
}

/// Louis' identity with a curved realisation and features: I_c + C − I_m equals the
/// finite-difference Hessian of L at arbitrary (non-stationary) θ of a gated mixture.
#[test]
fn moe_observed_information_is_hessian_of_l() {
    use diagnostics::information::information;
    for seed in 0..3 {
        let (model, data, truth) = moe_instance(100 + seed, 300);
        let p = Problem::new(&model, &data).unwrap();
        let th: Vec<f64> = truth
            .iter()
            .enumerate()
            .map(|(j, v)| v + 0.2 * ((j % 4) as f64 - 1.5))
            .collect();
        let info = information(&p, &th, true).unwrap();
        assert!(info.curvature_computed);
        let obs = info.observed();
        let np = th.len();
        let (mut gp, mut gm) = (vec![0.0; np], vec![0.0; np]);
        let mut t = th.clone();
        let mut cnorm = 0.0f64;
        for k in 0..np {
            let e = 1e-5 * th[k].abs().max(1.0);
            t[k] = th[k] + e;
            p.objective_and_gradient(&t, &mut gp).unwrap();
            t[k] = th[k] - e;
            p.objective_and_gradient(&t, &mut gm).unwrap();
            t[k] = th[k];
            for r in 0..np {
                let h = (gp[r] - gm[r]) / (2.0 * e);
                assert!(
                    (obs[(r, k)] - h).abs() < 1e-5 * (1.0 + h.abs()),
                    "seed {seed} ({r},{k}): {} vs {h}",
                    obs[(r, k)]
                );
                cnorm = cnorm.max(info.curvature[(r, k)].abs());
            }
        }
        // The curvature term is not negligible here: dropping it would fail the check.
        assert!(cnorm > 1e-3, "C is {cnorm}");
    }
}

/// Standard errors on a gated mixture come with no warning at a well-separated fit and
/// equal sqrt(diag(I_obs⁻¹)/n) computed through a dense inverse.
#[test]
fn moe_standard_errors_match_dense_inverse() {
    use diagnostics::information::information;
    use diagnostics::stderr::standard_errors;
    use faer::linalg::solvers::Solve;
    let (model, data, truth) = moe_instance(7, 600);
    let p = Problem::new(&model, &data).unwrap();
    let (traj, _) = em_run(&p, truth, 300);
    let th = traj.last().unwrap();
    let s = standard_errors(&p, th, 1e8).unwrap();
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let obs = information(&p, th, true).unwrap().observed();
    let inv = obs
        .llt(faer::Side::Lower)
        .unwrap()
        .solve(faer::Mat::<f64>::identity(th.len(), th.len()));
    for j in 0..th.len() {
        let want = (inv[(j, j)] / data.n() as f64).sqrt();
        assert!((s.se[j].unwrap() - want).abs() < 1e-8 * want, "{j}");
    }
}
