//! Mirror descent with the step $\eta_t = 1/\hat L_t$, where $\hat L_t$ is the relative
//! smoothness of $\ell$ with respect to the mirror map $\mathcal A$ measured along the run.
//!
//! **Why $\eta > 1$ is allowed.** Mirror descent with step $\eta$ decreases $\ell$ whenever
//! $\ell$ is $L$-smooth relative to $\mathcal A$ on the segment it moves along and
//! $\eta \le 1/L$ (Bauschke, Bolte & Teboulle 2017; Lu, Freund & Nesterov 2018):
//! smoothness gives $\ell(\Phi^+) \le \ell(\Phi_t) + \langle\nabla\ell(\Phi_t), \Phi^+ -
//! \Phi_t\rangle + L D_{\mathcal A}(\Phi^+, \Phi_t)$, and $\Phi^+$ minimising
//! $\langle\nabla\ell(\Phi_t), \Phi\rangle + \frac1\eta D_{\mathcal A}(\Phi, \Phi_t)$ over
//! the realisable set (which contains $\Phi_t$) gives $\langle\nabla\ell(\Phi_t), \Phi^+ -
//! \Phi_t\rangle \le -\frac1\eta D_{\mathcal A}(\Phi^+, \Phi_t)$; together
//! $\ell(\Phi^+) \le \ell(\Phi_t) - (\frac1\eta - L) D_{\mathcal A}(\Phi^+, \Phi_t)$. Globally $L = 1$
//! ($\mathcal A - \ell$ is convex, see [`crate::solve::problem`]), which licenses $\eta = 1$:
//! EM. Locally the ratio
//! $$ \hat L_t = \frac{D_\ell(\Phi_{t+1}, \Phi_t)}{D_{\mathcal A}(\Phi_{t+1}, \Phi_t)}
//!   = \frac{\ell(\Phi_{t+1}) - \ell(\Phi_t) - \langle\nabla\ell(\Phi_t), \Phi_{t+1} - \Phi_t\rangle}
//!          {D_{\mathcal A}(\Phi_{t+1}, \Phi_t)} $$
//! ([`step_smoothness`]) is $1 - D_B/D_{\mathcal A}$ with $B$ the rows' posterior
//! log-partition: it is small exactly when the posterior over $z$ moves as much as the
//! complete-data law, i.e. when the missing information is large — where EM is slow.
//! There $\eta = 1/\hat L_t > 1$ is a longer step that the local geometry still allows.
//!
//! **The solver** ([`AdaptiveMirrorDescent`]). Start with $\eta_0 = 1$. At step $t$ take
//! the projected mirror-descent step with $\eta_t$ ([`MirrorDescent::step`]); if it fails
//! to leave $L$ no larger ($L(\theta^+) > L(\theta_t)$), or leaves the domain, backtrack
//! $\eta \leftarrow \max(1, \eta/2)$ and retry; $\eta = 1$ is always accepted (it is EM,
//! monotone when its subproblem is solved exactly). After the step, measure $\hat L_t$ on
//! the pair $(\theta_{t+1}, \theta_t)$ and set
//! $\eta_{t+1} = \min(\max(1/\hat L_t, 1), \eta_{\max})$ (keep $\eta_t$ when $\hat L_t$
//! cannot be resolved: $D_{\mathcal A}$ at round-off level). $\eta$ is never below 1.
//!
//! **Relation to the certificate.** `diagnostics::bregman_ratio(θ_{t+1}, θ_t)` computes
//! the same ratio from its definition (re-evaluating both log-likelihoods); the
//! certificate's $\hat L$ is the maximum of such ratios over sampled pairs near the
//! iterates, an upper bound on every $\hat L_t$ of a run that stays there. Using the
//! per-step value instead of that maximum is what makes the step adaptive; backtracking
//! covers the pairs where the next ratio is larger than the last.
//!
//! **Cost.** Every pass over the data counts one EM-equivalent pass
//! ([`StepInfo::passes`]): per trial the targets, the preconditioner and each inner
//! evaluation of [`MirrorDescent::step`], then $L$ and $\nabla L$ at the trial point; per
//! accepted step one more for $\hat L_t$.

use crate::error::{MoeError, Result};
use crate::inner::parallel::fold_rows_with;
use crate::inner::InnerStats;
use crate::model::conditional::ConditionalFamily;
use crate::solve::gd::is_trial_failure;
use crate::solve::md::{assemble, MirrorDescent};
use crate::solve::problem::{row_posterior, Problem, RowScratch};
use crate::solve::solver::{FitState, NextIter, Solver, StepInfo};

/// Default cap $\eta_{\max}$ of the adaptive step.
pub const DEFAULT_MAX_ETA: f64 = 8.0;

/// Relative size below which the denominator of [`step_smoothness`] is round-off.
const RELATIVE_ROUNDOFF: f64 = 1e-10;

/// The measured relative-smoothness ratio of one step (see the
/// [module documentation](self)):
/// $$ \hat L_t = \frac{L(\theta_{t+1}) - L(\theta_t) - \frac1n\sum_i\langle \nabla A(\varphi_{t,i}) -
///    \mathbb E_{z\mid y_i;\varphi_{t,i}}[T(y_i,z)],\ \varphi_{t+1,i} - \varphi_{t,i}\rangle}
///    {\frac1n\sum_i \big[A(\varphi_{t+1,i}) - A(\varphi_{t,i}) - \langle\nabla A(\varphi_{t,i}),
///    \varphi_{t+1,i} - \varphi_{t,i}\rangle\big]}, $$
/// in one parallel pass, with the objectives `l_t` $= L(\theta_t)$ and `l_next`
/// $= L(\theta_{t+1})$ the run already has. Returns `(ratio, denominator)`; the ratio is
/// `None` when the denominator is not above its round-off ($10^{-10}$ of the terms'
/// size), i.e. when the step is too short to resolve it.
///
/// # Errors
/// As [`row_posterior`] (a target outside the support, a non-finite $A$), `LeftDomain`
/// when a realised parameter is outside the natural domain.
pub fn step_smoothness<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    theta_t: &[f64],
    theta_next: &[f64],
    l_t: f64,
    l_next: f64,
) -> Result<(Option<f64>, f64)> {
    let model = problem.model;
    let data = problem.data;
    let p = model.complete().dim();
    let n = data.n();
    // (Σ D_A row terms, Σ ⟨∇A − E_post T, Δφ⟩), Σ |terms| for the round-off floor.
    let ((den, lin), scale) = fold_rows_with(
        n,
        |cached: Option<(RowScratch, Vec<f64>)>| {
            cached
                .filter(|(s, v)| {
                    s.phi.len() == p && v.len() == p && s.resp.len() == model.n_latent()
                })
                .unwrap_or_else(|| (RowScratch::new(model), vec![0.0; p]))
        },
        || ((0.0f64, 0.0f64), 0.0f64),
        |(s, phi_next), ((den, lin), scale), rows| {
            for i in rows {
                let x = data.x(i);
                model.realise(theta_t, x, &mut s.phi);
                row_posterior(model, data.y(i), i, s)?;
                let a_t = s.log_partition;
                model.complete_mean(&s.phi, &mut s.mean, &mut s.work)?;
                model.realise(theta_next, x, phi_next);
                let a_next = model
                    .complete_log_partition(phi_next, &mut s.work)
                    .map_err(|e| MoeError::LeftDomain {
                        reason: format!("row {i}: {e}"),
                    })?;
                let (mut g_mean, mut g_post) = (0.0, 0.0);
                let coords = phi_next.iter().zip(&s.phi).zip(&s.mean).zip(&s.post_stats);
                for (((next, now), mean), post) in coords.take(p) {
                    let d = next - now;
                    g_mean += mean * d;
                    g_post += post * d;
                }
                *den += a_next - a_t - g_mean;
                *lin += g_mean - g_post;
                *scale += a_next.abs() + a_t.abs() + g_mean.abs();
            }
            Ok(())
        },
    )?;
    let nf = n as f64;
    let (den, lin, scale) = (den / nf, lin / nf, scale / nf);
    if !(den.is_finite() && lin.is_finite()) {
        return Err(MoeError::NonFinite {
            what: "relative smoothness ratio of a step",
        });
    }
    let floor = RELATIVE_ROUNDOFF * scale.max(l_t.abs());
    let ratio = (den > floor).then(|| (l_next - l_t - lin) / den);
    Ok((ratio, den))
}

/// The next step from the measured ratio: $\min(\max(1/\hat L_t, 1), \eta_{\max})$, or
/// `current` when $\hat L_t$ was not resolved; $\hat L_t \le 0$ (a step along which
/// $\ell$ is concave relative to $\mathcal A$ bounds nothing) gives $\eta_{\max}$, left
/// to backtracking.
pub fn next_eta(l_hat: Option<f64>, current: f64, max_eta: f64) -> f64 {
    match l_hat {
        None => current,
        Some(l) if l <= 0.0 => max_eta,
        Some(l) => (1.0 / l).clamp(1.0, max_eta),
    }
}

/// Projected mirror descent with $\eta_t = 1/\hat L_t$ and backtracking (see the
/// [module documentation](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveMirrorDescent {
    md: MirrorDescent,
    max_eta: f64,
    eta: f64,
}

impl AdaptiveMirrorDescent {
    /// With the inner settings of [`MirrorDescent::with_eta`] and
    /// $\eta_{\max}$ = [`DEFAULT_MAX_ETA`].
    pub fn new() -> Self {
        let md = MirrorDescent::with_eta(1.0)
            .expect("η = 1 with the default inner settings is valid")
            .with_bregman(false);
        AdaptiveMirrorDescent {
            md,
            max_eta: DEFAULT_MAX_ETA,
            eta: 1.0,
        }
    }
    /// The cap $\eta_{\max} \ge 1$.
    ///
    /// # Errors
    /// `InvalidParam { name: "max_eta" }` unless finite and $\ge 1$.
    pub fn max_eta(mut self, max_eta: f64) -> Result<Self> {
        if !(max_eta.is_finite() && max_eta >= 1.0) {
            return Err(MoeError::InvalidParam {
                name: "max_eta",
                reason: format!("finite and >= 1, got {max_eta}"),
            });
        }
        self.max_eta = max_eta;
        Ok(self)
    }
    /// The step the next iteration will try first.
    pub fn planned_eta(&self) -> f64 {
        self.eta
    }
}

impl Default for AdaptiveMirrorDescent {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: ConditionalFamily + ?Sized> Solver<Problem<'_, M>> for AdaptiveMirrorDescent {
    fn name(&self) -> String {
        "MD(η=1/L̂)".into()
    }
    fn init(&mut self, _problem: &Problem<'_, M>, state: FitState) -> Result<FitState> {
        self.eta = 1.0;
        Ok(state)
    }
    fn next_iter(&mut self, problem: &Problem<'_, M>, state: FitState) -> NextIter {
        let k = state.theta.len();
        let mut eta = self.eta.max(1.0);
        let mut passes = 0u64;
        let mut backtracks = 0u64;
        let per_trial = 1 + u64::from(self.md.is_preconditioned());
        let (next, objective, grad_norm, inner) = loop {
            self.md.set_eta(eta)?;
            let trial = self
                .md
                .step(problem, &state.theta)
                .and_then(|(next, inner)| {
                    let mut grad = vec![0.0; k];
                    let l = problem.objective_and_gradient(&next, &mut grad)?;
                    Ok((
                        next,
                        l,
                        grad.iter().map(|g| g * g).sum::<f64>().sqrt(),
                        inner,
                    ))
                });
            passes += per_trial + self.md.last_step().inner_evaluations + 1;
            match trial {
                Ok(t) if eta <= 1.0 || t.1 <= state.objective => break t,
                Ok(_) => {}
                Err(e) if eta > 1.0 && is_trial_failure(&e) => {}
                Err(e) => return Err(e),
            }
            eta = (eta / 2.0).max(1.0);
            backtracks += 1;
        };
        let (l_hat, _) = step_smoothness(problem, &state.theta, &next, state.objective, objective)?;
        passes += 1;
        self.eta = next_eta(l_hat, eta, self.max_eta);
        let inner: InnerStats = inner;
        let (state, mut record) =
            assemble(problem, state, next, objective, grad_norm, inner, false)?;
        record.step = StepInfo {
            passes,
            eta: Some(eta),
            smoothness: l_hat,
            backtracks,
            safeguard: false,
            missing_weight: None,
        };
        Ok((state, record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_eta_is_clamped_to_one_and_the_cap() {
        assert_eq!(next_eta(Some(0.25), 1.0, 8.0), 4.0);
        assert_eq!(next_eta(Some(0.01), 1.0, 8.0), 8.0);
        assert_eq!(next_eta(Some(1.0), 3.0, 8.0), 1.0);
        assert_eq!(next_eta(Some(2.0), 3.0, 8.0), 1.0);
        assert_eq!(next_eta(Some(-0.5), 1.0, 8.0), 8.0);
        assert_eq!(next_eta(None, 3.0, 8.0), 3.0);
    }

    #[test]
    fn invalid_cap_names_the_field() {
        for bad in [0.5, f64::NAN, f64::INFINITY] {
            let e = AdaptiveMirrorDescent::new().max_eta(bad).unwrap_err();
            assert!(matches!(
                e,
                MoeError::InvalidParam {
                    name: "max_eta",
                    ..
                }
            ));
        }
        assert_eq!(AdaptiveMirrorDescent::new().planned_eta(), 1.0);
    }
}
