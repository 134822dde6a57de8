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
//! The row quantities come from the mixture's [`PointRows`] (the bits of the generic row
//! functions) and [`Expert::moments`](crate::model::expert::Expert::moments); a row where
//! anything is irregular (outside the natural domain, non-finite) makes the whole
//! computation return `None`, and the caller's generic path then reports the error.

use super::rows::MixtureRows;
use super::{Gating, MixtureOfExperts};
use crate::data::Dataset;
use crate::error::MoeError;
use crate::inner::gram::{add_weighted_grams, gram_buffer_len};
use crate::inner::parallel::{fold_rows_with, Mergeable, CHUNK};
use crate::model::ConditionalFamily;
use crate::solve::problem::{PointRows, RowObservation, RowScratch};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use mirror::ExponentialFamily;

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
    s: RowScratch,
    ob: RowObservation,
    /// $T_F(y_i)$.
    t: Vec<f64>,
    /// $\mu_k$, $K p$.
    mu: Vec<f64>,
    /// $F_k$, $K p^2$ row-major.
    fis: Vec<f64>,
    /// $\rho$.
    rho: Vec<f64>,
    /// $s(b)$.
    sval: Vec<f64>,
    /// Column-major $m\times$ columns: the row weights $G^c$, $G^m$ of the block pairs.
    w: Vec<f64>,
    /// Gram buffer.
    buf: Vec<f64>,
}

/// Which row sums [`MixtureOfExperts::gram_sums`] forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GramSums {
    /// $\sum_i J_i^\top\nabla^2A J_i$ and $\sum_i J_i^\top\mathrm{Cov}_{\text{post}}J_i$.
    Information,
    /// $-\sum_i\sum_k(\rho_k - r_k)E_k^\top F_kE_k$.
    Curvature,
}

/// The unnormalised row sums of [`GramSums`], in its order.
struct Sums(Vec<Mat<f64>>);

impl Mergeable for Sums {
    fn merge(&mut self, other: Self) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
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
        let mut v = self.gram_sums(data, theta, GramSums::Information)?;
        let im = v.pop()?;
        let ic = v.pop()?;
        Some((ic, im))
    }

    /// See [`ConditionalFamily::curvature_sums`] and the [module documentation](self).
    pub(crate) fn curvature_sums_gram(&self, data: &Dataset, theta: &[f64]) -> Option<Mat<f64>> {
        self.gram_sums(data, theta, GramSums::Curvature)?.pop()
    }

    /// The row sums of `what` as weighted Gram products (the [module documentation](self)):
    /// $\big(\sum_iJ_i^\top\nabla^2A(\varphi_i)J_i,\ \sum_iJ_i^\top\mathrm{Cov}_{\text{post}}J_i\big)$
    /// or $\big(-\sum_i\sum_k(\rho_k - r_k)E_k^\top F_kE_k\big)$; `None` for anything
    /// irregular.
    fn gram_sums(&self, data: &Dataset, theta: &[f64], what: GramSums) -> Option<Vec<Mat<f64>>> {
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
            GramSums::Curvature => 1,
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
            (GramSums::Information, 0) => {
                let (u, v) = (blocks[pairs[q].0], blocks[pairs[q].1]);
                (u.expert_j.is_none() && v.expert_j.is_none()) || same_expert(q)
            }
            (GramSums::Information, _) => true,
            (GramSums::Curvature, _) => same_expert(q),
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
        let ev = MixtureRows::new(self, theta)?;
        let fam = expert.family();
        let sums = fold_rows_with(
            data.n(),
            |cached: Option<Scratch>| {
                cached
                    .filter(|c| {
                        c.w.len() == ncol * CHUNK
                            && c.sval.len() == nb
                            && c.fis.len() == k * p * p
                            && c.s.work.len() == self.row_work_len()
                            && c.s.phi.len() == self.mixture_family().dim()
                            && c.buf.len() == gram_buffer_len(d)
                    })
                    .map(|c| Scratch {
                        ob: RowObservation::new(self),
                        ..c
                    })
                    .unwrap_or_else(|| Scratch {
                        s: RowScratch::new(self),
                        ob: RowObservation::new(self),
                        t: vec![0.0; p],
                        mu: vec![0.0; k * p],
                        fis: vec![0.0; k * p * p],
                        rho: vec![0.0; k],
                        sval: vec![0.0; nb],
                        w: vec![0.0; ncol * CHUNK],
                        buf: vec![0.0; gram_buffer_len(d)],
                    })
            },
            || Sums((0..nt).map(|_| Mat::zeros(np, np)).collect()),
            |sc, acc, rows| {
                let m = rows.len();
                for (li, i) in rows.clone().enumerate() {
                    let (x, y) = (data.x(i), data.y(i));
                    sc.ob.set(self, y);
                    ev.posterior(x, &sc.ob, i, &mut sc.s)
                        .map_err(|_| irregular())?;
                    sc.rho.copy_from_slice(ev.gate_probs(&sc.s));
                    fam.sufficient_stats(y, &mut sc.t);
                    for c in 0..k {
                        expert
                            .moments(
                                &sc.s.phi[k + c * p..k + (c + 1) * p],
                                &mut sc.mu[c * p..(c + 1) * p],
                                &mut sc.fis[c * p * p..(c + 1) * p * p],
                            )
                            .map_err(|_| irregular())?;
                    }
                    for (sv, b) in sc.sval.iter_mut().zip(&blocks) {
                        *sv = match b.expert_j {
                            None => 1.0,
                            Some(j) => sc.t[j] - sc.mu[b.comp * p + j],
                        };
                    }
                    let (rho, resp) = (&sc.rho, &sc.s.resp);
                    for (q, &(b, b2)) in pairs.iter().enumerate() {
                        let (u, v) = (blocks[b], blocks[b2]);
                        for (t, col_t) in col.iter().enumerate() {
                            let Some(cc) = col_t[q] else { continue };
                            let g = match (what, t, u.expert_j, v.expert_j) {
                                // G^c on one expert's blocks: ρ_k F_k[j, l].
                                (GramSums::Information, 0, Some(j), Some(l)) => {
                                    rho[u.comp] * sc.fis[u.comp * p * p + j * p + l]
                                }
                                // G^c on the gate: ρ_c δ_cc' − ρ_c ρ_c'.
                                (GramSums::Information, 0, _, _) => {
                                    let diag = if u.comp == v.comp { rho[u.comp] } else { 0.0 };
                                    diag - rho[u.comp] * rho[v.comp]
                                }
                                // G^m: (r_k δ_kl − r_k r_l) s(b) s(b').
                                (GramSums::Information, _, _, _) => {
                                    let cov = if u.comp == v.comp {
                                        resp[u.comp] - resp[u.comp] * resp[u.comp]
                                    } else {
                                        -resp[u.comp] * resp[v.comp]
                                    };
                                    cov * sc.sval[b] * sc.sval[b2]
                                }
                                // G^C on one expert's blocks: −(ρ_k − r_k) F_k[j, l].
                                (GramSums::Curvature, _, Some(j), Some(l)) => {
                                    -(rho[u.comp] - resp[u.comp])
                                        * sc.fis[u.comp * p * p + j * p + l]
                                }
                                (GramSums::Curvature, _, _, _) => 0.0,
                            };
                            if !g.is_finite() {
                                return Err(irregular());
                            }
                            sc.w[cc * m + li] = g;
                        }
                    }
                }
                let xc = data.xt().subcols(rows.start, m);
                for (g, (first, qs)) in groups.iter().enumerate() {
                    if qs.is_empty() {
                        continue;
                    }
                    let target = &mut acc.0[g % nt];
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
        sums.ok().map(|s| s.0)
    }
}
