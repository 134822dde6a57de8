//! How the command line runs a fit: the library's validated parameters and seeded
//! restarts ([`em_as_md::fit::MoeParams`]), with an observer on every restart (the
//! progress bar) and a cancellation flag (Ctrl-C, [`crate::interrupt`]).

use crate::progress::ProgressObserver;
use em_as_md::fit::init::InitMethod;
use em_as_md::fit::presample::Presample;
use em_as_md::fit::UngatedStart;
use em_as_md::model::mixture::Gating;
use em_as_md::{Accel, Dataset, Expert, FittedMoe, GateConfig, MoeError, MoeParams, ObserverMode};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Settings of a command-line fit.
#[derive(Debug, Clone)]
pub struct FitSettings {
    /// Number of experts $K$.
    pub n_experts: usize,
    /// The expert (built from its registry description).
    pub expert: Arc<dyn Expert>,
    /// Gating.
    pub gating: Gating,
    /// Number of seeded restarts.
    pub n_init: usize,
    /// Master seed.
    pub seed: u64,
    /// EM iteration limit per restart.
    pub max_iters: u64,
    /// Relative tolerance on the change of $L$.
    pub tol: f64,
    /// How restarts start.
    pub init: InitMethod,
    /// How EM is accelerated ([`MoeParams::accel`]).
    pub accel: Accel,
    /// When a gated fit also starts from the ungated optimum ([`MoeParams::ungated_start`]).
    pub ungated_start: UngatedStart,
    /// Ridge on the softmax gate's coefficients ([`em_as_md::GateConfig::ridge`]; 0:
    /// none). The experts' ridge is part of the expert.
    pub gate_ridge: f64,
    /// Fit the starts on a random sample (these rows, or this fraction of them), then EM
    /// on all rows from the best ([`em_as_md::MoeValidParams::fit_presampled`]); `None`:
    /// every start on all rows.
    pub presample: Option<Presample>,
    /// Cancellation flag shared by all restarts (the command line passes
    /// [`crate::interrupt::flag`]): once raised, every restart stops before its next
    /// iteration with [`em_as_md::Termination::Interrupted`] and the best restart so far
    /// is returned as usual.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Fits by EM with [`MoeParams`] (restarts in parallel; on a sample first with
/// `settings.presample`), ticking `progress` once per iteration of any restart and
/// stopping early when `settings.cancel` is raised.
///
/// # Errors
/// As [`MoeParams::check`], [`em_as_md::MoeValidParams::fit`] and
/// [`em_as_md::MoeValidParams::fit_presampled`].
pub fn fit_em(
    data: &Dataset,
    settings: &FitSettings,
    progress: Option<ProgressObserver>,
) -> Result<FittedMoe, MoeError> {
    let params = fit_params(settings, progress).check()?;
    match settings.presample {
        Some(sample) => params.fit_presampled(data, sample.rows(data.n())),
        None => params.fit(data),
    }
}

/// [`fit_em`] on a row source read in passes, started from a fit on `sample`
/// ([`em_as_md::MoeValidParams::fit_stream`]).
///
/// # Errors
/// As [`em_as_md::MoeValidParams::fit_stream`].
pub fn fit_em_stream(
    source: &dyn em_as_md::data::source::RowSource,
    sample: &Dataset,
    settings: &FitSettings,
    progress: Option<ProgressObserver>,
) -> Result<FittedMoe, MoeError> {
    fit_params(settings, progress)
        .check()?
        .fit_stream(source, sample)
}

/// The library's hyperparameters for `settings`, with `progress` observing every start.
fn fit_params(settings: &FitSettings, progress: Option<ProgressObserver>) -> MoeParams {
    let mut params = MoeParams::new(settings.n_experts)
        .expert_shared(settings.expert.clone())
        .gating(settings.gating)
        .n_init(settings.n_init)
        .seed(settings.seed)
        .max_iters(settings.max_iters)
        .tol(settings.tol)
        .init(settings.init.clone())
        .accel(settings.accel)
        .ungated_start(settings.ungated_start)
        .gate_config(GateConfig {
            ridge: settings.gate_ridge,
            ..GateConfig::default()
        });
    if let Some(flag) = &settings.cancel {
        params = params.cancel(flag.clone());
    }
    if let Some(bar) = progress {
        params = params.observe(move |_| (Box::new(bar.clone()), ObserverMode::Always));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use em_as_md::{ConditionalFamily, Termination};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::sync::atomic::Ordering;

    /// Two well-separated linear regimes, $y = \pm 2x + \varepsilon$ by the sign of a
    /// second feature, with an intercept.
    fn two_regimes(n: usize) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut x = Vec::with_capacity(2 * n);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let (a, g): (f64, f64) = (rng.random_range(-2.0..2.0), rng.random_range(-1.0..1.0));
            let e: f64 = rng.random_range(-0.3..0.3);
            x.extend([a, g]);
            y.push(if g > 0.0 { 2.0 * a } else { -2.0 * a } + e);
        }
        Dataset::from_rows(&x, 2, &y, 1).unwrap().with_intercept()
    }

    fn settings(cancel: Option<Arc<AtomicBool>>) -> FitSettings {
        FitSettings {
            n_experts: 2,
            expert: Arc::new(em_as_md::LinearGaussian::new()),
            gating: Gating::Softmax,
            n_init: 3,
            seed: 5,
            max_iters: 200,
            tol: 1e-10,
            init: InitMethod::KMeansPlusPlus,
            accel: Accel::default(),
            ungated_start: UngatedStart::default(),
            gate_ridge: 0.0,
            presample: None,
            cancel,
        }
    }

    #[test]
    fn a_raised_flag_ends_the_fit_interrupted_with_results() {
        let data = two_regimes(300);
        let flag = Arc::new(AtomicBool::new(true));
        let fitted = fit_em(&data, &settings(Some(flag.clone())), None).unwrap();
        let rep = fitted.report();
        assert_eq!(rep.termination, Termination::Interrupted);
        assert_eq!(rep.iterations, 0);
        assert!(rep
            .restarts
            .iter()
            .all(|r| r.termination == Some(Termination::Interrupted)));
        // Results are still there: the best start's parameters and a finite likelihood.
        assert_eq!(fitted.theta().len(), fitted.model().n_params());
        assert!(fitted.theta().iter().all(|v| v.is_finite()));
        assert!(rep.log_likelihood.is_finite());
        assert!(fitted.responsibilities(&data).is_ok());
        assert!(flag.load(Ordering::SeqCst), "the fit never lowers the flag");

        // The same fit with the flag lowered runs and ends otherwise, at a higher
        // likelihood than the interrupted one's start.
        let lowered = Arc::new(AtomicBool::new(false));
        let full = fit_em(&data, &settings(Some(lowered)), None).unwrap();
        assert_ne!(full.report().termination, Termination::Interrupted);
        assert!(full.report().iterations > 0);
        assert!(full.report().log_likelihood > rep.log_likelihood + 1.0);
        // No flag at all: the same as a lowered one.
        let none = fit_em(&data, &settings(None), None).unwrap();
        assert_eq!(none.theta(), full.theta());
    }
}
