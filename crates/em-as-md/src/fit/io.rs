//! Saving and loading fitted models as JSON.
//!
//! The file holds a format tag and version, the [`MoeSpec`] (expert kind, $K$, $d$,
//! gating), $\hat\theta$, the feature names, the intercept flag, the fit report (with
//! non-finite record fields stored as `null`) and the model's *fitting settings*: the
//! softmax gate's M-step settings ([`GateConfig`], as set with
//! [`MixtureOfExperts::with_gate_config`]) and, for [`Multinomial`] experts, their L-BFGS
//! budget ([`Multinomial::with_lbfgs_budget`]) and dense-Newton limit
//! ([`Multinomial::with_dense_max_params`]). A loaded model therefore refits (e.g.
//! `mdem certify`, or an [`crate::Executor`] started from it) with the settings it was
//! saved with.
//!
//! The settings live in an optional `fitting` section, added without a version bump:
//! a file written before it existed has no such section and loads exactly as before, with
//! the default settings ([`GateConfig::default`], [`Multinomial::new`]); a reader that
//! predates it ignores it. On load the settings go through the same validated setters as
//! in code, so an out-of-range value in a file is the setter's typed error.
//!
//! Floats are written with the shortest representation that reads back to the same bits
//! (`serde_json` with `float_roundtrip`), so a loaded model predicts bit-identically.
//! Loading validates every size and gives typed errors; models with custom experts (no
//! [`MoeSpec`]) cannot be saved.

use crate::error::{MoeError, Result};
use crate::fit::predict::{FitReport, FittedMoe, RestartSummary, Spread};
use crate::model::expert::{Expert, ExpertKind, Multinomial};
use crate::model::gate::{GateConfig, GateSolver};
use crate::model::mixture::{MixtureOfExperts, MoeSpec};
use crate::solve::executor::RecordJson;
use crate::solve::solver::{IterRecord, Termination};
use crate::ConditionalFamily;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

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
    /// Absent in files written before it existed (read as `None`: default settings).
    #[serde(default)]
    fitting: Option<FittingJson>,
}

/// The fitting settings of a saved model (the `fitting` section).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct FittingJson {
    /// The gate's M-step settings.
    gate: GateConfigJson,
    /// The multinomial experts' settings; written only for [`ExpertKind::Multinomial`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    multinomial: Option<MultinomialJson>,
}

/// [`GateConfig`] as written in the file (the type itself has no serde derives).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct GateConfigJson {
    tol: f64,
    max_iter: u64,
    reuse_below: f64,
    solver: GateSolverJson,
    lbfgs_fallback: bool,
}

/// [`GateSolver`] as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum GateSolverJson {
    Newton,
    Lbfgs,
}

/// The settings of a [`Multinomial`] expert as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct MultinomialJson {
    lbfgs_tol: f64,
    lbfgs_max_iter: u64,
    dense_max_params: usize,
}

impl From<GateConfig> for GateConfigJson {
    fn from(c: GateConfig) -> Self {
        // Destructured without `..` so that a new setting fails to compile here until it
        // is saved too.
        let GateConfig {
            tol,
            max_iter,
            reuse_below,
            solver,
            lbfgs_fallback,
        } = c;
        GateConfigJson {
            tol,
            max_iter,
            reuse_below,
            solver: match solver {
                GateSolver::Newton => GateSolverJson::Newton,
                GateSolver::Lbfgs => GateSolverJson::Lbfgs,
            },
            lbfgs_fallback,
        }
    }
}

impl From<GateConfigJson> for GateConfig {
    fn from(c: GateConfigJson) -> Self {
        GateConfig {
            tol: c.tol,
            max_iter: c.max_iter,
            reuse_below: c.reuse_below,
            solver: match c.solver {
                GateSolverJson::Newton => GateSolver::Newton,
                GateSolverJson::Lbfgs => GateSolver::Lbfgs,
            },
            lbfgs_fallback: c.lbfgs_fallback,
        }
    }
}

/// The fitting settings of a multinomial expert.
///
/// # Errors
/// `InvalidParam { name: "expert" }` if `expert` is not the multinomial expert.
fn multinomial_settings(expert: &dyn Expert) -> Result<MultinomialJson> {
    let m = expert.multinomial().ok_or_else(|| MoeError::InvalidParam {
        name: "expert",
        reason: format!(
            "expert `{}` is saved as multinomial but is not one",
            expert.name()
        ),
    })?;
    let (lbfgs_tol, lbfgs_max_iter) = m.lbfgs_budget();
    Ok(MultinomialJson {
        lbfgs_tol,
        lbfgs_max_iter,
        dense_max_params: m.dense_max_params(),
    })
}

/// The fitting settings of `model` for the file.
///
/// # Errors
/// As [`multinomial_settings`] for a multinomial expert.
fn fitting_of(model: &MixtureOfExperts, spec: &MoeSpec) -> Result<FittingJson> {
    let multinomial = match spec.expert {
        ExpertKind::Multinomial { .. } => Some(multinomial_settings(model.expert().as_ref())?),
        _ => None,
    };
    Ok(FittingJson {
        gate: model.gate_config().into(),
        multinomial,
    })
}

/// The model described by `spec`, with the saved fitting settings applied through the
/// validated setters (the defaults when the file has no `fitting` section).
///
/// # Errors
/// As [`MixtureOfExperts::from_spec`]; `InvalidParam { name: "gate config" }` and
/// `InvalidParam { name: "lbfgs budget" }` from [`MixtureOfExperts::with_gate_config`] and
/// [`Multinomial::with_lbfgs_budget`]; `InvalidParam { name: "fitting" }` for multinomial
/// settings on another expert kind.
fn model_from_file(spec: &MoeSpec, fitting: Option<&FittingJson>) -> Result<MixtureOfExperts> {
    let Some(fit) = fitting else {
        return MixtureOfExperts::from_spec(spec);
    };
    let expert: Arc<dyn Expert> = match (spec.expert, fit.multinomial) {
        (ExpertKind::Multinomial { classes }, Some(m)) => Arc::new(
            Multinomial::new(classes)?
                .with_dense_max_params(m.dense_max_params)
                .with_lbfgs_budget(m.lbfgs_tol, m.lbfgs_max_iter)?,
        ),
        (kind, None) => kind.build()?,
        (kind, Some(_)) => {
            return Err(MoeError::InvalidParam {
                name: "fitting",
                reason: format!("multinomial settings saved for a {kind:?} expert"),
            })
        }
    };
    MixtureOfExperts::new(expert, spec.n_experts, spec.n_features, spec.gating)?
        .with_gate_config(fit.gate.into())
}

/// The model as a JSON string.
///
/// # Errors
/// `InvalidParam { name: "expert" }` for a custom expert (or a multinomial expert whose
/// fitting settings cannot be read); `Io` if serialisation fails.
pub fn to_json(m: &FittedMoe) -> Result<String> {
    let r = m.report();
    let spec = m.model().spec()?;
    let file = ModelFile {
        format: FORMAT.into(),
        version: VERSION,
        fitting: Some(fitting_of(m.model(), &spec)?),
        spec,
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
/// inconsistent; `InvalidParam { name: "intercept" }` when the flag contradicts the names;
/// for the `fitting` section, the setters' errors `InvalidParam { name: "gate config" }`
/// ([`GateConfig::check`]) and `InvalidParam { name: "lbfgs budget" }`
/// ([`Multinomial::with_lbfgs_budget`]), and `InvalidParam { name: "fitting" }` for
/// multinomial settings on another expert kind.
pub fn from_json(text: &str) -> Result<FittedMoe> {
    let f: ModelFile = serde_json::from_str(text).map_err(|e| MoeError::Io(e.to_string()))?;
    if f.format != FORMAT || f.version != VERSION {
        return Err(MoeError::Io(format!(
            "not an {FORMAT} v{VERSION} model file (found {} v{})",
            f.format, f.version
        )));
    }
    let model = model_from_file(&f.spec, f.fitting.as_ref())?;
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
