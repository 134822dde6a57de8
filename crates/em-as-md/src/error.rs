//! Typed errors of `em-as-md`.

use thiserror::Error;

/// What can prevent a mixture of experts from being built, fitted or evaluated.
///
/// Not converging is *not* an error: a fit that stops at its iteration limit is returned
/// with its [`Termination`](crate::solver::Termination) reason.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum MoeError {
    /// A hyperparameter failed validation.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParam {
        /// Parameter name as the user wrote it (e.g. "tol", "n_experts").
        name: &'static str,
        /// What was expected.
        reason: String,
    },
    /// The data cannot be used (NaN, empty, wrong shape, target outside the support...).
    #[error("invalid data at row {row:?}, column {column:?}: {reason}")]
    InvalidData {
        /// 0-based row, when one row is at fault.
        row: Option<usize>,
        /// Column name or index, when one column is at fault.
        column: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// A Cholesky factorisation failed in an M-step.
    #[error("weighted Gram matrix of expert {expert} is not positive definite (pivot {pivot}); the expert has too little weight or collinear features — try ridge > 0")]
    NotPositiveDefinite {
        /// Index of the expert (or `usize::MAX` for the gate).
        expert: usize,
        /// Failing pivot.
        pivot: usize,
    },
    /// A computation produced NaN/∞ where a finite number is required.
    #[error("non-finite value in {what} at iteration {iter}")]
    NonFinite {
        /// Where.
        what: &'static str,
        /// Outer iteration.
        iter: u64,
    },
    /// A mirror-descent step with η > 1 (or gradient step) left the domain of the mirror
    /// map: the target statistics are not a valid mean parameter.
    #[error("step left the mean domain at iteration {iter}: {reason}")]
    LeftDomain {
        /// Outer iteration.
        iter: u64,
        /// Details.
        reason: String,
    },
    /// Error from the `mirror` crate.
    #[error(transparent)]
    Mirror(#[from] mirror::MirrorError),
    /// Reading or writing a model or checkpoint failed.
    #[error("I/O: {0}")]
    Io(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, MoeError>;
