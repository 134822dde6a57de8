//! `mdem reproduce --quick` and `mdem compare` end to end through the command line's
//! parser and dispatcher (the library behind the `mdem` binary, which lives in the root
//! package): the report and the figures are written and the numbers in the report parse.

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
    let p = std::env::temp_dir().join(format!("mdem-reproduce-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// The cells of the Markdown table rows whose first cell is `first`.
fn rows<'a>(report: &'a str, first: &str) -> Vec<Vec<&'a str>> {
    report
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect::<Vec<_>>()
        })
        .filter(|c| c.first() == Some(&first))
        .collect()
}

/// The leading number of a cell like `91.2 ± 0.8 %` or `-1.135 ± 0.015`.
fn lead(cell: &str) -> f64 {
    cell.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no number in {cell:?}"))
}

#[test]
fn quick_reproduction_writes_report_and_figures() {
    let out = tmp("quick");
    let data = data_dir();
    run_cli(&[
        "reproduce",
        "--quick",
        "--out",
        s(&out),
        "--data-dir",
        s(&data),
    ])
    .unwrap();
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for heading in [
        "## 1. Synthetic",
        "### SymMoLinE",
        "### SymMoLogE",
        "## 2. Random Invert Digits",
        "The data set differs from the paper's",
        "## 3. Diabetes and breast cancer",
        "78.5 %",
    ] {
        assert!(report.contains(heading), "missing {heading:?}");
    }
    // Every linked figure exists, as SVG and PNG, and is not empty.
    let mut linked = 0;
    for part in report.split("(figures/").skip(1) {
        let name = &part[..part.find(')').unwrap()];
        let p = out.join("figures").join(name);
        assert!(
            std::fs::metadata(&p)
                .map(|m| m.len() > 100)
                .unwrap_or(false),
            "{}",
            p.display()
        );
        let other = if name.ends_with(".svg") {
            name.replace(".svg", ".png")
        } else {
            name.replace(".png", ".svg")
        };
        assert!(out.join("figures").join(other).is_file());
        linked += 1;
    }
    assert!(linked >= 20, "only {linked} figure links");
    // Digits: accuracies are percentages in [0, 100], cross-entropies positive.
    let em = rows(&report, "EM");
    assert!(em.len() >= 3, "{em:?}");
    let digits_em = em.iter().find(|r| r.len() == 8).expect("digits EM row");
    let acc = lead(digits_em[1]);
    assert!((0.0..=100.0).contains(&acc), "{acc}");
    assert!(lead(digits_em[2]) > 0.0);
    // Synthetic: SymMoLinE at SNR 4 — EM's final gap is far below GD's (the paper's claim).
    let synth: Vec<Vec<&str>> = report
        .lines()
        .filter(|l| l.starts_with("| 4.00 |"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .filter(|c: &Vec<&str>| c.len() == 9)
        .collect();
    let em_gap: f64 = synth
        .iter()
        .find(|r| r[1] == "EM")
        .map(|r| r[4].parse().unwrap())
        .unwrap();
    let gd_gap: f64 = synth
        .iter()
        .find(|r| r[1].starts_with("GD"))
        .map(|r| r[4].parse().unwrap())
        .unwrap();
    assert!(em_gap < 1e-3 * gd_gap, "EM {em_gap} vs GD {gd_gap}");
    // Run-time table parses.
    let total = rows(&report, "total");
    assert_eq!(total.len(), 1);
    assert!(lead(total[0][1]) > 0.0);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn compare_prints_a_table_and_writes_both_figures() {
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
