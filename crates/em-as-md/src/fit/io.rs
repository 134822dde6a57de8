//! Saving and loading fitted models as JSON.
//!
//! **Version 2** (written): a format tag and version, the [`MoeSpec`] — the expert's
//! [`ExpertSpec`] (its [registry](crate::model::registry) name and named parameters, for a
//! GLM the family's [`FamilySpec`](crate::model::expert::FamilySpec), the number of
//! regressed components and the constants), $K$, $d$, the gating — then $\hat\theta$, the
//! feature names, the intercept flag, the fit report (non-finite record fields stored as
//! `null`) and the `fitting` section with the softmax gate's M-step settings
//! ([`GateConfig`], as set with [`MixtureOfExperts::with_gate_config`]):
//!
//! ```json
//! { "format": "mdem-moe", "version": 2,
//!   "spec": { "expert": { "name": "multinomial",
//!                         "params": { "classes": 3.0, "lbfgs_tol": 1e-8,
//!                                     "lbfgs_max_iter": 300.0, "dense_max_params": 100.0 } },
//!             "n_experts": 2, "n_features": 3, "gating": "Softmax" },
//!   "theta": [ … ], "feature_names": [ … ], "intercept": true, "report": { … },
//!   "fitting": { "gate": { "tol": 1e-10, … } } }
//! ```
//!
//! An expert's own fitting settings are parameters of its description (a multinomial
//! expert's L-BFGS budget and dense-Newton limit), so a loaded model refits (e.g.
//! `mdem certify`, or an [`crate::Executor`] started from it) exactly as it was saved.
//! Loading rebuilds the expert with [`registry::build_expert`](crate::model::registry::build_expert):
//! a user's expert or family must be registered first, and an unregistered name is
//! [`RegistryError::UnknownExpert`](crate::error::RegistryError::UnknownExpert) /
//! [`RegistryError::UnknownFamily`](crate::error::RegistryError::UnknownFamily) naming
//! it. An expert without a description ([`Expert::spec`](crate::model::expert::Expert::spec) is `None`) cannot be saved:
//! [`RegistryError::NotSerialisable`](crate::error::RegistryError::NotSerialisable)
//! naming it.
//!
//! **Version 1** files (written before the registry: `"spec": {"expert": "Linear" |
//! {"RidgeLinear": {"ridge": λ}} | "Logistic" | {"Multinomial": {"classes": C}} |
//! "Poisson", …}`, with an optional `fitting` section holding the gate settings and, for
//! multinomial experts, `{"multinomial": {"lbfgs_tol", "lbfgs_max_iter",
//! "dense_max_params"}}`) still load: the expert becomes the equivalent [`ExpertSpec`]
//! (`linear` with `ridge`, `logistic`, `multinomial` with `classes` and the saved settings,
//! `poisson`); a file without the section loads with the default settings; multinomial
//! settings on another expert are `InvalidParam { name: "fitting" }`. Saving such a model
//! writes version 2.
//!
//! On load every setting goes through the same validated setters and builders as in code,
//! so an out-of-range value in a file is their typed error. Floats are written with the
//! shortest representation that reads back to the same bits (`serde_json` with
//! `float_roundtrip`), so a loaded model predicts bit-identically.

use crate::error::{MoeError, Result};
use crate::fit::predict::{FitReport, FittedMoe, RestartSummary, Spread, UngatedFit};
use crate::model::expert::ExpertSpec;
use crate::model::gate::{GateConfig, GateSolver};
use crate::model::mixture::{Gating, MixtureOfExperts, MoeSpec};
use crate::solve::solver::{IterRecord, Termination};
use crate::ConditionalFamily;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Format tag written into every model file.
pub const FORMAT: &str = "mdem-moe";
/// Format version written ([`from_json`] also reads version 1).
pub const VERSION: u32 = 2;

/// The `report` section: the [`FitReport`] as [`FitReportDef`] writes it.
#[derive(Serialize, Deserialize)]
struct ReportJson(#[serde(with = "FitReportDef")] FitReport);

/// [`FitReport`] field by field (serde's remote derive, so the copy is generated), the
/// trace as [`RecordJson`](crate::solve::executor::RecordJson)s.
#[derive(Serialize, Deserialize)]
#[serde(remote = "FitReport")]
struct FitReportDef {
    solver: String,
    n_rows: usize,
    log_likelihood: f64,
    entropy: f64,
    iterations: u64,
    termination: Termination,
    seconds: f64,
    #[serde(with = "trace_json")]
    trace: Vec<IterRecord>,
    best_restart: usize,
    restarts: Vec<RestartSummary>,
    spread: Option<Spread>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    start_theta: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ungated: Option<UngatedFit>,
}

/// The trace as [`RecordJson`]s (JSON has no NaN).
mod trace_json {
    use crate::solve::executor::RecordJson;
    use crate::solve::solver::IterRecord;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(trace: &[IterRecord], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(trace.iter().map(RecordJson::from))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IterRecord>, D::Error> {
        let trace = Vec::<RecordJson>::deserialize(d)?;
        Ok(trace.iter().map(IterRecord::from).collect())
    }
}

/// The format tag and version, read first to choose the schema.
#[derive(Deserialize)]
struct Header {
    format: String,
    version: u32,
}

/// A version-2 file.
#[derive(Serialize, Deserialize)]
struct ModelFile {
    format: String,
    version: u32,
    spec: MoeSpec,
    theta: Vec<f64>,
    feature_names: Vec<String>,
    intercept: bool,
    report: ReportJson,
    #[serde(default)]
    fitting: Option<FittingJson>,
}

/// The model-level fitting settings (the `fitting` section).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct FittingJson {
    /// The gate's M-step settings.
    gate: GateConfigJson,
}

/// A version-1 file (read only).
#[derive(Deserialize)]
struct ModelFileV1 {
    spec: MoeSpecV1,
    theta: Vec<f64>,
    feature_names: Vec<String>,
    intercept: bool,
    report: ReportJson,
    /// Absent in files written before it existed (read as `None`: default settings).
    #[serde(default)]
    fitting: Option<FittingJsonV1>,
}

/// The version-1 spec: the expert as the closed set of built-ins it had.
#[derive(Deserialize)]
struct MoeSpecV1 {
    expert: ExpertV1,
    n_experts: usize,
    n_features: usize,
    gating: Gating,
}

/// The expert of a version-1 file (the schema of that version, read only; it becomes
/// an [`ExpertSpec`] at once).
#[derive(Debug, Clone, Copy, Deserialize)]
enum ExpertV1 {
    Linear,
    RidgeLinear { ridge: f64 },
    Logistic,
    Multinomial { classes: usize },
    Poisson,
}

/// The version-1 `fitting` section.
#[derive(Debug, Clone, Copy, Deserialize)]
struct FittingJsonV1 {
    gate: GateConfigJson,
    #[serde(default)]
    multinomial: Option<MultinomialJsonV1>,
}

/// A multinomial expert's settings in a version-1 file.
#[derive(Debug, Clone, Copy, Deserialize)]
struct MultinomialJsonV1 {
    lbfgs_tol: f64,
    lbfgs_max_iter: u64,
    dense_max_params: usize,
}

/// [`GateConfig`] as written in the file (the type itself has no serde derives).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct GateConfigJson {
    tol: f64,
    max_iter: u64,
    reuse_below: f64,
    solver: GateSolverJson,
    lbfgs_fallback: bool,
    /// Absent in files written before the gate had a ridge: 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    ridge: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// [`GateSolver`] as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum GateSolverJson {
    Newton,
    Lbfgs,
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
            ridge,
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
            ridge,
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
            ridge: c.ridge,
        }
    }
}

/// The [`ExpertSpec`] equivalent to a version-1 expert and its saved settings.
///
/// # Errors
/// `InvalidParam { name: "fitting" }` for multinomial settings on another expert.
fn spec_from_v1(kind: ExpertV1, settings: Option<MultinomialJsonV1>) -> Result<ExpertSpec> {
    let spec = match (kind, settings) {
        (ExpertV1::Multinomial { classes }, settings) => {
            let spec = ExpertSpec::new("multinomial").param("classes", classes as f64);
            match settings {
                Some(m) => spec
                    .param("lbfgs_tol", m.lbfgs_tol)
                    .param("lbfgs_max_iter", m.lbfgs_max_iter as f64)
                    .param("dense_max_params", m.dense_max_params as f64),
                None => spec,
            }
        }
        (kind, Some(_)) => {
            return Err(MoeError::InvalidParam {
                name: "fitting",
                reason: format!("multinomial settings saved for a {kind:?} expert"),
            })
        }
        (ExpertV1::Linear, None) => ExpertSpec::new("linear"),
        (ExpertV1::RidgeLinear { ridge }, None) => ExpertSpec::new("linear").param("ridge", ridge),
        (ExpertV1::Logistic, None) => ExpertSpec::new("logistic"),
        (ExpertV1::Poisson, None) => ExpertSpec::new("poisson"),
    };
    Ok(spec)
}

/// The model described by `spec` with the saved gate settings applied through the
/// validated setter (the defaults when the file has none).
///
/// # Errors
/// As [`MixtureOfExperts::from_spec`]; `InvalidParam { name: "gate config" }` from
/// [`MixtureOfExperts::with_gate_config`].
fn model_from_file(spec: &MoeSpec, gate: Option<GateConfigJson>) -> Result<MixtureOfExperts> {
    let model = MixtureOfExperts::from_spec(spec)?;
    match gate {
        Some(g) => model.with_gate_config(g.into()),
        None => Ok(model),
    }
}

/// The model as a JSON string (version [`VERSION`]).
///
/// # Errors
/// [`RegistryError::NotSerialisable`](crate::error::RegistryError::NotSerialisable)
/// naming an expert without a description; `Io` if serialisation fails.
pub fn to_json(m: &FittedMoe) -> Result<String> {
    let r = m.report();
    let spec = m.model().spec()?;
    let file = ModelFile {
        format: FORMAT.into(),
        version: VERSION,
        fitting: Some(FittingJson {
            gate: m.model().gate_config().into(),
        }),
        spec,
        theta: m.theta().to_vec(),
        feature_names: m.feature_names().to_vec(),
        intercept: m.intercept(),
        report: ReportJson(r.clone()),
    };
    serde_json::to_string_pretty(&file).map_err(|e| MoeError::Io(e.to_string()))
}

/// A model from a JSON string written by [`to_json`] (version 2) or by a version-1 writer.
///
/// # Errors
/// `Io` for malformed JSON or a wrong format tag/version; the registry's errors for the
/// expert ([`RegistryError::UnknownExpert`](crate::error::RegistryError::UnknownExpert),
/// [`RegistryError::UnknownFamily`](crate::error::RegistryError::UnknownFamily) naming an
/// unregistered name, [`RegistryError::WrongParams`](crate::error::RegistryError::WrongParams)
/// and [`RegistryError::BadParam`](crate::error::RegistryError::BadParam) for its
/// parameters, e.g. a zero `lbfgs_max_iter`); `InvalidParam` naming `n_experts`,
/// `n_features`, `theta` or `feature_names` when sizes are inconsistent;
/// `InvalidParam { name: "intercept" }` when the flag contradicts the names;
/// `InvalidParam { name: "gate config" }` ([`GateConfig::check`]) for bad gate settings;
/// for version 1, the builders' errors for the saved multinomial settings and
/// `InvalidParam { name: "fitting" }` for multinomial settings on another expert.
pub fn from_json(text: &str) -> Result<FittedMoe> {
    let io = |e: serde_json::Error| MoeError::Io(e.to_string());
    let h: Header = serde_json::from_str(text).map_err(io)?;
    let (spec, gate, theta, feature_names, intercept, r) = match (h.format.as_str(), h.version) {
        (FORMAT, 2) => {
            let f: ModelFile = serde_json::from_str(text).map_err(io)?;
            let gate = f.fitting.map(|s| s.gate);
            (
                f.spec,
                gate,
                f.theta,
                f.feature_names,
                f.intercept,
                f.report,
            )
        }
        (FORMAT, 1) => {
            let f: ModelFileV1 = serde_json::from_str(text).map_err(io)?;
            let expert = spec_from_v1(f.spec.expert, f.fitting.and_then(|s| s.multinomial))?;
            let spec = MoeSpec {
                expert,
                n_experts: f.spec.n_experts,
                n_features: f.spec.n_features,
                gating: f.spec.gating,
            };
            let gate = f.fitting.map(|s| s.gate);
            (spec, gate, f.theta, f.feature_names, f.intercept, f.report)
        }
        _ => {
            return Err(MoeError::Io(format!(
                "not an {FORMAT} v1 or v{VERSION} model file (found {} v{})",
                h.format, h.version
            )))
        }
    };
    let model = model_from_file(&spec, gate)?;
    if theta.len() != model.n_params() {
        return Err(MoeError::InvalidParam {
            name: "theta",
            reason: format!(
                "the model has {} parameters, the file {}",
                model.n_params(),
                theta.len()
            ),
        });
    }
    let fitted = FittedMoe::new(model, theta, feature_names, r.0)?;
    if fitted.intercept() != intercept {
        return Err(MoeError::InvalidParam {
            name: "intercept",
            reason: "flag contradicts the first feature name".into(),
        });
    }
    Ok(fitted)
}

/// Writes the model to `path` as JSON, atomically ([`crate::fit::atomic`]: a failed
/// write leaves an existing file untouched).
///
/// # Errors
/// As [`to_json`]; `Io` naming the path when writing fails.
pub fn save(m: &FittedMoe, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let text = to_json(m)?;
    crate::fit::atomic::write_bytes(path, text.as_bytes())
        .map_err(|e| MoeError::Io(format!("{}: {e}", path.display())))
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
