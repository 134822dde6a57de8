//! Fuzzing on stable Rust: property tests feeding arbitrary bytes and structured mutations
//! of valid files to the CSV reader, the model-file loader and `mdem predict` (in process,
//! through the command line's dispatcher). Asserted: no panic; every error is one line of
//! bounded length naming the file (and, for a cell made invalid, its line and column); a
//! file made invalid on purpose is never accepted.
//!
//! 256 cases per property by default (CI); a longer local run sets proptest's own
//! variable, e.g. `PROPTEST_CASES=20000 cargo test --release -p mdem-cli --test fuzz`
//! (see `docs/robustness.md` for the counts and times of such a run).

use clap::Parser;
use em_as_md::data::csv::{load_csv_from_reader, LoadOptions};
use mdem_cli::commands::{dispatch, Cli};
use mdem_cli::error::CliError;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Longest acceptable message (echoed cells are clipped to 80 characters).
const MAX_MESSAGE: usize = 700;

fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 256;
    }
    c.failure_persistence = None;
    c
}

fn run_cli(args: &[&str]) -> Result<(), CliError> {
    let cli = Cli::try_parse_from(std::iter::once("mdem").chain(args.iter().copied()))
        .expect("arguments parse");
    dispatch(&cli)
}

/// A valid data file: two linear regimes, 40 rows, columns `a,b,y`.
fn good_csv() -> String {
    let mut t = String::from("a,b,y\n");
    for i in 0..40 {
        let a = f64::from(i) / 5.0 - 4.0;
        let b = f64::from(i * 7).sin();
        let y = if b > 0.0 { 2.0 * a } else { -2.0 * a } + 0.1 * f64::from(i * 13).cos();
        t.push_str(&format!("{a},{b:.6},{y:.6}\n"));
    }
    t
}

/// A scratch directory with the valid data file and a model fitted on it (made once).
fn fixtures() -> &'static (PathBuf, PathBuf, String) {
    static F: OnceLock<(PathBuf, PathBuf, String)> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mdem-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("good.csv");
        std::fs::write(&data, good_csv()).unwrap();
        let model = dir.join("model.json");
        let (d, m) = (data.to_str().unwrap(), model.to_str().unwrap());
        run_cli(&[
            "fit",
            d,
            "--target",
            "y",
            "--experts",
            "2",
            "--expert",
            "linear",
            "--quiet",
            "--out",
            m,
        ])
        .unwrap();
        let text = std::fs::read_to_string(&model).unwrap();
        (dir, model, text)
    })
}

/// A file for one case (unique per thread and call).
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let i = N.fetch_add(1, Ordering::SeqCst);
    let p = fixtures().0.join(format!("{i}-{name}"));
    std::fs::write(&p, bytes).unwrap();
    p
}

fn check_message(m: &str, file: &str) -> Result<(), TestCaseError> {
    prop_assert!(!m.contains('\n'), "two lines: {m}");
    prop_assert!(m.len() <= MAX_MESSAGE, "{} bytes: {m:.200}", m.len());
    prop_assert!(m.contains(file), "the file is not named: {m:.300}");
    Ok(())
}

/// Tokens that make a cell of a numeric column invalid.
fn bad_cell() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("1e999".to_string()),
        Just("0x1F".to_string()),
        "[a-zA-Z_]{1,200}",
        "[0-9]{1,5}[.][0-9]{1,3}[.][0-9]",
    ]
}

/// Random edits of a byte string: (position fraction, kind, byte).
fn edits() -> impl Strategy<Value = Vec<(f64, u8, u8)>> {
    prop::collection::vec((0.0..1.0f64, 0u8..3, any::<u8>()), 1..8)
}

fn apply(mut bytes: Vec<u8>, edits: &[(f64, u8, u8)]) -> Vec<u8> {
    for &(at, kind, b) in edits {
        let i = ((bytes.len() as f64) * at) as usize;
        match kind {
            0 if i < bytes.len() => bytes[i] = b,
            1 => bytes.insert(i.min(bytes.len()), b),
            _ if i < bytes.len() => {
                bytes.remove(i);
            }
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes: the reader returns, never panics; errors name the file.
    #[test]
    fn csv_reader_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        match load_csv_from_reader(&bytes[..], "fuzz.csv", "y", None, LoadOptions::default()) {
            Ok(d) => prop_assert!(d.dataset.n() > 0),
            Err(e) => check_message(&e.to_string(), "fuzz.csv")?,
        }
    }

    /// Random byte edits of a valid file: no panic, errors name the file.
    #[test]
    fn csv_reader_on_edited_files(e in edits()) {
        let bytes = apply(good_csv().into_bytes(), &e);
        if let Err(err) = load_csv_from_reader(&bytes[..], "edit.csv", "y", None, LoadOptions::default()) {
            check_message(&err.to_string(), "edit.csv")?;
        }
    }

    /// One cell made invalid: always refused, naming its line and column, by the reader
    /// and by `mdem predict` (exit code 2, nothing written).
    #[test]
    fn an_invalid_cell_is_refused_with_its_place(row in 0usize..40, col in 0usize..3, cell in bad_cell()) {
        let mut lines: Vec<String> = good_csv().lines().map(str::to_string).collect();
        let mut cells: Vec<String> = lines[row + 1].split(',').map(str::to_string).collect();
        cells[col] = cell;
        lines[row + 1] = cells.join(",");
        let text = lines.join("\n") + "\n";
        let line = format!("line {}", row + 2);
        let column = format!("column \"{}\"", ["a", "b", "y"][col]);
        let e = load_csv_from_reader(text.as_bytes(), "cell.csv", "y", None, LoadOptions::default())
            .expect_err("an invalid cell is refused");
        let m = e.to_string();
        check_message(&m, "cell.csv")?;
        prop_assert!(m.contains(&line) && m.contains(&column), "{m}");

        let (_, model, _) = fixtures();
        let data = scratch("cell.csv", text.as_bytes());
        let out = data.with_extension("out.csv");
        let r = run_cli(&["predict", model.to_str().unwrap(), data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let e = r.expect_err("predict refuses an invalid cell");
        prop_assert_eq!(e.exit_code(), 2);
        let m = e.to_string();
        check_message(&m, data.to_str().unwrap())?;
        prop_assert!(m.contains(&line) && m.contains(&column), "{m}");
        prop_assert!(!out.exists());
    }

    /// Random byte edits of a valid model file: loading never panics; an error names the
    /// model file with exit code 2; a file that still loads predicts or fails cleanly.
    #[test]
    fn model_loader_on_edited_files(e in edits()) {
        let (dir, _, text) = fixtures();
        let bytes = apply(text.clone().into_bytes(), &e);
        let model = scratch("edited.json", &bytes);
        let data = dir.join("good.csv");
        let out = model.with_extension("preds.csv");
        match run_cli(&["predict", model.to_str().unwrap(), data.to_str().unwrap(), "--out", out.to_str().unwrap()]) {
            Ok(()) => prop_assert!(out.exists()),
            Err(e) => {
                let m = e.to_string();
                prop_assert!(!m.contains('\n'), "{m}");
                prop_assert!(m.len() <= MAX_MESSAGE, "{m:.200}");
                prop_assert!(!out.exists());
            }
        }
    }

    /// A parameter set out of domain or a required field removed: always refused, blamed
    /// on the model file (exit code 2).
    #[test]
    fn corrupt_model_parameters_are_blamed_on_the_model(
        index in 0usize..1000,
        value in prop_oneof![1e151..1e308f64, -1e308..-1e151f64],
        drop in prop_oneof![Just(None), Just(Some("model")), Just(Some("target")), Just(Some("format"))],
    ) {
        let (dir, _, text) = fixtures();
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
        match drop {
            Some(key) => {
                v.as_object_mut().unwrap().remove(key);
            }
            None => {
                let theta = v["model"]["theta"].as_array_mut().unwrap();
                let n = theta.len();
                theta[index % n] = value.into();
            }
        }
        let model = scratch("corrupt.json", v.to_string().as_bytes());
        let data = dir.join("good.csv");
        let e = run_cli(&["predict", model.to_str().unwrap(), data.to_str().unwrap()])
            .expect_err("a corrupt model is refused");
        prop_assert_eq!(e.exit_code(), 2);
        check_message(&e.to_string(), model.to_str().unwrap())?;
    }
}

#[test]
fn the_fixture_model_predicts() {
    let (dir, model, _) = fixtures();
    let out = dir.join("ok.csv");
    run_cli(&[
        "predict",
        model.to_str().unwrap(),
        dir.join("good.csv").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().lines().count(),
        41,
        "header and 40 rows"
    );
    let _ = Path::new(&out);
}
