//! The one weighted soft-label softmax regression of em-as-md, shared by the softmax
//! gate's M-step, the [`Multinomial`](crate::model::expert::Multinomial) expert and the
//! logistic M-steps of [`SymMoLogE`](crate::model::sym::SymMoLogE) (2 classes).
//!
//! ## The problem
//!
//! With $C \ge 2$ classes, rows $x_i \in \mathbb R^d$, row weights $w_i \ge 0$ and soft
//! labels $r_{ik} \ge 0$, the coefficients $B = (b_0, \dots, b_{C-2})$ ($b_k \in \mathbb
//! R^d$ contiguous: the column-major $d\times(C-1)$ matrix) give the logits
//! $g_{ik} = b_k^\top x_i$ with the reference class $C-1$ fixed at $g_{i,C-1} = 0$, and
//! $\pi_{ik} = \operatorname{softmax}_k(g_i) = e^{g_{ik} - \operatorname{LSE}(g_i)}$. The
//! regression maximises
//! $$ Q(B) = \sum_i w_i \sum_k r_{ik}\log\operatorname{softmax}_k(B^\top x_i), $$
//! i.e. [`SoftmaxRegression`] minimises the weight-averaged $F(B) = -Q(B)/W$,
//! $W = \sum_i w_i$, whose derivatives are, with $c_i = \sum_k r_{ik}$ and $k, l < C-1$,
//! $$ \nabla_{b_k} F = \frac1W\sum_i w_i\,(c_i\pi_{ik} - r_{ik})\,x_i,\qquad
//!    \nabla^2_{b_k b_l} F = \frac1W\sum_i w_i c_i\,\pi_{ik}(\delta_{kl} - \pi_{il})\,
//!    x_ix_i^\top. $$
//! $F$ is convex (each row's Hessian block matrix is $c_i(\operatorname{diag}\pi_i -
//! \pi_i\pi_i^\top) \otimes x_ix_i^\top \succeq 0$).
//!
//! The gate uses $w_i = 1$, $r_{ik}$ = responsibilities, $C = K$; the multinomial expert
//! $w_i$ = responsibilities and one-hot labels ([`Labels::Classes`]); SymMoLogE $w_i = 1$
//! and $C = 2$ with $r_{i0} = t_i$, $r_{i1} = 1 - t_i$ ([`Labels::Binary`]), where
//! $-\frac1n Q = \frac1n\sum_i \log(1 + e^{u_i}) - t_iu_i$, $u_i = b_0^\top x_i$.
//!
//! ## The pass
//!
//! Rows go through the deterministic [`fold_rows_with`] (fixed chunks merged in chunk
//! order, so results do not depend on the thread count); per chunk the logits are one faer
//! product, the $m(C-1)$ exponentials one vectorised [`exp_in_place`] (`softmax_rows`),
//! the gradient $X_c^\top(S - c\,\Pi)$ one product and the Hessian's $C(C-1)/2$ distinct
//! $d\times d$ blocks weighted Gram products (`add_weighted_grams`). Work buffers are
//! per worker (`SoftmaxScratch`): nothing is allocated per row. $Q$'s logarithms are
//! summed by block ([`SumOfLogs`]) for rows whose weighted labels sum to 1 (to within
//! `label_sum_slack`).
//!
//! The round-off estimate handed to the Newton driver is
//! [`sum_noise`]$\big(\frac1W\sum_i[\sum_k s_{ik}|g_{ik}| + \tilde c_i\operatorname{LSE}(g_i)],
//! n\big)$ with $s_{ik} = w_ir_{ik}$, $\tilde c_i = w_ic_i$: the sizes of $Q$'s terms before
//! they cancel ($\operatorname{LSE}(g_i) \ge 0$ since $g_{i,C-1} = 0$).

use crate::data::Dataset;
use crate::error::{MoeError, Result};
use crate::inner::first_failing;
use crate::inner::gram::{add_weighted_grams, gram_buffer_len};
use crate::inner::parallel::{fold_rows_with, Mergeable, CHUNK};
use crate::inner::sums::{fill_eval, NewtonSums};
use crate::inner::thin::{chunk_add_scaled, chunk_dots};
use faer::{Mat, MatRef};
use mirror::batch_exp::exp_in_place;
use mirror::newton::{
    minimize, sum_noise, EvalOut, InitialEval, Need, NewtonObjective, NewtonReport, NewtonSettings,
};
use mirror::special::{softmax_parts_ref0, SumOfLogs, UNSHIFTED_MAX};

/// Where the soft labels $r_{ik}$ of a [`SoftmaxRegression`] come from.
#[derive(Debug, Clone, Copy)]
pub enum Labels<'a> {
    /// $r_{ik}$ given as an $n\times C$ row-major matrix (finite, $\ge 0$).
    Soft(&'a [f64]),
    /// One-hot labels from the data's single target column: $r_{ik} = [y_i = k]$, $y_i \in
    /// \{0, \dots, C-1\}$.
    Classes,
    /// Two classes: $r_{i0} = t_i$, $r_{i1} = 1 - t_i$ with $t_i \in [0, 1]$ (length $n$).
    Binary(&'a [f64]),
}

/// The merged sums of a pass at coefficients $B$ (not divided by $W$): $Q$,
/// $\sum_i[\sum_k s_{ik}|g_{ik}| + \tilde c_i\operatorname{LSE}_i]$ (`abs`), $\nabla Q$
/// (column-major $d\times(C-1)$, the parameter layout) and, when asked for, the lower
/// block triangle of $-\nabla^2 Q$.
pub(crate) struct SoftmaxSums {
    q: f64,
    abs: f64,
    grad: Vec<f64>,
    hess: Mat<f64>,
}

impl SoftmaxSums {
    /// Zero sums for $d$ features and $C$ classes (Hessian of size 0 when not wanted).
    pub(crate) fn new(d: usize, c: usize, hessian: bool) -> Self {
        let dim = (c - 1) * d;
        SoftmaxSums {
            q: 0.0,
            abs: 0.0,
            grad: vec![0.0; dim],
            hess: if hessian {
                Mat::zeros(dim, dim)
            } else {
                Mat::zeros(0, 0)
            },
        }
    }

    /// The merged sums at coefficients `w` as [`SoftmaxStats`] (Hessian symmetrised).
    pub(crate) fn finish(self, w: &[f64]) -> SoftmaxStats {
        let mut hess = self.hess;
        for a in 0..hess.nrows() {
            for b in a + 1..hess.ncols() {
                hess[(a, b)] = hess[(b, a)];
            }
        }
        SoftmaxStats {
            w: w.to_vec(),
            q: self.q,
            abs: self.abs,
            grad: self.grad,
            hess,
        }
    }
}

impl SoftmaxSums {
    /// The sums as a shard round's [`NewtonSums`] at `w` (Hessian row-major, lower
    /// triangle authoritative).
    pub(crate) fn into_newton(self, w: &[f64]) -> NewtonSums {
        let dim = self.grad.len();
        let hess = if self.hess.nrows() > 0 {
            (0..dim * dim)
                .map(|j| {
                    let (a, b) = (j / dim, j % dim);
                    if a >= b {
                        self.hess[(a, b)]
                    } else {
                        0.0
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        NewtonSums {
            at: w.to_vec(),
            q: self.q,
            abs: self.abs,
            outside: false,
            grad: self.grad,
            hess,
        }
    }
}

impl Mergeable for SoftmaxSums {
    fn merge(&mut self, other: Self) {
        self.q += other.q;
        self.abs += other.abs;
        for (a, b) in self.grad.iter_mut().zip(&other.grad) {
            *a += b;
        }
        if self.hess.nrows() > 0 {
            self.hess += &other.hess;
        }
    }
}

/// The M-step quantities of a softmax regression at coefficients `w`, as sums over rows
/// (not divided by $W$): $Q(B)$, the size of its terms, $\nabla Q$ and $-\nabla^2 Q$. The
/// E-step of a gated mixture computes them for the gate at the current parameters in the
/// same pass (its responsibilities are the labels), so the gate's Newton solve starts
/// without a pass of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftmaxStats {
    /// The coefficients they were computed at.
    pub w: Vec<f64>,
    /// $Q = \sum_i\sum_k s_{ik}\log\pi_k(x_i)$.
    pub q: f64,
    /// $\sum_i[\sum_k s_{ik}|g_{ik}| + \tilde c_i\operatorname{LSE}(g_i)]$, the size of
    /// $Q$'s terms (for its round-off, [`sum_noise`]).
    pub abs: f64,
    /// $\nabla Q = \sum_i (s_{ik} - \tilde c_i\pi_{ik})x_i$, flattened like `w`.
    pub grad: Vec<f64>,
    /// $-\nabla^2 Q = \sum_i \tilde c_i(\operatorname{diag}\pi_i - \pi_i\pi_i^\top)\otimes
    /// x_ix_i^\top$.
    pub hess: Mat<f64>,
}

/// Work buffers of the softmax pass for one worker, sized for a [`CHUNK`] of rows and
/// reused across chunks and passes (every entry read is first written for the current
/// chunk).
pub(crate) struct SoftmaxScratch {
    /// $(d, C)$ the buffers are sized for.
    shape: (usize, usize),
    /// Logits $x_i^\top b_k$, $k < C-1$ ($m\times(C-1)$).
    logits: Mat<f64>,
    /// Probabilities $\pi_{ik}$, column-major $m\times C$.
    pub(crate) probs: Vec<f64>,
    /// Per row, $\operatorname{LSE}_k g_{ik} = m_i + \log z_i$ in two parts
    /// (`softmax_rows`): the shift $m_i$ (0, or the largest logit when one is too large
    /// to exponentiate unshifted) …
    pub(crate) gmax: Vec<f64>,
    /// … and $z_i = \sum_k e^{g_{ik} - m_i} \ge 1$.
    pub(crate) gsum: Vec<f64>,
    /// Gradient residuals $s_{ik} - \tilde c_i\pi_{ik}$, column-major $m\times(C-1)$.
    resid: Vec<f64>,
    /// Weighted labels $s_{ik} = w_ir_{ik}$ of the chunk, column-major $m\times C$.
    labels: Vec<f64>,
    /// Label row sums $\tilde c_i = \sum_k s_{ik}$.
    csum: Vec<f64>,
    /// Hessian block weights $\tilde c_i\pi_{ia}(\delta_{ab} - \pi_{ib})$ per row.
    wts: Vec<f64>,
    /// Scaled-columns buffer of [`add_weighted_grams`].
    buf: Vec<f64>,
}

impl SoftmaxScratch {
    /// Buffers for $d$ features and $C$ classes.
    pub(crate) fn new(d: usize, c: usize) -> Self {
        SoftmaxScratch {
            shape: (d, c),
            logits: Mat::zeros(CHUNK, c - 1),
            probs: vec![0.0; CHUNK * c],
            gmax: vec![0.0; CHUNK],
            gsum: vec![0.0; CHUNK],
            resid: vec![0.0; CHUNK * (c - 1)],
            labels: vec![0.0; CHUNK * c],
            csum: vec![0.0; CHUNK],
            wts: vec![0.0; CHUNK * c * (c - 1) / 2],
            buf: vec![0.0; gram_buffer_len(d)],
        }
    }

    /// `cached` if it was sized for $d$ features and $C$ classes, else new buffers.
    pub(crate) fn reuse(cached: Option<Self>, d: usize, c: usize) -> Self {
        cached
            .filter(|s| s.shape == (d, c))
            .unwrap_or_else(|| SoftmaxScratch::new(d, c))
    }

    /// Copies a chunk's soft labels given row-major ($m\times C$, chunk-local) into the
    /// column-major label buffer (unit row weights).
    pub(crate) fn set_labels_from_rows(&mut self, labels: &[f64], c: usize) {
        let m = labels.len() / c;
        for (j, col) in self.labels[..c * m].chunks_exact_mut(m).enumerate() {
            for (dst, row) in col.iter_mut().zip(labels.chunks_exact(c)) {
                *dst = row[j];
            }
        }
    }

    /// The weighted labels $s_{ik} = w_ir_{ik}$ of the chunk `rows` into the column-major
    /// label buffer.
    fn set_labels(
        &mut self,
        data: &Dataset,
        labels: Labels<'_>,
        weights: Option<&[f64]>,
        rows: std::ops::Range<usize>,
        c: usize,
    ) {
        let m = rows.len();
        let lab = &mut self.labels[..c * m];
        match labels {
            Labels::Soft(r) => {
                for (j, col) in lab.chunks_exact_mut(m).enumerate() {
                    for (dst, row) in col
                        .iter_mut()
                        .zip(r[rows.start * c..rows.end * c].chunks_exact(c))
                    {
                        *dst = row[j];
                    }
                }
            }
            Labels::Classes => {
                lab.fill(0.0);
                for (li, i) in rows.clone().enumerate() {
                    // (validated by `SoftmaxRegression::new`: an integer in 0..C)
                    let y = data.y(i)[0] as usize;
                    lab[y * m + li] = 1.0;
                }
            }
            Labels::Binary(t) => {
                let (l0, l1) = lab.split_at_mut(m);
                for ((a, b), ti) in l0.iter_mut().zip(l1.iter_mut()).zip(&t[rows.clone()]) {
                    *a = *ti;
                    *b = 1.0 - ti;
                }
            }
        }
        if let Some(w) = weights {
            for col in lab.chunks_exact_mut(m) {
                for (v, wi) in col.iter_mut().zip(&w[rows.clone()]) {
                    *v *= wi;
                }
            }
        }
    }
}

/// Probabilities and log-partitions of a chunk from its logits (`logits[j]` is the column
/// of $g_j$, $j < C-1$, over the chunk's $m$ rows; $g_{C-1} = 0$): column $k$ of `probs`
/// ($m\times C$ column-major, at least $mC$ values) becomes $\pi_{\cdot k}$, and
/// $\operatorname{LSE}_k g_{ik} = $ `gmax[i]` $+ \log$ `gsum[i]`, where
/// $$ (m_i, z_i) = \Big(0,\; 1 + \sum_{j<C-1} e^{g_{ij}}\Big),\qquad
///    \pi_{ij} = e^{g_{ij}} / z_i,\quad \pi_{i,C-1} = 1/z_i $$
/// as in [`softmax_parts_ref0`] ($C-1$ exponentials, the reference's being 1, and no
/// logarithm: callers sum the logarithms by block). The chunk's $m(C-1)$ exponentials are
/// one vectorised [`exp_in_place`], and the rest are column operations that vectorise
/// too. A row with a logit above [`UNSHIFTED_MAX`] (or NaN) takes
/// [`softmax_parts_ref0`]'s shifted path instead.
///
/// # Errors
/// `NonFinite` when a row's logits overflow.
pub(crate) fn softmax_rows(
    logits: &[&[f64]],
    c: usize,
    probs: &mut [f64],
    gmax: &mut [f64],
    gsum: &mut [f64],
) -> Result<()> {
    let km = c - 1;
    let m = gmax.len();
    let (ex, reference) = probs[..c * m].split_at_mut(km * m);
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
        let mut row = vec![0.0; c];
        for li in (0..m).filter(|&li| !unshifted(li)) {
            for (v, col) in row.iter_mut().zip(logits) {
                *v = col[li];
            }
            row[km] = 0.0;
            let (mx, z) = softmax_parts_ref0(&mut row);
            if !mx.is_finite() {
                return Err(MoeError::NonFinite {
                    what: "softmax logits",
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

/// Adds one chunk (`rows`; its logits `logits` (columns, as in [`softmax_rows`]),
/// probabilities and log-partitions in `scratch.probs`, `scratch.gmax` and `scratch.gsum`,
/// and weighted labels $s_{ik}$ already in the scratch's label buffer) to the sums:
/// $q \mathrel{+}= \sum_k s_{ik}(g_{ik} - \operatorname{LSE}_i)$, the term sizes, the
/// gradient $X_c^\top(S - \tilde c\,\Pi)$ as one faer product and, if `sums` holds a
/// Hessian, its $C(C-1)/2$ weighted Gram blocks.
///
/// $q$ is summed as $\sum_i[\sum_k s_{ik}(g_{ik} - m_i) - \tilde c_i\log z_i]$: rows whose
/// weighted labels sum to $\tilde c_i = 1$ up to [`label_sum_slack`] (the rows of an
/// E-step's responsibilities) add $\log z_i$ through one [`SumOfLogs`] per chunk, so the
/// logarithm is taken once per block of rows instead of once per row; other rows take
/// their own.
pub(crate) fn softmax_chunk(
    data: &Dataset,
    rows: std::ops::Range<usize>,
    logits: &[&[f64]],
    c: usize,
    sums: &mut SoftmaxSums,
    scratch: &mut SoftmaxScratch,
) {
    let d = data.d();
    let km = c - 1;
    let m = rows.len();
    let probs = &scratch.probs[..m * c];
    let lab = &scratch.labels[..c * m];
    let csum = &mut scratch.csum[..m];
    csum.fill(0.0);
    for col in lab.chunks_exact(m) {
        for (cs, s) in csum.iter_mut().zip(col) {
            *cs += s;
        }
    }
    let csum = &scratch.csum[..m];
    // Σ_ik s_ik (g_ik − m_i) = Σ_{k<C−1} ⟨s_·k, g_·k⟩ − Σ_i c_i m_i (g_{C−1} = 0; m_i is 0
    // but on rows with huge logits). `lse` gathers Σ_i c_i LSE_i ≥ 0.
    let (mut sg, mut sg_abs, mut lse) = (0.0, 0.0, 0.0);
    for (col, g) in lab.chunks_exact(m).zip(logits) {
        let (v, a) = dot_lanes(col, &g[..m]);
        sg += v;
        sg_abs += a;
    }
    let mut logs = SumOfLogs::new();
    let slack = label_sum_slack(c);
    for ((&cs, &mx), &z) in csum.iter().zip(&scratch.gmax[..m]).zip(&scratch.gsum[..m]) {
        if mx != 0.0 {
            lse += cs * mx;
        }
        if (cs - 1.0).abs() <= slack {
            logs.add_log(z);
        } else if cs > 0.0 {
            lse += cs * z.ln();
        }
    }
    lse += logs.value();
    sums.q += sg - lse;
    sums.abs += sg_abs + lse;
    for ((res, p), s) in scratch.resid[..km * m]
        .chunks_exact_mut(m)
        .zip(probs.chunks_exact(m))
        .zip(lab.chunks_exact(m))
    {
        for (r, (pj, (cs, sj))) in res.iter_mut().zip(p.iter().zip(csum.iter().zip(s))) {
            *r = sj - cs * pj;
        }
    }
    chunk_add_scaled(
        data,
        rows.clone(),
        &scratch.resid[..km * m],
        km,
        &mut sums.grad,
    );
    if sums.hess.nrows() > 0 {
        // Weights c(π_a δ_ab − π_a π_b) of the lower blocks (a, b), b ≤ a, as the columns
        // of an m × C(C−1)/2 matrix; the blocks are then formed by stacked products.
        let npairs = km * (km + 1) / 2;
        let pair = |j: usize| {
            // The j-th (a, b), b ≤ a, in row order: a = ⌊(√(8j+1) − 1)/2⌋.
            let mut a = 0;
            while (a + 1) * (a + 2) / 2 <= j {
                a += 1;
            }
            (a, j - a * (a + 1) / 2)
        };
        for (j, col) in scratch.wts.chunks_exact_mut(m).take(npairs).enumerate() {
            let (a, b) = pair(j);
            let (pa, pb) = (&probs[a * m..(a + 1) * m], &probs[b * m..(b + 1) * m]);
            let cols = col.iter_mut().zip(csum.iter().zip(pa.iter().zip(pb)));
            if a == b {
                cols.for_each(|(wl, (cs, (pa, pb)))| *wl = cs * pa * (1.0 - pb));
            } else {
                cols.for_each(|(wl, (cs, (pa, pb)))| *wl = -cs * pa * pb);
            }
        }
        let hess = &mut sums.hess;
        add_weighted_grams(
            data,
            rows,
            &scratch.wts[..npairs * m],
            npairs,
            &mut scratch.buf,
            &mut |j, p| {
                let (a, b) = pair(j);
                let mut block = hess.as_mut().submatrix_mut(a * d, b * d, d, d);
                block += p;
            },
        );
    }
}

/// How far from 1 a row's label sum $\tilde c_i$ may be and still add $\log z_i$ through
/// [`SumOfLogs`] as if it were 1: $4C$ units of round-off, $C$ the number of classes.
/// Responsibilities computed as $C$ exponentials over one normaliser sum to 1 only up to
/// a few units of round-off, and an exact test would send most rows of an E-step to a
/// logarithm of their own; the term dropped, $|\tilde c_i - 1|\log z_i$, is at most
/// $4C\varepsilon$ relative to $\tilde c_i\log z_i$, the order of that product's own
/// rounding.
pub(crate) fn label_sum_slack(c: usize) -> f64 {
    4.0 * c as f64 * f64::EPSILON
}

/// $(\langle a, b\rangle, \langle a, |b|\rangle)$ with four interleaved partial sums, which
/// vectorise (a single running sum is a chain of dependent additions).
fn dot_lanes(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (mut acc, mut abs) = ([0.0; 4], [0.0; 4]);
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (mut tail, mut tail_abs) = (0.0, 0.0);
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
        tail_abs += x * y.abs();
    }
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
            abs[l] += x[l] * y[l].abs();
        }
    }
    (
        (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail,
        (abs[0] + abs[1]) + (abs[2] + abs[3]) + tail_abs,
    )
}

/// A weighted soft-label softmax regression (see the [module documentation](self)): data,
/// number of classes, labels and optional row weights (`None`: $w_i = 1$), checked once.
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxRegression<'a> {
    data: &'a Dataset,
    classes: usize,
    labels: Labels<'a>,
    weights: Option<&'a [f64]>,
    /// $W$, summed by [`Self::new`]; `None` for a pass's regression ([`Self::for_pass`]),
    /// whose sums are not divided by $W$ (summed on demand if asked).
    wsum: Option<f64>,
}

impl<'a> SoftmaxRegression<'a> {
    /// The regression of `labels` on the rows of `data` with `classes` classes and row
    /// weights `weights` ($W = \sum_i w_i$; `None` for unit weights, $W = n$).
    ///
    /// # Errors
    /// `InvalidParam` for fewer than 2 classes, label or weight arrays of the wrong length,
    /// or $W$ not finite and $> 0$; `InvalidData` (naming the row) for a negative or
    /// non-finite weight or soft label, a binary label outside $[0, 1]$, or a class label
    /// that is not an integer in $0..C$ (or data without exactly one target column).
    pub fn new(
        data: &'a Dataset,
        classes: usize,
        labels: Labels<'a>,
        weights: Option<&'a [f64]>,
    ) -> Result<Self> {
        let mut reg = Self::for_pass(data, classes, labels, weights)?;
        let wsum = reg.weight_sum();
        reg.wsum = Some(wsum);
        if !(wsum > 0.0 && wsum.is_finite()) {
            return Err(MoeError::InvalidParam {
                name: "weights",
                reason: "the weights must have a positive finite sum".into(),
            });
        }
        Ok(reg)
    }

    /// As [`Self::new`] without the check $W > 0$: a regression whose passes are one
    /// shard's part of a round (a chunk may hold no weight; the merged sum is checked by
    /// the solve).
    ///
    /// # Errors
    /// As [`Self::new`], except for $W$.
    pub(crate) fn for_pass(
        data: &'a Dataset,
        classes: usize,
        labels: Labels<'a>,
        weights: Option<&'a [f64]>,
    ) -> Result<Self> {
        let n = data.n();
        let bad_len = |name: &'static str, expected: usize, found: usize| MoeError::InvalidParam {
            name,
            reason: format!("expected {expected} values, found {found}"),
        };
        let bad_row = |i: usize, column: &str, reason: &str| MoeError::InvalidData {
            row: Some(i),
            column: Some(column.into()),
            reason: reason.into(),
        };
        if classes < 2 {
            return Err(MoeError::InvalidParam {
                name: "classes",
                reason: format!("a softmax regression needs at least 2 classes, got {classes}"),
            });
        }
        match labels {
            Labels::Soft(r) => {
                if r.len() != n * classes {
                    return Err(bad_len("labels", n * classes, r.len()));
                }
                if let Some(i) = first_failing(r, |v| v.is_finite() & (v >= 0.0)) {
                    return Err(bad_row(
                        i / classes,
                        "responsibility",
                        "soft labels must be finite and >= 0",
                    ));
                }
            }
            Labels::Binary(t) => {
                if classes != 2 {
                    return Err(MoeError::InvalidParam {
                        name: "classes",
                        reason: format!("binary labels need 2 classes, got {classes}"),
                    });
                }
                if t.len() != n {
                    return Err(bad_len("labels", n, t.len()));
                }
                if let Some(i) = first_failing(t, |v| (0.0..=1.0).contains(&v)) {
                    return Err(bad_row(i, "label", "binary soft labels must lie in [0, 1]"));
                }
            }
            Labels::Classes => {
                if data.q() != 1 {
                    return Err(MoeError::InvalidData {
                        row: None,
                        column: None,
                        reason: format!("class labels need 1 target column, data has {}", data.q()),
                    });
                }
                if let Some(i) = (0..n).find(|&i| {
                    let y = data.y(i)[0];
                    !(y >= 0.0 && y < classes as f64 && y.fract() == 0.0)
                }) {
                    return Err(bad_row(
                        i,
                        "target",
                        "class label must be an integer in 0..C",
                    ));
                }
            }
        }
        if let Some(w) = weights {
            if w.len() != n {
                return Err(bad_len("weights", n, w.len()));
            }
            if let Some(i) = first_failing(w, |v| v.is_finite() & (v >= 0.0)) {
                return Err(bad_row(i, "weight", "weight must be finite and >= 0"));
            }
        }
        Ok(SoftmaxRegression {
            data,
            classes,
            labels,
            weights,
            wsum: None,
        })
    }

    /// Number of coefficients $(C-1)d$.
    pub fn dim(&self) -> usize {
        (self.classes - 1) * self.data.d()
    }

    /// $W = \sum_i w_i$ (in row order).
    pub fn weight_sum(&self) -> f64 {
        self.wsum.unwrap_or_else(|| {
            self.weights
                .map_or(self.data.n() as f64, |w| w.iter().sum())
        })
    }

    /// One pass at coefficients `b`: the sums $Q$, term sizes, $\nabla Q$ and (when
    /// `hessian`) $-\nabla^2 Q$, not divided by $W$.
    ///
    /// # Errors
    /// `InvalidParam` for `b` of the wrong length; `NonFinite` for overflowing logits.
    pub fn stats(&self, b: &[f64], hessian: bool) -> Result<SoftmaxStats> {
        if b.len() != self.dim() {
            return Err(MoeError::InvalidParam {
                name: "coefficients",
                reason: format!("expected {} values, found {}", self.dim(), b.len()),
            });
        }
        Ok(self.pass(b, hessian)?.finish(b))
    }

    /// One pass at coefficients `b` as a Newton round's [`NewtonSums`] (what the gate's
    /// M-step reads, in memory or merged from shards).
    ///
    /// # Errors
    /// As [`Self::stats`].
    pub(crate) fn round(&self, b: &[f64], hessian: bool) -> Result<NewtonSums> {
        Ok(self.pass(b, hessian)?.into_newton(b))
    }

    fn pass(&self, b: &[f64], hessian: bool) -> Result<SoftmaxSums> {
        let (data, c) = (self.data, self.classes);
        let d = data.d();
        let km = c - 1;
        let bm = MatRef::from_column_major_slice(b, d, km);
        fold_rows_with(
            data.n(),
            |cached| SoftmaxScratch::reuse(cached, d, c),
            || SoftmaxSums::new(d, c, hessian),
            |scratch, sums, rows| {
                let m = rows.len();
                chunk_dots(data, rows.clone(), bm, &mut scratch.logits);
                let logits = std::mem::replace(&mut scratch.logits, Mat::zeros(0, 0));
                let cols: Vec<&[f64]> = (0..km).map(|j| &logits.col_as_slice(j)[..m]).collect();
                let res = softmax_rows(
                    &cols,
                    c,
                    &mut scratch.probs[..m * c],
                    &mut scratch.gmax[..m],
                    &mut scratch.gsum[..m],
                );
                if res.is_ok() {
                    scratch.set_labels(data, self.labels, self.weights, rows.clone(), c);
                    softmax_chunk(data, rows, &cols, c, sums, scratch);
                }
                drop(cols);
                scratch.logits = logits;
                res
            },
        )
    }

    /// $F(B) = -Q(B)/W$ returned and $\nabla F$ written into `grad` (no Hessian formed).
    ///
    /// # Errors
    /// `InvalidParam` for wrong lengths; `NonFinite` when $F$ or $\nabla F$ is not finite
    /// (e.g. non-finite coefficients).
    pub fn objective(&self, b: &[f64], grad: &mut [f64]) -> Result<f64> {
        if b.len() != self.dim() || grad.len() != self.dim() {
            return Err(MoeError::InvalidParam {
                name: "coefficients",
                reason: format!(
                    "expected {} coefficients and gradient entries, found {} and {}",
                    self.dim(),
                    b.len(),
                    grad.len()
                ),
            });
        }
        let sums = self.pass(b, false)?;
        for (g, a) in grad.iter_mut().zip(&sums.grad) {
            *g = -a / self.weight_sum();
        }
        let f = -sums.q / self.weight_sum();
        if f.is_finite() && grad.iter().all(|g| g.is_finite()) {
            Ok(f)
        } else {
            Err(MoeError::NonFinite {
                what: "softmax regression objective",
            })
        }
    }

    /// Minimises $F$ by [`mirror::newton::minimize`] from the coefficients in `b` (the
    /// result is left there) with `settings`; `initial` ([`SoftmaxStats`] at exactly `b`,
    /// with a Hessian) saves the first pass.
    ///
    /// # Errors
    /// `NotPositiveDefinite { block: Block::Expert(None), pivot }` (rename the block with
    /// [`MoeError::in_block`]) when $\nabla^2 F$ fails the Cholesky policy, e.g. a class
    /// with no weight or a feature zero on every weighted row; `NonFinite` for overflowing
    /// logits or a non-finite start; `InvalidParam` for wrong lengths.
    pub fn newton(
        &self,
        b: &mut [f64],
        settings: &NewtonSettings,
        initial: Option<&SoftmaxStats>,
    ) -> Result<NewtonReport> {
        let dim = self.dim();
        if b.len() != dim {
            return Err(MoeError::InvalidParam {
                name: "coefficients",
                reason: format!("expected {dim} values, found {}", b.len()),
            });
        }
        let mut obj = SoftmaxObjective { reg: self };
        let scaled =
            initial.and_then(|s| ScaledInitial::of(s, b, self.weight_sum(), self.data.n()));
        let init = scaled.as_ref().map(ScaledInitial::as_initial);
        minimize(&mut obj, b, settings, init)
    }
}

/// [`SoftmaxStats`] (sums at exactly the start) as the Newton driver's first evaluation
/// of $F = -Q/W$: what saves a gated E-step's M-step its first pass.
pub(crate) struct ScaledInitial<'s> {
    stats: &'s SoftmaxStats,
    value: f64,
    noise: f64,
    grad: Vec<f64>,
    hess: Mat<f64>,
}

impl<'s> ScaledInitial<'s> {
    /// The scaled evaluation when `s` was computed at exactly `b` with a Hessian
    /// (`None` otherwise), over `n` rows of total weight `wsum`.
    pub(crate) fn of(s: &'s SoftmaxStats, b: &[f64], wsum: f64, n: usize) -> Option<Self> {
        let dim = b.len();
        (s.w == b && s.hess.nrows() == dim && s.grad.len() == dim).then(|| ScaledInitial {
            stats: s,
            value: -s.q / wsum,
            noise: sum_noise(s.abs / wsum, n),
            grad: s.grad.iter().map(|v| -v / wsum).collect(),
            hess: Mat::from_fn(dim, dim, |a, c| s.hess[(a, c)] / wsum),
        })
    }

    /// As the driver reads it.
    pub(crate) fn as_initial(&self) -> InitialEval<'_> {
        InitialEval {
            x: &self.stats.w,
            value: self.value,
            noise: self.noise,
            grad: &self.grad,
            hess: self.hess.as_ref(),
        }
    }
}

/// [`SoftmaxRegression`] as a [`NewtonObjective`]: $F$, its round-off, $\nabla F$ and
/// (lower triangle of) $\nabla^2 F$.
struct SoftmaxObjective<'r, 'a> {
    reg: &'r SoftmaxRegression<'a>,
}

impl NewtonObjective for SoftmaxObjective<'_, '_> {
    type Error = MoeError;
    fn dim(&self) -> usize {
        self.reg.dim()
    }
    fn eval(&mut self, x: &[f64], need: Need, out: &mut EvalOut<'_>) -> Result<()> {
        let sums = self.reg.pass(x, need == Need::Hessian)?;
        fill_eval(
            out,
            need,
            self.reg.weight_sum(),
            self.reg.data.n(),
            (sums.q, sums.abs, false),
            &sums.grad,
            |a, b| sums.hess[(a, b)],
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inner::lbfgs::Lbfgs;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// $n$ rows (intercept + $d-1$ normals), class targets, soft labels and weights.
    fn setup(n: usize, d: usize, c: usize, seed: u64) -> (Dataset, Vec<f64>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for _ in 0..n {
            xs.push(1.0);
            for _ in 1..d {
                xs.push(rng.random_range(-2.0..2.0));
            }
            ys.push(rng.random_range(0..c) as f64);
        }
        let labels: Vec<f64> = (0..n * c).map(|_| rng.random::<f64>()).collect();
        let w: Vec<f64> = (0..n)
            .map(|i| if i % 5 == 0 { 0.0 } else { rng.random() })
            .collect();
        (Dataset::from_rows(&xs, d, &ys, 1).unwrap(), labels, w)
    }

    /// $F$ computed naively row by row (log-sum-exp of the full logit vector).
    fn naive(
        data: &Dataset,
        c: usize,
        lab: &dyn Fn(usize, usize) -> f64,
        w: &[f64],
        b: &[f64],
    ) -> f64 {
        let d = data.d();
        let (mut f, mut wsum) = (0.0, 0.0);
        for (i, wi) in w.iter().enumerate().take(data.n()) {
            let g: Vec<f64> = (0..c)
                .map(|k| {
                    if k + 1 == c {
                        0.0
                    } else {
                        (0..d).map(|a| b[k * d + a] * data.x(i)[a]).sum()
                    }
                })
                .collect();
            let lse = mirror::special::log_sum_exp(&g);
            for (k, gk) in g.iter().enumerate() {
                f -= wi * lab(i, k) * (gk - lse);
            }
            wsum += wi;
        }
        f / wsum
    }

    #[test]
    fn value_gradient_hessian_match_naive_sum_and_finite_differences() {
        let (n, d, c) = (700, 3, 4);
        let (ds, labels, w) = setup(n, d, c, 1);
        let reg = SoftmaxRegression::new(&ds, c, Labels::Soft(&labels), Some(&w)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let b: Vec<f64> = (0..reg.dim())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut g = vec![0.0; b.len()];
        let f = reg.objective(&b, &mut g).unwrap();
        let f_ref = naive(&ds, c, &|i, k| labels[i * c + k], &w, &b);
        assert!((f - f_ref).abs() <= 1e-13 * f_ref.abs(), "{f} vs {f_ref}");
        let hess = reg.stats(&b, true).unwrap().hess;
        let wsum = reg.weight_sum();
        let e = 1e-5;
        for j in 0..b.len() {
            let (mut bp, mut bm) = (b.clone(), b.clone());
            bp[j] += e;
            bm[j] -= e;
            let (mut gp, mut gm) = (vec![0.0; b.len()], vec![0.0; b.len()]);
            let fp = reg.objective(&bp, &mut gp).unwrap();
            let fm = reg.objective(&bm, &mut gm).unwrap();
            assert!(((fp - fm) / (2.0 * e) - g[j]).abs() < 1e-8, "gradient {j}");
            for l in 0..b.len() {
                let fd = (gp[l] - gm[l]) / (2.0 * e);
                let h = hess[(l, j)] / wsum;
                assert!((fd - h).abs() < 1e-7, "Hessian ({l}, {j}): {fd} vs {h}");
            }
        }
        // Class labels and binary labels are the same problem as their dense soft labels.
        let onehot: Vec<f64> = (0..n * c)
            .map(|ik| f64::from(ds.y(ik / c)[0] as usize == ik % c))
            .collect();
        let a = SoftmaxRegression::new(&ds, c, Labels::Classes, Some(&w)).unwrap();
        let s = SoftmaxRegression::new(&ds, c, Labels::Soft(&onehot), Some(&w)).unwrap();
        let (mut ga, mut gs) = (g.clone(), g.clone());
        assert_eq!(
            a.objective(&b, &mut ga).unwrap(),
            s.objective(&b, &mut gs).unwrap()
        );
        assert_eq!(ga, gs);
        let t: Vec<f64> = (0..n).map(|i| labels[i * c]).collect();
        let bin = SoftmaxRegression::new(&ds, 2, Labels::Binary(&t), None).unwrap();
        let mut g2 = vec![0.0; d];
        let f2 = bin.objective(&b[..d], &mut g2).unwrap();
        // −(1/n) Σ log(1 + e^u) − t u, the logistic form.
        let f2_ref: f64 = (0..n)
            .map(|i| {
                let u: f64 = (0..d).map(|a| b[a] * ds.x(i)[a]).sum();
                mirror::special::log1p_exp(u) - t[i] * u
            })
            .sum::<f64>()
            / n as f64;
        assert!(
            (f2 - f2_ref).abs() <= 1e-13 * f2_ref.abs(),
            "{f2} vs {f2_ref}"
        );
    }

    #[test]
    fn newton_optimum_matches_lbfgs_on_the_same_objective() {
        let (n, d, c) = (900, 3, 3);
        let (ds, labels, w) = setup(n, d, c, 7);
        for labels in [Labels::Soft(&labels), Labels::Classes] {
            let reg = SoftmaxRegression::new(&ds, c, labels, Some(&w)).unwrap();
            let mut b = vec![0.0; reg.dim()];
            let rep = reg
                .newton(&mut b, &NewtonSettings::new(1e-12, 50).unwrap(), None)
                .unwrap();
            assert!(rep.converged, "{rep:?}");
            let mut bl = vec![0.0; reg.dim()];
            let lb = Lbfgs {
                grad_tol: 1e-11,
                max_iter: 2000,
                ..Lbfgs::default()
            };
            let r = lb.minimize(|x, g| reg.objective(x, g), &mut bl).unwrap();
            assert!(r.converged, "{r:?}");
            for (x, y) in b.iter().zip(&bl) {
                assert!((x - y).abs() < 1e-7, "{b:?} vs {bl:?}");
            }
        }
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let (ds, labels, w) = setup(20, 2, 3, 3);
        let err = |r: Result<SoftmaxRegression<'_>>| r.unwrap_err();
        assert!(matches!(
            err(SoftmaxRegression::new(&ds, 1, Labels::Classes, None)),
            MoeError::InvalidParam {
                name: "classes",
                ..
            }
        ));
        assert!(matches!(
            err(SoftmaxRegression::new(
                &ds,
                3,
                Labels::Soft(&labels[1..]),
                None
            )),
            MoeError::InvalidParam { .. }
        ));
        let mut bad = labels.clone();
        bad[7] = f64::NAN;
        assert!(matches!(
            err(SoftmaxRegression::new(&ds, 3, Labels::Soft(&bad), None)),
            MoeError::InvalidData { row: Some(2), .. }
        ));
        assert!(matches!(
            err(SoftmaxRegression::new(&ds, 2, Labels::Classes, None)),
            MoeError::InvalidData { .. }
        ));
        assert!(matches!(
            err(SoftmaxRegression::new(
                &ds,
                2,
                Labels::Binary(&[2.0; 20]),
                None
            )),
            MoeError::InvalidData { row: Some(0), .. }
        ));
        assert!(matches!(
            err(SoftmaxRegression::new(
                &ds,
                3,
                Labels::Classes,
                Some(&[0.0; 20])
            )),
            MoeError::InvalidParam {
                name: "weights",
                ..
            }
        ));
        let reg = SoftmaxRegression::new(&ds, 3, Labels::Classes, Some(&w)).unwrap();
        let mut g = vec![0.0; 4];
        assert!(matches!(
            reg.objective(&[f64::NAN; 4], &mut g),
            Err(MoeError::NonFinite { .. })
        ));
        assert!(matches!(
            reg.objective(&[0.0; 3], &mut g),
            Err(MoeError::InvalidParam { .. })
        ));
    }
}
