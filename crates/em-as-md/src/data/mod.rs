//! The data a model is fitted to: features $x_i \in \mathbb R^d$ and targets
//! $y_i \in \mathbb R^q$, validated once on construction; [`csv`] loads and checks a CSV
//! file with a header row, with errors naming the file, the line and the column.

pub mod blocks;
pub mod csv;
pub mod parquet;
pub mod source;

use crate::error::{MoeError, Result};
use faer::MatRef;

/// Features and targets of $n$ rows.
///
/// Features are stored once, column-major $d \times n$ without padding (column $i$ is the
/// row $x_i$; a faer matrix would pad each column to a multiple of 8 values, $\times 8/7$
/// of the memory at $d = 21$): each row is a contiguous slice for the per-row kernels,
/// and the weighted Gram products $X^\top \operatorname{diag}(r) X$ are faer products on a
/// view of the same storage ([`xt`](Self::xt)). Targets are row-major $n \times q$ (a
/// class label or count is one entry).
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Column-major $d \times n$.
    xt: Vec<f64>,
    d: usize,
    n: usize,
    y: Vec<f64>,
    q: usize,
    feature_names: Vec<String>,
}

impl Dataset {
    /// Builds a data set from row-major features (`n × d`) and targets (`n × q`).
    ///
    /// # Errors
    /// `InvalidData` naming the row and column when a value is NaN or infinite, when
    /// there are no rows, or when the lengths are inconsistent.
    pub fn from_rows(x: &[f64], d: usize, y: &[f64], q: usize) -> Result<Self> {
        if q == 0 {
            return Err(invalid(None, None, "targets must have at least one column"));
        }
        if y.is_empty() {
            return Err(invalid(None, None, "the data set has no rows"));
        }
        if !y.len().is_multiple_of(q) {
            return Err(invalid(None, None, "target length is not a multiple of q"));
        }
        let n = y.len() / q;
        if x.len() != n * d {
            return Err(invalid(
                None,
                None,
                &format!(
                    "expected {n} × {d} = {} feature values, found {}",
                    n * d,
                    x.len()
                ),
            ));
        }
        for i in 0..n {
            for j in 0..d {
                if !x[i * d + j].is_finite() {
                    return Err(invalid(
                        Some(i),
                        Some(format!("x{j}")),
                        "feature is NaN or infinite",
                    ));
                }
            }
            for j in 0..q {
                if !y[i * q + j].is_finite() {
                    return Err(invalid(
                        Some(i),
                        Some(format!("y{j}")),
                        "target is NaN or infinite",
                    ));
                }
            }
        }
        Ok(Dataset {
            // Row-major n × d is column-major d × n.
            xt: x.to_vec(),
            d,
            n,
            y: y.to_vec(),
            q,
            feature_names: (0..d).map(|j| format!("x{j}")).collect(),
        })
    }

    /// Builds a data set from the design in its storage layout — `xt` is column-major
    /// $d \times n$ (the rows $x_i$ one after another, $d$ values each, as row-major
    /// $n \times d$) — row-major targets `y` ($n \times q$) and the $d$ feature names,
    /// without copying (the CSV loaders fill both a block of rows at a time).
    ///
    /// # Errors
    /// `InvalidData` naming the row and column when a value is NaN or infinite, when
    /// there are no rows, or when the lengths or the names do not match.
    pub fn from_design(
        xt: Vec<f64>,
        y: Vec<f64>,
        q: usize,
        feature_names: Vec<String>,
    ) -> Result<Self> {
        let d = feature_names.len();
        if y.is_empty() || q == 0 {
            return Err(invalid(
                None,
                None,
                "the data set has no rows or no targets",
            ));
        }
        let n = y.len() / q;
        if y.len() != n * q || xt.len() != n * d {
            return Err(invalid(
                None,
                None,
                &format!(
                    "{} target values for {q} targets and {} feature values for {d} names",
                    y.len(),
                    xt.len()
                ),
            ));
        }
        for (i, yi) in y.chunks_exact(q).enumerate() {
            if let Some(j) = xt[i * d..(i + 1) * d].iter().position(|v| !v.is_finite()) {
                return Err(invalid(
                    Some(i),
                    Some(format!("x{j}")),
                    "feature is NaN or infinite",
                ));
            }
            if let Some(j) = yi.iter().position(|v| !v.is_finite()) {
                return Err(invalid(
                    Some(i),
                    Some(format!("y{j}")),
                    "target is NaN or infinite",
                ));
            }
        }
        Ok(Dataset {
            xt,
            d,
            n,
            y,
            q,
            feature_names,
        })
    }

    /// Prepends a constant feature 1 (the intercept) to every row.
    pub fn with_intercept(self) -> Self {
        let (d, n) = (self.d, self.n);
        let mut xt = Vec::with_capacity((d + 1) * n);
        for i in 0..n {
            xt.push(1.0);
            xt.extend_from_slice(self.x(i));
        }
        let mut feature_names = vec!["(intercept)".to_string()];
        feature_names.extend(self.feature_names);
        Dataset {
            xt,
            d: d + 1,
            n,
            y: self.y,
            q: self.q,
            feature_names,
        }
    }

    /// Applies `f` to every row's features in place. Crate-private: a map that produced
    /// a non-finite value would break the data set's invariant, so only maps that keep
    /// values finite (the standardisation) use it.
    pub(crate) fn map_rows(&mut self, f: impl Fn(&mut [f64])) {
        let d = self.d;
        for i in 0..self.n {
            f(&mut self.xt[i * d..(i + 1) * d]);
        }
    }

    /// Renames the feature columns (used by reports and saved models).
    ///
    /// # Errors
    /// `InvalidData` if the number of names differs from $d$.
    pub fn with_feature_names(mut self, names: Vec<String>) -> Result<Self> {
        if names.len() != self.d() {
            return Err(invalid(
                None,
                None,
                "number of feature names differs from d",
            ));
        }
        self.feature_names = names;
        Ok(self)
    }

    /// The rows with the given indices, in that order (train/test splits, bootstrap).
    pub fn select(&self, rows: &[usize]) -> Self {
        let xt = rows
            .iter()
            .flat_map(|&i| self.x(i).iter().copied())
            .collect();
        let y = rows
            .iter()
            .flat_map(|&i| self.y(i).iter().copied())
            .collect();
        Dataset {
            xt,
            d: self.d,
            n: rows.len(),
            y,
            q: self.q,
            feature_names: self.feature_names.clone(),
        }
    }

    /// Number of rows $n$.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Number of features $d$ (including an intercept column if one was added).
    pub fn d(&self) -> usize {
        self.d
    }
    /// Number of target columns $q$.
    pub fn q(&self) -> usize {
        self.q
    }
    /// Feature row $x_i$ (contiguous).
    pub fn x(&self, i: usize) -> &[f64] {
        &self.xt[i * self.d..(i + 1) * self.d]
    }
    /// Rows `rows` of the design, one after another ($d$ values each).
    pub(crate) fn x_rows(&self, rows: std::ops::Range<usize>) -> &[f64] {
        &self.xt[rows.start * self.d..rows.end * self.d]
    }
    /// Target row $y_i$.
    pub fn y(&self, i: usize) -> &[f64] {
        &self.y[i * self.q..(i + 1) * self.q]
    }
    /// All targets, row-major $n \times q$.
    pub fn y_all(&self) -> &[f64] {
        &self.y
    }
    /// The features as a $d \times n$ view (column $i$ is $x_i$).
    pub fn xt(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.xt, self.d, self.n)
    }
    /// Feature names, in column order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }
}

fn invalid(row: Option<usize>, column: Option<String>, reason: &str) -> MoeError {
    MoeError::InvalidData {
        row,
        column,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_contiguous_and_intercept_is_prepended() {
        let ds = Dataset::from_rows(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, &[7.0, 8.0, 9.0], 1)
            .unwrap()
            .with_intercept();
        assert_eq!((ds.n(), ds.d(), ds.q()), (3, 3, 1));
        assert_eq!(ds.x(1), &[1.0, 3.0, 4.0]);
        assert_eq!(ds.y(2), &[9.0]);
        let sub = ds.select(&[2, 0]);
        assert_eq!(sub.x(0), &[1.0, 5.0, 6.0]);
        assert_eq!(sub.y(1), &[7.0]);
    }

    #[test]
    fn bad_data_names_row_and_column() {
        let e = Dataset::from_rows(&[1.0, f64::NAN], 1, &[0.0, 1.0], 1).unwrap_err();
        assert!(
            matches!(e, MoeError::InvalidData { row: Some(1), column: Some(ref c), .. } if c == "x0")
        );
        let e = Dataset::from_rows(&[1.0, 2.0], 1, &[0.0, f64::INFINITY], 1).unwrap_err();
        assert!(
            matches!(e, MoeError::InvalidData { row: Some(1), column: Some(ref c), .. } if c == "y0")
        );
        let e = Dataset::from_rows(&[], 1, &[], 1).unwrap_err();
        assert!(matches!(e, MoeError::InvalidData { row: None, .. }));
        let e = Dataset::from_rows(&[1.0], 2, &[0.0], 1).unwrap_err();
        assert!(matches!(e, MoeError::InvalidData { row: None, .. }));
    }
}
