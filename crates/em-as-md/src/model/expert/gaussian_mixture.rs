//! The Gaussian mixture's component ([`GaussianCluster`]): a $q$-variate Gaussian with
//! no covariates, in natural parameters, with a full, diagonal or spherical covariance
//! ([`CovarianceType`]) and scikit-learn's covariance floor `reg_covar`.
//!
//! **Family.** The law of $y \in \mathbb R^q$ in component $k$ is the multivariate
//! Gaussian [`mirror::MultivariateGaussian`] with statistic
//! $T(y) = (y, \operatorname{pack}(yy^\top))$ and natural parameter
//! $$ \theta = (h, \lambda),\qquad h = \Sigma^{-1}m,\qquad \lambda = \operatorname{pack}\big(-\tfrac12\Sigma^{-1}\big)
//!    \ (\text{off-diagonals doubled}), $$
//! log-partition
//! $$ A(\theta) = \tfrac12 h^\top\Sigma h - \tfrac12\log\det\Sigma^{-1},\qquad
//!    \nabla A(\theta) = \big(m,\ \operatorname{pack}(\Sigma + mm^\top)\big). $$
//! The expert's block $\vartheta$ is $\theta$ itself for a full covariance
//! ($q + q(q+1)/2$ values), $(h, \lambda_{11}, \dots, \lambda_{qq})$ for a diagonal one
//! ($2q$ values, off-diagonal $\lambda_{ij} = 0$) and $(h, \lambda)$ with
//! $\lambda_{jj} = \lambda$ for a spherical one ($q + 1$ values): in every case
//! $\theta = E\vartheta$ for a fixed $0/1$ matrix $E$ ([`GaussianCluster::embed`]), so the
//! diagonal and spherical models are linear subfamilies — exponential families in their
//! own right, with statistics $E^\top T(y) = (y, (y_j^2)_j)$ and $(y, \lVert y\rVert^2)$.
//! The block does not depend on the features $x$ (no covariates): the mixture's features
//! are the intercept (or a gate's covariates), the Gaussian's coordinates are its
//! target columns.
//!
//! **Why EM is mirror descent here.** The realisation $\varphi_k = E\vartheta_k$ is linear
//! in the parameters, so $A_n(\vartheta) = \mathcal A(\Phi(\vartheta))$ is convex and the
//! unit-step mirror-descent step with the KL mirror map is the M-step below
//! (no projection): tested by [`crate::testkit::em_md_gap`] in
//! `tests/gaussian_mixture.rs`.
//!
//! **M-step** ([`GaussianCluster::solve_from_moments`]). From the merged weighted
//! statistics about a centre $c$ (any fixed point; the mixture uses the component's
//! current mean, so the sums stay well conditioned):
//! $$ W = \sum_i w_i,\qquad s = \sum_i w_i (y_i - c),\qquad S = \sum_i w_i (y_i - c)(y_i - c)^\top, $$
//! $$ \hat m = c + s/W,\qquad \hat\Sigma_{\text{full}} = S/W - (s/W)(s/W)^\top,\qquad
//!    \hat\Sigma_{\text{diag}} = \operatorname{diag}(\hat\Sigma_{\text{full}}),\qquad
//!    \hat\Sigma_{\text{sph}} = \tfrac1q\operatorname{tr}(\hat\Sigma_{\text{full}})\,I, $$
//! then the floor $\Sigma = \hat\Sigma + \varepsilon I$ with $\varepsilon$ = `reg_covar`
//! (scikit-learn's `reg_covar`, default [`REG_COVAR`] $= 10^{-6}$). With $\varepsilon = 0$
//! this is the exact maximiser of the weighted complete-data log-likelihood
//! $Q(\vartheta) = \sum_i w_i[\langle T(y_i), E\vartheta\rangle - A(E\vartheta)]$; with
//! $\varepsilon > 0$ it maximises $Q$ plus the pseudo-statistic $\varepsilon W\,\langle
//! \operatorname{pack}(I), \lambda\rangle$ (a conjugate prior on the precision), the same
//! as scikit-learn. A covariance that is singular without the floor (a component collapsing
//! onto fewer than $q+1$ distinct points) and positive definite with it is counted in
//! [`InnerStats::fallbacks`](crate::inner::InnerStats::fallbacks).
//!
//! **Log density** ([`ComponentDensity::log_density`]), with the precision factored as
//! $\Sigma^{-1} = LL^\top$ (the workspace's Cholesky policy, [`mirror::linalg`]):
//! $$ \log N(y; m, \Sigma) = -\tfrac q2\log(2\pi) + \sum_j\log L_{jj} - \tfrac12\lVert L^\top(y - m)\rVert^2
//!    = -\tfrac q2\log(2\pi) + \langle T(y), \theta\rangle - A(\theta). $$

use super::{check_len, Expert, ExpertSpec, ReadableParams, WeightedFit};
use crate::error::{Block, MoeError, Result};
use crate::inner::cholesky::{block_error, Cholesky};
use crate::inner::InnerStats;
use faer::{Mat, MatRef};
use mirror::{ExponentialFamily, MultivariateGaussian};
use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};

/// scikit-learn's default covariance floor `reg_covar` ($10^{-6}$), added to every
/// fitted covariance's diagonal.
pub const REG_COVAR: f64 = 1e-6;

/// The covariance model of every component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CovarianceType {
    /// A full $q\times q$ covariance per component.
    #[default]
    Full,
    /// A diagonal covariance per component.
    Diag,
    /// $\sigma^2 I$ per component.
    Spherical,
}

impl CovarianceType {
    /// `full`, `diag` or `spherical` (scikit-learn's `covariance_type` names).
    pub fn name(self) -> &'static str {
        match self {
            CovarianceType::Full => "full",
            CovarianceType::Diag => "diag",
            CovarianceType::Spherical => "spherical",
        }
    }
    /// The type named `name` ([`CovarianceType::name`]), `None` otherwise.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "full" => Some(CovarianceType::Full),
            "diag" => Some(CovarianceType::Diag),
            "spherical" => Some(CovarianceType::Spherical),
            _ => None,
        }
    }
    /// The code saved in a model file (`0`, `1`, `2`).
    pub fn code(self) -> f64 {
        match self {
            CovarianceType::Full => 0.0,
            CovarianceType::Diag => 1.0,
            CovarianceType::Spherical => 2.0,
        }
    }
    /// The type of a saved code.
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            0 => Some(CovarianceType::Full),
            1 => Some(CovarianceType::Diag),
            2 => Some(CovarianceType::Spherical),
            _ => None,
        }
    }
}

/// A Gaussian-mixture component on $q$ target columns, without covariates; see the
/// [module documentation](self).
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianCluster {
    q: usize,
    cov: CovarianceType,
    reg_covar: f64,
    family: MultivariateGaussian,
}

/// What the E-step needs of one component: its mean $m$, the lower Cholesky factor $L$ of
/// its precision $\Sigma^{-1} = LL^\top$, and $c = -\tfrac q2\log 2\pi + \sum_j\log L_{jj}$.
#[derive(Debug, Clone)]
pub struct ComponentDensity {
    /// $m$.
    pub mean: Vec<f64>,
    /// $L$ ($q\times q$, lower triangle; the strict upper triangle is zero).
    pub chol_precision: Mat<f64>,
    /// $-\tfrac q2\log 2\pi + \sum_j \log L_{jj}$.
    pub log_norm: f64,
}

impl ComponentDensity {
    /// $\log N(y; m, \Sigma) = c - \tfrac12\lVert L^\top(y - m)\rVert^2$ (one row; the
    /// mixture's E-step computes the same quantity for a chunk of rows with one matrix
    /// product).
    pub fn log_density(&self, y: &[f64]) -> f64 {
        let q = self.mean.len();
        let mut maha = 0.0;
        for j in 0..q {
            let z: f64 = (j..q)
                .map(|i| self.chol_precision[(i, j)] * (y[i] - self.mean[i]))
                .sum();
            maha += z * z;
        }
        self.log_norm - 0.5 * maha
    }
}

/// The merged weighted statistics of one component about a centre $c$
/// ([`GaussianCluster::solve_from_moments`]); sums over rows, so they combine across
/// chunks and threads by addition.
#[derive(Clone, Copy, Debug)]
pub struct WeightedMoments<'a> {
    /// $W = \sum_i w_i$.
    pub wsum: f64,
    /// $c$ ($q$ values).
    pub centre: &'a [f64],
    /// $s = \sum_i w_i(y_i - c)$.
    pub sum: &'a [f64],
    /// $S = \sum_i w_i(y_i - c)(y_i - c)^\top$ ($q\times q$).
    pub scatter: MatRef<'a, f64>,
}

impl GaussianCluster {
    /// Components on $q \ge 1$ target columns with covariance model `cov` and the floor
    /// `reg_covar` $\ge 0$.
    ///
    /// # Errors
    /// `InvalidParam { name: "dim" }` for $q = 0$, `InvalidParam { name: "reg_covar" }`
    /// unless `reg_covar` is finite and $\ge 0$.
    pub fn new(q: usize, cov: CovarianceType, reg_covar: f64) -> Result<Self> {
        if !(reg_covar.is_finite() && reg_covar >= 0.0) {
            return Err(MoeError::InvalidParam {
                name: "reg_covar",
                reason: format!("finite and >= 0, got {reg_covar}"),
            });
        }
        let family = MultivariateGaussian::new(q).map_err(|_| MoeError::InvalidParam {
            name: "dim",
            reason: "at least one column".into(),
        })?;
        Ok(GaussianCluster {
            q,
            cov,
            reg_covar,
            family,
        })
    }
    /// Full covariance with the floor [`REG_COVAR`].
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn full(q: usize) -> Result<Self> {
        GaussianCluster::new(q, CovarianceType::Full, REG_COVAR)
    }
    /// $q$.
    pub fn dim(&self) -> usize {
        self.q
    }
    /// The covariance model.
    pub fn covariance_type(&self) -> CovarianceType {
        self.cov
    }
    /// The covariance floor $\varepsilon$.
    pub fn reg_covar(&self) -> f64 {
        self.reg_covar
    }
    /// The multivariate Gaussian family of one component.
    pub fn mvn(&self) -> &MultivariateGaussian {
        &self.family
    }
    /// Length of the precision part of the block: $q(q+1)/2$, $q$ or $1$.
    fn n_lambda(&self) -> usize {
        match self.cov {
            CovarianceType::Full => self.q * (self.q + 1) / 2,
            CovarianceType::Diag => self.q,
            CovarianceType::Spherical => 1,
        }
    }
    /// Length of a block: $q$ plus $q(q+1)/2$ (full), $q$ (diagonal) or $1$ (spherical).
    pub fn block_len(&self) -> usize {
        self.q + self.n_lambda()
    }
    /// $\theta = E\vartheta$: the multivariate Gaussian's natural parameter
    /// ($q + q(q+1)/2$ values, into `theta`) of a block $\vartheta$.
    pub fn embed(&self, block: &[f64], theta: &mut [f64]) {
        let q = self.q;
        theta[..q].copy_from_slice(&block[..q]);
        match self.cov {
            CovarianceType::Full => theta[q..].copy_from_slice(&block[q..]),
            CovarianceType::Diag | CovarianceType::Spherical => {
                theta[q..].fill(0.0);
                for j in 0..q {
                    let v = match self.cov {
                        CovarianceType::Diag => block[q + j],
                        _ => block[q],
                    };
                    theta[self.family.packed_index(j, j)] = v;
                }
            }
        }
    }
    /// $E^\top v$ added to `grad` (the adjoint of [`embed`](Self::embed)).
    fn embed_adjoint(&self, v: &[f64], grad: &mut [f64]) {
        let q = self.q;
        for (g, vj) in grad[..q].iter_mut().zip(&v[..q]) {
            *g += vj;
        }
        match self.cov {
            CovarianceType::Full => {
                for (g, vj) in grad[q..].iter_mut().zip(&v[q..]) {
                    *g += vj;
                }
            }
            CovarianceType::Diag => {
                for j in 0..q {
                    grad[q + j] += v[self.family.packed_index(j, j)];
                }
            }
            CovarianceType::Spherical => {
                grad[q] += (0..q)
                    .map(|j| v[self.family.packed_index(j, j)])
                    .sum::<f64>();
            }
        }
    }
    /// The precision $\Sigma^{-1}$ encoded by a block ($P_{jj} = -2\lambda_{jj}$,
    /// $P_{ij} = -\lambda_{ij}$).
    fn precision(&self, block: &[f64]) -> Mat<f64> {
        let q = self.q;
        let mut theta = vec![0.0; self.family.dim()];
        self.embed(block, &mut theta);
        Mat::from_fn(q, q, |i, j| {
            let l = theta[self.family.packed_index(i, j)];
            if i == j {
                -2.0 * l
            } else {
                -l
            }
        })
    }
    /// Mean, precision factor and normalising constant of a block ([`ComponentDensity`]).
    ///
    /// # Errors
    /// `InvalidParam { name: "params" }` for a wrong length; `LeftDomain` when the block
    /// is not finite or its precision is not positive definite.
    pub fn density_parts(&self, block: &[f64]) -> Result<ComponentDensity> {
        check_len("params", self.block_len(), block.len())?;
        let outside = |what: &str| MoeError::LeftDomain {
            reason: format!("Gaussian component {what}"),
        };
        if !block.iter().all(|v| v.is_finite()) {
            return Err(outside("parameter is not finite"));
        }
        let p = self.precision(block);
        let chol = Cholesky::factor(p.as_ref())
            .map_err(|_| outside("precision is not positive definite"))?;
        let mut mean = block[..self.q].to_vec();
        chol.solve_in_place(&mut mean)
            .map_err(|_| outside("mean is not finite"))?;
        let l = chol
            .l()
            .map_err(|_| outside("precision is not positive definite"))?;
        let q = self.q;
        let chol_precision = Mat::from_fn(q, q, |i, j| if i >= j { l[(i, j)] } else { 0.0 });
        let log_norm = -0.5 * q as f64 * (2.0 * std::f64::consts::PI).ln()
            + (0..q).map(|j| l[(j, j)].ln()).sum::<f64>();
        if !log_norm.is_finite() {
            return Err(outside("log-determinant is not finite"));
        }
        Ok(ComponentDensity {
            mean,
            chol_precision,
            log_norm,
        })
    }
    /// Mean $m$ and covariance $\Sigma$ of a block.
    ///
    /// # Errors
    /// As [`density_parts`](Self::density_parts).
    pub fn mean_cov(&self, block: &[f64]) -> Result<(Vec<f64>, Mat<f64>)> {
        let parts = self.density_parts(block)?;
        let p = self.precision(block);
        let cov = Cholesky::factor(p.as_ref())
            .and_then(|c| c.inverse())
            .map_err(|e| block_error(e, Block::Expert(None)))?;
        Ok((parts.mean, cov))
    }
    /// The block of mean $m$ and covariance $\Sigma$: $h = \Sigma^{-1}m$ and the packed
    /// $-\tfrac12\Sigma^{-1}$ (for a diagonal or spherical model only the diagonal of
    /// $\Sigma$ is read).
    ///
    /// # Errors
    /// `NotPositiveDefinite { block: Block::Expert(None), pivot }` when $\Sigma$ is not
    /// positive definite; `InvalidParam` for wrong sizes.
    pub fn block_from_mean_cov(
        &self,
        m: &[f64],
        cov: MatRef<'_, f64>,
        out: &mut [f64],
    ) -> Result<()> {
        let q = self.q;
        check_len("mean", q, m.len())?;
        check_len("covariance", q * q, cov.nrows() * cov.ncols())?;
        check_len("out", self.block_len(), out.len())?;
        let not_pd = |pivot| MoeError::NotPositiveDefinite {
            block: Block::Expert(None),
            pivot,
        };
        match self.cov {
            CovarianceType::Full => {
                let chol =
                    Cholesky::factor(cov).map_err(|e| block_error(e, Block::Expert(None)))?;
                let prec = chol
                    .inverse()
                    .map_err(|e| block_error(e, Block::Expert(None)))?;
                for i in 0..q {
                    out[i] = (0..q).map(|j| prec[(i, j)] * m[j]).sum();
                    for j in i..q {
                        let pij = 0.5 * (prec[(i, j)] + prec[(j, i)]);
                        out[self.family.packed_index(i, j)] =
                            if i == j { -0.5 * pij } else { -pij };
                    }
                }
            }
            CovarianceType::Diag => {
                for j in 0..q {
                    let v = cov[(j, j)];
                    if !(v > 0.0 && v.is_finite()) {
                        return Err(not_pd(j));
                    }
                    out[j] = m[j] / v;
                    out[q + j] = -0.5 / v;
                }
            }
            CovarianceType::Spherical => {
                let v = cov[(0, 0)];
                if !(v > 0.0 && v.is_finite()) {
                    return Err(not_pd(0));
                }
                for j in 0..q {
                    out[j] = m[j] / v;
                }
                out[q] = -0.5 / v;
            }
        }
        if !out.iter().all(|v| v.is_finite()) {
            return Err(not_pd(0));
        }
        Ok(())
    }
    /// The M-step of one component from its merged weighted moments (see the
    /// [module documentation](self)): $\hat m = c + s/W$, $\hat\Sigma$ (full, diagonal or
    /// spherical) $+\ \varepsilon I$, written as a block into `out`. Returns whether the
    /// floor was needed ($\hat\Sigma$ alone is singular under the Cholesky policy).
    ///
    /// # Errors
    /// `NotPositiveDefinite { block: Block::Expert(None), pivot: 0 }` for $W \le 0$ (an
    /// empty component), `NotPositiveDefinite { pivot }` when even $\hat\Sigma + \varepsilon
    /// I$ is singular (e.g. `reg_covar = 0` and a collapsed component), `NonFinite` for
    /// non-finite statistics.
    pub fn solve_from_moments(&self, st: WeightedMoments<'_>, out: &mut [f64]) -> Result<bool> {
        let q = self.q;
        check_len("centre", q, st.centre.len())?;
        check_len("sum", q, st.sum.len())?;
        check_len("scatter", q * q, st.scatter.nrows() * st.scatter.ncols())?;
        if !st.wsum.is_finite() || !st.sum.iter().all(|v| v.is_finite()) {
            return Err(MoeError::NonFinite {
                what: "weighted moments of a Gaussian component",
            });
        }
        if st.wsum <= 0.0 {
            return Err(MoeError::NotPositiveDefinite {
                block: Block::Expert(None),
                pivot: 0,
            });
        }
        let w = st.wsum;
        let delta: Vec<f64> = st.sum.iter().map(|s| s / w).collect();
        let m: Vec<f64> = st.centre.iter().zip(&delta).map(|(c, d)| c + d).collect();
        // Lower triangle of S/W − δδᵀ, symmetrised.
        let full = Mat::from_fn(q, q, |i, j| {
            let (a, b) = if i >= j { (i, j) } else { (j, i) };
            st.scatter[(a, b)] / w - delta[a] * delta[b]
        });
        let model: Mat<f64> = match self.cov {
            CovarianceType::Full => full,
            CovarianceType::Diag => {
                Mat::from_fn(q, q, |i, j| if i == j { full[(i, i)] } else { 0.0 })
            }
            CovarianceType::Spherical => {
                let v = (0..q).map(|j| full[(j, j)]).sum::<f64>() / q as f64;
                Mat::from_fn(q, q, |i, j| if i == j { v } else { 0.0 })
            }
        };
        if !(0..q).all(|i| (0..q).all(|j| model[(i, j)].is_finite())) {
            return Err(MoeError::NonFinite {
                what: "covariance of a Gaussian component",
            });
        }
        let floored = !positive_definite(model.as_ref());
        let eps = self.reg_covar;
        let reg = Mat::from_fn(q, q, |i, j| model[(i, j)] + if i == j { eps } else { 0.0 });
        self.block_from_mean_cov(&m, reg.as_ref(), out)?;
        Ok(floored)
    }
    /// Weighted moments of `fit`'s rows about their weighted mean (two passes; the mixture
    /// merges them per chunk instead, [`crate::model::mixture::ClusterStats`]).
    fn moments_of(&self, fit: WeightedFit<'_>) -> (f64, Vec<f64>, Mat<f64>) {
        let q = self.q;
        let data = fit.data;
        let wsum: f64 = fit.weights.iter().sum();
        let mut centre = vec![0.0; q];
        for (i, &wi) in fit.weights.iter().enumerate() {
            for (c, y) in centre.iter_mut().zip(data.y(i)) {
                *c += wi * y;
            }
        }
        centre.iter_mut().for_each(|c| *c /= wsum);
        let mut scatter = Mat::<f64>::zeros(q, q);
        for (i, &wi) in fit.weights.iter().enumerate() {
            let y = data.y(i);
            for a in 0..q {
                let da = wi * (y[a] - centre[a]);
                for b in 0..=a {
                    scatter[(a, b)] += da * (y[b] - centre[b]);
                }
            }
        }
        (wsum, centre, scatter)
    }
}

/// Whether $G$ passes the workspace's Cholesky policy (pivots above [`PIVOT_TOL`](crate::inner::cholesky::PIVOT_TOL)
/// relative to the largest diagonal entry).
fn positive_definite(g: MatRef<'_, f64>) -> bool {
    Cholesky::factor(g).is_ok()
}

/// The capability behind the mixture's Gaussian-mixture fast path
/// ([`Expert::gaussian_clusters`]): components $y \mid z = k \sim N(m_k, \Sigma_k)$ on the
/// $q$ target columns, not depending on $x$. The E-step then evaluates every row's
/// log-density from one matrix product per component and chunk
/// ([`ComponentDensity`]), merges the weighted moments about each component's current
/// mean ([`WeightedMoments`]), and the M-step is
/// [`solve_from_moments`](GaussianClusters::solve_from_moments) instead of
/// [`Expert::weighted_fit`]. [`GaussianCluster`] offers it; the expert's family,
/// [`Expert::natural`] and `weighted_fit` must describe the same law.
pub trait GaussianClusters: Send + Sync {
    /// $q$.
    fn obs_dim(&self) -> usize;
    /// Mean, precision factor and normalising constant of a block.
    ///
    /// # Errors
    /// `LeftDomain` for a block outside the domain.
    fn density_parts(&self, block: &[f64]) -> Result<ComponentDensity>;
    /// The M-step of one component from its merged moments; `true` when the covariance
    /// floor was needed.
    ///
    /// # Errors
    /// `NotPositiveDefinite { block: Block::Expert(None), .. }` (the mixture names the
    /// component), `NonFinite`.
    fn solve_from_moments(&self, stats: WeightedMoments<'_>, out: &mut [f64]) -> Result<bool>;
    /// Mean $m$ and covariance of a block, the covariance from
    /// [`density_parts`](Self::density_parts)'s precision factor $\Sigma^{-1} = LL^\top$:
    /// $$ \Sigma = (LL^\top)^{-1}. $$
    /// What a front end reports of a fitted component (scikit-learn's `means_`,
    /// `covariances_`), in the coordinates' units.
    ///
    /// # Errors
    /// As [`density_parts`](Self::density_parts);
    /// `NotPositiveDefinite { block: Block::Expert(None), .. }` when $LL^\top$ cannot be
    /// inverted.
    fn mean_cov(&self, block: &[f64]) -> Result<(Vec<f64>, Mat<f64>)> {
        let parts = self.density_parts(block)?;
        let l = parts.chol_precision.as_ref();
        let precision = l * l.transpose();
        let cov = Cholesky::factor(precision.as_ref())
            .and_then(|c| c.inverse())
            .map_err(|e| block_error(e, Block::Expert(None)))?;
        Ok((parts.mean, cov))
    }
}

impl GaussianClusters for GaussianCluster {
    fn obs_dim(&self) -> usize {
        self.q
    }
    fn density_parts(&self, block: &[f64]) -> Result<ComponentDensity> {
        GaussianCluster::density_parts(self, block)
    }
    fn solve_from_moments(&self, stats: WeightedMoments<'_>, out: &mut [f64]) -> Result<bool> {
        GaussianCluster::solve_from_moments(self, stats, out)
    }
    fn mean_cov(&self, block: &[f64]) -> Result<(Vec<f64>, Mat<f64>)> {
        GaussianCluster::mean_cov(self, block)
    }
}

impl Expert for GaussianCluster {
    fn name(&self) -> String {
        format!(
            "Gaussian({} covariance, reg_covar={})",
            self.cov.name(),
            self.reg_covar
        )
    }
    fn family(&self) -> &dyn ExponentialFamily {
        &self.family
    }
    /// No component depends on $x$.
    fn n_regressed(&self) -> usize {
        0
    }
    /// [`GaussianCluster::block_len`] whatever $d$.
    fn n_params(&self, _d: usize) -> usize {
        self.block_len()
    }
    /// $\eta(x) = E\vartheta$ ([`GaussianCluster::embed`]), independent of $x$.
    fn natural(&self, params: &[f64], _x: &[f64], eta: &mut [f64]) {
        self.embed(params, eta);
    }
    /// `grad += E^\top v`.
    fn natural_vjp(&self, _params: &[f64], _x: &[f64], v: &[f64], grad: &mut [f64]) {
        self.embed_adjoint(v, grad);
    }
    /// The closed-form M-step ([`GaussianCluster::solve_from_moments`]) on the weighted
    /// moments of the rows; `fallbacks = 1` when the floor was needed.
    fn weighted_fit(&self, fit: WeightedFit<'_>, out: &mut [f64]) -> Result<InnerStats> {
        check_len("start", self.block_len(), fit.start.len())?;
        check_len("out", self.block_len(), out.len())?;
        super::check_weights(fit.data.n(), fit.weights)?;
        if fit.data.q() != self.q {
            return Err(MoeError::InvalidData {
                row: None,
                column: None,
                reason: format!(
                    "{} expects {} target columns, data has {}",
                    self.name(),
                    self.q,
                    fit.data.q()
                ),
            });
        }
        let (wsum, centre, scatter) = self.moments_of(fit);
        let sum = vec![0.0; self.q];
        let floored = self.solve_from_moments(
            WeightedMoments {
                wsum,
                centre: &centre,
                sum: &sum,
                scatter: scatter.as_ref(),
            },
            out,
        )?;
        Ok(InnerStats {
            iterations: 0,
            residual: 0.0,
            converged: true,
            hessians: 1,
            fallbacks: u64::from(floored),
        })
    }
    /// $\mathbb E[y \mid z = k] = m_k$.
    fn predict_mean(&self, params: &[f64], _x: &[f64], out: &mut [f64]) -> Result<()> {
        let parts = self.density_parts(params)?;
        out[..self.q].copy_from_slice(&parts.mean);
        Ok(())
    }
    /// Means $N(0, \text{scale}^2)$ per coordinate, identity covariance.
    fn init_params(&self, _d: usize, rng: &mut dyn RngCore, scale: f64, out: &mut [f64]) {
        let q = self.q;
        for v in out[..q].iter_mut() {
            let z: f64 = StandardNormal.sample(rng);
            *v = scale * z;
        }
        self.default_constants(&mut out[q..]);
    }
    /// Identity covariance: $\lambda_{jj} = -\tfrac12$, $\lambda_{ij} = 0$.
    fn default_constants(&self, out: &mut [f64]) {
        out.fill(0.0);
        match self.cov {
            CovarianceType::Full => {
                for j in 0..self.q {
                    out[self.family.packed_index(j, j) - self.q] = -0.5;
                }
            }
            _ => out.fill(-0.5),
        }
    }
    /// Registry name `gaussian`, parameters `dim`, `covariance` (0 full, 1 diag,
    /// 2 spherical) and `reg_covar`.
    fn spec(&self) -> Option<ExpertSpec> {
        Some(
            ExpertSpec::new("gaussian")
                .param("dim", self.q as f64)
                .param("covariance", self.cov.code())
                .param("reg_covar", self.reg_covar),
        )
    }
    fn gaussian_clusters(&self) -> Option<&dyn GaussianClusters> {
        Some(self)
    }
    /// `mean_j`, then `cov_i_j` ($i \le j$, full), `var_j` (diagonal) or `var`
    /// (spherical), $j$ the target column.
    fn readable_params(&self, params: &[f64], _d: usize) -> Result<ReadableParams> {
        let (m, cov) = self.mean_cov(params)?;
        let q = self.q;
        let mut scalars: Vec<(String, f64)> = m
            .iter()
            .enumerate()
            .map(|(j, v)| (format!("mean_{j}"), *v))
            .collect();
        match self.cov {
            CovarianceType::Full => {
                for i in 0..q {
                    for j in i..q {
                        scalars.push((format!("cov_{i}_{j}"), cov[(i, j)]));
                    }
                }
            }
            CovarianceType::Diag => {
                scalars.extend((0..q).map(|j| (format!("var_{j}"), cov[(j, j)])));
            }
            CovarianceType::Spherical => scalars.push(("var".into(), cov[(0, 0)])),
        }
        Ok(ReadableParams {
            coefficients: Vec::new(),
            scalars,
        })
    }
    fn prediction_names(&self) -> Vec<String> {
        (0..self.q).map(|j| format!("mean_{j}")).collect()
    }
}
