//! SQUAREM: EM accelerated by squared extrapolation (Varadhan & Roland, *Simple and
//! globally convergent methods for accelerating the convergence of any EM algorithm*,
//! Scand. J. Statist. 35, 2008), scheme S3, with the monotone safeguard.
//!
//! With $F$ the EM map ([`Em`](crate::solve::em::Em)'s step: E-step then M-step) one
//! iteration from $\theta$ is
//! $$ \theta_1 = F(\theta),\quad \theta_2 = F(\theta_1),\quad r = \theta_1 - \theta,\quad
//!    v = \theta_2 - 2\theta_1 + \theta,\quad
//!    \alpha = \min\Big(-\frac{\Vert r\Vert_2}{\Vert v\Vert_2},\ -1\Big), $$
//! $$ \theta' = \theta - 2\alpha r + \alpha^2 v,\qquad \theta'' = F(\theta')
//!    \ \text{(stabilisation)}. $$
//! With $\alpha = -1$, $\theta' = \theta_2$: two EM steps. As in the authors' `SQUAREM` R
//! package, $-\alpha$ is also bounded by $s_{\max}$, which starts at [`STEP_MAX0`] and is
//! multiplied by [`STEP_FACTOR`] after an accepted step that used all of it and divided by
//! it after a rejected one (so early, far-from-linear steps stay short). The step is taken when
//! $\theta'$ and $\theta''$ are valid parameters (their E-step succeeds: every realised
//! $\varphi_i$ in the natural domain, so variances $> 0$ and finite likelihoods) and
//! $L(\theta'') \le L(\theta)$; otherwise the **safeguard** takes the plain EM step
//! $\theta_2 = F(F(\theta))$ (as if $\alpha = -1$ without stabilisation). EM's steps never
//! increase $L$ when the M-steps are exact; iterative M-steps (logistic, Poisson, the gate)
//! are maximisers only to their inner tolerance, and next to the optimum that can outweigh
//! EM's gain (a proptest draw: $L$ up by $3\cdot 10^{-12}$ relative). So $\theta_2$ is
//! taken only when $L(\theta_2) \le L(\theta)$, else $\theta_1$ when $L(\theta_1) \le
//! L(\theta)$, else the iterate stays (a zero change, which ends a run with any tolerance
//! as converged: EM cannot improve $L$ there at the inner solves' precision; as an inexact
//! M-step when those solves needed a fallback or missed their tolerance). $L$ never
//! increases along the run.
//!
//! **As mirror descent.** Near a fixed point $F(\theta) - \theta^* \approx M(\theta -
//! \theta^*)$ with $M = I_c^{-1}I_m$ the missing-information fraction, and EM is mirror
//! descent with $\eta = 1$. In the linear regime $\theta' - \theta^* =
//! (I + \alpha(M - I))^2$-type polynomials in $M$ applied to $\theta - \theta^*$: an
//! extrapolation along the EM direction by $-\alpha \ge 1$, i.e. a longer mirror step in
//! the slow eigendirections of $M$ (those with eigenvalue near 1, where EM crawls).
//! The step length is recorded as $\eta = -\alpha$ in [`StepInfo::eta`].
//!
//! **Cost.** Each evaluation of $F$ counts one EM-equivalent pass ([`StepInfo::passes`]):
//! 3 per accepted iteration, 3 when the safeguard fires after $\theta''$, 2 when
//! $\theta'$ is invalid, one more when $\theta_2$ is higher or invalid (the E-step at the
//! point kept), 2 when EM's own point $\theta_1$ is outside the domain (then the iterate
//! stays and the run ends as an inexact M-step, reported, not converged). The E-steps at
//! $\theta_1$, $\theta'$ and the accepted point are the E-steps of these evaluations (the
//! last is cached for the next iteration), so no pass is spent on $L$ alone except the
//! E-step at $\theta_2$ when the safeguard fires (which the next iteration reuses).

use crate::error::Result;
use crate::inner::InnerStats;
use crate::solve::em_map::EmMap;
use crate::solve::gd::is_trial_failure;
use crate::solve::solver::{FitState, IterRecord, NextIter, Solver, StepInfo};
use std::any::Any;

/// The SQUAREM solver; see the [module documentation](self).
pub struct Squarem {
    cache: Option<Box<dyn Any + Send>>,
    step_max: f64,
}

/// Initial bound on the step length $-\alpha$ (the `SQUAREM` R package's `step.max0`).
pub const STEP_MAX0: f64 = 1.0;
/// Factor by which the bound grows when a step uses all of it, and shrinks when such a
/// step is rejected (the R package's `mstep`).
pub const STEP_FACTOR: f64 = 4.0;

impl Default for Squarem {
    fn default() -> Self {
        Squarem {
            cache: None,
            step_max: STEP_MAX0,
        }
    }
}

impl std::fmt::Debug for Squarem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Squarem")
            .field("cached", &self.cache.is_some())
            .finish()
    }
}

struct Cached<S> {
    theta: Vec<f64>,
    stats: S,
}

/// The S3 step length and extrapolated point from $\theta$, $\theta_1 = F(\theta)$ and
/// $\theta_2 = F(\theta_1)$, with the step bounded by `step_max` $\ge 1$:
/// $$ \alpha = \max\Big(\min\big(-\Vert r\Vert_2 / \Vert v\Vert_2,\ -1\big),\ -s_{\max}\Big),\qquad
///    \theta' = \theta - 2\alpha r + \alpha^2 v, $$
/// with $r = \theta_1 - \theta$, $v = \theta_2 - 2\theta_1 + \theta$. When $v = 0$ or the
/// ratio is not finite, $\alpha = -s_{\max}$ if $r \ne 0$ (a straight path: the longest
/// step allowed) and $-1$ otherwise; $\alpha = -1$ gives $\theta' = \theta_2$ exactly.
pub fn squarem_extrapolate(
    theta: &[f64],
    theta1: &[f64],
    theta2: &[f64],
    step_max: f64,
) -> (f64, Vec<f64>) {
    let mut r2 = 0.0;
    let mut v2 = 0.0;
    for ((a, b), c) in theta.iter().zip(theta1).zip(theta2) {
        let r = b - a;
        let v = c - 2.0 * b + a;
        r2 += r * r;
        v2 += v * v;
    }
    let ratio = -(r2.sqrt() / v2.sqrt());
    let floor = -step_max.max(1.0);
    let alpha = if ratio.is_finite() {
        ratio.clamp(floor, -1.0)
    } else if r2 > 0.0 {
        floor
    } else {
        -1.0
    };
    if alpha == -1.0 {
        return (alpha, theta2.to_vec());
    }
    let next = theta
        .iter()
        .zip(theta1)
        .zip(theta2)
        .map(|((a, b), c)| {
            let r = b - a;
            let v = c - 2.0 * b + a;
            a - 2.0 * alpha * r + alpha * alpha * v
        })
        .collect();
    (alpha, next)
}

/// Sums the work of two inner solves (converged only if both did).
fn add_inner(a: &mut InnerStats, b: &InnerStats) {
    a.iterations += b.iterations;
    a.residual = a.residual.max(b.residual);
    a.converged &= b.converged;
    a.hessians += b.hessians;
    a.fallbacks += b.fallbacks;
}

impl Squarem {
    /// SQUAREM (scheme S3) with the monotone safeguard.
    pub fn new() -> Self {
        Squarem::default()
    }
}

/// The E-step at a trial point, or `None` when it fails (the point is outside the
/// model's domain: a variance $\le 0$, an overflow) or gives a non-finite $L$.
fn trial_e_step<P: EmMap>(problem: &P, theta: &[f64]) -> Option<(P::Stats, f64)> {
    if theta.iter().any(|v| !v.is_finite()) {
        return None;
    }
    // Any failure at a trial point sends the step to the plain EM path, which meets the
    // same error again if it is not the trial point's fault.
    problem.e_step(theta).ok().filter(|(_, l)| l.is_finite())
}

impl<P: EmMap> Solver<P> for Squarem {
    fn name(&self) -> String {
        "SQUAREM".into()
    }
    fn init(&mut self, _problem: &P, state: FitState) -> Result<FitState> {
        self.cache = None;
        self.step_max = STEP_MAX0;
        Ok(state)
    }
    fn next_iter(&mut self, problem: &P, state: FitState) -> NextIter {
        let k = problem.n_params();
        let cached = self
            .cache
            .take()
            .and_then(|b| b.downcast::<Cached<P::Stats>>().ok())
            .filter(|c| c.theta == state.theta);
        let stats0 = match cached {
            Some(c) => c.stats,
            None => problem.e_step(&state.theta)?.0,
        };
        let m_step = |stats: &P::Stats, from: &[f64]| -> Result<(Vec<f64>, InnerStats)> {
            let mut next = vec![0.0; k];
            let inner = problem.m_step(stats, from, &mut next)?;
            Ok((next, inner))
        };
        // Each E-step's statistics are dropped once their M-step is done, so one set
        // (n × K responsibilities) is alive at a time besides the one being built.
        let (theta1, mut inner) = m_step(&stats0, &state.theta)?;
        drop(stats0);
        let (stats1, l1) = match problem.e_step(&theta1) {
            Ok(v) => v,
            // EM's own point from θ is outside the domain: an M-step without a maximiser
            // (a Poisson rate heading to 0 on zero counts), where no step can be computed.
            Err(e) if is_trial_failure(&e) => return self.stay(problem, state, inner),
            Err(e) => return Err(e),
        };
        let (theta2, inner2) = m_step(&stats1, &theta1)?;
        drop(stats1);
        add_inner(&mut inner, &inner2);
        let mut passes = 2;
        let (alpha, extrapolated) =
            squarem_extrapolate(&state.theta, &theta1, &theta2, self.step_max);
        // θ' valid → F(θ') valid → L(θ'') ≤ L(θ): accept θ''; otherwise the plain EM step θ₂.
        let mut accepted = None;
        if let Some((stats_x, _)) = trial_e_step(problem, &extrapolated) {
            passes += 1;
            let mapped = m_step(&stats_x, &extrapolated);
            drop(stats_x);
            if let Ok((theta3, inner3)) = mapped {
                if let Some((stats3, l3)) = trial_e_step(problem, &theta3) {
                    if l3 <= state.objective && inner3.converged {
                        add_inner(&mut inner, &inner3);
                        accepted = Some((theta3, stats3, l3));
                    }
                }
            }
        }
        let safeguard = accepted.is_none();
        // The bound adapts as in the R package: a rejected step that used all of it
        // shrinks it (never below STEP_MAX0), an accepted one that used all of it grows it.
        let at_bound = -alpha >= self.step_max;
        if safeguard && at_bound {
            self.step_max = (self.step_max / STEP_FACTOR).max(STEP_MAX0);
        } else if at_bound {
            self.step_max *= STEP_FACTOR;
        }
        let (next, stats_next, objective) = match accepted {
            Some(a) => a,
            None => {
                let at2 = trial_e_step(problem, &theta2).filter(|(_, l)| *l <= state.objective);
                if let Some((s, l)) = at2 {
                    (theta2, s, l)
                } else {
                    // EM's own steps raised L (their M-steps are maximisers only to the
                    // inner tolerance, which next to the optimum can exceed EM's gain) or
                    // left the domain: the last point no higher is kept (θ₁, else θ)
                    // with its E-step.
                    passes += 1;
                    let keep = if l1 <= state.objective {
                        theta1
                    } else {
                        inner = inner.stayed();
                        state.theta.clone()
                    };
                    let (s, l) = problem.e_step(&keep)?;
                    (keep, s, l)
                }
            }
        };
        self.cache = Some(Box::new(Cached {
            theta: next.clone(),
            stats: stats_next,
        }));
        let step = StepInfo::extrapolated(passes, if safeguard { 1.0 } else { -alpha }, safeguard);
        let record = IterRecord::em_map_step(state.iter + 1, objective, inner, step);
        Ok((state.advance(next, objective), record))
    }
}

impl Squarem {
    /// The iterate stays when EM's point from it is outside the domain: the record says the
    /// M-step failed ([`InnerStats::failed`]), so the run ends as an inexact M-step, reported
    /// and not converged, as [`Newton`](crate::solve::newton::Newton)'s does. Two passes:
    /// the failed evaluation of $F$ and the E-step at the iterate, cached for the next
    /// iteration.
    fn stay<P: EmMap>(&mut self, problem: &P, state: FitState, inner: InnerStats) -> NextIter {
        let (stats, objective) = problem.e_step(&state.theta)?;
        let theta = state.theta.clone();
        self.cache = Some(Box::new(Cached {
            theta: theta.clone(),
            stats,
        }));
        let step = StepInfo::extrapolated(2, 1.0, true);
        let record = IterRecord::em_map_step(state.iter + 1, objective, inner.failed(), step);
        Ok((state.advance(theta, objective), record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extrapolation_follows_s3() {
        // r = (1, 0), v = (-0.5, 0): ‖r‖/‖v‖ = 2, α = −2, θ' = θ + 4r + 4v.
        let (alpha, next) = squarem_extrapolate(&[0.0, 1.0], &[1.0, 1.0], &[1.5, 1.0], 4.0);
        assert_eq!(alpha, -2.0);
        assert_eq!(next, vec![4.0 * 1.0 + 4.0 * -0.5, 1.0]);
        // The bound caps it: α = −1.5, θ' = θ + 3r + 2.25v.
        let (alpha, next) = squarem_extrapolate(&[0.0], &[1.0], &[1.5], 1.5);
        assert_eq!((alpha, next), (-1.5, vec![3.0 - 2.25 * 0.5]));
        // A ratio below 1 is clamped: α = −1 gives θ₂ itself.
        let (alpha, next) = squarem_extrapolate(&[0.0], &[1.0], &[5.0], 4.0);
        assert_eq!((alpha, next), (-1.0, vec![5.0]));
        // v = 0 on a straight path: the longest step; at a fixed point: α = −1.
        let (alpha, _) = squarem_extrapolate(&[0.0], &[1.0], &[2.0], 4.0);
        assert_eq!(alpha, -4.0);
        let (alpha, next) = squarem_extrapolate(&[1.0], &[1.0], &[1.0], 4.0);
        assert_eq!((alpha, next), (-1.0, vec![1.0]));
    }

    #[test]
    fn extrapolation_solves_a_linear_contraction_in_one_step() {
        // F(θ) = θ* + c(θ − θ*) on the line: θ' − θ* = (1 + α(c−1))²(θ − θ*) with
        // α = −‖r‖/‖v‖ = −1/(1−c), so θ' = θ* exactly.
        let (star, c, t0) = (3.0, 0.9, 1.0);
        let f = |t: f64| star + c * (t - star);
        let (t1, t2) = (f(t0), f(f(t0)));
        let (alpha, next) = squarem_extrapolate(&[t0], &[t1], &[t2], 100.0);
        assert!((alpha + 1.0 / (1.0 - c)).abs() < 1e-9, "{alpha}");
        assert!((next[0] - star).abs() < 1e-9, "{}", next[0]);
    }

    #[test]
    fn inner_work_adds_up() {
        let mut a = InnerStats::exact_step(2, 1e-12);
        let b = InnerStats {
            iterations: 3,
            residual: 1e-9,
            converged: false,
            hessians: 1,
            fallbacks: 1,
        };
        add_inner(&mut a, &b);
        assert_eq!(
            (a.iterations, a.converged, a.hessians, a.fallbacks),
            (5, false, 1, 1)
        );
        assert_eq!(a.residual, 1e-9);
    }
}
