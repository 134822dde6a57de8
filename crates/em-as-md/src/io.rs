//! Saving and loading fitted models as JSON.
//!
//! The file holds a format tag and version, the [`MoeSpec`] (expert kind, $K$, $d$,
//! gating), $\hat\theta$, the feature names, the intercept flag and the fit report (with
//! non-finite record fields stored as `null`). Floats are written with the shortest
//! representation that reads back to the same bits (`serde_json` with `float_roundtrip`),
//! so a loaded model predicts bit-identically. Loading validates every size and gives
//! typed errors; models with custom experts (no [`MoeSpec`]) cannot be saved.

use crate::error::{MoeError, Result};
use crate::executor::RecordJson;
use crate::moe::{MixtureOfExperts, MoeSpec};
use crate::predict::{FitReport, FittedMoe, RestartSummary, Spread};
use crate::solver::{IterRecord, Termination};
use crate::ConditionalFamily;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Format tag written into every model file.
pub const FORMAT: &str = "mdem-moe";
/// Format version.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct ReportJson {
    solver: String,
    n_rows: usize,
    log_likelihood: f64,
    entropy: f64,
    iterations: u64,
    termination: Termination,
    seconds: f64,
    trace: Vec<RecordJson>,
    best_restart: usize,
    restarts: Vec<RestartSummary>,
    spread: Option<Spread>,
}

#[derive(Serialize, Deserialize)]
struct ModelFile {
    format: String,
    version: u32,
    spec: MoeSpec,
    theta: Vec<f64>,
    feature_names: Vec<String>,
    intercept: bool,
    report: ReportJson,
}

/// The model as a JSON string.
///
/// # Errors
/// `InvalidParam { name: "expert" }` for a custom expert; `Io` if serialisation fails.
pub fn to_json(m: &FittedMoe) -> Result<String> {
    let r = m.report();
    let file = ModelFile {
        format: FORMAT.into(),
        version: VERSION,
        spec: m.model().spec()?,
        theta: m.theta().to_vec(),
        feature_names: m.feature_names().to_vec(),
        intercept: m.intercept(),
        report: ReportJson {
            solver: r.solver.clone(),
            n_rows: r.n_rows,
            log_likelihood: r.log_likelihood,
            entropy: r.entropy,
            iterations: r.iterations,
            termination: r.termination,
            seconds: r.seconds,
            trace: r.trace.iter().map(RecordJson::from).collect(),
            best_restart: r.best_restart,
            restarts: r.restarts.clone(),
            spread: r.spread,
        },
    };
    serde_json::to_string_pretty(&file).map_err(|e| MoeError::Io(e.to_string()))
}

/// A model from a JSON string written by [`to_json`].
///
/// # Errors
/// `Io` for malformed JSON or a wrong format tag/version; `InvalidParam` naming
/// `n_experts`, `n_features`, `expert`, `theta` or `feature_names` when sizes are
/// inconsistent; `InvalidParam { name: "intercept" }` when the flag contradicts the names.
pub fn from_json(text: &str) -> Result<FittedMoe> {
    let f: ModelFile = serde_json::from_str(text).map_err(|e| MoeError::Io(e.to_string()))?;
    if f.format != FORMAT || f.version != VERSION {
        return Err(MoeError::Io(format!(
            "not an {FORMAT} v{VERSION} model file (found {} v{})",
            f.format, f.version
        )));
    }
    let model = MixtureOfExperts::from_spec(&f.spec)?;
    if f.theta.len() != model.n_params() {
        return Err(MoeError::InvalidParam {
            name: "theta",
            reason: format!(
                "the model has {} parameters, the file {}",
                model.n_params(),
                f.theta.len()
            ),
        });
    }
    let r = f.report;
    let report = FitReport {
        solver: r.solver,
        n_rows: r.n_rows,
        log_likelihood: r.log_likelihood,
        entropy: r.entropy,
        iterations: r.iterations,
        termination: r.termination,
        seconds: r.seconds,
        trace: r.trace.iter().map(IterRecord::from).collect(),
        best_restart: r.best_restart,
        restarts: r.restarts,
        spread: r.spread,
    };
    let fitted = FittedMoe::new(model, f.theta, f.feature_names, report)?;
    if fitted.intercept() != f.intercept {
        return Err(MoeError::InvalidParam {
            name: "intercept",
            reason: "flag contradicts the first feature name".into(),
        });
    }
    Ok(fitted)
}

/// Writes the model to `path` as JSON.
///
/// # Errors
/// As [`to_json`]; `Io` naming the path when writing fails.
pub fn save(m: &FittedMoe, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, to_json(m)?).map_err(|e| MoeError::Io(format!("{}: {e}", path.display())))
}

/// Reads a model written by [`save`].
///
/// # Errors
/// `Io` naming the path when reading fails; as [`from_json`].
pub fn load(path: impl AsRef<Path>) -> Result<FittedMoe> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| MoeError::Io(format!("{}: {e}", path.display())))?;
    from_json(&text)
}

impl FittedMoe {
    /// Writes the model to `path` as JSON (see [`save`]).
    ///
    /// # Errors
    /// As [`save`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        save(self, path)
    }
    /// Reads a model (see [`load`]).
    ///
    /// # Errors
    /// As [`load`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        load(path)
    }
}
