//! The complete-data family of a mixture of $K$ experts over $(y, z)$
//! ([`MixtureFamily`]); the formulas are in the [parent module](super).

use crate::error::{MoeError, Result};
use crate::model::expert::Expert;
use faer::Mat;
use mirror::special::{log_sum_exp, softmax_in_place};
use mirror::{ExponentialFamily, MirrorError};
use rand::RngCore;
use std::sync::Arc;

use super::draw_index;

/// The complete-data family of a mixture of $K$ experts over $(y, z)$; see the
/// [module documentation](super). Observation: the $q$ target entries, then $z$.
#[derive(Debug, Clone)]
pub struct MixtureFamily {
    expert: Arc<dyn Expert>,
    k: usize,
}

impl MixtureFamily {
    /// The family of $K$ components of `expert`'s family.
    ///
    /// # Errors
    /// `InvalidParam { name: "n_experts" }` if $K = 0$.
    pub fn new(expert: Arc<dyn Expert>, k: usize) -> Result<Self> {
        if k == 0 {
            return Err(MoeError::InvalidParam {
                name: "n_experts",
                reason: "at least one expert".into(),
            });
        }
        Ok(MixtureFamily { expert, k })
    }
    pub(crate) fn p(&self) -> usize {
        self.expert.family().dim()
    }
    pub(crate) fn q(&self) -> usize {
        self.expert.family().obs_dim()
    }
    pub(crate) fn eta<'a>(&self, phi: &'a [f64], k: usize) -> &'a [f64] {
        let p = self.p();
        &phi[self.k + k * p..self.k + (k + 1) * p]
    }
    /// $a_k + A_F(\eta_k)$ for every $k$ into `out`.
    fn component_logits(&self, phi: &[f64], out: &mut [f64]) -> mirror::Result<()> {
        if !self.in_natural_domain(phi) {
            return Err(MirrorError::OutsideDomain {
                what: "natural parameter",
                reason: format!("not in the natural domain of {}", self.name()),
            });
        }
        for (k, o) in out.iter_mut().enumerate() {
            *o = phi[k] + self.expert.family().log_partition(self.eta(phi, k))?;
        }
        Ok(())
    }
    /// Length of the `work` buffer of [`log_partition_with`](Self::log_partition_with),
    /// [`mean_with`](Self::mean_with) and [`fisher_into`](Self::fisher_into):
    /// $K(1 + p + p^2)$ (the component weights, then each component's $\nabla A_F$ and
    /// $\nabla^2 A_F$).
    pub fn work_len(&self) -> usize {
        let p = self.p();
        self.k * (1 + p + p * p)
    }
    /// $A(\varphi) = \operatorname{LSE}_k(a_k + A_F(\eta_k))$ without allocating: the same
    /// computation as [`ExponentialFamily::log_partition`] with the logits in `work`
    /// (length at least $K$).
    ///
    /// # Errors
    /// `OutsideDomain` if $\varphi$ is outside the natural domain, `DimensionMismatch` for
    /// a short `work`.
    pub fn log_partition_with(&self, phi: &[f64], work: &mut [f64]) -> mirror::Result<f64> {
        check_work("log_partition_with: work", self.k, work.len())?;
        let c = &mut work[..self.k];
        self.component_logits(phi, c)?;
        Ok(log_sum_exp(c))
    }
    /// $\nabla A(\varphi) = (\rho_k, \rho_k\nabla A_F(\eta_k))$ into `mu` without
    /// allocating: the same computation as [`ExponentialFamily::mean`] with $\rho$ in
    /// `work` (length at least $K$).
    ///
    /// # Errors
    /// `OutsideDomain` if $\varphi$ is outside the natural domain, `DimensionMismatch` for
    /// a short `work` or a wrong-length `mu`.
    pub fn mean_with(&self, phi: &[f64], mu: &mut [f64], work: &mut [f64]) -> mirror::Result<()> {
        let p = self.p();
        check_work("mean_with: work", self.k, work.len())?;
        if mu.len() != self.dim() {
            return Err(MirrorError::DimensionMismatch {
                what: "mean_with: output",
                expected: self.dim(),
                found: mu.len(),
            });
        }
        let rho = &mut work[..self.k];
        self.component_logits(phi, rho)?;
        softmax_in_place(rho);
        for k in 0..self.k {
            mu[k] = rho[k];
            let block = &mut mu[self.k + k * p..self.k + (k + 1) * p];
            self.expert.family().mean(self.eta(phi, k), block)?;
            block.iter_mut().for_each(|v| *v *= rho[k]);
        }
        Ok(())
    }
    /// $\nabla^2 A(\varphi)$ (the block formula of the [module documentation](super)) into
    /// `out` (`dim` × `dim`) without allocating: $\rho$, $\mu_k = \nabla A_F(\eta_k)$ and
    /// $\nabla^2 A_F(\eta_k)$ (from [`Expert::moments`]) are computed once per component
    /// into `work` (length [`work_len`](Self::work_len)).
    ///
    /// # Errors
    /// `OutsideDomain` if $\varphi$ is outside the natural domain or an expert's moments
    /// fail, `DimensionMismatch` for a short `work` or an `out` that is not `dim` × `dim`.
    pub fn fisher_into(
        &self,
        phi: &[f64],
        mut out: faer::MatMut<'_, f64>,
        work: &mut [f64],
    ) -> mirror::Result<()> {
        let (k, p) = (self.k, self.p());
        let dim = self.dim();
        check_work("fisher_into: work", self.work_len(), work.len())?;
        if out.nrows() != dim || out.ncols() != dim {
            return Err(MirrorError::DimensionMismatch {
                what: "fisher_into: output",
                expected: dim,
                found: if out.nrows() != dim {
                    out.nrows()
                } else {
                    out.ncols()
                },
            });
        }
        let (rho, rest) = work.split_at_mut(k);
        let (m, rest) = rest.split_at_mut(k * p);
        let f = &mut rest[..k * p * p];
        self.component_logits(phi, rho)?;
        softmax_in_place(rho);
        for c in 0..k {
            self.expert
                .moments(
                    self.eta(phi, c),
                    &mut m[c * p..(c + 1) * p],
                    &mut f[c * p * p..(c + 1) * p * p],
                )
                .map_err(|e| match e {
                    MoeError::Mirror(e) => e,
                    other => MirrorError::OutsideDomain {
                        what: "natural parameter",
                        reason: other.to_string(),
                    },
                })?;
        }
        let (rho, m, f) = (&*rho, &*m, &*f);
        let mu = |a: usize| {
            if a < k {
                rho[a]
            } else {
                m[a - k] * rho[(a - k) / p]
            }
        };
        for b in 0..dim {
            let mb = mu(b);
            for a in 0..dim {
                out[(a, b)] = -mu(a) * mb;
            }
        }
        for c in 0..k {
            let r = rho[c];
            let (mc, fc) = (&m[c * p..(c + 1) * p], &f[c * p * p..(c + 1) * p * p]);
            let off = k + c * p;
            out[(c, c)] += r;
            for j in 0..p {
                out[(c, off + j)] += r * mc[j];
                out[(off + j, c)] += r * mc[j];
                for l in 0..p {
                    out[(off + j, off + l)] += r * (fc[j * p + l] + mc[j] * mc[l]);
                }
            }
        }
        Ok(())
    }
}

impl ExponentialFamily for MixtureFamily {
    fn name(&self) -> String {
        format!("mixture of {} × {}", self.k, self.expert.family().name())
    }
    fn dim(&self) -> usize {
        self.k * (1 + self.p())
    }
    fn obs_dim(&self) -> usize {
        self.q() + 1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        let q = self.q();
        s.len() == q + 1
            && s[q] >= 0.0
            && s[q] < self.k as f64
            && s[q].fract() == 0.0
            && self.expert.family().in_support(&s[..q])
    }
    fn in_natural_domain(&self, phi: &[f64]) -> bool {
        phi.len() == self.dim()
            && phi[..self.k].iter().all(|a| a.is_finite())
            && (0..self.k).all(|k| self.expert.family().in_natural_domain(self.eta(phi, k)))
    }
    /// $\mu = (\rho, \rho_k m_k)$ with $\rho$ in the open simplex and each $m_k$ in $F$'s
    /// mean domain.
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        if mu.len() != self.dim() {
            return false;
        }
        let rho = &mu[..self.k];
        let s: f64 = rho.iter().sum();
        if !(rho.iter().all(|r| *r > 0.0) && (s - 1.0).abs() < 1e-9) {
            return false;
        }
        let p = self.p();
        (0..self.k).all(|k| {
            let m: Vec<f64> = mu[self.k + k * p..self.k + (k + 1) * p]
                .iter()
                .map(|v| v / rho[k])
                .collect();
            self.expert.family().in_mean_domain(&m)
        })
    }
    /// $T(y, z) = (e_z, e_z \otimes T_F(y))$.
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        let (q, p) = (self.q(), self.p());
        t.iter_mut().for_each(|v| *v = 0.0);
        let z = s[q] as usize;
        t[z] = 1.0;
        self.expert
            .family()
            .sufficient_stats(&s[..q], &mut t[self.k + z * p..self.k + (z + 1) * p]);
    }
    /// $\log h(y, z) = \log h_F(y)$.
    fn log_base_measure(&self, s: &[f64]) -> f64 {
        self.expert.family().log_base_measure(&s[..self.q()])
    }
    /// $A(\varphi) = \operatorname{LSE}_k(a_k + A_F(\eta_k))$ ([`log_partition_with`](MixtureFamily::log_partition_with)).
    fn log_partition(&self, phi: &[f64]) -> mirror::Result<f64> {
        let mut c = vec![0.0; self.k];
        self.log_partition_with(phi, &mut c)
    }
    /// $\nabla A = (\rho_k, \rho_k\nabla A_F(\eta_k))$ ([`mean_with`](MixtureFamily::mean_with)).
    fn mean(&self, phi: &[f64], mu: &mut [f64]) -> mirror::Result<()> {
        let mut rho = vec![0.0; self.k];
        self.mean_with(phi, mu, &mut rho)
    }
    /// $\nabla^2 A = E[TT^\top] - \nabla A\nabla A^\top$ with the block-diagonal second
    /// moment of the module documentation ([`fisher_into`](MixtureFamily::fisher_into)).
    fn fisher(&self, phi: &[f64]) -> mirror::Result<Mat<f64>> {
        let dim = self.dim();
        let mut h = Mat::zeros(dim, dim);
        let mut work = vec![0.0; self.work_len()];
        self.fisher_into(phi, h.as_mut(), &mut work)?;
        Ok(h)
    }
    /// $z \sim \operatorname{softmax}(a_k + A_F(\eta_k))$, then $y \sim F(\eta_z)$.
    fn sample(&self, phi: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> mirror::Result<()> {
        let mut rho = vec![0.0; self.k];
        self.component_logits(phi, &mut rho)?;
        softmax_in_place(&mut rho);
        let z = draw_index(&rho, rng);
        let q = self.q();
        self.expert
            .family()
            .sample(self.eta(phi, z), rng, &mut s[..q])?;
        s[q] = z as f64;
        Ok(())
    }
    /// The representative with $A(\varphi) = 0$: $\eta_k = \nabla A_F^*(\mu_k/\rho_k)$,
    /// $a_k = \log\rho_k - A_F(\eta_k)$.
    fn natural_from_mean(&self, mu: &[f64], phi: &mut [f64]) -> mirror::Result<()> {
        if !self.in_mean_domain(mu) {
            return Err(MirrorError::OutsideDomain {
                what: "mean parameter",
                reason: format!("not in the mean domain of {}", self.name()),
            });
        }
        let (k, p) = (self.k, self.p());
        for c in 0..k {
            let rho = mu[c];
            let m: Vec<f64> = mu[k + c * p..k + (c + 1) * p]
                .iter()
                .map(|v| v / rho)
                .collect();
            let fam = self.expert.family();
            fam.natural_from_mean(&m, &mut phi[k + c * p..k + (c + 1) * p])?;
            phi[c] = rho.ln() - fam.log_partition(&phi[k + c * p..k + (c + 1) * p])?;
        }
        Ok(())
    }
}

/// `Err(DimensionMismatch)` when a work buffer is shorter than `needed`.
fn check_work(what: &'static str, needed: usize, found: usize) -> mirror::Result<()> {
    if found < needed {
        return Err(MirrorError::DimensionMismatch {
            what,
            expected: needed,
            found,
        });
    }
    Ok(())
}
