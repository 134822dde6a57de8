//! Two small real tabular data sets with a fixed train/test split: diabetes
//! (442 × 10, regression, linear-Gaussian experts) and breast cancer (569 × 30, binary,
//! logistic experts). A softmax-gated mixture of two experts is trained by EM (the
//! library's exact M-step: weighted least squares, resp. Newton), gradient EM and
//! gradient descent from the same start, over seeded starts; reported: the test
//! log-likelihood per row and, for the binary target, the test accuracy. Gradient EM uses
//! Armijo backtracking; GD a constant step from [`GD_STEPS`] tuned on start 0. Breast
//! cancer uses the 10 `mean_*` features (with all 30 the training rows are separable).
//!
//! Features (and the diabetes target) are standardised with the training rows' means and
//! standard deviations; the
//! split is one seeded permutation (75 % / 25 %). Starts: the library's k-means++ start
//! ([`em_as_md::fit::initial_theta`]) for restart $s$ of the master seed, or a random
//! $\theta_0$ (entries $N(0, 0.1^2)$) when that start cannot be computed.

use crate::common::{em_gem_gd_runs, Run, RunSettings};
use crate::error::ExperimentsError;
use crate::synthetic::{tune_gd_step, GdTuning, GD_STEPS};
use em_as_md::data::csv::{load_csv_with, LoadOptions};
use em_as_md::fit::init::InitMethod;
use em_as_md::fit::scaling::Scaling;
use em_as_md::fit::{initial_theta, restart_rng};
use em_as_md::model::mixture::{Gating, MixtureOfExperts};
use em_as_md::{Dataset, LinearGaussian, Logistic, MoeError, Problem};
use mirror::special::sigmoid;
use rayon::prelude::*;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Which data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tabular {
    /// Diabetes, linear-Gaussian experts.
    Diabetes,
    /// Breast cancer, logistic experts.
    BreastCancer,
}

impl Tabular {
    /// File name under the data directory.
    pub fn file(self) -> &'static str {
        match self {
            Tabular::Diabetes => "diabetes.csv",
            Tabular::BreastCancer => "breast_cancer.csv",
        }
    }
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Tabular::Diabetes => "diabetes",
            Tabular::BreastCancer => "breast cancer",
        }
    }
}

/// One solver's results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TabSolver {
    /// Solver name.
    pub name: String,
    /// Training objective per start and iteration.
    pub objective: Vec<Vec<f64>>,
    /// Final test log-likelihood per row, per start.
    pub test_ll: Vec<f64>,
    /// Final test accuracy per start (binary target only).
    pub test_acc: Vec<f64>,
    /// Failures (start, message).
    pub failures: Vec<(usize, String)>,
}

/// Results on one data set.
#[derive(Debug, Clone, PartialEq)]
pub struct TabResult {
    /// Which data set.
    pub which: Tabular,
    /// Training / test rows.
    pub n_train: usize,
    /// Test rows.
    pub n_test: usize,
    /// Design columns (with intercept).
    pub d: usize,
    /// EM, gradient EM, GD.
    pub solvers: Vec<TabSolver>,
    /// How GD's constant step was chosen on start 0 ([`tune_gd_step`]); `None` when every
    /// step failed at the start and the grid's first was used.
    pub gd_tuning: Option<GdTuning>,
    /// Starts that needed the random fallback.
    pub random_starts: usize,
    /// Standard deviation of the training target used to standardise it (1 when not
    /// standardised): add $-\log s$ to a log-likelihood per row to get it in the
    /// original units.
    pub y_sd: f64,
}

/// The same rows with the target replaced by $(y - m)/s$.
fn standardise_target(data: &Dataset, m: f64, s: f64) -> Result<Dataset, MoeError> {
    let x: Vec<f64> = (0..data.n())
        .flat_map(|i| data.x(i).iter().copied())
        .collect();
    let y: Vec<f64> = data.y_all().iter().map(|v| (v - m) / s).collect();
    Dataset::from_rows(&x, data.d(), &y, 1)
}

/// Test accuracy of a gated mixture of logistic experts: predicted class
/// $[\sum_k \pi_k(x)\,\sigma(\eta_k(x)) > 1/2]$.
fn logistic_accuracy(model: &MixtureOfExperts, theta: &[f64], test: &Dataset) -> f64 {
    let k = model.n_experts();
    let mut pi = vec![0.0; k];
    let mut eta = vec![0.0; 1];
    let mut correct = 0usize;
    for i in 0..test.n() {
        let x = test.x(i);
        model.gate_probs(theta, x, &mut pi);
        let p1: f64 = (0..k)
            .map(|j| {
                model.expert_natural(theta, j, x, &mut eta);
                pi[j] * sigmoid(eta[0])
            })
            .sum();
        correct += usize::from((p1 > 0.5) == (test.y(i)[0] > 0.5));
    }
    correct as f64 / test.n() as f64
}

/// Runs one data set (read from `dir`) with `starts` seeded starts and `iters` iterations
/// per solver. A raised `cancel` flag stops every run at its next iteration (runs that
/// have not started stop at their start).
///
/// # Errors
/// [`ExperimentsError::Data`] when the file cannot be read, [`ExperimentsError::Compute`]
/// when a model cannot be built or a run fails at its start.
pub fn run_tabular(
    which: Tabular,
    dir: &Path,
    starts: usize,
    iters: u64,
    seed: u64,
    cancel: Option<&Arc<AtomicBool>>,
) -> Result<TabResult, ExperimentsError> {
    let ctx = |e: MoeError| ExperimentsError::compute(which.name(), e);
    let features: Option<Vec<String>> = match which {
        Tabular::Diabetes => None,
        Tabular::BreastCancer => Some(
            [
                "mean_radius",
                "mean_texture",
                "mean_perimeter",
                "mean_area",
                "mean_smoothness",
                "mean_compactness",
                "mean_concavity",
                "mean_concave_points",
                "mean_symmetry",
                "mean_fractal_dimension",
            ]
            .iter()
            .map(|s| (*s).to_string())
            .collect(),
        ),
    };
    let loaded = load_csv_with(
        dir.join(which.file()),
        "y",
        features.as_deref(),
        LoadOptions::default(),
    )?;
    let all = loaded.dataset;
    let (train_rows, test_rows) = crate::digits::split(all.n(), 0.75, seed ^ 0x7ab1e);
    let (train0, test0) = (all.select(&train_rows), all.select(&test_rows));
    let scaling = Scaling::fit(&train0, true);
    let mut train = scaling.apply(&train0).map_err(ctx)?;
    let mut test = scaling.apply(&test0).map_err(ctx)?;
    let mut y_sd = 1.0;
    if which == Tabular::Diabetes {
        let y = train.y_all();
        let m = y.iter().sum::<f64>() / y.len() as f64;
        y_sd = (y.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / y.len() as f64).sqrt();
        train = standardise_target(&train, m, y_sd).map_err(ctx)?;
        test = standardise_target(&test, m, y_sd).map_err(ctx)?;
    }
    let d = train.d();
    let model = match which {
        Tabular::Diabetes => {
            MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, d, Gating::Softmax)
        }
        Tabular::BreastCancer => {
            MixtureOfExperts::new(Arc::new(Logistic::new()), 2, d, Gating::Softmax)
        }
    }
    .map_err(ctx)?;
    let problem = Problem::new(&model, &train).map_err(ctx)?;
    let test_problem = Problem::new(&model, &test).map_err(ctx)?;
    let start = |s: usize| -> (Vec<f64>, bool) {
        match initial_theta(&model, &train, &InitMethod::KMeansPlusPlus, seed, s) {
            Ok(t) if problem.objective(&t).is_ok_and(f64::is_finite) => (t, false),
            _ => (
                model.random_params(&mut restart_rng(seed ^ 0xfa11, s), 0.1),
                true,
            ),
        }
    };
    let fixed = RunSettings::fixed(iters).cancel(cancel.cloned());
    let gd_tuning = tune_gd_step(problem, &start(0).0, &fixed, &GD_STEPS);
    let gd_step = gd_tuning.map_or(GD_STEPS[0], |t| t.step);
    type StartRuns = (Vec<Run>, bool);
    let per: Vec<Result<StartRuns, MoeError>> = (0..starts)
        .into_par_iter()
        .map(|s| {
            let (theta0, random) = start(s);
            let st = fixed.clone().keep();
            let runs = em_gem_gd_runs(problem, &theta0, &st, gd_step)?
                .map(|(run, _)| run)
                .to_vec();
            Ok((runs, random))
        })
        .collect();
    let mut solvers: Vec<TabSolver> = Vec::new();
    let mut random_starts = 0;
    for (s, r) in per.into_iter().enumerate() {
        let (runs, random) = r.map_err(ctx)?;
        random_starts += usize::from(random);
        for (j, run) in runs.into_iter().enumerate() {
            if solvers.len() <= j {
                solvers.push(TabSolver {
                    name: run.name.clone(),
                    ..TabSolver::default()
                });
            }
            let sv = &mut solvers[j];
            if let Some(f) = &run.failure {
                sv.failures.push((s, f.clone()));
            }
            // The last iterate that was recorded (a failed run keeps its last good one).
            let theta = run.thetas.last().cloned().unwrap_or_default();
            let ll = test_problem.objective(&theta).map_or(f64::NAN, |l| -l);
            sv.test_ll.push(ll);
            if which == Tabular::BreastCancer {
                sv.test_acc.push(logistic_accuracy(&model, &theta, &test));
            }
            sv.objective.push(run.objectives);
        }
    }
    Ok(TabResult {
        which,
        n_train: train.n(),
        n_test: test.n(),
        d,
        solvers,
        gd_tuning,
        random_starts,
        y_sd,
    })
}
