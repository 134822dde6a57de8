//! The `mdem` binary: installs the Ctrl-C handler ([`mdem_cli::interrupt`]), runs
//! [`mdem_cli::run`], prints any error as one line `error: …` on stderr and exits with
//! its code (2 for bad input, 1 for a failed computation); a panic also becomes one line,
//! never a backtrace. A run interrupted by Ctrl-C writes its results, says so on stderr
//! and exits with 130 (also when it then failed).

use mdem_cli::interrupt;
use std::process::ExitCode;

fn main() -> ExitCode {
    mdem_cli::allocator::for_in_memory();
    mdem_cli::error::install_panic_hook();
    if let Err(e) = interrupt::install_handler() {
        eprintln!("warning: no Ctrl-C handler ({e}): an interrupt stops mdem at once");
    }
    let outcome = mdem_cli::run();
    if let Err(e) = &outcome {
        eprintln!("error: {}", mdem_cli::error::one_line(e));
    }
    if interrupt::interrupted() {
        eprintln!("{}", interrupt::notice());
        return ExitCode::from(interrupt::EXIT_INTERRUPTED);
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(mdem_cli::error::exit_code(&e)),
    }
}
