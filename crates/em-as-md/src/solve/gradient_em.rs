//! Gradient EM: the E-step of EM followed by gradient step(s) on the M-step objective
//! instead of its exact minimisation (Fruytier, Mokhtari & Sanghavi, ICML 2025,
//! App. D.2 "Gradient EM for MoE"; Balakrishnan, Wainwright & Yu, *Ann. Statist.* 2017).
//!
//! With the posterior statistics $m_i = \mathbb E_{z\sim p(z\mid y_i;\varphi_{t,i})}\[T(y_i, z)\]$
//! ([`Problem::md_targets`] at $\eta = 1$), the M-step objective is (up to a constant)
//! $$ Q_t(\theta) = \frac1n\sum_i A(\varphi_i(\theta)) - \langle m_i, \varphi_i(\theta)\rangle
//!    \qquad(\text{the MD subproblem at }\eta = 1), $$
//! computed by [`Problem::md_subproblem`],
//! and gradient EM takes $k$ (default 1) gradient steps on it, the E-step frozen:
//! $$ \theta^{(0)} = \theta_t,\qquad \theta^{(j+1)} = \theta^{(j)} - \alpha_j\nabla Q_t(\theta^{(j)}),
//!    \qquad \theta_{t+1} = \theta^{(k)}, $$
//! with a constant $\alpha$ or Armijo backtracking on $Q_t$.
//!
//! **Relation to gradient descent.** $\nabla Q_t(\theta_t) = \frac1n\sum_i J_i^\top(\nabla
//! A(\varphi_{t,i}) - m_i) = \nabla L(\theta_t)$ (Fisher's identity), so with $k = 1$ and the
//! same constant step gradient EM *is* gradient descent on $L$ (tested to round-off). The two
//! differ only through the step rule (Armijo on $Q_t$ versus on $L$) or $k > 1$. Armijo on
//! $Q_t$ still decreases $L$: $Q_t(\theta) - L(\theta)$ is minimised at $\theta_t$ (it is a
//! KL divergence plus a constant, the MM property of EM), so $L(\theta_{t+1}) - L(\theta_t)
//! \le Q_t(\theta_{t+1}) - Q_t(\theta_t) < 0$.
//!
//! **What we could check of the paper.** The text of its Appendix D was not retrievable
//! here; only its structure (Algorithm 1 EM, Algorithm 2 gradient EM, Algorithm 3 gradient
//! descent for MoE) was. We implement "one gradient step on the M-step objective" as stated
//! in the issue and the paper's summary; the step sizes used in its experiments are unknown
//! to us, so the comparison example tunes the constant step on a grid for both methods.

use crate::error::{MoeError, Result};
use crate::inner::InnerStats;
use crate::model::conditional::ConditionalFamily;
use crate::solve::gd::{gradient_step, Step};
use crate::solve::md::assemble;
use crate::solve::problem::Problem;
use crate::solve::solver::{FitState, NextIter, Solver};

/// Gradient EM (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct GradientEm {
    step: Step,
    inner_steps: usize,
    record_bregman: bool,
}

impl GradientEm {
    /// Gradient EM with one gradient step per E-step.
    ///
    /// # Errors
    /// `InvalidParam` for an invalid step rule.
    pub fn new(step: Step) -> Result<Self> {
        Self::with_inner_steps(step, 1)
    }
    /// Gradient EM with `k` gradient steps on $Q_t$ per E-step.
    ///
    /// # Errors
    /// `InvalidParam` for an invalid step rule or $k = 0$.
    pub fn with_inner_steps(step: Step, k: usize) -> Result<Self> {
        step.check()?;
        if k == 0 {
            return Err(MoeError::InvalidParam {
                name: "inner_steps",
                reason: "at least 1".into(),
            });
        }
        Ok(GradientEm {
            step,
            inner_steps: k,
            record_bregman: false,
        })
    }
    /// Also record $D_{\mathcal A}(\Phi_{t+1}, \Phi_t)$ (one extra pass per step).
    pub fn with_bregman(mut self, on: bool) -> Self {
        self.record_bregman = on;
        self
    }
}

impl<M: ConditionalFamily + ?Sized> Solver<Problem<'_, M>> for GradientEm {
    fn name(&self) -> String {
        let s = match self.step {
            Step::Constant(a) => format!("α={a}"),
            Step::Armijo { .. } => "Armijo".into(),
        };
        if self.inner_steps == 1 {
            format!("gradient EM({s})")
        } else {
            format!("gradient EM({s}, {} steps)", self.inner_steps)
        }
    }
    fn next_iter(&mut self, problem: &Problem<'_, M>, state: FitState) -> NextIter {
        let k = state.theta.len();
        let m = problem.md_targets(&state.theta, 1.0)?;
        let q = |th: &[f64], g: &mut [f64]| problem.md_subproblem(th, &m, g);
        let mut x = state.theta.clone();
        let mut g = vec![0.0; k];
        let mut qx = q(&x, &mut g)?;
        let mut out = vec![0.0; k];
        let mut g_out = vec![0.0; k];
        let mut evals = 1u64;
        for _ in 0..self.inner_steps {
            let (v, e, _accepted) = gradient_step(self.step, q, &x, qx, &g, &mut out, &mut g_out)?;
            evals += e;
            std::mem::swap(&mut x, &mut out);
            std::mem::swap(&mut g, &mut g_out);
            qx = v;
        }
        // Gradient EM takes k gradient steps on Q_t by definition, not a solve to a
        // tolerance: its step is exact as specified, so `converged` is true (otherwise the
        // executor would report every stop as `InexactMStep`). `residual` still shows
        // how far θ_{t+1} is from the M-step's minimiser.
        let q_residual = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let inner = InnerStats::exact_step(evals, q_residual);
        let mut grad = vec![0.0; k];
        let objective = problem.objective_and_gradient(&x, &mut grad)?;
        let grad_norm = grad.iter().map(|v| v * v).sum::<f64>().sqrt();
        let (state, mut record) = assemble(
            problem,
            state,
            x,
            objective,
            grad_norm,
            inner,
            self.record_bregman,
        )?;
        // Targets, the inner evaluations, L and ∇L at θ_{t+1}.
        record.step.passes = evals + 2;
        Ok((state, record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_name_the_field() {
        let e = GradientEm::with_inner_steps(Step::Constant(0.1), 0).unwrap_err();
        assert!(matches!(
            e,
            MoeError::InvalidParam {
                name: "inner_steps",
                ..
            }
        ));
        let e = GradientEm::new(Step::Constant(-0.1)).unwrap_err();
        assert!(matches!(e, MoeError::InvalidParam { name: "step", .. }));
        fn ok<T: Send + Sync>() {}
        ok::<GradientEm>();
    }
}
