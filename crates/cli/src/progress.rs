//! A progress bar for long fits: an [`Observer`] that ticks once per iteration.
//!
//! Clones share one bar, so parallel restarts can all tick the same bar (its length is
//! then the total iteration budget of all restarts).
//!
//! Clones share one bar, so parallel restarts can all tick the same bar (its length is
//! then the total iteration budget of all restarts).
//!
//! The bar is drawn on stderr only when it is wanted and useful: not with `--quiet` or
//! `--json`, and only when stderr is a terminal ([`show_progress`]). Otherwise the
//! observer is hidden and costs nothing but a counter.

use em_as_md::{FitState, IterRecord, Observer, Termination};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Whether to draw a progress bar: not `quiet`, not `json`, and stderr is a terminal.
pub fn show_progress(quiet: bool, json: bool) -> bool {
    !quiet && !json && std::io::stderr().is_terminal()
}

/// Ticks a progress bar per iteration with the current objective.
///
/// Cloning shares the bar (indicatif bars are shared handles), so one clone can be boxed
/// into an executor while the caller keeps another to finish the bar.
#[derive(Debug, Clone)]
pub struct ProgressObserver {
    bar: ProgressBar,
    label: String,
}

impl ProgressObserver {
    /// A bar of `max_iters` steps labelled `label` (e.g. "restart 2/5"), drawn on stderr
    /// when `visible`, hidden otherwise.
    pub fn new(label: impl Into<String>, max_iters: u64, visible: bool) -> Self {
        let bar = if visible {
            let b = ProgressBar::with_draw_target(Some(max_iters), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos:>5}/{len:5} {elapsed_precise} {msg}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b
        } else {
            ProgressBar::hidden()
        };
        let label = label.into();
        bar.set_prefix(label.clone());
        ProgressObserver { bar, label }
    }
    /// Iterations counted so far.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }
    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
    /// The label.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Observer for ProgressObserver {
    fn observe_iter(&mut self, _state: &FitState, record: &IterRecord) {
        self.bar.inc(1);
        self.bar.set_message(format!(
            "iter {}  L = {:.8e}",
            record.iter, record.objective
        ));
    }
    fn observe_final(&mut self, _state: &FitState, _termination: Termination) {
        self.bar.tick();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use em_as_md::InnerStats;

    #[test]
    fn hidden_bar_counts_iterations() {
        let keep = ProgressObserver::new("fit", 10, false);
        let mut boxed: Box<dyn Observer> = Box::new(keep.clone());
        let st = FitState::new(vec![0.0], 1.0);
        boxed.observe_init("EM", &st);
        for t in 1..=3 {
            let r = IterRecord {
                iter: t,
                objective: 1.0 / t as f64,
                grad_norm: f64::NAN,
                bregman_step: f64::NAN,
                inner: InnerStats::default(),
                step: Default::default(),
                elapsed: 0.0,
            };
            boxed.observe_iter(&st, &r);
        }
        assert_eq!(keep.position(), 3);
        assert_eq!(keep.label(), "fit");
        keep.finish();
    }

    #[test]
    fn quiet_and_json_hide_the_bar() {
        assert!(!show_progress(true, false));
        assert!(!show_progress(false, true));
    }
}
