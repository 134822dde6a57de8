//! The `mdem` binary: runs [`mdem_cli::run`], prints any error as one line
//! `error: …` on stderr and exits with its code (2 for bad input, 1 for a failed
//! computation); a panic also becomes one line, never a backtrace.

use std::process::ExitCode;

fn main() -> ExitCode {
    mdem_cli::error::install_panic_hook();
    match mdem_cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", mdem_cli::error::one_line(&e));
            ExitCode::from(mdem_cli::error::exit_code(&e))
        }
    }
}
