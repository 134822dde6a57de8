//! A public equivalence harness: prove **EM ≡ mirror descent with unit step** for your
//! own model (a mixture of experts over your own exponential family, say) without
//! copying test code. Enabled by the default cargo feature `testkit`.
//!
//! ## What is compared
//!
//! From the same start $\theta_t$ on the same data, [`em_md_gap`] takes one **EM step**
//! through the model's own E-/M-step code ([`EmModel`], via the [`Em`] solver),
//! $$ \theta^+_{\mathrm{EM}} = \arg\max_\theta Q(\theta\mid\theta_t),\qquad
//!    Q(\theta\mid\theta_t) = \frac1n\sum_i \mathbb E_{z\sim p(z\mid x_i, y_i;\theta_t)}
//!    \big[\log p(y_i, z\mid x_i;\theta)\big], $$
//! and one **mirror-descent step** with step $\eta$ through [`MirrorDescent`], which sees
//! only the complete-data family and the realisation map ([`ConditionalFamily`]) and
//! minimises with L-BFGS — never the M-step:
//! $$ \theta^+_{\mathrm{MD}(\eta)} = \arg\min_\theta\ \langle\nabla\ell(\Phi_t), \Phi(\theta)\rangle +
//!    \tfrac1\eta D_{\mathcal A}(\Phi(\theta), \Phi_t). $$
//! Here $\ell$ is the average negative log-likelihood as a function of the stacked natural
//! parameters $\Phi = (\varphi_1, \dots, \varphi_n)$ (so $\nabla L(\theta_t) =
//! \sum_i J_i^\top\nabla_{\varphi_i}\ell$) and $D_{\mathcal A}$ the KL Bregman divergence of
//! the stacked complete-data log-partition $\mathcal A(\Phi) = \frac1n\sum_i A(\varphi_i)$,
//! $D_{\mathcal A}(\Phi, \Phi') = \frac1n\sum_i \mathrm{KL}(p_{\varphi'_i}\,\|\,p_{\varphi_i})$.
//! For a realisation linear in $\theta$ the first term is $\langle\nabla L(\theta_t), \theta\rangle$:
//! a step against the gradient, regularised by a KL instead of $\Vert\cdot\Vert^2$.
//!
//! At $\eta = 1$ both are the same argmin (the MD objective is $-Q$ up to a constant), so
//! the two steps agree to the inner solvers' accuracy; at $\eta \ne 1$ MD is a damped
//! ($\eta < 1$) or extrapolated ($\eta > 1$) EM and differs. The result, a [`Gap`], holds
//! both steps, $L$ at both, their **relative gaps** and both inner solvers' status:
//! $$ \mathrm{gap}_\theta = \frac{\Vert\theta^+_{\mathrm{MD}} - \theta^+_{\mathrm{EM}}\Vert_\infty}
//!    {\max(1, \Vert\theta^+_{\mathrm{EM}}\Vert_\infty)},\qquad
//!    \mathrm{gap}_L = \frac{|L(\theta^+_{\mathrm{MD}}) - L(\theta^+_{\mathrm{EM}})|}
//!    {\max(1, |L(\theta^+_{\mathrm{EM}})|)} $$
//! ([`relative_gap`], [`relative_gap_scalar`]: absolute below 1, relative above).
//! [`Gap::agrees`] asks for both gaps within a tolerance **and** both inner solves
//! converged, so an inner solver stopping early is a failure, never a pass.
//!
//! ## Random instances
//!
//! [`Simulate`] draws random parameters for a model (implemented for
//! [`MixtureOfExperts`] — any expert, including a [`Glm`](crate::Glm) over your own family —
//! and for [`SymMoLinE`], [`SymMoLogE`]); [`simulate`] draws targets from the model's own
//! complete-data family ($x_i$ from [`Features`], $(y_i, z_i) \sim p(\cdot\mid x_i;\theta)$
//! through [`ExponentialFamily::sample`](mirror::ExponentialFamily::sample) at
//! $\varphi_i(\theta)$, keeping $y_i$). The proptest strategies [`draws`] (data,
//! $\theta^\ast$ and a start $\theta_0$) and [`theta_strategy`] derive every seed from the
//! proptest RNG, so a fixed `rng_seed` makes a run reproducible, and a failing case prints
//! the seed that rebuilds it ([`draw`]). [`proptest`] is re-exported, so a user's crate
//! needs no version of its own.
//!
//! ## Example: EM ≡ MD(η = 1), and η = 0.5 differs
//!
//! ```
//! use em_as_md::testkit::proptest::prelude::*;
//! use em_as_md::testkit::{draws, em_md_gap, DrawConfig};
//! use em_as_md::{Gating, Logistic, MixtureOfExperts};
//! use std::sync::Arc;
//!
//! let model = || MixtureOfExperts::new(Arc::new(Logistic::new()), 2, 3, Gating::Softmax).unwrap();
//! let config = ProptestConfig { cases: 4, ..ProptestConfig::default() };
//! proptest!(config, |(draw in draws(model(), DrawConfig::default()).unwrap())| {
//!     let d = draw?; // a failed draw fails the case (never skipped)
//!     let em_md = em_md_gap(&model(), &d.data, &d.theta0, 1.0)?;
//!     prop_assert!(em_md.agrees(1e-8), "{em_md}");
//!     let damped = em_md_gap(&model(), &d.data, &d.theta0, 0.5)?;
//!     prop_assert!(damped.theta_gap > 0.1 * damped.em_step, "{damped}");
//! });
//! ```

use crate::data::Dataset;
use crate::error::{MoeError, Result};
use crate::inner::InnerStats;
use crate::model::mixture::MixtureOfExperts;
use crate::model::sym::{SymMoLinE, SymMoLogE};
use crate::model::{ConditionalFamily, EmModel};
use crate::solve::em::Em;
use crate::solve::md::MirrorDescent;
use crate::solve::problem::Problem;
use crate::solve::solver::{FitState, Solver};
use proptest::strategy::Strategy;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::ops::Range;

pub use proptest;

/// One EM step and one MD($\eta$) step from the same start, and how far apart they land
/// (see the [module documentation](self) for the definitions).
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// The mirror-descent step $\eta$.
    pub eta: f64,
    /// $L(\theta_t)$ at the start.
    pub objective_start: f64,
    /// $\theta^+_{\mathrm{EM}}$.
    pub theta_em: Vec<f64>,
    /// $\theta^+_{\mathrm{MD}(\eta)}$.
    pub theta_md: Vec<f64>,
    /// $L(\theta^+_{\mathrm{EM}})$.
    pub objective_em: f64,
    /// $L(\theta^+_{\mathrm{MD}(\eta)})$.
    pub objective_md: f64,
    /// $\Vert\theta^+_{\mathrm{MD}} - \theta^+_{\mathrm{EM}}\Vert_\infty / \max(1, \Vert\theta^+_{\mathrm{EM}}\Vert_\infty)$.
    pub theta_gap: f64,
    /// $|L(\theta^+_{\mathrm{MD}}) - L(\theta^+_{\mathrm{EM}})| / \max(1, |L(\theta^+_{\mathrm{EM}})|)$.
    pub objective_gap: f64,
    /// How far EM moved, $\Vert\theta^+_{\mathrm{EM}} - \theta_t\Vert_\infty / \max(1, \Vert\theta_t\Vert_\infty)$:
    /// a small gap means something only if the step itself is not small.
    pub em_step: f64,
    /// The M-step's inner status (closed forms report converged with residual 0).
    pub em_inner: InnerStats,
    /// The mirror-descent subproblem's inner status (L-BFGS).
    pub md_inner: InnerStats,
}

impl Gap {
    /// Both inner solves reached their tolerance.
    pub fn converged(&self) -> bool {
        self.em_inner.converged && self.md_inner.converged
    }
    /// $\mathrm{gap}_\theta \le$ `tol`, $\mathrm{gap}_L \le$ `tol` and both inner solves
    /// converged (a NaN gap never agrees).
    pub fn agrees(&self, tol: f64) -> bool {
        self.converged() && self.theta_gap <= tol && self.objective_gap <= tol
    }
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = |s: &InnerStats| {
            format!(
                "converged {}, residual {:.3e}, {} iterations",
                s.converged, s.residual, s.iterations
            )
        };
        write!(
            f,
            "EM vs MD(η = {}): θ gap {:.3e}, L gap {:.3e}, EM step {:.3e}; \
             L: start {}, EM {}, MD {}; EM inner: {}; MD inner: {}",
            self.eta,
            self.theta_gap,
            self.objective_gap,
            self.em_step,
            self.objective_start,
            self.objective_em,
            self.objective_md,
            inner(&self.em_inner),
            inner(&self.md_inner)
        )
    }
}

/// $\Vert a - b\Vert_\infty / \max(1, \Vert b\Vert_\infty)$: relative to `b` when it is
/// larger than 1, absolute otherwise (so entries near 0 do not blow the ratio up).
///
/// # Errors
/// `InvalidParam { name: "theta" }` when the lengths differ.
pub fn relative_gap(a: &[f64], b: &[f64]) -> Result<f64> {
    if a.len() != b.len() {
        return Err(MoeError::InvalidParam {
            name: "theta",
            reason: format!("vectors of equal length, got {} and {}", a.len(), b.len()),
        });
    }
    // fold with f64::max would drop NaN; a NaN entry must make the gap NaN.
    let mut num = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let e = (x - y).abs();
        if e.is_nan() || e > num {
            num = e;
        }
    }
    let den = b.iter().fold(1.0f64, |m, y| m.max(y.abs()));
    Ok(num / den)
}

/// $|a - b| / \max(1, |b|)$.
pub fn relative_gap_scalar(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1.0)
}

fn check_theta<M: ConditionalFamily + ?Sized>(
    model: &M,
    theta: &[f64],
    name: &'static str,
) -> Result<()> {
    if theta.len() != model.n_params() {
        return Err(MoeError::InvalidParam {
            name,
            reason: format!(
                "expected {} parameters, found {}",
                model.n_params(),
                theta.len()
            ),
        });
    }
    if let Some(j) = theta.iter().position(|v| !v.is_finite()) {
        return Err(MoeError::InvalidParam {
            name,
            reason: format!("entry {j} is {}, expected a finite value", theta[j]),
        });
    }
    Ok(())
}

fn check_scale(name: &'static str, scale: f64) -> Result<()> {
    if scale > 0.0 && scale.is_finite() {
        Ok(())
    } else {
        Err(MoeError::InvalidParam {
            name,
            reason: format!("finite and > 0, got {scale}"),
        })
    }
}

/// One EM step and one MD($\eta$) step from `theta0` on `data`, compared (see the
/// [module documentation](self)).
///
/// # Errors
/// `InvalidParam { name: "eta" }` unless $\eta$ is finite and $> 0$;
/// `InvalidParam { name: "theta0" }` for a wrong length or a non-finite entry;
/// `InvalidData` for empty data or data whose shape does not fit the model; otherwise
/// whatever the E-step, the M-step or the mirror-descent step returns (e.g.
/// `LeftDomain`) — never a panic.
pub fn em_md_gap<M>(model: &M, data: &Dataset, theta0: &[f64], eta: f64) -> Result<Gap>
where
    M: EmModel + ?Sized,
    M::Stats: 'static,
{
    check_scale("eta", eta)?;
    check_theta(model, theta0, "theta0")?;
    if data.n() == 0 {
        return Err(MoeError::InvalidData {
            row: None,
            column: None,
            reason: "the data set has no rows".into(),
        });
    }
    let problem = Problem::new(model, data)?;
    let l0 = problem.objective(theta0)?;
    let (em, em_rec) = Em::new().next_iter(&problem, FitState::new(theta0.to_vec(), l0))?;
    let (md, md_rec) = MirrorDescent::with_eta(eta)?
        .with_bregman(false)
        .next_iter(&problem, FitState::new(theta0.to_vec(), l0))?;
    Ok(Gap {
        eta,
        objective_start: l0,
        theta_gap: relative_gap(&md.theta, &em.theta)?,
        objective_gap: relative_gap_scalar(md.objective, em.objective),
        em_step: relative_gap(&em.theta, theta0)?,
        objective_em: em.objective,
        objective_md: md.objective,
        theta_em: em.theta,
        theta_md: md.theta,
        em_inner: em_rec.inner,
        md_inner: md_rec.inner,
    })
}

/// A model that can draw random parameters for the harness: for data-generating
/// parameters $\theta^\ast$ and for starts $\theta_0$. Implement it for your own
/// [`ConditionalFamily`]; a mixture of experts over your own family already has it.
pub trait Simulate: ConditionalFamily {
    /// A random $\theta$ of length [`n_params`](ConditionalFamily::n_params) at size
    /// `scale` (> 0), drawn from `rng` only, with $\varphi_i(\theta)$ in the natural
    /// domain for the features the model is meant for.
    ///
    /// # Errors
    /// Whatever prevents a draw (e.g. an invalid `scale`).
    fn draw_theta(&self, rng: &mut dyn RngCore, scale: f64) -> Result<Vec<f64>>;
}

/// Gate entries $\sim N(0, \text{scale}^2)$, experts from
/// [`Expert::init_params`](crate::Expert::init_params) (in the domain for every $x$ with
/// $x_0 = 1$ for a [`Glm`](crate::Glm)): [`MixtureOfExperts::random_params`].
impl Simulate for MixtureOfExperts {
    fn draw_theta(&self, rng: &mut dyn RngCore, scale: f64) -> Result<Vec<f64>> {
        check_scale("scale", scale)?;
        Ok(self.random_params(rng, scale))
    }
}

/// $\mathrm{SNR} = \Vert\beta\Vert/\sigma$ and $\Vert w\Vert$ each `scale` times a
/// $U(0.5, 2)$ draw, directions uniform ([`SymMoLinE::random_theta`]).
impl Simulate for SymMoLinE {
    fn draw_theta(&self, rng: &mut dyn RngCore, scale: f64) -> Result<Vec<f64>> {
        check_scale("scale", scale)?;
        let snr = scale * rng.random_range(0.5..2.0);
        let gate = scale * rng.random_range(0.5..2.0);
        self.random_theta(snr, gate, rng.next_u64())
    }
}

/// $\Vert\beta\Vert$ and $\Vert w\Vert$ each `scale` times a $U(0.5, 2)$ draw,
/// directions uniform ([`SymMoLogE::random_theta`]).
impl Simulate for SymMoLogE {
    fn draw_theta(&self, rng: &mut dyn RngCore, scale: f64) -> Result<Vec<f64>> {
        check_scale("scale", scale)?;
        let beta = scale * rng.random_range(0.5..2.0);
        let gate = scale * rng.random_range(0.5..2.0);
        self.random_theta(beta, gate, rng.next_u64())
    }
}

/// How the (non-intercept) features are drawn, independently per entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Features {
    /// $N(0, 1)$.
    Normal,
    /// $U(\text{low}, \text{high})$.
    Uniform {
        /// Lower end.
        low: f64,
        /// Upper end (> `low`).
        high: f64,
    },
}

/// What [`draws`] / [`draw`] generate.
#[derive(Debug, Clone, PartialEq)]
pub struct DrawConfig {
    /// The number of rows $n$, drawn uniformly from this range (start $\ge 1$).
    pub rows: Range<usize>,
    /// Whether feature 0 is the intercept 1 ([`Dataset::with_intercept`]); the other
    /// `n_features() − 1` features come from [`features`](Self::features).
    pub intercept: bool,
    /// The distribution of the features.
    pub features: Features,
    /// The `scale` of the data-generating $\theta^\ast$ ([`Simulate::draw_theta`]).
    pub truth_scale: f64,
    /// The `scale` of the start $\theta_0$, drawn independently of $\theta^\ast$.
    pub start_scale: f64,
}

impl Default for DrawConfig {
    /// 200–400 rows, an intercept and $N(0,1)$ features, $\theta^\ast$ at scale 1 and
    /// $\theta_0$ at scale 0.5.
    fn default() -> Self {
        DrawConfig {
            rows: 200..400,
            intercept: true,
            features: Features::Normal,
            truth_scale: 1.0,
            start_scale: 0.5,
        }
    }
}

impl DrawConfig {
    /// Checks the settings against `model`.
    ///
    /// # Errors
    /// `InvalidParam` naming the field: an empty `rows` range or one starting at 0, a
    /// non-positive or non-finite scale, uniform features with `low >= high` or a
    /// non-finite end, or `intercept` for a model with no feature.
    pub fn check<M: ConditionalFamily + ?Sized>(&self, model: &M) -> Result<()> {
        if self.rows.start == 0 || self.rows.is_empty() {
            return Err(MoeError::InvalidParam {
                name: "rows",
                reason: format!("a non-empty range of at least 1 row, got {:?}", self.rows),
            });
        }
        check_scale("truth_scale", self.truth_scale)?;
        check_scale("start_scale", self.start_scale)?;
        if let Features::Uniform { low, high } = self.features {
            if !(low.is_finite() && high.is_finite() && low < high) {
                return Err(MoeError::InvalidParam {
                    name: "features",
                    reason: format!("finite low < high, got U({low}, {high})"),
                });
            }
        }
        if self.intercept && model.n_features() == 0 {
            return Err(MoeError::InvalidParam {
                name: "intercept",
                reason: "the model takes no feature to hold the intercept".into(),
            });
        }
        Ok(())
    }
}

/// $n$ rows from the model at `theta`: features as `features` (after an intercept 1 when
/// `intercept`), then $(y_i, z_i) \sim p(\cdot\mid x_i;\theta)$ from the complete-data
/// family at $\varphi_i(\theta)$, keeping $y_i$.
///
/// # Errors
/// `InvalidParam` for a wrong or non-finite `theta`, $n = 0$ or an intercept with no
/// feature; `Mirror` when the family cannot sample at some $\varphi_i(\theta)$ (e.g. it
/// is outside the natural domain); `InvalidData` if a draw is not finite.
pub fn simulate<M: ConditionalFamily + ?Sized>(
    model: &M,
    theta: &[f64],
    n: usize,
    intercept: bool,
    features: Features,
    rng: &mut dyn RngCore,
) -> Result<Dataset> {
    check_theta(model, theta, "theta")?;
    if n == 0 {
        return Err(MoeError::InvalidParam {
            name: "n",
            reason: "at least one row".into(),
        });
    }
    let d = model.n_features();
    let first = usize::from(intercept);
    if first > d {
        return Err(MoeError::InvalidParam {
            name: "intercept",
            reason: "the model takes no feature to hold the intercept".into(),
        });
    }
    let fam = model.complete();
    let q = fam.obs_dim().checked_sub(1).ok_or(MoeError::InvalidParam {
        name: "model",
        reason: "the complete-data observation has no latent label".into(),
    })?;
    let mut row = vec![1.0; d];
    let (mut x, mut y) = (
        Vec::with_capacity(n * (d - first)),
        Vec::with_capacity(n * q),
    );
    let (mut phi, mut obs) = (vec![0.0; fam.dim()], vec![0.0; fam.obs_dim()]);
    for _ in 0..n {
        for v in row[first..].iter_mut() {
            *v = match features {
                Features::Normal => StandardNormal.sample(rng),
                Features::Uniform { low, high } => rng.random_range(low..high),
            };
        }
        x.extend_from_slice(&row[first..]);
        model.realise(theta, &row, &mut phi);
        fam.sample(&phi, rng, &mut obs)?;
        y.extend_from_slice(&obs[..q]);
    }
    let data = Dataset::from_rows(&x, d - first, &y, q)?;
    Ok(if intercept {
        data.with_intercept()
    } else {
        data
    })
}

/// A random instance: data drawn from the model at $\theta^\ast$, and a start
/// $\theta_0$ drawn independently. Its `Debug` shows the seed and shapes, not the rows.
#[derive(Clone)]
pub struct Draw {
    /// The seed that rebuilds this draw through [`draw`].
    pub seed: u64,
    /// The data.
    pub data: Dataset,
    /// The data-generating parameters $\theta^\ast$.
    pub theta_true: Vec<f64>,
    /// The start $\theta_0$ of the step to compare.
    pub theta0: Vec<f64>,
}

impl std::fmt::Debug for Draw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Draw")
            .field("seed", &self.seed)
            .field("n", &self.data.n())
            .field("d", &self.data.d())
            .field("q", &self.data.q())
            .field("theta_true", &self.theta_true)
            .field("theta0", &self.theta0)
            .finish()
    }
}

/// The draw with `n` rows and seed `seed` (ChaCha8): $\theta^\ast$ at
/// `config.truth_scale`, the data ([`simulate`]), then $\theta_0$ at `config.start_scale`.
/// Deterministic: the same arguments give the same draw on every platform.
///
/// # Errors
/// As [`DrawConfig::check`] (except `rows`: `n` is given), [`Simulate::draw_theta`] and
/// [`simulate`].
pub fn draw<M: Simulate + ?Sized>(
    model: &M,
    config: &DrawConfig,
    n: usize,
    seed: u64,
) -> Result<Draw> {
    DrawConfig {
        rows: n.max(1)..n.max(1) + 1,
        ..config.clone()
    }
    .check(model)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let theta_true = model.draw_theta(&mut rng, config.truth_scale)?;
    let data = simulate(
        model,
        &theta_true,
        n,
        config.intercept,
        config.features,
        &mut rng,
    )?;
    let theta0 = model.draw_theta(&mut rng, config.start_scale)?;
    check_theta(model, &theta0, "theta0")?;
    Ok(Draw {
        seed,
        data,
        theta_true,
        theta0,
    })
}

/// A proptest strategy of [`Draw`]s for `model`: $n$ uniform in `config.rows` and a seed,
/// both from the proptest RNG, passed to [`draw`]. A draw that fails is an `Err` value —
/// the test decides (`let d = draw?;` fails the case), nothing is filtered out.
///
/// # Errors
/// As [`DrawConfig::check`], before any draw.
pub fn draws<M: Simulate + 'static>(
    model: M,
    config: DrawConfig,
) -> Result<impl Strategy<Value = Result<Draw>>> {
    config.check(&model)?;
    let rows = config.rows.clone();
    Ok((rows, proptest::num::u64::ANY).prop_map(move |(n, seed)| draw(&model, &config, n, seed)))
}

/// A proptest strategy of random parameters for `model` at size `scale`
/// ([`Simulate::draw_theta`] with a ChaCha8 seeded from the proptest RNG).
///
/// # Errors
/// `InvalidParam { name: "scale" }` unless `scale` is finite and $> 0$.
pub fn theta_strategy<M: Simulate + 'static>(
    model: M,
    scale: f64,
) -> Result<impl Strategy<Value = Result<Vec<f64>>>> {
    check_scale("scale", scale)?;
    Ok(proptest::num::u64::ANY.prop_map(move |seed| {
        let theta = model.draw_theta(&mut ChaCha8Rng::seed_from_u64(seed), scale)?;
        check_theta(&model, &theta, "theta")?;
        Ok(theta)
    }))
}

/// A model seen through its row functions only: every per-row function of
/// [`ConditionalFamily`] forwarded to `model`, none of its whole-pass fast paths
/// ([`objective_pass`](ConditionalFamily::objective_pass),
/// [`point_rows`](ConditionalFamily::point_rows),
/// [`observed_sums`](ConditionalFamily::observed_sums)) and, unless built by
/// [`with_information_sums`](Self::with_information_sums), neither its
/// [`information_sums`](ConditionalFamily::information_sums) nor its
/// [`curvature_sums`](ConditionalFamily::curvature_sums). What a test compares a model's
/// fast paths with: the generic paths on the **same** model.
pub struct RowFunctionsOnly<'a, M: ?Sized> {
    model: &'a M,
    sums: bool,
}

impl<'a, M: ConditionalFamily + ?Sized> RowFunctionsOnly<'a, M> {
    /// `model` through its row functions alone.
    pub fn new(model: &'a M) -> Self {
        RowFunctionsOnly { model, sums: false }
    }
    /// `model` through its row functions and its `information_sums` and
    /// `curvature_sums`: a model written before the one-pass `observed_sums`.
    pub fn with_information_sums(model: &'a M) -> Self {
        RowFunctionsOnly { model, sums: true }
    }
}

impl<M: ConditionalFamily + ?Sized> ConditionalFamily for RowFunctionsOnly<'_, M> {
    fn complete(&self) -> &dyn mirror::ExponentialFamily {
        self.model.complete()
    }
    fn n_latent(&self) -> usize {
        self.model.n_latent()
    }
    fn n_params(&self) -> usize {
        self.model.n_params()
    }
    fn n_features(&self) -> usize {
        self.model.n_features()
    }
    fn realise(&self, theta: &[f64], x: &[f64], phi: &mut [f64]) {
        self.model.realise(theta, x, phi)
    }
    fn realise_vjp(&self, theta: &[f64], x: &[f64], v: &[f64], grad: &mut [f64]) {
        self.model.realise_vjp(theta, x, v, grad)
    }
    fn penalty(&self, theta: &[f64]) -> f64 {
        self.model.penalty(theta)
    }
    fn penalty_gradient(&self, theta: &[f64], grad: &mut [f64]) {
        self.model.penalty_gradient(theta, grad)
    }
    fn is_penalised(&self) -> bool {
        self.model.is_penalised()
    }
    fn is_linear(&self) -> bool {
        self.model.is_linear()
    }
    fn row_work_len(&self) -> usize {
        self.model.row_work_len()
    }
    fn complete_log_partition(&self, phi: &[f64], work: &mut [f64]) -> mirror::Result<f64> {
        self.model.complete_log_partition(phi, work)
    }
    fn complete_mean(&self, phi: &[f64], mu: &mut [f64], work: &mut [f64]) -> mirror::Result<()> {
        self.model.complete_mean(phi, mu, work)
    }
    fn complete_fisher(
        &self,
        phi: &[f64],
        out: faer::MatMut<'_, f64>,
        work: &mut [f64],
    ) -> mirror::Result<()> {
        self.model.complete_fisher(phi, out, work)
    }
    fn realise_jacobian_t(
        &self,
        theta: &[f64],
        x: &[f64],
        jac_t: crate::model::conditional::JacT<'_>,
        work: &mut [f64],
    ) {
        self.model.realise_jacobian_t(theta, x, jac_t, work)
    }
    fn information_sums(
        &self,
        data: &Dataset,
        theta: &[f64],
    ) -> Option<(faer::Mat<f64>, faer::Mat<f64>)> {
        self.sums
            .then(|| self.model.information_sums(data, theta))
            .flatten()
    }
    fn curvature_sums(&self, data: &Dataset, theta: &[f64]) -> Option<faer::Mat<f64>> {
        self.sums
            .then(|| self.model.curvature_sums(data, theta))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::expert::LinearGaussian;
    use crate::model::mixture::Gating;
    use std::sync::Arc;

    fn model() -> MixtureOfExperts {
        MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 2, Gating::Softmax).unwrap()
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let m = model();
        let d = draw(&m, &DrawConfig::default(), 50, 1).unwrap();
        let name = |e: MoeError| match e {
            MoeError::InvalidParam { name, .. } => name,
            other => panic!("expected InvalidParam, got {other:?}"),
        };
        for eta in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                name(em_md_gap(&m, &d.data, &d.theta0, eta).unwrap_err()),
                "eta"
            );
        }
        let short = &d.theta0[1..];
        assert_eq!(
            name(em_md_gap(&m, &d.data, short, 1.0).unwrap_err()),
            "theta0"
        );
        let mut nan = d.theta0.clone();
        nan[0] = f64::NAN;
        assert_eq!(
            name(em_md_gap(&m, &d.data, &nan, 1.0).unwrap_err()),
            "theta0"
        );
        assert_eq!(
            name(relative_gap(&[1.0], &[1.0, 2.0]).unwrap_err()),
            "theta"
        );
        let bad_rows = DrawConfig {
            rows: 0..10,
            ..DrawConfig::default()
        };
        assert_eq!(name(bad_rows.check(&m).unwrap_err()), "rows");
        assert_eq!(
            name(draw(&m, &DrawConfig::default(), 0, 1).unwrap_err()),
            "n"
        );
        let bad_scale = DrawConfig {
            truth_scale: 0.0,
            ..DrawConfig::default()
        };
        assert!(draws(m.clone(), bad_scale).is_err());
        assert!(theta_strategy(m.clone(), f64::NAN).is_err());
        // Data of the wrong width for the model.
        let other =
            MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 4, Gating::Softmax).unwrap();
        let t = other.random_params(&mut ChaCha8Rng::seed_from_u64(0), 0.5);
        assert!(matches!(
            em_md_gap(&other, &d.data, &t, 1.0),
            Err(MoeError::InvalidData { .. })
        ));
    }

    #[test]
    fn draws_are_reproducible_and_gaps_are_relative() {
        let m = model();
        let cfg = DrawConfig::default();
        let (a, b) = (
            draw(&m, &cfg, 30, 9).unwrap(),
            draw(&m, &cfg, 30, 9).unwrap(),
        );
        assert_eq!(a.data.y_all(), b.data.y_all());
        assert_eq!((a.theta_true, a.theta0), (b.theta_true, b.theta0));
        assert_eq!(a.data.x(3)[0], 1.0, "feature 0 is the intercept");
        assert_eq!(relative_gap(&[1.0, 2.5], &[1.0, 2.0]).unwrap(), 0.25);
        assert_eq!(relative_gap(&[0.1], &[0.0]).unwrap(), 0.1);
        assert!(relative_gap(&[f64::NAN], &[0.0]).unwrap().is_nan());
        assert_eq!(relative_gap_scalar(-3.0, -2.0), 0.5);
    }
}
