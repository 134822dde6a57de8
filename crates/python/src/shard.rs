//! [`ShardModel`]: EM over rows that live in partitions elsewhere (Dask), on the
//! library's shard statistics ([`em_as_md::shard`]).
//!
//! A fit over partitions needs three things of the native side, and this module gives
//! each as bytes so that any scheduler can carry them:
//!
//! * **a round on one partition** ([`ShardModel::accumulate`]): the partition's rows as
//!   the estimators build them (an intercept column prepended, the columns standardised
//!   with one scaling for every partition, given at construction) and the round's
//!   [`ShardStats`] as versioned CBOR bytes;
//! * **the merge** ([`ShardModel::merge`]): statistics added in the order given, so a
//!   fixed order (partition order, or a fixed tree over it) gives the same bits on every
//!   run;
//! * **the driver** ([`ShardModel::fit`]): EM or SQUAREM through the library's
//!   [`Executor`] on an [`EmMap`] whose E-step and M-step ask a Python callable for every
//!   round (`run_round(round_bytes) -> merged_stats_bytes`: the Dask layer maps the round
//!   over the partitions and merges). The solvers, stopping rule and M-step solves are the
//!   in-memory fit's; only where the sums are formed differs.
//!
//! The result is a [`Fit`], so predictions, the certificate and pickling work as for an
//! in-memory fit. The Python half is `mdem/dask.py`.

use crate::fitted::Fit;
use crate::run::{design, ridged_mixture, targets, value_error, Settings, SolverChoice};
use em_as_md::fit::scaling::Scaling;
use em_as_md::fit::stream::SAMPLE_START;
use em_as_md::fit::UngatedStart;
use em_as_md::model::expert::ExpertSpec;
use em_as_md::model::mixture::MixtureOfExperts;
use em_as_md::shard::{Round, ShardStats};
use em_as_md::solve::em_map::EmMap;
use em_as_md::solve::executor::Objective;
use em_as_md::{
    Accel, Anderson, ConditionalFamily, Dataset, Em, Executor, FitReport, FitResult, FittedMoe,
    InnerStats, MoeError, Squarem,
};
use numpy::{PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::Mutex;
use std::time::Instant;

/// The experts a [`ShardModel`] can be built for: the estimators' experts.
const EXPERTS: [&str; 4] = ["linear", "logistic", "multinomial", "poisson"];

/// A mixture of experts prepared for fits over partitions: the model the estimators
/// would build for `n_features` columns (plus the intercept), the standardisation every
/// partition is put on, and the three operations of the [module documentation](self).
#[pyclass(module = "mdem._core", name = "ShardModel", frozen)]
#[derive(Debug, Clone)]
pub struct ShardModel {
    model: MixtureOfExperts,
    scaling: Option<Scaling>,
    expert: String,
    n_features: usize,
    gating: bool,
    classes: Option<usize>,
    /// The moments the scaling was built from, kept for pickling.
    moments: Option<(Vec<f64>, Vec<f64>)>,
    /// Ridge $\lambda$ of the experts and the gate (0: none).
    ridge: f64,
}

/// `theta` as a slice of `want` values.
fn theta_slice<'a>(theta: &'a PyReadonlyArray1<'_, f64>, want: usize) -> PyResult<&'a [f64]> {
    let t = theta
        .as_slice()
        .map_err(|_| PyValueError::new_err("theta must be a C-contiguous float64 array"))?;
    if t.len() != want {
        return Err(PyValueError::new_err(format!(
            "theta has {} values, the model has {want} parameters",
            t.len()
        )));
    }
    Ok(t)
}

impl ShardModel {
    /// The model of `expert` (with `classes` for a multinomial one) and ridge `ridge`.
    fn build_model(
        expert: &str,
        n_experts: usize,
        n_features: usize,
        gating: bool,
        classes: Option<usize>,
        ridge: f64,
    ) -> PyResult<MixtureOfExperts> {
        if !EXPERTS.contains(&expert) {
            return Err(PyValueError::new_err(format!(
                "invalid value '{expert}' for expert: expected one of {}",
                EXPERTS.join(", ")
            )));
        }
        // The spec the expert's target rule would give for targets with these classes
        // (the other experts take no parameter).
        let spec = match (expert, classes) {
            ("multinomial", Some(c)) if c >= 2 => {
                ExpertSpec::new("multinomial").param("classes", c as f64)
            }
            ("multinomial", _) => {
                return Err(PyValueError::new_err(
                    "a multinomial expert needs classes >= 2",
                ))
            }
            (_, None) => ExpertSpec::new(expert),
            (_, Some(_)) => {
                return Err(PyValueError::new_err(format!(
                    "classes applies to expert='multinomial' only, not '{expert}'"
                )))
            }
        };
        ridged_mixture(spec, n_experts, n_features + 1, gating, ridge)
    }

    /// One partition as the fit's design: the intercept prepended and the scaling
    /// applied (the copy holds the GIL: it reads the numpy buffers).
    fn partition(
        &self,
        x: &PyReadonlyArray2<'_, f64>,
        y: &PyReadonlyArray1<'_, f64>,
    ) -> PyResult<Dataset> {
        let mut data = design(x, targets(y)?)?;
        if data.d() != self.model.n_features() {
            return Err(PyValueError::new_err(format!(
                "X has {} features, but the model has {}",
                data.d() - 1,
                self.n_features
            )));
        }
        if let Some(s) = &self.scaling {
            s.apply_in_place(&mut data).map_err(value_error)?;
        }
        Ok(data)
    }

    /// A round's parameters checked against the model before any row is read, so that
    /// a round of another model is refused with what differs, whatever the partition.
    fn check_round(&self, round: &Round) -> PyResult<()> {
        let theta = match round {
            Round::E { theta } | Round::Gate { theta, .. } | Round::Expert { theta, .. } => theta,
        };
        let p = self.model.n_params();
        if theta.len() != p {
            return Err(PyValueError::new_err(format!(
                "the round is for a model of {} parameters, this model has {p} ({} {} experts on {} features): a round of another model",
                theta.len(),
                self.model.n_experts(),
                self.expert,
                self.n_features
            )));
        }
        Ok(())
    }

    /// θ in the data's units on the solvers' design.
    fn to_design_units(&self, theta: &[f64]) -> PyResult<Vec<f64>> {
        match &self.scaling {
            Some(s) => s.to_standardized(&self.model, theta).map_err(value_error),
            None => Ok(theta.to_vec()),
        }
    }

    /// The design columns' names, as [`design`] names them.
    fn feature_names(&self) -> PyResult<Vec<String>> {
        let d = self.n_features;
        Ok(Dataset::from_rows(&vec![0.0; d], d, &[0.0], 1)
            .map_err(value_error)?
            .with_intercept()
            .feature_names()
            .to_vec())
    }
}

#[pymethods]
impl ShardModel {
    /// The model of `n_experts` experts of kind `expert` (`linear`, `logistic`,
    /// `multinomial` with `classes`, `poisson`) on `n_features` columns plus the
    /// intercept the estimators prepend, with a softmax gate or constant weights
    /// (`gating`). With `mean` and `var` (the population mean and variance of each of the
    /// `n_features` columns over every row) every partition is standardised as the
    /// estimators standardise their data ([`Scaling::from_moments`]); without them the
    /// columns are used as they are. `ridge` is $\lambda$ of the penalty on the experts'
    /// and the gate's coefficients, as in the in-memory fit ([`ridged_mixture`]).
    ///
    /// # Errors
    /// `ValueError` for an unknown expert, `classes` with another expert or without
    /// a multinomial one, moments of the wrong length or not finite, a negative or
    /// non-finite `ridge`, or a model the library refuses (no experts).
    #[new]
    #[pyo3(signature = (expert, n_experts, n_features, gating=true, classes=None, mean=None, var=None, ridge=0.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        expert: &str,
        n_experts: usize,
        n_features: usize,
        gating: bool,
        classes: Option<usize>,
        mean: Option<Vec<f64>>,
        var: Option<Vec<f64>>,
        ridge: f64,
    ) -> PyResult<ShardModel> {
        let model = Self::build_model(expert, n_experts, n_features, gating, classes, ridge)?;
        let moments = match (mean, var) {
            (Some(m), Some(v)) => {
                if m.len() != n_features || v.len() != n_features {
                    return Err(PyValueError::new_err(format!(
                        "mean and var need {n_features} values each, found {} and {}",
                        m.len(),
                        v.len()
                    )));
                }
                if m.iter().chain(&v).any(|x| !x.is_finite()) || v.iter().any(|&x| x < 0.0) {
                    return Err(PyValueError::new_err(
                        "mean and var must be finite, var >= 0",
                    ));
                }
                Some((m, v))
            }
            (None, None) => None,
            _ => {
                return Err(PyValueError::new_err(
                    "give both mean and var (standardised partitions), or neither",
                ))
            }
        };
        let scaling = moments.as_ref().map(|(m, v)| {
            // The intercept column: mean 1, variance 0 (left as it is by the rule).
            let mean: Vec<f64> = std::iter::once(1.0).chain(m.iter().copied()).collect();
            let var: Vec<f64> = std::iter::once(0.0).chain(v.iter().copied()).collect();
            Scaling::from_moments(&mean, &var, true)
        });
        Ok(ShardModel {
            model,
            scaling,
            expert: expert.to_string(),
            n_features,
            gating,
            classes,
            moments,
            ridge,
        })
    }

    /// Number of parameters (the length of θ).
    #[getter]
    fn n_params(&self) -> usize {
        self.model.n_params()
    }

    /// Number of feature columns of a partition's `X` (without the intercept).
    #[getter]
    fn n_features(&self) -> usize {
        self.n_features
    }

    /// Whether partitions are standardised.
    #[getter]
    fn standardized(&self) -> bool {
        self.scaling.is_some()
    }

    /// The bytes of the E-step round at `theta` (the layout of `Fit.theta`, in the
    /// data's units; mapped to the standardised design when the model has one).
    ///
    /// # Errors
    /// `ValueError` for a θ of the wrong length.
    fn e_round<'py>(
        &self,
        py: Python<'py>,
        theta: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let t = theta_slice(&theta, self.model.n_params())?;
        let round = Round::E {
            theta: self.to_design_units(t)?,
        };
        Ok(PyBytes::new(py, &round.to_bytes().map_err(value_error)?))
    }

    /// The statistics of the round `round` (bytes of a round) over one partition: `x`
    /// (`n × n_features`, C-contiguous float64, without the intercept, as the estimators
    /// take it) and `y` (`n`, float64; classes encoded 0..C−1), as bytes. The GIL is
    /// released while the sums are formed.
    ///
    /// # Errors
    /// `ValueError` with the library's message: bytes that are not a round of this
    /// format and version, a round of another model (θ of the wrong length, an expert
    /// out of range), a partition of the wrong width, no rows, a NaN or a target
    /// outside the expert's support (naming the row within the partition).
    fn accumulate<'py>(
        &self,
        py: Python<'py>,
        round: &[u8],
        x: PyReadonlyArray2<'py, f64>,
        y: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let round = Round::from_bytes(round).map_err(value_error)?;
        self.check_round(&round)?;
        let data = self.partition(&x, &y)?;
        let bytes = py
            .detach(|| {
                self.model
                    .accumulate(&round, &data)
                    .and_then(|s| s.to_bytes())
            })
            .map_err(value_error)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The statistics in `parts` (bytes from [`accumulate`](Self::accumulate) or from
    /// earlier merges) added in the order given, as bytes.
    ///
    /// # Errors
    /// `ValueError` for an empty list, bytes that are not statistics of this format and
    /// version, or statistics of different rounds or shapes.
    fn merge<'py>(
        &self,
        py: Python<'py>,
        parts: Vec<Bound<'py, PyBytes>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let slices: Vec<&[u8]> = parts.iter().map(|b| b.as_bytes()).collect();
        let bytes = py
            .detach(|| -> em_as_md::Result<Vec<u8>> {
                let mut total: Option<ShardStats> = None;
                for s in &slices {
                    let s = ShardStats::from_bytes(s)?;
                    match total.as_mut() {
                        Some(t) => t.merge(&s)?,
                        None => total = Some(s),
                    }
                }
                total
                    .ok_or_else(|| MoeError::InvalidParam {
                        name: "parts",
                        reason: "no statistics to merge".into(),
                    })?
                    .to_bytes()
            })
            .map_err(value_error)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The number of rows summed in statistics (bytes).
    ///
    /// # Errors
    /// `ValueError` for bytes that are not statistics of this format and version.
    #[staticmethod]
    fn rows(stats: &[u8]) -> PyResult<u64> {
        Ok(ShardStats::from_bytes(stats).map_err(value_error)?.rows)
    }

    /// $L(\theta) = -\frac1n\sum_i\log p(y_i\mid x_i;\theta)$ of merged E-step
    /// statistics (bytes).
    ///
    /// # Errors
    /// `ValueError` for bytes that are not E-step statistics, or a non-finite $L$.
    #[staticmethod]
    fn objective(stats: &[u8]) -> PyResult<f64> {
        ShardStats::from_bytes(stats)
            .and_then(|s| s.objective())
            .map_err(value_error)
    }

    /// Rows, $\sum_i\log p(y_i\mid x_i;\theta)$ and the classification entropy
    /// $\sum_i H(r_i)$ over one partition at the θ of the E-step round `round` (what a
    /// fit reports once it has converged; both are sums over rows).
    ///
    /// # Errors
    /// As [`accumulate`](Self::accumulate); `ValueError` for a round other than an
    /// E-step round.
    fn summaries(
        &self,
        py: Python<'_>,
        round: &[u8],
        x: PyReadonlyArray2<'_, f64>,
        y: PyReadonlyArray1<'_, f64>,
    ) -> PyResult<(u64, f64, f64)> {
        let round = Round::from_bytes(round).map_err(value_error)?;
        self.check_round(&round)?;
        let Round::E { theta } = round else {
            return Err(PyValueError::new_err(
                "summaries take an E-step round (ShardModel.e_round)",
            ));
        };
        let data = self.partition(&x, &y)?;
        let (ll, entropy) = py
            .detach(|| em_as_md::fit::predict::training_summaries(&self.model, &data, &theta))
            .map_err(value_error)?;
        Ok((data.n() as u64, ll, entropy))
    }

    /// EM (`solver="em"`), SQUAREM (`"squarem"`) or Anderson-accelerated EM
    /// (`"anderson"`) from `theta0` (the data's units, the
    /// layout of `Fit.theta`: a fit on a sample) through the library's executor with
    /// tolerance `tol` and at most `max_iter` iterations, every round of every E-step
    /// and M-step made by `run_round(round_bytes) -> stats_bytes` (the round's
    /// statistics merged over every row). The GIL is released between rounds. Then
    /// `summarise(e_round_bytes) -> (rows, log_likelihood, entropy)` at the best θ, and
    /// the result as a [`Fit`] with these settings (`init`, `n_init`, `seed` are those
    /// of the start's fit, kept for the record) and the start kept for its certificate;
    /// `start_name` says in the report where the start came from.
    ///
    /// # Errors
    /// The exception `run_round` or `summarise` raised, as raised; `TypeError` when
    /// they return something else than bytes or a triple; `ValueError` for another
    /// solver, a bad `theta0` or `tol`, rounds over different numbers of rows (the
    /// partitions changed during the fit), and the library's errors (a singular
    /// M-step, an empty expert).
    #[pyo3(signature = (run_round, summarise, theta0, *, solver="squarem", tol=1e-8, max_iter=500, init="auto", n_init=1, seed=0, start_seconds=0.0, start_name=SAMPLE_START))]
    #[allow(clippy::too_many_arguments)]
    fn fit(
        &self,
        py: Python<'_>,
        run_round: Py<PyAny>,
        summarise: Py<PyAny>,
        theta0: PyReadonlyArray1<'_, f64>,
        solver: &str,
        tol: f64,
        max_iter: u64,
        init: &str,
        n_init: usize,
        seed: u64,
        start_seconds: f64,
        start_name: &str,
    ) -> PyResult<Fit> {
        let clock = Instant::now();
        let choice = SolverChoice::parse(solver, None)?;
        let accel = match choice {
            SolverChoice::Em(a @ (Accel::None | Accel::Squarem | Accel::Anderson)) => a,
            _ => {
                return Err(PyValueError::new_err(format!(
                "solver='{solver}' needs the rows in memory; use 'em', 'squarem' or 'anderson' over partitions"
            )))
            }
        };
        if !(tol.is_finite() && tol > 0.0) {
            return Err(PyValueError::new_err(format!(
                "invalid value {tol} for tol: expected a finite number > 0"
            )));
        }
        let settings = Settings {
            expert: self.expert.clone(),
            n_experts: self.model.n_experts(),
            gating: self.gating,
            init: init.to_string(),
            n_init,
            tol,
            max_iter,
            solver: choice,
            seed,
            standardize: self.scaling.is_some(),
            ridge: self.ridge,
            // One start over the partitions: no ungated fit.
            ungated_start: UngatedStart::Off.name().into(),
            presample: None,
        };
        // The settings' checks (an unknown init, n_init = 0), as an in-memory fit's.
        settings.params(&self.model)?;
        let t0 = theta_slice(&theta0, self.model.n_params())?;
        if t0.iter().any(|v| !v.is_finite()) {
            return Err(PyValueError::new_err("theta0 must be finite"));
        }
        let start = self.to_design_units(t0)?;
        let failure = Mutex::new(None);
        let problem = Rounds {
            model: &self.model,
            run_round: &run_round,
            failure: &failure,
            rows: Mutex::new(None),
        };
        let run = py.detach(|| -> em_as_md::Result<FitResult> {
            match accel {
                Accel::Squarem => Executor::new(problem, Squarem::new())
                    .theta0(start.clone())
                    .max_iters(max_iter)
                    .tol(tol)
                    .run(),
                Accel::Anderson => Executor::new(problem, Anderson::new())
                    .theta0(start.clone())
                    .max_iters(max_iter)
                    .tol(tol)
                    .run(),
                _ => Executor::new(problem, Em::new())
                    .theta0(start.clone())
                    .max_iters(max_iter)
                    .tol(tol)
                    .run(),
            }
        });
        // A Python exception from a round is re-raised as it was (a worker's ValueError,
        // a KeyboardInterrupt), not as the library's wrapper of it.
        let taken = failure.lock().map_or(None, |mut f| f.take());
        if let Some(e) = taken {
            return Err(e);
        }
        let result = run.map_err(value_error)?;
        let theta = result.best.theta.clone();
        let round = Round::E {
            theta: theta.clone(),
        }
        .to_bytes()
        .map_err(value_error)?;
        let (rows, log_likelihood, entropy): (u64, f64, f64) = summarise
            .call1(py, (PyBytes::new(py, &round),))?
            .extract(py)
            .map_err(|e| {
                PyTypeError::new_err(format!(
                    "summarise must return (rows, log_likelihood, entropy): {e}"
                ))
            })?;
        if !log_likelihood.is_finite() {
            return Err(PyValueError::new_err(
                "the log-likelihood over the partitions is not finite",
            ));
        }
        let n = rows as usize;
        let solver = match accel {
            Accel::None => "EM over Dask partitions".into(),
            a => format!("EM accelerated by {a} over Dask partitions"),
        };
        let seconds = clock.elapsed().as_secs_f64() + start_seconds;
        let report = FitReport::single_run(
            solver,
            start_name,
            &result,
            n,
            log_likelihood,
            entropy,
            start_seconds,
            seconds,
        );
        let fitted = FittedMoe::new(self.model.clone(), theta, self.feature_names()?, report)
            .and_then(|f| f.in_data_units(self.scaling.as_ref()))
            .map_err(value_error)?;
        Ok(Fit::new(fitted, self.scaling.clone(), settings).with_start(start))
    }

    /// Pickling: the constructor's arguments (a worker process rebuilds the model).
    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(
        Bound<'py, PyAny>,
        (
            String,
            usize,
            usize,
            bool,
            Option<usize>,
            Option<Vec<f64>>,
            Option<Vec<f64>>,
            f64,
        ),
    )> {
        let s = slf.get();
        let (mean, var) = match &s.moments {
            Some((m, v)) => (Some(m.clone()), Some(v.clone())),
            None => (None, None),
        };
        Ok((
            slf.get_type().into_any(),
            (
                s.expert.clone(),
                s.model.n_experts(),
                s.n_features,
                s.gating,
                s.classes,
                mean,
                var,
                s.ridge,
            ),
        ))
    }

    /// A one-line description.
    fn __repr__(&self) -> String {
        format!(
            "ShardModel({} {} experts on {} features{}{})",
            self.model.n_experts(),
            self.expert,
            self.n_features,
            if self.gating { ", softmax gate" } else { "" },
            if self.scaling.is_some() {
                ", standardised"
            } else {
                ""
            }
        )
    }
}

/// The [`EmMap`] of a fit over partitions: every E-step and every Newton round of the
/// M-step is one call of the Python `run_round`, which returns the round's statistics
/// merged over every row.
struct Rounds<'a> {
    model: &'a MixtureOfExperts,
    run_round: &'a Py<PyAny>,
    /// The first Python exception of a round, re-raised by [`ShardModel::fit`] (the
    /// library's error type cannot carry it).
    failure: &'a Mutex<Option<PyErr>>,
    /// The rows of the first round: every later round must cover the same number.
    rows: Mutex<Option<u64>>,
}

impl Rounds<'_> {
    /// One round through the callable, with the GIL held only for the call.
    fn round(&self, round: &Round) -> em_as_md::Result<ShardStats> {
        let bytes = round.to_bytes()?;
        let reply = Python::attach(|py| -> PyResult<Vec<u8>> {
            let out = self.run_round.call1(py, (PyBytes::new(py, &bytes),))?;
            let out = out.bind(py);
            let b = out.downcast::<PyBytes>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "run_round must return the merged statistics as bytes, not {}",
                    out.get_type()
                        .name()
                        .map_or_else(|_| "?".to_string(), |n| n.to_string())
                ))
            })?;
            Ok(b.as_bytes().to_vec())
        });
        let bytes = match reply {
            Ok(b) => b,
            Err(e) => {
                let message = e.to_string();
                if let Ok(mut f) = self.failure.lock() {
                    f.get_or_insert(e);
                }
                return Err(MoeError::Source(format!("run_round raised {message}")));
            }
        };
        let stats = ShardStats::from_bytes(&bytes)?;
        let mut rows = self.rows.lock().map_err(|_| {
            MoeError::Source("a round failed while another was recording its rows".into())
        })?;
        match *rows {
            Some(n) if n != stats.rows => {
                return Err(MoeError::Source(format!(
                    "a round summed {} rows, the first round {n}: the partitions changed during the fit",
                    stats.rows
                )))
            }
            Some(_) => {}
            None => *rows = Some(stats.rows),
        }
        Ok(stats)
    }
}

impl Objective for Rounds<'_> {
    fn objective(&self, theta: &[f64]) -> em_as_md::Result<f64> {
        self.e_step(theta).map(|(_, l)| l)
    }
}

impl EmMap for Rounds<'_> {
    type Stats = ShardStats;
    fn n_params(&self) -> usize {
        self.model.n_params()
    }
    fn e_step(&self, theta: &[f64]) -> em_as_md::Result<(ShardStats, f64)> {
        let s = self.round(&Round::E {
            theta: theta.to_vec(),
        })?;
        // The objective EM decreases: with a ridge, L = (−ℓ + R)/n, as in memory.
        let l = s.penalised_objective(self.model, theta)?;
        Ok((s, l))
    }
    fn m_step(
        &self,
        stats: &ShardStats,
        theta: &[f64],
        next: &mut [f64],
    ) -> em_as_md::Result<InnerStats> {
        self.model
            .m_step_from_shards(stats, theta, next, &mut |r| self.round(r))
    }
}
