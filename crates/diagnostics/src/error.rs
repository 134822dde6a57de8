//! Typed errors of the `diagnostics` crate.

use em_as_md::MoeError;
use thiserror::Error;

/// What can prevent a diagnostic from being computed.
///
/// An *inconclusive* or *violated* certificate is not an error: it is a
/// [`Verdict`](crate::certificate::Verdict). `Err` is reserved for input that cannot be
/// analysed at all (an invalid configuration, an empty trajectory, a model failure at the
/// final iterate).
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum DiagnosticsError {
    /// A configuration field failed validation.
    #[error("invalid configuration `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field of the configuration.
        field: &'static str,
        /// What was expected.
        reason: String,
    },
    /// The trajectory or the objective values cannot be used.
    #[error("invalid trajectory: {reason}")]
    InvalidTrajectory {
        /// What is wrong.
        reason: String,
    },
    /// Vector or matrix sizes disagree.
    #[error("dimension mismatch in {what}: expected {expected}, found {found}")]
    DimensionMismatch {
        /// Which argument.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        found: usize,
    },
    /// A dense linear-algebra step failed (eigen-solver did not converge, a matrix that
    /// must be positive definite is not, a non-finite entry).
    #[error("linear algebra failure in {what}: {reason}")]
    Linalg {
        /// Which computation.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The model or the objective failed (propagated from `em-as-md`).
    #[error(transparent)]
    Model(#[from] MoeError),
}

impl From<mirror::MirrorError> for DiagnosticsError {
    fn from(e: mirror::MirrorError) -> Self {
        DiagnosticsError::Model(MoeError::Mirror(e))
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, DiagnosticsError>;
