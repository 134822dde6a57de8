//! `mdem fit --stream`: the fit over a CSV file read in passes of `--chunk-rows` rows
//! ([`em_as_md::data::source::FileSource`], [`em_as_md::MoeValidParams::fit_stream`]),
//! memory bounded by the chunk.

use super::fit::{cluster_options, convergence_warnings, in_data_units, FitArgs, GAUSSIAN};
use crate::engine::{fit_em_stream, FitSettings};
use crate::error::CliError;
use crate::model::{params_json, params_tables, save_cluster_model, save_model, StartInfo};
use crate::phases::{peak_rss_bytes, Phases};
use crate::progress::{show_progress, ProgressObserver};
use crate::report::{num, print_stdout, separated_json, Align, Table};
use em_as_md::data::csv::LoadedData;
use em_as_md::data::source::{CsvSpec, FileSource, RowSource};
use em_as_md::fit::minibatch::{MiniBatchEm, StepSchedule};
use em_as_md::fit::predict::{FitReport, RestartSummary, Spread};
use em_as_md::fit::stream::stream_summaries;
use em_as_md::model::registry;
use em_as_md::{ConditionalFamily, Expert, FittedMoe, Gating, GaussianCluster, MoeError};
use em_as_md::{Dataset, Termination};
use serde_json::json;
use std::sync::Arc;

/// Runs `mdem fit … --stream`.
///
/// # Errors
/// Bad arguments and data ([`CliError::BadInput`], the source's one-line messages naming
/// file, line and column, a file that changed during the fit) and fit failures.
pub fn run(args: &FitArgs, mut phases: Phases) -> Result<(), CliError> {
    crate::allocator::for_streaming();
    let m = &args.model;
    // A Gaussian mixture (no target): the selected columns are the coordinates of y and
    // the design is the intercept alone, never standardised.
    let cluster = if m.expert == GAUSSIAN {
        Some(cluster_options(args)?)
    } else {
        None
    };
    let clustering = cluster.is_some();
    m.ridge()?;
    if m.drop_constant {
        return Err(CliError::BadInput(
            "--drop-constant: not available with --stream; name the columns with --features".into(),
        ));
    }
    let target = if clustering {
        String::new()
    } else {
        m.target_name()?.to_string()
    };
    let spec = CsvSpec {
        target: (!clustering).then(|| target.clone()),
        features: m.features.clone(),
        intercept: clustering || !m.no_intercept,
        sample_rows: args.sample_rows as usize,
        seed: args.seed,
    };
    let source_error = |e: MoeError| match e {
        MoeError::Source(s) => CliError::BadInput(s),
        e => CliError::compute(format!("{}: reading", m.data.display()), e),
    };
    // Mini-batches are the source's chunks.
    let chunk = args.minibatch.unwrap_or(args.chunk_rows) as usize;
    let (source, survey) = FileSource::open(&m.data, &spec, chunk).map_err(source_error)?;
    let file = m.data.display().to_string();
    let columns = source.columns().to_vec();
    let names = source.feature_names().to_vec();
    let features: Vec<String> = names
        .iter()
        .filter(|n| *n != "(intercept)")
        .cloned()
        .collect();
    let expert: Arc<dyn Expert> = match cluster {
        Some((cov, reg)) => Arc::new(
            GaussianCluster::new(columns.len(), cov, reg)
                .map_err(|e| CliError::BadInput(format!("{file}: {e}")))?,
        ),
        None => {
            let entry = registry::expert_entry(&m.expert)
                .map_err(|e| CliError::BadInput(format!("--expert {}: {e}", m.expert)))?;
            // The expert's description from the target, as `fit` reads it (on the
            // sample: every row's target is checked again in the passes).
            let probe = LoadedData {
                dataset: survey.sample.clone(),
                file: file.clone(),
                columns: Vec::new(),
                target: target.clone(),
                features: features.clone(),
                intercept: !m.no_intercept,
                lines: Vec::new(),
                warnings: Vec::new(),
            };
            let expert_spec = crate::csvdata::expert_spec(&probe, &entry).ok_or_else(|| {
                CliError::BadInput(format!(
                    "--expert {}: the command line cannot build this expert from a target column",
                    m.expert
                ))
            })??;
            registry::build_expert(&m.with_ridge(expert_spec)?)
                .map_err(|e| CliError::BadInput(format!("{file}: {e}")))?
        }
    };
    let (scaling, source, mut sample) = if m.no_standardize || clustering {
        (None, source, survey.sample)
    } else {
        let s = survey.scaling.clone();
        let mut sample = survey.sample;
        s.apply_in_place(&mut sample)
            .map_err(|e| CliError::compute("standardising", e))?;
        let source = source
            .standardised(s.clone())
            .map_err(|e| CliError::compute("standardising", e))?;
        (Some(s), source, sample)
    };
    sample = sample
        .with_feature_names(names.clone())
        .map_err(|e| CliError::compute("sample", e))?;
    phases.lap("read");
    let k = m.experts as usize;
    let n = source.n_rows();
    if k > n {
        return Err(CliError::BadInput(format!(
            "{file}: {k} experts but only {n} data rows; expected at most as many experts as rows"
        )));
    }
    let gating = if clustering {
        Gating::Constant
    } else {
        m.gating()
    };
    let settings = args.settings(k, expert, gating)?;
    let bar = ProgressObserver::new(
        "streamed EM",
        settings.max_iters,
        show_progress(args.quiet, args.json),
    );
    phases.lap("check");
    let minibatch = args.minibatch.map(|_| MiniBatchEm {
        passes: args.passes,
        schedule: StepSchedule {
            eta0: args.step_eta0,
            t0: args.step_t0,
            a: args.step_a,
        },
        average: !args.no_average,
        evaluate: true,
    });
    let mut trajectory = Vec::new();
    let fitted = match &minibatch {
        None => fit_em_stream(&source, &sample, &settings, Some(bar.clone())),
        Some(mb) => fit_minibatch(mb, &source, &sample, &settings, &mut trajectory),
    };
    bar.finish();
    let fitted = fitted.map_err(|e| match e {
        MoeError::Source(s) => CliError::BadInput(s),
        e => CliError::compute(format!("{file}: fitting"), e),
    })?;
    phases.lap("fit");
    // The ridge is defined on the columns the fit ran on: its value before mapping back.
    let penalty = fitted.penalty();
    let fitted = in_data_units(fitted, scaling.as_ref())?;
    if let Some(path) = &args.out {
        let start = StartInfo {
            seed: settings.seed,
            n_init: settings.n_init,
            best_restart: 0,
            init: settings.init.name().into(),
        };
        if clustering {
            save_cluster_model(&fitted, &columns, Some(&start), path)?;
        } else {
            save_model(&fitted, &target, scaling.as_ref(), Some(&start), path)?;
        }
    }
    phases.lap("output");
    // A Gaussian mixture's parameters are labelled by its coordinates, not the design.
    let names: Vec<String> = if clustering { Vec::new() } else { names };
    let rep = fitted.report();
    let model = fitted.model();
    let theta = fitted.theta();
    // EM-equivalent passes over the file: every E-step and Newton round of the run.
    let passes: u64 = rep
        .trace
        .iter()
        .map(|r| r.step.passes + r.inner.iterations + r.inner.hessians)
        .sum();
    if args.json {
        let out = json!({
            "file": file,
            "rows": n,
            "stream": true,
            "chunk_rows": args.chunk_rows,
            "sample_rows": sample.n(),
            "target": (!clustering).then_some(&target),
            "gaussian_mixture": cluster.map(|(cov, reg)| json!({
                "columns": columns,
                "covariance": cov.name(),
                "reg_covar": reg,
            })),
            "features": features,
            "intercept": !m.no_intercept,
            "fitted_on_standardized_features": scaling.is_some(),
            "expert": model.expert().spec(),
            "experts": k,
            "gating": gating,
            "n_params": model.n_params(),
            "log_likelihood": rep.log_likelihood,
            "ridge": m.ridge_json(penalty, rep.log_likelihood)?,
            "average_negative_log_likelihood": -rep.log_likelihood / n as f64,
            "iterations": rep.iterations,
            "termination": rep.termination.to_string(),
            "converged": rep.converged(),
            "separated": separated_json(&rep.termination),
            "approximate_passes": passes,
            "minibatch": minibatch.map(|mb| json!({
                "batch_rows": chunk,
                "passes": mb.passes,
                "schedule": mb.schedule,
                "polyak_average": mb.average,
                "log_likelihood_per_pass": trajectory
                    .iter()
                    .map(|&(p, l)| json!([p, -(n as f64) * l]))
                    .collect::<Vec<_>>(),
            })),
            "seconds": rep.seconds,
            "seconds_by_phase": phases.json(),
            "peak_rss_bytes": peak_rss_bytes(),
            "aic": fitted.aic(),
            "bic": fitted.bic(),
            "solver": rep.solver,
            "accel": args.accel.as_str(),
            "parameters": params_json(model, theta, &names),
        });
        return print_stdout(&format!("{out}\n"));
    }
    let mut summary = Table::new(["quantity", "value"]).align(1, Align::Left);
    summary.row([
        "data".to_string(),
        format!(
            "{file} ({n} rows read in passes of {} rows, {} design columns)",
            args.chunk_rows,
            names.len()
        ),
    ]);
    summary.row([
        "start".to_string(),
        format!("fitted on a random sample of {} rows", sample.n()),
    ]);
    summary.row(["parameters".to_string(), model.n_params().to_string()]);
    summary.row([
        "log-likelihood (total, natural log)".to_string(),
        num(rep.log_likelihood, 10),
    ]);
    if let Some(row) = m.ridge_row(penalty, rep.log_likelihood)? {
        summary.row(row);
    }
    summary.row(["solver".to_string(), rep.solver.clone()]);
    summary.row(["iterations".to_string(), rep.iterations.to_string()]);
    summary.row(["termination".to_string(), rep.termination.to_string()]);
    summary.row(["seconds".to_string(), num(rep.seconds, 3)]);
    if let Some(b) = peak_rss_bytes() {
        summary.row([
            "peak memory".to_string(),
            format!("{:.1} MB", b as f64 / 1e6),
        ]);
    }
    summary.row(["AIC".to_string(), num(fitted.aic(), 10)]);
    summary.row(["BIC".to_string(), num(fitted.bic(), 10)]);
    let (experts, gate) = params_tables(model, theta, &names);
    let mut text = format!("{summary}\n");
    for w in convergence_warnings(rep) {
        text.push_str(&format!("{w}\n"));
    }
    text.push_str(&format!("Experts\n{experts}\nGate\n{gate}"));
    if let Some(path) = &args.out {
        text.push_str(&format!("model written to {}\n", path.display()));
    }
    print_stdout(&text)
}

/// Mini-batch EM over `source` from the best start of an in-memory fit on `sample`: the
/// fitted model with a report whose termination is the pass limit (a stochastic run
/// has no convergence test) and whose trace is empty; the per-pass values of $L$ go to
/// `trajectory` (`(passes, L)`).
fn fit_minibatch(
    mb: &MiniBatchEm,
    source: &FileSource,
    sample: &Dataset,
    settings: &FitSettings,
    trajectory: &mut Vec<(f64, f64)>,
) -> Result<FittedMoe, MoeError> {
    let clock = std::time::Instant::now();
    let start = crate::engine::fit_em(sample, settings, None)?;
    let start_seconds = clock.elapsed().as_secs_f64();
    let model = start.model().clone();
    let run = mb.run(&model, source, start.theta())?;
    trajectory.clone_from(&run.trajectory);
    let summaries = stream_summaries(&model, source, &run.theta_avg)?;
    let (log_likelihood, entropy) = (summaries.log_likelihood, summaries.entropy);
    let n = source.n_rows();
    let seconds = clock.elapsed().as_secs_f64();
    let report = FitReport {
        solver: format!(
            "mini-batch EM (stochastic mirror descent), {} batches of {} rows{}",
            run.steps,
            source.chunk_rows(),
            if mb.average { ", Polyak average" } else { "" }
        ),
        n_rows: n,
        log_likelihood,
        entropy,
        iterations: run.steps,
        termination: Termination::MaxIters,
        seconds,
        trace: Vec::new(),
        best_restart: 0,
        spread: Spread::of(&[log_likelihood]),
        start_theta: Vec::new(),
        ungated: None,
        restarts: vec![RestartSummary {
            index: 0,
            init: em_as_md::fit::stream::SAMPLE_START.into(),
            log_likelihood: Some(log_likelihood),
            termination: Some(Termination::MaxIters),
            iterations: run.steps,
            error: None,
            retry_errors: Vec::new(),
            seconds: seconds - start_seconds,
            start_seconds,
            start_em_seconds: 0.0,
        }],
    };
    FittedMoe::new(
        model,
        run.theta_avg,
        source.feature_names().to_vec(),
        report,
    )
}
