//! The fit itself: numpy arrays to a [`Dataset`], the settings to [`MoeParams`], the
//! library's fit with the GIL released, and the parameters back in the data's units.

use crate::fitted::Fit;
use em_as_md::fit::presample::Presample;
use em_as_md::fit::scaling::Scaling;
use em_as_md::fit::UngatedStart;
use em_as_md::model::expert::ExpertSpec;
use em_as_md::model::expert::REG_COVAR;
use em_as_md::model::mixture::{Gating, MixtureOfExperts};
use em_as_md::model::registry;
use em_as_md::{
    Accel, CovarianceType, Dataset, FittedMoe, GateConfig, GaussianCluster, GradientDescent,
    InitMethod, MirrorDescent, MoeError, MoeParams, MoeValidParams, Step,
};
use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// [`Settings::expert`] of a Gaussian mixture (the registry name of [`GaussianCluster`]).
pub const GAUSSIAN: &str = "gaussian";

/// A library error as a Python `ValueError` carrying its message.
pub fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The outer solver of a fit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum SolverChoice {
    /// EM, plain or accelerated ([`MoeParams::accel`]): what `mdem fit --accel` runs.
    Em(Accel),
    /// Mirror descent with a fixed step $\eta$ ([`MirrorDescent`]).
    MdEta(f64),
    /// Gradient descent in $\theta$ with Armijo backtracking ([`GradientDescent`]).
    Gd,
}

impl SolverChoice {
    /// `solver` ∈ {`em`, `squarem`, `anderson`, `md`, `newton`, `gd`} with `eta` (only for `md`: `None` is
    /// mirror descent at $\eta_t = 1/\hat L_t$, [`Accel::Md`]).
    ///
    /// # Errors
    /// `ValueError` for another name, an `eta` with another solver, or an `eta` that is
    /// not finite and $> 0$.
    pub fn parse(solver: &str, eta: Option<f64>) -> PyResult<SolverChoice> {
        if let Some(e) = eta {
            if solver != "md" {
                return Err(PyValueError::new_err(format!(
                    "eta={e} applies to solver='md' only, not solver='{solver}'"
                )));
            }
            if !(e.is_finite() && e > 0.0) {
                return Err(PyValueError::new_err(format!(
                    "invalid value {e} for eta: expected a finite number > 0"
                )));
            }
        }
        match (solver, eta) {
            ("em", _) => Ok(SolverChoice::Em(Accel::None)),
            ("squarem", _) => Ok(SolverChoice::Em(Accel::Squarem)),
            ("anderson", _) => Ok(SolverChoice::Em(Accel::Anderson)),
            ("newton", _) => Ok(SolverChoice::Em(Accel::Newton)),
            ("md", None) => Ok(SolverChoice::Em(Accel::Md)),
            ("md", Some(e)) => Ok(SolverChoice::MdEta(e)),
            ("gd", _) => Ok(SolverChoice::Gd),
            _ => Err(PyValueError::new_err(format!(
                "invalid value '{solver}' for solver: expected 'em', 'squarem', 'anderson', 'md', 'newton' or 'gd'"
            ))),
        }
    }

    /// The acceleration given to [`MoeParams`]: plain EM for the solvers it does not run
    /// (their seeded starts are drawn the same way, and a gated fit's ungated optimum is
    /// fitted by plain EM).
    pub fn accel(self) -> Accel {
        match self {
            SolverChoice::Em(a) => a,
            _ => Accel::None,
        }
    }
}

/// Everything a fit was asked for, kept with the fitted model (and in its pickle) so that
/// the certificate and the harness can redraw the kept restart's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Registry name of the expert.
    pub expert: String,
    /// Number of experts $K$.
    pub n_experts: usize,
    /// Softmax gate (`true`) or constant mixing weights.
    pub gating: bool,
    /// Initialisation strategy ([`InitMethod::name`]).
    pub init: String,
    /// Seeded starts.
    pub n_init: usize,
    /// Relative tolerance on the change of $L$.
    pub tol: f64,
    /// Iteration limit per start.
    pub max_iter: u64,
    /// The outer solver.
    pub solver: SolverChoice,
    /// Master seed.
    pub seed: u64,
    /// Whether the solvers ran on standardised columns.
    pub standardize: bool,
    /// Ridge $\lambda$ on the experts' and the gate's coefficients (0: none; absent in
    /// fits pickled before it existed).
    #[serde(default)]
    pub ridge: f64,
    /// When a gated fit also starts from the ungated optimum ([`UngatedStart::name`];
    /// `when-below` in fits pickled before it existed).
    #[serde(default = "default_ungated_start")]
    pub ungated_start: String,
    /// The sample the starts were fitted on ([`Presample::from_value`]: rows, or a
    /// fraction of them), then EM on all rows ([`MoeValidParams::fit_presampled`]);
    /// `None` (and in fits pickled before it existed): every start on all rows.
    #[serde(default)]
    pub presample: Option<f64>,
}

fn default_ungated_start() -> String {
    UngatedStart::default().name().into()
}

impl Settings {
    /// The library's hyperparameters for `model`, as the fit used them.
    ///
    /// # Errors
    /// `ValueError` for an unknown initialisation or as [`MoeParams::check`].
    pub fn params(&self, model: &MixtureOfExperts) -> PyResult<MoeValidParams> {
        MoeParams::for_model(model)
            .n_init(self.n_init)
            .seed(self.seed)
            .max_iters(self.max_iter)
            .tol(self.tol)
            .init(init_method(&self.init)?)
            .accel(self.solver.accel())
            .ungated_start(ungated_policy(&self.ungated_start)?)
            .check()
            .map_err(value_error)
    }
}

/// [`UngatedStart::from_name`] with the error the CLI gives.
fn ungated_policy(name: &str) -> PyResult<UngatedStart> {
    UngatedStart::from_name(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "invalid value '{name}' for ungated_start: expected 'when-below', 'always' or 'off'"
        ))
    })
}

/// [`InitMethod::from_name`] with the error the CLI gives.
fn init_method(name: &str) -> PyResult<InitMethod> {
    InitMethod::from_name(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "invalid value '{name}' for init: expected auto, random, subset, kmeans or short-em"
        ))
    })
}

/// The C-contiguous data of `x` (`n × d`) with `y` (`n`), as [`Dataset::from_rows`]
/// checks them, with the intercept column prepended ([`Dataset::with_intercept`], as
/// `mdem fit` does by default).
///
/// # Errors
/// `ValueError` for a non-contiguous array, mismatched lengths, no rows, or a NaN or
/// infinite value (naming the row and column).
pub fn design(x: &PyReadonlyArray2<'_, f64>, y: &[f64]) -> PyResult<Dataset> {
    let (xs, n, d) = row_major(x)?;
    if y.len() != n {
        return Err(PyValueError::new_err(format!(
            "X has {n} rows but y has {} values",
            y.len()
        )));
    }
    Ok(Dataset::from_rows(xs, d, y, 1)
        .map_err(value_error)?
        .with_intercept())
}

/// `ridge` checked: finite and $\ge 0$.
///
/// # Errors
/// `ValueError` naming `ridge`.
pub fn check_ridge(ridge: f64) -> PyResult<()> {
    if !(ridge.is_finite() && ridge >= 0.0) {
        return Err(PyValueError::new_err(format!(
            "invalid value {ridge} for ridge: expected a finite number >= 0"
        )));
    }
    Ok(())
}

/// The mixture of `n_experts` experts described by `spec` on `d` design columns, with a
/// softmax gate or constant weights (`gating`) and the ridge $\lambda$ = `ridge` (checked
/// by [`check_ridge`]) as `mdem fit --ridge` sets it: the experts' `ridge` parameter
/// (penalty $\tfrac\lambda2\lVert b\rVert^2$ on each expert's coefficients, see
/// [`em_as_md::Expert::penalty`]) and [`GateConfig::ridge`] for the gate. With
/// $\lambda = 0$ the description is left as it is, so unridged fits and their files are
/// unchanged.
///
/// # Errors
/// `ValueError` for a bad `ridge`, an expert whose builder takes no `ridge`, or a model
/// the library refuses.
pub fn ridged_mixture(
    spec: ExpertSpec,
    n_experts: usize,
    d: usize,
    gating: bool,
    ridge: f64,
) -> PyResult<MixtureOfExperts> {
    check_ridge(ridge)?;
    let spec = if ridge > 0.0 {
        spec.param("ridge", ridge)
    } else {
        spec
    };
    let expert = registry::build_expert(&spec).map_err(value_error)?;
    let gate = if gating {
        Gating::Softmax
    } else {
        Gating::Constant
    };
    let model = MixtureOfExperts::new(expert, n_experts, d, gate).map_err(value_error)?;
    if gating && ridge > 0.0 {
        let cfg = GateConfig {
            ridge,
            ..model.gate_config()
        };
        return model.with_gate_config(cfg).map_err(value_error);
    }
    Ok(model)
}

/// The buffer of `x` (C-contiguous, `n × d`) with `n` and `d`.
///
/// # Errors
/// `ValueError` for an array that is not C-contiguous.
fn row_major<'a>(x: &'a PyReadonlyArray2<'_, f64>) -> PyResult<(&'a [f64], usize, usize)> {
    let shape = x.shape();
    // `as_slice` accepts Fortran order too, whose buffer is not row-major: refuse it.
    let not_c = || {
        PyValueError::new_err(
            "X must be a C-contiguous float64 array (use numpy.ascontiguousarray)",
        )
    };
    if !x.is_c_contiguous() {
        return Err(not_c());
    }
    let xs = x.as_slice().map_err(|_| not_c())?;
    Ok((xs, shape[0], shape[1]))
}

/// The rows of `x` (`n × q`, C-contiguous float64) as the points of a Gaussian mixture,
/// laid out as `mdem fit --expert gaussian` loads a CSV file: the coordinates are the
/// targets, the design is the intercept alone.
///
/// # Errors
/// `ValueError` for a non-contiguous array, no rows or columns, or a NaN or infinite
/// value (naming the row and column).
pub fn points(x: &PyReadonlyArray2<'_, f64>) -> PyResult<Dataset> {
    let (xs, _, q) = row_major(x)?;
    Ok(Dataset::from_rows(&[], 0, xs, q)
        .map_err(value_error)?
        .with_intercept())
}

/// `y` as a contiguous slice.
///
/// # Errors
/// `ValueError` for a non-contiguous array.
pub fn targets<'a>(y: &'a PyReadonlyArray1<'_, f64>) -> PyResult<&'a [f64]> {
    y.as_slice().map_err(|_| {
        PyValueError::new_err(
            "y must be a C-contiguous float64 array (use numpy.ascontiguousarray)",
        )
    })
}

/// The registry names of the experts that can be built from a target column
/// (`linear`, `logistic`, `multinomial`, `poisson`, and any registered later).
#[pyfunction]
pub fn expert_names() -> Vec<String> {
    registry::expert_entries()
        .into_iter()
        .filter(|e| e.has_target_rule())
        .map(|e| e.name().to_string())
        .collect()
}

/// Fits a mixture of `n_experts` experts of kind `expert` to `x` (`n × d`, C-contiguous
/// float64) and `y` (`n`), as `mdem fit` does (see the [crate documentation](crate)); the
/// GIL is released during the fit.
///
/// `solver`: `em`, `squarem` (the CLI's default), `anderson` (Anderson acceleration with
/// the monotone safeguard), `md` (with `eta=None`: step
/// $1/\hat L_t$ measured along the run; with a float: mirror descent at that fixed step),
/// `newton` (Newton's method on $L$ with the observed information, EM as the safeguard)
/// or `gd` (gradient descent with Armijo backtracking). Every solver runs the library's
/// restarts, including a gated fit's ungated fit and the extra start from its optimum as
/// `ungated_start` says (`when-below`: only when no gated start reached it; `always`;
/// `off`: no ungated fit), as `mdem fit --ungated-start`:
/// [`MoeValidParams::fit`] for `em`, `squarem`, `anderson`, `newton` and `md` without `eta`,
/// [`MoeValidParams::fit_with`] for the others.
///
/// # Errors
/// `ValueError` with the library's message for bad settings, bad data (a target outside
/// the expert's support, too few rows for the model) or a fit that fails in every start.
#[pyfunction]
#[pyo3(signature = (x, y, *, expert, n_experts, gating=true, init="auto", n_init=1, tol=1e-8, max_iter=500, solver="squarem", eta=None, seed=0, standardize=true, ridge=0.0, ungated_start="when-below", presample=None))]
#[allow(clippy::too_many_arguments)]
pub fn fit(
    py: Python<'_>,
    x: PyReadonlyArray2<'_, f64>,
    y: PyReadonlyArray1<'_, f64>,
    expert: &str,
    n_experts: usize,
    gating: bool,
    init: &str,
    n_init: usize,
    tol: f64,
    max_iter: u64,
    solver: &str,
    eta: Option<f64>,
    seed: u64,
    standardize: bool,
    ridge: f64,
    ungated_start: &str,
    presample: Option<f64>,
) -> PyResult<Fit> {
    check_tol(tol)?;
    check_ridge(ridge)?;
    init_method(init)?;
    ungated_policy(ungated_start)?;
    let solver = SolverChoice::parse(solver, eta)?;
    check_presample(presample, solver)?;
    let settings = Settings {
        expert: expert.to_string(),
        n_experts,
        gating,
        init: init.to_string(),
        n_init,
        tol,
        max_iter,
        solver,
        seed,
        standardize,
        ridge,
        ungated_start: ungated_start.into(),
        presample,
    };
    let ys = targets(&y)?;
    let xs = &x;
    // Validation and the copy into the column-major design hold the GIL (they read the
    // numpy buffers); the fit does not.
    let data = design(xs, ys)?;
    let (fitted, scaling) = py.detach(|| run_fit(&settings, data))?;
    Ok(Fit::new(fitted, scaling, settings))
}

/// The fit on an owned data set, without Python: the CLI's steps.
///
/// # Errors
/// `ValueError` as [`fit`].
fn run_fit(s: &Settings, data: Dataset) -> PyResult<(FittedMoe, Option<Scaling>)> {
    let entry = registry::expert_entry(&s.expert).map_err(value_error)?;
    let spec = entry
        .spec_from_target(data.y_all())
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "expert '{}' cannot be built from a target column; expected one of {}",
                s.expert,
                expert_names().join(", ")
            ))
        })?
        .map_err(value_error)?;
    if let Some(&v) = data.y_all().first() {
        if data.n() > 1 && data.y_all().iter().all(|&w| w == v) {
            return Err(PyValueError::new_err(format!(
                "the target is constant ({v} in every row): nothing to fit"
            )));
        }
    }
    let (n, d) = (data.n(), data.d());
    let model = ridged_mixture(spec, s.n_experts, d, s.gating, s.ridge)?;
    let p = em_as_md::ConditionalFamily::n_params(&model);
    if s.n_experts > n {
        return Err(PyValueError::new_err(format!(
            "{} experts but only {n} samples; expected at most as many experts as samples",
            s.n_experts
        )));
    }
    if p > n {
        return Err(PyValueError::new_err(format!(
            "{n} samples but the model has {p} parameters ({} {} experts on {d} design columns{}); expected at least as many samples as parameters: use fewer experts or features",
            s.n_experts,
            s.expert,
            if s.gating { ", softmax gate" } else { "" },
        )));
    }
    let (scaling, fit_data) = if s.standardize {
        let scaling = Scaling::fit(&data, true);
        let z = scaling.apply(&data).map_err(value_error)?;
        (Some(scaling), z)
    } else {
        (None, data)
    };
    let valid = s.params(&model)?;
    let fitted = solve(&valid, s, &fit_data)
        .and_then(|f| f.in_data_units(scaling.as_ref()))
        .map_err(value_error)?;
    Ok((fitted, scaling))
}

/// Fits a Gaussian mixture of `n_components` components to the rows of `x` (`n × q`,
/// C-contiguous float64), as `mdem fit --expert gaussian` does without `--target`: the
/// expert [`GaussianCluster`] with covariance `covariance_type` (`full`, `diag` or
/// `spherical`) and floor `reg_covar`, constant mixing weights, the raw coordinates (no
/// standardisation: the floor is in the data's units, as scikit-learn's), the library's
/// seeded restarts and the solver as in [`fit`]. The GIL is released during the fit.
///
/// # Errors
/// `ValueError` for an unknown covariance type, solver or initialisation, a bad
/// `reg_covar` or `tol`, more components than rows, fewer rows than free parameters, or
/// a fit that fails in every start (with the library's message).
#[pyfunction]
#[pyo3(signature = (x, *, n_components, covariance_type="full", reg_covar=REG_COVAR, init="auto", n_init=1, tol=1e-8, max_iter=500, solver="squarem", eta=None, seed=0, presample=None))]
#[allow(clippy::too_many_arguments)]
pub fn fit_gaussian_mixture(
    py: Python<'_>,
    x: PyReadonlyArray2<'_, f64>,
    n_components: usize,
    covariance_type: &str,
    reg_covar: f64,
    init: &str,
    n_init: usize,
    tol: f64,
    max_iter: u64,
    solver: &str,
    eta: Option<f64>,
    seed: u64,
    presample: Option<f64>,
) -> PyResult<Fit> {
    check_tol(tol)?;
    init_method(init)?;
    let solver = SolverChoice::parse(solver, eta)?;
    check_presample(presample, solver)?;
    let cov = CovarianceType::from_name(covariance_type).ok_or_else(|| {
        PyValueError::new_err(format!(
            "invalid value '{covariance_type}' for covariance_type: expected 'full', 'diag' or 'spherical'"
        ))
    })?;
    let settings = Settings {
        expert: GAUSSIAN.to_string(),
        n_experts: n_components,
        gating: false,
        init: init.to_string(),
        n_init,
        tol,
        max_iter,
        solver,
        seed,
        standardize: false,
        ridge: 0.0,
        ungated_start: default_ungated_start(),
        presample,
    };
    let data = points(&x)?;
    let fitted = py.detach(|| run_gaussian_mixture(&settings, cov, reg_covar, &data))?;
    Ok(Fit::new(fitted, None, settings))
}

/// [`fit_gaussian_mixture`] on an owned data set, without Python.
///
/// # Errors
/// `ValueError` as [`fit_gaussian_mixture`].
fn run_gaussian_mixture(
    s: &Settings,
    cov: CovarianceType,
    reg_covar: f64,
    data: &Dataset,
) -> PyResult<FittedMoe> {
    let (n, q, k) = (data.n(), data.q(), s.n_experts);
    let expert = GaussianCluster::new(q, cov, reg_covar).map_err(value_error)?;
    let model = MixtureOfExperts::new(Arc::new(expert), k, data.d(), Gating::Constant)
        .map_err(value_error)?;
    if k > n {
        return Err(PyValueError::new_err(format!(
            "{k} components but only {n} samples; expected at most as many components as samples"
        )));
    }
    let p = em_as_md::ConditionalFamily::n_params(&model);
    if p > n {
        return Err(PyValueError::new_err(format!(
            "{n} samples but the model has {p} parameters ({k} components with {} covariances on {q} features); expected at least as many samples as parameters: use fewer components, a smaller covariance_type or fewer features",
            cov.name()
        )));
    }
    let valid = s.params(&model)?;
    solve(&valid, s, data).map_err(value_error)
}

/// The library's restarts of `valid` on `data` with the solver of `s`, on a sample first
/// when `s.presample` is set (checked by [`check_presample`]).
///
/// # Errors
/// As [`MoeValidParams::fit`], [`MoeValidParams::fit_presampled`] and
/// [`MoeValidParams::fit_with`].
fn solve(valid: &MoeValidParams, s: &Settings, data: &Dataset) -> em_as_md::Result<FittedMoe> {
    match (s.solver, s.presample) {
        (SolverChoice::Em(_), Some(v)) => {
            valid.fit_presampled(data, Presample::from_value(v)?.rows(data.n()))
        }
        (SolverChoice::Em(_), None) => valid.fit(data),
        (_, Some(_)) => Err(presample_solver_error()),
        (SolverChoice::MdEta(eta), None) => valid.fit_with(data, || MirrorDescent::with_eta(eta)),
        (SolverChoice::Gd, None) => valid.fit_with(data, || GradientDescent::new(Step::armijo())),
    }
}

/// `presample` refused for the solvers [`MoeValidParams::fit_with`] runs (their restarts
/// have no sample stage).
fn presample_solver_error() -> MoeError {
    MoeError::InvalidParam {
        name: "presample",
        reason: "needs solver 'em', 'squarem', 'anderson', 'newton' or 'md' without eta".into(),
    }
}

/// `presample` checked before any work: `None`, or rows or a fraction
/// ([`Presample::from_value`]) with a solver that has a sample stage.
///
/// # Errors
/// `ValueError` naming `presample`.
fn check_presample(presample: Option<f64>, solver: SolverChoice) -> PyResult<()> {
    let Some(v) = presample else {
        return Ok(());
    };
    Presample::from_value(v).map_err(value_error)?;
    match solver {
        SolverChoice::Em(_) => Ok(()),
        _ => Err(value_error(presample_solver_error())),
    }
}

/// `tol` checked: finite and $> 0$.
///
/// # Errors
/// `ValueError` naming `tol` otherwise.
fn check_tol(tol: f64) -> PyResult<()> {
    if !(tol.is_finite() && tol > 0.0) {
        return Err(PyValueError::new_err(format!(
            "invalid value {tol} for tol: expected a finite number > 0"
        )));
    }
    Ok(())
}

/// Rebuilds a [`Fit`] from [`Fit::to_json`] (pickling).
///
/// # Errors
/// `ValueError` for malformed JSON or a model the library cannot read back.
#[pyfunction]
pub fn fit_from_json(text: &str) -> PyResult<Fit> {
    Fit::from_json(text)
}
