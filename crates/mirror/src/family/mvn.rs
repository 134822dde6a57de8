//! The $d$-variate Gaussian family with unknown mean and covariance, in the minimal
//! natural parametrisation.
//!
//! **Packing.** A symmetric $d\times d$ matrix is stored as its upper triangle, row by
//! row: $(M_{00}, M_{01}, \dots, M_{0,d-1}, M_{11}, M_{12}, \dots, M_{d-1,d-1})$, that is
//! $d(d+1)/2$ numbers. The sufficient statistic is
//! $$ T(s) = \big(s,\ \operatorname{pack}(s s^\top)\big) \in \mathbb R^{d + d(d+1)/2},
//!    \qquad \operatorname{pack}(ss^\top)_{(i,j)} = s_i s_j\ (i \le j), $$
//! and $\theta = (\eta, \lambda)$ splits the same way. With the precision
//! $P = \Sigma^{-1}$ and mean $m$,
//! $$ \eta = P m,\qquad \lambda_{ii} = -\tfrac12 P_{ii},\qquad
//!    \lambda_{ij} = -P_{ij}\ (i<j), $$
//! so that $\langle \operatorname{pack}(ss^\top), \lambda\rangle = -\tfrac12 s^\top P s$: the
//! **off-diagonal coordinates carry a factor 2** because $s_i s_j$ appears once in $T$
//! but twice in $s^\top P s$. Conversely $P_{ii} = -2\lambda_{ii}$, $P_{ij} = -\lambda_{ij}$.
//!
//! With $h(s) = (2\pi)^{-d/2}$,
//! $$ p(s;\theta) = (2\pi)^{-d/2}\exp\big(\langle T(s),\theta\rangle - A(\theta)\big),\qquad
//!    A(\theta) = \tfrac12\,\eta^\top P^{-1}\eta - \tfrac12\log\det P, $$
//! on the natural domain $\{P \succ 0\}$ (checked by a faer Cholesky factorisation
//! $P = LL^\top$, $\log\det P = 2\sum_i \log L_{ii}$). The mean parameter is
//! $$ \nabla A(\theta) = \big(m,\ \operatorname{pack}(\Sigma + m m^\top)\big),\qquad
//!    m = P^{-1}\eta,\ \Sigma = P^{-1}, $$
//! with inverse $\nabla A^*(\mu_1, \mu_2)$: $\Sigma = \operatorname{unpack}(\mu_2) -
//! \mu_1\mu_1^\top$, $P = \Sigma^{-1}$, $\eta = P\mu_1$, on the mean domain
//! $\{\operatorname{unpack}(\mu_2) - \mu_1\mu_1^\top \succ 0\}$. The Fisher information
//! $\nabla^2A = \operatorname{Cov}\[T\]$ follows from Isserlis' theorem with non-zero mean:
//! $$ \operatorname{Cov}(s_a, s_b) = \Sigma_{ab},\qquad
//!    \operatorname{Cov}(s_a, s_is_j) = m_i\Sigma_{aj} + m_j\Sigma_{ai}, $$
//! $$ \operatorname{Cov}(s_is_j, s_ks_l) = \Sigma_{ik}\Sigma_{jl} + \Sigma_{il}\Sigma_{jk}
//!    + m_im_k\Sigma_{jl} + m_im_l\Sigma_{jk} + m_jm_k\Sigma_{il} + m_jm_l\Sigma_{ik}. $$

use super::{mean_guard, ExponentialFamily};
use crate::error::{check_len, MirrorError, Result};
use faer::linalg::solvers::Solve;
use faer::Mat;
use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};

/// The $d$-variate Gaussian family (mean and covariance); see the
/// [module documentation](self) for the packing of $\theta$ and $T$.
#[derive(Debug, Clone, PartialEq)]
pub struct MultivariateGaussian {
    d: usize,
    /// `(i, j)` with `i <= j` in packing order.
    pairs: Vec<(usize, usize)>,
}

/// Moments of a natural parameter: mean and covariance (row-major $d\times d$).
struct Moments {
    m: Vec<f64>,
    cov: Vec<f64>,
}

/// In-place Cholesky factorisation $A = LL^\top$ of a symmetric row-major $d\times d$
/// matrix (only the lower triangle is read; $L$ overwrites it, the strict upper triangle
/// is left alone). `false` at the first pivot that is not positive (or not finite) —
/// the criterion of faer's `llt`, which this replaces on the hot path: for the small
/// matrices of this family faer's dispatch and per-call allocations cost far more than
/// the $d^3/3$ flops (measured: the MVN rows of the equivalence test).
fn cholesky_in_place(a: &mut [f64], d: usize) -> bool {
    for j in 0..d {
        let mut s = a[j * d + j];
        for k in 0..j {
            s -= a[j * d + k] * a[j * d + k];
        }
        if !(s > 0.0 && s.is_finite()) {
            return false;
        }
        let ljj = s.sqrt();
        a[j * d + j] = ljj;
        for i in j + 1..d {
            let mut t = a[i * d + j];
            for k in 0..j {
                t -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = t / ljj;
        }
    }
    true
}

impl MultivariateGaussian {
    /// The family of $d$-variate Gaussians, $d \ge 1$; $\theta$ has
    /// $d + d(d+1)/2$ coordinates.
    ///
    /// # Errors
    /// `InvalidParameter` if `d == 0`.
    pub fn new(d: usize) -> Result<Self> {
        if d == 0 {
            return Err(MirrorError::InvalidParameter {
                name: "d",
                value: 0.0,
                reason: "an observation dimension of at least 1",
            });
        }
        let pairs = (0..d).flat_map(|i| (i..d).map(move |j| (i, j))).collect();
        Ok(MultivariateGaussian { d, pairs })
    }

    /// Observation dimension $d$.
    pub fn obs_dimension(&self) -> usize {
        self.d
    }

    /// Position in $\theta$ (and $T$) of the coordinate for the pair $(i, j)$, in either
    /// order: $d + $ the packed upper-triangle index of $(\min, \max)$.
    pub fn packed_index(&self, i: usize, j: usize) -> usize {
        let (i, j) = if i <= j { (i, j) } else { (j, i) };
        // Rows 0..i of the upper triangle hold d + (d-1) + ... + (d-i+1) entries.
        self.d + i * self.d - (i * i - i) / 2 + (j - i)
    }

    /// $P$ encoded by $\lambda$, row-major (both triangles).
    fn precision_rows(&self, theta: &[f64], p: &mut [f64]) {
        let d = self.d;
        for (k, &(i, j)) in self.pairs.iter().enumerate() {
            let l = theta[d + k];
            if i == j {
                p[i * d + i] = -2.0 * l;
            } else {
                p[i * d + j] = -l;
                p[j * d + i] = -l;
            }
        }
    }

    fn moments(&self, theta: &[f64]) -> Result<Moments> {
        check_len("natural parameter", self.dim(), theta.len())?;
        let outside = |reason: String| MirrorError::OutsideDomain {
            what: "natural parameter",
            reason,
        };
        if !theta.iter().all(|t| t.is_finite()) {
            return Err(outside(format!("{theta:?} is not finite")));
        }
        let d = self.d;
        // P = LLᵀ (L in the lower triangle of `l`), then m = P⁻¹η by two triangular
        // solves and Σ = P⁻¹ = L⁻ᵀL⁻¹ from the inverse of L (symmetric by construction).
        let mut l = vec![0.0; d * d];
        self.precision_rows(theta, &mut l);
        if !cholesky_in_place(&mut l, d) {
            return Err(outside(
                "the precision matrix encoded by theta is not positive definite".into(),
            ));
        }
        let log_det_p = 2.0 * (0..d).map(|i| l[i * d + i].ln()).sum::<f64>();
        // Forward: L z = η; backward: Lᵀ m = z.
        let mut m = theta[..d].to_vec();
        for i in 0..d {
            let mut t = m[i];
            for k in 0..i {
                t -= l[i * d + k] * m[k];
            }
            m[i] = t / l[i * d + i];
        }
        for i in (0..d).rev() {
            let mut t = m[i];
            for k in i + 1..d {
                t -= l[k * d + i] * m[k];
            }
            m[i] = t / l[i * d + i];
        }
        // W = L⁻¹ (lower triangular), column by column.
        let mut w = vec![0.0; d * d];
        for c in 0..d {
            w[c * d + c] = 1.0 / l[c * d + c];
            for i in c + 1..d {
                let mut t = 0.0;
                for k in c..i {
                    t -= l[i * d + k] * w[k * d + c];
                }
                w[i * d + c] = t / l[i * d + i];
            }
        }
        // Σ_ij = Σ_{k ≥ max(i,j)} W_ki W_kj.
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..=i {
                let v: f64 = (i..d).map(|k| w[k * d + i] * w[k * d + j]).sum();
                cov[i * d + j] = v;
                cov[j * d + i] = v;
            }
        }
        if !(log_det_p.is_finite() && m.iter().all(|x| x.is_finite())) {
            return Err(MirrorError::NonFinite {
                what: "multivariate Gaussian moments",
            });
        }
        Ok(Moments { m, cov })
    }

    /// Mean $m$ and covariance $\Sigma$ of a natural parameter.
    ///
    /// # Errors
    /// `DimensionMismatch`, or `OutsideDomain` if $\theta$ is not finite or its precision
    /// is not positive definite.
    pub fn mean_cov_from_natural(&self, theta: &[f64]) -> Result<(Vec<f64>, Mat<f64>)> {
        let mo = self.moments(theta)?;
        let d = self.d;
        Ok((mo.m, Mat::from_fn(d, d, |i, j| mo.cov[i * d + j])))
    }

    /// The natural parameter of mean $m$ and covariance $\Sigma$:
    /// $\eta = \Sigma^{-1} m$, $\lambda = $ packed $-\tfrac12\Sigma^{-1}$ with off-diagonals
    /// doubled.
    ///
    /// # Errors
    /// `DimensionMismatch` on wrong sizes; `InvalidParameter` if an entry is not finite or
    /// $\Sigma$ is not symmetric (to $10^{-10}$ relative); `NotPositiveDefinite` (with the
    /// failing Cholesky pivot) if $\Sigma$ is not positive definite.
    pub fn natural_from_mean_cov(&self, m: &[f64], cov: &Mat<f64>) -> Result<Vec<f64>> {
        let d = self.d;
        check_len("natural_from_mean_cov: mean", d, m.len())?;
        check_len("natural_from_mean_cov: covariance rows", d, cov.nrows())?;
        check_len("natural_from_mean_cov: covariance columns", d, cov.ncols())?;
        if let Some(&bad) = m.iter().find(|x| !x.is_finite()) {
            return Err(MirrorError::InvalidParameter {
                name: "mean",
                value: bad,
                reason: "finite entries",
            });
        }
        let mut scale = 0.0f64;
        for i in 0..d {
            for j in 0..d {
                let c = cov[(i, j)];
                if !c.is_finite() {
                    return Err(MirrorError::InvalidParameter {
                        name: "cov",
                        value: c,
                        reason: "finite entries",
                    });
                }
                scale = scale.max(c.abs());
            }
        }
        for i in 0..d {
            for j in 0..i {
                let asym = (cov[(i, j)] - cov[(j, i)]).abs();
                if asym > 1e-10 * scale {
                    return Err(MirrorError::InvalidParameter {
                        name: "cov asymmetry",
                        value: asym,
                        reason: "a symmetric covariance matrix",
                    });
                }
            }
        }
        self.natural_from_mean_cov_unchecked(m, cov, "covariance")
    }

    /// $\theta$ from $(m, \Sigma)$ for a finite symmetric $\Sigma$.
    fn natural_from_mean_cov_unchecked(
        &self,
        m: &[f64],
        cov: &Mat<f64>,
        what: &'static str,
    ) -> Result<Vec<f64>> {
        let d = self.d;
        let llt = cov.llt(faer::Side::Lower).map_err(|e| match e {
            faer::linalg::solvers::LltError::NonPositivePivot { index } => {
                MirrorError::NotPositiveDefinite { what, pivot: index }
            }
        })?;
        let prec = llt.solve(Mat::<f64>::identity(d, d));
        let mut theta = vec![0.0; self.dim()];
        for i in 0..d {
            theta[i] = (0..d)
                .map(|j| 0.5 * (prec[(i, j)] + prec[(j, i)]) * m[j])
                .sum();
        }
        for (k, &(i, j)) in self.pairs.iter().enumerate() {
            let pij = 0.5 * (prec[(i, j)] + prec[(j, i)]);
            theta[d + k] = if i == j { -0.5 * pij } else { -pij };
        }
        if !theta.iter().all(|x| x.is_finite()) {
            return Err(MirrorError::NonFinite {
                what: "multivariate Gaussian natural parameter",
            });
        }
        Ok(theta)
    }

    /// The covariance $\operatorname{unpack}(\mu_2) - \mu_1\mu_1^\top$ of a mean parameter.
    fn cov_from_mean(&self, mu: &[f64]) -> Mat<f64> {
        let d = self.d;
        let mut c = Mat::zeros(d, d);
        for (k, &(i, j)) in self.pairs.iter().enumerate() {
            let v = mu[d + k] - mu[i] * mu[j];
            c[(i, j)] = v;
            c[(j, i)] = v;
        }
        c
    }
}

impl ExponentialFamily for MultivariateGaussian {
    fn name(&self) -> String {
        format!("MultivariateGaussian(d={})", self.d)
    }
    fn dim(&self) -> usize {
        self.d + self.pairs.len()
    }
    fn obs_dim(&self) -> usize {
        self.d
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s.len() == self.d && s.iter().all(|x| x.is_finite())
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta.len() == self.dim() && theta.iter().all(|t| t.is_finite()) && {
            let mut p = vec![0.0; self.d * self.d];
            self.precision_rows(theta, &mut p);
            cholesky_in_place(&mut p, self.d)
        }
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu.len() == self.dim()
            && mu.iter().all(|t| t.is_finite())
            && self.cov_from_mean(mu).llt(faer::Side::Lower).is_ok()
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[..self.d].copy_from_slice(s);
        for (k, &(i, j)) in self.pairs.iter().enumerate() {
            t[self.d + k] = s[i] * s[j];
        }
    }
    /// $\log h(s) = -\tfrac d2\log 2\pi$.
    fn log_base_measure(&self, _s: &[f64]) -> f64 {
        -0.5 * self.d as f64 * (2.0 * std::f64::consts::PI).ln()
    }
    /// $A(\theta) = \tfrac12\eta^\top P^{-1}\eta - \tfrac12\log\det P
    /// = \tfrac12\lVert L^{-1}\eta\rVert^2 - \sum_i\log L_{ii}$ with $P = LL^\top$: one
    /// Cholesky factorisation and one triangular solve (no inverse, no covariance; the
    /// per-row hot path of the generic mixture code), with the domain checks of
    /// [`mean_cov_from_natural`](Self::mean_cov_from_natural).
    fn log_partition(&self, theta: &[f64]) -> Result<f64> {
        check_len("natural parameter", self.dim(), theta.len())?;
        let outside = |reason: String| MirrorError::OutsideDomain {
            what: "natural parameter",
            reason,
        };
        if !theta.iter().all(|t| t.is_finite()) {
            return Err(outside(format!("{theta:?} is not finite")));
        }
        let d = self.d;
        let mut l = vec![0.0; d * d + d];
        let (l, z) = l.split_at_mut(d * d);
        self.precision_rows(theta, l);
        if !cholesky_in_place(l, d) {
            return Err(outside(
                "the precision matrix encoded by theta is not positive definite".into(),
            ));
        }
        let mut quad = 0.0;
        let mut log_det_half = 0.0;
        for i in 0..d {
            let mut t = theta[i];
            for k in 0..i {
                t -= l[i * d + k] * z[k];
            }
            z[i] = t / l[i * d + i];
            quad += z[i] * z[i];
            log_det_half += l[i * d + i].ln();
        }
        let a = 0.5 * quad - log_det_half;
        if !a.is_finite() {
            return Err(MirrorError::NonFinite {
                what: "multivariate Gaussian moments",
            });
        }
        Ok(a)
    }
    /// $\nabla A(\theta) = (m, \operatorname{pack}(\Sigma + mm^\top))$.
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> Result<()> {
        check_len("mean: output", self.dim(), mu.len())?;
        let mo = self.moments(theta)?;
        mu[..self.d].copy_from_slice(&mo.m);
        for (k, &(i, j)) in self.pairs.iter().enumerate() {
            mu[self.d + k] = mo.cov[i * self.d + j] + mo.m[i] * mo.m[j];
        }
        Ok(())
    }
    /// $\nabla^2 A(\theta) = \operatorname{Cov}\[T\]$ by Isserlis' theorem (module docs).
    fn fisher(&self, theta: &[f64]) -> Result<Mat<f64>> {
        let mo = self.moments(theta)?;
        let (d, m) = (self.d, &mo.m);
        let s = |i: usize, j: usize| mo.cov[i * d + j];
        let p = self.dim();
        let mut f = Mat::zeros(p, p);
        for a in 0..d {
            for b in 0..d {
                f[(a, b)] = s(a, b);
            }
            for (k, &(i, j)) in self.pairs.iter().enumerate() {
                let v = m[i] * s(a, j) + m[j] * s(a, i);
                f[(a, d + k)] = v;
                f[(d + k, a)] = v;
            }
        }
        for (r, &(i, j)) in self.pairs.iter().enumerate() {
            for (c, &(k, l)) in self.pairs.iter().enumerate() {
                f[(d + r, d + c)] = s(i, k) * s(j, l)
                    + s(i, l) * s(j, k)
                    + m[i] * m[k] * s(j, l)
                    + m[i] * m[l] * s(j, k)
                    + m[j] * m[k] * s(i, l)
                    + m[j] * m[l] * s(i, k);
            }
        }
        Ok(f)
    }
    /// $s = m + Lz$ with $\Sigma = LL^\top$ and $z \sim \mathcal N(0, I)$.
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> Result<()> {
        check_len("sample: output", self.d, s.len())?;
        let mo = self.moments(theta)?;
        let d = self.d;
        let cov = Mat::from_fn(d, d, |i, j| mo.cov[i * d + j]);
        let llt = cov
            .llt(faer::Side::Lower)
            .map_err(|_| MirrorError::NotPositiveDefinite {
                what: "covariance",
                pivot: 0,
            })?;
        let l = llt.L();
        let z: Vec<f64> = (0..self.d).map(|_| StandardNormal.sample(rng)).collect();
        for i in 0..self.d {
            s[i] = mo.m[i] + (0..=i).map(|j| l[(i, j)] * z[j]).sum::<f64>();
        }
        Ok(())
    }
    /// Newton (if used through [`newton_natural_from_mean`](super::newton_natural_from_mean))
    /// starts at the standard normal: $\eta = 0$, $P = I$.
    fn newton_start(&self, theta: &mut [f64]) {
        theta.iter_mut().for_each(|t| *t = 0.0);
        for (k, &(i, j)) in self.pairs.iter().enumerate() {
            if i == j {
                theta[self.d + k] = -0.5;
            }
        }
    }
    /// Closed form: $\Sigma = \operatorname{unpack}(\mu_2) - \mu_1\mu_1^\top$, then
    /// [`natural_from_mean_cov`](MultivariateGaussian::natural_from_mean_cov).
    fn natural_from_mean(&self, mu: &[f64], theta: &mut [f64]) -> Result<()> {
        mean_guard(self, mu)?;
        check_len("natural_from_mean: theta", self.dim(), theta.len())?;
        let cov = self.cov_from_mean(mu);
        let t = self.natural_from_mean_cov_unchecked(
            &mu[..self.d],
            &cov,
            "covariance of mean parameter",
        )?;
        theta.copy_from_slice(&t);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// $A(\theta)$ by one Cholesky factor and one triangular solve against
    /// $\tfrac12\eta^\top m + \tfrac12\log\det\Sigma$ from the moments (mean $m$ and the
    /// covariance $\Sigma$ computed through the inverse factor) and faer's determinant.
    #[test]
    fn log_partition_equals_the_moment_formula() {
        let fam = MultivariateGaussian::new(3).unwrap();
        let m = [0.3, -1.2, 2.0];
        let cov = Mat::from_fn(3, 3, |i, j| match (i, j) {
            (0, 0) => 2.0,
            (1, 1) => 1.5,
            (2, 2) => 0.7,
            (0, 1) | (1, 0) => 0.4,
            (1, 2) | (2, 1) => -0.3,
            _ => 0.1,
        });
        let theta = fam.natural_from_mean_cov(&m, &cov).unwrap();
        let (mean, sigma) = fam.mean_cov_from_natural(&theta).unwrap();
        let quad: f64 = mean.iter().zip(&theta).map(|(a, b)| a * b).sum();
        let expected = 0.5 * quad + 0.5 * sigma.determinant().ln();
        let a = fam.log_partition(&theta).unwrap();
        assert!(
            (a - expected).abs() < 1e-13 * expected.abs().max(1.0),
            "{a} vs {expected}"
        );
        let mut bad = theta.clone();
        bad[3] = 1.0; // λ₀₀ > 0: P₀₀ < 0
        assert!(matches!(
            fam.log_partition(&bad),
            Err(MirrorError::OutsideDomain { .. })
        ));
        assert!(matches!(
            fam.log_partition(&theta[..4]),
            Err(MirrorError::DimensionMismatch { .. })
        ));
    }
}
