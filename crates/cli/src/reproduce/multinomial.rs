//! A fast EM for softmax-gated mixtures of multinomial-logistic experts, with an
//! **inexact** M-step by L-BFGS — the solver of the "Random Invert Digits" experiment.
//!
//! The library's [`Em`](em_as_md::Em) now solves a multinomial expert's M-step with more
//! than [`MULTINOMIAL_DENSE_MAX_PARAMS`](em_as_md::expert::MULTINOMIAL_DENSE_MAX_PARAMS)
//! parameters by L-BFGS too ([`Multinomial::fit_lbfgs`](em_as_md::expert::Multinomial::fit_lbfgs),
//! no dense $((C-1)d)^2$ Hessian), but this solver is kept for the digits experiment
//! because (1) the library's *gate* M-step is dense Newton, and on "Random Invert Digits"
//! the inversion makes the always-blank pixels identical "inverted" indicators
//! (collinear design columns) and the gate nearly separable, so its Hessian is not
//! positive definite and [`Em`](em_as_md::Em) stops with `NotPositiveDefinite` (checked
//! with `mdem fit` on such data, even with the duplicate columns removed); (2) the
//! protocol uses a deliberately loose, configurable inner budget (`grad_tol`, `max_iter`
//! per block, for the gate and the experts alike), which the
//! [`Expert::weighted_fit`](em_as_md::expert::Expert::weighted_fit) API does not take.
//! Here every block of the M-step (gate and experts) is minimised approximately with
//! L-BFGS ([`em_as_md::lbfgs::Lbfgs`]), warm-started at $\theta_t$,
//! to $\|\nabla\|_\infty \le$ `grad_tol` or at most `max_iter` iterations (both reported;
//! see [`InexactMultinomialEm`]). Every pass over the data is a dense matrix product with
//! faer.
//!
//! ## The M-step objective
//! With responsibilities $r_{ik} = P(z_i = k \mid x_i, y_i; \theta_t)$, the M-step
//! separates into one *soft-label multinomial-logistic* problem per block, each of the form
//! $$ F(B) = \frac1W\sum_{i=1}^n\Big[S_i \operatorname{LSE}(\eta_i) - \sum_{c} s_{ic}\,\eta_{ic}\Big],
//!    \quad \eta_i = (b_0^\top x_i, \dots, b_{C-2}^\top x_i, 0),\quad S_i = \sum_c s_{ic},\
//!    W = \sum_i S_i, $$
//! ([`soft_multinomial`]) with gradient
//! $\nabla_{b_j} F = \frac1W\sum_i (S_i p_{ij} - s_{ij})\,x_i$, $p_i = \operatorname{softmax}(\eta_i)$:
//! for expert $k$, $s_{ic} = r_{ik}[y_i = c]$; for the gate, $C = K$ and $s_{ik} = r_{ik}$.
//! This is the expected complete-data negative log-likelihood of the library's
//! parametrisation (reference class $C-1$ and reference expert $K-1$ with zero logits;
//! blocks laid out as in [`MixtureOfExperts`]). Each L-BFGS step decreases $F$, so each
//! outer step decreases $L$ (a generalised EM step).

use em_as_md::expert::ExpertKind;
use em_as_md::lbfgs::Lbfgs;
use em_as_md::moe::{Gating, MixtureOfExperts};
use em_as_md::{
    ConditionalFamily, Dataset, FitState, InnerStats, IterRecord, MoeError, Problem, Solver,
};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};

/// $\log\sum_j e^{v_j}$ over `v` and one extra zero logit (the reference).
fn lse_with_zero(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = v.clone().fold(0.0f64, f64::max);
    let s = (-m).exp() + v.map(|x| (x - m).exp()).sum::<f64>();
    m + s.ln()
}

/// Logits $E = B^\top X$ ($(C-1) \times n$) of the column-major $d \times (C-1)$ block
/// `b` on the data's design $X$ ($d \times n$).
fn logits(b: &[f64], xt: MatRef<'_, f64>, classes_minus_one: usize) -> Mat<f64> {
    let (d, n) = (xt.nrows(), xt.ncols());
    let bm = MatRef::from_column_major_slice(b, d, classes_minus_one);
    let mut e = Mat::zeros(classes_minus_one, n);
    matmul(
        e.as_mut(),
        Accum::Replace,
        bm.transpose(),
        xt,
        1.0,
        Par::Seq,
    );
    e
}

/// The soft-label multinomial-logistic objective $F(B)$ of the
/// [module documentation](self) and its gradient (written into `grad`, same layout as
/// `b`: column-major $d \times (C-1)$). `soft` is $n \times C$ row-major.
///
/// # Errors
/// `NonFinite` when $F$ is not finite; `InvalidParam` when $W = 0$.
pub fn soft_multinomial(
    xt: MatRef<'_, f64>,
    soft: &[f64],
    classes: usize,
    b: &[f64],
    grad: &mut [f64],
) -> Result<f64, MoeError> {
    let (d, n) = (xt.nrows(), xt.ncols());
    let cm = classes - 1;
    let e = logits(b, xt, cm);
    let mut resid = Mat::<f64>::zeros(cm, n);
    let (mut f, mut w) = (0.0, 0.0);
    for i in 0..n {
        let s = &soft[i * classes..(i + 1) * classes];
        let si: f64 = s.iter().sum();
        if si == 0.0 {
            continue;
        }
        w += si;
        let col = (0..cm).map(|j| e[(j, i)]);
        let lse = lse_with_zero(col);
        let mut lin = 0.0;
        for j in 0..cm {
            let eta = e[(j, i)];
            lin += s[j] * eta;
            resid[(j, i)] = si * (eta - lse).exp() - s[j];
        }
        f += si * lse - lin;
    }
    if w <= 0.0 {
        return Err(MoeError::InvalidParam {
            name: "weights",
            reason: "all soft labels are zero".into(),
        });
    }
    let g = MatMut::from_column_major_slice_mut(grad, d, cm);
    matmul(g, Accum::Replace, xt, resid.transpose(), 1.0 / w, Par::Seq);
    let f = f / w;
    if f.is_finite() {
        Ok(f)
    } else {
        Err(MoeError::NonFinite {
            what: "soft multinomial objective",
            iter: 0,
        })
    }
}

/// The shape of a softmax-gated mixture of multinomial experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Experts $K$.
    pub k: usize,
    /// Classes $C$.
    pub c: usize,
    /// Design columns $d$.
    pub d: usize,
}

impl Shape {
    /// The shape of `model`, if it is a softmax-gated mixture of multinomial experts.
    ///
    /// # Errors
    /// `InvalidParam { name: "model" }` otherwise.
    pub fn of(model: &MixtureOfExperts) -> Result<Shape, MoeError> {
        match (model.expert().kind(), model.gating()) {
            (Some(ExpertKind::Multinomial { classes }), Gating::Softmax) => Ok(Shape {
                k: model.n_experts(),
                c: classes,
                d: model.n_features(),
            }),
            _ => Err(MoeError::InvalidParam {
                name: "model",
                reason: "the fast multinomial EM needs softmax-gated multinomial experts".into(),
            }),
        }
    }
    fn gate_len(&self) -> usize {
        (self.k - 1) * self.d
    }
    fn expert_len(&self) -> usize {
        (self.c - 1) * self.d
    }
    fn expert_range(&self, k: usize) -> std::ops::Range<usize> {
        let s = self.gate_len() + k * self.expert_len();
        s..s + self.expert_len()
    }
}

/// Per-row quantities of the mixture at $\theta$.
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureEval {
    /// $L(\theta) = -\frac1n\sum_i \log p(y_i \mid x_i)$.
    pub objective: f64,
    /// Responsibilities $r_{ik}$, $n \times K$ row-major.
    pub resp: Vec<f64>,
    /// Predictive class probabilities $P(y = c \mid x_i) = \sum_k \pi_k(x_i) p_k(c \mid x_i)$,
    /// $n \times C$ row-major.
    pub class_probs: Vec<f64>,
}

/// Labels of the data's single target column as class indices.
///
/// # Errors
/// `InvalidData` for a target that is not an integer in $0..C$.
pub fn labels(data: &Dataset, c: usize) -> Result<Vec<usize>, MoeError> {
    (0..data.n())
        .map(|i| {
            let y = data.y(i)[0];
            if y >= 0.0 && y.fract() == 0.0 && (y as usize) < c {
                Ok(y as usize)
            } else {
                Err(MoeError::InvalidData {
                    row: Some(i),
                    column: Some("target".into()),
                    reason: format!("expected a class in 0..{c}, found {y}"),
                })
            }
        })
        .collect()
}

/// Evaluates the mixture at $\theta$ on `data` (labels `y`): objective, responsibilities
/// and predictive class probabilities, by log-sum-exp throughout.
///
/// # Errors
/// `NonFinite` when $L(\theta)$ is not finite.
pub fn evaluate(
    shape: Shape,
    theta: &[f64],
    data: &Dataset,
    y: &[usize],
) -> Result<MixtureEval, MoeError> {
    let Shape { k, c, d: _ } = shape;
    let xt = data.xt();
    let n = data.n();
    let g = logits(&theta[..shape.gate_len()], xt, k - 1);
    let es: Vec<Mat<f64>> = (0..k)
        .map(|j| logits(&theta[shape.expert_range(j)], xt, c - 1))
        .collect();
    let mut resp = vec![0.0; n * k];
    let mut class_probs = vec![0.0; n * c];
    let mut total = 0.0;
    let mut lk = vec![0.0; k];
    for i in 0..n {
        let lg = lse_with_zero((0..k - 1).map(|j| g[(j, i)]));
        for (kk, e) in es.iter().enumerate() {
            let log_pi = if kk + 1 < k { g[(kk, i)] } else { 0.0 } - lg;
            let le = lse_with_zero((0..c - 1).map(|j| e[(j, i)]));
            let eta_y = if y[i] + 1 < c { e[(y[i], i)] } else { 0.0 };
            lk[kk] = log_pi + eta_y - le;
            let pi = log_pi.exp();
            for cc in 0..c {
                let eta = if cc + 1 < c { e[(cc, i)] } else { 0.0 };
                class_probs[i * c + cc] += pi * (eta - le).exp();
            }
        }
        let m = lk.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let ll = m + lk.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        for kk in 0..k {
            resp[i * k + kk] = (lk[kk] - ll).exp();
        }
        total += ll;
    }
    let objective = -total / n as f64;
    if !objective.is_finite() {
        return Err(MoeError::NonFinite {
            what: "objective L(θ)",
            iter: 0,
        });
    }
    Ok(MixtureEval {
        objective,
        resp,
        class_probs,
    })
}

/// Test accuracy (argmax of the predictive class probabilities) and cross-entropy
/// $-\frac1n\sum_i \log P(y_i \mid x_i)$ from an [`MixtureEval`].
pub fn accuracy_and_cross_entropy(eval: &MixtureEval, y: &[usize], c: usize) -> (f64, f64) {
    let n = y.len();
    let mut correct = 0usize;
    for (i, &yi) in y.iter().enumerate() {
        let p = &eval.class_probs[i * c..(i + 1) * c];
        let arg = (0..c).fold(0, |a, j| if p[j] > p[a] { j } else { a });
        correct += usize::from(arg == yi);
    }
    (correct as f64 / n as f64, eval.objective)
}

/// EM with an inexact L-BFGS M-step for softmax-gated multinomial experts (see the
/// [module documentation](self)); a [`Solver`] on the library's [`Problem`], so the
/// [`Executor`](em_as_md::Executor) runs it like every other solver.
#[derive(Debug, Clone)]
pub struct InexactMultinomialEm {
    /// Inner L-BFGS settings (`grad_tol` on $\|\nabla F\|_\infty$, `max_iter`).
    pub inner: Lbfgs,
    cache: Option<(Vec<f64>, MixtureEval)>,
    labels: Vec<usize>,
}

impl InexactMultinomialEm {
    /// With inner tolerance `grad_tol` and at most `max_iter` L-BFGS iterations per block.
    pub fn new(grad_tol: f64, max_iter: usize) -> Self {
        InexactMultinomialEm {
            inner: Lbfgs {
                grad_tol,
                max_iter,
                ..Lbfgs::default()
            },
            cache: None,
            labels: Vec::new(),
        }
    }
}

impl Solver<Problem<'_, MixtureOfExperts>> for InexactMultinomialEm {
    fn name(&self) -> String {
        "EM".into()
    }
    fn init(
        &mut self,
        problem: &Problem<'_, MixtureOfExperts>,
        state: FitState,
    ) -> Result<FitState, MoeError> {
        let shape = Shape::of(problem.model)?;
        self.labels = labels(problem.data, shape.c)?;
        self.cache = None;
        Ok(state)
    }
    fn next_iter(
        &mut self,
        problem: &Problem<'_, MixtureOfExperts>,
        state: FitState,
    ) -> Result<(FitState, IterRecord), MoeError> {
        let shape = Shape::of(problem.model)?;
        let iter = state.iter + 1;
        let data = problem.data;
        let (n, k, c) = (data.n(), shape.k, shape.c);
        let eval = match self.cache.take() {
            Some((t, e)) if t == state.theta => e,
            _ => evaluate(shape, &state.theta, data, &self.labels)?,
        };
        let xt = data.xt();
        let mut next = state.theta.clone();
        let mut inner = InnerStats {
            converged: true,
            ..InnerStats::default()
        };
        let absorb = |r: em_as_md::lbfgs::LbfgsReport, inner: &mut InnerStats| {
            inner.iterations += r.iterations;
            inner.residual = inner.residual.max(r.grad_norm);
            inner.converged &= r.converged;
        };
        // Gate: soft labels r_ik over K "classes".
        let gl = shape.gate_len();
        let rep = self.inner.minimize(
            |w, g| soft_multinomial(xt, &eval.resp, k, w, g),
            &mut next[..gl],
        )?;
        absorb(rep, &mut inner);
        // Experts: s_ic = r_ik [y_i = c].
        let mut soft = vec![0.0; n * c];
        for kk in 0..k {
            soft.iter_mut().for_each(|v| *v = 0.0);
            for i in 0..n {
                soft[i * c + self.labels[i]] = eval.resp[i * k + kk];
            }
            let range = shape.expert_range(kk);
            let rep = self.inner.minimize(
                |b, g| soft_multinomial(xt, &soft, c, b, g),
                &mut next[range],
            )?;
            absorb(rep, &mut inner);
        }
        let new_eval = evaluate(shape, &next, data, &self.labels).map_err(|e| match e {
            MoeError::NonFinite { what, .. } => MoeError::NonFinite { what, iter },
            e => e,
        })?;
        let objective = new_eval.objective;
        self.cache = Some((next.clone(), new_eval));
        Ok((
            state.advance(next, objective),
            IterRecord {
                iter,
                objective,
                grad_norm: f64::NAN,
                bregman_step: f64::NAN,
                inner,
                elapsed: 0.0,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use em_as_md::expert::Multinomial;
    use em_as_md::{Em, Executor};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::sync::Arc;

    fn small(n: usize, d: usize, c: usize, seed: u64) -> (MixtureOfExperts, Dataset, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let model = MixtureOfExperts::new(
            Arc::new(Multinomial::new(c).unwrap()),
            2,
            d,
            Gating::Softmax,
        )
        .unwrap();
        let x: Vec<f64> = (0..n * d)
            .map(|j| {
                if j % d == 0 {
                    1.0
                } else {
                    rng.random::<f64>() * 2.0 - 1.0
                }
            })
            .collect();
        let y: Vec<f64> = (0..n).map(|_| rng.random_range(0..c) as f64).collect();
        let data = Dataset::from_rows(&x, d, &y, 1).unwrap();
        let theta = model.random_params(&mut rng, 0.7);
        (model, data, theta)
    }

    #[test]
    fn objective_matches_the_library() {
        for seed in 0..4 {
            let (model, data, theta) = small(40, 4, 3, seed);
            let shape = Shape::of(&model).unwrap();
            let y = labels(&data, 3).unwrap();
            let ours = evaluate(shape, &theta, &data, &y).unwrap();
            let lib = Problem::new(&model, &data)
                .unwrap()
                .objective(&theta)
                .unwrap();
            assert!(
                (ours.objective - lib).abs() <= 1e-12 * lib.abs(),
                "{} vs {lib}",
                ours.objective
            );
            for i in 0..40 {
                let s: f64 = ours.class_probs[i * 3..i * 3 + 3].iter().sum();
                let r: f64 = ours.resp[i * 2..i * 2 + 2].iter().sum();
                assert!((s - 1.0).abs() < 1e-12 && (r - 1.0).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn soft_multinomial_gradient_matches_finite_differences() {
        let (_, data, _) = small(30, 3, 4, 9);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let soft: Vec<f64> = (0..30 * 4).map(|_| rng.random::<f64>()).collect();
        let b: Vec<f64> = (0..9).map(|_| rng.random::<f64>() - 0.5).collect();
        let mut g = vec![0.0; 9];
        soft_multinomial(data.xt(), &soft, 4, &b, &mut g).unwrap();
        let mut scratch = vec![0.0; 9];
        for j in 0..9 {
            let h = 1e-6;
            let (mut p, mut m) = (b.clone(), b.clone());
            p[j] += h;
            m[j] -= h;
            let fd = (soft_multinomial(data.xt(), &soft, 4, &p, &mut scratch).unwrap()
                - soft_multinomial(data.xt(), &soft, 4, &m, &mut scratch).unwrap())
                / (2.0 * h);
            assert!((fd - g[j]).abs() < 1e-7, "component {j}: {fd} vs {}", g[j]);
        }
        assert!(matches!(
            soft_multinomial(data.xt(), &vec![0.0; 120], 4, &b, &mut g),
            Err(MoeError::InvalidParam {
                name: "weights",
                ..
            })
        ));
    }

    #[test]
    fn tight_inexact_em_step_equals_the_library_em_step() {
        // Well-posed small problem: the library's Newton M-step is the reference.
        let (model, data, theta) = small(200, 3, 3, 5);
        let problem = Problem::new(&model, &data).unwrap();
        let ours = Executor::new(problem, InexactMultinomialEm::new(1e-11, 500))
            .theta0(theta.clone())
            .max_iters(1)
            .run()
            .unwrap();
        let lib = Executor::new(problem, Em::new())
            .theta0(theta)
            .max_iters(1)
            .run()
            .unwrap();
        let diff = ours
            .state
            .theta
            .iter()
            .zip(&lib.state.theta)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 1e-6, "max parameter difference {diff}");
        assert!((ours.state.objective - lib.state.objective).abs() < 1e-10);
    }

    #[test]
    fn inexact_em_decreases_the_objective() {
        let (model, data, theta) = small(120, 4, 3, 11);
        let problem = Problem::new(&model, &data).unwrap();
        let r = Executor::new(problem, InexactMultinomialEm::new(1e-6, 5))
            .theta0(theta)
            .max_iters(15)
            .run()
            .unwrap();
        let l: Vec<f64> = r.trace.iter().map(|t| t.objective).collect();
        for w in l.windows(2) {
            assert!(w[1] <= w[0] + 1e-12, "{l:?}");
        }
        assert!(Shape::of(
            &MixtureOfExperts::new(Arc::new(em_as_md::Logistic::new()), 2, 3, Gating::Softmax)
                .unwrap()
        )
        .is_err());
    }
}
