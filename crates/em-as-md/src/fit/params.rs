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
    hard_responsibilities, kmeanspp_labels, random_partition_labels, random_responsibilities,
    random_subsets, subset_size, InitMethod, AUTO_CYCLE, HARD_FLOOR, SHORT_EM_CANDIDATES,
    SHORT_EM_ITERS,
};
use crate::fit::predict::{
    training_summaries, FitReport, FittedMoe, RestartSummary, Spread, UngatedFit,
};
use crate::fit::separation::separated_experts;
use crate::inner::parallel::CHUNK;
use crate::model::expert::{Expert, LinearGaussian};
use crate::model::gate::GateConfig;
use crate::model::mixture::{Gating, MixtureOfExperts};
use crate::model::registry::check_family_shape;
use crate::model::EmModel;
use crate::solve::accel::Accel;
use crate::solve::em::Em;
use crate::solve::executor::{Executor, FitResult};
use crate::solve::observer::{LogObserver, Observer, ObserverMode};
use crate::solve::problem::Problem;
use crate::solve::solver::Solver;
use crate::solve::solver::Termination;
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
    ungated_start: UngatedStart,
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
    /// [`GateConfig::default`], `max_iters` 1000, `tol` 1e-8, one start, seed 0,
    /// [`InitMethod::Auto`] initialisation, gated fits held at or above the ungated fit
    /// ([`UngatedStart::WhenBelow`]).
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
            init: InitMethod::Auto,
            ungated_start: UngatedStart::default(),
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
    /// Initialisation method ([`InitMethod::Auto`] by default).
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
    /// The acceleration chosen ([`accel`](Self::accel)).
    pub fn accel_method(&self) -> Accel {
        self.accel
    }
    /// The initialisation method set.
    pub fn init_method(&self) -> &InitMethod {
        &self.init
    }
    /// The seed set ([`seed`](Self::seed)).
    pub fn seed_value(&self) -> u64 {
        self.seed
    }
    /// When a gated fit ([`Gating::Softmax`]) also runs one start from the ungated
    /// optimum (see [`MoeValidParams::fit`]): default [`UngatedStart::WhenBelow`].
    /// [`UngatedStart::Off`] saves the ungated fit's time and gives up the guarantee that
    /// the gated log-likelihood is at least the ungated one.
    pub fn ungated_start(mut self, policy: UngatedStart) -> Self {
        self.ungated_start = policy;
        self
    }
    /// The policy set by [`ungated_start`](Self::ungated_start).
    pub fn ungated_start_policy(&self) -> UngatedStart {
        self.ungated_start
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
    theta_from_owned_responsibilities(model, data, resp.to_vec())
}

/// [`theta_from_responsibilities`] taking the responsibilities by value (moved into the
/// statistics, not copied).
fn theta_from_owned_responsibilities(
    model: &MixtureOfExperts,
    data: &Dataset,
    resp: Vec<f64>,
) -> Result<Vec<f64>> {
    let stats = model.stats_from_owned_responsibilities(data, resp)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let start = model.random_params(&mut rng, 0.0);
    let mut next = vec![0.0; model.n_params()];
    model.m_step(data, &stats, &start, &mut next)?;
    Ok(next)
}

/// $\theta_0$ for restart `index` under `method`, drawn from the master seed's stream
/// `index` ([`restart_rng`]); [`InitMethod::Auto`] uses its strategy for `index`
/// ([`InitMethod::for_restart`]).
///
/// # Errors
/// `InvalidParam { name: "init" }` when given parameters have the wrong length; as
/// [`theta_from_responsibilities`], [`kmeanspp_labels`], [`random_subsets`] and (for
/// short-EM, when every short run fails) [`Executor::run`].
pub fn initial_theta(
    model: &MixtureOfExperts,
    data: &Dataset,
    method: &InitMethod,
    seed: u64,
    index: usize,
) -> Result<Vec<f64>> {
    let mut rng = restart_rng(seed, index);
    start_from(model, data, &method.for_restart(index), &mut rng)
}

/// A restart's run and the start $\theta_0$ it ran from.
type StartedRun = Result<(FitResult, Vec<f64>)>;

/// Runs `a` and `b`, two fits over `n` rows, at the same time when their passes are too
/// short to gain from more threads: `a` on a third of the current rayon pool's threads
/// (at least one) and `b` on the rest, each in its own pool, so that the data passes of
/// one never wait on a pass of the other that a worker stole (as they can under a plain
/// [`rayon::join`] of two fits whose passes are parallel). Otherwise — one thread, at
/// least [`SPLIT_PASS_CHUNKS`] chunks per thread, or a pool that cannot be built — `a`
/// then `b` on the current pool, each with every thread. The threads only schedule:
/// every pass merges its chunks in a fixed order, so results do not depend on the split.
fn side_by_side<A: Send, B: Send>(
    n: usize,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    let threads = rayon::current_num_threads();
    let pool = |size: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(size)
            .build()
            .ok()
    };
    let share = (threads / 3).max(1);
    let short_passes = n.div_ceil(CHUNK) < SPLIT_PASS_CHUNKS * threads;
    match (threads >= 2 && short_passes)
        .then(|| pool(share).zip(pool(threads - share)))
        .flatten()
    {
        Some((pa, pb)) => std::thread::scope(|s| {
            let ha = s.spawn(|| pa.install(a));
            let rb = pb.install(b);
            match ha.join() {
                Ok(ra) => (ra, rb),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }),
        None => {
            let ra = a();
            (ra, b())
        }
    }
}

/// Row chunks per thread from which a pass is split across the threads with gain, so
/// that [`side_by_side`] runs two fits one after the other, each with every thread.
/// Measured on 2 cores: a gated linear fit's iteration on 20 000 rows (10 chunks) takes
/// as long on two threads as on one (the passes are a fraction of a millisecond, and
/// waking the other worker costs about as much as it saves), on 200 000 rows 1.85× less.
const SPLIT_PASS_CHUNKS: usize = 16;

/// $\theta_0$ under a resolved strategy, drawing from `rng`.
fn start_from(
    model: &MixtureOfExperts,
    data: &Dataset,
    method: &InitMethod,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f64>> {
    let (n, k) = (data.n(), model.n_experts());
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
        // Resolved by `for_restart` before it gets here; its first strategy otherwise.
        InitMethod::Auto => start_from(model, data, &AUTO_CYCLE[0], rng),
        InitMethod::Random => {
            theta_from_owned_responsibilities(model, data, random_responsibilities(n, k, rng))
        }
        // The labels are dropped before the statistics are formed, and the
        // responsibilities move into them: one n × K array at a time.
        InitMethod::KMeansPlusPlus => {
            let r = hard_responsibilities(&kmeanspp_labels(data, k, rng)?, k, HARD_FLOOR);
            theta_from_owned_responsibilities(model, data, r)
        }
        InitMethod::RandomPartition => {
            let r = hard_responsibilities(&random_partition_labels(n, k, rng), k, HARD_FLOOR);
            theta_from_owned_responsibilities(model, data, r)
        }
        InitMethod::Subset => subset_theta(model, data, rng),
        InitMethod::ShortEm => short_em_theta(model, data, rng),
    }
}

/// [`InitMethod::Subset`]: each expert's M-step on its own random subset (the union of the
/// subsets, hard labels softened by [`HARD_FLOOR`]), then the gate set to zero, i.e.
/// uniform mixing weights $\pi_k = 1/K$.
fn subset_theta(
    model: &MixtureOfExperts,
    data: &Dataset,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f64>> {
    let k = model.n_experts();
    let m = subset_size(model.expert().n_params(data.d()), data.n(), k);
    let labels = random_subsets(data.n(), k, m, rng)?;
    let (rows, z): (Vec<usize>, Vec<usize>) = labels
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.map(|l| (i, l)))
        .unzip();
    let sub = data.select(&rows);
    let mut theta =
        theta_from_owned_responsibilities(model, &sub, hard_responsibilities(&z, k, HARD_FLOOR))?;
    let g = model.gate_len();
    theta[..g].iter_mut().for_each(|v| *v = 0.0);
    Ok(theta)
}

/// [`InitMethod::ShortEm`]: [`SHORT_EM_CANDIDATES`] cheap starts (subset and random
/// partition alternately, from `rng` in turn), each run [`SHORT_EM_ITERS`] EM
/// iterations; the best iterate of the run with the smallest $L$ (ties: the earliest).
/// Candidates that fail are skipped; the first error is returned when all fail.
fn short_em_theta(
    model: &MixtureOfExperts,
    data: &Dataset,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f64>> {
    let mut best: Option<(f64, Vec<f64>)> = None;
    let mut first_err = None;
    for c in 0..SHORT_EM_CANDIDATES {
        let cheap = if c % 2 == 0 {
            InitMethod::Subset
        } else {
            InitMethod::RandomPartition
        };
        let run = start_from(model, data, &cheap, rng).and_then(|theta0| {
            Executor::new(Problem::new(model, data)?, Em::new())
                .theta0(theta0)
                .max_iters(SHORT_EM_ITERS)
                .run()
        });
        match run {
            Ok(f) if f.best.objective.is_finite() => {
                if best.as_ref().is_none_or(|(o, _)| f.best.objective < *o) {
                    best = Some((f.best.objective, f.best.theta));
                }
            }
            Ok(_) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match (best, first_err) {
        (Some((_, theta)), _) => Ok(theta),
        (None, Some(e)) => Err(e),
        (None, None) => Err(MoeError::InvalidParam {
            name: "init",
            reason: "no short-EM run reached a finite log-likelihood".into(),
        }),
    }
}

/// The first feature column equal to one non-zero value $c$ on every row, and $c$.
fn constant_column(data: &Dataset) -> Option<(usize, f64)> {
    if data.n() == 0 {
        return None;
    }
    (0..data.d()).find_map(|j| {
        let c = data.x(0).get(j).copied()?;
        (c != 0.0 && (0..data.n()).all(|i| data.x(i)[j] == c)).then_some((j, c))
    })
}

/// [`RestartSummary::init`] of a gated fit's start from the ungated optimum.
pub const UNGATED_START: &str = "ungated";

/// When a gated fit also starts from the ungated optimum ([`MoeParams::ungated_start`];
/// see [`MoeValidParams::fit`]). The softmax gate with slopes 0 is the constant gate, so
/// the gated model contains the ungated one and its fit should never end below the
/// ungated fit's log-likelihood $\ell_u$; gated starts alone can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UngatedStart {
    /// Fit the ungated model (on few rows beside the gated starts, on a third of the
    /// threads); run the extra start from its optimum only when no gated start ended at
    /// or above $\ell_u$. The guarantee holds either way; the extra start (often as long
    /// as a gated fit) is skipped when it cannot be needed for it.
    #[default]
    WhenBelow,
    /// Fit the ungated model and always run the extra start from its optimum, in parallel
    /// with the other starts (one more chance at a better basin).
    Always,
    /// No ungated fit and no extra start: no guarantee.
    Off,
}

impl UngatedStart {
    /// Every policy, in the order the command line lists them.
    pub const ALL: [UngatedStart; 3] = [
        UngatedStart::WhenBelow,
        UngatedStart::Always,
        UngatedStart::Off,
    ];

    /// The policy called `name` ([`name`](Self::name)), if any.
    pub fn from_name(name: &str) -> Option<UngatedStart> {
        UngatedStart::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The name the command line uses: `when-below`, `always`, `off`.
    pub fn name(self) -> &'static str {
        match self {
            UngatedStart::WhenBelow => "when-below",
            UngatedStart::Always => "always",
            UngatedStart::Off => "off",
        }
    }
}

/// The softmax-gate parameters equal to a constant-gate model's: gate row
/// $w_k = (l_k / c)\,e_j$ with $l_k$ the constant logits and $j$ a feature column equal to
/// $c \ne 0$ on every row (the intercept), so that $w_k^\top x_i = l_k$ and the two models
/// give every row the same law; the expert blocks are copied. `None` when `data` has no
/// constant non-zero column (the gated model then does not contain the ungated one).
///
/// # Errors
/// `InvalidParam { name: "theta" }` when `ungated_theta` does not fit `ungated`, or the
/// two models differ in anything but their gating.
pub fn gated_from_ungated(
    gated: &MixtureOfExperts,
    ungated: &MixtureOfExperts,
    ungated_theta: &[f64],
    data: &Dataset,
) -> Result<Option<Vec<f64>>> {
    let (k, d) = (gated.n_experts(), data.d());
    if gated.gating() != Gating::Softmax
        || ungated.gating() != Gating::Constant
        || ungated.n_experts() != k
        || ungated_theta.len() != ungated.n_params()
        || gated.expert_len() != ungated.expert_len()
        || gated.n_features() != d
    {
        return Err(MoeError::InvalidParam {
            name: "theta",
            reason: "expected a constant-gate model and its parameters, and the same model with a softmax gate".into(),
        });
    }
    let Some((j, c)) = constant_column(data) else {
        return Ok(None);
    };
    let mut theta = vec![0.0; gated.n_params()];
    for (row, &l) in ungated.gate_block(ungated_theta).iter().enumerate() {
        theta[row * d + j] = l / c;
    }
    for e in 0..k {
        gated
            .expert_block_mut(&mut theta, e)
            .copy_from_slice(ungated.expert_block(ungated_theta, e));
    }
    Ok(Some(theta))
}

/// The random stream of restart `index`: `ChaCha8Rng::seed_from_u64(seed)` on stream `index`.
pub fn restart_rng(seed: u64, index: usize) -> ChaCha8Rng {
    attempt_rng(seed, index, 0)
}

/// How many times [`MoeValidParams::fit`] retries a seeded start whose run fails (a
/// singular Gram matrix after an expert lost its rows, a natural parameter leaving its
/// domain), each time from a fresh draw of the same strategy.
pub const START_RETRIES: usize = 3;

/// The random generator of attempt `attempt` of restart `index`: stream `index` itself for
/// the first attempt (so fits without retries are unchanged), then `index` in the low and
/// the attempt in the high 32 bits — streams no restart of any fit with fewer than
/// $2^{32}$ starts uses.
fn attempt_rng(seed: u64, index: usize, attempt: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64 | ((attempt as u64) << 32));
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
    /// ([`initial_theta`] with these settings' initialisation and master seed; for a gated
    /// fit with [`ungated_start`](MoeParams::ungated_start), index $n_{\text{init}}$ is the
    /// ungated optimum, which this re-fits): re-running EM from it retraces the restart's
    /// path, e.g. to certify the fit that won
    /// ([`FitReport::best_restart`](crate::fit::predict::FitReport::best_restart)).
    ///
    /// # Errors
    /// As [`initial_theta`]; `InvalidParam { name: "index" }` for an index past the last
    /// restart.
    pub fn restart_theta0(
        &self,
        model: &MixtureOfExperts,
        data: &Dataset,
        index: usize,
    ) -> Result<Vec<f64>> {
        self.retry_theta0(model, data, index, 0)
    }

    /// The start of attempt `attempt` of restart `index`
    /// ([`RestartSummary::attempt`](crate::fit::predict::RestartSummary::attempt)):
    /// attempt 0 is [`restart_theta0`](Self::restart_theta0); a retry draws the same
    /// strategy from stream $\text{index} + 2^{32}\cdot\text{attempt}$ of the master seed. The
    /// start from the ungated optimum is deterministic and has attempt 0 only.
    ///
    /// # Errors
    /// As [`restart_theta0`](Self::restart_theta0); `InvalidParam { name: "attempt" }`
    /// for an attempt past [`START_RETRIES`] or a retry of the ungated start.
    pub fn retry_theta0(
        &self,
        model: &MixtureOfExperts,
        data: &Dataset,
        index: usize,
        attempt: usize,
    ) -> Result<Vec<f64>> {
        if attempt > START_RETRIES || (attempt > 0 && index >= self.0.n_init) {
            return Err(MoeError::InvalidParam {
                name: "attempt",
                reason: format!("restart {index} has no attempt {attempt}"),
            });
        }
        if index < self.0.n_init {
            let mut rng = attempt_rng(self.0.seed, index, attempt);
            return start_from(model, data, &self.0.init.for_restart(index), &mut rng);
        }
        if index == self.0.n_init && self.ungated_applies(data) {
            return self.ungated_theta0(model, data).map(|(theta, _)| theta);
        }
        Err(MoeError::InvalidParam {
            name: "index",
            reason: format!("restart {index} does not exist"),
        })
    }

    /// The start $\theta_0$ of the restart a fit kept, to re-run its EM path (a
    /// certificate): [`FitReport::start_theta`] when the fit recorded it (on the data EM
    /// ran on), else drawn again on `data` as the fit drew it
    /// ([`retry_theta0`](Self::retry_theta0) of [`FitReport::best_restart`] at its
    /// attempt). `self` must be the fit's settings for the second case.
    ///
    /// # Errors
    /// As [`retry_theta0`](Self::retry_theta0) when the start is drawn.
    pub fn kept_theta0(
        &self,
        model: &MixtureOfExperts,
        data: &Dataset,
        report: &FitReport,
    ) -> Result<Vec<f64>> {
        if report.start_theta.len() == model.n_params() {
            return Ok(report.start_theta.clone());
        }
        let best = report.best_restart;
        let attempt = report.restarts.get(best).map_or(0, |r| r.attempt());
        self.retry_theta0(model, data, best, attempt)
    }

    /// The most restarts [`fit`](Self::fit) runs on `data`: $n_{\text{init}}$, plus one
    /// from the ungated optimum for a gated fit whose
    /// [`ungated_start`](MoeParams::ungated_start) is not [`UngatedStart::Off`], when the
    /// data have a constant column ([`UngatedStart::WhenBelow`] may skip it).
    pub fn n_restarts(&self, data: &Dataset) -> usize {
        self.0.n_init + usize::from(self.ungated_applies(data))
    }

    fn ungated_applies(&self, data: &Dataset) -> bool {
        self.0.ungated_start != UngatedStart::Off
            && self.0.gating == Gating::Softmax
            && self.0.n_experts > 1
            && constant_column(data).is_some()
    }

    /// The ungated fit's optimum as gated parameters ([`gated_from_ungated`]). The
    /// ungated fit has these settings with [`Gating::Constant`] (the same starts, seed and
    /// limits).
    ///
    /// Also returns the ungated fit's summary (its log-likelihood and the seconds of its
    /// EM iterations, [`FitReport::em_seconds`](crate::fit::predict::FitReport::em_seconds);
    /// its wall clock and whether the start ran are the caller's to fill in).
    fn ungated_theta0(
        &self,
        model: &MixtureOfExperts,
        data: &Dataset,
    ) -> Result<(Vec<f64>, UngatedFit)> {
        // Observers watch the gated restarts only (their indices are the gated fit's).
        let ungated = MoeValidParams(MoeParams {
            gating: Gating::Constant,
            observers: None,
            verbose: false,
            ..self.0.clone()
        });
        let fitted = ungated.fit(data)?;
        let theta =
            gated_from_ungated(model, fitted.model(), fitted.theta(), data)?.ok_or_else(|| {
                MoeError::InvalidParam {
                    name: "gating",
                    reason: "the data have no constant column for the ungated start".into(),
                }
            })?;
        let rep = fitted.report();
        Ok((
            theta,
            UngatedFit {
                log_likelihood: rep.log_likelihood,
                restart_log_likelihood: rep.restarts[rep.best_restart]
                    .log_likelihood
                    .unwrap_or(rep.log_likelihood),
                seconds: 0.0,
                em_seconds: rep.em_seconds(),
                start_ran: false,
            },
        ))
    }

    /// Restart `index` on its own, as [`fit`](Self::fit) runs it: $\theta_0$ from
    /// [`restart_theta0`](Self::restart_theta0), then EM through the [`Executor`] with
    /// these limits and observers. `model` should be [`model`](Self::model)`(data.d())`;
    /// [`fit`](Self::fit) runs the restarts in parallel and keeps the best.
    ///
    /// # Errors
    /// As [`restart_theta0`](Self::restart_theta0), [`Problem::new`] and [`Executor::run`].
    pub fn run_restart(
        &self,
        model: &MixtureOfExperts,
        data: &Dataset,
        index: usize,
    ) -> Result<FitResult> {
        self.run_attempt(model, data, index, 0)
    }

    /// Attempt `attempt` of restart `index` on its own (its start from
    /// [`retry_theta0`](Self::retry_theta0)), as [`fit`](Self::fit) runs it when the
    /// attempts before it failed.
    ///
    /// # Errors
    /// As [`retry_theta0`](Self::retry_theta0), [`Problem::new`] and [`Executor::run`].
    pub fn run_attempt(
        &self,
        model: &MixtureOfExperts,
        data: &Dataset,
        index: usize,
        attempt: usize,
    ) -> Result<FitResult> {
        let theta0 = self.retry_theta0(model, data, index, attempt)?;
        self.run_from(model, data, index, theta0, &|| Ok(self.0.accel.solver()))
            .map(|(run, _)| run)
    }

    /// Seeded restart `index` with up to [`START_RETRIES`] retries: the first attempt
    /// that runs, with the errors of the attempts before it. Errors in the input
    /// (`InvalidData`, `InvalidParam`) and a given $\theta_0$ are not retried: another
    /// draw cannot change them.
    fn run_with_retries<S>(
        &self,
        model: &MixtureOfExperts,
        data: &Dataset,
        index: usize,
        make: &(impl Fn() -> Result<S> + Sync),
    ) -> (StartedRun, Vec<String>)
    where
        S: for<'a> Solver<Problem<'a, MixtureOfExperts>>,
    {
        let mut failed = Vec::new();
        let retryable = !matches!(self.0.init, InitMethod::Theta(_));
        let mut attempt = 0;
        loop {
            let run = self
                .retry_theta0(model, data, index, attempt)
                .and_then(|theta0| self.run_from(model, data, index, theta0, make));
            match run {
                Err(e)
                    if retryable
                        && attempt < START_RETRIES
                        && !matches!(
                            e.root(),
                            MoeError::InvalidData { .. } | MoeError::InvalidParam { .. }
                        ) =>
                {
                    failed.push(e.to_string());
                    attempt += 1;
                }
                run => return (run, failed),
            }
        }
    }

    /// The executor with these limits (iterations, tolerance, time, cancellation) and
    /// observers (restart `index`'s), whatever the problem and solver.
    pub(crate) fn limits<P, S>(&self, ex: Executor<P, S>, index: usize) -> Executor<P, S>
    where
        P: crate::solve::executor::Objective,
        S: crate::solve::Solver<P>,
    {
        let p = &self.0;
        let mut ex = ex.max_iters(p.max_iters).tol(p.tol);
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
        ex
    }

    /// One run from `theta0` by a fresh solver from `make`, with these limits and
    /// restart `index`'s observers; returned with its start (the report records the kept
    /// restart's).
    fn run_from<S>(
        &self,
        model: &MixtureOfExperts,
        data: &Dataset,
        index: usize,
        theta0: Vec<f64>,
        make: &(impl Fn() -> Result<S> + Sync),
    ) -> StartedRun
    where
        S: for<'a> Solver<Problem<'a, MixtureOfExperts>>,
    {
        let start = theta0.clone();
        let problem = Problem::new(model, data)?;
        // L(θ₀) comes from the mixture's own E-step pass (`objective_pass`), not the
        // generic per-row posteriors: a third of a short fit's time at 10⁶ rows.
        let ex = Executor::new(problem, make()?).theta0(theta0);
        let mut result = self.limits(ex, index).run()?;
        // A separated classifying expert meets the relative-change test by creeping, not
        // by converging: say so instead.
        if result.termination.is_converged() {
            if let Some(s) = separated_experts(model, data, &result.state.theta)?.first() {
                result.termination = Termination::Separated {
                    expert: s.expert,
                    mean_nll: s.mean_nll,
                };
            }
        }
        Ok((result, start))
    }

    /// Fits the model: seeded restarts in parallel, the best returned with the spread
    /// of final log-likelihoods, every restart's strategy and termination. Every restart
    /// runs EM with the chosen acceleration ([`MoeParams::accel`]); [`fit_with`](Self::fit_with)
    /// runs the same restarts with another solver.
    ///
    /// **Gated never below ungated.** The softmax gate with slopes 0 is the constant gate,
    /// so the gated model contains the ungated one; EM from gated starts alone can still
    /// end in a worse basin. A gated fit ([`Gating::Softmax`], $K > 1$, data with a
    /// constant column such as the intercept) therefore also fits the ungated model with
    /// the same settings, $\ell_u$ its log-likelihood, and runs one more restart from its
    /// optimum: under [`UngatedStart::WhenBelow`] (the default) the ungated fit runs
    /// beside the gated starts on a third of the threads when the passes are too short to
    /// gain from more (few rows; otherwise, and on one thread, before them), and the
    /// extra start only when none of them ended at or above $\ell_u$; under
    /// [`UngatedStart::Always`] the ungated fit runs first and the extra start in
    /// parallel with the gated ones. That restart (index $n_{\text{init}}$, strategy
    /// [`UNGATED_START`]) starts at [`gated_from_ungated`] of the ungated optimum. EM
    /// never decreases the likelihood, so the returned gated log-likelihood is at least
    /// $\ell_u$ either way; [`FitReport::ungated`] records $\ell_u$, the ungated fit's
    /// time and whether the extra start ran. Off with
    /// [`MoeParams::ungated_start`]`(`[`UngatedStart::Off`]`)`.
    ///
    /// # Errors
    /// `InvalidParam { name: "n_experts" }` for more experts than rows;
    /// `InvalidData { row: None, .. }` for fewer rows than free parameters or a shape
    /// mismatch; `InvalidData { row: Some(i), .. }` for a target outside the experts'
    /// support; the first restart's error when every restart fails.
    pub fn fit(&self, data: &Dataset) -> Result<FittedMoe> {
        let name = match self.0.accel {
            Accel::None => "EM".into(),
            a => format!("EM accelerated by {a}"),
        };
        self.fit_restarts(data, &|| Ok(self.0.accel.solver()), name)
    }

    /// [`fit`](Self::fit) with the solver of every restart made by `make` (called once per
    /// run, so each start gets fresh solver state): the same seeded starts, retries,
    /// limits, observers and report, so that another outer iteration — mirror descent at
    /// a fixed step ([`MirrorDescent`](crate::MirrorDescent)), gradient descent
    /// ([`GradientDescent`](crate::GradientDescent)) — is compared with EM on equal terms.
    /// The report's solver is the name of the solver `make` builds.
    ///
    /// A gated fit also fits the ungated model and, as its policy says, runs the restart
    /// from the ungated optimum (see [`fit`](Self::fit)).
    /// That optimum is the ungated model fitted by [`fit`](Self::fit) with these settings
    /// (EM with the chosen acceleration), whatever `make` builds, so that
    /// [`restart_theta0`](Self::restart_theta0) redraws it; the restart from it runs
    /// `make`'s solver. The returned log-likelihood is therefore at least the ungated
    /// EM fit's for any solver that never returns an iterate worse than its start (the
    /// [`Executor`] keeps the best iterate, the start included).
    ///
    /// ```no_run
    /// use em_as_md::fit::MoeParams;
    /// use em_as_md::{GradientDescent, MirrorDescent, Step};
    /// # fn main() -> em_as_md::Result<()> {
    /// # let data = em_as_md::Dataset::from_rows(&[0.0, 1.0, 2.0, 3.0], 1, &[0.0, 1.0, 0.5, 2.0], 1)?.with_intercept();
    /// let params = MoeParams::new(2).n_init(4).seed(7).check()?;
    /// let md = params.fit_with(&data, || MirrorDescent::with_eta(0.5))?;
    /// let gd = params.fit_with(&data, || GradientDescent::new(Step::armijo()))?;
    /// println!("{}: {}, {}: {}", md.report().solver, md.report().log_likelihood,
    ///     gd.report().solver, gd.report().log_likelihood);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`fit`](Self::fit), and `make`'s error (the first call is made before any work,
    /// for the report's name).
    pub fn fit_with<S>(
        &self,
        data: &Dataset,
        make: impl Fn() -> Result<S> + Sync,
    ) -> Result<FittedMoe>
    where
        S: for<'a> Solver<Problem<'a, MixtureOfExperts>>,
    {
        let name = make()?.name();
        self.fit_restarts(data, &make, name)
    }

    /// The restarts of [`fit`](Self::fit) and [`fit_with`](Self::fit_with), each run by a
    /// solver from `make`, reported under the solver name `name`.
    fn fit_restarts<S>(
        &self,
        data: &Dataset,
        make: &(impl Fn() -> Result<S> + Sync),
        name: String,
    ) -> Result<FittedMoe>
    where
        S: for<'a> Solver<Problem<'a, MixtureOfExperts>>,
    {
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
        let applies = self.ungated_applies(data);
        let always = p.ungated_start == UngatedStart::Always && applies;
        // The ungated optimum (itself a parallel fit), timed on its own; a failed ungated
        // fit fails only the one extra restart.
        let fit_ungated = || {
            let ungated_clock = Instant::now();
            let mut ungated = applies.then(|| self.ungated_theta0(&model, data));
            let seconds = ungated_clock.elapsed().as_secs_f64();
            if let Some(Ok((_, u))) = &mut ungated {
                u.seconds = seconds;
            }
            (ungated, seconds)
        };
        // Each run with its start and wall clock: ((result, θ₀), retry errors, seconds
        // before its EM); only the extra start (index n_init) reads the ungated fit.
        let run = |r: usize, ungated: &Option<Result<(Vec<f64>, UngatedFit)>>, before: f64| {
            let run_clock = Instant::now();
            let (run, failed) = match (ungated, r == p.n_init) {
                (Some(Ok((theta0, _))), true) => (
                    self.run_from(&model, data, r, theta0.clone(), make),
                    Vec::new(),
                ),
                (Some(Err(e)), true) => (Err(e.clone()), Vec::new()),
                _ => self.run_with_retries(&model, data, r, make),
            };
            let total = run_clock.elapsed().as_secs_f64();
            let em = run.as_ref().map_or(0.0, |(f, _)| f.seconds.min(total));
            let before = if r == p.n_init { before } else { 0.0 };
            (run, failed, before + total - em)
        };
        let gated_starts = |ungated: &Option<Result<(Vec<f64>, UngatedFit)>>, before: f64| {
            (0..p.n_init + usize::from(always))
                .into_par_iter()
                .map(|r| run(r, ungated, before))
                .collect::<Vec<(StartedRun, Vec<String>, f64)>>()
        };
        // `Always` starts from the ungated optimum beside the gated starts, so it needs
        // that optimum first; otherwise the gated starts do not read it and both run at
        // once, each on its own share of the threads (the same results either way).
        let ((ungated, ungated_seconds), mut runs) = if always || !applies {
            let u = fit_ungated();
            let runs = gated_starts(&u.0, u.1);
            (u, runs)
        } else {
            side_by_side(data.n(), fit_ungated, || gated_starts(&None, 0.0))
        };
        let ungated_em = match &ungated {
            Some(Ok((_, u))) => u.em_seconds,
            _ => 0.0,
        };
        // When below: the extra start only if no gated start reached the ungated fit (or
        // that fit failed, which its restart then reports).
        let needed = match &ungated {
            Some(Ok((_, u))) => !runs.iter().any(|(r, _, _)| {
                r.as_ref().is_ok_and(|(f, _)| {
                    -(data.n() as f64) * f.best.objective >= u.restart_log_likelihood
                })
            }),
            Some(Err(_)) => true,
            None => false,
        };
        if !always && needed {
            runs.push(run(p.n_init, &ungated, ungated_seconds));
        }
        let start_ran = runs.len() > p.n_init;
        let ungated_fit = match &ungated {
            Some(Ok((_, u))) => Some(UngatedFit { start_ran, ..*u }),
            _ => None,
        };
        let strategy = |r: usize| {
            if r < p.n_init {
                p.init.for_restart(r).name().to_string()
            } else {
                UNGATED_START.to_string()
            }
        };
        let n = data.n() as f64;
        let restarts: Vec<RestartSummary> = runs
            .iter()
            .enumerate()
            .map(|(index, (r, retry_errors, start_seconds))| {
                let start_em_seconds = if index == p.n_init { ungated_em } else { 0.0 };
                match r {
                    Ok((f, _)) => RestartSummary {
                        index,
                        init: strategy(index),
                        log_likelihood: Some(-n * f.best.objective),
                        termination: Some(f.termination),
                        iterations: f.state.iter,
                        error: None,
                        retry_errors: retry_errors.clone(),
                        seconds: f.seconds,
                        start_seconds: *start_seconds,
                        start_em_seconds,
                    },
                    Err(e) => RestartSummary {
                        index,
                        init: strategy(index),
                        log_likelihood: None,
                        termination: None,
                        iterations: 0,
                        error: Some(e.to_string()),
                        retry_errors: retry_errors.clone(),
                        seconds: 0.0,
                        start_seconds: *start_seconds,
                        start_em_seconds,
                    },
                }
            })
            .collect();
        let mut best: Option<(usize, &(FitResult, Vec<f64>))> = None;
        for (i, (r, _, _)) in runs.iter().enumerate() {
            if let Ok(f) = r {
                if best.is_none_or(|(_, b)| f.0.best.objective < b.0.best.objective) {
                    best = Some((i, f));
                }
            }
        }
        let Some((best_restart, (result, start_theta))) = best else {
            let first = runs.into_iter().next().and_then(|(r, _, _)| r.err());
            return Err(first.unwrap_or(MoeError::InvalidParam {
                name: "n_init",
                reason: ">= 1".into(),
            }));
        };
        let theta = result.best.theta.clone();
        let (log_likelihood, entropy) = training_summaries(&model, data, &theta)?;
        let lls: Vec<f64> = restarts.iter().filter_map(|r| r.log_likelihood).collect();
        let report = FitReport {
            solver: name,
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
            start_theta: start_theta.clone(),
            ungated: ungated_fit,
        };
        FittedMoe::new(model, theta, data.feature_names().to_vec(), report)
    }
}
