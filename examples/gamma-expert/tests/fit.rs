//! The user's expert gets what a built-in gets: seeded restarts through `MoeParams`,
//! a `FittedMoe` that predicts, a model file that reloads bit for bit (the family found by
//! its registered name), and typed errors — never a panic — for files that name an
//! unregistered family or give it parameters it does not take.

use em_as_md::error::RegistryError;
use em_as_md::{Dataset, FittedMoe, Gating, MixtureOfExperts, MoeError, MoeParams};
use gamma_expert::{gamma_expert, FAMILY};
use mirror::rand::{Rng, SeedableRng};
use std::sync::Arc;

const TRUTH: [f64; 8] = [1.0, -1.5, -0.5, -0.25, 1.0, -4.0, -1.0, 4.0];

fn data(n: usize, seed: u64) -> Dataset {
    let model =
        MixtureOfExperts::new(Arc::new(gamma_expert().unwrap()), 2, 2, Gating::Softmax).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let xi: f64 = rng.random_range(0.0..2.0);
        y.push(model.sample(&TRUTH, &[1.0, xi], &mut rng).unwrap().0[0]);
        x.push(xi);
    }
    Dataset::from_rows(&x, 1, &y, 1).unwrap().with_intercept()
}

fn fit(data: &Dataset) -> FittedMoe {
    MoeParams::new(2)
        .expert(gamma_expert().unwrap())
        .n_init(4)
        .seed(3)
        .check()
        .unwrap()
        .fit(data)
        .unwrap()
}

#[test]
fn restarts_predict_and_a_model_file_that_reloads_bit_for_bit() {
    let data = data(1500, 1);
    let fitted = fit(&data);
    let report = fitted.report();
    // Four seeded starts; this gated fit also fitted the ungated model, never ends below
    // it, and started from its optimum only if no seeded start reached it.
    let ungated = report.ungated.expect("a gated fit reports its ungated fit");
    assert!(report.log_likelihood >= ungated.log_likelihood - 1e-9 * ungated.log_likelihood.abs());
    assert_eq!(report.restarts.len(), 4 + usize::from(ungated.start_ran));
    if ungated.start_ran {
        assert_eq!(report.restarts[4].init, em_as_md::fit::UNGATED_START);
    }
    assert!(
        report.restarts.iter().all(|r| r.error.is_none()),
        "{report:?}"
    );
    // The best restart's log-likelihood is the largest of them.
    let best = report
        .restarts
        .iter()
        .filter_map(|r| r.log_likelihood)
        .fold(f64::NEG_INFINITY, f64::max);
    assert!((report.log_likelihood - best).abs() <= 1e-9 * best.abs());
    assert!(fitted.bic() > fitted.aic());

    let text = em_as_md::fit::io::to_json(&fitted).unwrap();
    assert!(text.contains(FAMILY), "the file names the family");
    let back = em_as_md::fit::io::from_json(&text).unwrap();
    assert_eq!(back.theta(), fitted.theta());
    assert_eq!(
        back.predict_mean(&data).unwrap(),
        fitted.predict_mean(&data).unwrap()
    );
    assert_eq!(
        back.log_likelihood(&data).unwrap(),
        fitted.log_likelihood(&data).unwrap()
    );
}

#[test]
fn bad_model_files_are_typed_errors_naming_what_is_wrong() {
    let fitted = fit(&data(600, 2));
    let text = em_as_md::fit::io::to_json(&fitted).unwrap();

    // A family nobody registered: the error names it and lists the known ones.
    let unknown = text.replace(FAMILY, "gamma-not-registered");
    let e = em_as_md::fit::io::from_json(&unknown).unwrap_err();
    match &e {
        MoeError::Registry(RegistryError::UnknownFamily { name, known }) => {
            assert_eq!(name, "gamma-not-registered");
            assert!(known.iter().any(|k| k == FAMILY), "{known:?}");
        }
        other => panic!("expected UnknownFamily, got {other:?}"),
    }

    // Parameters the family does not take.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let family = &mut v["spec"]["expert"]["family"];
    assert_eq!(family["name"], FAMILY, "{text}");
    family["params"] = serde_json::json!({ "shape": 2.0 });
    let extra = v.to_string();
    let e = em_as_md::fit::io::from_json(&extra).unwrap_err();
    assert!(
        matches!(e, MoeError::Registry(RegistryError::WrongParams { .. })),
        "{e:?}"
    );
}
