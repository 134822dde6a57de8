//! What an inner solve reports ([`InnerStats`]): every M-step and mirror-descent
//! subproblem says how much work it did and whether it met its tolerance.

use serde::{Deserialize, Serialize};

/// Work done by an inner solver (an iterative M-step or the mirror-descent subproblem)
/// inside one outer iteration. An inexact inner solve is reported, never hidden.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InnerStats {
    /// Inner iterations taken (Newton/IRLS/L-BFGS steps, summed over blocks).
    pub iterations: u64,
    /// Final inner residual (gradient norm of the subproblem; 0 for closed forms).
    pub residual: f64,
    /// Whether every inner solve reached its tolerance.
    pub converged: bool,
    /// Number of Gram-sized weighted Hessians formed (for the cost floor in benchmarks).
    pub hessians: u64,
    /// Inner solves that fell back to another method (the softmax gate's Newton M-step
    /// handing a singular Hessian to L-BFGS, [`crate::model::gate::GateConfig::lbfgs_fallback`]),
    /// and expert Newton steps factored with a Levenberg shift
    /// ([`mirror::newton::NewtonSettings::shift_singular`]).
    /// Absent in records written before it existed (read as 0).
    #[serde(default)]
    pub fallbacks: u64,
}

impl InnerStats {
    /// The stats of a step that is exact by definition (no inner solve to a tolerance):
    /// `iterations` evaluations, final `residual`, converged, no Hessians, no fallbacks.
    pub(crate) fn exact_step(iterations: u64, residual: f64) -> InnerStats {
        InnerStats {
            iterations,
            residual,
            converged: true,
            hessians: 0,
            fallbacks: 0,
        }
    }

    /// This work marked as a failed step: the solver's point could not be computed
    /// (EM's M-step from the iterate has no valid result), so the iterate stays. Not
    /// converged, residual $\infty$, one more fallback; the executor then ends the run as
    /// [`Termination::InexactMStep`](crate::Termination::InexactMStep).
    pub(crate) fn failed(self) -> InnerStats {
        InnerStats {
            residual: f64::INFINITY,
            converged: false,
            fallbacks: self.fallbacks + 1,
            ..self
        }
    }

    /// This work when the iterate stays because EM's point from it is higher: a fixed
    /// point at the inner solves' precision when they were exact (converged, no
    /// fallback), else a [`failed`](Self::failed) step.
    pub(crate) fn stayed(self) -> InnerStats {
        if self.converged && self.fallbacks == 0 {
            self
        } else {
            self.failed()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stay_after_exact_solves_keeps_them_and_after_inexact_ones_fails() {
        let exact = InnerStats::exact_step(3, 1e-12);
        assert_eq!(exact.clone().stayed(), exact);
        let shifted = InnerStats {
            fallbacks: 1,
            ..exact.clone()
        };
        let missed = InnerStats {
            converged: false,
            ..exact.clone()
        };
        for inexact in [shifted, missed] {
            let s = inexact.clone().stayed();
            assert!(!s.converged && s.residual == f64::INFINITY);
            assert_eq!(s.fallbacks, inexact.fallbacks + 1);
            assert_eq!(
                (s.iterations, s.hessians),
                (inexact.iterations, inexact.hessians)
            );
        }
    }
}
