//! `mdem reproduce`: a placeholder for the subcommand (another module of the project implements
//! it by replacing this file: keep the names `ReproduceArgs` and `run`).

use crate::error::CliError;
use clap::Args;

/// Arguments of `mdem reproduce` (accepted as they are until the subcommand exists).
#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// Arguments of the subcommand.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `mdem reproduce`.
///
/// # Errors
/// [`CliError::Unavailable`]: the subcommand is not part of this build yet.
pub fn run(_args: &ReproduceArgs) -> Result<(), CliError> {
    Err(CliError::Unavailable(
        "`mdem reproduce` is not available in this build yet; see `mdem --help`".into(),
    ))
}
