//! The Poisson expert ([`Poisson`]): counts with the canonical (log) link.

use super::{check_ridge, with_ridge_name, Expert, ExpertSpec};
use crate::error::{MoeError, Result};
use mirror::batch_exp::exp_in_place;
use mirror::ExponentialFamily;
use statrs::function::factorial::ln_factorial;

/// Poisson regression with log link: $y \mid x, z = k \sim \text{Poisson}(e^{b^\top x})$
/// ($\nabla A = \nabla^2 A = e^\eta$).
///
/// With a ridge $\lambda > 0$ ([`Poisson::with_ridge`]) the M-step maximises
/// $Q - \frac\lambda2\|b\|^2$ ([`Expert::penalty`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Poisson {
    family: mirror::Poisson,
    ridge: f64,
}

impl Poisson {
    /// The expert.
    pub fn new() -> Self {
        Poisson {
            family: mirror::Poisson::new(),
            ridge: 0.0,
        }
    }
    /// With ridge $\lambda \ge 0$ on its coefficients (see [`Expert::ridge`]).
    ///
    /// # Errors
    /// `InvalidParam { name: "ridge" }` unless $\lambda$ is finite and $\ge 0$.
    pub fn with_ridge(ridge: f64) -> Result<Self> {
        Ok(Poisson {
            ridge: check_ridge(ridge)?,
            ..Poisson::new()
        })
    }
}

impl Expert for Poisson {
    fn name(&self) -> String {
        with_ridge_name("Poisson", self.ridge)
    }
    fn ridge(&self) -> f64 {
        self.ridge
    }
    fn family(&self) -> &dyn ExponentialFamily {
        &self.family
    }
    fn n_regressed(&self) -> usize {
        1
    }
    /// $\mu = F = e^\eta$.
    fn moments(&self, eta: &[f64], mu: &mut [f64], fisher: &mut [f64]) -> Result<()> {
        let e = eta[0].exp();
        if !e.is_finite() {
            return Err(MoeError::NonFinite {
                what: "Poisson rate",
            });
        }
        mu[0] = e;
        fisher[0] = e;
        Ok(())
    }
    /// $y\eta - e^\eta - \log y!$, the rates of the block taken at once
    /// ([`exp_in_place`]); NaN for a row whose rate leaves the natural domain
    /// ($e^\eta > $ [`mirror::Poisson::MAX_RATE`], or $\eta$ NaN), where the family's
    /// row-by-row form refuses it.
    fn add_log_densities(&self, y: &[f64], eta: &[f64], out: &mut [f64], work: &mut [f64]) -> bool {
        let m = eta.len();
        let rate = &mut work[..m];
        rate.copy_from_slice(eta);
        exp_in_place(rate);
        for (o, ((yi, h), e)) in out.iter_mut().zip(y.iter().zip(eta).zip(rate.iter())) {
            *o += if *e <= mirror::Poisson::MAX_RATE {
                // (Targets are checked counts, so the cast is exact.)
                yi * h - e - ln_factorial(*yi as u64)
            } else {
                f64::NAN
            };
        }
        true
    }
    fn spec(&self) -> Option<ExpertSpec> {
        Some(ExpertSpec::new("poisson").ridge(self.ridge))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The batched log densities against the family's own $\log p_F(y;\eta)$, one row at
    /// a time: rates from $e^{-30}$ to the domain's edge, counts from 0 past the factorial
    /// table (170); a rate outside the domain or a NaN $\eta$ gives a non-finite value,
    /// where the family refuses the row.
    #[test]
    fn batched_log_densities_are_the_familys() {
        let e = Poisson::new();
        let fam = e.family();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let m = 1000;
        let eta: Vec<f64> = (0..m)
            .map(|l| match l % 3 {
                0 => rng.random_range(-3.0..5.0),
                1 => rng.random_range(-30.0..44.0),
                _ => 0.0,
            })
            .collect();
        let y: Vec<f64> = (0..m)
            .map(|l| {
                f64::from(if l % 5 == 0 {
                    rng.random_range(150..400)
                } else {
                    rng.random_range(0..40)
                })
            })
            .collect();
        let start: Vec<f64> = (0..m).map(|_| rng.random_range(-3.0..3.0)).collect();
        let mut out = start.clone();
        let mut work = vec![f64::NAN; m];
        assert!(e.add_log_densities(&y, &eta, &mut out, &mut work));
        for l in 0..m {
            let direct = start[l] + fam.log_density(&[eta[l]], &[y[l]]).unwrap();
            // The rate e^η carries η's magnitude as relative error into yη − e^η.
            let scale = direct
                .abs()
                .max((y[l] * eta[l]).abs())
                .max(eta[l].exp())
                .max(1.0);
            assert!(
                (out[l] - direct).abs() <= 8.0 * f64::EPSILON * scale,
                "row {l}: eta {} y {}: {} vs {direct}",
                eta[l],
                y[l],
                out[l]
            );
        }
        let edge = mirror::Poisson::MAX_RATE.ln();
        let mut bad = vec![0.0; 4];
        e.add_log_densities(
            &[1.0, 0.0, 2.0, 3.0],
            &[f64::NAN, edge + 1e-9 * edge, f64::INFINITY, edge - 1.0],
            &mut bad,
            &mut work,
        );
        assert!(bad[..3].iter().all(|v| !v.is_finite()), "{bad:?}");
        assert!(bad[3].is_finite());
        assert!(fam.log_density(&[edge + 1e-9 * edge], &[0.0]).is_err());
    }
}
