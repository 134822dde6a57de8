//! Mirror descent on $L$ with step $\eta$ and the stacked complete-data log-partition
//! $\mathcal A(\Phi) = \frac1n\sum_i A(\varphi_i)$ as mirror map — EM's own geometry.
//!
//! **Projected form** ([`MirrorDescent`], any realisation map):
//! $$ \theta^+ = \arg\min_\theta\ \langle\nabla\ell(\Phi_t), \Phi(\theta)\rangle +
//!    \tfrac1\eta D_{\mathcal A}(\Phi(\theta), \Phi_t)
//!    = \arg\min_\theta F_\eta(\theta),\qquad
//!    F_\eta(\theta) = \frac1n\sum_i A(\varphi_i(\theta)) - \langle m_i, \varphi_i(\theta)\rangle, $$
//! $$ m_i = (1 - \eta)\nabla A(\varphi_{t,i}) + \eta\,\mathbb E_{z\sim p(z\mid y_i;\varphi_{t,i})}\[T(y_i, z)\]. $$
//! The two objectives differ by the factor $1/\eta$ and a constant: with
//! $\nabla_{\varphi_i}\ell = \frac1n(\nabla A(\varphi_{t,i}) - \mathbb E_{\text{post}}T)$,
//! $\langle\nabla\ell, \Phi\rangle + \frac1\eta D_{\mathcal A}(\Phi,\Phi_t) = \frac1\eta\cdot
//! \frac1n\sum_i[A(\varphi_i) - \langle m_i, \varphi_i\rangle] + \text{const}$. At
//! $\eta = 1$, $m_i$ is the posterior expectation of $T$ and $F_1$ is exactly EM's M-step
//! objective (the negative expected complete-data log-likelihood up to $\log h$):
//! **EM is projected mirror descent with unit step and KL regulariser**
//! (Kunstner, Kumar & Schmidt, AISTATS 2021; Fruytier, Mokhtari & Sanghavi, ICML 2025,
//! Thm. 1). $\eta < 1$ is damped EM; $\eta > 1$ extrapolates, and $m_i$ may leave the
//! mean domain (counted and reported in [`MdStep`]; $F_\eta$ may then be unbounded below,
//! which is returned as `MoeError::LeftDomain`).
//!
//! The subproblem is built only from [`Problem::md_targets`] and [`Problem::md_subproblem`]
//! (i.e. from $A$, $\nabla A$, $T$, the posterior and the realisation map) and minimised
//! to $\Vert \nabla F_\eta\Vert_\infty \le$ `inner_tol` — never by M-step code, so the
//! equality with EM is a test, not a tautology — in two phases:
//!
//! 1. [`Lbfgs`] warm-started at $\theta_t$ and preconditioned by $I_c(\theta_t)$, in rounds
//!    of [`INNER_ROUND`] iterations; it goes on while each round at least halves
//!    $\Vert\nabla F_\eta\Vert_\infty$, up to the iteration cap, which scales with the
//!    subproblem ([`inner_iteration_cap`]).
//! 2. If the tolerance is not met (L-BFGS stalled or hit its cap), a **round-off-aware
//!    Newton endgame**: [`mirror::newton::minimize`] with a finite-difference Hessian of
//!    the analytic gradient and the round-off estimate of $F_\eta$. Near the minimiser
//!    the change of $F_\eta$ falls below its own round-off while the gradient is still far
//!    above `inner_tol` (Poisson counts of $10^4$ make $|A(\varphi_i)| \sim 10^4$, so
//!    $F$ is resolved to $\sim 10^{-10}$ only, i.e. to $\Vert\nabla F\Vert \sim 10^{-3}$);
//!    L-BFGS's value-comparing line search then wanders (measured: $\Vert\nabla F\Vert_\infty$
//!    stuck at $10^{-8}$–$10^{-5}$ for 1000 iterations of ~30 evaluations each). Newton's
//!    rules accept such steps on the evidence of the gradient (its rules 1 and 3), which
//!    still resolves progress, and reach the tolerance in a few steps. The endgame never
//!    makes the answer worse: if it fails or ends with a larger gradient, the L-BFGS
//!    iterate stands.
//!
//! A solve that still misses the tolerance is reported as not converged, and the
//! executor then does not call the run converged. ([`UnprojectedMirrorDescent`] uses
//! phase 1 alone, in one run up to the cap.)
//!
//! **Unprojected form** ([`UnprojectedMirrorDescent`], linear realisations only): when
//! $\varphi_i(\theta) = J_i\theta$ ($J_i$ constant, e.g. SymMoLinE, SymMoLogE),
//! $A_n(\theta) = \frac1n\sum_i A(J_i\theta)$ is a convex function of $\theta$ and
//! $\langle\nabla\ell(\Phi_t), \Phi(\theta)\rangle = \langle\nabla L(\theta_t),\theta\rangle$,
//! so the step is plain mirror descent in $\theta$:
//! $$ \nabla A_n(\theta^+) = \nabla A_n(\theta_t) - \eta\nabla L(\theta_t),\qquad
//!    \nabla A_n(\theta) = \frac1n\sum_i J_i^\top\nabla A(\varphi_i(\theta)), $$
//! solved as $\theta^+ = \arg\min_\theta A_n(\theta) - \langle g_t, \theta\rangle$ with
//! $g_t = \nabla A_n(\theta_t) - \eta\nabla L(\theta_t)$. Since
//! $\nabla A_n(\theta_t) - \eta\nabla L(\theta_t) = \frac1n\sum_i J_i^\top m_i$, both forms
//! have the same stationarity equation; the tests check that both computations agree.

use crate::error::{MoeError, Result};
use crate::inner::lbfgs::{Lbfgs, LbfgsReport};
use crate::inner::parallel::fold_rows_with;
use crate::inner::InnerStats;
use crate::model::conditional::ConditionalFamily;
use crate::solve::problem::{Problem, RowScratch};
use crate::solve::solver::{FitState, IterRecord, NextIter, Solver, StepInfo};

/// Default inner tolerance $\Vert \nabla F_\eta\Vert_\infty$ of the subproblem solve: tight enough
/// that EM and MD($\eta = 1$) agree to $10^{-8}$ relative in $\theta$ and $L$ (tested).
pub const DEFAULT_INNER_TOL: f64 = 1e-11;
/// Default floor of the inner L-BFGS iteration cap ([`inner_iteration_cap`]).
pub const DEFAULT_INNER_MAX: usize = 1000;
/// Inner iterations allowed per free parameter by [`inner_iteration_cap`].
pub const INNER_ITERS_PER_PARAM: usize = 20;
/// Inner iterations allowed per unit of $\sqrt\kappa$ by [`inner_iteration_cap`].
pub const INNER_ITERS_PER_SQRT_CONDITION: f64 = 20.0;
/// Upper bound of the scaled cap, so a near-singular $I_c$ cannot make it unbounded.
pub const MAX_INNER_CAP: usize = 1_000_000;
/// L-BFGS iterations per round of the inner solve: after each round that has not
/// converged, the solve goes on only if the round at least halved $\Vert\nabla F\Vert_\infty$
/// (see [`MirrorDescent::step`]); otherwise it has stalled and the Newton endgame takes over.
pub const INNER_ROUND: usize = 25;
/// Step cap of the Newton endgame of the inner solve.
pub const ENDGAME_MAX_STEPS: usize = 50;

/// The inner L-BFGS iteration cap of one mirror-descent subproblem with $k$ =
/// `n_params` free parameters:
/// $$ \min\Big(\max\big(\text{floor},\ 20\,k,\ \lceil 20\sqrt{\kappa}\,\rceil\big),\
///    \text{MAX\_INNER\_CAP}\Big), $$
/// where $\kappa$ is the condition number of the matrix the L-BFGS iterations face
/// (`condition`; `None`, non-finite or below 1 leaves only the other two terms), and a
/// floor above [`MAX_INNER_CAP`] is kept as given.
///
/// Why these terms: on a quadratic, conjugate directions reach the minimiser in $k$
/// steps in exact arithmetic and reduce the error by $\varepsilon$ in about
/// $\tfrac12\sqrt\kappa\ln(2/\varepsilon)$ steps ($\approx 13\sqrt\kappa$ for the
/// $10^{-11}$ default tolerance); L-BFGS behaves comparably, so 20 per parameter and per
/// $\sqrt\kappa$ leave room for round-off and curvature. A fixed cap (the former 1000)
/// is hit by large or ill-conditioned subproblems long before they stop making progress.
pub fn inner_iteration_cap(floor: usize, n_params: usize, condition: Option<f64>) -> usize {
    let by_dim = n_params.saturating_mul(INNER_ITERS_PER_PARAM);
    let by_cond = condition
        .filter(|c| c.is_finite() && *c >= 1.0)
        // The value is at most MAX_INNER_CAP after `min`, so the cast cannot truncate.
        .map_or(0, |c| {
            (INNER_ITERS_PER_SQRT_CONDITION * c.sqrt())
                .ceil()
                .min(MAX_INNER_CAP as f64) as usize
        });
    floor.max(by_dim.max(by_cond).min(MAX_INNER_CAP))
}

/// The condition number $\lambda_{\max}/\lambda_{\min}$ of a symmetric row-major
/// $k\times k$ matrix, or `None` when it is not positive definite (or the eigen-solver
/// fails).
pub fn condition_number(h: &[f64], k: usize) -> Option<f64> {
    if k == 0 || h.len() != k * k {
        return None;
    }
    let m = faer::Mat::from_fn(k, k, |a, b| h[a * k + b]);
    let eig = m.self_adjoint_eigen(faer::Side::Lower).ok()?;
    let s = eig.S().column_vector();
    let (lo, hi) = (0..k).fold((f64::INFINITY, 0.0f64), |(lo, hi), i| {
        (lo.min(s[i]), hi.max(s[i]))
    });
    (lo > 0.0 && (hi / lo).is_finite()).then(|| hi / lo)
}

/// What one mirror-descent step saw beyond the [`IterRecord`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MdStep {
    /// Rows whose target $m_i$ lies outside the mean domain of the complete-data family
    /// (possible only for $\eta > 1$; then $F_\eta$ has no per-row minimiser, although the
    /// realised problem may still be bounded).
    pub rows_outside_mean_domain: usize,
    /// Final $\Vert \nabla F\Vert_\infty$ of the inner solve.
    pub inner_residual: f64,
    /// Inner L-BFGS iterations.
    pub inner_iterations: u64,
    /// Inner function/gradient evaluations.
    pub inner_evaluations: u64,
    /// Value of the subproblem objective at $\theta^+$.
    pub subproblem_value: f64,
}

impl MdStep {
    /// The record of a step whose inner solve ended with `report`, with `outside` rows
    /// outside the mean domain.
    fn from_report(outside: usize, report: &LbfgsReport) -> Self {
        MdStep {
            rows_outside_mean_domain: outside,
            inner_residual: report.grad_norm,
            inner_iterations: report.iterations,
            inner_evaluations: report.evaluations,
            subproblem_value: report.value,
        }
    }
}

fn validate(eta: f64, inner_tol: f64, inner_max: usize) -> Result<()> {
    if !(eta > 0.0 && eta.is_finite()) {
        return Err(MoeError::InvalidParam {
            name: "eta",
            reason: format!("finite and > 0, got {eta}"),
        });
    }
    if !(inner_tol > 0.0 && inner_tol.is_finite()) {
        return Err(MoeError::InvalidParam {
            name: "inner_tol",
            reason: format!("finite and > 0, got {inner_tol}"),
        });
    }
    if inner_max == 0 {
        return Err(MoeError::InvalidParam {
            name: "inner_max",
            reason: "at least 1".into(),
        });
    }
    Ok(())
}

/// Builds the next state and record from $\theta^+$: $L(\theta^+)$ and
/// $\Vert \nabla L(\theta^+)\Vert_2$ in one pass, $D_{\mathcal A}(\Phi_{t+1},\Phi_t)$ if asked.
fn finish<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    state: FitState,
    next: Vec<f64>,
    inner: InnerStats,
    bregman: bool,
) -> Result<(FitState, IterRecord)> {
    let mut grad = vec![0.0; next.len()];
    let objective = problem.objective_and_gradient(&next, &mut grad)?;
    let grad_norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
    assemble(problem, state, next, objective, grad_norm, inner, bregman)
}

/// The next state and record from $\theta^+$ whose $L(\theta^+)$ and
/// $\Vert \nabla L(\theta^+)\Vert_2$ are already known (the best iterate is updated in the
/// state; the executor fills `elapsed`).
pub(crate) fn assemble<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    state: FitState,
    next: Vec<f64>,
    objective: f64,
    grad_norm: f64,
    inner: InnerStats,
    bregman: bool,
) -> Result<(FitState, IterRecord)> {
    if !objective.is_finite() {
        return Err(MoeError::NonFinite {
            what: "objective L(θ)",
        });
    }
    let bregman_step = if bregman {
        problem.stacked_bregman(&next, &state.theta)?
    } else {
        f64::NAN
    };
    let iter = state.iter + 1;
    Ok((
        state.advance(next, objective),
        IterRecord {
            iter,
            objective,
            grad_norm,
            bregman_step,
            inner,
            step: Default::default(),
            elapsed: 0.0,
        },
    ))
}

/// The complete-data information at $\theta$,
/// $$ I_c(\theta) = \frac1n\sum_i J_i(\theta)^\top\,\nabla^2 A(\varphi_i(\theta))\,J_i(\theta), $$
/// row-major $k\times k$ ($k$ = `n_params`). It is the Gauss–Newton part of the Hessian of
/// every mirror-descent subproblem $F_\eta$ (exactly its Hessian, and that of $A_n$, when
/// $\varphi_i$ is linear in $\theta$), which is why [`MirrorDescent`] uses $I_c(\theta_t)$
/// as its L-BFGS preconditioner.
///
/// Computed by the model when it offers the row sums
/// ([`ConditionalFamily::complete_information_sums`]: the mixture of experts as weighted
/// Gram products), otherwise per row from [`ConditionalFamily::realise_jacobian_t`] and
/// [`ConditionalFamily::complete_fisher`] into per-worker buffers (no allocation per row).
///
/// # Errors
/// `LeftDomain` if some $\varphi_i(\theta)$ is outside the natural domain; a wrong-length
/// `theta` as [`Problem::objective`].
pub fn complete_information<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    theta: &[f64],
) -> Result<Vec<f64>> {
    use faer::Mat;
    problem.check_theta(theta)?;
    let model = problem.model;
    let data = problem.data;
    let p = model.complete().dim();
    let k = theta.len();
    let n = data.n();
    let nf = n as f64;
    if let Some(ic) = model
        .complete_information_sums(data, theta)
        .filter(|ic| ic.nrows() == k && ic.ncols() == k)
    {
        return Ok((0..k * k).map(|e| ic[(e / k, e % k)] / nf).collect());
    }
    let h = fold_rows_with(
        n,
        |cached: Option<IcScratch>| {
            cached
                .filter(|c| {
                    c.jt.nrows() == k && c.jt.ncols() == p && c.work.len() == model.row_work_len()
                })
                .unwrap_or_else(|| IcScratch {
                    phi: vec![0.0; p],
                    work: vec![0.0; model.row_work_len()],
                    fisher: Mat::zeros(p, p),
                    jt: Mat::zeros(k, p),
                })
        },
        || vec![0.0; k * k],
        |sc, h, rows| {
            for i in rows {
                let x = data.x(i);
                model.realise(theta, x, &mut sc.phi);
                model
                    .complete_fisher(&sc.phi, sc.fisher.as_mut(), &mut sc.work)
                    .map_err(|err| MoeError::LeftDomain {
                        reason: format!("row {i}: {err}"),
                    })?;
                model.realise_jacobian_t(theta, x, sc.jt.as_mut(), &mut sc.work);
                // h += Jᵀ F J entry by entry: J is sparse (a coefficient block touches one
                // component of φ), and the zero tests skip most of the products.
                for r in 0..p {
                    for s2 in 0..p {
                        let f = sc.fisher[(r, s2)];
                        if f == 0.0 {
                            continue;
                        }
                        for a in 0..k {
                            let c = f * sc.jt[(a, r)];
                            if c == 0.0 {
                                continue;
                            }
                            let js = sc.jt.col(s2);
                            for (b, hb) in h[a * k..(a + 1) * k].iter_mut().enumerate() {
                                *hb += c * js[b];
                            }
                        }
                    }
                }
            }
            Ok(())
        },
    )?;
    Ok(h.into_iter().map(|v| v / nf).collect())
}

/// Per-worker buffers of [`complete_information`]'s per-row path.
struct IcScratch {
    phi: Vec<f64>,
    work: Vec<f64>,
    fisher: faer::Mat<f64>,
    jt: faer::Mat<f64>,
}

/// A Cholesky solve with $I_c(\theta)$ as L-BFGS preconditioner, or `None` when $I_c$ is
/// not positive definite (then plain L-BFGS scaling is used).
fn preconditioner<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    theta: &[f64],
) -> Result<Option<faer::linalg::solvers::Llt<f64>>> {
    let k = theta.len();
    let h = complete_information(problem, theta)?;
    let m = faer::Mat::from_fn(k, k, |a, b| h[a * k + b]);
    Ok(m.llt(faer::Side::Lower).ok())
}

/// The L-BFGS settings of one subproblem with `k` parameters: `base` with its
/// `max_iter` replaced by [`inner_iteration_cap`]`(base.max_iter, k, condition)` unless
/// the cap is fixed.
fn inner_for(base: &Lbfgs, fixed: bool, k: usize, condition: Option<f64>) -> Lbfgs {
    let mut inner = base.clone();
    if !fixed {
        inner.max_iter = inner_iteration_cap(base.max_iter, k, condition);
    }
    inner
}

fn run_inner<F>(
    inner: &Lbfgs,
    llt: Option<&faer::linalg::solvers::Llt<f64>>,
    f: F,
    theta: &mut [f64],
) -> Result<LbfgsReport>
where
    F: FnMut(&[f64], &mut [f64]) -> Result<f64>,
{
    use faer::linalg::solvers::Solve;
    match llt {
        Some(llt) => {
            let k = theta.len();
            let mut pc = |v: &mut [f64]| {
                let sol = llt.solve(faer::Mat::from_fn(k, 1, |i, _| v[i]));
                for (i, vi) in v.iter_mut().enumerate() {
                    *vi = sol[(i, 0)];
                }
            };
            inner.minimize_preconditioned(f, theta, Some(&mut pc))
        }
        None => inner.minimize(f, theta),
    }
}

/// The Newton endgame of a subproblem solve that L-BFGS left short of `tol`: damped
/// Newton ([`mirror::newton::minimize`], with its round-off rules) on $F$ from `theta`,
/// with the Hessian by forward differences of the analytic gradient
/// ($h_j = \sqrt{\varepsilon_{\text{mach}}}\max(1, |\theta_j|)$, symmetrised; a backward
/// difference where the forward point leaves the domain) and BFGS reuse while steps
/// contract the gradient. Returns the Newton report, the gradient evaluations it does
/// not count (finite differences and the final check) and $\Vert\nabla F\Vert_\infty$ at
/// the returned `theta`.
///
/// Why: near the minimiser, $F(\theta) - F^\star \approx \tfrac12\Vert\nabla F\Vert^2_{H^{-1}}$
/// drops below the round-off of the computed $F$ (a sum of $n$ terms of size
/// $|A(\varphi_i)|$, e.g. $e^{\eta}\sim 10^4$ for Poisson counts of that size) long
/// before $\Vert\nabla F\Vert_\infty$ reaches $10^{-11}$. L-BFGS's line search, which
/// compares values, then wanders inside that noise band with
/// $\Vert\nabla F\Vert_\infty$ stuck at $10^{-8}$–$10^{-5}$ until its cap (measured:
/// thousands of evaluations per step). Newton's rules 1 and 3 take a step whose value
/// change is within round-off on the evidence of the gradient, which still resolves
/// progress, so the solve reaches the gradient tolerance in a few steps.
fn newton_endgame<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    m: &[f64],
    theta: &mut [f64],
    tol: f64,
) -> Result<(mirror::newton::NewtonReport, u64, f64)> {
    use mirror::newton::{minimize, EvalOut, FnObjective, Need, NewtonSettings};
    let k = theta.len();
    let mut gp = vec![0.0; k];
    let mut xp = vec![0.0; k];
    let mut fd_evals = 0u64;
    let mut eval = |x: &[f64], need: Need, out: &mut EvalOut<'_>| -> Result<()> {
        let (v, noise) = match problem.md_subproblem_with_noise(x, m, out.grad) {
            Ok(r) => r,
            Err(e) if is_domain(&e) => {
                out.value = f64::INFINITY;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        out.value = v;
        out.noise = noise;
        if need == Need::Hessian {
            xp.copy_from_slice(x);
            for j in 0..k {
                let h = f64::EPSILON.sqrt() * x[j].abs().max(1.0);
                xp[j] = x[j] + h;
                fd_evals += 1;
                if let Err(e) = problem.md_subproblem_with_noise(&xp, m, &mut gp) {
                    if !is_domain(&e) {
                        return Err(e);
                    }
                    xp[j] = x[j] - h;
                    fd_evals += 1;
                    problem.md_subproblem_with_noise(&xp, m, &mut gp)?;
                }
                let step = xp[j] - x[j];
                xp[j] = x[j];
                for (i, (a, b)) in gp.iter().zip(out.grad.iter()).enumerate() {
                    out.hess[(i, j)] = (a - b) / step;
                }
            }
            // Symmetrise (the driver reads the lower triangle).
            for j in 0..k {
                for i in j + 1..k {
                    let s = 0.5 * (out.hess[(i, j)] + out.hess[(j, i)]);
                    out.hess[(i, j)] = s;
                }
            }
        }
        Ok(())
    };
    let settings = NewtonSettings::new(tol, ENDGAME_MAX_STEPS)
        .map_err(mirror::newton::NewtonFailure::from)?
        .with_reuse_below(0.5);
    let report = minimize(&mut FnObjective::new(k, &mut eval), theta, &settings, None)?;
    let mut g = vec![0.0; k];
    problem.md_subproblem_with_noise(theta, m, &mut g)?;
    let gmax = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    Ok((report, fd_evals + 1, gmax))
}

/// Whether an error of the subproblem means "outside the natural domain".
fn is_domain(e: &MoeError) -> bool {
    matches!(
        e,
        MoeError::LeftDomain { .. }
            | MoeError::NonFinite { .. }
            | MoeError::Mirror(mirror::MirrorError::OutsideDomain { .. })
            | MoeError::Mirror(mirror::MirrorError::NonFinite { .. })
    )
}

/// The inner solve of one subproblem: preconditioned L-BFGS in rounds of
/// [`INNER_ROUND`] iterations up to `inner.max_iter` in all, stopping early when a round
/// fails to halve $\Vert\nabla F\Vert_\infty$ (stalled), then, if the tolerance is not
/// met, the [`newton_endgame`]. Returns the combined report (iterations and evaluations
/// of both phases; `converged` iff $\Vert\nabla F\Vert_\infty \le$ `inner.grad_tol`).
fn solve_subproblem<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    inner: &Lbfgs,
    llt: Option<&faer::linalg::solvers::Llt<f64>>,
    m: &[f64],
    theta: &mut [f64],
) -> Result<LbfgsReport> {
    let mut total = LbfgsReport {
        iterations: 0,
        evaluations: 0,
        grad_norm: f64::INFINITY,
        value: f64::NAN,
        converged: false,
    };
    loop {
        let left = inner.max_iter - total.iterations as usize;
        let round = Lbfgs {
            max_iter: left.min(INNER_ROUND),
            ..inner.clone()
        };
        let r = run_inner(&round, llt, |th, g| problem.md_subproblem(th, m, g), theta)?;
        let before = total.grad_norm;
        total.iterations += r.iterations;
        total.evaluations += r.evaluations;
        total.grad_norm = r.grad_norm;
        total.value = r.value;
        total.converged = r.converged;
        if r.converged || total.iterations as usize >= inner.max_iter || r.grad_norm > 0.5 * before
        {
            break;
        }
    }
    if !total.converged {
        // The endgame only ever improves the answer: if its Hessian is not positive
        // definite (F need not be convex in θ for a nonlinear realisation), it fails, or
        // it ends with a larger gradient, the L-BFGS iterate stands, reported as not
        // converged.
        let start = theta.to_vec();
        match newton_endgame(problem, m, theta, inner.grad_tol) {
            Ok((nr, extra, gmax)) if gmax <= total.grad_norm => {
                total.iterations += nr.iterations as u64;
                total.evaluations += nr.evaluations as u64 + extra;
                total.grad_norm = gmax;
                total.value = nr.value;
                total.converged = gmax <= inner.grad_tol;
            }
            _ => theta.copy_from_slice(&start),
        }
    }
    Ok(total)
}

/// Projected mirror descent with step $\eta$ (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorDescent {
    core: MdCore,
    strict_mean_domain: bool,
    precondition: bool,
}

/// What both mirror-descent solvers hold: the step, the inner L-BFGS settings, the two
/// switches of [`md_builders`] and the last step's record.
#[derive(Debug, Clone, PartialEq)]
struct MdCore {
    eta: f64,
    inner: Lbfgs,
    fixed_inner_cap: bool,
    record_bregman: bool,
    last: MdStep,
}

impl MdCore {
    fn new(eta: f64, inner_tol: f64, inner_max: usize) -> Result<Self> {
        validate(eta, inner_tol, inner_max)?;
        Ok(MdCore {
            eta,
            inner: Lbfgs {
                grad_tol: inner_tol,
                max_iter: inner_max,
                ..Lbfgs::default()
            },
            fixed_inner_cap: false,
            record_bregman: true,
            last: MdStep::default(),
        })
    }
}

/// The builder methods and accessors both mirror-descent solvers share (on their `core`).
macro_rules! md_builders {
    ($solver:ident) => {
        impl $solver {
            /// Step $\eta$ with [`DEFAULT_INNER_TOL`] and [`DEFAULT_INNER_MAX`].
            ///
            /// # Errors
            /// As [`new`](Self::new).
            pub fn with_eta(eta: f64) -> Result<Self> {
                Self::new(eta, DEFAULT_INNER_TOL, DEFAULT_INNER_MAX)
            }
            /// The step $\eta$.
            pub fn eta(&self) -> f64 {
                self.core.eta
            }
            /// Whether to compute $D_{\mathcal A}(\Phi_{t+1},\Phi_t)$ each step (default:
            /// yes).
            pub fn with_bregman(mut self, on: bool) -> Self {
                self.core.record_bregman = on;
                self
            }
            /// With `true`, the inner cap is exactly `inner_max` whatever the subproblem
            /// (default: scaled by [`inner_iteration_cap`], `inner_max` being its floor).
            pub fn fixed_inner_cap(mut self, on: bool) -> Self {
                self.core.fixed_inner_cap = on;
                self
            }
            /// Details of the last step.
            pub fn last_step(&self) -> &MdStep {
                &self.core.last
            }
        }
    };
}

md_builders!(MirrorDescent);
md_builders!(UnprojectedMirrorDescent);

impl MirrorDescent {
    /// Step $\eta$, inner tolerance $\Vert \nabla F_\eta\Vert_\infty \le$ `inner_tol`, and
    /// `inner_max` as the floor of the inner L-BFGS iteration cap, which scales with the
    /// subproblem ([`inner_iteration_cap`]: its number of parameters and, without the
    /// preconditioner, the condition number of $I_c(\theta_t)$); see
    /// [`fixed_inner_cap`](Self::fixed_inner_cap) for a cap of exactly `inner_max`.
    ///
    /// # Errors
    /// `InvalidParam` for $\eta \le 0$ or non-finite, `inner_tol` not finite and positive,
    /// `inner_max = 0`.
    pub fn new(eta: f64, inner_tol: f64, inner_max: usize) -> Result<Self> {
        Ok(MirrorDescent {
            core: MdCore::new(eta, inner_tol, inner_max)?,
            strict_mean_domain: false,
            precondition: true,
        })
    }
    /// Changes the step $\eta$ between steps (the adaptive solver's $\eta_t$).
    ///
    /// # Errors
    /// `InvalidParam { name: "eta" }` for $\eta \le 0$ or non-finite.
    pub fn set_eta(&mut self, eta: f64) -> Result<()> {
        validate(eta, self.core.inner.grad_tol, self.core.inner.max_iter)?;
        self.core.eta = eta;
        Ok(())
    }
    /// Whether the inner solve is preconditioned by $I_c(\theta_t)$ (one pass per step).
    pub fn is_preconditioned(&self) -> bool {
        self.precondition
    }
    /// With `true`, a step whose targets $m_i$ leave the mean domain fails with
    /// `LeftDomain` instead of being attempted (default: attempted and counted in
    /// [`MdStep::rows_outside_mean_domain`]).
    pub fn strict_mean_domain(mut self, on: bool) -> Self {
        self.strict_mean_domain = on;
        self
    }
    /// Whether to precondition the inner L-BFGS with the complete-data information
    /// $I_c(\theta_t)$ ([`complete_information`], default: yes; it only changes how fast
    /// the subproblem is solved, not its solution).
    pub fn precondition(mut self, on: bool) -> Self {
        self.precondition = on;
        self
    }
    /// One projected mirror-descent step from $\theta_t$ alone: returns $\theta^+$ and
    /// the inner report (used by `next_iter` and by tests).
    ///
    /// # Errors
    /// `LeftDomain` when $F_\eta$ is unbounded below (or, with
    /// [`strict_mean_domain`](Self::strict_mean_domain), when a target leaves the mean
    /// domain); errors of the objective otherwise.
    pub fn step<M: ConditionalFamily + ?Sized>(
        &mut self,
        problem: &Problem<'_, M>,
        theta_t: &[f64],
    ) -> Result<(Vec<f64>, InnerStats)> {
        let m = problem.md_targets(theta_t, self.core.eta)?;
        let fam = problem.model.complete();
        let p = fam.dim();
        let outside = m.chunks(p).filter(|mi| !fam.in_mean_domain(mi)).count();
        self.core.last = MdStep {
            rows_outside_mean_domain: outside,
            ..MdStep::default()
        };
        if outside > 0 && self.strict_mean_domain {
            return Err(MoeError::LeftDomain {
                reason: format!(
                    "η = {}: {outside} of {} target statistics m_i are outside the mean domain of {}",
                    self.core.eta,
                    problem.data.n(),
                    fam.name()
                ),
            });
        }
        let mut theta = theta_t.to_vec();
        let k = theta_t.len();
        // Preconditioned by I_c(θ_t), the iterations face a condition number near 1 (exactly
        // 1 for a linear realisation): the cap scales with k alone. Without it (or when
        // I_c is singular), they face κ(I_c(θ_t)), which then enters the cap.
        let (llt, condition) = if self.precondition {
            match preconditioner(problem, theta_t)? {
                Some(llt) => (Some(llt), None),
                None if self.core.fixed_inner_cap => (None, None),
                None => (
                    None,
                    condition_number(&complete_information(problem, theta_t)?, k),
                ),
            }
        } else if self.core.fixed_inner_cap {
            (None, None)
        } else {
            (
                None,
                condition_number(&complete_information(problem, theta_t)?, k),
            )
        };
        let inner = inner_for(&self.core.inner, self.core.fixed_inner_cap, k, condition);
        let report = solve_subproblem(problem, &inner, llt.as_ref(), &m, &mut theta)
        .map_err(|e| match e {
                MoeError::LeftDomain { reason } => MoeError::LeftDomain {
                    reason: format!(
                        "mirror-descent step η = {} ({outside} rows with targets outside the mean domain): {reason}",
                        self.core.eta
                    ),
                },
                other => other,
            })?;
        self.core.last = MdStep::from_report(self.core.last.rows_outside_mean_domain, &report);
        Ok((theta, InnerStats::from(&report)))
    }
}

impl<M: ConditionalFamily + ?Sized> Solver<Problem<'_, M>> for MirrorDescent {
    fn name(&self) -> String {
        format!("MD(η={})", self.core.eta)
    }
    fn next_iter(&mut self, problem: &Problem<'_, M>, state: FitState) -> NextIter {
        let (next, inner) = self.step(problem, &state.theta)?;
        let (state, mut record) = finish(problem, state, next, inner, self.core.record_bregman)?;
        // Targets, the preconditioner I_c(θ_t), each inner evaluation, L and ∇L at θ⁺.
        let passes = 2 + u64::from(self.precondition) + self.core.last.inner_evaluations;
        record.step = StepInfo::mirror_step(passes, self.core.eta);
        Ok((state, record))
    }
}

/// Unprojected mirror descent in $\theta$ for linear realisations
/// (see the [module documentation](self)). Its
/// [`last_step`](Self::last_step) does not count rows outside the mean domain (0).
#[derive(Debug, Clone, PartialEq)]
pub struct UnprojectedMirrorDescent {
    core: MdCore,
}

impl UnprojectedMirrorDescent {
    /// Step $\eta$, inner tolerance and iteration-cap floor as for
    /// [`MirrorDescent::new`] (the cap scales with the number of parameters; with a
    /// singular $I_c(\theta_t)$, hence no preconditioner, also with its condition number).
    ///
    /// # Errors
    /// `InvalidParam` as for [`MirrorDescent::new`].
    pub fn new(eta: f64, inner_tol: f64, inner_max: usize) -> Result<Self> {
        Ok(UnprojectedMirrorDescent {
            core: MdCore::new(eta, inner_tol, inner_max)?,
        })
    }

    /// $A_n(\theta) = \frac1n\sum_i A(\varphi_i(\theta))$ and
    /// $\nabla A_n(\theta) = \frac1n\sum_i J_i^\top\nabla A(\varphi_i(\theta))$ (into `grad`).
    ///
    /// # Errors
    /// `LeftDomain` if some $\varphi_i(\theta)$ is outside the natural domain.
    pub fn stacked_potential<M: ConditionalFamily + ?Sized>(
        problem: &Problem<'_, M>,
        theta: &[f64],
        grad: &mut [f64],
    ) -> Result<f64> {
        let model = problem.model;
        let data = problem.data;
        let p = model.complete().dim();
        let n = data.n();
        let (val, g) = fold_rows_with(
            n,
            |cached: Option<RowScratch>| {
                cached
                    .filter(|s| s.phi.len() == p && s.work.len() == model.row_work_len())
                    .unwrap_or_else(|| RowScratch::new(model))
            },
            || (0.0f64, vec![0.0; theta.len()]),
            |s, (acc, g), rows| {
                for i in rows {
                    let x = data.x(i);
                    model.realise(theta, x, &mut s.phi);
                    *acc += model
                        .complete_log_partition(&s.phi, &mut s.work)
                        .map_err(|e| MoeError::LeftDomain {
                            reason: format!("row {i}: {e}"),
                        })?;
                    model.complete_mean(&s.phi, &mut s.mean, &mut s.work)?;
                    model.realise_vjp(theta, x, &s.mean, g);
                }
                Ok(())
            },
        )?;
        for (o, v) in grad.iter_mut().zip(g) {
            *o = v / n as f64;
        }
        let v = val / n as f64;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(MoeError::NonFinite {
                what: "stacked potential A_n(θ)",
            })
        }
    }

    /// One unprojected step from $\theta_t$: returns $\theta^+$ and the inner report.
    ///
    /// # Errors
    /// `InvalidParam` if the model's realisation is not linear; `LeftDomain` if
    /// $g_t = \nabla A_n(\theta_t) - \eta\nabla L(\theta_t)$ is not in the range of
    /// $\nabla A_n$ (the subproblem is unbounded below).
    pub fn step<M: ConditionalFamily + ?Sized>(
        &mut self,
        problem: &Problem<'_, M>,
        theta_t: &[f64],
    ) -> Result<(Vec<f64>, InnerStats)> {
        if !problem.model.is_linear() {
            return Err(MoeError::InvalidParam {
                name: "model",
                reason: "unprojected mirror descent needs a realisation map linear in θ \
                         (ConditionalFamily::is_linear); use MirrorDescent"
                    .into(),
            });
        }
        let k = theta_t.len();
        let mut grad_l = vec![0.0; k];
        problem.objective_and_gradient(theta_t, &mut grad_l)?;
        let mut target = vec![0.0; k];
        Self::stacked_potential(problem, theta_t, &mut target)?;
        for (t, g) in target.iter_mut().zip(&grad_l) {
            *t -= self.core.eta * g;
        }
        let mut theta = theta_t.to_vec();
        // For a linear realisation I_c(θ) is the Hessian of A_n: L-BFGS becomes Newton-like.
        let llt = preconditioner(problem, theta_t)?;
        let condition = match (&llt, self.core.fixed_inner_cap) {
            (None, false) => condition_number(&complete_information(problem, theta_t)?, k),
            (Some(_), _) | (None, true) => None,
        };
        let inner = inner_for(&self.core.inner, self.core.fixed_inner_cap, k, condition);
        let report = run_inner(
            &inner,
            llt.as_ref(),
            |th, g| {
                let v = Self::stacked_potential(problem, th, g)?;
                let mut lin = 0.0;
                for j in 0..k {
                    lin += target[j] * th[j];
                    g[j] -= target[j];
                }
                Ok(v - lin)
            },
            &mut theta,
        )?;
        self.core.last = MdStep::from_report(0, &report);
        Ok((theta, InnerStats::from(&report)))
    }
}

impl<M: ConditionalFamily + ?Sized> Solver<Problem<'_, M>> for UnprojectedMirrorDescent {
    fn name(&self) -> String {
        format!("unprojected MD(η={})", self.core.eta)
    }
    fn next_iter(&mut self, problem: &Problem<'_, M>, state: FitState) -> NextIter {
        let (next, inner) = self.step(problem, &state.theta)?;
        let (state, mut record) = finish(problem, state, next, inner, self.core.record_bregman)?;
        // L and ∇L at θ_t, A_n at θ_t, I_c(θ_t), each inner evaluation, L and ∇L at θ⁺.
        let passes = 4 + self.core.last.inner_evaluations;
        record.step = StepInfo::mirror_step(passes, self.core.eta);
        Ok((state, record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_name_the_field() {
        for (eta, tol, max, name) in [
            (0.0, 1e-10, 10, "eta"),
            (f64::NAN, 1e-10, 10, "eta"),
            (-1.0, 1e-10, 10, "eta"),
            (1.0, 0.0, 10, "inner_tol"),
            (1.0, f64::INFINITY, 10, "inner_tol"),
            (1.0, 1e-10, 0, "inner_max"),
        ] {
            let e = MirrorDescent::new(eta, tol, max).unwrap_err();
            assert!(matches!(e, MoeError::InvalidParam { name: n, .. } if n == name));
            let e = UnprojectedMirrorDescent::new(eta, tol, max).unwrap_err();
            assert!(matches!(e, MoeError::InvalidParam { name: n, .. } if n == name));
        }
    }

    #[test]
    fn the_inner_cap_follows_its_rule() {
        // Small, well-conditioned: the floor.
        assert_eq!(inner_iteration_cap(1000, 10, None), 1000);
        assert_eq!(inner_iteration_cap(1000, 10, Some(100.0)), 1000);
        // Dimension: 20 per parameter.
        assert_eq!(inner_iteration_cap(1000, 120, None), 2400);
        // Conditioning: ⌈20 √κ⌉.
        assert_eq!(inner_iteration_cap(1000, 10, Some(1e6)), 20_000);
        assert_eq!(inner_iteration_cap(1000, 2000, Some(1e6)), 40_000);
        // Meaningless condition numbers are ignored, huge ones bounded.
        for c in [f64::NAN, f64::INFINITY, 0.5, -3.0] {
            assert_eq!(inner_iteration_cap(1000, 10, Some(c)), 1000);
        }
        assert_eq!(inner_iteration_cap(1000, 10, Some(1e30)), MAX_INNER_CAP);
        assert_eq!(inner_iteration_cap(1000, usize::MAX, None), MAX_INNER_CAP);
        // A floor above the bound is the caller's explicit choice.
        assert_eq!(inner_iteration_cap(2_000_000, 10, Some(1e30)), 2_000_000);
    }

    #[test]
    fn condition_number_of_diagonal_and_singular_matrices() {
        let c = condition_number(&[4.0, 0.0, 0.0, 0.01], 2).unwrap();
        assert!((c - 400.0).abs() < 1e-9, "{c}");
        assert_eq!(condition_number(&[1.0, 1.0, 1.0, 1.0], 2), None);
        assert_eq!(condition_number(&[1.0, 0.0, 0.0, -1.0], 2), None);
        assert_eq!(condition_number(&[1.0], 2), None);
        assert_eq!(condition_number(&[], 0), None);
    }

    #[test]
    fn solvers_are_send_and_sync() {
        fn ok<T: Send + Sync>() {}
        ok::<MirrorDescent>();
        ok::<UnprojectedMirrorDescent>();
    }
}
