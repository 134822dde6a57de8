//! The softmax gate and its M-step.
//!
//! With $K$ experts and gate vectors $w_0, \dots, w_{K-2} \in \mathbb R^d$ (the reference
//! expert $K-1$ has $w_{K-1} = 0$), the logits and gate probabilities are
//! $$ g_k(x) = w_k^\top x,\qquad \pi_k(x) = \frac{e^{g_k(x)}}{\sum_l e^{g_l(x)}}
//!    = \exp\big(g_k(x) - \operatorname{LSE}_l\, g_l(x)\big) $$
//! ([`softmax_gate_logits`], [`gate_log_probs`]). The flattened gate block is
//! $(w_0, \dots, w_{K-2})$, $w_k$ contiguous — i.e. the column-major $d \times (K-1)$ matrix
//! $W$.
//!
//! **M-step.** Given soft labels $s_{ik} \ge 0$ (responsibilities) with row sums $c_i$,
//! the gate maximises the soft-label multinomial log-likelihood
//! $$ Q(W) = \frac1n\sum_i\sum_k s_{ik}\log\pi_k(x_i), \qquad
//!    \nabla_{w_k} Q = \frac1n\sum_i (s_{ik} - c_i\pi_{ik})\,x_i, $$
//! $$ -\nabla^2 Q = \frac1n\sum_i c_i\big(\operatorname{diag}(\pi_i) - \pi_i\pi_i^\top\big)
//!    \otimes x_i x_i^\top \quad(\text{indices } k, l < K-1), $$
//! a concave problem solved by Newton's method with Armijo backtracking
//! ([`fit_softmax_gate`]). A fresh block Hessian has size $(K-1)d$ (its $K(K-1)/2$
//! $d\times d$ blocks are weighted Gram products taken with faer per row chunk); it is
//! factored once and reused while the steps contract $\|\nabla Q\|$ by at least
//! [`GateConfig::reuse_below`], each reused step folding its secant pair into the matrix
//! (a BFGS update), so late in EM a gate step costs one gradient
//! pass. The iteration stops at $\|\nabla Q\|_2 \le$ `tol` (default $10^{-10}$)
//! or after `max_iter` (default 50) steps.
//!
//! Per row, the probabilities take $K-1$ exponentials, the reference's being $e^0 = 1$
//! (a row chunk's exponentials are one vectorised
//! [`mirror::batch_exp::exp_in_place`] call), shared by $Q$, $\nabla Q$ and the Hessian weights; $Q$'s
//! logarithms are taken once per block of rows ([`mirror::special::SumOfLogs`]).
//!
//! **L-BFGS alternative.** With [`GateConfig::solver`] $=$ [`GateSolver::Lbfgs`] the gate
//! M-step instead minimises $-Q(W)$ by L-BFGS ([`crate::inner::lbfgs::Lbfgs`], 10 pairs, strong
//! Wolfe), warm-started at $W_t$, from [`gate_objective`] alone (no Hessian is formed), until
//! $\|\nabla Q\|_\infty \le$ `tol` or `max_iter` iterations ([`fit_softmax_gate_lbfgs`]).
//! It needs no positive definite Hessian, so it runs on designs where Newton stops with
//! `NotPositiveDefinite` (collinear columns, e.g. a duplicated feature, or a nearly
//! separable gate); it converges linearly, so a loose budget gives an *inexact*
//! (generalised-EM) M-step: every accepted step increases $Q$, and a step that does not
//! reach `tol` is reported (`converged = false`).
//!
//! **Singular Hessians.** The gate's Newton solve uses the same policy as the experts'
//! ([`crate::model::expert::glm_newton`]): a Hessian that fails the Cholesky policy (a gate
//! saturated to 0/1 on the rows that move it, whose optimum lies at infinity along a few
//! directions) is factored with a Levenberg shift $H + \mu I$
//! ([`mirror::newton::SHIFT_START`]), and if even the largest shift fails, with
//! [`GateConfig::lbfgs_fallback`] (on by default) the M-step is handed to this L-BFGS solve
//! from the same start. Both are counted in [`InnerStats::fallbacks`], so a start is not
//! lost to a singular Hessian and the fit still reports it.

use crate::data::Dataset;
use crate::error::{Block, MoeError, Result};
use crate::inner::softmax::{softmax_chunk, Labels, ScaledInitial, SoftmaxRegression};
use crate::inner::sums::NewtonSums;
use crate::inner::InnerStats;
use crate::model::expert::{dot, inner_stats, newton_settings, INNER_MAX_ITER, INNER_TOL};
use mirror::newton::{minimize, EvalOut, FnObjective, Need};
use mirror::special::log_sum_exp;

/// Gate logits $g = (w_0^\top x, \dots, w_{K-2}^\top x, 0)$ into `out` (length $K$) from
/// the flattened gate block `w` ($(K-1) d$ values).
pub fn softmax_gate_logits(w: &[f64], x: &[f64], out: &mut [f64]) {
    let d = x.len();
    let k = out.len();
    for j in 0..k - 1 {
        out[j] = dot(&w[j * d..(j + 1) * d], x);
    }
    out[k - 1] = 0.0;
}

/// $\log\pi_k = g_k - \operatorname{LSE}(g)$ in place on logits `g`; returns
/// $\operatorname{LSE}(g)$.
pub fn gate_log_probs(g: &mut [f64]) -> f64 {
    let lse = log_sum_exp(g);
    for v in g.iter_mut() {
        *v -= lse;
    }
    lse
}

/// Which method solves the gate's M-step (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GateSolver {
    /// Newton's method with backtracking and optional Hessian reuse (the default): exact to
    /// `tol` in a few steps, but needs $-\nabla^2 Q$ positive definite.
    #[default]
    Newton,
    /// L-BFGS on $-Q$ ([`fit_softmax_gate_lbfgs`]): gradient passes only, no Hessian.
    Lbfgs,
}

/// Settings of the gate's M-step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateConfig {
    /// Stop when $\|\nabla Q\|_2 \le$ `tol` (Newton) or $\|\nabla Q\|_\infty \le$ `tol`
    /// (L-BFGS, as [`crate::inner::lbfgs::Lbfgs::grad_tol`]).
    pub tol: f64,
    /// Step cap (Newton steps or L-BFGS iterations; a fallback L-BFGS solve gets its own
    /// `max_iter`).
    pub max_iter: u64,
    /// Hessian reuse: while the last step contracted $\|\nabla Q\|_2$ by a factor
    /// $\le$ `reuse_below`, the next step solves with the Hessian already formed, updated
    /// by BFGS with each step's secant pair, instead of forming a new one (a gradient-only
    /// pass instead of a pass with $K(K-1)/2$ weighted Grams); a poorer contraction makes
    /// the next full-step pass form a fresh Hessian. A step taken with a fresh Hessian
    /// never forms another at its trial point: its own contraction is judged first.
    /// `0` disables reuse (every step a fresh Hessian: plain Newton). Default $0.01$.
    /// Ignored by [`GateSolver::Lbfgs`].
    pub reuse_below: f64,
    /// The method; default [`GateSolver::Newton`].
    pub solver: GateSolver,
    /// With [`GateSolver::Newton`]: when the Hessian stays singular even after the
    /// Levenberg shifts ([`mirror::newton::SHIFT_TRIES`]), solve the M-step by L-BFGS from
    /// the same start instead of failing, and count it in [`InnerStats::fallbacks`].
    /// Default `true`; `false` returns the `NotPositiveDefinite` error.
    pub lbfgs_fallback: bool,
    /// Ridge $\lambda \ge 0$ on every gate coefficient (default 0): the M-step maximises
    /// $Q - \frac\lambda2\|W\|^2$ and the mixture's objective adds the same penalty, so
    /// a gate that separates the responsibilities (its unpenalised optimum at infinity)
    /// has a finite optimum. Ignored by a constant gate (closed-form weights).
    pub ridge: f64,
}

impl GateConfig {
    /// Validates the settings: `tol` $> 0$ (finite), `max_iter` $\ge 1$ (and at most
    /// `usize::MAX` for the L-BFGS solver), $0 \le$ `reuse_below` $< 1$ (checked whatever
    /// the solver), `ridge` finite and $\ge 0$; every [`GateSolver`] with either `lbfgs_fallback` is valid
    /// (`lbfgs_fallback` has no effect with [`GateSolver::Lbfgs`]).
    ///
    /// # Errors
    /// `InvalidParam { name: "gate config" }` naming the offending values.
    pub fn check(&self) -> Result<()> {
        if !(self.tol > 0.0
            && self.tol.is_finite()
            && self.max_iter >= 1
            && usize::try_from(self.max_iter).is_ok()
            && self.reuse_below >= 0.0
            && self.reuse_below < 1.0
            && self.ridge >= 0.0
            && self.ridge.is_finite())
        {
            return Err(MoeError::InvalidParam {
                name: "gate config",
                reason: format!(
                    "need tol > 0, max_iter >= 1, 0 <= reuse_below < 1 and a finite ridge >= 0, \
                     got tol = {}, max_iter = {}, reuse_below = {}, ridge = {}",
                    self.tol, self.max_iter, self.reuse_below, self.ridge
                ),
            });
        }
        Ok(())
    }
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            tol: INNER_TOL,
            max_iter: INNER_MAX_ITER,
            reuse_below: 0.01,
            solver: GateSolver::Newton,
            lbfgs_fallback: true,
            ridge: 0.0,
        }
    }
}

/// The gate's M-step quantities at gate parameters `w` as sums over rows (not divided by
/// $n$): $nQ(W)$, the size of its terms, $n\nabla Q$ and $-n\nabla^2 Q$ — the
/// [`SoftmaxStats`](crate::inner::softmax::SoftmaxStats) of the gate's softmax regression
/// (unit row weights, responsibilities as labels). The E-step of a gated mixture computes
/// them at the current parameters in the same pass, so the gate's Newton solve starts
/// without a pass of its own.
pub use crate::inner::softmax::SoftmaxStats as GateStats;
// The gate's pass is the shared softmax regression's (the E-step fuses it into its own).
pub(crate) use crate::inner::softmax::{
    softmax_rows as gate_softmax_rows, SoftmaxScratch as GateScratch, SoftmaxSums as GateSums,
};

/// Adds one E-step chunk to the gate sums: the chunk's soft labels `labels` ($m\times K$
/// row-major, chunk-local; unit row weights) go into the scratch, then
/// [`softmax_chunk`](crate::inner::softmax) adds $Q$, its term sizes, $\nabla Q$ and the
/// Hessian blocks (logits, probabilities and log-partitions already in `scratch` from
/// [`gate_softmax_rows`]).
pub(crate) fn gate_chunk(
    data: &Dataset,
    rows: std::ops::Range<usize>,
    logits: &[&[f64]],
    labels: &[f64],
    k: usize,
    sums: &mut GateSums,
    scratch: &mut GateScratch,
) {
    scratch.set_labels_from_rows(labels, k);
    softmax_chunk(data, rows, logits, k, sums, scratch);
}

/// The gate's softmax regression: responsibilities `labels` as soft labels, unit weights.
fn regression<'a>(data: &'a Dataset, labels: &'a [f64], k: usize) -> Result<SoftmaxRegression<'a>> {
    SoftmaxRegression::new(data, k, Labels::Soft(labels), None)
}

/// One gate M-step ([`fit_softmax_gate`]): maximise $Q(W)$ for the soft labels `labels`
/// ($n\times K$ row-major, the responsibilities) over the rows of `data`, with $K$ = `k`
/// experts, warm-started at the gate block `start` ($(K-1)d$ values). One value, so every
/// gate solver takes the same argument.
#[derive(Clone, Copy, Debug)]
pub struct GateFit<'a> {
    /// The rows $x_i$.
    pub data: &'a Dataset,
    /// $s_{ik} \ge 0$, $n\times K$ row-major.
    pub labels: &'a [f64],
    /// The number of experts $K \ge 2$.
    pub k: usize,
    /// The gate block to start from.
    pub start: &'a [f64],
}

impl<'a> GateFit<'a> {
    /// The gate M-step for `labels` over `data` with `k` experts, from `start`.
    pub fn new(data: &'a Dataset, labels: &'a [f64], k: usize, start: &'a [f64]) -> Self {
        GateFit {
            data,
            labels,
            k,
            start,
        }
    }

    /// `InvalidParam` for $K < 2$ or inconsistent lengths (a negative or non-finite label
    /// is `InvalidData` naming its row, from the softmax regression built next).
    fn check(&self) -> Result<()> {
        check(self.data, self.labels, self.k, self.start)
    }
}

/// $Q(W) = \frac1n\sum_i\sum_k s_{ik}\log\pi_k(x_i)$ and $\nabla Q$ (into `grad`) for soft
/// labels `labels` ($n\times K$ row-major).
///
/// # Errors
/// `InvalidParam` on inconsistent lengths; `NonFinite` on overflowing logits.
pub fn gate_objective(
    data: &Dataset,
    labels: &[f64],
    k: usize,
    w: &[f64],
    grad: &mut [f64],
) -> Result<f64> {
    check(data, labels, k, w)?;
    let f = regression(data, labels, k)?.objective(w, grad)?;
    grad.iter_mut().for_each(|v| *v = -*v);
    Ok(-f)
}

fn check(data: &Dataset, labels: &[f64], k: usize, w: &[f64]) -> Result<()> {
    if k < 2 {
        return Err(MoeError::InvalidParam {
            name: "n_experts",
            reason: "a softmax gate needs K >= 2".into(),
        });
    }
    if labels.len() != data.n() * k || w.len() != (k - 1) * data.d() {
        return Err(MoeError::InvalidParam {
            name: "labels",
            reason: format!(
                "expected {} labels and {} gate parameters, found {} and {}",
                data.n() * k,
                (k - 1) * data.d(),
                labels.len(),
                w.len()
            ),
        });
    }
    // The labels themselves (finite, >= 0, the row named) are checked once, by the
    // softmax regression every caller builds next.
    Ok(())
}

/// The gate M-step with the method of `cfg` (see the [module documentation](self)), from
/// `start`, result in `out`: Newton's method with backtracking by default, L-BFGS with
/// [`GateSolver::Lbfgs`] ([`fit_softmax_gate_lbfgs`]).
///
/// Every data pass at a full Newton step evaluates $Q$ and $\nabla Q$ and, when a fresh
/// Hessian will be wanted next, the Hessian in the same pass (speculatively: a
/// backtracked trial forms none). With [`GateConfig::reuse_below`] $> 0$ the last fresh
/// Hessian is reused while steps contract $\|\nabla Q\|$ fast enough, with a BFGS update
/// per reused step (without it this is the chord method, linear
/// with the rate of $\|I - H_0^{-1}H\|$; with it superlinear), so near the optimum — late
/// in EM, when the gate barely moves — a step costs a gradient pass only. A stale Hessian
/// whose step the line search cannot accept is replaced by a fresh one before giving up.
/// [`InnerStats::iterations`] counts accepted steps, [`InnerStats::hessians`] the
/// Hessians formed.
///
/// # Errors
/// `NotPositiveDefinite { block: Block::Gate, pivot }` when the Newton Hessian is singular
/// even after the Levenberg shifts and [`GateConfig::lbfgs_fallback`] is off; the errors of
/// [`fit_softmax_gate_lbfgs`] for the L-BFGS solver or fallback.
pub fn fit_softmax_gate(fit: GateFit<'_>, out: &mut [f64], cfg: GateConfig) -> Result<InnerStats> {
    fit_softmax_gate_from(fit, out, cfg, None)
}

/// [`fit_softmax_gate`] starting from precomputed [`GateStats`] at `start` (from the
/// E-step); they are used only if computed at exactly `start` (and only by Newton),
/// otherwise the first pass is taken as usual.
///
/// # Errors
/// As [`fit_softmax_gate`].
pub fn fit_softmax_gate_from(
    fit: GateFit<'_>,
    out: &mut [f64],
    cfg: GateConfig,
    initial: Option<&GateStats>,
) -> Result<InnerStats> {
    fit.check()?;
    cfg.check()?;
    let reg = regression(fit.data, fit.labels, fit.k)?;
    gate_mstep_by_rounds(cfg, fit.start, out, fit.data.n(), initial, &mut |w, h| {
        reg.round(w, h)
    })
}

/// The gate M-step by L-BFGS (see the [module documentation](self)): minimises $-Q(W)$
/// ([`gate_objective`]) from `start` with [`crate::inner::lbfgs::Lbfgs`] (defaults but
/// `grad_tol` $=$ `cfg.tol`, `max_iter` $=$ `cfg.max_iter`), result in `out`, whatever
/// `cfg.solver` says. The returned [`InnerStats`] holds the L-BFGS iterations, the final
/// $\|\nabla Q\|_\infty$ as `residual`, whether `tol` was met (`converged`; `false` is an
/// inexact M-step, reported) and `hessians = 0`, `fallbacks = 0`.
///
/// # Errors
/// `InvalidParam`/`InvalidData` for inconsistent inputs or settings; `NonFinite` when $Q$
/// is not finite at `start`; `LeftDomain` when the iterates run off to infinity (a gate
/// separable in the labels).
pub fn fit_softmax_gate_lbfgs(
    fit: GateFit<'_>,
    out: &mut [f64],
    cfg: GateConfig,
) -> Result<InnerStats> {
    fit.check()?;
    cfg.check()?;
    let reg = regression(fit.data, fit.labels, fit.k)?;
    lbfgs_gate(cfg, fit.start, out, fit.data.n(), &mut |w, h| {
        reg.round(w, h)
    })
}

/// One pass of the gate's M-step at gate parameters $W$ (and a Hessian when asked): the
/// rows' [`NewtonSums`] of $Q(W)$ with the responsibilities as labels, from rows in memory
/// or merged from shards.
pub(crate) type GateRound<'r> = dyn FnMut(&[f64], bool) -> Result<NewtonSums> + 'r;

/// The gate M-step with the method of `cfg` from `start` into `out`, over `n` rows (unit
/// weights, $W = n$) whose passes `round` makes, maximising $Q - R$ with the ridge
/// $R = $ [`ridge_penalty`](crate::inner::sums::ridge_penalty)$(\lambda, W)$ on every gate
/// coefficient ($\lambda$ = [`GateConfig::ridge`], 0 by default): Newton (with the Levenberg shift and the
/// L-BFGS fallback of [`fit_softmax_gate_from`]) or L-BFGS. The in-memory M-step and the
/// sharded one ([`crate::shard`]) both run this, so they take the same steps.
///
/// # Errors
/// As [`fit_softmax_gate_from`].
pub(crate) fn gate_mstep_by_rounds(
    cfg: GateConfig,
    start: &[f64],
    out: &mut [f64],
    n: usize,
    initial: Option<&GateStats>,
    round: &mut GateRound<'_>,
) -> Result<InnerStats> {
    // The ridge turns every pass's sums into those of Q − R; the E-step's sums at the
    // start carry no penalty, so a ridged solve takes its first pass itself.
    let (ridge, initial) = if cfg.ridge > 0.0 {
        (cfg.ridge, None)
    } else {
        (0.0, initial)
    };
    let round = &mut |w: &[f64], hessian: bool| {
        let mut sums = round(w, hessian)?;
        sums.add_ridge(ridge, w.len());
        Ok(sums)
    };
    if cfg.solver == GateSolver::Lbfgs {
        return lbfgs_gate(cfg, start, out, n, round);
    }
    match newton_gate(cfg, start, out, n, initial, round) {
        Err(MoeError::NotPositiveDefinite {
            block: Block::Gate, ..
        }) if cfg.lbfgs_fallback => {
            let mut stats = lbfgs_gate(cfg, start, out, n, round)?;
            stats.fallbacks += 1;
            Ok(stats)
        }
        other => other,
    }
}

/// [`fit_softmax_gate_lbfgs`] on checked inputs, its passes made by `round`.
fn lbfgs_gate(
    cfg: GateConfig,
    start: &[f64],
    out: &mut [f64],
    n: usize,
    round: &mut GateRound<'_>,
) -> Result<InnerStats> {
    let solver = crate::inner::lbfgs::Lbfgs {
        grad_tol: cfg.tol,
        max_iter: usize::try_from(cfg.max_iter).unwrap_or(usize::MAX),
        ..crate::inner::lbfgs::Lbfgs::default()
    };
    let wsum = n as f64;
    let mut w = start.to_vec();
    let rep = solver.minimize(
        |w, g| {
            let sums = round(w, false)?;
            for (gi, a) in g.iter_mut().zip(&sums.grad) {
                *gi = -a / wsum;
            }
            let f = -sums.q / wsum;
            if f.is_finite() && g.iter().all(|v| v.is_finite()) {
                Ok(f)
            } else {
                Err(MoeError::NonFinite {
                    what: "softmax regression objective",
                })
            }
        },
        &mut w,
    )?;
    out.copy_from_slice(&w);
    Ok(InnerStats::from(&rep))
}

/// The Newton gate M-step of [`gate_mstep_by_rounds`]: [`mirror::newton::minimize`] on
/// $F = -Q/n$ ([`NewtonSums::eval`]) with `tol`, `max_iter` and `reuse_below` of `cfg`
/// (Hessian reuse with BFGS updates, speculative Hessians, round-off-aware acceptance),
/// started from the E-step's [`GateStats`] when they were computed at `start`.
fn newton_gate(
    cfg: GateConfig,
    start: &[f64],
    out: &mut [f64],
    n: usize,
    initial: Option<&GateStats>,
    round: &mut GateRound<'_>,
) -> Result<InnerStats> {
    // Shifted where singular, as the experts' Newton (`glm_newton`): a gate saturated to
    // 0/1 on some rows has its optimum at infinity along a few directions.
    let settings = newton_settings(cfg.tol, cfg.max_iter)?
        .with_reuse_below(cfg.reuse_below)
        .with_shift_singular(true);
    out.copy_from_slice(start);
    let wsum = n as f64;
    let scaled = initial.and_then(|s| ScaledInitial::of(s, start, wsum, n));
    let mut obj = FnObjective::new(start.len(), |x: &[f64], need, ev: &mut EvalOut<'_>| {
        round(x, need == Need::Hessian)?.eval(wsum, n, need, ev);
        Ok::<(), MoeError>(())
    });
    let rep = minimize(
        &mut obj,
        out,
        &settings,
        scaled.as_ref().map(ScaledInitial::as_initial),
    )
    .map_err(|e| e.in_block(Block::Gate))?;
    Ok(inner_stats(&rep))
}

/// Closed-form M-step of a constant gate (mixture of regressions): with
/// $W_k = \sum_i s_{ik}$ the mixing weights are $\pi_k = W_k / \sum_l W_l$ and the logits
/// (reference $K-1$) are $a_k = \log W_k - \log W_{K-1}$, $k < K-1$, into `out`.
///
/// # Errors
/// `NonFinite` if some expert has zero total weight (its logit would be $-\infty$).
pub fn constant_gate_mstep(weights: &[f64], out: &mut [f64]) -> Result<()> {
    let k = weights.len();
    if weights.iter().any(|w| !(*w > 0.0 && w.is_finite())) {
        return Err(MoeError::NonFinite {
            what: "mixing weight of an expert with zero total responsibility",
        });
    }
    let last = weights[k - 1].ln();
    for j in 0..k - 1 {
        out[j] = weights[j].ln() - last;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inner::parallel::CHUNK;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn setup(n: usize, d: usize, k: usize, seed: u64) -> (Dataset, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut xs = Vec::new();
        for _ in 0..n {
            // The intercept 1, then d - 1 standard normals.
            xs.push(1.0);
            xs.extend((1..d).map(|_| -> f64 { StandardNormal.sample(&mut rng) }));
        }
        let ds = Dataset::from_rows(&xs, d, &vec![0.0; n], 1).unwrap();
        let mut labels = Vec::new();
        for i in 0..n {
            let mut row: Vec<f64> = (0..k)
                .map(|j| {
                    (rng.random::<f64>() + 0.1) * (1.0 + ds.x(i)[1.min(d - 1)] * j as f64).abs()
                })
                .collect();
            let s: f64 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s);
            labels.extend(row);
        }
        (ds, labels)
    }

    #[test]
    fn gradient_matches_finite_differences_and_hessian_matches_fd_of_gradient() {
        let (ds, labels) = setup(300, 3, 3, 1);
        let w: Vec<f64> = (0..6).map(|j| 0.1 * j as f64 - 0.2).collect();
        let mut g = vec![0.0; 6];
        gate_objective(&ds, &labels, 3, &w, &mut g).unwrap();
        let h = regression(&ds, &labels, 3)
            .unwrap()
            .stats(&w, true)
            .unwrap()
            .hess;
        let n = 300.0;
        for j in 0..6 {
            let e = 1e-5;
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[j] += e;
            wm[j] -= e;
            let (mut gp, mut gm) = (vec![0.0; 6], vec![0.0; 6]);
            let qp = gate_objective(&ds, &labels, 3, &wp, &mut gp).unwrap();
            let qm = gate_objective(&ds, &labels, 3, &wm, &mut gm).unwrap();
            assert!(((qp - qm) / (2.0 * e) - g[j]).abs() < 1e-8);
            for l in 0..6 {
                let fd = -(gp[l] - gm[l]) / (2.0 * e);
                assert!((fd - h[(l, j)] / n).abs() < 1e-7, "{fd} {}", h[(l, j)] / n);
            }
        }
    }

    #[test]
    fn newton_reaches_tolerance_and_maximises() {
        let (ds, labels) = setup(500, 3, 3, 2);
        let mut out = vec![0.0; 6];
        let st = fit_softmax_gate(
            GateFit::new(&ds, &labels, 3, &[0.0; 6]),
            &mut out,
            GateConfig::default(),
        )
        .unwrap();
        assert!(st.converged && st.residual <= 1e-10, "{st:?}");
        assert!(
            st.hessians >= 1 && st.hessians <= st.iterations + 1,
            "{st:?}"
        );
        let mut g = vec![0.0; 6];
        let q = gate_objective(&ds, &labels, 3, &out, &mut g).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..20 {
            let pert: Vec<f64> = out
                .iter()
                .map(|v| v + 1e-3 * (rng.random::<f64>() - 0.5))
                .collect();
            assert!(gate_objective(&ds, &labels, 3, &pert, &mut g).unwrap() < q);
        }
    }

    #[test]
    fn hessian_reuse_reaches_the_plain_newton_maximiser_with_fewer_hessians() {
        let (ds, labels) = setup(2000, 4, 3, 5);
        let newton = GateConfig {
            reuse_below: 0.0,
            ..GateConfig::default()
        };
        // From far away (zero start) and warm (near the maximiser, as late in EM).
        let mut exact = vec![0.0; 8];
        let st_n =
            fit_softmax_gate(GateFit::new(&ds, &labels, 3, &[0.0; 8]), &mut exact, newton).unwrap();
        assert!(st_n.converged, "{st_n:?}");
        // Plain Newton: a fresh Hessian for every step but the last, converged one.
        assert!(st_n.hessians >= st_n.iterations, "{st_n:?}");
        let warm: Vec<f64> = exact.iter().map(|v| v + 0.01).collect();
        for start in [vec![0.0; 8], warm] {
            let (mut a, mut b) = (vec![0.0; 8], vec![0.0; 8]);
            let sn =
                fit_softmax_gate(GateFit::new(&ds, &labels, 3, &start), &mut a, newton).unwrap();
            let sc = fit_softmax_gate(
                GateFit::new(&ds, &labels, 3, &start),
                &mut b,
                GateConfig::default(),
            )
            .unwrap();
            assert!(sn.converged && sc.converged, "{sn:?} {sc:?}");
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-8, "{a:?} vs {b:?}");
            }
            assert!(sc.hessians <= sn.hessians, "{sc:?} vs {sn:?}");
        }
        // Warm start: the start's Hessian is reused throughout.
        let warm: Vec<f64> = exact.iter().map(|v| v + 0.01).collect();
        let sc = fit_softmax_gate(
            GateFit::new(&ds, &labels, 3, &warm),
            &mut exact.clone(),
            GateConfig::default(),
        )
        .unwrap();
        assert_eq!(sc.hessians, 1, "{sc:?}");
        // A bad setting is a typed error.
        let bad = GateConfig {
            reuse_below: 1.5,
            ..GateConfig::default()
        };
        assert!(matches!(
            fit_softmax_gate(GateFit::new(&ds, &labels, 3, &[0.0; 8]), &mut exact, bad),
            Err(MoeError::InvalidParam { .. })
        ));
    }

    #[test]
    fn q_matches_the_textbook_sum_across_chunks_and_label_sums() {
        // Q summed with blocked logarithms (labels summing to 1 up to round-off), per-row ones
        // (other label sums) and the unshifted K−1-exponential softmax, against
        // (1/n) Σ_i Σ_k s_ik log π_k(x_i) computed naively, over several row chunks.
        for k in [2usize, 3, 4] {
            let n = 2 * CHUNK + 123;
            let d = 3;
            let (ds, mut labels) = setup(n, d, k, 40 + k as u64);
            // Every third row's labels scaled (row sum ≠ 1, as with weighted rows), every
            // fifth other one by 1 + 10⁻⁹: far above the slack within which a sum counts as
            // 1 (`label_sum_slack`), so its own logarithm must be taken (counting it as 1
            // would be off by ~10⁻¹⁰ relative).
            for (i, row) in labels.chunks_mut(k).enumerate() {
                if i % 3 == 0 {
                    row.iter_mut().for_each(|v| *v *= 1.7);
                } else if i % 5 == 0 {
                    row.iter_mut().for_each(|v| *v *= 1.0 + 1e-9);
                }
            }
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let w: Vec<f64> = (0..(k - 1) * d)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    3.0 * z
                })
                .collect();
            let mut g = vec![0.0; w.len()];
            let q = gate_objective(&ds, &labels, k, &w, &mut g).unwrap();
            let mut naive = 0.0;
            for i in 0..n {
                let logits: Vec<f64> = (0..k)
                    .map(|j| {
                        if j + 1 == k {
                            0.0
                        } else {
                            (0..d).map(|a| w[j * d + a] * ds.x(i)[a]).sum()
                        }
                    })
                    .collect();
                let z: f64 = logits.iter().map(|v| v.exp()).sum();
                for j in 0..k {
                    naive += labels[i * k + j] * (logits[j] - z.ln());
                }
            }
            naive /= n as f64;
            assert!(
                (q - naive).abs() < 1e-12 * naive.abs(),
                "K = {k}: {q} vs {naive}"
            );
        }
    }

    #[test]
    fn chunk_softmax_matches_the_shifted_softmax_row_by_row() {
        // Column-major probabilities of a chunk (vectorised unshifted exponentials, rows
        // with a logit > UNSHIFTED_MAX on the shifted path) against softmax_parts of each
        // row with its reference 0 appended.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for k in [2usize, 3, 5] {
            let m = 301;
            let mut cols: Vec<Vec<f64>> = (0..k - 1)
                .map(|_| (0..m).map(|_| rng.random_range(-60.0..60.0)).collect())
                .collect();
            cols[0][5] = 750.0;
            cols[k - 2][6] = 705.0;
            cols[0][7] = -900.0;
            let views: Vec<&[f64]> = cols.iter().map(|c| c.as_slice()).collect();
            let (mut probs, mut gmax, mut gsum) = (vec![0.0; m * k], vec![0.0; m], vec![0.0; m]);
            gate_softmax_rows(&views, k, &mut probs, &mut gmax, &mut gsum).unwrap();
            for li in 0..m {
                let mut row: Vec<f64> = cols.iter().map(|c| c[li]).chain([0.0]).collect();
                let lse = mirror::special::log_sum_exp(&row);
                let (mx, z) = mirror::special::softmax_parts(&mut row);
                let got = gmax[li] + gsum[li].ln();
                assert!(
                    (got - lse).abs() <= 1e-14 * lse.abs().max(1.0),
                    "row {li}: {got} vs {lse} ({mx}, {z})"
                );
                // The shifted form rounds g − m first: relative error up to |g − m|·u.
                let spread = 1.0 + cols.iter().map(|c| c[li].abs()).fold(0.0, f64::max);
                for j in 0..k {
                    let (a, b) = (probs[j * m + li], row[j]);
                    let tol = 1e-15 * spread * b + 1e-300;
                    assert!((a - b).abs() <= tol, "row {li}, class {j}: {a} vs {b}");
                }
            }
            // An infinite logit is an error, not NaN probabilities.
            cols[0][9] = f64::INFINITY;
            let views: Vec<&[f64]> = cols.iter().map(|c| c.as_slice()).collect();
            let err = gate_softmax_rows(&views, k, &mut probs, &mut gmax, &mut gsum);
            assert!(matches!(err, Err(MoeError::NonFinite { .. })), "{err:?}");
        }
    }

    #[test]
    fn constant_gate_is_log_ratio_of_weights() {
        let mut out = vec![0.0; 2];
        constant_gate_mstep(&[1.0, 2.0, 4.0], &mut out).unwrap();
        assert!((out[0] - (0.25f64).ln()).abs() < 1e-15 && (out[1] - 0.5f64.ln()).abs() < 1e-15);
        assert!(matches!(
            constant_gate_mstep(&[0.0, 1.0], &mut out),
            Err(MoeError::NonFinite { .. })
        ));
    }

    #[test]
    fn bad_labels_are_typed_errors() {
        let (ds, mut labels) = setup(10, 2, 2, 3);
        labels[5] = -1.0;
        let mut out = vec![0.0; 2];
        let e = fit_softmax_gate(
            GateFit::new(&ds, &labels, 2, &[0.0; 2]),
            &mut out,
            GateConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(e, MoeError::InvalidData { row: Some(2), .. }));
        let e = fit_softmax_gate(
            GateFit::new(&ds, &labels, 1, &[]),
            &mut out,
            GateConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(
            e,
            MoeError::InvalidParam {
                name: "n_experts",
                ..
            }
        ));
    }
}
