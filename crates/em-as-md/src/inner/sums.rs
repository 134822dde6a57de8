//! Sums over rows of a weighted M-step objective and its derivatives ([`NewtonSums`]),
//! and the one formula that turns them into what the Newton driver reads
//! (`fill_eval`, [`NewtonSums::eval`]): every Newton M-step (the gate's softmax regression, an expert's GLM
//! fit) evaluates through it, whether its pass ran over rows in memory or was merged
//! from shards ([`crate::shard`]).

use crate::error::{MoeError, Result};
use mirror::newton::{sum_noise, EvalOut, Need};
use serde::{Deserialize, Serialize};

/// One Newton round's sums over rows $i$ with weights $w_i$ at parameters $x$:
/// $Q(x) = \sum_i w_i q_i(x)$, the size of its terms $\sum_i w_i|q_i|$ before they
/// cancel (for the round-off estimate), $\nabla Q$ and $-\nabla^2 Q$.
///
/// Merging adds the sums (associative; exact for any split of the rows up to the order
/// of floating-point additions, which [`crate::shard`] fixes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewtonSums {
    /// The parameters $x$ the sums were computed at.
    pub at: Vec<f64>,
    /// $Q(x)$.
    pub q: f64,
    /// $\sum_i w_i |q_i(x)|$ (the terms' sizes).
    pub abs: f64,
    /// Whether some row's natural parameter left the domain ($Q = -\infty$; the
    /// derivatives are then meaningless).
    pub outside: bool,
    /// $\nabla Q(x)$.
    pub grad: Vec<f64>,
    /// $-\nabla^2 Q(x)$, $\dim\times\dim$ row-major, of which the lower triangle
    /// ($a \ge b$) is authoritative; empty when the round asked for no Hessian.
    pub hess: Vec<f64>,
}

impl NewtonSums {
    /// `self ← self ⊕ other`.
    ///
    /// # Errors
    /// `InvalidParam { name: "stats" }` when the two were computed at different points
    /// or have different shapes (they are not parts of one round).
    pub fn merge(&mut self, other: &NewtonSums) -> Result<()> {
        if self.at != other.at
            || self.grad.len() != other.grad.len()
            || self.hess.len() != other.hess.len()
        {
            return Err(MoeError::InvalidParam {
                name: "stats",
                reason: "Newton sums of different rounds cannot be merged".into(),
            });
        }
        self.q += other.q;
        self.abs += other.abs;
        self.outside |= other.outside;
        for (a, b) in self.grad.iter_mut().zip(&other.grad) {
            *a += b;
        }
        for (a, b) in self.hess.iter_mut().zip(&other.hess) {
            *a += b;
        }
        Ok(())
    }

    /// Turns the sums of $Q$ into those of the ridge-penalised $Q - R$ with
    /// $R(x) = $ [`ridge_penalty`]$(\lambda, x_{0..m})$ on the first `m` coordinates:
    /// $Q \mathrel{-}= \tfrac\lambda2\|x_{<m}\|^2$ (and its size to the terms' sizes),
    /// $\nabla Q \mathrel{-}= \lambda x_{<m}$, $-\nabla^2 Q \mathrel{+}= \lambda$ on the
    /// first `m` diagonal entries (when the round formed a Hessian). $\lambda = 0$ leaves
    /// the sums untouched, bit for bit.
    pub fn add_ridge(&mut self, ridge: f64, m: usize) {
        if ridge == 0.0 || self.outside {
            return;
        }
        let m = m.min(self.at.len());
        let r = ridge_penalty(ridge, &self.at[..m]);
        self.q -= r;
        self.abs += r;
        for (g, x) in self.grad[..m].iter_mut().zip(&self.at) {
            *g -= ridge * x;
        }
        let dim = self.grad.len();
        if self.hess.len() == dim * dim {
            for a in 0..m {
                self.hess[a * dim + a] += ridge;
            }
        }
    }

    /// The Newton driver's evaluation of $f = -Q/W$ over `n` rows of total weight
    /// `wsum`: $f = -Q/W$, $\delta = $ `sum_noise`$(S/W, n)$, $\nabla f = -\nabla Q/W$,
    /// $\nabla^2 f = -\nabla^2 Q/W$ ($f = +\infty$ outside the domain).
    pub fn eval(&self, wsum: f64, n: usize, need: Need, out: &mut EvalOut<'_>) {
        let dim = self.grad.len();
        fill_eval(
            out,
            need,
            wsum,
            n,
            (self.q, self.abs, self.outside),
            &self.grad,
            |a, b| self.hess[a * dim + b],
        );
    }
}

/// Writes the weight-averaged objective $f = -Q/W$ and its derivatives from sums over
/// `n` rows of total weight $W$ = `wsum`:
/// $$ f = -\frac{Q}{W},\quad \delta = \operatorname{sum\_noise}\Big(\frac{S}{W}, n\Big),
///    \quad \nabla f = -\frac{\nabla Q}{W},\quad \nabla^2 f = \frac{-\nabla^2 Q}{W}, $$
/// with $(Q, S, \text{outside})$ = `value` ($f = +\infty$ and nothing else written when
/// outside the domain), `grad` $= \nabla Q$ and `hess(a, b)` $= -\partial_{ab}Q$ for
/// $a \ge b$ (only the lower triangle is written, and only with [`Need::Hessian`]).
pub(crate) fn fill_eval(
    out: &mut EvalOut<'_>,
    need: Need,
    wsum: f64,
    n: usize,
    value: (f64, f64, bool),
    grad: &[f64],
    hess: impl Fn(usize, usize) -> f64,
) {
    let (q, abs, outside) = value;
    if outside {
        out.value = f64::INFINITY;
        return;
    }
    out.value = -q / wsum;
    out.noise = sum_noise(abs / wsum, n);
    for (g, a) in out.grad.iter_mut().zip(grad) {
        *g = -a / wsum;
    }
    if need == Need::Hessian {
        let dim = grad.len();
        for b in 0..dim {
            for a in b..dim {
                out.hess[(a, b)] = hess(a, b) / wsum;
            }
        }
    }
}

/// The ridge penalty $R(x) = \frac\lambda2\sum_j x_j^2$ ($\lambda$ = `ridge`): what a
/// penalised M-step subtracts from $Q$ and what the penalised objective adds to
/// $-\ell$ (see [`crate::model::ConditionalFamily::penalty`]).
pub fn ridge_penalty(ridge: f64, x: &[f64]) -> f64 {
    if ridge == 0.0 {
        return 0.0;
    }
    0.5 * ridge * x.iter().map(|v| v * v).sum::<f64>()
}
