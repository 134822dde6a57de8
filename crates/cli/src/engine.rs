//! How the command line runs a fit: the library's seeded restarts
//! ([`em_as_md::fit`]), each through the [`Executor`] with an observer attached (a
//! progress bar), assembled into a [`FittedMoe`].
//!
//! This is [`MoeValidParams::fit`](em_as_md::fit::MoeValidParams::fit) step for step —
//! the same starts ([`initial_theta`] on the master seed's stream $r$), the same EM
//! solver, restarts in parallel, the best log-likelihood kept (ties: lowest index), the
//! same [`FitReport`] — with one addition the library's parameters do not offer: an
//! observer per restart, so the command can show progress.

use em_as_md::fit::initial_theta;
use em_as_md::init::InitMethod;
use em_as_md::moe::MixtureOfExperts;
use em_as_md::predict::{training_summaries, FitReport, FittedMoe, RestartSummary, Spread};
use em_as_md::{
    ConditionalFamily, Dataset, Em, Executor, FitResult, MoeError, Observer, ObserverMode, Problem,
};
use rayon::prelude::*;
use std::time::Instant;

/// Settings of a command-line fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitSettings {
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
}

/// Fits `model` to `data` by EM from `settings.n_init` seeded restarts (in parallel);
/// `observer(r)` gives an observer for restart `r` (e.g. a progress bar).
///
/// # Errors
/// `InvalidParam { name: "n_experts" }` for more experts than rows, `InvalidData` for
/// fewer rows than parameters or a target outside the support, the first restart's error
/// when every restart fails.
pub fn fit_em(
    model: &MixtureOfExperts,
    data: &Dataset,
    settings: &FitSettings,
    observer: impl Fn(usize) -> Option<Box<dyn Observer>> + Sync,
) -> Result<FittedMoe, MoeError> {
    let clock = Instant::now();
    if model.n_experts() > data.n() {
        return Err(MoeError::InvalidParam {
            name: "n_experts",
            reason: format!("{} experts for {} rows", model.n_experts(), data.n()),
        });
    }
    if data.n() < model.n_params() {
        return Err(MoeError::InvalidData {
            row: None,
            column: None,
            reason: format!(
                "{} rows are fewer than the {} free parameters of the model",
                data.n(),
                model.n_params()
            ),
        });
    }
    Problem::new(model, data)?;
    let runs: Vec<Result<FitResult, MoeError>> = (0..settings.n_init.max(1))
        .into_par_iter()
        .map(|r| {
            let theta0 = initial_theta(model, data, &settings.init, settings.seed, r)?;
            let mut ex = Executor::new(Problem::new(model, data)?, Em::new())
                .theta0(theta0)
                .max_iters(settings.max_iters)
                .tol(settings.tol);
            if let Some(o) = observer(r) {
                ex = ex.add_observer(o, ObserverMode::Always);
            }
            ex.run()
        })
        .collect();
    let n = data.n() as f64;
    let restarts: Vec<RestartSummary> = runs
        .iter()
        .enumerate()
        .map(|(index, r)| match r {
            Ok(f) => RestartSummary {
                index,
                log_likelihood: Some(-n * f.best.objective),
                termination: Some(f.termination),
                iterations: f.state.iter,
                error: None,
            },
            Err(e) => RestartSummary {
                index,
                log_likelihood: None,
                termination: None,
                iterations: 0,
                error: Some(e.to_string()),
            },
        })
        .collect();
    let mut best: Option<(usize, &FitResult)> = None;
    for (i, r) in runs.iter().enumerate() {
        if let Ok(f) = r {
            if best.is_none_or(|(_, b)| f.best.objective < b.best.objective) {
                best = Some((i, f));
            }
        }
    }
    let Some((best_restart, result)) = best else {
        let first = runs.into_iter().next().and_then(Result::err);
        return Err(first.unwrap_or(MoeError::InvalidParam {
            name: "n_init",
            reason: ">= 1".into(),
        }));
    };
    let theta = result.best.theta.clone();
    let (log_likelihood, entropy) = training_summaries(model, data, &theta)?;
    let lls: Vec<f64> = restarts.iter().filter_map(|r| r.log_likelihood).collect();
    let report = FitReport {
        solver: "EM".into(),
        n_rows: data.n(),
        log_likelihood,
        entropy,
        iterations: result.state.iter,
        termination: result.termination,
        seconds: clock.elapsed().as_secs_f64(),
        trace: result.trace.clone(),
        best_restart,
        spread: Spread::of(&lls),
        restarts,
    };
    FittedMoe::new(model.clone(), theta, data.feature_names().to_vec(), report)
}
