//! [`Fit`]: a fitted mixture of experts (or Gaussian mixture) as Python sees it.

use crate::run::{design, points, targets, value_error, Settings};
use diagnostics::certificate::{certify, CertifyConfig};
use em_as_md::fit::io;
use em_as_md::fit::scaling::Scaling;
use em_as_md::model::expert::default_readable_params;
use em_as_md::model::mixture::Gating;
use em_as_md::testkit::em_md_gap;
use em_as_md::{
    ConditionalFamily, Dataset, Em, Executor, FittedMoe, ObserverMode, Problem, TrajectoryObserver,
};
use numpy::ndarray::{Array2, Array3};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArray3, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Relative tolerance of the certificate's EM re-run (as `mdem certify`).
pub const RERUN_TOL: f64 = 1e-14;
/// Gradient-norm tolerance of the certificate's EM re-run (as `mdem certify`).
pub const RERUN_GRAD_TOL: f64 = 1e-9;
/// Tag of [`Fit::to_json`]'s envelope.
pub const FORMAT: &str = "mdem-python-fit";
/// Version of [`Fit::to_json`]'s envelope.
pub const VERSION: u32 = 1;

/// A fitted mixture of experts: $\hat\theta$ in the data's units with the library's fit
/// report, the standardisation the solvers ran on, and the settings of the fit.
#[pyclass(module = "mdem._core", name = "Fit", frozen)]
#[derive(Debug, Clone)]
pub struct Fit {
    fitted: FittedMoe,
    scaling: Option<Scaling>,
    settings: Settings,
    /// The start of the kept run on the solvers' design, when it cannot be redrawn from
    /// the settings (a Dask fit starts from a fit on a sample: [`crate::shard`]).
    start: Option<Vec<f64>>,
}

/// [`Fit::to_json`]'s envelope: the library's model file plus what the library's file
/// does not hold.
#[derive(Serialize, Deserialize)]
struct Envelope {
    format: String,
    version: u32,
    settings: Settings,
    scaling: Option<Scaling>,
    model: serde_json::Value,
    /// [`Fit`]'s `start`; absent from the JSON of fits that redraw their start, so their
    /// text is what it was before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<Vec<f64>>,
}

/// `values` (row-major, `n` rows) as an `n × m` numpy array.
fn matrix<'py>(py: Python<'py>, values: Vec<f64>, n: usize) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let m = values.len().checked_div(n).unwrap_or(0);
    Ok(Array2::from_shape_vec((n, m), values)
        .map_err(value_error)?
        .into_pyarray(py))
}

impl Fit {
    /// Assembles a fit (from [`crate::run::fit`]).
    pub fn new(fitted: FittedMoe, scaling: Option<Scaling>, settings: Settings) -> Fit {
        Fit {
            fitted,
            scaling,
            settings,
            start: None,
        }
    }

    /// The fit with an explicit start $\theta_0$ on the solvers' design (standardised
    /// when the fit was), which [`Fit`]'s `certificate` and `em_md_gap` use instead of
    /// redrawing the kept restart's start from the settings.
    pub fn with_start(mut self, start: Vec<f64>) -> Fit {
        self.start = Some(start);
        self
    }

    /// The fit from [`Fit::to_json`]'s text.
    ///
    /// # Errors
    /// `ValueError` for malformed JSON, another format or version, or a model the
    /// library cannot read back ([`io::from_json`]).
    pub fn from_json(text: &str) -> PyResult<Fit> {
        let env: Envelope = serde_json::from_str(text).map_err(value_error)?;
        if env.format != FORMAT || env.version != VERSION {
            return Err(PyValueError::new_err(format!(
                "not an mdem Python fit (format {:?} version {}; expected {FORMAT:?} version {VERSION})",
                env.format, env.version
            )));
        }
        let fitted = io::from_json(&env.model.to_string()).map_err(value_error)?;
        if let Some(t) = &env.start {
            if t.len() != fitted.model().n_params() || t.iter().any(|v| !v.is_finite()) {
                return Err(PyValueError::new_err(format!(
                    "not an mdem Python fit: its start has {} values, expected {} finite ones",
                    t.len(),
                    fitted.model().n_params()
                )));
            }
        }
        let mut fit = Fit::new(fitted, env.scaling, env.settings);
        fit.start = env.start;
        Ok(fit)
    }

    /// Whether this is a Gaussian mixture of the rows ([`crate::run::fit_gaussian_mixture`]):
    /// its data are points, without a target.
    fn clustering(&self) -> bool {
        self.fitted.model().expert().gaussian_clusters().is_some()
    }

    /// Features without targets (zeros: prediction reads only $x$) as a design.
    ///
    /// # Errors
    /// `ValueError` for a Gaussian mixture (it predicts no target) or data of another
    /// width than the fit's.
    fn features(&self, x: &PyReadonlyArray2<'_, f64>) -> PyResult<Dataset> {
        if self.clustering() {
            return Err(PyValueError::new_err(
                "a Gaussian mixture predicts no target: use responsibilities or log_predictive_density",
            ));
        }
        let n = x.shape()[0];
        let data = design(x, &vec![0.0; n])?;
        self.check_width(&data)?;
        Ok(data)
    }

    /// The data set of `x` and `y` as the fit saw them: the design of `x` with the
    /// targets `y`, or for a Gaussian mixture the points `x` (and no `y`).
    ///
    /// # Errors
    /// `ValueError` for a `y` missing (or given to a Gaussian mixture), or data of
    /// another width than the fit's.
    fn data(
        &self,
        x: &PyReadonlyArray2<'_, f64>,
        y: Option<&PyReadonlyArray1<'_, f64>>,
    ) -> PyResult<Dataset> {
        let data = match (self.clustering(), y) {
            (true, None) => points(x)?,
            (false, Some(y)) => design(x, targets(y)?)?,
            (true, Some(_)) => {
                return Err(PyValueError::new_err(
                    "a Gaussian mixture is fitted to the rows of X alone: pass no y",
                ))
            }
            (false, None) => {
                return Err(PyValueError::new_err(
                    "a mixture of experts needs the targets y with X",
                ))
            }
        };
        self.check_width(&data)?;
        Ok(data)
    }

    /// The error scikit-learn gives for data of another width than the fit's: the
    /// features (design columns without the intercept), or a Gaussian mixture's
    /// coordinates.
    fn check_width(&self, data: &Dataset) -> PyResult<()> {
        let model = self.fitted.model();
        let (have, want) = if self.clustering() {
            (data.q(), model.expert().family().obs_dim())
        } else {
            (data.d() - 1, model.n_features() - 1)
        };
        if have != want || data.d() != model.n_features() {
            return Err(PyValueError::new_err(format!(
                "X has {have} features, but the model was fitted on {want}"
            )));
        }
        Ok(())
    }

    /// `x`, `y` as the data the solvers ran on (standardised with the training
    /// scaling when the fit was), with $\hat\theta$ in those units.
    fn fit_problem(
        &self,
        x: &PyReadonlyArray2<'_, f64>,
        y: Option<&PyReadonlyArray1<'_, f64>>,
    ) -> PyResult<(Dataset, Vec<f64>)> {
        let data = self.data(x, y)?;
        match &self.scaling {
            Some(s) => Ok((
                s.apply(&data).map_err(value_error)?,
                s.to_standardized(self.fitted.model(), self.fitted.theta())
                    .map_err(value_error)?,
            )),
            None => Ok((data, self.fitted.theta().to_vec())),
        }
    }

    /// The start $\theta_0$ (standardised units) of the kept restart on `data`: the
    /// explicit start when the fit has one, otherwise the one the fit recorded (or drawn
    /// again as the fit drew it: `MoeValidParams::kept_theta0`).
    fn kept_start(&self, data: &Dataset) -> PyResult<Vec<f64>> {
        if let Some(t) = &self.start {
            return Ok(t.clone());
        }
        let model = self.fitted.model();
        self.settings
            .params(model)?
            .kept_theta0(model, data, self.fitted.report())
            .map_err(value_error)
    }
}

#[pymethods]
impl Fit {
    /// $\hat\theta$ (the library's layout: gate block, then one block per expert), in the
    /// data's units.
    #[getter]
    fn theta<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_slice(py, self.fitted.theta())
    }

    /// Total log-likelihood $\sum_i \log p(y_i \mid x_i; \hat\theta)$ on the training data.
    #[getter]
    fn log_likelihood(&self) -> f64 {
        self.fitted.report().log_likelihood
    }

    /// Outer iterations of the kept start.
    #[getter]
    fn iterations(&self) -> u64 {
        self.fitted.report().iterations
    }

    /// Why the kept start stopped, in words.
    #[getter]
    fn termination(&self) -> String {
        self.fitted.report().termination.to_string()
    }

    /// Whether the kept start converged (an inexact M-step, a limit or separation is not
    /// convergence).
    #[getter]
    fn converged(&self) -> bool {
        self.fitted.report().converged()
    }

    /// The solver's name.
    #[getter]
    fn solver(&self) -> String {
        self.fitted.report().solver.clone()
    }

    /// Wall-clock seconds of the whole fit (every start).
    #[getter]
    fn seconds(&self) -> f64 {
        self.fitted.report().seconds
    }

    /// Index of the kept start.
    #[getter]
    fn best_restart(&self) -> usize {
        self.fitted.report().best_restart
    }

    /// Number of experts $K$.
    #[getter]
    fn n_experts(&self) -> usize {
        self.fitted.model().n_experts()
    }

    /// Number of free parameters (the length of $\theta$).
    #[getter]
    fn n_params(&self) -> usize {
        self.fitted.n_free_params()
    }

    /// AIC, BIC and ICL on the training data.
    #[getter]
    fn criteria(&self) -> (f64, f64, f64) {
        (self.fitted.aic(), self.fitted.bic(), self.fitted.icl())
    }

    /// Total log-likelihood after each iteration of the kept start,
    /// $-n L(\theta_t)$ for $t = 1, \dots, T$.
    #[getter]
    fn trajectory<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        let rep = self.fitted.report();
        let n = rep.n_rows as f64;
        let v: Vec<f64> = rep.trace.iter().map(|r| -n * r.objective).collect();
        v.into_pyarray(py)
    }

    /// The fit as JSON: the settings, the per-start summary and the parameters per expert
    /// (labelled by the expert, in the data's units) and for the gate.
    fn summary_json(&self) -> PyResult<String> {
        let model = self.fitted.model();
        let theta = self.fitted.theta();
        let d = model.n_features();
        let e = model.expert();
        let experts: Vec<serde_json::Value> = (0..model.n_experts())
            .map(|k| {
                let block = model.expert_block(theta, k);
                let p = e
                    .readable_params(block, d)
                    .or_else(|_| default_readable_params(e.as_ref(), block, d))
                    .unwrap_or_default();
                json!({
                    "expert": k,
                    "coefficients": p.coefficients.iter().map(|(l, c)| json!({"component": l, "values": c})).collect::<Vec<_>>(),
                    "scalars": p.scalars.iter().map(|(l, v)| json!({"name": l, "value": v})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let gate = model.gate_block(theta);
        let gate = match model.gating() {
            Gating::Softmax => json!({
                "kind": "softmax",
                "reference_expert": model.n_experts() - 1,
                "coefficients": gate.chunks(d).map(<[f64]>::to_vec).collect::<Vec<_>>(),
            }),
            Gating::Constant => {
                let mut pi = vec![0.0; model.n_experts()];
                model.gate_probs(theta, &vec![0.0; d], &mut pi);
                json!({"kind": "constant", "weights": pi})
            }
        };
        let rep = self.fitted.report();
        let out = json!({
            "settings": self.settings,
            "expert": model.expert().spec(),
            "design_columns": self.fitted.feature_names(),
            "log_likelihood": rep.log_likelihood,
            "iterations": rep.iterations,
            "termination": rep.termination.to_string(),
            "converged": rep.converged(),
            "solver": rep.solver,
            "best_start": rep.best_restart,
            "start_inits": rep.restarts.iter().map(|r| &r.init).collect::<Vec<_>>(),
            "start_log_likelihoods": rep.restarts.iter().map(|r| r.log_likelihood).collect::<Vec<_>>(),
            "start_iterations": rep.restarts.iter().map(|r| r.iterations).collect::<Vec<_>>(),
            "start_em_seconds": rep.restarts.iter().map(|r| r.seconds).collect::<Vec<_>>(),
            "start_errors": rep.restarts.iter().map(|r| &r.error).collect::<Vec<_>>(),
            "ungated_fit": rep.ungated,
            "aic": self.fitted.aic(),
            "bic": self.fitted.bic(),
            "experts": experts,
            "gate": gate,
        });
        Ok(out.to_string())
    }

    /// Predictive mean $\sum_k \pi_k(x_i)\,\mathbb E[y \mid x_i, z = k]$, `n × m` (m = 1
    /// for linear, logistic and Poisson experts, C for multinomial ones).
    fn predict_mean<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let data = self.features(&x)?;
        let out = py
            .detach(|| self.fitted.predict_mean(&data))
            .map_err(value_error)?;
        matrix(py, out, data.n())
    }

    /// Class probabilities $P(y_i = c \mid x_i)$, `n × C` (classifying experts only).
    fn class_probs<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let data = self.features(&x)?;
        let out = py
            .detach(|| self.fitted.class_probs(&data))
            .map_err(value_error)?;
        matrix(py, out, data.n())
    }

    /// Posterior responsibilities $r_{ik} = P(z_i = k \mid x_i, y_i)$, `n × K` (for a
    /// Gaussian mixture, $P(z_i = k \mid x_i)$ of the points `x`, without `y`).
    #[pyo3(signature = (x, y=None))]
    fn responsibilities<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f64>,
        y: Option<PyReadonlyArray1<'py, f64>>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let data = self.data(&x, y.as_ref())?;
        let out = py
            .detach(|| self.fitted.responsibilities(&data))
            .map_err(value_error)?;
        matrix(py, out, data.n())
    }

    /// $\log p(y_i \mid x_i; \hat\theta)$ per row (for a Gaussian mixture, the log
    /// density $\log \sum_k \pi_k N(x_i; m_k, \Sigma_k)$ of the points `x`, without `y`).
    #[pyo3(signature = (x, y=None))]
    fn log_predictive_density<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f64>,
        y: Option<PyReadonlyArray1<'py, f64>>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let data = self.data(&x, y.as_ref())?;
        let out = py
            .detach(|| self.fitted.log_predictive_density(&data))
            .map_err(value_error)?;
        Ok(out.into_pyarray(py))
    }

    /// The convergence certificate of EM on (`x`, `y`), as `mdem certify` computes it:
    /// EM re-run from the kept start (drawn as the fit drew it; for a Dask fit, the
    /// start its EM over the partitions ran from) to relative tolerance
    /// 1e-14 and gradient norm 1e-9 (at most `max_iter` iterations), on the standardised
    /// design when the fit used one, then [`certify`] on its iterates and
    /// [`diagnostics::certificate::Certificate::account_for`] its termination. Returns
    /// the certificate as JSON with a `rerun` object (iterations, termination,
    /// log-likelihood $\ell$ and the ridge penalty $R$ at its end — the re-run maximises
    /// $\ell - R$ — and the relative distance to $\hat\theta$).
    ///
    /// # Errors
    /// `ValueError` when the re-run or the certificate cannot be computed.
    #[pyo3(signature = (x, y=None, max_iter=2000))]
    fn certificate(
        &self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f64>,
        y: Option<PyReadonlyArray1<'_, f64>>,
        max_iter: u64,
    ) -> PyResult<String> {
        let (data, saved) = self.fit_problem(&x, y.as_ref())?;
        py.detach(|| {
            let model = self.fitted.model();
            let theta0 = self.kept_start(&data)?;
            let problem = Problem::new(model, &data).map_err(value_error)?;
            let traj = TrajectoryObserver::new();
            let result = Executor::new(problem, Em::new())
                .theta0(theta0)
                .max_iters(max_iter)
                .tol(RERUN_TOL)
                .grad_tol(RERUN_GRAD_TOL)
                .add_observer(Box::new(traj.clone()), ObserverMode::Always)
                .run()
                .map_err(value_error)?;
            let (iterates, objectives) = traj.take();
            let mut cert = certify(&problem, &iterates, &objectives, &CertifyConfig::default())
                .map_err(value_error)?;
            cert.account_for(&result.termination);
            let end = &result.state.theta;
            let num: f64 = end.iter().zip(&saved).map(|(a, b)| (a - b) * (a - b)).sum();
            let den: f64 = saved.iter().map(|b| b * b).sum();
            let mut out: serde_json::Value =
                serde_json::from_str(&cert.to_json().map_err(value_error)?).map_err(value_error)?;
            // The objective is L = (−ℓ + R)/n: with a ridge, ℓ adds the penalty back.
            let penalised = -(data.n() as f64) * result.state.objective;
            let penalty = em_as_md::ConditionalFamily::penalty(model, end);
            out["rerun"] = json!({
                "iterations": result.state.iter,
                "termination": result.termination.to_string(),
                "converged": result.termination.is_converged(),
                "log_likelihood": penalised + penalty,
                "penalty": penalty,
                "relative_distance_to_fit": (num / den.max(f64::MIN_POSITIVE)).sqrt(),
            });
            out["summary"] = json!(cert.to_string());
            Ok(out.to_string())
        })
    }

    /// One EM step and one mirror-descent step with step `eta` from the same start on
    /// (`x`, `y`) ([`em_md_gap`]): `theta` (data units, default: the kept start of the
    /// fit) mapped to the standardised design when the fit used one. Returns JSON with
    /// the gaps in $\theta$ and $L$, EM's step length and both inner statuses.
    ///
    /// # Errors
    /// `ValueError` for a bad `eta` or `theta`, or a step that fails.
    #[pyo3(signature = (x, y=None, eta=1.0, theta=None))]
    fn em_md_gap(
        &self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f64>,
        y: Option<PyReadonlyArray1<'_, f64>>,
        eta: f64,
        theta: Option<PyReadonlyArray1<'_, f64>>,
    ) -> PyResult<String> {
        let (data, _) = self.fit_problem(&x, y.as_ref())?;
        let model = self.fitted.model();
        let given = match &theta {
            Some(t) => Some(
                t.as_slice()
                    .map_err(|_| PyValueError::new_err("theta must be C-contiguous"))?
                    .to_vec(),
            ),
            None => None,
        };
        py.detach(|| {
            let theta0 = match given {
                Some(t) => match &self.scaling {
                    Some(s) => s.to_standardized(model, &t).map_err(value_error)?,
                    None => t,
                },
                None => self.kept_start(&data)?,
            };
            let gap = em_md_gap(model, &data, &theta0, eta).map_err(value_error)?;
            let inner = |s: &em_as_md::InnerStats| {
                json!({"converged": s.converged, "residual": s.residual, "iterations": s.iterations})
            };
            Ok(json!({
                "eta": gap.eta,
                "objective_start": gap.objective_start,
                "objective_em": gap.objective_em,
                "objective_md": gap.objective_md,
                "theta_gap": gap.theta_gap,
                "objective_gap": gap.objective_gap,
                "em_step": gap.em_step,
                "em_inner": inner(&gap.em_inner),
                "md_inner": inner(&gap.md_inner),
                "agrees_1e-6": gap.agrees(1e-6),
                "summary": gap.to_string(),
            })
            .to_string())
        })
    }

    /// A Gaussian mixture's components in the data's units: the mixing weights $\pi_k$
    /// (`K`), the means $m_k$ (`K × q`) and the covariances $\Sigma_k$ (`K × q × q`, full
    /// matrices whatever the covariance type: a diagonal or spherical model's are
    /// diagonal), read from $\hat\theta$ ([`em_as_md::GaussianClusters::mean_cov`]).
    ///
    /// # Errors
    /// `ValueError` for a fit that is not a Gaussian mixture, or a component outside the
    /// domain (not produced by a fit).
    #[allow(clippy::type_complexity)]
    fn components<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(
        Bound<'py, PyArray1<f64>>,
        Bound<'py, PyArray2<f64>>,
        Bound<'py, PyArray3<f64>>,
    )> {
        let model = self.fitted.model();
        let theta = self.fitted.theta();
        let g = model.expert().gaussian_clusters().ok_or_else(|| {
            PyValueError::new_err("not a Gaussian mixture: its experts have no mean and covariance")
        })?;
        let (k, q) = (model.n_experts(), g.obs_dim());
        let mut weights = vec![0.0; k];
        model.gate_probs(theta, &vec![1.0; model.n_features()], &mut weights);
        let mut means = Array2::zeros((k, q));
        let mut covs = Array3::zeros((k, q, q));
        for c in 0..k {
            let (m, s) = g
                .mean_cov(model.expert_block(theta, c))
                .map_err(value_error)?;
            for i in 0..q {
                means[(c, i)] = m[i];
                for j in 0..q {
                    covs[(c, i, j)] = s[(i, j)];
                }
            }
        }
        Ok((
            weights.into_pyarray(py),
            means.into_pyarray(py),
            covs.into_pyarray(py),
        ))
    }

    /// The fit as JSON (the library's model file with this fit's settings and
    /// standardisation); [`crate::run::fit_from_json`] reads it back.
    ///
    /// # Errors
    /// `ValueError` when the model cannot be serialised.
    fn to_json(&self) -> PyResult<String> {
        let model: serde_json::Value =
            serde_json::from_str(&io::to_json(&self.fitted).map_err(value_error)?)
                .map_err(value_error)?;
        let env = Envelope {
            format: FORMAT.into(),
            version: VERSION,
            settings: self.settings.clone(),
            scaling: self.scaling.clone(),
            model,
            start: self.start.clone(),
        };
        serde_json::to_string(&env).map_err(value_error)
    }

    /// Pickling: `mdem._core.fit_from_json(self.to_json())`.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (String,))> {
        let f = py.import("mdem._core")?.getattr("fit_from_json")?;
        Ok((f, (self.to_json()?,)))
    }

    /// A one-line description.
    fn __repr__(&self) -> String {
        let rep = self.fitted.report();
        format!(
            "Fit({} {} {}, log-likelihood {:.6}, {} iterations, {})",
            self.fitted.model().n_experts(),
            self.settings.expert,
            if self.clustering() {
                "components"
            } else {
                "experts"
            },
            rep.log_likelihood,
            rep.iterations,
            rep.termination
        )
    }
}
