//! The paper's synthetic experiment: SymMoLinE and SymMoLogE (two experts $\pm\beta$,
//! sigmoid gate $w$) over seeded instances and several signal-to-noise ratios; EM,
//! gradient EM and gradient descent from the same start; suboptimality and parameter
//! errors per iteration; and the convergence certificate's predicted rate beside the
//! observed one.
//!
//! Per instance $s$ at SNR $\rho$: $\beta^*$ and $w^*$ with $\|\beta^*\| = \rho\sigma$
//! (SymMoLinE, $\sigma = 1$) or $\|\beta^*\| = \rho$ (SymMoLogE), $\|w^*\| = $ `gate_norm`,
//! directions uniform; $n$ rows with $x \sim N(0, I_d)$; the start
//! $\theta_0 = (\beta^* + \delta\|\beta^*\|u,\ w^* + \delta\|w^*\|v)$ with $u, v$ uniform on the
//! unit sphere and $\delta$ = `init_rel` (a start in a neighbourhood of $\theta^*$, the
//! regime of the paper's local convergence results). $L^\star$ is the smallest objective
//! seen, including a reference EM run from $\theta_0$ continued until $L$ stops changing
//! (relative change $< 10^{-15}$ or $\|\nabla L\| < 10^{-10}$); that run's trajectory is what
//! [`diagnostics::certificate::certify`] certifies.

use crate::common::{
    adam_runs, em_gem_gd_runs, run_recorded, sym_aligned_errors, Run, RunSettings,
};
use diagnostics::certificate::{certify, CertifyConfig};
use em_as_md::Dataset;
use em_as_md::{Em, EmModel, GradientDescent, MoeError, Problem, Step, SymMoLinE, SymMoLogE};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Floor applied to $L_t - L^\star$ before averaging on a log scale (round-off level).
pub const GAP_FLOOR: f64 = 1e-15;

/// What the experiment needs of a symmetric two-expert model.
pub trait SymModel: EmModel<Stats = em_as_md::SymStats> + Sync + Sized {
    /// Display name.
    const NAME: &'static str;
    /// The model on $d$ features.
    ///
    /// # Errors
    /// The constructor's.
    fn build(d: usize) -> Result<Self, MoeError>;
    /// A true parameter at this SNR.
    ///
    /// # Errors
    /// The generator's.
    fn truth(&self, snr: f64, gate_norm: f64, seed: u64) -> Result<Vec<f64>, MoeError>;
    /// Simulated data.
    ///
    /// # Errors
    /// The simulator's.
    fn data(&self, theta: &[f64], n: usize, seed: u64) -> Result<Dataset, MoeError>;
    /// $(\beta, w)$ of $\theta$.
    fn split<'t>(&self, theta: &'t [f64]) -> (&'t [f64], &'t [f64]);
}

impl SymModel for SymMoLinE {
    const NAME: &'static str = "SymMoLinE";
    fn build(d: usize) -> Result<Self, MoeError> {
        SymMoLinE::new(d, 1.0)
    }
    fn truth(&self, snr: f64, gate_norm: f64, seed: u64) -> Result<Vec<f64>, MoeError> {
        self.random_theta(snr, gate_norm, seed)
    }
    fn data(&self, theta: &[f64], n: usize, seed: u64) -> Result<Dataset, MoeError> {
        Ok(self.simulate(theta, n, seed)?.0)
    }
    fn split<'t>(&self, theta: &'t [f64]) -> (&'t [f64], &'t [f64]) {
        (self.beta(theta), self.gate(theta))
    }
}

impl SymModel for SymMoLogE {
    const NAME: &'static str = "SymMoLogE";
    fn build(d: usize) -> Result<Self, MoeError> {
        SymMoLogE::new(d)
    }
    fn truth(&self, snr: f64, gate_norm: f64, seed: u64) -> Result<Vec<f64>, MoeError> {
        self.random_theta(snr, gate_norm, seed)
    }
    fn data(&self, theta: &[f64], n: usize, seed: u64) -> Result<Dataset, MoeError> {
        Ok(self.simulate(theta, n, seed)?.0)
    }
    fn split<'t>(&self, theta: &'t [f64]) -> (&'t [f64], &'t [f64]) {
        (self.beta(theta), self.gate(theta))
    }
}

/// Settings of the synthetic experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Instances per SNR.
    pub instances: usize,
    /// Iterations per solver.
    pub iters: u64,
    /// Rows.
    pub n: usize,
    /// Features.
    pub d: usize,
    /// $\|w^*\|$.
    pub gate_norm: f64,
    /// Relative size $\delta$ of the start's perturbation.
    pub init_rel: f64,
    /// Master seed.
    pub seed: u64,
    /// Iteration cap of the reference EM run.
    pub ref_iters: u64,
    /// Instances per SNR whose reference run is certified.
    pub cert_instances: usize,
}

/// One solver's results at one SNR.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SolverSynth {
    /// Solver name.
    pub name: String,
    /// $\max(L_t - L^\star, $ [`GAP_FLOOR`]$)$ per instance.
    pub gaps: Vec<Vec<f64>>,
    /// $\|\beta_t - \beta^*\|/\|\beta^*\|$ per instance (sign-aligned).
    pub beta_err: Vec<Vec<f64>>,
    /// $\|w_t - w^*\|/\|w^*\|$ per instance (sign-aligned).
    pub w_err: Vec<Vec<f64>>,
    /// Wall seconds per instance.
    pub seconds: Vec<f64>,
    /// Failure messages (instance, message).
    pub failures: Vec<(usize, String)>,
}

/// The certificate of one instance's reference EM run.
#[derive(Debug, Clone, PartialEq)]
pub struct CertRow {
    /// Verdict (`CERTIFIED`, …) or the error.
    pub verdict: String,
    /// Certified rate $1 - \hat\alpha$ of $L - L^\star$.
    pub predicted: Option<f64>,
    /// Observed rate of $L - L^\star$.
    pub observed: Option<f64>,
    /// $\lambda_{\max}$ of the missing-information fraction at $\hat\theta$.
    pub missing_info: Option<f64>,
    /// Spectral radius of the EM map's Jacobian (rate of the parameter error).
    pub sem: Option<f64>,
}

/// Results at one SNR.
#[derive(Debug, Clone, PartialEq)]
pub struct SnrResult {
    /// The SNR.
    pub snr: f64,
    /// The constant GD step chosen from [`GD_STEPS`].
    pub gd_step: f64,
    /// How it was chosen ([`tune_gd_step`]); `None` when every step failed at the start
    /// and `gd_step` is the grid's first.
    pub gd_tuning: Option<GdTuning>,
    /// EM, gradient EM, GD, then Adam at each learning rate of
    /// [`em_as_md::ADAM_LEARNING_RATES`].
    pub solvers: Vec<SolverSynth>,
    /// Certificates of the first `cert_instances` instances.
    pub certs: Vec<CertRow>,
    /// Statistical error of the MLE: $\|\hat\beta - \beta^*\|/\|\beta^*\|$ per instance.
    pub mle_beta_err: Vec<f64>,
    /// $\|\hat w - w^*\|/\|w^*\|$ per instance.
    pub mle_w_err: Vec<f64>,
}

fn unit(d: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    loop {
        // Box–Muller: a standard normal from two uniforms on (0, 1].
        let v: Vec<f64> = (0..d)
            .map(|_| {
                let u1: f64 = 1.0 - rng.random::<f64>();
                let u2: f64 = rng.random::<f64>();
                (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 1e-12 {
            return v.into_iter().map(|x| x / n).collect();
        }
    }
}

/// The start $\theta_0$ of the [module documentation](self).
pub fn perturbed_start(beta: &[f64], w: &[f64], rel: f64, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (u, v) = (unit(beta.len(), &mut rng), unit(w.len(), &mut rng));
    let (nb, nw) = (norm(beta), norm(w));
    beta.iter()
        .zip(&u)
        .map(|(b, e)| b + rel * nb * e)
        .chain(w.iter().zip(&v).map(|(a, e)| a + rel * nw * e))
        .collect()
}

struct Instance {
    runs: Vec<(Run, f64)>,
    l_star: f64,
    truth: Vec<f64>,
    mle: Vec<f64>,
    cert: Option<CertRow>,
}

/// Grid of constant gradient-descent steps; the one [`tune_gd_step`] picks on the first
/// instance of each setting is used for all of its instances.
pub const GD_STEPS: [f64; 9] = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0];

/// Relative round-off allowance $\varepsilon$ of [`is_stable`].
pub const STABLE_RTOL: f64 = 1e-10;

/// Whether a recorded objective trace $L_0, L_1, \dots, L_T$ is *stable*: finite and never
/// increasing by more than round-off,
/// $$L_{t+1} \le L_t + \varepsilon \max(1, |L_t|) \quad (t = 0, \dots, T-1),$$
/// with $\varepsilon$ = [`STABLE_RTOL`]. A constant step that is small enough for the local
/// curvature gives such a trace (descent lemma); a non-monotone trace is the mark of a
/// step beyond that, whose final value is then an accident of the trajectory.
pub fn is_stable(objectives: &[f64]) -> bool {
    objectives.iter().all(|l| l.is_finite())
        && objectives
            .windows(2)
            .all(|w| w[1] <= w[0] + STABLE_RTOL * w[0].abs().max(1.0))
}

/// The outcome of [`tune_gd_step`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GdTuning {
    /// The chosen constant step.
    pub step: f64,
    /// Final $L$ of the chosen step's tuning run.
    pub final_objective: f64,
    /// `true` when the step was chosen among stable runs ([`is_stable`]); `false` when no
    /// run of the grid was stable and the smallest final $L$ of all runs decided.
    pub stable: bool,
}

impl GdTuning {
    /// The warning to show when no step of the grid was stable (`None` when one was).
    pub fn warning(&self) -> Option<String> {
        (!self.stable).then(|| {
            format!(
                "no constant GD step of the grid keeps L non-increasing; using α = {} (smallest final L)",
                self.step
            )
        })
    }
}

/// Picks the constant step of `grid` for gradient descent: every step is run from
/// `theta0` with `settings` (its iteration limit and cancellation flag; runs that fail or
/// end non-finite are skipped); among the runs whose trace of $L$ is stable ([`is_stable`]: $L$ never increases by more than
/// round-off) the step with the smallest final $L$ wins. Only when no run is stable does
/// the smallest final $L$ over all runs decide (reported as
/// [`GdTuning::stable`]` = false`). The rule ignores steps whose trajectory is chaotic:
/// there the final $L$ changes with the last bits of the arithmetic, and so would the
/// choice. `None` when every run fails at the start. A caller shows
/// [`GdTuning::warning`] when no step was stable.
pub fn tune_gd_step<M: em_as_md::ConditionalFamily + ?Sized>(
    problem: Problem<'_, M>,
    theta0: &[f64],
    settings: &RunSettings,
    grid: &[f64],
) -> Option<GdTuning> {
    let runs: Vec<(f64, f64, bool)> = grid
        .iter()
        .filter_map(|&a| {
            let gd = GradientDescent::new(Step::Constant(a)).ok()?;
            let r = run_recorded(problem, gd, theta0, settings).ok()?;
            let f = r.final_objective();
            (r.failure.is_none() && f.is_finite()).then(|| (a, f, is_stable(&r.objectives)))
        })
        .collect();
    let best = |stable_only: bool| {
        runs.iter()
            .filter(|r| r.2 || !stable_only)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|&(step, final_objective, _)| GdTuning {
                step,
                final_objective,
                stable: stable_only,
            })
    };
    best(true).or_else(|| best(false))
}

fn setup<M: SymModel>(
    model: &M,
    cfg: &SynthConfig,
    snr: f64,
    s: usize,
) -> Result<(Vec<f64>, Dataset, Vec<f64>), MoeError> {
    let base = cfg
        .seed
        .wrapping_add(1_000_003 * (snr * 1000.0) as u64)
        .wrapping_add(4 * s as u64);
    let truth = model.truth(snr, cfg.gate_norm, base)?;
    let data = model.data(&truth, cfg.n, base + 1)?;
    let (b, w) = model.split(&truth);
    let theta0 = perturbed_start(b, w, cfg.init_rel, base + 2);
    Ok((truth, data, theta0))
}

fn instance<M: SymModel>(
    model: &M,
    cfg: &SynthConfig,
    snr: f64,
    s: usize,
    gd_step: f64,
    cancel: Option<&Arc<AtomicBool>>,
) -> Result<Instance, MoeError> {
    let (truth, data, theta0) = setup(model, cfg, snr, s)?;
    let problem = Problem::new(model, &data)?;
    let settings = RunSettings::fixed(cfg.iters).keep().cancel(cancel.cloned());
    let mut runs = Vec::from(em_gem_gd_runs(problem, &theta0, &settings, gd_step)?);
    runs.extend(adam_runs(problem, &theta0, &settings)?);
    let reference = run_recorded(
        problem,
        Em::new(),
        &theta0,
        &RunSettings::fixed(cfg.ref_iters)
            .until(1e-15, 1e-10)
            .keep()
            .cancel(cancel.cloned()),
    )?;
    let l_star = runs
        .iter()
        .map(|(r, _)| r.best_objective())
        .fold(reference.best_objective(), f64::min);
    let mle = reference
        .thetas
        .last()
        .cloned()
        .unwrap_or_else(|| theta0.clone());
    let cert = if s < cfg.cert_instances {
        let cc = CertifyConfig {
            snr: Some(snr),
            ..CertifyConfig::default()
        };
        Some(
            match certify(&problem, &reference.thetas, &reference.objectives, &cc) {
                Ok(c) => CertRow {
                    verdict: c.verdict.to_string(),
                    predicted: c.predicted_rate,
                    observed: c.observed.as_ref().map(|o| o.rate),
                    missing_info: c.missing_info_rate,
                    sem: c.sem_rate,
                },
                Err(e) => CertRow {
                    verdict: format!("error: {e}"),
                    predicted: None,
                    observed: None,
                    missing_info: None,
                    sem: None,
                },
            },
        )
    } else {
        None
    };
    Ok(Instance {
        runs,
        l_star,
        truth,
        mle,
        cert,
    })
}

/// Runs model `M` at every SNR. A raised `cancel` flag stops every run at its next
/// iteration (runs that have not started stop at their start); the results then hold the
/// iterations done.
///
/// # Errors
/// A library error at the start of a run or while building an instance.
pub fn run_model<M: SymModel>(
    cfg: &SynthConfig,
    snrs: &[f64],
    cancel: Option<&Arc<AtomicBool>>,
) -> Result<Vec<SnrResult>, MoeError> {
    let model = M::build(cfg.d)?;
    snrs.iter()
        .map(|&snr| {
            let (_, data0, theta00) = setup(&model, cfg, snr, 0)?;
            let gd_tuning = tune_gd_step(
                Problem::new(&model, &data0)?,
                &theta00,
                &RunSettings::fixed(cfg.iters).cancel(cancel.cloned()),
                &GD_STEPS,
            );
            let gd_step = gd_tuning.map_or(GD_STEPS[0], |t| t.step);
            let insts: Vec<Result<Instance, MoeError>> = (0..cfg.instances)
                .into_par_iter()
                .map(|s| instance(&model, cfg, snr, s, gd_step, cancel))
                .collect();
            let mut solvers: Vec<SolverSynth> = Vec::new();
            let mut certs = Vec::new();
            let (mut mb, mut mw) = (Vec::new(), Vec::new());
            for (s, inst) in insts.into_iter().enumerate() {
                let inst = inst?;
                let (bs, ws) = model.split(&inst.truth);
                let (eb, ew) = {
                    let (b, w) = model.split(&inst.mle);
                    sym_aligned_errors(b, w, bs, ws)
                };
                mb.push(eb);
                mw.push(ew);
                if let Some(c) = inst.cert {
                    certs.push(c);
                }
                for (j, (run, secs)) in inst.runs.into_iter().enumerate() {
                    if solvers.len() <= j {
                        solvers.push(SolverSynth {
                            name: run.name.clone(),
                            ..SolverSynth::default()
                        });
                    }
                    let sv = &mut solvers[j];
                    if let Some(f) = &run.failure {
                        sv.failures.push((s, f.clone()));
                    }
                    sv.gaps.push(
                        run.objectives
                            .iter()
                            .map(|l| (l - inst.l_star).max(GAP_FLOOR))
                            .collect(),
                    );
                    let errs: Vec<(f64, f64)> = run
                        .thetas
                        .iter()
                        .map(|th| {
                            let (b, w) = model.split(th);
                            sym_aligned_errors(b, w, bs, ws)
                        })
                        .collect();
                    sv.beta_err.push(errs.iter().map(|e| e.0).collect());
                    sv.w_err.push(errs.iter().map(|e| e.1).collect());
                    sv.seconds.push(secs);
                }
            }
            Ok(SnrResult {
                snr,
                gd_step,
                gd_tuning,
                solvers,
                certs,
                mle_beta_err: mb,
                mle_w_err: mw,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_at_the_stated_relative_distance() {
        let (b, w) = (vec![3.0, 0.0, 4.0], vec![0.0, 2.0, 0.0]);
        let t = perturbed_start(&b, &w, 0.5, 7);
        let rb = crate::common::relative_error(&t[..3], &b);
        let rw = crate::common::relative_error(&t[3..], &w);
        assert!(
            (rb - 0.5).abs() < 1e-12 && (rw - 0.5).abs() < 1e-12,
            "{rb} {rw}"
        );
        assert_eq!(t, perturbed_start(&b, &w, 0.5, 7));
    }

    #[test]
    fn tiny_run_has_monotone_em_and_aligned_errors() {
        let cfg = SynthConfig {
            instances: 2,
            iters: 10,
            n: 300,
            d: 3,
            gate_norm: 1.0,
            init_rel: 0.3,
            seed: 1,
            ref_iters: 500,
            cert_instances: 0,
        };
        let res = run_model::<SymMoLinE>(&cfg, &[4.0], None).unwrap();
        let em = &res[0].solvers[0];
        assert_eq!(em.name, "EM");
        for g in &em.gaps {
            assert_eq!(g.len(), 11);
            for w in g.windows(2) {
                assert!(w[1] <= w[0] * (1.0 + 1e-9) + 1e-14, "{g:?}");
            }
        }
        // High SNR, n = 300: the MLE is close to the truth after sign alignment.
        assert!(
            res[0].mle_beta_err.iter().all(|e| *e < 0.3),
            "{:?}",
            res[0].mle_beta_err
        );
    }

    #[test]
    fn stability_allows_round_off_only() {
        assert!(is_stable(&[3.0, 2.0, 2.0, 1.5]));
        assert!(is_stable(&[1.0]));
        // An increase of half the allowance passes, of twice the allowance fails; the
        // allowance is relative for |L| > 1 and absolute below.
        assert!(is_stable(&[100.0, 100.0 + 50.0 * STABLE_RTOL]));
        assert!(!is_stable(&[100.0, 100.0 + 200.0 * STABLE_RTOL]));
        assert!(is_stable(&[1e-3, 1e-3 + 0.5 * STABLE_RTOL]));
        assert!(!is_stable(&[1e-3, 1e-3 + 2.0 * STABLE_RTOL]));
        // One increase anywhere, or a non-finite value, makes the trace unstable.
        assert!(!is_stable(&[3.0, 2.0, 2.1, 1.0]));
        assert!(!is_stable(&[3.0, f64::NAN, 1.0]));
        assert!(!is_stable(&[3.0, 2.0, f64::NEG_INFINITY]));
    }

    /// A small SymMoLinE instance (n = 100, d = 2, SNR 1, start at relative distance 0.8)
    /// and 10 iterations, on which GD with α = 3 oscillates yet ends below α = 0.3 and
    /// α = 0.1, and α = 5 oscillates too.
    fn oscillating_instance() -> (SymMoLinE, Dataset, Vec<f64>) {
        let model = SymMoLinE::build(2).unwrap();
        let truth = model.truth(1.0, 1.0, 3).unwrap();
        let data = model.data(&truth, 100, 4).unwrap();
        let (b, w) = model.split(&truth);
        let theta0 = perturbed_start(b, w, 0.8, 5);
        (model, data, theta0)
    }

    fn gd_trace(problem: Problem<'_, SymMoLinE>, theta0: &[f64], a: f64) -> Vec<f64> {
        let gd = GradientDescent::new(Step::Constant(a)).unwrap();
        run_recorded(problem, gd, theta0, &RunSettings::fixed(10))
            .unwrap()
            .objectives
    }

    #[test]
    fn tuning_skips_a_non_monotone_step_that_ends_lowest() {
        let (model, data, theta0) = oscillating_instance();
        let problem = Problem::new(&model, &data).unwrap();
        let grid = [0.1, 0.3, 3.0];
        let traces: Vec<Vec<f64>> = grid
            .iter()
            .map(|&a| gd_trace(problem, &theta0, a))
            .collect();
        let last = |t: &Vec<f64>| *t.last().unwrap();
        // The premise: the largest step is non-monotone and has the smallest final L, so
        // the smallest-final-L rule alone would pick it.
        assert!(is_stable(&traces[0]) && is_stable(&traces[1]), "{traces:?}");
        assert!(!is_stable(&traces[2]), "{:?}", traces[2]);
        assert!(
            last(&traces[2]) < last(&traces[1]) && last(&traces[1]) < last(&traces[0]),
            "{traces:?}"
        );
        let t = tune_gd_step(problem, &theta0, &RunSettings::fixed(10), &grid).unwrap();
        assert_eq!(t.step, 0.3);
        assert!(t.stable);
        assert_eq!(t.final_objective, last(&traces[1]));
        assert_eq!(t.warning(), None);
    }

    #[test]
    fn tuning_falls_back_to_the_smallest_final_l_when_no_step_is_stable() {
        let (model, data, theta0) = oscillating_instance();
        let problem = Problem::new(&model, &data).unwrap();
        let grid = [5.0, 3.0];
        let traces: Vec<Vec<f64>> = grid
            .iter()
            .map(|&a| gd_trace(problem, &theta0, a))
            .collect();
        assert!(traces.iter().all(|t| !is_stable(t)), "{traces:?}");
        let t = tune_gd_step(problem, &theta0, &RunSettings::fixed(10), &grid).unwrap();
        let expect = if traces[0].last() < traces[1].last() {
            5.0
        } else {
            3.0
        };
        assert_eq!(t.step, expect);
        assert!(!t.stable);
        assert_eq!(
            t.warning().unwrap(),
            format!("no constant GD step of the grid keeps L non-increasing; using α = {expect} (smallest final L)")
        );
    }
}
