//! The target's support for the chosen expert, checked once the data is loaded
//! ([`em_as_md::data::csv`] loads and checks the file itself).
//!
//! The rule is the expert's registry entry's (`em_as_md::model::registry`): it checks every
//! target value against the expert's support and infers what the target determines (a
//! multinomial expert's classes). [`expert_spec`] runs it on a loaded file and turns an
//! offending row into a [`DataError`] naming the file, the line (header = line 1) and the
//! column, so the command line prints it as it is and exits with code 2.

use em_as_md::data::csv::{check_target_varies, DataError, LoadedData};
use em_as_md::model::registry::{ExpertEntry, TargetError};
use em_as_md::ExpertSpec;

/// The description of the expert `entry` for `loaded`'s target, by the entry's target
/// rule; the error names the file, the line (header = line 1) and the target column.
///
/// # Errors
/// [`DataError::TargetOutOfSupport`] or [`DataError::TargetUnusable`] by the rule, then
/// [`DataError::ConstantTarget`] ([`check_target_varies`]); `None` when the entry has no
/// target rule.
pub fn expert_spec(
    loaded: &LoadedData,
    entry: &ExpertEntry,
) -> Option<Result<ExpertSpec, DataError>> {
    let r = entry.spec_from_target(loaded.dataset.y_all())?;
    Some(
        r.map_err(|e| target_error(&loaded.file, &loaded.lines, &loaded.target, e))
            .and_then(|spec| check_target_varies(loaded).map(|()| spec)),
    )
}

/// A [`TargetError`] (rows 0-based) as a [`DataError`] naming the file, the physical line
/// of the row (`lines[row]`, header = line 1) and the target column.
pub fn target_error(file: &str, lines: &[u64], column: &str, e: TargetError) -> DataError {
    match e {
        TargetError::OutOfSupport {
            row,
            expert,
            expected,
            value,
        } => DataError::TargetOutOfSupport {
            file: file.into(),
            line: lines.get(row).copied().unwrap_or(row as u64 + 2),
            row: row + 1,
            column: column.into(),
            expert,
            expected: expected.into_boxed_str(),
            value,
        },
        TargetError::Unusable {
            expert,
            expected,
            found,
        } => DataError::TargetUnusable {
            file: file.into(),
            column: column.into(),
            expert,
            expected,
            found,
        },
        // `TargetError` is non-exhaustive: a future variant keeps its own message.
        other => DataError::TargetUnusable {
            file: file.into(),
            column: column.into(),
            expert: String::new(),
            expected: String::new(),
            found: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use em_as_md::data::csv::{load_csv, load_csv_from_reader, load_csv_with, LoadOptions};

    fn entry(name: &str) -> ExpertEntry {
        em_as_md::model::registry::expert_entry(name).unwrap()
    }

    /// The class count the multinomial entry infers from `d`'s target.
    fn classes(d: &LoadedData) -> f64 {
        let spec = expert_spec(d, &entry("multinomial")).unwrap().unwrap();
        spec.params.get("classes").unwrap()
    }

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
        let e = expert_spec(&d, &entry("logistic")).unwrap().unwrap_err();
        assert!(
            matches!(e, DataError::TargetOutOfSupport { line: 5, row: 3, ref column, ref expert, value, .. } if column == "y" && expert == "logistic" && value == 2.0),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(m.contains("t.csv: line 5 (data row 3; the header is line 1), column \"y\": logistic experts expect 0 or 1, found 2"), "{m}");
        assert_eq!(classes(&d), 3.0);
        let d = load("a,y\n1,0\n2,0\n", "y", None, false).unwrap();
        let e = expert_spec(&d, &entry("multinomial")).unwrap().unwrap_err();
        assert!(matches!(e, DataError::TargetUnusable { .. }));
        assert_eq!(
            e.to_string(),
            "t.csv: column \"y\": multinomial experts expect at least two classes 0..C−1, found only class 0"
        );
        // An entry without a target rule (a GLM needs its family) offers no description.
        assert!(expert_spec(&d, &entry("glm")).is_none());
    }

    #[test]
    fn the_shipped_data_sets_have_their_experts_targets() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
        let d = load_csv(data.join("diabetes.csv"), "y", None, true).unwrap();
        assert_eq!(
            expert_spec(&d, &entry("linear")).unwrap().unwrap(),
            ExpertSpec::new("linear")
        );
        let d = load_csv(data.join("breast_cancer.csv"), "y", None, true).unwrap();
        assert_eq!(
            expert_spec(&d, &entry("logistic")).unwrap().unwrap(),
            ExpertSpec::new("logistic")
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
        assert_eq!(classes(&d), 10.0);
    }
}
