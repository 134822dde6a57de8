//! The inner numerics every M-step and mirror-descent subproblem shares: the solvers'
//! report ([`InnerStats`]), the Cholesky policy, weighted Gram matrices, L-BFGS and the
//! deterministic parallel fold over rows. Nothing here knows about experts, gates or EM.

pub mod cholesky;
pub mod gram;
pub mod lbfgs;
pub mod parallel;
mod report;

pub use lbfgs::{Lbfgs, LbfgsReport};
pub use parallel::{fold_rows, fold_rows_with, Mergeable};
pub use report::InnerStats;
