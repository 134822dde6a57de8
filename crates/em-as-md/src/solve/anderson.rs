//! Anderson-accelerated EM with a monotone safeguard: damped Anderson acceleration with
//! restarts (DAAREM; Henderson & Varadhan, *Damped Anderson acceleration with restarts
//! and monotonicity control for accelerating EM and EM-like algorithms*, JCGS 28(4),
//! 2019), spending one evaluation of the EM map per iteration.
//!
//! **The step.** With $F$ the EM map ([`Em`](crate::solve::em::Em)'s step: E-step then
//! M-step) and the residual $f_t = F(\theta_t) - \theta_t$ (the EM step), keep the last
//! $m_t \le m$ differences of iterates and residuals,
//! $$ \Delta X_t = [\,\theta_{j+1} - \theta_j\,]_{j=t-m_t}^{t-1},\qquad
//!    \Delta F_t = [\,f_{j+1} - f_j\,]_{j=t-m_t}^{t-1}\qquad(\dim\theta\times m_t), $$
//! solve the small damped least-squares problem
//! $$ \gamma_t = \arg\min_\gamma \Vert f_t - \Delta F_t\gamma\Vert_2^2 + \lambda_t\Vert\gamma\Vert_2^2
//!    = V\operatorname{diag}\Big(\frac{d_i}{d_i^2 + \lambda_t}\Big)U^\top f_t
//!    \quad(\Delta F_t = U\operatorname{diag}(d)V^\top,\ \text{thin SVD}), $$
//! and propose
//! $$ \theta^+ = \theta_t + f_t - (\Delta X_t + \Delta F_t)\gamma_t = F(\theta_t) - \Delta G_t\gamma_t, $$
//! $\Delta G_t = \Delta X_t + \Delta F_t$ being the differences of the values of $F$
//! ([`AndersonHistory::coefficients`], [`AndersonHistory::mix`]). The mixing happens in
//! the flattened parameter vector $\theta$ that [`Squarem`](crate::solve::squarem::Squarem)
//! extrapolates in, so the solver runs on every [`EmMap`] — every expert, a user's
//! plug-in included, in memory or streamed.
//!
//! **Damping** (DAAREM). $\lambda_t \ge 0$ is the ridge that shrinks the coefficients to a
//! fraction of the least-squares ones,
//! $\Vert\gamma_t(\lambda_t)\Vert_2^2 = \delta_t\Vert\gamma_t(0)\Vert_2^2$ with
//! $$ \delta_t = \frac{1}{1 + a^{\kappa - s_t}} $$
//! ([`damping_fraction`], [`ridge_for_norm_ratio`]), where $s_t$ counts the accepted
//! Anderson steps so far: the first steps are short ($\delta_0 = 1/(1 + a^\kappa)$) and
//! $\delta_t \to 1$ (no damping) as proposals keep being accepted. Without damping
//! ([`AndersonSettings::damping`] `None`) $\gamma_t$ is the minimum-norm least-squares
//! solution. **Restarts** (DAAREM): the history is emptied every $m$ iterations (the
//! difference just formed starts the next cycle), and after an invalid proposal.
//!
//! **Safeguard.** The proposal is taken when it is a valid parameter (its E-step succeeds
//! with a finite $L$, as SQUAREM's check) and
//! $$ L(\theta^+) \le L(\theta_t) $$
//! (no round-off allowance, as in SQUAREM: DAAREM's default tolerance of $0.01$ on the
//! log-likelihood is set to $0$, so $L$ never increases when the M-steps are exact).
//! Otherwise the **safeguard** takes the plain EM step $\theta_{t+1} = F(\theta_t)$,
//! keeping the history and the damping as DAAREM does ("keep $\delta$ the same"); an
//! invalid proposal also restarts the history. An M-step that misses its tolerance makes
//! $f_t$ unreliable: no proposal is made, the history is emptied and the plain (inexact)
//! step is taken, flagged as a safeguard step too; its inexact solve stays in the record,
//! so "converged" keeps its meaning
//! ([`Termination::from_window`](crate::Termination::from_window) sees the inexact solve).
//! The plain step is taken only when $L(F(\theta_t)) \le L(\theta_t)$ too: iterative
//! M-steps (logistic, Poisson, the gate) are maximisers only to their inner tolerance,
//! which next to the optimum can exceed EM's gain (SQUAREM's plain step rose by
//! $3\cdot10^{-12}$ relative on a proptest draw). Otherwise the iterate stays with its
//! E-step (a zero change, which ends a run with a tolerance as converged, or as an inexact
//! M-step when that M-step needed a fallback or missed its tolerance); when $F(\theta_t)$
//! is outside the domain (an M-step without a maximiser) it stays as a failed step and the
//! run ends as an inexact M-step, reported and not converged, instead of an error.
//! DAAREM's cycle-level check (more damping when $L$ rose over a cycle) can never fire
//! under this strict safeguard and is left out. The safeguard makes every accepted step
//! decrease $L$; it does not keep the run in EM's basin — no acceleration does: from one
//! start Anderson, SQUAREM and Newton each end above EM's final $L$ on some random draws (at
//! another local minimum, or at another point of a way out to an infimum at infinity) and
//! below it on about as many (`examples/basin_sweep.rs` of `mdem-experiments`, the test
//! `an_accelerated_end_above_em_is_another_local_minimum`, `docs/08-accelerated-em.md`).
//!
//! **As mirror descent.** EM is the mirror step with $\eta = 1$; near a fixed point
//! $F(\theta) - \theta^* \approx M(\theta - \theta^*)$ with $M = I_c^{-1}I_m$, so
//! $f(\theta) \approx -(I - M)(\theta - \theta^*) = -I_c^{-1}\nabla L(\theta)$: the EM
//! step is a gradient step preconditioned by the complete-data information (the local
//! metric of the mirror map). The undamped step is the multisecant quasi-Newton step
//! $\theta^+ = \theta_t - H_t f_t$ with
//! $H_t = -I + \Delta G_t(\Delta F_t^\top\Delta F_t)^{-1}\Delta F_t^\top$, which satisfies
//! the secant equations $H_t\Delta F_t = \Delta X_t$ (Fang & Saad 2009): on the span of
//! $\Delta F_t$ it applies $(I - M)^{-1} = \sum_k M^k$ to the EM step — per eigendirection
//! of $M$ with eigenvalue $\lambda$ a mirror step of length $\eta = 1/(1 - \lambda)$, and
//! altogether the Newton step $I_{\text{obs}}^{-1}I_c f_t$ with
//! $I_{\text{obs}} = I_c - I_m$ — and on its orthogonal complement it is the EM step.
//! SQUAREM lengthens the step by one scalar for all directions; Anderson fits one length
//! per direction of the history. On a linear map with $m \ge \dim\theta$ it is GMRES in
//! disguise and reaches the fixed point in at most $\dim\theta + 1$ steps (tested).
//! [`StepInfo::eta`] records the length of the step taken relative to the EM step,
//! $\Vert\theta^+ - \theta_t\Vert_2 / \Vert f_t\Vert_2$ (1 for the plain step).
//!
//! **Cost.** [`StepInfo::passes`] counts the E-steps of the iteration, each one pass over
//! the data: the M-step at $\theta_t$ and the E-step at the accepted point make one
//! evaluation of $F$ (the E-step is cached and starts the next iteration's evaluation),
//! so an accepted or plain step costs **1**; when the safeguard rejects a proposal whose
//! E-step was computed, the E-step at $F(\theta_t)$ follows and the iteration costs
//! **2**; one more when the iterate stays (its E-step, cached for the next iteration).
//! A proposal is accepted only when its M-step succeeds too: that M-step is the next
//! iteration's, computed at acceptance and cached, so a point where it fails (a singular
//! Hessian, a degenerate component) is refused like an invalid point and the plain step
//! is taken instead. The least-squares solve works on a $\dim\theta\times m$ matrix and allocates
//! nothing beyond the history and its SVD.

use crate::error::{MoeError, Result};
use crate::inner::InnerStats;
use crate::solve::em_map::EmMap;
use crate::solve::gd::is_trial_failure;
use crate::solve::solver::{FitState, IterRecord, NextIter, Solver, StepInfo};
use std::any::Any;

/// Default history length $m$ (differences kept). DAAREM's `order` is 10, capped at
/// $\lceil\dim\theta/2\rceil$; 5 took the fewest passes on the gated linear, gated
/// Poisson and SymMoLinE rows of `docs/08-accelerated-em.md` (measured against 10 and 20,
/// with and without restarts).
pub const DEFAULT_HISTORY: usize = 5;
/// Default base $a$ of the damping schedule (DAAREM's `alpha`).
pub const DEFAULT_DAMPING_BASE: f64 = 1.2;
/// Default half-life $\kappa$ of the damping schedule: $\delta_t \ge 1/2$ once $s_t \ge \kappa$.
/// DAAREM's default is 25, made for its looser monotonicity control (it accepts a
/// log-likelihood decrease of 0.01); under the strict safeguard 5 took fewer passes on the
/// gated linear, gated Poisson and SymMoLinE rows of `docs/08-accelerated-em.md` and on a
/// second seed (measured against 0, 10, 25 and no damping). Neither value keeps every run
/// in EM's basin (see the [module documentation](self)).
pub const DEFAULT_DAMPING_HALF_LIFE: f64 = 5.0;

/// The damping schedule $\delta_t = 1/(1 + a^{\kappa - s_t})$ of DAAREM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Damping {
    /// Base $a > 1$.
    pub base: f64,
    /// Half-life $\kappa \ge 0$: the number of accepted steps after which
    /// $\delta_t = 1/2$.
    pub half_life: f64,
}

impl Default for Damping {
    fn default() -> Self {
        Damping {
            base: DEFAULT_DAMPING_BASE,
            half_life: DEFAULT_DAMPING_HALF_LIFE,
        }
    }
}

/// Settings of [`Anderson`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AndersonSettings {
    /// History length $m \ge 1$ (used as $\min(m, \dim\theta)$).
    pub history: usize,
    /// The damping schedule, or `None` for the undamped (minimum-norm least-squares)
    /// coefficients.
    pub damping: Option<Damping>,
    /// Empty the history every $m$ iterations (DAAREM); otherwise the oldest difference
    /// is dropped when a new one arrives at a full history.
    pub restarts: bool,
}

impl Default for AndersonSettings {
    fn default() -> Self {
        AndersonSettings {
            history: DEFAULT_HISTORY,
            damping: Some(Damping::default()),
            restarts: true,
        }
    }
}

impl AndersonSettings {
    /// Checks the settings.
    ///
    /// # Errors
    /// `InvalidParam { name: "history" }` for $m = 0$; `InvalidParam { name: "damping" }`
    /// for a base that is not a finite number $> 1$ or a half-life that is not finite and
    /// $\ge 0$.
    pub fn check(&self) -> Result<()> {
        if self.history == 0 {
            return Err(MoeError::InvalidParam {
                name: "history",
                reason: "at least 1 difference; got 0".into(),
            });
        }
        if let Some(d) = self.damping {
            if !(d.base.is_finite() && d.base > 1.0) {
                return Err(MoeError::InvalidParam {
                    name: "damping",
                    reason: format!("base a finite number > 1; got {}", d.base),
                });
            }
            if !(d.half_life.is_finite() && d.half_life >= 0.0) {
                return Err(MoeError::InvalidParam {
                    name: "damping",
                    reason: format!("half-life finite and >= 0; got {}", d.half_life),
                });
            }
        }
        Ok(())
    }
}

/// The damping fraction of DAAREM after `accepted` $= s$ accepted steps:
/// $$ \delta = \frac{1}{1 + a^{\kappa - s}}, $$
/// computed as $\sigma(-(\kappa - s)\log a)$ so that it neither overflows nor
/// underflows to an exact 0 or 1 before its time.
pub fn damping_fraction(d: &Damping, accepted: f64) -> f64 {
    let z = (d.half_life - accepted) * d.base.ln();
    // 1/(1 + e^z), evaluated on the stable side.
    if z > 0.0 {
        let e = (-z).exp();
        e / (1.0 + e)
    } else {
        1.0 / (1.0 + z.exp())
    }
}

/// The ridge $\lambda \ge 0$ that shrinks the least-squares coefficients to the norm
/// fraction `ratio` $= \rho \in (0, 1)$: with the singular values $d_i > 0$ of
/// $\Delta F$ and $u_i = (U^\top f)_i$,
/// $$ \Vert\gamma(\lambda)\Vert_2 = \Big(\sum_i \frac{d_i^2u_i^2}{(d_i^2 + \lambda)^2}\Big)^{1/2}
///    = \rho\,\Vert\gamma(0)\Vert_2 = \rho\Big(\sum_i \frac{u_i^2}{d_i^2}\Big)^{1/2}. $$
/// Solved by Newton's method on $\psi(\lambda) = 1/\Vert\gamma(\lambda)\Vert -
/// 1/(\rho\Vert\gamma(0)\Vert)$ from $\lambda = 0$ (Hebden's form of the trust-region
/// secular equation: $\psi$ is increasing and concave, so the iterates increase
/// monotonically to the root), to relative accuracy $10^{-12}$.
///
/// Returns 0 when $\rho \ge 1$ or $\gamma(0) = 0$ (nothing to shrink) and
/// `f64::INFINITY` when $\rho \le 0$ (shrink to $\gamma = 0$).
pub fn ridge_for_norm_ratio(d: &[f64], u: &[f64], ratio: f64) -> f64 {
    if ratio.is_nan() || ratio <= 0.0 {
        return f64::INFINITY;
    }
    let norm = |lambda: f64| -> (f64, f64) {
        // (‖γ(λ)‖², Σ d²u²/(d²+λ)³)
        d.iter().zip(u).fold((0.0, 0.0), |(n2, der), (&di, &ui)| {
            let q = di * ui;
            let e = di * di + lambda;
            (n2 + q * q / (e * e), der + q * q / (e * e * e))
        })
    };
    let (n0, _) = norm(0.0);
    if ratio >= 1.0 || !n0.is_finite() || n0 <= 0.0 {
        return 0.0;
    }
    let target = ratio * n0.sqrt();
    let mut lambda = 0.0f64;
    for _ in 0..100 {
        let (n2, der) = norm(lambda);
        let s = n2.sqrt();
        if (s - target).abs() <= 1e-12 * target || der.is_nan() || der <= 0.0 {
            break;
        }
        // ψ = 1/s − 1/target, ψ' = Σ q²/(e)³ / s³.
        let psi = 1.0 / s - 1.0 / target;
        let dpsi = der / (s * s * s);
        let next = lambda - psi / dpsi;
        if !next.is_finite() || next <= lambda {
            break;
        }
        lambda = next;
    }
    lambda
}

/// The difference history of Anderson acceleration: the columns of $\Delta X$ and
/// $\Delta F$ ($\dim\theta\times m$, column-major, allocated once).
#[derive(Debug, Clone, PartialEq)]
pub struct AndersonHistory {
    dim: usize,
    cap: usize,
    len: usize,
    dx: Vec<f64>,
    df: Vec<f64>,
}

impl AndersonHistory {
    /// An empty history of at most `cap` differences of vectors of length `dim`.
    pub fn new(dim: usize, cap: usize) -> Self {
        AndersonHistory {
            dim,
            cap,
            len: 0,
            dx: vec![0.0; dim * cap],
            df: vec![0.0; dim * cap],
        }
    }
    /// Differences held.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether no difference is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Whether the history holds `cap` differences.
    pub fn is_full(&self) -> bool {
        self.len == self.cap
    }
    /// Forgets every difference (a restart).
    pub fn clear(&mut self) {
        self.len = 0;
    }
    /// Appends the difference pair $(\Delta x, \Delta f)$; at a full history the oldest
    /// pair is dropped first. Pairs of the wrong length or with a non-finite entry are
    /// refused (`false`) and the history is left unchanged.
    pub fn push(&mut self, dx: &[f64], df: &[f64]) -> bool {
        let k = self.dim;
        if self.cap == 0
            || dx.len() != k
            || df.len() != k
            || dx.iter().chain(df).any(|v| !v.is_finite())
        {
            return false;
        }
        if self.len == self.cap {
            self.dx.copy_within(k.., 0);
            self.df.copy_within(k.., 0);
            self.len -= 1;
        }
        let at = self.len * k;
        self.dx[at..at + k].copy_from_slice(dx);
        self.df[at..at + k].copy_from_slice(df);
        self.len += 1;
        true
    }

    /// The mixing coefficients for the residual $f$:
    /// $$ \gamma = \arg\min_\gamma\Vert f - \Delta F\gamma\Vert_2^2 + \lambda\Vert\gamma\Vert_2^2
    ///    = V\operatorname{diag}\Big(\frac{d_i}{d_i^2+\lambda}\Big)U^\top f, $$
    /// through the thin SVD $\Delta F = U\operatorname{diag}(d)V^\top$, singular values
    /// below $\varepsilon\, d_{\max}\max(\dim\theta, m)$ treated as 0 (the minimum-norm
    /// solution of a rank-deficient problem). With `fraction` $= \delta$ the ridge is
    /// [`ridge_for_norm_ratio`] at $\rho = \sqrt\delta$, so that
    /// $\Vert\gamma\Vert_2^2 = \delta\,\Vert\gamma(0)\Vert_2^2$; `None` gives $\lambda = 0$.
    /// Empty history: $\gamma$ is empty.
    ///
    /// # Errors
    /// `NonFinite { what: "Anderson residual" }` for a residual of the wrong length or
    /// with a non-finite entry; `NonFinite { what: "Anderson SVD" }` when the SVD fails.
    pub fn coefficients(&self, f: &[f64], fraction: Option<f64>) -> Result<Vec<f64>> {
        let (k, m) = (self.dim, self.len);
        if f.len() != k || f.iter().any(|v| !v.is_finite()) {
            return Err(MoeError::NonFinite {
                what: "Anderson residual",
            });
        }
        if m == 0 {
            return Ok(Vec::new());
        }
        let a = faer::MatRef::from_column_major_slice(&self.df[..k * m], k, m);
        let svd = a.thin_svd().map_err(|_| MoeError::NonFinite {
            what: "Anderson SVD",
        })?;
        let (uu, s, vv) = (svd.U(), svd.S().column_vector(), svd.V());
        let r = s.nrows();
        let d_max = (0..r).fold(0.0f64, |acc, i| acc.max(s[i]));
        let cut = f64::EPSILON * d_max * (k.max(m) as f64);
        let mut d = Vec::with_capacity(r);
        let mut u = Vec::with_capacity(r);
        let mut cols = Vec::with_capacity(r);
        for i in 0..r {
            if s[i] > cut && s[i].is_finite() {
                let ui: f64 = (0..k).map(|row| uu[(row, i)] * f[row]).sum();
                d.push(s[i]);
                u.push(ui);
                cols.push(i);
            }
        }
        let lambda = match fraction {
            Some(delta) => ridge_for_norm_ratio(&d, &u, delta.max(0.0).sqrt()),
            None => 0.0,
        };
        let mut gamma = vec![0.0; m];
        if lambda.is_finite() {
            for ((&di, &ui), &i) in d.iter().zip(&u).zip(&cols) {
                let c = di * ui / (di * di + lambda);
                for (j, g) in gamma.iter_mut().enumerate() {
                    *g += vv[(j, i)] * c;
                }
            }
        }
        if gamma.iter().any(|g| !g.is_finite()) {
            return Err(MoeError::NonFinite {
                what: "Anderson SVD",
            });
        }
        Ok(gamma)
    }

    /// The Anderson point $\theta^+ = \theta + f - (\Delta X + \Delta F)\gamma$ into `out`
    /// (with $f = F(\theta) - \theta$, this is $F(\theta) - \Delta G\gamma$). `gamma`
    /// has one entry per difference held ([`coefficients`](Self::coefficients)).
    ///
    /// # Errors
    /// `InvalidParam { name: "gamma" }` when the lengths do not match.
    pub fn mix(&self, theta: &[f64], f: &[f64], gamma: &[f64], out: &mut [f64]) -> Result<()> {
        let k = self.dim;
        if theta.len() != k || f.len() != k || out.len() != k || gamma.len() != self.len {
            return Err(MoeError::InvalidParam {
                name: "gamma",
                reason: format!(
                    "{} coefficients for {} differences of length {k} (θ {}, f {}, out {})",
                    gamma.len(),
                    self.len,
                    theta.len(),
                    f.len(),
                    out.len()
                ),
            });
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = theta[i] + f[i];
        }
        for (j, &g) in gamma.iter().enumerate() {
            let (cx, cf) = (&self.dx[j * k..(j + 1) * k], &self.df[j * k..(j + 1) * k]);
            for ((o, x), y) in out.iter_mut().zip(cx).zip(cf) {
                *o -= g * (x + y);
            }
        }
        Ok(())
    }
}

/// What the next iteration needs at $\theta$: the E-step's statistics for its M-step, or
/// that M-step's result already.
enum Mapped<S> {
    /// The statistics of the E-step at $\theta$.
    Stats(S),
    /// $F(\theta)$ and its inner statistics, computed to accept $\theta$ (an accepted
    /// proposal), so the next iteration does not repeat the M-step (and the statistics,
    /// $n\times K$ responsibilities, need not be kept).
    Done(Vec<f64>, InnerStats),
}

struct Cached<S> {
    theta: Vec<f64>,
    at: Mapped<S>,
}

/// The Anderson-accelerated EM solver; see the [module documentation](self).
pub struct Anderson {
    settings: AndersonSettings,
    cache: Option<Box<dyn Any + Send>>,
    /// $(\theta_{t-1}, f_{t-1})$ of the last exact M-step.
    prev: Option<(Vec<f64>, Vec<f64>)>,
    history: AndersonHistory,
    /// $s_t$: Anderson steps accepted.
    accepted: u64,
}

impl std::fmt::Debug for Anderson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anderson")
            .field("settings", &self.settings)
            .field("cached", &self.cache.is_some())
            .field("history", &self.history.len())
            .field("accepted", &self.accepted)
            .finish()
    }
}

impl Default for Anderson {
    fn default() -> Self {
        Anderson::from_checked(AndersonSettings::default())
    }
}

impl Anderson {
    /// Anderson-accelerated EM with the default settings ([`AndersonSettings::default`]).
    pub fn new() -> Self {
        Anderson::default()
    }
    /// Anderson-accelerated EM with `settings`.
    ///
    /// # Errors
    /// As [`AndersonSettings::check`].
    pub fn with_settings(settings: AndersonSettings) -> Result<Self> {
        settings.check()?;
        Ok(Anderson::from_checked(settings))
    }
    fn from_checked(settings: AndersonSettings) -> Self {
        Anderson {
            settings,
            cache: None,
            prev: None,
            history: AndersonHistory::new(0, 0),
            accepted: 0,
        }
    }
    /// The settings.
    pub fn settings(&self) -> &AndersonSettings {
        &self.settings
    }
    /// Forgets the history, the damping count and the cached E-step, sized for `k`
    /// parameters.
    fn reset(&mut self, k: usize) {
        self.cache = None;
        self.prev = None;
        self.accepted = 0;
        let cap = self.settings.history.min(k).max(1);
        if self.history.dim != k || self.history.cap != cap {
            self.history = AndersonHistory::new(k, cap);
        } else {
            self.history.clear();
        }
    }
}

fn norm(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|x| x * x).sum::<f64>().sqrt()
}

impl<P: EmMap> Solver<P> for Anderson {
    fn name(&self) -> String {
        "Anderson".into()
    }
    fn init(&mut self, problem: &P, state: FitState) -> Result<FitState> {
        self.reset(problem.n_params());
        Ok(state)
    }
    fn next_iter(&mut self, problem: &P, state: FitState) -> NextIter {
        let k = problem.n_params();
        let cached = self
            .cache
            .take()
            .and_then(|b| b.downcast::<Cached<P::Stats>>().ok())
            .filter(|c| c.theta == state.theta);
        let at = match cached {
            Some(c) => c.at,
            None => {
                // A state this solver did not produce: its history says nothing about it.
                self.reset(k);
                Mapped::Stats(problem.e_step(&state.theta)?.0)
            }
        };
        let (fx, inner) = match at {
            Mapped::Done(fx, inner) => (fx, inner),
            Mapped::Stats(stats0) => {
                let mut fx = vec![0.0; k];
                let inner = problem.m_step(&stats0, &state.theta, &mut fx)?;
                (fx, inner)
            }
        };
        let f: Vec<f64> = fx.iter().zip(&state.theta).map(|(a, b)| a - b).collect();
        let mut passes: u64 = 1;
        let mut proposal = None;
        if inner.converged && f.iter().all(|v| v.is_finite()) {
            if let Some((x_prev, f_prev)) = self.prev.take() {
                let dx: Vec<f64> = state
                    .theta
                    .iter()
                    .zip(&x_prev)
                    .map(|(a, b)| a - b)
                    .collect();
                let df: Vec<f64> = f.iter().zip(&f_prev).map(|(a, b)| a - b).collect();
                self.history.push(&dx, &df);
            }
            self.prev = Some((state.theta.clone(), f.clone()));
            if !self.history.is_empty() {
                let fraction = self
                    .settings
                    .damping
                    .map(|d| damping_fraction(&d, self.accepted as f64));
                let mut next = vec![0.0; k];
                let ok = self
                    .history
                    .coefficients(&f, fraction)
                    .and_then(|g| self.history.mix(&state.theta, &f, &g, &mut next));
                proposal = Some(ok.map(|()| next));
            }
        } else {
            // An inexact M-step: f_t is not a value of F − id, so neither it nor the
            // differences it would form may enter the history.
            self.prev = None;
            self.history.clear();
        }
        // Trial E-step at the proposal: accepted when valid and L does not increase.
        let proposed = proposal.is_some();
        let mut accepted = None;
        let mut invalid = false;
        let mut wasted_e_step = false;
        match proposal {
            Some(Ok(next)) if next.iter().all(|v| v.is_finite()) => match problem.e_step(&next) {
                Ok((s, l)) if l.is_finite() && l <= state.objective => {
                    // The proposal must also have an M-step (the next iteration's, done
                    // now): a point where it fails (a singular Hessian, a degenerate
                    // component) is refused like an invalid one, not carried forward.
                    let mut f_next = vec![0.0; k];
                    let mapped = problem.m_step(&s, &next, &mut f_next);
                    drop(s);
                    match mapped {
                        Ok(inner_next) => {
                            accepted = Some((next, l, Mapped::Done(f_next, inner_next)))
                        }
                        Err(_) => {
                            wasted_e_step = true;
                            invalid = true;
                        }
                    }
                }
                Ok((_, l)) if l.is_finite() => wasted_e_step = true,
                _ => {
                    wasted_e_step = true;
                    invalid = true;
                }
            },
            Some(_) => invalid = true,
            None => {}
        }
        if wasted_e_step {
            passes += 1;
        }
        let safeguard = (proposed && accepted.is_none()) || !inner.converged;
        if invalid {
            self.history.clear();
        }
        let (next, objective, eta, at_next) = match accepted {
            Some((next, l, m)) => {
                self.accepted += 1;
                let step = norm(next.iter().zip(&state.theta).map(|(a, b)| a - b));
                let em = norm(f.iter().copied());
                let eta = if em > 0.0 { step / em } else { 1.0 };
                (next, l, eta, m)
            }
            None => match problem.e_step(&fx) {
                // EM's point, when no higher (an iterative M-step is a maximiser only to
                // its tolerance, which next to the optimum can exceed EM's gain).
                Ok((s, l)) if l <= state.objective => (fx, l, 1.0, Mapped::Stats(s)),
                Ok(_) => return self.stay(problem, state, inner, passes, false),
                // EM's point is outside the domain (an M-step without a maximiser):
                // nothing can be computed from here.
                Err(e) if is_trial_failure(&e) => {
                    return self.stay(problem, state, inner, passes, true)
                }
                Err(e) => return Err(e),
            },
        };
        // DAAREM's restart: a cycle ends once the history is full.
        if self.settings.restarts && self.history.is_full() {
            self.history.clear();
        }
        self.cache = Some(Box::new(Cached {
            theta: next.clone(),
            at: at_next,
        }));
        let step = StepInfo::extrapolated(passes, eta, safeguard);
        let record = IterRecord::em_map_step(state.iter + 1, objective, inner, step);
        Ok((state.advance(next, objective), record))
    }
}

impl Anderson {
    /// The iterate stays (EM's point is higher, or outside the domain when `failed`, which
    /// ends the run as an inexact M-step, [`InnerStats::failed`]), with its E-step for the
    /// next iteration (one more pass); the history, whose next difference would be 0,
    /// starts again.
    fn stay<P: EmMap>(
        &mut self,
        problem: &P,
        state: FitState,
        inner: InnerStats,
        passes: u64,
        failed: bool,
    ) -> NextIter {
        self.history.clear();
        self.prev = None;
        let (stats, objective) = problem.e_step(&state.theta)?;
        let theta = state.theta.clone();
        self.cache = Some(Box::new(Cached {
            theta: theta.clone(),
            at: Mapped::Stats(stats),
        }));
        let inner = if failed {
            inner.failed()
        } else {
            inner.stayed()
        };
        let step = StepInfo::extrapolated(passes + 1, 1.0, true);
        let record = IterRecord::em_map_step(state.iter + 1, objective, inner, step);
        Ok((state.advance(theta, objective), record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Solves the small dense system `a x = b` (row-major `n × n`) by faer's LU with
    /// partial pivoting: the independent computation the SVD route is checked with.
    fn dense_solve(a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
        use faer::linalg::solvers::Solve;
        let n = b.len();
        let lu = faer::Mat::from_fn(n, n, |i, j| a[i * n + j]).partial_piv_lu();
        let x = lu.solve(faer::Mat::from_fn(n, 1, |i, _| b[i]));
        (0..n).map(|i| x[(i, 0)]).collect()
    }

    /// The ridge solution $(\Delta F^\top\Delta F + \lambda I)^{-1}\Delta F^\top f$ from the
    /// normal equations.
    fn ridge_direct(df: &[Vec<f64>], f: &[f64], lambda: f64) -> Vec<f64> {
        let m = df.len();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let mut g = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..m {
                g[i * m + j] = dot(&df[i], &df[j]) + if i == j { lambda } else { 0.0 };
            }
        }
        let rhs = df.iter().map(|c| dot(c, f)).collect();
        dense_solve(g, rhs)
    }

    fn random_vec(rng: &mut ChaCha8Rng, k: usize) -> Vec<f64> {
        (0..k).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    fn norm2(v: &[f64]) -> f64 {
        v.iter().map(|x| x * x).sum::<f64>().sqrt()
    }

    #[test]
    fn damping_fraction_is_the_daarem_schedule() {
        let d = Damping {
            base: 1.2,
            half_life: 25.0,
        };
        for s in [0.0, 1.0, 10.0, 25.0, 40.0, 400.0] {
            let direct = 1.0 / (1.0 + 1.2f64.powf(25.0 - s));
            let got = damping_fraction(&d, s);
            assert!(
                (got - direct).abs() <= 1e-15 * direct.max(1e-300),
                "{s}: {got} vs {direct}"
            );
        }
        assert_eq!(damping_fraction(&d, 25.0), 0.5);
        // Far out it neither overflows nor returns NaN.
        let far = damping_fraction(&d, -1e6);
        assert!((0.0..1e-300).contains(&far), "{far}");
        assert_eq!(damping_fraction(&d, 1e6), 1.0);
    }

    #[test]
    fn coefficients_match_the_normal_equations_with_and_without_ridge() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (k, m) = (9, 4);
        let mut h = AndersonHistory::new(k, m);
        let cols: Vec<Vec<f64>> = (0..m).map(|_| random_vec(&mut rng, k)).collect();
        for c in &cols {
            assert!(h.push(&random_vec(&mut rng, k), c));
        }
        let f = random_vec(&mut rng, k);
        let ls = h.coefficients(&f, None).unwrap();
        let direct = ridge_direct(&cols, &f, 0.0);
        for (a, b) in ls.iter().zip(&direct) {
            assert!((a - b).abs() < 1e-10, "{ls:?} vs {direct:?}");
        }
        for delta in [0.9, 0.25, 0.01] {
            let g = h.coefficients(&f, Some(delta)).unwrap();
            // ‖γ‖² = δ‖γ_LS‖², and γ is the ridge solution for some λ ≥ 0: recover λ from
            // the first normal equation and check all of them.
            let ratio = (norm2(&g) / norm2(&ls)).powi(2);
            assert!((ratio - delta).abs() < 1e-9, "{delta}: {ratio}");
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
            let resid: Vec<f64> = (0..m)
                .map(|i| {
                    dot(&cols[i], &f) - (0..m).map(|j| dot(&cols[i], &cols[j]) * g[j]).sum::<f64>()
                })
                .collect();
            let lambda = resid[0] / g[0];
            assert!(lambda > 0.0, "{lambda}");
            let again = ridge_direct(&cols, &f, lambda);
            for (a, b) in g.iter().zip(&again) {
                assert!((a - b).abs() < 1e-8 * norm2(&g), "{g:?} vs {again:?}");
            }
        }
    }

    #[test]
    fn ridge_hits_the_norm_ratio_and_handles_the_edges() {
        let d = [3.0, 1.0, 0.01];
        let u = [0.5, -2.0, 0.003];
        let n = |l: f64| {
            d.iter()
                .zip(&u)
                .map(|(a, b)| (a * b / (a * a + l)).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        for rho in [0.999, 0.7, 0.1, 1e-4] {
            let l = ridge_for_norm_ratio(&d, &u, rho);
            assert!(l > 0.0 && l.is_finite(), "{rho}: {l}");
            assert!(
                (n(l) / n(0.0) - rho).abs() < 1e-10,
                "{rho}: {}",
                n(l) / n(0.0)
            );
        }
        assert_eq!(ridge_for_norm_ratio(&d, &u, 1.0), 0.0);
        assert_eq!(ridge_for_norm_ratio(&d, &[0.0; 3], 0.5), 0.0);
        assert_eq!(ridge_for_norm_ratio(&d, &u, 0.0), f64::INFINITY);
        assert_eq!(ridge_for_norm_ratio(&d, &u, f64::NAN), f64::INFINITY);
    }

    #[test]
    fn mix_is_f_of_theta_minus_delta_g_gamma() {
        let mut h = AndersonHistory::new(2, 3);
        h.push(&[1.0, 0.0], &[0.0, 2.0]);
        h.push(&[0.5, 1.0], &[1.0, -1.0]);
        let (theta, f, gamma) = ([1.0, 2.0], [0.1, -0.2], [2.0, -1.0]);
        let mut out = [0.0; 2];
        h.mix(&theta, &f, &gamma, &mut out).unwrap();
        // ΔG = ΔX + ΔF: columns (1, 2) and (1.5, 0).
        let want = [1.1 - (2.0 * 1.0 - 1.5), 1.8 - (2.0 * 2.0 - 0.0)];
        assert_eq!(out, want);
        let e = h.mix(&theta, &f, &[1.0], &mut out).unwrap_err();
        assert!(matches!(e, MoeError::InvalidParam { name: "gamma", .. }));
    }

    #[test]
    fn a_full_history_drops_its_oldest_difference() {
        let mut h = AndersonHistory::new(1, 2);
        assert!(h.push(&[1.0], &[10.0]) && h.push(&[2.0], &[20.0]));
        assert!(h.is_full());
        assert!(h.push(&[3.0], &[30.0]));
        assert_eq!(
            (h.len(), &h.dx[..], &h.df[..]),
            (2, &[2.0, 3.0][..], &[20.0, 30.0][..])
        );
        assert!(!h.push(&[f64::NAN], &[1.0]));
        assert_eq!(h.len(), 2);
        h.clear();
        assert!(h.is_empty());
        assert!(h.coefficients(&[1.0], None).unwrap().is_empty());
        let e = h.coefficients(&[f64::INFINITY], None).unwrap_err();
        assert!(matches!(e, MoeError::NonFinite { .. }));
    }

    #[test]
    fn settings_are_checked() {
        assert!(AndersonSettings::default().check().is_ok());
        let bad = [
            AndersonSettings {
                history: 0,
                ..AndersonSettings::default()
            },
            AndersonSettings {
                damping: Some(Damping {
                    base: 1.0,
                    half_life: 3.0,
                }),
                ..AndersonSettings::default()
            },
            AndersonSettings {
                damping: Some(Damping {
                    base: 2.0,
                    half_life: f64::NAN,
                }),
                ..AndersonSettings::default()
            },
        ];
        for s in bad {
            assert!(matches!(
                Anderson::with_settings(s).unwrap_err(),
                MoeError::InvalidParam { .. }
            ));
        }
    }

    /// Undamped Anderson with a history of $\dim\theta$ differences on a linear map
    /// $\theta\mapsto M\theta + b$ ($M$ non-symmetric, $\Vert M\Vert_2 < 1$) is at the fixed
    /// point $(I - M)^{-1}b$ — solved independently by elimination — after at most
    /// $\dim\theta + 1$ steps, where plain iteration is still far from it.
    #[test]
    fn undamped_mixing_solves_a_linear_map_in_dim_plus_one_steps() {
        for seed in 0..5u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let k = 6;
            let raw: Vec<f64> = (0..k * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            // Scale to Frobenius norm 0.95 (so ‖M‖₂ < 1).
            let fro = norm2(&raw);
            let m: Vec<f64> = raw.iter().map(|v| 0.95 * v / fro).collect();
            let b = random_vec(&mut rng, k);
            let g = |x: &[f64]| -> Vec<f64> {
                (0..k)
                    .map(|i| (0..k).map(|j| m[i * k + j] * x[j]).sum::<f64>() + b[i])
                    .collect()
            };
            let i_minus_m: Vec<f64> = (0..k * k)
                .map(|ij| if ij / k == ij % k { 1.0 } else { 0.0 } - m[ij])
                .collect();
            let star = dense_solve(i_minus_m, b.clone());
            let x0 = random_vec(&mut rng, k);
            let err0 = norm2(&x0.iter().zip(&star).map(|(a, c)| a - c).collect::<Vec<_>>());

            let mut h = AndersonHistory::new(k, k);
            let mut x = x0.clone();
            let mut prev: Option<(Vec<f64>, Vec<f64>)> = None;
            let mut plain = x0.clone();
            for _ in 0..=k {
                let f: Vec<f64> = g(&x).iter().zip(&x).map(|(a, c)| a - c).collect();
                if let Some((xp, fp)) = prev {
                    let dx: Vec<f64> = x.iter().zip(&xp).map(|(a, c)| a - c).collect();
                    let df: Vec<f64> = f.iter().zip(&fp).map(|(a, c)| a - c).collect();
                    assert!(h.push(&dx, &df));
                }
                prev = Some((x.clone(), f.clone()));
                let gamma = h.coefficients(&f, None).unwrap();
                let mut next = vec![0.0; k];
                h.mix(&x, &f, &gamma, &mut next).unwrap();
                x = next;
                plain = g(&plain);
            }
            let err = norm2(&x.iter().zip(&star).map(|(a, c)| a - c).collect::<Vec<_>>());
            let err_plain = norm2(
                &plain
                    .iter()
                    .zip(&star)
                    .map(|(a, c)| a - c)
                    .collect::<Vec<_>>(),
            );
            assert!(err <= 1e-9 * err0, "seed {seed}: {err} (start {err0})");
            assert!(
                err_plain > 1e-4 * err0,
                "seed {seed}: plain iteration {err_plain}"
            );
        }
    }
}
