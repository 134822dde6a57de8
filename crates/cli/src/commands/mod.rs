//! The subcommands, one file each, and the dispatch.
//!
//! Each file defines a clap `…Args` struct and `pub fn run(args: &…Args) -> Result<(), CliError>`;
//! [`Command`] holds one variant per file, so a subcommand is changed by editing its own file.

use crate::error::CliError;
use clap::{Parser, Subcommand};

pub mod certify;
pub mod compare;
pub mod demo;
pub mod fit;
pub mod predict;
pub mod reproduce;
mod stream;

/// `mdem`: mixtures of experts fitted by EM, analysed as mirror descent.
#[derive(Debug, Parser)]
#[command(
    name = "mdem",
    version,
    about = "Mixtures of experts fitted by EM, analysed as mirror descent (KL mirror map, certificates)",
    long_about = None,
    propagate_version = true,
    after_help = crate::error::EXIT_CODES
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a SymMoLinE data set, fit it by EM, gradient EM and gradient descent from the
    /// same start, print the comparison and EM's certificate, and draw the suboptimality
    /// curves.
    #[command(after_help = crate::error::EXIT_CODES)]
    Demo(demo::DemoArgs),
    /// Fit a mixture of experts to a CSV file.
    #[command(after_help = crate::error::EXIT_CODES)]
    Fit(fit::FitArgs),
    /// Predict with a saved model: gate probabilities, responsibilities, predictive mean or
    /// class probabilities, as CSV.
    #[command(after_help = crate::error::EXIT_CODES)]
    Predict(predict::PredictArgs),
    /// Certify a saved model's fit on a data set: relative smoothness and strong convexity
    /// with respect to the KL mirror map, predicted and observed linear rates.
    #[command(after_help = crate::error::EXIT_CODES)]
    Certify(certify::CertifyArgs),
    /// Compare EM, mirror descent at several steps, gradient descent and gradient EM from one
    /// initialisation.
    #[command(after_help = crate::error::EXIT_CODES)]
    Compare(compare::CompareArgs),
    /// Reproduce the paper's experiments (figures and a Markdown report).
    #[command(after_help = crate::error::EXIT_CODES)]
    Reproduce(reproduce::ReproduceArgs),
}

/// Runs one parsed command.
///
/// # Errors
/// The subcommand's [`CliError`].
pub fn dispatch(cli: &Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Fit(a) => fit::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Certify(a) => certify::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Reproduce(a) => reproduce::run(a),
    }
}
