//! The `mdem` command line: `demo`, `fit`, `predict`, `certify`, `compare`, `reproduce`.
//!
//! The binary (the root package's `[[bin]] mdem`, `src/main.rs` here) calls [`run`], which
//! parses the arguments with clap and runs one [`commands`] module. Errors are typed
//! ([`error::CliError`]); `main` prints them as one line and exits with
//! [`error::CliError::exit_code`] (2 for bad input).
//!
//! Pieces of the command: [`csvdata`] (the target's support per kind of expert),
//! [`progress`] (a progress-bar observer), [`report`] (printing; the tables and number
//! formatting are [`experiments::report`]'s), [`interrupt`] (the Ctrl-C flag every solver
//! run checks). Figures are drawn with [`experiments::plot`], CSV files loaded with
//! [`em_as_md::data::csv`].

pub mod commands;
pub mod csvdata;
pub mod engine;
pub mod error;
pub mod interrupt;
pub mod model;
pub mod progress;
pub mod report;

use clap::Parser;

/// Entry point of the `mdem` binary: parses the command line and runs the subcommand.
///
/// Usage errors and `--help`/`--version` are handled by clap (printed, then the process
/// exits with code 2, respectively 0).
///
/// # Errors
/// The subcommand's [`error::CliError`], wrapped in `anyhow`.
pub fn run() -> anyhow::Result<()> {
    let cli = commands::Cli::parse();
    commands::dispatch(&cli)?;
    Ok(())
}
