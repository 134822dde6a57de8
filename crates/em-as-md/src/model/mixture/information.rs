//! The mixture's information row sums as weighted Gram products
//! ([`ConditionalFamily::information_sums`]).
//!
//! **Structure.** Cut $\theta$ into blocks: the gate's $w_c$ ($c < K-1$; a scalar logit
//! for constant gating) and, for expert $k$, one block per natural component $j < p$ —
//! the coefficient vector $b_{kj}$ ($j < r$) or the constant $c_{kj}$ ($j \ge r$). With
//! the expert's natural parameter in the default layout
//! ([`Expert::natural`](crate::model::expert::Expert::natural): $\eta_{kj} = b_{kj}^\top x$ or $c_{kj}$,
//! the layout the mixture's E-step assumes), row $i$'s Jacobian is $J_i = C_iE_i$ with
//! $E_i$ block-diagonal ($x_i^\top$ for a coefficient block, $1$ for a scalar) and
//! $$ \partial a_k = \partial g_k - \textstyle\sum_j \mu_{kj}\,\partial\eta_{kj},\qquad
//!    \mu_k = \nabla A_F(\eta_k). $$
//! Hence $\sum_i J_i^\top H_i J_i = \sum_i E_i^\top (C_i^\top H_i C_i) E_i$: every pair of
//! blocks $(b, b')$ gets the weighted Gram $\sum_i G_i[b, b']\, u_b(x_i)u_{b'}(x_i)^\top$
//! ($u = x$ or $1$), formed per row chunk by faer products, instead of one
//! $J_i^\top H_i J_i$ per row. The small matrices $G_i = C_i^\top H_i C_i$ have closed forms
//! (with $\rho = \operatorname{softmax}_k(a_k + A_F(\eta_k))$ the gate probabilities,
//! $r$ the posterior, $F_k = \nabla^2 A_F(\eta_k)$, $T = T_F(y_i)$):
//! $$ G^{c}[g_c, g_{c'}] = \rho_c\delta_{cc'} - \rho_c\rho_{c'},\qquad
//!    G^{c}[e_{kj}, e_{kl}] = \rho_k (F_k)_{jl},\qquad \text{else } 0 $$
//! for $H_i = \nabla^2 A(\varphi_i)$ (the gate's multinomial information and each expert's
//! information weighted by its gate probability: $C_i^\top\nabla A(\varphi_i)$ vanishes on the
//! expert blocks, and $C_i^\top$ maps the $(a_k, \eta_k)$ block's second moment to
//! $\partial g_k^2 + \partial\eta_k^\top F_k\,\partial\eta_k$), and
//! $$ G^{m}[b, b'] = (r_k\delta_{kl} - r_kr_l)\, s(b)\, s(b'),\qquad
//!    s(g_c) = 1,\quad s(e_{kj}) = T_j - \mu_{kj} $$
//! ($k$, $l$ the components of $b$, $b'$) for $H_i = \mathrm{Cov}_{\text{post}}\[T(y_i, z)\]$,
//! since $C_i^\top(T(y_i, z) - \mathbb E_{\text{post}}\[T\]) = \sum_k (\delta_{kz} - r_k)\,s_k$.
//!
//! **The curvature term** ([`ConditionalFamily::curvature_sums`]). With $\eta_k$ linear
//! in $\theta$ and $a_k = g_k - A_F(\eta_k)$, $g_k$ linear, the only second derivatives of
//! $\varphi_i$ are $\nabla^2_\theta a_k = -E_k^\top F_kE_k$ ($E_k = \partial\eta_k/\partial\theta$),
//! and the $a_k$ entry of $v_i = \nabla A(\varphi_i) - \mathbb E_{\text{post}}\[T\]$ is
//! $\rho_k - r_k$, so
//! $$ \sum_i\sum_j (v_i)_j\nabla^2_\theta\varphi_{ij}
//!    = -\sum_i\sum_k(\rho_k - r_k)\,E_k^\top F_k E_k , $$
//! the same weighted Grams with weights $G^{C}[e_{kj}, e_{kl}] = -(\rho_k - r_k)(F_k)_{jl}$
//! on the pairs of blocks of one expert (zero elsewhere).
//!
//! The row quantities come from the E-step's own pass (the posterior $r$ and
//! $\log p(y_i\mid x_i)$, [`EmModel::e_step`](crate::model::EmModel::e_step)'s arithmetic with its
//! batched densities), one chunk product for the gate logits and the regressed components
//! of every $\eta_k$, the gate's softmax for $\rho$ (equal to
//! $\operatorname{softmax}_k(a_k + A_F(\eta_k))$, as $a_k + A_F(\eta_k) = g_k$), and
//! [`Expert::moments`](crate::model::expert::Expert::moments) per row; a row where
//! anything is irregular (outside the natural domain, non-finite) makes the whole
//! computation return `None`, and the caller's generic path then reports the error.

use super::steps::EPass;
use super::{Gating, MixtureOfExperts};
use crate::data::Dataset;
use crate::error::MoeError;
use crate::inner::gram::{add_weighted_grams, gram_buffer_len};
use crate::inner::parallel::{fold_rows_with, Mergeable, CHUNK};
use crate::inner::thin::chunk_dots;
use crate::model::gate::gate_softmax_rows;
use crate::model::ConditionalFamily;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use mirror::special::softmax_in_place;

/// One block of $\theta$: its offset, whether it multiplies $x$ (else a scalar), its
/// component $k$ and, for an expert block, its natural component $j$ (`None`: gate).
#[derive(Debug, Clone, Copy)]
struct Block {
    off: usize,
    is_x: bool,
    comp: usize,
    expert_j: Option<usize>,
}

/// Per-worker buffers.
struct Scratch {
    /// The chunk's products $X_c^\top[\,W \mid B\,]$: gate logits and $\eta$'s regressed
    /// components.
    lin: Mat<f64>,
    /// The gate softmax's shifts and sums per row.
    gmax: Vec<f64>,
    gsum: Vec<f64>,
    /// $T_F(y_i)$, $\eta_k$, $\mu_k$ ($K p$) and $F_k$ ($p^2$) of one row.
    t: Vec<f64>,
    eta: Vec<f64>,
    mu: Vec<f64>,
    fi: Vec<f64>,
    q: RowQuantities,
    /// Column-major $m\times$ columns: the row weights $G^c$, $G^m$ of the block pairs.
    w: Vec<f64>,
    /// Gram buffer.
    buf: Vec<f64>,
}

/// A chunk's row quantities, column-major with the chunk's row count $m$ as stride.
struct RowQuantities {
    /// $\rho$ ($K$ columns).
    rho: Vec<f64>,
    /// $r$ ($K$ columns).
    resp: Vec<f64>,
    /// $F_k[j, l]$ ($Kp^2$ columns, column $kp^2 + jp + l$).
    fis: Vec<f64>,
    /// $s(b)$ (one column per block).
    sval: Vec<f64>,
}

/// How one weight column is formed from the chunk's row quantities (the
/// [module documentation](self)); the indices are into [`RowQuantities`]' columns.
#[derive(Debug, Clone, Copy)]
enum Weight {
    /// $G^c$ on the gate: $\rho_c\delta_{cc'} - \rho_c\rho_{c'}$.
    Gate { c: usize, c2: usize },
    /// $G^c$ on one expert's blocks: $\rho_k F_k[j, l]$ (`f` = $kp^2 + jp + l$).
    Expert { k: usize, f: usize },
    /// $G^m$: $(r_k\delta_{kl} - r_kr_l)\,s(b)\,s(b')$.
    Missing {
        k: usize,
        l: usize,
        b: usize,
        b2: usize,
    },
    /// $G^C$ on one expert's blocks: $-(\rho_k - r_k)F_k[j, l]$.
    Curvature { k: usize, f: usize },
}

impl Weight {
    /// Column `out` (the chunk's `m` rows) of this weight.
    fn fill(self, sc: &RowQuantities, m: usize, out: &mut [f64]) {
        let col = |j: usize| j * m..(j + 1) * m;
        match self {
            Weight::Gate { c, c2 } => {
                let (rc, rc2) = (&sc.rho[col(c)], &sc.rho[col(c2)]);
                for ((o, &a), &b) in out.iter_mut().zip(rc).zip(rc2) {
                    let diag = if c == c2 { a } else { 0.0 };
                    *o = diag - a * b;
                }
            }
            Weight::Expert { k, f } => {
                let (rk, fk) = (&sc.rho[col(k)], &sc.fis[col(f)]);
                for ((o, &a), &b) in out.iter_mut().zip(rk).zip(fk) {
                    *o = a * b;
                }
            }
            Weight::Missing { k, l, b, b2 } => {
                let (rk, rl) = (&sc.resp[col(k)], &sc.resp[col(l)]);
                let (sb, sb2) = (&sc.sval[col(b)], &sc.sval[col(b2)]);
                for (li, o) in out.iter_mut().enumerate() {
                    let cov = if k == l {
                        rk[li] - rk[li] * rk[li]
                    } else {
                        -rk[li] * rl[li]
                    };
                    *o = cov * sb[li] * sb2[li];
                }
            }
            Weight::Curvature { k, f } => {
                let (rk, qk, fk) = (&sc.rho[col(k)], &sc.resp[col(k)], &sc.fis[col(f)]);
                for (((o, &a), &r), &b) in out.iter_mut().zip(rk).zip(qk).zip(fk) {
                    *o = -(a - r) * b;
                }
            }
        }
    }
}

/// Which row sums [`MixtureOfExperts::gram_sums`] forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GramSums {
    /// $\sum_i J_i^\top\nabla^2A J_i$ and $\sum_i J_i^\top\mathrm{Cov}_{\text{post}}J_i$.
    Information,
    /// $\sum_i J_i^\top\nabla^2A J_i$ alone (the first matrix of `Information`).
    Complete,
    /// $-\sum_i\sum_k(\rho_k - r_k)E_k^\top F_kE_k$.
    Curvature,
    /// The three matrices of `Information` and `Curvature`, in that order, with the
    /// log-likelihood and $\sum_iJ_i^\top v_i$ of the same pass (Newton's method on $L$).
    Observed,
}

/// The unnormalised row sums of [`GramSums`], in its order, and for `Observed` the
/// log-likelihood and the gradient sum (zero otherwise).
struct Sums {
    mats: Vec<Mat<f64>>,
    log_lik: f64,
    gradient: Vec<f64>,
}

impl Mergeable for Sums {
    fn merge(&mut self, other: Self) {
        for (a, b) in self.mats.iter_mut().zip(&other.mats) {
            *a += b;
        }
        self.log_lik += other.log_lik;
        for (a, b) in self.gradient.iter_mut().zip(&other.gradient) {
            *a += b;
        }
    }
}

/// An irregular row: the generic path takes over.
fn irregular() -> MoeError {
    MoeError::NonFinite {
        what: "information row (fast path)",
    }
}

/// Adds `v` at $(b, b')$ and, off the diagonal block, at $(b', b)$.
fn add_sym(m: &mut Mat<f64>, r: usize, c: usize, v: f64, mirror: bool) {
    m[(r, c)] += v;
    if mirror {
        m[(c, r)] += v;
    }
}

impl MixtureOfExperts {
    /// The blocks of $\theta$ (gate first, then expert $k$'s components $j = 0..p$).
    fn information_blocks(&self) -> Vec<Block> {
        let (k, d) = (self.n_experts(), self.n_features());
        let p = self.mixture_family().p();
        let r = self.expert().n_regressed();
        let (gl, el) = (self.gate_len(), self.expert_len());
        let mut blocks = Vec::with_capacity(k - 1 + k * p);
        for c in 0..k - 1 {
            let (off, is_x) = match self.gating() {
                Gating::Softmax => (c * d, true),
                Gating::Constant => (c, false),
            };
            blocks.push(Block {
                off,
                is_x,
                comp: c,
                expert_j: None,
            });
        }
        for c in 0..k {
            for j in 0..p {
                let base = gl + c * el;
                let (off, is_x) = if j < r {
                    (base + j * d, true)
                } else {
                    (base + r * d + (j - r), false)
                };
                blocks.push(Block {
                    off,
                    is_x,
                    comp: c,
                    expert_j: Some(j),
                });
            }
        }
        blocks
    }

    /// See [`ConditionalFamily::information_sums`] and the [module documentation](self).
    pub(crate) fn information_sums_gram(
        &self,
        data: &Dataset,
        theta: &[f64],
    ) -> Option<(Mat<f64>, Mat<f64>)> {
        let mut v = self.gram_sums(data, theta, GramSums::Information)?.mats;
        let im = v.pop()?;
        let ic = v.pop()?;
        Some((ic, im))
    }

    /// See [`ConditionalFamily::complete_information_sums`]: the first matrix of
    /// [`Self::information_sums_gram`] without forming the second.
    pub(crate) fn complete_information_sums_gram(
        &self,
        data: &Dataset,
        theta: &[f64],
    ) -> Option<Mat<f64>> {
        self.gram_sums(data, theta, GramSums::Complete)?.mats.pop()
    }

    /// See [`ConditionalFamily::curvature_sums`] and the [module documentation](self).
    pub(crate) fn curvature_sums_gram(&self, data: &Dataset, theta: &[f64]) -> Option<Mat<f64>> {
        self.gram_sums(data, theta, GramSums::Curvature)?.mats.pop()
    }

    /// See [`ConditionalFamily::observed_sums`]: the matrices of
    /// [`Self::information_sums_gram`] and [`Self::curvature_sums_gram`], the
    /// log-likelihood and the gradient sum, in one pass. The gradient's row weights are
    /// those of $J_i^\top v_i$ through $J_i = C_iE_i$: $\rho_c - r_c$ on the gate's
    /// block $c$ and $-r_k\,s(e_{kj}) = -r_k(T_j - \mu_{kj})$ on expert $k$'s block $j$
    /// (the $a_k$ entry of $v_i$ is $\rho_k - r_k$, the $\eta_{kj}$ entry
    /// $\rho_k\mu_{kj} - r_kT_j$).
    pub(crate) fn observed_sums_gram(
        &self,
        data: &Dataset,
        theta: &[f64],
    ) -> Option<crate::model::conditional::ObservedSums> {
        let mut s = self.gram_sums(data, theta, GramSums::Observed)?;
        let curvature = s.mats.pop()?;
        let missing = s.mats.pop()?;
        let complete = s.mats.pop()?;
        Some(crate::model::conditional::ObservedSums {
            log_lik: s.log_lik,
            gradient: s.gradient,
            complete,
            missing,
            curvature,
        })
    }

    /// The row sums of `what` as weighted Gram products (the [module documentation](self)):
    /// $\big(\sum_iJ_i^\top\nabla^2A(\varphi_i)J_i,\ \sum_iJ_i^\top\mathrm{Cov}_{\text{post}}J_i\big)$
    /// or $\big(-\sum_i\sum_k(\rho_k - r_k)E_k^\top F_kE_k\big)$; `None` for anything
    /// irregular.
    fn gram_sums(&self, data: &Dataset, theta: &[f64], what: GramSums) -> Option<Sums> {
        let np = self.n_params();
        let expert = self.expert();
        if theta.len() != np
            || data.d() != self.n_features()
            || data.q() != expert.family().obs_dim()
            || expert.gaussian_clusters().is_some()
            // The Gram blocks are the GLM map's Jacobian, as `glm_newton` assumes it.
            || crate::model::expert::check_glm_layout(expert.as_ref(), data.d()).is_err()
        {
            return None;
        }
        let (k, d) = (self.n_experts(), self.n_features());
        let p = self.mixture_family().p();
        let blocks = self.information_blocks();
        let nb = blocks.len();
        // The matrices formed: G^c and G^m, or G^C.
        let nt = match what {
            GramSums::Information => 2,
            GramSums::Complete | GramSums::Curvature => 1,
            GramSums::Observed => 3,
        };
        // The pairs b ≤ b' and their weight columns, only where a weight can be non-zero:
        // G^c on two gate blocks or two blocks of one expert, G^m everywhere, G^C on two
        // blocks of one expert; columns grouped as coefficient–coefficient,
        // coefficient–scalar, scalar–scalar (each with its matrices in order), so that each
        // group is one contiguous weight matrix.
        let pairs: Vec<(usize, usize)> = (0..nb)
            .flat_map(|b| (b..nb).map(move |b2| (b, b2)))
            .collect();
        let kind = |q: usize| {
            let (u, v) = (blocks[pairs[q].0], blocks[pairs[q].1]);
            usize::from(!u.is_x) + usize::from(!v.is_x)
        };
        let same_expert = |q: usize| {
            let (u, v) = (blocks[pairs[q].0], blocks[pairs[q].1]);
            u.expert_j.is_some() && v.expert_j.is_some() && u.comp == v.comp
        };
        let nonzero = |t: usize, q: usize| match (what, t) {
            (GramSums::Information | GramSums::Complete | GramSums::Observed, 0) => {
                let (u, v) = (blocks[pairs[q].0], blocks[pairs[q].1]);
                (u.expert_j.is_none() && v.expert_j.is_none()) || same_expert(q)
            }
            (GramSums::Information | GramSums::Observed, 1) => true,
            (GramSums::Complete, _) => false,
            (GramSums::Curvature | GramSums::Observed, _) => same_expert(q),
            (GramSums::Information, _) => true,
        };
        // col[t][q]: the weight column of pair q in matrix t.
        let mut col: Vec<Vec<Option<usize>>> = vec![vec![None; pairs.len()]; nt];
        // groups[g] = (first column, pairs) for g = nt·kind + t.
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut ncol = 0;
        for kd in 0..3 {
            for (t, col_t) in col.iter_mut().enumerate() {
                let first = ncol;
                let mut qs = Vec::new();
                for q in (0..pairs.len()).filter(|&q| kind(q) == kd && nonzero(t, q)) {
                    col_t[q] = Some(ncol);
                    qs.push(q);
                    ncol += 1;
                }
                groups.push((first, qs));
            }
        }
        // weights[c]: how weight column c is formed.
        let mut weights: Vec<Option<Weight>> = vec![None; ncol];
        for (q, &(b, b2)) in pairs.iter().enumerate() {
            let (u, v) = (blocks[b], blocks[b2]);
            for (t, col_t) in col.iter().enumerate() {
                let Some(cc) = col_t[q] else { continue };
                let f = |j: usize, l: usize| u.comp * p * p + j * p + l;
                weights[cc] = Some(match (what, t, u.expert_j, v.expert_j) {
                    (
                        GramSums::Information | GramSums::Complete | GramSums::Observed,
                        0,
                        Some(j),
                        Some(l),
                    ) => Weight::Expert {
                        k: u.comp,
                        f: f(j, l),
                    },
                    (GramSums::Information | GramSums::Complete | GramSums::Observed, 0, _, _) => {
                        Weight::Gate {
                            c: u.comp,
                            c2: v.comp,
                        }
                    }
                    (GramSums::Information, _, _, _) | (GramSums::Observed, 1, _, _) => {
                        Weight::Missing {
                            k: u.comp,
                            l: v.comp,
                            b,
                            b2,
                        }
                    }
                    (GramSums::Curvature | GramSums::Observed, _, Some(j), Some(l)) => {
                        Weight::Curvature {
                            k: u.comp,
                            f: f(j, l),
                        }
                    }
                    // `nonzero` gives G^C columns to one expert's pairs only, and
                    // `Complete` forms its one matrix.
                    (GramSums::Curvature | GramSums::Complete | GramSums::Observed, _, _, _) => {
                        return None
                    }
                });
            }
        }
        let weights: Vec<Weight> = weights.into_iter().collect::<Option<_>>()?;
        // The posterior r and log p(y_i | x_i) from the E-step's own pass (its batched
        // densities and softmax), not needed for the complete information alone.
        let (resp, log_lik) = match what {
            GramSums::Complete => (Vec::new(), 0.0),
            _ => {
                let (stats, ll) = self.e_fold(data, theta, EPass::Responsibilities).ok()?;
                (stats.resp, ll)
            }
        };
        // η_k(x_i) and the gate logits of a chunk in one product, as the E-step forms them.
        let (coef, gcols) = self.coefficient_matrix(theta, None);
        let r = expert.n_regressed();
        let consts: Vec<f64> = (0..k)
            .flat_map(|c| self.expert_block(theta, c)[r * d..].to_vec())
            .collect();
        // Constant gating: ρ = softmax of the K − 1 logits and 0, the same on every row.
        let mut const_rho = vec![0.0; k];
        if self.gating() == Gating::Constant {
            const_rho[..k - 1].copy_from_slice(self.gate_block(theta));
            softmax_in_place(&mut const_rho);
        }
        let fam = expert.family();
        let fits = |c: &Scratch| {
            c.w.len() == ncol * CHUNK
                && c.q.sval.len() == nb * CHUNK
                && c.q.fis.len() == k * p * p * CHUNK
                && c.q.rho.len() == k * CHUNK
                && c.mu.len() == k * p
                && c.lin.ncols() == coef.ncols()
                && c.buf.len() == gram_buffer_len(d)
        };
        let sums = fold_rows_with(
            data.n(),
            |cached: Option<Scratch>| {
                cached.filter(fits).unwrap_or_else(|| Scratch {
                    lin: Mat::zeros(CHUNK, coef.ncols()),
                    gmax: vec![0.0; CHUNK],
                    gsum: vec![0.0; CHUNK],
                    t: vec![0.0; p],
                    eta: vec![0.0; p],
                    mu: vec![0.0; k * p],
                    fi: vec![0.0; p * p],
                    q: RowQuantities {
                        rho: vec![0.0; k * CHUNK],
                        resp: vec![0.0; k * CHUNK],
                        fis: vec![0.0; k * p * p * CHUNK],
                        sval: vec![0.0; nb * CHUNK],
                    },
                    w: vec![0.0; ncol * CHUNK],
                    buf: vec![0.0; gram_buffer_len(d)],
                })
            },
            || Sums {
                mats: (0..nt).map(|_| Mat::zeros(np, np)).collect(),
                log_lik: 0.0,
                gradient: vec![0.0; if what == GramSums::Observed { np } else { 0 }],
            },
            |sc, acc, rows| {
                let m = rows.len();
                let Scratch {
                    lin,
                    gmax,
                    gsum,
                    t,
                    eta,
                    mu,
                    fi,
                    q,
                    ..
                } = &mut *sc;
                chunk_dots(data, rows.clone(), coef.as_ref(), lin);
                let cols: Vec<&[f64]> = (0..coef.ncols())
                    .map(|j| &lin.col_as_slice(j)[..m])
                    .collect();
                // ρ: the gate's probabilities (= softmax_k(a_k + A_F(η_k))).
                match self.gating() {
                    Gating::Softmax => {
                        gate_softmax_rows(
                            &cols[..gcols],
                            k,
                            &mut q.rho,
                            &mut gmax[..m],
                            &mut gsum[..m],
                        )
                        .map_err(|_| irregular())?;
                    }
                    Gating::Constant => {
                        for (c, &v) in const_rho.iter().enumerate() {
                            q.rho[c * m..(c + 1) * m].fill(v);
                        }
                    }
                }
                for (li, i) in rows.clone().enumerate() {
                    if let Some(row) = resp.get(i * k..(i + 1) * k) {
                        for (c, &v) in row.iter().enumerate() {
                            q.resp[c * m + li] = v;
                        }
                    }
                    fam.sufficient_stats(data.y(i), t);
                    for c in 0..k {
                        for (j, e) in eta.iter_mut().enumerate() {
                            *e = if j < r {
                                cols[gcols + c * r + j][li]
                            } else {
                                consts[c * (p - r) + (j - r)]
                            };
                        }
                        expert
                            .moments(eta, &mut mu[c * p..(c + 1) * p], fi)
                            .map_err(|_| irregular())?;
                        for (jl, &v) in fi.iter().enumerate() {
                            q.fis[(c * p * p + jl) * m + li] = v;
                        }
                    }
                    for (bi, b) in blocks.iter().enumerate() {
                        q.sval[bi * m + li] = match b.expert_j {
                            None => 1.0,
                            Some(j) => t[j] - mu[b.comp * p + j],
                        };
                    }
                }
                if what == GramSums::Observed {
                    let xc = data.xt().subcols(rows.start, m);
                    add_gradient(&blocks, &sc.q, m, xc, &mut sc.w, &mut acc.gradient);
                }
                for (cc, wt) in weights.iter().enumerate() {
                    let out = &mut sc.w[cc * m..(cc + 1) * m];
                    wt.fill(&sc.q, m, out);
                    if !out.iter().all(|g| g.is_finite()) {
                        return Err(irregular());
                    }
                }
                let xc = data.xt().subcols(rows.start, m);
                for (g, (first, qs)) in groups.iter().enumerate() {
                    if qs.is_empty() {
                        continue;
                    }
                    let target = &mut acc.mats[g % nt];
                    let w = &sc.w[first * m..(first + qs.len()) * m];
                    match g / nt {
                        // Coefficient–coefficient: weighted Grams Σ_i w_i x_i x_iᵀ.
                        0 => add_weighted_grams(
                            data,
                            rows.clone(),
                            w,
                            qs.len(),
                            &mut sc.buf,
                            &mut |c, gram| {
                                let (b, b2) = pairs[qs[c]];
                                let (u, v) = (blocks[b], blocks[b2]);
                                for a in 0..d {
                                    for e in 0..d {
                                        add_sym(
                                            target,
                                            u.off + a,
                                            v.off + e,
                                            gram[(a, e)],
                                            b != b2,
                                        );
                                    }
                                }
                            },
                        ),
                        // Coefficient–scalar: Σ_i w_i x_i for all pairs in one product.
                        1 => {
                            let mut prod = Mat::<f64>::zeros(d, qs.len());
                            matmul(
                                prod.as_mut(),
                                Accum::Replace,
                                xc,
                                MatRef::from_column_major_slice(w, m, qs.len()),
                                1.0,
                                Par::Seq,
                            );
                            for (c, &q) in qs.iter().enumerate() {
                                let (u, v) = (blocks[pairs[q].0], blocks[pairs[q].1]);
                                let (xb, sb) = if u.is_x { (u, v) } else { (v, u) };
                                for a in 0..d {
                                    add_sym(target, xb.off + a, sb.off, prod[(a, c)], true);
                                }
                            }
                        }
                        // Scalar–scalar: Σ_i w_i.
                        _ => {
                            for (c, &q) in qs.iter().enumerate() {
                                let (b, b2) = pairs[q];
                                let s: f64 = w[c * m..(c + 1) * m].iter().sum();
                                add_sym(target, blocks[b].off, blocks[b2].off, s, b != b2);
                            }
                        }
                    }
                }
                Ok(())
            },
        );
        let mut sums = sums.ok()?;
        sums.log_lik = log_lik;
        Some(sums)
    }
}

/// Adds a chunk's $\sum_iJ_i^\top v_i$ to `gradient`: per block $b$, $\sum_i w_b(x_i)\,u_b(x_i)$
/// with $w = \rho_c - r_c$ on a gate block and $-r_k\,s(e_{kj})$ on an expert block (see
/// [`MixtureOfExperts::observed_sums_gram`]); `w` is scratch of at least `blocks.len()·m`.
fn add_gradient(
    blocks: &[Block],
    q: &RowQuantities,
    m: usize,
    xc: MatRef<'_, f64>,
    w: &mut [f64],
    gradient: &mut [f64],
) {
    let col = |j: usize| j * m..(j + 1) * m;
    for (bi, b) in blocks.iter().enumerate() {
        let (rho, resp) = (&q.rho[col(b.comp)], &q.resp[col(b.comp)]);
        let out = &mut w[col(bi)];
        match b.expert_j {
            None => {
                for ((o, &a), &r) in out.iter_mut().zip(rho).zip(resp) {
                    *o = a - r;
                }
            }
            Some(_) => {
                for ((o, &r), &sv) in out.iter_mut().zip(resp).zip(&q.sval[col(bi)]) {
                    *o = -r * sv;
                }
            }
        }
    }
    let nb = blocks.len();
    let d = xc.nrows();
    let mut prod = Mat::<f64>::zeros(d, nb);
    matmul(
        prod.as_mut(),
        Accum::Replace,
        xc,
        MatRef::from_column_major_slice(&w[..nb * m], m, nb),
        1.0,
        Par::Seq,
    );
    for (bi, b) in blocks.iter().enumerate() {
        if b.is_x {
            for a in 0..d {
                gradient[b.off + a] += prod[(a, bi)];
            }
        } else {
            gradient[b.off] += w[col(bi)].iter().sum::<f64>();
        }
    }
}
