//! Ridge-penalised M-steps and the penalised objective: each penalised M-step is the
//! maximiser of $Q - R$ (checked by finite differences of an independent sum), the
//! penalty's gradient is the derivative of the penalty, EM on a penalised model is
//! monotone in the penalised objective and stops at a stationary point of it, and
//! separable data get a finite, converged fit.

use em_as_md::{
    ConditionalFamily, Dataset, Em, EmModel, Executor, Expert, GateConfig, Gating, LinearGaussian,
    Logistic, MixtureOfExperts, MoeParams, Multinomial, Poisson, Problem, Termination, WeightedFit,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// `n` rows: an intercept and `d − 1` uniform features; the target from `y(x, rng)`.
fn data(n: usize, d: usize, seed: u64, y: impl Fn(&[f64], &mut ChaCha8Rng) -> f64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let x: Vec<f64> = (0..d - 1).map(|_| rng.random_range(-2.0..2.0)).collect();
        let mut row = vec![1.0];
        row.extend(&x);
        ys.push(y(&row, &mut rng));
        xs.extend(x);
    }
    Dataset::from_rows(&xs, d - 1, &ys, 1)
        .unwrap()
        .with_intercept()
}

/// Weighted $Q(\vartheta) = \sum_i w_i \log p(y_i \mid x_i; \vartheta)$ from the family's
/// own log-density (independent of the experts' Newton sums).
fn weighted_q(e: &dyn Expert, data: &Dataset, w: &[f64], params: &[f64]) -> f64 {
    let fam = e.family();
    let mut eta = vec![0.0; fam.dim()];
    (0..data.n())
        .map(|i| {
            e.natural(params, data.x(i), &mut eta);
            w[i] * fam.log_density(&eta, data.y(i)).unwrap()
        })
        .sum()
}

/// Central-difference gradient of `f` at `x` (step `h`).
fn fd_grad(f: impl Fn(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
    (0..x.len())
        .map(|j| {
            let (mut a, mut b) = (x.to_vec(), x.to_vec());
            a[j] += h;
            b[j] -= h;
            (f(&a) - f(&b)) / (2.0 * h)
        })
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The penalised M-step of `e` from zero lands where $\nabla(Q - R) = 0$ by finite
/// differences of [`weighted_q`], and not where $\nabla Q = 0$ (the ridge acts).
fn check_penalised_m_step(e: &dyn Expert, data: &Dataset, lambda: f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let w: Vec<f64> = (0..data.n()).map(|_| rng.random_range(0.1..1.0)).collect();
    let np = e.n_params(data.d());
    let start = vec![0.0; np];
    let mut out = vec![0.0; np];
    let stats = e
        .weighted_fit(WeightedFit::new(data, &w, &start), &mut out)
        .unwrap();
    assert!(stats.converged, "{}: {stats:?}", e.name());
    let pen = |b: &[f64]| weighted_q(e, data, &w, b) - e.penalty(b, data.d());
    let g = fd_grad(pen, &out, 1e-5);
    let scale: f64 = w.iter().sum();
    assert!(
        norm(&g) < 1e-5 * scale,
        "{}: ‖∇(Q − R)‖ = {}",
        e.name(),
        norm(&g)
    );
    let gq = fd_grad(|b| weighted_q(e, data, &w, b), &out, 1e-5);
    // At the penalised optimum ∇Q = ∇R = λ b (on the regressed coefficients).
    let r = e.n_regressed() * data.d();
    for j in 0..r {
        assert!(
            (gq[j] - lambda * out[j]).abs() < 1e-5 * scale,
            "{}: ∂Q/∂b_{j} = {} vs λ b = {}",
            e.name(),
            gq[j],
            lambda * out[j]
        );
    }
}

#[test]
fn penalised_glm_m_steps_are_stationary_for_q_minus_r() {
    let lambda = 2.5;
    let logistic = data(300, 3, 1, |x, r| {
        let p = 1.0 / (1.0 + (-(0.5 + 1.5 * x[1] - x[2])).exp());
        f64::from(r.random::<f64>() < p)
    });
    check_penalised_m_step(&Logistic::with_ridge(lambda).unwrap(), &logistic, lambda);
    let counts = data(300, 3, 2, |x, r| {
        let mu = (0.3 + 0.6 * x[1]).exp();
        // Poisson draw by inversion (small means).
        let (mut k, mut p, u) = (0.0, (-mu).exp(), r.random::<f64>());
        let mut c = p;
        while u > c {
            k += 1.0;
            p *= mu / k;
            c += p;
        }
        k
    });
    check_penalised_m_step(&Poisson::with_ridge(lambda).unwrap(), &counts, lambda);
    let classes = data(300, 3, 3, |x, r| {
        let s = x[1] + 0.5 * r.random::<f64>();
        if s < -0.5 {
            0.0
        } else if s < 0.8 {
            1.0
        } else {
            2.0
        }
    });
    let m = Multinomial::new(3).unwrap().with_ridge(lambda).unwrap();
    check_penalised_m_step(&m, &classes, lambda);
    // The L-BFGS path (above the dense size) solves the same penalised problem.
    check_penalised_m_step(
        &m.clone()
            .with_dense_max_params(0)
            .with_lbfgs_budget(1e-10, 2000)
            .unwrap(),
        &classes,
        lambda,
    );
}

#[test]
fn penalised_linear_m_step_maximises_q_minus_its_penalty() {
    let lambda = 4.0;
    let d = data(200, 3, 4, |x, r| {
        1.0 + 2.0 * x[1] - x[2] + r.random_range(-0.5..0.5)
    });
    let e = LinearGaussian::with_ridge(lambda).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let w: Vec<f64> = (0..d.n()).map(|_| rng.random_range(0.1..1.0)).collect();
    let start = vec![0.0, 0.0, 0.0, -0.5];
    let mut out = vec![0.0; 4];
    e.weighted_fit(WeightedFit::new(&d, &w, &start), &mut out)
        .unwrap();
    let pen = |b: &[f64]| weighted_q(&e, &d, &w, b) - e.penalty(b, d.d());
    let g = fd_grad(pen, &out, 1e-6);
    assert!(
        norm(&g) < 1e-5 * w.iter().sum::<f64>(),
        "‖∇(Q − R)‖ = {}",
        norm(&g)
    );
    // R = λ‖β‖²/(2σ²) with β = γσ², σ² = −1/(2τ).
    let (beta, s2) = LinearGaussian::beta_from_natural(&out).unwrap();
    let direct = lambda * beta.iter().map(|b| b * b).sum::<f64>() / (2.0 * s2);
    assert!((e.penalty(&out, d.d()) - direct).abs() < 1e-12 * direct);
}

/// A gated mixture with a ridge on the gate and on logistic experts.
fn ridged_logistic_mixture(lambda: f64) -> MixtureOfExperts {
    MixtureOfExperts::new(
        Arc::new(Logistic::with_ridge(lambda).unwrap()),
        2,
        3,
        Gating::Softmax,
    )
    .unwrap()
    .with_gate_config(GateConfig {
        ridge: lambda,
        ..GateConfig::default()
    })
    .unwrap()
}

#[test]
fn the_penalty_gradient_is_the_derivative_of_the_penalty() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for m in [
        ridged_logistic_mixture(0.7),
        MixtureOfExperts::new(
            Arc::new(LinearGaussian::with_ridge(1.3).unwrap()),
            3,
            3,
            Gating::Constant,
        )
        .unwrap(),
    ] {
        assert!(m.is_penalised());
        let theta = m.random_params(&mut rng, 1.0);
        let mut g = vec![0.0; theta.len()];
        m.penalty_gradient(&theta, &mut g);
        let fd = fd_grad(|t| m.penalty(t), &theta, 1e-6);
        for (a, b) in g.iter().zip(&fd) {
            assert!((a - b).abs() < 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
    // Without a ridge there is no penalty.
    let plain = MixtureOfExperts::new(Arc::new(Logistic::new()), 2, 3, Gating::Softmax).unwrap();
    let theta = plain.random_params(&mut rng, 1.0);
    assert!(!plain.is_penalised());
    assert_eq!(plain.penalty(&theta), 0.0);
}

/// Classes separated by the sign of the first feature: without a ridge the likelihood
/// has no maximum.
fn separable(n: usize, seed: u64) -> Dataset {
    data(n, 3, seed, |x, _| f64::from(x[1] > 0.0))
}

#[test]
fn em_on_a_penalised_model_is_monotone_and_ends_stationary() {
    let m = ridged_logistic_mixture(0.5);
    let d = separable(400, 7);
    let problem = Problem::new(&m, &d).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let theta0 = m.random_params(&mut rng, 0.5);
    let res = Executor::new(problem, Em::new())
        .theta0(theta0)
        .max_iters(5000)
        .tol(1e-14)
        .run()
        .unwrap();
    // The trace's objective is the penalised one, and it never increases.
    let objs: Vec<f64> = res.trace.iter().map(|r| r.objective).collect();
    for w in objs.windows(2) {
        assert!(
            w[1] <= w[0] + 1e-12 * w[0].abs().max(1.0),
            "{} -> {}",
            w[0],
            w[1]
        );
    }
    let theta = &res.state.theta;
    let mut g = vec![0.0; theta.len()];
    let l = problem.objective_and_gradient(theta, &mut g).unwrap();
    // The E-step's objective and the problem's agree (both penalised).
    let (_, le) = m.e_step(&d, theta).unwrap();
    assert!((l - le).abs() < 1e-12 * l.abs().max(1.0), "{l} vs {le}");
    assert!(norm(&g) < 1e-6, "‖∇L‖ = {}", norm(&g));
    // The gradient is that of the penalised objective (finite differences).
    let fd = fd_grad(|t| problem.objective(t).unwrap(), theta, 1e-6);
    for (a, b) in g.iter().zip(&fd) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    // Finite coefficients on separable data.
    assert!(
        theta.iter().all(|v| v.is_finite() && v.abs() < 50.0),
        "{theta:?}"
    );
}

#[test]
fn a_ridge_turns_a_separated_fit_into_a_converged_one() {
    let d = separable(300, 10);
    let fit = |lambda: f64| {
        MoeParams::new(2)
            .expert(Logistic::with_ridge(lambda).unwrap())
            .gating(Gating::Softmax)
            .gate_config(GateConfig {
                ridge: lambda,
                ..GateConfig::default()
            })
            .n_init(2)
            .seed(1)
            .check()
            .unwrap()
            .fit(&d)
            .unwrap()
    };
    let plain = fit(0.0);
    assert!(
        matches!(plain.report().termination, Termination::Separated { .. }),
        "{:?}",
        plain.report().termination
    );
    let ridged = fit(1.0);
    let rep = ridged.report();
    assert!(rep.converged(), "{:?}", rep.termination);
    // The report's log-likelihood is ℓ without the penalty; the restart's is ℓ − R.
    let ll = ridged.log_likelihood(&d).unwrap();
    assert!((ll - rep.log_likelihood).abs() < 1e-9 * ll.abs().max(1.0));
    let best = rep.restarts[rep.best_restart].log_likelihood.unwrap();
    let penalised = rep.log_likelihood - ridged.penalty();
    assert!(ridged.penalty() > 0.0);
    assert!(
        (best - penalised).abs() < 1e-8 * best.abs().max(1.0),
        "{best} vs {penalised}"
    );
}

#[test]
fn mirror_descent_refuses_a_penalised_model() {
    let m = ridged_logistic_mixture(1.0);
    let d = separable(50, 11);
    let p = Problem::new(&m, &d).unwrap();
    let theta = m.random_params(&mut ChaCha8Rng::seed_from_u64(1), 0.5);
    let targets = p.md_targets(&theta, 0.5).unwrap();
    let mut g = vec![0.0; theta.len()];
    let err = p.md_subproblem(&theta, &targets, &mut g).unwrap_err();
    assert!(err.to_string().contains("ridge"), "{err}");
}

#[test]
fn ridges_are_validated_and_described() {
    assert!(Logistic::with_ridge(-1.0).is_err());
    assert!(Poisson::with_ridge(f64::NAN).is_err());
    assert!(Multinomial::new(3)
        .unwrap()
        .with_ridge(f64::INFINITY)
        .is_err());
    let bad_gate = GateConfig {
        ridge: -0.1,
        ..GateConfig::default()
    };
    assert!(bad_gate.check().is_err());
    // The ridge is part of the description, so a saved model rebuilds it.
    let spec = Logistic::with_ridge(0.25).unwrap().spec().unwrap();
    assert_eq!(spec.params.get("ridge"), Some(0.25));
    let rebuilt = em_as_md::model::registry::build_expert(&spec).unwrap();
    assert_eq!(rebuilt.ridge(), 0.25);
    // Without a ridge the description is what it was before ridges existed.
    assert_eq!(Poisson::new().spec().unwrap().params.get("ridge"), None);
}
