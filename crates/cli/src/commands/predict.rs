//! `mdem predict model.json DATA.csv [--out preds.csv]`: predictions of a saved model as
//! CSV. The data file is CSV, or Parquet by its `.parquet` extension
//! ([`read_columns_at`]).
//!
//! Columns, one row per data row: `row` (1-based data row), `gate_1..gate_K` (gate
//! probabilities $\pi_k(x)$); when the target column is present, `resp_1..resp_K`
//! (posterior responsibilities $r_k \propto \pi_k(x)\,p_F(y;\eta_k(x))$) and
//! `log_density` ($\log p(y\mid x)$); then the prediction $\mathbb E[y \mid x] =
//! \sum_k\pi_k(x)\,\mathbb E_k[y\mid x]$, with the columns the expert names
//! (`Expert::prediction_names`): `mean` for linear and Poisson experts, `prob_1`
//! ($P(y=1\mid x)$) for logistic experts, `prob_0..prob_{C-1}` for multinomial experts.
//!
//! **A Gaussian mixture** (fitted by `mdem fit --expert gaussian` without a target) reads
//! the columns it was fitted on and writes `row`, `prob_1..prob_K` (the posterior
//! probability $P(z = k \mid y_i)$ of each cluster), `cluster` (the most probable one,
//! 1-based) and `log_density` ($\log\sum_k\pi_k N(y_i; m_k, \Sigma_k)$).
//!
//! When the target column is present, every value is checked against the support of the
//! model's expert (`Expert::check_target`), with the registry entry's words for the
//! support in the one-line message (as `fit`).
//!
//! The data file is read with the same messages as `fit` (file, line, column); unlike
//! `fit`, a handful of rows is fine (no design checks: constant or collinear columns do
//! not matter for prediction).

use crate::error::CliError;
use crate::model::{data_features, load_model};
use crate::output::{check_outputs, write_file, Output};
use clap::Args;
use em_as_md::data::csv::{clip, read_columns_at, DataError};
use em_as_md::model::registry;
use em_as_md::{Dataset, MoeError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `mdem predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// Model file written by `mdem fit --out`.
    pub model: PathBuf,
    /// CSV file with the model's feature columns (and optionally its target column).
    pub data: PathBuf,
    /// Write the predictions here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Target column name (default: the one saved with the model).
    #[arg(long)]
    pub target: Option<String>,
}

/// Rows read for prediction.
#[derive(Debug, Clone)]
pub struct PredictData {
    /// Design matrix (intercept first when the model has one).
    pub dataset: Dataset,
    /// Whether the target column was present (if not, `dataset`'s targets are 0).
    pub has_target: bool,
    /// Physical line of each row (header = line 1).
    pub lines: Vec<u64>,
}

/// Reads `path` (CSV, `-` for standard input, with the same limits as `fit`; or Parquet by
/// its extension, [`read_columns_at`]) for prediction:
/// the `features` (required) and the `target` (required when `target_required`, else
/// read when present), with an intercept column prepended when `intercept`. Only these
/// columns are parsed ([`read_columns_at`]), so a wide file costs the columns used.
///
/// # Errors
/// [`DataError`] naming file, line and column (not a regular file, not CSV, missing
/// feature or required target column, ragged row, non-numeric or non-finite cell, no rows).
pub fn read_for_prediction(
    path: &Path,
    target: &str,
    target_required: bool,
    features: &[String],
    intercept: bool,
) -> Result<PredictData, DataError> {
    let file = path.display().to_string();
    let mut has_target = false;
    let select = |header: &[String]| {
        let idx = |name: &str| header.iter().position(|h| h == name);
        let mut cols = Vec::with_capacity(features.len() + 1);
        for name in features {
            cols.push(idx(name).ok_or_else(|| DataError::UnknownFeature {
                file: file.clone(),
                column: name.clone(),
                available: header.to_vec(),
            })?);
        }
        match idx(target) {
            Some(j) => {
                has_target = true;
                cols.push(j);
            }
            None if target_required => {
                return Err(DataError::MissingTarget {
                    file: file.clone(),
                    target: target.to_string(),
                    available: header.to_vec(),
                })
            }
            None => {}
        }
        Ok(cols)
    };
    let mut columns = read_columns_at(path, select)?;
    let n = columns.lines.len();
    let y = if has_target {
        columns.values.pop().unwrap_or_default()
    } else {
        vec![0.0; n]
    };
    let d = features.len() + usize::from(intercept);
    let mut x = Vec::with_capacity(n * d);
    for i in 0..n {
        if intercept {
            x.push(1.0);
        }
        x.extend(columns.values.iter().map(|c| c[i]));
    }
    let dataset = Dataset::from_rows(&x, d, &y, 1).map_err(|source| DataError::Dataset {
        file: file.clone(),
        source,
    })?;
    Ok(PredictData {
        dataset,
        has_target,
        lines: columns.lines,
    })
}

/// Reads the `columns` of a Gaussian mixture's coordinates from `path` (`-` for standard
/// input): the data set has them as its targets and the intercept as its only feature,
/// as the fit had.
///
/// # Errors
/// [`DataError`] naming file, line and column, as [`read_for_prediction`].
pub fn read_clusters(path: &Path, columns: &[String]) -> Result<PredictData, DataError> {
    let file = path.display().to_string();
    let select = |header: &[String]| {
        columns
            .iter()
            .map(|name| {
                header
                    .iter()
                    .position(|h| h == name)
                    .ok_or_else(|| DataError::UnknownFeature {
                        file: file.clone(),
                        column: name.clone(),
                        available: header.to_vec(),
                    })
            })
            .collect()
    };
    let cols = read_columns_at(path, select)?;
    let n = cols.lines.len();
    let q = columns.len();
    let mut y = Vec::with_capacity(n * q);
    for i in 0..n {
        y.extend(cols.values.iter().map(|c| c[i]));
    }
    let dataset = Dataset::from_rows(&[], 0, &y, q)
        .map_err(|source| DataError::Dataset {
            file: file.clone(),
            source,
        })?
        .with_intercept();
    Ok(PredictData {
        dataset,
        has_target: true,
        lines: cols.lines,
    })
}

/// The target column `predict` and `certify` read: `--target` when given (then it must be
/// present in the data, and it cannot be one of the model's features), else the one saved
/// with the model (read when present). Returns the name and whether it is required.
///
/// # Errors
/// [`CliError::BadInput`] when `--target` names a feature of the model.
pub fn target_column(
    given: Option<&str>,
    saved: Option<&str>,
    features: &[String],
) -> Result<(String, bool), CliError> {
    match given {
        Some(t) if features.iter().any(|f| f == t) => {
            Err(CliError::BadInput(format!(
            "--target {}: \"{}\" is a feature column of the model; expected the target column{}",
            clip(t),
            clip(t),
            saved.map_or_else(String::new, |s| format!(" (saved with the model: \"{}\")", clip(s)))
        )))
        }
        Some(t) => Ok((t.to_string(), true)),
        None => Ok((saved.unwrap_or_default().to_string(), false)),
    }
}

/// Checks that the target values lie in the support of the model's experts
/// (`Expert::check_target`), with a message naming file, line and column (as `fit`): the
/// expert is named by its registry name and the support in the registry entry's words.
///
/// # Errors
/// [`CliError::Data`] with [`DataError::TargetOutOfSupport`].
pub fn check_target_support(
    fitted: &em_as_md::FittedMoe,
    pd: &PredictData,
    file: &str,
    target: &str,
) -> Result<(), CliError> {
    let expert = fitted.model().expert();
    let Some(row) = (0..pd.dataset.n()).find(|&i| !expert.check_target(pd.dataset.y(i))) else {
        return Ok(());
    };
    // A model read from a file always has a description; its entry words the support.
    let entry = expert
        .spec()
        .and_then(|s| registry::expert_entry(&s.name).ok());
    let (name, expected) = match entry {
        Some(e) => (e.name().to_string(), e.support().to_string()),
        None => (
            expert.name(),
            format!("a value in the support of {}", expert.family().name()),
        ),
    };
    Err(CliError::Data(DataError::TargetOutOfSupport {
        file: file.to_string(),
        line: pd.lines.get(row).copied().unwrap_or(row as u64 + 2),
        row: row + 1,
        column: target.to_string(),
        expert: name,
        expected: expected.into_boxed_str(),
        value: pd.dataset.y(row)[0],
    }))
}

/// Maps a library error about row `i` to a message naming the file and line; any other
/// error of the computation is blamed on `context` (`predicting`, `certify`).
pub fn row_error(
    file: &str,
    pd: &PredictData,
    target: &str,
    context: &str,
    e: MoeError,
) -> CliError {
    match e {
        MoeError::InvalidData {
            row: Some(i),
            ref reason,
            ..
        } if i < pd.lines.len() => CliError::BadInput(format!(
            "{file}: line {} (data row {}; the header is line 1), column \"{target}\": {reason}",
            pd.lines[i],
            i + 1
        )),
        e => CliError::compute(format!("{file}: {context}"), e),
    }
}

/// Runs `mdem predict`.
///
/// # Errors
/// [`CliError::Model`] for a bad model file, [`CliError::Data`] for a bad data file,
/// [`CliError::BadInput`] for a target outside the experts' support,
/// [`CliError::Output`] when the output cannot be written.
pub fn run(args: &PredictArgs) -> Result<(), CliError> {
    if let Some(path) = &args.out {
        check_outputs(
            &[Output {
                flag: "--out",
                path,
                extensions: PREDICTION_EXTENSIONS,
            }],
            &[&args.model, &args.data],
        )?;
    }
    let loaded = load_model(&args.model)?;
    let fitted = &loaded.fitted;
    if let Some(columns) = &loaded.columns {
        if let Some(t) = &args.target {
            return Err(CliError::BadInput(format!(
                "--target {}: the model is a Gaussian mixture of the columns {}; it has no target",
                clip(t),
                columns.join(", ")
            )));
        }
        let pd = read_clusters(&args.data, columns)?;
        let file = args.data.display().to_string();
        let err = |e| row_error(&file, &pd, "", "predicting", e);
        let k = fitted.model().n_experts();
        let resp = fitted.responsibilities(&pd.dataset).map_err(err)?;
        let ll = fitted.log_predictive_density(&pd.dataset).map_err(err)?;
        let write = |w: &mut dyn Write| -> std::io::Result<()> {
            let mut header: Vec<String> = vec!["row".into()];
            header.extend((1..=k).map(|c| format!("prob_{c}")));
            header.extend(["cluster".to_string(), "log_density".to_string()]);
            writeln!(w, "{}", header.join(","))?;
            for (i, (r, l)) in resp.chunks_exact(k).zip(&ll).enumerate() {
                write!(w, "{}", i + 1)?;
                for v in r {
                    write!(w, ",{v}")?;
                }
                let best = (0..k).fold(0, |b, c| if r[c] > r[b] { c } else { b });
                writeln!(w, ",{},{l}", best + 1)?;
            }
            Ok(())
        };
        return match &args.out {
            Some(path) => write_file(path, |w| write(w)),
            None => {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                match write(&mut out).and_then(|()| out.flush()) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        Err(CliError::output("stdout", e))
                    }
                    _ => Ok(()),
                }
            }
        };
    }
    let features = data_features(fitted);
    let (target, required) =
        target_column(args.target.as_deref(), loaded.target.as_deref(), &features)?;
    let pd = read_for_prediction(&args.data, &target, required, &features, fitted.intercept())?;
    let file = args.data.display().to_string();
    if pd.has_target {
        check_target_support(fitted, &pd, &file, &target)?;
    }
    let err = |e| row_error(&file, &pd, &target, "predicting", e);
    let pred = Predictions::compute(fitted, &pd).map_err(err)?;
    match &args.out {
        Some(path) => write_file(path, |w| pred.write(w)),
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match pred.write(&mut out).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(CliError::output("stdout", e))
                }
                _ => Ok(()),
            }
        }
    }
}

/// Extensions of a predictions file (CSV text).
pub const PREDICTION_EXTENSIONS: &[&str] = &["csv", "txt"];

/// The predicted quantities of every row (see the [module documentation](self) for the
/// columns), computed by the library's batched passes over the rows.
#[derive(Debug, Clone)]
pub struct Predictions {
    k: usize,
    m: usize,
    names: Vec<String>,
    gate: Vec<f64>,
    post: Option<(Vec<f64>, Vec<f64>)>,
    mean: Vec<f64>,
}

impl Predictions {
    /// Gate probabilities, responsibilities and log densities (when the target is
    /// present) and predictive means of every row of `pd`.
    ///
    /// # Errors
    /// The library's error (mapped by the caller to a line of the data file).
    pub fn compute(fitted: &em_as_md::FittedMoe, pd: &PredictData) -> Result<Self, MoeError> {
        let data = &pd.dataset;
        let model = fitted.model();
        let post = if pd.has_target {
            Some((
                fitted.responsibilities(data)?,
                fitted.log_predictive_density(data)?,
            ))
        } else {
            None
        };
        Ok(Predictions {
            k: model.n_experts(),
            m: model.expert().predict_dim(),
            names: model.expert().prediction_names(),
            gate: fitted.gate_probs(data)?,
            post,
            mean: fitted.predict_mean(data)?,
        })
    }

    /// Writes the header and one line per row to `w` as it goes (no copy of the whole
    /// output in memory).
    ///
    /// # Errors
    /// The writer's error.
    pub fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        let k = self.k;
        let mut header: Vec<String> = vec!["row".into()];
        header.extend((1..=k).map(|c| format!("gate_{c}")));
        if self.post.is_some() {
            header.extend((1..=k).map(|c| format!("resp_{c}")));
            header.push("log_density".into());
        }
        header.extend(self.names.iter().cloned());
        writeln!(w, "{}", header.join(","))?;
        let n = self.gate.len() / k.max(1);
        for i in 0..n {
            write!(w, "{}", i + 1)?;
            for v in &self.gate[i * k..(i + 1) * k] {
                write!(w, ",{v}")?;
            }
            if let Some((r, ll)) = &self.post {
                for v in &r[i * k..(i + 1) * k] {
                    write!(w, ",{v}")?;
                }
                write!(w, ",{}", ll[i])?;
            }
            let m = self.m;
            for v in self.mean[i * m..(i + 1) * m].iter().take(self.names.len()) {
                write!(w, ",{v}")?;
            }
            writeln!(w)?;
        }
        Ok(())
    }
}
