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
//! run checks), [`output`] (output paths checked before any work, files written atomically),
//! [`phases`] (wall-clock time per phase of a command). Figures are drawn with [`experiments::plot`], CSV files loaded with
//! [`em_as_md::data::csv`].

pub mod allocator;
pub mod commands;
pub mod csvdata;
pub mod engine;
pub mod error;
pub mod interrupt;
pub mod model;
pub mod output;
pub mod phases;
pub mod progress;
pub mod report;

use clap::Parser;

/// Entry point of the `mdem` binary: parses the command line and runs the subcommand.
///
/// `--help`/`--version` are printed by clap (exit code 0); usage errors become
/// [`error::CliError::Usage`], one line naming the argument (exit code 2).
///
/// # Errors
/// The subcommand's [`error::CliError`], wrapped in `anyhow`.
pub fn run() -> anyhow::Result<()> {
    let cli = match commands::Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version`: printed on stdout, success.
        Err(e) if !e.use_stderr() => {
            e.print()?;
            return Ok(());
        }
        Err(e) => return Err(error::CliError::Usage(error::usage_line(&e)).into()),
    };
    commands::dispatch(&cli)?;
    Ok(())
}
