//! The solver abstraction: a solver is a step function, the
//! [`Executor`](crate::solve::executor::Executor) owns the loop (as in `argmin`).

use crate::error::Result;
use crate::inner::InnerStats;
use serde::{Deserialize, Serialize};

/// The state carried from one iteration to the next.
///
/// Invariant (tested for every solver): `objective` is $L(\theta)$ evaluated at `theta`
/// itself, never at the previous iterate. `best_*` are kept apart from the current
/// iterate because mirror descent with $\eta > 1$ and gradient descent are not monotone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitState {
    /// Current parameters $\theta_t$ (flattened, model-specific layout).
    pub theta: Vec<f64>,
    /// $L(\theta_t)$: average negative log-likelihood.
    pub objective: f64,
    /// Completed outer iterations $t$.
    pub iter: u64,
    /// Best parameters seen so far.
    pub best_theta: Vec<f64>,
    /// $L$ at `best_theta`.
    pub best_objective: f64,
}

impl FitState {
    /// A state at iteration 0 with its objective already evaluated.
    pub fn new(theta: Vec<f64>, objective: f64) -> Self {
        FitState {
            best_theta: theta.clone(),
            best_objective: objective,
            theta,
            objective,
            iter: 0,
        }
    }

    /// The state after one step to `theta` with objective $L(\theta)$ = `objective`:
    /// the iteration count advances and the best pair is kept apart from the current one
    /// (mirror descent with $\eta > 1$ and gradient descent are not monotone). Every solver
    /// builds its next state through this one function.
    pub fn advance(self, theta: Vec<f64>, objective: f64) -> FitState {
        let (best_theta, best_objective) = if objective < self.best_objective {
            (theta.clone(), objective)
        } else {
            (self.best_theta, self.best_objective)
        };
        FitState {
            theta,
            objective,
            iter: self.iter + 1,
            best_theta,
            best_objective,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_keeps_best_apart_from_current() {
        let s = FitState::new(vec![0.0], 2.0);
        let s = s.advance(vec![1.0], 1.0); // improves
        assert_eq!(
            (s.iter, s.best_theta.clone(), s.best_objective),
            (1, vec![1.0], 1.0)
        );
        let s = s.advance(vec![2.0], 3.0); // worse: current moves, best stays
        assert_eq!((s.iter, s.theta.clone(), s.objective), (2, vec![2.0], 3.0));
        assert_eq!((s.best_theta, s.best_objective), (vec![1.0], 1.0));
    }
}

/// One row of the per-iteration record passed to observers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterRecord {
    /// Outer iteration index $t+1$ of the state this record describes.
    pub iter: u64,
    /// $L(\theta_{t+1})$.
    pub objective: f64,
    /// $\|\nabla L(\theta_{t+1})\|_2$ (NaN when the solver does not compute it).
    pub grad_norm: f64,
    /// $D_{\mathcal A}(\Phi_{t+1}, \Phi_t)$, the average KL between successive complete-data
    /// laws (NaN when not computed).
    pub bregman_step: f64,
    /// Inner-solver work.
    pub inner: InnerStats,
    /// Seconds since the run started.
    pub elapsed: f64,
}

/// Why a run stopped. Reaching the iteration limit is a reason, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Termination {
    /// The iteration limit was reached.
    MaxIters,
    /// The relative change of $L$ fell below the tolerance.
    Converged {
        /// $|L_{t+1} - L_t| / \max(1, |L_t|)$ at the stop.
        rel_change: f64,
    },
    /// $\|\nabla L\|$ fell below its tolerance.
    GradientSmall,
    /// The time limit was reached.
    TimeLimit,
    /// The caller's cancellation flag was raised.
    Interrupted,
}

impl std::fmt::Display for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Termination::MaxIters => write!(f, "maximum number of iterations reached"),
            Termination::Converged { rel_change } => {
                write!(f, "converged (relative change {rel_change:.3e})")
            }
            Termination::GradientSmall => write!(f, "gradient norm below tolerance"),
            Termination::TimeLimit => write!(f, "time limit reached"),
            Termination::Interrupted => write!(f, "interrupted"),
        }
    }
}

/// A solver: one step $\theta_t \to \theta_{t+1}$ on a problem `P`.
pub trait Solver<P: ?Sized> {
    /// Short name for reports ("EM", "MD(η=0.5)", "GD", "gradient EM").
    fn name(&self) -> String;
    /// Called once before the first step (allocate work buffers here).
    fn init(&mut self, _problem: &P, state: FitState) -> Result<FitState> {
        Ok(state)
    }
    /// $\theta_t \to \theta_{t+1}$. The returned state holds $L(\theta_{t+1})$.
    fn next_iter(&mut self, problem: &P, state: FitState) -> Result<(FitState, IterRecord)>;
}
