//! Accelerated EM against plain EM: iterations, EM-equivalent passes and wall time to the
//! same log-likelihood for EM, SQUAREM ([`em_as_md::Squarem`]), mirror descent with
//! $\eta_t = 1/\hat L_t$ ([`em_as_md::AdaptiveMirrorDescent`]) and Anderson-accelerated EM
//! ([`em_as_md::Anderson`]) on gated linear, logistic and
//! Poisson mixtures of two experts and on the two symmetric models, across signal
//! strengths, with the missing-information fraction $\lambda_{\max}(I_c^{-1}I_m)$ at the
//! optimum beside each row ([`diagnostics::information::missing_fraction`]).
//!
//! **Protocol** (one seeded instance per row). All four solvers start from the same
//! $\theta_0$ and stop at relative change $<$ `tol` or `max_iters`. $L^\star$ is the
//! smallest objective any of them reached; a solver *reaches* it at the first $t$ with
//! $L_t - L^\star \le$ `rel`$\cdot|L^\star|$ (default $10^{-8}$), and the table gives the
//! iterations, EM-equivalent passes ([`em_as_md::StepInfo::passes`]) and seconds at that
//! $t$, or "—" when it never does (it stopped elsewhere, or at the cap). The gated
//! models' "scale" is the size of the true parameters
//! ([`DrawConfig::truth_scale`]: gate entries $\sim N(0, s^2)$, expert coefficients at
//! scale $s$; for linear experts with unit variance it is the signal-to-noise ratio); the
//! symmetric models' is $\mathrm{SNR} = \Vert\beta^*\Vert/\sigma$ ($\sigma = 1$;
//! SymMoLogE: $\Vert\beta^*\Vert$), $\Vert w^*\Vert = 1$, start as in [`crate::synthetic`].
//!
//! **Starts of the gated rows.** By default $\theta_0$ is drawn independently of the data
//! (the [`draw`]'s start, entries at scale $\frac12$ whatever the truth's): the whole path
//! from an arbitrary point, far from the optimum. With [`AccelConfig::init`] the gated
//! rows start where a fit's first restart with that strategy would
//! ([`MoeValidParams::restart_theta0`](em_as_md::MoeValidParams::restart_theta0), seed
//! `seed`; `mdem fit`'s default `auto` begins with k-means++): the path a user's fit
//! takes after its initialisation. The symmetric models keep their perturbed start.

use crate::common::{run_recorded, Run, RunSettings};
use crate::synthetic::perturbed_start;
use diagnostics::information::{information, missing_fraction};
use em_as_md::testkit::{draw, DrawConfig};
use em_as_md::{
    AdaptiveMirrorDescent, Anderson, Dataset, Em, EmModel, Expert, Gating, InitMethod,
    LinearGaussian, Logistic, MixtureOfExperts, MoeError, MoeParams, Newton, Poisson, Problem,
    Squarem, SymMoLinE, SymMoLogE,
};
use std::fmt::Write as _;
use std::sync::Arc;

/// Settings of [`accel_table`].
#[derive(Debug, Clone, PartialEq)]
pub struct AccelConfig {
    /// Rows per instance.
    pub n: usize,
    /// Signal strengths (see the [module documentation](self)).
    pub scales: Vec<f64>,
    /// Master seed.
    pub seed: u64,
    /// Iteration cap of every solver.
    pub max_iters: u64,
    /// Relative-change tolerance of every solver.
    pub tol: f64,
    /// Relative distance to $L^\star$ that counts as reached.
    pub rel: f64,
    /// Where the gated rows start: `None` for the draw's independent random $\theta_0$,
    /// `Some(method)` for the start of a fit's first restart by that strategy (see the
    /// [module documentation](self)).
    pub init: Option<InitMethod>,
}

impl Default for AccelConfig {
    fn default() -> Self {
        AccelConfig {
            n: 2000,
            scales: vec![0.5, 1.0, 2.0],
            seed: 2025,
            max_iters: 3000,
            tol: 1e-13,
            rel: 1e-8,
            init: None,
        }
    }
}

/// One solver on one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct SolverCost {
    /// Solver name.
    pub name: String,
    /// Iterations, EM-equivalent passes and seconds to $L^\star$ (`None`: not reached).
    pub reached: Option<(usize, u64, f64)>,
    /// Iterations run.
    pub iterations: usize,
    /// Best objective.
    pub best: f64,
    /// Iterations whose SQUAREM or Anderson safeguard fired, or whose MD step
    /// backtracked.
    pub fallbacks: usize,
    /// Median step $\eta$ taken ($-\alpha$ for SQUAREM), when recorded.
    pub median_eta: Option<f64>,
    /// Median measured $\hat L_t$, when recorded.
    pub median_l_hat: Option<f64>,
    /// The failure that stopped the run early, if any.
    pub failure: Option<String>,
}

/// One row: a model at one signal strength.
#[derive(Debug, Clone, PartialEq)]
pub struct AccelRow {
    /// Model name.
    pub model: String,
    /// Signal strength.
    pub scale: f64,
    /// $\lambda_{\max}(I_c^{-1}I_m)$ at the best iterate (`None` if it failed).
    pub lambda_max: Option<f64>,
    /// $L^\star$.
    pub l_star: f64,
    /// EM, SQUAREM, MD($1/\hat L$), Anderson, Newton.
    pub solvers: Vec<SolverCost>,
}

impl AccelRow {
    /// Plain EM's passes to $L^\star$ over those of solver `j`, when both reached it.
    pub fn speedup(&self, j: usize) -> Option<f64> {
        let em = self.solvers.first()?.reached?.1 as f64;
        let other = self.solvers.get(j)?.reached?.1 as f64;
        (other > 0.0).then(|| em / other)
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn cost(run: &Run, l_star: f64, rel: f64) -> SolverCost {
    let reached = run
        .first_below(l_star, rel * l_star.abs())
        .map(|(t, s)| (t, run.passes_at(t).unwrap_or(0), s));
    SolverCost {
        name: run.name.clone(),
        reached,
        iterations: run.iterations(),
        best: run.best_objective(),
        fallbacks: run
            .steps
            .iter()
            .filter(|s| s.safeguard || s.backtracks > 0)
            .count(),
        median_eta: median(run.steps.iter().filter_map(|s| s.eta).collect()),
        median_l_hat: median(run.steps.iter().filter_map(|s| s.smoothness).collect()),
        failure: run.failure.clone(),
    }
}

/// EM, SQUAREM, MD($1/\hat L$) and Anderson on one instance.
///
/// # Errors
/// A solver's error at its start; the information matrices' failure is recorded as
/// `lambda_max = None`.
pub fn compare_instance<M>(
    name: &str,
    scale: f64,
    model: &M,
    data: &Dataset,
    theta0: &[f64],
    cfg: &AccelConfig,
) -> Result<AccelRow, MoeError>
where
    M: EmModel,
    M::Stats: 'static,
{
    let problem = Problem::new(model, data)?;
    let settings = RunSettings::fixed(cfg.max_iters)
        .until(cfg.tol, 1e-300)
        .keep();
    let runs = [
        run_recorded(problem, Em::new(), theta0, &settings)?,
        run_recorded(problem, Squarem::new(), theta0, &settings)?,
        run_recorded(problem, AdaptiveMirrorDescent::new(), theta0, &settings)?,
        run_recorded(problem, Anderson::new(), theta0, &settings)?,
        run_recorded(problem, Newton::new(), theta0, &settings)?,
    ];
    let (l_star, best_theta) = runs
        .iter()
        .filter_map(|r| {
            let t = r
                .objectives
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))?
                .0;
            Some((r.objectives[t], r.thetas.get(t)?.clone()))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .ok_or(MoeError::NonFinite { what: "L*" })?;
    let lambda_max = information(&problem, &best_theta, false)
        .and_then(|i| missing_fraction(&i))
        .ok()
        .map(|g| g.max());
    Ok(AccelRow {
        model: name.to_string(),
        scale,
        lambda_max,
        l_star,
        solvers: runs.iter().map(|r| cost(r, l_star, cfg.rel)).collect(),
    })
}

fn gated(
    name: &str,
    expert: Arc<dyn Expert>,
    cfg: &AccelConfig,
    scale: f64,
    seed: u64,
) -> Result<AccelRow, MoeError> {
    let model = MixtureOfExperts::new(expert, 2, 3, Gating::Softmax)?;
    let dc = DrawConfig {
        truth_scale: scale,
        ..DrawConfig::default()
    };
    let d = draw(&model, &dc, cfg.n, seed)?;
    let theta0 = match &cfg.init {
        None => d.theta0,
        Some(method) => MoeParams::for_model(&model)
            .init(method.clone())
            .seed(cfg.seed)
            .check()?
            .restart_theta0(&model, &d.data, 0)?,
    };
    compare_instance(name, scale, &model, &d.data, &theta0, cfg)
}

/// Every row of the table: the five models at every scale of `cfg`.
///
/// # Errors
/// As [`compare_instance`] and the data draws.
pub fn accel_table(cfg: &AccelConfig) -> Result<Vec<AccelRow>, MoeError> {
    let mut rows = Vec::new();
    for (i, &s) in cfg.scales.iter().enumerate() {
        let seed = cfg.seed.wrapping_add(100 * i as u64);
        rows.push(gated(
            "gated linear",
            Arc::new(LinearGaussian::new()),
            cfg,
            s,
            seed,
        )?);
        rows.push(gated(
            "gated logistic",
            Arc::new(Logistic::new()),
            cfg,
            s,
            seed + 1,
        )?);
        rows.push(gated(
            "gated Poisson",
            Arc::new(Poisson::new()),
            cfg,
            s,
            seed + 2,
        )?);
        let lin = SymMoLinE::new(3, 1.0)?;
        let truth = lin.random_theta(s, 1.0, seed + 3)?;
        let (data, _) = lin.simulate(&truth, cfg.n, seed + 4)?;
        let (b, w) = (lin.beta(&truth), lin.gate(&truth));
        let theta0 = perturbed_start(b, w, 0.5, seed + 5);
        rows.push(compare_instance("SymMoLinE", s, &lin, &data, &theta0, cfg)?);
        let log = SymMoLogE::new(3)?;
        let truth = log.random_theta(s, 1.0, seed + 6)?;
        let (data, _) = log.simulate(&truth, cfg.n, seed + 7)?;
        let (b, w) = (log.beta(&truth), log.gate(&truth));
        let theta0 = perturbed_start(b, w, 0.5, seed + 8);
        rows.push(compare_instance("SymMoLogE", s, &log, &data, &theta0, cfg)?);
    }
    Ok(rows)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".into(), |x| format!("{x:.digits$}"))
}

/// The table as Markdown: per row the model, scale, $\lambda_{\max}$, and for each solver
/// iterations / passes / milliseconds to $L^\star$, then the pass ratios EM/SQUAREM,
/// EM/MD and EM/Anderson, SQUAREM's and Anderson's safeguard counts and MD's median
/// $\eta$ and $\hat L_t$.
pub fn accel_markdown(rows: &[AccelRow], cfg: &AccelConfig) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| model | scale | λmax(I_c⁻¹I_m) | EM it / passes / ms | SQUAREM it / passes / ms | MD(1/L̂) it / passes / ms | Anderson it / passes / ms | Newton it / passes / ms | passes EM/SQUAREM | passes EM/MD | passes EM/Anderson | passes EM/Newton | safeguards SQUAREM / Anderson / Newton | MD median η (L̂_t), backtracks |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let cell = |c: &SolverCost| match c.reached {
        Some((t, p, s)) => format!("{t} / {p} / {:.0}", 1e3 * s),
        None => format!("— ({} it)", c.iterations),
    };
    for r in rows {
        let [em, sq, md, aa, nt] = [0, 1, 2, 3, 4].map(|j| &r.solvers[j]);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} ({}), {} |",
            r.model,
            r.scale,
            opt(r.lambda_max, 3),
            cell(em),
            cell(sq),
            cell(md),
            cell(aa),
            cell(nt),
            opt(r.speedup(1), 2),
            opt(r.speedup(2), 2),
            opt(r.speedup(3), 2),
            opt(r.speedup(4), 2),
            sq.fallbacks,
            aa.fallbacks,
            nt.fallbacks,
            opt(md.median_eta, 2),
            opt(md.median_l_hat, 3),
            md.fallbacks,
        );
    }
    let _ = writeln!(
        out,
        "\nn = {} rows per instance, seed {}, every solver from the same start ({}) to relative change < {:e} (at most {} iterations); reached = L_t − L* ≤ {:e}·|L*| with L* the best value any solver found.",
        cfg.n,
        cfg.seed,
        cfg.init.as_ref().map_or_else(
            || "gated rows: an independent random θ0".to_string(),
            |m| format!("gated rows: a fit's first `{}` start", m.name())
        ),
        cfg.tol,
        cfg.max_iters,
        cfg.rel
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table small enough for a unit test: 300 rows, one scale.
    fn small(init: Option<InitMethod>) -> AccelConfig {
        AccelConfig {
            n: 300,
            scales: vec![1.0],
            max_iters: 400,
            tol: 1e-12,
            init,
            ..AccelConfig::default()
        }
    }

    #[test]
    fn a_small_table_has_every_model_and_reaches_l_star() {
        let cfg = small(None);
        let rows = accel_table(&cfg).unwrap();
        assert_eq!(rows.len(), 5);
        for r in &rows {
            // The solver that found L* reached it; on these instances SQUAREM, Anderson
            // and Newton are not worse than EM (not so on every draw: examples/basin_sweep).
            assert!(r.solvers.iter().any(|s| s.reached.is_some()), "{r:?}");
            let (em, sq, aa, nt) = (&r.solvers[0], &r.solvers[1], &r.solvers[3], &r.solvers[4]);
            assert!(sq.best <= em.best + 1e-8 * em.best.abs(), "{r:?}");
            assert!(aa.best <= em.best + 1e-8 * em.best.abs(), "{r:?}");
            assert!(nt.best <= em.best + 1e-8 * em.best.abs(), "{r:?}");
            if let Some(l) = r.lambda_max {
                assert!((-1e-8..=1.0 + 1e-8).contains(&l), "{l}");
            }
        }
        let md = accel_markdown(&rows, &cfg);
        assert_eq!(md.lines().filter(|l| l.starts_with("| ")).count(), 6);
    }

    /// With `init`, a gated row's EM run is EM from the fit's first restart's start:
    /// the same iterations and final $L$ as a run from that start computed here.
    #[test]
    fn gated_rows_start_where_the_fit_would() {
        let cfg = small(Some(InitMethod::KMeansPlusPlus));
        let rows = accel_table(&cfg).unwrap();
        let model =
            MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 3, Gating::Softmax).unwrap();
        let dc = DrawConfig {
            truth_scale: 1.0,
            ..DrawConfig::default()
        };
        let d = draw(&model, &dc, cfg.n, cfg.seed).unwrap();
        let start = MoeParams::for_model(&model)
            .init(InitMethod::KMeansPlusPlus)
            .seed(cfg.seed)
            .check()
            .unwrap()
            .restart_theta0(&model, &d.data, 0)
            .unwrap();
        assert_ne!(start, d.theta0);
        let settings = RunSettings::fixed(cfg.max_iters).until(cfg.tol, 1e-300);
        let problem = Problem::new(&model, &d.data).unwrap();
        let em = run_recorded(problem, Em::new(), &start, &settings).unwrap();
        let row = &rows[0];
        assert_eq!(row.model, "gated linear");
        assert_eq!(row.solvers[0].iterations, em.iterations());
        assert_eq!(row.solvers[0].best, em.best_objective());
        let md = accel_markdown(&rows, &cfg);
        assert!(md.contains("a fit's first `kmeans` start"), "{md}");
    }

    #[test]
    fn speedup_is_the_ratio_of_passes() {
        let c = |p: Option<u64>| SolverCost {
            name: String::new(),
            reached: p.map(|p| (1, p, 0.0)),
            iterations: 1,
            best: 0.0,
            fallbacks: 0,
            median_eta: None,
            median_l_hat: None,
            failure: None,
        };
        let row = AccelRow {
            model: "m".into(),
            scale: 1.0,
            lambda_max: None,
            l_star: 0.0,
            solvers: vec![c(Some(90)), c(Some(30)), c(None)],
        };
        assert_eq!(row.speedup(1), Some(3.0));
        assert_eq!(row.speedup(2), None);
    }
}
