//! The inner numerics every M-step and mirror-descent subproblem shares: the solvers'
//! report ([`InnerStats`]), the Cholesky policy, weighted Gram matrices, L-BFGS, the
//! deterministic parallel fold over rows and the one weighted soft-label softmax
//! regression ([`softmax`]). Nothing here knows about experts, gates or EM.

pub mod cholesky;
pub mod gram;
pub mod lbfgs;
pub mod parallel;
mod report;
pub mod softmax;
pub mod sums;

pub use lbfgs::{Lbfgs, LbfgsReport};
pub use parallel::{fold_rows, fold_rows_with, Mergeable};
pub use report::InnerStats;
pub use softmax::{Labels, SoftmaxRegression, SoftmaxStats};
pub use sums::NewtonSums;
