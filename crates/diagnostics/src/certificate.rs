//! The convergence certificate of a run: measured $\hat L$, $\hat\alpha$, the rate they
//! certify, the observed rate, the EM-map and missing-information rates, and a verdict.
//!
//! **Region.** The ball $B(\theta_T, r)$ around the final iterate ($r$ = `ratios.radius`,
//! Euclidean in $\theta$). The iterates from the first one after which the run never
//! leaves the ball (`region_start`) are part of it. Ratios are measured on pairs
//! made of: the final iterate and `n_samples` uniform points of the ball (both orders, and
//! successive samples), the final iterate and the iterates in the ball (both orders),
//! successive iterates in the ball, and — with `probe_eigen` — short steps
//! $\theta_s \pm h\,v_s$ ($h$ = `probe_fraction`$\cdot r$) from the final iterate and every
//! sample along the top eigenvector $v_s$ of $I_c^{-1}I_m$ there, which is where the
//! ratio is smallest to second order. $\hat\alpha$ is the minimum over all these pairs.
//!
//! **What the certificate is.** $\hat\alpha$ is a minimum over finitely many pairs, so it
//! over-estimates the true modulus on the ball (an empirical certificate, not a proof);
//! the probe pairs make the over-estimate second order in the probe step, and the
//! missing-information estimate $1 - \max_s\lambda_{\max}(M(\theta_s))$ is reported beside it
//! as an independent check. Both depend on the radius: a larger ball certifies a larger
//! region with a smaller $\hat\alpha$. The observed rate is read on the objective, whose gap
//! contracts like $\lambda^2$ when the parameter error contracts like $\lambda = 1 - \alpha$, so a
//! faithful certificate has $q \le 1 - \hat\alpha$ with room to spare; compare
//! $\sqrt q$ ([`ObservedRate::contraction`]) with $1 - \hat\alpha$ and the SEM radius for a
//! like-for-like reading.
//!
//! **Verdict** (checked in this order):
//! 1. *Violated* if some pair has $D_{\mathcal A} < 0$ beyond round-off (the family's `mean`
//!    is not the gradient of a convex `log_partition`), or some accepted ratio exceeds
//!    $1 + $ `smoothness_tol` plus its round-off estimate ($\mathcal A - \ell$ is convex
//!    whatever the family: this flags round-off or an error in the objective);
//! 2. *Violated* if the objective ever increased (beyond the noise floor): the run is not
//!    a descent run of EM / mirror descent with step $\le 1/\hat L$;
//! 3. *Inconclusive* if $\|\nabla L(\theta_T)\| >$ `grad_tol` (not converged), if fewer
//!    than `min_pairs` pairs were accepted, if $\hat\alpha \le$ `alpha_min`, or if fewer than
//!    `min_observed_ratios` reliable rate ratios exist in the region;
//! 4. *Violated* if the observed objective rate $q$ is slower than the certified
//!    $1 - \hat\alpha$: its speed $1 - q$ is below $(1 - $`rate_tol`$)\,\hat\alpha$ (the run is
//!    slower than the theorem allows: not EM, or the region is not representative);
//! 5. otherwise *Certified*.
//!
//! The verdict reads the trajectory only. The caller that ran it should also pass the
//! run's [`Termination`] to [`Certificate::account_for`]: a run that did not converge
//! (an inexact M-step in its last iterations, a limit, an interrupt) turns *Certified*
//! into *Inconclusive*, and the report and JSON name the termination.

use crate::error::{DiagnosticsError, Result};
use crate::information::{information, louis_em_rate, missing_fraction};
use crate::rates::{
    em_map_jacobian, iterations_to, observed_rate, predicted_rate, EmMapFn, ObservedRate,
};
use crate::ratios::{evaluate_pairs, invalid, sample_ball, PairKind, RatioConfig};
use crate::stderr::{standard_errors_from_information, StandardErrors};
use em_as_md::{ConditionalFamily, Dataset, EmModel, Problem, Termination};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Settings of [`certify`]; [`CertifyConfig::validate`] checks every field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertifyConfig {
    /// Sampling of the region and acceptance of pairs.
    pub ratios: RatioConfig,
    /// Add probe pairs along the top missing-information direction at each sampled point.
    pub probe_eigen: bool,
    /// Probe step as a fraction of the radius.
    pub probe_fraction: f64,
    /// At most this many iterates of the region enter pairs (evenly spaced).
    pub max_trajectory_points: usize,
    /// Slack of the smoothness check $\hat L \le 1$.
    pub smoothness_tol: f64,
    /// $\hat\alpha$ at or below this counts as zero.
    pub alpha_min: f64,
    /// Relative slack of the rate check: Violated when the observed speed $1 - q$ is below
    /// $(1 - \text{rate\_tol})\,\hat\alpha$, i.e. $q > 1 - (1 - \text{rate\_tol})\hat\alpha$.
    pub rate_tol: f64,
    /// Minimum number of accepted pairs.
    pub min_pairs: usize,
    /// Minimum number of reliable successive-decrease ratios in the region.
    pub min_observed_ratios: usize,
    /// Convergence: $\|\nabla L(\theta_T)\|_2 \le$ this.
    pub grad_tol: f64,
    /// Relative tolerance between $L(\theta_T)$ recomputed and the last objective value given.
    pub objective_tol: f64,
    /// Noise floor of objective differences, relative to $\max(1, |L_T|)$.
    pub noise_rel: f64,
    /// Relative finite-difference step of the SEM Jacobian.
    pub sem_step: f64,
    /// Suboptimality $\epsilon$ for the predicted iteration count.
    pub target_suboptimality: f64,
    /// Compute standard errors at the final iterate.
    pub standard_errors: bool,
    /// Condition number above which the standard errors carry a warning.
    pub max_condition: f64,
    /// The data's signal-to-noise ratio $\|\beta^*\|/\sigma$, when known (Sym models).
    pub snr: Option<f64>,
}

impl Default for CertifyConfig {
    fn default() -> Self {
        CertifyConfig {
            ratios: RatioConfig::default(),
            probe_eigen: true,
            probe_fraction: 0.5,
            max_trajectory_points: 32,
            smoothness_tol: 1e-9,
            alpha_min: 1e-3,
            rate_tol: 0.1,
            min_pairs: 10,
            min_observed_ratios: 2,
            grad_tol: 1e-5,
            objective_tol: 1e-8,
            noise_rel: 1e-12,
            sem_step: 1e-4,
            target_suboptimality: 1e-8,
            standard_errors: true,
            max_condition: 1e8,
            snr: None,
        }
    }
}

fn pos(field: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(field, "finite and > 0"))
    }
}

impl CertifyConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// `InvalidConfig` naming the first offending field.
    pub fn validate(&self) -> Result<()> {
        self.ratios.validate()?;
        if !(self.probe_fraction.is_finite()
            && self.probe_fraction > 0.0
            && self.probe_fraction <= 1.0)
        {
            return Err(invalid("probe_fraction", "in (0, 1]"));
        }
        if !(self.smoothness_tol.is_finite() && self.smoothness_tol >= 0.0) {
            return Err(invalid("smoothness_tol", "finite and >= 0"));
        }
        if !(self.alpha_min.is_finite() && (0.0..1.0).contains(&self.alpha_min)) {
            return Err(invalid("alpha_min", "in [0, 1)"));
        }
        if !(self.rate_tol.is_finite() && (0.0..1.0).contains(&self.rate_tol)) {
            return Err(invalid("rate_tol", "in [0, 1)"));
        }
        if self.min_pairs == 0 {
            return Err(invalid("min_pairs", ">= 1"));
        }
        if self.min_observed_ratios == 0 {
            return Err(invalid("min_observed_ratios", ">= 1"));
        }
        pos("grad_tol", self.grad_tol)?;
        pos("objective_tol", self.objective_tol)?;
        pos("noise_rel", self.noise_rel)?;
        pos("sem_step", self.sem_step)?;
        pos("target_suboptimality", self.target_suboptimality)?;
        if !(self.max_condition.is_finite() && self.max_condition > 1.0) {
            return Err(invalid("max_condition", "finite and > 1"));
        }
        if let Some(s) = self.snr {
            if !(s.is_finite() && s >= 0.0) {
                return Err(invalid("snr", "finite and >= 0"));
            }
        }
        Ok(())
    }
}

/// The outcome of [`certify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// $\hat\alpha > 0$ on the region containing the final iterates, $\hat L \le 1$, and the
    /// observed rate is within the certified one.
    Certified,
    /// The evidence does not decide ($\hat\alpha \approx 0$, too few samples, not converged,
    /// rate not observable).
    Inconclusive,
    /// A measured ratio exceeds the smoothness bound, the objective increased, or the run
    /// is slower than certified.
    Violated,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Certified => "CERTIFIED",
            Verdict::Inconclusive => "INCONCLUSIVE",
            Verdict::Violated => "VIOLATED",
        })
    }
}

/// Everything measured about one run (serialises to JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    /// The verdict.
    pub verdict: Verdict,
    /// Why, in words.
    pub reason: String,
    /// $\hat L$: largest accepted Bregman ratio (theory: $\le 1$).
    pub l_hat: Option<f64>,
    /// Round-off estimate of the ratio attaining $\hat L$.
    pub l_hat_roundoff: f64,
    /// $\hat\alpha$: smallest accepted Bregman ratio.
    pub alpha_hat: Option<f64>,
    /// Kind of pair attaining $\hat\alpha$.
    pub alpha_pair: Option<PairKind>,
    /// Certified rate $1 - \hat\alpha$ of $L - L^\star$ (when $\hat\alpha > 0$).
    pub predicted_rate: Option<f64>,
    /// Iterations from `region_start` to `target_suboptimality` implied by it.
    pub predicted_iterations: Option<u64>,
    /// The suboptimality $\epsilon$ of `predicted_iterations`.
    pub target_suboptimality: f64,
    /// The observed rate on the region's iterates.
    pub observed: Option<ObservedRate>,
    /// Spectral radius of the finite-difference EM-map Jacobian at $\theta_T$ (SEM).
    pub sem_rate: Option<f64>,
    /// $\|M(\theta_T) - \theta_T\|_\infty$ of the EM map, when it was given.
    pub sem_fixed_point_residual: Option<f64>,
    /// $\lambda_{\max}(I_c^{-1}I_m)$ at $\theta_T$.
    pub missing_info_rate: Option<f64>,
    /// $\max_s \lambda_{\max}(I_c^{-1}I_m)$ over $\theta_T$ and the samples.
    pub missing_info_rate_region: Option<f64>,
    /// $1 - $ `missing_info_rate_region`: the missing-information estimate of $\alpha$.
    pub alpha_missing_info: Option<f64>,
    /// $\lambda_{\max}((I_c + C)^{-1}I_m)$ at $\theta_T$ (Louis prediction of EM's rate).
    pub louis_em_rate: Option<f64>,
    /// Directions of $I_c$ dropped as non-identifiable at $\theta_T$.
    pub non_identifiable_directions: usize,
    /// $\|\beta^*\|/\sigma$ when supplied.
    pub snr: Option<f64>,
    /// Accepted pairs.
    pub pairs_used: usize,
    /// Pairs skipped: $D_{\mathcal A}$ below the floor.
    pub pairs_skipped_small: usize,
    /// Pairs skipped: round-off estimate too large.
    pub pairs_skipped_roundoff: usize,
    /// Pairs skipped: a point outside the model's domain.
    pub pairs_skipped_domain: usize,
    /// Pairs with a negative $D_{\mathcal A}$ (beyond round-off): an inconsistent family.
    pub pairs_negative_bregman: usize,
    /// Sampled points where the information could not be computed.
    pub samples_failed: usize,
    /// Radius of the region.
    pub radius: f64,
    /// First iterate index from which the run stays in the region.
    pub region_start: usize,
    /// Number of iterates $\theta_0..\theta_T$.
    pub n_iterates: usize,
    /// $L(\theta_T)$.
    pub final_objective: f64,
    /// $\|\nabla L(\theta_T)\|_2$.
    pub final_grad_norm: f64,
    /// Whether $\|\nabla L(\theta_T)\| \le$ `grad_tol`.
    pub converged: bool,
    /// Standard errors at $\theta_T$ (when requested and computable).
    pub standard_errors: Option<StandardErrors>,
    /// How the certified run ended, when the caller gave it with
    /// [`Certificate::account_for`] (`None`: not given; absent in certificates written
    /// before the field existed).
    #[serde(default)]
    pub run_termination: Option<Termination>,
}

impl Certificate {
    /// Takes the run's [`Termination`] into account: records it in
    /// [`run_termination`](Self::run_termination) and, when the run did not converge
    /// ([`Termination::is_converged`] is false: an inexact M-step, a limit, an interrupt),
    /// downgrades a [`Verdict::Certified`] to [`Verdict::Inconclusive`] and puts the
    /// termination at the head of the reason (a *Violated* verdict stays: its evidence
    /// does not depend on convergence). Why: the ratios certify a rate of the exact EM
    /// map; a run whose steps were not exact, or that stopped early, is not evidence that
    /// the iterates follow it. Calling it again with the same termination changes nothing.
    pub fn account_for(&mut self, termination: &Termination) {
        if self.run_termination.as_ref() == Some(termination) {
            return;
        }
        self.run_termination = Some(*termination);
        if termination.is_converged() {
            return;
        }
        if self.verdict == Verdict::Certified {
            self.verdict = Verdict::Inconclusive;
        }
        self.reason = format!("the run did not converge ({termination}); {}", self.reason);
    }

    /// Whether the certified run converged, as given to [`Certificate::account_for`]
    /// (`None` when it was not given).
    pub fn run_converged(&self) -> Option<bool> {
        self.run_termination.map(|t| t.is_converged())
    }

    /// The certificate as pretty JSON (every figure in it is finite or absent, so it
    /// reads back with `serde_json::from_str`).
    ///
    /// # Errors
    /// `InvalidConfig { field: "json" }` if serialisation fails (not expected: the
    /// certificate holds only plain data).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| invalid("json", &e.to_string()))
    }
}

/// Greedy word wrap at `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let cur = lines.last_mut().expect("non-empty");
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
    }
    lines
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |x| format!("{x:.4}"))
}

impl fmt::Display for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = "-".repeat(72);
        writeln!(f, "Convergence certificate: {}", self.verdict)?;
        for line in wrap(&self.reason, 70) {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "{:<46}{:>12}",
            "relative smoothness  L̂ = max ratio",
            opt(self.l_hat)
        )?;
        writeln!(
            f,
            "{:<46}{:>12}",
            "relative strong convexity  α̂ = min ratio",
            opt(self.alpha_hat)
        )?;
        writeln!(
            f,
            "{:<46}{:>12}",
            "certified rate  1 − α̂",
            opt(self.predicted_rate)
        )?;
        if let Some(t) = self.predicted_iterations {
            let label = format!("  iterations to L − L* ≤ {:.0e}", self.target_suboptimality);
            writeln!(f, "{label:<46}{t:>12}")?;
        }
        match &self.observed {
            Some(o) => {
                writeln!(
                    f,
                    "{:<46}{:>12}  ({} ratios)",
                    "observed rate of L − L*  q",
                    format!("{:.4}", o.rate),
                    o.n_ratios
                )?;
                writeln!(
                    f,
                    "{:<46}{:>12}",
                    "observed contraction  √q",
                    format!("{:.4}", o.contraction)
                )?;
            }
            None => writeln!(f, "{:<46}{:>12}", "observed rate of L − L*  q", "—")?,
        }
        writeln!(
            f,
            "{:<46}{:>12}",
            "EM-map rate  ρ(DM) (SEM)",
            opt(self.sem_rate)
        )?;
        writeln!(
            f,
            "{:<46}{:>12}",
            "Louis rate  λmax((I_c + C)⁻¹ I_m)",
            opt(self.louis_em_rate)
        )?;
        writeln!(
            f,
            "{:<46}{:>12}",
            "missing information  λmax(I_c⁻¹ I_m) at θ_T",
            opt(self.missing_info_rate)
        )?;
        writeln!(
            f,
            "{:<46}{:>12}",
            "  max over the region",
            opt(self.missing_info_rate_region)
        )?;
        writeln!(
            f,
            "{:<46}{:>12}",
            "  α from missing information",
            opt(self.alpha_missing_info)
        )?;
        if let Some(s) = self.snr {
            writeln!(f, "{:<46}{:>12.4}", "SNR  ‖β*‖/σ", s)?;
        }
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "pairs used {} | skipped: small {}, round-off {}, domain {}",
            self.pairs_used,
            self.pairs_skipped_small,
            self.pairs_skipped_roundoff,
            self.pairs_skipped_domain
        )?;
        writeln!(
            f,
            "region: ball of radius {:.3e} around θ_T; iterates {}..{} inside",
            self.radius,
            self.region_start,
            self.n_iterates.saturating_sub(1)
        )?;
        writeln!(
            f,
            "final L = {:.10}, ‖∇L‖ = {:.3e} ({})",
            self.final_objective,
            self.final_grad_norm,
            if self.converged {
                "converged"
            } else {
                "not converged"
            }
        )?;
        match (&self.run_termination, self.run_converged()) {
            (Some(t), Some(false)) => writeln!(f, "WARNING: the run did not converge: {t}")?,
            (Some(t), _) => writeln!(f, "run: {t}")?,
            (None, _) => {}
        }
        if let Some(se) = &self.standard_errors {
            let shown: Vec<String> = se.se.iter().take(6).map(|v| opt(*v)).collect();
            let more = if se.se.len() > 6 { ", …" } else { "" };
            writeln!(f, "standard errors: [{}{more}]", shown.join(", "))?;
            for w in &se.warnings {
                writeln!(f, "  warning: {w:?}")?;
            }
        }
        Ok(())
    }
}

/// Certifies an EM run of a model with an EM map (the SEM rate is included).
///
/// # Errors
/// See [`certify_with_em_map`].
pub fn certify<M: EmModel + ?Sized>(
    problem: &Problem<'_, M>,
    trajectory: &[Vec<f64>],
    objective_values: &[f64],
    cfg: &CertifyConfig,
) -> Result<Certificate> {
    let map = em_map_of(problem.model, problem.data);
    certify_with_em_map(problem, trajectory, objective_values, cfg, Some(&map))
}

/// The EM map $\theta \mapsto$ `m_step(e_step(θ))` of an [`EmModel`].
pub fn em_map_of<'a, M: EmModel + ?Sized>(
    model: &'a M,
    data: &'a Dataset,
) -> impl Fn(&[f64], &mut [f64]) -> em_as_md::Result<()> + Sync + 'a {
    move |theta: &[f64], next: &mut [f64]| {
        let (stats, _) = model.e_step(data, theta)?;
        model.m_step(data, &stats, theta, next)?;
        Ok(())
    }
}

/// The full computation behind [`certify`], for any [`ConditionalFamily`]; `em_map`
/// (optional) gives the SEM rate.
///
/// # Errors
/// `InvalidConfig` from [`CertifyConfig::validate`]; `InvalidTrajectory` for an empty
/// trajectory, mismatched lengths, non-finite values, or a last objective value that does
/// not match $L(\theta_T)$; `DimensionMismatch` for a wrong-length iterate; `Model` when
/// the objective fails at $\theta_T$.
pub fn certify_with_em_map<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    trajectory: &[Vec<f64>],
    objective_values: &[f64],
    cfg: &CertifyConfig,
    em_map: Option<&EmMapFn<'_>>,
) -> Result<Certificate> {
    cfg.validate()?;
    let np = problem.model.n_params();
    let Some(theta_t) = trajectory.last() else {
        return Err(DiagnosticsError::InvalidTrajectory {
            reason: "the trajectory is empty".into(),
        });
    };
    if objective_values.len() != trajectory.len() {
        return Err(DiagnosticsError::InvalidTrajectory {
            reason: format!(
                "{} objective values for {} iterates",
                objective_values.len(),
                trajectory.len()
            ),
        });
    }
    for (t, th) in trajectory.iter().enumerate() {
        if th.len() != np {
            return Err(DiagnosticsError::DimensionMismatch {
                what: "iterate",
                expected: np,
                found: th.len(),
            });
        }
        if th.iter().any(|v| !v.is_finite()) || !objective_values[t].is_finite() {
            return Err(DiagnosticsError::InvalidTrajectory {
                reason: format!("iterate {t} or its objective value is not finite"),
            });
        }
    }
    let mut grad = vec![0.0; np];
    let final_objective = problem.objective_and_gradient(theta_t, &mut grad)?;
    let last = *objective_values.last().unwrap_or(&final_objective);
    if (final_objective - last).abs() > cfg.objective_tol * final_objective.abs().max(1.0) {
        return Err(DiagnosticsError::InvalidTrajectory {
            reason: format!(
                "the last objective value {last} does not match L(θ_T) = {final_objective}"
            ),
        });
    }
    let final_grad_norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
    let converged = final_grad_norm <= cfg.grad_tol;

    // Region and points.
    let r = cfg.ratios.radius;
    let dist = |a: &[f64]| {
        a.iter()
            .zip(theta_t)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
            .sqrt()
    };
    let t_last = trajectory.len() - 1;
    let mut region_start = t_last;
    while region_start > 0 && dist(&trajectory[region_start - 1]) <= r {
        region_start -= 1;
    }
    let mut points: Vec<Vec<f64>> = vec![theta_t.clone()];
    let mut pairs: Vec<(usize, usize, PairKind)> = Vec::new();
    let samples = sample_ball(theta_t, r, cfg.ratios.n_samples, cfg.ratios.seed);
    let first_sample = points.len();
    points.extend(samples);
    let last_sample = points.len();
    for s in first_sample..last_sample {
        pairs.push((0, s, PairKind::Neighbourhood));
        pairs.push((s, 0, PairKind::Neighbourhood));
        if s + 1 < last_sample {
            pairs.push((s + 1, s, PairKind::Neighbourhood));
        }
    }
    let in_region: Vec<usize> = (region_start..t_last).collect();
    let stride = in_region
        .len()
        .div_ceil(cfg.max_trajectory_points.max(1))
        .max(1);
    for &t in in_region.iter().step_by(stride) {
        let pt = points.len();
        points.push(trajectory[t].clone());
        pairs.push((0, pt, PairKind::Trajectory));
        pairs.push((pt, 0, PairKind::Trajectory));
        let next = if t + 1 == t_last {
            0
        } else {
            points.push(trajectory[t + 1].clone());
            points.len() - 1
        };
        pairs.push((next, pt, PairKind::Consecutive));
    }

    // Missing information at θ_T (with curvature) and at every sample.
    let mut samples_failed = 0;
    let mut mi_region: Option<f64> = None;
    let mut missing_info_rate = None;
    let mut louis = None;
    let mut non_identifiable_directions = 0;
    // Standard errors at θ_T, from the information computed there (with curvature).
    let mut se = None;
    let h = cfg.probe_fraction * r;
    for b in std::iter::once(0).chain(first_sample..last_sample) {
        let with_c = b == 0;
        let info = match information(problem, &points[b], with_c) {
            Ok(i) => i,
            Err(_) => {
                samples_failed += 1;
                continue;
            }
        };
        if b == 0 && cfg.standard_errors {
            se = standard_errors_from_information(&info, problem.data.n(), cfg.max_condition).ok();
        }
        let Ok(ge) = missing_fraction(&info) else {
            samples_failed += 1;
            continue;
        };
        let lam = ge.max();
        mi_region = Some(mi_region.map_or(lam, |m: f64| m.max(lam)));
        if b == 0 {
            missing_info_rate = Some(lam);
            non_identifiable_directions = ge.dropped;
            louis = louis_em_rate(&info).ok();
        }
        if cfg.probe_eigen {
            let mut v = ge.top_vector();
            let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if nv > 0.0 && nv.is_finite() {
                v.iter_mut().for_each(|x| *x /= nv);
                for sign in [1.0, -1.0] {
                    let q: Vec<f64> = points[b]
                        .iter()
                        .zip(&v)
                        .map(|(a, d)| a + sign * h * d)
                        .collect();
                    points.push(q);
                    pairs.push((points.len() - 1, b, PairKind::Probe));
                }
            }
        }
    }
    let summary = evaluate_pairs(problem, &points, &pairs, &cfg.ratios)?;

    // SEM.
    let (sem_rate, sem_res) = match em_map {
        Some(map) => match em_map_jacobian(map, theta_t, cfg.sem_step) {
            Ok(s) => (Some(s.radius), Some(s.fixed_point_residual)),
            Err(_) => (None, None),
        },
        None => (None, None),
    };

    let observed = observed_rate(objective_values, region_start, cfg.noise_rel);
    let alpha = summary.alpha_hat;
    let pred = alpha.and_then(predicted_rate);
    let l_star = observed.as_ref().map_or(final_objective, |o| o.l_star);
    let predicted_iterations = alpha.and_then(|a| {
        iterations_to(
            a,
            objective_values[region_start] - l_star,
            cfg.target_suboptimality,
        )
    });

    // Verdict.
    let n_ratios = observed.as_ref().map_or(0, |o| o.n_ratios);
    let increases = {
        let noise = crate::rates::noise_floor(objective_values, cfg.noise_rel);
        objective_values
            .windows(2)
            .filter(|w| w[1] - w[0] > noise)
            .count()
    };
    let (verdict, reason) = if summary.negative_bregman > 0 {
        (
            Verdict::Violated,
            format!(
                "D_𝒜 < 0 on {} pair(s): the family's mean map is not the gradient of a convex log-partition",
                summary.negative_bregman
            ),
        )
    } else if let Some(l) = summary
        .l_hat
        .filter(|&l| l > 1.0 + cfg.smoothness_tol + summary.l_hat_roundoff)
    {
        (
            Verdict::Violated,
            format!("a Bregman ratio L̂ = {l:.6} exceeds 1 beyond round-off: error in the objective or its gradient"),
        )
    } else if increases > 0 {
        (
            Verdict::Violated,
            format!("the objective increased {increases} time(s): not a descent run of EM (mirror descent with step ≤ 1/L̂)"),
        )
    } else if !converged {
        (
            Verdict::Inconclusive,
            format!(
                "not converged: ‖∇L(θ_T)‖ = {final_grad_norm:.3e} > {:.1e}",
                cfg.grad_tol
            ),
        )
    } else if summary.used < cfg.min_pairs {
        (
            Verdict::Inconclusive,
            format!("only {} usable pairs (< {})", summary.used, cfg.min_pairs),
        )
    } else if alpha.is_none_or(|a| a <= cfg.alpha_min) {
        (
            Verdict::Inconclusive,
            format!(
                "α̂ = {} ≈ 0 on the ball of radius {r:.3e}: no linear rate certified",
                opt(alpha)
            ),
        )
    } else if n_ratios < cfg.min_observed_ratios {
        (
            Verdict::Inconclusive,
            format!(
                "the rate could not be observed: {n_ratios} reliable decrease ratio(s) in the region (need {})",
                cfg.min_observed_ratios
            ),
        )
    } else {
        let q = observed.as_ref().map_or(f64::INFINITY, |o| o.rate);
        let p = pred.unwrap_or(1.0);
        let a = alpha.unwrap_or(0.0);
        if 1.0 - q < (1.0 - cfg.rate_tol) * a {
            (
                Verdict::Violated,
                format!(
                    "observed rate q = {q:.4} is slower than the certified 1 − α̂ = {p:.4} (speed 1 − q = {:.3e} < {:.0}% of α̂)",
                    1.0 - q,
                    100.0 * (1.0 - cfg.rate_tol)
                ),
            )
        } else {
            (
                Verdict::Certified,
                format!(
                    "α̂ = {:.4} > 0 on the ball of radius {r:.3e} containing iterates {region_start}..{t_last}; L̂ = {} ≤ 1; observed rate {q:.4} ≤ certified {p:.4}",
                    alpha.unwrap_or(0.0),
                    opt(summary.l_hat)
                ),
            )
        }
    };

    Ok(Certificate {
        verdict,
        reason,
        l_hat: summary.l_hat,
        l_hat_roundoff: summary.l_hat_roundoff,
        alpha_hat: alpha,
        alpha_pair: summary.alpha_kind,
        predicted_rate: pred,
        predicted_iterations,
        target_suboptimality: cfg.target_suboptimality,
        observed,
        sem_rate,
        sem_fixed_point_residual: sem_res,
        missing_info_rate,
        missing_info_rate_region: mi_region,
        alpha_missing_info: mi_region.map(|m| 1.0 - m),
        louis_em_rate: louis,
        non_identifiable_directions,
        snr: cfg.snr,
        pairs_used: summary.used,
        pairs_skipped_small: summary.skipped_small,
        pairs_skipped_roundoff: summary.skipped_roundoff,
        pairs_skipped_domain: summary.skipped_domain,
        pairs_negative_bregman: summary.negative_bregman,
        samples_failed,
        radius: r,
        region_start,
        n_iterates: trajectory.len(),
        final_objective,
        final_grad_norm,
        converged,
        standard_errors: se,
        run_termination: None,
    })
}
