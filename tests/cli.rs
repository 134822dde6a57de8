//! Tests of the `mdem` binary (the root package's `[[bin]]`, so they live here where
//! Cargo builds it and sets `CARGO_BIN_EXE_mdem`): every bad-input case gives ONE line on
//! stderr naming file, line and column with exit code 2; `demo`, `fit`, `predict` and
//! `certify` run end to end on the shipped data.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn mdem() -> Command {
    Command::cargo_bin("mdem").expect("the mdem binary")
}

/// A fresh directory under the system temp dir, unique per test.
fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mdem-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn data(name: &str) -> String {
    format!("{}/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `mdem fit FILE args…` expecting exit code 2 and exactly one stderr line that
/// starts with `error: ` and contains every needle; returns that line.
fn bad_fit(file: &Path, args: &[&str], needles: &[&str]) -> String {
    let out = mdem().arg("fit").arg(file).args(args).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    for n in needles {
        assert!(line.contains(n), "missing {n:?} in: {line}");
    }
    assert!(!line.contains("panicked") && !line.contains("backtrace"));
    line.to_string()
}

const LIN: [&str; 6] = ["--target", "y", "--experts", "2", "--expert", "linear"];

#[test]
fn missing_file() {
    let d = tmpdir("missing");
    let f = d.join("nope.csv");
    bad_fit(
        &f,
        &LIN,
        &[&f.display().to_string(), "cannot read the file"],
    );
}

#[test]
fn ragged_row_names_line_and_column() {
    let d = tmpdir("ragged");
    let f = write(&d, "r.csv", "a,b,y\n1,2,3\n4,5\n6,7,8\n");
    bad_fit(
        &f,
        &LIN,
        &[
            "r.csv",
            "line 3",
            "data row 2",
            "column \"y\"",
            "expected 3 fields",
        ],
    );
}

#[test]
fn non_numeric_cell_names_line_and_column() {
    let d = tmpdir("nonnum");
    let f = write(&d, "n.csv", "a,b,y\n1,2,3\n4,abc,5\n6,7,8\n");
    bad_fit(
        &f,
        &LIN,
        &[
            "n.csv",
            "line 3",
            "data row 2",
            "column \"b\"",
            "expected a number",
            "\"abc\"",
        ],
    );
}

#[test]
fn nan_and_infinity_are_refused() {
    let d = tmpdir("nan");
    for (i, bad) in ["NaN", "inf"].iter().enumerate() {
        let f = write(
            &d,
            &format!("x{i}.csv"),
            &format!("a,b,y\n1,2,3\n4,5,6\n7,{bad},9\n"),
        );
        bad_fit(
            &f,
            &LIN,
            &[
                "line 4",
                "data row 3",
                "column \"b\"",
                "expected a finite number",
            ],
        );
    }
}

#[test]
fn missing_target_column() {
    bad_fit(
        Path::new(&data("diabetes.csv")),
        &[
            "--target",
            "outcome",
            "--experts",
            "2",
            "--expert",
            "linear",
        ],
        &[
            "diabetes.csv",
            "line 1",
            "no target column \"outcome\"",
            "\"age\"",
        ],
    );
}

#[test]
fn target_outside_the_experts_support() {
    let d = tmpdir("support");
    let f = write(
        &d,
        "s.csv",
        "a,y\n0.1,0\n0.5,1\n0.9,2\n1.3,1\n2.0,0\n2.2,1\n",
    );
    bad_fit(
        &f,
        &["--target", "y", "--experts", "1", "--expert", "logistic"],
        &[
            "s.csv",
            "line 4",
            "data row 3",
            "column \"y\"",
            "logistic experts expect 0 or 1, found 2",
        ],
    );
    // Poisson: a negative count.
    let f = write(&d, "p.csv", "a,y\n0.1,0\n0.5,-1\n0.9,2\n");
    bad_fit(
        &f,
        &["--target", "y", "--experts", "1", "--expert", "poisson"],
        &["line 3", "column \"y\"", "non-negative integer"],
    );
}

#[test]
fn more_experts_than_rows() {
    let d = tmpdir("experts");
    let f = write(&d, "e.csv", "a,y\n0.1,0.3\n0.5,1.2\n0.9,2.5\n");
    bad_fit(
        &f,
        &[
            "--target",
            "y",
            "--experts",
            "4",
            "--expert",
            "linear",
            "--no-gate",
        ],
        &["e.csv", "4 experts but only 3 data rows"],
    );
}

#[test]
fn fewer_rows_than_parameters() {
    let d = tmpdir("params");
    let f = write(
        &d,
        "p.csv",
        "a,b,y\n0.1,3,0.3\n0.5,1,1.2\n0.9,4,2.5\n1.3,1,0.1\n1.7,5,3.3\n2.1,9,1.0\n",
    );
    // 2 gated linear experts on 3 design columns: gate 3 + experts 2 × 4 = 11 > 6 rows.
    bad_fit(
        &f,
        &LIN,
        &[
            "p.csv",
            "6 data rows but the model has 11 parameters",
            "expected at least as many rows as parameters",
        ],
    );
    // Fewer rows than design columns is caught by the loader.
    let f = write(&d, "q.csv", "a,b,c,y\n1,2,3,0\n4,5,7,1\n");
    bad_fit(&f, &LIN, &["q.csv", "2 data rows but 4 design columns"]);
}

#[test]
fn bad_flag_values_exit_2() {
    let f = data("diabetes.csv");
    for args in [
        vec!["--target", "y", "--experts", "0", "--expert", "linear"],
        vec!["--target", "y", "--experts", "2", "--expert", "gamma"],
        vec!["--target", "y", "--experts", "two", "--expert", "linear"],
        vec!["--target", "y", "--experts", "2"],
    ] {
        mdem()
            .arg("fit")
            .arg(&f)
            .args(&args)
            .assert()
            .code(2)
            .stdout("");
    }
    for tol in ["-1", "0", "NaN"] {
        bad_fit(
            Path::new(&f),
            &[
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
                "--tol",
                tol,
            ],
            &["--tol", "expected a finite number > 0"],
        );
    }
    mdem().arg("no-such-command").assert().code(2);
}

#[test]
fn bad_model_file_exit_2() {
    let d = tmpdir("badmodel");
    let m = write(&d, "m.json", "{\"hello\": 1}");
    let out = mdem()
        .arg("predict")
        .arg(&m)
        .arg(data("diabetes.csv"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("m.json") && err.contains("model"), "{err}");
}

#[test]
fn demo_runs_and_writes_its_figure() {
    let d = tmpdir("demo");
    let out = mdem().arg("demo").current_dir(&d).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for s in [
        "SymMoLinE",
        "EM",
        "GD",
        "L − L*",
        "Convergence certificate",
        "mdem-demo.svg",
    ] {
        assert!(text.contains(s), "missing {s}: {text}");
    }
    let svg = std::fs::read_to_string(d.join("mdem-demo.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("EM"), "not an SVG");
    // --out chooses the file (PNG here).
    let png = d.join("fig.png");
    mdem()
        .args(["demo", "--iters", "20", "--out"])
        .arg(&png)
        .assert()
        .success();
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
}

fn fit_json(args: &[&str]) -> serde_json::Value {
    let out = mdem().arg("fit").args(args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No progress bar, no warnings: stdout is the JSON object, stderr is empty.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.trim().lines().count(),
        1,
        "one JSON object on one line"
    );
    serde_json::from_str(text.trim()).unwrap()
}

#[test]
fn fit_diabetes_json_has_the_required_keys() {
    let v = fit_json(&[
        &data("diabetes.csv"),
        "--target",
        "y",
        "--experts",
        "2",
        "--expert",
        "linear",
        "--max-iter",
        "50",
    ]);
    for k in [
        "log_likelihood",
        "iterations",
        "termination",
        "seconds",
        "parameters",
        "aic",
        "bic",
        "icl",
    ] {
        assert!(v.get(k).is_some(), "missing key {k}: {v}");
    }
    let ll = v["log_likelihood"].as_f64().unwrap();
    assert!(ll.is_finite() && ll < 0.0);
    assert!(v["iterations"].as_u64().unwrap() <= 50);
    assert_eq!(v["rows"], 442);
    assert_eq!(v["parameters"]["experts"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["parameters"]["theta"].as_array().unwrap().len(),
        v["n_params"].as_u64().unwrap() as usize
    );
    // AIC = 2p − 2 log L.
    let p = v["n_params"].as_f64().unwrap();
    assert!((v["aic"].as_f64().unwrap() - (2.0 * p - 2.0 * ll)).abs() < 1e-6 * ll.abs());
    // The phases partition the command's wall clock; the fit's own split is within it.
    let t = &v["seconds_by_phase"];
    let lap = |k: &str| t[k].as_f64().unwrap_or_else(|| panic!("no phase {k}: {t}"));
    let laps = lap("read") + lap("check") + lap("fit") + lap("output");
    assert!(laps <= lap("total") + 1e-9 && laps > 0.0, "{t}");
    assert!(lap("fit") >= v["seconds"].as_f64().unwrap() - 1e-6, "{t}");
    assert!(
        lap("fit_em_iterations") > 0.0 && lap("fit_starts") >= 0.0,
        "{t}"
    );
    // A gated fit's extra start is the ungated fit: EM iterations inside the starts.
    assert!(
        lap("fit_start_em_iterations") > 0.0 && lap("fit_start_em_iterations") <= lap("fit_starts"),
        "{t}"
    );
    let ungated = fit_json(&[
        &data("diabetes.csv"),
        "--target",
        "y",
        "--experts",
        "2",
        "--expert",
        "linear",
        "--no-gate",
        "--max-iter",
        "50",
    ]);
    assert_eq!(
        ungated["seconds_by_phase"]["fit_start_em_iterations"].as_f64(),
        Some(0.0)
    );
}

/// Solves the normal equations of least squares by Gaussian elimination (independent of
/// the library), returning the residual sum of squares.
fn ols_rss(x: &[Vec<f64>], y: &[f64]) -> f64 {
    let p = x[0].len();
    let mut a = vec![vec![0.0; p + 1]; p];
    for (xi, yi) in x.iter().zip(y) {
        for (row, xr) in a.iter_mut().zip(xi) {
            for (cell, xc) in row.iter_mut().zip(xi) {
                *cell += xr * xc;
            }
            row[p] += xr * yi;
        }
    }
    for col in 0..p {
        let piv = (col..p)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap();
        a.swap(col, piv);
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (cell, pv) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *cell -= f * pv;
                }
            }
        }
    }
    let beta: Vec<f64> = (0..p).map(|r| a[r][p] / a[r][r]).collect();
    x.iter()
        .zip(y)
        .map(|(xi, yi)| {
            let f: f64 = xi.iter().zip(&beta).map(|(u, b)| u * b).sum();
            (yi - f) * (yi - f)
        })
        .sum()
}

#[test]
fn one_linear_expert_log_likelihood_is_rs_loglik() {
    // R: logLik(lm(y ~ ., diabetes)) = −n/2 (log(2π RSS/n) + 1), all constants included.
    let text = std::fs::read_to_string(data("diabetes.csv")).unwrap();
    let mut lines = text.lines();
    let _header = lines.next();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for l in lines {
        let v: Vec<f64> = l.split(',').map(|c| c.parse().unwrap()).collect();
        let mut row = vec![1.0];
        row.extend_from_slice(&v[..v.len() - 1]);
        x.push(row);
        y.push(v[v.len() - 1]);
    }
    let n = y.len() as f64;
    let expected = -0.5 * n * ((2.0 * std::f64::consts::PI * ols_rss(&x, &y) / n).ln() + 1.0);
    let v = fit_json(&[
        &data("diabetes.csv"),
        "--target",
        "y",
        "--experts",
        "1",
        "--expert",
        "linear",
        "--no-gate",
    ]);
    let ll = v["log_likelihood"].as_f64().unwrap();
    assert!(
        (ll - expected).abs() < 1e-6 * expected.abs(),
        "{ll} vs {expected}"
    );
}

#[test]
fn fit_breast_cancer_with_logistic_experts() {
    let v = fit_json(&[
        &data("breast_cancer.csv"),
        "--target",
        "y",
        "--experts",
        "2",
        "--expert",
        "logistic",
        "--max-iter",
        "20",
    ]);
    assert_eq!(v["rows"], 569);
    assert_eq!(v["fitted_on_standardized_features"], true);
    let ll = v["log_likelihood"].as_f64().unwrap();
    // Bernoulli log-likelihood: at most 0, and better than the intercept-only model.
    let p1 = 357.0 / 569.0;
    let null_ll = 357.0 * f64::ln(p1) + 212.0 * f64::ln(1.0 - p1);
    assert!(ll <= 1e-9 && ll > null_ll, "{ll} vs null {null_ll}");
    // On the raw columns (scales 1e-3 … 1e3) the logistic Newton M-step breaks down: a
    // computation failure, reported in one line with exit code 1 and a hint.
    let out = mdem()
        .arg("fit")
        .arg(data("breast_cancer.csv"))
        .args([
            "--target",
            "y",
            "--experts",
            "2",
            "--expert",
            "logistic",
            "--no-standardize",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    if out.status.success() {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert!(v["log_likelihood"].as_f64().is_none_or(|l| l <= 1e-9));
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("breast_cancer.csv") && err.contains("--no-standardize"),
            "{err}"
        );
    }
    // A few features also fit.
    let v = fit_json(&[
        &data("breast_cancer.csv"),
        "--target",
        "y",
        "--features",
        "mean_radius,mean_texture",
        "--experts",
        "2",
        "--expert",
        "logistic",
        "--max-iter",
        "20",
    ]);
    assert_eq!(v["features"].as_array().unwrap().len(), 2);
}

#[test]
fn fit_save_predict_round_trip() {
    let d = tmpdir("roundtrip");
    let model = d.join("model.json");
    let preds = d.join("preds.csv");
    let fig = d.join("trace.svg");
    let v = fit_json(&[
        &data("diabetes.csv"),
        "--target",
        "y",
        "--experts",
        "2",
        "--expert",
        "linear",
        "--max-iter",
        "40",
        "--out",
        model.to_str().unwrap(),
        "--plot",
        fig.to_str().unwrap(),
    ]);
    assert!(std::fs::read_to_string(&fig).unwrap().starts_with("<svg"));
    mdem()
        .arg("predict")
        .arg(&model)
        .arg(data("diabetes.csv"))
        .arg("--out")
        .arg(&preds)
        .assert()
        .success();
    let text = std::fs::read_to_string(&preds).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "row,gate_1,gate_2,resp_1,resp_2,log_density,mean"
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 442);
    let mut ll = 0.0;
    for r in &rows {
        assert!((r[1] + r[2] - 1.0).abs() < 1e-12 && (r[3] + r[4] - 1.0).abs() < 1e-12);
        ll += r[5];
    }
    // The per-row log densities add up to the fit's log-likelihood.
    let fit_ll = v["log_likelihood"].as_f64().unwrap();
    assert!(
        (ll - fit_ll).abs() < 1e-8 * fit_ll.abs(),
        "{ll} vs {fit_ll}"
    );
    // Without the target column: gate and mean only, same means.
    let no_target: String = std::fs::read_to_string(data("diabetes.csv"))
        .unwrap()
        .lines()
        .take(4)
        .map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n")
        .collect();
    let f = write(&d, "nt.csv", &no_target);
    let out = mdem().arg("predict").arg(&model).arg(&f).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "row,gate_1,gate_2,mean");
    assert_eq!(lines.len(), 4);
    let m1: f64 = lines[1].rsplit(',').next().unwrap().parse().unwrap();
    assert_eq!(m1, rows[0][6]);
    // A prediction file with a bad cell names its line and column.
    let f = write(&d, "bad.csv", &no_target.replacen("59,", "x59,", 1));
    mdem()
        .arg("predict")
        .arg(&model)
        .arg(&f)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("line 2").and(predicate::str::contains("column \"age\"")));
}

#[test]
fn certify_a_saved_model() {
    let d = tmpdir("certify");
    let model = d.join("m.json");
    mdem()
        .arg("fit")
        .arg(data("diabetes.csv"))
        .args([
            "--target",
            "y",
            "--experts",
            "2",
            "--expert",
            "linear",
            "--quiet",
            "--out",
        ])
        .arg(&model)
        .assert()
        .success();
    let out = mdem()
        .arg("certify")
        .arg(&model)
        .arg(data("diabetes.csv"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdict = v["certificate"]["verdict"].as_str().unwrap();
    assert!(["Certified", "Inconclusive", "Violated"].contains(&verdict));
    assert!(v["certificate"]["l_hat"].as_f64().unwrap() <= 1.0 + 1e-6);
    // The re-run retraces the saved fit: same log-likelihood to the fit's tolerance.
    let (a, b) = (
        v["rerun"]["log_likelihood"].as_f64().unwrap(),
        v["saved_log_likelihood"].as_f64().unwrap(),
    );
    assert!(
        a >= b - 1e-9 * b.abs() && (a - b).abs() < 1e-5 * b.abs(),
        "{a} {b}"
    );
    mdem()
        .arg("certify")
        .arg(&model)
        .arg(data("diabetes.csv"))
        .assert()
        .success()
        .stdout(predicate::str::contains("Convergence certificate"));
}

#[test]
fn constant_column_is_reported_not_duplicated() {
    let d = tmpdir("constant");
    let f = write(
        &d,
        "c.csv",
        "a,c,y\n0.1,7,0.3\n0.5,7,1.2\n0.9,7,2.5\n1.3,7,0.1\n1.7,7,3.3\n2.1,7,1.0\n",
    );
    let one = [
        "--target",
        "y",
        "--experts",
        "1",
        "--expert",
        "linear",
        "--no-gate",
    ];
    bad_fit(
        &f,
        &one,
        &["c.csv", "column \"c\" is constant", "every row is 7"],
    );
    // Dropped on request (a warning on stderr), or kept as the intercept without one.
    let out = mdem()
        .arg("fit")
        .arg(&f)
        .args(one)
        .arg("--drop-constant")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dropped constant column \"c\""));
    let v = fit_json(&[
        f.to_str().unwrap(),
        "--target",
        "y",
        "--experts",
        "1",
        "--expert",
        "linear",
        "--no-gate",
        "--no-intercept",
    ]);
    assert_eq!(v["intercept"], false);
    assert_eq!(
        v["parameters"]["design_columns"],
        serde_json::json!(["a", "c"])
    );
}

#[test]
fn mixture_of_regressions_and_other_experts() {
    // --no-gate: constant mixing weights that sum to one.
    let v = fit_json(&[
        &data("diabetes.csv"),
        "--target",
        "y",
        "--experts",
        "2",
        "--expert",
        "linear",
        "--no-gate",
        "--max-iter",
        "30",
    ]);
    let w: Vec<f64> = v["parameters"]["gate"]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(w.len(), 2);
    assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    // Poisson experts on a count target (digit labels as counts).
    let v = fit_json(&[
        &data("digits.csv"),
        "--target",
        "y",
        "--features",
        "p10,p20",
        "--experts",
        "2",
        "--expert",
        "poisson",
        "--max-iter",
        "30",
    ]);
    assert!(v["log_likelihood"].as_f64().unwrap() < 0.0);
    // Multinomial experts on a small synthetic 3-class set: predictions are class probabilities.
    let d = tmpdir("multi");
    let mut text = String::from("a,b,y\n");
    for i in 0..60 {
        let (a, b) = ((i % 7) as f64 * 0.3 - 1.0, (i % 5) as f64 * 0.4 - 0.8);
        let y = (i * 7 + i / 3) % 3;
        text.push_str(&format!("{a},{b},{y}\n"));
    }
    let f = write(&d, "m.csv", &text);
    let model = d.join("m.json");
    mdem()
        .arg("fit")
        .arg(&f)
        .args([
            "--target",
            "y",
            "--experts",
            "2",
            "--expert",
            "multinomial",
            "--max-iter",
            "20",
            "--quiet",
            "--out",
        ])
        .arg(&model)
        .assert()
        .success();
    let out = mdem().arg("predict").arg(&model).arg(&f).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "row,gate_1,gate_2,resp_1,resp_2,log_density,prob_0,prob_1,prob_2"
    );
    for l in lines {
        let v: Vec<f64> = l.split(',').map(|c| c.parse().unwrap()).collect();
        assert!((v[6] + v[7] + v[8] - 1.0).abs() < 1e-12, "{l}");
    }
}

#[test]
fn predict_refuses_a_target_outside_the_support() {
    let d = tmpdir("predict-support");
    let model = d.join("bc.json");
    mdem()
        .arg("fit")
        .arg(data("breast_cancer.csv"))
        .args([
            "--target",
            "y",
            "--features",
            "mean_radius,mean_texture",
            "--experts",
            "2",
        ])
        .args([
            "--expert",
            "logistic",
            "--max-iter",
            "20",
            "--quiet",
            "--out",
        ])
        .arg(&model)
        .assert()
        .success();
    let f = write(
        &d,
        "b.csv",
        "mean_radius,mean_texture,y\n14.1,19.3,1\n12.0,20.1,2\n",
    );
    let out = mdem().arg("predict").arg(&model).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("b.csv: line 3 (data row 2; the header is line 1), column \"y\": logistic experts expect 0 or 1, found 2"),
        "{err}"
    );
}

/// `compare` standardises the feature columns by default, as `fit` does, says so on its
/// first line, and takes `--no-standardize` to run on the raw columns; the old opt-in
/// `--standardize` is gone (a usage error, exit code 2).
#[test]
fn compare_standardises_by_default_and_accepts_no_standardize() {
    let d = tmpdir("compare-standardize");
    let run = |extra: &[&str], out: &str| {
        let o = mdem()
            .arg("compare")
            .arg(data("diabetes.csv"))
            .args(LIN)
            .args([
                "--features",
                "bmi,bp,s5",
                "--max-iter",
                "5",
                "--ref-iter",
                "50",
                "--etas",
                "1",
            ])
            .args(extra)
            .arg("--out")
            .arg(d.join(out))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let default = run(&[], "default");
    let first = default.lines().next().unwrap_or_default();
    assert!(first.contains("standardised features"), "{first}");
    assert!(!first.contains("raw feature columns"), "{first}");
    let raw = run(&["--no-standardize"], "raw");
    let first = raw.lines().next().unwrap_or_default();
    assert!(first.contains("raw feature columns"), "{first}");
    assert!(!first.contains("standardised features"), "{first}");
    mdem()
        .arg("compare")
        .arg(data("diabetes.csv"))
        .args(LIN)
        .arg("--standardize")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--standardize"));
    let _ = std::fs::remove_dir_all(&d);
}

/// The command that used to be refused ("Hessian of expert 0 is not positive
/// definite"): two multinomial experts on overlapping 3-class data
/// (`tests/data/three_classes.csv`, three Gaussian clouds). EM lets one expert specialise
/// on a region where one class has almost no weight, so that expert's weighted softmax
/// fit has its optimum at infinity and its Hessian degenerates on the way; the M-step
/// must carry on (and say whether it met its tolerance), not fail. The fit must reach
/// at least the one-expert log-likelihood, from every seed.
#[test]
fn two_multinomial_experts_fit_overlapping_three_class_data() {
    let file = format!(
        "{}/tests/data/three_classes.csv",
        env!("CARGO_MANIFEST_DIR")
    );
    let fit = |k: &str, seed: &str| -> serde_json::Value {
        let out = mdem()
            .args(["fit", &file, "--target", "y", "--expert", "multinomial"])
            .args(["--experts", k, "--n-init", "3", "--seed", seed, "--json"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "K = {k}, seed {seed}: {err}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let one = fit("1", "1")["log_likelihood"].as_f64().unwrap();
    for seed in ["1", "2", "3"] {
        let two = fit("2", seed);
        let ll = two["log_likelihood"].as_f64().unwrap();
        assert!(
            ll >= one - 1e-9,
            "seed {seed}: K = 2 gives {ll} < K = 1's {one}"
        );
        assert!(two["converged"].is_boolean(), "{two}");
    }
}

/// `--accel none|squarem|md|anderson|newton` runs the chosen solver from the same start:
/// the JSON says which, every choice reaches the same log-likelihood, SQUAREM, Anderson
/// and Newton in fewer iterations than plain EM; an unknown value exits 2 naming the
/// accepted ones.
#[test]
fn fit_accel_choices_reach_the_same_log_likelihood() {
    let fit = |accel: &str| {
        fit_json(&[
            &data("diabetes.csv"),
            "--target",
            "y",
            "--experts",
            "2",
            "--expert",
            "linear",
            "--features",
            "bmi,bp,s5",
            "--max-iter",
            "3000",
            "--tol",
            "1e-12",
            "--accel",
            accel,
        ])
    };
    let runs: Vec<_> = ["none", "squarem", "md", "anderson", "newton"]
        .iter()
        .map(|a| (*a, fit(a)))
        .collect();
    let ll0 = runs[0].1["log_likelihood"].as_f64().unwrap();
    for (a, v) in &runs {
        assert_eq!(v["accel"], *a, "{v}");
        let ll = v["log_likelihood"].as_f64().unwrap();
        assert!((ll - ll0).abs() < 1e-6 * ll0.abs(), "{a}: {ll} vs {ll0}");
        assert!(v["solver"].as_str().unwrap().starts_with("EM"), "{v}");
    }
    let iters = |i: usize| runs[i].1["iterations"].as_u64().unwrap();
    assert!(
        iters(1) < iters(0),
        "SQUAREM {} vs EM {}",
        iters(1),
        iters(0)
    );
    assert!(
        iters(3) < iters(0),
        "Anderson {} vs EM {}",
        iters(3),
        iters(0)
    );
    assert!(
        iters(4) < iters(0),
        "Newton {} vs EM {}",
        iters(4),
        iters(0)
    );
    mdem()
        .arg("fit")
        .arg(data("diabetes.csv"))
        .args(LIN)
        .args(["--accel", "fast"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "none, squarem, md, anderson, newton",
        ));
}

/// `mdem compare` shows EM, SQUAREM, Anderson, MD(1/L̂), Newton and Adam at each learning rate of the grid
/// side by side, with the passes column.
#[test]
fn compare_shows_the_accelerated_solvers_and_adam() {
    let d = tmpdir("compare-accel");
    let o = mdem()
        .arg("compare")
        .arg(data("diabetes.csv"))
        .args(LIN)
        .args([
            "--features",
            "bmi,bp,s5",
            "--max-iter",
            "20",
            "--ref-iter",
            "200",
        ])
        .args(["--etas", "1", "--out"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    for name in [
        "EM",
        "SQUAREM",
        "Anderson",
        "MD(η=1/L̂)",
        "Newton (EM safeguard)",
        "Adam(lr=0.001)",
        "Adam(lr=0.01)",
        "Adam(lr=0.1)",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(name)),
            "{name}:\n{text}"
        );
    }
    assert!(text.contains("passes to"), "{text}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Three clusters in three columns, deterministic (a fixed pseudo-random sequence), with
/// an extra column `id` left out by `--features`.
fn clusters_csv(n: usize) -> String {
    let mut t = String::from("id,u,v,w\n");
    let mut s: u64 = 12345;
    let mut unif = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let centres = [[0.0, 0.0, 0.0], [5.0, -4.0, 1.0], [-4.0, 5.0, 6.0]];
    for i in 0..n {
        let c = centres[i % 3];
        // Box–Muller normals.
        let mut z = [0.0; 3];
        for v in z.iter_mut() {
            let (a, b) = (unif(), unif());
            *v = (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos();
        }
        t.push_str(&format!(
            "{i},{:.6},{:.6},{:.6}\n",
            c[0] + z[0],
            c[1] + 0.5 * z[0] + z[1],
            c[2] + 0.7 * z[2]
        ));
    }
    t
}

#[test]
fn gaussian_mixture_fit_save_predict_certify() {
    let d = tmpdir("gmm");
    let f = write(&d, "g.csv", &clusters_csv(300));
    let model = d.join("g.json");
    let features = ["--features", "u,v,w"];
    let v = fit_json(&[
        &f.display().to_string(),
        "--experts",
        "3",
        "--expert",
        "gaussian",
        features[0],
        features[1],
        "--init",
        "kmeans",
        "--n-init",
        "4",
        "--out",
        &model.display().to_string(),
    ]);
    assert_eq!(v["converged"], true, "{v}");
    assert!(v["target"].is_null());
    let g = &v["gaussian_mixture"];
    assert_eq!(g["columns"], serde_json::json!(["u", "v", "w"]));
    assert_eq!(g["covariance"], "full");
    assert_eq!(g["reg_covar"].as_f64(), Some(1e-6));
    // 3 mixing logits − 1 = 2, and 3 × (3 + 6) component parameters.
    assert_eq!(v["n_params"], 2 + 27);
    let ll = v["log_likelihood"].as_f64().unwrap();
    // Each cluster holds a third of the rows.
    let weights = v["parameters"]["gate"]["weights"].as_array().unwrap();
    for w in weights {
        assert!(
            (w.as_f64().unwrap() - 1.0 / 3.0).abs() < 0.02,
            "{weights:?}"
        );
    }
    // Predictions: posterior probability per cluster, the cluster, the log density,
    // whose sum is the fit's log-likelihood.
    let out = mdem().arg("predict").arg(&model).arg(&f).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "row,prob_1,prob_2,prob_3,cluster,log_density"
    );
    let mut total = 0.0;
    let mut rows = 0;
    for line in lines {
        let cells: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
        let p: f64 = cells[1..4].iter().sum();
        assert!((p - 1.0).abs() < 1e-12);
        let best = cells[1..4]
            .iter()
            .enumerate()
            .fold(0, |b, (c, v)| if *v > cells[1 + b] { c } else { b });
        assert_eq!(cells[4] as usize, best + 1);
        total += cells[5];
        rows += 1;
    }
    assert_eq!(rows, 300);
    assert!((total - ll).abs() < 1e-8 * ll.abs(), "{total} vs {ll}");
    // The text report names the coordinates and the floor.
    mdem()
        .arg("fit")
        .arg(&f)
        .args([
            "--experts",
            "3",
            "--expert",
            "gaussian",
            "--features",
            "u,v,w",
        ])
        .args(["--covariance", "diag", "--quiet"])
        .assert()
        .success()
        .stdout(predicate::str::contains("0 = u, 1 = v, 2 = w"))
        .stdout(predicate::str::contains("diag, floor reg_covar"));
    // The certificate of the saved fit.
    let out = mdem()
        .arg("certify")
        .arg(&model)
        .arg(&f)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (a, b) = (
        c["rerun"]["log_likelihood"].as_f64().unwrap(),
        c["saved_log_likelihood"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-5 * b.abs(), "{a} {b}");
    assert!((b - ll).abs() < 1e-9 * ll.abs());
    let verdict = c["certificate"]["verdict"].as_str().unwrap();
    assert!(["Certified", "Inconclusive", "Violated"].contains(&verdict));
    // --target is refused by predict for a Gaussian mixture.
    let out = mdem()
        .arg("predict")
        .arg(&model)
        .arg(&f)
        .args(["--target", "u"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A constant or collinear column is refused with the loader's message.
    let g2 = write(&d, "c.csv", "u,v,k\n1,2,3\n2,1,3\n3,5,3\n4,0,3\n5,2,3\n");
    bad_fit(
        &g2,
        &["--experts", "2", "--expert", "gaussian"],
        &["c.csv", "\"k\"", "constant", "--drop-constant"],
    );
    let g3 = write(&d, "l.csv", "u,v,s\n1,2,3\n2,1,3\n3,5,8\n4,0,4\n5,2,7\n");
    bad_fit(
        &g3,
        &["--experts", "2", "--expert", "gaussian"],
        &["l.csv", "\"s\""],
    );
}

#[test]
fn newton_on_a_gaussian_mixture_warns_before_the_fit() {
    // The Gaussian mixture's observed information takes the generic per-row pass, so
    // `--accel newton` is far slower than SQUAREM there: said on stderr before the fit
    // (not with --quiet or --json), and not for other solvers.
    let d = tmpdir("gmm-newton");
    let f = write(&d, "g.csv", &clusters_csv(200));
    let run = |extra: &[&str]| {
        let out = mdem()
            .arg("fit")
            .arg(&f)
            .args(["--experts", "2", "--expert", "gaussian", "--max-iter", "3"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8(out.stderr).unwrap()
    };
    let warned = run(&["--accel", "newton"]);
    assert!(
        warned.contains("warning: --accel newton on a Gaussian mixture"),
        "stderr: {warned}"
    );
    for extra in [
        &["--accel", "squarem"][..],
        &["--accel", "newton", "--quiet"],
        &["--accel", "newton", "--json"],
    ] {
        let err = run(extra);
        assert!(
            !err.contains("--accel newton on a Gaussian"),
            "{extra:?}: {err}"
        );
    }
}

#[test]
fn presample_fits_the_starts_on_a_sample_and_em_on_every_row() {
    let base = [
        &data("diabetes.csv") as &str,
        "--target",
        "y",
        "--experts",
        "2",
        "--expert",
        "linear",
        "--seed",
        "3",
    ];
    let full = fit_json(&base);
    let args: Vec<&str> = base.iter().copied().chain(["--presample", "150"]).collect();
    let pre = fit_json(&args);
    // One restart, the full-data run from the sample fit's optimum, over every row.
    assert_eq!(pre["best_start_init"], "sample fit");
    assert_eq!(pre["start_inits"].as_array().unwrap().len(), 1);
    assert_eq!(pre["rows"], full["rows"]);
    assert_eq!(pre["converged"], true);
    assert!(pre["ungated_fit"].is_null(), "{}", pre["ungated_fit"]);
    assert_eq!(pre["presample_rows"], 150);
    assert!(full["presample_rows"].is_null());
    // The same seed draws the same sample and start: the same fit.
    assert_eq!(fit_json(&args)["log_likelihood"], pre["log_likelihood"]);
    // A sample at least as large as the data is the direct fit.
    let all: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--presample", "100000"])
        .collect();
    assert_eq!(fit_json(&all)["log_likelihood"], full["log_likelihood"]);
    // Streamed and mini-batch fits draw their own sample (--sample-rows).
    let out = mdem()
        .arg("fit")
        .args(&args)
        .arg("--stream")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--presample"));
}
