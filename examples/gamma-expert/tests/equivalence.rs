//! EM is mirror descent with unit step for the user's Gamma family too, proved with
//! mdem's public harness (`em_as_md::testkit`, which re-exports proptest): on random
//! gated 2-expert mixtures with data drawn from them, one EM step and one MD(η = 1) step
//! agree to 1e-8 relative (θ and L, both inner solves converged), and MD(η = 0.5), a
//! damped step, lands clearly apart.

use em_as_md::testkit::proptest::prelude::*;
use em_as_md::testkit::{draws, em_md_gap, DrawConfig, Features};
use em_as_md::{Gating, MixtureOfExperts};
use gamma_expert::gamma_expert;
use std::sync::Arc;

/// A gated mixture of two Gamma-regression experts on features (1, x).
fn model() -> MixtureOfExperts {
    MixtureOfExperts::new(Arc::new(gamma_expert().unwrap()), 2, 2, Gating::Softmax).unwrap()
}

/// x ~ U(0, 2) after the intercept, as in the example's own data.
fn config() -> DrawConfig {
    let features = Features::Uniform {
        low: 0.0,
        high: 2.0,
    };
    DrawConfig {
        features,
        ..DrawConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, rng_seed: prop::test_runner::RngSeed::Fixed(11), ..ProptestConfig::default() })]

    #[test]
    fn em_is_mirror_descent_with_unit_step(draw in draws(model(), config()).unwrap()) {
        let d = draw?; // a draw that fails fails the case: nothing is skipped
        let unit = em_md_gap(&model(), &d.data, &d.theta0, 1.0)?;
        prop_assert!(unit.agrees(1e-8), "{}", unit);
        let damped = em_md_gap(&model(), &d.data, &d.theta0, 0.5)?;
        // To first order MD(η) moves η times EM's step, so η = 0.5 is about half a step away.
        prop_assert!(damped.theta_gap > 0.1 * damped.em_step && damped.em_step > 1e-3, "{}", damped);
    }
}
