//! Gradient descent on the objective $L(\theta)$ — the baseline the paper compares EM
//! against (Fruytier, Mokhtari & Sanghavi, ICML 2025, App. D.3 "Gradient Descent for MoE").
//!
//! $$ \theta_{t+1} = \theta_t - \alpha_t\nabla L(\theta_t),\qquad
//!    \nabla L(\theta) = \frac1n\sum_i J_i(\theta)^\top\big(\nabla A(\varphi_i(\theta)) -
//!    \mathbb E_{\text{post}}\[T(y_i, z)\]\big), $$
//! with either a constant step $\alpha_t = \alpha$ ([`Step::Constant`]) or Armijo
//! backtracking ([`Step::Armijo`]): starting from $\alpha = $ `initial`, multiply by
//! `shrink` until
//! $$ L(\theta_t - \alpha\nabla L(\theta_t)) \le L(\theta_t) - c\,\alpha\Vert \nabla L(\theta_t)\Vert_2^2 $$
//! (Nocedal & Wright, *Numerical Optimization*, Alg. 3.1). Gradient descent is mirror
//! descent with the Euclidean map $\frac12\Vert \theta\Vert ^2$; it is not monotone for a
//! constant step that is too large, which is why the executor keeps the best iterate
//! apart from the current one.
//!
//! $L$ and $\nabla L$ come from [`Problem::objective_and_gradient`] (one pass over the data);
//! the gradient at $\theta_{t+1}$ is cached for the next step, so a constant-step
//! iteration costs one pass.

use crate::error::{MoeError, Result};
use crate::inner::InnerStats;
use crate::model::conditional::ConditionalFamily;
use crate::solve::md::assemble;
use crate::solve::problem::Problem;
use crate::solve::solver::{FitState, NextIter, Solver};

/// Step-size rule of [`GradientDescent`] and [`GradientEm`](crate::solve::gradient_em::GradientEm).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// $\alpha_t = \alpha$.
    Constant(f64),
    /// Backtracking from `initial` by factor `shrink` until sufficient decrease with
    /// constant `c`.
    Armijo {
        /// First trial step ($> 0$).
        initial: f64,
        /// Shrink factor in $(0, 1)$.
        shrink: f64,
        /// Sufficient-decrease constant in $(0, 1)$.
        c: f64,
    },
}

impl Step {
    /// Armijo with `initial` = 1, `shrink` = 0.5, `c` = 1e-4.
    pub fn armijo() -> Self {
        Step::Armijo {
            initial: 1.0,
            shrink: 0.5,
            c: 1e-4,
        }
    }

    /// Validates the rule.
    ///
    /// # Errors
    /// `InvalidParam` naming the field.
    pub fn check(&self) -> Result<()> {
        let bad = |name: &'static str, reason: String| Err(MoeError::InvalidParam { name, reason });
        match *self {
            Step::Constant(a) if !(a > 0.0 && a.is_finite()) => {
                bad("step", format!("a finite constant step > 0, got {a}"))
            }
            Step::Armijo { initial, .. } if !(initial > 0.0 && initial.is_finite()) => {
                bad("initial", format!("finite and > 0, got {initial}"))
            }
            Step::Armijo { shrink, .. } if !(shrink > 0.0 && shrink < 1.0) => {
                bad("shrink", format!("in (0, 1), got {shrink}"))
            }
            Step::Armijo { c, .. } if !(c > 0.0 && c < 1.0) => {
                bad("c", format!("in (0, 1), got {c}"))
            }
            _ => Ok(()),
        }
    }
}

/// Maximum number of Armijo halvings before the step is declared stalled.
pub const MAX_BACKTRACKS: u64 = 60;

/// Whether an error at a trial point means the trial left the domain / overflowed
/// (then backtracking continues).
pub(crate) fn is_trial_failure(e: &MoeError) -> bool {
    matches!(
        e,
        MoeError::NonFinite { .. }
            | MoeError::LeftDomain { .. }
            | MoeError::Mirror(mirror::MirrorError::OutsideDomain { .. })
            | MoeError::Mirror(mirror::MirrorError::NonFinite { .. })
    )
}

/// One step of `rule` on a function `f` (value and gradient into its buffer) from `x`
/// with value `fx` and gradient `g`: writes the new point into `out`, its value and
/// gradient into the returned tuple / `g_out`. Returns (value, evaluations, accepted).
pub(crate) fn gradient_step<F>(
    rule: Step,
    mut f: F,
    x: &[f64],
    fx: f64,
    g: &[f64],
    out: &mut [f64],
    g_out: &mut [f64],
) -> Result<(f64, u64, bool)>
where
    F: FnMut(&[f64], &mut [f64]) -> Result<f64>,
{
    match rule {
        Step::Constant(a) => {
            for j in 0..x.len() {
                out[j] = x[j] - a * g[j];
            }
            let v = f(out, g_out).map_err(|e| match e {
                MoeError::Mirror(mirror::MirrorError::OutsideDomain { .. }) => {
                    MoeError::LeftDomain {
                        reason: format!(
                            "the constant step α = {a} left the natural domain of the model: {e}"
                        ),
                    }
                }
                other => other,
            })?;
            Ok((v, 1, true))
        }
        Step::Armijo { initial, shrink, c } => {
            let g2: f64 = g.iter().map(|v| v * v).sum();
            let mut a = initial;
            for k in 1..=MAX_BACKTRACKS {
                for j in 0..x.len() {
                    out[j] = x[j] - a * g[j];
                }
                match f(out, g_out) {
                    Ok(v) if v.is_finite() && v <= fx - c * a * g2 => return Ok((v, k, true)),
                    Ok(_) => {}
                    Err(e) if is_trial_failure(&e) => {}
                    Err(e) => return Err(e),
                }
                a *= shrink;
            }
            // Stalled (gradient at round-off level): stay put, report not converged.
            out.copy_from_slice(x);
            let v = f(out, g_out)?;
            Ok((v, MAX_BACKTRACKS + 1, false))
        }
    }
}

/// Gradient descent on $L$ (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct GradientDescent {
    step: Step,
    record_bregman: bool,
    cache: Option<(Vec<f64>, Vec<f64>, f64)>,
}

impl GradientDescent {
    /// Gradient descent with the given step rule.
    ///
    /// # Errors
    /// `InvalidParam` for an invalid rule (see [`Step::check`]).
    pub fn new(step: Step) -> Result<Self> {
        step.check()?;
        Ok(GradientDescent {
            step,
            record_bregman: false,
            cache: None,
        })
    }
    /// Also record $D_{\mathcal A}(\Phi_{t+1}, \Phi_t)$ (one extra pass per step).
    pub fn with_bregman(mut self, on: bool) -> Self {
        self.record_bregman = on;
        self
    }
    /// The step rule.
    pub fn step_rule(&self) -> Step {
        self.step
    }
}

impl<M: ConditionalFamily + ?Sized> Solver<Problem<'_, M>> for GradientDescent {
    fn name(&self) -> String {
        match self.step {
            Step::Constant(a) => format!("GD(α={a})"),
            Step::Armijo { .. } => "GD(Armijo)".into(),
        }
    }
    fn init(&mut self, _problem: &Problem<'_, M>, state: FitState) -> Result<FitState> {
        self.cache = None;
        Ok(state)
    }
    fn next_iter(&mut self, problem: &Problem<'_, M>, state: FitState) -> NextIter {
        let k = state.theta.len();
        let (grad, value) = match self.cache.take() {
            Some((th, g, v)) if th == state.theta => (g, v),
            _ => {
                let mut g = vec![0.0; k];
                let v = problem.objective_and_gradient(&state.theta, &mut g)?;
                (g, v)
            }
        };
        let mut next = vec![0.0; k];
        let mut g_next = vec![0.0; k];
        let (objective, evals, _accepted) = gradient_step(
            self.step,
            |th, g| problem.objective_and_gradient(th, g),
            &state.theta,
            value,
            &grad,
            &mut next,
            &mut g_next,
        )?;
        let grad_norm = g_next.iter().map(|v| v * v).sum::<f64>().sqrt();
        self.cache = Some((next.clone(), g_next, objective));
        // No inner solve: the step is the method's exact step, so `converged` is true
        // (an inexact flag would turn the executor's stop into `InexactMStep`). A stalled
        // Armijo search stays put and shows as `iterations = MAX_BACKTRACKS + 1`; its
        // zero change then stops the run, which is right: the stall happens only when no
        // decrease along −∇L is representable.
        let inner = InnerStats::exact_step(evals, grad_norm);
        let bregman = self.record_bregman;
        let (state, mut record) =
            assemble(problem, state, next, objective, grad_norm, inner, bregman)?;
        record.step.passes = evals;
        Ok((state, record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_rules_name_the_field() {
        for (rule, name) in [
            (Step::Constant(0.0), "step"),
            (Step::Constant(f64::NAN), "step"),
            (
                Step::Armijo {
                    initial: -1.0,
                    shrink: 0.5,
                    c: 1e-4,
                },
                "initial",
            ),
            (
                Step::Armijo {
                    initial: 1.0,
                    shrink: 1.0,
                    c: 1e-4,
                },
                "shrink",
            ),
            (
                Step::Armijo {
                    initial: 1.0,
                    shrink: 0.5,
                    c: 0.0,
                },
                "c",
            ),
        ] {
            let e = GradientDescent::new(rule).unwrap_err();
            assert!(
                matches!(e, MoeError::InvalidParam { name: n, .. } if n == name),
                "{e:?}"
            );
        }
        assert!(GradientDescent::new(Step::armijo()).is_ok());
    }

    #[test]
    fn armijo_step_decreases_a_quadratic() {
        let f = |x: &[f64], g: &mut [f64]| -> Result<f64> {
            g[0] = 10.0 * x[0];
            Ok(5.0 * x[0] * x[0])
        };
        let x = [1.0];
        let mut out = [0.0];
        let mut g2 = [0.0];
        let (v, evals, ok) =
            gradient_step(Step::armijo(), f, &x, 5.0, &[10.0], &mut out, &mut g2).unwrap();
        assert!(ok && v < 5.0 && evals > 1, "{v} {evals}");
        assert!((v - 5.0 * out[0] * out[0]).abs() < 1e-15);
    }
}
