//! Writing the command's reports: [`print_stdout`]; the tables and the number formatting
//! are [`experiments::report`]'s (re-exported here), shared with the reproduction's report.

pub use experiments::report::{num, Align, Table};

/// Writes `text` to stdout; a closed pipe (`mdem … | head`) is not an error.
///
/// # Errors
/// [`CliError::Output`](crate::error::CliError::Output) for any other write failure.
pub fn print_stdout(text: &str) -> Result<(), crate::error::CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(crate::error::CliError::output("stdout", e)),
    }
}
