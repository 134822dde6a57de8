//! The paper's two symmetric two-expert models, SymMoLinE and SymMoLogE
//! (Fruytier, Mokhtari & Sanghavi, ICML 2025, arXiv 2411.06056, Sections 4–5), as
//! first-class [`ConditionalFamily`]s.
//!
//! Both have two experts with parameters $\beta$ and $-\beta$ and one sigmoid gate
//! $P(z = 0\mid x) = \sigma(w^\top x)$; the parameters are $\theta = (\beta, w) \in
//! \mathbb R^{2d}$, flattened as `[β_1..β_d, w_1..w_d]`. Write $s_0 = +1$, $s_1 = -1$,
//! $u = w^\top x$ and $b = \beta^\top x$. Features are not given an intercept here
//! (the paper's $x \sim N(0, I_d)$); add one to the data if wanted, $d$ counts it.
//!
//! ## SymMoLinE
//! $y \mid x, z \sim N(s_z\,\beta^\top x, \sigma^2)$ with $\sigma$ known. Complete-data
//! family over $(y, z)$ ([`SymLinComplete`]):
//! $$ T(y, z) = (1[z = 0],\ s_z y),\quad h(y, z) = N(y; 0, \sigma^2),\quad
//!    A(\varphi) = \log(1 + e^{\varphi_1}) + \tfrac{\sigma^2}{2}\varphi_2^2, $$
//! realised at $\varphi_i(\theta) = (w^\top x_i,\ \beta^\top x_i/\sigma^2)$. Indeed
//! $\sum_z\int h\,e^{\langle T,\varphi\rangle}dy = (e^{\varphi_1} + 1)e^{\sigma^2\varphi_2^2/2}$,
//! and given $z$, $y \sim N(s_z\sigma^2\varphi_2, \sigma^2)$.
//!
//! ## SymMoLogE
//! $y \in \{0, 1\}$, $P(y = 1 \mid x, z) = \sigma(s_z\,\beta^\top x)$. Complete-data
//! family ([`SymLogComplete`]) with the same $T$, $h = 1$, and
//! $$ A(\varphi) = \log\big(e^{\varphi_1}(1 + e^{\varphi_2}) + 1 + e^{-\varphi_2}\big), $$
//! realised at $\varphi_i(\theta) = (w^\top x_i - \beta^\top x_i,\ \beta^\top x_i)$; then
//! $A(\varphi_i(\theta)) = \log(1 + e^{u}) + \log(1 + e^{b}) - b$ (tested), $P(z=0) =
//! \sigma(u)$ and $P(y = 1\mid z) = \sigma(s_z b)$.
//!
//! Both realisations are **linear** in $\theta$, so mirror descent on them needs no
//! projection (DESIGN §2): $A_n(\theta) = \frac1n\sum_i A(\varphi_i(\theta))$ is convex in
//! $\theta$ and the step is $\nabla A_n(\theta^+) = \nabla A_n(\theta_t) - \eta\nabla L(\theta_t)$.
//!
//! ## EM
//! With the posterior $r_i = P(z_i = 0 \mid x_i, y_i; \theta_t)$ (E-step,
//! [`SymMoLinE::posterior`], [`SymMoLogE::posterior`]), the M-step minimises
//! $\frac1n\sum_i[A(\varphi_i(\theta)) - \langle \mathbb E_{\text{post}}T, \varphi_i(\theta)\rangle]$,
//! which separates:
//! * gate: $w^+ = \arg\min_w \frac1n\sum_i \log(1 + e^{w^\top x_i}) - r_i w^\top x_i$,
//!   a soft-label logistic regression (Newton, [`soft_logistic_newton`]);
//! * SymMoLinE experts: $\mathbb E_{\text{post}}[s_z y_i] = (2r_i - 1)y_i$, so
//!   $\beta^+ = \arg\min_\beta \frac1{2}\sum_i (\beta^\top x_i)^2 - (2r_i-1)y_i\beta^\top x_i
//!   = (X^\top X)^{-1}X^\top\big((2r - 1)\circ y\big)$ (the M-step of [`SymMoLinE`]'s [`EmModel`](crate::model::EmModel));
//! * SymMoLogE experts: the $b$-part of the objective is
//!   $\log(1 + e^{b}) - b + r_i b - (2r_i - 1)y_i b = \log(1 + e^b) - t_i b$ with
//!   $t_i = 1 - r_i + (2r_i - 1)y_i = r_i y_i + (1 - r_i)(1 - y_i) \in [0, 1]$: the
//!   probability that $y_i$ agrees with expert $\beta$'s orientation. So $\beta^+$ is a
//!   soft-label logistic regression on the labels $t_i$ (Newton, in the M-step of [`SymMoLogE`]'s [`EmModel`](crate::model::EmModel)).
//!
//! ## Signal-to-noise ratio
//! The working definition (ours: the paper's public material does not fix it; `docs/README.md`, item 4) is $\mathrm{SNR} = \Vert \beta^{\ast}\Vert /\sigma$
//! ([`SymMoLinE::snr`]); for SymMoLogE the link fixes the noise and we report
//! $\Vert \beta^{\ast}\Vert $ ([`SymMoLogE::snr`]).

use crate::data::Dataset;
use crate::error::{Block, MoeError, Result};
use crate::inner::cholesky;
use crate::inner::parallel::{fold_rows, Mergeable};
use crate::inner::softmax::{Labels, SoftmaxRegression};
use crate::inner::InnerStats;
use crate::model::conditional::ConditionalFamily;
use crate::model::expert::{inner_stats, newton_settings};
use faer::Mat;
use mirror::special::{log1p_exp, log_sum_exp, sigmoid};
use mirror::{ExponentialFamily, MirrorError};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Tolerance on $\Vert \nabla\Vert_2$ (hence on $\Vert\nabla\Vert_\infty$) of the Newton M-steps
/// (gate and SymMoLogE experts).
pub const NEWTON_TOL: f64 = 1e-12;
/// Iteration cap of the Newton M-steps.
pub const NEWTON_MAX_ITER: usize = 100;

fn check_len(what: &'static str, expected: usize, found: usize) -> mirror::Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(MirrorError::DimensionMismatch {
            what,
            expected,
            found,
        })
    }
}

fn finite_natural(name: &str, phi: &[f64]) -> mirror::Result<()> {
    check_len("natural parameter", 2, phi.len())?;
    if phi.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(MirrorError::OutsideDomain {
            what: "natural parameter",
            reason: format!("{phi:?} is not in the natural domain of {name}"),
        })
    }
}

/// The argument checks of both complete families' `natural_from_mean`: two-entry `mu`
/// and `phi`, and `mu` in the mean domain (described by `domain` in the error).
fn check_mean_args(
    fam: &dyn ExponentialFamily,
    mu: &[f64],
    phi: &[f64],
    domain: &str,
) -> mirror::Result<()> {
    check_len("natural_from_mean: mu", 2, mu.len())?;
    check_len("natural_from_mean: phi", 2, phi.len())?;
    if !fam.in_mean_domain(mu) {
        return Err(MirrorError::OutsideDomain {
            what: "mean parameter",
            reason: format!("{mu:?} is not in the mean domain {domain}"),
        });
    }
    Ok(())
}

fn label(s: &[f64]) -> Option<usize> {
    match s.get(1) {
        Some(0.0) => Some(0),
        Some(1.0) => Some(1),
        _ => None,
    }
}

/// $s_z$: $+1$ for $z = 0$, $-1$ for $z = 1$.
fn sign(z: usize) -> f64 {
    if z == 0 {
        1.0
    } else {
        -1.0
    }
}

// ---------------------------------------------------------------------------------------
// Complete-data families
// ---------------------------------------------------------------------------------------

/// SymMoLinE's complete-data family over $(y, z)$, $z \in \{0, 1\}$ (observation
/// `[y, z]`): $T = (1[z=0], s_z y)$, $h = N(y; 0, \sigma^2)$,
/// $A(\varphi) = \log(1 + e^{\varphi_1}) + \sigma^2\varphi_2^2/2$.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SymLinComplete {
    sigma: f64,
}

impl SymLinComplete {
    /// The family with known noise standard deviation $\sigma$.
    ///
    /// # Errors
    /// `InvalidParam` unless $\sigma$ is finite and $> 0$.
    pub fn new(sigma: f64) -> Result<Self> {
        if !(sigma > 0.0 && sigma.is_finite()) {
            return Err(MoeError::InvalidParam {
                name: "sigma",
                reason: format!("finite and > 0, got {sigma}"),
            });
        }
        Ok(SymLinComplete { sigma })
    }
    /// $\sigma$.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }
}

impl ExponentialFamily for SymLinComplete {
    fn name(&self) -> String {
        format!("SymMoLinE complete data (σ = {})", self.sigma)
    }
    fn dim(&self) -> usize {
        2
    }
    fn obs_dim(&self) -> usize {
        2
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s.len() == 2 && s[0].is_finite() && label(s).is_some()
    }
    fn in_natural_domain(&self, phi: &[f64]) -> bool {
        phi.len() == 2 && phi.iter().all(|v| v.is_finite())
    }
    /// $\mu_1 \in (0, 1)$, $\mu_2 \in \mathbb R$.
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu.len() == 2 && mu[0] > 0.0 && mu[0] < 1.0 && mu[1].is_finite()
    }
    /// $T(y, z) = (1[z = 0], s_z y)$.
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        let z = label(s).unwrap_or(1);
        t[0] = if z == 0 { 1.0 } else { 0.0 };
        t[1] = sign(z) * s[0];
    }
    /// $\log h(y, z) = -\frac{y^2}{2\sigma^2} - \frac12\log(2\pi\sigma^2)$.
    fn log_base_measure(&self, s: &[f64]) -> f64 {
        let v = self.sigma * self.sigma;
        -0.5 * s[0] * s[0] / v - 0.5 * (2.0 * std::f64::consts::PI * v).ln()
    }
    /// $A(\varphi) = \log(1 + e^{\varphi_1}) + \sigma^2\varphi_2^2/2$.
    fn log_partition(&self, phi: &[f64]) -> mirror::Result<f64> {
        finite_natural("SymMoLinE", phi)?;
        Ok(log1p_exp(phi[0]) + 0.5 * self.sigma * self.sigma * phi[1] * phi[1])
    }
    /// $\nabla A(\varphi) = (\sigma(\varphi_1), \sigma^2\varphi_2)$.
    fn mean(&self, phi: &[f64], mu: &mut [f64]) -> mirror::Result<()> {
        finite_natural("SymMoLinE", phi)?;
        check_len("mean: output", 2, mu.len())?;
        mu[0] = sigmoid(phi[0]);
        mu[1] = self.sigma * self.sigma * phi[1];
        Ok(())
    }
    /// $\nabla^2 A(\varphi) = \operatorname{diag}(\sigma(\varphi_1)\sigma(-\varphi_1), \sigma^2)$
    /// ($s_z y$ has mean $\sigma^2\varphi_2$ under both labels, hence no covariance with $1[z=0]$).
    fn fisher(&self, phi: &[f64]) -> mirror::Result<Mat<f64>> {
        finite_natural("SymMoLinE", phi)?;
        let p = sigmoid(phi[0]) * sigmoid(-phi[0]);
        let v = self.sigma * self.sigma;
        Ok(Mat::from_fn(2, 2, |i, j| match (i, j) {
            (0, 0) => p,
            (1, 1) => v,
            _ => 0.0,
        }))
    }
    /// $z = 0$ with probability $\sigma(\varphi_1)$, then $y = s_z\sigma^2\varphi_2 + \sigma\varepsilon$.
    fn sample(&self, phi: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> mirror::Result<()> {
        finite_natural("SymMoLinE", phi)?;
        check_len("sample: output", 2, s.len())?;
        let u: f64 = rand::Rng::random(rng);
        let z = if u < sigmoid(phi[0]) { 0 } else { 1 };
        let e: f64 = StandardNormal.sample(rng);
        s[0] = sign(z) * self.sigma * self.sigma * phi[1] + self.sigma * e;
        s[1] = z as f64;
        Ok(())
    }
    /// Closed form $\nabla A^{\ast}(\mu) = (\operatorname{logit}\mu_1, \mu_2/\sigma^2)$.
    fn natural_from_mean(&self, mu: &[f64], phi: &mut [f64]) -> mirror::Result<()> {
        check_mean_args(self, mu, phi, "(0,1) × R")?;
        phi[0] = mu[0].ln() - (-mu[0]).ln_1p();
        phi[1] = mu[1] / (self.sigma * self.sigma);
        Ok(())
    }
}

/// SymMoLogE's complete-data family over $(y, z) \in \{0,1\}^2$ (observation `[y, z]`):
/// $T = (1[z=0], s_z y)$, $h = 1$,
/// $A(\varphi) = \log(e^{\varphi_1}(1 + e^{\varphi_2}) + 1 + e^{-\varphi_2})$.
///
/// The four outcomes $(z, y) = (0,0), (0,1), (1,0), (1,1)$ have
/// $T = (1,0), (1,1), (0,0), (0,-1)$ and log-weights
/// $\varphi_1,\ \varphi_1 + \varphi_2,\ 0,\ -\varphi_2$; the mean domain is the open
/// parallelogram $0 < \mu_1 < 1$, $\mu_1 - 1 < \mu_2 < \mu_1$.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SymLogComplete;

impl SymLogComplete {
    /// Outcome probabilities in the order $(z,y) = (0,0),(0,1),(1,0),(1,1)$ and
    /// $A(\varphi) = \operatorname{LSE}(\varphi_1, \varphi_1 + \varphi_2, 0, -\varphi_2)$
    /// (the direct four-term form, used by the sampler and as the independent check of
    /// the factorised [`ExponentialFamily::log_partition`]).
    pub fn outcome_probs(phi: &[f64]) -> ([f64; 4], f64) {
        let mut l = [phi[0], phi[0] + phi[1], 0.0, -phi[1]];
        let a = log_sum_exp(&l);
        for v in l.iter_mut() {
            *v = (*v - a).exp();
        }
        (l, a)
    }
}

impl ExponentialFamily for SymLogComplete {
    fn name(&self) -> String {
        "SymMoLogE complete data".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn obs_dim(&self) -> usize {
        2
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s.len() == 2 && (s[0] == 0.0 || s[0] == 1.0) && label(s).is_some()
    }
    fn in_natural_domain(&self, phi: &[f64]) -> bool {
        phi.len() == 2 && phi.iter().all(|v| v.is_finite())
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu.len() == 2 && mu[0] > 0.0 && mu[0] < 1.0 && mu[1] > mu[0] - 1.0 && mu[1] < mu[0]
    }
    /// $T(y, z) = (1[z = 0], s_z y)$.
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        let z = label(s).unwrap_or(1);
        t[0] = if z == 0 { 1.0 } else { 0.0 };
        t[1] = sign(z) * s[0];
    }
    fn log_base_measure(&self, _s: &[f64]) -> f64 {
        0.0
    }
    /// $A(\varphi) = \log(1 + e^{\varphi_1+\varphi_2}) + \log(1 + e^{-\varphi_2})$, the
    /// factorised form of $\operatorname{LSE}(\varphi_1, \varphi_1 + \varphi_2, 0, -\varphi_2)$
    /// (the factorisation is tested against the four-term sum).
    fn log_partition(&self, phi: &[f64]) -> mirror::Result<f64> {
        finite_natural("SymMoLogE", phi)?;
        Ok(log1p_exp(phi[0] + phi[1]) + log1p_exp(-phi[1]))
    }
    /// $\nabla A = (\sigma(\varphi_1+\varphi_2),\ \sigma(\varphi_1+\varphi_2) - \sigma(-\varphi_2))$:
    /// $P(z = 0) = \sigma(u)$ with $u = \varphi_1 + \varphi_2$, and
    /// $\mathbb E[s_z y] = \sigma(u)\sigma(b) - (1-\sigma(u))\sigma(-b) = \sigma(u) - \sigma(-b)$, $b = \varphi_2$.
    fn mean(&self, phi: &[f64], mu: &mut [f64]) -> mirror::Result<()> {
        finite_natural("SymMoLogE", phi)?;
        check_len("mean: output", 2, mu.len())?;
        let su = sigmoid(phi[0] + phi[1]);
        mu[0] = su;
        mu[1] = su - sigmoid(-phi[1]);
        Ok(())
    }
    /// $\nabla^2 A = \begin{pmatrix} a & a \\ a & a + c\end{pmatrix}$ with
    /// $a = \sigma(u)\sigma(-u)$, $c = \sigma(b)\sigma(-b)$.
    fn fisher(&self, phi: &[f64]) -> mirror::Result<Mat<f64>> {
        finite_natural("SymMoLogE", phi)?;
        let u = phi[0] + phi[1];
        let a = sigmoid(u) * sigmoid(-u);
        let c = sigmoid(phi[1]) * sigmoid(-phi[1]);
        Ok(Mat::from_fn(
            2,
            2,
            |i, j| if i == 1 && j == 1 { a + c } else { a },
        ))
    }
    /// Closed form: $\varphi_2 = \operatorname{logit}(\mu_2 + 1 - \mu_1)$,
    /// $\varphi_1 = \operatorname{logit}(\mu_1) - \varphi_2$.
    fn natural_from_mean(&self, mu: &[f64], phi: &mut [f64]) -> mirror::Result<()> {
        check_mean_args(self, mu, phi, "0 < μ1 < 1, μ1 − 1 < μ2 < μ1")?;
        let logit = |p: f64| p.ln() - (-p).ln_1p();
        phi[1] = logit(mu[1] + 1.0 - mu[0]);
        phi[0] = logit(mu[0]) - phi[1];
        Ok(())
    }
    fn sample(&self, phi: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> mirror::Result<()> {
        finite_natural("SymMoLogE", phi)?;
        check_len("sample: output", 2, s.len())?;
        let (q, _) = Self::outcome_probs(phi);
        let u: f64 = rand::Rng::random(rng);
        let mut acc = 0.0;
        let mut o = 3;
        for (k, qk) in q.iter().enumerate() {
            acc += qk;
            if u < acc {
                o = k;
                break;
            }
        }
        s[1] = (o / 2) as f64; // z
        s[0] = (o % 2) as f64; // y
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------

/// Posterior statistics of the symmetric models: the per-row responsibilities
/// $r_i = P(z_i = 0 \mid x_i, y_i; \theta_t)$, in row order. `merge` concatenates (an
/// associative operation, applied in chunk order, so the rows stay in order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SymStats {
    /// $r_i$, $i = 0..n$.
    pub resp: Vec<f64>,
}

impl Mergeable for SymStats {
    fn merge(&mut self, other: Self) {
        self.resp.extend(other.resp);
    }
}

/// Splits $\theta = (\beta, w)$.
fn split(theta: &[f64], d: usize) -> (&[f64], &[f64]) {
    (&theta[..d], &theta[d..2 * d])
}

fn dotp(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn check_theta(theta: &[f64], d: usize) -> Result<()> {
    if theta.len() != 2 * d {
        return Err(MirrorError::DimensionMismatch {
            what: "theta = (β, w)",
            expected: 2 * d,
            found: theta.len(),
        }
        .into());
    }
    if theta.iter().any(|v| !v.is_finite()) {
        return Err(MoeError::NonFinite {
            what: "parameters θ",
        });
    }
    Ok(())
}

fn check_data(data: &Dataset, d: usize) -> Result<()> {
    if data.d() != d || data.q() != 1 {
        return Err(MoeError::InvalidData {
            row: None,
            column: None,
            reason: format!(
                "symmetric model expects {d} features and 1 target, data has {} and {}",
                data.d(),
                data.q()
            ),
        });
    }
    Ok(())
}

/// Solves $H x = g$ for SPD $H$ (row-major $d\times d$, lower triangle read) under the
/// one Cholesky policy ([`crate::inner::cholesky`]).
fn solve_spd(h: &[f64], g: &[f64], who: Block) -> Result<Vec<f64>> {
    let d = g.len();
    let m = Mat::from_fn(d, d, |i, j| h[i * d + j]);
    cholesky::solve(m.as_ref(), g, who)
}

/// Soft-label logistic regression, the 2-class case of the shared softmax regression
/// ([`SoftmaxRegression`] with [`Labels::Binary`], unit weights):
/// $$ \min_v f(v) = \frac1n\sum_i \log(1 + e^{v^\top x_i}) - t_i v^\top x_i,\qquad
///    \nabla f = \frac1n\sum_i(\sigma(v^\top x_i) - t_i)x_i,\quad
///    \nabla^2 f = \frac1n\sum_i \sigma(v^\top x_i)\sigma(-v^\top x_i)x_ix_i^\top, $$
/// by [`mirror::newton::minimize`] started at `v` (a warm start, overwritten), stopping when
/// $\Vert \nabla f\Vert_2 \le$ [`NEWTON_TOL`] (which bounds $\Vert\nabla f\Vert_\infty$
/// too). Targets $t_i \in [0, 1]$ (soft labels). `who` names the block in a
/// `NotPositiveDefinite` error.
///
/// # Errors
/// `InvalidData` if the number of targets differs from $n$ or a target lies outside
/// $[0, 1]$, `NotPositiveDefinite` if the weighted Gram matrix is singular. Not converging
/// within [`NEWTON_MAX_ITER`] (e.g. separable labels, where the minimiser is at infinity)
/// is reported in the returned [`InnerStats`] (`converged = false`), not as an error.
pub fn soft_logistic_newton(
    data: &Dataset,
    targets: &[f64],
    v: &mut [f64],
    who: Block,
) -> Result<InnerStats> {
    let n = data.n();
    let d = data.d();
    if targets.len() != n || v.len() != d {
        return Err(MoeError::InvalidData {
            row: None,
            column: None,
            reason: format!(
                "soft-label logistic regression: {} targets / {} coefficients for n = {n}, d = {d}",
                targets.len(),
                v.len()
            ),
        });
    }
    let reg = SoftmaxRegression::new(data, 2, Labels::Binary(targets), None)?;
    let settings = newton_settings(NEWTON_TOL, NEWTON_MAX_ITER as u64)?;
    let rep = reg
        .newton(v, &settings, None)
        .map_err(|e| e.in_block(who))?;
    Ok(inner_stats(&rep))
}

/// Draws $x_i \sim N(0, I_d)$, $(y_i, z_i) \sim p(\cdot \mid x_i; \theta)$ from the model's
/// complete-data family (seeded ChaCha8), returning the data and the latent labels.
fn simulate<M: ConditionalFamily>(
    model: &M,
    theta: &[f64],
    n: usize,
    seed: u64,
) -> Result<(Dataset, Vec<usize>)> {
    let d = model.n_features();
    check_theta(theta, d)?;
    if n == 0 {
        return Err(MoeError::InvalidParam {
            name: "n",
            reason: "at least one row".into(),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let fam = model.complete();
    let mut x = vec![0.0; n * d];
    let mut y = vec![0.0; n];
    let mut z = vec![0usize; n];
    let mut phi = vec![0.0; fam.dim()];
    let mut obs = vec![0.0; fam.obs_dim()];
    for i in 0..n {
        for v in x[i * d..(i + 1) * d].iter_mut() {
            *v = StandardNormal.sample(&mut rng);
        }
        model.realise(theta, &x[i * d..(i + 1) * d], &mut phi);
        fam.sample(&phi, &mut rng, &mut obs)?;
        y[i] = obs[0];
        z[i] = obs[1] as usize;
    }
    Ok((Dataset::from_rows(&x, d, &y, 1)?, z))
}

/// A random unit vector in $\mathbb R^d$ times `norm` (seeded).
fn random_direction(d: usize, norm: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    loop {
        let v: Vec<f64> = (0..d).map(|_| StandardNormal.sample(rng)).collect();
        let l = dotp(&v, &v).sqrt();
        if l > 1e-12 {
            return v.into_iter().map(|a| a * norm / l).collect();
        }
    }
}

fn check_dim(d: usize) -> Result<()> {
    if d == 0 {
        return Err(MoeError::InvalidParam {
            name: "d",
            reason: "at least one feature".into(),
        });
    }
    Ok(())
}

fn check_norm(name: &'static str, v: f64) -> Result<()> {
    if !(v >= 0.0 && v.is_finite()) {
        return Err(MoeError::InvalidParam {
            name,
            reason: format!("finite and >= 0, got {v}"),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// SymMoLinE
// ---------------------------------------------------------------------------------------

/// A symmetric two-expert model on $d$ features with complete-data family `F`
/// ([`SymLinComplete`]: [`SymMoLinE`]; [`SymLogComplete`]: [`SymMoLogE`]), parameters
/// $\theta = (\beta, w) \in \mathbb R^{2d}$ (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct Symmetric<F> {
    d: usize,
    family: F,
}

/// The symmetric mixture of two linear experts (see the [module documentation](self)).
pub type SymMoLinE = Symmetric<SymLinComplete>;
/// The symmetric mixture of two logistic experts (see the [module documentation](self)).
pub type SymMoLogE = Symmetric<SymLogComplete>;

impl<F> Symmetric<F> {
    /// Flattens $(\beta, w)$ into $\theta$.
    pub fn theta(beta: &[f64], w: &[f64]) -> Vec<f64> {
        beta.iter().chain(w).copied().collect()
    }
    /// $\beta$ of $\theta$.
    pub fn beta<'t>(&self, theta: &'t [f64]) -> &'t [f64] {
        &theta[..self.d]
    }
    /// The gate vector $w$ of $\theta$.
    pub fn gate<'t>(&self, theta: &'t [f64]) -> &'t [f64] {
        &theta[self.d..2 * self.d]
    }
    /// $\theta^\ast$ with $\Vert \beta^{\ast}\Vert = $ `beta_norm` and
    /// $\Vert w^{\ast}\Vert = $ `gate_norm`, directions uniform on the sphere (seeded).
    fn random_with_norms(&self, beta_norm: f64, gate_norm: f64, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let beta = random_direction(self.d, beta_norm, &mut rng);
        let w = random_direction(self.d, gate_norm, &mut rng);
        Self::theta(&beta, &w)
    }
}

impl<F> Symmetric<F>
where
    Self: ConditionalFamily,
{
    /// $n$ rows from the model at $\theta$: $x \sim N(0, I_d)$, then $(y, z)$ (seeded).
    ///
    /// # Errors
    /// `InvalidParam` for $n = 0$, `DimensionMismatch`/`NonFinite` for a bad $\theta$.
    pub fn simulate(&self, theta: &[f64], n: usize, seed: u64) -> Result<(Dataset, Vec<usize>)> {
        simulate(self, theta, n, seed)
    }
}

impl SymMoLinE {
    /// The model on $d$ features with known noise standard deviation $\sigma$.
    ///
    /// # Errors
    /// `InvalidParam` for $d = 0$ or $\sigma$ not finite and positive.
    pub fn new(d: usize, sigma: f64) -> Result<Self> {
        check_dim(d)?;
        Ok(SymMoLinE {
            d,
            family: SymLinComplete::new(sigma)?,
        })
    }
    /// $\sigma$.
    pub fn sigma(&self) -> f64 {
        self.family.sigma
    }
    /// $\mathrm{SNR} = \Vert \beta\Vert_2/\sigma$.
    pub fn snr(&self, theta: &[f64]) -> f64 {
        dotp(self.beta(theta), self.beta(theta)).sqrt() / self.family.sigma
    }
    /// A random true parameter with $\Vert \beta^{\ast}\Vert  = \mathrm{snr}\cdot\sigma$ and
    /// $\Vert w^{\ast}\Vert  = $ `gate_norm`, directions uniform on the sphere (seeded).
    ///
    /// # Errors
    /// `InvalidParam` for a negative or non-finite `snr`/`gate_norm`.
    pub fn random_theta(&self, snr: f64, gate_norm: f64, seed: u64) -> Result<Vec<f64>> {
        check_norm("snr", snr)?;
        check_norm("gate_norm", gate_norm)?;
        Ok(self.random_with_norms(snr * self.family.sigma, gate_norm, seed))
    }

    /// Row log-likelihood and posterior $r = P(z = 0\mid x, y)$:
    /// $\log p(y\mid x) = \operatorname{LSE}\big(\log\sigma(u) + \log N(y; b, \sigma^2),\
    /// \log\sigma(-u) + \log N(y; -b, \sigma^2)\big)$, $r = \sigma(u + 2yb/\sigma^2)$.
    pub fn posterior(&self, theta: &[f64], x: &[f64], y: f64) -> (f64, f64) {
        let (beta, w) = split(theta, self.d);
        let (u, b) = (dotp(w, x), dotp(beta, x));
        let v = self.family.sigma * self.family.sigma;
        let c = -0.5 * (2.0 * std::f64::consts::PI * v).ln();
        let l0 = -log1p_exp(-u) + c - 0.5 * (y - b) * (y - b) / v;
        let l1 = -log1p_exp(u) + c - 0.5 * (y + b) * (y + b) / v;
        let ll = log_sum_exp(&[l0, l1]);
        (ll, (l0 - ll).exp())
    }
}

impl SymSteps for SymMoLinE {
    fn row(&self, theta: &[f64], x: &[f64], y: f64) -> (f64, f64) {
        self.posterior(theta, x, y)
    }
    /// M-step: gate by [`soft_logistic_newton`] on $r$ (warm-started at the current $w$),
    /// $\beta^+ = (X^\top X)^{-1}X^\top((2r-1)\circ y)$ by Cholesky; writes $\theta^+$ into
    /// `next`. `NotPositiveDefinite` (expert 0 for $X^\top X$, [`Block::Gate`] for the gate)
    /// when the features are collinear.
    fn m_step_checked(&self, data: &Dataset, r: &[f64], th: &[f64], next: &mut [f64]) -> Fit {
        let (d, n) = (self.d, data.n());
        let (gram, rhs) = fold_rows(
            n,
            || (vec![0.0; d * d], vec![0.0; d]),
            |(g, b_acc), rows| {
                for i in rows {
                    let x = data.x(i);
                    let t = (2.0 * r[i] - 1.0) * data.y(i)[0];
                    for a in 0..d {
                        b_acc[a] += t * x[a];
                        for b in 0..=a {
                            g[a * d + b] += x[a] * x[b];
                        }
                    }
                }
                Ok(())
            },
        )?;
        let mut gram = gram;
        for a in 0..d {
            for b in 0..a {
                gram[b * d + a] = gram[a * d + b];
            }
        }
        let beta = solve_spd(&gram, &rhs, Block::Expert(Some(0)))?;
        next[..d].copy_from_slice(&beta);
        next[d..2 * d].copy_from_slice(&th[d..2 * d]);
        let mut inner = soft_logistic_newton(data, r, &mut next[d..2 * d], Block::Gate)?;
        inner.hessians += 1; // the Gram matrix XᵀX
        Ok(inner)
    }
}

/// Shape checks shared by both symmetric models' M-steps.
fn check_m_step_args(
    data: &Dataset,
    d: usize,
    stats: &SymStats,
    theta: &[f64],
    next: &[f64],
) -> Result<()> {
    check_data(data, d)?;
    check_theta(theta, d)?;
    check_len("m_step: next", 2 * d, next.len()).map_err(MoeError::from)?;
    if stats.resp.len() != data.n() {
        return Err(MoeError::InvalidData {
            row: None,
            column: None,
            reason: format!(
                "{} responsibilities for {} rows",
                stats.resp.len(),
                data.n()
            ),
        });
    }
    Ok(())
}

impl SymRealise for SymMoLinE {
    /// $\varphi_i = (w^\top x_i,\ \beta^\top x_i/\sigma^2)$.
    fn phi(&self, theta: &[f64], x: &[f64], phi: &mut [f64]) {
        let (beta, w) = split(theta, self.d);
        phi[0] = dotp(w, x);
        phi[1] = dotp(beta, x) / (self.family.sigma * self.family.sigma);
    }
    /// $J_i^\top v = (v_2 x_i/\sigma^2,\ v_1 x_i)$.
    fn phi_vjp(&self, _theta: &[f64], x: &[f64], v: &[f64], grad: &mut [f64]) {
        let d = self.d;
        let c = v[1] / (self.family.sigma * self.family.sigma);
        for a in 0..d {
            grad[a] += c * x[a];
            grad[d + a] += v[0] * x[a];
        }
    }
}

// ---------------------------------------------------------------------------------------
// SymMoLogE
// ---------------------------------------------------------------------------------------

impl SymMoLogE {
    /// The model on $d$ features.
    ///
    /// # Errors
    /// `InvalidParam` for $d = 0$.
    pub fn new(d: usize) -> Result<Self> {
        check_dim(d)?;
        Ok(SymMoLogE {
            d,
            family: SymLogComplete,
        })
    }
    /// $\Vert \beta\Vert_2$ (the logistic link fixes the noise level, so this is the SNR).
    pub fn snr(&self, theta: &[f64]) -> f64 {
        dotp(self.beta(theta), self.beta(theta)).sqrt()
    }
    /// A random true parameter with $\Vert \beta^{\ast}\Vert  = $ `beta_norm`, $\Vert w^{\ast}\Vert  = $ `gate_norm`.
    ///
    /// # Errors
    /// `InvalidParam` for a negative or non-finite norm.
    pub fn random_theta(&self, beta_norm: f64, gate_norm: f64, seed: u64) -> Result<Vec<f64>> {
        check_norm("beta_norm", beta_norm)?;
        check_norm("gate_norm", gate_norm)?;
        Ok(self.random_with_norms(beta_norm, gate_norm, seed))
    }

    /// Row log-likelihood and posterior $r = P(z = 0\mid x, y)$ with
    /// $\log p(y, z) = \log\sigma(s'_z u) + \log\sigma\big(s_z b\,(2y - 1)\big)$
    /// ($s'_0 = 1$, $s'_1 = -1$).
    pub fn posterior(&self, theta: &[f64], x: &[f64], y: f64) -> (f64, f64) {
        let (beta, w) = split(theta, self.d);
        let (u, b) = (dotp(w, x), dotp(beta, x));
        let sy = 2.0 * y - 1.0;
        let l0 = -log1p_exp(-u) - log1p_exp(-b * sy);
        let l1 = -log1p_exp(u) - log1p_exp(b * sy);
        let ll = log_sum_exp(&[l0, l1]);
        (ll, (l0 - ll).exp())
    }
}

impl SymSteps for SymMoLogE {
    fn row(&self, theta: &[f64], x: &[f64], y: f64) -> (f64, f64) {
        self.posterior(theta, x, y)
    }
    /// `InvalidData` naming the first row whose target is not in $\{0, 1\}$.
    fn check_target(&self, data: &Dataset) -> Result<()> {
        match (0..data.n()).find(|&i| !(data.y(i)[0] == 0.0 || data.y(i)[0] == 1.0)) {
            Some(i) => Err(MoeError::InvalidData {
                row: Some(i),
                column: Some("y".into()),
                reason: "SymMoLogE needs a binary target in {0, 1}".into(),
            }),
            None => Ok(()),
        }
    }
    /// M-step: gate by [`soft_logistic_newton`] on $r_i$; $\beta$ by the same Newton
    /// solver on the soft labels $t_i = r_iy_i + (1 - r_i)(1 - y_i)$ (derivation in the
    /// [module documentation](self)); both warm-started at $\theta_t$.
    /// `NotPositiveDefinite` (expert 0 / [`Block::Gate`]) on collinear features.
    fn m_step_checked(&self, data: &Dataset, r: &[f64], th: &[f64], next: &mut [f64]) -> Fit {
        let d = self.d;
        let t: Vec<f64> = (0..data.n())
            .map(|i| {
                let y = data.y(i)[0];
                r[i] * y + (1.0 - r[i]) * (1.0 - y)
            })
            .collect();
        next.copy_from_slice(&th[..2 * d]);
        let a = soft_logistic_newton(data, &t, &mut next[..d], Block::Expert(Some(0)))?;
        let b = soft_logistic_newton(data, r, &mut next[d..2 * d], Block::Gate)?;
        Ok(InnerStats {
            iterations: a.iterations + b.iterations,
            residual: a.residual.max(b.residual),
            converged: a.converged && b.converged,
            hessians: a.hessians + b.hessians,
            fallbacks: a.fallbacks + b.fallbacks,
        })
    }
}

impl SymRealise for SymMoLogE {
    /// $\varphi_i = (w^\top x_i - \beta^\top x_i,\ \beta^\top x_i)$.
    fn phi(&self, theta: &[f64], x: &[f64], phi: &mut [f64]) {
        let (beta, w) = split(theta, self.d);
        let b = dotp(beta, x);
        phi[0] = dotp(w, x) - b;
        phi[1] = b;
    }
    /// $J_i^\top v = ((v_2 - v_1)x_i,\ v_1 x_i)$.
    fn phi_vjp(&self, _theta: &[f64], x: &[f64], v: &[f64], grad: &mut [f64]) {
        let d = self.d;
        for a in 0..d {
            grad[a] += (v[1] - v[0]) * x[a];
            grad[d + a] += v[0] * x[a];
        }
    }
}

/// What distinguishes the two symmetric models; the checks, the E-step pass and the
/// [`EmModel`](crate::model::EmModel) plumbing are written once for both.
trait SymSteps: Sync {
    /// Row log-likelihood and posterior $P(z = 0 \mid x, y)$.
    fn row(&self, theta: &[f64], x: &[f64], y: f64) -> (f64, f64);
    /// Target support check (default: any real target).
    fn check_target(&self, _data: &Dataset) -> Result<()> {
        Ok(())
    }
    /// The M-step on checked shapes: responsibilities `r`, current `th`, result in `next`.
    fn m_step_checked(&self, data: &Dataset, r: &[f64], th: &[f64], next: &mut [f64]) -> Fit;
}

/// The result of one symmetric-model M-step.
type Fit = Result<InnerStats>;

/// The realisation $\varphi_i(\theta)$ of a symmetric model and its vector–Jacobian
/// product; the rest of [`ConditionalFamily`] is shared.
trait SymRealise {
    fn phi(&self, theta: &[f64], x: &[f64], phi: &mut [f64]);
    fn phi_vjp(&self, theta: &[f64], x: &[f64], v: &[f64], grad: &mut [f64]);
}

/// Two latent states, $2d$ parameters, $\varphi$ linear in $\theta$.
impl<F: ExponentialFamily> ConditionalFamily for Symmetric<F>
where
    Self: SymRealise + Send + Sync,
{
    fn complete(&self) -> &dyn ExponentialFamily {
        &self.family
    }
    fn n_latent(&self) -> usize {
        2
    }
    fn n_params(&self) -> usize {
        2 * self.d
    }
    fn n_features(&self) -> usize {
        self.d
    }
    fn realise(&self, theta: &[f64], x: &[f64], phi: &mut [f64]) {
        SymRealise::phi(self, theta, x, phi)
    }
    fn realise_vjp(&self, theta: &[f64], x: &[f64], v: &[f64], grad: &mut [f64]) {
        SymRealise::phi_vjp(self, theta, x, v, grad)
    }
    fn is_linear(&self) -> bool {
        true
    }
}

/// [`EmModel`](crate::model::EmModel) for the symmetric models: the E-step checks shapes
/// and targets, then makes one pass over the rows (responsibilities $r_i$ and
/// $L(\theta) = -\frac1n\sum_i\log p(y_i\mid x_i)$; `InvalidData` on a shape mismatch or
/// a target outside the support, `NonFinite` if $L$ is not finite); the M-step checks
/// shapes and runs the model's own closed form (SymMoLinE) or soft-label Newton solve
/// (SymMoLogE), as the [module documentation](self) derives.
impl<F> crate::model::EmModel for Symmetric<F>
where
    Self: SymSteps + ConditionalFamily,
{
    type Stats = SymStats;
    fn e_step(&self, data: &Dataset, theta: &[f64]) -> Result<(SymStats, f64)> {
        check_data(data, self.d)?;
        check_theta(theta, self.d)?;
        self.check_target(data)?;
        e_step_with(data, |x, y| self.row(theta, x, y))
    }
    fn m_step(&self, data: &Dataset, stats: &SymStats, theta: &[f64], next: &mut [f64]) -> Fit {
        check_m_step_args(data, self.d, stats, theta, next)?;
        self.m_step_checked(data, &stats.resp, theta, next)
    }
}

/// The E-step pass shared by both models: `post(x, y) = (log p(y|x), r)`.
fn e_step_with<P>(data: &Dataset, post: P) -> Result<(SymStats, f64)>
where
    P: Fn(&[f64], f64) -> (f64, f64) + Sync,
{
    let n = data.n();
    let (ll, stats) = fold_rows(
        n,
        || (0.0f64, SymStats::default()),
        |(ll, st), rows| {
            st.resp.reserve(rows.len());
            for i in rows {
                let (l, r) = post(data.x(i), data.y(i)[0]);
                *ll += l;
                st.resp.push(r);
            }
            Ok(())
        },
    )?;
    let obj = -ll / n as f64;
    if !obj.is_finite() {
        return Err(MoeError::NonFinite {
            what: "E-step log-likelihood",
        });
    }
    Ok((stats, obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_validate() {
        assert!(matches!(
            SymMoLinE::new(0, 1.0),
            Err(MoeError::InvalidParam { name: "d", .. })
        ));
        for s in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                SymMoLinE::new(2, s),
                Err(MoeError::InvalidParam { name: "sigma", .. })
            ));
        }
        assert!(matches!(
            SymMoLogE::new(0),
            Err(MoeError::InvalidParam { name: "d", .. })
        ));
        let m = SymMoLinE::new(2, 1.0).unwrap();
        assert!(matches!(
            m.random_theta(-1.0, 1.0, 0),
            Err(MoeError::InvalidParam { name: "snr", .. })
        ));
        assert!(matches!(
            m.simulate(&[1.0, 0.0, 0.0, 0.0], 0, 0),
            Err(MoeError::InvalidParam { name: "n", .. })
        ));
        assert!(matches!(
            m.simulate(&[1.0, 0.0, 0.0], 5, 0),
            Err(MoeError::Mirror(MirrorError::DimensionMismatch { .. }))
        ));
    }

    #[test]
    fn sym_log_partition_realised_matches_closed_form() {
        let m = SymMoLogE::new(2).unwrap();
        let theta = [0.7, -1.3, 0.4, 2.1];
        for x in [[0.3, -0.8], [2.0, 1.5], [-3.0, 0.1]] {
            let mut phi = [0.0; 2];
            m.realise(&theta, &x, &mut phi);
            let u = 0.4 * x[0] + 2.1 * x[1];
            let b = 0.7 * x[0] - 1.3 * x[1];
            let direct = (1.0 + u.exp()).ln() + (1.0 + b.exp()).ln() - b;
            let a = m.complete().log_partition(&phi).unwrap();
            assert!((a - direct).abs() < 1e-13, "{a} vs {direct}");
            let (q, lse) = SymLogComplete::outcome_probs(&phi);
            assert!((a - lse).abs() < 1e-13, "{a} vs {lse}");
            // ∇A = E[T] over the four outcomes.
            let mut mu = [0.0; 2];
            m.complete().mean(&phi, &mut mu).unwrap();
            assert!((mu[0] - (q[0] + q[1])).abs() < 1e-14);
            assert!((mu[1] - (q[1] - q[3])).abs() < 1e-14);
        }
    }

    #[test]
    fn sym_lin_partition_matches_quadrature() {
        // Σ_z ∫ h(y,z) exp⟨T,φ⟩ dy by the trapezoid rule on a wide grid.
        let f = SymLinComplete::new(0.8).unwrap();
        let phi = [0.6, -1.1];
        let mut total = 0.0;
        let (lo, hi, m) = (-12.0, 12.0, 48_001);
        let h = (hi - lo) / (m - 1) as f64;
        let mut t = [0.0; 2];
        for z in 0..2 {
            for k in 0..m {
                let y = lo + h * k as f64;
                let s = [y, z as f64];
                f.sufficient_stats(&s, &mut t);
                let w = if k == 0 || k == m - 1 { 0.5 } else { 1.0 };
                total += w * h * (f.log_base_measure(&s) + t[0] * phi[0] + t[1] * phi[1]).exp();
            }
        }
        let a = f.log_partition(&phi).unwrap();
        assert!((total.ln() - a).abs() < 1e-9, "{} vs {a}", total.ln());
    }
    #[test]
    fn complete_families_pass_check_family() {
        use mirror::{check_family, CheckConfig, CheckKind, CheckStatus};
        let lin = SymLinComplete::new(0.7).unwrap();
        for phi in [[0.3, -0.5], [-2.0, 1.5], [1.2, 0.0]] {
            let rep = check_family(&lin, &phi, &CheckConfig::default()).unwrap();
            // The harness integrates continuous observations jointly over (y, z) as if
            // both were continuous; z is a label, so normalisation is checked by
            // quadrature in `sym_lin_partition_matches_quadrature` instead.
            for c in &rep.checks {
                if c.kind != CheckKind::Normalisation {
                    assert_ne!(c.status, CheckStatus::Failed, "{rep}");
                }
            }
        }
        for phi in [[0.3, -0.5], [-2.0, 1.5], [1.2, 0.0], [0.0, 3.0]] {
            let rep = check_family(&SymLogComplete, &phi, &CheckConfig::default()).unwrap();
            assert!(rep.passed(), "{rep}");
        }
    }

    #[test]
    fn mean_domains_are_the_hulls_of_t() {
        let lin = SymLinComplete::new(1.0).unwrap();
        assert!(lin.in_mean_domain(&[0.5, -7.0]));
        assert!(!lin.in_mean_domain(&[1.0, 0.0]) && !lin.in_mean_domain(&[-0.1, 0.0]));
        let log = SymLogComplete;
        assert!(log.in_mean_domain(&[0.5, 0.2]));
        assert!(!log.in_mean_domain(&[0.5, 0.6]) && !log.in_mean_domain(&[0.5, -0.6]));
        let mut phi = [0.0; 2];
        let e = lin.natural_from_mean(&[1.5, 0.0], &mut phi).unwrap_err();
        assert!(matches!(e, MirrorError::OutsideDomain { .. }));
    }
}
