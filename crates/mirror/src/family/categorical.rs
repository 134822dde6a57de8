//! The categorical family on $\{0, \dots, k-1\}$ with reference class $k-1$.
//!
//! An observation is one entry holding the class index $s \in \{0,\dots,k-1\}$. With
//! $T(s) = (\mathbb 1[s = j])_{j=0}^{k-2}$ (one-hot without the reference class),
//! $h(s) = 1$ and $\theta \in \mathbb R^{k-1}$ the log-odds against class $k-1$,
//! $$ p(s;\theta) = \exp\big(\langle T(s),\theta\rangle - A(\theta)\big),\qquad
//!    A(\theta) = \log\Big(1 + \sum_{j<k-1} e^{\theta_j}\Big)
//!    = \operatorname{LSE}(\theta_0,\dots,\theta_{k-2}, 0), $$
//! $$ \nabla A(\theta)_j = p_j = \frac{e^{\theta_j}}{1 + \sum_l e^{\theta_l}}
//!    \ (\text{softmax}),\qquad \nabla^2 A(\theta) = \operatorname{diag}(p) - p p^\top,
//!    \qquad \nabla A^*(\mu)_j = \log \mu_j - \log\Big(1 - \sum_l \mu_l\Big), $$
//! on the mean domain $\{\mu : \mu_j > 0,\ \sum_j \mu_j < 1\}$ (the open simplex without
//! its last coordinate).

use super::{domain_guard, mean_guard, ExponentialFamily};
use crate::error::{check_len, MirrorError, Result};
use crate::special::{log_sum_exp, softmax_in_place};
use faer::Mat;
use rand::RngCore;
use rand_distr::Distribution;

/// The categorical family with `k` classes; see the [module documentation](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Categorical {
    k: usize,
}

impl Categorical {
    /// A categorical family over `k` classes labelled `0..k`, reference class `k - 1`.
    ///
    /// # Errors
    /// `InvalidParameter` if `k < 2`.
    pub fn new(k: usize) -> Result<Self> {
        if k < 2 {
            return Err(MirrorError::InvalidParameter {
                name: "k",
                value: k as f64,
                reason: "at least 2 classes",
            });
        }
        Ok(Categorical { k })
    }

    /// Number of classes $k$.
    pub fn classes(&self) -> usize {
        self.k
    }

    /// All $k$ class probabilities $\mathrm{softmax}(\theta_0,\dots,\theta_{k-2},0)$.
    ///
    /// # Errors
    /// `DimensionMismatch`, or `OutsideDomain` if $\theta$ is not finite.
    pub fn probabilities(&self, theta: &[f64]) -> Result<Vec<f64>> {
        domain_guard(self, theta)?;
        let mut p: Vec<f64> = theta.iter().copied().chain(std::iter::once(0.0)).collect();
        softmax_in_place(&mut p);
        Ok(p)
    }

    /// The natural parameter of a full probability vector $p$ (length $k$):
    /// $\theta_j = \log p_j - \log p_{k-1}$.
    ///
    /// # Errors
    /// `DimensionMismatch` on a wrong length; `InvalidParameter` if some $p_j \notin (0,1)$
    /// (NaN included) or $|\sum_j p_j - 1| > 10^{-9}$.
    pub fn natural_from_probs(&self, p: &[f64]) -> Result<Vec<f64>> {
        check_len("natural_from_probs: p", self.k, p.len())?;
        if let Some(&bad) = p.iter().find(|&&x| !(x > 0.0 && x < 1.0)) {
            return Err(MirrorError::InvalidParameter {
                name: "p",
                value: bad,
                reason: "every class probability in the open interval (0, 1)",
            });
        }
        let total: f64 = p.iter().sum();
        if (total - 1.0).abs() > 1e-9 {
            return Err(MirrorError::InvalidParameter {
                name: "sum of p",
                value: total,
                reason: "class probabilities summing to 1",
            });
        }
        let last = p[self.k - 1].ln();
        Ok(p[..self.k - 1].iter().map(|x| x.ln() - last).collect())
    }
}

impl ExponentialFamily for Categorical {
    fn name(&self) -> String {
        format!("Categorical(k={})", self.k)
    }
    fn dim(&self) -> usize {
        self.k - 1
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s.len() == 1 && s[0] >= 0.0 && s[0] < self.k as f64 && s[0].fract() == 0.0
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta.len() == self.k - 1 && theta.iter().all(|t| t.is_finite())
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu.len() == self.k - 1 && mu.iter().all(|&m| m > 0.0) && mu.iter().sum::<f64>() < 1.0
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t.iter_mut().for_each(|x| *x = 0.0);
        let c = s[0] as usize;
        if c < self.k - 1 {
            t[c] = 1.0;
        }
    }
    fn log_base_measure(&self, _s: &[f64]) -> f64 {
        0.0
    }
    /// $A(\theta) = \operatorname{LSE}(\theta_0,\dots,\theta_{k-2},0)$.
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        domain_guard(self, theta)?;
        let v: Vec<f64> = theta.iter().copied().chain(std::iter::once(0.0)).collect();
        Ok(log_sum_exp(&v))
    }
    /// $\nabla A(\theta)_j = e^{\theta_j - A(\theta)}$ (softmax without the reference).
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        check_len("mean: output", self.k - 1, mu.len())?;
        let p = self.probabilities(theta)?;
        mu.copy_from_slice(&p[..self.k - 1]);
        Ok(())
    }
    /// $\nabla^2 A(\theta) = \operatorname{diag}(p) - pp^\top$ ($p$ without the reference).
    fn fisher(&self, theta: &[f64]) -> Result<Mat<f64>> {
        let p = self.probabilities(theta)?;
        let n = self.k - 1;
        Ok(Mat::from_fn(n, n, |i, j| {
            if i == j {
                p[i] * (1.0 - p[i])
            } else {
                -p[i] * p[j]
            }
        }))
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()> {
        check_len("sample: output", 1, s.len())?;
        let p = self.probabilities(theta)?;
        let d =
            rand_distr::weighted::WeightedIndex::new(&p).map_err(|_| MirrorError::NonFinite {
                what: "categorical class probabilities",
            })?;
        s[0] = d.sample(rng) as f64;
        Ok(())
    }
    /// Closed form $\nabla A^*(\mu)_j = \log\mu_j - \log(1 - \sum_l \mu_l)$.
    fn natural_from_mean(&self, mu: &[f64], theta: &mut [f64]) -> Result<()> {
        mean_guard(self, mu)?;
        check_len("natural_from_mean: theta", self.k - 1, theta.len())?;
        let last = (1.0 - mu.iter().sum::<f64>()).ln();
        for (t, m) in theta.iter_mut().zip(mu) {
            *t = m.ln() - last;
        }
        Ok(())
    }
}
