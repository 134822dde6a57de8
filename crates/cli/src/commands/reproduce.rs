//! `mdem reproduce [--out DIR] [--quick] [--data-dir DIR] [--seed S]`: the paper's
//! experiments (Fruytier, Mokhtari & Sanghavi, ICML 2025), with figures and a Markdown
//! report, run by the `experiments` crate ([`experiments::reproduce_with`]; what is run
//! and what is written is documented there).
//!
//! This subcommand holds the flags, hands the experiments the process-wide Ctrl-C flag
//! ([`crate::interrupt`]) and prints their progress on stderr: each stage with the seconds
//! since the start, warnings, and a part left out after an interrupt. Ctrl-C stops the
//! part that is running at its runs' next iteration, skips the parts after it, and the
//! report and the figures of what ran are still written, with the interrupted part marked.

use crate::error::CliError;
use crate::interrupt;
use clap::Args;
use experiments::{Event, Options};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `mdem reproduce`.
#[derive(Debug, Clone, Args)]
pub struct ReproduceArgs {
    /// Output directory (created): `report.md` and `figures/`.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// A small version (a few instances, fewer iterations) that runs in seconds.
    #[arg(long)]
    pub quick: bool,
    /// Directory holding `digits.csv`, `diabetes.csv` and `breast_cancer.csv`
    /// (default: `data/`, else the repository's `data/` this binary was built from).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Master seed.
    #[arg(long, default_value_t = experiments::DEFAULT_SEED)]
    pub seed: u64,
}

impl ReproduceArgs {
    /// The experiments' options for these flags, stopped early by `cancel`.
    pub fn options(&self, cancel: Arc<AtomicBool>) -> Options {
        Options {
            out: self.out.clone(),
            quick: self.quick,
            data_dir: self.data_dir.clone(),
            seed: self.seed,
            cancel,
        }
    }
}

/// Runs `mdem reproduce`: [`experiments::reproduce_with`] with the Ctrl-C flag, printing
/// its progress on stderr.
///
/// # Errors
/// [`CliError::Experiments`]: missing or bad data files (exit code 2), a failed
/// experiment, or a report or figure that cannot be written.
pub fn run(args: &ReproduceArgs) -> Result<(), CliError> {
    // Before any work: the report's directory and its figures' (bad paths exit 2).
    crate::output::prepare_dir("--out", &args.out)?;
    crate::output::prepare_dir("--out", &args.out.join("figures"))?;
    let clock = Instant::now();
    experiments::reproduce_with(&args.options(interrupt::flag()), &mut |event| match event {
        Event::Stage(_) | Event::Done(_) => {
            eprintln!("[{:6.1} s] {event}", clock.elapsed().as_secs_f64());
        }
        _ => eprintln!("{event}"),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{Cli, Command};
    use clap::Parser;

    #[test]
    fn flags_become_the_experiments_options() {
        let cli = Cli::try_parse_from(["mdem", "reproduce"]).unwrap();
        let Command::Reproduce(args) = cli.command else {
            panic!("not reproduce");
        };
        let o = args.options(Arc::new(AtomicBool::new(false)));
        assert_eq!(o.out, PathBuf::from("results"));
        assert!(!o.quick && o.data_dir.is_none());
        assert_eq!(o.seed, experiments::DEFAULT_SEED);

        let cli = Cli::try_parse_from([
            "mdem",
            "reproduce",
            "--out",
            "r",
            "--quick",
            "--data-dir",
            "d",
            "--seed",
            "7",
        ])
        .unwrap();
        let Command::Reproduce(args) = cli.command else {
            panic!("not reproduce");
        };
        let flag = Arc::new(AtomicBool::new(false));
        let o = args.options(flag.clone());
        assert_eq!(o.out, PathBuf::from("r"));
        assert!(o.quick);
        assert_eq!(o.data_dir, Some(PathBuf::from("d")));
        assert_eq!(o.seed, 7);
        assert!(Arc::ptr_eq(&o.cancel, &flag));
    }
}
