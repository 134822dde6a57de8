//! The softmax gate and its M-step.
//!
//! With $K$ experts and gate vectors $w_0, \dots, w_{K-2} \in \mathbb R^d$ (the reference
//! expert $K-1$ has $w_{K-1} = 0$), the logits and gate probabilities are
//! $$ g_k(x) = w_k^\top x,\qquad \pi_k(x) = \frac{e^{g_k(x)}}{\sum_l e^{g_l(x)}}
//!    = \exp\big(g_k(x) - \operatorname{LSE}_l\, g_l(x)\big) $$
//! ([`softmax_gate_logits`], [`gate_log_probs`]). The flattened gate block is
//! $(w_0, \dots, w_{K-2})$, $w_k$ contiguous — i.e. the column-major $d \times (K-1)$ matrix
//! $W$.
//!
//! **M-step.** Given soft labels $s_{ik} \ge 0$ (responsibilities) with row sums $c_i$,
//! the gate maximises the soft-label multinomial log-likelihood
//! $$ Q(W) = \frac1n\sum_i\sum_k s_{ik}\log\pi_k(x_i), \qquad
//!    \nabla_{w_k} Q = \frac1n\sum_i (s_{ik} - c_i\pi_{ik})\,x_i, $$
//! $$ -\nabla^2 Q = \frac1n\sum_i c_i\big(\operatorname{diag}(\pi_i) - \pi_i\pi_i^\top\big)
//!    \otimes x_i x_i^\top \quad(\text{indices } k, l < K-1), $$
//! a concave problem solved by Newton's method with Armijo backtracking
//! ([`fit_softmax_gate`]). A fresh block Hessian has size $(K-1)d$ (its $K(K-1)/2$
//! $d\times d$ blocks are weighted Gram products taken with faer per row chunk); it is
//! factored once and reused while the steps contract $\|\nabla Q\|$ by at least
//! [`GateConfig::reuse_below`], each reused step folding its secant pair into the matrix
//! (a BFGS update), so late in EM a gate step costs one gradient
//! pass. The iteration stops at $\|\nabla Q\|_2 \le$ `tol` (default $10^{-10}$)
//! or after `max_iter` (default 50) steps.
//!
//! Per row, the probabilities take $K-1$ exponentials, the reference's being $e^0 = 1$
//! (a row chunk's exponentials are one vectorised
//! [`exp_in_place`] call), shared by $Q$, $\nabla Q$ and the Hessian weights; $Q$'s
//! logarithms are taken once per block of rows ([`SumOfLogs`]).
//!
//! **L-BFGS alternative.** With [`GateConfig::solver`] $=$ [`GateSolver::Lbfgs`] the gate
//! M-step instead minimises $-Q(W)$ by L-BFGS ([`crate::inner::lbfgs::Lbfgs`], 10 pairs, strong
//! Wolfe), warm-started at $W_t$, from [`gate_objective`] alone (no Hessian is formed), until
//! $\|\nabla Q\|_\infty \le$ `tol` or `max_iter` iterations ([`fit_softmax_gate_lbfgs`]).
//! It needs no positive definite Hessian, so it runs on designs where Newton stops with
//! `NotPositiveDefinite` (collinear columns, e.g. a duplicated feature, or a nearly
//! separable gate); it converges linearly, so a loose budget gives an *inexact*
//! (generalised-EM) M-step: every accepted step increases $Q$, and a step that does not
//! reach `tol` is reported (`converged = false`). With [`GateConfig::lbfgs_fallback`] the
//! Newton solver hands a singular-Hessian failure over to this L-BFGS solve from the same
//! start and counts it in [`InnerStats::fallbacks`].

use crate::data::Dataset;
use crate::error::{Block, MoeError, Result};
use crate::inner::cholesky::{cholesky_factor, llt_solve};
use crate::inner::gram::{add_weighted_grams, gram_buffer_len};
use crate::inner::parallel::{fold_rows_with, Mergeable, CHUNK};
use crate::inner::InnerStats;
use crate::model::expert::{dot, INNER_MAX_ITER, INNER_TOL, NEWTON_PURE};
use faer::linalg::matmul::matmul;
use faer::linalg::solvers::{DenseSolveCore, Llt};
use faer::{Accum, Mat, MatRef, Par};
use mirror::batch_exp::exp_in_place;
use mirror::special::{log_sum_exp, softmax_parts_ref0, SumOfLogs, UNSHIFTED_MAX};

/// Gate logits $g = (w_0^\top x, \dots, w_{K-2}^\top x, 0)$ into `out` (length $K$) from
/// the flattened gate block `w` ($(K-1) d$ values).
pub fn softmax_gate_logits(w: &[f64], x: &[f64], out: &mut [f64]) {
    let d = x.len();
    let k = out.len();
    for j in 0..k - 1 {
        out[j] = dot(&w[j * d..(j + 1) * d], x);
    }
    out[k - 1] = 0.0;
}

/// $\log\pi_k = g_k - \operatorname{LSE}(g)$ in place on logits `g`; returns
/// $\operatorname{LSE}(g)$.
pub fn gate_log_probs(g: &mut [f64]) -> f64 {
    let lse = log_sum_exp(g);
    for v in g.iter_mut() {
        *v -= lse;
    }
    lse
}

/// Which method solves the gate's M-step (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GateSolver {
    /// Newton's method with backtracking and optional Hessian reuse (the default): exact to
    /// `tol` in a few steps, but needs $-\nabla^2 Q$ positive definite.
    #[default]
    Newton,
    /// L-BFGS on $-Q$ ([`fit_softmax_gate_lbfgs`]): gradient passes only, no Hessian.
    Lbfgs,
}

/// Settings of the gate's M-step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateConfig {
    /// Stop when $\|\nabla Q\|_2 \le$ `tol` (Newton) or $\|\nabla Q\|_\infty \le$ `tol`
    /// (L-BFGS, as [`crate::inner::lbfgs::Lbfgs::grad_tol`]).
    pub tol: f64,
    /// Step cap (Newton steps or L-BFGS iterations; a fallback L-BFGS solve gets its own
    /// `max_iter`).
    pub max_iter: u64,
    /// Hessian reuse: while the last step contracted $\|\nabla Q\|_2$ by a factor
    /// $\le$ `reuse_below`, the next step solves with the Hessian already formed, updated
    /// by BFGS with each step's secant pair, instead of forming a new one (a gradient-only
    /// pass instead of a pass with $K(K-1)/2$ weighted Grams); a poorer contraction makes
    /// the next full-step pass form a fresh Hessian. A step taken with a fresh Hessian
    /// never forms another at its trial point: its own contraction is judged first.
    /// `0` disables reuse (every step a fresh Hessian: plain Newton). Default $0.01$.
    /// Ignored by [`GateSolver::Lbfgs`].
    pub reuse_below: f64,
    /// The method; default [`GateSolver::Newton`].
    pub solver: GateSolver,
    /// With [`GateSolver::Newton`]: when the Hessian is singular (`NotPositiveDefinite`),
    /// solve the M-step by L-BFGS from the same start instead of failing, and count it in
    /// [`InnerStats::fallbacks`]. Default `false` (the error is returned).
    pub lbfgs_fallback: bool,
}

impl GateConfig {
    /// Validates the settings: `tol` $> 0$ (finite), `max_iter` $\ge 1$ (and at most
    /// `usize::MAX` for the L-BFGS solver), $0 \le$ `reuse_below` $< 1$ (checked whatever
    /// the solver); every [`GateSolver`] with either `lbfgs_fallback` is valid
    /// (`lbfgs_fallback` has no effect with [`GateSolver::Lbfgs`]).
    ///
    /// # Errors
    /// `InvalidParam { name: "gate config" }` naming the offending values.
    pub fn check(&self) -> Result<()> {
        if !(self.tol > 0.0
            && self.tol.is_finite()
            && self.max_iter >= 1
            && usize::try_from(self.max_iter).is_ok()
            && self.reuse_below >= 0.0
            && self.reuse_below < 1.0)
        {
            return Err(MoeError::InvalidParam {
                name: "gate config",
                reason: format!(
                    "need tol > 0, max_iter >= 1 and 0 <= reuse_below < 1, got tol = {}, \
                     max_iter = {}, reuse_below = {}",
                    self.tol, self.max_iter, self.reuse_below
                ),
            });
        }
        Ok(())
    }
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            tol: INNER_TOL,
            max_iter: INNER_MAX_ITER,
            reuse_below: 0.01,
            solver: GateSolver::Newton,
            lbfgs_fallback: false,
        }
    }
}

/// The gate sums of one row chunk (merged in chunk order): $nQ$, $n\nabla Q$ and, when
/// asked for, the lower block triangle of $-n\nabla^2 Q$.
pub(crate) struct GateSums {
    q: f64,
    grad: Vec<f64>,
    hess: Mat<f64>,
}

impl GateSums {
    /// Zero sums for $d$ features and $K$ experts (Hessian of size 0 when not wanted).
    pub(crate) fn new(d: usize, k: usize, hessian: bool) -> Self {
        let dim = (k - 1) * d;
        GateSums {
            q: 0.0,
            grad: vec![0.0; dim],
            hess: if hessian {
                Mat::zeros(dim, dim)
            } else {
                Mat::zeros(0, 0)
            },
        }
    }

    /// The merged sums at gate parameters `w` as [`GateStats`] (Hessian symmetrised).
    pub(crate) fn finish(self, w: &[f64]) -> GateStats {
        let mut hess = self.hess;
        for a in 0..hess.nrows() {
            for b in a + 1..hess.ncols() {
                hess[(a, b)] = hess[(b, a)];
            }
        }
        GateStats {
            w: w.to_vec(),
            q: self.q,
            grad: self.grad,
            hess,
        }
    }
}

impl Mergeable for GateSums {
    fn merge(&mut self, other: Self) {
        self.q += other.q;
        for (a, b) in self.grad.iter_mut().zip(&other.grad) {
            *a += b;
        }
        if self.hess.nrows() > 0 {
            self.hess += &other.hess;
        }
    }
}

/// Work buffers of the gate pass for one worker, sized for a [`CHUNK`] of rows and reused
/// across chunks and passes (every entry read is first written for the current chunk).
pub(crate) struct GateScratch {
    /// $(d, K)$ the buffers are sized for.
    shape: (usize, usize),
    /// Logits $x_i^\top w_k$, $k < K-1$ ($m\times(K-1)$).
    logits: Mat<f64>,
    /// Gate probabilities $\pi_{ik}$, column-major $m\times K$.
    pub(crate) probs: Vec<f64>,
    /// Per row, $\operatorname{LSE}_k g_k(x_i) = m_i + \log z_i$ in two parts
    /// ([`gate_softmax_rows`]): the shift $m_i$ (0, or the largest logit when one is
    /// too large to exponentiate unshifted) …
    pub(crate) gmax: Vec<f64>,
    /// … and $z_i = \sum_k e^{g_k(x_i) - m_i} \ge 1$.
    pub(crate) gsum: Vec<f64>,
    /// Gradient residuals $s_{ik} - c_i\pi_{ik}$, column-major $m\times(K-1)$.
    resid: Vec<f64>,
    /// Soft labels $s_{ik}$ of the chunk, column-major $m\times K$ (a transposed copy).
    labels: Vec<f64>,
    /// Label row sums $c_i = \sum_k s_{ik}$.
    csum: Vec<f64>,
    /// Hessian block weights $c_i\pi_{ia}(\delta_{ab} - \pi_{ib})$ per row.
    wts: Vec<f64>,
    /// Scaled-columns buffer of [`add_weighted_gram`].
    buf: Vec<f64>,
}

impl GateScratch {
    /// Buffers for $d$ features and $K$ experts.
    pub(crate) fn new(d: usize, k: usize) -> Self {
        GateScratch {
            shape: (d, k),
            logits: Mat::zeros(CHUNK, k - 1),
            probs: vec![0.0; CHUNK * k],
            gmax: vec![0.0; CHUNK],
            gsum: vec![0.0; CHUNK],
            resid: vec![0.0; CHUNK * (k - 1)],
            labels: vec![0.0; CHUNK * k],
            csum: vec![0.0; CHUNK],
            wts: vec![0.0; CHUNK * k * (k - 1) / 2],
            buf: vec![0.0; gram_buffer_len(d)],
        }
    }

    /// `cached` if it was sized for $d$ features and $K$ experts, else new buffers.
    pub(crate) fn reuse(cached: Option<Self>, d: usize, k: usize) -> Self {
        cached
            .filter(|s| s.shape == (d, k))
            .unwrap_or_else(|| GateScratch::new(d, k))
    }
}

/// The gate's M-step quantities at gate parameters `w`, as sums over rows (not divided by
/// $n$): $nQ(W)$, $n\nabla Q$ and $-n\nabla^2 Q$. The E-step of a gated mixture computes
/// them at the current parameters in the same pass (its responsibilities are the labels),
/// so the gate's Newton solve starts without a pass of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct GateStats {
    /// The gate parameters they were computed at.
    pub w: Vec<f64>,
    /// $\sum_i\sum_k s_{ik}\log\pi_k(x_i)$.
    pub q: f64,
    /// $\sum_i (s_{ik} - c_i\pi_{ik})x_i$, flattened like `w`.
    pub grad: Vec<f64>,
    /// $\sum_i c_i(\operatorname{diag}\pi_i - \pi_i\pi_i^\top)\otimes x_ix_i^\top$.
    pub hess: Mat<f64>,
}

/// Gate probabilities and log-partitions of a chunk from its logits (`logits[j]` is the
/// column of $g_j$, $j < K-1$, over the chunk's $m$ rows; $g_{K-1} = 0$): column $k$ of
/// `probs` ($m\times K$ column-major, at least $mK$ values) becomes $\pi_{\cdot k}$, and
/// $\operatorname{LSE}_k g_{ik} = $ `gmax[i]` $+ \log$ `gsum[i]`, where
/// $$ (m_i, z_i) = \Big(0,\; 1 + \sum_{j<K-1} e^{g_{ij}}\Big),\qquad
///    \pi_{ij} = e^{g_{ij}} / z_i,\quad \pi_{i,K-1} = 1/z_i $$
/// as in [`softmax_parts_ref0`] ($K-1$ exponentials, the reference's being 1, and no
/// logarithm: callers sum the logarithms by block). The chunk's $m(K-1)$ exponentials are
/// one vectorised [`exp_in_place`], and the rest are column operations that vectorise
/// too. A row with a logit above [`UNSHIFTED_MAX`] (or NaN) takes
/// [`softmax_parts_ref0`]'s shifted path instead.
///
/// # Errors
/// `NonFinite` when a row's logits overflow.
pub(crate) fn gate_softmax_rows(
    logits: &[&[f64]],
    k: usize,
    probs: &mut [f64],
    gmax: &mut [f64],
    gsum: &mut [f64],
) -> Result<()> {
    let km = k - 1;
    let m = gmax.len();
    let (ex, reference) = probs[..k * m].split_at_mut(km * m);
    for (dst, col) in ex.chunks_exact_mut(m).zip(logits) {
        dst.copy_from_slice(&col[..m]);
    }
    exp_in_place(ex);
    gsum.fill(1.0);
    for col in ex.chunks_exact(m) {
        for (z, e) in gsum.iter_mut().zip(col) {
            *z += e;
        }
    }
    for (r, z) in reference.iter_mut().zip(gsum.iter()) {
        *r = 1.0 / z;
    }
    for col in ex.chunks_exact_mut(m) {
        for (p, r) in col.iter_mut().zip(reference.iter()) {
            *p *= r;
        }
    }
    gmax.fill(0.0);
    // (NaN fails `<=`, so it is found here too.) An or-reduction without early exit,
    // which vectorises; rows are looked at one by one only if some logit is too large.
    let unshifted = |li: usize| logits.iter().all(|col| col[li] <= UNSHIFTED_MAX);
    let any_large = logits.iter().any(|col| {
        col[..m]
            .iter()
            .fold(false, |large, &g| large | (g > UNSHIFTED_MAX) | g.is_nan())
    });
    if any_large {
        let mut row = vec![0.0; k];
        for li in (0..m).filter(|&li| !unshifted(li)) {
            for (v, col) in row.iter_mut().zip(logits) {
                *v = col[li];
            }
            row[km] = 0.0;
            let (mx, z) = softmax_parts_ref0(&mut row);
            if !mx.is_finite() {
                return Err(MoeError::NonFinite {
                    what: "gate logits",
                });
            }
            for (j, v) in row.iter().enumerate() {
                probs[j * m + li] = *v;
            }
            (gmax[li], gsum[li]) = (mx, z);
        }
    }
    Ok(())
}

/// Adds one chunk (`rows`; its gate logits `logits` (columns, as in
/// [`gate_softmax_rows`]), probabilities and log-partitions in `scratch.probs`,
/// `scratch.gmax` and `scratch.gsum`, and soft labels `labels` ($m\times K$, chunk-local))
/// to the gate sums: $q \mathrel{+}= \sum_k s_{ik}(g_{ik} - \operatorname{LSE}_i)$, the
/// gradient $X_c^\top(S - c\,\Pi)$ as one faer product and, if `sums` holds a Hessian, its
/// $K(K-1)/2$ weighted Gram blocks.
///
/// $q$ is summed as $\sum_i[\sum_k s_{ik}(g_{ik} - m_i) - c_i\log z_i]$: rows whose labels
/// sum to exactly $c_i = 1$ (most rows of an E-step's responsibilities) add $\log z_i$
/// through one [`SumOfLogs`] per chunk, so the logarithm is taken once per block of rows
/// instead of once per row; other rows take their own.
pub(crate) fn gate_chunk(
    data: &Dataset,
    rows: std::ops::Range<usize>,
    logits: &[&[f64]],
    labels: &[f64],
    k: usize,
    sums: &mut GateSums,
    scratch: &mut GateScratch,
) {
    let d = data.d();
    let km = k - 1;
    let m = rows.len();
    let probs = &scratch.probs[..m * k];
    // Column-major labels, so that the loops below are column operations.
    let lab = &mut scratch.labels[..k * m];
    for (j, col) in lab.chunks_exact_mut(m).enumerate() {
        for (dst, row) in col.iter_mut().zip(labels.chunks_exact(k)) {
            *dst = row[j];
        }
    }
    let lab = &scratch.labels[..k * m];
    let csum = &mut scratch.csum[..m];
    csum.fill(0.0);
    for col in lab.chunks_exact(m) {
        for (c, s) in csum.iter_mut().zip(col) {
            *c += s;
        }
    }
    let csum = &scratch.csum[..m];
    // Σ_ik s_ik (g_ik − m_i) = Σ_{k<K−1} ⟨s_·k, g_·k⟩ − Σ_i c_i m_i (g_{K−1} = 0; m_i is 0
    // but on rows with huge logits).
    for (col, g) in lab.chunks_exact(m).zip(logits) {
        sums.q += dot_lanes(col, &g[..m]);
    }
    let mut logs = SumOfLogs::new();
    for ((&c, &mx), &z) in csum.iter().zip(&scratch.gmax[..m]).zip(&scratch.gsum[..m]) {
        if mx != 0.0 {
            sums.q -= c * mx;
        }
        if c == 1.0 {
            logs.add_log(z);
        } else if c > 0.0 {
            sums.q -= c * z.ln();
        }
    }
    for ((res, p), s) in scratch.resid[..km * m]
        .chunks_exact_mut(m)
        .zip(probs.chunks_exact(m))
        .zip(lab.chunks_exact(m))
    {
        for (r, (pj, (c, sj))) in res.iter_mut().zip(p.iter().zip(csum.iter().zip(s))) {
            *r = sj - c * pj;
        }
    }
    sums.q -= logs.value();
    let xc = data.xt().subcols(rows.start, m);
    let mut gm = faer::MatMut::from_column_major_slice_mut(&mut sums.grad, d, km);
    matmul(
        gm.as_mut(),
        Accum::Add,
        xc,
        MatRef::from_column_major_slice(&scratch.resid[..km * m], m, km),
        1.0,
        Par::Seq,
    );
    if sums.hess.nrows() > 0 {
        // Weights c(π_a δ_ab − π_a π_b) of the lower blocks (a, b), b ≤ a, as the columns
        // of an m × K(K−1)/2 matrix; the blocks are then formed by stacked products.
        let pairs: Vec<(usize, usize)> =
            (0..km).flat_map(|a| (0..=a).map(move |b| (a, b))).collect();
        for (&(a, b), col) in pairs.iter().zip(scratch.wts.chunks_exact_mut(m)) {
            let (pa, pb) = (&probs[a * m..(a + 1) * m], &probs[b * m..(b + 1) * m]);
            let cols = col.iter_mut().zip(csum.iter().zip(pa.iter().zip(pb)));
            if a == b {
                cols.for_each(|(wl, (c, (pa, pb)))| *wl = c * pa * (1.0 - pb));
            } else {
                cols.for_each(|(wl, (c, (pa, pb)))| *wl = -c * pa * pb);
            }
        }
        let hess = &mut sums.hess;
        add_weighted_grams(
            data,
            rows,
            &scratch.wts[..pairs.len() * m],
            pairs.len(),
            &mut scratch.buf,
            &mut |j, p| {
                let (a, b) = pairs[j];
                let mut block = hess.as_mut().submatrix_mut(a * d, b * d, d, d);
                block += p;
            },
        );
    }
}

/// $\langle a, b\rangle$ with four interleaved partial sums, which vectorise (a single
/// running sum is a chain of dependent additions).
fn dot_lanes(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// One pass over the data: $nQ(W)$, $n\nabla Q$ (column-major $d\times(K-1)$, i.e. the
/// flattened layout) and, when `hessian`, $-n\nabla^2 Q$ (lower block triangle filled,
/// then symmetrised).
fn gate_pass(
    data: &Dataset,
    labels: &[f64],
    k: usize,
    w: &[f64],
    hessian: bool,
) -> Result<(f64, Vec<f64>, Mat<f64>)> {
    let d = data.d();
    let km = k - 1;
    let wm = MatRef::from_column_major_slice(w, d, km);
    let sums = fold_rows_with(
        data.n(),
        |cached| GateScratch::reuse(cached, d, k),
        || GateSums::new(d, k, hessian),
        |scratch, sums, rows| {
            let m = rows.len();
            let xc = data.xt().subcols(rows.start, m);
            matmul(
                scratch.logits.as_mut().subrows_mut(0, m),
                Accum::Replace,
                xc.transpose(),
                wm,
                1.0,
                Par::Seq,
            );
            let logits = std::mem::replace(&mut scratch.logits, Mat::zeros(0, 0));
            let cols: Vec<&[f64]> = (0..km).map(|j| &logits.col_as_slice(j)[..m]).collect();
            let res = gate_softmax_rows(
                &cols,
                k,
                &mut scratch.probs[..m * k],
                &mut scratch.gmax[..m],
                &mut scratch.gsum[..m],
            );
            if res.is_ok() {
                gate_chunk(
                    data,
                    rows.clone(),
                    &cols,
                    &labels[rows.start * k..rows.end * k],
                    k,
                    sums,
                    scratch,
                );
            }
            drop(cols);
            scratch.logits = logits;
            res
        },
    )?;
    let st = sums.finish(w);
    Ok((st.q, st.grad, st.hess))
}

/// $Q(W) = \frac1n\sum_i\sum_k s_{ik}\log\pi_k(x_i)$ and $\nabla Q$ (into `grad`) for soft
/// labels `labels` ($n\times K$ row-major).
///
/// # Errors
/// `InvalidParam` on inconsistent lengths; `NonFinite` on overflowing logits.
pub fn gate_objective(
    data: &Dataset,
    labels: &[f64],
    k: usize,
    w: &[f64],
    grad: &mut [f64],
) -> Result<f64> {
    check(data, labels, k, w)?;
    let n = data.n() as f64;
    let (q, g, _) = gate_pass(data, labels, k, w, false)?;
    for (o, v) in grad.iter_mut().zip(g) {
        *o = v / n;
    }
    Ok(q / n)
}

fn check(data: &Dataset, labels: &[f64], k: usize, w: &[f64]) -> Result<()> {
    if k < 2 {
        return Err(MoeError::InvalidParam {
            name: "n_experts",
            reason: "a softmax gate needs K >= 2".into(),
        });
    }
    if labels.len() != data.n() * k || w.len() != (k - 1) * data.d() {
        return Err(MoeError::InvalidParam {
            name: "labels",
            reason: format!(
                "expected {} labels and {} gate parameters, found {} and {}",
                data.n() * k,
                (k - 1) * data.d(),
                labels.len(),
                w.len()
            ),
        });
    }
    if let Some(i) = labels.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
        return Err(MoeError::InvalidData {
            row: Some(i / k),
            column: Some("responsibility".into()),
            reason: "soft labels must be finite and >= 0".into(),
        });
    }
    Ok(())
}

/// The gate M-step with the method of `cfg` (see the [module documentation](self)), from
/// `start`, result in `out`: Newton's method with backtracking by default, L-BFGS with
/// [`GateSolver::Lbfgs`] ([`fit_softmax_gate_lbfgs`]).
///
/// Every data pass at a full Newton step evaluates $Q$ and $\nabla Q$ and, when a fresh
/// Hessian will be wanted next, the Hessian in the same pass (speculatively: a
/// backtracked trial forms none). With [`GateConfig::reuse_below`] $> 0$ the last fresh
/// Hessian is reused while steps contract $\|\nabla Q\|$ fast enough, with a BFGS update
/// per reused step (without it this is the chord method, linear
/// with the rate of $\|I - H_0^{-1}H\|$; with it superlinear), so near the optimum — late
/// in EM, when the gate barely moves — a step costs a gradient pass only. A stale Hessian
/// whose step the line search cannot accept is replaced by a fresh one before giving up.
/// [`InnerStats::iterations`] counts accepted steps, [`InnerStats::hessians`] the
/// Hessians formed.
///
/// # Errors
/// `NotPositiveDefinite { block: Block::Gate, pivot }` when the Newton Hessian is singular
/// (collinear features or a gate saturated to 0/1 everywhere) and
/// [`GateConfig::lbfgs_fallback`] is off; the errors of [`fit_softmax_gate_lbfgs`] for the
/// L-BFGS solver or fallback.
pub fn fit_softmax_gate(
    data: &Dataset,
    labels: &[f64],
    k: usize,
    start: &[f64],
    out: &mut [f64],
    cfg: GateConfig,
) -> Result<InnerStats> {
    fit_softmax_gate_from(data, labels, k, start, out, cfg, None)
}

/// The factored Hessian $-\nabla^2 Q = LL^\top$ (from the sums $-n\nabla^2 Q$).
fn factor_gate_hessian(hess: &Mat<f64>, n: f64) -> Result<Llt<f64>> {
    let dim = hess.nrows();
    let hs = Mat::from_fn(dim, dim, |a, b| hess[(a, b)] / n);
    cholesky_factor(hs.as_ref()).map_err(|pivot| MoeError::NotPositiveDefinite {
        block: Block::Gate,
        pivot,
    })
}

/// [`fit_softmax_gate`] starting from precomputed [`GateStats`] at `start` (from the
/// E-step); they are used only if computed at exactly `start` (and only by Newton),
/// otherwise the first pass is taken as usual.
///
/// # Errors
/// As [`fit_softmax_gate`].
pub fn fit_softmax_gate_from(
    data: &Dataset,
    labels: &[f64],
    k: usize,
    start: &[f64],
    out: &mut [f64],
    cfg: GateConfig,
    initial: Option<&GateStats>,
) -> Result<InnerStats> {
    check(data, labels, k, start)?;
    cfg.check()?;
    if cfg.solver == GateSolver::Lbfgs {
        return lbfgs_gate(data, labels, k, start, out, cfg);
    }
    match newton_gate(data, labels, k, start, out, cfg, initial) {
        Err(MoeError::NotPositiveDefinite {
            block: Block::Gate, ..
        }) if cfg.lbfgs_fallback => {
            let mut stats = lbfgs_gate(data, labels, k, start, out, cfg)?;
            stats.fallbacks += 1;
            Ok(stats)
        }
        other => other,
    }
}

/// The gate M-step by L-BFGS (see the [module documentation](self)): minimises $-Q(W)$
/// ([`gate_objective`]) from `start` with [`crate::inner::lbfgs::Lbfgs`] (defaults but
/// `grad_tol` $=$ `cfg.tol`, `max_iter` $=$ `cfg.max_iter`), result in `out`, whatever
/// `cfg.solver` says. The returned [`InnerStats`] holds the L-BFGS iterations, the final
/// $\|\nabla Q\|_\infty$ as `residual`, whether `tol` was met (`converged`; `false` is an
/// inexact M-step, reported) and `hessians = 0`, `fallbacks = 0`.
///
/// # Errors
/// `InvalidParam`/`InvalidData` for inconsistent inputs or settings; `NonFinite` when $Q$
/// is not finite at `start`; `LeftDomain` when the iterates run off to infinity (a gate
/// separable in the labels).
pub fn fit_softmax_gate_lbfgs(
    data: &Dataset,
    labels: &[f64],
    k: usize,
    start: &[f64],
    out: &mut [f64],
    cfg: GateConfig,
) -> Result<InnerStats> {
    check(data, labels, k, start)?;
    cfg.check()?;
    lbfgs_gate(data, labels, k, start, out, cfg)
}

/// [`fit_softmax_gate_lbfgs`] on checked inputs.
fn lbfgs_gate(
    data: &Dataset,
    labels: &[f64],
    k: usize,
    start: &[f64],
    out: &mut [f64],
    cfg: GateConfig,
) -> Result<InnerStats> {
    let solver = crate::inner::lbfgs::Lbfgs {
        grad_tol: cfg.tol,
        max_iter: usize::try_from(cfg.max_iter).unwrap_or(usize::MAX),
        ..crate::inner::lbfgs::Lbfgs::default()
    };
    let mut w = start.to_vec();
    let rep = solver.minimize(
        |w, g| {
            let q = gate_objective(data, labels, k, w, g)?;
            g.iter_mut().for_each(|v| *v = -*v);
            Ok(-q)
        },
        &mut w,
    )?;
    out.copy_from_slice(&w);
    Ok(InnerStats::from(&rep))
}

/// The BFGS update of an inverse-Hessian approximation $H \approx (-\nabla^2 Q)^{-1}$ with
/// the step $s = W^+ - W$ and the change $y = \nabla Q(W) - \nabla Q(W^+)$ of the gradient
/// of the convex $-Q$:
/// $$ H^+ = (I - \rho s y^\top) H (I - \rho y s^\top) + \rho s s^\top,\qquad
///    \rho = 1 / y^\top s, $$
/// computed in $O(\dim^2)$ as $H^+ = H - \rho(s u^\top + u s^\top) + (\rho^2 y^\top u + \rho)
/// s s^\top$ with $u = Hy$. $H^+$ satisfies the secant equation $H^+ y = s$ and stays
/// positive definite. Returns `false` and leaves $H$ alone when $y^\top s \le 10^{-12}
/// \|y\|\|s\|$ (no usable curvature: a step of round-off size).
///
/// **Why.** Between fresh Hessians the gate's Newton solve reuses a factored Hessian (the
/// chord method, linearly convergent); folding each step's secant pair in makes the reused
/// matrix track the curvature met on the way (superlinear convergence from an exact start,
/// Dennis–Moré), so fewer fresh Hessians — $K(K-1)/2$ weighted Grams each — are needed.
fn bfgs_inverse_update(h: &mut Mat<f64>, s: &[f64], y: &[f64]) -> bool {
    let ys = dot(y, s);
    // (written so that a NaN pair is also skipped)
    if ys.is_nan() || ys <= 1e-12 * dot(y, y).sqrt() * dot(s, s).sqrt() {
        return false;
    }
    let rho = 1.0 / ys;
    let dim = s.len();
    let u: Vec<f64> = (0..dim).map(|a| dot(h.col_as_slice(a), y)).collect();
    let c = rho * rho * dot(y, &u) + rho;
    for b in 0..dim {
        for a in 0..dim {
            h[(a, b)] += c * s[a] * s[b] - rho * (s[a] * u[b] + u[a] * s[b]);
        }
    }
    true
}

/// The Newton gate M-step of [`fit_softmax_gate_from`] on checked inputs.
fn newton_gate(
    data: &Dataset,
    labels: &[f64],
    k: usize,
    start: &[f64],
    out: &mut [f64],
    cfg: GateConfig,
    initial: Option<&GateStats>,
) -> Result<InnerStats> {
    let n = data.n() as f64;
    let dim = start.len();
    let mut w = start.to_vec();
    let mut trial = vec![0.0; dim];
    let mut stats = InnerStats::default();
    let (q0, g0, h0) = match initial {
        Some(gs) if gs.w == w && gs.hess.nrows() == dim => (gs.q, gs.grad.clone(), gs.hess.clone()),
        _ => gate_pass(data, labels, k, &w, true)?,
    };
    stats.hessians += 1;
    let mut q = q0 / n;
    let mut g: Vec<f64> = g0.iter().map(|v| v / n).collect();
    let mut factor = factor_gate_hessian(&h0, n)?;
    // Whether `factor` is the Hessian at the current `w`.
    let mut fresh = true;
    // Between fresh Hessians: the BFGS-updated inverse approximation of −∇²Q (built from
    // `factor` at the first update), which steers the reused steps.
    let mut hinv: Option<Mat<f64>> = None;
    // ‖∇Q‖ contraction of the last accepted step (NaN before the first).
    let mut ratio = f64::NAN;
    loop {
        let gnorm = dot(&g, &g).sqrt();
        stats.residual = gnorm;
        if !gnorm.is_finite() {
            return Err(MoeError::NonFinite {
                what: "gate gradient",
            });
        }
        if gnorm <= cfg.tol {
            stats.converged = true;
            break;
        }
        if stats.iterations >= cfg.max_iter {
            break;
        }
        let dir = match hinv.as_ref() {
            Some(h) => (0..dim).map(|a| dot(h.col_as_slice(a), &g)).collect(),
            None => llt_solve(&factor, &g).map_err(|pivot| MoeError::NotPositiveDefinite {
                block: Block::Gate,
                pivot,
            })?,
        };
        let slope = dot(&g, &dir);
        // Reuse the factor for the next step while steps contract well. A step about to be
        // taken with a fresh factor (the first, with the E-step's Hessian, or one just
        // formed) is a Newton step: no new Hessian until its own contraction is known (the
        // last ratio measured the stale matrix it replaced).
        let reuse = cfg.reuse_below > 0.0 && (fresh || ratio <= cfg.reuse_below);
        // No speculative Hessian either when the trial is predicted to converge: with a
        // fresh factor (a Newton step) at the quadratic rate ‖g⁺‖ ≈ C‖g‖², C estimated
        // from the last step as ratio/‖g‖, i.e. ‖g‖·ratio²; with a stale one (a chord
        // step) at the linear rate ‖g‖·ratio.
        let predicted = if fresh {
            gnorm * ratio * ratio
        } else {
            gnorm * ratio
        };
        let converging = predicted.is_finite() && predicted <= 0.1 * cfg.tol;
        let mut t = 1.0;
        let mut accepted = false;
        while t > 1e-12 {
            for j in 0..dim {
                trial[j] = w[j] + t * dir[j];
            }
            let full = t == 1.0;
            let want_h = full && !reuse && !converging;
            let (qt, gt, ht) = gate_pass(data, labels, k, &trial, want_h)?;
            if want_h {
                stats.hessians += 1;
            }
            let qt = qt / n;
            if qt.is_finite() && (qt >= q + 1e-4 * t * slope || (full && slope <= NEWTON_PURE)) {
                accepted = true;
                q = qt;
                let g_new: Vec<f64> = gt.iter().map(|v| v / n).collect();
                if want_h {
                    factor = factor_gate_hessian(&ht, n)?;
                    hinv = None;
                } else {
                    // The factored Hessian will be reused: fold this step's curvature in.
                    let h = hinv.get_or_insert_with(|| factor.inverse());
                    let step: Vec<f64> = trial.iter().zip(&w).map(|(a, b)| a - b).collect();
                    let dg: Vec<f64> = g.iter().zip(&g_new).map(|(a, b)| a - b).collect();
                    bfgs_inverse_update(h, &step, &dg);
                }
                g = g_new;
                fresh = want_h;
                break;
            }
            t *= 0.5;
        }
        if !accepted {
            if fresh {
                stats.iterations += 1;
                break;
            }
            // A stale Hessian's direction failed: form the Hessian at w and retry.
            let (_, _, hm) = gate_pass(data, labels, k, &w, true)?;
            stats.hessians += 1;
            factor = factor_gate_hessian(&hm, n)?;
            hinv = None;
            fresh = true;
            ratio = f64::INFINITY;
            continue;
        }
        stats.iterations += 1;
        ratio = dot(&g, &g).sqrt() / gnorm;
        w.copy_from_slice(&trial);
    }
    out.copy_from_slice(&w);
    Ok(stats)
}

/// Closed-form M-step of a constant gate (mixture of regressions): with
/// $W_k = \sum_i s_{ik}$ the mixing weights are $\pi_k = W_k / \sum_l W_l$ and the logits
/// (reference $K-1$) are $a_k = \log W_k - \log W_{K-1}$, $k < K-1$, into `out`.
///
/// # Errors
/// `NonFinite` if some expert has zero total weight (its logit would be $-\infty$).
pub fn constant_gate_mstep(weights: &[f64], out: &mut [f64]) -> Result<()> {
    let k = weights.len();
    if weights.iter().any(|w| !(*w > 0.0 && w.is_finite())) {
        return Err(MoeError::NonFinite {
            what: "mixing weight of an expert with zero total responsibility",
        });
    }
    let last = weights[k - 1].ln();
    for j in 0..k - 1 {
        out[j] = weights[j].ln() - last;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn setup(n: usize, d: usize, k: usize, seed: u64) -> (Dataset, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut xs = Vec::new();
        for _ in 0..n {
            let row: Vec<f64> = (0..d)
                .map(|j| {
                    if j == 0 {
                        1.0
                    } else {
                        StandardNormal.sample(&mut rng)
                    }
                })
                .collect();
            xs.extend(row);
        }
        let ds = Dataset::from_rows(&xs, d, &vec![0.0; n], 1).unwrap();
        let mut labels = Vec::new();
        for i in 0..n {
            let mut row: Vec<f64> = (0..k)
                .map(|j| {
                    (rng.random::<f64>() + 0.1) * (1.0 + ds.x(i)[1.min(d - 1)] * j as f64).abs()
                })
                .collect();
            let s: f64 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s);
            labels.extend(row);
        }
        (ds, labels)
    }

    #[test]
    fn gradient_matches_finite_differences_and_hessian_matches_fd_of_gradient() {
        let (ds, labels) = setup(300, 3, 3, 1);
        let w: Vec<f64> = (0..6).map(|j| 0.1 * j as f64 - 0.2).collect();
        let mut g = vec![0.0; 6];
        gate_objective(&ds, &labels, 3, &w, &mut g).unwrap();
        let (_, _, h) = gate_pass(&ds, &labels, 3, &w, true).unwrap();
        let n = 300.0;
        for j in 0..6 {
            let e = 1e-5;
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[j] += e;
            wm[j] -= e;
            let (mut gp, mut gm) = (vec![0.0; 6], vec![0.0; 6]);
            let qp = gate_objective(&ds, &labels, 3, &wp, &mut gp).unwrap();
            let qm = gate_objective(&ds, &labels, 3, &wm, &mut gm).unwrap();
            assert!(((qp - qm) / (2.0 * e) - g[j]).abs() < 1e-8);
            for l in 0..6 {
                let fd = -(gp[l] - gm[l]) / (2.0 * e);
                assert!((fd - h[(l, j)] / n).abs() < 1e-7, "{fd} {}", h[(l, j)] / n);
            }
        }
    }

    #[test]
    fn newton_reaches_tolerance_and_maximises() {
        let (ds, labels) = setup(500, 3, 3, 2);
        let mut out = vec![0.0; 6];
        let st =
            fit_softmax_gate(&ds, &labels, 3, &[0.0; 6], &mut out, GateConfig::default()).unwrap();
        assert!(st.converged && st.residual <= 1e-10, "{st:?}");
        assert!(
            st.hessians >= 1 && st.hessians <= st.iterations + 1,
            "{st:?}"
        );
        let mut g = vec![0.0; 6];
        let q = gate_objective(&ds, &labels, 3, &out, &mut g).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..20 {
            let pert: Vec<f64> = out
                .iter()
                .map(|v| v + 1e-3 * (rng.random::<f64>() - 0.5))
                .collect();
            assert!(gate_objective(&ds, &labels, 3, &pert, &mut g).unwrap() < q);
        }
    }

    #[test]
    fn hessian_reuse_reaches_the_plain_newton_maximiser_with_fewer_hessians() {
        let (ds, labels) = setup(2000, 4, 3, 5);
        let newton = GateConfig {
            reuse_below: 0.0,
            ..GateConfig::default()
        };
        // From far away (zero start) and warm (near the maximiser, as late in EM).
        let mut exact = vec![0.0; 8];
        let st_n = fit_softmax_gate(&ds, &labels, 3, &[0.0; 8], &mut exact, newton).unwrap();
        assert!(st_n.converged, "{st_n:?}");
        // Plain Newton: a fresh Hessian for every step but the last, converged one.
        assert!(st_n.hessians >= st_n.iterations, "{st_n:?}");
        let warm: Vec<f64> = exact.iter().map(|v| v + 0.01).collect();
        for start in [vec![0.0; 8], warm] {
            let (mut a, mut b) = (vec![0.0; 8], vec![0.0; 8]);
            let sn = fit_softmax_gate(&ds, &labels, 3, &start, &mut a, newton).unwrap();
            let sc =
                fit_softmax_gate(&ds, &labels, 3, &start, &mut b, GateConfig::default()).unwrap();
            assert!(sn.converged && sc.converged, "{sn:?} {sc:?}");
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-8, "{a:?} vs {b:?}");
            }
            assert!(sc.hessians <= sn.hessians, "{sc:?} vs {sn:?}");
        }
        // Warm start: the start's Hessian is reused throughout.
        let warm: Vec<f64> = exact.iter().map(|v| v + 0.01).collect();
        let sc = fit_softmax_gate(
            &ds,
            &labels,
            3,
            &warm,
            &mut exact.clone(),
            GateConfig::default(),
        )
        .unwrap();
        assert_eq!(sc.hessians, 1, "{sc:?}");
        // A bad setting is a typed error.
        let bad = GateConfig {
            reuse_below: 1.5,
            ..GateConfig::default()
        };
        assert!(matches!(
            fit_softmax_gate(&ds, &labels, 3, &[0.0; 8], &mut exact, bad),
            Err(MoeError::InvalidParam { .. })
        ));
    }

    #[test]
    fn q_matches_the_textbook_sum_across_chunks_and_label_sums() {
        // Q summed with blocked logarithms (labels summing to exactly 1), per-row ones
        // (other label sums) and the unshifted K−1-exponential softmax, against
        // (1/n) Σ_i Σ_k s_ik log π_k(x_i) computed naively, over several row chunks.
        for k in [2usize, 3, 4] {
            let n = 2 * CHUNK + 123;
            let d = 3;
            let (ds, mut labels) = setup(n, d, k, 40 + k as u64);
            // Every third row's labels scaled (row sum ≠ 1, as with weighted rows).
            for (i, row) in labels.chunks_mut(k).enumerate() {
                if i % 3 == 0 {
                    row.iter_mut().for_each(|v| *v *= 1.7);
                }
            }
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let w: Vec<f64> = (0..(k - 1) * d)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    3.0 * z
                })
                .collect();
            let mut g = vec![0.0; w.len()];
            let q = gate_objective(&ds, &labels, k, &w, &mut g).unwrap();
            let mut naive = 0.0;
            for i in 0..n {
                let logits: Vec<f64> = (0..k)
                    .map(|j| {
                        if j + 1 == k {
                            0.0
                        } else {
                            (0..d).map(|a| w[j * d + a] * ds.x(i)[a]).sum()
                        }
                    })
                    .collect();
                let z: f64 = logits.iter().map(|v| v.exp()).sum();
                for j in 0..k {
                    naive += labels[i * k + j] * (logits[j] - z.ln());
                }
            }
            naive /= n as f64;
            assert!(
                (q - naive).abs() < 1e-12 * naive.abs(),
                "K = {k}: {q} vs {naive}"
            );
        }
    }

    #[test]
    fn chunk_softmax_matches_the_shifted_softmax_row_by_row() {
        // Column-major probabilities of a chunk (vectorised unshifted exponentials, rows
        // with a logit > UNSHIFTED_MAX on the shifted path) against softmax_parts of each
        // row with its reference 0 appended.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for k in [2usize, 3, 5] {
            let m = 301;
            let mut cols: Vec<Vec<f64>> = (0..k - 1)
                .map(|_| (0..m).map(|_| rng.random_range(-60.0..60.0)).collect())
                .collect();
            cols[0][5] = 750.0;
            cols[k - 2][6] = 705.0;
            cols[0][7] = -900.0;
            let views: Vec<&[f64]> = cols.iter().map(|c| c.as_slice()).collect();
            let (mut probs, mut gmax, mut gsum) = (vec![0.0; m * k], vec![0.0; m], vec![0.0; m]);
            gate_softmax_rows(&views, k, &mut probs, &mut gmax, &mut gsum).unwrap();
            for li in 0..m {
                let mut row: Vec<f64> = cols.iter().map(|c| c[li]).chain([0.0]).collect();
                let lse = mirror::special::log_sum_exp(&row);
                let (mx, z) = mirror::special::softmax_parts(&mut row);
                let got = gmax[li] + gsum[li].ln();
                assert!(
                    (got - lse).abs() <= 1e-14 * lse.abs().max(1.0),
                    "row {li}: {got} vs {lse} ({mx}, {z})"
                );
                // The shifted form rounds g − m first: relative error up to |g − m|·u.
                let spread = 1.0 + cols.iter().map(|c| c[li].abs()).fold(0.0, f64::max);
                for j in 0..k {
                    let (a, b) = (probs[j * m + li], row[j]);
                    let tol = 1e-15 * spread * b + 1e-300;
                    assert!((a - b).abs() <= tol, "row {li}, class {j}: {a} vs {b}");
                }
            }
            // An infinite logit is an error, not NaN probabilities.
            cols[0][9] = f64::INFINITY;
            let views: Vec<&[f64]> = cols.iter().map(|c| c.as_slice()).collect();
            let err = gate_softmax_rows(&views, k, &mut probs, &mut gmax, &mut gsum);
            assert!(matches!(err, Err(MoeError::NonFinite { .. })), "{err:?}");
        }
    }

    #[test]
    fn bfgs_inverse_update_is_the_inverse_of_the_direct_bfgs_update() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let dim = 6;
        let spd = |rng: &mut ChaCha8Rng| {
            let m = Mat::from_fn(dim, dim, |_, _| rng.random::<f64>() - 0.5);
            let mut a = &m * m.transpose();
            for i in 0..dim {
                a[(i, i)] += 0.5;
            }
            a
        };
        for _ in 0..20 {
            // B ≈ −∇²Q (direct form), H = B⁻¹; a curvature pair y = A s of a convex quadratic.
            let b = spd(&mut rng);
            let a = spd(&mut rng);
            let sv: Vec<f64> = (0..dim).map(|_| rng.random::<f64>() - 0.5).collect();
            let matvec = |m: &Mat<f64>, v: &[f64]| -> Vec<f64> {
                (0..dim)
                    .map(|i| (0..dim).map(|j| m[(i, j)] * v[j]).sum())
                    .collect()
            };
            let y = matvec(&a, &sv);
            let mut h = b.as_ref().llt(faer::Side::Lower).unwrap().inverse();
            assert!(bfgs_inverse_update(&mut h, &sv, &y));
            // Direct update: B⁺ = B − B s sᵀB / sᵀBs + y yᵀ / yᵀs.
            let bs = matvec(&b, &sv);
            let (sbs, ys) = (dot(&sv, &bs), dot(&y, &sv));
            let bp = Mat::from_fn(dim, dim, |i, j| {
                b[(i, j)] - bs[i] * bs[j] / sbs + y[i] * y[j] / ys
            });
            let prod = &bp * &h;
            for i in 0..dim {
                for j in 0..dim {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((prod[(i, j)] - want).abs() < 1e-9, "B⁺H⁺ = {prod:?}");
                    assert!((h[(i, j)] - h[(j, i)]).abs() < 1e-12);
                }
            }
            // Secant equation H⁺ y = s.
            for i in 0..dim {
                let hy: f64 = (0..dim).map(|j| h[(i, j)] * y[j]).sum();
                assert!((hy - sv[i]).abs() < 1e-9 * (1.0 + sv[i].abs()));
            }
        }
        // No curvature (y ⟂ s or y = 0): H is left alone.
        let mut h = Mat::<f64>::identity(2, 2);
        assert!(!bfgs_inverse_update(&mut h, &[1.0, 0.0], &[0.0, 1.0]));
        assert!(!bfgs_inverse_update(&mut h, &[1.0, 0.0], &[0.0, 0.0]));
        assert_eq!(h, Mat::<f64>::identity(2, 2));
    }

    #[test]
    fn constant_gate_is_log_ratio_of_weights() {
        let mut out = vec![0.0; 2];
        constant_gate_mstep(&[1.0, 2.0, 4.0], &mut out).unwrap();
        assert!((out[0] - (0.25f64).ln()).abs() < 1e-15 && (out[1] - 0.5f64.ln()).abs() < 1e-15);
        assert!(matches!(
            constant_gate_mstep(&[0.0, 1.0], &mut out),
            Err(MoeError::NonFinite { .. })
        ));
    }

    #[test]
    fn bad_labels_are_typed_errors() {
        let (ds, mut labels) = setup(10, 2, 2, 3);
        labels[5] = -1.0;
        let mut out = vec![0.0; 2];
        let e = fit_softmax_gate(&ds, &labels, 2, &[0.0; 2], &mut out, GateConfig::default())
            .unwrap_err();
        assert!(matches!(e, MoeError::InvalidData { row: Some(2), .. }));
        let e =
            fit_softmax_gate(&ds, &labels, 1, &[], &mut out, GateConfig::default()).unwrap_err();
        assert!(matches!(
            e,
            MoeError::InvalidParam {
                name: "n_experts",
                ..
            }
        ));
    }
}
