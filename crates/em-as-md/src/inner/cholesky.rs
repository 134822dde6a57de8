//! The M-steps' Cholesky solves, under the workspace's one Cholesky policy
//! ([`mirror::linalg`]: faer's $G = LL^\top$, rejected at the first pivot with
//! $\neg(L_{jj}^2 > $ [`PIVOT_TOL`] $\max_i G_{ii})$, and a non-finite solve rejected too).
//!
//! This module only names the block whose matrix failed: every failure of the policy
//! becomes [`MoeError::NotPositiveDefinite`] `{ block, pivot }` ([`block_error`]); there is
//! no second singularity rule in em-as-md.

use crate::error::{Block, MoeError, Result};
use faer::MatRef;
pub use mirror::linalg::{Cholesky, CholeskyError, PIVOT_TOL};

/// The [`MoeError`] of a failed factorisation or solve of `block`'s matrix:
/// `NotPositiveDefinite { block, pivot }` for a rejected pivot, and with pivot 0 for a
/// non-finite solution (a factor that passed the pivot test but overflowed is numerically
/// singular all the same); a size mismatch is a `Mirror(DimensionMismatch)`.
pub fn block_error(e: CholeskyError, block: Block) -> MoeError {
    match e {
        CholeskyError::NotPositiveDefinite { pivot } => {
            MoeError::NotPositiveDefinite { block, pivot }
        }
        CholeskyError::NonFiniteSolution => MoeError::NotPositiveDefinite { block, pivot: 0 },
        other => MoeError::Mirror(other.into_mirror("Cholesky factor")),
    }
}

/// Factors $G$ ($n\times n$, lower triangle read) under the policy.
///
/// # Errors
/// `NotPositiveDefinite { block, pivot }` ([`block_error`]).
pub fn factor(g: MatRef<'_, f64>, block: Block) -> Result<Cholesky> {
    mirror::linalg::cholesky_factor(g).map_err(|e| block_error(e, block))
}

/// Solves $G x = b$ for symmetric positive definite $G$ (lower triangle read).
///
/// # Errors
/// `NotPositiveDefinite { block, pivot }` ([`block_error`]).
pub fn solve(g: MatRef<'_, f64>, b: &[f64], block: Block) -> Result<Vec<f64>> {
    mirror::linalg::cholesky_solve(g, b).map_err(|e| block_error(e, block))
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Mat;

    #[test]
    fn failures_name_the_block_and_pivot() {
        // Rank one: the second pivot is round-off, rejected by the relative rule.
        let g = Mat::from_fn(2, 2, |_, _| 3.0);
        assert_eq!(
            solve(g.as_ref(), &[1.0, 1.0], Block::Gate).unwrap_err(),
            MoeError::NotPositiveDefinite {
                block: Block::Gate,
                pivot: 1
            }
        );
        let g = Mat::from_fn(2, 2, |a, b| if a == b { -1.0 } else { 0.0 });
        assert_eq!(
            factor(g.as_ref(), Block::Expert(Some(2))).unwrap_err(),
            MoeError::NotPositiveDefinite {
                block: Block::Expert(Some(2)),
                pivot: 0
            }
        );
        // Solved against the closed form of a 2×2 inverse.
        let g = Mat::from_fn(2, 2, |a, b| if a == b { 2.0 } else { 1.0 });
        let x = solve(g.as_ref(), &[1.0, 0.0], Block::Gate).unwrap();
        assert!((x[0] - 2.0 / 3.0).abs() < 1e-15 && (x[1] + 1.0 / 3.0).abs() < 1e-15);
        assert!(matches!(
            solve(g.as_ref(), &[1.0], Block::Gate),
            Err(MoeError::Mirror(_))
        ));
    }
}
