//! Fitting a mixture of experts with validated hyperparameters and seeded restarts
//! (linfa style: [`MoeParams`] → [`MoeParams::check`] → [`MoeValidParams::fit`]).
//!
//! ```no_run
//! use em_as_md::fit::MoeParams;
//! use em_as_md::model::expert::LinearGaussian;
//! use em_as_md::model::mixture::Gating;
//! # fn main() -> em_as_md::Result<()> {
//! # let data = em_as_md::Dataset::from_rows(&[0.0, 1.0, 2.0, 3.0], 1, &[0.0, 1.0, 0.5, 2.0], 1)?.with_intercept();
//! let fitted = MoeParams::new(2)
//!     .expert(LinearGaussian::with_ridge(1e-6)?)
//!     .gating(Gating::Softmax)
//!     .tol(1e-8)
//!     .n_init(4)
//!     .seed(7)
//!     .check()?
//!     .fit(&data)?;
//! println!("log-likelihood {} after {} iterations ({})",
//!     fitted.report().log_likelihood, fitted.report().iterations, fitted.report().termination);
//! # Ok(()) }
//! ```
//!
//! **Any expert.** [`MoeParams::expert`] takes any [`Expert`]: a built-in, a
//! [`Glm`](crate::model::expert::Glm) on a researcher's own family, or a researcher's own
//! expert type; [`MoeParams::expert_shared`] takes one already behind an `Arc`, and
//! [`MoeParams::for_model`] starts from a [`MixtureOfExperts`] (its expert, $K$, gating and
//! gate settings). Restarts, initialisation ([`InitMethod`]), prediction, information
//! criteria and label alignment ([`FittedMoe::aligned_to`]) are the same for every
//! expert; saving needs the expert's description ([`Expert::spec`]).
//!
//! **Restarts.** Restart $r \in \{0, …, n_{\text{init}}-1\}$ draws its start from the
//! `ChaCha8Rng` seeded with the master seed on stream $r$ (deterministic, independent of
//! the thread count), runs EM through the [`Executor`], and the restart whose best
//! iterate has the largest log-likelihood is returned (ties: lowest index). Restarts run
//! in parallel with rayon; each E-step reduces rows in a fixed order, so results are
//! bit-identical for any number of threads. A restart that fails (for example a singular
//! weighted Gram matrix from a degenerate start) is reported in
//! [`FitReport::restarts`](crate::fit::predict::FitReport::restarts); the fit fails only when
//! every restart fails.

use crate::data::Dataset;
use crate::error::{MoeError, Result};
use crate::fit::init::{
    hard_responsibilities, kmeanspp_labels, random_responsibilities, InitMethod, HARD_FLOOR,
};
use crate::fit::predict::{training_summaries, FitReport, FittedMoe, RestartSummary, Spread};
use crate::model::expert::{Expert, LinearGaussian};
use crate::model::gate::GateConfig;
use crate::model::mixture::{Gating, MixtureOfExperts};
use crate::model::registry::check_family_shape;
use crate::model::EmModel;
use crate::solve::accel::Accel;
use crate::solve::executor::{Executor, FitResult};
use crate::solve::observer::{LogObserver, Observer, ObserverMode};
use crate::solve::problem::Problem;
use crate::ConditionalFamily;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Unchecked hyperparameters of a mixture-of-experts fit (consuming setters).
#[derive(Debug, Clone)]
pub struct MoeParams {
    n_experts: usize,
    expert: Arc<dyn Expert>,
    gating: Gating,
    gate_config: GateConfig,
    max_iters: u64,
    tol: f64,
    n_init: usize,
    seed: u64,
    init: InitMethod,
    accel: Accel,
    time_limit: Option<Duration>,
    cancel: Option<Arc<AtomicBool>>,
    verbose: bool,
    observers: Option<ObserverFactory>,
}

/// The closure type behind [`ObserverFactory`].
pub type MakeObserver = dyn Fn(usize) -> (Box<dyn Observer>, ObserverMode) + Send + Sync;

/// Makes an observer for each restart (argument: the restart index); used by front ends
/// to show progress. See [`MoeParams::observe`].
#[derive(Clone)]
pub struct ObserverFactory(pub Arc<MakeObserver>);

impl std::fmt::Debug for ObserverFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObserverFactory(..)")
    }
}

/// Hyperparameters that passed [`MoeParams::check`]; only these can [`fit`](Self::fit).
#[derive(Debug, Clone)]
pub struct MoeValidParams(MoeParams);

impl MoeParams {
    /// Defaults: linear-Gaussian experts ([`LinearGaussian::new`]), softmax gate with
    /// [`GateConfig::default`], `max_iters` 1000, `tol` 1e-8, one start, seed 0, k-means++
    /// initialisation.
    pub fn new(n_experts: usize) -> Self {
        MoeParams {
            n_experts,
            expert: Arc::new(LinearGaussian::new()),
            gating: Gating::Softmax,
            gate_config: GateConfig::default(),
            max_iters: 1000,
            tol: 1e-8,
            n_init: 1,
            seed: 0,
            init: InitMethod::KMeansPlusPlus,
            accel: Accel::default(),
            time_limit: None,
            cancel: None,
            verbose: false,
            observers: None,
        }
    }
    /// The hyperparameters of `model`: its expert, $K$, gating and gate settings, with the
    /// other fields at their defaults (as [`MoeParams::new`]). The model's $d$ is not kept:
    /// [`MoeValidParams::fit`] builds the model for the data's features.
    pub fn for_model(model: &MixtureOfExperts) -> Self {
        MoeParams::new(model.n_experts())
            .expert_shared(model.expert().clone())
            .gating(model.gating())
            .gate_config(model.gate_config())
    }
    /// The expert: a built-in ([`LinearGaussian`], [`Logistic`](crate::Logistic),
    /// [`Multinomial`](crate::Multinomial), [`Poisson`](crate::Poisson)), a
    /// [`Glm`](crate::Glm) on any family, or a user's own [`Expert`].
    pub fn expert(self, e: impl Expert + 'static) -> Self {
        self.expert_shared(Arc::new(e))
    }
    /// The expert, shared.
    pub fn expert_shared(mut self, e: Arc<dyn Expert>) -> Self {
        self.expert = e;
        self
    }
    /// The softmax gate's M-step settings (see [`MixtureOfExperts::with_gate_config`]).
    pub fn gate_config(mut self, cfg: GateConfig) -> Self {
        self.gate_config = cfg;
        self
    }
    /// Gating.
    pub fn gating(mut self, g: Gating) -> Self {
        self.gating = g;
        self
    }
    /// Iteration limit per restart (≥ 1).
    pub fn max_iters(mut self, n: u64) -> Self {
        self.max_iters = n;
        self
    }
    /// Relative tolerance on the change of $L$ (finite, > 0).
    pub fn tol(mut self, t: f64) -> Self {
        self.tol = t;
        self
    }
    /// Number of seeded restarts (≥ 1).
    pub fn n_init(mut self, n: usize) -> Self {
        self.n_init = n;
        self
    }
    /// Master seed.
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }
    /// Initialisation method.
    pub fn init(mut self, m: InitMethod) -> Self {
        self.init = m;
        self
    }
    /// How EM is accelerated ([`Accel`]; default [`Accel::default`]): every restart runs
    /// its solver.
    pub fn accel(mut self, a: Accel) -> Self {
        self.accel = a;
        self
    }
    /// Wall-clock limit per restart.
    pub fn time_limit(mut self, d: Duration) -> Self {
        self.time_limit = Some(d);
        self
    }
    /// Cancellation flag shared by all restarts (the library installs no signal handler).
    pub fn cancel(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }
    /// Print one line per iteration of every restart to stderr.
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }

    /// Attaches an observer, built by `factory(restart_index)`, to every restart's
    /// executor (restarts run in parallel, so observers must be `Send`).
    pub fn observe(
        mut self,
        factory: impl Fn(usize) -> (Box<dyn Observer>, ObserverMode) + Send + Sync + 'static,
    ) -> Self {
        self.observers = Some(ObserverFactory(Arc::new(factory)));
        self
    }

    /// Validates the hyperparameters.
    ///
    /// # Errors
    /// `InvalidParam` naming the field: `n_experts` (≥ 1), `tol` (finite and > 0),
    /// `max_iters` (≥ 1), `n_init` (≥ 1), `gate config` ([`GateConfig::check`]),
    /// `expert` (more regressed components than the family's dimension), `init`
    /// (non-finite given θ); [`RegistryError::FamilyShape`](crate::error::RegistryError::FamilyShape)
    /// naming the expert's family when its methods disagree with its dimensions
    /// ([`check_family_shape`]).
    pub fn check(self) -> Result<MoeValidParams> {
        let bad = |name: &'static str, reason: &str| {
            Err(MoeError::InvalidParam {
                name,
                reason: reason.into(),
            })
        };
        if self.n_experts == 0 {
            return bad("n_experts", ">= 1");
        }
        if !(self.tol.is_finite() && self.tol > 0.0) {
            return bad("tol", "finite and > 0");
        }
        if self.max_iters == 0 {
            return bad("max_iters", ">= 1");
        }
        if self.n_init == 0 {
            return bad("n_init", ">= 1");
        }
        self.gate_config.check()?;
        let family = self.expert.family();
        if self.expert.n_regressed() > family.dim() {
            return bad(
                "expert",
                &format!(
                    "{} regresses {} components of a family of dimension {}",
                    self.expert.name(),
                    self.expert.n_regressed(),
                    family.dim()
                ),
            );
        }
        check_family_shape(family, &family.name())?;
        if let InitMethod::Theta(t) = &self.init {
            if t.iter().any(|v| !v.is_finite()) {
                return bad("init", "given parameters must be finite");
            }
        }
        Ok(MoeValidParams(self))
    }
}

/// The starting parameters $\theta_0$ from responsibilities: one M-step
/// ([`MixtureOfExperts::stats_from_responsibilities`] then [`EmModel::m_step`]), warm
/// started from a neutral parameter vector (zero gate, experts from
/// `Expert::init_params` with scale 0).
///
/// # Errors
/// As the two model functions.
pub fn theta_from_responsibilities(
    model: &MixtureOfExperts,
    data: &Dataset,
    resp: &[f64],
) -> Result<Vec<f64>> {
    let stats = model.stats_from_responsibilities(data, resp)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let start = model.random_params(&mut rng, 0.0);
    let mut next = vec![0.0; model.n_params()];
    model.m_step(data, &stats, &start, &mut next)?;
    Ok(next)
}

/// $\theta_0$ for restart `index` under `method`, drawn from the master seed's stream
/// `index`.
///
/// # Errors
/// `InvalidParam { name: "init" }` when given parameters have the wrong length; as
/// [`theta_from_responsibilities`] and [`kmeanspp_labels`].
pub fn initial_theta(
    model: &MixtureOfExperts,
    data: &Dataset,
    method: &InitMethod,
    seed: u64,
    index: usize,
) -> Result<Vec<f64>> {
    let mut rng = restart_rng(seed, index);
    let k = model.n_experts();
    match method {
        InitMethod::Theta(t) => {
            if t.len() != model.n_params() {
                return Err(MoeError::InvalidParam {
                    name: "init",
                    reason: format!(
                        "given parameters have length {}, the model has {}",
                        t.len(),
                        model.n_params()
                    ),
                });
            }
            Ok(t.clone())
        }
        InitMethod::Random => {
            let r = random_responsibilities(data.n(), k, &mut rng);
            theta_from_responsibilities(model, data, &r)
        }
        InitMethod::KMeansPlusPlus => {
            let z = kmeanspp_labels(data, k, &mut rng)?;
            theta_from_responsibilities(model, data, &hard_responsibilities(&z, k, HARD_FLOOR))
        }
    }
}

/// The random stream of restart `index`: `ChaCha8Rng::seed_from_u64(seed)` on stream `index`.
pub fn restart_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    rng
}

impl MoeValidParams {
    /// The checked hyperparameters.
    pub fn params(&self) -> &MoeParams {
        &self.0
    }

    /// The expert.
    pub fn expert(&self) -> &Arc<dyn Expert> {
        &self.0.expert
    }

    /// The model these parameters describe for data with `d` features.
    ///
    /// # Errors
    /// As [`MixtureOfExperts::new`].
    pub fn model(&self, d: usize) -> Result<MixtureOfExperts> {
        MixtureOfExperts::new(self.0.expert.clone(), self.0.n_experts, d, self.0.gating)?
            .with_gate_config(self.0.gate_config)
    }

    /// The start $\theta_0$ of restart `index`, as [`fit`](Self::fit) draws it
    /// ([`initial_theta`] with these settings' initialisation and master seed): re-running
    /// EM from it retraces the restart's path, e.g. to certify the fit that won
    /// ([`FitReport::best_restart`](crate::fit::predict::FitReport::best_restart)).
    ///
    /// # Errors
    /// As [`initial_theta`].
    pub fn restart_theta0(
        &self,
        model: &MixtureOfExperts,
        data: &Dataset,
        index: usize,
    ) -> Result<Vec<f64>> {
        initial_theta(model, data, &self.0.init, self.0.seed, index)
    }

    /// Restart `index` on its own, as [`fit`](Self::fit) runs it: $\theta_0$ from
    /// [`initial_theta`] (the master seed's stream `index`), then EM through the
    /// [`Executor`] with these limits and observers. `model` should be
    /// [`model`](Self::model)`(data.d())`; [`fit`](Self::fit) runs the restarts in
    /// parallel and keeps the best.
    ///
    /// # Errors
    /// As [`initial_theta`], [`Problem::new`] and [`Executor::run`].
    pub fn run_restart(
        &self,
        model: &MixtureOfExperts,
        data: &Dataset,
        index: usize,
    ) -> Result<FitResult> {
        let p = &self.0;
        let theta0 = self.restart_theta0(model, data, index)?;
        let problem = Problem::new(model, data)?;
        let mut ex = Executor::new(problem, p.accel.solver())
            .theta0(theta0)
            .max_iters(p.max_iters)
            .tol(p.tol);
        if let Some(t) = p.time_limit {
            ex = ex.time_limit(t);
        }
        if let Some(c) = &p.cancel {
            ex = ex.cancel(c.clone());
        }
        if p.verbose {
            ex = ex.add_observer(Box::new(LogObserver::new()), ObserverMode::Always);
        }
        if let Some(f) = &p.observers {
            let (o, mode) = (f.0)(index);
            ex = ex.add_observer(o, mode);
        }
        ex.run()
    }

    /// Fits the model: seeded restarts in parallel, the best returned with the spread
    /// of final log-likelihoods and every restart's termination.
    ///
    /// # Errors
    /// `InvalidParam { name: "n_experts" }` for more experts than rows;
    /// `InvalidData { row: None, .. }` for fewer rows than free parameters or a shape
    /// mismatch; `InvalidData { row: Some(i), .. }` for a target outside the experts'
    /// support; the first restart's error when every restart fails.
    pub fn fit(&self, data: &Dataset) -> Result<FittedMoe> {
        let clock = Instant::now();
        let p = &self.0;
        let model = self.model(data.d())?;
        if p.n_experts > data.n() {
            return Err(MoeError::InvalidParam {
                name: "n_experts",
                reason: format!("{} experts for {} rows", p.n_experts, data.n()),
            });
        }
        if data.n() < model.n_params() {
            return Err(MoeError::InvalidData {
                row: None,
                column: None,
                reason: format!(
                    "{} rows are fewer than the {} free parameters of the model",
                    data.n(),
                    model.n_params()
                ),
            });
        }
        Problem::new(&model, data)?;
        let runs: Vec<Result<FitResult>> = (0..p.n_init)
            .into_par_iter()
            .map(|r| self.run_restart(&model, data, r))
            .collect();
        let n = data.n() as f64;
        let restarts: Vec<RestartSummary> = runs
            .iter()
            .enumerate()
            .map(|(index, r)| match r {
                Ok(f) => RestartSummary {
                    index,
                    log_likelihood: Some(-n * f.best.objective),
                    termination: Some(f.termination),
                    iterations: f.state.iter,
                    error: None,
                },
                Err(e) => RestartSummary {
                    index,
                    log_likelihood: None,
                    termination: None,
                    iterations: 0,
                    error: Some(e.to_string()),
                },
            })
            .collect();
        let mut best: Option<(usize, &FitResult)> = None;
        for (i, r) in runs.iter().enumerate() {
            if let Ok(f) = r {
                if best.is_none_or(|(_, b)| f.best.objective < b.best.objective) {
                    best = Some((i, f));
                }
            }
        }
        let Some((best_restart, result)) = best else {
            let first = runs.into_iter().next().and_then(|r| r.err());
            return Err(first.unwrap_or(MoeError::InvalidParam {
                name: "n_init",
                reason: ">= 1".into(),
            }));
        };
        let theta = result.best.theta.clone();
        let (log_likelihood, entropy) = training_summaries(&model, data, &theta)?;
        let lls: Vec<f64> = restarts.iter().filter_map(|r| r.log_likelihood).collect();
        let report = FitReport {
            solver: match p.accel {
                Accel::None => "EM".into(),
                a => format!("EM accelerated by {a}"),
            },
            n_rows: data.n(),
            log_likelihood,
            entropy,
            iterations: result.state.iter,
            termination: result.termination,
            seconds: clock.elapsed().as_secs_f64(),
            trace: result.trace.clone(),
            best_restart,
            spread: Spread::of(&lls),
            restarts,
        };
        FittedMoe::new(model, theta, data.feature_names().to_vec(), report)
    }
}
