//! Experts: GLM-style conditional laws $p(y \mid x, z = k)$ built on any
//! [`mirror::ExponentialFamily`] with canonical link.
//!
//! An expert with family $F$ (natural dimension $p$, statistic $T_F$, log-partition
//! $A_F$) and $r$ = [`Expert::n_regressed`] regressed components has parameters
//! $\vartheta = (b_0, \dots, b_{r-1}, c_r, \dots, c_{p-1})$, $b_j \in \mathbb R^d$
//! (contiguous), and natural parameter
//! $$ \eta(x) = (b_0^\top x, \dots, b_{r-1}^\top x,\ c_r, \dots, c_{p-1}), $$
//! linear in $\vartheta$ ([`Expert::natural`]), so the weighted complete-data
//! log-likelihood of one expert
//! $$ Q(\vartheta) = \sum_i w_i\big[\langle T_F(y_i), \eta(x_i)\rangle - A_F(\eta(x_i))\big] $$
//! is concave. Its gradient is $\sum_i w_i J^\top(T_F(y_i) - \nabla A_F(\eta_i))$ and its
//! negative Hessian $\sum_i w_i J^\top \nabla^2 A_F(\eta_i) J$ (with $J = \partial\eta/\partial\vartheta$),
//! which is what the default [`Expert::weighted_fit`] (Newton/IRLS with backtracking,
//! [`glm_newton`]) uses. [`Multinomial`] overrides it above
//! [`MULTINOMIAL_DENSE_MAX_PARAMS`] parameters with L-BFGS on the same objective
//! ([`Multinomial::fit_lbfgs`]), which never forms the $((C-1)d)^2$ Hessian.
//!
//! Built-ins: [`LinearGaussian`] (Gaussian with per-expert variance, closed-form weighted
//! least squares), [`Logistic`] (Bernoulli), [`Multinomial`] (Categorical, $C$ classes),
//! [`Poisson`], and [`Glm`] for any family a researcher writes.

use crate::data::Dataset;
use crate::error::{MoeError, Result};
use crate::parallel::{fold_rows, Mergeable};
use crate::solver::InnerStats;
use faer::linalg::matmul::matmul;
use faer::linalg::solvers::{Llt, LltError, Solve};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use mirror::special::sigmoid;
use mirror::ExponentialFamily;
use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Default tolerance of the inner Newton solves (norm of the weight-averaged gradient).
pub const INNER_TOL: f64 = 1e-10;
/// Default iteration cap of the inner Newton solves.
pub const INNER_MAX_ITER: u64 = 50;
/// Newton decrement $\nabla Q^\top H^{-1}\nabla Q$ (of the weight-averaged objective)
/// below which the inner Newton solvers take the full step without the Armijo test: the
/// predicted increase is then below the round-off of evaluating $Q$, so the test could
/// not tell an improvement from noise (the pure-Newton phase).
pub const NEWTON_PURE: f64 = 1e-14;
/// Largest parameter count $(C-1)d$ for which [`Multinomial`]'s M-step uses the dense
/// Newton method [`glm_newton`] (exact to [`INNER_TOL`]). Above it the dense Newton step
/// costs $O(n\,(C-1)^2d^2)$ to assemble a $((C-1)d)^2$ Hessian (on the bundled digits,
/// $C = 10$, $d = 65$: a $585\times585$ matrix, ~24 s per EM iteration) and that Hessian
/// is singular when a feature vanishes on every weighted row; the M-step then runs
/// L-BFGS ([`Multinomial::fit_lbfgs`]) on the same objective.
pub const MULTINOMIAL_DENSE_MAX_PARAMS: usize = 100;
/// Inner tolerance of the L-BFGS multinomial M-step: $\|\nabla F\|_\infty$ of the
/// weight-averaged objective ([`Multinomial::weighted_objective`]). On a well-posed
/// problem this puts $F$ within $\sim\|\nabla F\|^2/\lambda_{\min}$ of its minimum
/// (tested against dense Newton); looser than [`INNER_TOL`] because L-BFGS converges
/// linearly, not quadratically.
pub const MULTINOMIAL_LBFGS_TOL: f64 = 1e-8;
/// Iteration cap of the L-BFGS multinomial M-step (not reaching
/// [`MULTINOMIAL_LBFGS_TOL`] — e.g. on separable data, where no maximiser exists — is
/// reported as `converged = false` in [`InnerStats`]).
pub const MULTINOMIAL_LBFGS_MAX_ITER: u64 = 300;

/// A serialisable description of a built-in expert (for model I/O).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ExpertKind {
    /// [`LinearGaussian`] without ridge.
    Linear,
    /// [`LinearGaussian`] with a ridge penalty $\lambda$ on the Gram matrix.
    RidgeLinear {
        /// $\lambda \ge 0$.
        ridge: f64,
    },
    /// [`Logistic`].
    Logistic,
    /// [`Multinomial`] with `classes` classes.
    Multinomial {
        /// Number of classes $C \ge 2$.
        classes: usize,
    },
    /// [`Poisson`].
    Poisson,
}

impl ExpertKind {
    /// Builds the expert.
    ///
    /// # Errors
    /// `InvalidParam` for fewer than 2 classes or a negative / non-finite ridge.
    pub fn build(self) -> Result<Arc<dyn Expert>> {
        Ok(match self {
            ExpertKind::Linear => Arc::new(LinearGaussian::new()),
            ExpertKind::RidgeLinear { ridge } => Arc::new(LinearGaussian::with_ridge(ridge)?),
            ExpertKind::Logistic => Arc::new(Logistic::new()),
            ExpertKind::Multinomial { classes } => Arc::new(Multinomial::new(classes)?),
            ExpertKind::Poisson => Arc::new(Poisson::new()),
        })
    }
}

/// A conditional law $p(y \mid x, z = k)$ in an exponential family with canonical link;
/// see the [module documentation](self).
pub trait Expert: Send + Sync + std::fmt::Debug {
    /// Human-readable name, e.g. `"linear-Gaussian"`.
    fn name(&self) -> String;
    /// The family $F$ of $y$ given $x$ and $z = k$.
    fn family(&self) -> &dyn ExponentialFamily;
    /// Number $r$ of natural components that are linear in $x$ (the rest are constants).
    fn n_regressed(&self) -> usize;
    /// Parameters per expert with $d$ features: $r d + (p - r)$.
    fn n_params(&self, d: usize) -> usize {
        let p = self.family().dim();
        self.n_regressed() * d + (p - self.n_regressed())
    }
    /// $\eta(x) = (b_j^\top x)_{j<r}$ followed by the constants $c_j$ (`eta` has length $p$).
    fn natural(&self, params: &[f64], x: &[f64], eta: &mut [f64]) {
        let (d, r) = (x.len(), self.n_regressed());
        for (j, e) in eta.iter_mut().enumerate() {
            *e = if j < r {
                dot(&params[j * d..(j + 1) * d], x)
            } else {
                params[r * d + (j - r)]
            };
        }
    }
    /// Vector–Jacobian product of [`natural`](Self::natural): `grad += Jᵀ v`, i.e.
    /// $\nabla_{b_j} \mathrel{+}= v_j x$ and $\nabla_{c_j} \mathrel{+}= v_j$.
    fn natural_vjp(&self, _params: &[f64], x: &[f64], v: &[f64], grad: &mut [f64]) {
        let (d, r) = (x.len(), self.n_regressed());
        for (j, &vj) in v.iter().enumerate() {
            if j < r {
                for (g, xa) in grad[j * d..(j + 1) * d].iter_mut().zip(x) {
                    *g += vj * xa;
                }
            } else {
                grad[r * d + (j - r)] += vj;
            }
        }
    }
    /// $\nabla A_F(\eta)$ into `mu` ($p$) and $\nabla^2 A_F(\eta)$ into `fisher`
    /// ($p \times p$ row-major). Default: the family's `mean` and `fisher` (which
    /// allocates); built-ins override with allocation-free closed forms.
    fn moments(&self, eta: &[f64], mu: &mut [f64], fisher: &mut [f64]) -> Result<()> {
        let fam = self.family();
        fam.mean(eta, mu)?;
        let f = fam.fisher(eta)?;
        let p = fam.dim();
        for a in 0..p {
            for b in 0..p {
                fisher[a * p + b] = f[(a, b)];
            }
        }
        Ok(())
    }
    /// Maximises $Q(\vartheta) = \sum_i w_i[\langle T_F(y_i), \eta(x_i)\rangle - A_F(\eta(x_i))]$
    /// from `start`, writing the maximiser into `out`. Default: [`glm_newton`] with
    /// [`INNER_TOL`] and [`INNER_MAX_ITER`]; the inner iterations, final gradient norm and
    /// Hessians formed are returned.
    ///
    /// # Errors
    /// `NotPositiveDefinite { expert: usize::MAX, .. }` if the weighted Hessian is singular
    /// (the mixture remaps the index), `InvalidData` for a target outside the support.
    fn weighted_fit(
        &self,
        data: &Dataset,
        weights: &[f64],
        start: &[f64],
        out: &mut [f64],
    ) -> Result<InnerStats> {
        glm_newton(self, data, weights, start, out, INNER_TOL, INNER_MAX_ITER)
    }
    /// Length of [`predict_mean`](Self::predict_mean)'s output (default: `obs_dim`).
    fn predict_dim(&self) -> usize {
        self.family().obs_dim()
    }
    /// $\mathbb E[y \mid x, z = k]$. Default: the first `obs_dim` entries of
    /// $\nabla A_F(\eta(x))$ (exact when $T_F$ starts with $y$ itself).
    fn predict_mean(&self, params: &[f64], x: &[f64], out: &mut [f64]) -> Result<()> {
        let fam = self.family();
        let p = fam.dim();
        let mut eta = vec![0.0; p];
        let mut mu = vec![0.0; p];
        self.natural(params, x, &mut eta);
        fam.mean(&eta, &mut mu)?;
        let q = self.predict_dim();
        out[..q].copy_from_slice(&mu[..q]);
        Ok(())
    }
    /// Whether a target row lies in the family's support.
    fn check_target(&self, y: &[f64]) -> bool {
        self.family().in_support(y)
    }
    /// Random parameters: regressed coefficients $\sim N(0, \text{scale}^2)$, constants
    /// from [`default_constants`](Self::default_constants). This is in the natural domain
    /// for every $x$ when the regressed components range over all of $\mathbb R$ and the
    /// constants are valid (the built-ins; [`Poisson`] only while $b^\top x$ stays below
    /// mirror's cap $\log\lambda_{\max} \approx 44$). [`Glm`] overrides it so that its
    /// starts are always in the domain ([`Glm::start_point`]).
    fn init_params(&self, d: usize, rng: &mut dyn RngCore, scale: f64, out: &mut [f64]) {
        let r = self.n_regressed();
        for v in out[..r * d].iter_mut() {
            let z: f64 = StandardNormal.sample(rng);
            *v = scale * z;
        }
        self.default_constants(&mut out[r * d..]);
    }
    /// In-domain values of the constant components (default 0; the Gaussian uses
    /// $\tau = -1/2$, i.e. unit variance).
    fn default_constants(&self, out: &mut [f64]) {
        out.iter_mut().for_each(|v| *v = 0.0);
    }
    /// The serialisable description, `None` for custom experts.
    fn kind(&self) -> Option<ExpertKind> {
        None
    }
    /// `Some` for the linear-Gaussian expert, whose M-step the mixture runs from merged
    /// weighted Gram matrices accumulated during the E-step.
    fn linear_gaussian(&self) -> Option<&LinearGaussian> {
        None
    }
    /// `Some` for the multinomial expert, whose fitting settings (L-BFGS budget, dense
    /// limit) a saved model keeps ([`crate::io`]).
    fn multinomial(&self) -> Option<&Multinomial> {
        None
    }
}

#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(u, v)| u * v).sum()
}

/// Relative pivot threshold of the M-steps' Cholesky solves: a pivot $L_{jj}^2 \le$ this times
/// $\max_i G_{ii}$ is treated as a failure (numerically singular matrix).
pub const PIVOT_TOL: f64 = 1e-13;

/// Solves $G x = b$ for symmetric positive definite $G$ ($n\times n$, lower triangle
/// read) by faer's Cholesky $G = LL^\top$ ([`cholesky_factor`], [`llt_solve`]); on
/// failure returns the failing pivot.
pub(crate) fn cholesky_solve(
    g: MatRef<'_, f64>,
    b: &[f64],
) -> std::result::Result<Vec<f64>, usize> {
    llt_solve(&cholesky_factor(g)?, b)
}

/// faer's Cholesky factor $G = LL^\top$ of a symmetric positive definite $G$ (lower
/// triangle read); on failure — a non-positive pivot, or one below [`PIVOT_TOL`] relative
/// to the largest diagonal entry (round-off can leave a tiny positive pivot on an exactly
/// singular matrix) — returns the failing pivot.
pub(crate) fn cholesky_factor(g: MatRef<'_, f64>) -> std::result::Result<Llt<f64>, usize> {
    let llt = g.llt(faer::Side::Lower).map_err(|e| match e {
        LltError::NonPositivePivot { index } => index,
    })?;
    let n = g.nrows();
    let scale = (0..n).map(|i| g[(i, i)]).fold(0.0f64, f64::max);
    let l = llt.L();
    // (written so that a NaN pivot also fails)
    if let Some(j) = (0..n).find(|&j| {
        (l[(j, j)] * l[(j, j)]).partial_cmp(&(PIVOT_TOL * scale))
            != Some(std::cmp::Ordering::Greater)
    }) {
        return Err(j);
    }
    Ok(llt)
}

/// $x = (LL^\top)^{-1} b$ from a [`cholesky_factor`]; a non-finite solution fails with
/// pivot 0.
pub(crate) fn llt_solve(llt: &Llt<f64>, b: &[f64]) -> std::result::Result<Vec<f64>, usize> {
    let n = b.len();
    let rhs = Mat::from_fn(n, 1, |i, _| b[i]);
    let x = llt.solve(&rhs);
    let out: Vec<f64> = (0..n).map(|i| x[(i, 0)]).collect();
    if out.iter().all(|v| v.is_finite()) {
        Ok(out)
    } else {
        Err(0)
    }
}

/// Values in the scaled copy of one [`add_weighted_grams`] sub-block (128 KiB: it stays
/// in L2 cache while faer multiplies it, and fewer, larger products amortise faer's
/// per-call overhead — measured about 10% faster than 256-row blocks at $d = 10$).
const GRAM_BLOCK_VALUES: usize = 16 * 1024;

/// Rows of the stacked product in [`add_weighted_grams`]: up to this many ($\ge d$) rows of
/// weighted Grams are formed by one faer product (a tall $Sd\times d$ output uses the
/// matrix kernel far better than $S$ separate $d\times d$ ones, the point of stacking).
const STACK_ROWS: usize = 128;

/// Grams stacked per product for $d$ features.
fn stack_width(d: usize) -> usize {
    (STACK_ROWS / d.max(1)).max(1)
}

/// Rows per sub-block when `rows_out` stacked Gram rows are formed at once.
fn gram_block_rows(rows_out: usize) -> usize {
    (GRAM_BLOCK_VALUES / rows_out.max(1)).clamp(64, crate::parallel::CHUNK)
}

/// Length of the scratch buffer [`add_weighted_grams`] needs for $d$ features (any number
/// of Grams).
pub(crate) fn gram_buffer_len(d: usize) -> usize {
    (1..=stack_width(d))
        .map(|s| s * d * gram_block_rows(s * d))
        .max()
        .unwrap_or(0)
}

/// Weighted Gram update $G \mathrel{+}= X_c \operatorname{diag}(w) X_c^\top$ for the rows
/// `rows` of `data` ($X_c$ is $d\times m$, columns are rows $x_i$; `w` holds the $m$
/// weights of those rows): [`add_weighted_grams`] with one Gram.
pub(crate) fn add_weighted_gram(
    data: &Dataset,
    rows: std::ops::Range<usize>,
    w: &[f64],
    buf: &mut [f64],
    mut gram: MatMut<'_, f64>,
) {
    add_weighted_grams(data, rows, w, 1, buf, &mut |_, g| {
        gram += g;
    });
}

/// $B$ weighted Grams of the same rows, $G_b \mathrel{+}= X_c\operatorname{diag}(w_b)X_c^\top$,
/// $b < B$, with `w` the column-major $m\times B$ weights: per sub-block of rows, up to
/// `STACK_ROWS`$/d$ of them are formed by one faer product
/// $[\,X_c\operatorname{diag}(w_{b})\,;\,X_c\operatorname{diag}(w_{b+1})\,;\dots]\,X_c^\top$
/// of the $w$-scaled column copies (in the preallocated `buf`, $\ge$ [`gram_buffer_len`]
/// values) against the data, and `add(b, P_b)` receives each $d\times d$ product to add.
pub(crate) fn add_weighted_grams(
    data: &Dataset,
    rows: std::ops::Range<usize>,
    w: &[f64],
    nb: usize,
    buf: &mut [f64],
    add: &mut dyn FnMut(usize, MatRef<'_, f64>),
) {
    let d = data.d();
    let m_all = rows.len();
    let mut prod = Mat::<f64>::zeros(0, 0);
    let mut first = 0;
    while first < nb {
        let s = stack_width(d).min(nb - first);
        let sd = s * d;
        let block = gram_block_rows(sd);
        prod.resize_with(sd, d, |_, _| 0.0);
        let mut start = rows.start;
        let mut accum = Accum::Replace;
        while start < rows.end {
            let end = (start + block).min(rows.end);
            let m = end - start;
            let b = &mut buf[..sd * m];
            for (li, i) in (start..end).enumerate() {
                let x = data.x(i);
                let col = &mut b[li * sd..(li + 1) * sd];
                for (j, part) in col.chunks_exact_mut(d).enumerate() {
                    let wi = w[(first + j) * m_all + (i - rows.start)];
                    for (c, xa) in part.iter_mut().zip(x) {
                        *c = wi * xa;
                    }
                }
            }
            let bm = MatRef::from_column_major_slice(b, sd, m);
            let xc = data.xt().subcols(start, m);
            matmul(prod.as_mut(), accum, bm, xc.transpose(), 1.0, Par::Seq);
            accum = Accum::Add;
            start = end;
        }
        if rows.is_empty() {
            prod.fill(0.0);
        }
        for j in 0..s {
            add(first + j, prod.as_ref().subrows(j * d, d));
        }
        first += s;
    }
}

/// The checks shared by the weighted M-step solvers of one expert: `start` and `out` have
/// the expert's parameter count, the weights are valid, every target is in the family's
/// support, and the weights do not sum to zero (an all-zero weight vector has no M-step:
/// `NotPositiveDefinite { expert: usize::MAX, pivot: 0 }`, as a singular Hessian).
/// Returns the parameter count and $\sum_i w_i$.
fn check_weighted_fit<E: Expert + ?Sized>(
    expert: &E,
    data: &Dataset,
    weights: &[f64],
    start: &[f64],
    out: &[f64],
) -> Result<(usize, f64)> {
    let np = expert.n_params(data.d());
    check_len("start", np, start.len())?;
    check_len("out", np, out.len())?;
    check_weights(data.n(), weights)?;
    check_targets(expert, data)?;
    let wsum: f64 = weights.iter().sum();
    if wsum <= 0.0 {
        return Err(MoeError::NotPositiveDefinite {
            expert: usize::MAX,
            pivot: 0,
        });
    }
    Ok((np, wsum))
}

/// Validates per-row weights for one expert: right length, finite, non-negative.
pub(crate) fn check_weights(n: usize, w: &[f64]) -> Result<()> {
    if w.len() != n {
        return Err(MoeError::InvalidParam {
            name: "weights",
            reason: format!("expected {n} weights, found {}", w.len()),
        });
    }
    if let Some(i) = w.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
        return Err(MoeError::InvalidData {
            row: Some(i),
            column: Some("weight".into()),
            reason: "weight must be finite and >= 0".into(),
        });
    }
    Ok(())
}

fn check_targets<E: Expert + ?Sized>(expert: &E, data: &Dataset) -> Result<()> {
    let fam = expert.family();
    if data.q() != fam.obs_dim() {
        return Err(MoeError::InvalidData {
            row: None,
            column: None,
            reason: format!(
                "{} expects {} target columns, data has {}",
                expert.name(),
                fam.obs_dim(),
                data.q()
            ),
        });
    }
    for i in 0..data.n() {
        if !expert.check_target(data.y(i)) {
            return Err(MoeError::InvalidData {
                row: Some(i),
                column: Some("target".into()),
                reason: format!(
                    "value {:?} is outside the support of {}",
                    data.y(i),
                    fam.name()
                ),
            });
        }
    }
    Ok(())
}

/// Accumulator of one pass of [`glm_newton`]: $Q$, gradient, negative Hessian, scratch.
struct GlmAcc {
    q: f64,
    grad: Vec<f64>,
    hess: Vec<f64>,
    eta: Vec<f64>,
    mu: Vec<f64>,
    fisher: Vec<f64>,
    t: Vec<f64>,
}

impl Mergeable for GlmAcc {
    fn merge(&mut self, other: Self) {
        self.q += other.q;
        for (a, b) in self.grad.iter_mut().zip(&other.grad) {
            *a += b;
        }
        for (a, b) in self.hess.iter_mut().zip(&other.hess) {
            *a += b;
        }
    }
}

/// One pass over the rows: $Q(\vartheta)$ and, when `derivs`, its gradient and negative
/// Hessian (row-major $P\times P$). A natural parameter outside the domain gives
/// $Q = -\infty$ (used by the line search).
fn glm_pass<E: Expert + ?Sized>(
    expert: &E,
    data: &Dataset,
    w: &[f64],
    params: &[f64],
    derivs: bool,
) -> Result<GlmAcc> {
    let fam = expert.family();
    let (p, r, d) = (fam.dim(), expert.n_regressed(), data.d());
    let np = expert.n_params(d);
    let (gl, hl) = if derivs { (np, np * np) } else { (0, 0) };
    fold_rows(
        data.n(),
        || GlmAcc {
            q: 0.0,
            grad: vec![0.0; gl],
            hess: vec![0.0; hl],
            eta: vec![0.0; p],
            mu: vec![0.0; p],
            fisher: vec![0.0; p * p],
            t: vec![0.0; p],
        },
        |acc, rows| {
            for i in rows {
                let wi = w[i];
                if wi == 0.0 {
                    continue;
                }
                let x = data.x(i);
                expert.natural(params, x, &mut acc.eta);
                let a = match fam.log_partition(&acc.eta) {
                    Ok(a) if a.is_finite() => a,
                    _ => {
                        acc.q = f64::NEG_INFINITY;
                        if derivs {
                            return Err(MoeError::NonFinite {
                                what: "expert log-partition in the M-step",
                                iter: 0,
                            });
                        }
                        continue;
                    }
                };
                fam.sufficient_stats(data.y(i), &mut acc.t);
                acc.q += wi * (dot(&acc.t, &acc.eta) - a);
                if !derivs {
                    continue;
                }
                expert.moments(&acc.eta, &mut acc.mu, &mut acc.fisher)?;
                // Gradient Σ w Jᵀ(T − μ).
                for j in 0..p {
                    let v = wi * (acc.t[j] - acc.mu[j]);
                    if j < r {
                        for (g, xa) in acc.grad[j * d..(j + 1) * d].iter_mut().zip(x) {
                            *g += v * xa;
                        }
                    } else {
                        acc.grad[r * d + (j - r)] += v;
                    }
                }
                // Negative Hessian Σ w Jᵀ F J.
                for j in 0..p {
                    for l in 0..p {
                        let f = wi * acc.fisher[j * p + l];
                        if f == 0.0 {
                            continue;
                        }
                        match (j < r, l < r) {
                            (true, true) => {
                                for a in 0..d {
                                    let fa = f * x[a];
                                    let row = &mut acc.hess[(j * d + a) * np + l * d..];
                                    for b in 0..d {
                                        row[b] += fa * x[b];
                                    }
                                }
                            }
                            (true, false) => {
                                let c = r * d + (l - r);
                                for (a, xa) in x.iter().enumerate() {
                                    acc.hess[(j * d + a) * np + c] += f * xa;
                                }
                            }
                            (false, true) => {
                                let c = r * d + (j - r);
                                let row = &mut acc.hess[c * np + l * d..c * np + (l + 1) * d];
                                for (h, xb) in row.iter_mut().zip(x) {
                                    *h += f * xb;
                                }
                            }
                            (false, false) => {
                                acc.hess[(r * d + (j - r)) * np + r * d + (l - r)] += f;
                            }
                        }
                    }
                }
            }
            Ok(())
        },
    )
}

/// Newton's method with backtracking (Armijo) for the weighted expert fit
/// $\max_\vartheta Q(\vartheta)$ (see the [module documentation](self)); $Q$, its gradient
/// and Hessian are divided by $W = \sum_i w_i$ and the iteration stops when
/// $\|\nabla Q / W\|_2 \le$ `tol` or after `max_iter` Newton steps (then
/// `converged = false`).
///
/// # Errors
/// `InvalidParam`/`InvalidData` for bad weights or targets; `NotPositiveDefinite
/// { expert: usize::MAX, pivot }` when the weighted Hessian is singular (e.g. all
/// weights zero or collinear features).
pub fn glm_newton<E: Expert + ?Sized>(
    expert: &E,
    data: &Dataset,
    weights: &[f64],
    start: &[f64],
    out: &mut [f64],
    tol: f64,
    max_iter: u64,
) -> Result<InnerStats> {
    let (np, wsum) = check_weighted_fit(expert, data, weights, start, out)?;
    let mut theta = start.to_vec();
    let mut trial = vec![0.0; np];
    let mut stats = InnerStats::default();
    loop {
        let acc = glm_pass(expert, data, weights, &theta, true)?;
        stats.hessians += 1;
        let q = acc.q / wsum;
        let g: Vec<f64> = acc.grad.iter().map(|v| v / wsum).collect();
        let gnorm = dot(&g, &g).sqrt();
        stats.residual = gnorm;
        if !gnorm.is_finite() || !q.is_finite() {
            return Err(MoeError::NonFinite {
                what: "expert M-step gradient",
                iter: 0,
            });
        }
        if gnorm <= tol {
            stats.converged = true;
            break;
        }
        if stats.iterations >= max_iter {
            break;
        }
        let h = MatRef::from_row_major_slice(&acc.hess, np, np);
        let hs = Mat::from_fn(np, np, |a, b| h[(a, b)] / wsum);
        let dir =
            cholesky_solve(hs.as_ref(), &g).map_err(|pivot| MoeError::NotPositiveDefinite {
                expert: usize::MAX,
                pivot,
            })?;
        let slope = dot(&g, &dir);
        let mut t = 1.0;
        let mut accepted = false;
        while t > 1e-12 {
            for j in 0..np {
                trial[j] = theta[j] + t * dir[j];
            }
            let qt = glm_pass(expert, data, weights, &trial, false)?.q / wsum;
            // Armijo; or, once the Newton decrement is below what Q's round-off can
            // resolve (the pure-Newton phase), the full step.
            if qt.is_finite() && (qt >= q + 1e-4 * t * slope || (t == 1.0 && slope <= NEWTON_PURE))
            {
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        stats.iterations += 1;
        if !accepted {
            // No ascent possible in floating point: stop and report the residual.
            break;
        }
        theta.copy_from_slice(&trial);
    }
    out.copy_from_slice(&theta);
    Ok(stats)
}

fn check_len(name: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(MoeError::InvalidParam {
            name,
            reason: format!("expected length {expected}, found {found}"),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Linear-Gaussian
// ---------------------------------------------------------------------------------------

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
/// part of [`Expert::name`] and [`ExpertKind`], so it is always reported). With
/// $\lambda = 0$ this is the exact maximiser of $Q$.
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
                iter: 0,
                reason: format!("Gaussian expert precision parameter tau = {tau} must be < 0"),
            });
        }
        let s2 = -0.5 / tau;
        Ok((params[..d].iter().map(|g| g * s2).collect(), s2))
    }

    /// The closed-form M-step from merged weighted statistics $G = \sum_i w_i x_ix_i^\top$
    /// (`gram`, $d\times d$, lower triangle read), $b = \sum_i w_i y_i x_i$,
    /// $s = \sum_i w_i y_i^2$ and $W = \sum_i w_i$: $\hat\beta = (G + \lambda I)^{-1} b$,
    /// $\hat\sigma^2 = (s - 2\hat\beta^\top b + \hat\beta^\top G\hat\beta)/W$, written as
    /// natural parameters into `out`.
    ///
    /// # Errors
    /// `NotPositiveDefinite { expert: usize::MAX, pivot }` if the Cholesky factorisation
    /// fails; `NonFinite` if the weighted residual variance is not $> 0$.
    pub fn solve_from_gram(
        &self,
        gram: MatRef<'_, f64>,
        rhs: &[f64],
        syy: f64,
        wsum: f64,
        out: &mut [f64],
    ) -> Result<()> {
        let d = rhs.len();
        let err = |pivot| MoeError::NotPositiveDefinite {
            expert: usize::MAX,
            pivot,
        };
        if wsum.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(err(0));
        }
        let beta = if self.ridge > 0.0 {
            let g = Mat::from_fn(d, d, |a, b| {
                gram[(a.max(b), a.min(b))] + if a == b { self.ridge } else { 0.0 }
            });
            cholesky_solve(g.as_ref(), rhs).map_err(err)?
        } else {
            cholesky_solve(gram, rhs).map_err(err)?
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
        let s2 = rss / wsum;
        if !(s2 > 0.0 && s2.is_finite()) {
            return Err(MoeError::NonFinite {
                what: "weighted residual variance of a linear expert (degenerate fit)",
                iter: 0,
            });
        }
        LinearGaussian::natural_from_beta(&beta, s2, out)
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
    fn weighted_fit(
        &self,
        data: &Dataset,
        weights: &[f64],
        start: &[f64],
        out: &mut [f64],
    ) -> Result<InnerStats> {
        let d = data.d();
        check_len("start", d + 1, start.len())?;
        check_len("out", d + 1, out.len())?;
        check_weights(data.n(), weights)?;
        check_targets(self, data)?;
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
        self.solve_from_gram(acc.gram.as_ref(), &acc.rhs, acc.syy, acc.wsum, out)?;
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
    fn kind(&self) -> Option<ExpertKind> {
        Some(if self.ridge > 0.0 {
            ExpertKind::RidgeLinear { ridge: self.ridge }
        } else {
            ExpertKind::Linear
        })
    }
    fn linear_gaussian(&self) -> Option<&LinearGaussian> {
        Some(self)
    }
}

// ---------------------------------------------------------------------------------------
// Logistic, Multinomial, Poisson
// ---------------------------------------------------------------------------------------

/// Logistic regression: $P(y = 1 \mid x, z = k) = \sigma(b^\top x)$ in the Bernoulli
/// family ($\eta = b^\top x$, $\nabla A = \sigma(\eta)$, $\nabla^2 A = \sigma(1-\sigma)$).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Logistic {
    family: mirror::Bernoulli,
}

impl Logistic {
    /// The expert.
    pub fn new() -> Self {
        Logistic {
            family: mirror::Bernoulli::new(),
        }
    }
}

impl Expert for Logistic {
    fn name(&self) -> String {
        "logistic".into()
    }
    fn family(&self) -> &dyn ExponentialFamily {
        &self.family
    }
    fn n_regressed(&self) -> usize {
        1
    }
    /// $\mu = \sigma(\eta)$, $F = \mu(1-\mu)$.
    fn moments(&self, eta: &[f64], mu: &mut [f64], fisher: &mut [f64]) -> Result<()> {
        let s = sigmoid(eta[0]);
        mu[0] = s;
        fisher[0] = s * (1.0 - s);
        Ok(())
    }
    fn kind(&self) -> Option<ExpertKind> {
        Some(ExpertKind::Logistic)
    }
}

/// Poisson regression with log link: $y \mid x, z = k \sim \text{Poisson}(e^{b^\top x})$
/// ($\nabla A = \nabla^2 A = e^\eta$).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Poisson {
    family: mirror::Poisson,
}

impl Poisson {
    /// The expert.
    pub fn new() -> Self {
        Poisson {
            family: mirror::Poisson::new(),
        }
    }
}

impl Expert for Poisson {
    fn name(&self) -> String {
        "Poisson".into()
    }
    fn family(&self) -> &dyn ExponentialFamily {
        &self.family
    }
    fn n_regressed(&self) -> usize {
        1
    }
    /// $\mu = F = e^\eta$.
    fn moments(&self, eta: &[f64], mu: &mut [f64], fisher: &mut [f64]) -> Result<()> {
        let e = eta[0].exp();
        if !e.is_finite() {
            return Err(MoeError::NonFinite {
                what: "Poisson rate",
                iter: 0,
            });
        }
        mu[0] = e;
        fisher[0] = e;
        Ok(())
    }
    fn kind(&self) -> Option<ExpertKind> {
        Some(ExpertKind::Poisson)
    }
}

/// Multinomial logistic regression over $C$ classes (reference class $C-1$):
/// $P(y = c \mid x, z = k) = \operatorname{softmax}(b_0^\top x, \dots, b_{C-2}^\top x, 0)_c$
/// in the [`mirror::Categorical`] family; all $C - 1$ components are regressed.
/// [`Expert::predict_mean`] returns the $C$ class probabilities.
///
/// The budget of its L-BFGS M-step (used above [`MULTINOMIAL_DENSE_MAX_PARAMS`]) is
/// [`MULTINOMIAL_LBFGS_TOL`] / [`MULTINOMIAL_LBFGS_MAX_ITER`] unless set with
/// [`Multinomial::with_lbfgs_budget`]; like [`crate::GateConfig`] it is a fitting setting,
/// not part of the model's [`ExpertKind`]. [`crate::io`] saves it, with
/// [`Multinomial::dense_max_params`], in the model file's `fitting` section, so a reloaded
/// model keeps it (a file written before that section existed loads with the defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Multinomial {
    family: mirror::Categorical,
    lbfgs_tol: f64,
    lbfgs_max_iter: u64,
    dense_max_params: usize,
}

impl Multinomial {
    /// The expert with `classes` classes.
    ///
    /// # Errors
    /// `InvalidParam { name: "classes" }` if `classes < 2`.
    pub fn new(classes: usize) -> Result<Self> {
        let family = mirror::Categorical::new(classes).map_err(|_| MoeError::InvalidParam {
            name: "classes",
            reason: format!("at least 2 classes, got {classes}"),
        })?;
        Ok(Multinomial {
            family,
            lbfgs_tol: MULTINOMIAL_LBFGS_TOL,
            lbfgs_max_iter: MULTINOMIAL_LBFGS_MAX_ITER,
            dense_max_params: MULTINOMIAL_DENSE_MAX_PARAMS,
        })
    }
    /// The expert whose L-BFGS M-step ([`Expert::weighted_fit`] above
    /// [`MULTINOMIAL_DENSE_MAX_PARAMS`] parameters) stops at $\|\nabla F\|_\infty \le$ `tol`
    /// or after `max_iter` iterations instead of [`MULTINOMIAL_LBFGS_TOL`] /
    /// [`MULTINOMIAL_LBFGS_MAX_ITER`] — e.g. a deliberately loose budget for an inexact
    /// (generalised-EM) M-step, whose inexactness is then reported in [`InnerStats`]. The
    /// dense Newton path (at most [`MULTINOMIAL_DENSE_MAX_PARAMS`] parameters) is unchanged.
    ///
    /// # Errors
    /// `InvalidParam { name: "lbfgs budget" }` unless `tol` is finite and $> 0$ and
    /// $1 \le$ `max_iter` $\le$ `usize::MAX`.
    pub fn with_lbfgs_budget(mut self, tol: f64, max_iter: u64) -> Result<Self> {
        if !(tol > 0.0 && tol.is_finite() && max_iter >= 1 && usize::try_from(max_iter).is_ok()) {
            return Err(MoeError::InvalidParam {
                name: "lbfgs budget",
                reason: format!(
                    "need tol > 0 (finite) and max_iter >= 1, got {tol} and {max_iter}"
                ),
            });
        }
        self.lbfgs_tol = tol;
        self.lbfgs_max_iter = max_iter;
        Ok(self)
    }
    /// The L-BFGS M-step budget `(tol, max_iter)` (see [`Self::with_lbfgs_budget`]).
    pub fn lbfgs_budget(&self) -> (f64, u64) {
        (self.lbfgs_tol, self.lbfgs_max_iter)
    }
    /// The expert whose M-step uses dense Newton only up to `max` parameters $(C-1)d$
    /// (default [`MULTINOMIAL_DENSE_MAX_PARAMS`]) and L-BFGS above; `0` means L-BFGS at
    /// every size (e.g. to run one inexact protocol on small and large designs alike).
    pub fn with_dense_max_params(mut self, max: usize) -> Self {
        self.dense_max_params = max;
        self
    }
    /// The largest parameter count solved by dense Newton (see
    /// [`Self::with_dense_max_params`]).
    pub fn dense_max_params(&self) -> usize {
        self.dense_max_params
    }
    /// Number of classes $C$.
    pub fn classes(&self) -> usize {
        self.family.classes()
    }

    /// The weight-averaged negative M-step objective of one multinomial expert,
    /// $$ F(B) = -\frac{Q(B)}{W} = \frac1W\sum_{i=1}^n w_i\Big[\log\Big(1 + \sum_{j<C-1}
    ///    e^{\eta_{ij}}\Big) - \eta_{i y_i}\Big],\qquad \eta_{ij} = b_j^\top x_i,\
    ///    \eta_{i,C-1} = 0,\ W = \sum_i w_i, $$
    /// returned, and its gradient
    /// $$ \nabla_{b_j} F = \frac1W\sum_i w_i\,(p_{ij} - [y_i = j])\,x_i,\qquad
    ///    p_i = \operatorname{softmax}(\eta_{i0}, \dots, \eta_{i,C-2}, 0), $$
    /// written into `grad` (layout of the parameters: $b_j$ contiguous). Rows are processed
    /// in [`fold_rows`] chunks; per chunk the logits $B^\top X_c$ and the gradient
    /// $X_c R_c^\top$ are two faer products, so one evaluation costs $O(n\,C\,d)$ and no
    /// Hessian is formed. Targets are assumed validated (classes in $0..C$).
    ///
    /// # Errors
    /// `InvalidParam` for wrong lengths or $W = 0$; `NonFinite` when $F$ or the gradient is
    /// not finite (e.g. non-finite parameters).
    pub fn weighted_objective(
        &self,
        data: &Dataset,
        weights: &[f64],
        params: &[f64],
        grad: &mut [f64],
    ) -> Result<f64> {
        let d = data.d();
        let cm = self.classes() - 1;
        let np = cm * d;
        check_len("params", np, params.len())?;
        check_len("grad", np, grad.len())?;
        check_len("weights", data.n(), weights.len())?;
        let wsum: f64 = weights.iter().sum();
        if !(wsum > 0.0 && wsum.is_finite()) {
            return Err(MoeError::InvalidParam {
                name: "weights",
                reason: "the weights must have a positive finite sum".into(),
            });
        }
        let bm = MatRef::from_column_major_slice(params, d, cm);
        let acc = fold_rows(
            data.n(),
            || SoftmaxAcc {
                f: 0.0,
                grad: vec![0.0; np],
                logits: Mat::zeros(cm, crate::parallel::CHUNK),
                resid: Mat::zeros(cm, crate::parallel::CHUNK),
            },
            |acc, rows| {
                let m = rows.len();
                let xc = data.xt().subcols(rows.start, m);
                matmul(
                    acc.logits.as_mut().subcols_mut(0, m),
                    Accum::Replace,
                    bm.transpose(),
                    xc,
                    1.0,
                    Par::Seq,
                );
                for (li, i) in rows.enumerate() {
                    let wi = weights[i];
                    let y = data.y(i)[0] as usize;
                    let col = acc.logits.col(li);
                    let mx = col.iter().copied().fold(0.0f64, f64::max);
                    let s = (-mx).exp() + col.iter().map(|e| (e - mx).exp()).sum::<f64>();
                    let lse = mx + s.ln();
                    let eta_y = if y < cm { col[y] } else { 0.0 };
                    if wi != 0.0 {
                        acc.f += wi * (lse - eta_y);
                    }
                    for j in 0..cm {
                        let p = (acc.logits[(j, li)] - lse).exp();
                        acc.resid[(j, li)] = wi * (p - if j == y { 1.0 } else { 0.0 });
                    }
                }
                let g = MatMut::from_column_major_slice_mut(&mut acc.grad, d, cm);
                matmul(
                    g,
                    Accum::Add,
                    xc,
                    acc.resid.as_ref().subcols(0, m).transpose(),
                    1.0,
                    Par::Seq,
                );
                Ok(())
            },
        )?;
        for (g, a) in grad.iter_mut().zip(&acc.grad) {
            *g = a / wsum;
        }
        let f = acc.f / wsum;
        if f.is_finite() && grad.iter().all(|g| g.is_finite()) {
            Ok(f)
        } else {
            Err(MoeError::NonFinite {
                what: "multinomial expert M-step objective",
                iter: 0,
            })
        }
    }

    /// Minimises [`weighted_objective`](Self::weighted_objective) (i.e. maximises the
    /// expert's weighted complete-data log-likelihood $Q$) by L-BFGS
    /// ([`crate::lbfgs::Lbfgs`], 10 pairs, strong Wolfe) warm-started at `start`, until
    /// $\|\nabla F\|_\infty \le$ `tol` or `max_iter` iterations; the result goes into `out`.
    /// Each iteration costs a few $O(n\,C\,d)$ passes and $O((C-1)d)$ memory, against
    /// $O(n\,(C-1)^2 d^2)$ per step and a $((C-1)d)^2$ Hessian for [`glm_newton`]; and a
    /// singular Hessian (a feature that is zero on every weighted row) does not stop it
    /// (those coefficients keep their starting values). The returned [`InnerStats`] holds
    /// the iterations, the final $\|\nabla F\|_\infty$ as `residual`, whether `tol` was met
    /// (`converged`; `false` means an inexact M-step, e.g. on separable data where the
    /// maximiser does not exist) and `hessians = 0`.
    ///
    /// # Errors
    /// As [`glm_newton`] for bad lengths, weights and targets (`NotPositiveDefinite
    /// { expert: usize::MAX, pivot: 0 }` when all weights are zero, as the dense path);
    /// `InvalidParam` for `tol <= 0` or `max_iter == 0`; `NonFinite` for non-finite
    /// starting parameters; `LeftDomain` if the iterates run off to infinity.
    pub fn fit_lbfgs(
        &self,
        data: &Dataset,
        weights: &[f64],
        start: &[f64],
        out: &mut [f64],
        tol: f64,
        max_iter: u64,
    ) -> Result<InnerStats> {
        check_weighted_fit(self, data, weights, start, out)?;
        let solver = crate::lbfgs::Lbfgs {
            grad_tol: tol,
            max_iter: max_iter.try_into().unwrap_or(usize::MAX),
            ..crate::lbfgs::Lbfgs::default()
        };
        out.copy_from_slice(start);
        let rep = solver.minimize(|b, g| self.weighted_objective(data, weights, b, g), out)?;
        Ok(InnerStats::from(&rep))
    }
}

/// Per-chunk accumulator of [`Multinomial::weighted_objective`]: $\sum w_i(\dots)$, the
/// gradient, and the chunk's logits / residual scratch (not merged).
struct SoftmaxAcc {
    f: f64,
    grad: Vec<f64>,
    logits: Mat<f64>,
    resid: Mat<f64>,
}

impl Mergeable for SoftmaxAcc {
    fn merge(&mut self, other: Self) {
        self.f += other.f;
        for (a, b) in self.grad.iter_mut().zip(&other.grad) {
            *a += b;
        }
    }
}

impl Expert for Multinomial {
    fn name(&self) -> String {
        format!("multinomial(C={})", self.classes())
    }
    fn multinomial(&self) -> Option<&Multinomial> {
        Some(self)
    }
    fn family(&self) -> &dyn ExponentialFamily {
        &self.family
    }
    fn n_regressed(&self) -> usize {
        self.classes() - 1
    }
    /// $\mu_j = p_j = e^{\eta_j}/(1 + \sum_l e^{\eta_l})$, $F = \operatorname{diag}(p) - pp^\top$.
    fn moments(&self, eta: &[f64], mu: &mut [f64], fisher: &mut [f64]) -> Result<()> {
        let m = eta.iter().copied().fold(0.0f64, f64::max);
        let s = (-m).exp() + eta.iter().map(|e| (e - m).exp()).sum::<f64>();
        for (u, e) in mu.iter_mut().zip(eta) {
            *u = (e - m).exp() / s;
        }
        let p = eta.len();
        for a in 0..p {
            for b in 0..p {
                fisher[a * p + b] = if a == b {
                    mu[a] * (1.0 - mu[a])
                } else {
                    -mu[a] * mu[b]
                };
            }
        }
        Ok(())
    }
    /// Dense Newton ([`glm_newton`], [`INNER_TOL`], [`INNER_MAX_ITER`]: an exact M-step)
    /// when $(C-1)d \le$ [`MULTINOMIAL_DENSE_MAX_PARAMS`] (or the bound of
    /// [`Multinomial::with_dense_max_params`]); above it L-BFGS
    /// ([`Multinomial::fit_lbfgs`] with the budget of [`Multinomial::with_lbfgs_budget`],
    /// by default [`MULTINOMIAL_LBFGS_TOL`] and [`MULTINOMIAL_LBFGS_MAX_ITER`]), whose inexactness is reported in the returned
    /// [`InnerStats`] (`residual` = $\|\nabla F\|_\infty$, `converged`, `hessians = 0`).
    fn weighted_fit(
        &self,
        data: &Dataset,
        weights: &[f64],
        start: &[f64],
        out: &mut [f64],
    ) -> Result<InnerStats> {
        if self.n_params(data.d()) > self.dense_max_params {
            self.fit_lbfgs(
                data,
                weights,
                start,
                out,
                self.lbfgs_tol,
                self.lbfgs_max_iter,
            )
        } else {
            glm_newton(self, data, weights, start, out, INNER_TOL, INNER_MAX_ITER)
        }
    }
    fn predict_dim(&self) -> usize {
        self.classes()
    }
    /// All $C$ class probabilities.
    fn predict_mean(&self, params: &[f64], x: &[f64], out: &mut [f64]) -> Result<()> {
        let c = self.classes();
        let mut eta = vec![0.0; c - 1];
        self.natural(params, x, &mut eta);
        let probs = self.family.probabilities(&eta)?;
        out[..c].copy_from_slice(&probs);
        Ok(())
    }
    fn kind(&self) -> Option<ExpertKind> {
        Some(ExpertKind::Multinomial {
            classes: self.classes(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Glm: any family
// ---------------------------------------------------------------------------------------

/// A GLM expert on any [`ExponentialFamily`] (a researcher's own, e.g. a Gamma family):
/// the first `n_regressed` natural components are linear in $x$, the others are
/// constants. Fitted by [`glm_newton`]. Not serialisable ([`Expert::kind`] is `None`).
#[derive(Clone)]
pub struct Glm {
    family: Arc<dyn ExponentialFamily>,
    n_regressed: usize,
    constants: Vec<f64>,
}

impl std::fmt::Debug for Glm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Glm")
            .field("family", &self.family.name())
            .field("n_regressed", &self.n_regressed)
            .field("constants", &self.constants)
            .finish()
    }
}

impl Glm {
    /// Every natural component regressed on $x$ (canonical link in each component).
    pub fn new(family: Arc<dyn ExponentialFamily>) -> Self {
        let p = family.dim();
        Glm {
            family,
            n_regressed: p,
            constants: Vec::new(),
        }
    }
    /// The first `n_regressed` components regressed, the others constant, starting at
    /// `constants` (which must make a valid natural parameter together with any
    /// regressed values, e.g. a Gamma shape).
    ///
    /// # Errors
    /// `InvalidParam` if `n_regressed > dim` or `constants.len() != dim - n_regressed`.
    pub fn with_constants(
        family: Arc<dyn ExponentialFamily>,
        n_regressed: usize,
        constants: Vec<f64>,
    ) -> Result<Self> {
        let p = family.dim();
        if n_regressed > p || constants.len() != p - n_regressed {
            return Err(MoeError::InvalidParam {
                name: "n_regressed",
                reason: format!(
                    "n_regressed <= {p} and {} constants, got {n_regressed} and {}",
                    p.saturating_sub(n_regressed),
                    constants.len()
                ),
            });
        }
        Ok(Glm {
            family,
            n_regressed,
            constants,
        })
    }
}

impl Expert for Glm {
    fn name(&self) -> String {
        format!("GLM({})", self.family.name())
    }
    fn family(&self) -> &dyn ExponentialFamily {
        self.family.as_ref()
    }
    fn n_regressed(&self) -> usize {
        self.n_regressed
    }
    fn default_constants(&self, out: &mut [f64]) {
        out.copy_from_slice(&self.constants);
    }
    /// A random start whose natural parameter lies in the family's domain for every $x$
    /// with $x_0 = 1$ (feature 0 the intercept, as [`Dataset::with_intercept`] arranges),
    /// whenever the domain is a product of free components and the others (true of every
    /// `mirror` family and of cones such as $\theta < 0$).
    ///
    /// Every regressed coefficient is first drawn $b_{ja} = s\,z_{ja}$, $z_{ja} \sim N(0,1)$
    /// (the built-ins' draws, in the same order). With the base point
    /// $\theta_b$ = [`Glm::start_point`] and the free components (those along which
    /// $\theta_b \pm 10^6(1+|\theta_{b,j}|)\,e_j$ stays in the domain):
    /// * a free component keeps its draws (slopes and intercept);
    /// * a constrained one (e.g. a precision entry, a Gamma rate) gets zero slopes and the
    ///   intercept $\theta_{b,j} + t\,s\,z_{j0}$;
    /// * the constants are $\theta_b$'s.
    ///
    /// The intercept column is $v(t) = \theta_b + t\,\delta$ ($\delta_j = s z_{j0} -
    /// \theta_{b,j}$ for free $j$, $s z_{j0}$ otherwise, so $v(1)$ is the drawn one) with the
    /// largest $t \in \{1, \tfrac12, \dots, 2^{-60}\}$ for which $\theta_b + 2t\delta$ passes
    /// [`ExponentialFamily::in_natural_domain`] (so $v(t)$, halfway to it, stays clear of
    /// the boundary by convexity), and $t = 0$ (the base point) if none does. For a family
    /// whose domain is all of $\mathbb R^p$ the result equals the built-ins' draws bit for
    /// bit. If [`Glm::start_point`] fails, the draws and constants are left as the trait
    /// default writes them, and the first E-step reports the domain error.
    fn init_params(&self, d: usize, rng: &mut dyn RngCore, scale: f64, out: &mut [f64]) {
        let r = self.n_regressed;
        for v in out[..r * d].iter_mut() {
            let z: f64 = StandardNormal.sample(rng);
            *v = scale * z;
        }
        let base = match self.start_point() {
            Ok(b) => b,
            Err(_) => {
                self.default_constants(&mut out[r * d..]);
                return;
            }
        };
        out[r * d..].copy_from_slice(&base[r..]);
        if d == 0 {
            return;
        }
        let free = self.free_components(&base);
        let mut delta = vec![0.0; base.len()];
        for j in 0..r {
            let drawn = out[j * d];
            if free[j] {
                delta[j] = drawn - base[j];
            } else {
                delta[j] = drawn;
                out[j * d + 1..(j + 1) * d]
                    .iter_mut()
                    .for_each(|v| *v = 0.0);
            }
        }
        let t = start_shrink(self.family.as_ref(), &base, &delta);
        for j in 0..r {
            out[j * d] = base[j] + t * delta[j];
        }
    }
}

/// Halvings tried by [`Glm`]'s `init_params` before it falls back to the base point.
const START_HALVINGS: usize = 60;

/// The largest $t \in \{1, \tfrac12, \dots, 2^{-60}\}$ with $\theta_b + 2t\delta$ in the
/// natural domain of `fam`, else 0 (see [`Glm`]'s `init_params`).
fn start_shrink(fam: &dyn ExponentialFamily, base: &[f64], delta: &[f64]) -> f64 {
    let mut trial = base.to_vec();
    let mut t = 1.0;
    for _ in 0..=START_HALVINGS {
        for ((v, b), dl) in trial.iter_mut().zip(base).zip(delta) {
            *v = b + 2.0 * t * dl;
        }
        if fam.in_natural_domain(&trial) {
            return t;
        }
        t *= 0.5;
    }
    0.0
}

impl Glm {
    /// The in-domain base natural parameter $\theta_b$ of [`Glm`]'s random starts: the
    /// family's [`ExponentialFamily::newton_start`] (documented to lie in the domain; e.g.
    /// the standard normal for mirror's Gaussians) with the constants of
    /// [`Glm::with_constants`] in the non-regressed components; if that is outside the
    /// domain, `newton_start` alone.
    ///
    /// # Errors
    /// `Mirror(OutsideDomain)` if neither passes the family's
    /// [`ExponentialFamily::in_natural_domain`] (a family whose default `newton_start`, 0,
    /// is not in its domain should override it).
    pub fn start_point(&self) -> Result<Vec<f64>> {
        let fam = self.family.as_ref();
        let r = self.n_regressed;
        let mut own = vec![0.0; fam.dim()];
        fam.newton_start(&mut own);
        let mut with_constants = own.clone();
        with_constants[r..].copy_from_slice(&self.constants);
        if fam.in_natural_domain(&with_constants) {
            Ok(with_constants)
        } else if fam.in_natural_domain(&own) {
            Ok(own)
        } else {
            Err(MoeError::Mirror(mirror::MirrorError::OutsideDomain {
                what: "starting natural parameter",
                reason: format!(
                    "neither newton_start {own:?} nor it with the constants {:?} is in the \
                     natural domain of {}; override ExponentialFamily::newton_start",
                    self.constants,
                    fam.name()
                ),
            }))
        }
    }

    /// Which regressed components are free: $\theta_b \pm 10^6(1 + |\theta_{b,j}|)\,e_j$
    /// both in the natural domain (e.g. a Gaussian's $\theta_1$, not its $\theta_2 < 0$,
    /// nor a Poisson log-rate, which mirror caps at $\log\lambda_{\max}$).
    fn free_components(&self, base: &[f64]) -> Vec<bool> {
        let mut probe = base.to_vec();
        (0..self.n_regressed)
            .map(|j| {
                let step = 1e6 * (1.0 + base[j].abs());
                [-step, step].iter().all(|dv| {
                    probe[j] = base[j] + dv;
                    let ok = self.family.in_natural_domain(&probe);
                    probe[j] = base[j];
                    ok
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn data(n: usize, d: usize, seed: u64, y: impl Fn(&[f64], &mut ChaCha8Rng) -> f64) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for _ in 0..n {
            let mut x = vec![1.0];
            for _ in 1..d {
                x.push(StandardNormal.sample(&mut rng));
            }
            ys.push(y(&x, &mut rng));
            xs.extend(x);
        }
        Dataset::from_rows(&xs, d, &ys, 1).unwrap()
    }

    #[test]
    fn stacked_weighted_grams_match_plain_sums() {
        use rand::Rng;
        // d = 7 stacks 18 Grams per product; d = 200 one (its sub-blocks are 64 rows);
        // row ranges span several sub-blocks and start mid-data.
        for (n, d, nb, rows) in [
            (3000, 7, 23, 100..2900),
            (300, 200, 3, 5..290),
            (50, 3, 2, 7..7),
        ] {
            let ds = data(n, d, 11, |_, _| 0.0);
            let m = rows.len();
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let w: Vec<f64> = (0..m * nb).map(|_| rng.random::<f64>() - 0.3).collect();
            let mut buf = vec![f64::NAN; gram_buffer_len(d)];
            let mut got = vec![Mat::<f64>::zeros(d, d); nb];
            add_weighted_grams(&ds, rows.clone(), &w, nb, &mut buf, &mut |b, p| {
                got[b] += p;
            });
            for (b, g) in got.iter().enumerate() {
                for a1 in 0..d {
                    for a2 in 0..d {
                        let plain: f64 = rows
                            .clone()
                            .enumerate()
                            .map(|(li, i)| w[b * m + li] * ds.x(i)[a1] * ds.x(i)[a2])
                            .sum();
                        assert!(
                            (g[(a1, a2)] - plain).abs() <= 1e-11 * (1.0 + plain.abs()),
                            "d={d} b={b} ({a1},{a2}): {} vs {plain}",
                            g[(a1, a2)]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn experts_are_send_sync() {
        fn ok<T: Send + Sync>() {}
        ok::<LinearGaussian>();
        ok::<Logistic>();
        ok::<Multinomial>();
        ok::<Poisson>();
        ok::<Glm>();
    }

    #[test]
    fn moments_match_family() {
        let experts: Vec<(Box<dyn Expert>, Vec<f64>)> = vec![
            (Box::new(LinearGaussian::new()), vec![0.7, -0.3]),
            (Box::new(Logistic::new()), vec![1.3]),
            (Box::new(Poisson::new()), vec![0.4]),
            (Box::new(Multinomial::new(4).unwrap()), vec![0.2, -1.0, 0.5]),
        ];
        for (e, eta) in experts {
            let p = eta.len();
            let (mut mu, mut f) = (vec![0.0; p], vec![0.0; p * p]);
            e.moments(&eta, &mut mu, &mut f).unwrap();
            let mut mu2 = vec![0.0; p];
            e.family().mean(&eta, &mut mu2).unwrap();
            let f2 = e.family().fisher(&eta).unwrap();
            for a in 0..p {
                assert!((mu[a] - mu2[a]).abs() < 1e-12, "{}", e.name());
                for b in 0..p {
                    assert!((f[a * p + b] - f2[(a, b)]).abs() < 1e-12, "{}", e.name());
                }
            }
        }
    }

    #[test]
    fn natural_vjp_matches_finite_differences() {
        let e = Multinomial::new(3).unwrap();
        let d = 3;
        let params = vec![0.1, 0.2, -0.3, 0.5, -0.1, 0.4];
        let x = [1.0, -0.5, 2.0];
        let v = [0.3, -0.7];
        let mut g = vec![0.0; 6];
        e.natural_vjp(&params, &x, &v, &mut g);
        for j in 0..6 {
            let h = 1e-6;
            let (mut pp, mut pm) = (params.clone(), params.clone());
            pp[j] += h;
            pm[j] -= h;
            let (mut ep, mut em) = (vec![0.0; 2], vec![0.0; 2]);
            e.natural(&pp, &x, &mut ep);
            e.natural(&pm, &x, &mut em);
            let fd: f64 = (0..2).map(|a| v[a] * (ep[a] - em[a]) / (2.0 * h)).sum();
            assert!((fd - g[j]).abs() < 1e-8);
        }
        assert_eq!(e.n_params(d), 6);
    }

    #[test]
    fn linear_weighted_fit_equals_newton_on_same_objective() {
        let ds = data(300, 3, 1, |x, r| {
            let e: f64 = StandardNormal.sample(r);
            1.0 + 2.0 * x[1] - x[2] + 0.5 * e
        });
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let w: Vec<f64> = (0..300)
            .map(|_| rand::Rng::random::<f64>(&mut rng))
            .collect();
        let lg = LinearGaussian::new();
        let mut closed = vec![0.0; 4];
        lg.weighted_fit(&ds, &w, &[0.0, 0.0, 0.0, -0.5], &mut closed)
            .unwrap();
        // The generic Newton on the same concave objective (independent path).
        let mut newton = vec![0.0; 4];
        let st = glm_newton(
            &lg,
            &ds,
            &w,
            &[0.0, 0.0, 0.0, -0.5],
            &mut newton,
            1e-11,
            100,
        )
        .unwrap();
        assert!(st.converged);
        for j in 0..4 {
            assert!(
                (closed[j] - newton[j]).abs() < 1e-7 * (1.0 + closed[j].abs()),
                "{closed:?} {newton:?}"
            );
        }
        let (beta, s2) = LinearGaussian::beta_from_natural(&closed).unwrap();
        assert!((beta[1] - 2.0).abs() < 0.2 && (s2 - 0.25).abs() < 0.1);
    }

    #[test]
    fn logistic_newton_stationary_and_beats_perturbations() {
        let ds = data(400, 2, 3, |x, r| {
            let p = sigmoid(0.5 - 1.5 * x[1]);
            if rand::Rng::random::<f64>(r) < p {
                1.0
            } else {
                0.0
            }
        });
        let w = vec![1.0; 400];
        let e = Logistic::new();
        let mut out = vec![0.0; 2];
        let st = e.weighted_fit(&ds, &w, &[0.0, 0.0], &mut out).unwrap();
        assert!(st.converged && st.residual <= INNER_TOL && st.iterations > 0);
        let q = |p: &[f64]| glm_pass(&e, &ds, &w, p, false).unwrap().q;
        let q0 = q(&out);
        for dv in [[1e-3, 0.0], [0.0, -1e-3], [1e-3, 1e-3]] {
            assert!(q0 > q(&[out[0] + dv[0], out[1] + dv[1]]));
        }
    }

    /// Labels from a random softmax model with coefficients of scale `scale` (not
    /// separable for moderate scales), on `data`'s features.
    fn multinomial_data(n: usize, d: usize, c: usize, scale: f64, seed: u64) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 1000);
        let b: Vec<f64> = (0..(c - 1) * d)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                scale * z
            })
            .collect();
        let fam = mirror::Categorical::new(c).unwrap();
        data(n, d, seed, move |x, r| {
            let eta: Vec<f64> = (0..c - 1).map(|j| dot(&b[j * d..(j + 1) * d], x)).collect();
            let p = fam.probabilities(&eta).unwrap();
            let u: f64 = rand::Rng::random(r);
            let mut acc = 0.0;
            for (k, pk) in p.iter().enumerate() {
                acc += pk;
                if u < acc {
                    return k as f64;
                }
            }
            (c - 1) as f64
        })
    }

    /// $-\frac1W\sum_i w_i[\langle T(y_i), \eta_i\rangle - A(\eta_i)]$ and its gradient through
    /// the generic family calls (`log_partition`, `mean`) and the trait's default
    /// `natural` / `natural_vjp`: independent of `weighted_objective`.
    fn generic_objective(e: &Multinomial, ds: &Dataset, w: &[f64], b: &[f64]) -> (f64, Vec<f64>) {
        let fam = e.family();
        let p = fam.dim();
        let (mut eta, mut mu, mut t) = (vec![0.0; p], vec![0.0; p], vec![0.0; p]);
        let mut g = vec![0.0; b.len()];
        let (mut f, mut wsum) = (0.0, 0.0);
        for (i, &wi) in w.iter().enumerate().take(ds.n()) {
            e.natural(b, ds.x(i), &mut eta);
            fam.sufficient_stats(ds.y(i), &mut t);
            fam.mean(&eta, &mut mu).unwrap();
            f += wi * (fam.log_partition(&eta).unwrap() - dot(&t, &eta));
            let v: Vec<f64> = (0..p).map(|j| wi * (mu[j] - t[j])).collect();
            e.natural_vjp(b, ds.x(i), &v, &mut g);
            wsum += wi;
        }
        g.iter_mut().for_each(|v| *v /= wsum);
        (f / wsum, g)
    }

    #[test]
    fn multinomial_weighted_objective_matches_generic_and_finite_differences() {
        let (n, d, c) = (300, 5, 4);
        let ds = multinomial_data(n, d, c, 0.8, 21);
        let mut rng = ChaCha8Rng::seed_from_u64(22);
        let w: Vec<f64> = (0..n)
            .map(|i| {
                if i % 7 == 0 {
                    0.0
                } else {
                    rand::Rng::random(&mut rng)
                }
            })
            .collect();
        let e = Multinomial::new(c).unwrap();
        let b: Vec<f64> = (0..(c - 1) * d)
            .map(|_| {
                0.5 * {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    z
                }
            })
            .collect();
        let mut g = vec![0.0; b.len()];
        let f = e.weighted_objective(&ds, &w, &b, &mut g).unwrap();
        let (f_ref, g_ref) = generic_objective(&e, &ds, &w, &b);
        assert!((f - f_ref).abs() <= 1e-13 * f_ref.abs(), "{f} vs {f_ref}");
        let mut scratch = vec![0.0; b.len()];
        for j in 0..b.len() {
            assert!(
                (g[j] - g_ref[j]).abs() <= 1e-13,
                "{j}: {} vs {}",
                g[j],
                g_ref[j]
            );
            let h = 1e-6;
            let (mut bp, mut bm) = (b.clone(), b.clone());
            bp[j] += h;
            bm[j] -= h;
            let fd = (e.weighted_objective(&ds, &w, &bp, &mut scratch).unwrap()
                - e.weighted_objective(&ds, &w, &bm, &mut scratch).unwrap())
                / (2.0 * h);
            assert!((fd - g[j]).abs() < 1e-8, "{j}: fd {fd} vs {}", g[j]);
        }
        assert!(matches!(
            e.weighted_objective(&ds, &vec![0.0; n], &b, &mut g),
            Err(MoeError::InvalidParam {
                name: "weights",
                ..
            })
        ));
        let mut bad = b.clone();
        bad[0] = f64::NAN;
        assert!(matches!(
            e.weighted_objective(&ds, &w, &bad, &mut g),
            Err(MoeError::NonFinite { .. })
        ));
    }

    #[test]
    fn multinomial_large_m_step_by_lbfgs_matches_dense_newton() {
        // (C−1)d = 9·13 = 117 > MULTINOMIAL_DENSE_MAX_PARAMS: weighted_fit takes L-BFGS.
        let (n, d, c) = (2500, 13, 10);
        assert!((c - 1) * d > MULTINOMIAL_DENSE_MAX_PARAMS);
        let ds = multinomial_data(n, d, c, 0.4, 5);
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let w: Vec<f64> = (0..n).map(|_| rand::Rng::random(&mut rng)).collect();
        let e = Multinomial::new(c).unwrap();
        let np = e.n_params(d);
        let start: Vec<f64> = (0..np)
            .map(|_| {
                0.1 * {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    z
                }
            })
            .collect();
        let mut dense = vec![0.0; np];
        let sd = glm_newton(&e, &ds, &w, &start, &mut dense, INNER_TOL, INNER_MAX_ITER).unwrap();
        assert!(sd.converged && sd.hessians > 0);
        let mut fast = vec![0.0; np];
        let sf = e.weighted_fit(&ds, &w, &start, &mut fast).unwrap();
        assert!(sf.converged, "{sf:?}");
        assert_eq!(sf.hessians, 0);
        assert!(
            sf.iterations > 0 && sf.residual <= MULTINOMIAL_LBFGS_TOL,
            "{sf:?}"
        );
        // Gradient at the L-BFGS result, computed independently, meets the tolerance.
        let (f_fast, g_fast) = generic_objective(&e, &ds, &w, &fast);
        let ginf = g_fast.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(ginf <= MULTINOMIAL_LBFGS_TOL * (1.0 + 1e-6), "{ginf}");
        // Objective within a tight tolerance of the dense-Newton optimum.
        let (f_dense, _) = generic_objective(&e, &ds, &w, &dense);
        assert!(
            f_fast - f_dense <= 1e-12 * (1.0 + f_dense.abs()) && f_dense - f_fast <= 1e-13,
            "L-BFGS {f_fast} vs Newton {f_dense}"
        );
        let diff = fast
            .iter()
            .zip(&dense)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 1e-5, "max parameter difference {diff}");
    }

    #[test]
    fn multinomial_small_m_step_stays_dense_newton_and_large_separable_is_reported() {
        let ds = multinomial_data(200, 4, 3, 1.0, 8);
        let e = Multinomial::new(3).unwrap();
        let w = vec![1.0; 200];
        let (mut a, mut b) = (vec![0.0; 8], vec![0.0; 8]);
        let sa = e.weighted_fit(&ds, &w, &[0.0; 8], &mut a).unwrap();
        let sb = glm_newton(&e, &ds, &w, &[0.0; 8], &mut b, INNER_TOL, INNER_MAX_ITER).unwrap();
        assert_eq!((a, sa.clone()), (b, sb));
        assert!(sa.converged && sa.hessians > 0);
        // Separable labels (class = sign pattern of two features): no maximiser exists.
        // The L-BFGS M-step stops at the gradient tolerance with large finite
        // coefficients; with a small iteration cap it reports the inexact step.
        let (n, d, c) = (400, 30, 5);
        let sep = data(n, d, 9, |x, _| {
            (usize::from(x[1] > 0.0) + 2 * usize::from(x[2] > 0.0)) as f64
        });
        let e = Multinomial::new(c).unwrap();
        let np = e.n_params(d);
        assert!(np > MULTINOMIAL_DENSE_MAX_PARAMS);
        let mut out = vec![0.0; np];
        let ones = vec![1.0; n];
        let s = e
            .weighted_fit(&sep, &ones, &vec![0.0; np], &mut out)
            .unwrap();
        assert!(s.residual <= MULTINOMIAL_LBFGS_TOL && s.converged, "{s:?}");
        let mut g = vec![0.0; np];
        let f_end = e.weighted_objective(&sep, &ones, &out, &mut g).unwrap();
        assert!(out.iter().all(|v| v.is_finite()) && f_end < 1e-6, "{f_end}");
        let s = e
            .fit_lbfgs(
                &sep,
                &ones,
                &vec![0.0; np],
                &mut out,
                MULTINOMIAL_LBFGS_TOL,
                3,
            )
            .unwrap();
        assert!(!s.converged && s.iterations == 3 && s.residual > MULTINOMIAL_LBFGS_TOL);
        assert!(matches!(
            e.fit_lbfgs(&sep, &ones, &vec![0.0; np], &mut out, 0.0, 3),
            Err(MoeError::InvalidParam { .. })
        ));
        let err = e
            .weighted_fit(&sep, &vec![0.0; n], &vec![0.0; np], &mut out)
            .unwrap_err();
        assert!(matches!(
            err,
            MoeError::NotPositiveDefinite {
                expert: usize::MAX,
                pivot: 0
            }
        ));
    }

    #[test]
    fn bad_inputs_give_typed_errors() {
        assert!(matches!(
            Multinomial::new(1),
            Err(MoeError::InvalidParam {
                name: "classes",
                ..
            })
        ));
        assert!(matches!(
            LinearGaussian::with_ridge(-1.0),
            Err(MoeError::InvalidParam { name: "ridge", .. })
        ));
        let ds = Dataset::from_rows(&[1.0, 1.0, 1.0], 1, &[0.0, 2.0, 1.0], 1).unwrap();
        let mut out = vec![0.0];
        let e = Logistic::new()
            .weighted_fit(&ds, &[1.0; 3], &[0.0], &mut out)
            .unwrap_err();
        assert!(matches!(e, MoeError::InvalidData { row: Some(1), .. }));
        let ds = Dataset::from_rows(&[1.0, 1.0], 1, &[0.0, 1.0], 1).unwrap();
        let e = Logistic::new()
            .weighted_fit(&ds, &[0.0, 0.0], &[0.0], &mut out)
            .unwrap_err();
        assert!(matches!(e, MoeError::NotPositiveDefinite { .. }));
        let e = Logistic::new()
            .weighted_fit(&ds, &[1.0, -1.0], &[0.0], &mut out)
            .unwrap_err();
        assert!(matches!(e, MoeError::InvalidData { row: Some(1), .. }));
    }
}
