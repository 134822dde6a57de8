//! `mdem compare`: a placeholder for the subcommand (another module of the project implements
//! it by replacing this file: keep the names `CompareArgs` and `run`).

use crate::error::CliError;
use clap::Args;

/// Arguments of `mdem compare` (accepted as they are until the subcommand exists).
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Arguments of the subcommand.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `mdem compare`.
///
/// # Errors
/// [`CliError::Unavailable`]: the subcommand is not part of this build yet.
pub fn run(_args: &CompareArgs) -> Result<(), CliError> {
    Err(CliError::Unavailable(
        "`mdem compare` is not available in this build yet; see `mdem --help`".into(),
    ))
}
