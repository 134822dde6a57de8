//! The mixture's row evaluator at one parameter point ([`MixtureRows`], offered through
//! [`ConditionalFamily::point_rows`]): the numbers of the generic row functions
//! ([`ConditionalFamily::realise`], [`row_posterior_given`],
//! [`ConditionalFamily::complete_mean`]) with each component's $A_F(\eta_k(x_i))$
//! computed once per row instead of three times (realisation, $A(\varphi_i)$, $\nabla A$),
//! the domain checked once, and what does not depend on the row hoisted per point by the
//! expert ([`Expert::prepare`], e.g. $\log\sigma_k^2$ of a linear-Gaussian expert).
//!
//! Per row: gate logits $g_k$, $\eta_k$ and $A_F(\eta_k)$, $a_k = g_k - A_F(\eta_k)$,
//! $c_k = a_k + A_F(\eta_k)$, $A(\varphi_i) = \operatorname{LSE}_k c_k$ and
//! $\rho = \operatorname{softmax}(c)$ from one set of exponentials (the operations of
//! [`MixtureFamily::log_partition_with`](super::MixtureFamily::log_partition_with) and
//! [`MixtureFamily::mean_with`](super::MixtureFamily::mean_with), so the same bits);
//! $\ell_z = \log h_F(y_i) + a_z + \langle T_F(y_i), \eta_z\rangle$ (the generic inner
//! product's order), $\log\sum_z e^{\ell_z}$ (the same bits) and the posterior
//! $r_z = e^{\ell_z - m}/\sum_{z'} e^{\ell_{z'} - m}$ from its exponentials (the generic code
//! takes $e^{\ell_z - \operatorname{LSE}}$ again: the last bits may differ);
//! $\mathbb E_{\text{post}}\[T\] = (r_z, r_zT_F(y_i))_z$; and
//! $\nabla A(\varphi_i) = (\rho_k, \rho_k\nabla A_F(\eta_k))$. For $K = 2$ that is two
//! exponentials and two logarithms per row instead of seven and two.
//! Anything irregular (a parameter outside the natural domain, a non-finite value) sends
//! the row to the generic functions, which report the error they always reported.

use super::{Gating, MixtureOfExperts};
use crate::data::Dataset;
use crate::error::Result;
use crate::model::expert::{dot, Expert, FamilyPrepared, PreparedExpert};
use crate::model::ConditionalFamily;
use crate::solve::problem::{
    posterior_row_into, row_posterior_given, BlockFailures, BlockScratch, PointBlock, PointRows,
    RowObservation, RowScratch,
};
use mirror::special::{softmax_in_place, softmax_rows};
use std::ops::Range;

/// [`MixtureOfExperts`]' [`PointRows`] at one $\theta$: the gate block and the $K$
/// prepared expert blocks.
pub(crate) struct MixtureRows<'a> {
    model: &'a MixtureOfExperts,
    theta: &'a [f64],
    experts: Vec<Box<dyn PreparedExpert + 'a>>,
}

impl<'a> MixtureRows<'a> {
    /// `None` for a `theta` of the wrong length (the generic evaluator then reports it).
    pub(crate) fn new(model: &'a MixtureOfExperts, theta: &'a [f64]) -> Option<Self> {
        if theta.len() != model.n_params() {
            return None;
        }
        let expert: &'a dyn Expert = &**model.expert();
        let experts = (0..model.n_experts())
            .map(|c| {
                let block = model.expert_block(theta, c);
                expert
                    .prepare(block)
                    .unwrap_or_else(|| Box::new(FamilyPrepared::new(expert, block)))
            })
            .collect();
        Some(MixtureRows {
            model,
            theta,
            experts,
        })
    }

    /// The fast row: $\varphi_i$, $A(\varphi_i)$, the posterior and
    /// $\mathbb E_{\text{post}}\[T\]$ into `s`, $\rho$ into `s.work[..K]`; returns
    /// $\log p(y_i\mid x_i)$, or `None` for anything the generic functions would reject
    /// (a parameter outside the natural domain, a target outside the support, a non-finite
    /// value), which then go to them.
    #[inline]
    fn posterior_fast(&self, x: &[f64], ob: &RowObservation, s: &mut RowScratch) -> Option<f64> {
        let k = self.model.n_experts();
        let p = self.model.mixture_family().p();
        let RowScratch {
            phi,
            post_stats,
            resp,
            log_partition,
            work,
            ..
        } = s;
        // The mixture's support does not depend on z < K: all in, or the generic error.
        if !ob.support.iter().all(|&b| b) {
            return None;
        }
        let rho = &mut work[..k];
        self.model.gate_logits(self.theta, x, &mut phi[..k]);
        let (a, eta) = phi.split_at_mut(k);
        for (((ak, ck), e), ex) in a
            .iter_mut()
            .zip(rho.iter_mut())
            .zip(eta.chunks_exact_mut(p))
            .zip(&self.experts)
        {
            let af = ex.natural_and_log_partition(x, e)?;
            *ak -= af;
            if !ak.is_finite() {
                return None;
            }
            *ck = *ak + af;
        }
        // A(φ) = LSE_k c_k and ρ = softmax(c) from the same exponentials.
        let big_a = lse_softmax(rho)?;
        // log h(y, z) + ⟨T(y, z), φ⟩ = log h_F(y) + a_z + ⟨T_F(y), η_z⟩, summed in the order
        // of the generic inner product (T(y, 0) holds T_F(y) at k..k+p).
        let (tf, log_h) = (&ob.t[k..k + p], ob.log_h[0]);
        for (z, r) in resp.iter_mut().enumerate() {
            let mut inner = a[z];
            for (t, e) in tf.iter().zip(&eta[z * p..(z + 1) * p]) {
                inner += t * e;
            }
            *r = log_h + inner;
        }
        let log_num = lse_softmax(resp)?;
        for (z, &r) in resp.iter().enumerate() {
            post_stats[z] = r;
            for (o, t) in post_stats[k + z * p..k + (z + 1) * p].iter_mut().zip(tf) {
                *o = r * t;
            }
        }
        *log_partition = big_a;
        Some(log_num - big_a)
    }

    /// [`posterior_fast`](Self::posterior_fast) (and [`PointRows::mean`]) on a block of
    /// $m$ rows, column by column ([`PointBlock`]), with the same operations in the same
    /// order except that the exponentials of each softmax are taken for the whole block in
    /// one vectorised call ([`softmax_rows`], as the E-step does) instead of one
    /// `f64::exp` per row: gate logits, each expert's block
    /// ([`PreparedExpert::natural_and_log_partition_block`]), $a_k$, $c_k$,
    /// $A(\varphi_i) = \operatorname{LSE}_k c_k$ and $\rho$, the posterior logits
    /// $\ell_z$, their LSE and $r_z$, $\mathbb E_{\text{post}}\[T\]$, and with `with_mean`
    /// $\nabla A(\varphi_i) = (\rho_k, \rho_k\nabla A_F(\eta_k))$
    /// ([`PreparedExpert::mean_block`]). `sc.flags[l]` is left false for every row the
    /// generic functions must take (a target outside the support, a parameter outside the
    /// natural domain, a non-finite value).
    fn block_fast(
        &self,
        data: &Dataset,
        rows: Range<usize>,
        obs: &[RowObservation],
        with_mean: bool,
        sc: &mut BlockScratch,
        out: &mut PointBlock,
    ) {
        let m = rows.len();
        let (k, d) = (self.model.n_experts(), self.model.n_features());
        let p = self.model.mixture_family().p();
        let BlockScratch { row, work, flags } = sc;
        let flags = &mut flags[..m];
        // The mixture's support does not depend on z < K: all in, or the generic error.
        for (f, ob) in flags.iter_mut().zip(obs) {
            *f = ob.support.iter().all(|&b| b);
        }
        let (cv, rest) = work.split_at_mut(k * m);
        let (af, rest) = rest.split_at_mut(k * m);
        let (shift, rest) = rest.split_at_mut(m);
        let sum = &mut rest[..m];
        let PointBlock {
            phi,
            mean,
            post_stats,
            log_lik,
            log_partition,
            ..
        } = out;
        let (a, eta) = phi[..(k + k * p) * m].split_at_mut(k * m);
        // Gate logits g_k (g_{K-1} = 0), as `gate_logits`.
        let w = self.model.gate_block(self.theta);
        for c in 0..k - 1 {
            let col = &mut a[c * m..(c + 1) * m];
            match self.model.gating() {
                Gating::Softmax => {
                    let wc = &w[c * d..(c + 1) * d];
                    for (o, i) in col.iter_mut().zip(rows.clone()) {
                        *o = dot(wc, data.x(i));
                    }
                }
                Gating::Constant => col.fill(w[c]),
            }
        }
        a[(k - 1) * m..k * m].fill(0.0);
        // η_k and A_F(η_k), expert by expert.
        for (c, ex) in self.experts.iter().enumerate() {
            ex.natural_and_log_partition_block(
                data,
                rows.clone(),
                &mut eta[c * p * m..(c + 1) * p * m],
                &mut af[c * m..(c + 1) * m],
                flags,
                &mut row.mean[..p],
            );
        }
        // a_k = g_k − A_F(η_k), c_k = a_k + A_F(η_k).
        for ((ac, cc), fc) in a
            .chunks_exact_mut(m)
            .zip(cv.chunks_exact_mut(m))
            .zip(af.chunks_exact(m))
        {
            for (((av, cvv), &f), ok) in ac.iter_mut().zip(cc.iter_mut()).zip(fc).zip(&mut *flags) {
                let v = *av - f;
                *av = v;
                *cvv = v + f;
                if !v.is_finite() {
                    *ok = false;
                }
            }
        }
        // A(φ) = LSE_k c_k and ρ = softmax(c).
        softmax_rows(cv, m, shift, sum);
        for (l, ((lp, &mx), &z)) in log_partition.iter_mut().zip(&*shift).zip(&*sum).enumerate() {
            *lp = mx + z.ln();
            if !(mx.is_finite() && lp.is_finite()) || (0..k).any(|c| !cv[c * m + l].is_finite()) {
                flags[l] = false;
            }
        }
        // ℓ_z = log h_F(y) + a_z + ⟨T_F(y), η_z⟩ (the generic inner product's order).
        for (l, ob) in obs.iter().enumerate().take(m) {
            let (tf, log_h) = (&ob.t[k..k + p], ob.log_h[0]);
            for z in 0..k {
                let mut inner = a[z * m + l];
                for (j, t) in tf.iter().enumerate() {
                    inner += t * eta[(z * p + j) * m + l];
                }
                post_stats[z * m + l] = log_h + inner;
            }
        }
        let resp = &mut post_stats[..k * m];
        softmax_rows(resp, m, shift, sum);
        for (l, ((ll, &mx), &z)) in log_lik.iter_mut().zip(&*shift).zip(&*sum).enumerate() {
            let log_num = mx + z.ln();
            *ll = log_num - log_partition[l];
            if !(mx.is_finite() && log_num.is_finite())
                || (0..k).any(|c| !resp[c * m + l].is_finite())
            {
                flags[l] = false;
            }
        }
        // E_post[T] = (r_z, r_z T_F(y))_z.
        let (resp, rest) = post_stats.split_at_mut(k * m);
        for (l, ob) in obs.iter().enumerate().take(m) {
            let tf = &ob.t[k..k + p];
            for z in 0..k {
                let r = resp[z * m + l];
                for (j, t) in tf.iter().enumerate() {
                    rest[(z * p + j) * m + l] = r * t;
                }
            }
        }
        if !with_mean {
            return;
        }
        // ∇A(φ) = (ρ_k, ρ_k ∇A_F(η_k)).
        let (mrho, mexp) = mean[..(k + k * p) * m].split_at_mut(k * m);
        mrho.copy_from_slice(cv);
        let (tmp_eta, tmp_mu) = (&mut row.mean[..p], &mut row.post_stats[..p]);
        for (c, ex) in self.experts.iter().enumerate() {
            let mu = &mut mexp[c * p * m..(c + 1) * p * m];
            ex.mean_block(
                &eta[c * p * m..(c + 1) * p * m],
                m,
                mu,
                flags,
                tmp_eta,
                tmp_mu,
            );
            let rho = &cv[c * m..(c + 1) * m];
            for col in mu.chunks_exact_mut(m) {
                for (v, r) in col.iter_mut().zip(rho) {
                    *v *= r;
                }
            }
        }
    }
}

/// $\operatorname{LSE}(v)$, with $v$ replaced by $\operatorname{softmax}(v)$, from one set of
/// exponentials: the operations of [`log_sum_exp`](mirror::special::log_sum_exp) (so the
/// same bits) and of [`softmax_in_place`](mirror::special::softmax_in_place) (the same bits
/// too: two entries take $e = e^{-|v_1 - v_2|}$, probabilities $1/(1+e)$ and $e/(1+e)$;
/// more take $e_j = e^{v_j - m}$ times $1/\sum_j e_j$). `None` unless the result is finite.
#[inline]
fn lse_softmax(v: &mut [f64]) -> Option<f64> {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return None;
    }
    let z = if let [a, b] = v {
        let e = (-(*a - *b).abs()).exp();
        let z = 1.0 + e;
        let (hi, lo) = (1.0 / z, e / z);
        let a_max = *a >= *b;
        *a = if a_max { hi } else { lo };
        *b = if a_max { lo } else { hi };
        z
    } else {
        let mut z = 0.0;
        for x in v.iter_mut() {
            *x = (*x - m).exp();
            z += *x;
        }
        let inv = 1.0 / z;
        v.iter_mut().for_each(|x| *x *= inv);
        z
    };
    let lse = m + z.ln();
    (lse.is_finite() && v.iter().all(|x| x.is_finite())).then_some(lse)
}

impl PointRows for MixtureRows<'_> {
    fn posterior(
        &self,
        x: &[f64],
        ob: &RowObservation,
        row: usize,
        s: &mut RowScratch,
    ) -> Result<f64> {
        if let Some(lp) = self.posterior_fast(x, ob, s) {
            return Ok(lp);
        }
        self.model.realise(self.theta, x, &mut s.phi);
        let lp = row_posterior_given(self.model, ob, row, s)?;
        // The generic A(φ) left c_k = a_k + A_F(η_k) in `work`: ρ = softmax(c), as the
        // fast path leaves it.
        softmax_in_place(&mut s.work[..self.model.n_experts()]);
        Ok(lp)
    }

    /// $\nabla A(\varphi_i) = (\rho_k, \rho_k\nabla A_F(\eta_k))$ with the $\rho$ that
    /// [`posterior`](Self::posterior) left in `s.work` (both of its paths do).
    fn mean(&self, s: &mut RowScratch) -> Result<()> {
        let k = self.model.n_experts();
        let p = self.model.mixture_family().p();
        let RowScratch {
            phi, mean, work, ..
        } = s;
        let rho = &work[..k];
        for (c, ex) in self.experts.iter().enumerate() {
            let r = rho[c];
            mean[c] = r;
            let block = &mut mean[k + c * p..k + (c + 1) * p];
            if ex.mean(&phi[k + c * p..k + (c + 1) * p], block).is_none() {
                return self
                    .model
                    .complete_mean(phi, mean, work)
                    .map_err(Into::into);
            }
            block.iter_mut().for_each(|v| *v *= r);
        }
        Ok(())
    }

    /// The block version ([`block_fast`](MixtureRows::block_fast): the exponentials of the
    /// block in one vectorised call), then the rows it could not take, in order, through
    /// [`posterior`](Self::posterior) and [`mean`](Self::mean) (so the same errors).
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
        self.block_fast(data, rows.clone(), obs, with_mean, sc, out);
        let mut fails = BlockFailures::default();
        for (l, i) in rows.enumerate() {
            if !sc.flags[l] {
                posterior_row_into(self, data, i, l, &obs[l], with_mean, sc, out, &mut fails);
                if fails.posterior.is_some() {
                    break;
                }
            }
        }
        fails
    }
}
