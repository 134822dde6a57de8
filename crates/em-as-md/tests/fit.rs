//! Fitting with restarts, determinism, validation, prediction, model I/O and alignment on
//! a generated 3-expert gated linear mixture.

use em_as_md::fit::align::{align_components, layout_of, permute_theta};
use em_as_md::fit::predict::{classification_entropy, information_criteria};
use em_as_md::fit::scaling::Scaling;
use em_as_md::fit::{initial_theta, MoeParams, UngatedStart};
use em_as_md::{
    ConditionalFamily, Dataset, EmModel, Expert, ExpertSpec, FittedMoe, GateConfig, Gating,
    InitMethod, LinearGaussian, Logistic, MixtureOfExperts, MoeError, Multinomial, Poisson,
    Problem, Termination,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

mod common;
use common::{untimed, with_threads};

/// True parameters: gate $w_0 = (1, 2)$, $w_1 = (0.5, -2)$; experts
/// $\beta = (2, 1), (-2, 0.5), (0, -1.5)$, $\sigma^2 = 0.09, 0.16, 0.04$.
fn truth() -> (MixtureOfExperts, Vec<f64>) {
    let model =
        MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 3, 2, Gating::Softmax).unwrap();
    let mut theta = vec![1.0, 2.0, 0.5, -2.0];
    for (beta, s2) in [([2.0, 1.0], 0.09), ([-2.0, 0.5], 0.16), ([0.0, -1.5], 0.04)] {
        let mut block = vec![0.0; 3];
        LinearGaussian::natural_from_beta(&beta, s2, &mut block).unwrap();
        theta.extend(block);
    }
    assert_eq!(theta.len(), model.n_params());
    (model, theta)
}

fn generate(n: usize, seed: u64) -> Dataset {
    let (model, theta) = truth();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let xi: f64 = rng.random_range(-2.0..2.0);
        let (yi, _) = model.sample(&theta, &[1.0, xi], &mut rng).unwrap();
        x.push(xi);
        y.push(yi[0]);
    }
    Dataset::from_rows(&x, 1, &y, 1).unwrap().with_intercept()
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn params() -> MoeParams {
    MoeParams::new(3)
        .expert(LinearGaussian::new())
        .gating(Gating::Softmax)
        .tol(1e-10)
        .max_iters(500)
}

/// `p` checked and fitted to `data`, both expected to succeed.
fn fit_ok(p: MoeParams, data: &Dataset) -> FittedMoe {
    p.check().unwrap().fit(data).unwrap()
}

#[test]
fn same_seed_gives_identical_fits_and_the_fit_is_good() {
    let data = generate(600, 1);
    let a = fit_ok(params().n_init(2).seed(9), &data);
    let b = fit_ok(params().n_init(2).seed(9), &data);
    assert_eq!(bits(a.theta()), bits(b.theta()));
    assert_eq!(a.report().iterations, b.report().iterations);
    assert_eq!(untimed(&a.report().restarts), untimed(&b.report().restarts));
    assert!(matches!(
        a.report().termination,
        Termination::Converged { .. }
    ));
    // The fit beats the truth's likelihood (it is the MLE) but not by much.
    let (model, theta) = truth();
    let l_true = -(data.n() as f64)
        * Problem::new(&model, &data)
            .unwrap()
            .objective(&theta)
            .unwrap();
    let ll = a.report().log_likelihood;
    assert!(ll >= l_true - 1e-6, "{ll} vs {l_true}");
    assert!(ll - l_true < 20.0, "{ll} vs {l_true}");
    // Report log-likelihood = −n L(θ̂) recomputed, and = the sum of per-row densities.
    assert!((a.log_likelihood(&data).unwrap() - ll).abs() < 1e-9 * ll.abs());
    let per_row: f64 = a.log_predictive_density(&data).unwrap().iter().sum();
    assert!((per_row - ll).abs() < 1e-9 * ll.abs());
    // The trace is monotone (EM) and its last objective is the returned restart's.
    let t = &a.report().trace;
    assert!(t
        .windows(2)
        .all(|w| w[1].objective <= w[0].objective + 1e-12));
}

#[test]
fn a_fit_on_standardised_columns_maps_back_to_the_same_law_in_data_units() {
    // x on a scale of thousands, shifted: the standardised design differs a lot.
    let raw = generate(300, 4);
    let rows: Vec<f64> = (0..raw.n()).map(|i| 1000.0 * raw.x(i)[1] + 50.0).collect();
    let raw = Dataset::from_rows(&rows, 1, raw.y_all(), 1)
        .unwrap()
        .with_intercept();
    let scaling = Scaling::fit(&raw, true);
    let z = scaling.apply(&raw).unwrap();
    let fit_z = fit_ok(params().seed(2), &z);
    let theta_z = fit_z.theta().to_vec();
    let ll = fit_z.report().log_likelihood;
    let fit_x = fit_z.clone().in_data_units(Some(&scaling)).unwrap();
    // The parameters changed, the law did not: the raw data's likelihood at the mapped
    // parameters is the standardised fit's.
    assert_ne!(bits(fit_x.theta()), bits(&theta_z));
    assert_eq!(
        bits(fit_x.theta()),
        bits(&scaling.to_original(fit_z.model(), &theta_z).unwrap())
    );
    assert!((fit_x.log_likelihood(&raw).unwrap() - ll).abs() < 1e-9 * ll.abs());
    assert_eq!(fit_x.report().log_likelihood, ll);
    // No scaling: unchanged.
    let same = fit_z.clone().in_data_units(None).unwrap();
    assert_eq!(bits(same.theta()), bits(&theta_z));
    // A scaling of another width is a typed error.
    let wide = Scaling::fit(&generate(50, 5).with_intercept(), true);
    assert!(matches!(
        fit_z.in_data_units(Some(&wide)),
        Err(MoeError::InvalidData { .. })
    ));
}

#[test]
fn restarts_return_the_best_and_report_the_spread() {
    let data = generate(400, 2);
    let fit = fit_ok(
        params()
            .init(InitMethod::Random)
            .n_init(5)
            .seed(3)
            .max_iters(200)
            .ungated_start(UngatedStart::Off),
        &data,
    );
    let r = fit.report();
    assert_eq!(r.restarts.len(), 5);
    let lls: Vec<f64> = r
        .restarts
        .iter()
        .map(|s| s.log_likelihood.unwrap())
        .collect();
    let max = lls.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let min = lls.iter().cloned().fold(f64::INFINITY, f64::min);
    let spread = r.spread.unwrap();
    assert_eq!((spread.min, spread.max), (min, max));
    let mut sorted = lls.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(spread.median, sorted[2]);
    assert_eq!(r.restarts[r.best_restart].log_likelihood, Some(max));
    assert!((r.log_likelihood - max).abs() < 1e-9 * max.abs());
    assert!(r
        .restarts
        .iter()
        .all(|s| s.termination.is_some() && s.error.is_none()));
    // A single start (restart 0 only) is never better.
    let one = fit_ok(
        params()
            .init(InitMethod::Random)
            .n_init(1)
            .seed(3)
            .max_iters(200),
        &data,
    );
    assert_eq!(one.report().restarts[0].log_likelihood, Some(lls[0]));
    assert!(one.report().log_likelihood <= r.log_likelihood + 1e-9);
}

#[test]
fn one_and_two_threads_give_identical_fits() {
    let data = generate(5000, 3);
    let run = |threads: usize| {
        with_threads(threads, || {
            fit_ok(
                params()
                    .n_init(3)
                    .seed(5)
                    .init(InitMethod::Random)
                    .max_iters(60),
                &data,
            )
        })
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(bits(a.theta()), bits(b.theta()));
    assert_eq!(untimed(&a.report().restarts), untimed(&b.report().restarts));
    assert_eq!(
        a.report().log_likelihood.to_bits(),
        b.report().log_likelihood.to_bits()
    );
}

#[test]
fn invalid_params_name_the_field() {
    let cases: Vec<(MoeParams, &str)> = vec![
        (MoeParams::new(0), "n_experts"),
        (params().tol(0.0), "tol"),
        (params().tol(-1.0), "tol"),
        (params().tol(f64::NAN), "tol"),
        (params().tol(f64::INFINITY), "tol"),
        (params().max_iters(0), "max_iters"),
        (params().n_init(0), "n_init"),
        (
            params().gate_config(GateConfig {
                tol: -1.0,
                ..GateConfig::default()
            }),
            "gate config",
        ),
        (params().init(InitMethod::Theta(vec![f64::NAN; 13])), "init"),
    ];
    for (p, field) in cases {
        let e = p.check().unwrap_err();
        assert!(
            matches!(e, MoeError::InvalidParam { name, .. } if name == field),
            "{field}: {e:?}"
        );
    }
    // The documented reason for tol.
    let e = params().tol(0.0).check().unwrap_err();
    assert_eq!(
        e,
        MoeError::InvalidParam {
            name: "tol",
            reason: "finite and > 0".into()
        }
    );
    // A ridge is a setting of the linear expert (and is reported in its description).
    let v = params()
        .expert(LinearGaussian::with_ridge(0.5).unwrap())
        .check()
        .unwrap();
    assert_eq!(
        v.model(2).unwrap().spec().unwrap().expert,
        ExpertSpec::new("linear").param("ridge", 0.5)
    );
}

#[test]
fn data_that_cannot_carry_the_model_is_a_typed_error() {
    let data = generate(400, 4);
    let tiny = data.select(&[0, 1, 2, 3, 4]);
    let e = MoeParams::new(6).check().unwrap().fit(&tiny).unwrap_err();
    assert!(
        matches!(
            e,
            MoeError::InvalidParam {
                name: "n_experts",
                ..
            }
        ),
        "{e:?}"
    );
    // 3 experts on 2 features: 4 gate + 9 expert parameters > 10 rows.
    let e = params()
        .check()
        .unwrap()
        .fit(&data.select(&(0..10).collect::<Vec<_>>()))
        .unwrap_err();
    assert!(
        matches!(e, MoeError::InvalidData { row: None, .. }),
        "{e:?}"
    );
    // A given θ of the wrong length.
    let e = params()
        .init(InitMethod::Theta(vec![0.0; 3]))
        .check()
        .unwrap()
        .fit(&data)
        .unwrap_err();
    assert!(
        matches!(e, MoeError::InvalidParam { name: "init", .. }),
        "{e:?}"
    );
    // Logistic experts on a continuous target: the row is named.
    let e = params()
        .expert(Logistic::new())
        .check()
        .unwrap()
        .fit(&data)
        .unwrap_err();
    assert!(
        matches!(e, MoeError::InvalidData { row: Some(0), .. }),
        "{e:?}"
    );
}

#[test]
fn observers_are_attached_to_every_restart_and_cancel_stops_them() {
    use em_as_md::{ObserverMode, TraceObserver};
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    let data = generate(300, 9);
    let traces: Arc<Mutex<Vec<(usize, TraceObserver)>>> = Arc::default();
    let t2 = traces.clone();
    let fit = params()
        .n_init(3)
        .max_iters(7)
        .ungated_start(UngatedStart::Always)
        .observe(move |r| {
            let t = TraceObserver::new();
            t2.lock().unwrap().push((r, t.clone()));
            (Box::new(t), ObserverMode::Always)
        })
        .check()
        .unwrap()
        .fit(&data)
        .unwrap();
    let mut traces = traces.lock().unwrap().clone();
    traces.sort_by_key(|(r, _)| *r);
    // The three seeded restarts and the gated fit's start from the ungated optimum (3,
    // run whatever the others reach with `Always`).
    assert_eq!(
        traces.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    for (r, t) in &traces {
        assert_eq!(
            t.records().len() as u64,
            fit.report().restarts[*r].iterations
        );
    }
    // A raised flag stops every restart before its first step: a reason, not an error.
    let flag = Arc::new(AtomicBool::new(true));
    let fit = fit_ok(params().n_init(2).cancel(flag), &data);
    assert_eq!(fit.report().termination, Termination::Interrupted);
    assert_eq!(fit.report().iterations, 0);
}

#[test]
fn user_given_start_is_used_as_is() {
    let data = generate(300, 5);
    let (model, theta) = truth();
    let t0 = initial_theta(&model, &data, &InitMethod::Theta(theta.clone()), 1, 0).unwrap();
    assert_eq!(t0, theta);
    let fit = fit_ok(params().init(InitMethod::Theta(theta)).max_iters(1), &data);
    assert_eq!(fit.report().termination, Termination::MaxIters);
    assert_eq!(fit.report().iterations, 1);
}

#[test]
fn predictions_match_independent_computations() {
    let data = generate(500, 6);
    let fit = fit_ok(params().seed(1), &data);
    let model = fit.model();
    let th = fit.theta();
    let k = 3;
    // Responsibilities agree with the E-step's and sum to one.
    let r = fit.responsibilities(&data).unwrap();
    let (stats, _) = model.e_step(&data, th).unwrap();
    for (a, b) in r.iter().zip(&stats.resp) {
        assert!((a - b).abs() < 1e-12);
    }
    for row in r.chunks(k) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
    // Predictive mean: Σ_k π_k(x) β_kᵀx with β from the natural parameters.
    let pi = fit.gate_probs(&data).unwrap();
    let mean = fit.predict_mean(&data).unwrap();
    let betas: Vec<Vec<f64>> = (0..k)
        .map(|j| {
            LinearGaussian::beta_from_natural(model.expert_block(th, j))
                .unwrap()
                .0
        })
        .collect();
    for i in 0..data.n() {
        let x = data.x(i);
        let m: f64 = (0..k)
            .map(|j| pi[i * k + j] * (betas[j][0] * x[0] + betas[j][1] * x[1]))
            .sum();
        assert!((m - mean[i]).abs() < 1e-10 * (1.0 + m.abs()));
    }
    // Information criteria.
    let ll = fit.report().log_likelihood;
    let p = 4 + 3 * 3;
    assert_eq!(fit.n_free_params(), p);
    let n = data.n() as f64;
    assert!((fit.aic() - (-2.0 * ll + 2.0 * p as f64)).abs() < 1e-9);
    assert!((fit.bic() - (-2.0 * ll + p as f64 * n.ln())).abs() < 1e-9);
    let ent: f64 = r.iter().filter(|v| **v > 0.0).map(|v| -v * v.ln()).sum();
    assert!((fit.icl() - fit.bic() - 2.0 * ent).abs() < 1e-8 * (1.0 + ent));
    assert!(fit.icl() >= fit.bic());
    assert_eq!(information_criteria(-10.0, 2, 100).0, 24.0);
    assert_eq!(classification_entropy(&[0.5, 0.5, 1.0, 0.0]), 2f64.ln());
    // Linear experts have no class probabilities.
    let e = fit.class_probs(&data).unwrap_err();
    assert!(matches!(e, MoeError::InvalidParam { name: "expert", .. }));
    // Shape mismatch.
    let wrong = Dataset::from_rows(&[1.0, 2.0], 1, &[0.0, 1.0], 1).unwrap();
    assert!(matches!(
        fit.gate_probs(&wrong).unwrap_err(),
        MoeError::InvalidData { .. }
    ));
}

#[test]
fn class_probs_of_logistic_and_multinomial_experts_are_distributions() {
    let x: Vec<f64> = (0..20).map(|i| i as f64 / 10.0 - 1.0).collect();
    let y: Vec<f64> = (0..20).map(|i| (i % 2) as f64).collect();
    let data = Dataset::from_rows(&x, 1, &y, 1).unwrap().with_intercept();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let experts: [(Arc<dyn Expert>, usize); 2] = [
        (Arc::new(Logistic::new()), 2),
        (Arc::new(Multinomial::new(3).unwrap()), 3),
    ];
    for (kind, c) in experts {
        let model = MixtureOfExperts::new(kind, 2, 2, Gating::Softmax).unwrap();
        let theta = model.random_params(&mut rng, 1.0);
        let fit =
            FittedMoe::new(model, theta, data.feature_names().to_vec(), dummy_report()).unwrap();
        let probs = fit.class_probs(&data).unwrap();
        assert_eq!(probs.len(), data.n() * c);
        for row in probs.chunks(c) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert!(row.iter().all(|p| *p > 0.0 && *p < 1.0));
        }
        // P(y = 1) equals the predictive mean for logistic experts.
        if c == 2 {
            let m = fit.predict_mean(&data).unwrap();
            for (row, mi) in probs.chunks(2).zip(m) {
                assert_eq!(row[1], mi);
            }
        }
    }
}

fn dummy_report() -> em_as_md::FitReport {
    em_as_md::FitReport {
        solver: "none".into(),
        n_rows: 0,
        log_likelihood: 0.0,
        entropy: 0.0,
        iterations: 0,
        termination: Termination::MaxIters,
        seconds: 0.0,
        trace: vec![],
        best_restart: 0,
        restarts: vec![],
        spread: None,
        start_theta: vec![],
        ungated: None,
    }
}

#[test]
fn save_then_load_predicts_identically() {
    let data = generate(300, 7);
    let fit = fit_ok(params().n_init(2).seed(4), &data);
    let path = std::env::temp_dir().join(format!("em_as_md_model_{}.json", std::process::id()));
    fit.save(&path).unwrap();
    let back = FittedMoe::load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(bits(back.theta()), bits(fit.theta()));
    assert_eq!(back.feature_names(), fit.feature_names());
    assert!(back.intercept());
    assert_eq!(back.model().spec().unwrap(), fit.model().spec().unwrap());
    assert_eq!(back.report().restarts, fit.report().restarts);
    assert_eq!(back.report().trace.len(), fit.report().trace.len());
    assert_eq!(back.report().termination, fit.report().termination);
    assert_eq!(
        bits(&back.predict_mean(&data).unwrap()),
        bits(&fit.predict_mean(&data).unwrap())
    );
    assert_eq!(
        bits(&back.log_predictive_density(&data).unwrap()),
        bits(&fit.log_predictive_density(&data).unwrap())
    );
    assert_eq!(back.bic().to_bits(), fit.bic().to_bits());
    assert_eq!(back.icl().to_bits(), fit.icl().to_bits());

    // Corrupted files give typed errors.
    let text = em_as_md::fit::io::to_json(&fit).unwrap();
    type Edit = fn(&mut serde_json::Value);
    let corruptions: [(&str, Edit); 4] = [
        ("theta", |v| {
            v["theta"].as_array_mut().unwrap().pop();
        }),
        ("feature_names", |v| {
            v["feature_names"].as_array_mut().unwrap().pop();
        }),
        ("n_experts", |v| {
            v["spec"]["n_experts"] = serde_json::json!(0)
        }),
        ("intercept", |v| v["intercept"] = serde_json::json!(false)),
    ];
    for (field, edit) in corruptions {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        edit(&mut v);
        let e = em_as_md::fit::io::from_json(&v.to_string()).unwrap_err();
        assert!(
            matches!(e, MoeError::InvalidParam { name, .. } if name == field),
            "{field}: {e:?}"
        );
    }
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["format"] = serde_json::json!("something-else");
    assert!(matches!(
        em_as_md::fit::io::from_json(&v.to_string()).unwrap_err(),
        MoeError::Io(_)
    ));
    assert!(matches!(
        em_as_md::fit::io::from_json("{").unwrap_err(),
        MoeError::Io(_)
    ));
    assert!(matches!(
        FittedMoe::load("/nonexistent/m.json").unwrap_err(),
        MoeError::Io(_)
    ));
}

#[test]
fn alignment_recovers_a_known_permutation_and_keeps_the_likelihood() {
    let data = generate(400, 8);
    let fit = fit_ok(params().seed(2), &data);
    let layout = layout_of(fit.model());
    let problem = Problem::new(fit.model(), &data).unwrap();
    let l0 = problem.objective(fit.theta()).unwrap();
    for perm in [vec![1, 2, 0], vec![2, 1, 0], vec![0, 2, 1]] {
        let shuffled = permute_theta(fit.theta(), &layout, &perm).unwrap();
        let l1 = problem.objective(&shuffled).unwrap();
        assert!(
            (l1 - l0).abs() < 1e-12 * l0.abs().max(1.0),
            "{perm:?}: {l1} vs {l0}"
        );
        // Matching the shuffled fit to the original returns the inverse relabelling…
        let found = align_components(fit.theta(), &shuffled, &layout).unwrap();
        for (k, &j) in found.iter().enumerate() {
            assert_eq!(perm[j], k);
        }
        // …and applying it restores the original parameters.
        let back = permute_theta(&shuffled, &layout, &found).unwrap();
        for (a, b) in back.iter().zip(fit.theta()) {
            assert!((a - b).abs() < 1e-12 * (1.0 + b.abs()));
        }
    }
    // The fit, aligned to the truth, is close to it.
    let (_, truth) = truth();
    let aligned = em_as_md::fit::align::align_to(&truth, fit.theta(), &layout).unwrap();
    let m = fit.model();
    for k in 0..3 {
        let (bt, _) = LinearGaussian::beta_from_natural(m.expert_block(&truth, k)).unwrap();
        let (bf, _) = LinearGaussian::beta_from_natural(m.expert_block(&aligned, k)).unwrap();
        for (a, b) in bt.iter().zip(&bf) {
            assert!((a - b).abs() < 0.3, "expert {k}: {bt:?} vs {bf:?}");
        }
    }
}

#[test]
fn every_expert_kind_and_gating_fits_through_the_driver() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let n = 400;
    let x: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
    type Case = (Arc<dyn Expert>, Gating, usize, Vec<f64>);
    let cases: Vec<Case> = vec![
        (
            Arc::new(LinearGaussian::new()),
            Gating::Constant,
            2,
            x.iter()
                .enumerate()
                .map(|(i, v)| if i % 2 == 0 { 2.0 * v } else { -v } + 0.1 * (i % 5) as f64)
                .collect(),
        ),
        (
            Arc::new(Logistic::new()),
            Gating::Softmax,
            2,
            x.iter()
                .enumerate()
                .map(|(i, v)| f64::from(*v + 0.3 * ((i % 3) as f64 - 1.0) > 0.0))
                .collect(),
        ),
        (
            Arc::new(Poisson::new()),
            Gating::Softmax,
            2,
            x.iter()
                .enumerate()
                .map(|(i, v)| ((v + 2.0) * (1 + i % 2) as f64).floor())
                .collect(),
        ),
        (
            Arc::new(Multinomial::new(3).unwrap()),
            Gating::Softmax,
            2,
            x.iter()
                .map(|v| {
                    if *v < -0.7 {
                        0.0
                    } else if *v < 0.7 {
                        1.0
                    } else {
                        2.0
                    }
                })
                .collect(),
        ),
        (
            Arc::new(LinearGaussian::new()),
            Gating::Softmax,
            1,
            x.iter()
                .enumerate()
                .map(|(i, v)| 1.0 + v + 0.2 * ((i * 7 % 11) as f64 - 5.0) / 5.0)
                .collect(),
        ),
    ];
    for (kind, gating, k, y) in cases {
        let data = Dataset::from_rows(&x, 1, &y, 1).unwrap().with_intercept();
        for init in [InitMethod::Random, InitMethod::KMeansPlusPlus] {
            let fit = MoeParams::new(k)
                .expert_shared(kind.clone())
                .gating(gating)
                .init(init.clone())
                .max_iters(40)
                .n_init(2)
                .seed(3)
                .check()
                .unwrap()
                .fit(&data)
                .unwrap_or_else(|e| panic!("{kind:?} {gating:?} {init:?}: {e}"));
            let t = &fit.report().trace;
            assert!(!t.is_empty(), "{kind:?}");
            assert!(
                t.windows(2)
                    .all(|w| w[1].objective
                        <= w[0].objective + 1e-10 * w[0].objective.abs().max(1.0)),
                "{kind:?} {gating:?}: EM objective increased"
            );
            let ll = fit.log_likelihood(&data).unwrap();
            assert!((ll - fit.report().log_likelihood).abs() < 1e-8 * ll.abs().max(1.0));
        }
    }
}

/// The Poisson family with a deliberately wrong $\nabla A$: `mean` returns $1.1\,e^\theta$
/// (the true mean times 1.1); $A$, the Fisher information and everything else are the
/// true family's. The likelihood is therefore right and only the M-step's gradient is
/// wrong, so Newton cannot reach a zero of it where the likelihood increases.
struct WrongMean(mirror::Poisson);

impl mirror::ExponentialFamily for WrongMean {
    fn name(&self) -> String {
        "Poisson with mean ×1.1".into()
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn obs_dim(&self) -> usize {
        self.0.obs_dim()
    }
    fn in_support(&self, s: &[f64]) -> bool {
        self.0.in_support(s)
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        self.0.in_natural_domain(theta)
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        self.0.in_mean_domain(mu)
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        self.0.sufficient_stats(s, t)
    }
    fn log_base_measure(&self, s: &[f64]) -> f64 {
        self.0.log_base_measure(s)
    }
    fn log_partition(&self, theta: &[f64]) -> mirror::Result<f64> {
        self.0.log_partition(theta)
    }
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> mirror::Result<()> {
        self.0.mean(theta, mu)?;
        mu.iter_mut().for_each(|m| *m *= 1.1);
        Ok(())
    }
    fn fisher(&self, theta: &[f64]) -> mirror::Result<mirror::faer::Mat<f64>> {
        self.0.fisher(theta)
    }
    fn sample(
        &self,
        theta: &[f64],
        rng: &mut dyn rand::RngCore,
        s: &mut [f64],
    ) -> mirror::Result<()> {
        self.0.sample(theta, rng, s)
    }
}

/// 2-expert gated Poisson regression: gate $w = (0.5, 2)$, experts $\beta = (1, 0.8)$ and
/// $(2, -0.6)$ on $x \sim U(-1.5, 1.5)$ with an intercept.
fn poisson_data(n: usize, seed: u64) -> Dataset {
    let model = MixtureOfExperts::new(Arc::new(Poisson::new()), 2, 2, Gating::Softmax).unwrap();
    let theta = vec![0.5, 2.0, 1.0, 0.8, 2.0, -0.6];
    assert_eq!(theta.len(), model.n_params());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut x, mut y) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let xi: f64 = rng.random_range(-1.5..1.5);
        let (yi, _) = model.sample(&theta, &[1.0, xi], &mut rng).unwrap();
        x.push(xi);
        y.push(yi[0]);
    }
    Dataset::from_rows(&x, 1, &y, 1).unwrap().with_intercept()
}

#[test]
fn a_wrong_mean_map_makes_the_fit_not_converged_and_the_right_one_converges() {
    let data = poisson_data(800, 21);
    let fit = |expert: Arc<dyn Expert>| {
        MoeParams::new(2)
            .expert_shared(expert)
            .tol(1e-8)
            .max_iters(500)
            .n_init(2)
            .seed(3)
            // Each M-step of the wrong map runs Newton to its budget: spare the ungated
            // pre-fit and short-EM's 50 short-run iterations (this test is about the
            // termination, not the starts).
            .ungated_start(UngatedStart::Off)
            .init(em_as_md::InitMethod::KMeansPlusPlus)
            .check()
            .unwrap()
            .fit(&data)
            .unwrap()
    };
    let right = fit(Arc::new(em_as_md::Glm::new(Arc::new(
        mirror::Poisson::new(),
    ))));
    let rep = right.report();
    assert!(
        matches!(rep.termination, Termination::Converged { .. }),
        "{:?}",
        rep.termination
    );
    assert!(rep.converged() && rep.restarts.iter().all(|r| r.converged()));

    let wrong = fit(Arc::new(em_as_md::Glm::new(Arc::new(WrongMean(
        mirror::Poisson::new(),
    )))));
    let rep = wrong.report();
    let Termination::InexactMStep {
        inexact,
        window,
        worst_residual,
        ..
    } = rep.termination
    else {
        panic!("{:?}", rep.termination);
    };
    assert!(!rep.termination.is_converged() && !rep.converged());
    assert!(inexact >= 1 && inexact <= window, "{inexact} of {window}");
    // The stalled Newton's residual is the wrong gradient: far from round-off.
    assert!(
        worst_residual.is_some_and(|r| r > 1e-3),
        "{worst_residual:?}"
    );
    // Every restart ran on the wrong map: none may claim convergence, and the summary
    // says so.
    assert!(
        rep.restarts.iter().all(|r| !r.converged()),
        "{:?}",
        rep.restarts
    );
    assert!(rep
        .trace
        .iter()
        .rev()
        .take(window)
        .any(|r| !r.inner.converged));
}
