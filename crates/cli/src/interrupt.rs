//! Ctrl-C: one process-wide cancellation flag, raised by a signal handler that the
//! binary installs once ([`install_handler`], called from `main`).
//!
//! The libraries never install a handler; em-as-md's [`Executor`](em_as_md::Executor) (and
//! [`MoeParams::cancel`](em_as_md::MoeParams::cancel) for restarts) accepts a flag and
//! checks it before every step, ending the run with
//! [`Termination::Interrupted`](em_as_md::Termination::Interrupted) and the best iterate
//! so far, and the paper reproduction takes one as
//! [`experiments::Options::cancel`]. The command line
//! hands every executor it builds, and the reproduction, the [`flag`] of this module:
//!
//! * the **first** Ctrl-C raises the flag and says so on stderr: every running solver
//!   stops before its next iteration, runs that have not started stop at their start, and
//!   the subcommand still prints and writes what it has (the best iterates so far); `main`
//!   then says on stderr that the run was interrupted and exits with [`EXIT_INTERRUPTED`]
//!   (130, the shell's code for SIGINT);
//! * a **second** Ctrl-C exits at once with the same code.
//!
//! What cannot be interrupted: work that does not go through an executor — reading and
//! checking the CSV, the k-means++ initialisation, the certificate's diagnostics after the
//! EM run in `certify`, drawing figures. The flag is read again only when the next solver
//! step would start, so a long step (one M-step) finishes first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Exit code of a run stopped by Ctrl-C ($128 + \text{SIGINT}$, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The process-wide cancellation flag (created lowered on first use); every executor the
/// command line builds gets a clone of it.
pub fn flag() -> Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone()
}

/// Whether Ctrl-C has been pressed (the process-wide [`flag`] is raised).
pub fn interrupted() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::SeqCst))
}

/// What one press does, given the flag: the first raises it and returns
/// [`Press::First`], any later one returns [`Press::Again`] (the handler then exits).
pub fn press(flag: &AtomicBool) -> Press {
    if flag.swap(true, Ordering::SeqCst) {
        Press::Again
    } else {
        Press::First
    }
}

/// The outcome of one Ctrl-C, see [`press`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    /// The flag was lowered and is now raised: runs stop at their next iteration.
    First,
    /// The flag was already raised: exit at once.
    Again,
}

/// Installs the Ctrl-C handler (once per process; the binary's `main` calls it).
///
/// # Errors
/// The `ctrlc` crate's error when a handler is already installed or the signal cannot be
/// hooked; the command line then runs without one.
pub fn install_handler() -> Result<(), ctrlc::Error> {
    let flag = flag();
    ctrlc::set_handler(move || {
        match press(&flag) {
        Press::First => eprintln!(
            "\nmdem: interrupted: stopping every run at its next iteration and writing the results so far (Ctrl-C again to quit at once)"
        ),
        Press::Again => {
            eprintln!("\nmdem: interrupted again: quitting now");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    }
    })
}

/// The line `main` prints on stderr after a subcommand that was interrupted has written
/// its results.
pub fn notice() -> &'static str {
    "mdem: the run was interrupted (Ctrl-C): solvers stopped early; the results printed and written are the best iterates reached before the interrupt"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_press_raises_the_flag_second_quits() {
        let f = AtomicBool::new(false);
        assert_eq!(press(&f), Press::First);
        assert!(f.load(Ordering::SeqCst));
        assert_eq!(press(&f), Press::Again);
        assert_eq!(press(&f), Press::Again);
    }

    #[test]
    fn process_flag_is_shared_and_starts_lowered() {
        let a = flag();
        let b = flag();
        assert!(Arc::ptr_eq(&a, &b));
        // No test raises the process-wide flag (tests run in parallel in one process).
        assert!(!a.load(Ordering::SeqCst));
        assert!(!interrupted());
    }
}
