//! Typed errors of the `mirror` crate.

use thiserror::Error;

/// Everything that can go wrong in `mirror`: each variant names its cause and the
/// offending value, so callers can match on the variant instead of parsing a string.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum MirrorError {
    /// A constructor argument or hyperparameter is invalid (NaN, out of range, ...).
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Name of the parameter.
        name: &'static str,
        /// The rejected value.
        value: f64,
        /// What was expected.
        reason: &'static str,
    },
    /// A point lies outside the domain it must lie in (natural domain, mean domain,
    /// the domain of a mirror map, a constraint set).
    #[error("{what} is outside its domain: {reason}")]
    OutsideDomain {
        /// Which domain (e.g. "natural parameter", "mean parameter").
        what: &'static str,
        /// Why, in words.
        reason: String,
    },
    /// An observation lies outside the support of the family.
    #[error("observation {value:?} is outside the support of {family}")]
    OutsideSupport {
        /// Family name.
        family: String,
        /// The observation.
        value: Vec<f64>,
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
    /// A matrix that must be symmetric positive definite is not (Cholesky failed).
    #[error("matrix `{what}` is not positive definite (Cholesky pivot {pivot})")]
    NotPositiveDefinite {
        /// Which matrix.
        what: &'static str,
        /// Index of the failing pivot.
        pivot: usize,
    },
    /// An iterative inner solver (Newton for the dual map, a Bregman projection) did not
    /// reach its stated tolerance.
    #[error("{what} did not converge in {iterations} iterations (residual {residual:e})")]
    NoConvergence {
        /// Which solver.
        what: &'static str,
        /// Iterations performed.
        iterations: usize,
        /// Final residual.
        residual: f64,
    },
    /// An operation has no exact algorithm for this combination of inputs, e.g. a
    /// Bregman projection onto a constraint set for a mirror map the set does not know
    /// how to project with. Returned instead of an approximate or wrong answer.
    #[error("unsupported {what}: {reason}")]
    Unsupported {
        /// Which operation.
        what: &'static str,
        /// Why, in words (names the map and the set).
        reason: String,
    },
    /// A computation produced NaN or ±∞ where a finite number is required.
    #[error("non-finite value in {what}")]
    NonFinite {
        /// Where it appeared.
        what: &'static str,
    },
}

/// Result alias used throughout `mirror`.
pub type Result<T> = std::result::Result<T, MirrorError>;

/// Returns `Err(DimensionMismatch)` unless `found == expected`.
pub(crate) fn check_len(what: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(MirrorError::DimensionMismatch {
            what,
            expected,
            found,
        })
    }
}
