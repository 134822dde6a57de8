//! A family written outside the crate (here, in the test) used as an expert through
//! [`Glm`]: the EM step equals the independently computed MD(η = 1) step to 1e-8 relative
//! (θ and L), and EM's trace of L never increases.
//!
//! The family is the Gamma distribution with known shape $k$ (as in the `plug_in_family`
//! example): $T(s) = s$, $\theta = -\text{rate} < 0$, $A(\theta) = -k\log(-\theta)$,
//! $\nabla A = -k/\theta$, $\nabla^2 A = k/\theta^2$, $\log h(s) = (k-1)\log s - \log\Gamma(k)$.

use em_as_md::{
    Dataset, Em, Executor, FitState, Gating, Glm, MirrorDescent, MixtureOfExperts, Problem, Solver,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

mod common;
use common::rel_vec;

// The same user family as the `plug_in_family` / `plug_in_expert` examples, written
// outside every crate (one copy, included by path).
#[path = "../../../examples/common/gamma.rs"]
mod gamma;
use gamma::GammaKnownShape as UserGamma;

/// A 2-expert Gamma-regression mixture (features (1, x), x ∈ [0, 2], so βᵀx < 0 for
/// negative intercepts and non-positive slopes), data from it, and a start near it.
fn instance(gating: Gating, seed: u64) -> (MixtureOfExperts, Dataset, Vec<f64>) {
    let expert = Glm::new(Arc::new(UserGamma { k: 2.5 }));
    let model = MixtureOfExperts::new(Arc::new(expert), 2, 2, gating).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let gate: Vec<f64> = match gating {
        Gating::Softmax => vec![rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)],
        Gating::Constant => vec![rng.random_range(-1.0..1.0)],
    };
    let mut truth = gate.clone();
    truth.extend([
        rng.random_range(-1.0..-0.3),
        rng.random_range(-0.3..0.0),
        rng.random_range(-5.0..-3.0),
        rng.random_range(-1.0..0.0),
    ]);
    let n = 300;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let xi: f64 = rng.random_range(0.0..2.0);
        y.push(model.sample(&truth, &[1.0, xi], &mut rng).unwrap().0[0]);
        x.push(xi);
    }
    let data = Dataset::from_rows(&x, 1, &y, 1).unwrap().with_intercept();
    // Start: truth with the gate moved and the intercepts scaled (still in the domain).
    let mut theta0 = truth.clone();
    let g = gate.len();
    for v in &mut theta0[..g] {
        *v += rng.random_range(-0.5..0.5);
    }
    theta0[g] *= rng.random_range(0.6..1.5);
    theta0[g + 2] *= rng.random_range(0.6..1.5);
    (model, data, theta0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, rng_seed: proptest::test_runner::RngSeed::Fixed(3), ..ProptestConfig::default() })]

    #[test]
    fn user_family_em_step_equals_md_eta_one(seed in 0u64..10_000, gated in proptest::bool::ANY) {
        let gating = if gated { Gating::Softmax } else { Gating::Constant };
        let (model, data, theta0) = instance(gating, seed);
        let problem = Problem::new(&model, &data).unwrap();
        let l0 = problem.objective(&theta0).unwrap();
        let (s_em, _) = Em::new().next_iter(&problem, FitState::new(theta0.clone(), l0)).unwrap();
        let mut md = MirrorDescent::new(1.0, 1e-11, 500).unwrap();
        let (s_md, rec) = md.next_iter(&problem, FitState::new(theta0.clone(), l0)).unwrap();
        prop_assert!(rec.inner.converged, "MD inner solve: {rec:?}");
        let e = rel_vec(&s_md.theta, &s_em.theta);
        prop_assert!(e < 1e-8, "θ differ by {e:e}: EM {:?} MD {:?}", s_em.theta, s_md.theta);
        let el = (s_md.objective - s_em.objective).abs() / s_em.objective.abs().max(1.0);
        prop_assert!(el < 1e-8, "L: EM {} MD {}", s_em.objective, s_md.objective);
        // The step moved: the comparison is not between two copies of θ₀.
        prop_assert!(rel_vec(&s_em.theta, &theta0) > 1e-4);
    }
}

#[test]
fn user_family_em_trace_never_increases() {
    for (seed, gating) in [(1u64, Gating::Softmax), (2, Gating::Constant)] {
        let (model, data, theta0) = instance(gating, seed);
        let fit = Executor::new(Problem::new(&model, &data).unwrap(), Em::new())
            .theta0(theta0)
            .tol(1e-12)
            .max_iters(200)
            .run()
            .unwrap();
        let l: Vec<f64> = fit.trace.iter().map(|r| r.objective).collect();
        assert!(l.len() >= 3, "{gating:?}: only {} iterations", l.len());
        for w in l.windows(2) {
            assert!(
                w[1] <= w[0] + 1e-10 * w[0].abs().max(1.0),
                "{gating:?}: L increased from {} to {}",
                w[0],
                w[1]
            );
        }
        // And it decreased overall from the perturbed start.
        assert!(l[l.len() - 1] < l[0]);
    }
}
