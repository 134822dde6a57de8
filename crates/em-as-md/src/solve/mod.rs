//! The outer solvers (argmin style: a solver is a step function, the [`Executor`] owns
//! the loop, observers watch it): EM, mirror descent at any step, gradient descent and
//! gradient EM, the accelerated EMs (SQUAREM, Anderson, mirror descent at $\eta_t = 1/\hat L_t$) and
//! Adam, all on one [`Problem`].

pub mod accel;
pub mod adam;
pub mod anderson;
pub mod em;
pub mod em_map;
pub mod executor;
pub mod gd;
pub mod gradient_em;
pub mod md;
pub mod md_adaptive;
pub mod newton;
pub mod observed;
pub mod observer;
pub mod problem;
pub mod solver;
pub mod squarem;

pub use em::Em;
pub use em_map::EmMap;
pub use executor::{Executor, FitResult};
pub use problem::{Problem, StackedLogPartition};
pub use solver::{FitState, IterRecord, NextIter, Solver, StepInfo, Termination, INEXACT_WINDOW};
