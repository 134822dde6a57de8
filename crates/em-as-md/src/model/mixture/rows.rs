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

use super::MixtureOfExperts;
use crate::error::Result;
use crate::model::expert::{Expert, FamilyPrepared, PreparedExpert};
use crate::model::ConditionalFamily;
use crate::solve::problem::{row_posterior_given, PointRows, RowObservation, RowScratch};
use mirror::special::softmax_in_place;

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

    /// $\rho = \operatorname{softmax}_k(a_k + A_F(\eta_k))$ (the gate probabilities) of
    /// the last successful [`PointRows::posterior`] on `s`.
    pub(crate) fn gate_probs<'s>(&self, s: &'s RowScratch) -> &'s [f64] {
        &s.work[..self.model.n_experts()]
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
}
