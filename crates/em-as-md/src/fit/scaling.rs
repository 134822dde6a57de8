//! Standardisation of the feature columns as numerical preconditioning: `mdem fit` and
//! `mdem compare` fit on standardised columns by default (`--no-standardize` to turn it
//! off; decided in one place, the command line's `ModelArgs::standardise`), and the
//! paper reproduction (`mdem-experiments`) standardises its tabular data sets with the
//! training rows.
//!
//! **With an intercept** (design column 0 is the constant 1), every other column $j$
//! becomes $z_{ij} = (x_{ij} - m_j)/s_j$ with the column mean $m_j = \frac1n\sum_i x_{ij}$
//! and the population standard deviation $s_j = \big(\frac1n\sum_i (x_{ij} - m_j)^2\big)^{1/2}$.
//! **Without an intercept** centring would change the model, so columns are only scaled:
//! $m_j = 0$, $s_j = \big(\frac1n\sum_i x_{ij}^2\big)^{1/2}$. A column with $s_j = 0$ is
//! left as it is ($m_j = 0$, $s_j = 1$).
//!
//! Every natural parameter of the mixture that depends on $x$ is a linear predictor
//! $b^\top x$ (gate logits, the regressed components of every expert), and
//! $$ b_z^\top z = b_x^\top x \quad\text{for}\quad b_{x,j} = \frac{b_{z,j}}{s_j}\ (j \ge 1),\qquad
//!    b_{x,0} = b_{z,0} - \sum_{j\ge1}\frac{b_{z,j}\,m_j}{s_j} $$
//! ([`Scaling::to_original`]; [`Scaling::to_standardized`] is the inverse
//! $b_{z,j} = s_j b_{x,j}$, $b_{z,0} = b_{x,0} + \sum_j b_{x,j} m_j$). So the model on $z$
//! and the model on $x$ are the same family of laws, with the same likelihood at matching
//! parameters (tested): fitting on $z$ and mapping $\hat\theta$ back gives the maximum
//! likelihood fit on $x$, reported in the data's own units, while the Newton M-steps
//! (logistic, multinomial, Poisson experts, the gate) work on well-conditioned Hessians
//! (features on scales from $10^{-3}$ to $10^3$ make them numerically singular).

use crate::model::mixture::{Gating, MixtureOfExperts};
use crate::{ConditionalFamily, Dataset, MoeError};
use serde::{Deserialize, Serialize};

/// The centring and scaling of every design column (identity for the intercept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    /// $m_j$ per design column.
    pub mean: Vec<f64>,
    /// $s_j$ per design column.
    pub sd: Vec<f64>,
    /// Whether design column 0 is the intercept.
    pub intercept: bool,
}

impl Scaling {
    /// The scaling of `data`'s design columns (see the [module documentation](self)).
    pub fn fit(data: &Dataset, intercept: bool) -> Scaling {
        let (n, d) = (data.n(), data.d());
        // Two passes over the rows (means, then centred squares), each reading every row
        // once in storage order.
        let mut mean = vec![0.0; d];
        if intercept {
            for i in 0..n {
                for (m, v) in mean.iter_mut().zip(data.x(i)) {
                    *m += v;
                }
            }
            mean.iter_mut().for_each(|m| *m /= n as f64);
        }
        let mut var = vec![0.0; d];
        for i in 0..n {
            for ((s, v), m) in var.iter_mut().zip(data.x(i)).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        let var: Vec<f64> = var.iter().map(|s| s / n as f64).collect();
        Scaling::from_moments(&mean, &var, intercept)
    }

    /// The scaling from the design columns' means $\bar x_j$ and population variances
    /// $v_j$ (a streamed survey's merged moments, or [`Scaling::fit`]'s two passes): the
    /// rule of the [module documentation](self) — with an intercept $m_j = \bar x_j$,
    /// $s_j = \sqrt{v_j}$; without, $m_j = 0$, $s_j = \sqrt{v_j + \bar x_j^2}$ (the root
    /// mean square) — and a column whose $s_j$ is 0, not finite or below
    /// $10^{-12}|m_j|$ left as it is.
    pub fn from_moments(mean: &[f64], var: &[f64], intercept: bool) -> Scaling {
        let d = mean.len();
        let start = usize::from(intercept);
        // Without an intercept the scale is the root mean square: s² = var + mean².
        let second: Vec<f64> = if intercept {
            var.to_vec()
        } else {
            var.iter().zip(mean).map(|(v, m)| v + m * m).collect()
        };
        let mut mean: Vec<f64> = if intercept {
            mean.to_vec()
        } else {
            vec![0.0; d]
        };
        let mut sd = vec![1.0; d];
        for j in 0..d {
            let (m, s) = (mean[j], second[j].sqrt());
            if j >= start && s.is_finite() && s > 1e-12 * m.abs() && s > 0.0 {
                sd[j] = s;
            } else {
                mean[j] = 0.0;
            }
        }
        Scaling {
            mean,
            sd,
            intercept,
        }
    }

    /// $z_{ij} = (x_{ij} - m_j)/s_j$ for every row, keeping the targets and names.
    ///
    /// # Errors
    /// `InvalidData` when the column count differs from the scaling's.
    pub fn apply(&self, data: &Dataset) -> Result<Dataset, MoeError> {
        let mut z = data.clone();
        self.apply_in_place(&mut z)?;
        Ok(z)
    }

    /// [`apply`](Self::apply) on `data` itself, without a second copy of the features
    /// (what `mdem fit` does: the fit needs only the standardised columns).
    ///
    /// # Errors
    /// `InvalidData` when the column count differs from the scaling's.
    pub fn apply_in_place(&self, data: &mut Dataset) -> Result<(), MoeError> {
        self.check_width(data.d())?;
        let (mean, sd) = (&self.mean, &self.sd);
        data.map_rows(|x| {
            for ((v, m), s) in x.iter_mut().zip(mean).zip(sd) {
                *v = (*v - m) / s;
            }
        });
        Ok(())
    }

    fn check_width(&self, d: usize) -> Result<(), MoeError> {
        if d != self.mean.len() || d != self.sd.len() {
            return Err(MoeError::InvalidData {
                row: None,
                column: None,
                reason: format!("standardisation has {} columns, data {d}", self.mean.len()),
            });
        }
        Ok(())
    }

    /// One linear predictor's coefficients from the $z$ scale to the $x$ scale.
    fn coef_to_original(&self, b: &mut [f64]) {
        let start = usize::from(self.intercept);
        let mut shift = 0.0;
        for ((bj, s), m) in b.iter_mut().zip(&self.sd).zip(&self.mean).skip(start) {
            *bj /= s;
            shift += *bj * m;
        }
        if self.intercept {
            b[0] -= shift;
        }
    }

    /// One linear predictor's coefficients from the $x$ scale to the $z$ scale.
    fn coef_to_standardized(&self, b: &mut [f64]) {
        let start = usize::from(self.intercept);
        let mut shift = 0.0;
        for ((bj, s), m) in b.iter_mut().zip(&self.sd).zip(&self.mean).skip(start) {
            shift += *bj * m;
            *bj *= s;
        }
        if self.intercept {
            b[0] += shift;
        }
    }

    /// Applies `f` to every coefficient vector of $\theta$ that multiplies $x$: the
    /// softmax gate's $K-1$ vectors and each expert's regressed components.
    fn for_each_predictor(
        &self,
        model: &MixtureOfExperts,
        theta: &mut [f64],
        f: impl Fn(&Self, &mut [f64]),
    ) -> Result<(), MoeError> {
        let d = model.n_features();
        self.check_width(d)?;
        if theta.len() != model.n_params() {
            return Err(MoeError::InvalidParam {
                name: "theta",
                reason: format!(
                    "expected {} values, found {}",
                    model.n_params(),
                    theta.len()
                ),
            });
        }
        if model.gating() == Gating::Softmax {
            for b in theta[..model.gate_len()].chunks_mut(d) {
                f(self, b);
            }
        }
        let r = model.expert().n_regressed();
        for k in 0..model.n_experts() {
            let block = model.expert_block_mut(theta, k);
            for b in block[..r * d].chunks_mut(d) {
                f(self, b);
            }
        }
        Ok(())
    }

    /// $\theta$ fitted on the standardised design, expressed on the original one.
    ///
    /// # Errors
    /// `InvalidData`/`InvalidParam` on a size mismatch.
    pub fn to_original(
        &self,
        model: &MixtureOfExperts,
        theta_z: &[f64],
    ) -> Result<Vec<f64>, MoeError> {
        let mut t = theta_z.to_vec();
        self.for_each_predictor(model, &mut t, Self::coef_to_original)?;
        Ok(t)
    }

    /// The inverse of [`Self::to_original`].
    ///
    /// # Errors
    /// `InvalidData`/`InvalidParam` on a size mismatch.
    pub fn to_standardized(
        &self,
        model: &MixtureOfExperts,
        theta_x: &[f64],
    ) -> Result<Vec<f64>, MoeError> {
        let mut t = theta_x.to_vec();
        self.for_each_predictor(model, &mut t, Self::coef_to_standardized)?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::registry::build_expert;
    use crate::ExpertSpec;
    use crate::Problem;
    use rand::{Rng, SeedableRng};

    fn data(intercept: bool) -> Dataset {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 40;
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            x.extend([
                rng.random_range(0.0..1000.0),
                rng.random_range(-0.01..0.02),
                5.0,
            ]);
            y.push((i % 3) as f64);
        }
        let d = Dataset::from_rows(&x, 3, &y, 1).unwrap();
        if intercept {
            d.with_intercept()
        } else {
            d
        }
    }

    #[test]
    fn standardised_columns_have_mean_zero_and_unit_variance() {
        let data = data(true);
        let s = Scaling::fit(&data, true);
        let z = s.apply(&data).unwrap();
        for j in 1..3 {
            let col: Vec<f64> = (0..z.n()).map(|i| z.x(i)[j]).collect();
            let m = col.iter().sum::<f64>() / col.len() as f64;
            let v = col.iter().map(|c| (c - m) * (c - m)).sum::<f64>() / col.len() as f64;
            assert!(m.abs() < 1e-12 && (v - 1.0).abs() < 1e-12, "{j}: {m} {v}");
        }
        // The intercept and the constant column are untouched.
        assert!((0..z.n()).all(|i| z.x(i)[0] == 1.0 && z.x(i)[3] == 5.0));
        assert_eq!(z.feature_names(), data.feature_names());
        assert_eq!(z.y_all(), data.y_all());
        // Without an intercept: scaled, not centred (root mean square 1).
        let raw = self::data(false);
        let s = Scaling::fit(&raw, false);
        assert!(s.mean.iter().all(|m| *m == 0.0));
        let z = s.apply(&raw).unwrap();
        let rms = ((0..z.n()).map(|i| z.x(i)[0].powi(2)).sum::<f64>() / z.n() as f64).sqrt();
        assert!((rms - 1.0).abs() < 1e-12);
    }

    #[test]
    fn parameters_map_to_the_same_likelihood() {
        // L(θ_x; x) = L(θ_z; z) with θ_x = to_original(θ_z), for every expert type and
        // gating, with and without intercept; and the two maps are inverse.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for intercept in [true, false] {
            let raw = data(intercept);
            let s = Scaling::fit(&raw, intercept);
            let z = s.apply(&raw).unwrap();
            for kind in [
                ExpertSpec::new("linear"),
                ExpertSpec::new("logistic"),
                ExpertSpec::new("poisson"),
                ExpertSpec::new("multinomial").param("classes", 3.0),
            ] {
                for gating in [Gating::Softmax, Gating::Constant] {
                    let y = if kind.name == "logistic" {
                        raw.y_all().iter().map(|v| f64::from(*v > 0.5)).collect()
                    } else {
                        raw.y_all().to_vec()
                    };
                    let rows: Vec<f64> = (0..raw.n()).flat_map(|i| raw.x(i).to_vec()).collect();
                    let raw_k = Dataset::from_rows(&rows, raw.d(), &y, 1).unwrap();
                    let zrows: Vec<f64> = (0..z.n()).flat_map(|i| z.x(i).to_vec()).collect();
                    let z_k = Dataset::from_rows(&zrows, z.d(), &y, 1).unwrap();
                    let model =
                        MixtureOfExperts::new(build_expert(&kind).unwrap(), 2, raw.d(), gating)
                            .unwrap();
                    let theta_z = model.random_params(&mut rng, 0.3);
                    let theta_x = s.to_original(&model, &theta_z).unwrap();
                    let lz = Problem::new(&model, &z_k)
                        .unwrap()
                        .objective(&theta_z)
                        .unwrap();
                    let lx = Problem::new(&model, &raw_k)
                        .unwrap()
                        .objective(&theta_x)
                        .unwrap();
                    assert!(
                        (lz - lx).abs() < 1e-9 * lz.abs().max(1.0),
                        "{kind:?} {gating:?} {intercept}: {lz} {lx}"
                    );
                    let back = s.to_standardized(&model, &theta_x).unwrap();
                    for (a, b) in back.iter().zip(&theta_z) {
                        assert!((a - b).abs() < 1e-9 * b.abs().max(1.0));
                    }
                }
            }
        }
    }

    #[test]
    fn size_mismatches_are_typed_errors() {
        let data = Dataset::from_rows(&[1.0, 2.0], 1, &[0.0, 1.0], 1).unwrap();
        let s = Scaling {
            mean: vec![0.0; 2],
            sd: vec![1.0; 2],
            intercept: false,
        };
        assert!(matches!(s.apply(&data), Err(MoeError::InvalidData { .. })));
        let model = MixtureOfExperts::new(
            build_expert(&ExpertSpec::new("linear")).unwrap(),
            2,
            2,
            Gating::Softmax,
        )
        .unwrap();
        assert!(matches!(
            s.to_original(&model, &[0.0; 3]),
            Err(MoeError::InvalidParam { .. })
        ));
    }
}
