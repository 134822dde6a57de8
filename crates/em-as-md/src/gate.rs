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
//! ([`fit_softmax_gate`]): each Newton step forms one block Hessian of size
//! $(K-1)d$ (its $K(K-1)/2$ $d\times d$ blocks are weighted Gram products taken with faer
//! per row chunk), and the iteration stops at $\|\nabla Q\|_2 \le$ `tol` (default
//! $10^{-10}$) or after `max_iter` (default 50) steps.

use crate::data::Dataset;
use crate::error::{MoeError, Result};
use crate::expert::{
    add_weighted_gram, cholesky_solve, dot, GRAM_BLOCK, INNER_MAX_ITER, INNER_TOL, NEWTON_PURE,
};
use crate::parallel::{fold_rows, Mergeable, CHUNK};
use crate::solver::InnerStats;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use mirror::special::log_sum_exp;

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

/// Settings of the gate's Newton M-step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateConfig {
    /// Stop when $\|\nabla Q\|_2 \le$ `tol`.
    pub tol: f64,
    /// Newton step cap.
    pub max_iter: u64,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            tol: INNER_TOL,
            max_iter: INNER_MAX_ITER,
        }
    }
}

/// Accumulator of the gate statistics over row chunks (with per-chunk scratch).
pub(crate) struct GateAcc {
    q: f64,
    grad: Vec<f64>,
    hess: Mat<f64>,
    logits: Mat<f64>,
    lg: Vec<f64>,
    resid: Vec<f64>,
    h: Vec<f64>,
    wts: Vec<f64>,
    buf: Vec<f64>,
}

impl GateAcc {
    /// Empty sums and scratch for $d$ features and $K$ experts.
    pub(crate) fn new(d: usize, k: usize, hessian: bool) -> Self {
        let km = k - 1;
        let dim = km * d;
        GateAcc {
            q: 0.0,
            grad: vec![0.0; dim],
            hess: if hessian {
                Mat::zeros(dim, dim)
            } else {
                Mat::zeros(0, 0)
            },
            logits: Mat::zeros(CHUNK, km),
            lg: vec![0.0; CHUNK * km],
            resid: vec![0.0; CHUNK * km],
            h: vec![0.0; CHUNK * k],
            wts: vec![0.0; CHUNK],
            buf: if hessian {
                vec![0.0; d * GRAM_BLOCK]
            } else {
                Vec::new()
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

impl Mergeable for GateAcc {
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

/// Adds one chunk (`rows`, with gate logits `logits` ($m\times(K-1)$) and soft labels
/// `labels` ($m\times K$, chunk-local)) to the gate sums in `acc`.
pub(crate) fn gate_chunk(
    data: &Dataset,
    rows: std::ops::Range<usize>,
    logits: MatRef<'_, f64>,
    labels: &[f64],
    k: usize,
    acc: &mut GateAcc,
) -> Result<()> {
    let d = data.d();
    let km = k - 1;
    let m = rows.len();
    let hessian = acc.hess.nrows() > 0;
    // Plain column-major copies (one indexed read per logit; the row loop then runs on
    // slices).
    for j in 0..km {
        let col = logits.col(j);
        for (li, v) in acc.lg[j * m..(j + 1) * m].iter_mut().enumerate() {
            *v = col[li];
        }
    }
    let lg = &acc.lg[..km * m];
    let mut e_small = [0.0f64; 16];
    let mut e_heap = if k > 16 { vec![0.0; k] } else { Vec::new() };
    let e: &mut [f64] = if k > 16 {
        &mut e_heap
    } else {
        &mut e_small[..k]
    };
    for li in 0..m {
        // log π_j = g_j − LSE(g) with g_{K−1} = 0, the exponentials computed once.
        let mut mx = 0.0f64;
        for j in 0..km {
            mx = mx.max(lg[j * m + li]);
        }
        let mut sum = 0.0;
        for (j, ej) in e[..km].iter_mut().enumerate() {
            *ej = (lg[j * m + li] - mx).exp();
            sum += *ej;
        }
        e[km] = (-mx).exp();
        sum += e[km];
        let lse = mx + sum.ln();
        if !lse.is_finite() {
            return Err(MoeError::NonFinite {
                what: "gate logits",
                iter: 0,
            });
        }
        let s = &labels[li * k..(li + 1) * k];
        let c: f64 = s.iter().sum();
        for (j, &sj) in s.iter().enumerate() {
            if sj > 0.0 {
                let g = if j < km { lg[j * m + li] } else { 0.0 };
                acc.q += sj * (g - lse);
            }
        }
        let inv = 1.0 / sum;
        for j in 0..km {
            let pj = e[j] * inv;
            acc.resid[j * m + li] = s[j] - c * pj;
            // Store π_j and c for the Hessian weights.
            acc.h[li * k + j] = pj;
        }
        acc.h[li * k + km] = c;
    }
    let xc = data.xt().subcols(rows.start, m);
    let mut gm = faer::MatMut::from_column_major_slice_mut(&mut acc.grad, d, km);
    matmul(
        gm.as_mut(),
        Accum::Add,
        xc,
        MatRef::from_column_major_slice(&acc.resid[..km * m], m, km),
        1.0,
        Par::Seq,
    );
    if hessian {
        for a in 0..km {
            for b in 0..=a {
                for (li, wl) in acc.wts[..m].iter_mut().enumerate() {
                    let pa = acc.h[li * k + a];
                    let pb = acc.h[li * k + b];
                    let c = acc.h[li * k + km];
                    // c(π_a δ_ab − π_a π_b).
                    *wl = if a == b {
                        c * pa * (1.0 - pb)
                    } else {
                        -c * pa * pb
                    };
                }
                let block = acc.hess.as_mut().submatrix_mut(a * d, b * d, d, d);
                add_weighted_gram(data, rows.clone(), &acc.wts[..m], &mut acc.buf, block);
            }
        }
    }
    Ok(())
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
    let acc = fold_rows(
        data.n(),
        || GateAcc::new(d, k, hessian),
        |acc, rows| {
            let m = rows.len();
            let xc = data.xt().subcols(rows.start, m);
            let mut logits = std::mem::replace(&mut acc.logits, Mat::zeros(0, 0));
            matmul(
                logits.as_mut().subrows_mut(0, m),
                Accum::Replace,
                xc.transpose(),
                wm,
                1.0,
                Par::Seq,
            );
            let res = gate_chunk(
                data,
                rows.clone(),
                logits.as_ref().subrows(0, m),
                &labels[rows.start * k..rows.end * k],
                k,
                acc,
            );
            acc.logits = logits;
            res
        },
    )?;
    let st = acc.finish(w);
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

/// Newton's method with backtracking for the gate M-step (see the
/// [module documentation](self)), from `start`, result in `out`. Each Newton step forms
/// one block Hessian (counted in [`InnerStats::hessians`]); gradient-only passes are
/// used for the line search and the stopping test.
///
/// # Errors
/// `NotPositiveDefinite { expert: usize::MAX, pivot }` when the Hessian is singular
/// (collinear features or a gate saturated to 0/1 everywhere).
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

/// [`fit_softmax_gate`] starting from precomputed [`GateStats`] at `start` (from the
/// E-step); they are used only if computed at exactly `start`, otherwise the first pass
/// is taken as usual.
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
    let n = data.n() as f64;
    let dim = start.len();
    let mut w = start.to_vec();
    let mut trial = vec![0.0; dim];
    let mut stats = InnerStats::default();
    // Every pass at a point Newton may continue from forms the Hessian speculatively
    // (one pass instead of a gradient pass plus a Hessian pass); backtracked trials do
    // not. `hessians` counts every Hessian formed, `iterations` the Newton steps taken.
    let (q0, g0, h0) = match initial {
        Some(gs) if gs.w == w && gs.hess.nrows() == dim => (gs.q, gs.grad.clone(), gs.hess.clone()),
        _ => gate_pass(data, labels, k, &w, true)?,
    };
    stats.hessians += 1;
    let mut q = q0 / n;
    let mut g: Vec<f64> = g0.iter().map(|v| v / n).collect();
    let mut h = Some(h0);
    let mut prev_gnorm = f64::NAN;
    loop {
        let gnorm = dot(&g, &g).sqrt();
        stats.residual = gnorm;
        if !gnorm.is_finite() {
            return Err(MoeError::NonFinite {
                what: "gate gradient",
                iter: 0,
            });
        }
        if gnorm <= cfg.tol {
            stats.converged = true;
            break;
        }
        if stats.iterations >= cfg.max_iter {
            break;
        }
        let hm = match h.take() {
            Some(hm) => hm,
            None => {
                stats.hessians += 1;
                gate_pass(data, labels, k, &w, true)?.2
            }
        };
        let hs = Mat::from_fn(dim, dim, |a, b| hm[(a, b)] / n);
        let dir =
            cholesky_solve(hs.as_ref(), &g).map_err(|pivot| MoeError::NotPositiveDefinite {
                expert: usize::MAX,
                pivot,
            })?;
        let slope = dot(&g, &dir);
        let mut t = 1.0;
        let mut accepted = false;
        while t > 1e-12 {
            for j in 0..dim {
                trial[j] = w[j] + t * dir[j];
            }
            // Skip the speculative Hessian when Newton's quadratic rate, estimated from
            // the last two gradient norms, predicts convergence at the trial point.
            let predicted = gnorm * gnorm * (gnorm / (prev_gnorm * prev_gnorm));
            let full = t == 1.0;
            let want_h = full && !(predicted.is_finite() && predicted <= 0.1 * cfg.tol);
            let (qt, gt, ht) = gate_pass(data, labels, k, &trial, want_h)?;
            if want_h {
                stats.hessians += 1;
            }
            let qt = qt / n;
            if qt.is_finite() && (qt >= q + 1e-4 * t * slope || (full && slope <= NEWTON_PURE)) {
                accepted = true;
                q = qt;
                g = gt.iter().map(|v| v / n).collect();
                h = want_h.then_some(ht);
                break;
            }
            t *= 0.5;
        }
        stats.iterations += 1;
        if !accepted {
            break;
        }
        prev_gnorm = gnorm;
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
            iter: 0,
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
        // One speculative Hessian per full-step pass (initial + each accepted full step).
        assert!(st.hessians >= st.iterations && st.hessians <= st.iterations + 1 + 50);
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
