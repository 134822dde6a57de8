//! Newton's method on $L$ with the observed information, safeguarded by EM.
//!
//! **The step.** At $\theta_t$ one evaluation ([`observed`], counted as one pass) gives $L$, $g = \nabla L$ and the
//! parts of the observed information $H = I_c + C - I_m$ (Louis; plus the penalty's
//! Hessian). The direction is $-H_\beta^{-1}g$ with
//! $$ H_\beta = I_c + C - \beta I_m $$
//! for the first $\beta$ of [`MISSING_WEIGHTS`] ($1, 0.9, 0.75, 0.5, 0.25, 0$), from the
//! rung where the last iteration left it (below), whose $H_\beta$ has a Cholesky factor: $\beta = 1$ is Newton's step, $\beta = 0$ Lange's
//! EM-gradient step (EM's step to first order), and $H_\beta$ is positive definite when
//! $\beta\,\lambda_{\max}\big((I_c + C)^{-1}I_m\big) < 1$. The points
//! $\theta_t - \alpha H_\beta^{-1}g$ for $\alpha$ in [`STEP_LENGTHS`] ($1$, then
//! $\frac12$) are evaluated by the same kind of pass; the first with $L$ no larger than
//! $L(\theta_t)$ is taken, and its pass is the next iteration's. Otherwise — no
//! positive-definite $H_\beta$, every trial higher, or a trial outside the domain — the
//! **safeguard** takes the plain EM step $F(\theta_t)$, which never increases $L$ when
//! its M-step is exact. So $L$ is monotone along the run and every fixed point is EM's.
//! (The ladder was chosen on the table of `docs/08-accelerated-em.md`: against
//! $1, \frac12, \frac14, 0$ it cut the passes on gated logistic experts and SymMoLogE
//! two- to fourfold; a finer ladder, down in steps of $0.05$, lands next to the boundary
//! of positive definiteness, where the steps are long and mostly rejected.)
//!
//! **When EM's step fails too.** Newton can follow a direction in which $L$ keeps
//! decreasing towards a supremum at infinity (a Poisson expert whose rate goes to 0 on
//! the zero counts, a separated logistic expert), a region plain EM from the same start
//! may never enter; there EM's M-step has no maximiser: its point leaves the domain, or
//! the M-step stops at a finite point that is not $Q$'s maximiser and $L$ rises (so the
//! safeguard's point is taken only when it is valid **and** no higher). The step is then
//! shortened along the direction down to $\alpha = 2^{-12}$
//! ([`LAST_RESORT_HALVINGS`]); if no point is taken the iterate stays, the record says the
//! M-step failed (`converged: false`, residual $\infty$, one fallback), and the executor
//! ends the run as [`Termination::InexactMStep`](crate::Termination::InexactMStep):
//! reported, not converged, never an error.
//!
//! **As mirror descent.** EM is mirror descent with $\eta = 1$ on the mirror map
//! $\mathcal A$, whose Hessian in $\theta$ is $I_c$ (plus $C$ through the realisation); near
//! the optimum its step is $\theta_t - (I_c + C)^{-1}g$, and its error contracts by the
//! missing-information fraction $(I_c + C)^{-1}I_m$ per step — slowly when that fraction
//! is near 1. The Newton step replaces the mirror map's curvature by the curvature of
//! $\ell$ itself, $I_c + C - I_m$: it is the mirror step in the local metric
//! $\ell$ defines, with no missing-information factor left, hence quadratic convergence
//! near a non-degenerate maximum. Where $I_c + C - I_m$ is not positive definite, the
//! relative-strong-convexity picture breaks down (the measured modulus
//! $1 - \lambda_{\max}(I_c^{-1}I_m)$ is not positive) and only EM's global guarantee
//! ($L = 1$ relative smoothness) is left: that is when the safeguard takes over.
//!
//! **Where the ladder starts.** Each iteration starts one rung below the last
//! direction's $\beta$ after a full step ($\alpha = 1$) was taken, on the same rung after
//! a half step, one rung above after the safeguard: near the optimum the ladder is at
//! Newton's $\beta = 1$, while a stretch of rejected Newton steps is not retried every
//! iteration. (Against starting at $\beta = 1$ every time, on the table of
//! `docs/08-accelerated-em.md`: gated logistic 378 → 160 passes at scale 1 and 152 → 43
//! at 2, SymMoLogE 1 137 → 32; gated Poisson 0.5 6 → 8.)
//!
//! **Cost.** [`StepInfo::passes`] counts passes over the data: each evaluation of
//! [`observed`] is one pass when the model forms its sums in one pass
//! ([`ConditionalFamily::observed_sums`]: the
//! mixture of GLM experts), plus one for the curvature otherwise (a curved generic
//! model); an accepted step costs one evaluation (the next iteration reuses it) plus one
//! per rejected trial before it, a safeguard step one per rejected trial (none when no
//! $H_\beta$ is positive definite), one E-step and one evaluation at $F(\theta_t)$. A pass here forms $n_\theta^2$-sized
//! weighted Gram products, several times the arithmetic of an E-step: compare wall
//! times too.
//!
//! Requires $n_\theta \times n_\theta$ linear algebra per step; meant for the
//! moderate $n_\theta$ of mixtures of experts, not for thousands of parameters.

use crate::error::Result;
use crate::inner::InnerStats;
use crate::model::{ConditionalFamily, EmModel};
use crate::solve::em_map::EmMap;
use crate::solve::gd::is_trial_failure;
use crate::solve::observed::{observed, Observed};
use crate::solve::problem::Problem;
use crate::solve::solver::{FitState, IterRecord, NextIter, Solver, StepInfo};
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};

/// The safeguarded Newton solver; see the [module documentation](self).
///
/// # Example
/// Newton and plain EM from one start on a gated mixture of Poisson experts: the same
/// optimum, Newton in a few one-pass steps.
/// ```
/// use em_as_md::testkit::{draw, DrawConfig};
/// use em_as_md::{Em, Executor, FitResult, Gating, MixtureOfExperts, Newton, Poisson, Problem};
/// use std::sync::Arc;
///
/// let model = MixtureOfExperts::new(Arc::new(Poisson::new()), 2, 3, Gating::Softmax)?;
/// let d = draw(&model, &DrawConfig::default(), 2000, 22)?;
/// let problem = Problem::new(&model, &d.data)?;
/// let run = |newton: bool| -> em_as_md::Result<FitResult> {
///     let start = d.theta0.clone();
///     if newton {
///         Executor::new(problem, Newton::new()).theta0(start).tol(1e-12).run()
///     } else {
///         Executor::new(problem, Em::new()).theta0(start).tol(1e-12).max_iters(5000).run()
///     }
/// };
/// let (nt, em) = (run(true)?, run(false)?);
/// let passes = |r: &FitResult| r.trace.iter().map(|t| t.step.passes).sum::<u64>();
/// assert!(nt.termination.is_converged());
/// assert!((nt.best.objective - em.best.objective).abs() < 1e-8 * em.best.objective.abs());
/// assert!(passes(&nt) < passes(&em));
/// // Each Newton step records the weight β of I_m in its Hessian (1: Newton's own).
/// assert_eq!(nt.trace.last().unwrap().step.missing_weight, Some(1.0));
/// # Ok::<(), em_as_md::MoeError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Newton {
    /// The evaluation at the current iterate, kept from the step that reached it.
    cache: Option<(Vec<f64>, Observed)>,
    /// The rung of the ladder tried first.
    rung: usize,
}

impl Newton {
    /// A Newton solver with an empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The Newton direction $-H^{-1}g$, or `None` when $H$ has no Cholesky factor (not
/// positive definite) or the direction is not finite.
pub fn newton_direction(hessian: &Mat<f64>, gradient: &[f64]) -> Option<Vec<f64>> {
    let n = gradient.len();
    let llt = hessian.llt(Side::Lower).ok()?;
    let rhs = Mat::from_fn(n, 1, |i, _| -gradient[i]);
    let d = llt.solve(&rhs);
    let d: Vec<f64> = (0..n).map(|i| d[(i, 0)]).collect();
    d.iter().all(|x| x.is_finite()).then_some(d)
}

/// The weights $\beta$ of the missing information tried, in order, for the Hessian
/// $H_\beta = I_c + C - \beta I_m$ (+ the penalty's): Newton's $\beta = 1$ first, down to
/// the EM-gradient step's $\beta = 0$.
pub const MISSING_WEIGHTS: [f64; 6] = [1.0, 0.9, 0.75, 0.5, 0.25, 0.0];

/// The step lengths tried along the direction before the safeguard.
pub const STEP_LENGTHS: [f64; 2] = [1.0, 0.5];

fn grad_norm(o: &Observed) -> f64 {
    o.gradient.iter().map(|g| g * g).sum::<f64>().sqrt()
}

impl<M> Solver<Problem<'_, M>> for Newton
where
    M: EmModel + ?Sized,
    M::Stats: 'static,
{
    fn name(&self) -> String {
        "Newton (EM safeguard)".into()
    }
    fn init(&mut self, _problem: &Problem<'_, M>, state: FitState) -> Result<FitState> {
        self.cache = None;
        self.rung = 0;
        Ok(state)
    }
    fn next_iter(&mut self, problem: &Problem<'_, M>, state: FitState) -> NextIter {
        let mut passes = 0u64;
        let here = match self.cache.take() {
            Some((theta, o)) if theta == state.theta => o,
            _ => {
                let o = observed(problem, &state.theta, true)?;
                passes += o.passes;
                o
            }
        };
        let mut rejected = 0u64;
        // The first β of the ladder whose H_β is positive definite gives the direction.
        let first = self.rung;
        let direction = MISSING_WEIGHTS[first..]
            .iter()
            .enumerate()
            .find_map(|(r, &beta)| {
                newton_direction(&here.damped_hessian(beta), &here.gradient)
                    .map(|d| (beta, d, first + r))
            });
        let direction = direction.map(|(b, d, r)| {
            self.rung = r;
            (b, d)
        });
        if let Some((beta, d)) = &direction {
            for &alpha in &STEP_LENGTHS {
                if let Some(o) = trial(problem, &state, d, alpha, &mut passes, &mut rejected)? {
                    return Ok(self.accept(state, o, alpha, *beta, passes, rejected));
                }
            }
        }
        self.rung = (self.rung + 1).min(MISSING_WEIGHTS.len() - 1);
        // The safeguard: the plain EM step, then the evaluation the next step needs.
        let (stats, _) = problem.e_step(&state.theta)?;
        let mut next = vec![0.0; state.theta.len()];
        let inner = problem.m_step(&stats, &state.theta, &mut next)?;
        drop(stats);
        passes += 1;
        // EM's point must be valid and no higher. It may be neither where Newton led to a
        // region in which the M-step has no maximiser (a Poisson expert whose rate goes to
        // 0 on zero counts): the point leaves the domain, or the M-step stops at a finite
        // point that is not Q's maximiser and L rises. Then shorter steps along the
        // direction, which descends; if none is taken the step could not be computed:
        // the iterate stays, recorded as an inexact M-step, and the run ends not
        // converged (Termination::InexactMStep).
        let o = match observed(problem, &next, true) {
            Ok(o) if o.objective <= state.objective => o,
            Ok(o) => {
                passes += o.passes;
                rejected += 1;
                return self.last_resort(problem, state, here, direction, inner, passes, rejected);
            }
            Err(e) if is_trial_failure(&e) => {
                passes += 1;
                rejected += 1;
                return self.last_resort(problem, state, here, direction, inner, passes, rejected);
            }
            Err(e) => return Err(e),
        };
        passes += o.passes;
        let objective = o.objective;
        let mut step = StepInfo::extrapolated(passes, 1.0, true);
        step.backtracks = rejected;
        let mut record = IterRecord::em_map_step(state.iter + 1, objective, inner, step);
        record.grad_norm = grad_norm(&o);
        self.cache = Some((next.clone(), o));
        Ok((state.advance(next, objective), record))
    }
}

/// The most halvings of the step length tried when even EM's point is outside the
/// domain ($\alpha$ down to $2^{-12}$).
pub const LAST_RESORT_HALVINGS: i32 = 12;

/// Evaluates $\theta_t + \alpha d$: `Some` with the point and its evaluation when $L$ is
/// no larger than at $\theta_t$; `None` (counted in `rejected`) when it is larger or the
/// point is outside the domain. Adds the passes made.
fn trial<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    state: &FitState,
    d: &[f64],
    alpha: f64,
    passes: &mut u64,
    rejected: &mut u64,
) -> Result<Option<(Vec<f64>, Observed)>> {
    let point: Vec<f64> = state
        .theta
        .iter()
        .zip(d)
        .map(|(t, s)| t + alpha * s)
        .collect();
    match observed(problem, &point, true) {
        Ok(o) => {
            *passes += o.passes;
            if o.objective <= state.objective {
                return Ok(Some((point, o)));
            }
        }
        // A trial outside the domain is a rejected trial, like a higher L.
        Err(e) if is_trial_failure(&e) => *passes += 1,
        Err(e) => return Err(e),
    }
    *rejected += 1;
    Ok(None)
}

impl Newton {
    /// When EM's safeguard point is invalid or higher: steps of $2^{-2}, \dots, 2^{-12}$
    /// along the direction, else the iterate stays with an inexact-M-step record.
    #[allow(clippy::too_many_arguments)]
    fn last_resort<M: ConditionalFamily + ?Sized>(
        &mut self,
        problem: &Problem<'_, M>,
        state: FitState,
        here: Observed,
        direction: Option<(f64, Vec<f64>)>,
        inner: InnerStats,
        mut passes: u64,
        mut rejected: u64,
    ) -> NextIter {
        if let Some((beta, d)) = &direction {
            for halvings in 2..=LAST_RESORT_HALVINGS {
                let alpha = 0.5f64.powi(halvings);
                if let Some(o) = trial(problem, &state, d, alpha, &mut passes, &mut rejected)? {
                    return Ok(self.accept(state, o, alpha, *beta, passes, rejected));
                }
            }
        }
        let failed = inner.failed();
        let mut step = StepInfo::extrapolated(passes, 1.0, true);
        step.backtracks = rejected;
        let objective = state.objective;
        let mut record = IterRecord::em_map_step(state.iter + 1, objective, failed, step);
        record.grad_norm = grad_norm(&here);
        let theta = state.theta.clone();
        self.cache = Some((theta.clone(), here));
        Ok((state.advance(theta, objective), record))
    }

    /// The record of an accepted Newton-type step, and the cache for the next one.
    fn accept(
        &mut self,
        state: FitState,
        (point, o): (Vec<f64>, Observed),
        alpha: f64,
        beta: f64,
        passes: u64,
        rejected: u64,
    ) -> (FitState, IterRecord) {
        if alpha == 1.0 {
            self.rung = self.rung.saturating_sub(1);
        }
        let objective = o.objective;
        let mut record = IterRecord::em_map_step(
            state.iter + 1,
            objective,
            InnerStats::exact_step(1, 0.0),
            StepInfo {
                passes,
                eta: Some(alpha),
                backtracks: rejected,
                missing_weight: Some(beta),
                ..StepInfo::default()
            },
        );
        record.grad_norm = grad_norm(&o);
        self.cache = Some((point.clone(), o));
        (state.advance(point, objective), record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_solves_the_newton_system_and_refuses_indefinite_matrices() {
        let h = Mat::from_fn(2, 2, |i, j| [[4.0, 1.0], [1.0, 3.0]][i][j]);
        let g = [1.0, 2.0];
        let d = newton_direction(&h, &g).unwrap();
        // H d = −g, checked by the product.
        for i in 0..2 {
            let hd: f64 = (0..2).map(|j| h[(i, j)] * d[j]).sum();
            assert!((hd + g[i]).abs() < 1e-14, "{hd}");
        }
        let indefinite = Mat::from_fn(2, 2, |i, j| [[1.0, 0.0], [0.0, -1.0]][i][j]);
        assert!(newton_direction(&indefinite, &g).is_none());
    }
}
