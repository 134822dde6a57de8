//! `mdem certify` (in progress).

use crate::error::CliError;
use clap::Args;

/// Arguments of `mdem certify`.
#[derive(Debug, Args)]
pub struct CertifyArgs {}

/// Runs `mdem certify`.
///
/// # Errors
/// Not yet available.
pub fn run(_args: &CertifyArgs) -> Result<(), CliError> {
    Err(CliError::Unavailable(
        "`mdem certify` is not available yet".into(),
    ))
}
