//! Separation of a classifying expert's weighted data.
//!
//! A logistic or multinomial expert $k$ maximises
//! $Q_k(b) = \sum_i r_{ik}\log p(y_i \mid x_i, b)$ in its M-step. When a linear predictor
//! classifies every row that carries weight correctly (complete or quasi-complete
//! separation), $Q_k$ has no maximiser: $Q_k(t\,b) \uparrow 0$ as $t \to \infty$, the
//! coefficients grow without bound and the log-likelihood creeps towards its supremum by
//! ever smaller steps — which the outer relative-change test reads as convergence. The
//! fit is then reported as [`Termination::Separated`](crate::Termination::Separated)
//! instead: not converged, naming the expert.
//!
//! **Test.** At the final $\theta$, with responsibilities $r_{ik}$ and $W_k = \sum_i r_{ik}$,
//! the expert's mean negative log-likelihood
//! $$ \bar\ell_k = \frac{1}{W_k}\sum_i r_{ik}\,\big(-\log p(y_i \mid x_i, z = k)\big) $$
//! is at most [`SEPARATION_MEAN_NLL`] ($10^{-6}$: every weighted row predicted with
//! probability $\ge 1 - 10^{-6}\,W_k/r_{ik}$). A finite maximiser on non-separated data
//! leaves at least one weighted row on the wrong side of its class boundary, hence a
//! mean loss bounded away from 0; a loss this small means the predictor's scale, not
//! the data, is deciding the fit.

use crate::data::Dataset;
use crate::error::{MoeError, Result};
use crate::model::mixture::MixtureOfExperts;
use crate::model::EmModel;

/// The threshold on an expert's mean negative log-likelihood $\bar\ell_k$ below which its
/// weighted data count as separated (see the [module documentation](self)).
pub const SEPARATION_MEAN_NLL: f64 = 1e-6;

/// A classifying expert whose weighted data are separated at the final parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Separation {
    /// The expert (0-based).
    pub expert: usize,
    /// Its mean negative log-likelihood $\bar\ell_k$.
    pub mean_nll: f64,
}

/// The classifying experts ([`Expert::n_classes`](crate::Expert::n_classes) is `Some`)
/// of `model` whose weighted data are separated at `theta`, by [`SEPARATION_MEAN_NLL`];
/// empty for other experts and for experts without weight. The mean losses are sums over
/// rows in a fixed order (deterministic).
///
/// # Errors
/// As the model's E-step; `NonFinite` for an expert log-density that is not finite.
pub fn separated_experts(
    model: &MixtureOfExperts,
    data: &Dataset,
    theta: &[f64],
) -> Result<Vec<Separation>> {
    let expert = model.expert();
    if expert.n_classes().is_none() {
        return Ok(Vec::new());
    }
    let k = model.n_experts();
    let (stats, _) = model.e_step(data, theta)?;
    let fam = expert.family();
    let p = fam.dim();
    let (mut eta, mut t) = (vec![0.0; p], vec![0.0; p]);
    let (mut loss, mut weight) = (vec![0.0; k], vec![0.0; k]);
    for i in 0..data.n() {
        let (x, y) = (data.x(i), data.y(i));
        fam.sufficient_stats(y, &mut t);
        for c in 0..k {
            let r = stats.resp[i * k + c];
            if r == 0.0 {
                continue;
            }
            model.expert_natural(theta, c, x, &mut eta);
            let log_p = t.iter().zip(&eta).map(|(a, b)| a * b).sum::<f64>()
                - fam.log_partition(&eta)?
                + fam.log_base_measure(y);
            if !log_p.is_finite() {
                return Err(MoeError::NonFinite {
                    what: "expert log-density in the separation test",
                });
            }
            loss[c] -= r * log_p;
            weight[c] += r;
        }
    }
    Ok((0..k)
        .filter(|&c| weight[c] > 0.0)
        .map(|c| Separation {
            expert: c,
            mean_nll: loss[c] / weight[c],
        })
        .filter(|s| s.mean_nll <= SEPARATION_MEAN_NLL)
        .collect())
}
