//! Choosing how EM is accelerated ([`Accel`]) and the solver that choice runs
//! ([`AccelSolver`]), so a fit selects it at run time on the same [`Problem`].

use crate::error::{MoeError, Result};
use crate::model::EmModel;
use crate::solve::anderson::Anderson;
use crate::solve::em::Em;
use crate::solve::md_adaptive::AdaptiveMirrorDescent;
use crate::solve::newton::Newton;
use crate::solve::problem::Problem;
use crate::solve::solver::{FitState, NextIter, Solver};
use crate::solve::squarem::Squarem;
use serde::{Deserialize, Serialize};

/// How a fit accelerates EM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Accel {
    /// Plain EM.
    None,
    /// SQUAREM with the monotone safeguard ([`Squarem`]): the default — no more
    /// EM-equivalent passes than EM on every row of `docs/08-accelerated-em.md`, far
    /// fewer than Anderson on gated logistic experts, and as safe as EM in the tests
    /// (monotone, same optimum).
    #[default]
    Squarem,
    /// Mirror descent with $\eta_t = 1/\hat L_t$ ([`AdaptiveMirrorDescent`]).
    Md,
    /// Anderson-accelerated EM with the monotone safeguard ([`Anderson`]: DAAREM, one
    /// EM-map evaluation per iteration).
    Anderson,
    /// Newton's method on $L$ with the observed information, safeguarded by EM
    /// ([`Newton`]).
    Newton,
}

impl Accel {
    /// Every choice, in the order the CLI lists them.
    pub const ALL: [Accel; 5] = [
        Accel::None,
        Accel::Squarem,
        Accel::Md,
        Accel::Anderson,
        Accel::Newton,
    ];

    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::None => "none",
            Accel::Squarem => "squarem",
            Accel::Md => "md",
            Accel::Anderson => "anderson",
            Accel::Newton => "newton",
        }
    }

    /// The solver this choice runs.
    pub fn solver(self) -> AccelSolver {
        match self {
            Accel::None => AccelSolver::Em(Em::new()),
            Accel::Squarem => AccelSolver::Squarem(Squarem::new()),
            Accel::Md => AccelSolver::Md(AdaptiveMirrorDescent::new()),
            Accel::Anderson => AccelSolver::Anderson(Anderson::new()),
            Accel::Newton => AccelSolver::Newton(Newton::new()),
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Accel {
    type Err = MoeError;
    /// Parses `none`, `squarem`, `md`, `anderson` or `newton`.
    ///
    /// # Errors
    /// `InvalidParam { name: "accel" }` naming the accepted values.
    fn from_str(s: &str) -> Result<Accel> {
        Accel::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| MoeError::InvalidParam {
                name: "accel",
                reason: format!("one of none, squarem, md, anderson, newton; got {s:?}"),
            })
    }
}

/// The solver of an [`Accel`] choice.
#[derive(Debug)]
pub enum AccelSolver {
    /// Plain EM.
    Em(Em),
    /// SQUAREM.
    Squarem(Squarem),
    /// Mirror descent with $\eta_t = 1/\hat L_t$.
    Md(AdaptiveMirrorDescent),
    /// Anderson-accelerated EM.
    Anderson(Anderson),
    /// Newton with the EM safeguard.
    Newton(Newton),
}

impl<M> Solver<Problem<'_, M>> for AccelSolver
where
    M: EmModel + ?Sized,
    M::Stats: 'static,
{
    fn name(&self) -> String {
        match self {
            AccelSolver::Em(s) => Solver::<Problem<'_, M>>::name(s),
            AccelSolver::Squarem(s) => Solver::<Problem<'_, M>>::name(s),
            AccelSolver::Md(s) => Solver::<Problem<'_, M>>::name(s),
            AccelSolver::Anderson(s) => Solver::<Problem<'_, M>>::name(s),
            AccelSolver::Newton(s) => Solver::<Problem<'_, M>>::name(s),
        }
    }
    fn init(&mut self, problem: &Problem<'_, M>, state: FitState) -> Result<FitState> {
        match self {
            AccelSolver::Em(s) => s.init(problem, state),
            AccelSolver::Squarem(s) => s.init(problem, state),
            AccelSolver::Md(s) => s.init(problem, state),
            AccelSolver::Anderson(s) => s.init(problem, state),
            AccelSolver::Newton(s) => s.init(problem, state),
        }
    }
    fn next_iter(&mut self, problem: &Problem<'_, M>, state: FitState) -> NextIter {
        match self {
            AccelSolver::Em(s) => s.next_iter(problem, state),
            AccelSolver::Squarem(s) => s.next_iter(problem, state),
            AccelSolver::Md(s) => s.next_iter(problem, state),
            AccelSolver::Anderson(s) => s.next_iter(problem, state),
            AccelSolver::Newton(s) => s.next_iter(problem, state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_rejected() {
        for a in Accel::ALL {
            assert_eq!(a.as_str().parse::<Accel>().unwrap(), a);
            assert_eq!(a.to_string(), a.as_str());
        }
        let e = "fast".parse::<Accel>().unwrap_err();
        assert!(matches!(e, MoeError::InvalidParam { name: "accel", .. }));
    }
}
