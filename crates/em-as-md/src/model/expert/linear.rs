//! The linear-Gaussian expert ([`LinearGaussian`]): weighted least squares in closed form.

use super::{check_len, check_weighted_fit, dot, Expert, ExpertSpec, WeightedFit};
use super::{GaussianRegression, PreparedExpert, ReadableParams, WeightedGram};
use crate::data::Dataset;
use crate::error::{Block, MoeError, Result};
use crate::inner::cholesky;
use crate::inner::gram::{add_weighted_gram, gram_buffer_len};
use crate::inner::parallel::{fold_rows, Mergeable};
use crate::inner::InnerStats;
use faer::Mat;
use mirror::ExponentialFamily;

/// Linear regression with Gaussian noise and its own variance:
/// $y \mid x, z = k \sim N(\beta_k^\top x, \sigma_k^2)$, in the family
/// [`mirror::Gaussian`] (mean and variance) with natural parameter
/// $\eta = (\gamma^\top x, \tau)$, $\gamma = \beta/\sigma^2$, $\tau = -1/(2\sigma^2)$
/// (parameters $\vartheta = (\gamma, \tau)$, $d + 1$ values).
///
/// The weighted fit is closed form (weighted least squares):
/// $$ \hat\beta = (X^\top W X + \lambda I)^{-1} X^\top W y,\qquad
///    \hat\sigma^2 = \frac{\sum_i w_i (y_i - \hat\beta^\top x_i)^2}{\sum_i w_i}, $$
/// with the ridge $\lambda = 0$ unless asked for ([`LinearGaussian::with_ridge`]; it is
/// part of [`Expert::name`] and of the description [`Expert::spec`] (registry name
/// `linear`, parameter `ridge`), so it is always reported and saved). With
/// $\lambda = 0$ this is the exact maximiser of $Q$.
///
/// It offers the [`GaussianRegression`] capability ([`Expert::gaussian_regression`]), so
/// a mixture of linear experts runs its M-step from merged weighted Gram matrices.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinearGaussian {
    ridge: f64,
    family: mirror::Gaussian,
}

impl LinearGaussian {
    /// Without ridge.
    pub fn new() -> Self {
        LinearGaussian {
            ridge: 0.0,
            family: mirror::Gaussian::new(),
        }
    }
    /// With ridge $\lambda \ge 0$ added to every weighted Gram matrix.
    ///
    /// # Errors
    /// `InvalidParam { name: "ridge" }` unless $\lambda$ is finite and $\ge 0$.
    pub fn with_ridge(ridge: f64) -> Result<Self> {
        if !(ridge.is_finite() && ridge >= 0.0) {
            return Err(MoeError::InvalidParam {
                name: "ridge",
                reason: format!("finite and >= 0, got {ridge}"),
            });
        }
        Ok(LinearGaussian {
            ridge,
            family: mirror::Gaussian::new(),
        })
    }
    /// The ridge $\lambda$.
    pub fn ridge(&self) -> f64 {
        self.ridge
    }
    /// $(\beta, \sigma^2) \mapsto (\gamma, \tau) = (\beta/\sigma^2, -1/(2\sigma^2))$ into
    /// `out` ($d + 1$).
    ///
    /// # Errors
    /// `InvalidParam` unless $\sigma^2 > 0$ is finite and $\beta$ is finite.
    pub fn natural_from_beta(beta: &[f64], sigma2: f64, out: &mut [f64]) -> Result<()> {
        if !(sigma2 > 0.0 && sigma2.is_finite()) || beta.iter().any(|b| !b.is_finite()) {
            return Err(MoeError::InvalidParam {
                name: "sigma2",
                reason: format!("finite beta and variance > 0, got {sigma2}"),
            });
        }
        check_len("out", beta.len() + 1, out.len())?;
        for (o, b) in out.iter_mut().zip(beta) {
            *o = b / sigma2;
        }
        out[beta.len()] = -0.5 / sigma2;
        Ok(())
    }
    /// $(\gamma, \tau) \mapsto (\beta, \sigma^2) = (-\gamma/(2\tau), -1/(2\tau))$.
    ///
    /// # Errors
    /// `LeftDomain` unless $\tau < 0$.
    pub fn beta_from_natural(params: &[f64]) -> Result<(Vec<f64>, f64)> {
        let d = params.len().saturating_sub(1);
        let tau = params.get(d).copied().unwrap_or(f64::NAN);
        if !(tau < 0.0 && tau.is_finite()) {
            return Err(MoeError::LeftDomain {
                reason: format!("Gaussian expert precision parameter tau = {tau} must be < 0"),
            });
        }
        let s2 = -0.5 / tau;
        Ok((params[..d].iter().map(|g| g * s2).collect(), s2))
    }
}

/// Merged weighted least-squares statistics of one linear expert.
struct WlsAcc {
    gram: Mat<f64>,
    rhs: Vec<f64>,
    syy: f64,
    wsum: f64,
    buf: Vec<f64>,
}
impl Mergeable for WlsAcc {
    fn merge(&mut self, other: Self) {
        self.gram += &other.gram;
        for (a, b) in self.rhs.iter_mut().zip(&other.rhs) {
            *a += b;
        }
        self.syy += other.syy;
        self.wsum += other.wsum;
    }
}

impl Expert for LinearGaussian {
    fn name(&self) -> String {
        if self.ridge > 0.0 {
            format!("linear-Gaussian(ridge={})", self.ridge)
        } else {
            "linear-Gaussian".into()
        }
    }
    fn family(&self) -> &dyn ExponentialFamily {
        &self.family
    }
    fn n_regressed(&self) -> usize {
        1
    }
    /// $\nabla A = (m, m^2 + v)$, Fisher $\begin{pmatrix} v & 2mv\\ 2mv & 4m^2v+2v^2\end{pmatrix}$
    /// with $v = -1/(2\tau)$, $m = \eta_1 v$.
    fn moments(&self, eta: &[f64], mu: &mut [f64], fisher: &mut [f64]) -> Result<()> {
        let (m, v) = mirror::Gaussian::mean_var_from_natural(eta)?;
        mu[0] = m;
        mu[1] = m * m + v;
        fisher[0] = v;
        fisher[1] = 2.0 * m * v;
        fisher[2] = 2.0 * m * v;
        fisher[3] = 4.0 * m * m * v + 2.0 * v * v;
        Ok(())
    }
    fn weighted_fit(&self, fit: WeightedFit<'_>, out: &mut [f64]) -> Result<InnerStats> {
        check_weighted_fit(self, fit, out)?;
        let (data, weights, d) = (fit.data, fit.weights, fit.data.d());
        let acc = fold_rows(
            data.n(),
            || WlsAcc {
                gram: Mat::zeros(d, d),
                rhs: vec![0.0; d],
                syy: 0.0,
                wsum: 0.0,
                buf: vec![0.0; gram_buffer_len(d)],
            },
            |acc, rows| {
                let w = &weights[rows.clone()];
                add_weighted_gram(data, rows.clone(), w, &mut acc.buf, acc.gram.as_mut());
                for (li, i) in rows.enumerate() {
                    let y = data.y(i)[0];
                    let wy = w[li] * y;
                    for (r, xa) in acc.rhs.iter_mut().zip(data.x(i)) {
                        *r += wy * xa;
                    }
                    acc.syy += wy * y;
                    acc.wsum += w[li];
                }
                Ok(())
            },
        )?;
        let stats = WeightedGram {
            gram: acc.gram.as_ref(),
            rhs: &acc.rhs,
            syy: acc.syy,
            wsum: acc.wsum,
        };
        self.solve_from_gram(stats, out)?;
        Ok(InnerStats {
            iterations: 0,
            residual: 0.0,
            converged: true,
            hessians: 1,
            fallbacks: 0,
        })
    }
    fn default_constants(&self, out: &mut [f64]) {
        out[0] = -0.5;
    }
    fn ridge(&self) -> f64 {
        self.ridge
    }
    /// $R = \frac{\lambda}{2\sigma^2}\|\beta\|^2 = \frac{\lambda\sigma^2}{2}\|\gamma\|^2
    /// = -\frac{\lambda}{4\tau}\|\gamma\|^2$: the ridge of weighted least squares,
    /// $\sum_i w_i(y_i - \beta^\top x_i)^2 + \lambda\|\beta\|^2$ over $2\sigma^2$, so
    /// that [`solve_from_gram`](GaussianRegression::solve_from_gram) is the exact
    /// penalised M-step (intercept included, as in $G + \lambda I$). $+\infty$ outside the
    /// domain ($\tau \ge 0$).
    fn penalty(&self, params: &[f64], d: usize) -> f64 {
        if self.ridge == 0.0 {
            return 0.0;
        }
        let tau = params[d];
        if tau.is_nan() || tau >= 0.0 {
            return f64::INFINITY;
        }
        -self.ridge * dot(&params[..d], &params[..d]) / (4.0 * tau)
    }
    /// $\partial R/\partial\gamma = -\frac{\lambda}{2\tau}\gamma$,
    /// $\partial R/\partial\tau = \frac{\lambda}{4\tau^2}\|\gamma\|^2$.
    fn penalty_gradient(&self, params: &[f64], d: usize, grad: &mut [f64]) {
        if self.ridge == 0.0 {
            return;
        }
        let tau = params[d];
        for (g, v) in grad[..d].iter_mut().zip(&params[..d]) {
            *g -= self.ridge * v / (2.0 * tau);
        }
        grad[d] += self.ridge * dot(&params[..d], &params[..d]) / (4.0 * tau * tau);
    }
    fn spec(&self) -> Option<ExpertSpec> {
        Some(ExpertSpec::new("linear").param("ridge", self.ridge))
    }
    fn gaussian_regression(&self) -> Option<&dyn GaussianRegression> {
        Some(self)
    }
    /// With $\tau$ fixed per block: $4\tau$, $\tfrac12\log(-2\tau)$ and $v = -1/(2\tau)$
    /// once, so that a row costs one dot product $\eta_1 = \gamma^\top x$ and
    /// $A_F = -\eta_1^2/(4\tau) - \tfrac12\log(-2\tau)$, $\nabla A_F = (m, m^2 + v)$ with
    /// $m = \eta_1 v$ (the same operations as [`mirror::Gaussian`]'s, so the same bits).
    /// `None` unless $\tau < 0$ is finite and the block has $d + 1$ values.
    fn prepare<'a>(&'a self, params: &'a [f64]) -> Option<Box<dyn PreparedExpert + 'a>> {
        let (&tau, gamma) = params.split_last()?;
        (tau.is_finite() && tau < 0.0).then(|| {
            Box::new(PreparedLinear {
                gamma,
                tau,
                four_tau: 4.0 * tau,
                half_log: 0.5 * (-2.0 * tau).ln(),
                v: -0.5 / tau,
            }) as Box<dyn PreparedExpert + 'a>
        })
    }
    /// $\beta = -\gamma/(2\tau)$ (label `beta`) and $\sigma^2 = -1/(2\tau)$ (label
    /// `variance σ²`).
    ///
    /// # Errors
    /// `InvalidParam { name: "params" }` for a wrong length, `LeftDomain` unless $\tau < 0$.
    fn readable_params(&self, params: &[f64], d: usize) -> Result<ReadableParams> {
        check_len("params", d + 1, params.len())?;
        let (beta, s2) = LinearGaussian::beta_from_natural(params)?;
        Ok(ReadableParams {
            coefficients: vec![("beta".into(), beta)],
            scalars: vec![("variance σ²".into(), s2)],
        })
    }
}

impl GaussianRegression for LinearGaussian {
    /// $\beta = \sigma^2\gamma$, $\sigma^2 = -1/(2\tau)$ ([`LinearGaussian::beta_from_natural`]).
    fn mean_variance(&self, params: &[f64], beta: &mut [f64]) -> Result<f64> {
        let d = params.len().saturating_sub(1);
        check_len("beta", d, beta.len())?;
        let tau = params.get(d).copied().unwrap_or(f64::NAN);
        if !(tau < 0.0 && tau.is_finite()) {
            return Err(MoeError::LeftDomain {
                reason: format!("Gaussian expert precision parameter tau = {tau} must be < 0"),
            });
        }
        let s2 = -0.5 / tau;
        for (b, g) in beta.iter_mut().zip(&params[..d]) {
            *b = g * s2;
        }
        Ok(s2)
    }
    /// The closed-form M-step from merged weighted statistics $G = \sum_i w_i x_ix_i^\top$
    /// ([`WeightedGram`]: $G$, $b$, $s$, $W$): $\hat\beta = (G + \lambda I)^{-1} b$,
    /// $\hat\sigma^2 = (s - 2\hat\beta^\top b + \hat\beta^\top G\hat\beta +
    /// \lambda\|\hat\beta\|^2)/W$ — the exact maximiser of $Q - R$ with the penalty
    /// $R = \lambda\|\beta\|^2/(2\sigma^2)$ of [`Expert::penalty`] — written as natural
    /// parameters into `out`.
    ///
    /// # Errors
    /// `NotPositiveDefinite { block: Block::Expert(None), pivot }` if the Cholesky factorisation
    /// fails; `NonFinite` if the weighted residual variance is not $> 0$.
    fn solve_from_gram(&self, stats: WeightedGram<'_>, out: &mut [f64]) -> Result<()> {
        let WeightedGram {
            gram,
            rhs,
            syy,
            wsum,
        } = stats;
        let d = rhs.len();
        let err = |pivot| MoeError::NotPositiveDefinite {
            block: Block::Expert(None),
            pivot,
        };
        if wsum.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(err(0));
        }
        let beta = if self.ridge > 0.0 {
            let g = Mat::from_fn(d, d, |a, b| {
                gram[(a.max(b), a.min(b))] + if a == b { self.ridge } else { 0.0 }
            });
            cholesky::solve(g.as_ref(), rhs, Block::Expert(None))?
        } else {
            cholesky::solve(gram, rhs, Block::Expert(None))?
        };
        // βᵀGβ with G read from its lower triangle.
        let mut quad = 0.0;
        for a in 0..d {
            let mut s = 0.0;
            for b in 0..d {
                s += gram[(a.max(b), a.min(b))] * beta[b];
            }
            quad += beta[a] * s;
        }
        let rss = syy - 2.0 * dot(&beta, rhs) + quad;
        // The penalty λ‖β‖²/(2σ²) shares σ² with the residuals: the exact maximiser of
        // Q − R in σ² counts it with them.
        let s2 = (rss + self.ridge * dot(&beta, &beta)) / wsum;
        if !(s2 > 0.0 && s2.is_finite()) {
            return Err(MoeError::NonFinite {
                what: "weighted residual variance of a linear expert (degenerate fit)",
            });
        }
        LinearGaussian::natural_from_beta(&beta, s2, out)
    }
}

/// [`LinearGaussian::prepare`]'s block: $\gamma$ and the constants of $\tau$.
struct PreparedLinear<'a> {
    gamma: &'a [f64],
    tau: f64,
    four_tau: f64,
    half_log: f64,
    v: f64,
}

impl PreparedExpert for PreparedLinear<'_> {
    #[inline]
    fn natural_and_log_partition(&self, x: &[f64], eta: &mut [f64]) -> Option<f64> {
        let e1 = dot(self.gamma, x);
        eta[0] = e1;
        eta[1] = self.tau;
        if !e1.is_finite() {
            return None;
        }
        let a = -e1 * e1 / self.four_tau - self.half_log;
        a.is_finite().then_some(a)
    }
    #[inline]
    fn mean(&self, eta: &[f64], mu: &mut [f64]) -> Option<()> {
        let m = eta[0] * self.v;
        if !(m.is_finite() && self.v.is_finite()) {
            return None;
        }
        mu[0] = m;
        mu[1] = m * m + self.v;
        Some(())
    }
    /// The row function's operations on every row ($\eta = (\gamma^\top x, \tau)$,
    /// $A_F = -\eta_1^2/(4\tau) - \tfrac12\log(-2\tau)$), the same bits.
    fn natural_and_log_partition_block(
        &self,
        data: &Dataset,
        rows: std::ops::Range<usize>,
        eta: &mut [f64],
        af: &mut [f64],
        ok: &mut [bool],
        _tmp: &mut [f64],
    ) {
        let m = rows.len();
        let (e1, e2) = eta[..2 * m].split_at_mut(m);
        e2.fill(self.tau);
        for (((i, e), a), o) in rows.zip(e1.iter_mut()).zip(&mut af[..m]).zip(&mut ok[..m]) {
            let v = dot(self.gamma, data.x(i));
            *e = v;
            *a = -v * v / self.four_tau - self.half_log;
            if !(v.is_finite() && a.is_finite()) {
                *o = false;
            }
        }
    }
    /// $\nabla A_F = (m, m^2 + v)$, $m = \eta_1 v$, $v = -1/(2\tau)$, on every row (the row
    /// function's operations, the same bits).
    fn mean_block(
        &self,
        eta: &[f64],
        m: usize,
        mu: &mut [f64],
        ok: &mut [bool],
        _tmp_eta: &mut [f64],
        _tmp_mu: &mut [f64],
    ) {
        let (m1, m2) = mu[..2 * m].split_at_mut(m);
        let v = self.v;
        for (((e, a), b), o) in eta[..m]
            .iter()
            .zip(m1.iter_mut())
            .zip(m2.iter_mut())
            .zip(&mut ok[..m])
        {
            let mm = e * v;
            *a = mm;
            *b = mm * mm + v;
            if !(mm.is_finite() && v.is_finite()) {
                *o = false;
            }
        }
    }
}
