//! The accelerated EMs and the Adam baseline: SQUAREM is monotone under its safeguard and
//! reaches EM's optimum; MD($\eta_t = 1/\hat L_t$) never steps below $\eta = 1$, is
//! monotone, and its $\hat L_t$ is the Bregman ratio of its own step; passes are counted;
//! Adam decreases $L$; `MoeParams::accel` runs the chosen solver; where an accelerated
//! solver ends above EM from the same start, it ends at another local minimum.

mod common;

use em_as_md::fit::MoeParams;
use em_as_md::model::expert::LinearGaussian;
use em_as_md::testkit::proptest::prelude::*;
use em_as_md::testkit::{draw, draws, DrawConfig};
use em_as_md::MoeError;
use em_as_md::{
    observed, step_smoothness, Accel, Adam, AdaptiveMirrorDescent, Anderson, ConditionalFamily,
    Dataset, Em, EmModel, Executor, Expert, FitResult, Gating, Logistic, MixtureOfExperts, Newton,
    Poisson, Problem, Solver, Squarem, SymMoLinE, SymMoLogE, Termination,
};
use std::sync::Arc;

fn moe(expert: Arc<dyn Expert>) -> MixtureOfExperts {
    MixtureOfExperts::new(expert, 2, 3, Gating::Softmax).unwrap()
}

fn run<M, S>(model: &M, data: &Dataset, solver: S, theta0: &[f64], tol: f64) -> FitResult
where
    M: ConditionalFamily + ?Sized,
    for<'a> S: Solver<Problem<'a, M>>,
{
    let name = solver.name();
    Executor::new(Problem::new(model, data).unwrap(), solver)
        .theta0(theta0.to_vec())
        .max_iters(5000)
        .tol(tol)
        .run()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Objectives never increase by more than round-off.
fn assert_monotone(res: &FitResult, l0: f64, what: &str) {
    let mut prev = l0;
    for r in &res.trace {
        assert!(
            r.objective <= prev + 1e-12 * prev.abs().max(1.0),
            "{what}: L rose from {prev} to {} at iteration {}",
            r.objective,
            r.iter
        );
        prev = r.objective;
    }
}

fn experts() -> Vec<(&'static str, Arc<dyn Expert>)> {
    vec![
        ("linear", Arc::new(LinearGaussian::new())),
        ("logistic", Arc::new(Logistic::new())),
        ("Poisson", Arc::new(Poisson::new())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// Under the safeguard every SQUAREM iterate has $L$ no larger than the last (not
    /// even by round-off: every point taken was checked), for random gated linear,
    /// logistic and Poisson mixtures from random starts; each iteration evaluates the EM
    /// map 2 or 3 times, plus one E-step when the safeguard's EM point was higher; 2 passes
    /// when EM's point left the domain (the iterate stays, an inexact M-step).
    #[test]
    fn squarem_is_monotone_under_the_safeguard(seed in any::<u64>()) {
        for (name, e) in experts() {
            squarem_monotone_on(name, e, seed)?;
        }
    }

    /// MD($1/\hat L_t$) never takes $\eta < 1$ and never increases $L$.
    #[test]
    fn adaptive_md_keeps_eta_at_least_one(
        draw in draws(moe(Arc::new(Logistic::new())), DrawConfig::default()).unwrap()
    ) {
        let d = draw?;
        let model = moe(Arc::new(Logistic::new()));
        let l0 = Problem::new(&model, &d.data)?.objective(&d.theta0)?;
        let res = Executor::new(Problem::new(&model, &d.data)?, AdaptiveMirrorDescent::new())
            .theta0(d.theta0.clone())
            .max_iters(8)
            .run()?;
        assert_monotone(&res, l0, "MD(1/L̂)");
        for r in &res.trace {
            let eta = r.step.eta.unwrap();
            prop_assert!((1.0..=em_as_md::solve::md_adaptive::DEFAULT_MAX_ETA).contains(&eta), "{:?}", r.step);
            prop_assert!(r.step.passes >= 4, "{:?}", r.step);
        }
    }
}

/// SQUAREM's run on one random draw: $L$ never rises (exactly), 2 or 3 passes per
/// iteration (4 only under the safeguard), steps $\eta \ge 1$ and $\eta = 1$ under the
/// safeguard.
fn squarem_monotone_on(
    name: &str,
    expert: Arc<dyn Expert>,
    seed: u64,
) -> Result<(), TestCaseError> {
    let model = moe(expert);
    let d = draw(&model, &DrawConfig::default(), 300, seed)?;
    let l0 = Problem::new(&model, &d.data)?.objective(&d.theta0)?;
    let run = Executor::new(Problem::new(&model, &d.data)?, Squarem::new())
        .theta0(d.theta0.clone())
        .max_iters(15)
        .run();
    let res = match run {
        Ok(res) => res,
        // A run heading to an unattained optimum ends with a typed error (see the test
        // after next); any other error fails.
        Err(e) if common::towards_unattained_optimum(name, &e) => return Ok(()),
        Err(e) => return Err(TestCaseError::fail(format!("{name}: {e}"))),
    };
    common::assert_never_rises(&res, l0, name)?;
    for r in &res.trace {
        let passes_ok = match r.step.passes {
            2 | 3 => true,
            4 => r.step.safeguard,
            _ => false,
        };
        prop_assert!(passes_ok, "{name}: {:?}", r.step);
        let eta = r.step.eta.unwrap();
        prop_assert!(eta >= 1.0, "{name}: step {eta}");
        prop_assert!(!r.step.safeguard || eta == 1.0);
    }
    Ok(())
}

/// A draw found by the proptest above: next to the optimum SQUAREM's safeguard took EM's
/// two steps, whose Poisson and gate M-steps (maximisers to their inner tolerance) raised
/// $L$ by $3\cdot10^{-12}$ relative at iteration 11. The safeguard now keeps a point no
/// higher.
#[test]
fn squarem_safeguard_keeps_l_monotone_next_to_the_optimum() {
    squarem_monotone_on("Poisson", Arc::new(Poisson::new()), 9562301952909216168).unwrap();
}

/// Another: from SQUAREM's fourth point EM's own M-step left the domain (a Poisson
/// expert's row log-likelihood not finite), which ended the run with an error. Now the
/// iterate stays and the run ends as an inexact M-step: reported, not converged, and
/// never above EM's start.
#[test]
fn squarem_ends_as_an_inexact_m_step_where_em_leaves_the_domain() {
    let seed = 15187843600250465674;
    squarem_monotone_on("Poisson", Arc::new(Poisson::new()), seed).unwrap();
    let model = moe(Arc::new(Poisson::new()));
    let d = draw(&model, &DrawConfig::default(), 300, seed).unwrap();
    let res = Executor::new(Problem::new(&model, &d.data).unwrap(), Squarem::new())
        .theta0(d.theta0.clone())
        .max_iters(100)
        .tol(1e-10)
        .run()
        .unwrap();
    assert!(
        matches!(res.termination, Termination::InexactMStep { .. }),
        "{} {:?}",
        res.termination,
        res.trace.last()
    );
    assert!(!res.termination.is_converged());
}

/// A draw found by the proptest: from the same start plain EM converges (to
/// $L = 1.54937$) while SQUAREM's extrapolations go below it (1.54397 at iteration 12)
/// towards the unbounded likelihood, an expert's variance to 0 on a few rows; at
/// iteration 13 that expert's weighted Gram matrix is singular and the run ends with the
/// typed error that names the expert and suggests a ridge, not NaN.
#[test]
fn squarem_towards_a_degenerate_expert_ends_with_a_typed_error() {
    let seed = 11426780590339750225;
    let model = moe(Arc::new(LinearGaussian::new()));
    let d = draw(&model, &DrawConfig::default(), 300, seed).unwrap();
    let p = Problem::new(&model, &d.data).unwrap();
    let em = run(&model, &d.data, Em::new(), &d.theta0, 1e-12);
    assert!(em.termination.is_converged(), "{}", em.termination);
    let sq = Executor::new(p, Squarem::new())
        .theta0(d.theta0.clone())
        .max_iters(15)
        .run()
        .expect_err("SQUAREM reaches the singular Gram matrix");
    assert!(
        matches!(sq.root(), MoeError::NotPositiveDefinite { .. }),
        "{sq}"
    );
    // Before it, SQUAREM went below EM's optimum: not a worse local optimum but the
    // unbounded direction.
    let sq12 = Executor::new(p, Squarem::new())
        .theta0(d.theta0.clone())
        .max_iters(12)
        .run()
        .unwrap();
    assert!(
        sq12.best.objective < em.best.objective - 1e-3,
        "{} vs EM {}",
        sq12.best.objective,
        em.best.objective
    );
}

/// SQUAREM and MD($1/\hat L$) reach EM's final log-likelihood to $10^{-8}$ relative on
/// gated linear, logistic, Poisson and a user's `Glm` (bivariate normal) mixture, and on
/// both symmetric models; SQUAREM with fewer EM-map evaluations than EM.
#[test]
fn accelerated_solvers_reach_the_em_optimum() {
    let tol = 1e-13;
    let mvn: Arc<dyn Expert> = Arc::new(common::mvn_expert().unwrap());
    let mut cases = experts();
    cases.push(("bivariate normal Glm", mvn));
    for (i, (name, e)) in cases.into_iter().enumerate() {
        let model = MixtureOfExperts::new(e, 2, 2, Gating::Softmax).unwrap();
        let d = draw(&model, &DrawConfig::default(), 2000, 11 + i as u64).unwrap();
        let em = run(&model, &d.data, Em::new(), &d.theta0, tol);
        let sq = run(&model, &d.data, Squarem::new(), &d.theta0, tol);
        let rel = (sq.best.objective - em.best.objective) / em.best.objective.abs();
        assert!(
            rel < 1e-8,
            "{name}: SQUAREM {} worse than EM {}",
            sq.best.objective,
            em.best.objective
        );
        assert!(
            sq.termination.is_converged(),
            "{name}: SQUAREM {}",
            sq.termination
        );
        // Gated logistic experts from this start: EM is still crawling after 5000
        // iterations (slowly towards SQUAREM's value); elsewhere both converge.
        if name != "logistic" {
            assert!(
                em.termination.is_converged(),
                "{name}: EM {}",
                em.termination
            );
            assert!(
                rel.abs() < 1e-8,
                "{name}: SQUAREM {} vs EM {}",
                sq.best.objective,
                em.best.objective
            );
        }
        let passes = |r: &FitResult| r.trace.iter().map(|t| t.step.passes).sum::<u64>();
        assert_eq!(
            passes(&em),
            em.trace.len() as u64,
            "{name}: one pass per EM step"
        );
        assert!(
            passes(&sq) <= passes(&em),
            "{name}: {} > {}",
            passes(&sq),
            passes(&em)
        );
        if i == 0 {
            let md = run(
                &model,
                &d.data,
                AdaptiveMirrorDescent::new(),
                &d.theta0,
                tol,
            );
            assert_same_optimum(&format!("{name} MD(1/L̂)"), &md, &em);
        }
    }
    let lin = SymMoLinE::new(3, 1.0).unwrap();
    let star = lin.random_theta(2.0, 1.5, 5).unwrap();
    let (data, _) = lin.simulate(&star, 500, 6).unwrap();
    let theta0 = lin.random_theta(1.0, 0.5, 7).unwrap();
    sym_case(&lin, &data, &theta0, tol, "SymMoLinE");
    let log = SymMoLogE::new(3).unwrap();
    let star = log.random_theta(3.0, 1.5, 5).unwrap();
    let (data, _) = log.simulate(&star, 500, 6).unwrap();
    let theta0 = log.random_theta(1.0, 0.5, 7).unwrap();
    sym_case(&log, &data, &theta0, tol, "SymMoLogE");
}

/// "Never a worse final $L$ than EM" cannot hold from one start on a non-convex
/// likelihood, and does not (`examples/basin_sweep.rs`: on 450 random draws SQUAREM ends
/// above EM on 14, Anderson on 10, Newton on 44 — and below on about as many). What does
/// hold, pinned on one logistic draw: SQUAREM, Anderson and Newton all converge to one
/// point above EM's end, and both ends are local minima of $L$ — gradient at round-off
/// level, observed information positive definite — so the accelerated runs found another
/// basin, they did not stall.
#[test]
fn an_accelerated_end_above_em_is_another_local_minimum() {
    let model = moe(Arc::new(Logistic::new()));
    let d = draw(&model, &DrawConfig::default(), 300, 5099).unwrap();
    let problem = Problem::new(&model, &d.data).unwrap();
    let local_minimum = |what: &str, res: &FitResult| {
        assert!(
            res.termination.is_converged(),
            "{what}: {}",
            res.termination
        );
        let o = observed(&problem, &res.best.theta, true).unwrap();
        let g = o.gradient.iter().map(|g| g * g).sum::<f64>().sqrt();
        assert!(g < 1e-6, "{what}: |∇L| = {g:e}");
        let pd = o.hessian().llt(em_as_md::faer::Side::Lower).is_ok();
        assert!(
            pd,
            "{what}: the observed information is not positive definite"
        );
    };
    let em = run(&model, &d.data, Em::new(), &d.theta0, 1e-12);
    local_minimum("EM", &em);
    let ends = [
        (
            "SQUAREM",
            run(&model, &d.data, Squarem::new(), &d.theta0, 1e-12),
        ),
        (
            "Anderson",
            run(&model, &d.data, Anderson::new(), &d.theta0, 1e-12),
        ),
        (
            "Newton",
            run(&model, &d.data, Newton::new(), &d.theta0, 1e-12),
        ),
    ];
    for (what, res) in &ends {
        local_minimum(what, res);
        let (a, b) = (res.best.objective, em.best.objective);
        assert!(a > b + 1e-3 * b.abs(), "{what}: {a} is not above EM's {b}");
        let first = ends[0].1.best.objective;
        assert!(
            (a - first).abs() < 1e-8 * first.abs(),
            "{what}: {a} vs SQUAREM's {first}"
        );
    }
}

fn sym_case<M>(model: &M, data: &Dataset, theta0: &[f64], tol: f64, name: &str)
where
    M: EmModel,
    M::Stats: 'static,
{
    let em = run(model, data, Em::new(), theta0, tol);
    for (solver, res) in [
        ("SQUAREM", run(model, data, Squarem::new(), theta0, tol)),
        (
            "MD(1/L̂)",
            run(model, data, AdaptiveMirrorDescent::new(), theta0, tol),
        ),
    ] {
        assert_same_optimum(&format!("{name} {solver}"), &res, &em);
    }
}

/// `res` ends at EM's objective to 1e-8 relative.
fn assert_same_optimum(what: &str, res: &FitResult, em: &FitResult) {
    let rel = (res.best.objective - em.best.objective).abs() / em.best.objective.abs();
    assert!(
        rel < 1e-8,
        "{what}: {} vs EM {}",
        res.best.objective,
        em.best.objective
    );
}

/// $\hat L_t$ from [`step_smoothness`] equals the Bregman ratio computed independently
/// from $\ell$, $\nabla\ell$ on the stacked parameters and the stacked KL divergence, and
/// an EM step's ratio is at most 1 (relative smoothness with $L = 1$).
#[test]
fn step_smoothness_is_the_bregman_ratio_of_the_step() {
    let model = moe(Arc::new(Poisson::new()));
    let d = draw(&model, &DrawConfig::default(), 250, 3).unwrap();
    let p = Problem::new(&model, &d.data).unwrap();
    let t0 = d.theta0.clone();
    let l0 = p.objective(&t0).unwrap();
    let (s1, _) = Em::new()
        .next_iter(&p, em_as_md::FitState::new(t0.clone(), l0))
        .unwrap();
    let (l_hat, den) = step_smoothness(&p, &t0, &s1.theta, l0, s1.objective).unwrap();
    let l_hat = l_hat.unwrap();
    // Independent: ℓ and ∇ℓ on Φ, the stacked Bregman divergence.
    let (phi0, phi1) = (
        p.realise_all(&t0).unwrap(),
        p.realise_all(&s1.theta).unwrap(),
    );
    let mut g = vec![0.0; phi0.len()];
    let ell0 = p.ell_and_gradient(&phi0, &mut g).unwrap();
    let mut g1 = vec![0.0; phi0.len()];
    let ell1 = p.ell_and_gradient(&phi1, &mut g1).unwrap();
    let lin: f64 = g
        .iter()
        .zip(phi1.iter().zip(&phi0))
        .map(|(a, (b, c))| a * (b - c))
        .sum();
    let bregman = p.stacked_bregman(&s1.theta, &t0).unwrap();
    let expected = (ell1 - ell0 - lin) / bregman;
    assert!(
        (den - bregman).abs() < 1e-10 * bregman.abs().max(1e-300),
        "{den} vs {bregman}"
    );
    assert!((l_hat - expected).abs() < 1e-6, "{l_hat} vs {expected}");
    assert!(l_hat <= 1.0 + 1e-6 && l_hat > 0.0, "{l_hat}");
}

/// Adam with its default settings and the grid's largest rate decreases $L$ from the
/// start, one pass per iteration after the first.
#[test]
fn adam_decreases_the_objective_and_counts_passes() {
    let model = moe(Arc::new(LinearGaussian::new()));
    let d = draw(&model, &DrawConfig::default(), 300, 4).unwrap();
    let l0 = Problem::new(&model, &d.data)
        .unwrap()
        .objective(&d.theta0)
        .unwrap();
    for lr in em_as_md::ADAM_LEARNING_RATES {
        let res = Executor::new(
            Problem::new(&model, &d.data).unwrap(),
            Adam::with_lr(lr).unwrap(),
        )
        .theta0(d.theta0.clone())
        .max_iters(200)
        .run()
        .unwrap();
        assert!(
            res.best.objective < l0,
            "lr {lr}: {} ≥ {l0}",
            res.best.objective
        );
        assert_eq!(res.trace[0].step.passes, 2 + res.trace[0].step.backtracks);
        for r in &res.trace[1..] {
            assert_eq!(
                r.step.passes,
                1 + r.step.backtracks,
                "lr {lr}: {:?}",
                r.step
            );
        }
    }
}

/// `MoeParams::accel` runs the chosen solver: every choice reaches the same optimum from
/// the same start, and the report names the solver.
#[test]
fn fit_accel_choices_agree() {
    let model = moe(Arc::new(LinearGaussian::new()));
    let d = draw(&model, &DrawConfig::default(), 400, 8).unwrap();
    let fits: Vec<_> = Accel::ALL
        .into_iter()
        .map(|a| {
            MoeParams::new(2)
                .accel(a)
                .tol(1e-12)
                .check()
                .unwrap()
                .fit(&d.data)
                .unwrap()
        })
        .collect();
    let ll0 = fits[0].report().log_likelihood;
    for (a, f) in Accel::ALL.into_iter().zip(&fits) {
        let r = f.report();
        assert!(
            (r.log_likelihood - ll0).abs() < 1e-8 * ll0.abs(),
            "{a}: {} vs {ll0}",
            r.log_likelihood
        );
        assert_eq!(
            r.solver.contains(a.as_str()),
            a != Accel::None,
            "{a}: {}",
            r.solver
        );
    }
}
