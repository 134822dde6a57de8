//! EM = projected mirror descent with unit step, checked numerically.
//!
//! The EM step comes from the models' E-/M-step code (through the [`Em`] solver); the MD
//! step from [`MirrorDescent`], which only sees `Problem::md_targets` /
//! `Problem::md_subproblem` and minimises them with L-BFGS — never the M-step. On random
//! SymMoLinE/SymMoLogE instances and random mixtures of linear, logistic, multinomial and
//! Poisson experts (softmax and constant gating) the two agree to 1e-8 relative, in θ and
//! in L; with η = 0.5 they differ by far more. On the linear-realisation models the
//! projected and unprojected forms of MD agree, and ∇L matches finite differences of L.

use em_as_md::model::expert::{Expert, LinearGaussian, Logistic, Multinomial, Poisson};
use em_as_md::solve::md::complete_information;
use em_as_md::solve::problem::{row_posterior, RowScratch};
use em_as_md::{ConditionalFamily, EmModel};
use em_as_md::{
    Dataset, Em, FitState, Gating, MirrorDescent, MixtureOfExperts, Problem, Solver, SymMoLinE,
    SymMoLogE, UnprojectedMirrorDescent,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::sync::Arc;

/// $\|a - b\|_\infty / \max(1, \|b\|_\infty)$.
fn rel_vec(a: &[f64], b: &[f64]) -> f64 {
    let num = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    num / b.iter().fold(1.0f64, |m, y| m.max(y.abs()))
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1.0)
}

/// One EM step through the `Em` solver (E-/M-step code) and one MD(η) step through the
/// generic subproblem; returns (θ_EM, L_EM, θ_MD, L_MD).
fn em_and_md<M>(
    model: &M,
    data: &Dataset,
    theta0: &[f64],
    eta: f64,
) -> (Vec<f64>, f64, Vec<f64>, f64)
where
    M: EmModel + ?Sized,
    M::Stats: 'static,
{
    let problem = Problem::new(model, data).unwrap();
    let l0 = problem.objective(theta0).unwrap();
    let mut em = Em::new();
    let (s_em, _) = em
        .next_iter(&problem, FitState::new(theta0.to_vec(), l0))
        .unwrap();
    let mut md = MirrorDescent::with_eta(eta).unwrap();
    let (s_md, rec) = md
        .next_iter(&problem, FitState::new(theta0.to_vec(), l0))
        .unwrap();
    assert!(
        rec.inner.converged,
        "MD inner solve did not converge: {rec:?}"
    );
    (s_em.theta, s_em.objective, s_md.theta, s_md.objective)
}

fn sym_lin(d: usize, n: usize, sigma: f64, snr: f64, seed: u64) -> (SymMoLinE, Dataset, Vec<f64>) {
    let model = SymMoLinE::new(d, sigma).unwrap();
    let star = model.random_theta(snr, 1.5, seed).unwrap();
    let (data, _) = model.simulate(&star, n, seed + 1).unwrap();
    let theta0 = model.random_theta(1.0, 0.5, seed + 2).unwrap();
    (model, data, theta0)
}

fn sym_log(d: usize, n: usize, bnorm: f64, seed: u64) -> (SymMoLogE, Dataset, Vec<f64>) {
    let model = SymMoLogE::new(d).unwrap();
    let star = model.random_theta(bnorm, 1.5, seed).unwrap();
    let (data, _) = model.simulate(&star, n, seed + 1).unwrap();
    let theta0 = model.random_theta(1.0, 0.5, seed + 2).unwrap();
    (model, data, theta0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]

    #[test]
    fn em_equals_md_eta_one_on_sym_mo_lin_e(d in 1usize..5, n in 150usize..400, sigma in 0.5f64..2.0,
                                          snr in 0.5f64..4.0, seed in 0u64..1000) {
        let (model, data, theta0) = sym_lin(d, n, sigma, snr, seed);
        let (t_em, l_em, t_md, l_md) = em_and_md(&model, &data, &theta0, 1.0);
        prop_assert!(rel_vec(&t_md, &t_em) < 1e-8, "θ: EM {t_em:?} MD {t_md:?}");
        prop_assert!(rel(l_md, l_em) < 1e-8, "L: EM {l_em} MD {l_md}");
        // η = 0.5 is a genuinely different (damped) step.
        let (_, _, t_half, _) = em_and_md(&model, &data, &theta0, 0.5);
        prop_assert!(rel_vec(&t_half, &t_em) > 1e-4, "η = 0.5 should differ: {}", rel_vec(&t_half, &t_em));
    }

    #[test]
    fn em_equals_md_eta_one_on_sym_mo_log_e(d in 1usize..5, n in 200usize..500, bnorm in 0.5f64..4.0,
                                          seed in 0u64..1000) {
        let (model, data, theta0) = sym_log(d, n, bnorm, seed);
        let (t_em, l_em, t_md, l_md) = em_and_md(&model, &data, &theta0, 1.0);
        prop_assert!(rel_vec(&t_md, &t_em) < 1e-8, "θ: EM {t_em:?} MD {t_md:?}");
        prop_assert!(rel(l_md, l_em) < 1e-8, "L: EM {l_em} MD {l_md}");
        let (_, _, t_half, _) = em_and_md(&model, &data, &theta0, 0.5);
        prop_assert!(rel_vec(&t_half, &t_em) > 1e-4);
    }

    #[test]
    fn projected_and_unprojected_md_agree(d in 1usize..4, n in 150usize..300, seed in 0u64..1000,
                                          which in 0usize..2, eta_i in 0usize..2) {
        let eta = [0.5, 1.0][eta_i];
        let (a, b) = if which == 0 {
            let (m, data, t0) = sym_lin(d, n, 1.0, 2.0, seed);
            let p = Problem::new(&m, &data).unwrap();
            let a = MirrorDescent::with_eta(eta).unwrap().precondition(false).step(&p, &t0).unwrap().0;
            let b = UnprojectedMirrorDescent::with_eta(eta).unwrap().step(&p, &t0).unwrap().0;
            (a, b)
        } else {
            let (m, data, t0) = sym_log(d, n, 2.0, seed);
            let p = Problem::new(&m, &data).unwrap();
            let a = MirrorDescent::with_eta(eta).unwrap().precondition(false).step(&p, &t0).unwrap().0;
            let b = UnprojectedMirrorDescent::with_eta(eta).unwrap().step(&p, &t0).unwrap().0;
            (a, b)
        };
        prop_assert!(rel_vec(&a, &b) < 1e-8, "projected {a:?} vs unprojected {b:?}");
    }

    #[test]
    fn gradient_of_l_matches_finite_differences_on_sym_models(d in 1usize..4, seed in 0u64..1000,
                                                              which in 0usize..2) {
        let check = |p: &Problem<'_, dyn ConditionalFamily>, theta: &[f64]| {
            let mut g = vec![0.0; theta.len()];
            p.objective_and_gradient(theta, &mut g).unwrap();
            let mut t = theta.to_vec();
            for j in 0..theta.len() {
                let h = 1e-5;
                t[j] = theta[j] + h;
                let fp = p.objective(&t).unwrap();
                t[j] = theta[j] - h;
                let fm = p.objective(&t).unwrap();
                t[j] = theta[j];
                let fd = (fp - fm) / (2.0 * h);
                assert!((fd - g[j]).abs() < 1e-7 * (1.0 + g[j].abs()), "coord {j}: fd {fd} vs ∇L {}", g[j]);
            }
        };
        if which == 0 {
            let (m, data, t0) = sym_lin(d, 200, 0.8, 2.0, seed);
            let p: Problem<'_, dyn ConditionalFamily> = Problem::new(&m as &dyn ConditionalFamily, &data).unwrap();
            check(&p, &t0);
        } else {
            let (m, data, t0) = sym_log(d, 200, 2.0, seed);
            let p: Problem<'_, dyn ConditionalFamily> = Problem::new(&m as &dyn ConditionalFamily, &data).unwrap();
            check(&p, &t0);
        }
    }

    #[test]
    fn sym_e_step_objective_equals_generic_objective(d in 1usize..4, seed in 0u64..1000) {
        // Closed-form E-step (log-likelihood and responsibilities) vs the generic row kernel
        // on the complete-data family.
        fn check<M: EmModel<Stats = em_as_md::SymStats>>(m: &M, data: &Dataset, t0: &[f64]) {
            let p = Problem::new(m, data).unwrap();
            let (st, l) = m.e_step(data, t0).unwrap();
            let lg = p.objective(t0).unwrap();
            assert!(rel(l, lg) < 1e-13, "{l} vs {lg}");
            let mut s = RowScratch::new(m);
            for i in 0..data.n() {
                m.realise(t0, data.x(i), &mut s.phi);
                row_posterior(m, data.y(i), i, &mut s).unwrap();
                assert!((s.resp[0] - st.resp[i]).abs() < 1e-13, "row {i}: {} vs {}", s.resp[0], st.resp[i]);
                assert!((s.resp[0] + s.resp[1] - 1.0).abs() < 1e-14);
            }
        }
        let (m, data, t0) = sym_lin(d, 100, 1.3, 1.5, seed);
        check(&m, &data, &t0);
        let (m, data, t0) = sym_log(d, 100, 1.5, seed);
        check(&m, &data, &t0);
    }

    #[test]
    fn complete_information_is_the_hessian_of_a_n_for_linear_realisations(d in 1usize..4, seed in 0u64..1000,
                                                                         which in 0usize..2) {
        // I_c(θ) = (1/n) Σ J_iᵀ ∇²A J_i against central differences of ∇A_n.
        fn check<M: ConditionalFamily>(m: &M, data: &Dataset, t0: &[f64]) {
            let p = Problem::new(m, data).unwrap();
            let k = t0.len();
            let h = complete_information(&p, t0).unwrap();
            let (mut gp, mut gm) = (vec![0.0; k], vec![0.0; k]);
            let mut t = t0.to_vec();
            for j in 0..k {
                let e = 1e-5;
                t[j] = t0[j] + e;
                UnprojectedMirrorDescent::stacked_potential(&p, &t, &mut gp).unwrap();
                t[j] = t0[j] - e;
                UnprojectedMirrorDescent::stacked_potential(&p, &t, &mut gm).unwrap();
                t[j] = t0[j];
                for a in 0..k {
                    let fd = (gp[a] - gm[a]) / (2.0 * e);
                    assert!((fd - h[a * k + j]).abs() < 1e-7 * (1.0 + fd.abs()), "({a},{j}): {fd} vs {}", h[a * k + j]);
                }
            }
        }
        if which == 0 {
            let (m, data, t0) = sym_lin(d, 100, 0.7, 1.5, seed);
            check(&m, &data, &t0);
        } else {
            let (m, data, t0) = sym_log(d, 100, 1.5, seed);
            check(&m, &data, &t0);
        }
    }

    #[test]
    fn stacked_potential_gradient_matches_finite_differences(d in 1usize..4, seed in 0u64..1000) {
        // ∇A_n(θ) = (1/n) Σ J_iᵀ ∇A(φ_i(θ)) against central differences of A_n.
        let (m, data, t0) = sym_log(d, 100, 1.5, seed);
        let p = Problem::new(&m, &data).unwrap();
        let mut g = vec![0.0; t0.len()];
        UnprojectedMirrorDescent::stacked_potential(&p, &t0, &mut g).unwrap();
        let mut scratch = vec![0.0; t0.len()];
        let mut t = t0.clone();
        for j in 0..t0.len() {
            let h = 1e-5;
            t[j] = t0[j] + h;
            let fp = UnprojectedMirrorDescent::stacked_potential(&p, &t, &mut scratch).unwrap();
            t[j] = t0[j] - h;
            let fm = UnprojectedMirrorDescent::stacked_potential(&p, &t, &mut scratch).unwrap();
            t[j] = t0[j];
            let fd = (fp - fm) / (2.0 * h);
            prop_assert!((fd - g[j]).abs() < 1e-8 * (1.0 + g[j].abs()), "coord {j}: {fd} vs {}", g[j]);
        }
    }
}

/// A random mixture of experts with data drawn from it (features N(0, I) plus an
/// intercept) and an independent random start.
fn moe_instance(
    kind: Arc<dyn Expert>,
    k: usize,
    gating: Gating,
    n: usize,
    seed: u64,
) -> (MixtureOfExperts, Dataset, Vec<f64>) {
    let d_raw = 2;
    let d = d_raw + 1;
    let model = MixtureOfExperts::new(kind, k, d, gating).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let star = model.random_params(&mut rng, 1.0);
    let mut x = Vec::with_capacity(n * d_raw);
    let mut y = Vec::new();
    let mut row = vec![1.0; d];
    for _ in 0..n {
        for j in 0..d_raw {
            let v: f64 = StandardNormal.sample(&mut rng);
            row[j + 1] = v;
            x.push(v);
        }
        let (yi, _) = model.sample(&star, &row, &mut rng).unwrap();
        y.extend(yi);
    }
    let q = y.len() / n;
    let data = Dataset::from_rows(&x, d_raw, &y, q)
        .unwrap()
        .with_intercept();
    let theta0 = model.random_params(&mut rng, 0.5);
    (model, data, theta0)
}

fn check_moe(kind: Arc<dyn Expert>, gating: Gating, seed: u64) {
    let (model, data, theta0) = moe_instance(kind.clone(), 2, gating, 400, seed);
    let (t_em, l_em, t_md, l_md) = em_and_md(&model, &data, &theta0, 1.0);
    let e = rel_vec(&t_md, &t_em);
    assert!(
        e < 1e-8,
        "{kind:?} {gating:?} seed {seed}: θ differ by {e:e}\nEM {t_em:?}\nMD {t_md:?}"
    );
    assert!(
        rel(l_md, l_em) < 1e-8,
        "{kind:?} {gating:?}: L EM {l_em} MD {l_md}"
    );
    let (_, _, t_half, _) = em_and_md(&model, &data, &theta0, 0.5);
    assert!(
        rel_vec(&t_half, &t_em) > 1e-4,
        "{kind:?} {gating:?}: η = 0.5 should differ"
    );
}

#[test]
fn em_equals_md_eta_one_on_mixtures_of_experts() {
    let kinds: [Arc<dyn Expert>; 4] = [
        Arc::new(LinearGaussian::new()),
        Arc::new(Logistic::new()),
        Arc::new(Multinomial::new(3).unwrap()),
        Arc::new(Poisson::new()),
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        for gating in [Gating::Softmax, Gating::Constant] {
            for seed in 0..3u64 {
                check_moe(kind.clone(), gating, 100 * i as u64 + seed);
            }
        }
    }
}
