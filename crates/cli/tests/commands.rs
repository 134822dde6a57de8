//! `mdem compare` and `mdem reproduce` through the command line's parser and dispatcher
//! (the library behind the `mdem` binary, which lives in the root package). The
//! reproduction itself is tested in `crates/experiments/tests/reproduce.rs`; here only
//! its wiring: flags, errors and exit codes.

use clap::Parser;
use mdem_cli::commands::{dispatch, Cli};
use std::path::{Path, PathBuf};

fn run_cli(args: &[&str]) -> Result<(), mdem_cli::error::CliError> {
    let cli = Cli::try_parse_from(std::iter::once("mdem").chain(args.iter().copied()))
        .expect("arguments parse");
    dispatch(&cli)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("mdem-commands-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

#[test]
fn reproduce_refuses_an_unwritable_output_directory_before_work_with_exit_code_2() {
    // `--out` below a regular file: the report's directory cannot be created, which the
    // command checks before running anything (an output path unusable before the work
    // starts is bad input: exit code 2, the flag and the path named).
    let file = tmp("not-a-directory");
    std::fs::write(&file, "x").unwrap();
    let out = file.join("results");
    let e = run_cli(&["reproduce", "--quick", "--out", s(&out)]).unwrap_err();
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(e, mdem_cli::error::CliError::BadInput(_)), "{e:?}");
    assert_eq!(e.exit_code(), 2);
    let m = e.to_string();
    assert!(
        m.starts_with(&format!(
            "--out {}: cannot create the directory",
            out.display()
        )),
        "{m}"
    );
}

#[test]
fn compare_prints_a_table_and_writes_both_figures_and_the_traces() {
    let out = tmp("compare");
    let file = data_dir().join("diabetes.csv");
    run_cli(&[
        "compare",
        s(&file),
        "--target",
        "y",
        "--experts",
        "2",
        "--expert",
        "linear",
        "--features",
        "bmi,bp,s5",
        "--max-iter",
        "15",
        "--ref-iter",
        "400",
        "--etas",
        "0.5,1",
        "--out",
        s(&out),
    ])
    .unwrap();
    for f in [
        "compare_iterations.svg",
        "compare_iterations.png",
        "compare_time.svg",
        "compare_time.png",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // The traces: the documented header, every solver, and what EM's rows must be.
    let mut rdr = csv::Reader::from_path(out.join("compare_trace.csv")).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, mdem_cli::commands::compare::TRACE_COLUMNS);
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let num = |r: &csv::StringRecord, c: usize| r[c].parse::<f64>().unwrap();
    for name in [
        "EM",
        "SQUAREM",
        "Anderson",
        "MD(η=1/L̂)",
        "Newton (EM safeguard)",
        "MD(η=0.5)",
        "MD(η=1)",
        "Adam(lr=0.1)",
    ] {
        assert!(rows.iter().any(|r| &r[0] == name), "no rows for {name}");
    }
    // L* = objective − gap is one value, at or below every objective.
    let l_star = num(&rows[0], 2) - num(&rows[0], 3);
    for r in &rows {
        assert!(
            (num(r, 2) - num(r, 3) - l_star).abs() <= 1e-12 * l_star.abs(),
            "{r:?}"
        );
        assert!(num(r, 3) >= 0.0, "{r:?}");
    }
    // EM: iterations 0, 1, …, one pass each, η = 1, L never increasing, exact M-steps.
    let em: Vec<_> = rows.iter().filter(|r| &r[0] == "EM").collect();
    assert_eq!(em.len(), 16, "15 iterations and the start");
    for (t, r) in em.iter().enumerate() {
        assert_eq!(
            (&r[1], &r[5]),
            (t.to_string().as_str(), t.to_string().as_str())
        );
        if t == 0 {
            assert!(r[6].is_empty() && r[10].is_empty(), "{r:?}");
        } else {
            assert_eq!((&r[6], &r[9], &r[10]), ("1", "false", "true"), "{r:?}");
            assert!(num(r, 2) <= num(em[t - 1], 2) + 1e-12, "{r:?}");
        }
        assert!(r[11].is_empty(), "EM has no β: {r:?}");
    }
    // Newton: every step not taken by the safeguard records its β in [0, 1].
    let newton: Vec<_> = rows
        .iter()
        .filter(|r| &r[0] == "Newton (EM safeguard)")
        .skip(1)
        .collect();
    assert!(!newton.is_empty());
    for r in newton {
        if &r[9] == "false" {
            assert!((0.0..=1.0).contains(&num(r, 11)), "{r:?}");
        }
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn compare_rejects_a_bad_step_with_exit_code_2() {
    let file = data_dir().join("diabetes.csv");
    let e = run_cli(&[
        "compare",
        s(&file),
        "--target",
        "y",
        "--experts",
        "2",
        "--expert",
        "linear",
        "--etas",
        "0.5,-1",
    ])
    .unwrap_err();
    assert!(matches!(e, mdem_cli::error::CliError::BadInput(_)), "{e}");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("--etas"), "{e}");
}

#[test]
fn a_fit_stopped_by_its_limit_is_saved_and_reloaded_as_not_converged() {
    let dir = tmp("not-converged");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("m.json");
    let data = data_dir().join("diabetes.csv");
    run_cli(&[
        "fit",
        s(&data),
        "--target",
        "y",
        "--experts",
        "2",
        "--expert",
        "linear",
        "--max-iter",
        "2",
        "--n-init",
        "2",
        "--ungated-start",
        "always",
        "--quiet",
        "--json",
        "--out",
        s(&out),
    ])
    .unwrap();
    let loaded = mdem_cli::model::load_model(&out).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let rep = loaded.fitted.report();
    assert_eq!(rep.termination, em_as_md::Termination::MaxIters);
    assert!(!rep.converged());
    // The two seeded starts and the start from the ungated optimum (always run here); the
    // ungated fit survives the model file.
    assert!(rep.ungated.is_some_and(|u| u.start_ran));
    assert_eq!(rep.unconverged_restarts(), vec![0, 1, 2]);
    let w = mdem_cli::commands::fit::convergence_warnings(rep);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].starts_with("WARNING: not converged: maximum number of iterations"));
}
