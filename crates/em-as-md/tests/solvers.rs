//! The comparison solvers on the symmetric models (and a gated linear MoE): recorded
//! objective = recomputed objective, monotonicity where theory promises it, gradient EM
//! with one step = gradient descent, domain failures reported, and the EM fixed point is
//! stationary.

use em_as_md::model::expert::LinearGaussian;
use em_as_md::{ConditionalFamily, IterRecord};
use em_as_md::{
    Dataset, Em, Executor, FitState, Gating, GradientDescent, GradientEm, MirrorDescent,
    MixtureOfExperts, MoeError, Problem, Solver, Step, SymMoLinE, SymMoLogE, Termination,
    UnprojectedMirrorDescent,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::sync::Arc;

fn sym_lin(seed: u64) -> (SymMoLinE, Dataset, Vec<f64>) {
    let model = SymMoLinE::new(3, 1.0).unwrap();
    let star = model.random_theta(2.0, 1.5, seed).unwrap();
    let (data, _) = model.simulate(&star, 500, seed + 1).unwrap();
    let theta0 = model.random_theta(1.0, 0.5, seed + 2).unwrap();
    (model, data, theta0)
}

fn sym_log(seed: u64) -> (SymMoLogE, Dataset, Vec<f64>) {
    let model = SymMoLogE::new(3).unwrap();
    let star = model.random_theta(3.0, 1.5, seed).unwrap();
    let (data, _) = model.simulate(&star, 500, seed + 1).unwrap();
    let theta0 = model.random_theta(1.0, 0.5, seed + 2).unwrap();
    (model, data, theta0)
}

/// Runs `iters` steps by hand, returning the states (state 0 included) and records.
fn run<M, S>(
    p: &Problem<'_, M>,
    mut solver: S,
    theta0: &[f64],
    iters: usize,
) -> (Vec<FitState>, Vec<IterRecord>)
where
    M: ConditionalFamily + ?Sized,
    for<'a> S: Solver<Problem<'a, M>>,
{
    let mut state = FitState::new(theta0.to_vec(), p.objective(theta0).unwrap());
    state = solver.init(p, state).unwrap();
    let mut states = vec![state.clone()];
    let mut recs = Vec::new();
    for _ in 0..iters {
        let (s, r) = solver.next_iter(p, state).unwrap();
        states.push(s.clone());
        recs.push(r);
        state = s;
    }
    (states, recs)
}

/// Every state's objective is L at its own θ, and every record repeats it.
fn assert_consistent<M: ConditionalFamily + ?Sized>(
    p: &Problem<'_, M>,
    states: &[FitState],
    recs: &[IterRecord],
    name: &str,
) {
    for (s, r) in states[1..].iter().zip(recs) {
        let l = p.objective(&s.theta).unwrap();
        assert!(
            (s.objective - l).abs() <= 1e-13 * l.abs().max(1.0),
            "{name}: recorded {} vs recomputed {l}",
            s.objective
        );
        assert_eq!(r.objective, s.objective, "{name}");
        assert_eq!(r.iter, s.iter, "{name}");
    }
}

fn gated_linear_moe(seed: u64) -> (MixtureOfExperts, Dataset, Vec<f64>) {
    let model =
        MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 3, Gating::Softmax).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let star = model.random_params(&mut rng, 1.5);
    let n = 400;
    let mut x = Vec::new();
    let mut y = Vec::new();
    for _ in 0..n {
        let r: Vec<f64> = (0..2).map(|_| StandardNormal.sample(&mut rng)).collect();
        let (yi, _) = model.sample(&star, &[1.0, r[0], r[1]], &mut rng).unwrap();
        x.extend(r);
        y.extend(yi);
    }
    let data = Dataset::from_rows(&x, 2, &y, 1).unwrap().with_intercept();
    let theta0 = model.random_params(&mut rng, 0.5);
    (model, data, theta0)
}

#[test]
fn recorded_objective_equals_recomputed_for_every_solver() {
    let (m, data, t0) = sym_lin(3);
    let p = Problem::new(&m, &data).unwrap();
    let check =
        |name: &str, (s, r): (Vec<FitState>, Vec<IterRecord>)| assert_consistent(&p, &s, &r, name);
    check("EM", run(&p, Em::new(), &t0, 5));
    check(
        "MD 0.5",
        run(&p, MirrorDescent::with_eta(0.5).unwrap(), &t0, 5),
    );
    check(
        "MD 1",
        run(&p, MirrorDescent::with_eta(1.0).unwrap(), &t0, 5),
    );
    check(
        "uMD 1",
        run(&p, UnprojectedMirrorDescent::with_eta(1.0).unwrap(), &t0, 5),
    );
    check(
        "GD",
        run(
            &p,
            GradientDescent::new(Step::Constant(0.1)).unwrap(),
            &t0,
            5,
        ),
    );
    check(
        "GD Armijo",
        run(&p, GradientDescent::new(Step::armijo()).unwrap(), &t0, 5),
    );
    check(
        "GEM",
        run(&p, GradientEm::new(Step::Constant(0.1)).unwrap(), &t0, 5),
    );
    check(
        "GEM Armijo",
        run(&p, GradientEm::new(Step::armijo()).unwrap(), &t0, 5),
    );
    // And through the executor, which fills elapsed and best.
    let res = Executor::new(p, MirrorDescent::with_eta(1.0).unwrap())
        .theta0(t0.clone())
        .max_iters(4)
        .run()
        .unwrap();
    assert_eq!(res.termination, Termination::MaxIters);
    let l = p.objective(&res.state.theta).unwrap();
    assert!((res.state.objective - l).abs() <= 1e-13 * l.abs().max(1.0));
    assert_eq!(res.trace.len(), 4);
}

#[test]
fn bregman_step_is_the_average_kl_between_successive_laws() {
    let (m, data, t0) = sym_log(5);
    let p = Problem::new(&m, &data).unwrap();
    let (s, r) = run(&p, MirrorDescent::with_eta(1.0).unwrap(), &t0, 3);
    for t in 0..3 {
        let d = p.stacked_bregman(&s[t + 1].theta, &s[t].theta).unwrap();
        assert!(r[t].bregman_step >= 0.0);
        assert_eq!(r[t].bregman_step, d);
        assert!(r[t].grad_norm.is_finite());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, rng_seed: proptest::test_runner::RngSeed::Fixed(11), ..ProptestConfig::default() })]

    #[test]
    fn em_and_damped_md_never_increase_l(seed in 0u64..1000, which in 0usize..3) {
        let mono = |states: &[FitState]| {
            for w in states.windows(2) {
                assert!(w[1].objective <= w[0].objective + 1e-10 * w[0].objective.abs().max(1.0),
                        "L increased: {} -> {}", w[0].objective, w[1].objective);
            }
        };
        match which {
            0 => {
                let (m, data, t0) = sym_lin(seed);
                let p = Problem::new(&m, &data).unwrap();
                mono(&run(&p, Em::new(), &t0, 25).0);
                mono(&run(&p, MirrorDescent::with_eta(0.5).unwrap(), &t0, 8).0);
            }
            1 => {
                let (m, data, t0) = sym_log(seed);
                let p = Problem::new(&m, &data).unwrap();
                mono(&run(&p, Em::new(), &t0, 25).0);
                mono(&run(&p, MirrorDescent::with_eta(0.5).unwrap(), &t0, 8).0);
            }
            _ => {
                let (m, data, t0) = gated_linear_moe(seed);
                let p = Problem::new(&m, &data).unwrap();
                mono(&run(&p, Em::new(), &t0, 25).0);
            }
        }
    }

    #[test]
    fn gd_small_constant_step_and_armijo_decrease_l(seed in 0u64..1000, which in 0usize..2) {
        let dec = |states: &[FitState]| {
            for w in states.windows(2) {
                assert!(w[1].objective <= w[0].objective, "L increased: {} -> {}", w[0].objective, w[1].objective);
            }
            assert!(states.last().unwrap().objective < states[0].objective);
        };
        if which == 0 {
            let (m, data, t0) = sym_lin(seed);
            let p = Problem::new(&m, &data).unwrap();
            dec(&run(&p, GradientDescent::new(Step::Constant(0.05)).unwrap(), &t0, 20).0);
            dec(&run(&p, GradientDescent::new(Step::armijo()).unwrap(), &t0, 20).0);
            dec(&run(&p, GradientEm::new(Step::armijo()).unwrap(), &t0, 20).0);
        } else {
            let (m, data, t0) = sym_log(seed);
            let p = Problem::new(&m, &data).unwrap();
            dec(&run(&p, GradientDescent::new(Step::Constant(0.05)).unwrap(), &t0, 20).0);
            dec(&run(&p, GradientDescent::new(Step::armijo()).unwrap(), &t0, 20).0);
            dec(&run(&p, GradientEm::new(Step::armijo()).unwrap(), &t0, 20).0);
        }
    }

    #[test]
    fn gradient_em_with_one_constant_step_is_gradient_descent(seed in 0u64..1000, alpha in 0.01f64..0.5) {
        // ∇Q_t(θ_t) = ∇L(θ_t) (Fisher's identity).
        let (m, data, t0) = sym_lin(seed);
        let p = Problem::new(&m, &data).unwrap();
        let (a, _) = run(&p, GradientEm::new(Step::Constant(alpha)).unwrap(), &t0, 5);
        let (b, _) = run(&p, GradientDescent::new(Step::Constant(alpha)).unwrap(), &t0, 5);
        for (sa, sb) in a.iter().zip(&b) {
            for (x, y) in sa.theta.iter().zip(&sb.theta) {
                prop_assert!((x - y).abs() < 1e-12 * y.abs().max(1.0), "{x} vs {y}");
            }
        }
    }
}

#[test]
fn em_fixed_point_is_stationary_and_md_reaches_it() {
    let (m, data, t0) = sym_lin(42);
    let p = Problem::new(&m, &data).unwrap();
    let em = Executor::new(p, Em::new())
        .theta0(t0.clone())
        .max_iters(500)
        .tol(1e-15)
        .run()
        .unwrap();
    let mut g = vec![0.0; t0.len()];
    p.objective_and_gradient(&em.state.theta, &mut g).unwrap();
    let gn = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(
        gn < 1e-6,
        "‖∇L‖ = {gn:e} at the EM fixed point ({})",
        em.termination
    );
    let md = Executor::new(p, MirrorDescent::with_eta(0.5).unwrap())
        .theta0(t0)
        .max_iters(500)
        .tol(1e-15)
        .run()
        .unwrap();
    for (a, b) in md.state.theta.iter().zip(&em.state.theta) {
        assert!(
            (a - b).abs() < 1e-5,
            "MD(0.5) {:?} vs EM {:?}",
            md.state.theta,
            em.state.theta
        );
    }
}

#[test]
fn extrapolating_md_that_leaves_the_domain_is_reported() {
    // One row: with η = 3 the gate target m_1 = (1-η)σ(0) + η r ≈ 1.95 > 1 is outside the
    // mean domain (0, 1) and log(1 + e^u) − m_1 u is unbounded below.
    let m = SymMoLinE::new(1, 1.0).unwrap();
    let data = Dataset::from_rows(&[1.0], 1, &[2.0], 1).unwrap();
    let p = Problem::new(&m, &data).unwrap();
    let t0 = vec![1.0, 0.0];
    let l0 = p.objective(&t0).unwrap();
    let mut md = MirrorDescent::with_eta(3.0).unwrap();
    let e = md.next_iter(&p, FitState::new(t0.clone(), l0)).unwrap_err();
    assert!(matches!(e, MoeError::LeftDomain { .. }), "{e:?}");
    assert_eq!(md.last_step().rows_outside_mean_domain, 1);
    let mut strict = MirrorDescent::with_eta(3.0)
        .unwrap()
        .strict_mean_domain(true);
    let e = strict
        .next_iter(&p, FitState::new(t0.clone(), l0))
        .unwrap_err();
    assert!(matches!(e, MoeError::LeftDomain { .. }), "{e:?}");
    // The unprojected form fails the same way (its target is not in the range of ∇A_n).
    let mut u = UnprojectedMirrorDescent::with_eta(3.0).unwrap();
    let e = u.next_iter(&p, FitState::new(t0.clone(), l0)).unwrap_err();
    assert!(matches!(e, MoeError::LeftDomain { .. }), "{e:?}");
    // η = 1 on the same row is fine.
    assert!(MirrorDescent::with_eta(1.0)
        .unwrap()
        .next_iter(&p, FitState::new(t0, l0))
        .is_ok());
}

#[test]
fn unprojected_md_refuses_a_curved_realisation() {
    let (m, data, t0) = gated_linear_moe(1);
    assert!(!m.is_linear());
    let p = Problem::new(&m, &data).unwrap();
    let l0 = p.objective(&t0).unwrap();
    let e = UnprojectedMirrorDescent::with_eta(1.0)
        .unwrap()
        .next_iter(&p, FitState::new(t0, l0))
        .unwrap_err();
    assert!(
        matches!(e, MoeError::InvalidParam { name: "model", .. }),
        "{e:?}"
    );
}

#[test]
fn too_large_constant_gd_step_is_not_hidden() {
    // A huge constant step either errors (non-finite) or raises L; it never silently
    // reports a decrease.
    let (m, data, t0) = sym_lin(9);
    let p = Problem::new(&m, &data).unwrap();
    let l0 = p.objective(&t0).unwrap();
    let mut gd = GradientDescent::new(Step::Constant(1e3)).unwrap();
    match gd.next_iter(&p, FitState::new(t0, l0)) {
        Ok((s, _)) => assert!(s.objective > l0, "{} vs {l0}", s.objective),
        Err(e) => assert!(matches!(
            e,
            MoeError::NonFinite { .. } | MoeError::LeftDomain { .. }
        )),
    }
}

#[test]
fn a_gradient_step_out_of_the_natural_domain_is_left_domain() {
    // Linear-Gaussian experts carry τ = −1/(2σ²) < 0; a huge constant step pushes it past 0.
    let (m, data, t0) = gated_linear_moe(1);
    let p = Problem::new(&m, &data).unwrap();
    let l0 = p.objective(&t0).unwrap();
    let e = GradientDescent::new(Step::Constant(1e3))
        .unwrap()
        .next_iter(&p, FitState::new(t0.clone(), l0))
        .unwrap_err();
    assert!(matches!(e, MoeError::LeftDomain { .. }), "{e:?}");
    // Armijo backtracks into the domain instead.
    let (s, r) = GradientDescent::new(Step::Armijo {
        initial: 1e3,
        shrink: 0.5,
        c: 1e-4,
    })
    .unwrap()
    .next_iter(&p, FitState::new(t0, l0))
    .unwrap();
    assert!(s.objective < l0 && r.inner.iterations > 1, "{r:?}");
}

/// A gated linear MoE with `d` features whose scales fall geometrically from 1 to
/// `1/spread`: a high-dimensional, ill-conditioned mirror-descent subproblem.
fn wide_badly_scaled_moe(
    d: usize,
    spread: f64,
    seed: u64,
) -> (MixtureOfExperts, Dataset, Vec<f64>) {
    let model =
        MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, d + 1, Gating::Softmax).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let star = model.random_params(&mut rng, 0.5);
    let n = 1500;
    let scale = |j: usize| spread.powf(-(j as f64) / (d - 1) as f64);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let r: Vec<f64> = (0..d)
            .map(|j| {
                let z: f64 = StandardNormal.sample(&mut rng);
                scale(j) * z
            })
            .collect::<Vec<f64>>();
        let mut row = vec![1.0];
        row.extend(&r);
        let (yi, _) = model.sample(&star, &row, &mut rng).unwrap();
        x.extend(r);
        y.extend(yi);
    }
    let data = Dataset::from_rows(&x, d, &y, 1).unwrap().with_intercept();
    let theta0 = model.random_params(&mut rng, 0.3);
    (model, data, theta0)
}

/// $\frac1n\sum_i J_i^\top\nabla^2A(\varphi_i)J_i$ (row-major) formed the slow, obvious way:
/// $J_i$ from `realise_vjp` on unit vectors (`realise_jacobian`) and $\nabla^2A$ from the
/// family's allocating `fisher`.
fn explicit_complete_information<M: ConditionalFamily + ?Sized>(
    model: &M,
    data: &Dataset,
    theta: &[f64],
) -> Vec<f64> {
    let k = theta.len();
    let mut phi = vec![0.0; model.complete().dim()];
    let mut h = vec![0.0; k * k];
    for i in 0..data.n() {
        model.realise(theta, data.x(i), &mut phi);
        let j = model.realise_jacobian(theta, data.x(i));
        let f = model.complete().fisher(&phi).unwrap();
        let jtfj = j.transpose() * &f * &j;
        for a in 0..k {
            for b in 0..k {
                h[a * k + b] += jtfj[(a, b)] / data.n() as f64;
            }
        }
    }
    h
}

/// The relative gap between `complete_information` and [`explicit_complete_information`].
fn complete_information_gap<M: ConditionalFamily + ?Sized>(
    model: &M,
    data: &Dataset,
    theta: &[f64],
) -> f64 {
    let p = Problem::new(model, data).unwrap();
    let fast = em_as_md::solve::md::complete_information(&p, theta).unwrap();
    em_as_md::testkit::relative_gap(&fast, &explicit_complete_information(model, data, theta))
        .unwrap()
}

/// `complete_information` agrees with the explicit per-row sum on both of its paths: the
/// mixture's weighted Gram products (`complete_information_sums`, equal to the first of
/// `information_sums`' pair) and the per-row block products of
/// a model without them (SymMoLinE, SymMoLogE).
#[test]
fn complete_information_matches_the_explicit_row_sum() {
    let (model, data, theta) = wide_badly_scaled_moe(3, 10.0, 11);
    let (ic, _) = model.information_sums(&data, &theta).unwrap();
    let gap = complete_information_gap(&model, &data, &theta);
    assert!(gap < 1e-12, "gated MoE: {gap:e}");
    // The I_c-only entry MD calls is the first matrix of the pair.
    let alone = model.complete_information_sums(&data, &theta).unwrap();
    let flat = |m: &faer::Mat<f64>| -> Vec<f64> {
        (0..m.nrows() * m.ncols())
            .map(|e| m[(e / m.ncols(), e % m.ncols())])
            .collect()
    };
    let gap = em_as_md::testkit::relative_gap(&flat(&alone), &flat(&ic)).unwrap();
    assert!(gap < 1e-13, "I_c alone vs with I_m: {gap:e}");
    for seed in [3, 4] {
        let (model, data, theta) = sym_lin(seed);
        assert!(model.information_sums(&data, &theta).is_none());
        let gap = complete_information_gap(&model, &data, &theta);
        assert!(gap < 1e-12, "SymMoLinE: {gap:e}");
        let (model, data, theta) = sym_log(seed);
        let gap = complete_information_gap(&model, &data, &theta);
        assert!(gap < 1e-12, "SymMoLogE: {gap:e}");
    }
}

/// Regression: on a 95-parameter subproblem with κ(I_c) ≈ 8·10⁴, solved without the
/// preconditioner, plain L-BFGS needs about 2300 iterations; the former fixed cap of 1000
/// stopped it short (an inexact step). The scaled cap allows more than 1000, and since the
/// inner solve hands a stalled L-BFGS over to its Newton endgame, both the fixed and the
/// scaled cap now converge, in far fewer iterations than the cap, to the same θ⁺.
#[test]
fn md_inner_cap_scales_with_a_large_ill_conditioned_subproblem() {
    use em_as_md::solve::md::{
        complete_information, condition_number, inner_iteration_cap, DEFAULT_INNER_MAX,
    };
    let (model, data, theta0) = wide_badly_scaled_moe(30, 100.0, 5);
    let p = Problem::new(&model, &data).unwrap();
    let k = theta0.len();
    let kappa = condition_number(&complete_information(&p, &theta0).unwrap(), k).unwrap();
    assert!(k == 95 && kappa > 1e4, "k {k} κ {kappa}");
    let cap = inner_iteration_cap(DEFAULT_INNER_MAX, k, Some(kappa));
    assert!(cap > DEFAULT_INNER_MAX, "cap {cap}");

    let mut fixed = MirrorDescent::with_eta(0.5)
        .unwrap()
        .precondition(false)
        .fixed_inner_cap(true);
    let (a, st) = fixed.step(&p, &theta0).unwrap();
    assert!(
        st.converged && st.residual <= 1e-11 && st.iterations < DEFAULT_INNER_MAX as u64,
        "{st:?}"
    );

    let mut md = MirrorDescent::with_eta(0.5).unwrap().precondition(false);
    let (b, st) = md.step(&p, &theta0).unwrap();
    assert!(st.converged && st.residual <= 1e-11, "{st:?}");
    assert!(st.iterations <= cap as u64, "{st:?}, cap {cap}");
    let gap = em_as_md::testkit::relative_gap(&a, &b).unwrap();
    assert!(gap < 1e-9, "fixed vs scaled cap: {gap:e}");
}

/// Regression (draw 68 of the Poisson group of the 1040-draw equivalence test): counts up
/// to 1.8·10⁴ make F resolvable only to ~10⁻¹⁰, so L-BFGS's value-comparing line search
/// stalls with ‖∇F‖∞ ≈ 10⁻⁶ and ran into its 1000-iteration cap (~30 000 evaluations).
/// The Newton endgame of the inner solve reaches 10⁻¹¹ and EM ≡ MD(η = 1) to 1e-8.
#[test]
fn md_inner_solve_converges_where_values_are_below_round_off() {
    use em_as_md::inner::lbfgs::Lbfgs;
    use em_as_md::model::expert::Poisson;
    use em_as_md::testkit::{draw, em_md_gap, DrawConfig};
    let model = MixtureOfExperts::new(Arc::new(Poisson::new()), 2, 4, Gating::Softmax).unwrap();
    let config = DrawConfig {
        rows: 80..160,
        ..DrawConfig::default()
    };
    let d = draw(&model, &config, 86, 4166672947070364109).unwrap();
    let p = Problem::new(&model, &d.data).unwrap();
    // L-BFGS alone (no endgame) stalls: 1000 iterations, residual far above 1e-11.
    let m = p.md_targets(&d.theta0, 1.0).unwrap();
    let mut th = d.theta0.clone();
    let lbfgs = Lbfgs {
        grad_tol: 1e-11,
        max_iter: 1000,
        ..Lbfgs::default()
    };
    // Preconditioned by I_c(θ_t), as MirrorDescent's phase 1.
    let k = th.len();
    // (Formed explicitly: whether L-BFGS stalls here turns on the round-off of I_c.)
    let h = explicit_complete_information(&model, &d.data, &d.theta0);
    let llt = em_as_md::faer::Mat::from_fn(k, k, |a, b| h[a * k + b])
        .llt(em_as_md::faer::Side::Lower)
        .unwrap();
    let mut pc = |v: &mut [f64]| {
        use em_as_md::faer::linalg::solvers::Solve;
        let sol = llt.solve(em_as_md::faer::Mat::from_fn(k, 1, |i, _| v[i]));
        for (i, vi) in v.iter_mut().enumerate() {
            *vi = sol[(i, 0)];
        }
    };
    let r = lbfgs
        .minimize_preconditioned(|t, g| p.md_subproblem(t, &m, g), &mut th, Some(&mut pc))
        .unwrap();
    assert!(!r.converged && r.grad_norm > 1e-9, "{r:?}");
    // MirrorDescent's two-phase solve converges, in far fewer iterations.
    let gap = em_md_gap(&model, &d.data, &d.theta0, 1.0).unwrap();
    assert!(gap.agrees(1e-8), "{gap}");
    assert!(gap.md_inner.iterations < 300, "{gap}");
}
