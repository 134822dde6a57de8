//! A fitted mixture of experts: the model, its parameters, and what can be computed from
//! them (predictions, likelihoods, information criteria).
//!
//! With $\pi_k(x)$ the gate probabilities and $p_F(y;\eta_k(x))$ the expert laws:
//!
//! * responsibilities $r_{ik} = \dfrac{\pi_k(x_i)\,p_F(y_i;\eta_k(x_i))}{\sum_l \pi_l(x_i)\,p_F(y_i;\eta_l(x_i))}$,
//!   computed in log space ([`FittedMoe::responsibilities`]);
//! * predictive mean $\mathbb E[y\mid x] = \sum_k \pi_k(x)\,\mathbb E[y\mid x, z=k]$
//!   ([`FittedMoe::predict_mean`]);
//! * information criteria in the deviance convention (**lower is better**), with
//!   $\hat\ell = \sum_i\log p(y_i\mid x_i;\hat\theta) = -n\,L(\hat\theta)$ and $p$ free parameters
//!   ([`information_criteria`]):
//!   $$ \mathrm{AIC} = -2\hat\ell + 2p,\qquad \mathrm{BIC} = -2\hat\ell + p\log n,\qquad
//!   \mathrm{ICL} = \mathrm{BIC} + 2\sum_i H(r_i),\quad H(r_i) = -\sum_k r_{ik}\log r_{ik}, $$
//!   i.e. ICL is BIC plus twice the entropy of the posterior classification (Biernacki,
//!   Celeux & Govaert 2000, in the BIC approximation of the integrated classification
//!   likelihood), computed on the training data at the end of the fit.

use crate::data::Dataset;
use crate::error::{MoeError, Result};
use crate::fit::scaling::Scaling;
use crate::model::mixture::MixtureOfExperts;
use crate::model::EmModel;
use crate::solve::executor::FitResult;
use crate::solve::problem::Problem;
use crate::solve::solver::{IterRecord, Termination};
use crate::ConditionalFamily;
use mirror::special::log_sum_exp;
use rayon::prelude::*;

/// The spread of final log-likelihoods over restarts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spread {
    /// Smallest final total log-likelihood.
    pub min: f64,
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// Min/median/max of finite values (`None` if there are none).
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let m = v.len();
        let median = if m % 2 == 1 {
            v[m / 2]
        } else {
            0.5 * (v[m / 2 - 1] + v[m / 2])
        };
        Some(Spread {
            min: v[0],
            median,
            max: v[m - 1],
        })
    }
}

/// What happened in one restart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RestartSummary {
    /// Restart index $r$ (its random stream is `seed`'s stream $r$).
    pub index: usize,
    /// How it started: an [`InitMethod::name`](crate::fit::init::InitMethod::name)
    /// (`kmeans`, `short-em`, `random`, `subset`, `dirichlet`, `given`), or
    /// [`UNGATED_START`](crate::fit::UNGATED_START) for a gated fit's start from the
    /// ungated optimum. Empty in reports saved before this field existed.
    #[serde(default)]
    pub init: String,
    /// Final total log-likelihood $-nL$ of the restart's best iterate (`None` if it failed):
    /// with a ridge the penalised $\ell - R$ the start maximised.
    pub log_likelihood: Option<f64>,
    /// Why it stopped (`None` if it failed).
    pub termination: Option<Termination>,
    /// Outer iterations run.
    pub iterations: u64,
    /// The error that ended it, if any (the last attempt's, after the retries).
    pub error: Option<String>,
    /// The errors of the attempts that failed before this result, oldest first: a seeded
    /// start that fails is retried from a fresh draw of its strategy up to
    /// [`START_RETRIES`](crate::fit::START_RETRIES) times
    /// ([`MoeValidParams::retry_theta0`](crate::MoeValidParams::retry_theta0) gives
    /// attempt $a$'s start). Empty in reports saved before this field existed.
    #[serde(default)]
    pub retry_errors: Vec<String>,
    /// Wall-clock seconds of the kept attempt's EM iterations (its [`Executor`] run;
    /// 0 for a failed restart). Restarts run in parallel, so these add up to more than
    /// the fit's wall clock on several cores.
    ///
    /// [`Executor`]: crate::Executor
    #[serde(default)]
    pub seconds: f64,
    /// Wall-clock seconds spent before the kept attempt's iterations: drawing and
    /// building its start (k-means++, short EM runs, subset fits; for the
    /// [`UNGATED_START`](crate::fit::UNGATED_START) the whole ungated fit) and the
    /// attempts that failed before it.
    #[serde(default)]
    pub start_seconds: f64,
    /// Of [`start_seconds`](Self::start_seconds), the EM iterations run to build the
    /// start: for the [`UNGATED_START`](crate::fit::UNGATED_START) the ungated fit's
    /// ([`FitReport::em_seconds`] of that fit), 0 for the other strategies (whose
    /// short runs, as short-EM's, count as building the start). With
    /// [`seconds`](Self::seconds) it is every EM iteration this restart cost.
    #[serde(default)]
    pub start_em_seconds: f64,
}

impl RestartSummary {
    /// The attempt this summary describes (0 for the first): the number of failed
    /// attempts before it.
    pub fn attempt(&self) -> usize {
        self.retry_errors.len()
    }
    /// Whether the restart ran to convergence ([`Termination::is_converged`]): `false`
    /// for a failed restart, an inexact M-step, a limit or an interrupt.
    pub fn converged(&self) -> bool {
        self.termination.is_some_and(|t| t.is_converged())
    }
}

/// The ungated fit a gated fit runs to stay at or above it (see
/// [`MoeValidParams::fit`](crate::MoeValidParams::fit) and
/// [`UngatedStart`](crate::fit::UngatedStart)).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UngatedFit {
    /// Its total log-likelihood $\ell_u$ ([`FitReport::log_likelihood`] of that fit): the
    /// gated fit's is at least this.
    pub log_likelihood: f64,
    /// Its best restart's [`RestartSummary::log_likelihood`] ($\ell - R$ with a ridge),
    /// which the gated restarts' are compared with.
    pub restart_log_likelihood: f64,
    /// Wall-clock seconds of the whole ungated fit.
    pub seconds: f64,
    /// Of [`seconds`](Self::seconds), its EM iterations ([`FitReport::em_seconds`] of
    /// that fit).
    pub em_seconds: f64,
    /// Whether the gated start from its optimum ran (restart
    /// [`UNGATED_START`](crate::fit::UNGATED_START), which then carries these seconds in
    /// its [`RestartSummary::start_seconds`]); `false` when a gated start already ended at
    /// or above it.
    pub start_ran: bool,
}

/// How a model was fitted.
#[derive(Debug, Clone, PartialEq)]
pub struct FitReport {
    /// Solver name.
    pub solver: String,
    /// Number of training rows $n$.
    pub n_rows: usize,
    /// Total log-likelihood $\hat\ell = \sum_i\log p(y_i\mid x_i;\hat\theta)$ on the
    /// training data — without the penalty when the model has a ridge (the fit then
    /// maximised $\ell - R$, the objective of the [`trace`](Self::trace) and of
    /// [`RestartSummary::log_likelihood`]; [`FittedMoe::penalty`] gives $R$).
    pub log_likelihood: f64,
    /// Entropy $\sum_i H(r_i)$ of the training responsibilities at $\hat\theta$ (for ICL).
    pub entropy: f64,
    /// Outer iterations of the returned restart.
    pub iterations: u64,
    /// Why the returned restart stopped (check [`FitReport::converged`]: an inexact
    /// M-step, a limit or an interrupt is not convergence).
    pub termination: Termination,
    /// Wall-clock seconds of the whole fit (all restarts).
    pub seconds: f64,
    /// Per-iteration records of the returned restart.
    pub trace: Vec<IterRecord>,
    /// Index of the returned restart.
    pub best_restart: usize,
    /// Every restart.
    pub restarts: Vec<RestartSummary>,
    /// Spread of the restarts' final log-likelihoods.
    pub spread: Option<Spread>,
    /// $\theta_0$ of the returned restart: where its EM started, on the data it ran on
    /// (the CLI's standardised design), so that a re-run of that EM (`mdem certify`)
    /// starts there without drawing the start again (for a gated fit's start from the
    /// ungated optimum, without re-fitting the ungated model). Empty when not recorded:
    /// a streamed or Dask fit, a report saved before this field existed.
    pub start_theta: Vec<f64>,
    /// The ungated fit of a gated fit ([`UngatedStart`](crate::fit::UngatedStart));
    /// `None` when none ran.
    pub ungated: Option<UngatedFit>,
}

impl FitReport {
    /// The report of a fit that ran one start (`init` names it): a streamed fit, or one
    /// over Dask partitions. `result` is the run, `log_likelihood` and `entropy` are
    /// $\hat\ell$ and $\sum_i H(r_i)$ at its best θ over the `n_rows` rows, `start_seconds`
    /// the time spent building the start and `seconds` the whole fit's.
    #[allow(clippy::too_many_arguments)]
    pub fn single_run(
        solver: String,
        init: &str,
        result: &FitResult,
        n_rows: usize,
        log_likelihood: f64,
        entropy: f64,
        start_seconds: f64,
        seconds: f64,
    ) -> FitReport {
        FitReport {
            solver,
            n_rows,
            log_likelihood,
            entropy,
            iterations: result.state.iter,
            termination: result.termination,
            seconds,
            trace: result.trace.clone(),
            best_restart: 0,
            spread: Spread::of(&[log_likelihood]),
            start_theta: Vec::new(),
            ungated: None,
            restarts: vec![RestartSummary {
                index: 0,
                init: init.into(),
                log_likelihood: Some(-(n_rows as f64) * result.best.objective),
                termination: Some(result.termination),
                iterations: result.state.iter,
                error: None,
                retry_errors: Vec::new(),
                seconds: result.seconds,
                start_seconds,
                start_em_seconds: 0.0,
            }],
        }
    }

    /// Seconds of EM iterations summed over the restarts
    /// ([`RestartSummary::seconds`]): the work the iterations cost, against which the
    /// fit's fixed costs are measured.
    pub fn em_seconds(&self) -> f64 {
        self.restarts.iter().map(|r| r.seconds).sum()
    }

    /// Seconds of the EM iterations run to build starts (the ungated fit behind a gated
    /// fit's extra start), summed over the restarts ([`RestartSummary::start_em_seconds`]),
    /// plus the ungated fit's when its start did not run ([`UngatedFit::start_ran`]);
    /// part of [`start_seconds`](Self::start_seconds).
    pub fn start_em_seconds(&self) -> f64 {
        let restarts: f64 = self.restarts.iter().map(|r| r.start_em_seconds).sum();
        restarts + self.unattributed_ungated().map_or(0.0, |u| u.em_seconds)
    }

    /// Seconds spent building starts, summed over the restarts
    /// ([`RestartSummary::start_seconds`]), plus the ungated fit's when its start did not
    /// run.
    pub fn start_seconds(&self) -> f64 {
        let restarts: f64 = self.restarts.iter().map(|r| r.start_seconds).sum();
        restarts + self.unattributed_ungated().map_or(0.0, |u| u.seconds)
    }

    /// The ungated fit when no restart carries its seconds.
    fn unattributed_ungated(&self) -> Option<&UngatedFit> {
        self.ungated.as_ref().filter(|u| !u.start_ran)
    }

    /// Whether the returned restart converged ([`Termination::is_converged`] of
    /// [`termination`](Self::termination)); an inexact M-step near the end is not
    /// convergence.
    pub fn converged(&self) -> bool {
        self.termination.is_converged()
    }

    /// Indices of the restarts that ran but did not converge (their
    /// [`RestartSummary::termination`] says why); failed restarts are not listed here
    /// (their `error` says why).
    pub fn unconverged_restarts(&self) -> Vec<usize> {
        self.restarts
            .iter()
            .filter(|r| r.termination.is_some() && !r.converged())
            .map(|r| r.index)
            .collect()
    }
}

/// AIC, BIC and the BIC part of ICL for a total log-likelihood `ll`, `p` free parameters
/// and `n` rows: $(-2\hat\ell + 2p,\ -2\hat\ell + p\log n)$. ICL adds $2\sum_i H(r_i)$.
pub fn information_criteria(ll: f64, p: usize, n: usize) -> (f64, f64) {
    let p = p as f64;
    (-2.0 * ll + 2.0 * p, -2.0 * ll + p * (n as f64).ln())
}

/// $\sum_i H(r_i) = -\sum_{i,k} r_{ik}\log r_{ik}$ (with $0\log 0 = 0$) of row-major
/// responsibilities.
pub fn classification_entropy(resp: &[f64]) -> f64 {
    -resp
        .iter()
        .filter(|r| **r > 0.0)
        .map(|r| r * r.ln())
        .sum::<f64>()
}

/// A fitted mixture of experts.
#[derive(Debug, Clone)]
pub struct FittedMoe {
    model: MixtureOfExperts,
    theta: Vec<f64>,
    feature_names: Vec<String>,
    intercept: bool,
    report: FitReport,
}

impl FittedMoe {
    /// Assembles a fitted model (used by [`crate::fit`] and [`crate::fit::io`]).
    ///
    /// # Errors
    /// `InvalidParam { name: "theta" }` for a wrong length or non-finite value,
    /// `InvalidParam { name: "feature_names" }` when their number differs from $d$.
    pub fn new(
        model: MixtureOfExperts,
        theta: Vec<f64>,
        feature_names: Vec<String>,
        report: FitReport,
    ) -> Result<Self> {
        if theta.len() != model.n_params() || theta.iter().any(|v| !v.is_finite()) {
            return Err(MoeError::InvalidParam {
                name: "theta",
                reason: format!("{} finite values expected", model.n_params()),
            });
        }
        if feature_names.len() != model.n_features() {
            return Err(MoeError::InvalidParam {
                name: "feature_names",
                reason: format!(
                    "{} names expected, found {}",
                    model.n_features(),
                    feature_names.len()
                ),
            });
        }
        let intercept = feature_names.first().is_some_and(|s| s == "(intercept)");
        Ok(FittedMoe {
            model,
            theta,
            feature_names,
            intercept,
            report,
        })
    }
    /// The model.
    pub fn model(&self) -> &MixtureOfExperts {
        &self.model
    }
    /// The fitted parameters $\hat\theta$ (layout of [`MixtureOfExperts`]).
    pub fn theta(&self) -> &[f64] {
        &self.theta
    }
    /// Feature names in column order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }
    /// Whether the first feature is the intercept column added by
    /// [`Dataset::with_intercept`].
    pub fn intercept(&self) -> bool {
        self.intercept
    }
    /// The fit report.
    pub fn report(&self) -> &FitReport {
        &self.report
    }

    /// The same fit with its report amended by `amend` (a front end's stage added to it).
    pub(crate) fn amend_report(mut self, amend: impl FnOnce(&mut FitReport)) -> FittedMoe {
        amend(&mut self.report);
        self
    }

    /// The fit with $\hat\theta$ mapped back to the data's units when it was fitted on
    /// columns standardised by `scaling` ([`Scaling::to_original`]): the same laws, so
    /// the same likelihood and report. `None` (fitted on the raw columns) returns it
    /// unchanged. The one place where every front end (command line, Python) maps a fit
    /// back.
    ///
    /// # Errors
    /// As [`Scaling::to_original`] (a scaling of another width than the model's design).
    pub fn in_data_units(self, scaling: Option<&Scaling>) -> Result<FittedMoe> {
        let Some(s) = scaling else {
            return Ok(self);
        };
        let theta = s.to_original(&self.model, &self.theta)?;
        Ok(FittedMoe { theta, ..self })
    }

    fn check(&self, data: &Dataset) -> Result<()> {
        Problem::new(&self.model, data).map(|_| ())
    }

    /// Gate probabilities $\pi_k(x_i)$, row-major $n\times K$.
    ///
    /// # Errors
    /// `InvalidData` when the data's shape does not match the model.
    pub fn gate_probs(&self, data: &Dataset) -> Result<Vec<f64>> {
        if data.d() != self.model.n_features() {
            return Err(MoeError::InvalidData {
                row: None,
                column: None,
                reason: format!(
                    "model expects {} features, data has {}",
                    self.model.n_features(),
                    data.d()
                ),
            });
        }
        let k = self.model.n_experts();
        let mut out = vec![0.0; data.n() * k];
        out.par_chunks_mut(k).enumerate().for_each(|(i, row)| {
            self.model.gate_probs(&self.theta, data.x(i), row);
        });
        Ok(out)
    }

    /// Posterior responsibilities $r_{ik}$, row-major $n\times K$ (log-space).
    ///
    /// # Errors
    /// `InvalidData` for a shape mismatch or a target outside the support; `Mirror` if
    /// an expert's parameter is outside its domain.
    pub fn responsibilities(&self, data: &Dataset) -> Result<Vec<f64>> {
        self.check(data)?;
        let k = self.model.n_experts();
        let fam = self.model.expert().family();
        let p = fam.dim();
        let mut out = vec![0.0; data.n() * k];
        out.par_chunks_mut(k)
            .enumerate()
            .try_for_each(|(i, row)| -> Result<()> {
                let mut eta = vec![0.0; p];
                self.model.gate_logits(&self.theta, data.x(i), row);
                let lse = log_sum_exp(row);
                for (z, r) in row.iter_mut().enumerate() {
                    self.model
                        .expert_natural(&self.theta, z, data.x(i), &mut eta);
                    let lp = if fam.in_support(data.y(i)) {
                        fam.log_density(&eta, data.y(i))?
                    } else {
                        f64::NEG_INFINITY
                    };
                    *r += lp - lse;
                }
                let norm = log_sum_exp(row);
                if !norm.is_finite() {
                    return Err(MoeError::InvalidData {
                        row: Some(i),
                        column: None,
                        reason: "target has zero density under every expert".into(),
                    });
                }
                row.iter_mut().for_each(|r| *r = (*r - norm).exp());
                Ok(())
            })?;
        Ok(out)
    }

    /// Predictive mean $\sum_k \pi_k(x_i)\,\mathbb E[y\mid x_i, z=k]$, row-major
    /// $n\times m$ with $m$ = the expert's `predict_dim` (1 for linear, logistic and
    /// Poisson experts, $C$ for multinomial ones).
    ///
    /// # Errors
    /// `InvalidData` for a feature-count mismatch, `Mirror` from the expert.
    pub fn predict_mean(&self, data: &Dataset) -> Result<Vec<f64>> {
        let pi = self.gate_probs(data)?;
        let k = self.model.n_experts();
        let e = self.model.expert();
        let m = e.predict_dim();
        let mut out = vec![0.0; data.n() * m];
        out.par_chunks_mut(m)
            .enumerate()
            .try_for_each(|(i, row)| -> Result<()> {
                let mut buf = vec![0.0; m];
                for z in 0..k {
                    e.predict_mean(self.model.expert_block(&self.theta, z), data.x(i), &mut buf)?;
                    for (o, b) in row.iter_mut().zip(&buf) {
                        *o += pi[i * k + z] * b;
                    }
                }
                Ok(())
            })?;
        Ok(out)
    }

    /// Class probabilities $P(y_i = c \mid x_i) = \sum_k \pi_k(x_i)\,P(y = c \mid x_i, z = k)$,
    /// row-major $n\times C$, for experts that classify ([`Expert::n_classes`] and
    /// [`Expert::class_probs`]; logistic: $C = 2$, multinomial: $C$ classes).
    ///
    /// # Errors
    /// `InvalidParam { name: "expert" }` for other experts; as [`Self::predict_mean`].
    ///
    /// [`Expert::n_classes`]: crate::model::expert::Expert::n_classes
    /// [`Expert::class_probs`]: crate::model::expert::Expert::class_probs
    pub fn class_probs(&self, data: &Dataset) -> Result<Vec<f64>> {
        let e = self.model.expert();
        let c = e.n_classes().ok_or_else(|| MoeError::InvalidParam {
            name: "expert",
            reason: format!(
                "class probabilities need a classifying expert (logistic, multinomial), not {}",
                e.name()
            ),
        })?;
        let pi = self.gate_probs(data)?;
        let k = self.model.n_experts();
        let mut out = vec![0.0; data.n() * c];
        out.par_chunks_mut(c)
            .enumerate()
            .try_for_each(|(i, row)| -> Result<()> {
                let mut buf = vec![0.0; c];
                for z in 0..k {
                    e.class_probs(self.model.expert_block(&self.theta, z), data.x(i), &mut buf)?;
                    for (o, b) in row.iter_mut().zip(&buf) {
                        *o += pi[i * k + z] * b;
                    }
                }
                Ok(())
            })?;
        Ok(out)
    }

    /// $\log p(y_i\mid x_i;\hat\theta)$ for every row.
    ///
    /// # Errors
    /// As [`Self::responsibilities`].
    pub fn log_predictive_density(&self, data: &Dataset) -> Result<Vec<f64>> {
        self.check(data)?;
        (0..data.n())
            .into_par_iter()
            .map(|i| self.model.log_predictive(&self.theta, data.x(i), data.y(i)))
            .collect()
    }

    /// Total log-likelihood $\sum_i \log p(y_i\mid x_i;\hat\theta) = -n\,L(\hat\theta) +
    /// R(\hat\theta)$ on `data` (unpenalised: the [`penalty`](Self::penalty) that
    /// $L$ counts is added back).
    ///
    /// # Errors
    /// As [`Problem::new`] and [`Problem::objective`].
    pub fn log_likelihood(&self, data: &Dataset) -> Result<f64> {
        let problem = Problem::new(&self.model, data)?;
        Ok(self.penalty() - (data.n() as f64) * problem.objective(&self.theta)?)
    }

    /// The penalty $R(\hat\theta)$ of the model's ridges at the parameters as stored
    /// ([`ConditionalFamily::penalty`]; 0 without one): the fit maximised $\ell - R$,
    /// whose value is [`FitReport::log_likelihood`] minus this. A ridge is defined on the columns the
    /// fit ran on: after [`Scaling::to_original`](crate::fit::scaling::Scaling::to_original)
    /// take it before mapping.
    pub fn penalty(&self) -> f64 {
        self.model.penalty(&self.theta)
    }

    /// Number of free parameters $p$ = the length of $\theta$ (the gate's reference expert
    /// is already removed; every expert block is minimal).
    pub fn n_free_params(&self) -> usize {
        self.model.n_params()
    }
    /// AIC on the training data (lower is better).
    pub fn aic(&self) -> f64 {
        information_criteria(
            self.report.log_likelihood,
            self.n_free_params(),
            self.report.n_rows,
        )
        .0
    }
    /// BIC on the training data (lower is better).
    pub fn bic(&self) -> f64 {
        information_criteria(
            self.report.log_likelihood,
            self.n_free_params(),
            self.report.n_rows,
        )
        .1
    }
    /// ICL = BIC $+\,2\sum_i H(r_i)$ on the training data (lower is better).
    pub fn icl(&self) -> f64 {
        self.bic() + 2.0 * self.report.entropy
    }
}

/// Training-data summaries at $\hat\theta$: the total log-likelihood
/// $\ell = -nL + R$ (from the E-step, without the model's penalty $R$) and the entropy of
/// the responsibilities.
///
/// # Errors
/// As [`EmModel::e_step`].
pub fn training_summaries(
    model: &MixtureOfExperts,
    data: &Dataset,
    theta: &[f64],
) -> Result<(f64, f64)> {
    use crate::model::ConditionalFamily;
    let (stats, l) = model.e_step(data, theta)?;
    let ll = model.penalty(theta) - (data.n() as f64) * l;
    Ok((ll, classification_entropy(&stats.resp)))
}
