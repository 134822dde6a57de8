//! `mdem predict model.json DATA.csv [--out preds.csv]`: predictions of a saved model as
//! CSV.
//!
//! Columns, one row per data row: `row` (1-based data row), `gate_1..gate_K` (gate
//! probabilities $\pi_k(x)$); when the target column is present, `resp_1..resp_K`
//! (posterior responsibilities $r_k \propto \pi_k(x)\,p_F(y;\eta_k(x))$) and
//! `log_density` ($\log p(y\mid x)$); then the prediction $\mathbb E[y \mid x] =
//! \sum_k\pi_k(x)\,\mathbb E_k[y\mid x]$, with the columns the expert names
//! (`Expert::prediction_names`): `mean` for linear and Poisson experts, `prob_1`
//! ($P(y=1\mid x)$) for logistic experts, `prob_0..prob_{C-1}` for multinomial experts.
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
use crate::report::print_stdout;
use clap::Args;
use em_as_md::data::csv::DataError;
use em_as_md::model::registry;
use em_as_md::{Dataset, MoeError};
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

fn parse_cell(
    file: &str,
    line: u64,
    row: usize,
    column: &str,
    cell: &str,
) -> Result<f64, DataError> {
    let v: f64 = cell.parse().map_err(|_| DataError::NonNumeric {
        file: file.into(),
        line,
        row,
        column: column.into(),
        value: cell.into(),
    })?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(DataError::NonFinite {
            file: file.into(),
            line,
            row,
            column: column.into(),
            value: cell.into(),
        })
    }
}

/// Reads `path` for prediction: the `features` (required) and the `target` (optional),
/// with an intercept column prepended when `intercept`.
///
/// # Errors
/// [`DataError`] naming file, line and column (missing feature column, ragged row,
/// non-numeric or non-finite cell, no rows).
pub fn read_for_prediction(
    path: &Path,
    target: &str,
    features: &[String],
    intercept: bool,
) -> Result<PredictData, DataError> {
    let file = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|source| DataError::Io {
        file: file.clone(),
        source,
    })?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::new(f));
    let parse_err = |e: csv::Error| DataError::Parse {
        file: file.clone(),
        line: e.position().map_or(0, |p| p.line()),
        reason: e.to_string(),
    };
    let header: Vec<String> = rdr
        .headers()
        .map_err(parse_err)?
        .iter()
        .map(str::to_string)
        .collect();
    if header.is_empty() || header.iter().all(String::is_empty) {
        return Err(DataError::Empty { file });
    }
    let idx = |name: &str| header.iter().position(|h| h == name);
    let mut cols = Vec::with_capacity(features.len());
    for name in features {
        cols.push(idx(name).ok_or_else(|| DataError::UnknownFeature {
            file: file.clone(),
            column: name.clone(),
            available: header.clone(),
        })?);
    }
    let tcol = idx(target);
    let d = features.len() + usize::from(intercept);
    let (mut x, mut y, mut lines) = (Vec::new(), Vec::new(), Vec::new());
    for (r, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(parse_err)?;
        let line = rec.position().map_or(r as u64 + 2, |p| p.line());
        let row = r + 1;
        if rec.len() != header.len() {
            let column = if rec.len() < header.len() {
                header[rec.len()].clone()
            } else {
                header[header.len() - 1].clone()
            };
            return Err(DataError::Ragged {
                file,
                line,
                row,
                expected: header.len(),
                found: rec.len(),
                column,
            });
        }
        if intercept {
            x.push(1.0);
        }
        for (&c, name) in cols.iter().zip(features) {
            x.push(parse_cell(&file, line, row, name, &rec[c])?);
        }
        y.push(match tcol {
            Some(c) => parse_cell(&file, line, row, target, &rec[c])?,
            None => 0.0,
        });
        lines.push(line);
    }
    if y.is_empty() {
        return Err(DataError::NoDataRows { file });
    }
    let dataset = Dataset::from_rows(&x, d, &y, 1).map_err(|source| DataError::Dataset {
        file: file.clone(),
        source,
    })?;
    Ok(PredictData {
        dataset,
        has_target: tcol.is_some(),
        lines,
    })
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

/// Maps a library error about row `i` to a message naming the file and line.
fn row_error(file: &str, pd: &PredictData, target: &str, e: MoeError) -> CliError {
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
        e => CliError::compute(format!("{file}: predicting"), e),
    }
}

/// Runs `mdem predict`.
///
/// # Errors
/// [`CliError::Model`] for a bad model file, [`CliError::Data`] for a bad data file,
/// [`CliError::BadInput`] for a target outside the experts' support,
/// [`CliError::Output`] when the output cannot be written.
pub fn run(args: &PredictArgs) -> Result<(), CliError> {
    let loaded = load_model(&args.model)?;
    let fitted = &loaded.fitted;
    let target = args
        .target
        .clone()
        .or(loaded.target.clone())
        .unwrap_or_default();
    let features = data_features(fitted);
    let pd = read_for_prediction(&args.data, &target, &features, fitted.intercept())?;
    let data = &pd.dataset;
    let file = args.data.display().to_string();
    let model = fitted.model();
    let k = model.n_experts();
    let n = data.n();
    if pd.has_target {
        check_target_support(fitted, &pd, &file, &target)?;
    }
    let err = |e| row_error(&file, &pd, &target, e);
    let gate = fitted.gate_probs(data).map_err(err)?;
    let post = if pd.has_target {
        Some((
            fitted.responsibilities(data).map_err(err)?,
            fitted.log_predictive_density(data).map_err(err)?,
        ))
    } else {
        None
    };
    let pred_cols = model.expert().prediction_names();
    let m = model.expert().predict_dim();
    let mean = fitted.predict_mean(data).map_err(err)?;
    let mut header: Vec<String> = vec!["row".into()];
    header.extend((1..=k).map(|c| format!("gate_{c}")));
    if pd.has_target {
        header.extend((1..=k).map(|c| format!("resp_{c}")));
        header.push("log_density".into());
    }
    header.extend(pred_cols.iter().cloned());
    let mut out = String::new();
    out.push_str(&header.join(","));
    out.push('\n');
    for i in 0..n {
        let mut cells = vec![(i + 1).to_string()];
        cells.extend(gate[i * k..(i + 1) * k].iter().map(|v| format!("{v}")));
        if let Some((r, ll)) = &post {
            cells.extend(r[i * k..(i + 1) * k].iter().map(|v| format!("{v}")));
            cells.push(format!("{}", ll[i]));
        }
        cells.extend(
            mean[i * m..(i + 1) * m]
                .iter()
                .take(pred_cols.len())
                .map(|v| format!("{v}")),
        );
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    match &args.out {
        Some(path) => std::fs::write(path, out).map_err(|e| CliError::output(path.display(), e)),
        None => print_stdout(&out),
    }
}
