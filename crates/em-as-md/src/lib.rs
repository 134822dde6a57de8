//! # em-as-md
//!
//! Mixtures of experts fitted by Expectation–Maximization, with EM expressed as projected
//! mirror descent with unit step whose mirror map is the stacked complete-data
//! log-partition $\mathcal A(\Phi) = \frac1n\sum_i A(\varphi_i)$.

pub mod conditional;
pub mod error;
pub mod solver;

pub use conditional::ConditionalFamily;
pub use error::{MoeError, Result};
pub use mirror;
pub use solver::{FitState, InnerStats, IterRecord, Solver, Termination};
