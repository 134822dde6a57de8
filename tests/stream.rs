//! `mdem fit --stream` (issue 14): a 2·10⁶-row file fitted in passes reaches the
//! in-memory log-likelihood (1e-10 relative) with a peak memory below the in-memory fit's,
//! and a bad cell in the file is reported with its line.

use std::io::Write;
use std::path::Path;
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mdem")
}

/// `n` rows of a two-line mixture of regressions `x,y` (deterministic generator).
fn write_rows(path: &Path, n: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "x,y").unwrap();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut uniform = move || {
        // SplitMix64: reproducible uniforms without a dependency.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    for _ in 0..n {
        let x = 4.0 * uniform() - 2.0;
        let noise = (-2.0 * uniform().max(1e-300).ln()).sqrt()
            * (2.0 * std::f64::consts::PI * uniform()).cos();
        let y = if uniform() < 0.4 {
            1.0 + 2.0 * x + 0.5 * noise
        } else {
            -1.0 - x + 0.3 * noise
        };
        writeln!(f, "{x:.6},{y:.6}").unwrap();
    }
}

fn fit_json(path: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(bin())
        .args([
            "fit",
            path.to_str().unwrap(),
            "--target",
            "y",
            "--experts",
            "2",
        ])
        .args([
            "--expert",
            "linear",
            "--no-gate",
            "--tol",
            "1e-12",
            "--json",
            "--quiet",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn streamed_fit_of_two_million_rows_matches_memory_with_less_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (dir.path().join("small.csv"), dir.path().join("large.csv"));
    write_rows(&small, 200_000);
    write_rows(&large, 2_000_000);
    let stream = [
        "--stream",
        "--chunk-rows",
        "65536",
        "--sample-rows",
        "20000",
    ];
    let st_large = fit_json(&large, &stream);
    let st_small = fit_json(&small, &stream);
    let mem_large = fit_json(&large, &[]);
    let (a, b) = (
        mem_large["log_likelihood"].as_f64().unwrap(),
        st_large["log_likelihood"].as_f64().unwrap(),
    );
    assert!((a - b).abs() <= 1e-10 * a.abs(), "memory {a} vs stream {b}");
    assert_eq!(st_large["rows"], 2_000_000);
    assert_eq!(st_large["converged"], true, "{}", st_large["termination"]);
    // Peak memory: the streamed fit of 2·10⁶ rows stays below the in-memory fit of the
    // same file. (Not yet flat in n: see docs/10-streaming.md for the measured growth.)
    let rss = |v: &serde_json::Value| v["peak_rss_bytes"].as_u64().unwrap() as f64;
    let (s_small, s_large, m_large) = (rss(&st_small), rss(&st_large), rss(&mem_large));
    assert!(
        s_large < m_large,
        "peak RSS streamed {s_large} bytes vs in memory {m_large} (2e5 rows streamed: {s_small})"
    );
}

#[test]
fn streamed_fit_reports_a_bad_cell_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    write_rows(&path, 5_000);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[3000] = "0.5,abc"; // line 3001 (the header is line 1)
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let out = Command::new(bin())
        .args([
            "fit",
            path.to_str().unwrap(),
            "--target",
            "y",
            "--experts",
            "2",
        ])
        .args(["--expert", "linear", "--stream", "--chunk-rows", "1000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3001") && err.contains("abc"), "{err}");
}
