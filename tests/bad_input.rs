//! The command line under bad input, faults and awkward paths, as one table of cases
//! (issue 16): each case is a command line (and optionally standard input and a file-size
//! limit that simulates a full disk), the exit code it must end with, words its one-line
//! message must contain, and files that must exist, must not exist or must be unchanged
//! afterwards. Families of cases are generated: every malformed-cell class × every command
//! reading data (and standard input), every bad output path × every output flag, every
//! corrupt model file × every command reading one. Every failing case must print exactly
//! one line `error: …` (at most [`MAX_MESSAGE`] bytes: echoed cells are clipped), never a
//! panic, and leave no temporary file behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest acceptable error message (a 10 MB cell must not be echoed).
const MAX_MESSAGE: usize = 700;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mdem")
}

/// One row of the table.
#[derive(Debug, Clone, Default)]
struct Case {
    name: String,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    /// `ulimit -f` in 512-byte blocks (writes past it fail with EFBIG: a full disk).
    file_limit: Option<u32>,
    code: i32,
    words: Vec<String>,
    exist: Vec<PathBuf>,
    absent: Vec<PathBuf>,
    /// Files whose bytes must be the same afterwards (inputs, previous outputs).
    unchanged: Vec<PathBuf>,
    /// Directory that must hold no temporary (hidden) file afterwards.
    clean_dir: Option<PathBuf>,
    /// Wall-time limit (the refusal of an endless input must be immediate).
    within: Option<Duration>,
}

impl Case {
    fn new(name: impl Into<String>, args: &[&str], code: i32, words: &[&str]) -> Self {
        Case {
            name: name.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            code,
            words: words.iter().map(|s| s.to_string()).collect(),
            ..Case::default()
        }
    }
}

/// A degenerate data file: name, bytes, extra arguments, words of the message.
type DegenerateCase<'a> = (&'a str, Vec<u8>, Vec<&'a str>, &'a [&'a str]);

/// The fixtures every case reads (written once).
struct Fixtures {
    dir: PathBuf,
    good: PathBuf,
    good_text: String,
    model: PathBuf,
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Two linear regimes `y = ±2a + noise` by the sign of `b`, deterministic, 80 rows.
fn good_csv() -> String {
    let mut t = String::from("a,b,y\n");
    for i in 0..80 {
        let a = (i as f64) / 10.0 - 4.0;
        let b = ((i * 7) as f64).sin();
        let noise = 0.1 * ((i * 13) as f64).cos();
        let y = if b > 0.0 { 2.0 * a } else { -2.0 * a } + noise;
        t.push_str(&format!("{a},{b:.6},{y:.6}\n"));
    }
    t
}

fn setup() -> Fixtures {
    let dir = std::env::temp_dir().join(format!("mdem-bad-input-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let good_text = good_csv();
    let good = dir.join("good.csv");
    std::fs::write(&good, &good_text).unwrap();
    let model = dir.join("model.json");
    let out = Command::new(bin())
        .args(["fit", &s(&good), "--target", "y", "--experts", "2"])
        .args(["--expert", "linear", "--quiet", "--out", &s(&model)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Fixtures {
        dir,
        good,
        good_text,
        model,
    }
}

/// `good` with the cell of data row 5 (line 6) in column `col` replaced by `cell`.
fn with_cell(good: &str, col: usize, cell: &str) -> Vec<u8> {
    let mut out = String::new();
    for (i, line) in good.lines().enumerate() {
        if i == 5 {
            let mut cells: Vec<&str> = line.split(',').collect();
            cells[col] = cell;
            out.push_str(&cells.join(","));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// `good` with line 6 replaced by raw bytes.
fn with_line(good: &str, line: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, l) in good.lines().enumerate() {
        if i == 5 {
            out.extend_from_slice(line);
        } else {
            out.extend_from_slice(l.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// Malformed data: (class, file bytes, words, whether the target column is the bad one).
fn malformed(good: &str) -> Vec<(&'static str, Vec<u8>, Vec<&'static str>)> {
    let long_cell = "7".repeat(1_100_000);
    let garbage = "x".repeat(5000);
    let mut v: Vec<(&'static str, Vec<u8>, Vec<&'static str>)> = Vec::new();
    for (class, cell, words) in [
        (
            "letters",
            "abc",
            vec!["line 6", "column \"a\"", "expected a number"],
        ),
        (
            "empty-cell",
            "",
            vec!["line 6", "column \"a\"", "an empty cell"],
        ),
        (
            "spaces",
            "   ",
            vec!["line 6", "column \"a\"", "an empty cell"],
        ),
        (
            "nan",
            "nan",
            vec!["line 6", "column \"a\"", "expected a finite number"],
        ),
        ("NaN", "NaN", vec!["line 6", "column \"a\"", "finite"]),
        ("inf", "inf", vec!["line 6", "column \"a\"", "finite"]),
        (
            "minus-inf",
            "-inf",
            vec!["line 6", "column \"a\"", "finite"],
        ),
        (
            "overflowing-literal",
            "1e999",
            vec!["line 6", "column \"a\"", "finite"],
        ),
        (
            "hex",
            "0x10",
            vec!["line 6", "column \"a\"", "expected a number"],
        ),
        (
            "two-dots",
            "1.2.3",
            vec!["line 6", "column \"a\"", "expected a number"],
        ),
        (
            "double-minus",
            "--5",
            vec!["line 6", "column \"a\"", "expected a number"],
        ),
        (
            "boolean",
            "true",
            vec!["line 6", "column \"a\"", "expected a number"],
        ),
        (
            "comma-decimal",
            "\"1,5\"",
            vec!["line 6", "column \"a\"", "expected a number"],
        ),
        (
            "quoted-newline",
            "\"1\n2\"",
            vec!["line 6", "column \"a\"", "expected a number"],
        ),
        (
            "garbage-5000-chars",
            &garbage,
            vec!["line 6", "column \"a\"", "5000 bytes"],
        ),
    ] {
        v.push((class, with_cell(good, 0, cell), words));
    }
    v.push((
        "target-letters",
        with_cell(good, 2, "y?"),
        vec!["line 6", "column \"y\"", "expected a number"],
    ));
    v.push((
        "target-nan",
        with_cell(good, 2, "NaN"),
        vec!["line 6", "column \"y\"", "finite"],
    ));
    v.push((
        "extra-field",
        with_line(good, b"1,2,3,4"),
        vec!["line 6", "expected 3 fields", "found 4"],
    ));
    v.push((
        "missing-field",
        with_line(good, b"1,2"),
        vec!["line 6", "expected 3 fields", "found 2"],
    ));
    v.push((
        "nul-byte",
        with_line(good, b"1,\x002,3"),
        vec!["line 6", "not a CSV file", "NUL"],
    ));
    v.push((
        "invalid-utf8",
        with_line(good, b"1,\xff\xfe,3"),
        vec!["line 6", "UTF-8"],
    ));
    v.push((
        "line-over-1MiB",
        with_cell(good, 0, &long_cell),
        vec!["line 6", "not a CSV file", "longer than 1 MiB"],
    ));
    v.push(("empty-file", Vec::new(), vec!["the file is empty"]));
    v.push(("header-only", b"a,b,y\n".to_vec(), vec!["no data rows"]));
    v.push((
        "duplicate-header",
        good.replacen("a,b,y", "a,a,y", 1).into_bytes(),
        vec!["line 1", "column \"a\"", "more than once"],
    ));
    v.push((
        "binary-zeros",
        vec![0u8; 4096],
        vec!["line 1", "not a CSV file", "NUL"],
    ));
    v
}

fn fit_args(data: &str) -> Vec<String> {
    [
        "fit",
        data,
        "--target",
        "y",
        "--experts",
        "2",
        "--expert",
        "linear",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The four commands reading a data file, as argument lists around `data`.
fn data_commands(fx: &Fixtures, data: &str, dir: &Path) -> Vec<(&'static str, Vec<String>)> {
    let m = s(&fx.model);
    vec![
        ("fit", fit_args(data)),
        ("predict", vec!["predict".into(), m.clone(), data.into()]),
        ("certify", vec!["certify".into(), m, data.into()]),
        (
            "compare",
            vec![
                "compare".into(),
                data.into(),
                "--target".into(),
                "y".into(),
                "--experts".into(),
                "2".into(),
                "--expert".into(),
                "linear".into(),
                "--out".into(),
                s(&dir.join("cmp")),
            ],
        ),
    ]
}

fn table(fx: &Fixtures) -> Vec<Case> {
    let mut cases = Vec::new();
    let d = &fx.dir;
    let good = s(&fx.good);
    let m = s(&fx.model);

    // 1. Every malformed class × every command reading data, from a file and from stdin.
    for (class, bytes, words) in malformed(&fx.good_text) {
        let file = d.join(format!("bad-{class}.csv"));
        std::fs::write(&file, &bytes).unwrap();
        let fs = s(&file);
        let case_dir = d.join(format!("out-{class}"));
        std::fs::create_dir_all(&case_dir).unwrap();
        for (cmd, args) in data_commands(fx, &fs, &case_dir) {
            let mut words = words.clone();
            words.push(&fs);
            let mut c = Case::new(format!("{class} × {cmd}"), &[], 2, &words);
            c.args = args;
            c.unchanged = vec![file.clone(), fx.model.clone()];
            cases.push(c);
        }
        for (cmd, args) in data_commands(fx, "-", &case_dir) {
            if cmd == "compare" {
                continue;
            }
            let mut c = Case::new(format!("{class} × {cmd} (stdin)"), &[], 2, &words);
            c.args = args;
            c.stdin = Some(bytes.clone());
            cases.push(c);
        }
    }

    // 2. Data arguments that are not regular files, or missing.
    for (what, path, words) in [
        (
            "/dev/zero",
            "/dev/zero".to_string(),
            vec!["/dev/zero", "not a regular file"],
        ),
        ("directory", s(d), vec!["not a regular file", "a directory"]),
        (
            "missing",
            s(&d.join("nope.csv")),
            vec!["nope.csv", "cannot read the file"],
        ),
    ] {
        for (cmd, args) in data_commands(fx, &path, &d.join(format!("o-{what}"))) {
            let mut c = Case::new(format!("{what} as data × {cmd}"), &[], 2, &words);
            c.args = args;
            c.within = Some(Duration::from_secs(1));
            cases.push(c);
        }
    }
    // An endless stream on stdin is refused at once.
    for cmd in ["fit", "predict"] {
        let args = if cmd == "fit" {
            fit_args("-")
        } else {
            vec!["predict".into(), m.clone(), "-".into()]
        };
        let mut c = Case::new(
            format!("3 MB of zeros on stdin × {cmd}"),
            &[],
            2,
            &["-: line 1", "not a CSV file"],
        );
        c.args = args;
        c.stdin = Some(vec![0; 3_000_000]);
        c.within = Some(Duration::from_secs(1));
        cases.push(c);
    }

    // 3. Bad output paths × every output flag: refused before any work, nothing written,
    //    the previous file and the inputs untouched, no temporary file.
    let outs = d.join("outs");
    std::fs::create_dir_all(&outs).unwrap();
    let below_file = d.join("a-file");
    std::fs::write(&below_file, "x").unwrap();
    let flags: Vec<(&str, Vec<String>, &str, &str)> = vec![
        ("fit --out", fit_args(&good), "--out", "json"),
        ("fit --plot", fit_args(&good), "--plot", "svg"),
        (
            "predict --out",
            vec!["predict".into(), m.clone(), good.clone()],
            "--out",
            "csv",
        ),
        (
            "demo --out",
            vec![
                "demo".into(),
                "--n".into(),
                "50".into(),
                "--iters".into(),
                "2".into(),
            ],
            "--out",
            "png",
        ),
    ];
    for (label, base, flag, ext) in &flags {
        let bad_paths: Vec<(&str, String, Vec<&str>)> = vec![
            (
                "missing directory",
                s(&outs.join(format!("no/such/dir/o.{ext}"))),
                vec![flag, "no/such/dir", "directory"],
            ),
            (
                "wrong extension",
                s(&outs.join("o.docx")),
                vec![flag, "unsupported extension", ext],
            ),
            (
                "no extension",
                s(&outs.join("o")),
                vec![flag, "unsupported extension"],
            ),
            (
                "directory",
                s(&outs.join(format!("dir.{ext}"))),
                vec![flag, "not a regular file", "a directory"],
            ),
            (
                "below a regular file",
                s(&below_file.join(format!("o.{ext}"))),
                vec![flag, "is not a directory"],
            ),
            (
                "/dev/full",
                "/dev/full".to_string(),
                vec![flag, "/dev/full"],
            ),
        ];
        std::fs::create_dir_all(outs.join(format!("dir.{ext}"))).unwrap();
        for (what, path, words) in bad_paths {
            let mut c = Case::new(format!("{label}: {what}"), &[], 2, &words);
            c.args = base.clone();
            c.args.extend([flag.to_string(), path.clone()]);
            c.absent = vec![PathBuf::from(&path).join("never")];
            c.unchanged = vec![fx.good.clone(), fx.model.clone(), below_file.clone()];
            c.clean_dir = Some(outs.clone());
            c.within = Some(Duration::from_secs(1));
            cases.push(c);
        }
    }
    // An output equal to an input, however spelled.
    let same: Vec<(&str, Vec<String>)> = vec![
        (
            "predict --out = data",
            vec![
                "predict".into(),
                m.clone(),
                good.clone(),
                "--out".into(),
                good.clone(),
            ],
        ),
        (
            "predict --out = data (./ spelling)",
            vec![
                "predict".into(),
                m.clone(),
                good.clone(),
                "--out".into(),
                s(&d.join(".").join("good.csv")),
            ],
        ),
    ];
    for (what, args) in same {
        let mut c = Case::new(what, &[], 2, &["--out", "is the input file", "good.csv"]);
        c.args = args;
        c.unchanged = vec![fx.good.clone(), fx.model.clone()];
        c.clean_dir = Some(d.clone());
        cases.push(c);
    }
    let model_as_csv = d.join("model-copy.csv");
    std::fs::copy(&fx.model, &model_as_csv).unwrap();
    let mut c = Case::new(
        "predict --out = the model file",
        &[],
        2,
        &["--out", "is the input file", "model-copy.csv"],
    );
    c.args = vec![
        "predict".into(),
        s(&model_as_csv),
        good.clone(),
        "--out".into(),
        s(&model_as_csv),
    ];
    c.unchanged = vec![model_as_csv.clone()];
    cases.push(c);
    let mut c = Case::new(
        "fit --out = --plot",
        &[],
        2,
        &["--plot", "also given to --out"],
    );
    c.args = fit_args(&good);
    let both = s(&outs.join("both.svg"));
    c.args.extend([
        "--out".into(),
        s(&outs.join("both.json")),
        "--plot".into(),
        both.clone(),
    ]);
    // Different extensions make these different files: allowed; same file refused below.
    c.code = 0;
    c.words.clear();
    c.exist = vec![outs.join("both.json"), outs.join("both.svg")];
    cases.push(c);
    for (what, args) in [
        (
            "compare --out is a file",
            vec!["--out".to_string(), s(&below_file)],
        ),
        (
            "compare --out below a file",
            vec!["--out".to_string(), s(&below_file.join("x"))],
        ),
    ] {
        let mut c = Case::new(
            what,
            &[
                "compare",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
            ],
            2,
            &["--out"],
        );
        c.args.extend(args);
        c.unchanged = vec![below_file.clone()];
        c.within = Some(Duration::from_secs(1));
        cases.push(c);
    }

    // 4. A full disk (file-size limit) while writing: exit 1, previous file intact. The
    // limit (one block) is below every output written here (a model is over 3 KB).
    for (what, args, prev) in [
        ("fit --out on a full disk", fit_args(&good), "prev.json"),
        (
            "predict --out on a full disk",
            vec!["predict".into(), m.clone(), good.clone()],
            "prev.csv",
        ),
    ] {
        let dir = d.join(format!("full-{}", prev.replace('.', "-")));
        std::fs::create_dir_all(&dir).unwrap();
        let prev = dir.join(prev);
        std::fs::write(&prev, "previous content\n").unwrap();
        let mut c = Case::new(what, &[], 1, &["cannot write", "File too large"]);
        c.args = args;
        c.args.extend(["--out".into(), s(&prev)]);
        c.file_limit = Some(1);
        c.unchanged = vec![prev.clone()];
        c.clean_dir = Some(dir);
        cases.push(c);
    }

    // 5. Corrupt model files × the commands reading one.
    let text = std::fs::read_to_string(&fx.model).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let edited = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = json.clone();
        f(&mut v);
        v.to_string()
    };
    let models: Vec<(&str, String, Vec<&str>)> = vec![
        ("empty", String::new(), vec!["not an mdem model file"]),
        ("not JSON", "hello".into(), vec!["not an mdem model file"]),
        ("JSON array", "[1,2]".into(), vec!["mdem"]),
        (
            "truncated",
            text[..text.len() / 2].to_string(),
            vec!["not an mdem model file"],
        ),
        (
            "theta 1e308",
            edited(&|v| v["model"]["theta"][0] = 1e308.into()),
            vec!["theta[0]", "out of domain", "model file"],
        ),
        (
            "theta -1e200 last",
            edited(&|v| {
                let n = v["model"]["theta"].as_array().unwrap().len();
                v["model"]["theta"][n - 1] = (-1e200).into();
            }),
            vec!["out of domain"],
        ),
        (
            "theta too short",
            edited(&|v| {
                v["model"]["theta"].as_array_mut().unwrap().pop();
            }),
            vec!["theta"],
        ),
        (
            "theta null",
            edited(&|v| v["model"]["theta"][0] = serde_json::Value::Null),
            vec!["model.json"],
        ),
        (
            "version 99",
            edited(&|v| v["version"] = 99.into()),
            vec!["unsupported version 99"],
        ),
        (
            "no target",
            edited(&|v| {
                v.as_object_mut().unwrap().remove("target");
            }),
            vec!["no \"target\" field"],
        ),
        (
            "unknown feature",
            edited(&|v| v["model"]["feature_names"][1] = "zz".into()),
            vec!["no feature column \"zz\""],
        ),
    ];
    for (what, body, words) in models {
        let dir = d.join(format!("model-{}", what.replace(' ', "-")));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.json");
        std::fs::write(&path, &body).unwrap();
        for cmd in ["predict", "certify"] {
            let mut c = Case::new(
                format!("model {what} × {cmd}"),
                &[cmd, &s(&path), &good],
                2,
                &words,
            );
            c.unchanged = vec![path.clone()];
            cases.push(c);
        }
    }
    for (what, path, words) in [
        (
            "missing",
            s(&d.join("none.json")),
            vec!["cannot read the model file"],
        ),
        (
            "/dev/zero",
            "/dev/zero".to_string(),
            vec!["/dev/zero", "not a regular file"],
        ),
        ("directory", s(d), vec!["not a regular file"]),
    ] {
        for cmd in ["predict", "certify"] {
            let mut c = Case::new(
                format!("model {what} × {cmd}"),
                &[cmd, &path, &good],
                2,
                &words,
            );
            c.within = Some(Duration::from_secs(1));
            cases.push(c);
        }
    }

    // 6. --target of predict and certify.
    for cmd in ["predict", "certify"] {
        cases.push(Case::new(
            format!("{cmd} --target a feature"),
            &[cmd, &m, &good, "--target", "a"],
            2,
            &["--target a", "feature column of the model"],
        ));
        cases.push(Case::new(
            format!("{cmd} --target missing"),
            &[cmd, &m, &good, "--target", "zz"],
            2,
            &["no target column \"zz\"", "\"a\", \"b\", \"y\""],
        ));
    }

    // 7. Degenerate data for fit and compare.
    let scale = |col: usize, factor: f64| -> Vec<u8> {
        let mut out = String::new();
        for (i, line) in fx.good_text.lines().enumerate() {
            if i == 0 {
                out.push_str(line);
            } else {
                let mut cells: Vec<String> = line.split(',').map(str::to_string).collect();
                let v: f64 = cells[col].parse().unwrap();
                cells[col] = format!("{:e}", (v + 0.5) * factor);
                out.push_str(&cells.join(","));
            }
            out.push('\n');
        }
        out.into_bytes()
    };
    let constant_target = {
        let mut out = String::from("a,b,y\n");
        for line in fx.good_text.lines().skip(1) {
            let cells: Vec<&str> = line.split(',').collect();
            out.push_str(&format!("{},{},3\n", cells[0], cells[1]));
        }
        out.into_bytes()
    };
    let degenerate: Vec<DegenerateCase> = vec![
        (
            "column ×1e300",
            scale(1, 1e300),
            vec!["column \"b\"", "square overflows"],
            &["fit", "compare"],
        ),
        (
            "column ×1e-300",
            scale(1, 1e-300),
            vec!["column \"b\"", "underflows"],
            &["fit", "compare"],
        ),
        (
            "target ×1e200",
            scale(2, 1e200),
            vec!["column \"y\"", "square overflows"],
            &["fit", "compare"],
        ),
        (
            "one cell 1e308",
            with_cell(&fx.good_text, 1, "1e308"),
            vec!["line 6", "column \"b\"", "overflows"],
            &["fit", "compare"],
        ),
        (
            "constant target",
            constant_target,
            vec!["target column \"y\" is constant"],
            &["fit", "compare"],
        ),
        (
            "constant feature",
            {
                let mut t = String::from("a,b,y\n");
                for line in fx.good_text.lines().skip(1) {
                    let c: Vec<&str> = line.split(',').collect();
                    t.push_str(&format!("{},1,{}\n", c[0], c[2]));
                }
                t.into_bytes()
            },
            vec!["column \"b\" is constant"],
            &["fit", "compare"],
        ),
        (
            "collinear",
            {
                let mut t = String::from("a,b,y\n");
                for line in fx.good_text.lines().skip(1) {
                    let c: Vec<&str> = line.split(',').collect();
                    let a: f64 = c[0].parse().unwrap();
                    t.push_str(&format!("{a},{},{}\n", 2.0 * a + 1.0, c[2]));
                }
                t.into_bytes()
            },
            vec!["column \"b\" is an exact linear combination of \"a\""],
            &["fit", "compare"],
        ),
        (
            "two rows",
            b"a,b,y\n1,2,3\n2,1,4\n".to_vec(),
            vec!["2 data rows", "3 design columns"],
            &["fit", "compare"],
        ),
    ];
    for (what, bytes, words, cmds) in degenerate {
        let file = d.join(format!("deg-{}.csv", what.replace([' ', '×'], "_")));
        std::fs::write(&file, &bytes).unwrap();
        for (cmd, args) in data_commands(fx, &s(&file), &d.join("deg-out")) {
            if !cmds.contains(&cmd) {
                continue;
            }
            let mut c = Case::new(format!("{what} × {cmd}"), &[], 2, &words);
            c.args = args;
            cases.push(c);
        }
    }
    // The target's support per expert.
    for (expert, cell, words) in [
        (
            "logistic",
            "2",
            vec!["logistic experts expect 0 or 1", "found 2"],
        ),
        (
            "logistic",
            "0.5",
            vec!["logistic experts expect", "found 0.5"],
        ),
        ("poisson", "-1", vec!["poisson experts expect", "found -1"]),
        (
            "poisson",
            "1.5",
            vec!["poisson experts expect", "found 1.5"],
        ),
        (
            "multinomial",
            "0.5",
            vec!["multinomial experts expect", "found 0.5"],
        ),
        (
            "multinomial",
            "-2",
            vec!["multinomial experts expect", "found -2"],
        ),
    ] {
        let mut t = String::from("a,b,y\n");
        for (i, line) in fx.good_text.lines().skip(1).enumerate() {
            let c: Vec<&str> = line.split(',').collect();
            let y = if i == 4 {
                cell.to_string()
            } else {
                (i % 2).to_string()
            };
            t.push_str(&format!("{},{},{y}\n", c[0], c[1]));
        }
        let file = d.join(format!("support-{expert}-{cell}.csv"));
        std::fs::write(&file, t).unwrap();
        let f = s(&file);
        let mut w = words.clone();
        w.push("line 6");
        cases.push(Case::new(
            format!("{expert} target {cell}"),
            &[
                "fit",
                &f,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                expert,
            ],
            2,
            &w,
        ));
    }

    // 8. Usage errors: one line naming the argument.
    let usage: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "fit without --target",
            vec!["fit", &good, "--experts", "2", "--expert", "linear"],
            vec![
                "--target",
                "required for --expert linear",
                "--expert gaussian",
            ],
        ),
        (
            "fit --expert gaussian with --target",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "gaussian",
            ],
            vec!["--target", "Gaussian mixture", "--expert linear"],
        ),
        (
            "fit --covariance with a non-gaussian expert",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
                "--covariance",
                "diag",
            ],
            vec!["--covariance", "only to --expert gaussian"],
        ),
        (
            "fit --reg-covar with a non-gaussian expert",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
                "--reg-covar",
                "1e-3",
            ],
            vec!["--reg-covar", "only to --expert gaussian"],
        ),
        (
            "fit --covariance round",
            vec![
                "fit",
                &good,
                "--experts",
                "2",
                "--expert",
                "gaussian",
                "--covariance",
                "round",
            ],
            vec!["--covariance", "round"],
        ),
        (
            "fit --reg-covar -1",
            vec![
                "fit",
                &good,
                "--experts",
                "2",
                "--expert",
                "gaussian",
                "--reg-covar",
                "-1",
            ],
            vec!["--reg-covar", ">= 0"],
        ),
        (
            "fit --expert gaussian, more clusters than rows",
            vec!["fit", &good, "--experts", "81", "--expert", "gaussian"],
            vec!["81", "80 data rows"],
        ),
        (
            "fit without --experts",
            vec!["fit", &good, "--target", "y", "--expert", "linear"],
            vec!["--experts <EXPERTS>"],
        ),
        (
            "fit without --expert",
            vec!["fit", &good, "--target", "y", "--experts", "2"],
            vec!["--expert <EXPERT>"],
        ),
        (
            "fit without data",
            vec![
                "fit",
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
            ],
            vec!["<DATA>"],
        ),
        (
            "fit --experts 0",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "0",
                "--expert",
                "linear",
            ],
            vec!["'0'", "--experts"],
        ),
        (
            "fit --experts abc",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "abc",
                "--expert",
                "linear",
            ],
            vec!["'abc'", "--experts"],
        ),
        (
            "fit --experts -1",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "-1",
                "--expert",
                "linear",
            ],
            vec!["-1"],
        ),
        (
            "fit --expert gamma",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "gamma",
            ],
            vec!["'gamma'", "--expert"],
        ),
        (
            "fit --n-init 0",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
                "--n-init",
                "0",
            ],
            vec!["--n-init"],
        ),
        (
            "fit --max-iter 0",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
                "--max-iter",
                "0",
            ],
            vec!["--max-iter"],
        ),
        (
            "fit --tol -1",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
                "--tol",
                "-1",
            ],
            vec!["--tol"],
        ),
        (
            "fit --tol nan",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
                "--tol",
                "nan",
            ],
            vec!["--tol"],
        ),
        (
            "fit --seed x",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
                "--seed",
                "x",
            ],
            vec!["--seed"],
        ),
        (
            "fit unknown flag",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
                "--ridge-typo",
                "1",
            ],
            vec!["--ridge-typo"],
        ),
        (
            "fit --features unknown",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
                "--features",
                "zz",
            ],
            vec!["no feature column \"zz\""],
        ),
        (
            "fit --features target",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
                "--features",
                "a,y",
            ],
            vec!["\"y\" is the target"],
        ),
        (
            "fit --features twice",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
                "--features",
                "a,a",
            ],
            vec!["more than once"],
        ),
        (
            "fit --target missing",
            vec![
                "fit",
                &good,
                "--target",
                "zz",
                "--experts",
                "2",
                "--expert",
                "linear",
            ],
            vec!["no target column \"zz\""],
        ),
        (
            "fit too many experts",
            vec![
                "fit",
                &good,
                "--target",
                "y",
                "--experts",
                "90",
                "--expert",
                "linear",
            ],
            vec!["90 experts", "80 data rows"],
        ),
        ("predict without data", vec!["predict", &m], vec!["<DATA>"]),
        (
            "predict unknown flag",
            vec!["predict", &m, &good, "--outt", "p.csv"],
            vec!["--outt"],
        ),
        (
            "certify --max-iter 0",
            vec!["certify", &m, &good, "--max-iter", "0"],
            vec!["--max-iter"],
        ),
        ("certify without model", vec!["certify"], vec!["<MODEL>"]),
        (
            "compare --etas 0",
            vec![
                "compare",
                &good,
                "--target",
                "y",
                "--experts",
                "2",
                "--expert",
                "linear",
                "--etas",
                "0",
            ],
            vec!["etas"],
        ),
        (
            "compare without --target",
            vec!["compare", &good, "--experts", "2", "--expert", "linear"],
            vec!["--target", "required for --expert linear"],
        ),
        ("demo --n 5", vec!["demo", "--n", "5"], vec!["--n"]),
        ("demo --snr -1", vec!["demo", "--snr", "-1"], vec!["--snr"]),
        ("demo --d 0", vec!["demo", "--d", "0"], vec!["--d"]),
        ("unknown subcommand", vec!["fitt"], vec!["fitt"]),
        ("no subcommand", vec![], vec!["no subcommand given"]),
        (
            "reproduce unknown flag",
            vec!["reproduce", "--fast"],
            vec!["--fast"],
        ),
    ];
    for (what, args, words) in usage {
        cases.push(Case::new(what, &args, 2, &words));
    }

    // 9. What works: exit 0 and the files written.
    let ok = d.join("ok");
    std::fs::create_dir_all(&ok).unwrap();
    let prev = ok.join("prev.json");
    std::fs::write(&prev, "old").unwrap();
    let mut c = Case::new("fit replaces a model", &[], 0, &[]);
    c.args = fit_args(&good);
    c.args.extend([
        "--out".into(),
        s(&prev),
        "--plot".into(),
        s(&ok.join("trace.png")),
    ]);
    c.exist = vec![prev.clone(), ok.join("trace.png")];
    c.clean_dir = Some(ok.clone());
    cases.push(c);
    let mut c = Case::new(
        "predict to a file",
        &["predict", &m, &good, "--out", &s(&ok.join("p.csv"))],
        0,
        &[],
    );
    c.exist = vec![ok.join("p.csv")];
    c.unchanged = vec![fx.good.clone()];
    cases.push(c);
    let mut c = Case::new("predict from stdin", &["predict", &m, "-"], 0, &[]);
    c.stdin = Some(fx.good_text.clone().into_bytes());
    cases.push(c);
    let mut c = Case::new("fit from stdin", &[], 0, &[]);
    c.args = fit_args("-");
    c.stdin = Some(fx.good_text.clone().into_bytes());
    cases.push(c);
    cases.push(Case::new("certify", &["certify", &m, &good], 0, &[]));
    cases.push(Case::new(
        "predict --target y",
        &["predict", &m, &good, "--target", "y"],
        0,
        &[],
    ));
    cases.push(Case::new("help", &["fit", "--help"], 0, &[]));

    // 9. Ordinary data that must fit, and a fit without a maximum that must say so.
    let shipped = |f: &str| s(&Path::new(env!("CARGO_MANIFEST_DIR")).join(f));
    let (diabetes, cancer) = (
        shipped("data/diabetes.csv"),
        shipped("data/breast_cancer.csv"),
    );
    let classes = shipped("tests/data/three_classes.csv");
    for k in ["3", "4"] {
        cases.push(Case::new(
            format!("diabetes K = {k} linear fits"),
            &[
                "fit",
                &diabetes,
                "--target",
                "y",
                "--experts",
                k,
                "--expert",
                "linear",
                "--json",
            ],
            0,
            &["\"converged\":true"],
        ));
    }
    cases.push(Case::new(
        "multinomial K = 2 on three classes fits",
        &[
            "fit",
            &classes,
            "--target",
            "y",
            "--experts",
            "2",
            "--expert",
            "multinomial",
        ],
        0,
        &["converged (relative change"],
    ));
    cases.push(Case::new(
        "separable logistic data are not converged",
        &[
            "fit",
            &cancer,
            "--target",
            "y",
            "--experts",
            "2",
            "--expert",
            "logistic",
            "--json",
        ],
        0,
        &[
            "\"converged\":false",
            "separates its weighted data",
            "\"separated\":{\"expert\"",
            "--ridge",
        ],
    ));
    cases.push(Case::new(
        "separable logistic data fitted with --stream are not converged",
        &[
            "fit",
            &cancer,
            "--target",
            "y",
            "--experts",
            "2",
            "--expert",
            "logistic",
            "--stream",
            "--chunk-rows",
            "100",
        ],
        0,
        &["separates its weighted data", "--ridge"],
    ));
    // 10. The ridge the separation warning suggests: it works, and nonsense is refused.
    let logistic = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "fit",
            cancer.as_str(),
            "--target",
            "y",
            "--experts",
            "2",
            "--expert",
            "logistic",
        ]
        .iter()
        .map(|v| v.to_string())
        .collect();
        a.extend(extra.iter().map(|v| v.to_string()));
        a
    };
    let args = logistic(&["--ridge", "1", "--json"]);
    cases.push(Case::new(
        "separable logistic data with --ridge 1 converge",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        0,
        &[
            "\"converged\":true",
            "\"separated\":null",
            "\"ridge\":{\"lambda\":1.0",
        ],
    ));
    for (name, extra, words) in [
        (
            "a negative ridge",
            vec!["--ridge", "-1"],
            vec!["--ridge", ">= 0"],
        ),
        ("a NaN ridge", vec!["--ridge", "NaN"], vec!["--ridge"]),
    ] {
        let args = logistic(&extra);
        cases.push(Case::new(
            name,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            2,
            &words,
        ));
    }
    cases.push(Case::new(
        "--ridge in a streamed fit is applied and reported",
        &[
            "fit",
            &diabetes,
            "--target",
            "y",
            "--experts",
            "2",
            "--expert",
            "linear",
            "--stream",
            "--ridge",
            "1",
            "--json",
        ],
        0,
        &["\"ridge\":{\"lambda\":1.0", "\"params\":{\"ridge\":1.0}"],
    ));
    cases.push(Case::new(
        "--ridge with the Gaussian mixture",
        &[
            "fit",
            &diabetes,
            "--experts",
            "2",
            "--expert",
            "gaussian",
            "--ridge",
            "1",
        ],
        2,
        &["--ridge", "not --expert gaussian"],
    ));
    cases.push(Case::new(
        "--ridge in compare",
        &[
            "compare",
            &cancer,
            "--target",
            "y",
            "--experts",
            "2",
            "--expert",
            "logistic",
            "--ridge",
            "1",
        ],
        2,
        &["--ridge", "mdem fit"],
    ));
    cases
}

/// Hidden entries of `dir` (temporary files of an atomic write).
fn hidden(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs one case; `Err` describes what failed.
fn run(case: &Case) -> Result<(), String> {
    let snapshot: Vec<(PathBuf, Option<Vec<u8>>)> = case
        .unchanged
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).ok()))
        .collect();
    let mut cmd = match case.file_limit {
        Some(blocks) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!(
                    "ulimit -f {blocks}; trap '' XFSZ; exec \"$0\" \"$@\""
                ))
                .arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    cmd.args(&case.args)
        .stdin(if case.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let clock = Instant::now();
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    if let Some(bytes) = &case.stdin {
        let mut pipe = child.stdin.take().unwrap();
        // The command may stop reading early (refused input): a broken pipe is fine.
        let _ = pipe.write_all(bytes);
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let took = clock.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    let fail = |what: String| {
        Err(format!(
            "{what}\n  stderr: {}",
            err.chars().take(600).collect::<String>()
        ))
    };
    if out.status.code() != Some(case.code) {
        return fail(format!(
            "exit code {:?}, expected {}",
            out.status.code(),
            case.code
        ));
    }
    if err.contains("panicked") || err.contains("internal error") {
        return fail("a panic".into());
    }
    if case.code != 0 {
        let lines: Vec<&str> = err.lines().collect();
        if lines.len() != 1 || !lines[0].starts_with("error: ") {
            return fail(format!(
                "{} stderr lines, expected one `error: …`",
                lines.len()
            ));
        }
        if lines[0].len() > MAX_MESSAGE {
            return fail(format!("message of {} bytes", lines[0].len()));
        }
        for w in &case.words {
            if !lines[0].contains(w.as_str()) {
                return fail(format!("missing {w:?}"));
            }
        }
    }
    if case.code == 0 {
        // A success's words are in its report.
        let report = String::from_utf8_lossy(&out.stdout);
        for w in &case.words {
            if !report.contains(w.as_str()) {
                return fail(format!("report lacks {w:?}"));
            }
        }
    }
    for p in &case.exist {
        if !p.exists() {
            return fail(format!("{} does not exist", p.display()));
        }
    }
    for p in &case.absent {
        if p.exists() {
            return fail(format!("{} exists", p.display()));
        }
    }
    for (p, before) in &snapshot {
        if &std::fs::read(p).ok() != before {
            return fail(format!("{} changed", p.display()));
        }
    }
    if let Some(dir) = &case.clean_dir {
        let h = hidden(dir);
        if !h.is_empty() {
            return fail(format!("temporary files left: {h:?}"));
        }
    }
    if let Some(limit) = case.within {
        if took > limit {
            return fail(format!("took {took:?}, limit {limit:?}"));
        }
    }
    Ok(())
}

#[test]
fn the_table_of_bad_inputs() {
    let fx = setup();
    let cases = table(&fx);
    assert!(cases.len() >= 250, "{} cases", cases.len());
    // Two workers (the machine has two cores); results in table order.
    let chunks: Vec<&[Case]> = cases.chunks(cases.len().div_ceil(2)).collect();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|c| run(c).err().map(|e| format!("[{}] {e}", c.name)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&fx.dir);
}

/// A kill at any moment of `predict --out` (reading, computing or writing) leaves the
/// previous file as it was or the complete new one, never a partial file.
#[test]
fn a_kill_during_the_write_keeps_the_previous_file() {
    let dir = std::env::temp_dir().join(format!("mdem-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // 200 000 rows: tens of milliseconds of writing.
    let mut text = String::from("a,b,y\n");
    for i in 0..200_000 {
        let a = (i % 1000) as f64 / 100.0 - 5.0;
        let b = ((i * 7) as f64).sin();
        let noise = 0.3 * ((i * 13) as f64).cos();
        let y = if b > 0.0 { 2.0 * a } else { -a } + noise;
        text.push_str(&format!("{a},{b:.5},{y:.5}\n"));
    }
    let data = dir.join("big.csv");
    std::fs::write(&data, &text).unwrap();
    let small: String = text.lines().take(200).map(|l| format!("{l}\n")).collect();
    let small_path = dir.join("small.csv");
    std::fs::write(&small_path, small).unwrap();
    let model = dir.join("m.json");
    let st = Command::new(bin())
        .args([
            "fit",
            &s(&small_path),
            "--target",
            "y",
            "--experts",
            "2",
            "--expert",
            "linear",
        ])
        .args(["--quiet", "--out", &s(&model)])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let out = dir.join("p.csv");
    let previous = "row,previous\n1,1\n";
    let mut outcomes = (0, 0);
    for delay_ms in [0u64, 5, 20, 40, 60, 80, 120, 160, 250, 400] {
        std::fs::write(&out, previous).unwrap();
        let mut child = Command::new(bin())
            .args(["predict", &s(&model), &s(&data), "--out", &s(&out)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let now = std::fs::read_to_string(&out).unwrap();
        if now == previous {
            outcomes.0 += 1;
        } else {
            // Finished before the kill: the complete new file.
            assert!(
                status.success(),
                "delay {delay_ms} ms: changed file after a kill"
            );
            assert_eq!(now.lines().count(), 200_001, "delay {delay_ms} ms");
            outcomes.1 += 1;
        }
    }
    assert!(
        outcomes.0 > 0,
        "no run was killed before it finished: {outcomes:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
