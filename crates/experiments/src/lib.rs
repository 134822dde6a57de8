//! # mdem-experiments
//!
//! The experiments of Fruytier, Mokhtari & Sanghavi, *Learning Mixtures of Experts with
//! EM: A Mirror Descent Perspective* (ICML 2025), with their Markdown report and figures:
//! what `mdem reproduce` runs. The command line only parses its flags, hands over its
//! Ctrl-C flag and prints the progress; everything else is here.
//!
//! What is reproduced (each part compares EM, gradient EM and gradient descent from the
//! same starts):
//!
//! 1. **Synthetic** ([`synthetic`]): SymMoLinE and SymMoLogE, the paper's two symmetric
//!    experts, over seeded instances and three SNR values each: suboptimality and
//!    parameter errors per iteration, and the convergence certificate's rate
//!    ([`diagnostics::certificate::certify`]) beside the observed one;
//! 2. **Random Invert Digits** ([`digits`]): the paper's "Random Invert" protocol on the
//!    bundled scikit-learn digits (the paper used Fashion-MNIST), with the paper's numbers
//!    beside ours;
//! 3. **Diabetes and breast cancer** ([`tabular`]): gated mixtures of two linear-Gaussian,
//!    respectively logistic, experts on a fixed split.
//!
//! The entry point is [`reproduce()`] (or [`reproduce_with`], which reports its progress
//! as [`Event`]s), configured by [`Options`]; it writes `report.md` and `figures/` (SVG
//! and PNG) into [`Options::out`] and returns an [`Outcome`]. The run is seeded and, apart
//! from the timing columns, deterministic. Cancellation is cooperative: a raised
//! [`Options::cancel`] flag stops the running part at its runs' next iteration and the
//! report of what ran is still written; this crate never installs a signal handler.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use std::sync::Arc;
//!
//! let options = experiments::Options {
//!     quick: true,                               // a few instances: seconds, not minutes
//!     cancel: Arc::new(AtomicBool::new(false)), // raise it to stop early
//!     ..experiments::Options::new("results")
//! };
//! let outcome = experiments::reproduce_with(&options, &mut |event| eprintln!("{event}"))?;
//! println!("report: {}", outcome.report.display());
//! # Ok::<(), experiments::ExperimentsError>(())
//! ```
//!
//! ## Modules
//!
//! | module | what it holds |
//! |---|---|
//! | [`reproduce`](mod@reproduce) | the whole run: [`Plan`] (sizes), parts, interruption, the report's text and figures |
//! | [`synthetic`], [`digits`], [`tabular`] | the three experiments, each returning plain results |
//! | [`common`] | running a solver while recording its trajectory ([`common::run_recorded`]), bands and quantiles over instances |
//! | [`plot`] | line charts (several series, bands, log axes) as SVG or PNG, with an embedded font |
//! | [`report`] | plain-text tables and number formatting |
//! | [`error`] | [`ExperimentsError`] |
//!
//! [`plot`], [`report`] and [`common`] are also used by the `mdem` command's other
//! subcommands (`fit --plot`, `demo`, `compare`).

pub mod accel;
pub mod common;
pub mod digits;
pub mod error;
pub mod plot;
pub mod report;
pub mod reproduce;
pub mod synthetic;
pub mod tabular;

pub use error::ExperimentsError;
pub use reproduce::{reproduce, reproduce_with, Event, Options, Outcome, Plan, DEFAULT_SEED};
