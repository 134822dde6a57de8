//! The command line's typed errors and how each becomes one line on stderr and an exit code.
//!
//! Every failure the user can cause (a bad file, a bad value, a model that does not fit the
//! data) is a [`CliError`] whose `Display` is **one line** naming what is wrong and where,
//! and [`CliError::exit_code`] maps it to the process exit code:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the computation failed on valid input (every start of a fit failed, a figure could not be drawn) or an output could not be written (a full disk) |
//! | 2 | bad input or usage: a data file, a model file, a flag value, an output path found unusable before the work starts; clap's usage errors, trimmed to one line naming the argument ([`usage_line`]) |
//! | 130 | interrupted by Ctrl-C after writing the results so far, or at once on a second Ctrl-C ([`crate::interrupt`]) |
//!
//! The binary's `main` prints `error: <line>` and exits with that code; a panic is turned
//! into one line too ([`install_panic_hook`]), never a backtrace.

use em_as_md::data::csv::DataError;
use em_as_md::MoeError;

/// The exit codes, as `--help` shows them (after the options) and the README lists them.
pub const EXIT_CODES: &str = "Exit codes: 0 success; 1 the computation failed on valid input (every start of a fit failed) or an output could not be written (disk full); 2 bad input or usage (a data or model file, a flag value, an output path that cannot be written, checked before any work); 130 interrupted by Ctrl-C (the results so far are written).";

/// Exit code of bad input (as clap uses for usage errors).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code of a failed computation on valid input.
pub const EXIT_FAILURE: u8 = 1;

/// Everything that can stop a subcommand. `Display` is one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A CSV data file is unusable (the message names file, line and column).
    #[error(transparent)]
    Data(#[from] DataError),
    /// A flag value or a combination of flags is invalid, or the data cannot support the
    /// requested model (e.g. more parameters than rows).
    #[error("{0}")]
    BadInput(String),
    /// A saved model file cannot be read or does not match the data.
    #[error("{file}: {reason}")]
    Model {
        /// The model file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The fit (or another computation) failed on valid input.
    #[error("{context}: {source}")]
    Compute {
        /// What was being done.
        context: String,
        /// The library's error.
        #[source]
        source: MoeError,
    },
    /// A certificate could not be computed.
    #[error("certificate: {0}")]
    Diagnostics(#[from] diagnostics::DiagnosticsError),
    /// An output file could not be written.
    #[error("{path}: cannot write: {reason}")]
    Output {
        /// The output path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A figure could not be drawn.
    #[error(transparent)]
    Plot(#[from] experiments::plot::PlotError),
    /// The paper reproduction stopped (`mdem reproduce`); bad input when
    /// [`ExperimentsError::is_bad_input`](experiments::ExperimentsError::is_bad_input).
    #[error(transparent)]
    Experiments(#[from] experiments::ExperimentsError),
    /// The command line itself is wrong (clap's error, as one line: [`usage_line`]).
    #[error("{0}")]
    Usage(String),
    /// The subcommand is not part of this build yet.
    #[error("{0}")]
    Unavailable(String),
}

impl CliError {
    /// The process exit code for this error (see the [module documentation](self)).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Data(_)
            | CliError::BadInput(_)
            | CliError::Model { .. }
            | CliError::Usage(_) => EXIT_BAD_INPUT,
            CliError::Compute { source, .. } => match source {
                MoeError::InvalidData { .. }
                | MoeError::InvalidParam { .. }
                | MoeError::Source(_) => EXIT_BAD_INPUT,
                _ => EXIT_FAILURE,
            },
            CliError::Experiments(e) if e.is_bad_input() => EXIT_BAD_INPUT,
            CliError::Diagnostics(_)
            | CliError::Output { .. }
            | CliError::Plot(_)
            | CliError::Experiments(_)
            | CliError::Unavailable(_) => EXIT_FAILURE,
        }
    }

    /// Wraps a library error with what was being done.
    pub fn compute(context: impl Into<String>, source: MoeError) -> Self {
        CliError::Compute {
            context: context.into(),
            source,
        }
    }

    /// An output-file error.
    pub fn output(path: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        CliError::Output {
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// clap's usage error as one line: its message without the `error:` prefix, the usage
/// block and the "For more information" line, the lines that name the argument (a missing
/// `--target <TARGET>`, a value and the flag it was given to) folded into the first, and
/// where to read more, e.g.
/// `the following required arguments were not provided: --target <TARGET> (see 'mdem fit --help')`.
pub fn usage_line(e: &clap::Error) -> String {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "no subcommand given; expected one of demo, fit, predict, certify, compare, reproduce (see 'mdem --help')".into();
    }
    let text = e.render().to_string();
    let mut parts: Vec<&str> = Vec::new();
    let mut command = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(usage) = line.strip_prefix("Usage:") {
            // "Usage: mdem fit [OPTIONS] --target …": the command is the leading words.
            let words: Vec<&str> = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect();
            command = Some(words.join(" "));
            break;
        }
        let line = line.strip_prefix("error:").unwrap_or(line).trim();
        if !line.is_empty() && !line.starts_with("For more information") {
            parts.push(line);
        }
    }
    let mut s = parts.join(" ");
    if let Some(c) = command.filter(|c| !c.is_empty()) {
        s.push_str(&format!(" (see '{c} --help')"));
    }
    s
}

/// The message printed for any error reaching `main`: the error's own line, with any
/// line breaks folded so the output stays on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let s = match e.downcast_ref::<CliError>() {
        Some(c) => c.to_string(),
        None => format!("{e:#}"),
    };
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The exit code for any error reaching `main`: [`CliError::exit_code`], else
/// [`EXIT_FAILURE`].
pub fn exit_code(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<CliError>()
        .map_or(EXIT_FAILURE, CliError::exit_code)
}

/// Replaces the default panic message and backtrace by one line
/// `error: internal error: …` (a panic is a bug in mdem, not a user error; the process
/// then exits with code 101 as usual).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error (a bug in mdem, please report it): {}{at}",
            msg.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_by_kind() {
        assert_eq!(CliError::BadInput("x".into()).exit_code(), 2);
        let m = CliError::Model {
            file: "m.json".into(),
            reason: "bad".into(),
        };
        assert_eq!(m.exit_code(), 2);
        assert_eq!(m.to_string(), "m.json: bad");
        let c = CliError::compute("fit", MoeError::NonFinite { what: "L" });
        assert_eq!(c.exit_code(), 1);
        let c = CliError::compute(
            "fit",
            MoeError::InvalidParam {
                name: "tol",
                reason: "finite and > 0".into(),
            },
        );
        assert_eq!(c.exit_code(), 2);
        assert_eq!(CliError::output("f.svg", "denied").exit_code(), 1);
        // The reproduction's errors: bad data files are bad input, failed runs are not.
        use experiments::ExperimentsError;
        let e = CliError::from(ExperimentsError::BadInput(
            "data/digits.csv: no data rows".into(),
        ));
        assert_eq!(
            (e.exit_code(), e.to_string().as_str()),
            (2, "data/digits.csv: no data rows")
        );
        let e = CliError::from(ExperimentsError::compute(
            "SymMoLinE",
            MoeError::NonFinite { what: "L" },
        ));
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().starts_with("SymMoLinE: "));
        assert_eq!(
            CliError::from(ExperimentsError::output("r", "denied")).exit_code(),
            1
        );
    }

    #[test]
    fn usage_errors_are_one_line_naming_the_argument() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let mut v = vec!["mdem"];
            v.extend_from_slice(args);
            crate::commands::Cli::try_parse_from(v).unwrap_err()
        };
        // (`--target` is checked by `fit` itself: `--expert gaussian` takes none.)
        let e = parse(&["fit", "d.csv", "--target", "y", "--expert", "linear"]);
        let line = usage_line(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with(
                "the following required arguments were not provided: --experts <EXPERTS>"
            ),
            "{line}"
        );
        assert!(line.ends_with("(see 'mdem fit --help')"), "{line}");
        let line = usage_line(&parse(&[
            "fit",
            "d.csv",
            "--target",
            "y",
            "--experts",
            "0",
            "--expert",
            "linear",
        ]));
        assert!(line.contains("'0'") && line.contains("--experts"), "{line}");
        let line = usage_line(&parse(&["predict", "m.json", "d.csv", "--outt", "p.csv"]));
        assert!(line.contains("--outt") && !line.contains('\n'), "{line}");
        assert_eq!(CliError::Usage(line).exit_code(), 2);
        assert!(usage_line(&parse(&[])).starts_with("no subcommand given"));
    }

    #[test]
    fn one_line_folds_newlines_and_defaults_to_failure() {
        let e = anyhow::Error::new(CliError::BadInput("a\nb  c".into()));
        assert_eq!(one_line(&e), "a b c");
        assert_eq!(exit_code(&e), 2);
        let e = anyhow::anyhow!("plain");
        assert_eq!(one_line(&e), "plain");
        assert_eq!(exit_code(&e), 1);
    }
}
