//! Fitting settings in saved models ([`em_as_md::fit::io`]): the gate's [`GateConfig`] (the
//! `fitting` section) and a multinomial expert's L-BFGS budget and dense-Newton limit (the
//! parameters of its description) survive save → load, a refit from the loaded model runs
//! with them, files without them load with the defaults, and invalid saved settings are
//! typed errors. Version-1 files (settings in `fitting.multinomial`) still load.

use em_as_md::fit::io::{from_json, to_json};
use em_as_md::fit::UngatedFit;
use em_as_md::model::expert::{
    MULTINOMIAL_DENSE_MAX_PARAMS, MULTINOMIAL_LBFGS_MAX_ITER, MULTINOMIAL_LBFGS_TOL,
};
use em_as_md::{
    Dataset, Em, Executor, FitReport, FitResult, FittedMoe, GateConfig, GateSolver, Gating,
    MixtureOfExperts, MoeError, Multinomial, Problem, RegistryError, Termination,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::sync::Arc;

/// Every field away from its default.
const GATE: GateConfig = GateConfig {
    tol: 2.5e-7,
    max_iter: 37,
    reuse_below: 0.125,
    solver: GateSolver::Lbfgs,
    lbfgs_fallback: true,
    ridge: 0.75,
};
/// Multinomial budget away from [`MULTINOMIAL_LBFGS_TOL`] / [`MULTINOMIAL_LBFGS_MAX_ITER`].
const LBFGS_TOL: f64 = 3.5e-5;
const LBFGS_MAX_ITER: u64 = 7;
/// Below $(C-1)d = 6$: the experts' M-step is L-BFGS (no Hessian), and not the default.
const DENSE_MAX: usize = 5;

/// $n$ rows of (intercept, two uniform features) with 3 classes depending on the first.
fn data(n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(3 * n);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b) = (
            rng.random::<f64>() * 2.0 - 1.0,
            rng.random::<f64>() * 2.0 - 1.0,
        );
        x.extend_from_slice(&[1.0, a, b]);
        let c = if rng.random::<f64>() < 0.75 {
            (((a + 1.0) * 1.5) as usize).min(2)
        } else {
            rng.random_range(0..3)
        };
        y.push(c as f64);
    }
    Dataset::from_rows(&x, 3, &y, 1).unwrap()
}

fn configured_model() -> MixtureOfExperts {
    let expert = Multinomial::new(3)
        .unwrap()
        .with_dense_max_params(DENSE_MAX)
        .with_lbfgs_budget(LBFGS_TOL, LBFGS_MAX_ITER)
        .unwrap();
    MixtureOfExperts::new(Arc::new(expert), 2, 3, Gating::Softmax)
        .unwrap()
        .with_gate_config(GATE)
        .unwrap()
}

fn refit(model: &MixtureOfExperts, data: &Dataset, theta0: &[f64]) -> FitResult {
    Executor::new(Problem::new(model, data).unwrap(), Em::new())
        .theta0(theta0.to_vec())
        .max_iters(3)
        .run()
        .unwrap()
}

/// A fitted model with the non-default settings (three EM iterations from a random start).
fn fitted(data: &Dataset) -> FittedMoe {
    let model = configured_model();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let theta0 = model.random_params(&mut rng, 0.5);
    let r = refit(&model, data, &theta0);
    let report = FitReport {
        solver: "EM".into(),
        n_rows: data.n(),
        log_likelihood: -(data.n() as f64) * r.state.objective,
        entropy: 0.0,
        iterations: r.trace.len() as u64,
        termination: r.termination,
        seconds: r.seconds,
        trace: r.trace,
        best_restart: 0,
        restarts: Vec::new(),
        spread: None,
        start_theta: theta0,
        ungated: Some(UngatedFit {
            log_likelihood: -1234.5,
            restart_log_likelihood: -1234.25,
            seconds: 0.5,
            em_seconds: 0.25,
            start_ran: false,
        }),
    };
    let names = vec!["(intercept)".into(), "a".into(), "b".into()];
    FittedMoe::new(model, r.state.theta, names, report).unwrap()
}

fn debug_expert(m: &MixtureOfExperts) -> String {
    format!("{:?}", m.expert())
}

#[test]
fn settings_survive_save_and_load_and_drive_the_refit() {
    let data = data(300, 3);
    let orig = fitted(&data);
    let json = to_json(&orig).unwrap();
    let loaded = from_json(&json).unwrap();

    // The settings as read back.
    assert_eq!(loaded.model().gate_config(), GATE);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(v["spec"]["expert"]["name"], "multinomial");
    let m = &v["spec"]["expert"]["params"];
    assert_eq!(m["classes"].as_f64(), Some(3.0));
    assert_eq!(m["lbfgs_tol"].as_f64(), Some(LBFGS_TOL));
    assert_eq!(m["lbfgs_max_iter"].as_f64(), Some(LBFGS_MAX_ITER as f64));
    assert_eq!(m["dense_max_params"].as_f64(), Some(DENSE_MAX as f64));
    assert_eq!(v["fitting"]["gate"]["solver"], "Lbfgs");
    // The loaded expert equals the configured one in every field (its Debug form lists
    // them all), and differs from a default multinomial expert.
    let default_expert = format!("{:?}", Multinomial::new(3).unwrap());
    assert_eq!(debug_expert(loaded.model()), debug_expert(orig.model()));
    assert_ne!(debug_expert(loaded.model()), default_expert);
    // Saving the loaded model writes the same file; the recorded start comes back.
    assert_eq!(to_json(&loaded).unwrap(), json);
    assert_eq!(loaded.report().start_theta, orig.report().start_theta);
    assert_eq!(loaded.report().start_theta.len(), orig.theta().len());
    assert_eq!(loaded.report().ungated, orig.report().ungated);
    assert!(loaded.report().ungated.is_some());

    // A refit from the loaded model runs with them: L-BFGS gate and L-BFGS experts form
    // no Hessian, and the run is bit-identical to one from the original model.
    let theta = orig.theta();
    let a = refit(orig.model(), &data, theta);
    let b = refit(loaded.model(), &data, theta);
    assert_eq!(b.trace.len(), 3);
    for rec in &b.trace {
        assert_eq!(rec.inner.hessians, 0, "{:?}", rec.inner);
    }
    let objs = |r: &FitResult| r.trace.iter().map(|t| t.objective).collect::<Vec<_>>();
    let inner = |r: &FitResult| r.trace.iter().map(|t| t.inner.clone()).collect::<Vec<_>>();
    assert_eq!(objs(&a), objs(&b));
    assert_eq!(inner(&a), inner(&b));
    assert_eq!(a.state.theta, b.state.theta);

    // The same file without the settings loads with the defaults, whose refit differs
    // (Newton gate and dense Newton experts: Hessians are formed).
    let mut old = v.clone();
    old.as_object_mut().unwrap().remove("fitting");
    let params = old["spec"]["expert"]["params"].as_object_mut().unwrap();
    for name in ["lbfgs_tol", "lbfgs_max_iter", "dense_max_params"] {
        params.remove(name);
    }
    let plain = from_json(&old.to_string()).unwrap();
    assert_eq!(plain.model().gate_config(), GateConfig::default());
    assert_eq!(debug_expert(plain.model()), default_expert);
    assert_eq!(plain.theta(), orig.theta());
    let c = refit(plain.model(), &data, theta);
    assert!(
        c.trace.iter().all(|r| r.inner.hessians > 0),
        "{:?}",
        c.trace
    );
    assert_ne!(objs(&a), objs(&c));
}

/// A version-1 file as written before the `fitting` section existed.
const OLD_FILE: &str = r#"{
  "format": "mdem-moe",
  "version": 1,
  "spec": {
    "expert": { "Multinomial": { "classes": 2 } },
    "n_experts": 2,
    "n_features": 1,
    "gating": "Softmax"
  },
  "theta": [0.25, -1.5, 0.75],
  "feature_names": ["(intercept)"],
  "intercept": true,
  "report": {
    "solver": "EM",
    "n_rows": 10,
    "log_likelihood": -6.5,
    "entropy": 0.125,
    "iterations": 0,
    "termination": "MaxIters",
    "seconds": 0.5,
    "trace": [],
    "best_restart": 0,
    "restarts": [],
    "spread": null
  }
}"#;

#[test]
fn a_file_without_the_section_loads_with_the_defaults() {
    let m = from_json(OLD_FILE).unwrap();
    assert_eq!(m.theta(), &[0.25, -1.5, 0.75]);
    assert_eq!(m.report().termination, Termination::MaxIters);
    // No recorded start: `mdem certify` draws it again.
    assert!(m.report().start_theta.is_empty());
    assert_eq!(m.model().gate_config(), GateConfig::default());
    assert_eq!(
        format!("{:?}", m.model().expert()),
        format!("{:?}", Multinomial::new(2).unwrap())
    );
    // Saved again, it is a version-2 file carrying the (default) settings explicitly.
    let text = to_json(&m).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["version"], 2);
    let f = &v["fitting"];
    assert_eq!(f["gate"]["tol"].as_f64(), Some(GateConfig::default().tol));
    assert_eq!(f["gate"]["solver"], "Newton");
    let p = &v["spec"]["expert"]["params"];
    assert_eq!(p["classes"].as_f64(), Some(2.0));
    assert_eq!(p["lbfgs_tol"].as_f64(), Some(MULTINOMIAL_LBFGS_TOL));
    assert_eq!(
        p["lbfgs_max_iter"].as_f64(),
        Some(MULTINOMIAL_LBFGS_MAX_ITER as f64)
    );
    assert_eq!(
        p["dense_max_params"].as_f64(),
        Some(MULTINOMIAL_DENSE_MAX_PARAMS as f64)
    );
    // The version-2 file reads back to the same model, bit for bit.
    let again = from_json(&text).unwrap();
    assert_eq!(to_json(&again).unwrap(), text);
    assert_eq!(again.theta(), m.theta());
}

#[test]
fn version_1_multinomial_settings_become_the_spec_params() {
    let v1 = with_fitting(serde_json::json!({
        "gate": gate_json(1e-6, 9),
        "multinomial": { "lbfgs_tol": LBFGS_TOL, "lbfgs_max_iter": LBFGS_MAX_ITER,
                         "dense_max_params": DENSE_MAX }
    }));
    let m = from_json(&v1).unwrap();
    let want = Multinomial::new(2)
        .unwrap()
        .with_dense_max_params(DENSE_MAX)
        .with_lbfgs_budget(LBFGS_TOL, LBFGS_MAX_ITER)
        .unwrap();
    assert_eq!(debug_expert(m.model()), format!("{want:?}"));
    assert_eq!(m.model().gate_config().max_iter, 9);
    // Other version-1 experts map to their registry names.
    for (v1_expert, name, ridge) in [
        (r#""Linear""#, "linear", None),
        (
            r#"{ "RidgeLinear": { "ridge": 0.25 } }"#,
            "linear",
            Some(0.25),
        ),
        (r#""Logistic""#, "logistic", None),
        (r#""Poisson""#, "poisson", None),
    ] {
        // One-parameter experts: gate 1 + experts 2 × 1 = 3 values, as OLD_FILE; the
        // linear expert has d + 1 = 2 per expert.
        let mut v: Value = serde_json::from_str(OLD_FILE).unwrap();
        v["spec"]["expert"] = serde_json::from_str(v1_expert).unwrap();
        if name == "linear" {
            v["theta"] = serde_json::json!([0.25, -1.5, -0.5, 0.75, -2.0]);
        }
        let m = from_json(&v.to_string()).unwrap();
        let spec = m.model().spec().unwrap().expert;
        assert_eq!(spec.name, name);
        assert_eq!(
            spec.params.get("ridge"),
            ridge.or((name == "linear").then_some(0.0))
        );
    }
}

/// `OLD_FILE` with a `fitting` section.
fn with_fitting(fitting: Value) -> String {
    let mut v: Value = serde_json::from_str(OLD_FILE).unwrap();
    v.as_object_mut().unwrap().insert("fitting".into(), fitting);
    v.to_string()
}

fn gate_json(tol: f64, max_iter: u64) -> Value {
    serde_json::json!({
        "tol": tol, "max_iter": max_iter, "reuse_below": 0.0,
        "solver": "Newton", "lbfgs_fallback": false
    })
}

#[test]
fn invalid_saved_settings_are_the_setters_typed_errors() {
    // A valid section loads (the gate alone: the multinomial settings stay default).
    let ok = from_json(&with_fitting(
        serde_json::json!({ "gate": gate_json(1e-6, 9) }),
    ))
    .unwrap();
    assert_eq!(ok.model().gate_config().max_iter, 9);
    assert_eq!(ok.model().gate_config().reuse_below, 0.0);
    // A negative gate tolerance: `with_gate_config`'s error.
    let bad_gate = from_json(&with_fitting(
        serde_json::json!({ "gate": gate_json(-1.0, 9) }),
    ));
    assert!(
        matches!(
            bad_gate,
            Err(MoeError::InvalidParam {
                name: "gate config",
                ..
            })
        ),
        "{bad_gate:?}"
    );
    // A zero L-BFGS iteration cap: the multinomial builder names the parameter.
    let bad_budget = from_json(&with_fitting(serde_json::json!({
        "gate": gate_json(1e-6, 9),
        "multinomial": { "lbfgs_tol": 1e-6, "lbfgs_max_iter": 0, "dense_max_params": 4 }
    })));
    assert!(
        matches!(
            &bad_budget,
            Err(MoeError::Registry(RegistryError::BadParam { owner, param, value, .. }))
                if owner == "multinomial" && param == "lbfgs_max_iter" && *value == 0.0
        ),
        "{bad_budget:?}"
    );
    // The same in a version-2 file, and a parameter the expert does not take.
    let v2 = to_json(&from_json(OLD_FILE).unwrap()).unwrap();
    let mut v: Value = serde_json::from_str(&v2).unwrap();
    v["spec"]["expert"]["params"]["lbfgs_tol"] = serde_json::json!(-1.0);
    let e = from_json(&v.to_string());
    assert!(
        matches!(
            &e,
            Err(MoeError::Registry(RegistryError::BadParam { param, .. })) if param == "lbfgs_tol"
        ),
        "{e:?}"
    );
    let mut v: Value = serde_json::from_str(&v2).unwrap();
    v["spec"]["expert"]["params"]["clases"] = serde_json::json!(3.0);
    let e = from_json(&v.to_string());
    assert!(
        matches!(
            &e,
            Err(MoeError::Registry(RegistryError::WrongParams { owner, found, .. }))
                if owner == "multinomial" && found.contains(&"clases".to_string())
        ),
        "{e:?}"
    );
    // An unknown solver name is malformed JSON for the file's schema.
    let mut g = gate_json(1e-6, 9);
    g["solver"] = "Bfgs".into();
    let bad_solver = from_json(&with_fitting(serde_json::json!({ "gate": g })));
    assert!(matches!(bad_solver, Err(MoeError::Io(_))), "{bad_solver:?}");
}

#[test]
fn multinomial_settings_on_another_expert_are_rejected() {
    let text = OLD_FILE.replace(r#"{ "Multinomial": { "classes": 2 } }"#, r#""Logistic""#);
    // Logistic with d = 1, K = 2: gate 1 + experts 2 × 1 parameters, as the file has.
    assert!(from_json(&text).is_ok());
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().insert(
        "fitting".into(),
        serde_json::json!({
            "gate": gate_json(1e-6, 9),
            "multinomial": { "lbfgs_tol": 1e-6, "lbfgs_max_iter": 5, "dense_max_params": 4 }
        }),
    );
    let r = from_json(&v.to_string());
    assert!(
        matches!(
            r,
            Err(MoeError::InvalidParam {
                name: "fitting",
                ..
            })
        ),
        "{r:?}"
    );
}
