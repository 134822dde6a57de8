//! Mini-batch EM as stochastic mirror descent ([`MiniBatchEm`]).
//!
//! EM's step from $\theta_t$ is the mirror-descent step with unit step in the KL geometry
//! of the complete-data family: the M-step maximises the expected complete-data
//! log-likelihood, a linear function of the posterior sufficient statistics
//! $\bar s(\theta_t) = \frac1n\sum_i \mathbb E_{z\mid y_i;\theta_t}[T(y_i, z)]$
//! ([`crate::solve::em`]). A mini-batch of $B$ rows gives an unbiased estimate $\hat s_t$ of
//! $\bar s(\theta_t)$, and the **stochastic mirror-descent step** with step $\eta_t$ moves
//! the mean parameter (the statistics) a fraction $\eta_t$ of the way:
//! $$ S_{t+1} = (1 - \eta_t)\,S_t + \eta_t\,\hat s_t,\qquad \theta_{t+1} = M(S_{t+1}), $$
//! which is online EM (Cappé & Moulines, *J. R. Stat. Soc. B* 71, 2009) in its
//! sufficient-statistics form. It is applied exactly to every block whose M-step reads
//! only sufficient statistics: the constant gate (mixing weights $W_k/n$) and
//! Gaussian-regression experts (weighted Gram matrices).
//!
//! The softmax gate and GLM experts (logistic, Poisson, a user's) have no finite
//! sufficient statistic: their M-step objective $Q$ depends on every row. For them the
//! step is the mirror step's second-order form on the batch: one Newton (Fisher-scoring)
//! step of the batch's $Q$, scaled by $\eta_t$,
//! $$ \vartheta_{t+1} = \vartheta_t + \eta_t\,\big(-\nabla^2\hat Q_t\big)^{-1}\nabla\hat Q_t, $$
//! the KL-proximal step linearised at $\vartheta_t$. Its local metric $-\nabla^2 Q$ is the
//! Fisher information of the block's family, that is the Hessian of the mirror map. A
//! Hessian that is singular on a batch is shifted (Levenberg) before it is factored.
//!
//! **Steps.** $\eta_t = \eta_0\,(t + t_0)^{-a}$ with $a \in (\tfrac12, 1]$ (so
//! $\sum\eta_t = \infty$ and $\sum\eta_t^2 < \infty$: the Robbins–Monro conditions), $t$
//! counting batches from 0; $\eta_t \le 1$ is enforced (a step beyond the new statistics is
//! not a convex combination). With **Polyak averaging** the reported parameter is the mean
//! of the iterates of the last half of the batches (Polyak & Juditsky 1992), which has the
//! optimal asymptotic variance for $a < 1$.
//!
//! **When a constant step is stable.** Near an optimum EM contracts at the rate of the
//! largest eigenvalue $\lambda$ of the missing-information fraction
//! $I_c^{-1}I_m$, and a mirror step of size $\eta$ contracts as $1 - \eta(1 - \lambda)$ in
//! the same geometry. The certificate of the `diagnostics` crate measures the relative
//! smoothness $\hat L \approx 1$ and strong convexity $\hat\alpha \approx 1 - \lambda$, so
//! any $\eta \le 1/\hat L$ contracts the mean, and the noise floor of a constant step
//! scales with $\eta/\hat\alpha$: slowly mixing models (small $\hat\alpha$) need decaying
//! steps.
//!
//! Batches are the source's chunks in order ([`RowSource::chunk_rows`] $= B$): shuffle a
//! sorted file first; [`crate::data::source::Synthetic`] rows are independent draws.

use crate::data::source::RowSource;
use crate::error::{Block, MoeError, Result};
use crate::inner::cholesky::solve;
use crate::inner::sums::NewtonSums;
use crate::inner::InnerStats;
use crate::model::mixture::{ClusterStats, LinearStats, MixtureOfExperts, MoeStats};
use crate::model::ConditionalFamily;
use crate::shard::{pass, EStats, Round, RoundNeed, Sums};
use crate::solve::adam::AdamSettings;
use faer::Mat;
use serde::{Deserialize, Serialize};

/// The step schedule $\eta_t = \eta_0 (t + t_0)^{-a}$, capped at 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepSchedule {
    /// $\eta_0 > 0$.
    pub eta0: f64,
    /// $t_0 \ge 1$ (delays the decay; $\eta_0 t_0^{-a}$ is the first step).
    pub t0: f64,
    /// $a \in (\tfrac12, 1]$; $a = 0$ is a constant step $\eta_0$.
    pub a: f64,
}

impl StepSchedule {
    /// $\eta_t$.
    pub fn eta(&self, t: u64) -> f64 {
        (self.eta0 * (t as f64 + self.t0).powf(-self.a)).min(1.0)
    }

    /// `InvalidParam` naming the field for $\eta_0 \le 0$, $t_0 < 1$, or $a$ outside
    /// $\{0\} \cup (\tfrac12, 1]$.
    fn check(&self) -> Result<()> {
        let bad = |name, reason: &str| {
            Err(MoeError::InvalidParam {
                name,
                reason: reason.into(),
            })
        };
        if !(self.eta0 > 0.0 && self.eta0.is_finite()) {
            return bad("eta0", "a finite step > 0");
        }
        if !(self.t0 >= 1.0 && self.t0.is_finite()) {
            return bad("t0", "a finite offset >= 1");
        }
        if !(self.a == 0.0 || (self.a > 0.5 && self.a <= 1.0)) {
            return bad("a", "0 (constant step) or in (1/2, 1] (Robbins–Monro)");
        }
        Ok(())
    }
}

impl Default for StepSchedule {
    /// $\eta_t = (t + 2)^{-0.6}$.
    fn default() -> Self {
        StepSchedule {
            eta0: 1.0,
            t0: 2.0,
            a: 0.6,
        }
    }
}

/// Mini-batch EM over a row source; see the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MiniBatchEm {
    /// Passes over the source.
    pub passes: u64,
    /// The step schedule.
    pub schedule: StepSchedule,
    /// Report the Polyak average of the last half of the iterates.
    pub average: bool,
    /// Evaluate $L$ over the whole source after every pass (one extra pass each, not
    /// counted in [`MiniBatchRun::passes`]) for the trajectory.
    pub evaluate: bool,
}

/// What a [`MiniBatchEm`] run returns.
#[derive(Debug, Clone, PartialEq)]
pub struct MiniBatchRun {
    /// The last iterate.
    pub theta: Vec<f64>,
    /// The Polyak average (equal to `theta` without averaging).
    pub theta_avg: Vec<f64>,
    /// $L$ of the returned parameter (`theta_avg`) over the whole source.
    pub objective: f64,
    /// $L$ of the last iterate over the whole source.
    pub objective_last: f64,
    /// `(passes so far, L of the current iterate)` after each pass (with `evaluate`),
    /// starting with `(0, L(θ₀))`.
    pub trajectory: Vec<(f64, f64)>,
    /// Batches processed (steps taken).
    pub steps: u64,
    /// Training passes over the source (batches / batches per pass).
    pub passes: f64,
    /// Batch Hessians that needed a Levenberg shift.
    pub shifted: u64,
}

impl MiniBatchEm {
    /// Runs mini-batch EM on `model` over `source` (batches = its chunks) from `theta0`.
    ///
    /// # Errors
    /// `InvalidParam` for a bad schedule, 0 passes or a θ of the wrong length;
    /// `InvalidParam { name: "expert" }` for a Gaussian-mixture expert (its moments are
    /// kept about moving centres; not supported here); `InvalidParam { name: "ridge" }`
    /// for a penalised model; the source's and the E-step's
    /// errors; `NotPositiveDefinite` when a batch's Gram or Hessian stays singular after
    /// the shifts.
    pub fn run(
        &self,
        model: &MixtureOfExperts,
        source: &dyn RowSource,
        theta0: &[f64],
    ) -> Result<MiniBatchRun> {
        self.schedule.check()?;
        if self.passes == 0 {
            return Err(MoeError::InvalidParam {
                name: "passes",
                reason: "at least 1".into(),
            });
        }
        if model.expert().gaussian_clusters().is_some() {
            return Err(MoeError::InvalidParam {
                name: "expert",
                reason: "mini-batch EM for Gaussian mixtures (moments about moving centres) is \
                         not available; fit in passes with exact EM"
                    .into(),
            });
        }
        refuse_penalty(model)?;
        let mut theta = theta0.to_vec();
        let objective = |t: &[f64]| -> Result<f64> {
            pass(model, source, &Round::E { theta: t.to_vec() })?.objective()
        };
        let mut trajectory = Vec::new();
        if self.evaluate {
            trajectory.push((0.0, objective(&theta)?));
        }
        let n = source.n_rows();
        let batches_per_pass = n.div_ceil(source.chunk_rows()).max(1) as u64;
        let total = self.passes * batches_per_pass;
        let burn = total / 2;
        let (mut avg, mut n_avg) = (vec![0.0; theta.len()], 0.0);
        let mut running: Option<EStats> = None;
        let (mut t, mut shifted) = (0u64, 0u64);
        for p in 0..self.passes {
            source.for_each_chunk(&mut |_, batch| {
                let eta = self.schedule.eta(t);
                let e = model.accumulate(
                    &Round::E {
                        theta: theta.clone(),
                    },
                    batch,
                )?;
                let Sums::E(es) = &e.sums else {
                    return Err(round_mismatch());
                };
                let b = e.rows as f64;
                blend(&mut running, es, eta, b);
                let stats = to_moe_stats(running.as_ref().expect("blended"), model);
                let mut next = theta.clone();
                let shifts = std::cell::Cell::new(0u64);
                model.m_step_with(
                    model.n_features(),
                    &stats,
                    &theta,
                    &mut next,
                    &mut |start, out, _| {
                        // The gate's first Newton round on the batch came with its E-step.
                        let g = es.gate.as_ref().ok_or_else(|| MoeError::InvalidParam {
                            name: "gate",
                            reason: "mini-batch EM needs the Newton gate solver".into(),
                        })?;
                        let dim = start.len();
                        let sums = NewtonSums {
                            at: g.0.clone(),
                            q: g.1,
                            abs: g.2,
                            outside: false,
                            grad: g.3.clone(),
                            hess: (0..dim * dim)
                                .map(|j| g.4[(j % dim) * dim + j / dim])
                                .collect(),
                        };
                        shifts.set(
                            shifts.get() + newton_step(&sums, start, out, eta, b, Block::Gate)?,
                        );
                        Ok(InnerStats::default())
                    },
                    &mut |c, start, out| {
                        let r = model.accumulate(
                            &Round::Expert {
                                theta: theta.clone(),
                                expert: c,
                                params: start.to_vec(),
                                need: RoundNeed::Hessian,
                            },
                            batch,
                        )?;
                        let Sums::Newton(sums) = r.sums else {
                            return Err(round_mismatch());
                        };
                        let block = Block::Expert(Some(c));
                        shifts.set(shifts.get() + newton_step(&sums, start, out, eta, b, block)?);
                        Ok(InnerStats::default())
                    },
                )?;
                shifted += shifts.get();
                theta = next;
                if t >= burn {
                    n_avg += 1.0;
                    for (a, v) in avg.iter_mut().zip(&theta) {
                        *a += (v - *a) / n_avg;
                    }
                }
                t += 1;
                Ok(())
            })?;
            if self.evaluate {
                trajectory.push(((p + 1) as f64, objective(&theta)?));
            }
        }
        let theta_avg = if self.average && n_avg > 0.0 {
            avg
        } else {
            theta.clone()
        };
        let objective_last = match trajectory.last() {
            Some(&(_, l)) => l,
            None => objective(&theta)?,
        };
        let objective = if theta_avg == theta {
            objective_last
        } else {
            objective(&theta_avg)?
        };
        Ok(MiniBatchRun {
            theta,
            theta_avg,
            objective,
            objective_last,
            trajectory,
            steps: t,
            passes: t as f64 / batches_per_pass as f64,
            shifted,
        })
    }
}

/// A round that returned the statistics of another kind (not expected of
/// [`MixtureOfExperts::accumulate`]).
fn round_mismatch() -> MoeError {
    MoeError::InvalidParam {
        name: "stats",
        reason: "a round returned statistics of another kind".into(),
    }
}

/// $S \leftarrow (1-\eta)S + \eta\,\hat s$ with $\hat s$ = the batch's sums over its `b`
/// rows divided by `b` (per-row averages); the first batch sets $S = \hat s$.
fn blend(running: &mut Option<EStats>, batch: &EStats, eta: f64, b: f64) {
    let mix = |s: &mut [f64], x: &[f64], first: bool| {
        for (a, v) in s.iter_mut().zip(x) {
            *a = if first {
                v / b
            } else {
                (1.0 - eta) * *a + eta * v / b
            };
        }
    };
    let first = running.is_none();
    let r = running.get_or_insert_with(|| batch.clone());
    mix(&mut r.weight, &batch.weight, first);
    r.log_likelihood = if first {
        batch.log_likelihood / b
    } else {
        (1.0 - eta) * r.log_likelihood + eta * batch.log_likelihood / b
    };
    if let (Some(x), Some(y)) = (r.linear.as_mut(), batch.linear.as_ref()) {
        mix(&mut x.0, &y.0, first);
        mix(&mut x.1, &y.1, first);
        mix(&mut x.2, &y.2, first);
    }
}

/// The running statistics as the M-step reads them (the closed forms scale-free: the
/// Gram solve and the mixing weights are ratios of the per-row averages).
fn to_moe_stats(s: &EStats, model: &MixtureOfExperts) -> MoeStats {
    let k = model.n_experts();
    let d = model.n_features();
    MoeStats {
        k,
        resp: Vec::new(),
        weight: s.weight.clone(),
        linear: s.linear.as_ref().map(|(g, rhs, syy)| LinearStats {
            gram: (0..k)
                .map(|c| Mat::from_fn(d, d, |a, b| g[c * d * d + b * d + a]))
                .collect(),
            rhs: rhs.clone(),
            syy: syy.clone(),
        }),
        clusters: None::<ClusterStats>,
        gate: None,
    }
}

/// One Newton step of the batch's $\hat Q$ (sums over `b` rows) scaled by `eta`, from
/// `start` into `out`; a Hessian the Cholesky policy refuses is shifted by
/// $\lambda I$, $\lambda = 10^{-8}\operatorname{tr}(H)/\dim$ growing tenfold, up to 8
/// times. Returns the number of shifted factorisations (0 or 1).
fn newton_step(
    sums: &NewtonSums,
    start: &[f64],
    out: &mut [f64],
    eta: f64,
    b: f64,
    block: Block,
) -> Result<u64> {
    let dim = start.len();
    let grad: Vec<f64> = sums.grad.iter().map(|g| g / b).collect();
    let h = Mat::from_fn(dim, dim, |a, c| {
        let (hi, lo) = if a >= c { (a, c) } else { (c, a) };
        sums.hess[hi * dim + lo] / b
    });
    let trace: f64 = (0..dim).map(|a| h[(a, a)]).sum::<f64>().abs().max(1e-300);
    let mut lambda = 0.0;
    for shift in 0..=8 {
        let mut hs = h.clone();
        for a in 0..dim {
            hs[(a, a)] += lambda;
        }
        match solve(hs.as_ref(), &grad, block) {
            Ok(step) => {
                for ((o, s), v) in out.iter_mut().zip(start).zip(&step) {
                    *o = s + eta * v;
                }
                if out.iter().all(|v| v.is_finite()) {
                    return Ok(u64::from(shift > 0));
                }
            }
            Err(MoeError::NotPositiveDefinite { .. }) => {}
            Err(e) => return Err(e),
        }
        lambda = if lambda == 0.0 {
            1e-8 * trace / dim as f64
        } else {
            lambda * 10.0
        };
    }
    Err(MoeError::NotPositiveDefinite { block, pivot: 0 })
}

/// `(passes so far, L)` after every pass of a mini-batch run, starting with `(0, L(θ₀))`.
pub type Trajectory = Vec<(f64, f64)>;

/// The first-order baseline of a mini-batch run ([`MiniBatchGradient`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GradientStep {
    /// $\theta_{t+1} = \theta_t - \text{lr}\,\nabla\hat L_t(\theta_t)$.
    Gd {
        /// The learning rate.
        lr: f64,
    },
    /// Adam ([`Adam::direction`](crate::solve::adam::Adam::direction)) on the batch
    /// gradients.
    Adam(AdamSettings),
}

/// Mini-batch gradient descent or Adam on $L$ over a row source: the baselines that
/// mini-batch EM is compared with (one batch gradient
/// [`Problem::objective_and_gradient`](crate::solve::Problem::objective_and_gradient) per
/// step, batches = the source's chunks). A step that leaves the model's domain (a
/// variance $\le 0$) is halved until the next batch's gradient can be taken, up to 30
/// times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MiniBatchGradient {
    /// Passes over the source.
    pub passes: u64,
    /// The step rule.
    pub step: GradientStep,
}

impl MiniBatchGradient {
    /// Runs from `theta0`; returns the last iterate and `(passes, L)` after every pass
    /// (and at 0), $L$ over the whole source.
    ///
    /// # Errors
    /// `InvalidParam` for 0 passes or a bad learning rate, `InvalidParam { name: "ridge" }`
    /// for a penalised model; the source's and the gradient's errors; `LeftDomain` when 30 halvings do not bring a step back into the domain.
    pub fn run(
        &self,
        model: &MixtureOfExperts,
        source: &dyn RowSource,
        theta0: &[f64],
    ) -> Result<(Vec<f64>, Trajectory)> {
        if self.passes == 0 {
            return Err(MoeError::InvalidParam {
                name: "passes",
                reason: "at least 1".into(),
            });
        }
        refuse_penalty(model)?;
        let mut adam = match self.step {
            GradientStep::Gd { lr } if !(lr > 0.0 && lr.is_finite()) => {
                return Err(MoeError::InvalidParam {
                    name: "lr",
                    reason: "a finite learning rate > 0".into(),
                })
            }
            GradientStep::Gd { .. } => None,
            GradientStep::Adam(s) => {
                let mut a = crate::solve::adam::Adam::new(s)?;
                a.reset(theta0.len());
                Some(a)
            }
        };
        let objective = |t: &[f64]| -> Result<f64> {
            pass(model, source, &Round::E { theta: t.to_vec() })?.objective()
        };
        let mut theta = theta0.to_vec();
        let mut trajectory = vec![(0.0, objective(&theta)?)];
        let mut grad = vec![0.0; theta.len()];
        // The last accepted point and step, to halve a step whose end left the domain.
        let mut last: Option<(Vec<f64>, Vec<f64>)> = None;
        for p in 0..self.passes {
            source.for_each_chunk(&mut |_, batch| {
                let problem = crate::solve::Problem::new(model, batch)?;
                let mut halvings = 0;
                loop {
                    match problem.objective_and_gradient(&theta, &mut grad) {
                        Ok(_) => break,
                        Err(e) if halvings < 30 => {
                            let Some((from, step)) = last.as_mut() else {
                                return Err(e);
                            };
                            step.iter_mut().for_each(|d| *d *= 0.5);
                            theta = from.iter().zip(step.iter()).map(|(a, d)| a - d).collect();
                            halvings += 1;
                        }
                        Err(e) => return Err(e),
                    }
                }
                let step: Vec<f64> = match (&mut adam, self.step) {
                    (Some(a), _) => a.direction(&grad),
                    (None, GradientStep::Gd { lr })
                    | (None, GradientStep::Adam(AdamSettings { lr, .. })) => {
                        grad.iter().map(|g| lr * g).collect()
                    }
                };
                let next: Vec<f64> = theta.iter().zip(&step).map(|(a, d)| a - d).collect();
                last = Some((std::mem::replace(&mut theta, next), step));
                Ok(())
            })?;
            // The last step of the pass, if it left the domain, is halved here too.
            let mut l = objective(&theta);
            let mut halvings = 0;
            while l.is_err() && halvings < 30 {
                if let Some((from, step)) = last.as_mut() {
                    step.iter_mut().for_each(|d| *d *= 0.5);
                    theta = from.iter().zip(step.iter()).map(|(a, d)| a - d).collect();
                }
                l = objective(&theta);
                halvings += 1;
            }
            trajectory.push(((p + 1) as f64, l?));
        }
        Ok((theta, trajectory))
    }
}

/// Mini-batch runs optimise the unpenalised likelihood: a batch's M-step would need the
/// penalty scaled to the batch's share of the rows, which is not implemented.
fn refuse_penalty(model: &MixtureOfExperts) -> Result<()> {
    if model.is_penalised() {
        return Err(MoeError::InvalidParam {
            name: "ridge",
            reason: "mini-batch runs do not support a penalised model (ridge > 0); fit in \
                     passes with exact EM"
                .into(),
        });
    }
    Ok(())
}
