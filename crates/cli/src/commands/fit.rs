//! `mdem fit DATA.csv --target y --experts K --expert NAME`: fits a mixture of experts by
//! EM and reports it.
//!
//! The experts offered are the registry's (`em_as_md::model::registry`): every entry with a
//! target rule — the built-ins `linear`, `logistic`, `multinomial` and `poisson`, and any
//! a program registers before parsing the command line. `mdem fit --help` lists them with
//! their summaries; the entry checks the target column against the expert's support (one
//! line naming file, line, column and what was expected) and infers the expert's
//! description from it (a multinomial expert's classes).
//!
//! The reported log-likelihood is the **total** over the rows, in natural log, with every
//! normalising constant included,
//! $$ \log L = \sum_{i=1}^n \log p(y_i \mid x_i; \hat\theta) = -n\,L(\hat\theta), $$
//! so it is comparable with R's `logLik` (for one linear expert it is the Gaussian
//! maximum-likelihood value $-\tfrac n2(\log(2\pi\hat\sigma^2) + 1)$, tested).
//!
//! Steps: load and check the CSV ([`em_as_md::data::csv`]: intercept by default, constant
//! columns reported), check the target's support ([`crate::csvdata`]) and the model's size against the rows,
//! standardise the columns ([`em_as_md::fit::scaling`], an exact reparametrisation; off with
//! `--no-standardize`), run EM with seeded restarts ([`crate::engine`], a progress bar on
//! stderr when it is a terminal), map $\hat\theta$ back to the data's units, then print the
//! summary table (or one JSON object with `--json`), and write the model (`--out`) and
//! the objective trace (`--plot`).
//!
//! Ctrl-C ([`crate::interrupt`]) stops every restart at its next iteration; the best
//! restart so far is then reported and saved as usual, with termination "interrupted".

use crate::csvdata;
use crate::engine::{fit_em, FitSettings};
use crate::error::CliError;
use crate::interrupt;
use crate::model::{
    params_json, params_tables, save_cluster_model, save_model, StartInfo, MODEL_EXTENSIONS,
};
use crate::output::FIGURE_EXTENSIONS;
use crate::phases::Phases;
use crate::progress::{show_progress, ProgressObserver};
use crate::report::{
    inexact_m_step_json, num, print_stdout, separated_json, termination_warning, Align, Table,
};
use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::Args;
use em_as_md::data::csv::{load_csv_columns, load_csv_with, LoadOptions, LoadedData};
use em_as_md::data::parquet::{is_parquet, load_parquet};
use em_as_md::fit::init::InitMethod;
use em_as_md::fit::presample::Presample;
use em_as_md::fit::scaling::Scaling;
use em_as_md::fit::UngatedStart;
use em_as_md::model::expert::REG_COVAR;
use em_as_md::model::mixture::{Gating, MixtureOfExperts};
use em_as_md::model::registry;
use em_as_md::Accel;
use em_as_md::{ConditionalFamily, Expert, ExpertSpec, FittedMoe, MoeError};
use em_as_md::{CovarianceType, GaussianCluster};
use experiments::plot::{Chart, Series};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

/// The values of `--expert`: every registered expert with a target rule (so that the
/// command line can build it from the target column), in the registry's order, with its
/// summary as the help text.
pub fn expert_values() -> PossibleValuesParser {
    PossibleValuesParser::new(
        registry::expert_entries()
            .into_iter()
            .filter(|e| e.has_target_rule())
            .map(|e| PossibleValue::new(e.name().to_string()).help(e.summary().to_string())),
    )
}

/// The data and model flags shared by `mdem fit` and `mdem compare`.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// CSV file with a header row.
    pub data: PathBuf,
    /// Name of the target column (required, except for `--expert gaussian`: a Gaussian
    /// mixture of the feature columns, which takes no target).
    #[arg(long)]
    pub target: Option<String>,
    /// Feature columns, comma-separated (default: every other column).
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// Number of experts K.
    #[arg(long, short = 'k', value_parser = clap::value_parser!(u32).range(1..))]
    pub experts: u32,
    /// Expert type (a registered expert whose description the target determines).
    #[arg(long, value_parser = expert_values())]
    pub expert: String,
    /// No gate on the features: constant mixing weights (a mixture of regressions).
    #[arg(long)]
    pub no_gate: bool,
    /// Do not add an intercept to the experts and the gate.
    #[arg(long)]
    pub no_intercept: bool,
    /// Drop constant feature columns (with a warning) instead of refusing them.
    #[arg(long)]
    pub drop_constant: bool,
    /// Fit on the raw feature columns. By default the solvers run on standardised columns
    /// (mean 0, standard deviation 1; an exact reparametrisation, see `em_as_md::fit::scaling`):
    /// the Newton M-steps of logistic, multinomial and Poisson experts and of the gate need
    /// it when feature scales differ widely.
    #[arg(long)]
    pub no_standardize: bool,
    /// Ridge λ ≥ 0 on the coefficients of the experts (linear, logistic, multinomial,
    /// Poisson) and of the softmax gate, on the standardised columns: each M-step
    /// maximises Q − λ/2·‖b‖² and the fit maximises the penalised log-likelihood. Gives
    /// separable logistic/multinomial data and saturated gates a finite optimum.
    #[arg(long, allow_negative_numbers = true)]
    pub ridge: Option<f64>,
}

/// The experts `--ridge` applies to (their registry builders take `ridge`).
const RIDGED_EXPERTS: [&str; 4] = ["linear", "logistic", "multinomial", "poisson"];

impl ModelArgs {
    /// `--ridge` checked: `Some(λ)` with λ finite and ≥ 0, for an expert that takes it.
    ///
    /// # Errors
    /// [`CliError::BadInput`] naming `--ridge`.
    pub fn ridge(&self) -> Result<Option<f64>, CliError> {
        let Some(r) = self.ridge else {
            return Ok(None);
        };
        if !(r.is_finite() && r >= 0.0) {
            return Err(CliError::BadInput(format!(
                "invalid value '{r}' for '--ridge': expected a finite number >= 0"
            )));
        }
        if !RIDGED_EXPERTS.contains(&self.expert.as_str()) {
            return Err(CliError::BadInput(format!(
                "--ridge: applies to --expert {}, not --expert {}",
                RIDGED_EXPERTS.join(", "),
                self.expert
            )));
        }
        Ok(Some(r))
    }

    /// The report's `ridge` row for a fit with `--ridge` (`None` without): λ, the penalty
    /// $R$ at the fit (on the standardised columns) and the penalised log-likelihood
    /// $\ell - R$ the fit maximised, next to the log-likelihood `ll`.
    ///
    /// # Errors
    /// As [`ModelArgs::ridge`].
    pub fn ridge_row(&self, penalty: f64, ll: f64) -> Result<Option<[String; 2]>, CliError> {
        Ok(self.ridge()?.map(|r| {
            [
                "ridge".to_string(),
                format!(
                    "λ = {} on the standardised coefficients of the experts{}; penalty {}, \
                     penalised log-likelihood {} (what the fit maximised)",
                    num(r, 3),
                    if self.no_gate { "" } else { " and the gate" },
                    num(penalty, 6),
                    num(ll - penalty, 10)
                ),
            ]
        }))
    }

    /// The `"ridge"` field of `--json`: `{lambda, penalty, penalised_log_likelihood}`, or
    /// `null` without `--ridge`.
    ///
    /// # Errors
    /// As [`ModelArgs::ridge`].
    pub fn ridge_json(&self, penalty: f64, ll: f64) -> Result<serde_json::Value, CliError> {
        Ok(self.ridge()?.map_or(serde_json::Value::Null, |r| {
            serde_json::json!({
                "lambda": r,
                "penalty": penalty,
                "penalised_log_likelihood": ll - penalty,
            })
        }))
    }

    /// The ridge of the softmax gate (`--ridge`; 0 without it or with `--no-gate`).
    ///
    /// # Errors
    /// As [`ModelArgs::ridge`].
    pub fn gate_ridge(&self) -> Result<f64, CliError> {
        Ok(if self.no_gate {
            0.0
        } else {
            self.ridge()?.unwrap_or(0.0)
        })
    }

    /// Loads the CSV (intercept unless `--no-intercept`), prints the loader's warnings
    /// unless `quiet`, checks the target against the expert's support and returns the
    /// expert's description for it (both by the expert's registry entry).
    ///
    /// # Errors
    /// The loader's one-line errors (file, line, column, what was expected);
    /// [`CliError::BadInput`] for an expert that is not registered or has no target rule.
    pub fn load(&self, quiet: bool) -> Result<(LoadedData, ExpertSpec), CliError> {
        let entry = registry::expert_entry(&self.expert)
            .map_err(|e| CliError::BadInput(format!("--expert {}: {e}", self.expert)))?;
        let target = self.target_name()?;
        let loaded = if is_parquet(&self.data) {
            self.check_parquet_options()?;
            load_parquet(
                &self.data,
                Some(target),
                self.features.as_deref(),
                !self.no_intercept,
            )
            .map_err(parquet_error)?
        } else {
            load_csv_with(
                &self.data,
                target,
                self.features.as_deref(),
                LoadOptions {
                    intercept: !self.no_intercept,
                    drop_constant: self.drop_constant,
                },
            )?
        };
        if !quiet {
            for w in &loaded.warnings {
                eprintln!("warning: {}: {w}", loaded.file);
            }
        }
        let spec = csvdata::expert_spec(&loaded, &entry).ok_or_else(|| {
            CliError::BadInput(format!(
                "--expert {}: the command line cannot build this expert from a target column \
                 (it has no target rule); expected one of {}",
                self.expert,
                offered().join(", ")
            ))
        })??;
        Ok((loaded, self.with_ridge(spec)?))
    }

    /// The expert's description with `--ridge` as its `ridge` parameter (unchanged
    /// without it).
    ///
    /// # Errors
    /// As [`ModelArgs::ridge`].
    pub fn with_ridge(&self, spec: ExpertSpec) -> Result<ExpertSpec, CliError> {
        Ok(match self.ridge()? {
            Some(r) => spec.param("ridge", r),
            None => spec,
        })
    }

    /// `--drop-constant` is for CSV files only (a Parquet file's constant column is
    /// refused; leave it out with `--features`).
    ///
    /// # Errors
    /// [`CliError::BadInput`] naming the flag.
    fn check_parquet_options(&self) -> Result<(), CliError> {
        if self.drop_constant {
            return Err(CliError::BadInput(
                "--drop-constant: not available for Parquet files; name the columns with --features"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The `--target` column. The rule: `--expert gaussian` fits a Gaussian mixture of
    /// the feature columns and takes no target (with `--target` it is refused, naming the
    /// `linear` expert for a Gaussian regression on features); every other expert needs
    /// `--target`.
    ///
    /// # Errors
    /// [`CliError::BadInput`] naming `--target` when it is missing, or given with
    /// `--expert gaussian`.
    pub fn target_name(&self) -> Result<&str, CliError> {
        match (self.target.as_deref(), self.expert == GAUSSIAN) {
            (Some(_), true) => Err(CliError::BadInput(
                "--target: --expert gaussian fits a Gaussian mixture of the feature columns and \
                 takes no target; for a Gaussian regression of the target on the features use \
                 --expert linear"
                    .into(),
            )),
            (Some(t), false) => Ok(t),
            (None, true) => Err(CliError::BadInput(
                "--expert gaussian: a Gaussian mixture is fitted by `mdem fit`; this command needs \
                 --target and another expert"
                    .into(),
            )),
            (None, false) => Err(CliError::BadInput(format!(
                "--target: required for --expert {} (only --expert gaussian fits without a target)",
                self.expert
            ))),
        }
    }

    /// The expert described by `spec` (from [`ModelArgs::load`]).
    ///
    /// # Errors
    /// [`CliError::BadInput`] naming the data file when the registry cannot build it.
    pub fn build_expert(
        &self,
        loaded: &LoadedData,
        spec: &ExpertSpec,
    ) -> Result<Arc<dyn Expert>, CliError> {
        registry::build_expert(spec)
            .map_err(|e| CliError::BadInput(format!("{}: {e}", loaded.file)))
    }

    /// Standardises the loaded feature columns in place ([`Scaling::fit`],
    /// [`Scaling::apply_in_place`]: no second copy of the data) and returns the scaling,
    /// or `None` with `--no-standardize`. The one place where `fit` and `compare` decide
    /// it; afterwards `loaded.dataset` holds the standardised columns.
    ///
    /// # Errors
    /// [`CliError::Compute`] when the columns cannot be standardised.
    pub fn standardise(&self, loaded: &mut LoadedData) -> Result<Option<Scaling>, CliError> {
        if self.no_standardize {
            return Ok(None);
        }
        let scaling = Scaling::fit(&loaded.dataset, loaded.intercept);
        scaling
            .apply_in_place(&mut loaded.dataset)
            .map_err(|e| CliError::compute("standardising", e))?;
        Ok(Some(scaling))
    }

    /// Softmax gate, or constant mixing weights with `--no-gate`.
    pub fn gating(&self) -> Gating {
        if self.no_gate {
            Gating::Constant
        } else {
            Gating::Softmax
        }
    }
}

/// A Parquet loading error as the command line reports it (bad input, exit 2).
fn parquet_error(e: MoeError) -> CliError {
    match e {
        MoeError::Source(s) => CliError::BadInput(s),
        e => CliError::BadInput(e.to_string()),
    }
}

/// The `--expert` value of the Gaussian mixture (registry name of
/// [`em_as_md::GaussianCluster`]).
pub const GAUSSIAN: &str = "gaussian";

/// Arguments of `mdem fit`.
#[derive(Debug, Clone, Args)]
pub struct FitArgs {
    /// Data, expert, gate and standardisation (EM runs on standardised columns unless
    /// `--no-standardize`; the parameters are mapped back to the data's units).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Number of seeded starts (the best is kept).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub n_init: u32,
    /// How each start is drawn: `auto` cycles start r through kmeans, short-em, random,
    /// subset (r mod 4); `random` sends each row to a random expert (as flexmix); `subset`
    /// fits each expert on its own small random subset of rows (as mixtools); `kmeans` is
    /// k-means++ on (x, y); `short-em` keeps the best of 10 five-iteration EM runs from
    /// subset and random starts. A gated fit can also start from the ungated optimum
    /// (`--ungated-start`).
    #[arg(long, default_value = "auto", value_parser = ["auto", "random", "subset", "kmeans", "short-em"])]
    pub init: String,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// EM iteration limit per start.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_iter: u64,
    /// Relative tolerance on the change of the average negative log-likelihood.
    #[arg(long, default_value_t = 1e-8, allow_negative_numbers = true)]
    pub tol: f64,
    /// How EM is accelerated: `squarem` (SQUAREM with the monotone safeguard), `anderson`
    /// (Anderson acceleration with the monotone safeguard, DAAREM), `md` (mirror descent
    /// with step 1/L̂ measured along the run), `newton` (Newton's method on L with the
    /// observed information, EM as the safeguard; slow on `--expert gaussian`, whose
    /// observed information takes a generic per-row pass) or `none` (plain EM).
    #[arg(long, default_value_t = Accel::default(), value_parser = accel_value)]
    pub accel: Accel,
    /// When a gated fit also starts from the ungated optimum (it first fits the ungated
    /// model, ℓ_u its log-likelihood, and never ends below it): `when-below` (default) runs
    /// that start only when no gated start ended at or above ℓ_u; `always` runs it beside
    /// the other starts; `off` fits no ungated model (no guarantee).
    #[arg(long, default_value = "when-below", value_parser = ["when-below", "always", "off"])]
    pub ungated_start: String,
    /// Write the fitted model (JSON) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Draw the objective trace (SVG or PNG) here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the report.
    #[arg(long)]
    pub json: bool,
    /// No progress bar, no warnings.
    #[arg(long)]
    pub quiet: bool,
    /// Read the data in passes of `--chunk-rows` rows instead of loading them: memory
    /// bounded by the chunk, not by the file (exact EM; starts from a fit on a random
    /// sample of `--sample-rows` rows). The file must not change during the fit.
    #[arg(long)]
    pub stream: bool,
    /// Rows per chunk with `--stream`.
    #[arg(long, default_value_t = em_as_md::data::source::DEFAULT_CHUNK_ROWS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk_rows: u64,
    /// Mini-batch EM (stochastic mirror descent) with batches of this many rows, read
    /// from the file in order in passes (as `--stream`; shuffle a sorted file first),
    /// started from a fit on a random sample of `--sample-rows` rows.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub minibatch: Option<u64>,
    /// Passes over the file with `--minibatch`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub passes: u64,
    /// Step schedule of `--minibatch`: η_t = eta0 · (t + t0)^(−a), capped at 1; a = 0 is a
    /// constant step, otherwise a ∈ (1/2, 1].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub step_eta0: f64,
    /// `t0` of the step schedule (≥ 1).
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    pub step_t0: f64,
    /// `a` of the step schedule.
    #[arg(long, default_value_t = 0.6, allow_negative_numbers = true)]
    pub step_a: f64,
    /// Report the last mini-batch iterate instead of the Polyak average of the last half.
    #[arg(long)]
    pub no_average: bool,
    /// Fit every start on a random sample of this many rows (an integer) or this fraction
    /// of them (a number in (0, 1), e.g. 0.1), then EM on all rows from the best to the
    /// same tolerance (large data in memory: most iterations run on the sample). A gated
    /// fit's comparison with the ungated one is made on the sample. (`--stream` and
    /// `--minibatch` always start from a sample: `--sample-rows`.)
    #[arg(long, value_parser = |s: &str| Presample::parse(s).map_err(|e| e.to_string()), conflicts_with_all = ["stream", "minibatch"])]
    pub presample: Option<Presample>,
    /// Rows of the random sample the starts are fitted on with `--stream`.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub sample_rows: u64,
    /// Covariance of each Gaussian-mixture component (`--expert gaussian` only): `full`
    /// (default), `diag` or `spherical`.
    #[arg(long, value_parser = ["full", "diag", "spherical"])]
    pub covariance: Option<String>,
    /// Floor added to the diagonal of every fitted covariance (`--expert gaussian` only;
    /// scikit-learn's `reg_covar`), default 1e-6.
    #[arg(long, allow_negative_numbers = true)]
    pub reg_covar: Option<f64>,
}

/// Parses `--accel` (`none`, `squarem`, `md`, `anderson`, `newton`).
impl FitArgs {
    /// The fit's settings from these arguments, for `k` experts of type `expert` with
    /// `gating` (shared by the in-memory and the streamed fit).
    ///
    /// # Errors
    /// [`CliError::BadInput`] naming `--init` for an unknown strategy, `--ungated-start`
    /// for an unknown policy.
    pub fn settings(
        &self,
        k: usize,
        expert: Arc<dyn Expert>,
        gating: Gating,
    ) -> Result<FitSettings, CliError> {
        Ok(FitSettings {
            n_experts: k,
            expert,
            gating,
            n_init: self.n_init as usize,
            seed: self.seed,
            max_iters: self.max_iter,
            tol: self.tol,
            init: InitMethod::from_name(&self.init).ok_or_else(|| {
                CliError::BadInput(format!(
                    "invalid value '{}' for '--init': expected auto, random, subset, kmeans or short-em",
                    self.init
                ))
            })?,
            accel: self.accel,
            ungated_start: UngatedStart::from_name(&self.ungated_start).ok_or_else(|| {
                CliError::BadInput(format!(
                    "invalid value '{}' for '--ungated-start': expected when-below, always or off",
                    self.ungated_start
                ))
            })?,
            gate_ridge: self.model.gate_ridge()?,
            presample: self.presample,
            cancel: Some(interrupt::flag()),
        })
    }
}

/// The fitted model with its parameters mapped back to the data's units when it was
/// fitted on standardised columns (`scaling`; [`FittedMoe::in_data_units`]), with the
/// command line's error.
///
/// # Errors
/// [`CliError::Compute`] when the mapping fails.
pub fn in_data_units(fitted: FittedMoe, scaling: Option<&Scaling>) -> Result<FittedMoe, CliError> {
    fitted
        .in_data_units(scaling)
        .map_err(|e| CliError::compute("mapping the parameters back to the data's units", e))
}

fn accel_value(s: &str) -> Result<Accel, String> {
    s.parse::<Accel>().map_err(|e| e.to_string())
}

/// The names `--expert` accepts (registered experts with a target rule).
pub fn offered() -> Vec<String> {
    registry::expert_entries()
        .into_iter()
        .filter(|e| e.has_target_rule())
        .map(|e| e.name().to_string())
        .collect()
}

/// The warning `mdem fit --expert gaussian --accel newton` prints (unless `--quiet` or
/// `--json`): the Gaussian mixture has no one-evaluation observed sums, so each Newton
/// iteration takes the generic per-row pass (docs/performance.md: over 8 minutes at
/// $10^6$ rows, $d = 5$, $K = 3$, against 1.5 s with SQUAREM).
const NEWTON_ON_CLUSTERS: &str = "warning: --accel newton on a Gaussian mixture \
     evaluates the observed information by a generic per-row pass, far dearer than an \
     E-step (minutes where --accel squarem takes seconds at 10^6 rows)";

/// Runs `mdem fit`.
///
/// # Errors
/// [`CliError::Data`] for a bad file, [`CliError::BadInput`] for bad values or a model
/// too large for the data, [`CliError::Compute`] when the fit fails.
pub fn run(args: &FitArgs) -> Result<(), CliError> {
    let mut phases = Phases::start();
    check_fit_outputs(args)?;
    if !(args.tol.is_finite() && args.tol > 0.0) {
        return Err(CliError::BadInput(format!(
            "invalid value '{}' for '--tol': expected a finite number > 0",
            args.tol
        )));
    }
    let clustering = args.model.expert == GAUSSIAN;
    if !clustering {
        for (flag, given) in [
            ("--covariance", args.covariance.is_some()),
            ("--reg-covar", args.reg_covar.is_some()),
        ] {
            if given {
                return Err(CliError::BadInput(format!(
                    "{flag}: applies only to --expert gaussian (a Gaussian mixture), not --expert {}",
                    args.model.expert
                )));
            }
        }
    }
    if args.stream || args.minibatch.is_some() {
        return super::stream::run(args, phases);
    }
    let verbose = !args.quiet && !args.json;
    let (mut loaded, expert) = if clustering {
        load_clusters(args, !verbose)?
    } else {
        let (loaded, spec) = args.model.load(!verbose)?;
        let expert = args.model.build_expert(&loaded, &spec)?;
        (loaded, expert)
    };
    phases.lap("read");
    let scaling = if clustering {
        None
    } else {
        args.model.standardise(&mut loaded)?
    };
    let scaling = scaling.as_ref();
    // Standardised in place: the fit and the responsibilities use these columns (the
    // same laws as the raw ones at the mapped-back parameters).
    let data = &loaded.dataset;
    let (n, d) = (data.n(), data.d());
    let k = args.model.experts as usize;
    let gating = if clustering {
        Gating::Constant
    } else {
        args.model.gating()
    };
    let gate = em_as_md::GateConfig {
        ridge: args.model.gate_ridge()?,
        ..em_as_md::GateConfig::default()
    };
    let model = MixtureOfExperts::new(expert.clone(), k, d, gating)
        .and_then(|m| m.with_gate_config(gate))
        .map_err(|e| CliError::BadInput(format!("{}: {e}", loaded.file)))?;
    if k > n {
        return Err(CliError::BadInput(format!(
            "{}: {k} experts but only {n} data rows; expected at most as many experts as rows",
            loaded.file
        )));
    }
    let p = model.n_params();
    if p > n {
        return Err(CliError::BadInput(format!(
            "{}: {n} data rows but the model has {p} parameters ({k} {kind} experts on {d} design columns{}); expected at least as many rows as parameters: use fewer experts or features",
            loaded.file,
            if gating == Gating::Constant { "" } else { ", softmax gate" },
            kind = args.model.expert,
        )));
    }

    let settings = args.settings(k, expert, gating)?;
    if verbose && clustering && args.accel == Accel::Newton {
        // Said before the fit, which can take minutes where SQUAREM takes seconds.
        eprintln!("{NEWTON_ON_CLUSTERS}");
    }
    let visible = show_progress(args.quiet, args.json);
    let label = match args.accel {
        Accel::None => "EM",
        Accel::Squarem => "SQUAREM",
        Accel::Md => "MD(1/L̂)",
        Accel::Anderson => "Anderson",
        Accel::Newton => "Newton",
    };
    let bar = ProgressObserver::new(label, settings.max_iters * settings.n_init as u64, visible);
    phases.lap("check");
    let fitted = fit_em(data, &settings, Some(bar.clone()));
    bar.finish();
    let fitted = fitted.map_err(|e| match e {
        MoeError::InvalidData { row: Some(i), .. } if i < loaded.lines.len() => {
            CliError::BadInput(format!(
                "{}: line {} (data row {}; the header is line 1), column \"{}\": {e}",
                loaded.file,
                loaded.lines[i],
                i + 1,
                loaded.target
            ))
        }
        e if matches!(e.root(), MoeError::NotPositiveDefinite { .. })
            && args.model.no_standardize =>
        {
            CliError::compute(
                format!(
                    "{}: fitting (hint: drop --no-standardize when feature scales differ widely)",
                    loaded.file
                ),
                e,
            )
        }
        e => CliError::compute(format!("{}: fitting", loaded.file), e),
    })?;
    phases.lap("fit");
    // On the columns the fit ran on, before the parameters go back to the data's units.
    let resp = (!args.json)
        .then(|| fitted.responsibilities(data))
        .transpose()
        .map_err(|e| CliError::compute(format!("{}: responsibilities", loaded.file), e))?;
    // The ridge is defined on the columns the fit ran on: its value before mapping back.
    let penalty = fitted.penalty();
    let fitted = in_data_units(fitted, scaling)?;
    let rep = fitted.report();
    let theta = fitted.theta().to_vec();
    let ll = rep.log_likelihood;
    let names = fitted.feature_names().to_vec();
    let iterations = rep.iterations;
    let termination = rep.termination.to_string();
    let expert_name = &args.model.expert;

    if let Some(path) = &args.out {
        let start = StartInfo {
            seed: settings.seed,
            n_init: settings.n_init,
            best_restart: rep.best_restart,
            init: settings.init.name().into(),
        };
        if clustering {
            save_cluster_model(&fitted, &loaded.features, Some(&start), path)?;
        } else {
            save_model(&fitted, &loaded.target, scaling, Some(&start), path)?;
        }
    }
    let interrupted = rep.termination == em_as_md::Termination::Interrupted;
    let mut figure_written = false;
    if let Some(path) = &args.plot {
        let l_final = rep
            .trace
            .iter()
            .map(|r| r.objective)
            .fold(f64::INFINITY, f64::min);
        let gaps: Vec<(f64, f64)> = rep
            .trace
            .iter()
            .map(|r| (r.iter as f64, r.objective - l_final))
            .collect();
        let title = format!(
            "{} on {} ({k} {expert_name} experts)",
            rep.solver, loaded.file
        );
        // A start that begins at its optimum (the gated start from the ungated optimum
        // often does) has no decrease to draw on a log axis: draw L itself instead.
        let chart = if gaps.iter().any(|&(_, g)| g > 0.0) {
            Chart::new(title, "iteration t", "L(θ_t) − min_t L(θ_t)")
                .log_y(true)
                .series(Series::new("gap", gaps))
        } else {
            let pts = rep
                .trace
                .iter()
                .map(|r| (r.iter as f64, r.objective))
                .collect();
            Chart::new(title, "iteration t", "L(θ_t)").series(Series::new("L", pts))
        };
        let drawn = chart.save(path);
        match drawn {
            Ok(()) => figure_written = true,
            // A fit interrupted after 0 or 1 iterations has no decrease to draw; its
            // results are still reported.
            Err(e) if interrupted => eprintln!("warning: figure not written: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    let restart_lls: Vec<Option<f64>> = rep.restarts.iter().map(|r| r.log_likelihood).collect();
    phases.lap("output");
    // Gaussian mixture: the coordinates, the covariance model and floor, and how many
    // iterations of the returned run needed the floor.
    let cluster_info = model.expert().spec().filter(|_| clustering).map(|spec| {
        let code = spec.params.get("covariance").unwrap_or(0.0) as u64;
        let floored = rep.trace.iter().filter(|r| r.inner.fallbacks > 0).count();
        (
            CovarianceType::from_code(code).unwrap_or_default().name(),
            spec.params.get("reg_covar").unwrap_or(REG_COVAR),
            floored,
        )
    });
    // A Gaussian mixture's design is the intercept alone: its parameters are labelled
    // by the coordinates, not by design columns.
    let names: Vec<String> = if clustering { Vec::new() } else { names };

    if args.json {
        let mut out = json!({
            "file": loaded.file,
            "rows": n,
            "target": (!clustering).then_some(&loaded.target),
            "gaussian_mixture": cluster_info.map(|(cov, reg, floored)| json!({
                "columns": loaded.features,
                "covariance": cov,
                "reg_covar": reg,
                "iterations_with_covariance_floor": floored,
            })),
            "features": loaded.features,
            "intercept": loaded.intercept,
            "fitted_on_standardized_features": scaling.is_some(),
            "expert": model.expert().spec(),
            "experts": k,
            "gating": gating,
            "n_params": p,
            "log_likelihood": ll,
            "average_negative_log_likelihood": -ll / n as f64,
            "ridge": args.model.ridge_json(penalty, ll)?,
            "iterations": iterations,
            "termination": termination,
            "converged": rep.converged(),
            "inexact_m_step": inexact_m_step_json(&rep.termination),
            "separated": separated_json(&rep.termination),
            "unconverged_starts": rep.unconverged_restarts(),
            "seconds": rep.seconds,
            "seconds_by_phase": phases_json(&phases, rep),
            "peak_rss_bytes": crate::phases::peak_rss_bytes(),
            "aic": fitted.aic(),
            "bic": fitted.bic(),
            "icl": fitted.icl(),
            "solver": rep.solver,
            "accel": args.accel.as_str(),
            "n_init": settings.n_init,
            "seed": settings.seed,
            "init": settings.init.name(),
            "best_start": rep.best_restart,
            "best_start_init": rep.restarts.get(rep.best_restart).map(|r| &r.init),
            "start_inits": rep.restarts.iter().map(|r| &r.init).collect::<Vec<_>>(),
            "start_log_likelihoods": restart_lls,
            "start_errors": rep.restarts.iter().map(|r| &r.error).collect::<Vec<_>>(),
            "start_retry_errors": rep.restarts.iter().map(|r| &r.retry_errors).collect::<Vec<_>>(),
            "start_log_likelihood_spread": rep.spread,
            "warnings": loaded.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "parameters": params_json(&model, &theta, &names),
        });
        // Each start's cost (outside the macro: one more key exceeds its recursion limit).
        let starts = &rep.restarts;
        out["start_iterations"] = json!(starts.iter().map(|r| r.iterations).collect::<Vec<_>>());
        out["start_em_seconds"] = json!(starts.iter().map(|r| r.seconds).collect::<Vec<_>>());
        out["start_setup_seconds"] =
            json!(starts.iter().map(|r| r.start_seconds).collect::<Vec<_>>());
        out["ungated_start"] = json!(settings.ungated_start.name());
        out["ungated_fit"] = ungated_json(rep.ungated.as_ref());
        // The sample's rows with --presample (null: every start on all rows).
        out["presample_rows"] = json!(settings.presample.map(|p| p.rows(n).min(n)));
        return print_stdout(&format!("{out}\n"));
    }

    let mut summary = Table::new(["quantity", "value"]).align(1, Align::Left);
    summary.row([
        "data",
        &format!("{} ({n} rows, {d} design columns)", loaded.file),
    ]);
    summary.row([
        "model".to_string(),
        format!(
            "{k} {} {}, {}",
            model.expert().name(),
            if clustering { "components" } else { "experts" },
            if gating == Gating::Constant {
                "constant mixing weights"
            } else {
                "softmax gate"
            }
        ),
    ]);
    if let Some((cov, reg, floored)) = cluster_info {
        let coords: Vec<String> = loaded
            .features
            .iter()
            .enumerate()
            .map(|(j, c)| format!("{j} = {c}"))
            .collect();
        summary.row(["coordinates".to_string(), coords.join(", ")]);
        summary.row([
            "covariance".to_string(),
            format!(
                "{cov}, floor reg_covar = {} added to the diagonal (needed in {floored} iterations)",
                num(reg, 3)
            ),
        ]);
    }
    summary.row(["parameters".to_string(), p.to_string()]);
    summary.row([
        "log-likelihood (total, natural log)".to_string(),
        num(ll, 10),
    ]);
    if let Some(row) = args.model.ridge_row(penalty, ll)? {
        summary.row(row);
    }
    summary.row(["solver".to_string(), rep.solver.clone()]);
    summary.row(["iterations".to_string(), iterations.to_string()]);
    summary.row(["termination".to_string(), termination]);
    summary.row(["seconds".to_string(), num(rep.seconds, 3)]);
    summary.row(["seconds by phase".to_string(), phases_line(&phases, rep)]);
    if let Some(u) = &rep.ungated {
        summary.row(["ungated fit".to_string(), ungated_line(u)]);
    }
    summary.row(["AIC".to_string(), num(fitted.aic(), 10)]);
    summary.row(["BIC".to_string(), num(fitted.bic(), 10)]);
    summary.row(["ICL".to_string(), num(fitted.icl(), 10)]);
    if rep.restarts.len() > 1 {
        summary.row(["starts".to_string(), starts_line(rep, &settings.init)]);
        let lls: Vec<String> = restart_lls
            .iter()
            .map(|v| v.map_or_else(|| "failed".into(), |v| num(v, 8)))
            .collect();
        summary.row([
            "log-likelihood per start".to_string(),
            format!("{} (best: start {})", lls.join(", "), rep.best_restart + 1),
        ]);
        // Which start costs what: iterations, and seconds of EM after building the start.
        let costs: Vec<String> = rep
            .restarts
            .iter()
            .map(|r| format!("{} ({} s)", r.iterations, num(r.seconds, 3)))
            .collect();
        summary.row([
            "iterations per start (EM seconds)".to_string(),
            costs.join(", "),
        ]);
    }
    let (experts, gate) = params_tables(&model, &theta, &names);
    let resp = resp.unwrap_or_default();
    let weights: Vec<String> = (0..k)
        .map(|c| num(resp.iter().skip(c).step_by(k).sum::<f64>() / n as f64, 4))
        .collect();
    let mut text = format!("{summary}\n");
    // Not converged: said before the parameters, so it is read before they are used.
    for w in convergence_warnings(rep) {
        text.push_str(&format!("{w}\n"));
    }
    text.push_str(&format!(
        "Experts (average responsibility: {})\n{experts}\nGate\n{gate}",
        weights.join(", ")
    ));
    if let Some(path) = &args.out {
        text.push_str(&format!("model written to {}\n", path.display()));
    }
    if let Some(path) = args.plot.as_ref().filter(|_| figure_written) {
        text.push_str(&format!("figure written to {}\n", path.display()));
    }
    print_stdout(&text)
}

/// The `ungated_fit` object of `--json`: the ungated fit a gated fit ran (its
/// log-likelihood ℓ_u, which the gated fit never ends below; seconds; whether the start
/// from its optimum ran), `null` when none ran.
fn ungated_json(u: Option<&em_as_md::fit::UngatedFit>) -> serde_json::Value {
    u.map_or(serde_json::Value::Null, |u| {
        json!({
            "log_likelihood": u.log_likelihood,
            "start_ran": u.start_ran,
            "seconds": u.seconds,
            "em_seconds": u.em_seconds,
        })
    })
}

/// The report's `ungated fit` row: ℓ_u, and whether the start from its optimum ran.
fn ungated_line(u: &em_as_md::fit::UngatedFit) -> String {
    format!(
        "log-likelihood {} ({} s); start from its optimum {}",
        num(u.log_likelihood, 10),
        num(u.seconds, 3),
        if u.start_ran {
            "run"
        } else {
            "not needed (a gated start ended above it)"
        }
    )
}

/// `seconds_by_phase` of `--json`: the command's phases ([`Phases::json`]: `read` the CSV,
/// `check` the model against the data and standardise, `fit`, `output` = mapping back,
/// summaries, model file and figure; `total`), and the fit's own split: `fit_em_iterations`
/// ([`em_as_md::FitReport::em_seconds`], summed over the starts, which run in parallel),
/// `fit_starts` ([`em_as_md::FitReport::start_seconds`]) and, of the starts,
/// `fit_start_em_iterations` ([`em_as_md::FitReport::start_em_seconds`]: the ungated
/// fit behind a gated fit's extra start).
fn phases_json(phases: &Phases, rep: &em_as_md::FitReport) -> serde_json::Value {
    let mut v = phases.json();
    v["fit_em_iterations"] = rep.em_seconds().into();
    v["fit_starts"] = rep.start_seconds().into();
    v["fit_start_em_iterations"] = rep.start_em_seconds().into();
    v
}

/// The report's line of phases: `read 0.012, check 0.001, fit 0.140 (EM iterations 0.120,
/// starts 0.015), output 0.004; total 0.158`, and `starts 0.052 of which ungated EM
/// 0.049` for a gated fit's extra start (see [`phases_json`]).
fn phases_line(phases: &Phases, rep: &em_as_md::FitReport) -> String {
    let laps: Vec<String> = phases
        .laps()
        .iter()
        .map(|&(name, s)| {
            if name == "fit" {
                let e = rep.start_em_seconds();
                let start_em = if e > 0.0 {
                    format!(" of which ungated EM {}", num(e, 3))
                } else {
                    String::new()
                };
                format!(
                    "fit {} (EM iterations {}, starts {}{start_em})",
                    num(s, 3),
                    num(rep.em_seconds(), 3),
                    num(rep.start_seconds(), 3)
                )
            } else {
                format!("{name} {}", num(s, 3))
            }
        })
        .collect();
    format!("{}; total {}", laps.join(", "), num(phases.total(), 3))
}

/// `mdem fit --expert gaussian` without `--target`: the feature columns
/// ([`load_csv_columns`]: `--features`, `--drop-constant`) become the Gaussian's
/// coordinates, and the expert is [`GaussianCluster`] with `--covariance` and
/// `--reg-covar`.
///
/// # Errors
/// [`CliError::BadInput`] for `--target`, `--no-gate`/`--no-intercept`/`--no-standardize`
/// (meaningless here), a bad `--reg-covar`; the loader's one-line errors.
fn load_clusters(args: &FitArgs, quiet: bool) -> Result<(LoadedData, Arc<dyn Expert>), CliError> {
    let (cov, reg) = cluster_options(args)?;
    let loaded = if is_parquet(&args.model.data) {
        args.model.check_parquet_options()?;
        load_parquet(&args.model.data, None, args.model.features.as_deref(), true)
            .map_err(parquet_error)?
    } else {
        load_csv_columns(
            &args.model.data,
            args.model.features.as_deref(),
            LoadOptions {
                intercept: true,
                drop_constant: args.model.drop_constant,
            },
        )?
    };
    if !quiet {
        for w in &loaded.warnings {
            eprintln!("warning: {}: {w}", loaded.file);
        }
    }
    let expert = GaussianCluster::new(loaded.features.len(), cov, reg)
        .map_err(|e| CliError::BadInput(format!("{}: {e}", loaded.file)))?;
    Ok((loaded, Arc::new(expert)))
}

/// The options of a Gaussian mixture (`--expert gaussian`) checked: no `--target`,
/// `--no-intercept` or `--no-standardize` (it has no design); the covariance model and
/// the floor `--reg-covar`.
///
/// # Errors
/// [`CliError::BadInput`] naming the option.
pub fn cluster_options(args: &FitArgs) -> Result<(CovarianceType, f64), CliError> {
    if args.model.target.is_some() {
        args.model.target_name()?; // refused, naming --target
    }
    for (flag, given) in [
        ("--no-intercept", args.model.no_intercept),
        ("--no-standardize", args.model.no_standardize),
    ] {
        if given {
            return Err(CliError::BadInput(format!(
                "{flag}: does not apply to --expert gaussian (a Gaussian mixture has no design)"
            )));
        }
    }
    let reg = args.reg_covar.unwrap_or(REG_COVAR);
    if !(reg.is_finite() && reg >= 0.0) {
        return Err(CliError::BadInput(format!(
            "invalid value '{reg}' for '--reg-covar': expected a finite number >= 0"
        )));
    }
    let cov =
        CovarianceType::from_name(args.covariance.as_deref().unwrap_or("full")).unwrap_or_default();
    Ok((cov, reg))
}

/// The report's line about the starts: how many, the strategy, which start won (1-based)
/// with its strategy, and the min/median/max of the starts' final log-likelihoods.
pub fn starts_line(rep: &em_as_md::FitReport, init: &InitMethod) -> String {
    let won = rep
        .restarts
        .get(rep.best_restart)
        .map_or("", |r| r.init.as_str());
    let spread = rep.spread.map_or_else(String::new, |s| {
        format!(
            "; log-likelihood min {}, median {}, max {}",
            num(s.min, 8),
            num(s.median, 8),
            num(s.max, 8)
        )
    });
    let retries: usize = rep.restarts.iter().map(|r| r.retry_errors.len()).sum();
    let retried = if retries > 0 {
        format!("; {retries} failed attempts retried from fresh draws")
    } else {
        String::new()
    };
    format!(
        "{} ({}); best: start {} ({won}){spread}{retried}",
        rep.restarts.len(),
        init.name(),
        rep.best_restart + 1
    )
}

/// `--out` (a `.json` model) and `--plot` (`.svg` or `.png`) checked before any work
/// ([`crate::output::check_outputs`]): never the data file, never each other.
///
/// # Errors
/// [`CliError::BadInput`] naming the flag and the path.
pub fn check_fit_outputs(args: &FitArgs) -> Result<(), CliError> {
    use crate::output::{check_outputs, Output};
    let mut outputs = Vec::new();
    if let Some(path) = &args.out {
        outputs.push(Output {
            flag: "--out",
            path,
            extensions: MODEL_EXTENSIONS,
        });
    }
    if let Some(path) = &args.plot {
        outputs.push(Output {
            flag: "--plot",
            path,
            extensions: FIGURE_EXTENSIONS,
        });
    }
    check_outputs(&outputs, &[&args.model.data])
}

/// The report's warning lines about convergence: one for the returned start when it did
/// not converge ([`termination_warning`]), one listing the other starts that ran but did
/// not converge (with their terminations); empty when every start converged.
pub fn convergence_warnings(rep: &em_as_md::FitReport) -> Vec<String> {
    let mut lines: Vec<String> = termination_warning(&rep.termination).into_iter().collect();
    let others: Vec<String> = rep
        .restarts
        .iter()
        .filter(|r| r.index != rep.best_restart && r.termination.is_some() && !r.converged())
        .map(|r| {
            let t = r.termination.map_or_else(String::new, |t| t.to_string());
            format!("start {}: {t}", r.index + 1)
        })
        .collect();
    if !others.is_empty() {
        lines.push(format!(
            "WARNING: other starts did not converge: {}",
            others.join("; ")
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convergence_warnings_name_the_returned_start_and_the_others() {
        use em_as_md::fit::predict::RestartSummary;
        use em_as_md::Termination;
        let summary = |index: usize, termination: Option<Termination>| RestartSummary {
            index,
            init: "kmeans".into(),
            log_likelihood: termination.map(|_| -1.0),
            termination,
            iterations: 3,
            error: termination.is_none().then(|| "singular".to_string()),
            retry_errors: Vec::new(),
            seconds: 0.0,
            start_seconds: 0.0,
            start_em_seconds: 0.0,
        };
        let inexact = Termination::InexactMStep {
            inexact: 3,
            window: 5,
            worst_residual: Some(0.25),
            rel_change: Some(0.0),
        };
        let converged = Termination::Converged { rel_change: 1e-9 };
        let mut rep = em_as_md::FitReport {
            solver: "EM".into(),
            n_rows: 10,
            log_likelihood: -1.0,
            entropy: 0.0,
            iterations: 3,
            termination: converged,
            seconds: 0.0,
            trace: Vec::new(),
            best_restart: 0,
            restarts: vec![
                summary(0, Some(converged)),
                summary(1, Some(converged)),
                summary(2, None),
            ],
            spread: None,
            start_theta: Vec::new(),
            ungated: None,
        };
        // Everything converged (a failed start is reported elsewhere, by its error).
        assert!(convergence_warnings(&rep).is_empty());
        rep.restarts[1].termination = Some(Termination::MaxIters);
        assert_eq!(
            convergence_warnings(&rep),
            vec!["WARNING: other starts did not converge: start 2: maximum number of iterations reached"]
        );
        rep.termination = inexact;
        rep.restarts[0].termination = Some(inexact);
        let w = convergence_warnings(&rep);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("WARNING: not converged: M-step inexact in 3 of the last 5 iterations (worst residual 2.500e-1)"),
            "{w:?}"
        );
    }

    #[test]
    fn the_offered_experts_are_the_registered_ones_with_a_target_rule() {
        let offered = offered();
        for name in ["linear", "logistic", "multinomial", "poisson"] {
            assert!(offered.iter().any(|o| o == name), "{offered:?}");
        }
        // A GLM needs its family: the library offers it, the command line does not.
        assert!(!offered.iter().any(|o| o == "glm"));
        use clap::builder::TypedValueParser;
        let values: Vec<String> = expert_values()
            .possible_values()
            .unwrap()
            .map(|v| v.get_name().to_string())
            .collect();
        assert_eq!(values, offered);
    }
}
