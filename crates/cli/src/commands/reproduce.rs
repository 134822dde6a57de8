//! `mdem reproduce` (in progress).

use crate::error::CliError;
use clap::Args;

#[path = "../reproduce/mod.rs"]
pub mod experiments;

/// Arguments of `mdem reproduce`.
#[derive(Debug, Args)]
pub struct ReproduceArgs {}

/// Runs `mdem reproduce`.
///
/// # Errors
/// Not yet.
pub fn run(_args: &ReproduceArgs) -> Result<(), CliError> {
    Ok(())
}
