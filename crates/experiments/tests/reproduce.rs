//! The quick reproduction end to end (what `mdem reproduce --quick` runs): the report and
//! the figures are written and the numbers in the report parse; a raised cancellation
//! flag still writes a report, with the parts marked.

use experiments::{reproduce, reproduce_with, Event, Options};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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
    let options = Options {
        quick: true,
        data_dir: Some(data_dir()),
        ..Options::new(&out)
    };
    let outcome = reproduce(&options).unwrap();
    assert_eq!(outcome.report, out.join("report.md"));
    assert_eq!(outcome.figures, out.join("figures"));
    assert_eq!(outcome.interrupted_during, None);
    let parts: Vec<&str> = outcome.part_seconds.iter().map(|p| p.0).collect();
    assert_eq!(
        parts,
        [
            "SymMoLinE",
            "SymMoLogE",
            "Random Invert Digits",
            "diabetes",
            "breast cancer"
        ]
    );
    let report = std::fs::read_to_string(&outcome.report).unwrap();
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
fn a_raised_cancellation_flag_still_writes_a_marked_report() {
    let out = tmp("cancelled");
    let options = Options {
        quick: true,
        data_dir: Some(data_dir()),
        cancel: Arc::new(AtomicBool::new(true)),
        ..Options::new(&out)
    };
    let mut events = Vec::new();
    let outcome = reproduce_with(&options, &mut |e: Event<'_>| events.push(e.to_string())).unwrap();
    // The first part ran (every solver stopped at its start) and is marked; no later
    // part ran.
    assert_eq!(outcome.interrupted_during, Some("SymMoLinE"));
    assert!(
        outcome.part_seconds.len() <= 1,
        "{:?}",
        outcome.part_seconds
    );
    assert_eq!(
        events.first().map(String::as_str),
        Some("synthetic: SymMoLinE")
    );
    assert!(
        !events.iter().any(|e| e.starts_with("synthetic: SymMoLogE")
            || e == "Random Invert Digits"
            || e == "diabetes, breast cancer"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e == "writing the report"),
        "{events:?}"
    );
    assert_eq!(
        events.last().cloned(),
        Some(format!("done: {}", outcome.report.display()))
    );
    let report = std::fs::read_to_string(&outcome.report).unwrap();
    for note in [
        "This run was interrupted (Ctrl-C) during SymMoLinE.",
        "Interrupted (Ctrl-C) during SymMoLinE",
        "**Not run:** the reproduction was interrupted (Ctrl-C) before SymMoLogE.",
        "**Not run:** the reproduction was interrupted (Ctrl-C) before Random Invert Digits.",
        "**Not run:** the reproduction was interrupted (Ctrl-C) before diabetes.",
        "**Not run:** the reproduction was interrupted (Ctrl-C) before breast cancer.",
    ] {
        assert!(report.contains(note), "missing {note:?}");
    }
    assert!(!report.contains("### SymMoLogE"));
    std::fs::remove_dir_all(&out).unwrap();
}
