//! The model file written by `mdem fit --out` and read by `predict` and `certify`, and
//! the human / JSON description of fitted parameters.
//!
//! The file is JSON: the library's model file ([`em_as_md::fit::io`], format `mdem-moe`: spec,
//! $\hat\theta$ in the data's units, feature names, intercept flag, fit report) wrapped
//! with the name of the target column, so that `predict` can find the target in new data,
//! and with what `certify` needs to re-run the fit (the standardisation EM ran on,
//! [`Scaling`], and the start, [`StartInfo`]):
//! `{"format": "mdem-cli-model", "version": 1, "target": "y", "fit_scaling": {…}, "start": {…}, "model": {…}}`.
//! A bare library model file (written by `FittedMoe::save`) is read as well; its target
//! column name is then unknown (`predict --target NAME` gives it).

use crate::error::CliError;
use crate::report::{num, Table};
use em_as_md::data::csv::MAX_ABS_VALUE;
use em_as_md::fit::predict::FittedMoe;
use em_as_md::fit::scaling::Scaling;
use em_as_md::model::expert::{default_readable_params, ReadableParams};
use em_as_md::model::mixture::{Gating, MixtureOfExperts};
use em_as_md::ConditionalFamily;
use serde_json::{json, Value};
use std::path::Path;

/// Value of the envelope's `format` field.
pub const FORMAT: &str = "mdem-cli-model";
/// Current envelope version.
pub const VERSION: u32 = 1;
/// Extensions a model file may have.
pub const MODEL_EXTENSIONS: &[&str] = &["json"];

/// How the saved model was started, so that `certify` can re-run the same EM path.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StartInfo {
    /// Master seed.
    pub seed: u64,
    /// Number of restarts.
    pub n_init: usize,
    /// The restart that was kept (its start is `initial_theta(…, seed, best_restart)`).
    pub best_restart: usize,
    /// Initialisation method, an [`InitMethod::name`](em_as_md::InitMethod::name)
    /// (`"auto"`, `"kmeans"`, …; files written before `--init` existed say `"kmeans++"`).
    pub init: String,
}

/// Writes `fitted` to `path` with the target column's name.
///
/// # Errors
/// [`CliError::Output`] when the model cannot be serialised or the file written.
pub fn save_model(
    fitted: &FittedMoe,
    target: &str,
    scaling: Option<&Scaling>,
    start: Option<&StartInfo>,
    path: &Path,
) -> Result<(), CliError> {
    write_envelope(
        fitted,
        json!({ "target": target, "fit_scaling": scaling }),
        start,
        path,
    )
}

/// Writes a Gaussian mixture fitted without a target (`mdem fit --expert gaussian`) to
/// `path`: the envelope of [`save_model`] with an empty `target` and the coordinates'
/// column names in `"columns"`, which `predict` and `certify` read from the data.
///
/// # Errors
/// [`CliError::Output`] when the model cannot be serialised or the file written.
pub fn save_cluster_model(
    fitted: &FittedMoe,
    columns: &[String],
    start: Option<&StartInfo>,
    path: &Path,
) -> Result<(), CliError> {
    let fields = json!({ "target": "", "columns": columns, "fit_scaling": null });
    write_envelope(fitted, fields, start, path)
}

/// The model file: format, version, the data `fields` (an object), the start, the model.
fn write_envelope(
    fitted: &FittedMoe,
    fields: Value,
    start: Option<&StartInfo>,
    path: &Path,
) -> Result<(), CliError> {
    let inner =
        em_as_md::fit::io::to_json(fitted).map_err(|e| CliError::output(path.display(), e))?;
    let inner: Value =
        serde_json::from_str(&inner).map_err(|e| CliError::output(path.display(), e))?;
    let mut env = json!({ "format": FORMAT, "version": VERSION });
    if let (Some(env), Value::Object(fields)) = (env.as_object_mut(), fields) {
        env.extend(fields);
        env.insert("start".into(), json!(start));
        env.insert("model".into(), inner);
    }
    let text =
        serde_json::to_string_pretty(&env).map_err(|e| CliError::output(path.display(), e))?;
    crate::output::write_text(path, &(text + "\n"))
}

/// A model read from a file.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The fitted model.
    pub fitted: FittedMoe,
    /// The target column's name (`None` for a bare library model file).
    pub target: Option<String>,
    /// The standardisation EM ran on, if any (the saved $\hat\theta$ is on the data's
    /// original scale either way).
    pub scaling: Option<Scaling>,
    /// How the fit was started, if recorded.
    pub start: Option<StartInfo>,
    /// A Gaussian mixture fitted without a target: the data columns of its coordinates
    /// ([`save_cluster_model`]).
    pub columns: Option<Vec<String>>,
}

/// Reads a model file.
///
/// # Errors
/// [`CliError::Model`] (exit code 2) naming the file when it cannot be read, is not an
/// mdem model, or is inconsistent.
pub fn load_model(path: &Path) -> Result<LoadedModel, CliError> {
    let file = path.display().to_string();
    let bad = |reason: String| CliError::Model {
        file: file.clone(),
        reason,
    };
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(bad(
                "not a regular file; expected the JSON written by `mdem fit --out`".into(),
            ))
        }
        _ => {}
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read the model file: {e}")))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "not an mdem model file (expected the JSON written by `mdem fit --out`): {e}"
        ))
    })?;
    let columns: Option<Vec<String>> = match v.get("columns") {
        None | Some(Value::Null) => None,
        Some(c) => Some(
            serde_json::from_value(c.clone())
                .map_err(|e| bad(format!("bad \"columns\" field: {e}")))?,
        ),
    };
    let (inner, target, scaling, start) = if v.get("format").and_then(Value::as_str) == Some(FORMAT)
    {
        if v.get("version").and_then(Value::as_u64) != Some(u64::from(VERSION)) {
            return Err(bad(format!(
                "unsupported version {} (expected {VERSION})",
                v["version"]
            )));
        }
        let target = v
            .get("target")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no \"target\" field".into()))?
            .to_string();
        let inner = v
            .get("model")
            .ok_or_else(|| bad("no \"model\" field".into()))?;
        let scaling: Option<Scaling> = match v.get("fit_scaling") {
            None | Some(Value::Null) => None,
            Some(s) => Some(
                serde_json::from_value(s.clone())
                    .map_err(|e| bad(format!("bad \"fit_scaling\" field: {e}")))?,
            ),
        };
        let start: Option<StartInfo> = match v.get("start") {
            None | Some(Value::Null) => None,
            Some(s) => Some(
                serde_json::from_value(s.clone())
                    .map_err(|e| bad(format!("bad \"start\" field: {e}")))?,
            ),
        };
        (inner.to_string(), Some(target), scaling, start)
    } else {
        (text, None, None, None)
    };
    let fitted = em_as_md::fit::io::from_json(&inner).map_err(|e| bad(e.to_string()))?;
    check_domain(fitted.theta()).map_err(bad)?;
    if let Some(s) = &scaling {
        let d = fitted.model().n_features();
        if s.mean.len() != d || s.sd.len() != d || s.sd.iter().any(|v| !(v.is_finite() && *v > 0.0))
        {
            return Err(bad(format!(
                "\"fit_scaling\" must hold {d} means and {d} positive standard deviations"
            )));
        }
    }
    if let Some(cols) = &columns {
        let q = fitted.model().expert().family().obs_dim();
        if cols.len() != q || fitted.model().expert().gaussian_clusters().is_none() {
            return Err(bad(format!(
                "\"columns\" names {} columns, expected the {q} coordinates of a Gaussian mixture",
                cols.len()
            )));
        }
    }
    Ok(LoadedModel {
        fitted,
        target,
        scaling,
        start,
        columns,
    })
}

/// Refuses saved parameters that no fit produces and no prediction survives: a value
/// above [`MAX_ABS_VALUE`] in size (its square overflows, e.g. `1e308`), so the model
/// file, not the data, is blamed. (Non-finite values cannot be written in JSON; the
/// library's loader refuses them.)
///
/// # Errors
/// The reason, naming the parameter's index in $\theta$.
pub fn check_domain(theta: &[f64]) -> Result<(), String> {
    match theta
        .iter()
        .position(|v| !(v.is_finite() && v.abs() <= MAX_ABS_VALUE))
    {
        Some(j) => Err(format!(
            "parameter theta[{j}] = {:e} is out of domain (expected a finite value of size at most {MAX_ABS_VALUE:e}); the model file is corrupt",
            theta[j]
        )),
        None => Ok(()),
    }
}

/// The feature columns to read from a data file for `fitted` (its feature names without
/// the intercept column).
pub fn data_features(fitted: &FittedMoe) -> Vec<String> {
    let skip = usize::from(fitted.intercept());
    fitted.feature_names()[skip..].to_vec()
}

/// Design-column names: `(intercept)` first when there is one, then the features.
pub fn design_names(features: &[String], intercept: bool) -> Vec<String> {
    let mut v = Vec::with_capacity(features.len() + 1);
    if intercept {
        v.push("(intercept)".to_string());
    }
    v.extend(features.iter().cloned());
    v
}

/// The readable parameters of expert `k` ([`Expert::readable_params`](em_as_md::Expert::readable_params):
/// for linear experts $\beta = -\gamma/(2\tau)$ and $\sigma^2 = -1/(2\tau)$, for multinomial
/// experts "class $j$ vs $C-1$"; by default the regressed components and the constants).
/// A block the expert cannot read (e.g. $\tau \ge 0$) is shown in its raw components.
fn expert_params(model: &MixtureOfExperts, theta: &[f64], k: usize) -> ReadableParams {
    let (e, d) = (model.expert(), model.n_features());
    let block = model.expert_block(theta, k);
    e.readable_params(block, d)
        .or_else(|_| default_readable_params(e.as_ref(), block, d))
        .unwrap_or_default()
}

/// The parameters as JSON: experts (coefficients per design column, variances), the
/// gate, and the raw flattened $\theta$.
pub fn params_json(model: &MixtureOfExperts, theta: &[f64], names: &[String]) -> Value {
    let experts: Vec<Value> = (0..model.n_experts())
        .map(|k| {
            let p = expert_params(model, theta, k);
            json!({
                "expert": k,
                "coefficients": p.coefficients.iter().map(|(l, c)| json!({"component": l, "values": c})).collect::<Vec<_>>(),
                "scalars": p.scalars.iter().map(|(l, v)| json!({"name": l, "value": v})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let gate = model.gate_block(theta);
    let d = model.n_features();
    let gate = match model.gating() {
        Gating::Softmax => json!({
            "kind": "softmax",
            "reference_expert": model.n_experts() - 1,
            "coefficients": (0..model.n_experts() - 1).map(|k| gate[k * d..(k + 1) * d].to_vec()).collect::<Vec<_>>(),
        }),
        Gating::Constant => {
            let mut pi = vec![0.0; model.n_experts()];
            model.gate_probs(theta, &vec![0.0; d], &mut pi);
            json!({"kind": "constant", "logits": gate, "weights": pi})
        }
    };
    json!({"design_columns": names, "experts": experts, "gate": gate, "theta": theta})
}

/// The parameters as text tables: one for the experts (a column per expert and
/// component), one for the gate.
pub fn params_tables(model: &MixtureOfExperts, theta: &[f64], names: &[String]) -> (Table, Table) {
    let k = model.n_experts();
    let per: Vec<ReadableParams> = (0..k).map(|c| expert_params(model, theta, c)).collect();
    let mut header = vec!["column".to_string()];
    for (c, p) in per.iter().enumerate() {
        let coefs = &p.coefficients;
        if coefs.len() <= 1 {
            // One column per expert (an expert without coefficients still shows its scalars).
            header.push(format!("expert {}", c + 1));
        } else {
            header.extend(coefs.iter().map(|(l, _)| format!("expert {} {l}", c + 1)));
        }
    }
    let mut experts = Table::new(header);
    for (j, name) in names.iter().enumerate() {
        let mut row = vec![name.clone()];
        for p in &per {
            if p.coefficients.is_empty() {
                row.push("-".into());
            }
            row.extend(p.coefficients.iter().map(|(_, c)| num(c[j], 6)));
        }
        experts.row(row);
    }
    // One row per scalar label (e.g. "variance σ²"), its value under each expert's first
    // coefficient column and "-" elsewhere.
    let mut labels: Vec<&str> = Vec::new();
    for p in &per {
        for (l, _) in &p.scalars {
            if !labels.contains(&l.as_str()) {
                labels.push(l);
            }
        }
    }
    for label in labels {
        let mut row = vec![label.to_string()];
        for p in &per {
            let v = p.scalars.iter().find(|(l, _)| l == label).map(|(_, v)| *v);
            let width = p.coefficients.len().max(1);
            row.push(v.map_or("-".into(), |v| num(v, 6)));
            row.extend((1..width).map(|_| "-".to_string()));
        }
        experts.row(row);
    }
    let gate_vals = model.gate_block(theta);
    let d = model.n_features();
    let gate = match model.gating() {
        Gating::Softmax => {
            let mut header = vec!["column".to_string()];
            header.extend((0..k).map(|c| {
                if c + 1 == k {
                    format!("gate {} (reference)", c + 1)
                } else {
                    format!("gate {}", c + 1)
                }
            }));
            let mut t = Table::new(header);
            for (j, name) in names.iter().enumerate() {
                let mut row = vec![name.clone()];
                row.extend((0..k - 1).map(|c| num(gate_vals[c * d + j], 6)));
                row.push("0".into());
                t.row(row);
            }
            t
        }
        Gating::Constant => {
            let mut pi = vec![0.0; k];
            model.gate_probs(theta, &vec![0.0; d], &mut pi);
            let mut t = Table::new(["expert", "mixing weight"]);
            for (c, p) in pi.iter().enumerate() {
                t.row([format!("{}", c + 1), num(*p, 6)]);
            }
            t
        }
    };
    (experts, gate)
}
