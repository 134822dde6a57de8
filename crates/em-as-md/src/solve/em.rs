//! Expectation–Maximization, and why it is unit-step KL mirror descent.
//!
//! **E-step** ([`EmModel::e_step`](crate::model::EmModel::e_step)). At $\theta_t$, for each row in log space,
//! $$ \ell_{ik} = \log\pi_k(x_i) + \log p_F(y_i;\eta_k(x_i)),\qquad
//!    \log p(y_i\mid x_i) = \operatorname{LSE}_k \ell_{ik},\qquad
//!    r_{ik} = e^{\ell_{ik} - \operatorname{LSE}_k\ell_{ik}}, $$
//! (terms equal to $-\infty$ get responsibility exactly 0) and
//! $L(\theta_t) = -\frac1n\sum_i\log p(y_i\mid x_i)$. In the language of
//! [`crate::solve::problem`], $(r_{ik}, r_{ik}T_F(y_i))_k = \mathbb E_{z\sim p(z\mid y_i;\varphi_{t,i})}[T(y_i,z)]
//! = m_i$, the mirror-descent target statistics with $\eta = 1$.
//!
//! **M-step** ([`EmModel::m_step`](crate::model::EmModel::m_step)). $\theta_{t+1} = \arg\max_\theta \sum_i \langle m_i,
//! \varphi_i(\theta)\rangle - A(\varphi_i(\theta))$, i.e. the minimiser of the mirror-descent
//! subproblem $F_1(\theta) = \frac1n\sum_i[A(\varphi_i(\theta)) - \langle m_i,\varphi_i(\theta)\rangle]$.
//! Because $A(\varphi_i(\theta)) = \operatorname{LSE}_k g_k(x_i)$ and
//! $\langle m_i, \varphi_i\rangle = \sum_k r_{ik}[g_k(x_i) - A_F(\eta_{ik}) + \langle T_F(y_i),\eta_{ik}\rangle]$,
//! this objective separates into the gate problem
//! $\max_w \sum_i\sum_k r_{ik}\log\pi_k(x_i)$ ([`crate::model::gate::fit_softmax_gate`], or the
//! closed form [`crate::model::gate::constant_gate_mstep`]) and one weighted GLM problem per
//! expert $\max_{\vartheta_k}\sum_i r_{ik}[\langle T_F(y_i),\eta_k(x_i)\rangle - A_F(\eta_k(x_i))]$
//! (closed-form weighted least squares for linear experts from the merged Gram matrices,
//! [`crate::model::expert::Expert::weighted_fit`] otherwise). Hence
//! $$ \theta_{t+1} = \arg\min_\theta \langle\nabla\ell(\Phi_t), \Phi(\theta)\rangle + D_{\mathcal A}(\Phi(\theta), \Phi_t): $$
//! **EM is projected mirror descent with unit step and the KL (stacked log-partition)
//! mirror map.**
//!
//! **Cost.** The E-step evaluates $X^\top[\,W \mid B\,]$ (gate and expert coefficient
//! vectors) per chunk with one faer product and, for linear experts, accumulates the $K$
//! weighted Gram matrices $X^\top\operatorname{diag}(r_k)X$, right-hand sides
//! $X^\top\operatorname{diag}(r_k)y$, $\sum_i r_{ik}y_i^2$ in the same pass (merged in chunk
//! order: bit-identical for any thread count). For a softmax gate the same pass also
//! accumulates the gate M-step's objective, gradient and block Hessian at $\theta_t$
//! ([`GateStats`](crate::GateStats)), so the gate's Newton solve starts without a pass of its own. Per row
//! the pass takes the exponentials of the gate's and the posterior's softmax — a chunk's
//! all at once, vectorised ([`mirror::batch_exp::exp_in_place`], through
//! [`softmax_rows`](mirror::special::softmax_rows) for the posterior) — and no logarithm: the log-sum-exps come as
//! (max, sum) pairs whose logarithms are summed one block of rows at a time
//! ([`SumOfLogs`](mirror::special::SumOfLogs)). The
//! M-step is then $K$ Cholesky solves plus the gate's Newton steps (one pass over the
//! data per step: objective, gradient and, only when the factored Hessian stops
//! contracting the gradient fast enough, a fresh Hessian).
//!
//! [`Em`] is the [`Solver`]: it caches the E-step of the new iterate, so each iteration
//! costs one E-step and one M-step, and its state's objective is $L(\theta_{t+1})$.

use crate::error::Result;
use crate::solve::em_map::EmMap;
use crate::solve::solver::{FitState, IterRecord, NextIter, Solver, StepInfo};
use std::any::Any;

/// The EM solver; see the [module documentation](self).
#[derive(Default)]
pub struct Em {
    cache: Option<Box<dyn Any + Send>>,
    record_bregman: bool,
}

impl std::fmt::Debug for Em {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Em")
            .field("cached", &self.cache.is_some())
            .field("record_bregman", &self.record_bregman)
            .finish()
    }
}

struct Cached<S> {
    theta: Vec<f64>,
    stats: S,
}

impl Em {
    /// EM without per-iteration diagnostics.
    pub fn new() -> Self {
        Em::default()
    }
    /// Also record $D_{\mathcal A}(\Phi_{t+1}, \Phi_t)$ in every [`IterRecord`] (one extra
    /// pass over the data per iteration).
    pub fn with_bregman(mut self, on: bool) -> Self {
        self.record_bregman = on;
        self
    }
}

impl<P: EmMap> Solver<P> for Em {
    fn name(&self) -> String {
        "EM".into()
    }
    fn init(&mut self, _problem: &P, state: FitState) -> Result<FitState> {
        self.cache = None;
        Ok(state)
    }
    fn next_iter(&mut self, problem: &P, state: FitState) -> NextIter {
        let cached = self
            .cache
            .take()
            .and_then(|b| b.downcast::<Cached<P::Stats>>().ok())
            .filter(|c| c.theta == state.theta);
        let stats = match cached {
            Some(c) => c.stats,
            None => problem.e_step(&state.theta)?.0,
        };
        let mut next = vec![0.0; problem.n_params()];
        let inner = problem.m_step(&stats, &state.theta, &mut next)?;
        // Freed before the next E-step builds its own (n × K responsibilities each).
        drop(stats);
        let (stats_next, objective) = problem.e_step(&next)?;
        let bregman_step = if self.record_bregman {
            problem.bregman_step(&next, &state.theta)?
        } else {
            f64::NAN
        };
        self.cache = Some(Box::new(Cached {
            theta: next.clone(),
            stats: stats_next,
        }));
        let record = IterRecord {
            bregman_step,
            ..IterRecord::em_map_step(state.iter + 1, objective, inner, StepInfo::em())
        };
        let new_state = state.advance(next, objective);
        Ok((new_state, record))
    }
}
