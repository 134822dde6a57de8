//! $L$, $\nabla L$ and the observed information $\nabla^2L$ at one $\theta$, from one pass
//! over the rows where the model allows it: what Newton's method on $L$
//! ([`crate::solve::newton::Newton`]) needs per iteration, and what the diagnostics'
//! information matrices are made of.
//!
//! With $J_i = \partial\varphi_i/\partial\theta$ and $v_i = \nabla A(\varphi_i) -
//! \mathbb E_{z\mid y_i;\varphi_i}\[T(y_i, z)\]$,
//! $$ \nabla L = \frac1n\sum_i J_i^\top v_i + \frac1n\nabla R, \qquad
//!    \nabla^2 L = \underbrace{\frac1n\sum_i J_i^\top\nabla^2A(\varphi_i)J_i}_{I_c} +
//!    \underbrace{\frac1n\sum_i\sum_j (v_i)_j\nabla^2_\theta\varphi_{ij}}_{C} -
//!    \underbrace{\frac1n\sum_i J_i^\top\mathrm{Cov}_{z\mid y_i}\[T(y_i, z)\]J_i}_{I_m} +
//!    \frac1n\nabla^2R $$
//! (Louis 1982; $R$ the model's penalty). In the mirror-descent picture $I_c$ is the
//! Hessian of the mirror map $\mathcal A$ pulled back to $\theta$, $I_m$ that of the
//! rows' posterior log-partition $B$ ($\ell = \mathcal A - B$ up to the linear term), so
//! the observed information is the curvature of $\ell$ itself; EM's step inverts
//! $I_c + C$ only.
//!
//! **Sources.** The model's one-evaluation sums ([`ConditionalFamily::observed_sums`]; the
//! mixture of experts: its E-step's sweep for $r$ and $L$, then one sweep of weighted Gram
//! products, counted as one pass as EM's map is) when it offers them; otherwise the model's
//! [`ConditionalFamily::information_sums`] and one pass for $L$ and $\nabla L$ when it
//! offers those; otherwise one generic pass forms $\sum_i\log p(y_i\mid x_i)$, $\sum_iJ_i^\top v_i$, $I_c$ and $I_m$ from the
//! model's row functions (stacked block products, [`information_rows`]), and $C$ comes
//! from the model's closed form ([`ConditionalFamily::curvature_sums`]) or from
//! [`curvature_term`]'s central differences, one more pass each — unless the realisation
//! is linear ($C = 0$). $\nabla^2R$ is taken by central differences of the penalty's
//! gradient (no pass over the data). [`Observed::passes`] counts the passes made.

use crate::error::{MoeError, Result};
use crate::inner::parallel::{fold_rows_with, Mergeable};
use crate::model::conditional::{ConditionalFamily, ObservedSums};
use crate::solve::problem::{
    row_posterior, row_posterior_given, Problem, RowObservation, RowScratch,
};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};

/// $L$, $\nabla L$ and the parts of $\nabla^2 L$ at one $\theta$ (all divided by $n$;
/// see the [module documentation](self)).
#[derive(Debug, Clone)]
pub struct Observed {
    /// $L(\theta)$ as [`Problem::objective`] defines it.
    pub objective: f64,
    /// $\nabla L(\theta)$, penalty included.
    pub gradient: Vec<f64>,
    /// $I_c(\theta)$ (symmetrised).
    pub complete: Mat<f64>,
    /// $I_m(\theta)$ (symmetrised).
    pub missing: Mat<f64>,
    /// $C(\theta)$ (zero when the realisation is linear or it was not asked for).
    pub curvature: Mat<f64>,
    /// Whether `curvature` was computed.
    pub curvature_computed: bool,
    /// $\frac1n\nabla^2R(\theta)$ (zero for an unpenalised model).
    pub penalty_hessian: Mat<f64>,
    /// Passes over the data this evaluation made.
    pub passes: u64,
}

impl Observed {
    /// $\nabla^2 L = I_c + C - I_m + \frac1n\nabla^2R$.
    pub fn hessian(&self) -> Mat<f64> {
        self.damped_hessian(1.0)
    }

    /// $H_\beta = I_c + C - \beta I_m + \frac1n\nabla^2R$: the Hessian of $L$ at
    /// $\beta = 1$, the expected complete-data Hessian (what EM's step inverts) at
    /// $\beta = 0$. Positive definite for $\beta\,\lambda_{\max}\big((I_c + C + \frac1n\nabla^2R)^{-1}I_m\big) < 1$
    /// when $I_c + C + \frac1n\nabla^2R$ is.
    pub fn damped_hessian(&self, beta: f64) -> Mat<f64> {
        let p = self.complete.nrows();
        Mat::from_fn(p, p, |i, j| {
            self.complete[(i, j)] + self.curvature[(i, j)] - beta * self.missing[(i, j)]
                + self.penalty_hessian[(i, j)]
        })
    }
}

/// $L$, $\nabla L$, $I_c$, $I_m$ and (when `with_curvature` and the realisation is not
/// linear) $C$ at `theta`; see the [module documentation](self).
///
/// # Errors
/// `Mirror(DimensionMismatch)` for a wrong-length `theta`; as [`row_posterior`] for a row outside
/// the support or the natural domain; `NonFinite` for a non-finite sum.
pub fn observed<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    theta: &[f64],
    with_curvature: bool,
) -> Result<Observed> {
    let model = problem.model;
    let data = problem.data;
    let np = model.n_params();
    problem.check_theta(theta)?;
    let compute_c = with_curvature && !model.is_linear();
    let square = |m: &Mat<f64>| m.nrows() == np && m.ncols() == np;
    let mut passes = 1;
    let sums = match model.observed_sums(data, theta) {
        Some(s)
            if s.gradient.len() == np
                && square(&s.complete)
                && square(&s.missing)
                && square(&s.curvature) =>
        {
            s
        }
        _ => {
            let mut s = match model.information_sums(data, theta) {
                // The model's own information sums (a model that offers them but not the
                // one-pass sums); L and ∇L then take one more pass.
                Some((complete, missing)) if square(&complete) && square(&missing) => {
                    passes += 1;
                    unpenalised_sums(problem, theta, complete, missing)?
                }
                _ => information_rows(problem, theta)?,
            };
            if compute_c {
                passes += 1;
                s.curvature = match model.curvature_sums(data, theta) {
                    Some(c) if square(&c) => c,
                    _ => curvature_term(problem, theta)? * (data.n() as f64),
                };
            }
            s
        }
    };
    let nf = data.n() as f64;
    let sym = |m: &Mat<f64>| Mat::from_fn(np, np, |a, b| 0.5 * (m[(a, b)] + m[(b, a)]) / nf);
    let curvature = if compute_c {
        sym(&sums.curvature)
    } else {
        Mat::zeros(np, np)
    };
    let mut gradient: Vec<f64> = sums.gradient.iter().map(|g| g / nf).collect();
    let mut penalty_hessian = Mat::zeros(np, np);
    if model.is_penalised() {
        let mut pg = vec![0.0; np];
        model.penalty_gradient(theta, &mut pg);
        for (g, p) in gradient.iter_mut().zip(&pg) {
            *g += p / nf;
        }
        penalty_hessian = penalty_hessian_fd(model, theta) / nf;
    }
    let out = Observed {
        objective: (model.penalty(theta) - sums.log_lik) / nf,
        gradient,
        complete: sym(&sums.complete),
        missing: sym(&sums.missing),
        curvature,
        curvature_computed: compute_c,
        penalty_hessian,
        passes,
    };
    let finite = |m: &Mat<f64>| (0..np).all(|j| (0..np).all(|i| m[(i, j)].is_finite()));
    if !out.objective.is_finite()
        || !out.gradient.iter().all(|g| g.is_finite())
        || ![
            &out.complete,
            &out.missing,
            &out.curvature,
            &out.penalty_hessian,
        ]
        .into_iter()
        .all(finite)
    {
        return Err(MoeError::NonFinite {
            what: "observed information",
        });
    }
    Ok(out)
}

/// [`ObservedSums`] from a model's `complete` and `missing` sums and
/// [`Problem::objective_and_gradient`], with the penalty taken back out
/// ($\sum_i\log p = R - nL$, $\sum_iJ_i^\top v_i = n\nabla L - \nabla R$).
fn unpenalised_sums<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    theta: &[f64],
    complete: Mat<f64>,
    missing: Mat<f64>,
) -> Result<ObservedSums> {
    let model = problem.model;
    let np = theta.len();
    let nf = problem.data.n() as f64;
    let mut gradient = vec![0.0; np];
    let l = problem.objective_and_gradient(theta, &mut gradient)?;
    let mut pg = vec![0.0; np];
    if model.is_penalised() {
        model.penalty_gradient(theta, &mut pg);
    }
    for (g, p) in gradient.iter_mut().zip(&pg) {
        *g = *g * nf - p;
    }
    Ok(ObservedSums {
        log_lik: model.penalty(theta) - nf * l,
        gradient,
        complete,
        missing,
        curvature: Mat::zeros(np, np),
    })
}

/// $\nabla^2R$ by central differences of the penalty's gradient (step
/// $10^{-5}\max(1, |\theta_k|)$; exact up to round-off for a quadratic penalty),
/// symmetrised.
fn penalty_hessian_fd<M: ConditionalFamily + ?Sized>(model: &M, theta: &[f64]) -> Mat<f64> {
    let np = theta.len();
    let mut h = Mat::zeros(np, np);
    let (mut t, mut gp, mut gm) = (theta.to_vec(), vec![0.0; np], vec![0.0; np]);
    for k in 0..np {
        let e = 1e-5 * theta[k].abs().max(1.0);
        gp.fill(0.0);
        gm.fill(0.0);
        t[k] = theta[k] + e;
        model.penalty_gradient(&t, &mut gp);
        t[k] = theta[k] - e;
        model.penalty_gradient(&t, &mut gm);
        t[k] = theta[k];
        for r in 0..np {
            h[(r, k)] = (gp[r] - gm[r]) / (2.0 * e);
        }
    }
    Mat::from_fn(np, np, |a, b| 0.5 * (h[(a, b)] + h[(b, a)]))
}

/// Rows stacked per block product in [`information_rows`].
const BLOCK_ROWS: usize = 16;

/// Per-worker buffers of [`information_rows`]: the row scratch, the target's terms and
/// the stacked blocks $J^\top$, $(FJ)^\top$ and $W^\top$ of up to `BLOCK_ROWS` rows.
struct InfoScratch {
    s: RowScratch,
    ob: RowObservation,
    /// $\nabla^2 A(\varphi_i)$ ($p$ × $p$).
    fisher: Mat<f64>,
    /// Column $z$: $\sqrt{r_{iz}}\,(T(y_i, z) - \mathbb E_{\text{post}}\[T\])$ ($p$ × $K$).
    u: Mat<f64>,
    /// $v_i$ ($p$).
    v: Vec<f64>,
    /// Column $(i, r)$: row $r$ of $J_i$ (`np` × `BLOCK_ROWS·p`).
    jt: Mat<f64>,
    /// Column $(i, r)$: row $r$ of $\nabla^2A(\varphi_i)J_i$.
    fjt: Mat<f64>,
    /// Column $(i, z)$: $\sqrt{r_{iz}}\,J_i^\top(T(y_i, z) - \mathbb E_{\text{post}}\[T\])$.
    wt: Mat<f64>,
}

/// The row sums of [`information_rows`] (the curvature left zero).
struct RowSums(ObservedSums);

impl Mergeable for RowSums {
    fn merge(&mut self, other: Self) {
        let (a, b) = (&mut self.0, other.0);
        a.log_lik += b.log_lik;
        for (x, y) in a.gradient.iter_mut().zip(&b.gradient) {
            *x += y;
        }
        a.complete += &b.complete;
        a.missing += &b.missing;
    }
}

/// `complete += Jᵀ(FJ)` and `missing += WWᵀ` over the first `rows` stacked rows.
fn flush_block(sc: &InfoScratch, acc: &mut ObservedSums, rows: usize, p: usize, k: usize) {
    if rows == 0 {
        return;
    }
    let jt = sc.jt.subcols(0, rows * p);
    let fjt = sc.fjt.subcols(0, rows * p);
    matmul(
        acc.complete.as_mut(),
        Accum::Add,
        jt,
        fjt.transpose(),
        1.0,
        Par::Seq,
    );
    let wt = sc.wt.subcols(0, rows * k);
    matmul(
        acc.missing.as_mut(),
        Accum::Add,
        wt,
        wt.transpose(),
        1.0,
        Par::Seq,
    );
}

/// The generic pass of [`observed`]: $\sum_i\log p(y_i\mid x_i)$, $\sum_iJ_i^\top v_i$ and,
/// as block products over `BLOCK_ROWS` rows,
/// $$ \sum_i J_i^\top\nabla^2A(\varphi_i)J_i = \mathbf J^\top(\mathbf F\mathbf J), \qquad
///    \sum_i J_i^\top\mathrm{Cov}_{\text{post}}\[T\]J_i = \mathbf W^\top\mathbf W,\quad
///    \mathbf W_{(i,z)} = \sqrt{r_{iz}}\,(T(y_i,z) - \mathbb E_{\text{post}}\[T\])^\top J_i, $$
/// using $\mathrm{Cov}_{\text{post}}\[T\] = \sum_z r_{iz}(T_z - \bar T)(T_z - \bar T)^\top$
/// (rank $\le K$). $J_i^\top$ is written by the model's `realise_jacobian_t` and
/// $\nabla^2A(\varphi_i)$ by its `complete_fisher`, directly into per-worker buffers;
/// $T(y_i, z)$ is computed once per row ([`RowObservation`]). Unnormalised, the curvature
/// left zero.
///
/// # Errors
/// As [`row_posterior`]; the model's errors for $\nabla A$ and $\nabla^2A$.
pub fn information_rows<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    theta: &[f64],
) -> Result<ObservedSums> {
    let model = problem.model;
    let data = problem.data;
    let np = model.n_params();
    let p = model.complete().dim();
    let k = model.n_latent();
    let fits = |c: &InfoScratch| {
        c.jt.nrows() == np
            && c.jt.ncols() == BLOCK_ROWS * p
            && c.wt.ncols() == BLOCK_ROWS * k
            && c.s.resp.len() == k
            && c.s.work.len() == model.row_work_len()
    };
    let acc = fold_rows_with(
        data.n(),
        |cached: Option<InfoScratch>| match cached {
            // The target terms are rebuilt (their sizes are the model's, not checked here).
            Some(c) if fits(&c) => InfoScratch {
                ob: RowObservation::new(model),
                ..c
            },
            _ => InfoScratch {
                s: RowScratch::new(model),
                ob: RowObservation::new(model),
                fisher: Mat::zeros(p, p),
                u: Mat::zeros(p, k),
                v: vec![0.0; p],
                jt: Mat::zeros(np, BLOCK_ROWS * p),
                fjt: Mat::zeros(np, BLOCK_ROWS * p),
                wt: Mat::zeros(np, BLOCK_ROWS * k),
            },
        },
        || {
            RowSums(ObservedSums {
                log_lik: 0.0,
                gradient: vec![0.0; np],
                complete: Mat::zeros(np, np),
                missing: Mat::zeros(np, np),
                curvature: Mat::zeros(np, np),
            })
        },
        |sc, acc, rows| {
            let acc = &mut acc.0;
            let mut b = 0;
            for i in rows {
                let x = data.x(i);
                sc.ob.set(model, data.y(i));
                model.realise(theta, x, &mut sc.s.phi);
                acc.log_lik += row_posterior_given(model, &sc.ob, i, &mut sc.s)?;
                model.complete_mean(&sc.s.phi, &mut sc.s.mean, &mut sc.s.work)?;
                for (vj, (m, t)) in sc.v.iter_mut().zip(sc.s.mean.iter().zip(&sc.s.post_stats)) {
                    *vj = m - t;
                }
                model.realise_vjp(theta, x, &sc.v, &mut acc.gradient);
                model.complete_fisher(&sc.s.phi, sc.fisher.as_mut(), &mut sc.s.work)?;
                // Columns b·p .. (b+1)·p of Jᵀ: J_iᵀ e_r.
                model.realise_jacobian_t(theta, x, sc.jt.subcols_mut(b * p, p), &mut sc.s.work);
                // (F J)ᵀ columns: Jᵀ Fᵀ = Jᵀ F (one small product per row).
                matmul(
                    sc.fjt.subcols_mut(b * p, p),
                    Accum::Replace,
                    sc.jt.subcols(b * p, p),
                    sc.fisher.as_ref(),
                    1.0,
                    Par::Seq,
                );
                // W columns: √r_z J_iᵀ (T_z − E_post T); zero for z outside the support.
                for z in 0..k {
                    let r = sc.s.resp[z];
                    match sc.ob.stats(z) {
                        Some(tz) if r > 0.0 => {
                            let sr = r.sqrt();
                            for (a, (t, m)) in tz.iter().zip(&sc.s.post_stats).enumerate() {
                                sc.u[(a, z)] = sr * (t - m);
                            }
                        }
                        _ => sc.u.col_mut(z).fill(0.0),
                    }
                }
                matmul(
                    sc.wt.subcols_mut(b * k, k),
                    Accum::Replace,
                    sc.jt.subcols(b * p, p),
                    sc.u.as_ref(),
                    1.0,
                    Par::Seq,
                );
                b += 1;
                if b == BLOCK_ROWS {
                    flush_block(sc, acc, b, p, k);
                    b = 0;
                }
            }
            flush_block(sc, acc, b, p, k);
            Ok(())
        },
    )?;
    Ok(acc.0)
}

/// $C(\theta) = \frac1n\sum_i\sum_j (v_i)_j\nabla^2\varphi_{ij}$ by central differences of
/// $g(\theta') = \frac1n\sum_i J_i(\theta')^\top v_i$ with $v_i = \nabla A(\varphi_i(\theta)) -
/// \mathbb E_{\text{post},\theta}\[T\]$ frozen (step $h_k = 10^{-5}\max(1, |\theta_k|)$;
/// exact up to round-off for realisations quadratic in $\theta$), then symmetrised:
/// $$ C_{:,k} = \frac{g(\theta + h_ke_k) - g(\theta - h_ke_k)}{2h_k}. $$
/// One parallel pass over the rows: each row's $v_i$ is formed once and pushed through the
/// $2n_\theta$ perturbed vector–Jacobian products, each with its own row sum (so every
/// $g(\theta \pm h_ke_k)$ is summed in the order of a pass of its own).
///
/// # Errors
/// `Mirror(DimensionMismatch)` for a wrong-length `theta`; as [`row_posterior`].
pub fn curvature_term<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    theta: &[f64],
) -> Result<Mat<f64>> {
    let model = problem.model;
    let data = problem.data;
    let np = model.n_params();
    problem.check_theta(theta)?;
    let p = model.complete().dim();
    let n = data.n();
    let steps: Vec<f64> = theta.iter().map(|t| 1e-5 * t.abs().max(1.0)).collect();
    // θ + h_k e_k for every k, then θ − h_k e_k: 2·np points, row-major.
    let mut shifted = vec![0.0; 2 * np * np];
    for (j, pt) in shifted.chunks_exact_mut(np).enumerate() {
        let (k, sign) = (j % np, if j < np { 1.0 } else { -1.0 });
        pt.copy_from_slice(theta);
        pt[k] = theta[k] + sign * steps[k];
    }
    let fits = |c: &(RowScratch, Vec<f64>)| {
        c.0.phi.len() == p && c.0.work.len() == model.row_work_len() && c.1.len() == p
    };
    let sums = fold_rows_with(
        n,
        |cached: Option<(RowScratch, Vec<f64>)>| match cached {
            Some(c) if fits(&c) => c,
            _ => (RowScratch::new(model), vec![0.0; p]),
        },
        || CurvatureAcc(vec![0.0; 2 * np * np]),
        |(s, v), acc, rows| {
            for i in rows {
                let x = data.x(i);
                model.realise(theta, x, &mut s.phi);
                row_posterior(model, data.y(i), i, s)?;
                model.complete_mean(&s.phi, &mut s.mean, &mut s.work)?;
                for (vj, (m, t)) in v.iter_mut().zip(s.mean.iter().zip(&s.post_stats)) {
                    *vj = m - t;
                }
                for (pt, g) in shifted.chunks_exact(np).zip(acc.0.chunks_exact_mut(np)) {
                    model.realise_vjp(pt, x, v, g);
                }
            }
            Ok(())
        },
    )?;
    let nf = n as f64;
    let (plus, minus) = sums.0.split_at(np * np);
    let c = Mat::from_fn(np, np, |r, k| {
        (plus[k * np + r] / nf - minus[k * np + r] / nf) / (2.0 * steps[k])
    });
    Ok(Mat::from_fn(np, np, |a, b| 0.5 * (c[(a, b)] + c[(b, a)])))
}

/// The $2n_\theta$ row sums of [`curvature_term`], one after another.
struct CurvatureAcc(Vec<f64>);

impl Mergeable for CurvatureAcc {
    fn merge(&mut self, other: Self) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}
