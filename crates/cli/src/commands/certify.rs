//! `mdem certify model.json DATA.csv [--json]`: the convergence certificate of EM for a
//! saved model's problem on a data set.
//!
//! A certificate ([`diagnostics::certificate`]) reads an EM *run*: its iterates and
//! objective values. A model file holds only the end point, so `certify` re-runs EM on
//! `DATA.csv` from the saved fit's start (the recorded seed, initialisation and kept restart;
//! k-means++ from seed 0 and the report's restart for a bare library model file), to
//! a tight tolerance, and certifies that run: measured relative smoothness $\hat L$ and
//! strong convexity $\hat\alpha$ with respect to the KL mirror map around the final
//! iterate, the rate $1 - \hat\alpha$ they certify, the observed rate, the EM-map and
//! missing-information rates, and a verdict. When the fit ran on standardised features
//! (`mdem fit`'s default), the re-run does too, with the training data's scaling (an
//! exact reparametrisation: the likelihoods, the Bregman ratios in $\Phi$ and the rates
//! are those of the original problem; the gradient norm is in standardised units). On
//! the training data the re-run retraces the
//! saved fit (deterministic starts, bit-identical reductions) and then continues to the
//! tighter tolerance; the distance between its end point and the saved parameters is
//! printed so a mismatch (other data, another optimum) is visible.
//!
//! Ctrl-C ([`crate::interrupt`]) stops the EM re-run at its next iteration; the
//! certificate is then computed on the run so far (the diagnostics themselves cannot be
//! interrupted but by a second Ctrl-C), and if it cannot be, the re-run's summary is
//! still printed with the reason in place of the certificate.

use crate::commands::predict::{
    check_target_support, read_clusters, read_for_prediction, row_error, target_column,
};
use crate::error::CliError;
use crate::interrupt;
use crate::model::{data_features, load_model};
use crate::report::{inexact_m_step_json, num, print_stdout, termination_warning};
use clap::Args;
use diagnostics::certificate::{certify, CertifyConfig};
use em_as_md::fit::init::InitMethod;
use em_as_md::fit::MoeParams;
use em_as_md::TrajectoryObserver;
use em_as_md::{Em, Executor, MoeError, ObserverMode, Problem, Termination};
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `mdem certify`.
#[derive(Debug, Clone, Args)]
pub struct CertifyArgs {
    /// Model file written by `mdem fit --out`.
    pub model: PathBuf,
    /// CSV file with the model's feature and target columns.
    pub data: PathBuf,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Iteration limit of the EM re-run.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_iter: u64,
    /// Target column name (default: the one saved with the model).
    #[arg(long)]
    pub target: Option<String>,
}

/// Relative tolerance of the EM re-run (on the change of $L$).
pub const RERUN_TOL: f64 = 1e-14;
/// Gradient-norm tolerance of the EM re-run.
pub const RERUN_GRAD_TOL: f64 = 1e-9;

/// Runs `mdem certify`.
///
/// # Errors
/// [`CliError::Model`] / [`CliError::Data`] / [`CliError::BadInput`] for bad input (exit
/// code 2), [`CliError::Compute`] or [`CliError::Diagnostics`] when the run or the
/// certificate cannot be computed.
pub fn run(args: &CertifyArgs) -> Result<(), CliError> {
    let loaded = load_model(&args.model)?;
    let fitted = &loaded.fitted;
    let file = args.data.display().to_string();
    let features = data_features(fitted);
    // A Gaussian mixture (no target) reads the columns of its coordinates.
    let (pd, target) = match &loaded.columns {
        Some(columns) => {
            if let Some(t) = &args.target {
                return Err(CliError::BadInput(format!(
                    "--target {}: the model is a Gaussian mixture of the columns {}; it has no target",
                    em_as_md::data::csv::clip(t),
                    columns.join(", ")
                )));
            }
            (read_clusters(&args.data, columns)?, String::new())
        }
        None => {
            let (target, _) =
                target_column(args.target.as_deref(), loaded.target.as_deref(), &features)?;
            if target.is_empty() {
                return Err(CliError::BadInput(format!(
                    "{}: the model file does not name its target column; give it with --target",
                    args.model.display()
                )));
            }
            let mut pd =
                read_for_prediction(&args.data, &target, true, &features, fitted.intercept())?;
            if let Some(s) = &loaded.scaling {
                pd.dataset = s
                    .apply(&pd.dataset)
                    .map_err(|e| CliError::compute("standardising", e))?;
            }
            check_target_support(fitted, &pd, &file, &target)?;
            (pd, target)
        }
    };
    let data = &pd.dataset;
    let model = fitted.model();
    let row_err = |e: MoeError| row_error(&file, &pd, &target, "certify", e);
    let problem = Problem::new(model, data).map_err(row_err)?;
    if model.n_experts() > data.n() {
        return Err(CliError::BadInput(format!(
            "{file}: {} experts but only {} data rows",
            model.n_experts(),
            data.n()
        )));
    }
    // The fit's start settings, to draw the kept restart's start again when the file has
    // none recorded (a gated fit's start from the ungated optimum re-fits the ungated
    // model with the library's default limits).
    let (params, seed) = match &loaded.start {
        Some(s) => match InitMethod::from_name(&s.init) {
            Some(init) => (
                MoeParams::for_model(model)
                    .init(init)
                    .seed(s.seed)
                    .n_init(s.n_init.max(1)),
                s.seed,
            ),
            None => {
                return Err(CliError::Model {
                    file: args.model.display().to_string(),
                    reason: format!(
                        "unknown initialisation \"{}\" (expected auto, random, subset, kmeans or short-em)",
                        s.init
                    ),
                })
            }
        },
        None => (
            MoeParams::for_model(model)
                .init(InitMethod::KMeansPlusPlus)
                .n_init(fitted.report().best_restart + 1),
            0,
        ),
    };
    // The recorded start when the file has it (on the same standardised design), else
    // drawn again.
    let restart = fitted.report().best_restart;
    let theta0 = params
        .check()
        .and_then(|p| p.kept_theta0(model, data, fitted.report()))
        .map_err(|e| CliError::compute(format!("{file}: starting point"), e))?;
    let traj = TrajectoryObserver::new();
    let result = Executor::new(problem, Em::new())
        .theta0(theta0)
        .max_iters(args.max_iter)
        .tol(RERUN_TOL)
        .grad_tol(RERUN_GRAD_TOL)
        .add_observer(Box::new(traj.clone()), ObserverMode::Always)
        .cancel(interrupt::flag())
        .run()
        .map_err(|e| CliError::compute(format!("{file}: EM re-run"), e))?;
    let (iterates, objectives) = traj.take();
    let interrupted = result.termination == Termination::Interrupted;
    // An interrupted re-run may be too short to certify: its summary is still printed.
    let cert = match certify(&problem, &iterates, &objectives, &CertifyConfig::default()) {
        Ok(mut c) => {
            // A re-run that did not converge (an inexact M-step, the iteration limit, an
            // interrupt) certifies nothing: the certificate says so.
            c.account_for(&result.termination);
            Ok(c)
        }
        Err(e) if interrupted => Err(e.to_string()),
        Err(e) => return Err(e.into()),
    };
    let end = &result.state.theta;
    // The saved θ̂ is in the data's units; EM ran on the standardised design.
    let saved = match &loaded.scaling {
        Some(s) => s
            .to_standardized(model, fitted.theta())
            .map_err(|e| CliError::compute("standardising the saved parameters", e))?,
        None => fitted.theta().to_vec(),
    };
    let saved = &saved[..];
    let dist = {
        let num2: f64 = end.iter().zip(saved).map(|(a, b)| (a - b) * (a - b)).sum();
        let den: f64 = saved.iter().map(|b| b * b).sum();
        (num2 / den.max(f64::MIN_POSITIVE)).sqrt()
    };
    let l_saved = problem
        .objective(saved)
        .map_err(|e| CliError::compute(format!("{file}: objective at the saved parameters"), e))?;
    let n = data.n() as f64;
    // The log-likelihood ℓ = −nL + R, as `fit` reports it (L counts a ridge's penalty R).
    let ll =
        |l: f64, theta: &[f64]| em_as_md::ConditionalFamily::penalty(problem.model, theta) - n * l;
    let (ll_rerun, ll_saved) = (ll(result.state.objective, end), ll(l_saved, saved));
    if args.json {
        let c: serde_json::Value = match &cert {
            Ok(cert) => {
                serde_json::from_str(&cert.to_json()?).map_err(|e| CliError::output("stdout", e))?
            }
            Err(reason) => {
                json!({ "error": format!("not computed on the interrupted run: {reason}") })
            }
        };
        let out = json!({
            "model": args.model.display().to_string(),
            "data": file,
            "rows": data.n(),
            "rerun": {
                "seed": seed,
                "restart": restart,
                "iterations": result.state.iter,
                "termination": result.termination.to_string(),
                "converged": result.termination.is_converged(),
                "inexact_m_step": inexact_m_step_json(&result.termination),
                "log_likelihood": ll_rerun,
            },
            "saved_log_likelihood": ll_saved,
            "relative_distance_to_saved": dist,
            "certificate": c,
        });
        return print_stdout(&format!("{out}\n"));
    }
    let warning =
        termination_warning(&result.termination).map_or_else(String::new, |w| format!("{w}\n"));
    let text = format!(
        "EM re-run on {file} ({} rows) from the saved fit's start (seed {seed}, restart {restart}): {} iterations, {}\n{warning}\
         log-likelihood: re-run {}, saved model {}; ‖θ_rerun − θ_saved‖/‖θ_saved‖ = {}\n\n{}",
        data.n(),
        result.state.iter,
        result.termination,
        num(ll_rerun, 10),
        num(ll_saved, 10),
        num(dist, 3),
        match &cert {
            Ok(c) if interrupted => format!(
                "(the re-run was interrupted: this certificate reads the iterates before the interrupt)\n{c}"
            ),
            Ok(c) => c.to_string(),
            Err(reason) => format!(
                "certificate: not computed on the interrupted re-run: {reason}\n"
            ),
        },
    );
    print_stdout(&text)
}
