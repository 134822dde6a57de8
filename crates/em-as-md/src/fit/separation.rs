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

/// The sums the separation test reads, per expert $k$: the weighted loss
/// $\sum_i r_{ik}(-\log p(y_i \mid x_i, z = k))$ and the weight $W_k = \sum_i r_{ik}$.
/// Sums over rows, so chunks of rows (a streamed fit's passes) add up
/// ([`merge`](Self::merge)) to the sums over all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct SeparationSums {
    /// $\sum_i r_{ik}(-\log p(y_i \mid x_i, z = k))$.
    pub loss: Vec<f64>,
    /// $W_k = \sum_i r_{ik}$.
    pub weight: Vec<f64>,
}

impl SeparationSums {
    /// Zero sums for `k` experts.
    pub fn new(k: usize) -> Self {
        SeparationSums {
            loss: vec![0.0; k],
            weight: vec![0.0; k],
        }
    }

    /// Adds the rows of `data`, whose responsibilities at `theta` are `resp` ($n\times K$
    /// row-major), in row order.
    ///
    /// # Errors
    /// `InvalidParam { name: "resp" }` for responsibilities of another shape; `NonFinite`
    /// for an expert log-density that is not finite.
    pub fn add_rows(
        &mut self,
        model: &MixtureOfExperts,
        data: &Dataset,
        theta: &[f64],
        resp: &[f64],
    ) -> Result<()> {
        let k = model.n_experts();
        if resp.len() != data.n() * k || self.loss.len() != k {
            return Err(MoeError::InvalidParam {
                name: "resp",
                reason: format!(
                    "expected {} responsibilities for {k} experts, found {}",
                    data.n() * k,
                    resp.len()
                ),
            });
        }
        let fam = model.expert().family();
        let p = fam.dim();
        let (mut eta, mut t) = (vec![0.0; p], vec![0.0; p]);
        for i in 0..data.n() {
            let (x, y) = (data.x(i), data.y(i));
            fam.sufficient_stats(y, &mut t);
            for c in 0..k {
                let r = resp[i * k + c];
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
                self.loss[c] -= r * log_p;
                self.weight[c] += r;
            }
        }
        Ok(())
    }

    /// `self ← self + other` (the sums of two sets of rows).
    pub fn merge(&mut self, other: &SeparationSums) {
        for (a, b) in self.loss.iter_mut().zip(&other.loss) {
            *a += b;
        }
        for (a, b) in self.weight.iter_mut().zip(&other.weight) {
            *a += b;
        }
    }

    /// The experts with weight whose mean loss $\bar\ell_k = \text{loss}_k / W_k$ is at
    /// most [`SEPARATION_MEAN_NLL`].
    pub fn separated(&self) -> Vec<Separation> {
        (0..self.loss.len())
            .filter(|&c| self.weight[c] > 0.0)
            .map(|c| Separation {
                expert: c,
                mean_nll: self.loss[c] / self.weight[c],
            })
            .filter(|s| s.mean_nll <= SEPARATION_MEAN_NLL)
            .collect()
    }
}

/// The classifying experts ([`Expert::n_classes`](crate::Expert::n_classes) is `Some`)
/// of `model` whose weighted data are separated at `theta`, by [`SEPARATION_MEAN_NLL`]
/// ([`SeparationSums`] over every row); empty for other experts and for experts without
/// weight. The mean losses are sums over rows in a fixed order (deterministic).
///
/// # Errors
/// As the model's E-step; `NonFinite` for an expert log-density that is not finite.
pub fn separated_experts(
    model: &MixtureOfExperts,
    data: &Dataset,
    theta: &[f64],
) -> Result<Vec<Separation>> {
    if model.expert().n_classes().is_none() {
        return Ok(Vec::new());
    }
    let (stats, _) = model.e_step(data, theta)?;
    let mut sums = SeparationSums::new(model.n_experts());
    sums.add_rows(model, data, theta, &stats.resp)?;
    Ok(sums.separated())
}
