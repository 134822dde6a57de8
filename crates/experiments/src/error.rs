//! What can stop the reproduction. Every `Display` is one line naming what is wrong and
//! where (file, line, column for data files), as the `mdem` command line prints it.

use crate::plot::PlotError;
use em_as_md::data::csv::DataError;
use em_as_md::MoeError;

/// Everything that can stop [`reproduce`](fn@crate::reproduce) or one of its experiments.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExperimentsError {
    /// A data file the reproduction reads directly (the digits) is missing or malformed;
    /// the message names the file and the line.
    #[error("{0}")]
    BadInput(String),
    /// A tabular data file is unusable (the message names file, line and column).
    #[error(transparent)]
    Data(Box<DataError>),
    /// An experiment failed (a model could not be built, a run failed at its start).
    #[error("{context}: {source}")]
    Compute {
        /// Which experiment.
        context: String,
        /// The library's error.
        #[source]
        source: MoeError,
    },
    /// An output directory or file could not be written.
    #[error("{path}: cannot write: {reason}")]
    Output {
        /// The output path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A figure could not be drawn.
    #[error(transparent)]
    Plot(#[from] PlotError),
}

impl ExperimentsError {
    /// Wraps a library error with the experiment it stopped.
    pub fn compute(context: impl Into<String>, source: MoeError) -> Self {
        ExperimentsError::Compute {
            context: context.into(),
            source,
        }
    }

    /// An output error.
    pub fn output(path: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        ExperimentsError::Output {
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Whether the input is at fault (a missing or malformed data file, or a setting the
    /// library refuses: `InvalidData`/`InvalidParam`) rather than the computation or the
    /// output; the command line exits with code 2 for these and 1 otherwise.
    pub fn is_bad_input(&self) -> bool {
        match self {
            ExperimentsError::BadInput(_) | ExperimentsError::Data(_) => true,
            ExperimentsError::Compute { source, .. } => matches!(
                source,
                MoeError::InvalidData { .. } | MoeError::InvalidParam { .. }
            ),
            ExperimentsError::Output { .. } | ExperimentsError::Plot(_) => false,
        }
    }
}

/// Boxed: a data error names file, line, column, expert and support, and unboxed it would
/// make every `Result` of this crate (and the CLI's error, which wraps it) twice as large.
impl From<DataError> for ExperimentsError {
    fn from(e: DataError) -> Self {
        ExperimentsError::Data(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_input_blame() {
        let e = ExperimentsError::compute("SymMoLinE", MoeError::NonFinite { what: "L" });
        assert!(e.to_string().starts_with("SymMoLinE: "), "{e}");
        assert!(!e.is_bad_input());
        let e = ExperimentsError::compute(
            "diabetes",
            MoeError::InvalidParam {
                name: "tol",
                reason: "finite and > 0".into(),
            },
        );
        assert!(e.is_bad_input());
        let e = ExperimentsError::output("results/figures", "denied");
        assert_eq!(e.to_string(), "results/figures: cannot write: denied");
        assert!(!e.is_bad_input());
        let e = ExperimentsError::BadInput("data/digits.csv: no data rows".into());
        assert_eq!(e.to_string(), "data/digits.csv: no data rows");
        assert!(e.is_bad_input());
    }

    #[test]
    fn errors_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ExperimentsError>();
    }
}
