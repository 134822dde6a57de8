//! "Random Invert Digits": the paper's "Random Invert" Fashion-MNIST protocol on the
//! bundled scikit-learn digits (Fashion-MNIST cannot be downloaded here).
//!
//! Per instance $s$: pixels scaled to $[0, 1]$ ($x/16$), each image inverted
//! ($x \to 1 - x$) with probability ½ (seeded by $s$), an intercept column added
//! ($d = 65$); a fixed train/test split (75 % / 25 %, one seeded permutation for every
//! instance); a softmax-gated mixture of $K = 2$ multinomial-logistic experts over the
//! 10 classes (1235 parameters), started from one random $\theta_0$ (seeded by $s$) and
//! trained for a fixed number of iterations by EM, gradient EM and gradient descent
//! (gradient EM with Armijo backtracking on the M-step objective, GD with a constant step
//! tuned on instance 0 from [`GD_STEPS`]); all three are the library's solvers. Recorded per
//! iteration: the training objective $L(\theta_t)$, test accuracy and test cross-entropy.
//!
//! EM is the library's [`Em`](em_as_md::Em) with an **inexact** M-step ([`digits_model`]): every block
//! (the gate and each expert) is minimised by L-BFGS (memory 10), warm-started at
//! $\theta_t$, to $\|\nabla\|_\infty \le$ `inner_tol` or at most `inner_max` iterations —
//! the gate by [`GateSolver::Lbfgs`] (its Newton Hessian is singular here: the inversion
//! makes the always-blank pixels identical, collinear design columns, and the gate nearly
//! separable), the experts by [`Multinomial::with_lbfgs_budget`]. Every L-BFGS step
//! decreases its block's objective, so each outer step is a generalised EM step; the
//! blocks that stopped at the cap are reported (`converged` of the [`em_as_md::InnerStats`]).

use crate::common::{em_gem_gd_runs, Run, RunSettings};
use crate::synthetic::{tune_gd_step, GdTuning, GD_STEPS};
use em_as_md::model::expert::Multinomial;
use em_as_md::model::mixture::{Gating, MixtureOfExperts};
use em_as_md::{Dataset, GateConfig, GateSolver, MoeError, Problem};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// Settings of the experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct DigitsConfig {
    /// Number of seeded instances.
    pub instances: usize,
    /// Iterations per solver.
    pub iters: u64,
    /// Master seed (instance $s$ uses `seed + s`).
    pub seed: u64,
    /// Fraction of rows in the training set.
    pub train_fraction: f64,
    /// Standard deviation of the random start's entries.
    pub init_scale: f64,
    /// Inner L-BFGS tolerance of EM's M-step ($\|\nabla F\|_\infty$).
    pub inner_tol: f64,
    /// Inner L-BFGS iteration cap of EM's M-step, per block.
    pub inner_max: usize,
}

/// One solver's curves over the instances.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SolverCurves {
    /// Solver name.
    pub name: String,
    /// Training objective $L(\theta_t)$ per instance.
    pub objective: Vec<Vec<f64>>,
    /// Test accuracy per instance and iteration.
    pub accuracy: Vec<Vec<f64>>,
    /// Test cross-entropy per instance and iteration.
    pub cross_entropy: Vec<Vec<f64>>,
    /// Wall seconds per instance.
    pub seconds: Vec<f64>,
    /// Mean inner iterations per outer step (EM only; 0 otherwise).
    pub inner_per_step: Vec<f64>,
    /// Fraction of outer steps whose inner solves all reached the tolerance.
    pub inner_converged: Vec<f64>,
    /// Failure messages (instance, message).
    pub failures: Vec<(usize, String)>,
}

/// The experiment's result.
#[derive(Debug, Clone, PartialEq)]
pub struct DigitsResult {
    /// EM, gradient EM, GD.
    pub solvers: Vec<SolverCurves>,
    /// The constant GD step chosen from [`GD_STEPS`] on instance 0.
    pub gd_step: f64,
    /// How it was chosen ([`tune_gd_step`]); `None` when every step failed at the start
    /// and `gd_step` is the grid's first.
    pub gd_tuning: Option<GdTuning>,
    /// Rows in the training and test sets.
    pub n_train: usize,
    /// Rows in the test set.
    pub n_test: usize,
    /// Fraction of images inverted (over all instances).
    pub inverted_fraction: f64,
    /// Wall seconds of the whole experiment.
    pub seconds: f64,
}

/// Pixels and labels of the digits CSV (64 pixel columns, target `y`).
#[derive(Debug, Clone, PartialEq)]
pub struct Digits {
    /// Row-major $n \times 64$ pixel values in $0..16$.
    pub pixels: Vec<f64>,
    /// Labels $0..9$.
    pub labels: Vec<f64>,
}

/// The design of the instance: pixels$/16$, inverted where `flip`, intercept prepended.
fn design(px: &Digits, rows: &[usize], flip: &[bool]) -> Result<Dataset, MoeError> {
    let mut x = Vec::with_capacity(rows.len() * 64);
    let mut y = Vec::with_capacity(rows.len());
    for &i in rows {
        for &v in &px.pixels[i * 64..(i + 1) * 64] {
            let s = v / 16.0;
            x.push(if flip[i] { 1.0 - s } else { s });
        }
        y.push(px.labels[i]);
    }
    Ok(Dataset::from_rows(&x, 64, &y, 1)?.with_intercept())
}

/// The fixed split: a permutation seeded by `seed`, the first `fraction` of it trains.
pub fn split(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_train = ((n as f64) * fraction).round() as usize;
    let test = idx.split_off(n_train.min(n));
    (idx, test)
}

/// The experiment's model: a softmax gate over `k` multinomial-logistic experts with `c`
/// classes on `d` design columns, whose EM M-step runs L-BFGS on every block (gate and
/// experts) to $\|\nabla\|_\infty \le$ `inner_tol` or `inner_max` iterations (see the
/// [module documentation](self)).
///
/// # Errors
/// `InvalidParam` for fewer than 2 classes or experts, or a bad inner budget.
pub fn digits_model(
    k: usize,
    c: usize,
    d: usize,
    inner_tol: f64,
    inner_max: usize,
) -> Result<MixtureOfExperts, MoeError> {
    let max_iter = u64::try_from(inner_max).unwrap_or(u64::MAX);
    let expert = Multinomial::new(c)?
        .with_dense_max_params(0)
        .with_lbfgs_budget(inner_tol, max_iter)?;
    MixtureOfExperts::new(Arc::new(expert), k, d, Gating::Softmax)?.with_gate_config(GateConfig {
        tol: inner_tol,
        max_iter,
        solver: GateSolver::Lbfgs,
        ..GateConfig::default()
    })
}

/// The mixture's class probabilities $P(y = c \mid x_i) = \sum_k \pi_k(x_i)\,
/// p_k(c \mid x_i)$ at $\theta$, row-major $n \times C$.
///
/// # Errors
/// `Mirror` from the expert's class probabilities.
fn class_probs(
    model: &MixtureOfExperts,
    theta: &[f64],
    data: &Dataset,
) -> Result<Vec<f64>, MoeError> {
    let (k, c) = (model.n_experts(), model.expert().predict_dim());
    let mut out = vec![0.0; data.n() * c];
    let (mut pi, mut p) = (vec![0.0; k], vec![0.0; c]);
    for (i, row) in out.chunks_exact_mut(c).enumerate() {
        model.gate_probs(theta, data.x(i), &mut pi);
        for (z, &pz) in pi.iter().enumerate() {
            model
                .expert()
                .predict_mean(model.expert_block(theta, z), data.x(i), &mut p)?;
            for (o, v) in row.iter_mut().zip(&p) {
                *o += pz * v;
            }
        }
    }
    Ok(out)
}

/// Test accuracy (the most probable class) and test cross-entropy
/// $-\frac1n\sum_i\log P(y_i \mid x_i) = L(\theta)$ on `test` at `theta`.
///
/// # Errors
/// As [`Problem::new`] and [`Problem::objective`] (e.g. a label outside $0..C$).
fn accuracy_and_cross_entropy(
    model: &MixtureOfExperts,
    theta: &[f64],
    test: &Dataset,
) -> Result<(f64, f64), MoeError> {
    let ce = Problem::new(model, test)?.objective(theta)?;
    let c = model.expert().predict_dim();
    let probs = class_probs(model, theta, test)?;
    let correct = probs
        .chunks_exact(c)
        .enumerate()
        .filter(|(i, p)| {
            let arg = (0..c).fold(0, |a, j| if p[j] > p[a] { j } else { a });
            arg as f64 == test.y(*i)[0]
        })
        .count();
    Ok((correct as f64 / test.n().max(1) as f64, ce))
}

fn test_curves(
    run: &Run,
    model: &MixtureOfExperts,
    test: &Dataset,
) -> Result<(Vec<f64>, Vec<f64>), MoeError> {
    let mut acc = Vec::with_capacity(run.thetas.len());
    let mut ce = Vec::with_capacity(run.thetas.len());
    for th in &run.thetas {
        let (a, c) = accuracy_and_cross_entropy(model, th, test)?;
        acc.push(a);
        ce.push(c);
    }
    Ok((acc, ce))
}

/// Runs the experiment on the loaded digits. A raised `cancel` flag stops every run at its
/// next iteration (runs that have not started stop at their start).
///
/// # Errors
/// A library error from building the data or model, or a failure at the start of a run.
pub fn run_digits(
    px: &Digits,
    cfg: &DigitsConfig,
    cancel: Option<&Arc<AtomicBool>>,
) -> Result<DigitsResult, MoeError> {
    let clock = Instant::now();
    let n = px.labels.len();
    let (train_rows, test_rows) = split(n, cfg.train_fraction, cfg.seed ^ 0x5eed);
    let model = digits_model(2, 10, 65, cfg.inner_tol, cfg.inner_max)?;
    let make = |s: usize| -> Result<(Dataset, Dataset, Vec<f64>, usize), MoeError> {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(s as u64));
        let flip: Vec<bool> = (0..n).map(|_| rng.random_bool(0.5)).collect();
        let inverted = flip.iter().filter(|f| **f).count();
        let train = design(px, &train_rows, &flip)?;
        let test = design(px, &test_rows, &flip)?;
        let theta0 = model.random_params(&mut rng, cfg.init_scale);
        Ok((train, test, theta0, inverted))
    };
    let gd_tuning = {
        let (train, _, theta0, _) = make(0)?;
        tune_gd_step(
            Problem::new(&model, &train)?,
            &theta0,
            &RunSettings::fixed(cfg.iters).cancel(cancel.cloned()),
            &GD_STEPS,
        )
    };
    let gd_step = gd_tuning.map_or(GD_STEPS[0], |t| t.step);
    type InstanceRuns = (Vec<(Run, Vec<f64>, Vec<f64>, f64)>, usize);
    let per_instance: Vec<Result<InstanceRuns, MoeError>> = (0..cfg.instances)
        .into_par_iter()
        .map(|s| {
            let (train, test, theta0, inverted) = make(s)?;
            let problem = Problem::new(&model, &train)?;
            let settings = RunSettings::fixed(cfg.iters).keep().cancel(cancel.cloned());
            let mut out = Vec::new();
            let runs = em_gem_gd_runs(problem, &theta0, &settings, gd_step)?;
            for (mut run, secs) in runs {
                let (acc, ce) = test_curves(&run, &model, &test)?;
                run.thetas.clear();
                out.push((run, acc, ce, secs));
            }
            Ok((out, inverted))
        })
        .collect();
    let mut solvers: Vec<SolverCurves> = Vec::new();
    let mut inverted = 0usize;
    for (s, r) in per_instance.into_iter().enumerate() {
        let (runs, inv) = r?;
        inverted += inv;
        for (j, (run, acc, ce, secs)) in runs.into_iter().enumerate() {
            if solvers.len() <= j {
                solvers.push(SolverCurves {
                    name: run.name.clone(),
                    ..SolverCurves::default()
                });
            }
            let sc = &mut solvers[j];
            if let Some(f) = &run.failure {
                sc.failures.push((s, f.clone()));
            }
            let steps = run.inner_iterations.len().max(1) as f64;
            sc.inner_per_step
                .push(run.inner_iterations.iter().sum::<u64>() as f64 / steps);
            sc.inner_converged
                .push(run.inner_converged.iter().filter(|c| **c).count() as f64 / steps);
            sc.objective.push(run.objectives);
            sc.accuracy.push(acc);
            sc.cross_entropy.push(ce);
            sc.seconds.push(secs);
        }
    }
    Ok(DigitsResult {
        solvers,
        gd_step,
        gd_tuning,
        n_train: train_rows.len(),
        n_test: test_rows.len(),
        inverted_fraction: inverted as f64 / (n * cfg.instances.max(1)) as f64,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use em_as_md::{Em, Executor};

    /// The first `rows` images of the bundled digits (plain parse of the CSV).
    fn bundled(rows: usize) -> Digits {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/digits.csv");
        let text = std::fs::read_to_string(path).unwrap();
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        for line in text.lines().skip(1).take(rows) {
            let v: Vec<f64> = line.split(',').map(|c| c.trim().parse().unwrap()).collect();
            assert_eq!(v.len(), 65);
            pixels.extend_from_slice(&v[..64]);
            labels.push(v[64]);
        }
        Digits { pixels, labels }
    }

    #[test]
    fn cross_entropy_and_accuracy_match_the_class_probabilities() {
        let px = bundled(120);
        let rows: Vec<usize> = (0..120).collect();
        let flip: Vec<bool> = (0..120).map(|i| i % 3 == 0).collect();
        let data = design(&px, &rows, &flip).unwrap();
        let model = digits_model(2, 10, 65, 1e-5, 5).unwrap();
        let theta = model.random_params(&mut ChaCha8Rng::seed_from_u64(3), 0.3);
        let probs = class_probs(&model, &theta, &data).unwrap();
        let (acc, ce) = accuracy_and_cross_entropy(&model, &theta, &data).unwrap();
        // Independent: −mean log P(y_i | x_i) and the argmax from the probabilities.
        let mut nll = 0.0;
        let mut hits = 0usize;
        for (i, p) in probs.chunks_exact(10).enumerate() {
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            let y = px.labels[i] as usize;
            nll -= p[y].ln();
            let best = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            hits += usize::from(p[y] == best);
        }
        assert!((ce - nll / 120.0).abs() < 1e-10, "{ce} vs {}", nll / 120.0);
        assert!((acc - hits as f64 / 120.0).abs() < 1e-12, "{acc} vs {hits}");
    }

    #[test]
    fn library_em_runs_the_inverted_digits_protocol() {
        let px = bundled(300);
        let rows: Vec<usize> = (0..300).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let flip: Vec<bool> = (0..300).map(|_| rng.random_bool(0.5)).collect();
        let data = design(&px, &rows, &flip).unwrap();
        let model = digits_model(2, 10, 65, 1e-5, 5).unwrap();
        let theta0 = model.random_params(&mut rng, 0.1);
        // The default gate M-step meets a singular Hessian on this design: it shifts it
        // and falls back to L-BFGS, and says so in every record.
        let newton = MixtureOfExperts::new(
            Arc::new(
                Multinomial::new(10)
                    .unwrap()
                    .with_lbfgs_budget(1e-5, 5)
                    .unwrap(),
            ),
            2,
            65,
            Gating::Softmax,
        )
        .unwrap();
        let r = Executor::new(Problem::new(&newton, &data).unwrap(), Em::new())
            .theta0(theta0.clone())
            .max_iters(3)
            .run()
            .unwrap();
        assert!(
            r.trace
                .iter()
                .all(|t| t.inner.fallbacks > 0 && t.inner.hessians > 0),
            "{:?}",
            r.trace
        );
        // The protocol's L-BFGS M-steps: within budget, no Hessian, L never increases.
        let r = Executor::new(Problem::new(&model, &data).unwrap(), Em::new())
            .theta0(theta0)
            .max_iters(4)
            .run()
            .unwrap();
        let mut prev = f64::INFINITY;
        for t in &r.trace {
            assert!(
                t.inner.iterations <= 3 * 5 && t.inner.hessians == 0,
                "{t:?}"
            );
            assert!(t.objective <= prev, "{prev} -> {}", t.objective);
            prev = t.objective;
        }
        assert_eq!(r.trace.len(), 4);
    }

    #[test]
    fn split_is_a_fixed_partition() {
        let (a, b) = split(100, 0.75, 1);
        assert_eq!((a.len(), b.len()), (75, 25));
        let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(split(100, 0.75, 1), (a, b));
    }

    #[test]
    fn design_scales_and_inverts() {
        let px = Digits {
            pixels: (0..128).map(|j| f64::from((j % 17) as u8)).collect(),
            labels: vec![3.0, 4.0],
        };
        let d = design(&px, &[0, 1], &[false, true]).unwrap();
        assert_eq!((d.n(), d.d()), (2, 65));
        let x0 = d.x(0);
        let x1 = d.x(1);
        // Intercept column of ones, then the scaled pixels; row 1 inverted.
        assert!(x0.contains(&1.0) && x1.contains(&1.0));
        let s0: f64 = x0.iter().sum::<f64>() - 1.0;
        let raw0: f64 = px.pixels[..64].iter().sum::<f64>() / 16.0;
        assert!((s0 - raw0).abs() < 1e-12);
        let s1: f64 = x1.iter().sum::<f64>() - 1.0;
        let raw1: f64 = px.pixels[64..].iter().map(|v| 1.0 - v / 16.0).sum::<f64>();
        assert!((s1 - raw1).abs() < 1e-12);
    }
}
