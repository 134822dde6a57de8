//! Mixtures of experts as conditional exponential families.
//!
//! **Model.** $K$ experts of one [`Expert`] type with family $F$ (natural dimension $p$,
//! statistic $T_F$, log-partition $A_F$), gate logits $g_k(x)$ (softmax gate
//! $g_k = w_k^\top x$ with $w_{K-1} = 0$, or constant logits for a mixture of regressions),
//! $$ p(y \mid x;\theta) = \sum_k \pi_k(x)\, p_F\big(y;\eta_k(x)\big),\qquad
//!    \pi_k(x) = \operatorname{softmax}_k g(x). $$
//!
//! **Complete-data family** ([`MixtureFamily`], over the observation $(y, z)$):
//! $$ T(y, z) = (e_z,\ e_z\otimes T_F(y)),\qquad h(y,z) = h_F(y),\qquad
//!    \varphi = (a_0, \dots, a_{K-1}, \eta_0, \dots, \eta_{K-1}), $$
//! $$ A(\varphi) = \operatorname{LSE}_k\big(a_k + A_F(\eta_k)\big),\qquad
//!    \nabla A(\varphi) = (\rho_k,\ \rho_k\nabla A_F(\eta_k))_k,\quad
//!    \rho = \operatorname{softmax}_k(a_k + A_F(\eta_k)), $$
//! $$ \nabla^2 A(\varphi) = \operatorname{blockdiag}_k\Big(\rho_k\begin{pmatrix}1 & \mu_k^\top\\
//!    \mu_k & \nabla^2A_F(\eta_k) + \mu_k\mu_k^\top\end{pmatrix}\Big) - \nabla A\,\nabla A^\top
//!    \quad(\mu_k = \nabla A_F(\eta_k), \text{ rows/cols regrouped}). $$
//! With all $K$ indicators the family is **not minimal** in the $a$-part (adding a constant
//! to every $a_k$ leaves the law unchanged), so $\nabla^2 A$ is singular along
//! $(1, \dots, 1, 0)$ and $\nabla A^*$ returns the representative with $A(\varphi) = 0$.
//!
//! **Realisation** ([`MixtureOfExperts`] as a [`ConditionalFamily`]):
//! $\eta_k = \eta_k(x_i)$ the expert's natural parameter and
//! $a_k = g_k(x_i) - A_F(\eta_k)$, so that $A(\varphi_i) = \operatorname{LSE}_k g_k(x_i)$ and
//! $p(z = k \mid x_i) = \pi_k(x_i)$. This map is curved in the expert parameters (for
//! linear experts $a_k$ contains $-(\gamma_k^\top x)^2/(4\tau_k)$).
//!
//! **Parameter layout** (flattened $\theta$): the gate block — $(K-1)d$ values
//! $(w_0, \dots, w_{K-2})$ for [`Gating::Softmax`], $K-1$ logits for [`Gating::Constant`] —
//! then the $K$ expert blocks of [`Expert::n_params`]$(d)$ values each.

mod family;
mod information;
mod rows;
pub(crate) mod steps;

pub use family::MixtureFamily;
pub use steps::{ClusterStats, LinearStats, MoeStats};

use crate::error::{MoeError, RegistryError, Result};
use crate::model::conditional::JacT;
use crate::model::expert::{Expert, ExpertSpec};
use crate::model::gate::{softmax_gate_logits, GateConfig};
use crate::model::ConditionalFamily;
use mirror::special::{log_sum_exp, softmax_in_place};
use mirror::ExponentialFamily;
use rand::{Rng, RngCore};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How the mixing weights depend on $x$.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gating {
    /// Softmax gate on the features, reference expert $K-1$.
    Softmax,
    /// Mixing weights independent of $x$ (mixture of regressions): $K-1$ logits.
    Constant,
}

/// The serialisable description of a mixture of experts (model I/O): the expert's
/// [`ExpertSpec`] (rebuilt through the [registry](crate::model::registry)), $K$, $d$ and
/// the gating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoeSpec {
    /// The expert's description.
    pub expert: ExpertSpec,
    /// $K$.
    pub n_experts: usize,
    /// $d$ (including an intercept column if the data has one).
    pub n_features: usize,
    /// The gating.
    pub gating: Gating,
}

/// Expert natural dimensions up to this use stack buffers in `realise_vjp`.
const STACK_P: usize = 8;

/// Runs `f` on column `r` of a zeroed `jac`: in place when the column is contiguous,
/// otherwise through the zeroed buffer `row` (copied back).
fn with_column(
    mut jac: faer::MatMut<'_, f64>,
    r: usize,
    row: &mut [f64],
    f: impl FnOnce(&mut [f64]),
) {
    if let Some(col) = jac.as_mut().col_mut(r).try_as_col_major_mut() {
        f(col.as_slice_mut());
        return;
    }
    row.fill(0.0);
    f(row);
    for (i, v) in row.iter().enumerate() {
        jac[(i, r)] = *v;
    }
}

pub(crate) fn draw_index(probs: &[f64], rng: &mut dyn RngCore) -> usize {
    let u: f64 = rng.random::<f64>();
    let mut acc = 0.0;
    for (j, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return j;
        }
    }
    probs
        .iter()
        .rposition(|p| *p > 0.0)
        .unwrap_or(probs.len() - 1)
}

/// A mixture of $K$ experts with softmax or constant gating; see the
/// [module documentation](self).
#[derive(Debug, Clone)]
pub struct MixtureOfExperts {
    expert: Arc<dyn Expert>,
    k: usize,
    d: usize,
    gating: Gating,
    family: MixtureFamily,
    gate_config: GateConfig,
}

impl MixtureOfExperts {
    /// $K$ experts of type `expert` on $d$ features.
    ///
    /// # Errors
    /// `InvalidParam { name: "n_experts" }` if $K = 0$, `InvalidParam { name: "n_features" }`
    /// if $d = 0$.
    pub fn new(
        expert: Arc<dyn Expert>,
        n_experts: usize,
        n_features: usize,
        gating: Gating,
    ) -> Result<Self> {
        if n_features == 0 {
            return Err(MoeError::InvalidParam {
                name: "n_features",
                reason: "at least one feature (use an intercept column for a plain mixture)".into(),
            });
        }
        let family = MixtureFamily::new(expert.clone(), n_experts)?;
        Ok(MixtureOfExperts {
            expert,
            k: n_experts,
            d: n_features,
            gating,
            family,
            gate_config: GateConfig::default(),
        })
    }
    /// The same model with the softmax gate's M-step run with `cfg` (tolerance, step cap,
    /// Hessian reuse, solver) instead of [`GateConfig::default`].
    ///
    /// ```
    /// use em_as_md::{GateConfig, GateSolver, Gating, LinearGaussian, MixtureOfExperts};
    /// use std::sync::Arc;
    ///
    /// // Plain Newton (a fresh Hessian every step), to a looser tolerance…
    /// let newton = MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 3, 4, Gating::Softmax)?
    ///     .with_gate_config(GateConfig { reuse_below: 0.0, tol: 1e-8, ..GateConfig::default() })?;
    /// assert_eq!(newton.gate_config().reuse_below, 0.0);
    /// // …or L-BFGS with a loose budget: an inexact (generalised-EM) M-step, reported
    /// // per iteration in `InnerStats`.
    /// let gem = newton.clone().with_gate_config(GateConfig {
    ///     solver: GateSolver::Lbfgs,
    ///     tol: 1e-5,
    ///     max_iter: 25,
    ///     ..GateConfig::default()
    /// })?;
    /// assert_eq!(gem.gate_config().solver, GateSolver::Lbfgs);
    /// // Settings out of range are typed errors.
    /// assert!(gem.with_gate_config(GateConfig { tol: -1.0, ..GateConfig::default() }).is_err());
    /// # Ok::<(), em_as_md::MoeError>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidParam { name: "gate config" }` for a setting [`GateConfig::check`] rejects.
    pub fn with_gate_config(mut self, cfg: GateConfig) -> Result<Self> {
        cfg.check()?;
        self.gate_config = cfg;
        Ok(self)
    }
    /// The settings of the gate's M-step. [`crate::fit::io`] saves them in the model file's
    /// `fitting` section, so a reloaded model keeps them (a file written before that
    /// section existed loads with [`GateConfig::default`]).
    pub fn gate_config(&self) -> GateConfig {
        self.gate_config
    }
    /// Builds the model from its serialisable description (the expert through
    /// [`registry::build_expert`](crate::model::registry::build_expert)), with the default
    /// gate settings.
    ///
    /// # Errors
    /// As [`new`](Self::new) and [`registry::build_expert`](crate::model::registry::build_expert)
    /// (e.g. [`RegistryError::UnknownFamily`] for a `glm` on an unregistered family).
    pub fn from_spec(spec: &MoeSpec) -> Result<Self> {
        MixtureOfExperts::new(
            crate::model::registry::build_expert(&spec.expert)?,
            spec.n_experts,
            spec.n_features,
            spec.gating,
        )
    }
    /// The serialisable description.
    ///
    /// # Errors
    /// [`RegistryError::NotSerialisable`] naming the expert when it has no description
    /// ([`Expert::spec`] is `None`, e.g. a [`Glm`](crate::model::expert::Glm) on an
    /// unregistered family value) or a non-finite number in it.
    pub fn spec(&self) -> Result<MoeSpec> {
        let expert = self
            .expert
            .spec()
            .ok_or_else(|| RegistryError::NotSerialisable {
                expert: self.expert.name(),
                reason: "it has no description (Expert::spec is None); implement Expert::spec and \
                     register a builder, or build a Glm with Glm::registered"
                    .into(),
            })?;
        if !expert.all_finite() {
            return Err(RegistryError::NotSerialisable {
                expert: self.expert.name(),
                reason: format!("its description has a non-finite number: {expert:?}"),
            }
            .into());
        }
        Ok(MoeSpec {
            expert,
            n_experts: self.k,
            n_features: self.d,
            gating: self.gating,
        })
    }
    /// $K$.
    pub fn n_experts(&self) -> usize {
        self.k
    }
    /// The expert type.
    pub fn expert(&self) -> &Arc<dyn Expert> {
        &self.expert
    }
    /// The gating.
    pub fn gating(&self) -> Gating {
        self.gating
    }
    /// The complete-data family.
    pub fn mixture_family(&self) -> &MixtureFamily {
        &self.family
    }
    /// Length of the gate block.
    pub fn gate_len(&self) -> usize {
        match self.gating {
            Gating::Softmax => (self.k - 1) * self.d,
            Gating::Constant => self.k - 1,
        }
    }
    /// Length of one expert block.
    pub fn expert_len(&self) -> usize {
        self.expert.n_params(self.d)
    }
    /// The gate block of $\theta$.
    pub fn gate_block<'a>(&self, theta: &'a [f64]) -> &'a [f64] {
        &theta[..self.gate_len()]
    }
    /// Expert $k$'s block of $\theta$.
    pub fn expert_block<'a>(&self, theta: &'a [f64], k: usize) -> &'a [f64] {
        let s = self.gate_len() + k * self.expert_len();
        &theta[s..s + self.expert_len()]
    }
    /// Mutable expert block.
    pub fn expert_block_mut<'a>(&self, theta: &'a mut [f64], k: usize) -> &'a mut [f64] {
        let s = self.gate_len() + k * self.expert_len();
        let e = self.expert_len();
        &mut theta[s..s + e]
    }
    /// Gate logits $g_k(x)$ (length $K$, $g_{K-1} = 0$).
    pub fn gate_logits(&self, theta: &[f64], x: &[f64], out: &mut [f64]) {
        let w = self.gate_block(theta);
        match self.gating {
            Gating::Softmax => softmax_gate_logits(w, x, out),
            Gating::Constant => {
                out[..self.k - 1].copy_from_slice(w);
                out[self.k - 1] = 0.0;
            }
        }
    }
    /// Gate probabilities $\pi_k(x)$.
    pub fn gate_probs(&self, theta: &[f64], x: &[f64], out: &mut [f64]) {
        self.gate_logits(theta, x, out);
        softmax_in_place(out);
    }
    /// Expert $k$'s natural parameter $\eta_k(x)$.
    pub fn expert_natural(&self, theta: &[f64], k: usize, x: &[f64], eta: &mut [f64]) {
        self.expert.natural(self.expert_block(theta, k), x, eta);
    }
    /// $\log p(y \mid x;\theta) = \operatorname{LSE}_k\big(\log\pi_k(x) + \log p_F(y;\eta_k(x))\big)$.
    ///
    /// # Errors
    /// `Mirror` if an expert's natural parameter leaves its domain; `InvalidParam` on a
    /// wrong length.
    pub fn log_predictive(&self, theta: &[f64], x: &[f64], y: &[f64]) -> Result<f64> {
        self.check_theta(theta)?;
        let mut g = vec![0.0; self.k];
        self.gate_logits(theta, x, &mut g);
        let lse = log_sum_exp(&g);
        let mut eta = vec![0.0; self.family.p()];
        for (k, gk) in g.iter_mut().enumerate() {
            self.expert_natural(theta, k, x, &mut eta);
            *gk += self.expert.family().log_density(&eta, y)? - lse;
        }
        Ok(log_sum_exp(&g))
    }
    /// Draws $(y, z)$ given $x$: $z \sim \pi(x)$, $y \sim F(\eta_z(x))$.
    ///
    /// # Errors
    /// As the family's sampler; `InvalidParam` on a wrong length.
    pub fn sample(
        &self,
        theta: &[f64],
        x: &[f64],
        rng: &mut dyn RngCore,
    ) -> Result<(Vec<f64>, usize)> {
        self.check_theta(theta)?;
        let (mut pi, mut eta) = (vec![0.0; self.k], vec![0.0; self.family.p()]);
        let mut y = vec![0.0; self.family.q()];
        let z = self.sample_into(theta, x, rng, &mut pi, &mut eta, &mut y)?;
        Ok((y, z))
    }
    /// [`sample`](Self::sample) into caller buffers (`pi`: $K$, `eta`: the family's
    /// dimension, `y`: $q$), for generators that draw many rows without allocating;
    /// returns $z$. θ is not checked.
    pub(crate) fn sample_into(
        &self,
        theta: &[f64],
        x: &[f64],
        rng: &mut dyn RngCore,
        pi: &mut [f64],
        eta: &mut [f64],
        y: &mut [f64],
    ) -> Result<usize> {
        self.gate_probs(theta, x, pi);
        let z = draw_index(pi, rng);
        self.expert_natural(theta, z, x, eta);
        self.expert.family().sample(eta, rng, y)?;
        Ok(z)
    }
    /// Random parameters: gate entries $\sim N(0, \text{scale}^2)$, experts from
    /// [`Expert::init_params`].
    pub fn random_params(&self, rng: &mut dyn RngCore, scale: f64) -> Vec<f64> {
        let mut theta = vec![0.0; self.n_params()];
        for v in theta[..self.gate_len()].iter_mut() {
            let z: f64 = StandardNormal.sample(rng);
            *v = scale * z;
        }
        for k in 0..self.k {
            let d = self.d;
            let e = self.expert.clone();
            e.init_params(d, rng, scale, self.expert_block_mut(&mut theta, k));
        }
        theta
    }
    pub(crate) fn check_theta(&self, theta: &[f64]) -> Result<()> {
        if theta.len() != self.n_params() {
            return Err(MoeError::InvalidParam {
                name: "theta",
                reason: format!(
                    "expected {} parameters, found {}",
                    self.n_params(),
                    theta.len()
                ),
            });
        }
        Ok(())
    }
}

impl ConditionalFamily for MixtureOfExperts {
    fn complete(&self) -> &dyn ExponentialFamily {
        &self.family
    }
    fn n_latent(&self) -> usize {
        self.k
    }
    fn n_params(&self) -> usize {
        self.gate_len() + self.k * self.expert_len()
    }
    fn n_features(&self) -> usize {
        self.d
    }
    /// $R(\theta) = \frac{\lambda_g}2\|W\|^2 + \sum_k R_k(\vartheta_k)$: the softmax
    /// gate's ridge ([`GateConfig::ridge`]; none for a constant gate) and every expert's
    /// [`Expert::penalty`]. Zero unless a ridge is set.
    fn penalty(&self, theta: &[f64]) -> f64 {
        let gate = match self.gating {
            Gating::Softmax => {
                crate::inner::sums::ridge_penalty(self.gate_config.ridge, self.gate_block(theta))
            }
            Gating::Constant => 0.0,
        };
        (0..self.k).fold(gate, |acc, c| {
            acc + self.expert.penalty(self.expert_block(theta, c), self.d)
        })
    }
    fn penalty_gradient(&self, theta: &[f64], grad: &mut [f64]) {
        let gl = self.gate_len();
        let lambda = self.gate_config.ridge;
        if self.gating == Gating::Softmax && lambda > 0.0 {
            for (g, w) in grad[..gl].iter_mut().zip(&theta[..gl]) {
                *g += lambda * w;
            }
        }
        let el = self.expert_len();
        for c in 0..self.k {
            let range = gl + c * el..gl + (c + 1) * el;
            self.expert
                .penalty_gradient(&theta[range.clone()], self.d, &mut grad[range]);
        }
    }
    fn is_penalised(&self) -> bool {
        (self.gating == Gating::Softmax && self.gate_config.ridge > 0.0)
            || self.expert.ridge() > 0.0
    }
    /// $\varphi_i = (g_k(x_i) - A_F(\eta_k(x_i)),\ \eta_k(x_i))_k$; an expert parameter
    /// outside $F$'s domain gives $a_k = $ NaN (rejected downstream by the domain checks).
    fn realise(&self, theta: &[f64], x: &[f64], phi: &mut [f64]) {
        let (k, p) = (self.k, self.family.p());
        self.gate_logits(theta, x, &mut phi[..k]);
        for c in 0..k {
            let eta = &mut phi[k + c * p..k + (c + 1) * p];
            self.expert.natural(self.expert_block(theta, c), x, eta);
            let a = self.expert.family().log_partition(eta).unwrap_or(f64::NAN);
            phi[c] -= a;
        }
    }
    /// $\nabla_{w_k} \mathrel{+}= v_{a_k} x$ (softmax gate) or $\nabla_{a_k} \mathrel{+}= v_{a_k}$
    /// (constant), and for expert $k$ the expert VJP of
    /// $v_{\eta_k} - v_{a_k}\nabla A_F(\eta_k)$.
    fn realise_vjp(&self, theta: &[f64], x: &[f64], v: &[f64], grad: &mut [f64]) {
        let (k, p, d) = (self.k, self.family.p(), self.d);
        let gl = self.gate_len();
        for c in 0..k - 1 {
            match self.gating {
                Gating::Softmax => {
                    for (g, xa) in grad[c * d..(c + 1) * d].iter_mut().zip(x) {
                        *g += v[c] * xa;
                    }
                }
                Gating::Constant => grad[c] += v[c],
            }
        }
        // Stack buffers for the built-in experts (p ≤ STACK_P); heap only beyond.
        let (mut eta_s, mut mu_s) = ([0.0; STACK_P], [0.0; STACK_P]);
        let (mut eta_h, mut mu_h) = (Vec::new(), Vec::new());
        let (eta, mu) = if p <= STACK_P {
            (&mut eta_s[..p], &mut mu_s[..p])
        } else {
            eta_h.resize(p, 0.0);
            mu_h.resize(p, 0.0);
            (&mut eta_h[..], &mut mu_h[..])
        };
        let el = self.expert_len();
        for c in 0..k {
            let block = self.expert_block(theta, c);
            self.expert.natural(block, x, eta);
            if self.expert.family().mean(eta, mu).is_err() {
                mu.iter_mut().for_each(|m| *m = f64::NAN);
            }
            let vv = &v[k + c * p..k + (c + 1) * p];
            for j in 0..p {
                mu[j] = vv[j] - v[c] * mu[j];
            }
            let s = gl + c * el;
            self.expert.natural_vjp(block, x, mu, &mut grad[s..s + el]);
        }
    }
    /// The E-step's pass ([`EmModel::e_step`](crate::EmModel::e_step)) computing only
    /// $\sum_i\log p(y_i\mid x_i)$: no responsibilities kept, no sums.
    fn objective_pass(&self, data: &crate::data::Dataset, theta: &[f64]) -> Option<Result<f64>> {
        Some(self.objective_by_e_pass(data, theta))
    }
    /// The mixture's own evaluator: each $A_F(\eta_k(x_i))$ once per row (not three
    /// times), $A(\varphi_i)$ and $\rho$ from one set of exponentials, the posterior from
    /// the log-sum-exp's exponentials, the expert's [`Expert::prepare`]d constants; the
    /// generic functions for anything irregular (so the same errors). `None` for a
    /// `theta` of the wrong length.
    fn point_rows<'a>(
        &'a self,
        theta: &'a [f64],
    ) -> Option<Box<dyn crate::solve::problem::PointRows + 'a>> {
        rows::MixtureRows::new(self, theta)
            .map(|r| Box::new(r) as Box<dyn crate::solve::problem::PointRows + 'a>)
    }
    /// Weighted Gram products over row chunks: with $J_i = C_iE_i$ ($E_i$ the expansion of
    /// each parameter block by $x_i$ or 1), $\sum_iJ_i^\top H_iJ_i$ is, per pair of blocks,
    /// $\sum_i G_i[b, b']\,x_ix_i^\top$ with closed-form $G_i = C_i^\top H_iC_i$ (for
    /// $\nabla^2A$: the gate's multinomial information and $\rho_k\nabla^2A_F(\eta_k)$ per
    /// expert; for $\mathrm{Cov}_{\text{post}}$: $(r_k\delta_{kl} - r_kr_l)$ times the
    /// complete-data scores). `None` for a Gaussian-cluster expert
    /// (its natural parameter is not in the default layout), a wrong-length `theta`, data
    /// of the wrong shape, or a row outside the natural domain.
    fn information_sums(
        &self,
        data: &crate::data::Dataset,
        theta: &[f64],
    ) -> Option<(faer::Mat<f64>, faer::Mat<f64>)> {
        self.information_sums_gram(data, theta)
    }
    /// [`information_sums`](ConditionalFamily::information_sums)' first matrix, by the
    /// same weighted Gram products without those of the missing information.
    fn complete_information_sums(
        &self,
        data: &crate::data::Dataset,
        theta: &[f64],
    ) -> Option<faer::Mat<f64>> {
        self.complete_information_sums_gram(data, theta)
    }
    /// $-\sum_i\sum_k(\rho_k - r_k)\,E_k^\top\nabla^2A_F(\eta_k)E_k$ ($a_k = g_k -
    /// A_F(\eta_k)$ is the only curved entry of $\varphi_i$, and $\rho_k - r_k$ its entry of
    /// $\nabla A - \mathbb E_{\text{post}}\[T\]$) as weighted Gram products, in one pass.
    /// `None` when [`information_sums`](ConditionalFamily::information_sums) is.
    fn curvature_sums(&self, data: &crate::data::Dataset, theta: &[f64]) -> Option<faer::Mat<f64>> {
        self.curvature_sums_gram(data, theta)
    }
    /// $L$'s row sums, $\sum_iJ_i^\top v_i$ and the three information matrices by the
    /// same weighted Gram products, in one pass; `None` when
    /// [`information_sums`](ConditionalFamily::information_sums) is.
    fn observed_sums(
        &self,
        data: &crate::data::Dataset,
        theta: &[f64],
    ) -> Option<crate::model::conditional::ObservedSums> {
        self.observed_sums_gram(data, theta)
    }
    /// [`MixtureFamily::work_len`], and at least $3p$ + `n_params()` for
    /// [`realise_jacobian_t`](ConditionalFamily::realise_jacobian_t).
    fn row_work_len(&self) -> usize {
        self.family
            .work_len()
            .max(3 * self.family.p() + self.n_params())
    }
    /// [`MixtureFamily::log_partition_with`].
    fn complete_log_partition(&self, phi: &[f64], work: &mut [f64]) -> mirror::Result<f64> {
        self.family.log_partition_with(phi, work)
    }
    /// [`MixtureFamily::mean_with`].
    fn complete_mean(&self, phi: &[f64], mu: &mut [f64], work: &mut [f64]) -> mirror::Result<()> {
        self.family.mean_with(phi, mu, work)
    }
    /// [`MixtureFamily::fisher_into`].
    fn complete_fisher(
        &self,
        phi: &[f64],
        out: faer::MatMut<'_, f64>,
        work: &mut [f64],
    ) -> mirror::Result<()> {
        self.family.fisher_into(phi, out, work)
    }
    /// The direct Jacobian, column $r$ of $J_i^\top$ being $\partial\varphi_{ir}/\partial\theta$:
    /// $$ \frac{\partial a_k}{\partial w_k} = x,\qquad
    ///    \frac{\partial a_k}{\partial\vartheta_k} = -\Big(\frac{\partial\eta_k}{\partial\vartheta_k}\Big)^{\!\top}
    ///    \nabla A_F(\eta_k),\qquad
    ///    \frac{\partial\eta_{kj}}{\partial\vartheta_k} = \Big(\frac{\partial\eta_k}{\partial\vartheta_k}\Big)^{\!\top} e_j $$
    /// ($\partial a_k/\partial\text{logit}_k = 1$ for constant gating; $w_{K-1}$ is not a
    /// parameter), every other entry zero. One expert mean per component instead of one
    /// per column, no allocation (`work` of length [`row_work_len`](ConditionalFamily::row_work_len));
    /// equal to the [`realise_vjp`](ConditionalFamily::realise_vjp)-built Jacobian
    /// (where every expert mean is defined).
    fn realise_jacobian_t(&self, theta: &[f64], x: &[f64], mut jac_t: JacT<'_>, work: &mut [f64]) {
        let (k, p, d) = (self.k, self.family.p(), self.d);
        let (gl, el, np) = (self.gate_len(), self.expert_len(), self.n_params());
        if work.len() < 3 * p + np {
            // A short buffer is the caller's mistake: fall back to a temporary one.
            let mut tmp = vec![0.0; 3 * p + np];
            return self.realise_jacobian_t(theta, x, jac_t, &mut tmp);
        }
        let (eta, rest) = work.split_at_mut(p);
        let (mu, rest) = rest.split_at_mut(p);
        let (e, rest) = rest.split_at_mut(p);
        let row = &mut rest[..np];
        jac_t.fill(0.0);
        e.fill(0.0);
        for c in 0..k {
            let block = self.expert_block(theta, c);
            self.expert.natural(block, x, eta);
            if self.expert.family().mean(eta, mu).is_err() {
                mu.iter_mut().for_each(|m| *m = f64::NAN);
            }
            mu.iter_mut().for_each(|m| *m = -*m);
            let s = gl + c * el;
            with_column(jac_t.as_mut(), c, row, |col| {
                if c + 1 < k {
                    match self.gating {
                        Gating::Softmax => col[c * d..(c + 1) * d].copy_from_slice(x),
                        Gating::Constant => col[c] = 1.0,
                    }
                }
                self.expert.natural_vjp(block, x, mu, &mut col[s..s + el]);
            });
            for j in 0..p {
                e[j] = 1.0;
                with_column(jac_t.as_mut(), k + c * p + j, row, |col| {
                    self.expert.natural_vjp(block, x, e, &mut col[s..s + el])
                });
                e[j] = 0.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::expert::{LinearGaussian, Logistic, Multinomial};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn send_sync_debug() {
        fn ok<T: Send + Sync + std::fmt::Debug>() {}
        ok::<MixtureOfExperts>();
        ok::<MixtureFamily>();
    }

    #[test]
    fn constructor_validates() {
        let e: Arc<dyn Expert> = Arc::new(LinearGaussian::new());
        assert!(matches!(
            MixtureOfExperts::new(e.clone(), 0, 2, Gating::Softmax),
            Err(MoeError::InvalidParam {
                name: "n_experts",
                ..
            })
        ));
        assert!(matches!(
            MixtureOfExperts::new(e, 2, 0, Gating::Softmax),
            Err(MoeError::InvalidParam {
                name: "n_features",
                ..
            })
        ));
    }

    #[test]
    fn gate_config_is_validated_and_kept() {
        let m =
            MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 3, 2, Gating::Softmax).unwrap();
        assert_eq!(m.gate_config(), GateConfig::default());
        let newton = GateConfig {
            reuse_below: 0.0,
            ..GateConfig::default()
        };
        let m = m.with_gate_config(newton).unwrap();
        assert_eq!(m.gate_config(), newton);
        for bad in [
            GateConfig { tol: 0.0, ..newton },
            GateConfig {
                max_iter: 0,
                ..newton
            },
            GateConfig {
                reuse_below: 1.0,
                ..newton
            },
        ] {
            assert!(matches!(
                m.clone().with_gate_config(bad),
                Err(MoeError::InvalidParam {
                    name: "gate config",
                    ..
                })
            ));
        }
    }

    #[test]
    fn spec_round_trip() {
        let m = MixtureOfExperts::new(
            Arc::new(Multinomial::new(3).unwrap()),
            2,
            4,
            Gating::Constant,
        )
        .unwrap();
        let spec = m.spec().unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        let back: MoeSpec = serde_json::from_str(&json).unwrap();
        let m2 = MixtureOfExperts::from_spec(&back).unwrap();
        assert_eq!(m2.spec().unwrap(), spec);
        assert_eq!(m2.n_params(), m.n_params());
        let g = crate::model::expert::Glm::new(Arc::new(mirror::Poisson::new()));
        let m = MixtureOfExperts::new(Arc::new(g), 2, 2, Gating::Softmax).unwrap();
        assert!(matches!(
            m.spec(),
            Err(MoeError::Registry(RegistryError::NotSerialisable { ref expert, .. }))
                if expert == "GLM(Poisson)"
        ));
    }

    #[test]
    fn realised_log_partition_is_gate_lse_and_posterior_prior_is_gate() {
        let m = MixtureOfExperts::new(Arc::new(Logistic::new()), 3, 2, Gating::Softmax).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let theta = m.random_params(&mut rng, 1.0);
        let x = [1.0, -0.7];
        let mut phi = vec![0.0; m.complete().dim()];
        m.realise(&theta, &x, &mut phi);
        let mut g = vec![0.0; 3];
        m.gate_logits(&theta, &x, &mut g);
        let a = m.complete().log_partition(&phi).unwrap();
        assert!((a - log_sum_exp(&g)).abs() < 1e-12);
        let mut mu = vec![0.0; m.complete().dim()];
        m.complete().mean(&phi, &mut mu).unwrap();
        let mut pi = vec![0.0; 3];
        m.gate_probs(&theta, &x, &mut pi);
        for k in 0..3 {
            assert!((mu[k] - pi[k]).abs() < 1e-12);
        }
    }
}
