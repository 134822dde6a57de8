//! The multinomial-logistic expert ([`Multinomial`]).

use super::InnerBudget;
use super::MULTINOMIAL_DENSE_MAX_PARAMS;
use super::{check_len, check_ridge, with_ridge_name};
use super::{glm_fit, Expert, ExpertSpec, GlmSolve, ReadableParams, WeightedFit};
use super::{MULTINOMIAL_LBFGS_MAX_ITER, MULTINOMIAL_LBFGS_TOL};
use crate::data::Dataset;
use crate::error::{MoeError, Result};
use crate::inner::softmax::{Labels, SoftmaxRegression};
use crate::inner::sums::NewtonSums;
use crate::inner::InnerStats;
use mirror::newton::Need;
use mirror::ExponentialFamily;

/// Multinomial logistic regression over $C$ classes (reference class $C-1$):
/// $P(y = c \mid x, z = k) = \operatorname{softmax}(b_0^\top x, \dots, b_{C-2}^\top x, 0)_c$
/// in the [`mirror::Categorical`] family; all $C - 1$ components are regressed.
/// [`Expert::predict_mean`] returns the $C$ class probabilities.
///
/// The budget of its L-BFGS M-step (used above [`MULTINOMIAL_DENSE_MAX_PARAMS`]) is
/// [`MULTINOMIAL_LBFGS_TOL`] / [`MULTINOMIAL_LBFGS_MAX_ITER`] unless set with
/// [`Multinomial::with_lbfgs_budget`]. The description [`Expert::spec`] (registry name
/// `multinomial`) carries it with the classes and [`Multinomial::dense_max_params`] as the
/// parameters `classes`, `lbfgs_tol`, `lbfgs_max_iter` and `dense_max_params`, so a saved
/// model ([`crate::fit::io`]) reloads with the same M-step (a version-1 file keeps them in
/// its `fitting` section, or loads with the defaults when it has none).
#[derive(Debug, Clone, PartialEq)]
pub struct Multinomial {
    family: mirror::Categorical,
    lbfgs_tol: f64,
    lbfgs_max_iter: u64,
    dense_max_params: usize,
    ridge: f64,
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
            ridge: 0.0,
        })
    }
    /// The same expert with ridge $\lambda \ge 0$ on its coefficients (see
    /// [`Expert::ridge`]): the M-step maximises $Q - \frac\lambda2\|B\|^2$, finite even
    /// when the weighted classes are separable.
    ///
    /// # Errors
    /// `InvalidParam { name: "ridge" }` unless $\lambda$ is finite and $\ge 0$.
    pub fn with_ridge(mut self, ridge: f64) -> Result<Self> {
        self.ridge = check_ridge(ridge)?;
        Ok(self)
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
    /// written into `grad` (layout of the parameters: $b_j$ contiguous): the shared
    /// [`SoftmaxRegression::objective`] with one-hot labels ([`Labels::Classes`]) and row
    /// weights $w_i$, one $O(n\,C\,d)$ pass without a Hessian.
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
        let np = (self.classes() - 1) * data.d();
        check_len("params", np, params.len())?;
        check_len("grad", np, grad.len())?;
        check_len("weights", data.n(), weights.len())?;
        SoftmaxRegression::new(data, self.classes(), Labels::Classes, Some(weights))
            .map_err(|e| match e {
                MoeError::InvalidParam {
                    name: "weights", ..
                } => MoeError::InvalidParam {
                    name: "weights",
                    reason: "the weights must have a positive finite sum".into(),
                },
                other => other,
            })?
            .objective(params, grad)
            .map_err(|e| match e {
                MoeError::NonFinite { .. } => MoeError::NonFinite {
                    what: "multinomial expert M-step objective",
                },
                other => other,
            })
    }

    /// The weighted M-step by the given method: [`glm_fit`] (the checks of every expert
    /// M-step — lengths, weights, targets in $\{0, \dots, C-1\}$, not all weights zero —
    /// then [`GlmSolve::Newton`] or [`GlmSolve::Lbfgs`] on $f = -(Q - R)/W$).
    ///
    /// # Errors
    /// As [`glm_fit`].
    pub fn fit_by(
        &self,
        method: GlmSolve,
        fit: WeightedFit<'_>,
        out: &mut [f64],
    ) -> Result<InnerStats> {
        glm_fit(self, fit, out, method)
    }
}

impl Expert for Multinomial {
    fn name(&self) -> String {
        with_ridge_name(&format!("multinomial(C={})", self.classes()), self.ridge)
    }
    fn ridge(&self) -> f64 {
        self.ridge
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
    /// Dense Newton ([`GlmSolve::Newton`], [`InnerBudget::EXACT`]: an exact M-step)
    /// when $(C-1)d \le$ [`MULTINOMIAL_DENSE_MAX_PARAMS`] (or the bound of
    /// [`Multinomial::with_dense_max_params`]); above it L-BFGS ([`GlmSolve::Lbfgs`] with
    /// the budget of [`Multinomial::with_lbfgs_budget`], by default
    /// [`MULTINOMIAL_LBFGS_TOL`] and [`MULTINOMIAL_LBFGS_MAX_ITER`]), whose inexactness is
    /// reported in the returned [`InnerStats`] (`residual` = $\|\nabla f\|_\infty$,
    /// `converged`, `hessians = 0`). In memory and from shards alike.
    /// The softmax regression's pass ([`SoftmaxRegression`] with one-hot labels and row
    /// weights, the gate's sums: logits by one matrix product per block, the Hessian from
    /// weighted Gram blocks) instead of the generic per-row moments — the same sums.
    fn weighted_round(
        &self,
        data: &Dataset,
        weights: &[f64],
        params: &[f64],
        need: Option<Need>,
    ) -> Result<NewtonSums> {
        SoftmaxRegression::for_pass(data, self.classes(), Labels::Classes, Some(weights))?
            .round(params, need == Some(Need::Hessian))
    }
    fn glm_solve(&self, d: usize) -> GlmSolve {
        if self.n_params(d) > self.dense_max_params {
            GlmSolve::Lbfgs(InnerBudget::new(self.lbfgs_tol, self.lbfgs_max_iter))
        } else {
            GlmSolve::Newton(InnerBudget::EXACT)
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
    fn spec(&self) -> Option<ExpertSpec> {
        Some(
            ExpertSpec::new("multinomial")
                .param("classes", self.classes() as f64)
                .param("lbfgs_tol", self.lbfgs_tol)
                .param("lbfgs_max_iter", self.lbfgs_max_iter as f64)
                .param("dense_max_params", self.dense_max_params as f64)
                .ridge(self.ridge),
        )
    }
    fn n_classes(&self) -> Option<usize> {
        Some(Multinomial::classes(self))
    }
    /// All $C$ class probabilities (as [`predict_mean`](Expert::predict_mean)).
    fn class_probs(&self, params: &[f64], x: &[f64], out: &mut [f64]) -> Result<()> {
        self.predict_mean(params, x, out)
    }
    /// `prob_0`, …, `prob_{C-1}`.
    fn prediction_names(&self) -> Vec<String> {
        (0..Multinomial::classes(self))
            .map(|c| format!("prob_{c}"))
            .collect()
    }
    /// $b_j$ labelled "class $j$ vs $C-1$" (the reference class).
    fn readable_params(&self, params: &[f64], d: usize) -> Result<ReadableParams> {
        let c = Multinomial::classes(self);
        check_len("params", (c - 1) * d, params.len())?;
        Ok(ReadableParams {
            coefficients: (0..c - 1)
                .map(|j| {
                    (
                        format!("class {j} vs {}", c - 1),
                        params[j * d..(j + 1) * d].to_vec(),
                    )
                })
                .collect(),
            scalars: Vec::new(),
        })
    }
}
