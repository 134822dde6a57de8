//! Mixture-of-experts model and EM: the complete-data family, the realisation map, the
//! E-step's objective against a direct computation with statrs densities, monotonicity,
//! stationarity, the M-step's optimality, parameter recovery, thread-count invariance and
//! typed errors.

use em_as_md::{
    ConditionalFamily, Dataset, Em, EmModel, Expert, FitState, Gating, LinearGaussian, Logistic,
    MixtureOfExperts, MoeError, Multinomial, Poisson, Problem, Solver,
};
use mirror::{check_family, CheckConfig, CheckKind, CheckStatus};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use statrs::distribution::{Continuous, Discrete};
use std::sync::Arc;

mod common;
use common::{intercept_row, with_threads};

fn features(n: usize, d: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut xs = Vec::with_capacity(n * d);
    for _ in 0..n {
        xs.extend(intercept_row(d, || StandardNormal.sample(rng)));
    }
    xs
}

/// Data drawn from `model` at `theta`.
fn simulate(model: &MixtureOfExperts, theta: &[f64], n: usize, seed: u64) -> (Dataset, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = model.n_features();
    let xs = features(n, d, &mut rng);
    let mut ys = Vec::new();
    let mut zs = Vec::new();
    for i in 0..n {
        let (y, z) = model
            .sample(theta, &xs[i * d..(i + 1) * d], &mut rng)
            .unwrap();
        ys.extend(y);
        zs.push(z);
    }
    let q = model.expert().family().obs_dim();
    (Dataset::from_rows(&xs, d, &ys, q).unwrap(), zs)
}

fn expert_of(kind: usize) -> Arc<dyn Expert> {
    match kind {
        0 => Arc::new(LinearGaussian::new()),
        1 => Arc::new(Logistic::new()),
        2 => Arc::new(Multinomial::new(3).unwrap()),
        _ => Arc::new(Poisson::new()),
    }
}

/// Random responsibilities bounded away from 0 (a safe start: every expert has weight).
fn random_resp(n: usize, k: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut r = Vec::with_capacity(n * k);
    for _ in 0..n {
        let row: Vec<f64> = (0..k).map(|_| 0.2 + rng.random::<f64>()).collect();
        let s: f64 = row.iter().sum();
        r.extend(row.iter().map(|v| v / s));
    }
    r
}

fn init_theta(model: &MixtureOfExperts, data: &Dataset, seed: u64) -> Vec<f64> {
    let stats = model
        .stats_from_responsibilities(data, &random_resp(data.n(), model.n_experts(), seed))
        .unwrap();
    let start = vec![0.0; model.n_params()];
    let mut start = start;
    // Warm start for Newton solvers: zeros with in-domain constants.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tmp = model.random_params(&mut rng, 0.0);
    start.copy_from_slice(&tmp);
    let mut theta = vec![0.0; model.n_params()];
    model.m_step(data, &stats, &start, &mut theta).unwrap();
    theta
}

fn run_em(
    model: &MixtureOfExperts,
    data: &Dataset,
    theta0: Vec<f64>,
    iters: usize,
    rel_tol: f64,
) -> (FitState, Vec<f64>) {
    let problem = Problem::new(model, data).unwrap();
    let l0 = problem.objective(&theta0).unwrap();
    let mut em = Em::new();
    let mut state = em.init(&problem, FitState::new(theta0, l0)).unwrap();
    let mut trace = vec![l0];
    for _ in 0..iters {
        let prev = state.objective;
        let (s, rec) = em.next_iter(&problem, state).unwrap();
        assert_eq!(rec.objective, s.objective);
        state = s;
        trace.push(state.objective);
        if ((prev - state.objective) / prev.abs().max(1.0)).abs() < rel_tol {
            break;
        }
    }
    (state, trace)
}

// ---------------------------------------------------------------------------------------
// The complete-data family
// ---------------------------------------------------------------------------------------

/// A normalised natural parameter ($A(\varphi) = 0$) of a $K$-component mixture family.
fn normalised_phi(model: &MixtureOfExperts, etas: &[Vec<f64>], rho: &[f64]) -> Vec<f64> {
    let k = model.n_experts();
    let fam = model.expert().family();
    let mut phi = vec![0.0; model.complete().dim()];
    for c in 0..k {
        let p = etas[c].len();
        phi[k + c * p..k + (c + 1) * p].copy_from_slice(&etas[c]);
        phi[c] = rho[c].ln() - fam.log_partition(&etas[c]).unwrap();
    }
    phi
}

#[test]
fn mixture_family_passes_check_family() {
    // Bernoulli components: a lattice family, every check applies.
    let m = MixtureOfExperts::new(Arc::new(Logistic::new()), 3, 1, Gating::Constant).unwrap();
    let phi = normalised_phi(&m, &[vec![0.4], vec![-1.2], vec![2.0]], &[0.2, 0.5, 0.3]);
    let rep = check_family(m.complete(), &phi, &CheckConfig::default()).unwrap();
    assert!(rep.passed(), "{rep}");
    // Gaussian (mean & variance) components: (y, z) mixes Lebesgue and counting measure,
    // which the harness's importance-sampling normalisation check cannot integrate;
    // every other check must pass.
    let m = MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 1, Gating::Constant).unwrap();
    let e0 = mirror::Gaussian::natural_from_mean_var(-1.0, 0.5)
        .unwrap()
        .to_vec();
    let e1 = mirror::Gaussian::natural_from_mean_var(2.0, 1.5)
        .unwrap()
        .to_vec();
    let phi = normalised_phi(&m, &[e0, e1], &[0.35, 0.65]);
    let rep = check_family(m.complete(), &phi, &CheckConfig::default()).unwrap();
    for c in &rep.checks {
        if c.kind != CheckKind::Normalisation {
            assert_ne!(c.status, CheckStatus::Failed, "{rep}");
        }
    }
    // Poisson components.
    let m = MixtureOfExperts::new(Arc::new(Poisson::new()), 2, 1, Gating::Constant).unwrap();
    let phi = normalised_phi(&m, &[vec![0.3], vec![1.5]], &[0.4, 0.6]);
    let rep = check_family(m.complete(), &phi, &CheckConfig::default()).unwrap();
    assert!(rep.passed(), "{rep}");
}

#[test]
fn realise_vjp_matches_finite_differences() {
    for (kind, gating) in [
        (0, Gating::Softmax),
        (1, Gating::Softmax),
        (2, Gating::Constant),
        (3, Gating::Softmax),
        (0, Gating::Constant),
    ] {
        let m = MixtureOfExperts::new(expert_of(kind), 3, 3, gating).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(11 + kind as u64);
        let theta = m.random_params(&mut rng, 0.5);
        let x = [1.0, 0.3, -0.8];
        let dim = m.complete().dim();
        let v: Vec<f64> = (0..dim).map(|_| rng.random::<f64>() - 0.5).collect();
        let mut g = vec![0.0; m.n_params()];
        m.realise_vjp(&theta, &x, &v, &mut g);
        for j in 0..m.n_params() {
            let h = 1e-6;
            let (mut tp, mut tm) = (theta.clone(), theta.clone());
            tp[j] += h;
            tm[j] -= h;
            let (mut pp, mut pm) = (vec![0.0; dim], vec![0.0; dim]);
            m.realise(&tp, &x, &mut pp);
            m.realise(&tm, &x, &mut pm);
            let fd: f64 = (0..dim).map(|a| v[a] * (pp[a] - pm[a]) / (2.0 * h)).sum();
            assert!(
                (fd - g[j]).abs() < 1e-6 * (1.0 + fd.abs()),
                "kind {kind} param {j}: fd {fd} vjp {}",
                g[j]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The objective against statrs
// ---------------------------------------------------------------------------------------

/// $-\frac1n\sum_i\log\sum_k\pi_k(x_i)p_k(y_i\mid x_i)$ written plainly with statrs densities.
fn direct_objective(m: &MixtureOfExperts, kind: usize, theta: &[f64], data: &Dataset) -> f64 {
    let k = m.n_experts();
    let d = data.d();
    let mut total = 0.0;
    for i in 0..data.n() {
        let x = data.x(i);
        let y = data.y(i)[0];
        // Gate probabilities, plainly.
        let logits: Vec<f64> = (0..k)
            .map(|c| {
                if c == k - 1 {
                    0.0
                } else {
                    match m.gating() {
                        Gating::Softmax => (0..d).map(|a| theta[c * d + a] * x[a]).sum(),
                        Gating::Constant => theta[c],
                    }
                }
            })
            .collect();
        let z: f64 = logits.iter().map(|g| g.exp()).sum();
        let mut lik = 0.0;
        for (c, lg) in logits.iter().enumerate() {
            let pi = lg.exp() / z;
            let b = m.expert_block(theta, c);
            let xb = |j: usize| -> f64 { (0..d).map(|a| b[j * d + a] * x[a]).sum() };
            let p = match kind {
                0 => {
                    let (beta, s2) = LinearGaussian::beta_from_natural(b).unwrap();
                    let mean: f64 = (0..d).map(|a| beta[a] * x[a]).sum();
                    statrs::distribution::Normal::new(mean, s2.sqrt())
                        .unwrap()
                        .pdf(y)
                }
                1 => {
                    let pr = 1.0 / (1.0 + (-xb(0)).exp());
                    statrs::distribution::Bernoulli::new(pr)
                        .unwrap()
                        .pmf(y as u64)
                }
                2 => {
                    let e: Vec<f64> = vec![xb(0).exp(), xb(1).exp(), 1.0];
                    e[y as usize] / e.iter().sum::<f64>()
                }
                _ => statrs::distribution::Poisson::new(xb(0).exp())
                    .unwrap()
                    .pmf(y as u64),
            };
            lik += pi * p;
        }
        total += lik.ln();
    }
    -total / data.n() as f64
}

#[test]
fn objective_and_e_step_match_direct_statrs_computation() {
    for kind in 0..4 {
        for gating in [Gating::Softmax, Gating::Constant] {
            let m = MixtureOfExperts::new(expert_of(kind), 3, 3, gating).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(100 + kind as u64);
            let theta = m.random_params(&mut rng, 0.7);
            let (data, _) = simulate(&m, &theta, 300, 5 + kind as u64);
            let problem = Problem::new(&m, &data).unwrap();
            let l = problem.objective(&theta).unwrap();
            let direct = direct_objective(&m, kind, &theta, &data);
            assert!(
                (l - direct).abs() < 1e-10 * direct.abs().max(1.0),
                "kind {kind}: {l} vs {direct}"
            );
            let (stats, le) = m.e_step(&data, &theta).unwrap();
            assert!(
                (le - l).abs() < 1e-12 * l.abs().max(1.0),
                "kind {kind}: E-step {le} vs {l}"
            );
            // Posteriors sum to one.
            for row in stats.resp.chunks(3) {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// EM: monotone, stationary at its fixed point, optimal M-step
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn em_never_increases_objective(kind in 0usize..4, k in 1usize..4, gated in any::<bool>(), seed in 0u64..1000) {
        let gating = if gated { Gating::Softmax } else { Gating::Constant };
        let m = MixtureOfExperts::new(expert_of(kind), k, 2, gating).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let truth = m.random_params(&mut rng, 1.0);
        let (data, _) = simulate(&m, &truth, 150, seed + 1);
        let theta0 = init_theta(&m, &data, seed + 2);
        let (_, trace) = run_em(&m, &data, theta0, 12, 0.0);
        for w in trace.windows(2) {
            prop_assert!(w[1] <= w[0] + 1e-10 * w[0].abs().max(1.0), "L increased: {} -> {}", w[0], w[1]);
        }
    }
}

#[test]
fn em_fixed_point_is_stationary() {
    let m = MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 2, Gating::Softmax).unwrap();
    let mut truth = vec![0.0; m.n_params()];
    truth[..2].copy_from_slice(&[0.3, 2.0]); // gate
    LinearGaussian::natural_from_beta(&[1.0, 2.0], 0.25, m.expert_block_mut(&mut truth, 0))
        .unwrap();
    LinearGaussian::natural_from_beta(&[-1.0, -1.5], 0.25, m.expert_block_mut(&mut truth, 1))
        .unwrap();
    let (data, _) = simulate(&m, &truth, 800, 3);
    let theta0 = init_theta(&m, &data, 4);
    let (state, _) = run_em(&m, &data, theta0, 3000, 1e-15);
    let problem = Problem::new(&m, &data).unwrap();
    let mut g = vec![0.0; m.n_params()];
    let l = problem
        .objective_and_gradient(&state.theta, &mut g)
        .unwrap();
    assert!((l - state.objective).abs() < 1e-12 * l.abs().max(1.0));
    let gn = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(gn < 1e-6, "‖∇L‖ = {gn}");
}

/// The expected complete-data log-likelihood $\sum_i\sum_k r_{ik}[\log\pi_k(x_i) + \log p_k(y_i)]$,
/// computed from the model's public pieces (gate probabilities, family log-density).
fn expected_complete_ll(m: &MixtureOfExperts, theta: &[f64], data: &Dataset, resp: &[f64]) -> f64 {
    let k = m.n_experts();
    let p = m.expert().family().dim();
    let mut pi = vec![0.0; k];
    let mut eta = vec![0.0; p];
    let mut q = 0.0;
    for i in 0..data.n() {
        m.gate_probs(theta, data.x(i), &mut pi);
        for c in 0..k {
            m.expert_natural(theta, c, data.x(i), &mut eta);
            let lp = m.expert().family().log_density(&eta, data.y(i)).unwrap();
            q += resp[i * k + c] * (pi[c].ln() + lp);
        }
    }
    q
}

#[test]
fn m_step_beats_random_perturbations() {
    for kind in 0..4 {
        for gating in [Gating::Softmax, Gating::Constant] {
            let m = MixtureOfExperts::new(expert_of(kind), 3, 2, gating).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(40 + kind as u64);
            let truth = m.random_params(&mut rng, 1.0);
            let (data, _) = simulate(&m, &truth, 300, 41);
            let theta = init_theta(&m, &data, 42);
            let (stats, _) = m.e_step(&data, &theta).unwrap();
            let mut next = vec![0.0; m.n_params()];
            let inner = m.m_step(&data, &stats, &theta, &mut next).unwrap();
            assert!(inner.converged, "kind {kind} {gating:?}: {inner:?}");
            let q0 = expected_complete_ll(&m, &next, &data, &stats.resp);
            assert!(q0 >= expected_complete_ll(&m, &theta, &data, &stats.resp));
            for _ in 0..20 {
                let pert: Vec<f64> = next
                    .iter()
                    .map(|v| v + 1e-3 * (rng.random::<f64>() - 0.5))
                    .collect();
                let qp = expected_complete_ll(&m, &pert, &data, &stats.resp);
                assert!(
                    qp < q0,
                    "kind {kind} {gating:?}: perturbation improved Q: {qp} > {q0}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parameter recovery
// ---------------------------------------------------------------------------------------

fn permutations(k: usize) -> Vec<Vec<usize>> {
    if k == 1 {
        return vec![vec![0]];
    }
    let mut out = Vec::new();
    for p in permutations(k - 1) {
        for pos in 0..k {
            let mut q = p.clone();
            q.insert(pos, k - 1);
            out.push(q);
        }
    }
    out
}

/// Parameter error after the best relabelling: experts (β, σ²) and full gate vectors
/// re-referenced to the new last expert.
fn aligned_error(m: &MixtureOfExperts, fit: &[f64], truth: &[f64]) -> f64 {
    let k = m.n_experts();
    let d = m.n_features();
    let full_gate = |t: &[f64], c: usize| -> Vec<f64> {
        if c == k - 1 {
            vec![0.0; d]
        } else {
            t[c * d..(c + 1) * d].to_vec()
        }
    };
    let mut best = f64::INFINITY;
    for perm in permutations(k) {
        let mut err = 0.0;
        for c in 0..k {
            let (bf, sf) = LinearGaussian::beta_from_natural(m.expert_block(fit, perm[c])).unwrap();
            let (bt, st) = LinearGaussian::beta_from_natural(m.expert_block(truth, c)).unwrap();
            err += bf
                .iter()
                .zip(&bt)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                + (sf - st).powi(2);
            let last = full_gate(fit, perm[k - 1]);
            let gf: Vec<f64> = full_gate(fit, perm[c])
                .iter()
                .zip(&last)
                .map(|(a, b)| a - b)
                .collect();
            err += gf
                .iter()
                .zip(full_gate(truth, c))
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>();
        }
        best = best.min(err.sqrt());
    }
    best
}

#[test]
fn parameters_are_recovered_at_rate_one_over_sqrt_n() {
    let m = MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 3, Gating::Softmax).unwrap();
    let mut truth = vec![0.0; m.n_params()];
    truth[..3].copy_from_slice(&[0.2, 1.5, -1.0]);
    LinearGaussian::natural_from_beta(&[2.0, 1.0, -1.0], 0.04, m.expert_block_mut(&mut truth, 0))
        .unwrap();
    LinearGaussian::natural_from_beta(&[-2.0, -0.5, 1.5], 0.09, m.expert_block_mut(&mut truth, 1))
        .unwrap();
    let mut errs = Vec::new();
    for &n in &[1000usize, 16000] {
        // Average over seeds to tame the sampling noise of one draw.
        let mut e = 0.0;
        for seed in 0..3u64 {
            let (data, _) = simulate(&m, &truth, n, 1000 + seed);
            let theta0 = init_theta(&m, &data, 2000 + seed);
            let (state, _) = run_em(&m, &data, theta0, 500, 1e-12);
            e += aligned_error(&m, &state.best_theta, &truth) / 3.0;
        }
        errs.push(e);
    }
    // n grows 16×: the error should shrink about 4× (allow 2.5×–6.5×).
    let ratio = errs[0] / errs[1];
    assert!(errs[0] < 0.5, "{errs:?}");
    assert!(
        (2.5..6.5).contains(&ratio),
        "errors {errs:?}, ratio {ratio}"
    );
}

// ---------------------------------------------------------------------------------------
// Threads, solver bookkeeping, typed errors
// ---------------------------------------------------------------------------------------

#[test]
fn e_step_is_bit_identical_for_one_and_two_threads() {
    for kind in [0usize, 2] {
        let m = MixtureOfExperts::new(expert_of(kind), 3, 4, Gating::Softmax).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(77);
        let theta = m.random_params(&mut rng, 0.5);
        let (data, _) = simulate(&m, &theta, 9000, 78);
        let run = |threads: usize| {
            with_threads(threads, || {
                let (s, l) = m.e_step(&data, &theta).unwrap();
                let mut next = vec![0.0; m.n_params()];
                m.m_step(&data, &s, &theta, &mut next).unwrap();
                (s, l, next)
            })
        };
        let (s1, l1, n1) = run(1);
        let (s2, l2, n2) = run(2);
        assert_eq!(l1.to_bits(), l2.to_bits());
        assert_eq!(s1, s2);
        assert!(n1.iter().zip(&n2).all(|(a, b)| a.to_bits() == b.to_bits()));
        // The responsibilities are one n × K buffer of exactly that size (written in
        // place by the chunks, not collected and grown by merging).
        for s in [&s1, &s2] {
            assert_eq!(s.resp.len(), 9000 * 3);
            assert_eq!(s.resp.capacity(), s.resp.len());
        }
    }
}

#[test]
fn em_solver_records_objective_at_returned_parameters_and_keeps_best() {
    let m = MixtureOfExperts::new(Arc::new(Logistic::new()), 2, 2, Gating::Softmax).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let truth = m.random_params(&mut rng, 2.0);
    let (data, _) = simulate(&m, &truth, 400, 6);
    let problem = Problem::new(&m, &data).unwrap();
    let theta0 = init_theta(&m, &data, 7);
    let mut em = Em::new().with_bregman(true);
    let mut state = em
        .init(
            &problem,
            FitState::new(theta0.clone(), problem.objective(&theta0).unwrap()),
        )
        .unwrap();
    for _ in 0..5 {
        let prev = state.theta.clone();
        let (s, rec) = em.next_iter(&problem, state).unwrap();
        let recomputed = problem.objective(&s.theta).unwrap();
        assert!((recomputed - s.objective).abs() < 1e-12 * recomputed.abs());
        assert!(rec.bregman_step >= 0.0);
        let kl = problem.stacked_bregman(&s.theta, &prev).unwrap();
        assert!((kl - rec.bregman_step).abs() < 1e-14);
        assert!(s.best_objective <= s.objective);
        state = s;
    }
    assert_eq!(state.iter, 5);
}

#[test]
fn bad_inputs_give_typed_errors() {
    let lin: Arc<dyn Expert> = Arc::new(LinearGaussian::new());
    assert!(matches!(
        MixtureOfExperts::new(lin.clone(), 0, 2, Gating::Softmax),
        Err(MoeError::InvalidParam {
            name: "n_experts",
            ..
        })
    ));
    // Target outside the support: y = 2 for logistic experts.
    let m = MixtureOfExperts::new(Arc::new(Logistic::new()), 2, 1, Gating::Softmax).unwrap();
    let data = Dataset::from_rows(&[1.0; 4], 1, &[0.0, 1.0, 2.0, 1.0], 1).unwrap();
    let theta = vec![0.0; m.n_params()];
    assert!(matches!(
        m.e_step(&data, &theta),
        Err(MoeError::InvalidData { row: Some(2), .. })
    ));
    assert!(matches!(
        Problem::new(&m, &data),
        Err(MoeError::InvalidData { row: Some(2), .. })
    ));
    // More experts than rows.
    let m = MixtureOfExperts::new(lin, 5, 1, Gating::Softmax).unwrap();
    let data = Dataset::from_rows(&[1.0; 3], 1, &[0.0, 1.0, 2.0], 1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let theta = m.random_params(&mut rng, 0.1);
    assert!(matches!(
        m.e_step(&data, &theta),
        Err(MoeError::InvalidParam {
            name: "n_experts",
            ..
        })
    ));
    assert!(matches!(
        m.stats_from_responsibilities(&data, &[0.2; 15]),
        Err(MoeError::InvalidParam {
            name: "n_experts",
            ..
        })
    ));
    // Wrong θ length.
    assert!(matches!(
        m.e_step(&data, &[0.0; 2]),
        Err(MoeError::InvalidParam { name: "theta", .. })
    ));
    // An expert with no weight cannot be fitted: the Cholesky failure names the expert.
    let m = MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 2, Gating::Constant).unwrap();
    let data = Dataset::from_rows(
        &[1.0, 0.1, 1.0, 0.5, 1.0, -0.3, 1.0, 0.9],
        2,
        &[0.1, 0.4, -0.2, 1.1],
        1,
    )
    .unwrap();
    let resp = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
    let stats = m.stats_from_responsibilities(&data, &resp).unwrap();
    let mut next = vec![0.0; m.n_params()];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let theta = m.random_params(&mut rng, 0.1);
    let e = m.m_step(&data, &stats, &theta, &mut next).unwrap_err();
    assert!(matches!(e, MoeError::NonFinite { .. }), "{e:?}");
    // Collinear features: the weighted Gram of expert 0 is singular.
    let data = Dataset::from_rows(
        &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        2,
        &[0.1, 0.4, -0.2, 1.1],
        1,
    )
    .unwrap();
    let stats = m.stats_from_responsibilities(&data, &[0.5; 8]).unwrap();
    let e = m.m_step(&data, &stats, &theta, &mut next).unwrap_err();
    assert!(
        matches!(
            e.root(),
            MoeError::NotPositiveDefinite {
                block: em_as_md::error::Block::Expert(Some(0)),
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn custom_family_plugs_in_through_glm() {
    // A family the crate knows nothing about as an expert: `Glm` over mirror's Poisson
    // (generic moments through `fisher`, generic Newton) must take the same EM step as the
    // built-in Poisson expert.
    let builtin = MixtureOfExperts::new(Arc::new(Poisson::new()), 2, 2, Gating::Softmax).unwrap();
    let glm = em_as_md::Glm::new(Arc::new(mirror::Poisson::new()));
    let custom = MixtureOfExperts::new(Arc::new(glm), 2, 2, Gating::Softmax).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let truth = builtin.random_params(&mut rng, 0.8);
    let (data, _) = simulate(&builtin, &truth, 400, 22);
    let theta = init_theta(&builtin, &data, 23);
    let step = |m: &MixtureOfExperts| {
        let (s, l) = m.e_step(&data, &theta).unwrap();
        let mut next = vec![0.0; m.n_params()];
        m.m_step(&data, &s, &theta, &mut next).unwrap();
        (l, next)
    };
    let (l1, n1) = step(&builtin);
    let (l2, n2) = step(&custom);
    assert!((l1 - l2).abs() < 1e-13 * l1.abs());
    for (a, b) in n1.iter().zip(&n2) {
        assert!((a - b).abs() < 1e-8 * (1.0 + a.abs()), "{n1:?} vs {n2:?}");
    }
    // Built from a family value (not through the registry), it has no description.
    assert!(matches!(
        custom.spec(),
        Err(MoeError::Registry(
            em_as_md::RegistryError::NotSerialisable { .. }
        ))
    ));
}

#[test]
fn e_step_gate_statistics_match_a_separate_gate_pass() {
    let m = MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 3, 3, Gating::Softmax).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let theta = m.random_params(&mut rng, 0.7);
    let (data, _) = simulate(&m, &theta, 5000, 32);
    let (stats, _) = m.e_step(&data, &theta).unwrap();
    let gs = stats
        .gate
        .as_ref()
        .expect("gated model carries gate statistics");
    let mut g = vec![0.0; m.gate_block(&theta).len()];
    let q =
        em_as_md::model::gate::gate_objective(&data, &stats.resp, 3, m.gate_block(&theta), &mut g)
            .unwrap();
    let n = data.n() as f64;
    assert_eq!(gs.w, m.gate_block(&theta));
    assert!((gs.q / n - q).abs() < 1e-12 * q.abs());
    for (a, b) in gs.grad.iter().zip(&g) {
        assert!((a / n - b).abs() < 1e-12);
    }
    // Hessian symmetric and positive definite.
    let h = &gs.hess;
    for a in 0..h.nrows() {
        for b in 0..h.ncols() {
            assert_eq!(h[(a, b)], h[(b, a)]);
        }
    }
    assert!(h.llt(faer::Side::Lower).is_ok());
}

#[test]
fn gate_hessian_reuse_changes_the_work_not_the_m_step() {
    // A gated 3-expert logistic model: the gate and the experts are Newton M-steps.
    let base = MixtureOfExperts::new(expert_of(1), 3, 3, Gating::Softmax).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let truth = base.random_params(&mut rng, 1.5);
    let (data, _) = simulate(&base, &truth, 3000, 22);
    let newton = base.clone().with_gate_config(em_as_md::GateConfig {
        reuse_below: 0.0,
        ..em_as_md::GateConfig::default()
    });
    let newton = newton.unwrap();
    let chord = base.with_gate_config(em_as_md::GateConfig {
        reuse_below: 0.5,
        ..em_as_md::GateConfig::default()
    });
    let chord = chord.unwrap();
    let mut theta = init_theta(&newton, &data, 23);
    let (mut hn, mut hc) = (0, 0);
    for _ in 0..5 {
        let (stats, _) = newton.e_step(&data, &theta).unwrap();
        let (mut a, mut b) = (vec![0.0; theta.len()], vec![0.0; theta.len()]);
        let sn = newton.m_step(&data, &stats, &theta, &mut a).unwrap();
        let sc = chord.m_step(&data, &stats, &theta, &mut b).unwrap();
        assert!(sn.converged && sc.converged, "{sn:?} {sc:?}");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-8 * (1.0 + x.abs()), "{x} vs {y}");
        }
        hn += sn.hessians;
        hc += sc.hessians;
        theta = a;
    }
    assert!(hc < hn, "Hessians formed: chord {hc}, Newton {hn}");
}

#[test]
fn lbfgs_gate_e_step_skips_the_gate_sums_but_not_the_likelihood() {
    let newton = MixtureOfExperts::new(expert_of(0), 3, 3, Gating::Softmax).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let truth = newton.random_params(&mut rng, 1.0);
    let (data, _) = simulate(&newton, &truth, 2500, 32);
    let lbfgs = newton
        .clone()
        .with_gate_config(em_as_md::GateConfig {
            solver: em_as_md::GateSolver::Lbfgs,
            ..em_as_md::GateConfig::default()
        })
        .unwrap();
    let theta = init_theta(&newton, &data, 33);
    let (sn, ln) = newton.e_step(&data, &theta).unwrap();
    let (sl, ll) = lbfgs.e_step(&data, &theta).unwrap();
    assert!(sn.gate.is_some() && sl.gate.is_none());
    assert_eq!(ln.to_bits(), ll.to_bits());
    assert_eq!(sn.resp, sl.resp);
    // …and the objective is the model's L, computed independently of the E-step.
    let l = Problem::new(&lbfgs, &data)
        .unwrap()
        .objective(&theta)
        .unwrap();
    assert!((l - ll).abs() <= 1e-12 * l.abs().max(1.0), "{l} vs {ll}");
}
