//! A seeded start whose run fails is retried from a fresh draw of its strategy
//! ([`START_RETRIES`]), the failures are kept in the report, and every attempt can be
//! re-run on its own.

use em_as_md::data::csv::load_csv;
use em_as_md::fit::scaling::Scaling;
use em_as_md::fit::{MoeParams, START_RETRIES};
use em_as_md::{Dataset, LinearGaussian};

/// The diabetes data standardised as the command line fits them.
fn diabetes() -> Dataset {
    let path = format!("{}/../../data/diabetes.csv", env!("CARGO_MANIFEST_DIR"));
    let raw = load_csv(&path, "y", None, true).unwrap().dataset;
    Scaling::fit(&raw, true).apply(&raw).unwrap()
}

#[test]
fn failed_starts_are_retried_reported_and_reproducible() {
    let data = diabetes();
    // Five linear experts on 442 rows: some draws leave an expert too few rows for its
    // Gram matrix (with seed 1, some first attempts do).
    let valid = MoeParams::new(5)
        .expert(LinearGaussian::new())
        .n_init(20)
        .seed(1)
        .check()
        .unwrap();
    let fit = valid.fit(&data).unwrap();
    let rep = fit.report();
    assert!(
        rep.restarts.iter().all(|r| r.error.is_none()),
        "{:?}",
        rep.restarts
    );
    let retried: Vec<_> = rep.restarts.iter().filter(|r| r.attempt() > 0).collect();
    assert!(!retried.is_empty(), "no start needed a retry");
    let model = valid.model(data.d()).unwrap();
    let n = data.n() as f64;
    for r in retried {
        assert!(r.attempt() <= START_RETRIES);
        // The attempts before failed, as reported; the kept one gives the reported fit.
        for a in 0..r.attempt() {
            let e = valid.run_attempt(&model, &data, r.index, a).unwrap_err();
            assert_eq!(e.to_string(), r.retry_errors[a]);
        }
        let again = valid
            .run_attempt(&model, &data, r.index, r.attempt())
            .unwrap();
        assert_eq!(Some(-n * again.best.objective), r.log_likelihood);
    }
    assert!(valid
        .retry_theta0(&model, &data, 0, START_RETRIES + 1)
        .is_err());
}
