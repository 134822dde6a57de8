//! Complete, missing and observed information in $\theta$, and the missing-information
//! fraction $M(\theta) = I_c(\theta)^{-1} I_m(\theta)$.
//!
//! With $J_i = \partial\varphi_i/\partial\theta$, $v_i = \nabla A(\varphi_i) - \mathbb E_{z\mid y_i}[T(y_i, z)]$:
//! $$ I_c(\theta) = \frac1n\sum_i J_i^\top\,\nabla^2 A(\varphi_i)\,J_i, \qquad
//!    I_m(\theta) = \frac1n\sum_i J_i^\top\,\mathrm{Cov}_{z\mid y_i;\varphi_i}\big[T(y_i, z)\big]\,J_i, $$
//! $$ C(\theta) = \frac1n\sum_i\sum_j (v_i)_j\,\nabla^2_\theta\varphi_{ij}(\theta). $$
//!
//! * $I_c$ is the Fisher information of the complete-data law in the geometry of
//!   $\mathcal A$: $D_{\mathcal A}(\Phi(\theta+\delta), \Phi(\theta)) = \tfrac12\delta^\top I_c\delta + O(\delta^3)$.
//! * $I_m$ is Louis' missing information: the posterior covariance of the complete-data
//!   score $J_i^\top(T(y_i,z) - \nabla A(\varphi_i))$, i.e. the Fisher information about
//!   $\theta$ carried by $z$ given $(x_i, y_i)$.
//! * $C$ is the extra curvature of a **non-linear** realisation (zero when $\varphi_i$ is
//!   linear in $\theta$). The expected complete-data Hessian of Dempster–Laird–Rubin is
//!   $I_c + C$, the Hessian of $L$ is the observed information
//!   $$ \nabla^2 L(\theta) = I_{\text{obs}}(\theta) = I_c + C - I_m \quad\text{(Louis)}, $$
//!   and differentiating the M-step's stationarity condition
//!   $\frac1n\sum_i J_i(\theta^+)^\top(\nabla A(\varphi_i(\theta^+)) - \mathbb E_{\theta}\[T\]) = 0$ at a fixed
//!   point gives the EM-map Jacobian
//!   $$ DM(\theta^\star) = \big(I_c + C\big)^{-1} I_m . $$
//!   For linear realisations (SymMoLinE, SymMoLogE, natural-parameter mixtures) this is
//!   the classical $DM = I_c^{-1} I_m$.
//! * The local limit of the Bregman ratio in $\Phi$ is $1 - \frac{\delta^\top I_m\delta}{\delta^\top I_c\delta}$
//!   for **every** realisation (the realisation's curvature enters $D_\ell$ and $D_{\mathcal A}$ only at
//!   third order), so $1 - \lambda_{\max}(I_c^{-1}I_m)$ is the missing-information estimate
//!   of the relative strong convexity modulus, while $\lambda_{\max}((I_c+C)^{-1}I_m)$ is the
//!   prediction of EM's local rate. Both are reported; they coincide when $C = 0$.
//!
//! $C$ is taken from the model when it offers it in closed form
//! ([`ConditionalFamily::curvature_sums`]; the mixture of experts:
//! $C = -\frac1n\sum_i\sum_k(\rho_k - r_k)\,E_k^\top\nabla^2A_F(\eta_k)E_k$, exact up to
//! round-off), and otherwise computed by central differences of
//! $\theta' \mapsto \frac1n\sum_i J_i(\theta')^\top v_i$ with $v_i$ frozen at $\theta$
//! ([`curvature_term`]; the trait gives vector–Jacobian products, not second derivatives;
//! truncation error of order $10^{-10}$ relative); it is skipped when the model reports a
//! linear realisation.
//!
//! **Non-identifiable directions.** A direction $\delta$ with $J_i\delta = 0$ for every row
//! does not move any $\varphi_i$ and is invisible to the likelihood; then $I_c$ is
//! singular. [`generalized_eigen`] first tries a Cholesky factor of the right-hand matrix
//! and otherwise falls back to its eigen-decomposition, projecting out the directions
//! whose eigenvalue is below a relative tolerance, and reports how many it dropped.

use crate::error::{DiagnosticsError, Result};
use em_as_md::solve::observed::{self, observed};
use em_as_md::{ConditionalFamily, Problem};
use faer::{Mat, MatRef, Par, Side};

/// $I_c$, $I_m$ and the realisation-curvature term $C$ at one $\theta$ (see the module doc).
#[derive(Debug, Clone)]
pub struct InformationMatrices {
    /// $I_c(\theta) = \frac1n\sum_i J_i^\top\nabla^2A(\varphi_i)J_i$.
    pub complete: Mat<f64>,
    /// $I_m(\theta) = \frac1n\sum_i J_i^\top\mathrm{Cov}_{\text{post}}\[T\]J_i$.
    pub missing: Mat<f64>,
    /// $C(\theta)$ (zero matrix for linear realisations or when not requested).
    pub curvature: Mat<f64>,
    /// Whether `curvature` was computed (false: linear realisation or not requested).
    pub curvature_computed: bool,
}

impl InformationMatrices {
    /// The observed information $I_{\text{obs}} = I_c + C - I_m = \nabla^2 L(\theta)$.
    pub fn observed(&self) -> Mat<f64> {
        let p = self.complete.nrows();
        Mat::from_fn(p, p, |i, j| {
            self.complete[(i, j)] + self.curvature[(i, j)] - self.missing[(i, j)]
        })
    }

    /// The expected complete-data Hessian $I_c + C$ (the matrix EM's M-step inverts).
    pub fn complete_hessian(&self) -> Mat<f64> {
        let p = self.complete.nrows();
        Mat::from_fn(p, p, |i, j| self.complete[(i, j)] + self.curvature[(i, j)])
    }
}

/// Computes $I_c$, $I_m$ and (when `with_curvature` and the realisation is not linear)
/// $C$ at `theta`, by [`em_as_md::solve::observed::observed`]: the model's one-pass sums
/// ([`ConditionalFamily::observed_sums`], e.g. the mixture of experts as weighted Gram
/// products with closed-form row weights) when it offers them, otherwise one generic
/// per-row pass ([`em_as_md::solve::observed::information_rows`]: stacked block products
/// of the model's $J_i^\top$ and $\nabla^2A(\varphi_i)$) and $C$ from the model's closed
/// form ([`ConditionalFamily::curvature_sums`]) or [`curvature_term`]'s central
/// differences (the two differ by the latter's truncation error, of order $10^{-10}$
/// relative).
///
/// # Errors
/// `DimensionMismatch` for a wrong-length `theta`; `Model` if a row's natural parameter
/// is outside the domain or an entry is not finite.
pub fn information<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    theta: &[f64],
    with_curvature: bool,
) -> Result<InformationMatrices> {
    check_len(problem, theta)?;
    let o = observed(problem, theta, with_curvature)?;
    Ok(InformationMatrices {
        complete: o.complete,
        missing: o.missing,
        curvature: o.curvature,
        curvature_computed: o.curvature_computed,
    })
}

/// $C(\theta)$ by central differences ([`em_as_md::solve::observed::curvature_term`]).
///
/// # Errors
/// As [`information`].
pub fn curvature_term<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    theta: &[f64],
) -> Result<Mat<f64>> {
    check_len(problem, theta)?;
    Ok(observed::curvature_term(problem, theta)?)
}

fn check_len<M: ConditionalFamily + ?Sized>(problem: &Problem<'_, M>, theta: &[f64]) -> Result<()> {
    let np = problem.model.n_params();
    if theta.len() != np {
        return Err(DiagnosticsError::DimensionMismatch {
            what: "theta",
            expected: np,
            found: theta.len(),
        });
    }
    Ok(())
}

fn check_finite(m: MatRef<'_, f64>, what: &'static str) -> Result<()> {
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            if !m[(i, j)].is_finite() {
                return Err(DiagnosticsError::Linalg {
                    what,
                    reason: format!("entry ({i}, {j}) is not finite"),
                });
            }
        }
    }
    Ok(())
}

/// How the generalized eigenproblem was reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reduction {
    /// Cholesky $B = LL^\top$, symmetric eigen of $L^{-1}AL^{-\top}$.
    Cholesky,
    /// Eigen-decomposition of $B$ with near-null directions projected out.
    Projected,
}

/// Solution of the symmetric-definite generalized eigenproblem $A v = \lambda B v$.
#[derive(Debug, Clone)]
pub struct GeneralizedEigen {
    /// Eigenvalues in decreasing order.
    pub values: Vec<f64>,
    /// Matching eigenvectors (columns), $B$-normalised ($v^\top B v = 1$).
    pub vectors: Mat<f64>,
    /// Directions of $B$'s (near-)null space that were projected out.
    pub dropped: usize,
    /// The reduction used.
    pub reduction: Reduction,
}

impl GeneralizedEigen {
    /// The largest eigenvalue ($-\infty$ never occurs: an empty problem is an error).
    pub fn max(&self) -> f64 {
        self.values[0]
    }
    /// The eigenvector of the largest eigenvalue.
    pub fn top_vector(&self) -> Vec<f64> {
        (0..self.vectors.nrows())
            .map(|i| self.vectors[(i, 0)])
            .collect()
    }
}

/// Eigenvalues of $B^{-1}A$ for symmetric $A$ and symmetric positive (semi-)definite $B$:
/// $$ A v = \lambda B v, \qquad B = LL^\top,\quad L^{-1}AL^{-\top} y = \lambda y,\quad v = L^{-\top}y. $$
/// When the Cholesky factorisation fails or $B$'s pivots span more than `1/rel_tol`, $B$ is
/// eigen-decomposed, $B = U\Lambda U^\top$, directions with $\lambda_j \le$ `rel_tol`$\cdot\lambda_{\max}$
/// are dropped and the problem is solved in the basis $W = U_r\Lambda_r^{-1/2}$.
///
/// # Errors
/// `DimensionMismatch` for non-square or mismatched inputs, `Linalg` when $B$ has no
/// positive direction or an eigen-solver fails.
pub fn generalized_eigen(
    a: MatRef<'_, f64>,
    b: MatRef<'_, f64>,
    rel_tol: f64,
) -> Result<GeneralizedEigen> {
    let p = a.nrows();
    if a.ncols() != p || b.nrows() != p || b.ncols() != p || p == 0 {
        return Err(DiagnosticsError::DimensionMismatch {
            what: "generalized eigenproblem",
            expected: p,
            found: b.nrows(),
        });
    }
    check_finite(a, "generalized eigenproblem (A)")?;
    check_finite(b, "generalized eigenproblem (B)")?;
    if let Ok(llt) = b.llt(Side::Lower) {
        let l = llt.L();
        let diag: Vec<f64> = (0..p).map(|i| l[(i, i)] * l[(i, i)]).collect();
        let (mn, mx) = diag
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
        if mn > rel_tol * mx {
            // S = L⁻¹ A L⁻ᵀ.
            let mut x = a.to_owned();
            faer::linalg::triangular_solve::solve_lower_triangular_in_place(
                l,
                x.as_mut(),
                Par::Seq,
            );
            let mut s = x.transpose().to_owned();
            faer::linalg::triangular_solve::solve_lower_triangular_in_place(
                l,
                s.as_mut(),
                Par::Seq,
            );
            let s = Mat::from_fn(p, p, |i, j| 0.5 * (s[(i, j)] + s[(j, i)]));
            let eig = s
                .self_adjoint_eigen(Side::Lower)
                .map_err(|e| DiagnosticsError::Linalg {
                    what: "symmetric eigen-solver",
                    reason: format!("{e:?}"),
                })?;
            let mut y = Mat::zeros(p, p);
            let vals = eig.S().column_vector();
            let u = eig.U();
            // Decreasing order.
            let mut values = Vec::with_capacity(p);
            for (c, src) in (0..p).rev().enumerate() {
                values.push(vals[src]);
                for r in 0..p {
                    y[(r, c)] = u[(r, src)];
                }
            }
            faer::linalg::triangular_solve::solve_upper_triangular_in_place(
                l.transpose(),
                y.as_mut(),
                Par::Seq,
            );
            return Ok(GeneralizedEigen {
                values,
                vectors: y,
                dropped: 0,
                reduction: Reduction::Cholesky,
            });
        }
    }
    let bs = Mat::from_fn(p, p, |i, j| 0.5 * (b[(i, j)] + b[(j, i)]));
    let eb = bs
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| DiagnosticsError::Linalg {
            what: "symmetric eigen-solver",
            reason: format!("{e:?}"),
        })?;
    let lam = eb.S().column_vector();
    let lmax = (0..p).map(|i| lam[i]).fold(0.0f64, f64::max);
    if lmax <= 0.0 {
        return Err(DiagnosticsError::Linalg {
            what: "generalized eigenproblem",
            reason: "the right-hand matrix has no positive direction".into(),
        });
    }
    let keep: Vec<usize> = (0..p).filter(|&i| lam[i] > rel_tol * lmax).collect();
    let r = keep.len();
    let w = Mat::from_fn(p, r, |i, c| eb.U()[(i, keep[c])] / lam[keep[c]].sqrt());
    let s = w.transpose() * a * &w;
    let s = Mat::from_fn(r, r, |i, j| 0.5 * (s[(i, j)] + s[(j, i)]));
    let es = s
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| DiagnosticsError::Linalg {
            what: "symmetric eigen-solver",
            reason: format!("{e:?}"),
        })?;
    let vals = es.S().column_vector();
    let mut values = Vec::with_capacity(r);
    let mut yv = Mat::zeros(r, r);
    for (c, src) in (0..r).rev().enumerate() {
        values.push(vals[src]);
        for row in 0..r {
            yv[(row, c)] = es.U()[(row, src)];
        }
    }
    let vectors = &w * &yv;
    Ok(GeneralizedEigen {
        values,
        vectors,
        dropped: p - r,
        reduction: Reduction::Projected,
    })
}

/// Relative tolerance below which a direction of $I_c$ counts as non-identifiable.
pub const IDENTIFIABILITY_TOL: f64 = 1e-10;

/// The missing-information fraction's spectrum, $\lambda(I_c^{-1}I_m)$, largest first:
/// $1 - \lambda_{\max}$ is the local relative-strong-convexity modulus in $\Phi$.
///
/// # Errors
/// As [`generalized_eigen`].
pub fn missing_fraction(info: &InformationMatrices) -> Result<GeneralizedEigen> {
    generalized_eigen(
        info.missing.as_ref(),
        info.complete.as_ref(),
        IDENTIFIABILITY_TOL,
    )
}

/// The Louis prediction of EM's local rate, $\lambda_{\max}\big((I_c + C)^{-1} I_m\big)$
/// (equal to [`missing_fraction`]'s when the realisation is linear).
///
/// # Errors
/// As [`generalized_eigen`]; `Linalg` when $I_c + C$ is not positive definite on the
/// identifiable directions (not a local maximum of the M-step).
pub fn louis_em_rate(info: &InformationMatrices) -> Result<f64> {
    let h = info.complete_hessian();
    let ge = generalized_eigen(info.missing.as_ref(), h.as_ref(), IDENTIFIABILITY_TOL)?;
    Ok(ge.max())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use mirror::ExponentialFamily;
    use proptest::prelude::*;

    fn fd_hessian_of_l<M: ConditionalFamily>(p: &Problem<'_, M>, th: &[f64]) -> Mat<f64> {
        let np = th.len();
        let mut h = Mat::zeros(np, np);
        let mut t = th.to_vec();
        let (mut gp, mut gm) = (vec![0.0; np], vec![0.0; np]);
        for k in 0..np {
            let e = 1e-5;
            t[k] = th[k] + e;
            p.objective_and_gradient(&t, &mut gp).unwrap();
            t[k] = th[k] - e;
            p.objective_and_gradient(&t, &mut gm).unwrap();
            t[k] = th[k];
            for r in 0..np {
                h[(r, k)] = (gp[r] - gm[r]) / (2.0 * e);
            }
        }
        h
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, rng_seed: proptest::test_runner::RngSeed::Fixed(1001), failure_persistence: None, ..ProptestConfig::default() })]
        /// Louis: I_c + C − I_m equals the finite-difference Hessian of L, at arbitrary θ
        /// (where C ≠ 0 for the curved realisation).
        #[test]
        fn observed_information_is_hessian_of_l(
            seed in 0u64..500, curved in any::<bool>(),
            pi in 0.2f64..0.8, m0 in -2.0f64..0.0, m1 in 0.0f64..2.0,
        ) {
            let data = gmm_data(200, 0.5, -1.0, 1.0, seed);
            let th = gmm_theta(curved, pi, m0, m1);
            let (obs, hess, cc) = if curved {
                let p = Problem::new(&GmmCurved, &data).unwrap();
                let info = information(&p, &th, true).unwrap();
                (info.observed(), fd_hessian_of_l(&p, &th), info.curvature_computed)
            } else {
                let p = Problem::new(&GmmNatural, &data).unwrap();
                let info = information(&p, &th, true).unwrap();
                (info.observed(), fd_hessian_of_l(&p, &th), info.curvature_computed)
            };
            prop_assert_eq!(cc, curved);
            for i in 0..3 {
                for j in 0..3 {
                    prop_assert!((obs[(i, j)] - hess[(i, j)]).abs() < 1e-5 * (1.0 + hess[(i, j)].abs()),
                        "({i},{j}) {} vs {}", obs[(i, j)], hess[(i, j)]);
                }
            }
        }

        /// The generalized eigenvalues solve det(A − λB) = 0: check A v = λ B v and
        /// against eigenvalues of B⁻¹A from faer's general (non-symmetric) solver.
        #[test]
        fn generalized_eigen_matches_general_solver(seed in 0u64..1000) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let p = 4;
            let ga = Mat::from_fn(p, p, |_, _| rng.random::<f64>() - 0.5);
            let gb = Mat::from_fn(p, p, |_, _| rng.random::<f64>() - 0.5);
            let a = &ga * ga.transpose();
            let b = &gb * gb.transpose() + Mat::<f64>::identity(p, p) * 0.1;
            let ge = generalized_eigen(a.as_ref(), b.as_ref(), 1e-12).unwrap();
            prop_assert_eq!(ge.reduction, Reduction::Cholesky);
            let binv_a = b.llt(Side::Lower).unwrap();
            use faer::linalg::solvers::Solve;
            let m = binv_a.solve(&a);
            let mut ev: Vec<f64> = m.eigenvalues().unwrap().iter().map(|c| c.re).collect();
            ev.sort_by(|x, y| y.partial_cmp(x).unwrap());
            for (x, y) in ge.values.iter().zip(&ev) {
                prop_assert!((x - y).abs() < 1e-8 * (1.0 + y.abs()));
            }
            let v = ge.vectors.col(0).to_owned();
            let av = &a * &v;
            let bv = &b * &v;
            for i in 0..p {
                prop_assert!((av[i] - ge.values[0] * bv[i]).abs() < 1e-8 * (1.0 + av[i].abs()));
            }
        }
    }

    #[test]
    fn complete_information_is_hessian_of_log_partition_for_linear_realisation() {
        let data = gmm_data(100, 0.5, -1.0, 1.0, 2);
        let p = Problem::new(&GmmNatural, &data).unwrap();
        let th = [0.3, -0.7, 1.2];
        let info = information(&p, &th, true).unwrap();
        let a = |t: &[f64]| TwoGauss.log_partition(t).unwrap();
        let e = 1e-4;
        for i in 0..3 {
            for j in 0..3 {
                let mut t = th;
                let mut f = |di: f64, dj: f64| {
                    t = th;
                    t[i] += di;
                    t[j] += dj;
                    a(&t)
                };
                let h = (f(e, e) - f(e, -e) - f(-e, e) + f(-e, -e)) / (4.0 * e * e);
                assert!((info.complete[(i, j)] - h).abs() < 1e-5, "({i},{j})");
            }
        }
    }

    #[test]
    fn singular_right_hand_side_is_projected() {
        // B has a null direction e_2; A restricted to span(e_0, e_1).
        let b = Mat::from_fn(3, 3, |i, j| if i == j && i < 2 { 2.0 } else { 0.0 });
        let a = Mat::from_fn(
            3,
            3,
            |i, j| if i == j && i < 2 { 1.0 + i as f64 } else { 0.0 },
        );
        let ge = generalized_eigen(a.as_ref(), b.as_ref(), 1e-10).unwrap();
        assert_eq!(ge.reduction, Reduction::Projected);
        assert_eq!(ge.dropped, 1);
        assert!((ge.values[0] - 1.0).abs() < 1e-12 && (ge.values[1] - 0.5).abs() < 1e-12);
        let zero = Mat::<f64>::zeros(2, 2);
        assert!(matches!(
            generalized_eigen(zero.as_ref(), zero.as_ref(), 1e-10),
            Err(DiagnosticsError::Linalg { .. })
        ));
        let rect = Mat::<f64>::zeros(2, 3);
        assert!(matches!(
            generalized_eigen(rect.as_ref(), zero.as_ref(), 1e-10),
            Err(DiagnosticsError::DimensionMismatch { .. })
        ));
    }
}
