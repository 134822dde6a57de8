//! The one Cholesky policy of the M-steps: faer's $G = LL^\top$ with a relative pivot
//! tolerance.

use faer::linalg::solvers::{Llt, LltError, Solve};
use faer::{Mat, MatRef};

/// Relative pivot threshold of the M-steps' Cholesky solves: a pivot $L_{jj}^2 \le$ this times
/// $\max_i G_{ii}$ is treated as a failure (numerically singular matrix).
pub const PIVOT_TOL: f64 = 1e-13;

/// Solves $G x = b$ for symmetric positive definite $G$ ($n\times n$, lower triangle
/// read) by faer's Cholesky $G = LL^\top$ ([`cholesky_factor`], [`llt_solve`]); on
/// failure returns the failing pivot.
pub(crate) fn cholesky_solve(
    g: MatRef<'_, f64>,
    b: &[f64],
) -> std::result::Result<Vec<f64>, usize> {
    llt_solve(&cholesky_factor(g)?, b)
}

/// faer's Cholesky factor $G = LL^\top$ of a symmetric positive definite $G$ (lower
/// triangle read); on failure — a non-positive pivot, or one below [`PIVOT_TOL`] relative
/// to the largest diagonal entry (round-off can leave a tiny positive pivot on an exactly
/// singular matrix) — returns the failing pivot.
pub(crate) fn cholesky_factor(g: MatRef<'_, f64>) -> std::result::Result<Llt<f64>, usize> {
    let llt = g.llt(faer::Side::Lower).map_err(|e| match e {
        LltError::NonPositivePivot { index } => index,
    })?;
    let n = g.nrows();
    let scale = (0..n).map(|i| g[(i, i)]).fold(0.0f64, f64::max);
    let l = llt.L();
    // (written so that a NaN pivot also fails)
    if let Some(j) = (0..n).find(|&j| {
        (l[(j, j)] * l[(j, j)]).partial_cmp(&(PIVOT_TOL * scale))
            != Some(std::cmp::Ordering::Greater)
    }) {
        return Err(j);
    }
    Ok(llt)
}

/// $x = (LL^\top)^{-1} b$ from a [`cholesky_factor`]; a non-finite solution fails with
/// pivot 0.
pub(crate) fn llt_solve(llt: &Llt<f64>, b: &[f64]) -> std::result::Result<Vec<f64>, usize> {
    let n = b.len();
    let rhs = Mat::from_fn(n, 1, |i, _| b[i]);
    let x = llt.solve(&rhs);
    let out: Vec<f64> = (0..n).map(|i| x[(i, 0)]).collect();
    if out.iter().all(|v| v.is_finite()) {
        Ok(out)
    } else {
        Err(0)
    }
}
