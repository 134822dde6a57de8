//! Optional standardisation of the feature columns (`mdem fit --standardize`).
//!
//! Each feature column $j$ (not the intercept) becomes $z_{ij} = (x_{ij} - m_j)/s_j$ with
//! the column mean $m_j = \frac1n\sum_i x_{ij}$ and the population standard deviation
//! $s_j = \big(\frac1n\sum_i (x_{ij} - m_j)^2\big)^{1/2}$ (a constant column, possible only
//! without an intercept, is left as it is: $m_j = 0$, $s_j = 1$). With an intercept this
//! is an affine reparametrisation of every expert and of the gate, so the maximum
//! likelihood is unchanged; what changes is the conditioning of the Newton M-steps
//! (features on scales from $10^{-3}$ to $10^3$ make the weighted Hessians numerically
//! singular). The saved model keeps $(m, s)$ and `predict` applies them to new data.

use em_as_md::{Dataset, MoeError};
use serde::{Deserialize, Serialize};

/// The centring and scaling of every design column (identity for the intercept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    /// $m_j$ per design column.
    pub mean: Vec<f64>,
    /// $s_j$ per design column.
    pub sd: Vec<f64>,
}

impl Scaling {
    /// The column means and population standard deviations of `data`'s design columns;
    /// the intercept column (index 0 when `intercept`) and constant columns get
    /// $(0, 1)$.
    pub fn fit(data: &Dataset, intercept: bool) -> Scaling {
        let (n, d) = (data.n(), data.d());
        let mut mean = vec![0.0; d];
        let mut sd = vec![1.0; d];
        for j in usize::from(intercept)..d {
            let m = (0..n).map(|i| data.x(i)[j]).sum::<f64>() / n as f64;
            let v = (0..n).map(|i| (data.x(i)[j] - m).powi(2)).sum::<f64>() / n as f64;
            if v > 1e-300 && v.sqrt() > 1e-12 * m.abs() {
                mean[j] = m;
                sd[j] = v.sqrt();
            }
        }
        Scaling { mean, sd }
    }

    /// $z_{ij} = (x_{ij} - m_j)/s_j$ for every row, keeping the targets and names.
    ///
    /// # Errors
    /// `InvalidData` when the column count differs from the scaling's.
    pub fn apply(&self, data: &Dataset) -> Result<Dataset, MoeError> {
        let (n, d) = (data.n(), data.d());
        if d != self.mean.len() {
            return Err(MoeError::InvalidData {
                row: None,
                column: None,
                reason: format!("standardisation has {} columns, data {d}", self.mean.len()),
            });
        }
        let mut x = Vec::with_capacity(n * d);
        for i in 0..n {
            x.extend(
                data.x(i)
                    .iter()
                    .zip(self.mean.iter().zip(&self.sd))
                    .map(|(v, (m, s))| (v - m) / s),
            );
        }
        Dataset::from_rows(&x, d, data.y_all(), data.q())?
            .with_feature_names(data.feature_names().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardised_columns_have_mean_zero_and_unit_variance() {
        let x = [
            1.0, 100.0, 5.0, 2.0, 300.0, 5.0, 4.0, 200.0, 5.0, 9.0, 0.0, 5.0,
        ];
        let y = [0.0, 1.0, 0.0, 1.0];
        let data = Dataset::from_rows(&x, 3, &y, 1).unwrap().with_intercept();
        let s = Scaling::fit(&data, true);
        let z = s.apply(&data).unwrap();
        for j in 1..3 {
            let col: Vec<f64> = (0..4).map(|i| z.x(i)[j]).collect();
            let m = col.iter().sum::<f64>() / 4.0;
            let v = col.iter().map(|c| (c - m) * (c - m)).sum::<f64>() / 4.0;
            assert!(m.abs() < 1e-12 && (v - 1.0).abs() < 1e-12, "{j}: {m} {v}");
        }
        // Intercept and the constant column are untouched.
        assert!((0..4).all(|i| z.x(i)[0] == 1.0 && z.x(i)[3] == 5.0));
        assert_eq!(s.mean[1], 4.0);
        assert_eq!(z.feature_names(), data.feature_names());
        assert_eq!(z.y_all(), data.y_all());
    }

    #[test]
    fn wrong_width_is_a_typed_error() {
        let data = Dataset::from_rows(&[1.0, 2.0], 1, &[0.0, 1.0], 1).unwrap();
        let s = Scaling {
            mean: vec![0.0; 2],
            sd: vec![1.0; 2],
        };
        assert!(matches!(s.apply(&data), Err(MoeError::InvalidData { .. })));
    }
}
