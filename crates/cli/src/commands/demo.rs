//! `mdem demo` (in progress).

use crate::error::CliError;
use clap::Args;

/// Arguments of `mdem demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {}

/// Runs `mdem demo`.
///
/// # Errors
/// Not yet available.
pub fn run(_args: &DemoArgs) -> Result<(), CliError> {
    Err(CliError::Unavailable(
        "`mdem demo` is not available yet".into(),
    ))
}
