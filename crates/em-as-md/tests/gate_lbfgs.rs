//! The gate's L-BFGS M-step ([`GateSolver::Lbfgs`]), the Levenberg-shifted Newton step on
//! a singular gate Hessian (the experts' policy), and the configurable L-BFGS budget of
//! multinomial experts ([`Multinomial::with_lbfgs_budget`]).

use em_as_md::model::gate::{fit_softmax_gate, fit_softmax_gate_lbfgs, gate_objective, GateFit};
use em_as_md::{
    Dataset, Em, Executor, Expert, GateConfig, GateSolver, Gating, MixtureOfExperts, MoeError,
    Multinomial, Problem, WeightedFit,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

mod common;
use common::intercept_row;

/// $n$ rows: an intercept, `d - 1` uniform features on $[-1, 1]$, and, when `dup`, the last
/// feature once more (a duplicated column: the gate Hessian is singular). Targets are
/// classes $0..C$ drawn from a feature-dependent rule; soft labels over `k` experts are
/// positive rows summing to 1 that depend on $x$.
fn design(n: usize, d: usize, c: usize, k: usize, dup: bool, seed: u64) -> (Dataset, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cols = if dup { d + 1 } else { d };
    let mut x = Vec::with_capacity(n * cols);
    let mut y = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n * k);
    for _ in 0..n {
        let row = intercept_row(d, || rng.random::<f64>() * 2.0 - 1.0);
        let u = row[1.min(d - 1)];
        let cls = if rng.random::<f64>() < 0.7 {
            (((u + 1.0) * 0.5 * c as f64) as usize).min(c - 1)
        } else {
            rng.random_range(0..c)
        };
        y.push(cls as f64);
        let mut s: Vec<f64> = (0..k)
            .map(|j| (rng.random::<f64>() + 0.2) * (1.0 + u * j as f64).abs().max(0.05))
            .collect();
        let tot: f64 = s.iter().sum();
        s.iter_mut().for_each(|v| *v /= tot);
        labels.extend(s);
        x.extend_from_slice(&row);
        if dup {
            x.push(row[d - 1]);
        }
    }
    (Dataset::from_rows(&x, cols, &y, 1).unwrap(), labels)
}

fn q_of(data: &Dataset, labels: &[f64], k: usize, w: &[f64]) -> f64 {
    let mut g = vec![0.0; w.len()];
    gate_objective(data, labels, k, w, &mut g).unwrap()
}

fn lbfgs(tol: f64, max_iter: u64) -> GateConfig {
    GateConfig {
        tol,
        max_iter,
        solver: GateSolver::Lbfgs,
        ..GateConfig::default()
    }
}

#[test]
fn defaults_are_newton_with_the_lbfgs_fallback() {
    let cfg = GateConfig::default();
    assert_eq!(cfg.solver, GateSolver::Newton);
    assert!(cfg.lbfgs_fallback);
    assert!(lbfgs(1e-6, 10).check().is_ok());
    for bad in [lbfgs(0.0, 10), lbfgs(f64::NAN, 10), lbfgs(1e-6, 0)] {
        assert!(matches!(
            bad.check(),
            Err(MoeError::InvalidParam {
                name: "gate config",
                ..
            })
        ));
    }
}

#[test]
fn lbfgs_gate_reaches_the_newton_maximiser() {
    for (k, seed) in [(2, 1), (3, 2)] {
        let (data, labels) = design(600, 4, 3, k, false, seed);
        let dim = (k - 1) * 4;
        let start = vec![0.0; dim];
        let (mut wn, mut wl) = (vec![0.0; dim], vec![0.0; dim]);
        let fit = GateFit::new(&data, &labels, k, &start);
        let sn = fit_softmax_gate(fit, &mut wn, GateConfig::default()).unwrap();
        assert!(sn.converged, "{sn:?}");
        let sl = fit_softmax_gate(fit, &mut wl, lbfgs(1e-10, 500)).unwrap();
        assert!(
            sl.converged && sl.residual <= 1e-10 && sl.hessians == 0 && sl.fallbacks == 0,
            "{sl:?}"
        );
        assert!(sl.iterations >= 1 && sl.iterations <= 500, "{sl:?}");
        let diff = wn
            .iter()
            .zip(&wl)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 1e-6, "K = {k}: max |W_newton - W_lbfgs| = {diff}");
        // The direct entry point agrees with the dispatch.
        let mut w2 = vec![0.0; dim];
        let s2 = fit_softmax_gate_lbfgs(fit, &mut w2, GateConfig::default()).unwrap();
        assert!(s2.converged || s2.iterations == GateConfig::default().max_iter);
        assert!(q_of(&data, &labels, k, &w2) >= q_of(&data, &labels, k, &start));
    }
}

#[test]
fn loose_lbfgs_budget_is_honoured_and_reported() {
    let (data, labels) = design(800, 5, 3, 3, false, 7);
    let dim = 2 * 5;
    let start = vec![0.3; dim];
    let q0 = q_of(&data, &labels, 3, &start);
    for cap in [1u64, 2, 4] {
        let mut w = vec![0.0; dim];
        let fit = GateFit::new(&data, &labels, 3, &start);
        let s = fit_softmax_gate(fit, &mut w, lbfgs(1e-12, cap)).unwrap();
        assert!(s.iterations <= cap, "{s:?}");
        assert!(!s.converged && s.residual > 1e-12, "{s:?}");
        // The inexact M-step still increases Q (a generalised EM step).
        assert!(q_of(&data, &labels, 3, &w) > q0);
        // The residual is the reported ‖∇Q‖∞ at the result.
        let mut g = vec![0.0; dim];
        gate_objective(&data, &labels, 3, &w, &mut g).unwrap();
        let ginf = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            (ginf - s.residual).abs() <= 1e-12 * (1.0 + ginf),
            "{ginf} {s:?}"
        );
    }
}

#[test]
fn singular_gate_hessian_is_shifted_reported_and_reaches_the_lbfgs_optimum() {
    let (data, labels) = design(400, 3, 3, 2, true, 11);
    let dim = data.d();
    let start = vec![0.0; dim];
    let fit = GateFit::new(&data, &labels, 2, &start);
    // Without the shift and the fallback this design is refused (a duplicated column).
    let mut w = vec![0.0; dim];
    let s = fit_softmax_gate(fit, &mut w, GateConfig::default()).unwrap();
    assert!(s.converged && s.fallbacks >= 1 && s.hessians >= 1, "{s:?}");
    // The duplicated columns get equal coefficients (the shifted step treats them alike).
    assert!((w[dim - 1] - w[dim - 2]).abs() < 1e-8, "{w:?}");
    // The same maximum as an independent solver that needs no Hessian.
    let mut wl = vec![0.0; dim];
    let sl = fit_softmax_gate(fit, &mut wl, lbfgs(1e-11, 2000)).unwrap();
    assert!(sl.converged, "{sl:?}");
    let (q, ql) = (q_of(&data, &labels, 2, &w), q_of(&data, &labels, 2, &wl));
    assert!((q - ql).abs() <= 1e-10 * (1.0 + ql.abs()), "{q} vs {ql}");
    assert!(q > q_of(&data, &labels, 2, &start));
    // A non-singular design never shifts.
    let (ok, ok_labels) = design(400, 3, 3, 2, false, 11);
    let mut w3 = vec![0.0; 3];
    let s = fit_softmax_gate(
        GateFit::new(&ok, &ok_labels, 2, &[0.0; 3]),
        &mut w3,
        GateConfig::default(),
    )
    .unwrap();
    assert!(s.fallbacks == 0 && s.hessians >= 1, "{s:?}");
}

#[test]
fn em_with_the_shifted_gate_runs_on_a_duplicated_column_and_does_not_increase_l() {
    let (data, _) = design(500, 3, 3, 2, true, 13);
    // Multinomial experts by L-BFGS at every size, so the singular design does not stop
    // the experts either.
    let expert = Multinomial::new(3)
        .unwrap()
        .with_dense_max_params(0)
        .with_lbfgs_budget(1e-9, 200)
        .unwrap();
    let base = MixtureOfExperts::new(Arc::new(expert), 2, data.d(), Gating::Softmax).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let mut theta0 = base.random_params(&mut rng, 0.5);
    // Equal coefficients on the duplicated columns (as any fit from such a start keeps).
    let d = data.d();
    for b in 0..theta0.len() / d {
        theta0[b * d + d - 1] = theta0[b * d + d - 2];
    }
    let problem = Problem::new(&base, &data).unwrap();
    let l0 = problem.objective(&theta0).unwrap();
    let r = Executor::new(problem, Em::new())
        .theta0(theta0)
        .max_iters(5)
        .run()
        .unwrap();
    let mut prev = l0;
    for rec in &r.trace {
        assert!(rec.inner.fallbacks >= 1, "{:?}", rec.inner);
        assert!(
            rec.objective <= prev + 1e-12,
            "L rose: {prev} -> {}",
            rec.objective
        );
        prev = rec.objective;
    }
    assert!(
        r.state.objective < l0 - 1e-6,
        "{l0} -> {}",
        r.state.objective
    );
}

#[test]
fn em_with_the_lbfgs_gate_matches_newton_em_on_a_well_posed_problem() {
    let (data, _) = design(500, 3, 3, 2, false, 17);
    let newton = MixtureOfExperts::new(
        Arc::new(Multinomial::new(3).unwrap()),
        2,
        data.d(),
        Gating::Softmax,
    )
    .unwrap();
    let lb = newton.clone().with_gate_config(lbfgs(1e-11, 500)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    let theta0 = newton.random_params(&mut rng, 0.5);
    let run = |m: &MixtureOfExperts| {
        Executor::new(Problem::new(m, &data).unwrap(), Em::new())
            .theta0(theta0.clone())
            .max_iters(3)
            .run()
            .unwrap()
    };
    let (a, b) = (run(&newton), run(&lb));
    let diff = a
        .state
        .theta
        .iter()
        .zip(&b.state.theta)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff < 1e-6, "max parameter difference {diff}");
    // Same experts (dense Newton, 6 parameters): the difference in Hessians formed is the
    // gate's, all Newton's.
    for (ta, tb) in a.trace.iter().zip(&b.trace) {
        assert!(ta.inner.hessians > tb.inner.hessians, "{ta:?} vs {tb:?}");
        assert_eq!(tb.inner.fallbacks, 0);
    }
}

#[test]
fn multinomial_lbfgs_budget_is_honoured() {
    let (data, labels) = design(400, 4, 4, 2, false, 21);
    let w: Vec<f64> = labels.iter().step_by(2).copied().collect();
    let plain = Multinomial::new(4).unwrap();
    assert_eq!(
        plain.lbfgs_budget(),
        (
            em_as_md::model::expert::MULTINOMIAL_LBFGS_TOL,
            em_as_md::model::expert::MULTINOMIAL_LBFGS_MAX_ITER
        )
    );
    assert_eq!(
        plain.dense_max_params(),
        em_as_md::model::expert::MULTINOMIAL_DENSE_MAX_PARAMS
    );
    let np = plain.n_params(data.d());
    let start = vec![0.0; np];
    let mut out = vec![0.0; np];
    // Loose cap: stops after exactly `cap` iterations, unconverged, reported.
    let capped = plain
        .clone()
        .with_dense_max_params(0)
        .with_lbfgs_budget(1e-14, 3)
        .unwrap();
    let s = capped
        .weighted_fit(WeightedFit::new(&data, &w, &start), &mut out)
        .unwrap();
    assert!(
        s.iterations == 3 && !s.converged && s.residual > 1e-14 && s.hessians == 0,
        "{s:?}"
    );
    // Loose tolerance: stops as soon as ‖∇F‖∞ ≤ tol, well before the default's effort.
    let loose = plain
        .clone()
        .with_dense_max_params(0)
        .with_lbfgs_budget(1e-3, 1000)
        .unwrap();
    let tight = plain.clone().with_dense_max_params(0);
    let sl = loose
        .weighted_fit(WeightedFit::new(&data, &w, &start), &mut out)
        .unwrap();
    let mut g = vec![0.0; np];
    loose.weighted_objective(&data, &w, &out, &mut g).unwrap();
    let ginf = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(
        sl.converged && sl.residual <= 1e-3 && ginf <= 1e-3,
        "{sl:?} {ginf}"
    );
    let st = tight
        .weighted_fit(WeightedFit::new(&data, &w, &start), &mut out)
        .unwrap();
    assert!(
        st.converged && st.iterations > sl.iterations,
        "{st:?} vs {sl:?}"
    );
    // Below the dense bound the budget does not apply: dense Newton (Hessians formed).
    let sd = plain
        .clone()
        .with_lbfgs_budget(1e-14, 1)
        .unwrap()
        .weighted_fit(WeightedFit::new(&data, &w, &start), &mut out)
        .unwrap();
    assert!(sd.converged && sd.hessians >= 1, "{sd:?}");
    for (tol, cap) in [(0.0, 5), (f64::NAN, 5), (f64::INFINITY, 5), (1e-6, 0)] {
        assert!(matches!(
            plain.clone().with_lbfgs_budget(tol, cap),
            Err(MoeError::InvalidParam {
                name: "lbfgs budget",
                ..
            })
        ));
    }
}
