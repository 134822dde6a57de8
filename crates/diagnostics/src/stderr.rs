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
//!
//! **Relabelled components.** Standard errors come in the fit's labels. When a fit is
//! aligned to a reference (`em_as_md::fit::align`, [`FittedMoe::aligned_to`]) its
//! parameters change by the *linear* map $\theta' = P\theta$
//! ([`permutation_map`]: expert blocks move, gate vectors are re-referenced to the new last
//! component, i.e. become differences). [`StandardErrors::permuted`] moves the standard
//! errors with it: the covariance becomes $\Sigma' = P\Sigma P^\top$ (not a reordering of
//! the vector: a re-referenced gate coefficient $w'_k = W_{\sigma(k)} - W_{\sigma(K-1)}$
//! has variance $\operatorname{Var} W_{\sigma(k)} + \operatorname{Var} W_{\sigma(K-1)} -
//! 2\operatorname{Cov}$), and the information $I' = P^{-\top} I P^{-1}$ gives the
//! conditioning and identifiability in the new labels. The result equals the standard
//! errors computed from scratch at $P\hat\theta$ (tested).
//!
//! [`FittedMoe::aligned_to`]: em_as_md::FittedMoe::aligned_to
//! [`permutation_map`]: em_as_md::fit::align::permutation_map

use crate::error::{DiagnosticsError, Result};
use crate::information::{information, InformationMatrices};
use em_as_md::fit::align::{inverse_permutation, permutation_map, ParamLayout};
use em_as_md::{ConditionalFamily, Problem};
use faer::{Mat, Side};
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
    /// $\widehat{\mathrm{Cov}}(\hat\theta) = I_{\text{obs}}^{+}/n$ (the pseudo-inverse on the
    /// kept directions), row-major $p\times p$. Not serialised (empty after
    /// deserialisation).
    #[serde(skip)]
    pub covariance: Vec<f64>,
    /// $I_{\text{obs}}$, row-major $p\times p$, for [`StandardErrors::permuted`]. Not
    /// serialised (empty after deserialisation).
    #[serde(skip)]
    pub information: Vec<f64>,
    /// The `max_condition` the warnings were computed with.
    #[serde(skip)]
    pub max_condition: f64,
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
    standard_errors_from_observed(info.observed(), n, max_condition)
}

/// [`standard_errors`] from the observed information $I_{\text{obs}}$ itself.
///
/// # Errors
/// `InvalidConfig` for `max_condition` not finite and $> 1$; `DimensionMismatch` for a
/// non-square matrix; `Linalg` when the eigen-solver fails.
pub fn standard_errors_from_observed(
    obs: Mat<f64>,
    n: usize,
    max_condition: f64,
) -> Result<StandardErrors> {
    if !(max_condition.is_finite() && max_condition > 1.0) {
        return Err(crate::ratios::invalid("max_condition", "finite and > 1"));
    }
    let p = obs.nrows();
    if obs.ncols() != p {
        return Err(DiagnosticsError::DimensionMismatch {
            what: "observed information (columns)",
            expected: p,
            found: obs.ncols(),
        });
    }
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
    // Σ = U diag(1/λ on kept directions) Uᵀ / n.
    let nf = n as f64;
    let mut covariance = vec![0.0; p * p];
    for (k, &l) in lam.iter().enumerate() {
        if !kept[k] {
            continue;
        }
        for a in 0..p {
            let ua = u[(a, k)] / (l * nf);
            for b in 0..p {
                covariance[a * p + b] += ua * u[(b, k)];
            }
        }
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
            (leak <= 1e-8 && var.is_finite() && var > 0.0).then(|| (var / nf).sqrt())
        })
        .collect();
    let information = (0..p * p).map(|i| obs[(i / p, i % p)]).collect();
    Ok(StandardErrors {
        se,
        condition,
        eigenvalues: lam,
        n,
        warnings,
        covariance,
        information,
        max_condition,
    })
}

impl StandardErrors {
    /// The standard errors of the relabelled parameters $\theta' = P\theta$, with $P$ =
    /// [`permutation_map`]`(layout, perm)` (component $k$ of the result is component
    /// `perm[k]` of the fit, as `em_as_md::fit::align::permute_theta` and
    /// `FittedMoe::aligned_to`): $\mathrm{se}'_j = \sqrt{\Sigma'_{jj}}$ with
    /// $\Sigma' = P\Sigma P^\top$; eigenvalues, condition, warnings and which coordinates
    /// are identifiable from $I' = P^{-\top} I_{\text{obs}} P^{-1}$, exactly as
    /// [`standard_errors`] decides them (see the [module documentation](self)).
    ///
    /// # Errors
    /// `InvalidConfig { field: "covariance" }` when the matrices are absent (a value read
    /// back from JSON); `DimensionMismatch` when `layout` does not have $p$ parameters;
    /// `Model(InvalidParam { name: "perm" })` when `perm` is not a permutation of $0..K$;
    /// as [`standard_errors_from_observed`].
    pub fn permuted(&self, layout: &ParamLayout, perm: &[usize]) -> Result<StandardErrors> {
        let p = self.se.len();
        if self.covariance.len() != p * p || self.information.len() != p * p {
            return Err(crate::ratios::invalid(
                "covariance",
                "the covariance and information matrices (not serialised; recompute the standard errors)",
            ));
        }
        if layout.len() != p {
            return Err(DiagnosticsError::DimensionMismatch {
                what: "parameter layout",
                expected: p,
                found: layout.len(),
            });
        }
        let pm = permutation_map(layout, perm)?;
        let qm = permutation_map(layout, &inverse_permutation(perm)?)?;
        let info = Mat::from_fn(p, p, |a, b| self.information[a * p + b]);
        let cov = Mat::from_fn(p, p, |a, b| self.covariance[a * p + b]);
        // I' = Qᵀ I Q, symmetrised against round-off.
        let iq = &info * &qm;
        let ip = qm.transpose() * &iq;
        let ip = Mat::from_fn(p, p, |a, b| 0.5 * (ip[(a, b)] + ip[(b, a)]));
        let mut out = standard_errors_from_observed(ip, self.n, self.max_condition)?;
        // Σ' = P Σ Pᵀ gives the standard errors of the identifiable coordinates.
        let cp = &cov * pm.transpose();
        let sp = &pm * &cp;
        let mut covariance = vec![0.0; p * p];
        for a in 0..p {
            for b in 0..p {
                covariance[a * p + b] = 0.5 * (sp[(a, b)] + sp[(b, a)]);
            }
        }
        for (j, se) in out.se.iter_mut().enumerate() {
            let v = covariance[j * p + j];
            *se = se.and((v.is_finite() && v > 0.0).then(|| v.sqrt()));
        }
        out.covariance = covariance;
        Ok(out)
    }
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
