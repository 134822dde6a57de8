//! EM = projected mirror descent with unit step, checked numerically through the public
//! harness [`em_as_md::testkit`].
//!
//! The EM step comes from the models' E-/M-step code (through the `Em` solver); the MD
//! step from `MirrorDescent`, which only sees `Problem::md_targets` /
//! `Problem::md_subproblem` and minimises them with L-BFGS — never the M-step.
//!
//! **The 1000-draw test** (`em_equals_md_eta_one_on_1040_random_draws`): 1040 random
//! instances (model, data drawn from it at a random θ*, an independent random start θ₀)
//! over mixtures of the built-in experts (linear-Gaussian, logistic, Poisson,
//! multinomial; softmax and constant gating, K = 2–3, 1–3 features plus an intercept),
//! the symmetric models SymMoLinE and SymMoLogE, and `Glm` over two user-style families
//! (the two-parameter Gamma of `examples/gamma-expert`, shared through `tests/common`,
//! and the bivariate normal with unknown covariance). Every draw must give EM ≡ MD(η = 1)
//! to 1e-8 relative in θ and in L with both inner solves converged, and MD(η = 0.5) must
//! land clearly apart (on every fourth draw). No draw is skipped: a draw that errors or disagrees is recorded
//! (group, case, seed, gap, inner status) and the test fails listing all of them. Seeds
//! are fixed, so the run is reproducible.
//!
//! The other tests: on the linear-realisation models the projected and unprojected
//! forms of MD agree, and ∇L, ∇A_n and I_c match finite differences.

mod common;

use common::gamma::{gamma_expert, GammaShapeRate};
use common::mvn_expert;
use em_as_md::model::expert::{Expert, LinearGaussian, Logistic, Multinomial, Poisson};
use em_as_md::solve::md::complete_information;
use em_as_md::solve::problem::{row_posterior, RowScratch};
use em_as_md::testkit::proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use em_as_md::testkit::{
    draw, draws, em_md_gap, relative_gap, relative_gap_scalar, theta_strategy, Draw, DrawConfig,
    Simulate,
};
use em_as_md::{ConditionalFamily, EmModel, Glm, MoeError};
use em_as_md::{
    Dataset, Gating, MirrorDescent, MixtureOfExperts, Problem, SymMoLinE, SymMoLogE,
    UnprojectedMirrorDescent,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use rand::SeedableRng;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Instant;

/// EM and MD(η = 1) must agree to this, relative, in θ and in L.
const TOL: f64 = 1e-8;
/// MD(η = 0.5) is half an EM step to first order (θ⁺ − θₜ ≈ η (θ_EM − θₜ)), so its gap
/// to EM is about half of EM's step; it must be at least this fraction of it.
const HALF_STEP_FRACTION: f64 = 0.1;

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

// ---------------------------------------------------------------------------------------
// The 1000-draw equivalence test
// ---------------------------------------------------------------------------------------

/// What one group of draws measured.
#[derive(Debug, Default)]
struct Tally {
    draws: usize,
    max_theta_gap: f64,
    max_objective_gap: f64,
    max_md_residual: f64,
    max_md_iterations: u64,
    /// min over draws of gap(MD(0.5), EM) / EM step.
    min_half_fraction: f64,
    seconds: f64,
    failures: Vec<String>,
}

/// Draws `cases` instances from `strategy` (a proptest strategy run with a fixed seed)
/// and compares EM with MD(η = 1) and MD(η = 0.5) on each; nothing is skipped.
fn run_group<M, S>(name: &str, cases: usize, seed: u8, strategy: S) -> Tally
where
    M: EmModel,
    M::Stats: 'static,
    S: Strategy<Value = Result<(M, Draw), MoeError>>,
{
    let started = Instant::now();
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let mut t = Tally {
        min_half_fraction: f64::INFINITY,
        ..Tally::default()
    };
    for case in 0..cases {
        t.draws += 1;
        // Every draw is compared or reported: an error is a failure like a disagreement.
        let compared = strategy
            .new_tree(&mut runner)
            .map_err(|reason| format!("no draw: {reason}"))
            .and_then(|tree| {
                let (model, d) = tree.current().map_err(|e| format!("draw: {e}"))?;
                let one = em_md_gap(&model, &d.data, &d.theta0, 1.0)
                    .map_err(|e| format!("seed {}: η = 1: {e}", d.seed))?;
                let half = if case % HALF_EVERY == 0 {
                    let h = em_md_gap(&model, &d.data, &d.theta0, 0.5)
                        .map_err(|e| format!("seed {}: η = 0.5: {e}", d.seed))?;
                    Some(h)
                } else {
                    None
                };
                Ok((d, one, half))
            });
        match compared {
            Err(e) => t.failures.push(format!("{name} case {case}: error: {e}")),
            Ok((d, one, half)) => {
                t.max_theta_gap = t.max_theta_gap.max(one.theta_gap);
                t.max_objective_gap = t.max_objective_gap.max(one.objective_gap);
                t.max_md_residual = t.max_md_residual.max(one.md_inner.residual);
                t.max_md_iterations = t.max_md_iterations.max(one.md_inner.iterations);
                if !one.agrees(TOL) {
                    t.failures.push(format!(
                        "{name} case {case} (seed {}, n {}): {one}",
                        d.seed,
                        d.data.n()
                    ));
                }
                if let Some(half) = half {
                    let fraction = half.theta_gap / one.em_step;
                    t.min_half_fraction = t.min_half_fraction.min(fraction);
                    // A NaN fraction fails too.
                    if fraction.is_nan() || fraction < HALF_STEP_FRACTION {
                        t.failures.push(format!(
                            "{name} case {case} (seed {}): η = 0.5 too close to EM: {half}",
                            d.seed
                        ));
                    }
                }
            }
        }
    }
    t.seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{name}: {} draws in {:.1} s, {} failed",
        t.draws,
        t.seconds,
        t.failures.len()
    );
    for f in &t.failures {
        eprintln!("  {f}");
    }
    t
}

/// The 1040 draws: 150 per built-in expert and per symmetric model, 80 for the Gamma
/// and 60 for the bivariate normal (K = 2, 40–80 rows), whose rows cost most (a 2×2
/// Cholesky factorisation, solve and inverse of the precision per expert per row at
/// every evaluation). Measured on 2 cores in the test profile: about 10 s in all
/// (linear-Gaussian 2 s, Poisson 3 s, bivariate normal 6 s, the rest under 2 s each).
const BUILTIN_CASES: usize = 150;
const SYM_CASES: usize = 150;
const GAMMA_CASES: usize = 80;
const MVN_CASES: usize = 60;
/// MD(η = 0.5) is compared on every `HALF_EVERY`-th draw (a second inner solve; the
/// η = 1 comparison runs on every draw).
const HALF_EVERY: usize = 4;

/// A mixture of `expert(variant)` (`variant` a fair coin) with K in `experts`, a number of
/// features in `features` plus an intercept, softmax or
/// constant gating, and a draw from it (rows and seed from the proptest RNG).
fn mixture_draws(
    expert: impl Fn(bool) -> Arc<dyn Expert> + 'static,
    config: DrawConfig,
    experts: RangeInclusive<usize>,
    features: RangeInclusive<usize>,
) -> impl Strategy<Value = Result<(MixtureOfExperts, Draw), MoeError>> {
    (
        experts,
        features,
        any::<bool>(),
        any::<bool>(),
        config.rows.clone(),
        any::<u64>(),
    )
        .prop_map(move |(k, d_raw, gated, variant, n, seed)| {
            let gating = if gated {
                Gating::Softmax
            } else {
                Gating::Constant
            };
            let model = MixtureOfExperts::new(expert(variant), k, d_raw + 1, gating)?;
            let d = draw(&model, &config, n, seed)?;
            Ok((model, d))
        })
}

/// Builds a group's expert (the flag is a per-draw coin some groups use).
type ExpertOf = fn(bool) -> Arc<dyn Expert>;

/// 80–160 rows: enough for every block's M-step, few enough for 1040 draws in a minute.
fn rows() -> DrawConfig {
    DrawConfig {
        rows: 80..160,
        ..DrawConfig::default()
    }
}

#[test]
fn em_equals_md_eta_one_on_1040_random_draws() {
    let started = Instant::now();
    let mut groups: Vec<(&str, Tally)> = Vec::new();
    let builtins: [(&str, ExpertOf); 4] = [
        ("linear-Gaussian", |_| Arc::new(LinearGaussian::new())),
        ("logistic", |_| Arc::new(Logistic::new())),
        ("Poisson", |_| Arc::new(Poisson::new())),
        ("multinomial(3)", |_| Arc::new(Multinomial::new(3).unwrap())),
    ];
    for (i, (name, expert)) in builtins.into_iter().enumerate() {
        let s = mixture_draws(expert, rows(), 2..=3, 1..=3);
        groups.push((name, run_group(name, BUILTIN_CASES, 1 + i as u8, s)));
    }
    // The symmetric models: no intercept, x ~ N(0, I_d) as in the paper.
    let sym = DrawConfig {
        intercept: false,
        ..rows()
    };
    let cfg = sym.clone();
    let s = (1usize..=4, 0.5f64..2.0, sym.rows.clone(), any::<u64>()).prop_map(
        move |(d, sigma, n, seed)| {
            let model = SymMoLinE::new(d, sigma)?;
            let dr = draw(&model, &cfg, n, seed)?;
            Ok((model, dr))
        },
    );
    groups.push(("SymMoLinE", run_group("SymMoLinE", SYM_CASES, 11, s)));
    let cfg = sym.clone();
    let s = (1usize..=4, sym.rows.clone(), any::<u64>()).prop_map(move |(d, n, seed)| {
        let model = SymMoLogE::new(d)?;
        let dr = draw(&model, &cfg, n, seed)?;
        Ok((model, dr))
    });
    groups.push(("SymMoLogE", run_group("SymMoLogE", SYM_CASES, 12, s)));
    // Glm over user-style families: Gamma with unknown shape (both components
    // regressed, or the shape a per-expert constant as in examples/gamma-expert) and the
    // bivariate normal with unknown covariance.
    let gamma = |both: bool| -> Arc<dyn Expert> {
        if both {
            Arc::new(Glm::new(Arc::new(GammaShapeRate)))
        } else {
            Arc::new(gamma_expert().unwrap())
        }
    };
    let s = mixture_draws(gamma, rows(), 2..=3, 1..=3);
    groups.push(("Glm(Gamma)", run_group("Glm(Gamma)", GAMMA_CASES, 21, s)));
    let mvn_rows = DrawConfig {
        rows: 40..80,
        ..rows()
    };
    let s = mixture_draws(|_| Arc::new(mvn_expert().unwrap()), mvn_rows, 2..=2, 1..=2);
    groups.push(("Glm(MVN 2)", run_group("Glm(MVN 2)", MVN_CASES, 22, s)));

    let elapsed = started.elapsed().as_secs_f64();
    let total: usize = groups.iter().map(|(_, t)| t.draws).sum();
    eprintln!("{total} draws in {elapsed:.1} s");
    eprintln!("group             draws  seconds  max θ gap  max L gap  max MD residual  max MD iters  min gap(η=0.5)/EM step");
    for (name, t) in &groups {
        eprintln!(
            "{name:16} {:6}  {:7.1}  {:9.2e}  {:9.2e}  {:15.2e}  {:12}  {:.3}",
            t.draws,
            t.seconds,
            t.max_theta_gap,
            t.max_objective_gap,
            t.max_md_residual,
            t.max_md_iterations,
            t.min_half_fraction
        );
    }
    let failures: Vec<&String> = groups.iter().flat_map(|(_, t)| &t.failures).collect();
    assert!(total >= 1000, "only {total} draws");
    assert!(
        failures.is_empty(),
        "{} of {total} draws failed:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// The strategies as a user writes them in `proptest!` (the harness's own example).
proptest! {
    #![proptest_config(ProptestConfig { cases: 8, rng_seed: proptest::test_runner::RngSeed::Fixed(5), ..ProptestConfig::default() })]

    #[test]
    fn strategies_from_the_testkit_in_a_user_proptest(
        draw in draws(MixtureOfExperts::new(Arc::new(Poisson::new()), 2, 3, Gating::Softmax).unwrap(), DrawConfig::default()).unwrap(),
        theta0 in theta_strategy(MixtureOfExperts::new(Arc::new(Poisson::new()), 2, 3, Gating::Softmax).unwrap(), 0.5).unwrap(),
    ) {
        let model = MixtureOfExperts::new(Arc::new(Poisson::new()), 2, 3, Gating::Softmax)?;
        let (d, theta0) = (draw?, theta0?);
        prop_assert_eq!(d.data.n(), d.data.y_all().len());
        let gap = em_md_gap(&model, &d.data, &theta0, 1.0)?;
        prop_assert!(gap.agrees(TOL), "{}", gap);
        // The truth is a valid start too.
        let gap = em_md_gap(&model, &d.data, &d.theta_true, 1.0)?;
        prop_assert!(gap.agrees(TOL), "{}", gap);
        // Simulate is the trait behind both strategies.
        let t = model.draw_theta(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1), 1.0)?;
        prop_assert_eq!(t.len(), model.n_params());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]

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
        prop_assert!(relative_gap(&a, &b)? < 1e-8, "projected {a:?} vs unprojected {b:?}");
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
            assert!(relative_gap_scalar(l, lg) < 1e-13, "{l} vs {lg}");
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
