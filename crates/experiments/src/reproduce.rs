//! The whole reproduction of the paper (Fruytier, Mokhtari & Sanghavi, ICML 2025), with
//! figures (SVG and PNG, plotters) and a Markdown report: [`reproduce`] (or
//! [`reproduce_with`] to follow its progress), as `mdem reproduce` runs it.
//!
//! 1. **Synthetic** ([`crate::synthetic`]): SymMoLinE and SymMoLogE over seeded
//!    instances and three SNR values each; EM, gradient EM and gradient descent from the
//!    same start; mean and 10–90 % band of $L(\theta_t) - L^\star$ (log scale),
//!    $\|\beta_t - \beta^*\|/\|\beta^*\|$ and $\|w_t - w^*\|/\|w^*\|$ (sign-aligned); the
//!    certificate's predicted rate beside the observed rate across SNR.
//! 2. **Random Invert Digits** ([`crate::digits`]): the paper's "Random Invert"
//!    protocol on the bundled digits (the paper used Fashion-MNIST), 2 experts, 10-class
//!    multinomial-logistic experts; test accuracy and cross-entropy, with the paper's numbers
//!    beside.
//! 3. **Diabetes and breast cancer** ([`crate::tabular`]): fixed split, test
//!    log-likelihood / accuracy.
//!
//! Everything is written into [`Options::out`] (`mdem reproduce`'s default `results/`):
//! `report.md` and `figures/`. The full run is sized for under 10 minutes on 2 cores in
//! release; [`Options::quick`] (a few instances, fewer iterations) for under a minute.
//!
//! **Cancellation.** [`Options::cancel`] is checked by every solver run before each step.
//! Raised (the command line raises it on Ctrl-C; this crate never installs a signal
//! handler), it stops the part that is running at its runs' next iteration, skips the
//! parts after it, and the report and the figures of what ran are still written, with the
//! interrupted part marked ([`Outcome::interrupted_during`]).

use crate::common::{band, band_series, create_dir, fmt_or_dash, mean_sd, quantile, save_both};
use crate::digits::{run_digits, Digits, DigitsConfig, DigitsResult};
use crate::error::ExperimentsError;
use crate::plot::{Chart, Series};
use crate::report::num;
use crate::synthetic::{
    run_model, GdTuning, SnrResult, SynthConfig, GAP_FLOOR, GD_STEPS, STABLE_RTOL,
};
use crate::tabular::{run_tabular, TabResult, Tabular};
use em_as_md::{SymMoLinE, SymMoLogE};
use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The master seed of `mdem reproduce` (the report's numbers are for this seed).
pub const DEFAULT_SEED: u64 = 20_250_713;

/// What to run and where to write it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Output directory (created): `report.md` and `figures/`.
    pub out: PathBuf,
    /// A small version (a few instances, fewer iterations) that runs in seconds
    /// ([`Plan::new`]).
    pub quick: bool,
    /// Directory holding `digits.csv`, `diabetes.csv` and `breast_cancer.csv`; `None`:
    /// `data/` (relative to the working directory) if it holds `digits.csv`, else the
    /// `data/` of the source tree this crate was built from.
    pub data_dir: Option<PathBuf>,
    /// Master seed.
    pub seed: u64,
    /// Cancellation flag, checked by every solver run before each step (see the
    /// [module documentation](self)); lowered by default.
    pub cancel: Arc<AtomicBool>,
}

impl Options {
    /// The full run into `out` with the [`DEFAULT_SEED`], the default data directory and
    /// a fresh (lowered) cancellation flag.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Options {
            out: out.into(),
            quick: false,
            data_dir: None,
            seed: DEFAULT_SEED,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// What a finished reproduction wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The report, `out/report.md`.
    pub report: PathBuf,
    /// The figures' directory, `out/figures`.
    pub figures: PathBuf,
    /// The part during which the cancellation flag was raised (`"SymMoLinE"`,
    /// `"SymMoLogE"`, `"Random Invert Digits"`, `"diabetes"`, `"breast cancer"`), or
    /// `None` when every part ran to the end.
    pub interrupted_during: Option<&'static str>,
    /// Wall seconds of each part that is in the report, in order.
    pub part_seconds: Vec<(&'static str, f64)>,
    /// Wall seconds of the whole run.
    pub seconds: f64,
}

/// Progress of [`reproduce_with`], in the order it happens; `Display` is the line
/// `mdem reproduce` prints on stderr (after a timestamp for [`Event::Stage`] and
/// [`Event::Done`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A stage starts: `synthetic: SymMoLinE`, `synthetic: SymMoLogE`,
    /// `Random Invert Digits`, `diabetes, breast cancer`, `writing the report`.
    Stage(&'a str),
    /// Something worth a warning that does not stop the run (no stable constant GD step
    /// on a grid); shown after the part that found it.
    Warning(&'a str),
    /// A part failed after the cancellation flag was raised and is left out of the report.
    LeftOut {
        /// The part.
        part: &'a str,
        /// Its error.
        error: &'a ExperimentsError,
    },
    /// The report is written, here.
    Done(&'a Path),
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Stage(s) => f.write_str(s),
            Event::Warning(w) => write!(f, "warning: {w}"),
            Event::LeftOut { part, error } => write!(
                f,
                "{part}: left out of the report: it failed after the interrupt: {error}"
            ),
            Event::Done(path) => write!(f, "done: {}", path.display()),
        }
    }
}

/// The sizes of one reproduction run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Synthetic settings.
    pub synth: SynthConfig,
    /// SNR values of SymMoLinE ($\|\beta^*\|/\sigma$).
    pub snr_lin: Vec<f64>,
    /// SNR values of SymMoLogE ($\|\beta^*\|$).
    pub snr_log: Vec<f64>,
    /// Digits settings.
    pub digits: DigitsConfig,
    /// Starts on the tabular data sets.
    pub tab_starts: usize,
    /// Iterations on the tabular data sets.
    pub tab_iters: u64,
}

impl Plan {
    /// The full plan (the paper's sizes) or the quick one.
    pub fn new(quick: bool, seed: u64) -> Plan {
        let synth = SynthConfig {
            instances: if quick { 3 } else { 50 },
            iters: if quick { 30 } else { 100 },
            n: if quick { 500 } else { 2000 },
            d: 10,
            gate_norm: 2.0,
            init_rel: 0.5,
            seed,
            ref_iters: if quick { 500 } else { 5000 },
            cert_instances: if quick { 1 } else { 5 },
        };
        let digits = DigitsConfig {
            instances: if quick { 2 } else { 25 },
            iters: if quick { 10 } else { 100 },
            seed,
            train_fraction: 0.75,
            init_scale: 0.1,
            inner_tol: 1e-5,
            inner_max: if quick { 10 } else { 25 },
        };
        Plan {
            synth,
            snr_lin: vec![1.0, 2.0, 4.0],
            snr_log: vec![2.0, 4.0, 8.0],
            digits,
            tab_starts: if quick { 2 } else { 10 },
            tab_iters: if quick { 20 } else { 100 },
        }
    }
}

/// The data directory: `--data-dir`, else `./data` if it holds `digits.csv`, else the
/// source tree's `data/`.
fn data_dir(arg: Option<&Path>) -> PathBuf {
    if let Some(p) = arg {
        return p.to_path_buf();
    }
    let local = PathBuf::from("data");
    if local.join("digits.csv").is_file() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

/// Reads the digits CSV: 64 pixel columns then the label `y`.
fn load_digits(path: &Path) -> Result<Digits, ExperimentsError> {
    let shown = path.display().to_string();
    let bad = |line: usize, why: String| {
        ExperimentsError::BadInput(format!("{shown}: line {line}: {why}"))
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| ExperimentsError::BadInput(format!("{shown}: {e}")))?;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (r, rec) in rdr.records().enumerate() {
        let line = r + 2;
        let rec = rec.map_err(|e| bad(line, e.to_string()))?;
        if rec.len() != 65 {
            return Err(bad(
                line,
                format!("expected 65 columns (64 pixels and y), found {}", rec.len()),
            ));
        }
        for (j, cell) in rec.iter().enumerate() {
            let v: f64 = cell.trim().parse().map_err(|_| {
                bad(
                    line,
                    format!("column {}: expected a number, found {cell:?}", j + 1),
                )
            })?;
            if !v.is_finite() {
                return Err(bad(
                    line,
                    format!("column {}: expected a finite number", j + 1),
                ));
            }
            if j < 64 {
                pixels.push(v);
            } else {
                labels.push(v);
            }
        }
    }
    if labels.is_empty() {
        return Err(ExperimentsError::BadInput(format!("{shown}: no data rows")));
    }
    Ok(Digits { pixels, labels })
}

/// A figure of the synthetic section: file tag, axis label, log axis, which curves.
type SynthMetric = (
    &'static str,
    &'static str,
    bool,
    fn(&crate::synthetic::SolverSynth) -> &Vec<Vec<f64>>,
);
/// A figure of the digits section: file tag, axis label, log axis, which curves.
type DigitsMetric = (
    &'static str,
    &'static str,
    bool,
    fn(&crate::digits::SolverCurves) -> &Vec<Vec<f64>>,
);

fn chart(title: String, x: &str, y: &str, log_y: bool) -> Chart {
    Chart::new(title, x, y).log_y(log_y).size(760, 460)
}

/// One figure against the iteration: per solver, the mean curve over instances with its
/// 10–90 % band, saved as `stem`.svg and `stem`.png in `figs`.
fn save_band_figure<'a>(
    title: String,
    ylab: &str,
    log_y: bool,
    solvers: impl IntoIterator<Item = (&'a str, &'a [Vec<f64>])>,
    figs: &Path,
    stem: &str,
) -> Result<(), ExperimentsError> {
    let mut c = chart(title, "iteration t", ylab, log_y);
    for (name, curves) in solvers {
        c = c.series(band_series(name, &band(curves, 0.1, 0.9)));
    }
    Ok(save_both(&c, figs, stem)?)
}

/// `mean ± sd` of the values.
fn pm(values: &[f64], sig: usize) -> String {
    let (m, s) = mean_sd(values);
    format!("{} ± {}", fmt_or_dash(m, sig), fmt_or_dash(s, 2))
}

/// Percent `mean ± sd`.
fn pm_pct(values: &[f64]) -> String {
    let v: Vec<f64> = values.iter().map(|x| 100.0 * x).collect();
    let (m, s) = mean_sd(&v);
    format!("{:.1} ± {:.1} %", m, s)
}

fn synth_section(
    text: &mut String,
    figs: &Path,
    tag: &str,
    model: &str,
    snr_label: &str,
    results: &[SnrResult],
    cfg: &SynthConfig,
) -> Result<(), ExperimentsError> {
    let _ = writeln!(text, "### {model}\n");
    let _ = writeln!(
        text,
        "| {snr_label} | solver | iters to L−L* ≤ 1e-5 (median [10 %, 90 %]) | iters to ≤ 1e-6 (median) | final L−L* (mean) | final ‖β−β*‖/‖β*‖ (mean) | final ‖w−w*‖/‖w*‖ (mean) | ms/run (mean) | failed |\n|---|---|---|---|---|---|---|---|---|"
    );
    for r in results {
        for s in &r.solvers {
            let to = |eps: f64| -> Vec<f64> {
                s.gaps
                    .iter()
                    .map(|g| {
                        g.iter()
                            .position(|v| *v <= eps)
                            .map_or(f64::INFINITY, |t| t as f64)
                    })
                    .collect()
            };
            let fmt_it = |v: f64| {
                if v.is_finite() {
                    format!("{v:.0}")
                } else {
                    format!("> {}", cfg.iters)
                }
            };
            let q = |v: &[f64], p: f64| {
                // Quantiles over "not reached" (inf) counted as the largest values.
                let mut w = v.to_vec();
                w.sort_by(f64::total_cmp);
                let h = (p * (w.len().saturating_sub(1)) as f64).round() as usize;
                w.get(h).copied().unwrap_or(f64::NAN)
            };
            let t5 = to(1e-5);
            let t6 = to(1e-6);
            let last = |c: &Vec<Vec<f64>>| -> Vec<f64> {
                c.iter().filter_map(|v| v.last().copied()).collect()
            };
            let _ = writeln!(
                text,
                "| {} | {} | {} [{}, {}] | {} | {} | {} | {} | {} | {} |",
                num(r.snr, 3),
                s.name,
                fmt_it(q(&t5, 0.5)),
                fmt_it(q(&t5, 0.1)),
                fmt_it(q(&t5, 0.9)),
                fmt_it(q(&t6, 0.5)),
                fmt_or_dash(mean_sd(&last(&s.gaps)).0, 3),
                fmt_or_dash(mean_sd(&last(&s.beta_err)).0, 3),
                fmt_or_dash(mean_sd(&last(&s.w_err)).0, 3),
                fmt_or_dash(1e3 * mean_sd(&s.seconds).0, 3),
                s.failures.len(),
            );
        }
    }
    let _ = writeln!(
        text,
        "\nStatistical error of the MLE (reference EM run to convergence), mean over instances: {}.\n",
        results
            .iter()
            .map(|r| format!(
                "{snr_label} = {}: ‖β̂−β*‖/‖β*‖ = {}, ‖ŵ−w*‖/‖w*‖ = {}",
                num(r.snr, 3),
                fmt_or_dash(mean_sd(&r.mle_beta_err).0, 3),
                fmt_or_dash(mean_sd(&r.mle_w_err).0, 3)
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    for r in results {
        let snr_tag = format!("{}", r.snr).replace('.', "_");
        let metrics: [SynthMetric; 3] = [
            ("gap", "L(θ_t) − L*", true, |s| &s.gaps),
            ("beta", "‖β_t − β*‖/‖β*‖", false, |s| {
                &s.beta_err
            }),
            ("gate", "‖w_t − w*‖/‖w*‖", false, |s| &s.w_err),
        ];
        let mut links = Vec::new();
        for (m, ylab, log, get) in metrics {
            let stem = format!("{tag}_snr{snr_tag}_{m}");
            save_band_figure(
                format!(
                    "{model}, {snr_label} = {}: mean and 10–90 % band over {} instances",
                    num(r.snr, 3),
                    cfg.instances
                ),
                ylab,
                log,
                r.solvers
                    .iter()
                    .map(|s| (s.name.as_str(), get(s).as_slice())),
                figs,
                &stem,
            )?;
            links.push(format!("[{m}](figures/{stem}.svg)"));
        }
        let _ = writeln!(
            text,
            "![{model} suboptimality, {snr_label} = {}](figures/{tag}_snr{snr_tag}_gap.svg)\n\n{snr_label} = {}: figures {} (a PNG beside each SVG).\n",
            num(r.snr, 3),
            num(r.snr, 3),
            links.join(", ")
        );
    }
    // Certificate across SNR.
    let _ = writeln!(
        text,
        "**Certificate vs observed rate** (`diagnostics::certify` on the reference EM run of the first {} instance(s) per SNR; medians): the certified rate is $1-\\hat\\alpha$ for $L-L^\\star$ per iteration, the observed rate is the median successive-decrease ratio of $L$ in the linear phase; $\\lambda_{{\\max}}(I_c^{{-1}}I_m)$ at $\\hat\\theta$ is the missing-information fraction and the SEM radius the EM map's Jacobian spectral radius (its square is the matching rate of $L - L^\\star$).\n",
        cfg.cert_instances
    );
    let _ = writeln!(
        text,
        "| {snr_label} | certified 1−α̂ | observed | λmax(I_c⁻¹I_m) | SEM radius² | verdicts |\n|---|---|---|---|---|---|"
    );
    let med = |v: Vec<Option<f64>>| quantile(&v.into_iter().flatten().collect::<Vec<_>>(), 0.5);
    let mut pred_pts = Vec::new();
    let mut obs_pts = Vec::new();
    let mut mi_pts = Vec::new();
    let mut sem_pts = Vec::new();
    for r in results {
        let p = med(r.certs.iter().map(|c| c.predicted).collect());
        let o = med(r.certs.iter().map(|c| c.observed).collect());
        let mi = med(r.certs.iter().map(|c| c.missing_info).collect());
        let sem = med(r.certs.iter().map(|c| c.sem.map(|s| s * s)).collect());
        let mut verdicts: Vec<String> = r.certs.iter().map(|c| c.verdict.clone()).collect();
        verdicts.sort();
        verdicts.dedup_by(|a, b| a == b);
        let counts: Vec<String> = verdicts
            .iter()
            .map(|v| {
                format!(
                    "{} × {v}",
                    r.certs.iter().filter(|c| &c.verdict == v).count()
                )
            })
            .collect();
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} |",
            num(r.snr, 3),
            fmt_or_dash(p, 3),
            fmt_or_dash(o, 3),
            fmt_or_dash(mi, 3),
            fmt_or_dash(sem, 3),
            counts.join(", ")
        );
        pred_pts.push((r.snr, p));
        obs_pts.push((r.snr, o));
        mi_pts.push((r.snr, mi));
        sem_pts.push((r.snr, sem));
    }
    let c = chart(
        format!("{model}: EM rate of L − L* across SNR"),
        snr_label,
        "rate per iteration",
        false,
    )
    .series(Series::new("certified 1 − α̂", pred_pts))
    .series(Series::new("observed", obs_pts))
    .series(Series::new("λmax(I_c⁻¹ I_m)", mi_pts))
    .series(Series::new("SEM radius²", sem_pts));
    let stem = format!("{tag}_rates");
    match save_both(&c, figs, &stem) {
        Ok(()) => {
            let _ = writeln!(
                text,
                "\n![{model} rates across SNR](figures/{stem}.svg) ([PNG](figures/{stem}.png))\n"
            );
        }
        Err(e) => {
            let _ = writeln!(text, "\n(rate figure not drawn: {e})\n");
        }
    }
    Ok(())
}

fn digits_section(
    text: &mut String,
    figs: &Path,
    r: &DigitsResult,
    cfg: &DigitsConfig,
) -> Result<(), ExperimentsError> {
    let paper = [
        ("EM", "78.5 %", "0.827"),
        ("gradient EM", "66.0 %", "1.29"),
        ("GD", "62.4 %", "1.30"),
    ];
    let _ = writeln!(
        text,
        "| solver | test accuracy (ours, mean ± sd) | test cross-entropy (ours) | train L (ours) | paper's accuracy (Fashion-MNIST) | paper's cross-entropy | s/instance | failed |\n|---|---|---|---|---|---|---|---|"
    );
    for s in &r.solvers {
        let last = |c: &Vec<Vec<f64>>| -> Vec<f64> {
            c.iter().filter_map(|v| v.last().copied()).collect()
        };
        let (pa, pc) = paper
            .iter()
            .find(|p| s.name.starts_with(p.0))
            .map_or(("–", "–"), |p| (p.1, p.2));
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {pa} | {pc} | {} | {} |",
            s.name,
            pm_pct(&last(&s.accuracy)),
            pm(&last(&s.cross_entropy), 4),
            pm(&last(&s.objective), 4),
            fmt_or_dash(mean_sd(&s.seconds).0, 3),
            s.failures.len()
        );
    }
    let em = &r.solvers[0];
    let _ = writeln!(
        text,
        "\nEM's inexact M-step: L-BFGS (memory 10) per block, warm-started at θ_t, stopped at ‖∇F‖∞ ≤ {} or {} iterations per block; mean L-BFGS iterations per outer step (gate + 2 experts): {}; fraction of outer steps where every block reached the tolerance: {}.\n",
        num(cfg.inner_tol, 2),
        cfg.inner_max,
        fmt_or_dash(mean_sd(&em.inner_per_step).0, 3),
        fmt_or_dash(mean_sd(&em.inner_converged).0, 3),
    );
    let metrics: [DigitsMetric; 3] = [
        ("accuracy", "test accuracy", false, |s| &s.accuracy),
        ("cross_entropy", "test cross-entropy", true, |s| {
            &s.cross_entropy
        }),
        ("objective", "training objective L(θ_t)", true, |s| {
            &s.objective
        }),
    ];
    for (m, ylab, log, get) in metrics {
        let stem = format!("digits_{m}");
        save_band_figure(
            format!(
                "Random Invert Digits: {ylab}, mean and 10–90 % band over {} instances",
                cfg.instances
            ),
            ylab,
            log,
            r.solvers
                .iter()
                .map(|s| (s.name.as_str(), get(s).as_slice())),
            figs,
            &stem,
        )?;
        let _ = writeln!(
            text,
            "![Random Invert Digits {ylab}](figures/{stem}.svg) ([PNG](figures/{stem}.png))\n"
        );
    }
    Ok(())
}

fn tabular_section(
    text: &mut String,
    figs: &Path,
    r: &TabResult,
    iters: u64,
) -> Result<(), ExperimentsError> {
    let binary = r.which == Tabular::BreastCancer;
    let _ = writeln!(
        text,
        "**{}** ({} train / {} test rows, {} design columns with intercept, {} experts, {} starts{}):\n",
        r.which.name(),
        r.n_train,
        r.n_test,
        r.d,
        if binary { "2 logistic" } else { "2 linear-Gaussian" },
        r.solvers.first().map_or(0, |s| s.test_ll.len()),
        if r.random_starts > 0 {
            format!(", {} of them random because the k-means++ start failed", r.random_starts)
        } else {
            String::new()
        }
    );
    if binary {
        let _ = writeln!(text, "| solver | test log-lik. per row | test accuracy | final train L | failed |\n|---|---|---|---|---|");
    } else {
        let _ = writeln!(
            text,
            "| solver | test log-lik. per row | final train L | failed |\n|---|---|---|---|"
        );
    }
    for s in &r.solvers {
        let fin: Vec<f64> = s
            .objective
            .iter()
            .filter_map(|v| v.last().copied())
            .collect();
        if binary {
            let _ = writeln!(
                text,
                "| {} | {} | {} | {} | {} |",
                s.name,
                pm(&s.test_ll, 4),
                pm_pct(&s.test_acc),
                pm(&fin, 4),
                s.failures.len()
            );
        } else {
            let _ = writeln!(
                text,
                "| {} | {} | {} | {} |",
                s.name,
                pm(&s.test_ll, 4),
                pm(&fin, 4),
                s.failures.len()
            );
        }
    }
    if r.y_sd != 1.0 {
        let _ = writeln!(
            text,
            "\nThe target was standardised with the training rows (sd {}): add −ln {} = {} to a log-likelihood per row for the original units.",
            num(r.y_sd, 4),
            num(r.y_sd, 4),
            num(-r.y_sd.ln(), 4)
        );
    }
    for s in &r.solvers {
        if let Some((i, f)) = s.failures.first() {
            let _ = writeln!(
                text,
                "\n{} stopped early on start {i}: {f} (its last iterate is evaluated).",
                s.name
            );
        }
    }
    let tag = if binary { "breast_cancer" } else { "diabetes" };
    let mut c = chart(
        format!(
            "{}: training objective, mean and 10–90 % band",
            r.which.name()
        ),
        "iteration t",
        "L(θ_t)",
        false,
    );
    for s in &r.solvers {
        c = c.series(band_series(&s.name, &band(&s.objective, 0.1, 0.9)));
    }
    save_both(&c, figs, &format!("{tag}_objective"))?;
    let _ = writeln!(
        text,
        "\n![{} objective](figures/{tag}_objective.svg) ([PNG](figures/{tag}_objective.png)); {iters} iterations per solver.\n",
        r.which.name()
    );
    Ok(())
}

/// A part of the reproduction that ran: its result and wall seconds.
struct Part<T> {
    result: T,
    seconds: f64,
}

/// Runs one part of the reproduction unless `flag` (Ctrl-C) was raised during an earlier
/// one (then `None`); records in `cut` the part during which it was raised. A part that
/// fails after the interrupt is reported ([`Event::LeftOut`]) and left out instead of
/// failing the whole run.
fn part<T>(
    flag: &AtomicBool,
    cut: &mut Option<&'static str>,
    name: &'static str,
    on_event: &mut dyn FnMut(Event<'_>),
    f: impl FnOnce() -> Result<T, ExperimentsError>,
) -> Result<Option<Part<T>>, ExperimentsError> {
    if cut.is_some() {
        return Ok(None);
    }
    let clock = Instant::now();
    let r = f();
    let seconds = clock.elapsed().as_secs_f64();
    if flag.load(Ordering::SeqCst) {
        *cut = Some(name);
        if let Err(e) = &r {
            on_event(Event::LeftOut {
                part: name,
                error: e,
            });
            return Ok(None);
        }
    }
    r.map(|result| Some(Part { result, seconds }))
}

/// Reports the warning of every GD step tuning that found no stable step.
fn warn_tuning(
    on_event: &mut dyn FnMut(Event<'_>),
    tunings: impl IntoIterator<Item = Option<GdTuning>>,
) {
    for w in tunings.into_iter().flatten().filter_map(|t| t.warning()) {
        on_event(Event::Warning(&w));
    }
}

/// The note under a part's heading after Ctrl-C: cut short (the part that was running),
/// or not run (a later part); nothing for a part that finished before it.
fn cut_note(cut: Option<&str>, name: &str, ran: bool) -> String {
    match cut {
        Some(c) if c == name && ran => format!(
            "> **Interrupted (Ctrl-C) during {name}:** its runs stopped at their next iteration and runs that had not started stopped at their start, so its numbers mix complete and cut-short runs and are not the stated protocol.\n"
        ),
        Some(c) if c == name => format!(
            "> **Interrupted (Ctrl-C) during {name}:** it failed after the interrupt and is left out.\n"
        ),
        Some(_) if !ran => format!(
            "> **Not run:** the reproduction was interrupted (Ctrl-C) before {name}.\n"
        ),
        _ => String::new(),
    }
}

/// Runs the whole reproduction (see the [module documentation](self)) and writes
/// `report.md` and `figures/` into [`Options::out`]; [`reproduce_with`] without progress
/// events.
///
/// # Errors
/// As [`reproduce_with`].
pub fn reproduce(options: &Options) -> Result<Outcome, ExperimentsError> {
    reproduce_with(options, &mut |_| {})
}

/// [`reproduce`], calling `on_event` as the run goes (stages, warnings, parts left out,
/// the report written; see [`Event`]).
///
/// A raised [`Options::cancel`] stops the part that is running at its runs' next
/// iteration, skips the parts after it, and still writes the report and the figures of
/// what ran, with the interrupted part marked.
///
/// # Errors
/// [`ExperimentsError::BadInput`]/[`ExperimentsError::Data`] for missing or bad data
/// files, [`ExperimentsError::Compute`] when an experiment fails,
/// [`ExperimentsError::Output`]/[`ExperimentsError::Plot`] when the report or a figure
/// cannot be written.
pub fn reproduce_with(
    options: &Options,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Outcome, ExperimentsError> {
    let clock = Instant::now();
    let plan = Plan::new(options.quick, options.seed);
    let dir = data_dir(options.data_dir.as_deref());
    let figs = options.out.join("figures");
    create_dir(&figs)?;
    let threads = rayon::current_num_threads();
    let cancel = Some(&options.cancel);

    let ctx = |what: &'static str| move |e| ExperimentsError::compute(what, e);
    let mut cut: Option<&'static str> = None;
    let flag = &*options.cancel;
    on_event(Event::Stage("synthetic: SymMoLinE"));
    let lin = part(flag, &mut cut, "SymMoLinE", on_event, || {
        run_model::<SymMoLinE>(&plan.synth, &plan.snr_lin, cancel).map_err(ctx("SymMoLinE"))
    })?;
    if let Some(p) = &lin {
        warn_tuning(on_event, p.result.iter().map(|r| r.gd_tuning));
    }
    if cut.is_none() {
        on_event(Event::Stage("synthetic: SymMoLogE"));
    }
    let logi = part(flag, &mut cut, "SymMoLogE", on_event, || {
        run_model::<SymMoLogE>(&plan.synth, &plan.snr_log, cancel).map_err(ctx("SymMoLogE"))
    })?;
    if let Some(p) = &logi {
        warn_tuning(on_event, p.result.iter().map(|r| r.gd_tuning));
    }
    if cut.is_none() {
        on_event(Event::Stage("Random Invert Digits"));
    }
    let dig = part(flag, &mut cut, "Random Invert Digits", on_event, || {
        let px = load_digits(&dir.join("digits.csv"))?;
        run_digits(&px, &plan.digits, cancel).map_err(ctx("Random Invert Digits"))
    })?;
    if let Some(p) = &dig {
        warn_tuning(on_event, [p.result.gd_tuning]);
    }
    if cut.is_none() {
        on_event(Event::Stage("diabetes, breast cancer"));
    }
    let diab = part(flag, &mut cut, "diabetes", on_event, || {
        run_tabular(
            Tabular::Diabetes,
            &dir,
            plan.tab_starts,
            plan.tab_iters,
            options.seed,
            cancel,
        )
    })?;
    if let Some(p) = &diab {
        warn_tuning(on_event, [p.result.gd_tuning]);
    }
    let bc = part(flag, &mut cut, "breast cancer", on_event, || {
        run_tabular(
            Tabular::BreastCancer,
            &dir,
            plan.tab_starts,
            plan.tab_iters,
            options.seed,
            cancel,
        )
    })?;
    if let Some(p) = &bc {
        warn_tuning(on_event, [p.result.gd_tuning]);
    }
    on_event(Event::Stage("writing the report"));

    let s = &plan.synth;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# Reproduction report{}\n\nGenerated by `mdem reproduce{}` (seed {}, {} rayon thread(s)). Paper: Fruytier, Mokhtari & Sanghavi, *Learning Mixtures of Experts with EM: A Mirror Descent Perspective*, ICML 2025. Figures are in `figures/` (SVG and PNG). Bands are the 10 %–90 % quantiles over instances, lines the mean.\n",
        if options.quick { " (quick run: few instances, not the paper's sizes)" } else { "" },
        if options.quick { " --quick" } else { "" },
        options.seed,
        threads
    );
    if let Some(c) = cut {
        let _ = writeln!(
            text,
            "> **This run was interrupted (Ctrl-C) during {c}.** The parts before it are complete; {c} is marked below; the parts after it were not run.\n"
        );
    }
    let _ = writeln!(
        text,
        "## 1. Synthetic: SymMoLinE and SymMoLogE\n\nSetup: {} seeded instances per SNR, {} iterations per solver, n = {} rows, d = {} features, x ~ N(0, I_d), ‖w*‖ = {}; SymMoLinE has σ = 1 and SNR = ‖β*‖/σ, SymMoLogE has SNR = ‖β*‖ (the logistic link fixes the noise). All solvers start from the same θ_0 = θ* + {}·(‖β*‖u, ‖w*‖v) with u, v uniform on the unit sphere (a start near θ*, the regime of the paper's local results; the paper's own initialisation is not stated in what we could read). EM is the library's exact EM; gradient EM takes one Armijo-backtracked gradient step on the M-step objective (initial step 1, shrink ½, c = 1e-4); GD takes constant steps α, chosen per SNR from {{{}}} on the first instance: the smallest final L among the steps whose run is stable, i.e. L never increases by more than round-off (L_{{t+1}} ≤ L_t + {:e}·max(1, |L_t|) at every iteration), or among all steps if none is stable (the chosen α is in the solver's name). A step whose L goes up and down is excluded however low it happens to end: its final L is an accident of a chaotic trajectory. Adam (the optimiser practitioners use on mixtures of experts) runs full batch with its default β₁ = 0.9, β₂ = 0.999, ε = 1e-8 at every learning rate of the grid {{1e-3, 1e-2, 1e-1}}, all three reported (a step leaving the domain is halved until it stays inside). By Fisher's identity ∇Q_t(θ_t) = ∇L(θ_t), so gradient EM with a constant step *is* GD with that step: the two differ only through the step rule. L* is the smallest objective seen, including a reference EM run from θ_0 to convergence (relative change < 1e-15 or ‖∇L‖ < 1e-10, at most {} iterations): the empirical optimum, so L − L* measures optimisation error; ‖β−β*‖ and ‖w−w*‖ are against the true θ* and level off at the statistical error. Labels are aligned for the symmetry (β, w) ↔ (−β, −w) by choosing the sign closer to θ*. Gaps are floored at {:e} before averaging.\n",
        s.instances, s.iters, s.n, s.d, s.gate_norm, s.init_rel,
        GD_STEPS.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
        STABLE_RTOL,
        s.ref_iters, GAP_FLOOR
    );
    text.push_str(&cut_note(cut, "SymMoLinE", lin.is_some()));
    if let Some(p) = &lin {
        synth_section(
            &mut text,
            &figs,
            "symmoline",
            "SymMoLinE",
            "SNR",
            &p.result,
            s,
        )?;
    }
    text.push_str(&cut_note(cut, "SymMoLogE", logi.is_some()));
    if let Some(p) = &logi {
        synth_section(
            &mut text,
            &figs,
            "symmologe",
            "SymMoLogE",
            "SNR",
            &p.result,
            s,
        )?;
    }
    let _ = writeln!(
        text,
        "What the paper reports (read off its SymMoLinE figure): EM below 1e-5 in about 5 iterations, gradient EM in about 25–30, GD in about 55–65; GD's gate error still about 0.35 at iteration 100, EM's about 0.08 by iteration 8. Our d, n, SNR, step sizes and start are choices (the paper's are not known to us), so only the ordering and the orders of magnitude are comparable.\n"
    );

    let dc = &plan.digits;
    let _ = writeln!(
        text,
        "## 2. Random Invert Digits (the paper's Random Invert protocol on a different data set)\n"
    );
    text.push_str(&cut_note(cut, "Random Invert Digits", dig.is_some()));
    if let Some(Part { result: dig, .. }) = &dig {
        let _ = writeln!(
            text,
            "**The data set differs from the paper's.** The paper uses Fashion-MNIST (60 000 training images of 28×28 pixels); it cannot be downloaded here, so the same protocol runs on scikit-learn's bundled handwritten digits (1797 images of 8×8 pixels, 10 classes, `data/digits.csv`). The numbers are therefore not comparable one to one; the paper's are shown beside ours for orientation only.\n\nProtocol: pixels scaled to [0, 1] (x/16); each image inverted (x → 1 − x) with probability ½, seeded per instance ({:.1} % of images inverted overall); intercept added (d = 65); fixed train/test split {} / {} rows (one seeded permutation); a softmax-gated mixture of 2 multinomial-logistic experts over 10 classes (1235 parameters) from one random start per instance (entries N(0, {}²)), trained for {} iterations by EM, gradient EM (Armijo on the M-step objective) and GD (constant step α = {}, the smallest final L on instance 0 among the steps of the grid {{{}}} whose L never increases by more than round-off, {:e}·max(1, |L|), in that run; among all steps if none is stable) over {} seeded instances. Test cross-entropy is −(1/n_test) Σ log p(y|x) under the mixture; accuracy takes the most probable class.\n",
            100.0 * dig.inverted_fraction,
            dig.n_train,
            dig.n_test,
            dc.init_scale,
            dc.iters,
            dig.gd_step,
            GD_STEPS.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
            STABLE_RTOL,
            dc.instances
        );
        digits_section(&mut text, &figs, dig, dc)?;
    }

    let _ = writeln!(
        text,
        "## 3. Diabetes and breast cancer\n\nFixed split (75 % / 25 %, one seeded permutation), features (and the diabetes target) standardised with the training rows, softmax-gated mixtures of 2 experts, {} iterations per solver from the same start (the library's k-means++ start for each seed); gradient EM with Armijo, GD with the constant step of the grid {{{}}} that gives the smallest final L from start 0 among the steps whose L never increases by more than round-off ({:e}·max(1, |L|)) in that run (among all steps if none is stable). Breast cancer uses the 10 `mean_*` features only: with all 30 the training rows are separable by the mixture and every solver drives the training L to ≈ 0. Test log-likelihood is the mean over test rows of log p(y|x) (natural log, all constants included).\n",
        plan.tab_iters,
        GD_STEPS.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
        STABLE_RTOL
    );
    text.push_str(&cut_note(cut, "diabetes", diab.is_some()));
    if let Some(p) = &diab {
        tabular_section(&mut text, &figs, &p.result, plan.tab_iters)?;
    }
    text.push_str(&cut_note(cut, "breast cancer", bc.is_some()));
    if let Some(p) = &bc {
        tabular_section(&mut text, &figs, &p.result, plan.tab_iters)?;
    }

    let total = clock.elapsed().as_secs_f64();
    let secs = |p: Option<f64>| p.map_or_else(|| "not run".to_string(), |v| num(v, 3));
    let tab = match (&diab, &bc) {
        (Some(a), Some(b)) => Some(a.seconds + b.seconds),
        (Some(a), None) => Some(a.seconds),
        _ => None,
    };
    let _ = writeln!(
        text,
        "## Run time\n\n| part | seconds |\n|---|---|\n| SymMoLinE (incl. reference runs and certificates) | {} |\n| SymMoLogE | {} |\n| Random Invert Digits | {} |\n| diabetes + breast cancer | {} |\n| total | {} |\n",
        secs(lin.as_ref().map(|p| p.seconds)),
        secs(logi.as_ref().map(|p| p.seconds)),
        secs(dig.as_ref().map(|p| p.seconds)),
        secs(tab),
        num(total, 3)
    );
    let path = options.out.join("report.md");
    em_as_md::fit::atomic::write_bytes(&path, text.as_bytes())
        .map_err(|e| ExperimentsError::output(path.display(), e))?;
    on_event(Event::Done(&path));
    let part_seconds = [
        ("SymMoLinE", lin.as_ref().map(|p| p.seconds)),
        ("SymMoLogE", logi.as_ref().map(|p| p.seconds)),
        ("Random Invert Digits", dig.as_ref().map(|p| p.seconds)),
        ("diabetes", diab.as_ref().map(|p| p.seconds)),
        ("breast cancer", bc.as_ref().map(|p| p.seconds)),
    ]
    .into_iter()
    .filter_map(|(name, secs)| secs.map(|v| (name, v)))
    .collect();
    Ok(Outcome {
        report: path,
        figures: figs,
        interrupted_during: cut,
        part_seconds,
        seconds: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_after_an_interrupt_are_skipped_and_marked() {
        let flag = AtomicBool::new(false);
        let mut cut = None;
        let mut events = |_: Event<'_>| {};
        let a = part(&flag, &mut cut, "A", &mut events, || Ok(1)).unwrap();
        assert_eq!(a.map(|p| p.result), Some(1));
        assert_eq!(cut, None);
        // Ctrl-C during B: B's (cut-short) result is kept and B is marked.
        let b = part(&flag, &mut cut, "B", &mut events, || {
            flag.store(true, Ordering::SeqCst);
            Ok(2)
        })
        .unwrap();
        assert_eq!(b.map(|p| p.result), Some(2));
        assert_eq!(cut, Some("B"));
        // C does not run at all.
        let mut ran = false;
        let c = part(&flag, &mut cut, "C", &mut events, || {
            ran = true;
            Ok(3)
        })
        .unwrap();
        assert!(c.is_none() && !ran);
        assert_eq!(cut, Some("B"));

        assert_eq!(cut_note(cut, "A", true), "");
        assert!(cut_note(cut, "B", true).contains("Interrupted (Ctrl-C) during B"));
        assert!(cut_note(cut, "C", false).contains("Not run"));
        assert_eq!(cut_note(None, "C", true), "");
    }

    #[test]
    fn a_part_failing_after_the_interrupt_is_left_out_not_an_error() {
        let flag = AtomicBool::new(false);
        let mut cut = None;
        let mut left_out = Vec::new();
        let mut events = |e: Event<'_>| left_out.push(e.to_string());
        let r: Option<Part<()>> = part(&flag, &mut cut, "B", &mut events, || {
            flag.store(true, Ordering::SeqCst);
            Err(ExperimentsError::BadInput("cut".into()))
        })
        .unwrap();
        assert!(r.is_none());
        assert_eq!(
            left_out,
            ["B: left out of the report: it failed after the interrupt: cut"]
        );
        assert_eq!(cut, Some("B"));
        assert!(cut_note(cut, "B", false).contains("left out"));
        // Without an interrupt a failure is the run's error.
        let mut cut = None;
        let lowered = AtomicBool::new(false);
        let e = part::<()>(&lowered, &mut cut, "A", &mut |_| {}, || {
            Err(ExperimentsError::BadInput("bad".into()))
        });
        assert!(matches!(e, Err(ExperimentsError::BadInput(_))));
        assert_eq!(cut, None);
    }
}
