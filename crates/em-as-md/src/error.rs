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
    #[error("weighted {} is not positive definite (pivot {pivot}): too little weight or collinear features — try ridge > 0 or drop a column", component_name(*.expert))]
    NotPositiveDefinite {
        /// Index of the expert, or [`GATE`] (`usize::MAX`) for the gate.
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
    #[error("step left the domain (natural or mean parameters) at iteration {iter}: {reason}")]
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

/// The constant used in [`MoeError::NotPositiveDefinite`] for the gate's Hessian.
pub const GATE: usize = usize::MAX;

fn component_name(expert: usize) -> String {
    if expert == GATE {
        "Hessian of the gate".to_string()
    } else {
        format!("Gram matrix / Hessian of expert {expert}")
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, MoeError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_is_named_not_numbered() {
        let e = MoeError::NotPositiveDefinite {
            expert: GATE,
            pivot: 3,
        }
        .to_string();
        assert!(
            e.contains("gate") && !e.contains(&usize::MAX.to_string()),
            "{e}"
        );
        let e = MoeError::NotPositiveDefinite {
            expert: 1,
            pivot: 0,
        }
        .to_string();
        assert!(e.contains("expert 1"), "{e}");
    }
}
