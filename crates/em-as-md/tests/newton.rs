//! The one-pass observed information and the safeguarded Newton solver: $L$ and
//! $\nabla L$ from [`observed`] equal [`Problem::objective_and_gradient`], its Hessian
//! equals central differences of that gradient (mixture fast path, generic path, a
//! curved plug-in, a ridge), the mixture's one-pass sums equal the generic per-row pass,
//! and [`Newton`] is monotone and ends at EM's optimum.

mod common;

use em_as_md::solve::observed::information_rows;
use em_as_md::testkit::proptest::prelude::*;
use em_as_md::testkit::{draw, DrawConfig, RowFunctionsOnly};
use em_as_md::{
    observed, ConditionalFamily, Dataset, Em, Executor, Expert, FitResult, GateConfig, Gating,
    LinearGaussian, Logistic, MixtureOfExperts, Multinomial, Newton, Poisson, Problem, Solver,
    SymMoLinE, SymMoLogE,
};
use std::sync::Arc;

fn moe(expert: Arc<dyn Expert>) -> MixtureOfExperts {
    MixtureOfExperts::new(expert, 2, 3, Gating::Softmax).unwrap()
}

/// Value, gradient and Hessian of `observed` against `objective_and_gradient` and its
/// central differences (step $10^{-5}\max(1, |\theta_k|)$: truncation error about
/// $10^{-10}$ times the third derivative).
fn check_against_differences<M: ConditionalFamily + ?Sized>(
    what: &str,
    problem: &Problem<'_, M>,
    theta: &[f64],
) {
    let np = theta.len();
    let o = observed(problem, theta, true).unwrap();
    let mut g = vec![0.0; np];
    let l = problem.objective_and_gradient(theta, &mut g).unwrap();
    assert!(
        (o.objective - l).abs() <= 1e-12 * l.abs().max(1.0),
        "{what}: L {} vs {l}",
        o.objective
    );
    for (a, b) in o.gradient.iter().zip(&g) {
        assert!(
            (a - b).abs() <= 1e-10 * (1.0 + b.abs()),
            "{what}: ∇L {a} vs {b}"
        );
    }
    let h = o.hessian();
    let mut scale: f64 = 0.0;
    let mut worst: f64 = 0.0;
    for k in 0..np {
        let e = 1e-5 * theta[k].abs().max(1.0);
        let (mut t, mut gp, mut gm) = (theta.to_vec(), vec![0.0; np], vec![0.0; np]);
        t[k] = theta[k] + e;
        problem.objective_and_gradient(&t, &mut gp).unwrap();
        t[k] = theta[k] - e;
        problem.objective_and_gradient(&t, &mut gm).unwrap();
        for r in 0..np {
            let fd = (gp[r] - gm[r]) / (2.0 * e);
            scale = scale.max(fd.abs());
            worst = worst.max((fd - h[(r, k)]).abs());
        }
    }
    assert!(scale > 0.0, "{what}: a zero Hessian proves nothing");
    assert!(
        worst <= 1e-6 * scale,
        "{what}: Hessian off by {worst:e} (scale {scale:e})"
    );
}

#[test]
fn observed_information_is_the_hessian_of_l() {
    for (name, e) in [
        ("linear", Arc::new(LinearGaussian::new()) as Arc<dyn Expert>),
        ("logistic", Arc::new(Logistic::new())),
        ("Poisson", Arc::new(Poisson::new())),
        ("multinomial", Arc::new(Multinomial::new(3).unwrap())),
        // Not the GLM layout's fast path: the generic pass and central differences for C.
        (
            "bivariate normal Glm",
            Arc::new(common::mvn_expert().unwrap()),
        ),
    ] {
        let model = moe(e);
        let d = draw(&model, &DrawConfig::default(), 300, 3).unwrap();
        let p = Problem::new(&model, &d.data).unwrap();
        check_against_differences(name, &p, &d.theta0);
    }
    // A ridge on the gate and the experts: its Hessian enters.
    let ridged = MixtureOfExperts::new(
        Arc::new(Logistic::with_ridge(0.7).unwrap()),
        2,
        3,
        Gating::Softmax,
    )
    .unwrap()
    .with_gate_config(GateConfig {
        ridge: 0.7,
        ..GateConfig::default()
    })
    .unwrap();
    let d = draw(&ridged, &DrawConfig::default(), 300, 4).unwrap();
    let p = Problem::new(&ridged, &d.data).unwrap();
    assert!(observed(&p, &d.theta0, true).unwrap().penalty_hessian[(0, 0)] > 0.0);
    check_against_differences("ridged logistic", &p, &d.theta0);
    // The symmetric models (generic pass, linear realisations).
    let lin = SymMoLinE::new(3, 1.0).unwrap();
    let star = lin.random_theta(2.0, 1.0, 5).unwrap();
    let (data, _) = lin.simulate(&star, 300, 6).unwrap();
    let theta = lin.random_theta(1.0, 0.5, 7).unwrap();
    check_against_differences("SymMoLinE", &Problem::new(&lin, &data).unwrap(), &theta);
    let log = SymMoLogE::new(3).unwrap();
    let star = log.random_theta(2.0, 1.0, 5).unwrap();
    let (data, _) = log.simulate(&star, 300, 6).unwrap();
    let theta = log.random_theta(1.0, 0.5, 7).unwrap();
    check_against_differences("SymMoLogE", &Problem::new(&log, &data).unwrap(), &theta);
}

/// The mixture's one-pass Gram sums equal the generic per-row pass (two independent
/// computations of the same sums), for every GLM expert and both gatings.
#[test]
fn one_pass_gram_sums_match_the_generic_row_pass() {
    for e in [
        Arc::new(LinearGaussian::new()) as Arc<dyn Expert>,
        Arc::new(Logistic::new()),
        Arc::new(Poisson::new()),
        Arc::new(Multinomial::new(3).unwrap()),
    ] {
        for gating in [Gating::Softmax, Gating::Constant] {
            let model = MixtureOfExperts::new(e.clone(), 3, 2, gating).unwrap();
            let d = draw(&model, &DrawConfig::default(), 257, 9).unwrap();
            let p = Problem::new(&model, &d.data).unwrap();
            let fast = model.observed_sums(&d.data, &d.theta0).expect("fast path");
            let rows = information_rows(&p, &d.theta0).unwrap();
            let what = format!("{} {gating:?}", e.name());
            assert!(
                (fast.log_lik - rows.log_lik).abs() < 1e-10 * rows.log_lik.abs(),
                "{what}: {} vs {}",
                fast.log_lik,
                rows.log_lik
            );
            assert!(
                common::rel_vec(&fast.gradient, &rows.gradient) < 1e-10,
                "{what}"
            );
            for (a, b) in [
                (&fast.complete, &rows.complete),
                (&fast.missing, &rows.missing),
            ] {
                let np = a.nrows();
                for i in 0..np {
                    for j in 0..np {
                        let (x, y) = (0.5 * (a[(i, j)] + a[(j, i)]), 0.5 * (b[(i, j)] + b[(j, i)]));
                        assert!(
                            (x - y).abs() < 1e-9 * (1.0 + y.abs()),
                            "{what} ({i}, {j}): {x} vs {y}"
                        );
                    }
                }
            }
        }
    }
}

fn run<M: em_as_md::EmModel, S>(model: &M, data: &Dataset, solver: S, theta0: &[f64]) -> FitResult
where
    M::Stats: 'static,
    for<'a> S: Solver<Problem<'a, M>>,
{
    Executor::new(Problem::new(model, data).unwrap(), solver)
        .theta0(theta0.to_vec())
        .max_iters(3000)
        .tol(1e-12)
        .run()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Newton under the EM safeguard never increases $L$ beyond round-off, on random gated
    /// linear, logistic, Poisson and multinomial mixtures from random starts, and every iteration
    /// counts its passes.
    #[test]
    fn newton_is_monotone(seed in any::<u64>(), which in 0usize..4) {
        let e: Arc<dyn Expert> = match which {
            0 => Arc::new(LinearGaussian::new()),
            1 => Arc::new(Logistic::new()),
            2 => Arc::new(Poisson::new()),
            _ => Arc::new(Multinomial::new(3).unwrap()),
        };
        let model = moe(e);
        let d = draw(&model, &DrawConfig::default(), 300, seed).unwrap();
        let p = Problem::new(&model, &d.data).unwrap();
        let mut prev = p.objective(&d.theta0).unwrap();
        let res = Executor::new(p, Newton::new()).theta0(d.theta0.clone()).max_iters(60).tol(1e-12).run().unwrap();
        for r in &res.trace {
            let exact = r.inner.fallbacks == 0;
            prop_assert!(!exact || r.objective <= prev + 1e-12 * prev.abs().max(1.0),
                "L rose from {prev} to {} at {}", r.objective, r.iter);
            prop_assert!(r.step.passes >= 1);
            prev = r.objective;
        }
    }
}

/// From the same start Newton ends at EM's optimum (to $10^{-8}$ relative) with fewer
/// passes on gated linear and Poisson experts and on SymMoLinE.
#[test]
fn newton_reaches_the_em_optimum_with_fewer_passes() {
    let passes = |r: &FitResult| r.trace.iter().map(|t| t.step.passes).sum::<u64>();
    let check = |what: &str, em: &FitResult, nt: &FitResult| {
        let rel = (nt.best.objective - em.best.objective).abs() / em.best.objective.abs();
        assert!(
            rel < 1e-8,
            "{what}: Newton {} vs EM {}",
            nt.best.objective,
            em.best.objective
        );
        assert!(nt.termination.is_converged(), "{what}: {}", nt.termination);
        assert!(
            passes(nt) < passes(em),
            "{what}: {} vs {}",
            passes(nt),
            passes(em)
        );
        // Newton's steps record β; the safeguard's record η = 1.
        for r in &nt.trace {
            assert!(
                r.step.safeguard || r.step.missing_weight.is_some(),
                "{what}: {:?}",
                r.step
            );
        }
    };
    for (i, e) in [
        Arc::new(LinearGaussian::new()) as Arc<dyn Expert>,
        Arc::new(Poisson::new()),
    ]
    .into_iter()
    .enumerate()
    {
        let model = moe(e);
        let d = draw(&model, &DrawConfig::default(), 2000, 21 + i as u64).unwrap();
        let em = run(&model, &d.data, Em::new(), &d.theta0);
        let nt = run(&model, &d.data, Newton::new(), &d.theta0);
        check(&model.expert().name(), &em, &nt);
    }
    let lin = SymMoLinE::new(3, 1.0).unwrap();
    let star = lin.random_theta(1.0, 1.0, 5).unwrap();
    let (data, _) = lin.simulate(&star, 1000, 6).unwrap();
    let theta0 = lin.random_theta(1.0, 0.5, 7).unwrap();
    let em = run(&lin, &data, Em::new(), &theta0);
    let nt = run(&lin, &data, Newton::new(), &theta0);
    check("SymMoLinE", &em, &nt);
}

/// A model with `information_sums` but no `observed_sums` gets its own matrices and $L$,
/// $\nabla L$ from one more pass — the same numbers as the one-pass sums, penalty
/// included, and the passes counted (information, $L$ and $\nabla L$, curvature).
#[test]
fn information_sums_without_the_one_pass_sums_give_the_same_observed_information() {
    let ridged = MixtureOfExperts::new(
        Arc::new(Poisson::with_ridge(0.3).unwrap()),
        2,
        3,
        Gating::Softmax,
    )
    .unwrap();
    let d = draw(&ridged, &DrawConfig::default(), 300, 5).unwrap();
    let one = observed(&Problem::new(&ridged, &d.data).unwrap(), &d.theta0, true).unwrap();
    let wrapped = RowFunctionsOnly::with_information_sums(&ridged);
    let two = observed(&Problem::new(&wrapped, &d.data).unwrap(), &d.theta0, true).unwrap();
    assert_eq!((one.passes, two.passes), (1, 3));
    assert!((one.objective - two.objective).abs() < 1e-13 * one.objective.abs());
    assert!(common::rel_vec(&one.gradient, &two.gradient) < 1e-10);
    let (h1, h2) = (one.hessian(), two.hessian());
    for i in 0..h1.nrows() {
        for j in 0..h1.ncols() {
            assert!((h1[(i, j)] - h2[(i, j)]).abs() < 1e-10 * (1.0 + h1[(i, j)].abs()));
        }
    }
}

/// The observed pass merges chunk sums in a fixed order: a Newton run gives the same
/// iterates, bit for bit, on 1 and 3 threads (several chunks of rows).
#[test]
fn newton_runs_are_the_same_for_any_thread_count() {
    let model = moe(Arc::new(Poisson::new()));
    let d = draw(&model, &DrawConfig::default(), 9000, 17).unwrap();
    let fit = || run(&model, &d.data, Newton::new(), &d.theta0);
    let (a, b) = (common::with_threads(1, fit), common::with_threads(3, fit));
    assert!(a.trace.len() > 2);
    assert_eq!(a.best.theta, b.best.theta);
    let objectives = |r: &FitResult| r.trace.iter().map(|t| t.objective).collect::<Vec<_>>();
    assert_eq!(objectives(&a), objectives(&b));
}

/// A draw where Newton's path reaches a region where EM's M-step has no maximiser (a
/// Poisson expert whose rate heads to 0 on the zero counts) and EM's own step from there
/// is invalid or raises $L$: the run is not an error but ends reported as not converged
/// (an inexact M-step), with $L$ monotone.
#[test]
fn a_failed_em_safeguard_ends_the_run_as_not_converged() {
    let model = moe(Arc::new(Poisson::new()));
    let d = draw(&model, &DrawConfig::default(), 300, 9524920500292827726).unwrap();
    let p = Problem::new(&model, &d.data).unwrap();
    let l0 = p.objective(&d.theta0).unwrap();
    let r = Executor::new(p, Newton::new())
        .theta0(d.theta0.clone())
        .max_iters(200)
        .tol(1e-12)
        .run()
        .unwrap();
    assert!(
        matches!(r.termination, em_as_md::Termination::InexactMStep { .. }),
        "{}",
        r.termination
    );
    assert!(!r.termination.is_converged());
    let last = r.trace.last().unwrap();
    assert!(last.step.safeguard && !last.inner.converged && last.inner.fallbacks >= 1);
    let mut prev = l0;
    for t in &r.trace {
        assert!(t.objective <= prev, "{} after {prev}", t.objective);
        prev = t.objective;
    }
}
