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
//! [`glm_newton`]) uses. [`Multinomial`] chooses ([`Expert::glm_solve`]) L-BFGS on the
//! same objective above [`MULTINOMIAL_DENSE_MAX_PARAMS`] parameters ([`GlmSolve::Lbfgs`]),
//! which never forms the $((C-1)d)^2$ Hessian; in memory and from shards alike.
//!
//! Built-ins: [`LinearGaussian`] (Gaussian with per-expert variance, closed-form weighted
//! least squares), [`Logistic`] (Bernoulli), [`Multinomial`] (Categorical, $C$ classes),
//! [`Poisson`], [`GaussianCluster`] (a multivariate Gaussian without covariates: the
//! Gaussian mixture's component, full/diagonal/spherical covariance), and [`Glm`] for any
//! family a researcher writes.
//!
//! **Descriptions and capabilities.** An expert describes itself for model files with
//! [`Expert::spec`] ([`ExpertSpec`]: a [registry](crate::model::registry) name and named
//! parameters; `None` means it cannot be saved), and offers what else it can do through
//! trait methods rather than downcasts: [`Expert::gaussian_regression`] (the mixture's
//! fast Gaussian E-/M-step, [`GaussianRegression`]), [`Expert::readable_params`] (labelled
//! parameters for reports), [`Expert::n_classes`] / [`Expert::class_probs`] (classifiers)
//! and [`Expert::prediction_names`]. A researcher's own expert type can offer each of them
//! and is then treated exactly as the built-ins.

use crate::data::Dataset;
use crate::error::{Block, MoeError, Result};
use crate::inner::first_failing;
use crate::inner::parallel::{chunked_sum, fold_rows, Mergeable};
use crate::inner::sums::NewtonSums;
use crate::inner::InnerStats;
use faer::{Mat, MatRef};
use mirror::newton::{
    minimize, EvalOut, FnObjective, InitialEval, Need, NewtonReport, NewtonSettings,
};
use mirror::ExponentialFamily;
use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};

/// Default tolerance of the inner Newton solves (norm of the weight-averaged gradient).
pub const INNER_TOL: f64 = 1e-10;
/// Default iteration cap of the inner Newton solves.
pub const INNER_MAX_ITER: u64 = 50;
/// Largest parameter count $(C-1)d$ for which [`Multinomial`]'s M-step uses the dense
/// Newton method [`glm_newton`] (exact to [`INNER_TOL`]). Above it the dense Newton step
/// costs $O(n\,(C-1)^2d^2)$ to assemble a $((C-1)d)^2$ Hessian (on the bundled digits,
/// $C = 10$, $d = 65$: a $585\times585$ matrix, ~24 s per EM iteration) and that Hessian
/// is singular when a feature vanishes on every weighted row; the M-step then runs
/// L-BFGS ([`GlmSolve::Lbfgs`]) on the same objective.
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
    /// The ridge $\lambda \ge 0$ of the expert's penalised M-step (default 0, no penalty):
    /// [`weighted_fit`](Self::weighted_fit) maximises $Q - R$ with $R$ =
    /// [`penalty`](Self::penalty), and the mixture's objective adds $R$ of every expert
    /// ([`ConditionalFamily::penalty`](crate::model::ConditionalFamily::penalty)), so EM
    /// stays monotone in it. A ridge gives an expert whose weighted data are separable
    /// (logistic, multinomial) or one-class a finite optimum.
    fn ridge(&self) -> f64 {
        0.0
    }
    /// The penalty $R(\vartheta)$ of one expert's parameters with $d$ features. Default:
    /// the ridge on every regressed coefficient, intercept included (an expert whose
    /// weighted targets are all of one class also has its optimum at infinity),
    /// constants excluded: $R = \frac\lambda2\sum_{j<r}\|b_j\|^2$
    /// ([`ridge_penalty`](crate::inner::sums::ridge_penalty)).
    fn penalty(&self, params: &[f64], d: usize) -> f64 {
        crate::inner::sums::ridge_penalty(self.ridge(), &params[..self.n_regressed() * d])
    }
    /// `grad += ∇R(ϑ)` for [`penalty`](Self::penalty); default $\lambda b_j$ on the
    /// regressed coefficients.
    fn penalty_gradient(&self, params: &[f64], d: usize, grad: &mut [f64]) {
        let lambda = self.ridge();
        if lambda == 0.0 {
            return;
        }
        let m = self.n_regressed() * d;
        for (g, v) in grad[..m].iter_mut().zip(&params[..m]) {
            *g += lambda * v;
        }
    }
    /// Maximises $Q(\vartheta) = \sum_i w_i[\langle T_F(y_i), \eta(x_i)\rangle - A_F(\eta(x_i))]$
    /// (minus [`penalty`](Self::penalty) when the expert has a ridge)
    /// from `start`, writing the maximiser into `out`. Default: [`glm_newton`] with
    /// [`INNER_TOL`] and [`INNER_MAX_ITER`]; the inner iterations, final gradient norm and
    /// Hessians formed are returned.
    ///
    /// # Errors
    /// `NotPositiveDefinite { block: Block::Expert(None), .. }` if the weighted Hessian is singular
    /// (the mixture remaps the index), `InvalidData` for a target outside the support.
    fn weighted_fit(&self, fit: WeightedFit<'_>, out: &mut [f64]) -> Result<InnerStats> {
        glm_fit(self, fit, out, self.glm_solve(fit.data.d()))
    }
    /// One pass of this expert's weighted fit at `params` over the rows of `data` with
    /// per-row `weights` $w_i \ge 0$ (all rows, or one shard's): the [`NewtonSums`] of
    /// $Q(\vartheta) = \sum_i w_i[\langle T_F(y_i), \eta_i\rangle - A_F(\eta_i)]$ with the
    /// gradient and the Hessian as `need` asks (`None`: the value only). The M-step's
    /// driver ([`glm_fit`], in memory and from shards) reads nothing else, so an expert
    /// with a faster way to form these sums overrides this and keeps one code path.
    /// Default: [`glm_round`] (the family's per-row moments).
    ///
    /// # Errors
    /// As [`glm_round`].
    fn weighted_round(
        &self,
        data: &Dataset,
        weights: &[f64],
        params: &[f64],
        need: Option<Need>,
    ) -> Result<NewtonSums> {
        glm_round(self, data, weights, params, need)
    }
    /// How this expert's GLM-layout M-step is solved with $d$ features: the method
    /// [`glm_fit`] runs in memory and [`crate::shard`] runs over merged statistics, so
    /// both take the same steps. Default: Newton with [`InnerBudget::EXACT`].
    fn glm_solve(&self, d: usize) -> GlmSolve {
        let _ = d;
        GlmSolve::Newton(InnerBudget::EXACT)
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
    /// The serialisable description of this expert ([`ExpertSpec`]: a
    /// [registry](crate::model::registry) name and parameters), from which the registry
    /// rebuilds an equal expert when a model file is loaded. `None` (the default): the
    /// expert cannot be saved, and [`crate::fit::io`] says so with
    /// [`RegistryError::NotSerialisable`](crate::error::RegistryError::NotSerialisable)
    /// naming it; everything else (fitting, restarts, prediction, standard errors) works
    /// without it.
    fn spec(&self) -> Option<ExpertSpec> {
        None
    }
    /// The Gaussian-regression capability, for experts with
    /// $y \mid x, z = k \sim N(\beta_k^\top x, \sigma_k^2)$: the mixture then accumulates
    /// merged weighted Gram statistics in the E-step, evaluates the row densities from one
    /// matrix product, and runs the M-step from the Grams ([`GaussianRegression`]) instead of
    /// [`weighted_fit`](Self::weighted_fit). Default `None`; [`LinearGaussian`] offers it,
    /// and so may a user's own Gaussian-regression expert.
    fn gaussian_regression(&self) -> Option<&dyn GaussianRegression> {
        None
    }
    /// Adds $\log p_F(y_l;\eta_l)$ to `out[l]` for a block of $m$ rows, for an expert
    /// whose natural parameter is the one regressed component $\eta = b^\top x$ ($p = r =
    /// 1$): `y` the rows' targets ($m\,q$ values), `eta` their $\eta_l$, `work` at least
    /// $m$ values of scratch. Returns `false`, leaving `out` alone, when the expert has no
    /// such batched form (the default): the mixture's E-step then evaluates
    /// $\langle T(y),\eta\rangle - A_F(\eta) + \log h(y)$ row by row through the
    /// family. The targets are checked against the support before this is called; a
    /// non-finite $\eta$ must give a non-finite value (the E-step reports it).
    /// [`Logistic`] and [`Poisson`] offer it (vectorised exponentials for
    /// $\log(1 + e^\eta)$ and $e^\eta$).
    fn add_log_densities(&self, y: &[f64], eta: &[f64], out: &mut [f64], work: &mut [f64]) -> bool {
        let _ = (y, eta, out, work);
        false
    }
    /// One expert block prepared for evaluation on many rows ([`PreparedExpert`]): what
    /// does not depend on the row (e.g. $\log\sigma^2$ of a linear-Gaussian expert) is
    /// computed once here. Used by the mixture's batched row evaluator
    /// ([`ConditionalFamily::point_rows`](crate::ConditionalFamily::point_rows)). Default
    /// `None`: the mixture then evaluates the block through [`natural`](Self::natural) and
    /// the family's `log_partition` and `mean` ([`FamilyPrepared`]); [`LinearGaussian`]
    /// offers it. An override must give the same numbers as those functions (the
    /// certificate's fast paths are tested bit for bit against the generic ones).
    fn prepare<'a>(&'a self, params: &'a [f64]) -> Option<Box<dyn PreparedExpert + 'a>> {
        let _ = params;
        None
    }
    /// The Gaussian-mixture capability, for experts with $y \mid z = k \sim N(m_k, \Sigma_k)$
    /// not depending on $x$ ([`GaussianClusters`]): the mixture's E-step then evaluates
    /// the row densities by Cholesky factors of the precisions and merges weighted
    /// moments, and its M-step is closed form. Default `None`; [`GaussianCluster`] offers
    /// it.
    fn gaussian_clusters(&self) -> Option<&dyn GaussianClusters> {
        None
    }
    /// The parameters of one expert block in readable form, for reports: coefficient
    /// vectors over the $d$ features and labelled scalars. Default
    /// ([`default_readable_params`]): the regressed components $b_j$ (labelled `beta`, or
    /// `beta_j` when $r > 1$) and the constants $c_j$ (labelled `eta_j`, $j$ the natural
    /// component). [`LinearGaussian`] gives $\beta = -\gamma/(2\tau)$ and
    /// $\sigma^2 = -1/(2\tau)$, [`Multinomial`] labels $b_j$ "class $j$ vs $C-1$".
    ///
    /// # Errors
    /// `InvalidParam { name: "params" }` for a block of the wrong length; an override may
    /// fail for a block outside its domain (e.g. $\tau \ge 0$).
    fn readable_params(&self, params: &[f64], d: usize) -> Result<ReadableParams> {
        default_readable_params(self, params, d)
    }
    /// The number $C$ of classes when $y$ is a class label $0, \dots, C-1$ and
    /// [`class_probs`](Self::class_probs) gives their probabilities; `None` (the default)
    /// for other experts.
    fn n_classes(&self) -> Option<usize> {
        None
    }
    /// $P(y = c \mid x, z = k)$ for $c = 0, \dots, C-1$ into `out` (length
    /// [`n_classes`](Self::n_classes)).
    ///
    /// # Errors
    /// `InvalidParam { name: "expert" }` (the default) for an expert that is not a
    /// classifier.
    fn class_probs(&self, _params: &[f64], _x: &[f64], _out: &mut [f64]) -> Result<()> {
        Err(MoeError::InvalidParam {
            name: "expert",
            reason: format!(
                "class probabilities need a classifying expert (logistic, multinomial), not {}",
                self.name()
            ),
        })
    }
    /// Names of the [`predict_mean`](Self::predict_mean) outputs, e.g. for CSV columns.
    /// Default: `mean` when [`predict_dim`](Self::predict_dim) is 1, else `mean_0`, ….
    fn prediction_names(&self) -> Vec<String> {
        match self.predict_dim() {
            1 => vec!["mean".into()],
            m => (0..m).map(|j| format!("mean_{j}")).collect(),
        }
    }
}

/// An expert block $\vartheta$ prepared for many rows ([`Expert::prepare`]): row by row,
/// the natural parameter $\eta(x) = \eta(x;\vartheta)$ with $A_F(\eta(x))$, and
/// $\nabla A_F(\eta(x))$. `None` means "outside the natural domain or not finite": the
/// caller then falls back to the generic functions, which report the error.
pub trait PreparedExpert: Send + Sync {
    /// Writes $\eta(x)$ into `eta` (length $p$) and returns $A_F(\eta(x))$, or `None`
    /// when $\eta(x)$ is outside $F$'s natural domain or $A_F$ is not finite.
    fn natural_and_log_partition(&self, x: &[f64], eta: &mut [f64]) -> Option<f64>;
    /// $\nabla A_F(\eta)$ into `mu` (length $p$) for an $\eta$ written by
    /// [`natural_and_log_partition`](Self::natural_and_log_partition); `None` when it
    /// is not finite or the family's `mean` fails.
    fn mean(&self, eta: &[f64], mu: &mut [f64]) -> Option<()>;
    /// [`natural_and_log_partition`](Self::natural_and_log_partition) on the rows `rows`
    /// of `data` at once: component $j$ of row $l$'s $\eta$ into `eta[j * m + l]`
    /// ($m$ = `rows.len()`), $A_F$ into `af[l]`, and `ok[l] = false` where the row function
    /// returns `None` (the other entries of `ok` are left alone). `tmp` has length $p$.
    /// Default: row by row through the row function; an override (the linear-Gaussian
    /// expert's) must give the same bits.
    fn natural_and_log_partition_block(
        &self,
        data: &Dataset,
        rows: std::ops::Range<usize>,
        eta: &mut [f64],
        af: &mut [f64],
        ok: &mut [bool],
        tmp: &mut [f64],
    ) {
        let m = rows.len();
        for (l, i) in rows.enumerate() {
            match self.natural_and_log_partition(data.x(i), tmp) {
                Some(a) => {
                    af[l] = a;
                    for (j, &e) in tmp.iter().enumerate() {
                        eta[j * m + l] = e;
                    }
                }
                None => ok[l] = false,
            }
        }
    }
    /// [`mean`](Self::mean) on $m$ rows at once, in the layout of
    /// [`natural_and_log_partition_block`](Self::natural_and_log_partition_block):
    /// $\nabla A_F$ of row $l$ into `mu[j * m + l]`, `ok[l] = false` where the row function
    /// returns `None`; rows with `ok[l]` already false may be skipped. `tmp_eta`, `tmp_mu`
    /// have length $p$. Default: row by row; an override must give the same bits.
    fn mean_block(
        &self,
        eta: &[f64],
        m: usize,
        mu: &mut [f64],
        ok: &mut [bool],
        tmp_eta: &mut [f64],
        tmp_mu: &mut [f64],
    ) {
        for (l, okl) in ok.iter_mut().enumerate().take(m) {
            if !*okl {
                continue;
            }
            for (j, e) in tmp_eta.iter_mut().enumerate() {
                *e = eta[j * m + l];
            }
            match self.mean(tmp_eta, tmp_mu) {
                Some(()) => {
                    for (j, &v) in tmp_mu.iter().enumerate() {
                        mu[j * m + l] = v;
                    }
                }
                None => *okl = false,
            }
        }
    }
}

/// The generic [`PreparedExpert`] of any expert: [`Expert::natural`], then the family's
/// `in_natural_domain` and `log_partition`, and its `mean` (nothing is hoisted; the
/// numbers are those of the generic row functions).
pub struct FamilyPrepared<'a> {
    expert: &'a dyn Expert,
    params: &'a [f64],
}

impl<'a> FamilyPrepared<'a> {
    /// The block `params` of `expert`.
    pub fn new(expert: &'a dyn Expert, params: &'a [f64]) -> Self {
        FamilyPrepared { expert, params }
    }
}

impl PreparedExpert for FamilyPrepared<'_> {
    fn natural_and_log_partition(&self, x: &[f64], eta: &mut [f64]) -> Option<f64> {
        self.expert.natural(self.params, x, eta);
        let fam = self.expert.family();
        if !fam.in_natural_domain(eta) {
            return None;
        }
        fam.log_partition(eta).ok().filter(|a| a.is_finite())
    }
    fn mean(&self, eta: &[f64], mu: &mut [f64]) -> Option<()> {
        self.expert.family().mean(eta, mu).ok()
    }
}

/// Parameters of one expert in readable form ([`Expert::readable_params`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadableParams {
    /// Labelled coefficient vectors, one value per feature.
    pub coefficients: Vec<(String, Vec<f64>)>,
    /// Labelled scalars.
    pub scalars: Vec<(String, f64)>,
}

/// The default of [`Expert::readable_params`]: $b_j$ labelled `beta` ($r = 1$) or
/// `beta_j`, the constants labelled `eta_j`.
///
/// # Errors
/// `InvalidParam { name: "params" }` when `params` does not have
/// [`Expert::n_params`]$(d)$ values.
pub fn default_readable_params<E: Expert + ?Sized>(
    expert: &E,
    params: &[f64],
    d: usize,
) -> Result<ReadableParams> {
    check_len("params", expert.n_params(d), params.len())?;
    let r = expert.n_regressed();
    let label = |j: usize| {
        if r == 1 {
            "beta".to_string()
        } else {
            format!("beta_{j}")
        }
    };
    Ok(ReadableParams {
        coefficients: (0..r)
            .map(|j| (label(j), params[j * d..(j + 1) * d].to_vec()))
            .collect(),
        scalars: params[r * d..]
            .iter()
            .enumerate()
            .map(|(j, v)| (format!("eta_{}", r + j), *v))
            .collect(),
    })
}

/// The capability behind the mixture's fast path for Gaussian-regression experts
/// ([`Expert::gaussian_regression`]): $y \mid x, z = k \sim N(\beta_k^\top x, \sigma_k^2)$
/// with one target column and support $\mathbb R$, whatever the parametrisation of the
/// expert's block.
///
/// With it the E-step computes every row's means $\beta_k^\top x_i$ in one matrix product
/// and the log-densities $-\tfrac12\log(2\pi\sigma_k^2) - (y_i - \beta_k^\top x_i)^2/(2\sigma_k^2)$,
/// accumulates the merged weighted statistics
/// $G_k = \sum_i r_{ik}x_ix_i^\top$, $b_k = \sum_i r_{ik}y_ix_i$, $s_k = \sum_i r_{ik}y_i^2$,
/// $W_k = \sum_i r_{ik}$, and the M-step is [`solve_from_gram`](Self::solve_from_gram).
/// The expert's family, [`Expert::natural`] and [`Expert::weighted_fit`] must describe the
/// same law (they are used by everything else: gradients, information, mirror descent).
pub trait GaussianRegression: Send + Sync {
    /// The mean coefficients $\beta$ (into `beta`, length $d$) and the variance
    /// $\sigma^2$ (returned) of one expert block.
    ///
    /// # Errors
    /// `LeftDomain` when the block is not a valid parameter (e.g. $\sigma^2 \le 0$).
    fn mean_variance(&self, params: &[f64], beta: &mut [f64]) -> Result<f64>;
    /// The weighted maximum-likelihood block from the merged statistics
    /// ([`WeightedGram`]), written into `out`.
    ///
    /// # Errors
    /// `NotPositiveDefinite { block: Block::Expert(None), .. }` for a singular system
    /// (the mixture names the expert); `NonFinite` for a degenerate variance.
    fn solve_from_gram(&self, stats: WeightedGram<'_>, out: &mut [f64]) -> Result<()>;
}

/// The merged weighted statistics of one Gaussian-regression expert
/// ([`GaussianRegression::solve_from_gram`]), sums over rows with weights $w_i$ (the
/// expert's responsibilities): they combine across chunks and threads by addition.
#[derive(Clone, Copy, Debug)]
pub struct WeightedGram<'a> {
    /// $G = \sum_i w_i x_ix_i^\top$ ($d\times d$, lower triangle read).
    pub gram: MatRef<'a, f64>,
    /// $b = \sum_i w_i y_i x_i$.
    pub rhs: &'a [f64],
    /// $s = \sum_i w_i y_i^2$.
    pub syy: f64,
    /// $W = \sum_i w_i$.
    pub wsum: f64,
}

#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(u, v)| u * v).sum()
}

pub mod gaussian_mixture;
mod glm;
mod linear;
mod logistic;
mod multinomial;
mod poisson;
mod spec;

pub use gaussian_mixture::{
    ComponentDensity, CovarianceType, GaussianCluster, GaussianClusters, WeightedMoments, REG_COVAR,
};
pub use glm::Glm;
pub use linear::LinearGaussian;
pub use logistic::Logistic;
pub use multinomial::Multinomial;
pub use poisson::Poisson;
pub(crate) use spec::bad_param;
pub use spec::{ExpertSpec, FamilySpec, Params};

/// When an inner solve stops: at a gradient norm $\le$ `tol` (met: an exact M-step) or
/// after `max_iter` steps (not met: reported as an inexact M-step in [`InnerStats`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InnerBudget {
    /// Tolerance on the gradient norm.
    pub tol: f64,
    /// Step cap.
    pub max_iter: u64,
}

impl InnerBudget {
    /// [`INNER_TOL`] and [`INNER_MAX_ITER`]: the budget of an exact M-step.
    pub const EXACT: InnerBudget = InnerBudget {
        tol: INNER_TOL,
        max_iter: INNER_MAX_ITER,
    };
    /// Tolerance `tol` and cap `max_iter` (checked by the solver that uses them).
    pub fn new(tol: f64, max_iter: u64) -> Self {
        InnerBudget { tol, max_iter }
    }
}

/// How a weighted GLM M-step ([`glm_fit`]) is solved: each evaluation is one pass over
/// the rows (in memory, or a round of merged shard statistics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GlmSolve {
    /// Newton with the given budget (Levenberg-shifted where the Hessian is singular):
    /// one pass per step with the Hessian $\sum_i w_i J_i^\top\nabla^2A(\eta_i)J_i$.
    Newton(InnerBudget),
    /// L-BFGS (10 pairs, strong Wolfe) with the given budget on $\|\nabla f\|_\infty$: no
    /// Hessian formed; a budget it cannot meet is an inexact M-step, reported in
    /// [`InnerStats`].
    Lbfgs(InnerBudget),
}

/// One weighted M-step of an expert ([`Expert::weighted_fit`]): maximise
/// $Q(\vartheta) = \sum_i w_i[\langle T_F(y_i), \eta(x_i)\rangle - A_F(\eta(x_i))]$ over the
/// rows of `data` with per-row `weights` (the responsibilities of one expert), warm-started
/// at `start`. One value, so every solver of the problem takes the same argument.
#[derive(Clone, Copy, Debug)]
pub struct WeightedFit<'a> {
    /// The rows $(x_i, y_i)$.
    pub data: &'a Dataset,
    /// $w_i \ge 0$, one per row.
    pub weights: &'a [f64],
    /// The expert's parameters to start from ([`Expert::n_params`] long).
    pub start: &'a [f64],
}

impl<'a> WeightedFit<'a> {
    /// The M-step over `data` with `weights`, from `start`.
    pub fn new(data: &'a Dataset, weights: &'a [f64], start: &'a [f64]) -> Self {
        WeightedFit {
            data,
            weights,
            start,
        }
    }
}

/// The checks shared by the weighted M-step solvers of one expert: `start` and `out` have
/// the expert's parameter count, the weights are valid, every target is in the family's
/// support, and the weights do not sum to zero (an all-zero weight vector has no M-step:
/// `NotPositiveDefinite { block: Block::Expert(None), pivot: 0 }`, as a singular Hessian).
/// Returns the parameter count and $\sum_i w_i$.
fn check_weighted_fit<E: Expert + ?Sized>(
    expert: &E,
    fit: WeightedFit<'_>,
    out: &[f64],
) -> Result<(usize, f64)> {
    let np = expert.n_params(fit.data.d());
    check_len("start", np, fit.start.len())?;
    check_len("out", np, out.len())?;
    check_weights(fit.data.n(), fit.weights)?;
    check_targets(expert, fit.data)?;
    // Summed as the E-step sums an expert's weight (by fold chunk, in order), so a
    // sharded M-step reading the E-step's W_k takes the same steps.
    let wsum = chunked_sum(fit.weights);
    if wsum <= 0.0 {
        return Err(MoeError::NotPositiveDefinite {
            block: Block::Expert(None),
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
    if let Some(i) = first_failing(w, |v| v.is_finite() & (v >= 0.0)) {
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
            return Err(MoeError::outside_support(i, data.y(i), &fam.name()));
        }
    }
    Ok(())
}

/// Accumulator of one pass of [`glm_newton`]: $Q$, $\sum_i w_i(\sum_j|T_{ij}\eta_{ij}| +
/// |A(\eta_i)|)$ (the size of $Q$'s terms, for its round-off), whether a row left the
/// natural domain, gradient, negative Hessian (row-major), and per-row scratch.
struct GlmAcc {
    q: f64,
    abs: f64,
    outside: bool,
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
        self.abs += other.abs;
        self.outside |= other.outside;
        for (a, b) in self.grad.iter_mut().zip(&other.grad) {
            *a += b;
        }
        for (a, b) in self.hess.iter_mut().zip(&other.hess) {
            *a += b;
        }
    }
}

/// One pass over the rows: $Q(\vartheta) = \sum_i w_i[\langle T_i, \eta_i\rangle -
/// A(\eta_i)]$ and, with `need` = `Some(Gradient)`, its gradient
/// $\sum_i w_i J_i^\top(T_i - \nabla A(\eta_i))$, with `Some(Hessian)` also its negative
/// Hessian $\sum_i w_i J_i^\top\nabla^2A(\eta_i)J_i$ (row-major $P\times P$). A natural
/// parameter outside the domain sets `outside` (and $Q = -\infty$); the derivatives are
/// then meaningless.
fn glm_pass<E: Expert + ?Sized>(
    expert: &E,
    data: &Dataset,
    w: &[f64],
    params: &[f64],
    need: Option<Need>,
) -> Result<GlmAcc> {
    let fam = expert.family();
    let (p, r, d) = (fam.dim(), expert.n_regressed(), data.d());
    let np = expert.n_params(d);
    let grad = need.is_some();
    let hessian = need == Some(Need::Hessian);
    let (gl, hl) = (if grad { np } else { 0 }, if hessian { np * np } else { 0 });
    fold_rows(
        data.n(),
        || GlmAcc {
            q: 0.0,
            abs: 0.0,
            outside: false,
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
                if wi == 0.0 || acc.outside {
                    continue;
                }
                let x = data.x(i);
                expert.natural(params, x, &mut acc.eta);
                let a = match fam.log_partition(&acc.eta) {
                    Ok(a) if a.is_finite() => a,
                    _ => {
                        acc.outside = true;
                        acc.q = f64::NEG_INFINITY;
                        continue;
                    }
                };
                fam.sufficient_stats(data.y(i), &mut acc.t);
                let te = dot(&acc.t, &acc.eta);
                acc.q += wi * (te - a);
                let te_abs: f64 = acc.t.iter().zip(&acc.eta).map(|(t, e)| (t * e).abs()).sum();
                acc.abs += wi * (te_abs + a.abs());
                if !grad {
                    continue;
                }
                // (`moments` writes both; without a Hessian the Fisher part is scratch.)
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
                if !hessian {
                    continue;
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

/// One Newton round of an expert's weighted fit over the rows of `data` (all of them, or
/// a shard's), the default of [`Expert::weighted_round`]: one pass of the family's per-row
/// moments at `params` with per-row `weights`, summed as [`NewtonSums`] (the gradient
/// and the lower triangle of the Hessian as `need` asks). Through
/// [`NewtonSums::eval`] they give the weight-averaged objective
/// $f(\vartheta) = -Q(\vartheta)/W$, $W = \sum_i w_i$, with
/// $$ \nabla f = \frac1W\sum_i w_i J_i^\top(\nabla A(\eta_i) - T_i),\qquad
///    \nabla^2 f = \frac1W\sum_i w_i J_i^\top\nabla^2A(\eta_i)J_i, $$
/// round-off $\delta = $ `sum_noise`$(S, n)$ with
/// $S = \frac1W\sum_i w_i(\sum_j|T_{ij}\eta_{ij}| + |A(\eta_i)|)$ (the terms' sizes before
/// they cancel), and $f = +\infty$ outside the natural domain.
///
/// # Errors
/// As the family's moments (a natural parameter the family rejects).
pub fn glm_round<E: Expert + ?Sized>(
    expert: &E,
    data: &Dataset,
    weights: &[f64],
    params: &[f64],
    need: Option<Need>,
) -> Result<NewtonSums> {
    let acc = glm_pass(expert, data, weights, params, need)?;
    Ok(NewtonSums {
        at: params.to_vec(),
        q: acc.q,
        abs: acc.abs,
        outside: acc.outside,
        grad: acc.grad,
        hess: acc.hess,
    })
}

/// The checks [`glm_newton`] makes of an expert's parameter layout, for callers that run
/// its Newton solve on their own passes ([`crate::shard`]).
///
/// # Errors
/// `InvalidParam { name: "expert" }` when the expert's parameters are not the GLM layout.
pub(crate) fn check_glm_layout<E: Expert + ?Sized>(expert: &E, d: usize) -> Result<usize> {
    let np = expert.n_params(d);
    let (p, r) = (expert.family().dim(), expert.n_regressed());
    if np != r * d + (p - r) {
        return Err(MoeError::InvalidParam {
            name: "expert",
            reason: format!(
                "glm_newton needs the GLM layout (r·d + p − r = {} parameters), {} has {np}",
                r * d + (p - r),
                expert.name()
            ),
        });
    }
    Ok(np)
}

/// Newton's method for the weighted expert fit $\max_\vartheta Q(\vartheta)$ (see the
/// [module documentation](self)): [`mirror::newton::minimize`] on $f = -Q/W$
/// (weight-averaged, $W = \sum_i w_i$), whose line search accepts a
/// step by Armijo, by the pure-Newton rule $\lambda^2/2 \le \delta$ with $\delta$ the
/// round-off of the computed $f$ ([`sum_noise`](mirror::newton::sum_noise) of the sizes of $Q$'s terms — not a fixed
/// threshold, so a decrement just above $10^{-14}$ on an objective with round-off
/// $10^{-13}$ no longer stalls the solve), or by a smaller gradient when the value change
/// is inside round-off. It stops when $\|\nabla Q / W\|_2 \le$ `budget.tol`, after `budget.max_iter`
/// Newton steps, or when no step is acceptable (both reported as `converged = false` with
/// the residual). [`InnerStats::hessians`] counts the Hessians formed. A Hessian that fails
/// the Cholesky policy is factored with a Levenberg shift
/// ([`mirror::newton::SHIFT_START`]; counted in [`InnerStats::fallbacks`]): an expert
/// whose weighted fit has its optimum at infinity (e.g. quasi-separated logistic targets)
/// keeps descending, and a tolerance it cannot reach is reported as `converged = false`.
/// With a ridge ([`Expert::ridge`] $\lambda > 0$) it minimises $f = -(Q - R)/W$, $R$ the
/// ridge on the regressed coefficients ([`Expert::penalty`]'s default), whose optimum is
/// finite even then.
///
/// # Errors
/// `InvalidParam { name: "expert" }` for an expert whose parameters are not the GLM layout
/// of the [module documentation](self) (e.g. a diagonal [`GaussianCluster`]);
/// `InvalidParam`/`InvalidData` for bad weights or targets; `NonFinite` for a start
/// outside the natural domain or non-finite derivatives; `NotPositiveDefinite
/// { block: Block::Expert(None), pivot: 0 }` when all weights are zero, or `pivot` when
/// even the largest shift leaves the Hessian singular.
pub fn glm_newton<E: Expert + ?Sized>(
    expert: &E,
    fit: WeightedFit<'_>,
    out: &mut [f64],
    budget: InnerBudget,
) -> Result<InnerStats> {
    glm_fit(expert, fit, out, GlmSolve::Newton(budget))
}

/// The weighted M-step of an expert in the GLM layout by `solve`: [`glm_newton`]'s checks,
/// then [`GlmSolve::Newton`] (as [`glm_newton`]) or [`GlmSolve::Lbfgs`] on the same
/// $f = -(Q - R)/W$, each evaluation one pass ([`glm_round`]) — the driver the sharded
/// M-step ([`crate::shard`]) runs on merged statistics.
///
/// # Errors
/// As [`glm_newton`]; with L-BFGS also `LeftDomain` when the iterates run off to infinity
/// and `InvalidParam { name: "lbfgs budget" }` for a tolerance $\le 0$ or a cap of 0.
pub fn glm_fit<E: Expert + ?Sized>(
    expert: &E,
    fit: WeightedFit<'_>,
    out: &mut [f64],
    solve: GlmSolve,
) -> Result<InnerStats> {
    let (_, wsum) = check_weighted_fit(expert, fit, out)?;
    check_glm_layout(expert, fit.data.d())?;
    let WeightedFit {
        data,
        weights,
        start,
    } = fit;
    let ridge = (expert.ridge(), expert.n_regressed() * data.d());
    glm_solve_by_rounds(solve, wsum, data.n(), start, out, ridge, &mut |x, need| {
        expert.weighted_round(data, weights, x, need)
    })
}

/// One pass of an expert's weighted fit at parameters $\vartheta$: the rows'
/// [`NewtonSums`] of $Q(\vartheta)$ with the derivatives `need` asks for (`None`: the value
/// only), from rows in memory or merged from shards.
pub(crate) type ExpertRound<'r> = dyn FnMut(&[f64], Option<Need>) -> Result<NewtonSums> + 'r;

/// The Newton solve of [`glm_newton`] over `n` rows of total weight `wsum` whose passes
/// `round` makes ([`glm_solve_by_rounds`] has checked the start):
/// [`mirror::newton::minimize`] on $f = -(Q - R)/W$ ([`NewtonSums::add_ridge`] with
/// `ridge` = ($\lambda$, number of penalised leading coordinates), then
/// [`NewtonSums::eval`]) with the Levenberg shift. The in-memory M-step and the sharded one ([`crate::shard`]) both run this.
///
/// # Errors
/// As [`glm_newton`].
pub(crate) fn glm_newton_by_rounds(
    wsum: f64,
    n: usize,
    start: &[f64],
    out: &mut [f64],
    budget: InnerBudget,
    ridge: (f64, usize),
    round: &mut ExpertRound<'_>,
) -> Result<InnerStats> {
    let settings = newton_settings(budget.tol, budget.max_iter)?.with_shift_singular(true);
    out.copy_from_slice(start);
    let mut eval = |x: &[f64], need, ev: &mut EvalOut<'_>| {
        let mut sums = round(x, Some(need))?;
        sums.add_ridge(ridge.0, ridge.1);
        sums.eval(wsum, n, need, ev);
        Ok::<(), MoeError>(())
    };
    // The start's pass checks the domain (f = +∞ outside) and is the driver's first
    // evaluation: one pass, not a value-only check followed by the same pass with
    // derivatives.
    let dim = start.len();
    let (mut grad, mut hess) = (vec![0.0; dim], Mat::<f64>::zeros(dim, dim));
    let mut ev = EvalOut {
        value: f64::NAN,
        noise: 0.0,
        grad: &mut grad,
        hess: hess.as_mut(),
    };
    eval(start, Need::Hessian, &mut ev)?;
    if ev.value == f64::INFINITY {
        return Err(outside_at_start());
    }
    let initial = InitialEval {
        x: start,
        value: ev.value,
        noise: ev.noise,
        grad: &grad,
        hess: hess.as_ref(),
    };
    let mut obj = FnObjective::new(dim, &mut eval);
    let rep = minimize(&mut obj, out, &settings, Some(initial))
        .map_err(|e| e.in_block(Block::Expert(None)))?;
    Ok(inner_stats(&rep))
}

/// [`glm_fit`]'s solve over `n` rows of total weight `wsum` whose passes `round` makes:
/// refuses a start outside the natural domain, then [`glm_newton_by_rounds`] or its
/// L-BFGS counterpart, both on $f = -(Q - R)/W$.
///
/// # Errors
/// As [`glm_fit`].
pub(crate) fn glm_solve_by_rounds(
    solve: GlmSolve,
    wsum: f64,
    n: usize,
    start: &[f64],
    out: &mut [f64],
    ridge: (f64, usize),
    round: &mut ExpertRound<'_>,
) -> Result<InnerStats> {
    // A start outside the natural domain is refused before either solver steps (Newton
    // checks it on its first pass, which it needs anyway).
    match solve {
        GlmSolve::Newton(b) => glm_newton_by_rounds(wsum, n, start, out, b, ridge, round),
        GlmSolve::Lbfgs(b) => {
            if round(start, None)?.outside {
                return Err(outside_at_start());
            }
            glm_lbfgs_by_rounds(wsum, n, start, out, b, ridge, round)
        }
    }
}

/// The error for an M-step started outside the natural domain.
fn outside_at_start() -> MoeError {
    MoeError::NonFinite {
        what: "expert log-partition in the M-step",
    }
}

/// L-BFGS ([`crate::inner::lbfgs::Lbfgs`]) on $f = -(Q - R)/W$ from `start`, each
/// evaluation a value-and-gradient round; stops at $\|\nabla f\|_\infty \le$
/// `budget.tol` or after `budget.max_iter` iterations (reported, not an error).
///
/// # Errors
/// As [`glm_solve_by_rounds`].
fn glm_lbfgs_by_rounds(
    wsum: f64,
    n: usize,
    start: &[f64],
    out: &mut [f64],
    budget: InnerBudget,
    ridge: (f64, usize),
    round: &mut ExpertRound<'_>,
) -> Result<InnerStats> {
    if !(budget.tol > 0.0 && budget.tol.is_finite() && budget.max_iter >= 1) {
        return Err(MoeError::InvalidParam {
            name: "lbfgs budget",
            reason: format!(
                "need tol > 0 (finite) and max_iter >= 1, got {} and {}",
                budget.tol, budget.max_iter
            ),
        });
    }
    let solver = crate::inner::lbfgs::Lbfgs {
        grad_tol: budget.tol,
        max_iter: usize::try_from(budget.max_iter).unwrap_or(usize::MAX),
        ..crate::inner::lbfgs::Lbfgs::default()
    };
    out.copy_from_slice(start);
    let mut ev_hess = faer::Mat::<f64>::zeros(0, 0);
    let rep = solver.minimize(
        |x, g| {
            let mut sums = round(x, Some(Need::Gradient))?;
            if sums.outside {
                // A trial point outside the domain: the line search shrinks the step.
                return Err(MoeError::NonFinite {
                    what: "expert log-partition in the M-step",
                });
            }
            sums.add_ridge(ridge.0, ridge.1);
            let mut ev = EvalOut {
                value: 0.0,
                noise: 0.0,
                grad: g,
                hess: ev_hess.as_mut(),
            };
            sums.eval(wsum, n, Need::Gradient, &mut ev);
            Ok(ev.value)
        },
        out,
    )?;
    Ok(InnerStats::from(&rep))
}

/// [`NewtonSettings`] with tolerance `tol` and step cap `max_iter` (the driver's other
/// defaults).
///
/// # Errors
/// `InvalidParam { name: "newton settings" }` for a tolerance that is not finite and
/// $> 0$, or a cap of 0.
pub(crate) fn newton_settings(tol: f64, max_iter: u64) -> Result<NewtonSettings> {
    NewtonSettings::new(tol, usize::try_from(max_iter).unwrap_or(usize::MAX)).map_err(|e| {
        MoeError::InvalidParam {
            name: "newton settings",
            reason: e.to_string(),
        }
    })
}

/// [`InnerStats`] of one [`minimize`] run: accepted steps, final residual, converged,
/// Hessians formed, and the Levenberg-shifted factorisations as fallbacks.
pub(crate) fn inner_stats(rep: &NewtonReport) -> InnerStats {
    InnerStats {
        iterations: rep.iterations as u64,
        residual: rep.residual,
        converged: rep.converged,
        hessians: rep.hessians as u64,
        fallbacks: rep.shifted as u64,
    }
}

/// A ridge $\lambda$ as the experts' `with_ridge` take it.
///
/// # Errors
/// `InvalidParam { name: "ridge" }` unless $\lambda$ is finite and $\ge 0$.
pub(crate) fn check_ridge(ridge: f64) -> Result<f64> {
    if ridge.is_finite() && ridge >= 0.0 {
        Ok(ridge)
    } else {
        Err(MoeError::InvalidParam {
            name: "ridge",
            reason: format!("finite and >= 0, got {ridge}"),
        })
    }
}

/// An expert's name with its ridge when it has one: `logistic(ridge=0.5)`.
pub(crate) fn with_ridge_name(name: &str, ridge: f64) -> String {
    if ridge > 0.0 {
        format!("{name}(ridge={ridge})")
    } else {
        name.to_string()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inner::softmax::{Labels, SoftmaxRegression};
    use mirror::special::sigmoid;
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
        lg.weighted_fit(
            WeightedFit::new(&ds, &w, &[0.0, 0.0, 0.0, -0.5]),
            &mut closed,
        )
        .unwrap();
        // The generic Newton on the same concave objective (independent path).
        let mut newton = vec![0.0; 4];
        let st = glm_newton(
            &lg,
            WeightedFit::new(&ds, &w, &[0.0, 0.0, 0.0, -0.5]),
            &mut newton,
            InnerBudget::new(1e-11, 100),
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
        let st = e
            .weighted_fit(WeightedFit::new(&ds, &w, &[0.0, 0.0]), &mut out)
            .unwrap();
        assert!(st.converged && st.residual <= INNER_TOL && st.iterations > 0);
        let q = |p: &[f64]| glm_pass(&e, &ds, &w, p, None).unwrap().q;
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
        let sd = glm_newton(
            &e,
            WeightedFit::new(&ds, &w, &start),
            &mut dense,
            InnerBudget::EXACT,
        )
        .unwrap();
        assert!(sd.converged && sd.hessians > 0);
        let mut fast = vec![0.0; np];
        let sf = e
            .weighted_fit(WeightedFit::new(&ds, &w, &start), &mut fast)
            .unwrap();
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
        let sa = e
            .weighted_fit(WeightedFit::new(&ds, &w, &[0.0; 8]), &mut a)
            .unwrap();
        let sb = e
            .fit_by(
                GlmSolve::Newton(InnerBudget::EXACT),
                WeightedFit::new(&ds, &w, &[0.0; 8]),
                &mut b,
            )
            .unwrap();
        assert_eq!((&a, sa.clone()), (&b, sb));
        assert!(sa.converged && sa.hessians > 0);
        // Stationary by the independent objective (generic family calls).
        let (_, g) = generic_objective(&e, &ds, &w, &a);
        assert!(g.iter().all(|v| v.abs() < 1e-9), "{g:?}");
        // The gate's softmax solver (Hessian from weighted Gram blocks, an independent
        // assembly) reaches the same maximiser.
        let reg = SoftmaxRegression::new(&ds, 3, Labels::Classes, Some(&w)).unwrap();
        let mut c = vec![0.0; 8];
        let settings = newton_settings(1e-12, 50).unwrap();
        reg.newton(&mut c, &settings, None).unwrap();
        // (Both stop at gradients ~1e-10; the Hessian's smallest eigenvalue ~0.05 turns
        // that into parameter differences of a few 1e-9.)
        for (x, y) in a.iter().zip(&c) {
            assert!((x - y).abs() < 1e-7 * (1.0 + y.abs()), "{a:?} vs {c:?}");
        }
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
            .weighted_fit(WeightedFit::new(&sep, &ones, &vec![0.0; np]), &mut out)
            .unwrap();
        assert!(s.residual <= MULTINOMIAL_LBFGS_TOL && s.converged, "{s:?}");
        let mut g = vec![0.0; np];
        let f_end = e.weighted_objective(&sep, &ones, &out, &mut g).unwrap();
        assert!(out.iter().all(|v| v.is_finite()) && f_end < 1e-6, "{f_end}");
        let s = e
            .fit_by(
                GlmSolve::Lbfgs(InnerBudget::new(MULTINOMIAL_LBFGS_TOL, 3)),
                WeightedFit::new(&sep, &ones, &vec![0.0; np]),
                &mut out,
            )
            .unwrap();
        assert!(!s.converged && s.iterations == 3 && s.residual > MULTINOMIAL_LBFGS_TOL);
        assert!(matches!(
            e.fit_by(
                GlmSolve::Lbfgs(InnerBudget::new(0.0, 3)),
                WeightedFit::new(&sep, &ones, &vec![0.0; np]),
                &mut out
            ),
            Err(MoeError::InvalidParam { .. })
        ));
        let err = e
            .weighted_fit(
                WeightedFit::new(&sep, &vec![0.0; n], &vec![0.0; np]),
                &mut out,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            MoeError::NotPositiveDefinite {
                block: Block::Expert(None),
                pivot: 0
            }
        ));
    }

    #[test]
    fn blocked_rounds_give_the_generic_sums() {
        // Logistic and multinomial override `weighted_round` with the softmax regression's
        // blocked pass; the generic per-row pass (`glm_round`) is the independent check:
        // the value, the gradient and the lower triangle of the Hessian agree, also on a
        // shard whose rows carry no weight.
        let (n, d) = (700, 4);
        let cases: Vec<(Box<dyn Expert>, Dataset)> = vec![
            (
                Box::new(Logistic::new()),
                data(n, d, 31, |x, rng| {
                    let u: f64 = rand::Rng::random(rng);
                    f64::from(u < sigmoid(x[1] - 0.5 * x[2]))
                }),
            ),
            (
                Box::new(Multinomial::new(3).unwrap()),
                multinomial_data(n, d, 3, 0.8, 32),
            ),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(33);
        for (e, ds) in cases {
            let np = e.n_params(d);
            let params: Vec<f64> = (0..np)
                .map(|_| 0.7 * Distribution::<f64>::sample(&StandardNormal, &mut rng))
                .collect();
            let w: Vec<f64> = (0..n).map(|_| rand::Rng::random(&mut rng)).collect();
            for weights in [w, vec![0.0; n]] {
                for need in [None, Some(Need::Gradient), Some(Need::Hessian)] {
                    let fast = e.weighted_round(&ds, &weights, &params, need).unwrap();
                    let slow = glm_round(e.as_ref(), &ds, &weights, &params, need).unwrap();
                    let tol = |a: f64| 1e-11 * (1.0 + a.abs());
                    assert!((fast.q - slow.q).abs() <= tol(slow.q), "{}", e.name());
                    assert!(!fast.outside && !slow.outside);
                    if need.is_some() {
                        for (a, b) in fast.grad.iter().zip(&slow.grad) {
                            assert!((a - b).abs() <= tol(*b), "{}: {a} vs {b}", e.name());
                        }
                    }
                    if need == Some(Need::Hessian) {
                        for a in 0..np {
                            for b in 0..=a {
                                let (x, y) = (fast.hess[a * np + b], slow.hess[a * np + b]);
                                assert!((x - y).abs() <= tol(y), "{} ({a},{b})", e.name());
                            }
                        }
                    }
                }
            }
        }
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
            .weighted_fit(WeightedFit::new(&ds, &[1.0; 3], &[0.0]), &mut out)
            .unwrap_err();
        assert!(matches!(e, MoeError::InvalidData { row: Some(1), .. }));
        let ds = Dataset::from_rows(&[1.0, 1.0], 1, &[0.0, 1.0], 1).unwrap();
        let e = Logistic::new()
            .weighted_fit(WeightedFit::new(&ds, &[0.0, 0.0], &[0.0]), &mut out)
            .unwrap_err();
        assert!(matches!(e, MoeError::NotPositiveDefinite { .. }));
        let e = Logistic::new()
            .weighted_fit(WeightedFit::new(&ds, &[1.0, -1.0], &[0.0]), &mut out)
            .unwrap_err();
        assert!(matches!(e, MoeError::InvalidData { row: Some(1), .. }));
    }
}
