//! The target's support for each kind of expert, checked once the data is loaded
//! ([`em_as_md::data::csv`] loads and checks the file itself).
//!
//! [`validate_target`] checks a target vector against an [`ExpertKind`] and names the first
//! offending row; [`validate_loaded_target`] does it on a loaded CSV file and turns the row
//! into a [`DataError`] naming the file, the line (header = line 1) and the column, so the
//! command line prints it as it is and exits with code 2.

use em_as_md::data::csv::{DataError, LoadedData};
use std::fmt;

/// Largest class count accepted for a multinomial target (labels $0, \dots, 999$).
pub const MAX_CLASSES: usize = 1000;

/// The kind of expert, for checking the target's support ([`validate_target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpertKind {
    /// Gaussian linear expert: any finite $y$.
    Linear,
    /// Logistic expert: $y \in \{0, 1\}$.
    Logistic,
    /// Multinomial-logistic expert: $y \in \{0, \dots, C-1\}$.
    Multinomial,
    /// Poisson expert: $y \in \{0, 1, 2, \dots\}$.
    Poisson,
}

impl ExpertKind {
    /// The name, as used in messages (`linear`, `logistic`, `multinomial`, `poisson`).
    pub fn name(self) -> &'static str {
        match self {
            ExpertKind::Linear => "linear",
            ExpertKind::Logistic => "logistic",
            ExpertKind::Multinomial => "multinomial",
            ExpertKind::Poisson => "poisson",
        }
    }

    /// The support in words, as used in messages.
    pub fn support(self) -> &'static str {
        match self {
            ExpertKind::Linear => "a finite number",
            ExpertKind::Logistic => "0 or 1",
            ExpertKind::Multinomial => "an integer class label 0, 1, …, C−1 (C ≤ 1000)",
            ExpertKind::Poisson => "a non-negative integer count",
        }
    }
}

impl fmt::Display for ExpertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What [`validate_target`] learned about a valid target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSupport {
    /// Real-valued (linear experts).
    Real,
    /// Binary 0/1 (logistic experts).
    Binary,
    /// $C$ classes $0, \dots, C-1$ with $C = 1 + \max_i y_i$ (multinomial experts).
    Classes(usize),
    /// Counts (Poisson experts).
    Counts,
}

/// A target value outside an expert's support, by 0-based row index; see
/// [`validate_loaded_target`] for the message with file, line and column.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// `y[row]` is outside the support.
    #[error("data row {} (0-based index {row}): {kind} experts expect {}, found {value}", row + 1, kind.support())]
    OutOfSupport {
        /// 0-based row index.
        row: usize,
        /// The expert kind.
        kind: ExpertKind,
        /// The value.
        value: f64,
    },
    /// A multinomial target whose labels are all 0.
    #[error("multinomial experts expect at least two classes, found only class 0")]
    TooFewClasses,
}

/// Checks that every target value lies in the support of `kind`'s expert and returns
/// what it found; the error names the first offending row (0-based index, shown 1-based).
///
/// Linear: finite. Logistic: $\{0, 1\}$. Multinomial: integers $0 \dots C-1$,
/// $2 \le C \le$ [`MAX_CLASSES`], returned as [`TargetSupport::Classes`]`(C)`
/// with $C = 1 + \max_i y_i$ (a label below the maximum may be absent). Poisson:
/// non-negative integers (at most $2^{53}$, the exactly representable range).
///
/// # Errors
/// [`TargetError::OutOfSupport`] at the first offending row;
/// [`TargetError::TooFewClasses`] for a multinomial target with only label 0.
pub fn validate_target(kind: ExpertKind, y: &[f64]) -> Result<TargetSupport, TargetError> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    let ok = |v: f64| -> bool {
        v.is_finite()
            && match kind {
                ExpertKind::Linear => true,
                ExpertKind::Logistic => v == 0.0 || v == 1.0,
                ExpertKind::Multinomial => v >= 0.0 && v.fract() == 0.0 && v < MAX_CLASSES as f64,
                ExpertKind::Poisson => v >= 0.0 && v.fract() == 0.0 && v <= EXACT,
            }
    };
    if let Some(row) = y.iter().position(|&v| !ok(v)) {
        return Err(TargetError::OutOfSupport {
            row,
            kind,
            value: y[row],
        });
    }
    Ok(match kind {
        ExpertKind::Linear => TargetSupport::Real,
        ExpertKind::Logistic => TargetSupport::Binary,
        ExpertKind::Poisson => TargetSupport::Counts,
        ExpertKind::Multinomial => {
            let max = y.iter().fold(0.0_f64, |m, &v| m.max(v));
            // `max` is an integer in 0..MAX_CLASSES by the check above.
            let c = max as usize + 1;
            if c < 2 {
                return Err(TargetError::TooFewClasses);
            }
            TargetSupport::Classes(c)
        }
    })
}

/// [`validate_target`] on a loaded data set's target, with the error naming the file, the
/// line (header = line 1) and the target column.
///
/// # Errors
/// [`DataError::TargetOutOfSupport`] or [`DataError::TooFewClasses`].
pub fn validate_loaded_target(
    loaded: &LoadedData,
    kind: ExpertKind,
) -> Result<TargetSupport, DataError> {
    validate_target(kind, loaded.dataset.y_all()).map_err(|e| match e {
        TargetError::OutOfSupport { row, kind, value } => DataError::TargetOutOfSupport {
            file: loaded.file.clone(),
            line: loaded.lines.get(row).copied().unwrap_or(row as u64 + 2),
            row: row + 1,
            column: loaded.target.clone(),
            kind: kind.name(),
            expected: kind.support(),
            value,
        },
        TargetError::TooFewClasses => DataError::TooFewClasses {
            file: loaded.file.clone(),
            column: loaded.target.clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use em_as_md::data::csv::{load_csv, load_csv_from_reader, load_csv_with, LoadOptions};

    fn load(
        text: &str,
        target: &str,
        features: Option<&[String]>,
        intercept: bool,
    ) -> Result<LoadedData, DataError> {
        load_csv_from_reader(
            text.as_bytes(),
            "t.csv",
            target,
            features,
            LoadOptions {
                intercept,
                drop_constant: false,
            },
        )
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TargetError>();
    }

    #[test]
    fn target_support_per_expert_kind() {
        let y = [0.0, 1.0, 1.0, 0.5];
        assert_eq!(
            validate_target(ExpertKind::Linear, &y),
            Ok(TargetSupport::Real)
        );
        assert!(matches!(
            validate_target(ExpertKind::Logistic, &y),
            Err(TargetError::OutOfSupport { row: 3, kind: ExpertKind::Logistic, value }) if value == 0.5
        ));
        assert_eq!(
            validate_target(ExpertKind::Logistic, &y[..3]),
            Ok(TargetSupport::Binary)
        );
        assert_eq!(
            validate_target(ExpertKind::Multinomial, &[0.0, 2.0, 1.0, 4.0]),
            Ok(TargetSupport::Classes(5))
        );
        assert!(matches!(
            validate_target(ExpertKind::Multinomial, &[0.0, 2.0, -1.0]),
            Err(TargetError::OutOfSupport { row: 2, .. })
        ));
        assert!(matches!(
            validate_target(ExpertKind::Multinomial, &[0.0, 1.5]),
            Err(TargetError::OutOfSupport { row: 1, .. })
        ));
        assert!(matches!(
            validate_target(ExpertKind::Multinomial, &[0.0, 1000.0]),
            Err(TargetError::OutOfSupport { row: 1, .. })
        ));
        assert_eq!(
            validate_target(ExpertKind::Multinomial, &[0.0, 0.0]),
            Err(TargetError::TooFewClasses)
        );
        assert_eq!(
            validate_target(ExpertKind::Poisson, &[0.0, 3.0, 17.0]),
            Ok(TargetSupport::Counts)
        );
        assert!(matches!(
            validate_target(ExpertKind::Poisson, &[0.0, 3.0, 2.5]),
            Err(TargetError::OutOfSupport { row: 2, .. })
        ));
        assert!(matches!(
            validate_target(ExpertKind::Poisson, &[-1.0]),
            Err(TargetError::OutOfSupport { row: 0, .. })
        ));
        assert!(matches!(
            validate_target(ExpertKind::Linear, &[1.0, f64::NAN]),
            Err(TargetError::OutOfSupport { row: 1, .. })
        ));
    }

    #[test]
    fn target_error_on_loaded_data_names_file_line_and_column() {
        // A blank line: the csv crate skips it, the reported line still matches the file.
        let d = load("a,y\n1,0\n\n2,1\n3,2\n4,1\n", "y", None, true).unwrap();
        assert_eq!(d.lines, vec![2, 4, 5, 6]);
        // CRLF line ends with a blank line, and a quoted field spanning two lines.
        let d = load("a,y\r\n1,0\r\n\r\n2,1\r\n", "y", None, false).unwrap();
        assert_eq!(d.lines, vec![2, 4]);
        let d = load(
            "a,note,y\n1,x,0\n2,\"two\nlines\",1\n3,z,2\n",
            "y",
            Some(&names(&["a"])),
            false,
        )
        .unwrap();
        assert_eq!(d.lines, vec![2, 3, 5]);
        let e = validate_loaded_target(&d, ExpertKind::Logistic).unwrap_err();
        assert!(
            matches!(e, DataError::TargetOutOfSupport { line: 5, row: 3, ref column, kind: "logistic", value, .. } if column == "y" && value == 2.0),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(m.contains("t.csv: line 5 (data row 3; the header is line 1), column \"y\": logistic experts expect 0 or 1, found 2"), "{m}");
        assert_eq!(
            validate_loaded_target(&d, ExpertKind::Multinomial).unwrap(),
            TargetSupport::Classes(3)
        );
        let d = load("a,y\n1,0\n2,0\n", "y", None, false).unwrap();
        let e = validate_loaded_target(&d, ExpertKind::Multinomial).unwrap_err();
        assert!(matches!(e, DataError::TooFewClasses { .. }));
    }

    #[test]
    fn the_shipped_data_sets_have_their_experts_targets() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
        let d = load_csv(data.join("diabetes.csv"), "y", None, true).unwrap();
        assert_eq!(
            validate_loaded_target(&d, ExpertKind::Linear).unwrap(),
            TargetSupport::Real
        );
        let d = load_csv(data.join("breast_cancer.csv"), "y", None, true).unwrap();
        assert_eq!(
            validate_loaded_target(&d, ExpertKind::Logistic).unwrap(),
            TargetSupport::Binary
        );
        let d = load_csv_with(
            data.join("digits.csv"),
            "y",
            None,
            LoadOptions {
                intercept: true,
                drop_constant: true,
            },
        )
        .unwrap();
        assert_eq!(
            validate_loaded_target(&d, ExpertKind::Multinomial).unwrap(),
            TargetSupport::Classes(10)
        );
    }
}
