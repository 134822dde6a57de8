//! The outer solvers (argmin style: a solver is a step function, the [`Executor`] owns
//! the loop, observers watch it): EM, mirror descent at any step, gradient descent and
//! gradient EM, all on one [`Problem`].

pub mod em;
pub mod executor;
pub mod gd;
pub mod gradient_em;
pub mod md;
pub mod observer;
pub mod problem;
pub mod solver;

pub use em::Em;
pub use executor::{Executor, FitResult};
pub use problem::{Problem, StackedLogPartition};
pub use solver::{FitState, IterRecord, NextIter, Solver, Termination, INEXACT_WINDOW};
