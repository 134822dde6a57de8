//! Adam (Kingma & Ba, *Adam: A method for stochastic optimization*, ICLR 2015) on the
//! objective $L(\theta)$, full batch, in the same parametrisation as
//! [`GradientDescent`](crate::solve::gd::GradientDescent) — the baseline practitioners use
//! for mixtures of experts, and the one the paper's authors state EM beats.
//!
//! With $g_t = \nabla L(\theta_t)$ ([`Problem::objective_and_gradient`], one pass),
//! $$ m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,
//!    \quad \theta_{t+1} = \theta_t - \gamma\,\frac{m_t/(1-\beta_1^{t})}{\sqrt{v_t/(1-\beta_2^{t})} + \epsilon}, $$
//! with the defaults $\gamma = 10^{-3}$, $\beta_1 = 0.9$, $\beta_2 = 0.999$,
//! $\epsilon = 10^{-8}$. Adam is not monotone; the executor keeps the best iterate.
//!
//! **Domain.** A step that leaves the model's domain (a Gaussian expert's precision
//! parameter turning positive, an overflow) is halved until it stays inside (at most
//! [`MAX_DOMAIN_HALVINGS`] times, counted in [`StepInfo::backtracks`]); Adam itself has no
//! notion of a domain, and this is the least change that keeps it running.
//! [`ADAM_LEARNING_RATES`] is the small grid the comparisons run.

use crate::error::{MoeError, Result};
use crate::inner::InnerStats;
use crate::model::conditional::ConditionalFamily;
use crate::solve::gd::is_trial_failure;
use crate::solve::md::assemble;
use crate::solve::problem::Problem;
use crate::solve::solver::{FitState, NextIter, Solver, StepInfo};

/// The learning rates the comparisons try: Adam's default $10^{-3}$ and two larger ones.
pub const ADAM_LEARNING_RATES: [f64; 3] = [1e-3, 1e-2, 1e-1];

/// Halvings of a step that left the domain before the run fails with the domain error.
pub const MAX_DOMAIN_HALVINGS: u64 = 30;

/// Adam's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamSettings {
    /// Learning rate $\gamma > 0$.
    pub lr: f64,
    /// First-moment decay $\beta_1 \in [0, 1)$.
    pub beta1: f64,
    /// Second-moment decay $\beta_2 \in [0, 1)$.
    pub beta2: f64,
    /// $\epsilon > 0$.
    pub eps: f64,
}

impl Default for AdamSettings {
    fn default() -> Self {
        AdamSettings {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam on $L$ (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    settings: AdamSettings,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
    cache: Option<(Vec<f64>, Vec<f64>)>,
}

impl Adam {
    /// Adam with the given settings.
    ///
    /// # Errors
    /// `InvalidParam` naming `lr`, `beta1`, `beta2` or `eps` when out of range.
    pub fn new(settings: AdamSettings) -> Result<Self> {
        let bad = |name: &'static str, reason: String| Err(MoeError::InvalidParam { name, reason });
        let AdamSettings {
            lr,
            beta1,
            beta2,
            eps,
        } = settings;
        if !(lr > 0.0 && lr.is_finite()) {
            return bad("lr", format!("finite and > 0, got {lr}"));
        }
        if !(0.0..1.0).contains(&beta1) {
            return bad("beta1", format!("in [0, 1), got {beta1}"));
        }
        if !(0.0..1.0).contains(&beta2) {
            return bad("beta2", format!("in [0, 1), got {beta2}"));
        }
        if !(eps > 0.0 && eps.is_finite()) {
            return bad("eps", format!("finite and > 0, got {eps}"));
        }
        Ok(Adam {
            settings,
            m: Vec::new(),
            v: Vec::new(),
            t: 0,
            cache: None,
        })
    }
    /// Adam with the default settings and learning rate `lr`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_lr(lr: f64) -> Result<Self> {
        Self::new(AdamSettings {
            lr,
            ..AdamSettings::default()
        })
    }
    /// The settings.
    pub fn settings(&self) -> AdamSettings {
        self.settings
    }
    /// Zeroes the moments for $k$ parameters (what [`Solver::init`] does), for callers
    /// that feed their own gradients to [`direction`](Self::direction), e.g. mini-batch
    /// Adam ([`crate::fit::minibatch::MiniBatchGradient`]).
    pub fn reset(&mut self, k: usize) {
        self.m = vec![0.0; k];
        self.v = vec![0.0; k];
        self.t = 0;
        self.cache = None;
    }
    /// The moment updates and the bias-corrected step $\Delta$ with
    /// $\theta_{t+1} = \theta_t - \Delta$, for the gradient `g` of step `t` ($\ge 1$):
    /// $m \leftarrow \beta_1 m + (1-\beta_1)g$, $v \leftarrow \beta_2 v + (1-\beta_2)g^2$,
    /// $\Delta = \text{lr}\,\hat m/(\sqrt{\hat v} + \epsilon)$ with $\hat m = m/(1-\beta_1^t)$,
    /// $\hat v = v/(1-\beta_2^t)$. Call [`reset`](Self::reset) first.
    pub fn direction(&mut self, g: &[f64]) -> Vec<f64> {
        let AdamSettings {
            lr,
            beta1,
            beta2,
            eps,
        } = self.settings;
        self.t = self.t.saturating_add(1);
        let c1 = 1.0 - beta1.powi(self.t);
        let c2 = 1.0 - beta2.powi(self.t);
        self.m
            .iter_mut()
            .zip(self.v.iter_mut())
            .zip(g)
            .map(|((m, v), gj)| {
                *m = beta1 * *m + (1.0 - beta1) * gj;
                *v = beta2 * *v + (1.0 - beta2) * gj * gj;
                lr * (*m / c1) / ((*v / c2).sqrt() + eps)
            })
            .collect()
    }
}

impl<M: ConditionalFamily + ?Sized> Solver<Problem<'_, M>> for Adam {
    fn name(&self) -> String {
        format!("Adam(lr={})", self.settings.lr)
    }
    fn init(&mut self, problem: &Problem<'_, M>, state: FitState) -> Result<FitState> {
        self.reset(problem.model.n_params());
        Ok(state)
    }
    fn next_iter(&mut self, problem: &Problem<'_, M>, state: FitState) -> NextIter {
        let k = state.theta.len();
        let mut passes = 0;
        let grad = match self.cache.take() {
            Some((th, g)) if th == state.theta => g,
            _ => {
                let mut g = vec![0.0; k];
                problem.objective_and_gradient(&state.theta, &mut g)?;
                passes += 1;
                g
            }
        };
        let mut delta = self.direction(&grad);
        let mut g_next = vec![0.0; k];
        let mut backtracks = 0;
        let (next, objective) = loop {
            let next: Vec<f64> = state.theta.iter().zip(&delta).map(|(a, d)| a - d).collect();
            passes += 1;
            match problem.objective_and_gradient(&next, &mut g_next) {
                Ok(l) => break (next, l),
                Err(e) if is_trial_failure(&e) && backtracks < MAX_DOMAIN_HALVINGS => {
                    delta.iter_mut().for_each(|d| *d *= 0.5);
                    backtracks += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let grad_norm = g_next.iter().map(|v| v * v).sum::<f64>().sqrt();
        self.cache = Some((next.clone(), g_next));
        // No inner solve: the step is Adam's exact step.
        let inner = InnerStats::exact_step(backtracks + 1, grad_norm);
        let (state, mut record) =
            assemble(problem, state, next, objective, grad_norm, inner, false)?;
        record.step = StepInfo {
            passes,
            backtracks,
            ..StepInfo::default()
        };
        Ok((state, record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_name_the_field() {
        let base = AdamSettings::default();
        for (s, name) in [
            (AdamSettings { lr: 0.0, ..base }, "lr"),
            (
                AdamSettings {
                    lr: f64::NAN,
                    ..base
                },
                "lr",
            ),
            (AdamSettings { beta1: 1.0, ..base }, "beta1"),
            (
                AdamSettings {
                    beta2: -0.1,
                    ..base
                },
                "beta2",
            ),
            (AdamSettings { eps: 0.0, ..base }, "eps"),
        ] {
            let e = Adam::new(s).unwrap_err();
            assert!(
                matches!(e, MoeError::InvalidParam { name: n, .. } if n == name),
                "{e:?}"
            );
        }
    }

    #[test]
    fn first_step_is_lr_times_the_sign_of_the_gradient() {
        // Bias correction makes the first step lr·g/(|g| + ε/…) ≈ lr·sign(g).
        let mut a = Adam::with_lr(0.01).unwrap();
        a.m = vec![0.0; 3];
        a.v = vec![0.0; 3];
        let d = a.direction(&[2.0, -0.5, 1e-3]);
        for (dj, s) in d.iter().zip([1.0, -1.0, 1.0]) {
            assert!((dj - 0.01 * s).abs() < 1e-6, "{d:?}");
        }
        // Second step with the same gradient: the same direction again.
        let d2 = a.direction(&[2.0, -0.5, 1e-3]);
        assert!((d2[0] - 0.01).abs() < 1e-6, "{d2:?}");
    }
}
