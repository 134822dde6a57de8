//! The objective and its geometry, computed from a [`ConditionalFamily`] only.
//!
//! With $\Phi = (\varphi_1, …, \varphi_n)$ and $p(y, z; \varphi) = h(y,z)
//! e^{\langle T(y,z), \varphi\rangle - A(\varphi)}$:
//!
//! * objective $\ell(\Phi) = -\frac1n \sum_i \log \sum_z p(y_i, z; \varphi_i)$ and
//!   $L(\theta) = \ell(\Phi(\theta))$ ([`Problem::objective`]);
//! * $\nabla_{\varphi_i}\ell = \frac1n\big(\nabla A(\varphi_i) - \mathbb E_{z\sim p(z\mid y_i;\varphi_i)}[T(y_i, z)]\big)$
//!   and $\nabla L(\theta) = \sum_i J_i(\theta)^\top \nabla_{\varphi_i}\ell$
//!   ([`Problem::objective_and_gradient`]);
//! * the stacked mirror map $\mathcal A(\Phi) = \frac1n\sum_i A(\varphi_i)$ ([`StackedLogPartition`])
//!   with $D_{\mathcal A}(\Phi, \Phi') = \frac1n\sum_i \mathrm{KL}(p_{\varphi'_i}\,\|\,p_{\varphi_i})$
//!   ([`Problem::stacked_bregman`]);
//! * the mirror-descent subproblem with step $\eta$ ([`Problem::md_subproblem`]):
//!   $F_\eta(\theta) = \frac1n\sum_i \big[A(\varphi_i(\theta)) - \langle m_i, \varphi_i(\theta)\rangle\big]$,
//!   $m_i = (1-\eta)\nabla A(\varphi_{t,i}) + \eta\,\mathbb E_{\text{post},t}[T(y_i, z)]$,
//!   whose minimiser is $\arg\min_\theta \langle\nabla\ell(\Phi_t), \Phi(\theta)\rangle
//!   + \frac1\eta D_{\mathcal A}(\Phi(\theta), \Phi_t)$ (both differ by $\frac1{\eta}$ and a constant).
//!
//! Every sum over rows runs through [`fold_rows`]: parallel,
//! and bit-identical for any thread count.

use crate::data::Dataset;
use crate::error::{MoeError, Result};
use crate::inner::parallel::{fold_rows, fold_rows_with};
use crate::model::conditional::ConditionalFamily;
use mirror::special::log_sum_exp;
use mirror::{ExponentialFamily, MirrorError, MirrorMap};
use rayon::prelude::*;
use std::ops::Range;

/// A model together with the data it is evaluated on.
pub struct Problem<'a, M: ?Sized> {
    /// The model (realisation map + complete-data family).
    pub model: &'a M,
    /// The data.
    pub data: &'a Dataset,
}

impl<M: ?Sized> Clone for Problem<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M: ?Sized> Copy for Problem<'_, M> {}

/// Per-chunk scratch for the row kernel (allocated once per chunk, never per row).
pub struct RowScratch {
    /// $\varphi_i$.
    pub phi: Vec<f64>,
    /// $\nabla A(\varphi_i)$.
    pub mean: Vec<f64>,
    /// $\mathbb E_{\text{post}}[T(y_i, z)]$.
    pub post_stats: Vec<f64>,
    /// Posterior probabilities $p(z \mid y_i; \varphi_i)$.
    pub resp: Vec<f64>,
    /// $A(\varphi_i)$ as computed by the last [`row_posterior`] (NaN before the first).
    pub log_partition: f64,
    /// Work buffer of length [`ConditionalFamily::row_work_len`] for the model's
    /// allocation-free row functions (`complete_log_partition`, `complete_mean`,
    /// `complete_fisher`, `realise_jacobian_t`).
    pub work: Vec<f64>,
    ob: RowObservation,
}

impl RowScratch {
    /// Buffers sized for `model`.
    pub fn new<M: ConditionalFamily + ?Sized>(model: &M) -> Self {
        let p = model.complete().dim();
        let k = model.n_latent();
        RowScratch {
            phi: vec![0.0; p],
            mean: vec![0.0; p],
            post_stats: vec![0.0; p],
            resp: vec![0.0; k],
            log_partition: f64::NAN,
            work: vec![0.0; model.row_work_len()],
            ob: RowObservation::new(model),
        }
    }
}

/// The part of [`row_posterior`] that depends on the target $y$ only: for every latent
/// state $z$, whether $(y, z)$ is in the support, $T(y, z)$ and $\log h(y, z)$. Set once
/// per row ([`RowObservation::set`]), it serves every $\varphi$ evaluated on that row
/// ([`row_posterior_given`]): a pass that evaluates many parameters per row (the
/// diagnostics' batched Bregman ratios) computes these terms once instead of once per
/// parameter.
#[derive(Debug, Clone)]
pub struct RowObservation {
    /// $(y_1, \dots, y_q, z)$: the family's observation layout.
    obs: Vec<f64>,
    /// $T(y, z)$ for $z = 0, \dots, K-1$ ($K \times p$; zero outside the support).
    pub(crate) t: Vec<f64>,
    /// $\log h(y, z)$ (unused outside the support).
    pub(crate) log_h: Vec<f64>,
    /// Whether $(y, z)$ is in the support.
    pub(crate) support: Vec<bool>,
}

impl RowObservation {
    /// Buffers sized for `model`.
    pub fn new<M: ConditionalFamily + ?Sized>(model: &M) -> Self {
        let fam = model.complete();
        let k = model.n_latent();
        RowObservation {
            obs: vec![0.0; fam.obs_dim()],
            t: vec![0.0; fam.dim() * k],
            log_h: vec![0.0; k],
            support: vec![false; k],
        }
    }

    /// Fills the terms of target `y` (length `complete().obs_dim() - 1`) for `model`.
    pub fn set<M: ConditionalFamily + ?Sized>(&mut self, model: &M, y: &[f64]) {
        let fam = model.complete();
        let p = fam.dim();
        let q = y.len();
        self.obs[..q].copy_from_slice(y);
        for z in 0..model.n_latent() {
            self.obs[q] = z as f64;
            let tz = &mut self.t[z * p..(z + 1) * p];
            self.support[z] = fam.in_support(&self.obs);
            if self.support[z] {
                fam.sufficient_stats(&self.obs, tz);
                self.log_h[z] = fam.log_base_measure(&self.obs);
            } else {
                tz.iter_mut().for_each(|v| *v = 0.0);
            }
        }
    }

    /// $T(y, z)$ of the last [`set`](Self::set), or `None` when $(y, z)$ is outside the
    /// support (or $z \ge K$).
    pub fn stats(&self, z: usize) -> Option<&[f64]> {
        let p = self.t.len() / self.support.len().max(1);
        self.support
            .get(z)
            .copied()
            .unwrap_or(false)
            .then(|| &self.t[z * p..(z + 1) * p])
    }
}

/// Row kernel: given $\varphi$ in `s.phi`, computes the posterior $p(z\mid y;\varphi)$
/// into `s.resp`, $\mathbb E_{\text{post}}[T(y,z)]$ into `s.post_stats`, $A(\varphi)$ into
/// `s.log_partition` (through [`ConditionalFamily::complete_log_partition`] with `s.work`,
/// so callers need no second evaluation), and returns
/// $\log p(y;\varphi) = \log\sum_z h(y,z)e^{\langle T(y,z),\varphi\rangle} - A(\varphi)$.
/// The same as [`RowObservation::set`] then [`row_posterior_given`].
///
/// # Errors
/// `InvalidData` for row `row` when $y$ has probability zero under every $z$ (a target
/// outside the support), `Mirror` if $A(\varphi)$ is not finite.
pub fn row_posterior<M: ConditionalFamily + ?Sized>(
    model: &M,
    y: &[f64],
    row: usize,
    s: &mut RowScratch,
) -> Result<f64> {
    s.ob.set(model, y);
    let RowScratch {
        phi,
        post_stats,
        resp,
        log_partition,
        work,
        ob,
        ..
    } = s;
    posterior_given(model, ob, row, phi, resp, post_stats, work, log_partition)
}

/// [`row_posterior`] with the target's terms already in `ob` (set by
/// [`RowObservation::set`] for this row): bit-identical to it, without recomputing
/// $T(y, z)$, $\log h(y, z)$ and the support per call.
///
/// # Errors
/// As [`row_posterior`].
pub fn row_posterior_given<M: ConditionalFamily + ?Sized>(
    model: &M,
    ob: &RowObservation,
    row: usize,
    s: &mut RowScratch,
) -> Result<f64> {
    let RowScratch {
        phi,
        post_stats,
        resp,
        log_partition,
        work,
        ..
    } = s;
    posterior_given(model, ob, row, phi, resp, post_stats, work, log_partition)
}

/// The body of [`row_posterior`] (one function for both entry points).
#[allow(clippy::too_many_arguments)]
fn posterior_given<M: ConditionalFamily + ?Sized>(
    model: &M,
    ob: &RowObservation,
    row: usize,
    phi: &[f64],
    resp: &mut [f64],
    post_stats: &mut [f64],
    work: &mut [f64],
    log_partition: &mut f64,
) -> Result<f64> {
    let fam = model.complete();
    let p = fam.dim();
    let k = model.n_latent();
    for (z, rz) in resp.iter_mut().enumerate().take(k) {
        *rz = if ob.support[z] {
            let inner: f64 = ob.t[z * p..(z + 1) * p]
                .iter()
                .zip(phi)
                .map(|(a, b)| a * b)
                .sum();
            ob.log_h[z] + inner
        } else {
            f64::NEG_INFINITY
        };
    }
    let log_num = log_sum_exp(resp);
    if log_num == f64::NEG_INFINITY {
        let y = &ob.obs[..ob.obs.len() - 1];
        return Err(MoeError::InvalidData {
            row: Some(row),
            column: None,
            reason: format!("target {y:?} is outside the support of {}", fam.name()),
        });
    }
    let a = model.complete_log_partition(phi, work)?;
    *log_partition = a;
    if !log_num.is_finite() || !a.is_finite() {
        return Err(MoeError::NonFinite {
            what: "row log-likelihood",
        });
    }
    for r in resp.iter_mut() {
        *r = (*r - log_num).exp();
    }
    post_stats.iter_mut().for_each(|v| *v = 0.0);
    for (z, &r) in resp.iter().enumerate().take(k) {
        if r > 0.0 {
            for (o, t) in post_stats.iter_mut().zip(&ob.t[z * p..(z + 1) * p]) {
                *o += r * t;
            }
        }
    }
    Ok(log_num - a)
}

/// The row quantities of **one parameter point** $\theta$, for passes that evaluate many
/// points on every row (the diagnostics' batched Bregman ratios): per row $i$,
/// $\varphi_i(\theta)$, the posterior $p(z\mid y_i;\varphi_i)$, $\mathbb E_{\text{post}}\[T(y_i, z)\]$,
/// $A(\varphi_i)$ and $\log p(y_i\mid x_i;\theta) = \log\sum_z h(y_i,z)e^{\langle T(y_i,z),\varphi_i\rangle} - A(\varphi_i)$
/// ([`posterior`](Self::posterior)), and on demand $\nabla A(\varphi_i)$
/// ([`mean`](Self::mean)). Built once per point by [`point_rows`], which gives the
/// model's own evaluator ([`ConditionalFamily::point_rows`], e.g. the mixture of
/// experts') or the generic one ([`GenericPointRows`]). Every evaluator gives the numbers
/// of the generic row functions up to round-off, and their errors: a model's evaluator
/// hoists what does not depend on the row and skips recomputation (the mixture's gives
/// the same bits except for the posterior probabilities, which it takes from the
/// log-sum-exp's exponentials, so they and $\mathbb E_{\text{post}}\[T\]$ may differ in
/// the last bits).
pub trait PointRows: Send + Sync {
    /// Row `row` (features `x`, target terms `ob` set for its $y$): writes $\varphi_i$ into
    /// `s.phi`, the posterior into `s.resp`, $\mathbb E_{\text{post}}\[T\]$ into
    /// `s.post_stats`, $A(\varphi_i)$ into `s.log_partition`, and returns
    /// $\log p(y_i\mid x_i;\theta)$; `s.work` may keep state for [`mean`](Self::mean).
    ///
    /// # Errors
    /// As [`ConditionalFamily::realise`] followed by [`row_posterior_given`].
    fn posterior(
        &self,
        x: &[f64],
        ob: &RowObservation,
        row: usize,
        s: &mut RowScratch,
    ) -> Result<f64>;
    /// $\nabla A(\varphi_i)$ into `s.mean`, for the $\varphi_i$ of the last successful
    /// [`posterior`](Self::posterior) call on the same `s` (call it right after).
    ///
    /// # Errors
    /// As [`ConditionalFamily::complete_mean`].
    fn mean(&self, s: &mut RowScratch) -> Result<()>;
    /// The rows `rows` of `data` at once (at most [`PointBlock::capacity`] of them, `obs[l]`
    /// set for row `rows.start + l`): for every row what [`posterior`](Self::posterior)
    /// computes, and with `with_mean` what [`mean`](Self::mean) does, into `out`,
    /// column by column ([`PointBlock`]). The rows are evaluated in order and the first
    /// failures reported ([`BlockFailures`]): a row whose posterior fails ends the block
    /// (the values of it and of the rows after it are unspecified); a row whose mean fails
    /// is reported once and no further mean is computed.
    ///
    /// Default: row by row through [`posterior`](Self::posterior) and
    /// [`mean`](Self::mean) ([`posterior_rows_into`]), so an evaluator without a block
    /// version gives its own numbers. An override (the mixture of experts', which takes the
    /// block's exponentials in one vectorised call) must give the per-row numbers up to
    /// round-off and the per-row errors: it is tested against the default.
    fn posterior_block(
        &self,
        data: &Dataset,
        rows: Range<usize>,
        obs: &[RowObservation],
        with_mean: bool,
        sc: &mut BlockScratch,
        out: &mut PointBlock,
    ) -> BlockFailures {
        out.start(rows.len());
        let mut fails = BlockFailures::default();
        posterior_rows_into(self, data, rows, obs, with_mean, sc, out, &mut fails);
        fails
    }
}

/// Rows per block of the diagnostics' blocked passes ([`PointRows::posterior_block`]):
/// small enough that the blocks of a hundred parameter points stay in a core's cache,
/// large enough to vectorise the exponentials and amortise a call per point.
pub const POINT_BLOCK_ROWS: usize = 32;

/// One parameter point's row quantities on a block of $m$ consecutive rows, written by
/// [`PointRows::posterior_block`], **column by column**: component $j$ of row $l$ at
/// index $jm + l$ of `phi`, `mean`, `post_stats` (use [`col`](Self::col)).
#[derive(Debug, Clone)]
pub struct PointBlock {
    cap: usize,
    rows: usize,
    /// $\varphi_i$ (`dim` columns).
    pub phi: Vec<f64>,
    /// $\nabla A(\varphi_i)$ (`dim` columns; only when the mean was asked for).
    pub mean: Vec<f64>,
    /// $\mathbb E_{\text{post}}\[T(y_i, z)\]$ (`dim` columns).
    pub post_stats: Vec<f64>,
    /// $\log p(y_i\mid x_i;\theta)$.
    pub log_lik: Vec<f64>,
    /// $A(\varphi_i)$.
    pub log_partition: Vec<f64>,
}

impl PointBlock {
    /// Buffers for up to `cap` rows of `model`.
    pub fn new<M: ConditionalFamily + ?Sized>(model: &M, cap: usize) -> Self {
        let p = model.complete().dim();
        PointBlock {
            cap,
            rows: 0,
            phi: vec![0.0; p * cap],
            mean: vec![0.0; p * cap],
            post_stats: vec![0.0; p * cap],
            log_lik: vec![0.0; cap],
            log_partition: vec![0.0; cap],
        }
    }
    /// The most rows a block holds.
    pub fn capacity(&self) -> usize {
        self.cap
    }
    /// The rows $m$ of the last block (the column stride).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Starts a block of `m` rows (the layout's stride).
    ///
    /// # Panics
    /// If `m` exceeds the capacity (a caller's bug).
    pub fn start(&mut self, m: usize) {
        assert!(m <= self.cap, "block of {m} rows, capacity {}", self.cap);
        self.rows = m;
    }
    /// Column `j` (rows $0..m$) of one of the `dim`-column buffers.
    pub fn col(buf: &[f64], m: usize, j: usize) -> &[f64] {
        &buf[j * m..(j + 1) * m]
    }
    /// Row `l` from a row scratch after [`PointRows::posterior`] (returning `log_lik`),
    /// and its mean too when `with_mean`.
    pub fn set_row(&mut self, l: usize, log_lik: f64, s: &RowScratch, with_mean: bool) {
        let m = self.rows;
        for (j, (&a, &b)) in s.phi.iter().zip(&s.post_stats).enumerate() {
            self.phi[j * m + l] = a;
            self.post_stats[j * m + l] = b;
        }
        if with_mean {
            for (j, &a) in s.mean.iter().enumerate() {
                self.mean[j * m + l] = a;
            }
        }
        self.log_lik[l] = log_lik;
        self.log_partition[l] = s.log_partition;
    }
}

/// Work buffers of [`PointRows::posterior_block`], shared by the points evaluated on a
/// block one after another.
pub struct BlockScratch {
    /// The per-row path's scratch.
    pub row: RowScratch,
    /// Work space for an evaluator: $(2\,\mathrm{dim} + 4)\cdot$ capacity values.
    pub work: Vec<f64>,
    /// Per-row flags for an evaluator (capacity values).
    pub flags: Vec<bool>,
}

impl BlockScratch {
    /// Buffers for blocks of up to `cap` rows of `model`.
    pub fn new<M: ConditionalFamily + ?Sized>(model: &M, cap: usize) -> Self {
        BlockScratch {
            row: RowScratch::new(model),
            work: vec![0.0; (2 * model.complete().dim() + 4) * cap],
            flags: vec![false; cap],
        }
    }
    /// Whether the buffers fit `model` and blocks of `cap` rows.
    pub fn fits<M: ConditionalFamily + ?Sized>(&self, model: &M, cap: usize) -> bool {
        let p = model.complete().dim();
        self.row.phi.len() == p
            && self.row.resp.len() == model.n_latent()
            && self.row.work.len() == model.row_work_len()
            && self.work.len() == (2 * p + 4) * cap
            && self.flags.len() == cap
    }
}

/// The first failures of a block ([`PointRows::posterior_block`]), as absolute row indices.
#[derive(Debug, Clone, Default)]
pub struct BlockFailures {
    /// The first row whose posterior failed, and the error.
    pub posterior: Option<(usize, MoeError)>,
    /// With `with_mean`: the first row before that whose mean failed, and the error.
    pub mean: Option<(usize, MoeError)>,
}

/// The default [`PointRows::posterior_block`] body on the rows `rows` (a sub-range of the
/// block begun by [`PointBlock::start`], `obs[l]` set for its row `rows.start + l`): row
/// by row, [`PointRows::posterior`], then [`PointRows::mean`] while `with_mean` and no
/// mean has failed, written with [`PointBlock::set_row`] at the row's place in the block
/// (`first` = the block's first row). Stops at the first posterior failure; failures are
/// recorded in `fails`.
#[allow(clippy::too_many_arguments)]
pub fn posterior_rows_into<P: PointRows + ?Sized>(
    ev: &P,
    data: &Dataset,
    rows: Range<usize>,
    obs: &[RowObservation],
    with_mean: bool,
    sc: &mut BlockScratch,
    out: &mut PointBlock,
    fails: &mut BlockFailures,
) {
    let first = rows.start;
    for i in rows {
        let l = i - first;
        posterior_row_into(ev, data, i, l, &obs[l], with_mean, sc, out, fails);
        if fails.posterior.is_some() {
            return;
        }
    }
}

/// One row of [`posterior_rows_into`]: row `i` of `data` at place `l` of the block.
#[allow(clippy::too_many_arguments)]
pub(crate) fn posterior_row_into<P: PointRows + ?Sized>(
    ev: &P,
    data: &Dataset,
    i: usize,
    l: usize,
    ob: &RowObservation,
    with_mean: bool,
    sc: &mut BlockScratch,
    out: &mut PointBlock,
    fails: &mut BlockFailures,
) {
    let s = &mut sc.row;
    match ev.posterior(data.x(i), ob, i, s) {
        Ok(lp) => {
            let mean = with_mean && fails.mean.is_none();
            if mean {
                if let Err(e) = ev.mean(s) {
                    fails.mean = Some((i, e));
                }
            }
            out.set_row(l, lp, s, mean && fails.mean.is_none());
        }
        Err(e) => fails.posterior = Some((i, e)),
    }
}

/// The generic [`PointRows`] of any model: [`ConditionalFamily::realise`] and
/// [`row_posterior_given`], then [`ConditionalFamily::complete_mean`].
pub struct GenericPointRows<'a, M: ?Sized> {
    model: &'a M,
    theta: &'a [f64],
}

impl<'a, M: ConditionalFamily + ?Sized> GenericPointRows<'a, M> {
    /// The point `theta` of `model` (its length is the caller's to check).
    pub fn new(model: &'a M, theta: &'a [f64]) -> Self {
        GenericPointRows { model, theta }
    }
}

impl<M: ConditionalFamily + ?Sized> PointRows for GenericPointRows<'_, M> {
    fn posterior(
        &self,
        x: &[f64],
        ob: &RowObservation,
        row: usize,
        s: &mut RowScratch,
    ) -> Result<f64> {
        self.model.realise(self.theta, x, &mut s.phi);
        row_posterior_given(self.model, ob, row, s)
    }
    fn mean(&self, s: &mut RowScratch) -> Result<()> {
        self.model
            .complete_mean(&s.phi, &mut s.mean, &mut s.work)
            .map_err(Into::into)
    }
}

/// The [`PointRows`] of `model` at `theta`: the model's own
/// ([`ConditionalFamily::point_rows`]) when it offers one, otherwise [`GenericPointRows`].
/// `theta` must have [`ConditionalFamily::n_params`] values (not checked here).
pub fn point_rows<'a, M: ConditionalFamily + ?Sized>(
    model: &'a M,
    theta: &'a [f64],
) -> Box<dyn PointRows + 'a> {
    model
        .point_rows(theta)
        .unwrap_or_else(|| Box::new(GenericPointRows::new(model, theta)))
}

impl<'a, M: ConditionalFamily + ?Sized> Problem<'a, M> {
    /// Pairs a model with data, checking that the feature dimension matches and that
    /// every target lies in the support for some latent state.
    ///
    /// # Errors
    /// `InvalidData` naming the first offending row.
    pub fn new(model: &'a M, data: &'a Dataset) -> Result<Self> {
        if model.n_features() != data.d() {
            return Err(MoeError::InvalidData {
                row: None,
                column: None,
                reason: format!(
                    "model expects {} features per row, data has {}",
                    model.n_features(),
                    data.d()
                ),
            });
        }
        let fam = model.complete();
        if fam.obs_dim() != data.q() + 1 {
            return Err(MoeError::InvalidData {
                row: None,
                column: None,
                reason: format!(
                    "model expects {} target columns, data has {}",
                    fam.obs_dim() - 1,
                    data.q()
                ),
            });
        }
        let mut obs = vec![0.0; fam.obs_dim()];
        for i in 0..data.n() {
            obs[..data.q()].copy_from_slice(data.y(i));
            let ok = (0..model.n_latent()).any(|z| {
                obs[data.q()] = z as f64;
                fam.in_support(&obs)
            });
            if !ok {
                return Err(MoeError::outside_support(i, data.y(i), &fam.name()));
            }
        }
        Ok(Problem { model, data })
    }

    pub(crate) fn check_theta(&self, theta: &[f64]) -> Result<()> {
        if theta.len() != self.model.n_params() {
            return Err(MirrorError::DimensionMismatch {
                what: "theta",
                expected: self.model.n_params(),
                found: theta.len(),
            }
            .into());
        }
        Ok(())
    }

    /// $L(\theta) = -\frac1n\sum_i \log p(y_i \mid x_i; \theta) + \frac1n R(\theta)$,
    /// $R$ the model's [`penalty`](ConditionalFamily::penalty) (zero without a ridge).
    ///
    /// Computed by the model's own pass when it has one
    /// ([`ConditionalFamily::objective_pass`]), else as the sum of the generic row
    /// posteriors.
    pub fn objective(&self, theta: &[f64]) -> Result<f64> {
        self.check_theta(theta)?;
        if let Some(l) = self.model.objective_pass(self.data, theta) {
            return l;
        }
        let n = self.data.n();
        let total = fold_rows(
            n,
            || (0.0f64, ScratchCell(RowScratch::new(self.model))),
            |(acc, s), rows| {
                for i in rows {
                    self.model.realise(theta, self.data.x(i), &mut s.0.phi);
                    *acc += row_posterior(self.model, self.data.y(i), i, &mut s.0)?;
                }
                Ok(())
            },
        )?;
        let penalty = self.model.penalty(theta);
        finite((penalty - total.0) / n as f64, "objective L(θ)")
    }

    /// $L(\theta)$ and $\nabla L(\theta) = \frac1n\sum_i J_i^\top\big(\nabla A(\varphi_i) -
    /// \mathbb E_{\text{post}}[T(y_i,z)]\big) + \frac1n\nabla R(\theta)$ written into `grad`.
    pub fn objective_and_gradient(&self, theta: &[f64], grad: &mut [f64]) -> Result<f64> {
        self.check_theta(theta)?;
        let ll = self.fold_vjp(theta, grad, |s, _| {
            for j in 0..s.mean.len() {
                s.mean[j] -= s.post_stats[j];
            }
        })?;
        let n = self.data.n() as f64;
        if self.model.is_penalised() {
            let mut pg = vec![0.0; grad.len()];
            self.model.penalty_gradient(theta, &mut pg);
            for (g, p) in grad.iter_mut().zip(pg) {
                *g += p / n;
            }
        }
        finite(self.model.penalty(theta) / n - ll, "objective L(θ)")
    }

    /// Target statistics of the mirror-descent step at $\theta_t$ with step $\eta$:
    /// $m_i = (1-\eta)\nabla A(\varphi_{t,i}) + \eta\,\mathbb E_{\text{post},t}[T(y_i,z)]$,
    /// row-major $n \times p$. With $\eta = 1$ these are EM's posterior statistics.
    pub fn md_targets(&self, theta_t: &[f64], eta: f64) -> Result<Vec<f64>> {
        self.check_theta(theta_t)?;
        let p = self.model.complete().dim();
        let n = self.data.n();
        let mut out = vec![0.0; n * p];
        // Rows are independent: each chunk writes its own rows, in parallel (no reduction,
        // so the result does not depend on the thread count).
        out.par_chunks_mut(crate::inner::parallel::CHUNK * p)
            .enumerate()
            .try_for_each(|(c, block)| -> Result<()> {
                let mut s = RowScratch::new(self.model);
                for (r, m) in block.chunks_mut(p).enumerate() {
                    let i = c * crate::inner::parallel::CHUNK + r;
                    self.model.realise(theta_t, self.data.x(i), &mut s.phi);
                    row_posterior(self.model, self.data.y(i), i, &mut s)?;
                    self.model.complete_mean(&s.phi, &mut s.mean, &mut s.work)?;
                    for ((o, a), b) in m.iter_mut().zip(&s.mean).zip(&s.post_stats) {
                        *o = (1.0 - eta) * a + eta * b;
                    }
                }
                Ok(())
            })?;
        Ok(out)
    }

    /// The mirror-descent subproblem $F(\theta) = \frac1n\sum_i [A(\varphi_i(\theta)) -
    /// \langle m_i, \varphi_i(\theta)\rangle]$ and its gradient
    /// $\frac1n\sum_i J_i^\top(\nabla A(\varphi_i(\theta)) - m_i)$ for targets `m`
    /// from [`md_targets`](Self::md_targets).
    ///
    /// # Errors
    /// `LeftDomain` when $\varphi_i(\theta)$ leaves the natural domain.
    pub fn md_subproblem(&self, theta: &[f64], m: &[f64], grad: &mut [f64]) -> Result<f64> {
        Ok(self.md_subproblem_with_noise(theta, m, grad)?.0)
    }

    /// [`md_subproblem`](Self::md_subproblem) with the round-off estimate of the computed
    /// $F$: $\delta = $ [`mirror::newton::sum_noise`]$\big(\frac1n\sum_i
    /// |A(\varphi_i)| + |\langle m_i, \varphi_i\rangle|,\ n\big)$ (what a round-off-aware
    /// inner solver compares value changes with).
    ///
    /// # Errors
    /// As [`md_subproblem`](Self::md_subproblem).
    pub fn md_subproblem_with_noise(
        &self,
        theta: &[f64],
        m: &[f64],
        grad: &mut [f64],
    ) -> Result<(f64, f64)> {
        self.check_theta(theta)?;
        if self.model.is_penalised() {
            // Its minimiser is the MD step of −ℓ alone: the step of a penalised model
            // would need the penalty scaled by η in F, which this subproblem lacks.
            return Err(MoeError::InvalidParam {
                name: "ridge",
                reason: "mirror descent with a step other than EM's and gradient EM do not \
                         support a penalised model (ridge > 0); use EM, SQUAREM or gradient \
                         descent"
                    .into(),
            });
        }
        let model = self.model;
        let fam = model.complete();
        let p = fam.dim();
        let n = self.data.n();
        // The inner solves evaluate F hundreds of times per step: the row buffers are
        // per worker ([`fold_rows_with`]) and the row functions the allocation-free ones.
        let ((val, abs), g) = fold_rows_with(
            n,
            |cached: Option<RowScratch>| {
                cached
                    .filter(|s| s.phi.len() == p && s.work.len() == model.row_work_len())
                    .unwrap_or_else(|| RowScratch::new(model))
            },
            || ((0.0f64, 0.0f64), vec![0.0; theta.len()]),
            |s, ((acc, abs), g), rows| {
                for i in rows {
                    let x = self.data.x(i);
                    model.realise(theta, x, &mut s.phi);
                    let mi = &m[i * p..(i + 1) * p];
                    let a = model
                        .complete_log_partition(&s.phi, &mut s.work)
                        .map_err(|e| MoeError::LeftDomain {
                            reason: format!("row {i}: {e}"),
                        })?;
                    let lin = mi.iter().zip(&s.phi).map(|(u, v)| u * v).sum::<f64>();
                    *acc += a - lin;
                    *abs += a.abs() + lin.abs();
                    model.complete_mean(&s.phi, &mut s.mean, &mut s.work)?;
                    for (mu, t) in s.mean.iter_mut().zip(mi) {
                        *mu -= t;
                    }
                    model.realise_vjp(theta, x, &s.mean, g);
                }
                Ok(())
            },
        )?;
        for (o, v) in grad.iter_mut().zip(g) {
            *o = v / n as f64;
        }
        let v = finite(val / n as f64, "mirror-descent subproblem")?;
        Ok((v, mirror::newton::sum_noise(abs / n as f64, n)))
    }

    /// The realised natural parameters $\Phi(\theta)$, row-major $n \times p$.
    pub fn realise_all(&self, theta: &[f64]) -> Result<Vec<f64>> {
        self.check_theta(theta)?;
        let p = self.model.complete().dim();
        let mut out = vec![0.0; self.data.n() * p];
        for (i, phi) in out.chunks_mut(p).enumerate() {
            self.model.realise(theta, self.data.x(i), phi);
        }
        Ok(out)
    }

    /// $D_{\mathcal A}(\Phi(\theta_a), \Phi(\theta_b)) = \frac1n\sum_i
    /// \mathrm{KL}\big(p_{\varphi_i(\theta_b)}\,\|\,p_{\varphi_i(\theta_a)}\big)$.
    pub fn stacked_bregman(&self, theta_a: &[f64], theta_b: &[f64]) -> Result<f64> {
        self.check_theta(theta_a)?;
        self.check_theta(theta_b)?;
        let fam = self.model.complete();
        let n = self.data.n();
        let total = fold_rows(
            n,
            || 0.0f64,
            |acc, rows| {
                let map = mirror::LogPartition::new(fam);
                let p = fam.dim();
                let (mut pa, mut pb) = (vec![0.0; p], vec![0.0; p]);
                for i in rows {
                    self.model.realise(theta_a, self.data.x(i), &mut pa);
                    self.model.realise(theta_b, self.data.x(i), &mut pb);
                    *acc += mirror::bregman(&map, &pa, &pb)?;
                }
                Ok(())
            },
        )?;
        finite(total / n as f64, "stacked Bregman divergence")
    }

    /// $\ell(\Phi)$ for an arbitrary (not necessarily realisable) stacked parameter
    /// `phi_all` (row-major $n\times p$), and $\nabla\ell(\Phi)$ into `grad`
    /// (same layout): $\nabla_{\varphi_i}\ell = \frac1n(\nabla A(\varphi_i) - \mathbb E_{\text{post}}\[T\])$.
    pub fn ell_and_gradient(&self, phi_all: &[f64], grad: &mut [f64]) -> Result<f64> {
        let p = self.model.complete().dim();
        let n = self.data.n();
        if phi_all.len() != n * p || grad.len() != n * p {
            return Err(MirrorError::DimensionMismatch {
                what: "stacked natural parameter",
                expected: n * p,
                found: phi_all.len().min(grad.len()),
            }
            .into());
        }
        let mut s = RowScratch::new(self.model);
        let mut total = 0.0;
        for i in 0..n {
            s.phi.copy_from_slice(&phi_all[i * p..(i + 1) * p]);
            total += row_posterior(self.model, self.data.y(i), i, &mut s)?;
            self.model.complete_mean(&s.phi, &mut s.mean, &mut s.work)?;
            for j in 0..p {
                grad[i * p + j] = (s.mean[j] - s.post_stats[j]) / n as f64;
            }
        }
        finite(-total / n as f64, "objective ℓ(Φ)")
    }

    /// Shared pass: for each row realises $\varphi_i$, runs the posterior kernel, puts
    /// $\nabla A(\varphi_i)$ in `s.mean`, lets `edit` turn it into the vector $v_i$ and
    /// accumulates $\frac1n\sum_i J_i^\top v_i$ into `grad`; returns the average
    /// log-likelihood $\frac1n\sum_i\log p(y_i)$.
    fn fold_vjp<E>(&self, theta: &[f64], grad: &mut [f64], edit: E) -> Result<f64>
    where
        E: Fn(&mut RowScratch, usize) + Sync,
    {
        let n = self.data.n();
        let (ll, g) = fold_rows(
            n,
            || {
                (
                    0.0f64,
                    (
                        vec![0.0; theta.len()],
                        ScratchCell(RowScratch::new(self.model)),
                    ),
                )
            },
            |(acc, (g, s)), rows| {
                let s = &mut s.0;
                for i in rows {
                    let x = self.data.x(i);
                    self.model.realise(theta, x, &mut s.phi);
                    *acc += row_posterior(self.model, self.data.y(i), i, s)?;
                    self.model.complete_mean(&s.phi, &mut s.mean, &mut s.work)?;
                    edit(s, i);
                    self.model.realise_vjp(theta, x, &s.mean, g);
                }
                Ok(())
            },
        )?;
        for (o, v) in grad.iter_mut().zip(g.0) {
            *o = v / n as f64;
        }
        Ok(ll / n as f64)
    }
}

/// Scratch buffers carried inside a reduction accumulator: merging keeps the left one.
struct ScratchCell(RowScratch);
impl crate::inner::parallel::Mergeable for ScratchCell {
    fn merge(&mut self, _other: Self) {}
}

fn finite(v: f64, what: &'static str) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(MoeError::NonFinite { what })
    }
}

/// The stacked mirror map $\mathcal A(\Phi) = \frac1n\sum_i A(\varphi_i)$ on
/// $\Phi \in \mathbb R^{n p}$ (row-major), as a [`MirrorMap`]: its Bregman divergence is
/// $D_{\mathcal A}(\Phi, \Phi') = \frac1n\sum_i \mathrm{KL}(p_{\varphi'_i}\|p_{\varphi_i})$.
/// Gradient: $\nabla_{\varphi_i}\mathcal A = \frac1n\nabla A(\varphi_i)$; conjugate gradient:
/// $\varphi_i = \nabla A^*(n\,y_i)$.
pub struct StackedLogPartition<'a> {
    family: &'a dyn ExponentialFamily,
    n: usize,
}

impl<'a> StackedLogPartition<'a> {
    /// The stacked map of `n` copies of `family`.
    pub fn new(family: &'a dyn ExponentialFamily, n: usize) -> Self {
        StackedLogPartition { family, n }
    }
}

impl MirrorMap for StackedLogPartition<'_> {
    fn dim(&self) -> usize {
        self.n * self.family.dim()
    }
    fn in_domain(&self, x: &[f64]) -> bool {
        x.len() == self.dim()
            && x.chunks(self.family.dim())
                .all(|c| self.family.in_natural_domain(c))
    }
    fn potential(&self, x: &[f64]) -> mirror::Result<f64> {
        let mut s = 0.0;
        for c in x.chunks(self.family.dim()) {
            s += self.family.log_partition(c)?;
        }
        Ok(s / self.n as f64)
    }
    fn grad(&self, x: &[f64], out: &mut [f64]) -> mirror::Result<()> {
        let p = self.family.dim();
        for (c, o) in x.chunks(p).zip(out.chunks_mut(p)) {
            self.family.mean(c, o)?;
            o.iter_mut().for_each(|v| *v /= self.n as f64);
        }
        Ok(())
    }
    fn grad_conj(&self, y: &[f64], out: &mut [f64]) -> mirror::Result<()> {
        let p = self.family.dim();
        let mut scaled = vec![0.0; p];
        for (c, o) in y.chunks(p).zip(out.chunks_mut(p)) {
            for j in 0..p {
                scaled[j] = c[j] * self.n as f64;
            }
            self.family.natural_from_mean(&scaled, o)?;
        }
        Ok(())
    }
}
