//! Standard errors from the observed information (Louis).
//!
//! Convention: $L$ is the **average** negative log-likelihood, so its Hessian at the fit
//! is the per-row observed information
//! $$ I_{\text{obs}}(\hat\theta) = \nabla^2 L(\hat\theta) = I_c + C - I_m $$
//! (see [`information`](crate::information)), and
//! $$ \widehat{\mathrm{Cov}}(\hat\theta) = \frac{1}{n}\,I_{\text{obs}}^{-1}, \qquad
//!    \mathrm{se}_j = \sqrt{[I_{\text{obs}}^{-1}]_{jj}/n}, $$
//! conditional on the features. Standard errors are for the flattened $\theta$ in the
//! model's own parametrisation (natural parameters for GLM experts; transform with the
//! delta method for other scales).
//!
//! **Near-singular information.** $I_{\text{obs}} = U\Lambda U^\top$ is eigen-decomposed;
//! its condition number $\lambda_{\max}/\lambda_{\min}$ is reported and a warning is raised
//! above `max_condition` or when an eigenvalue is $\le 0$ (not a local minimum). Directions
//! with $\lambda_j \le 10^{-10}\lambda_{\max}$ are treated as non-identifiable: the inverse is
//! the pseudo-inverse on the remaining directions, and a parameter with a component
//! (squared loading $> 10^{-8}$) along a dropped direction gets no standard error (`None`),
//! never a number. With a reference expert in the softmax gate (the layout used by
//! `em-as-md`) the gate is identifiable; what remains is the discrete label symmetry of
//! the experts, which does not make $I_{\text{obs}}$ singular at a separated fit.

use crate::error::{DiagnosticsError, Result};
use crate::information::{information, InformationMatrices};
use em_as_md::{ConditionalFamily, Problem};
use faer::Side;
use serde::{Deserialize, Serialize};

/// Why the standard errors deserve caution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InformationWarning {
    /// $\lambda_{\max}/\lambda_{\min}$ exceeds the configured bound.
    NearSingular {
        /// The condition number.
        condition: f64,
    },
    /// The observed information has a non-positive eigenvalue: the point is not a strict
    /// local minimum of $L$ (or the fit has not converged).
    NotPositiveDefinite {
        /// The smallest eigenvalue.
        min_eigenvalue: f64,
    },
    /// Directions were dropped as non-identifiable.
    NonIdentifiable {
        /// How many.
        directions: usize,
    },
}

/// Standard errors and the conditioning of the observed information.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandardErrors {
    /// $\mathrm{se}_j = \sqrt{[I_{\text{obs}}^{-1}]_{jj}/n}$; `None` for a non-identifiable coordinate.
    pub se: Vec<Option<f64>>,
    /// $\lambda_{\max}/\lambda_{\min}$ of $I_{\text{obs}}$ (`None` when $\lambda_{\min} \le 0$).
    pub condition: Option<f64>,
    /// Eigenvalues of $I_{\text{obs}}$, increasing.
    pub eigenvalues: Vec<f64>,
    /// Number of rows $n$.
    pub n: usize,
    /// Warnings (empty when the information is well conditioned).
    pub warnings: Vec<InformationWarning>,
}

/// Relative eigenvalue below which a direction of $I_{\text{obs}}$ is dropped.
pub const DROP_TOL: f64 = 1e-10;

/// Standard errors at `theta` (see the module doc); `max_condition` triggers the
/// near-singularity warning.
///
/// # Errors
/// `InvalidConfig` for `max_condition` not finite and $> 1$; errors of
/// [`information`]; `Linalg` when the eigen-solver fails.
pub fn standard_errors<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    theta: &[f64],
    max_condition: f64,
) -> Result<StandardErrors> {
    if !(max_condition.is_finite() && max_condition > 1.0) {
        return Err(crate::ratios::invalid("max_condition", "finite and > 1"));
    }
    let info = information(problem, theta, true)?;
    standard_errors_from_information(&info, problem.data.n(), max_condition)
}

/// [`standard_errors`] from information matrices already computed at the point (with
/// the curvature term, `information(problem, theta, true)`) for `n` rows: the same
/// numbers without a second pass over the data.
///
/// # Errors
/// `InvalidConfig` for `max_condition` not finite and $> 1$; `Linalg` when the
/// eigen-solver fails.
pub fn standard_errors_from_information(
    info: &InformationMatrices,
    n: usize,
    max_condition: f64,
) -> Result<StandardErrors> {
    if !(max_condition.is_finite() && max_condition > 1.0) {
        return Err(crate::ratios::invalid("max_condition", "finite and > 1"));
    }
    let obs = info.observed();
    let p = obs.nrows();
    let eig = obs
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| DiagnosticsError::Linalg {
            what: "observed information eigen-solver",
            reason: format!("{e:?}"),
        })?;
    let lam: Vec<f64> = (0..p).map(|i| eig.S().column_vector()[i]).collect();
    let u = eig.U();
    let lmax = lam.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lmin = lam.iter().cloned().fold(f64::INFINITY, f64::min);
    let mut warnings = Vec::new();
    let condition = (lmin > 0.0).then(|| lmax / lmin);
    if lmin <= 0.0 {
        warnings.push(InformationWarning::NotPositiveDefinite {
            min_eigenvalue: lmin,
        });
    }
    if let Some(c) = condition {
        if c > max_condition {
            warnings.push(InformationWarning::NearSingular { condition: c });
        }
    }
    let kept: Vec<bool> = lam
        .iter()
        .map(|&l| lmax > 0.0 && l > DROP_TOL * lmax)
        .collect();
    let dropped = kept.iter().filter(|k| !**k).count();
    if dropped > 0 {
        warnings.push(InformationWarning::NonIdentifiable {
            directions: dropped,
        });
    }
    let se = (0..p)
        .map(|j| {
            let mut var = 0.0;
            let mut leak = 0.0;
            for (k, &l) in lam.iter().enumerate() {
                let w = u[(j, k)] * u[(j, k)];
                if kept[k] {
                    var += w / l;
                } else {
                    leak += w;
                }
            }
            (leak <= 1e-8 && var.is_finite() && var > 0.0).then(|| (var / n as f64).sqrt())
        })
        .collect();
    Ok(StandardErrors {
        se,
        condition,
        eigenvalues: lam,
        n,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn well_conditioned_fit_has_no_warning_and_rejects_bad_bound() {
        let data = gmm_data(400, 0.4, -2.0, 2.0, 11);
        let p = Problem::new(&GmmNatural, &data).unwrap();
        let (traj, _) = run_gmm_em(
            &GmmNatural,
            &data,
            false,
            &gmm_theta(false, 0.5, -1.0, 1.0),
            200,
        );
        let s = standard_errors(&p, traj.last().unwrap(), 1e8).unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert!(s.se.iter().all(|v| v.is_some_and(|x| x > 0.0 && x < 1.0)));
        assert!(matches!(
            standard_errors(&p, traj.last().unwrap(), 0.5),
            Err(DiagnosticsError::InvalidConfig {
                field: "max_condition",
                ..
            })
        ));
    }

    #[test]
    fn degenerate_fit_warns() {
        // Both components at the same mean: the mixing weight is not identified there.
        let data = gmm_data(300, 0.5, 0.0, 0.0, 5);
        let p = Problem::new(&GmmCurved, &data).unwrap();
        let s = standard_errors(&p, &gmm_theta(true, 0.5, 0.0, 0.0), 1e8).unwrap();
        assert!(!s.warnings.is_empty());
    }
}
