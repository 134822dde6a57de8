//! The workspace's one Cholesky policy.
//!
//! A symmetric positive definite $G$ ($n\times n$, lower triangle read) is factored by
//! faer's $LL^\top$ kernel, and the factorisation is **rejected** at the first pivot $j$
//! with
//! $$ \neg\big(L_{jj}^2 > \texttt{PIVOT\_TOL}\cdot\max_i G_{ii}\big), $$
//! i.e. a non-positive pivot (faer's own failure), a NaN pivot, or a positive pivot that is
//! tiny *relative to the largest diagonal entry*. The relative test is what makes the
//! policy usable: on an exactly singular matrix (a Gram matrix of collinear columns)
//! round-off usually leaves a tiny positive pivot, of the order of
//! $\varepsilon_{\text{mach}}\max_i G_{ii}$, instead of a zero one, and an absolute threshold
//! would either miss it on large matrices or reject well-conditioned small ones. Scaling
//! $G$ by any $c > 0$ scales every $L_{jj}^2$ and $\max_i G_{ii}$ alike, so the decision does
//! not depend on units.
//!
//! A solve $x = (LL^\top)^{-1}b$ whose result is not finite (overflow on a nearly singular
//! factor that passed the pivot test) is rejected too.
//!
//! [`Cholesky`] owns its factor and work space, so a solver that refactors at every
//! iteration ([`crate::newton`]) allocates once; [`cholesky_factor`] and
//! [`cholesky_solve`] are the one-shot conveniences.

use crate::error::MirrorError;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::{Mat, MatMut, MatRef};
use thiserror::Error;

/// Relative pivot threshold: a pivot with $L_{jj}^2 \le$ `PIVOT_TOL` $\cdot \max_i G_{ii}$ is
/// a failure (the matrix is numerically singular).
pub const PIVOT_TOL: f64 = 1e-13;

/// Why a Cholesky factorisation or solve failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CholeskyError {
    /// Pivot `pivot` is non-positive, NaN, or below [`PIVOT_TOL`] relative to the largest
    /// diagonal entry.
    #[error("matrix is not positive definite (Cholesky pivot {pivot})")]
    NotPositiveDefinite {
        /// Index of the first failing pivot.
        pivot: usize,
    },
    /// The solve produced a NaN or an infinity.
    #[error("Cholesky solve produced a non-finite solution")]
    NonFiniteSolution,
    /// The matrix is not square, or a right-hand side or output has the wrong size.
    #[error("dimension mismatch in {what}: expected {expected}, found {found}")]
    DimensionMismatch {
        /// Which argument.
        what: &'static str,
        /// Expected size.
        expected: usize,
        /// Actual size.
        found: usize,
    },
}

impl CholeskyError {
    /// The failing pivot, for [`CholeskyError::NotPositiveDefinite`].
    pub fn pivot(&self) -> Option<usize> {
        match self {
            CholeskyError::NotPositiveDefinite { pivot } => Some(*pivot),
            _ => None,
        }
    }

    /// The error as a [`MirrorError`], `what` naming the matrix (or the solve).
    pub fn into_mirror(self, what: &'static str) -> MirrorError {
        match self {
            CholeskyError::NotPositiveDefinite { pivot } => {
                MirrorError::NotPositiveDefinite { what, pivot }
            }
            CholeskyError::NonFiniteSolution => MirrorError::NonFinite { what },
            CholeskyError::DimensionMismatch {
                what,
                expected,
                found,
            } => MirrorError::DimensionMismatch {
                what,
                expected,
                found,
            },
        }
    }
}

/// A Cholesky factor $G = LL^\top$ under the policy of this module, with the work space
/// to refactor a matrix of the same size without allocating.
pub struct Cholesky {
    /// $L$ in the lower triangle (the strict upper triangle is not read).
    l: Mat<f64>,
    /// faer's work space for the in-place factorisation.
    mem: MemBuffer,
    /// `Err` when the last factorisation failed (the factor is then unusable).
    state: Result<(), CholeskyError>,
}

impl std::fmt::Debug for Cholesky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cholesky")
            .field("l", &self.l)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Cholesky {
    /// An empty factor of size $n$ (not yet usable: [`refactor`](Self::refactor) it).
    pub fn with_dim(n: usize) -> Self {
        let req = llt::factor::cholesky_in_place_scratch::<f64>(
            n,
            faer::get_global_parallelism(),
            Default::default(),
        );
        Cholesky {
            l: Mat::zeros(n, n),
            mem: MemBuffer::new(req),
            state: Err(CholeskyError::NotPositiveDefinite { pivot: 0 }),
        }
    }

    /// Factors $G$ (lower triangle read) into a new [`Cholesky`].
    ///
    /// # Errors
    /// As [`refactor`](Self::refactor).
    pub fn factor(g: MatRef<'_, f64>) -> Result<Self, CholeskyError> {
        let mut c = Cholesky::with_dim(g.nrows());
        c.refactor(g)?;
        Ok(c)
    }

    /// Size $n$ of the factor.
    pub fn dim(&self) -> usize {
        self.l.nrows()
    }

    /// Replaces the factor by that of $G$ (lower triangle read; $n\times n$ with $n$ =
    /// [`dim`](Self::dim)), reusing the storage.
    ///
    /// # Errors
    /// `NotPositiveDefinite { pivot }` at the first pivot $j$ that is non-positive, NaN,
    /// or has $L_{jj}^2 \le$ [`PIVOT_TOL`] $\max_i G_{ii}$ (an infinite or NaN entry fails
    /// too); `DimensionMismatch` if $G$ is not $n\times n$. After an error the factor is
    /// unusable until the next successful `refactor` (solves return the same error).
    pub fn refactor(&mut self, g: MatRef<'_, f64>) -> Result<(), CholeskyError> {
        let n = self.dim();
        for (what, found) in [("matrix rows", g.nrows()), ("matrix columns", g.ncols())] {
            if found != n {
                return Err(CholeskyError::DimensionMismatch {
                    what,
                    expected: n,
                    found,
                });
            }
        }
        self.state = self.factor_checked(g);
        self.state
    }

    fn factor_checked(&mut self, g: MatRef<'_, f64>) -> Result<(), CholeskyError> {
        let n = self.dim();
        // (f64::max skips NaN; a NaN diagonal then fails at its own pivot below.)
        let scale = (0..n).map(|i| g[(i, i)]).fold(0.0f64, f64::max);
        for j in 0..n {
            for i in j..n {
                self.l[(i, j)] = g[(i, j)];
            }
        }
        let par = faer::get_global_parallelism();
        llt::factor::cholesky_in_place(
            self.l.as_mut(),
            Default::default(),
            par,
            MemStack::new(&mut self.mem),
            Default::default(),
        )
        .map_err(|e| match e {
            llt::factor::LltError::NonPositivePivot { index } => {
                CholeskyError::NotPositiveDefinite { pivot: index }
            }
        })?;
        // Written with `partial_cmp` so that a NaN pivot fails as well.
        let threshold = PIVOT_TOL * scale;
        if let Some(pivot) = (0..n).find(|&j| {
            let d = self.l[(j, j)];
            (d * d).partial_cmp(&threshold) != Some(std::cmp::Ordering::Greater)
        }) {
            return Err(CholeskyError::NotPositiveDefinite { pivot });
        }
        Ok(())
    }

    /// The factor $L$ (lower triangle; the strict upper triangle holds no meaning).
    ///
    /// # Errors
    /// The error of the last [`refactor`](Self::refactor) if it failed.
    pub fn l(&self) -> Result<MatRef<'_, f64>, CholeskyError> {
        self.state.map(|()| self.l.as_ref())
    }

    /// $b \leftarrow (LL^\top)^{-1} b$ in place (two triangular solves).
    ///
    /// # Errors
    /// The error of the last [`refactor`](Self::refactor) if it failed;
    /// `DimensionMismatch` if $b$ does not have length $n$; `NonFiniteSolution` if the
    /// result is not finite (then $b$ holds it anyway).
    pub fn solve_in_place(&self, b: &mut [f64]) -> Result<(), CholeskyError> {
        self.state?;
        let n = self.dim();
        if b.len() != n {
            return Err(CholeskyError::DimensionMismatch {
                what: "right-hand side",
                expected: n,
                found: b.len(),
            });
        }
        self.solve_mat_in_place(MatMut::from_column_major_slice_mut(b, n, 1));
        if b.iter().all(|v| v.is_finite()) {
            Ok(())
        } else {
            Err(CholeskyError::NonFiniteSolution)
        }
    }

    fn solve_mat_in_place(&self, rhs: MatMut<'_, f64>) {
        llt::solve::solve_in_place(
            self.l.as_ref(),
            rhs,
            faer::get_global_parallelism(),
            // The triangular solves need no work space.
            MemStack::new(&mut []),
        );
    }

    /// $x = (LL^\top)^{-1} b$.
    ///
    /// # Errors
    /// As [`solve_in_place`](Self::solve_in_place).
    pub fn solve(&self, b: &[f64]) -> Result<Vec<f64>, CholeskyError> {
        let mut x = b.to_vec();
        self.solve_in_place(&mut x)?;
        Ok(x)
    }

    /// $G^{-1} = (LL^\top)^{-1}$ into `out` ($n\times n$, both triangles written), by
    /// solving for the columns of the identity.
    ///
    /// # Errors
    /// The error of the last [`refactor`](Self::refactor) if it failed;
    /// `DimensionMismatch` if `out` is not $n\times n$; `NonFiniteSolution` if an entry is
    /// not finite.
    pub fn inverse_into(&self, mut out: MatMut<'_, f64>) -> Result<(), CholeskyError> {
        self.state?;
        let n = self.dim();
        for (what, found) in [
            ("inverse rows", out.nrows()),
            ("inverse columns", out.ncols()),
        ] {
            if found != n {
                return Err(CholeskyError::DimensionMismatch {
                    what,
                    expected: n,
                    found,
                });
            }
        }
        for j in 0..n {
            for i in 0..n {
                out[(i, j)] = if i == j { 1.0 } else { 0.0 };
            }
        }
        self.solve_mat_in_place(out.as_mut());
        for j in 0..n {
            for i in 0..n {
                if !out[(i, j)].is_finite() {
                    return Err(CholeskyError::NonFiniteSolution);
                }
            }
        }
        Ok(())
    }

    /// $G^{-1}$ as a new matrix.
    ///
    /// # Errors
    /// As [`inverse_into`](Self::inverse_into).
    pub fn inverse(&self) -> Result<Mat<f64>, CholeskyError> {
        let mut out = Mat::zeros(self.dim(), self.dim());
        self.inverse_into(out.as_mut())?;
        Ok(out)
    }
}

/// Factors a symmetric positive definite $G$ (lower triangle read) as $G = LL^\top$
/// under the relative pivot rule of the [module documentation](self).
///
/// # Errors
/// `NotPositiveDefinite { pivot }` at the first pivot $j$ with
/// $\neg(L_{jj}^2 > $ [`PIVOT_TOL`] $\max_i G_{ii})$ (non-positive, NaN or relatively tiny);
/// `DimensionMismatch` if $G$ is not square.
pub fn cholesky_factor(g: MatRef<'_, f64>) -> Result<Cholesky, CholeskyError> {
    if g.nrows() != g.ncols() {
        return Err(CholeskyError::DimensionMismatch {
            what: "matrix columns",
            expected: g.nrows(),
            found: g.ncols(),
        });
    }
    Cholesky::factor(g)
}

/// Solves $G x = b$ for symmetric positive definite $G$ (lower triangle read):
/// [`cholesky_factor`] then $x = L^{-\top}L^{-1}b$.
///
/// # Errors
/// Those of [`cholesky_factor`]; `DimensionMismatch` if $b$ has the wrong length;
/// `NonFiniteSolution` if $x$ is not finite.
pub fn cholesky_solve(g: MatRef<'_, f64>, b: &[f64]) -> Result<Vec<f64>, CholeskyError> {
    cholesky_factor(g)?.solve(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A random SPD matrix $A^\top A + I$ and the matrix $A$.
    fn random_spd(n: usize, rng: &mut ChaCha8Rng) -> Mat<f64> {
        let a = Mat::from_fn(n + 3, n, |_, _| rng.random_range(-1.0..1.0));
        let mut g = a.transpose() * &a;
        for i in 0..n {
            g[(i, i)] += 0.1;
        }
        g
    }

    fn residual(g: &Mat<f64>, x: &[f64], b: &[f64]) -> f64 {
        let n = b.len();
        (0..n)
            .map(|i| {
                let gx: f64 = (0..n).map(|j| g[(i, j)] * x[j]).sum();
                (gx - b[i]).powi(2)
            })
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn random_spd_systems_solve_to_small_residual() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for n in [1, 2, 5, 17, 40] {
            let g = random_spd(n, &mut rng);
            let b: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let x = cholesky_solve(g.as_ref(), &b).unwrap();
            let bn = b.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(residual(&g, &x, &b) < 1e-10 * (1.0 + bn), "n = {n}");
            // The upper triangle is never read: garbage there changes nothing.
            let mut junk = g.clone();
            for j in 0..n {
                for i in 0..j {
                    junk[(i, j)] = f64::NAN;
                }
            }
            assert_eq!(cholesky_solve(junk.as_ref(), &b).unwrap(), x);
        }
    }

    #[test]
    fn factor_reproduces_the_matrix_and_inverse_is_an_inverse() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let n = 9;
        let g = random_spd(n, &mut rng);
        let c = cholesky_factor(g.as_ref()).unwrap();
        let l = c.l().unwrap();
        for i in 0..n {
            for j in 0..=i {
                let llt: f64 = (0..=j).map(|k| l[(i, k)] * l[(j, k)]).sum();
                assert!((llt - g[(i, j)]).abs() < 1e-12 * g[(i, i)].max(1.0));
            }
        }
        let inv = c.inverse().unwrap();
        let prod = &g * &inv;
        for i in 0..n {
            for j in 0..n {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((prod[(i, j)] - want).abs() < 1e-9, "({i}, {j})");
            }
        }
    }

    #[test]
    fn exactly_singular_gram_fails_at_the_dependent_column() {
        // Columns x0, x1, x0 + x1, x3: the Gram matrix is singular at pivot 2 (round-off
        // leaves a tiny positive pivot there, which the relative rule rejects).
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let m = 30;
        let x = Mat::from_fn(m, 4, |_, _| rng.random_range(-1.0..1.0));
        let x = Mat::from_fn(m, 4, |i, j| {
            if j == 2 {
                x[(i, 0)] + x[(i, 1)]
            } else {
                x[(i, j)]
            }
        });
        let g = x.transpose() * &x;
        for scale in [1.0, 1e-8, 1e12] {
            let gs = Mat::from_fn(4, 4, |i, j| scale * g[(i, j)]);
            assert_eq!(
                cholesky_factor(gs.as_ref()).unwrap_err(),
                CholeskyError::NotPositiveDefinite { pivot: 2 },
                "scale {scale}"
            );
        }
    }

    #[test]
    fn relative_not_absolute_pivot_rule() {
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        let n = 6;
        let g = random_spd(n, &mut rng);
        let b: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let x = cholesky_solve(g.as_ref(), &b).unwrap();
        for scale in [1e12, 1e-12] {
            let gs = Mat::from_fn(n, n, |i, j| scale * g[(i, j)]);
            let xs = cholesky_solve(gs.as_ref(), &b).unwrap();
            for (a, c) in x.iter().zip(&xs) {
                assert!((a - c * scale).abs() < 1e-9 * (1.0 + a.abs()));
            }
        }
        // A pivot of relative size 1e-14 is rejected; 1e-12 is accepted.
        for (tiny, ok) in [(1e-14, false), (1e-12, true)] {
            let d = Mat::from_fn(3, 3, |i, j| match (i, j) {
                (0, 0) => 1e6,
                (1, 1) => 1.0,
                (2, 2) => 1e6 * tiny,
                _ => 0.0,
            });
            assert_eq!(cholesky_factor(d.as_ref()).is_ok(), ok, "{tiny}");
        }
    }

    #[test]
    fn bad_entries_and_shapes_are_typed_errors() {
        let mut g = Mat::from_fn(3, 3, |i, j| if i == j { 2.0 } else { 0.5 });
        g[(2, 1)] = f64::NAN;
        assert_eq!(
            cholesky_factor(g.as_ref()).unwrap_err(),
            CholeskyError::NotPositiveDefinite { pivot: 2 }
        );
        let mut g = Mat::from_fn(3, 3, |i, j| if i == j { 2.0 } else { 0.5 });
        g[(1, 1)] = f64::NAN;
        assert_eq!(
            cholesky_factor(g.as_ref()).unwrap_err().pivot(),
            Some(1),
            "NaN diagonal"
        );
        let neg = Mat::from_fn(2, 2, |i, j| if i == j { -1.0 } else { 0.0 });
        assert_eq!(
            cholesky_factor(neg.as_ref()).unwrap_err(),
            CholeskyError::NotPositiveDefinite { pivot: 0 }
        );
        let rect = Mat::<f64>::zeros(2, 3);
        assert!(matches!(
            cholesky_factor(rect.as_ref()),
            Err(CholeskyError::DimensionMismatch { .. })
        ));
        let eye = Mat::<f64>::identity(2, 2);
        assert!(matches!(
            cholesky_solve(eye.as_ref(), &[1.0]),
            Err(CholeskyError::DimensionMismatch { .. })
        ));
        assert_eq!(
            cholesky_solve(eye.as_ref(), &[1.0, f64::INFINITY]),
            Err(CholeskyError::NonFiniteSolution)
        );
        // A failed refactor leaves the factor unusable, with the same error.
        let mut c = Cholesky::factor(eye.as_ref()).unwrap();
        assert!(c.refactor(neg.as_ref()).is_err());
        assert_eq!(
            c.solve(&[1.0, 1.0]),
            Err(CholeskyError::NotPositiveDefinite { pivot: 0 })
        );
        c.refactor(eye.as_ref()).unwrap();
        assert_eq!(c.solve(&[1.0, 2.0]).unwrap(), vec![1.0, 2.0]);
        assert_eq!(
            CholeskyError::NotPositiveDefinite { pivot: 3 }.into_mirror("H"),
            MirrorError::NotPositiveDefinite {
                what: "H",
                pivot: 3
            }
        );
    }

    #[test]
    fn empty_matrix_is_fine() {
        let g = Mat::<f64>::zeros(0, 0);
        assert_eq!(cholesky_solve(g.as_ref(), &[]).unwrap(), Vec::<f64>::new());
    }
}
