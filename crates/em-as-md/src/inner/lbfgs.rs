//! A small limited-memory BFGS minimiser with a strong-Wolfe line search: the generic
//! optimiser behind the projected and unprojected mirror-descent steps.
//!
//! Given a smooth $f:\mathbb R^p\to\mathbb R$ and its gradient, from $x_0$ it iterates
//! $$ x_{k+1} = x_k + \alpha_k d_k,\qquad d_k = -H_k\nabla f(x_k), $$
//! where $H_k$ is the two-loop-recursion product of the last `memory` pairs
//! $s_j = x_{j+1}-x_j$, $y_j = \nabla f(x_{j+1}) - \nabla f(x_j)$ (kept only when
//! $s_j^\top y_j > 0$) with initial scaling $H_k^0 = \frac{s^\top y}{y^\top y} I$, and
//! $\alpha_k$ satisfies the strong Wolfe conditions
//! $$ f(x_k+\alpha d_k) \le f(x_k) + c_1\alpha\nabla f(x_k)^\top d_k,\qquad
//!    |\nabla f(x_k+\alpha d_k)^\top d_k| \le c_2|\nabla f(x_k)^\top d_k| $$
//! (bracketing and zoom by safeguarded cubic interpolation, Nocedal & Wright,
//! *Numerical Optimization*, 2nd ed., Alg. 3.5–3.6 and 7.4). Near the optimum, where
//! differences of $f$ fall below round-off, the sufficient-decrease test is relaxed to
//! $f(x_k+\alpha d_k) \le f(x_k) + \epsilon_f(1+|f(x_k)|)$ with $\epsilon_f = 10^{-13}$
//! (the "approximate Wolfe" idea of Hager & Zhang, 2005), so the gradient tolerance can be
//! driven to ~1e-12.
//!
//! It stops when $\Vert \nabla f(x_k)\Vert_\infty \le$ `grad_tol`. It reports the problem as
//! unbounded below (`MoeError::LeftDomain`) when $\Vert x_k\Vert_\infty$ exceeds `x_limit` or
//! $f(x_k) < f(x_0) - $ `f_drop_limit`$\,(1 + |f(x_0)|)$ — the typical symptom of a mirror
//! step with $\eta > 1$ whose targets left the mean domain.
//!
//! **Why not `argmin`?** The mirror-descent subproblem must be solved to a gradient norm of
//! about $10^{-11}$ on slices with typed `MoeError`s crossing the closure (a trial point
//! outside the natural domain must shrink the step, not abort), and every call must report
//! its iterations and residual in [`InnerStats`](crate::inner::InnerStats). Wrapping that in
//! `argmin`'s `CostFunction`/`Gradient`/`State` generics (with its own error type and
//! ndarray/nalgebra/Vec backends) would cost more code than these ~250 lines, and pull a
//! dependency tree into a crate whose only linear-algebra backend is faer.

use crate::error::{MoeError, Result};

/// Applies $v \leftarrow P^{-1}v$ for a fixed SPD preconditioner $P$.
pub type Preconditioner<'a> = &'a mut dyn FnMut(&mut [f64]);

/// Settings of the L-BFGS minimiser.
#[derive(Debug, Clone, PartialEq)]
pub struct Lbfgs {
    /// Number of stored correction pairs $(s_j, y_j)$.
    pub memory: usize,
    /// Stop when $\Vert \nabla f\Vert_\infty$ is at most this.
    pub grad_tol: f64,
    /// Iteration cap.
    pub max_iter: usize,
    /// Armijo constant $c_1$.
    pub c1: f64,
    /// Curvature constant $c_2$.
    pub c2: f64,
    /// The problem is declared unbounded below when $\Vert x\Vert_\infty$ exceeds this.
    pub x_limit: f64,
    /// …or when $f$ falls below $f(x_0) - $ `f_drop_limit` $\cdot(1 + |f(x_0)|)$.
    pub f_drop_limit: f64,
}

impl Default for Lbfgs {
    fn default() -> Self {
        Lbfgs {
            memory: 10,
            grad_tol: 1e-11,
            max_iter: 500,
            c1: 1e-4,
            c2: 0.9,
            x_limit: 1e8,
            f_drop_limit: 1e8,
        }
    }
}

/// What one L-BFGS run did.
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsReport {
    /// Iterations taken.
    pub iterations: u64,
    /// Function/gradient evaluations.
    pub evaluations: u64,
    /// Final $\Vert \nabla f\Vert_\infty$.
    pub grad_norm: f64,
    /// Final $f$.
    pub value: f64,
    /// Whether `grad_norm <= grad_tol`.
    pub converged: bool,
}

impl From<&LbfgsReport> for crate::inner::InnerStats {
    /// An L-BFGS inner solve as inner-solver statistics: its iterations, final
    /// $\Vert\nabla f\Vert_\infty$ as the residual, whether it converged, and no Hessians
    /// or fallbacks.
    fn from(r: &LbfgsReport) -> Self {
        crate::inner::InnerStats {
            iterations: r.iterations,
            residual: r.grad_norm,
            converged: r.converged,
            hessians: 0,
            fallbacks: 0,
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn inf_norm(a: &[f64]) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// Whether an error raised by the objective at a trial point means "outside the domain"
/// (then the line search shrinks the step) rather than a genuine failure.
fn is_domain_error(e: &MoeError) -> bool {
    matches!(
        e,
        MoeError::LeftDomain { .. }
            | MoeError::NonFinite { .. }
            | MoeError::Mirror(mirror::MirrorError::OutsideDomain { .. })
            | MoeError::Mirror(mirror::MirrorError::NonFinite { .. })
    )
}

impl Lbfgs {
    /// Validates the settings.
    ///
    /// # Errors
    /// `InvalidParam` naming the offending field.
    pub fn check(&self) -> Result<()> {
        let bad = |name: &'static str, reason: &str| {
            Err(MoeError::InvalidParam {
                name,
                reason: reason.into(),
            })
        };
        if self.memory == 0 {
            return bad("memory", "at least 1 correction pair");
        }
        if !(self.grad_tol > 0.0 && self.grad_tol.is_finite()) {
            return bad("grad_tol", "finite and > 0");
        }
        if self.max_iter == 0 {
            return bad("max_iter", "at least 1");
        }
        if !(self.c1 > 0.0 && self.c1 < self.c2 && self.c2 < 1.0) {
            return bad("c1/c2", "0 < c1 < c2 < 1");
        }
        if self.x_limit.is_nan() || self.x_limit <= 0.0 {
            return bad("x_limit", "> 0");
        }
        if self.f_drop_limit.is_nan() || self.f_drop_limit <= 0.0 {
            return bad("f_drop_limit", "> 0");
        }
        Ok(())
    }

    /// Minimises `f` from `x` (overwritten with the result). `f(x, grad)` returns
    /// $f(x)$ and writes $\nabla f(x)$.
    ///
    /// A trial point where `f` reports `LeftDomain`/`NonFinite`/`OutsideDomain` is
    /// treated as $f = +\infty$ (the step shrinks). Not reaching `grad_tol` is reported in
    /// [`LbfgsReport::converged`], not as an error.
    ///
    /// # Errors
    /// The error of `f` at the starting point or a non-domain error anywhere;
    /// `LeftDomain` when the iterates run off to $\Vert x\Vert_\infty >$ `x_limit` while $f$
    /// decreases (the problem is unbounded below) or the line search cannot find a finite
    /// value in a descent direction.
    pub fn minimize<F>(&self, f: F, x: &mut [f64]) -> Result<LbfgsReport>
    where
        F: FnMut(&[f64], &mut [f64]) -> Result<f64>,
    {
        self.minimize_preconditioned(f, x, None)
    }

    /// As [`minimize`](Self::minimize), with the initial inverse-Hessian approximation
    /// $H^0_k = P^{-1}$ instead of $\frac{s^\top y}{y^\top y}I$: `precond(v)` overwrites
    /// $v$ with $P^{-1}v$ for a fixed symmetric positive definite $P$ (e.g. a Hessian
    /// approximation; with the exact Hessian of a quadratic the first step is Newton's).
    ///
    /// # Errors
    /// As [`minimize`](Self::minimize).
    pub fn minimize_preconditioned<F>(
        &self,
        mut f: F,
        x: &mut [f64],
        mut precond: Option<Preconditioner<'_>>,
    ) -> Result<LbfgsReport>
    where
        F: FnMut(&[f64], &mut [f64]) -> Result<f64>,
    {
        self.check()?;
        let p = x.len();
        let mut g = vec![0.0; p];
        let mut fx = f(x, &mut g)?;
        let mut evals = 1u64;
        let f_start = fx;
        if !fx.is_finite() {
            return Err(MoeError::NonFinite {
                what: "L-BFGS objective at the starting point",
            });
        }
        let mut s_hist: Vec<Vec<f64>> = Vec::with_capacity(self.memory);
        let mut y_hist: Vec<Vec<f64>> = Vec::with_capacity(self.memory);
        let mut rho_hist: Vec<f64> = Vec::with_capacity(self.memory);
        let mut d = vec![0.0; p];
        let mut alpha_buf = vec![0.0; self.memory];
        let mut xt = vec![0.0; p];
        let mut gt = vec![0.0; p];
        let mut iter = 0u64;
        let mut gnorm = inf_norm(&g);
        while gnorm > self.grad_tol && (iter as usize) < self.max_iter {
            // Two-loop recursion: d = −H g.
            d.copy_from_slice(&g);
            let m = s_hist.len();
            for j in (0..m).rev() {
                let a = rho_hist[j] * dot(&s_hist[j], &d);
                alpha_buf[j] = a;
                for (di, yi) in d.iter_mut().zip(&y_hist[j]) {
                    *di -= a * yi;
                }
            }
            if let Some(pc) = precond.as_mut() {
                pc(&mut d);
            } else {
                let gamma = if m > 0 {
                    dot(&s_hist[m - 1], &y_hist[m - 1]) / dot(&y_hist[m - 1], &y_hist[m - 1])
                } else {
                    1.0 / inf_norm(&g).max(1.0)
                };
                d.iter_mut().for_each(|v| *v *= gamma);
            }
            for j in 0..m {
                let b = rho_hist[j] * dot(&y_hist[j], &d);
                for (di, si) in d.iter_mut().zip(&s_hist[j]) {
                    *di += (alpha_buf[j] - b) * si;
                }
            }
            d.iter_mut().for_each(|v| *v = -*v);
            let mut slope = dot(&g, &d);
            if slope >= 0.0 || !slope.is_finite() {
                // Not a descent direction (round-off in the memory): restart with −g.
                s_hist.clear();
                y_hist.clear();
                rho_hist.clear();
                d.copy_from_slice(&g);
                match precond.as_mut() {
                    Some(pc) => pc(&mut d),
                    None => {
                        let sc = 1.0 / inf_norm(&g).max(1.0);
                        d.iter_mut().for_each(|v| *v *= sc);
                    }
                }
                d.iter_mut().for_each(|v| *v = -*v);
                slope = dot(&g, &d);
                if slope >= 0.0 || !slope.is_finite() {
                    // The preconditioner itself is not positive definite here: plain −g.
                    let sc = 1.0 / inf_norm(&g).max(1.0);
                    for (di, gi) in d.iter_mut().zip(&g) {
                        *di = -sc * gi;
                    }
                    slope = dot(&g, &d);
                }
            }
            let (alpha, f_new, n_eval) =
                self.line_search(&mut f, x, fx, slope, &d, &mut xt, &mut gt)?;
            evals += n_eval;
            // xt, gt now hold the accepted point and gradient.
            let mut s = vec![0.0; p];
            let mut yv = vec![0.0; p];
            for i in 0..p {
                s[i] = alpha * d[i];
                yv[i] = gt[i] - g[i];
            }
            let sy = dot(&s, &yv);
            if sy > 1e-300 {
                if s_hist.len() == self.memory {
                    s_hist.remove(0);
                    y_hist.remove(0);
                    rho_hist.remove(0);
                }
                s_hist.push(s);
                y_hist.push(yv);
                rho_hist.push(1.0 / sy);
            }
            x.copy_from_slice(&xt);
            g.copy_from_slice(&gt);
            fx = f_new;
            gnorm = inf_norm(&g);
            iter += 1;
            if fx < f_start - self.f_drop_limit * (1.0 + f_start.abs()) {
                return Err(MoeError::LeftDomain {
                    reason: format!(
                        "the subproblem looks unbounded below: after {iter} L-BFGS steps \
                         f fell from {f_start:.6e} to {fx:.6e}"
                    ),
                });
            }
            if inf_norm(x) > self.x_limit {
                return Err(MoeError::LeftDomain {
                    reason: format!(
                        "the subproblem looks unbounded below: after {iter} L-BFGS steps \
                         ‖x‖∞ = {:.3e} > {:.1e} with f = {fx:.6e}",
                        inf_norm(x),
                        self.x_limit
                    ),
                });
            }
        }
        Ok(LbfgsReport {
            iterations: iter,
            evaluations: evals,
            grad_norm: gnorm,
            value: fx,
            converged: gnorm <= self.grad_tol,
        })
    }

    /// Strong-Wolfe line search along `d` from `x`; writes the accepted point into `xt`
    /// and its gradient into `gt`; returns (α, f(xt), evaluations).
    #[allow(clippy::too_many_arguments)]
    fn line_search<F>(
        &self,
        f: &mut F,
        x: &[f64],
        f0: f64,
        slope0: f64,
        d: &[f64],
        xt: &mut [f64],
        gt: &mut [f64],
    ) -> Result<(f64, f64, u64)>
    where
        F: FnMut(&[f64], &mut [f64]) -> Result<f64>,
    {
        let eps_f = 1e-13 * (1.0 + f0.abs());
        let mut evals = 0u64;
        // φ(α) and φ'(α); +∞ outside the domain.
        let mut phi = |alpha: f64, xt: &mut [f64], gt: &mut [f64]| -> Result<(f64, f64)> {
            for i in 0..x.len() {
                xt[i] = x[i] + alpha * d[i];
            }
            match f(xt, gt) {
                Ok(v) if v.is_finite() => Ok((v, dot(gt, d))),
                Ok(_) => Ok((f64::INFINITY, f64::NAN)),
                Err(e) if is_domain_error(&e) => Ok((f64::INFINITY, f64::NAN)),
                Err(e) => Err(e),
            }
        };
        let armijo = |a: f64, v: f64| v <= f0 + self.c1 * a * slope0 || v <= f0 + eps_f;
        let curvature = |dv: f64| dv.abs() <= self.c2 * slope0.abs();

        let mut a_prev = 0.0;
        let mut f_prev = f0;
        let mut d_prev = slope0;
        let mut a = 1.0;
        let mut bracket: Option<(f64, f64, f64, f64, f64, f64)> = None; // (lo, flo, dlo, hi, fhi, dhi)
        for k in 0..60 {
            let (fa, da) = phi(a, xt, gt)?;
            evals += 1;
            if !fa.is_finite() {
                // Outside the domain: shrink towards the last good point.
                bracket = Some((a_prev, f_prev, d_prev, a, fa, f64::NAN));
                break;
            }
            if !armijo(a, fa) || (k > 0 && fa >= f_prev && fa > f0 + eps_f) {
                bracket = Some((a_prev, f_prev, d_prev, a, fa, da));
                break;
            }
            if curvature(da) {
                return Ok((a, fa, evals));
            }
            if da >= 0.0 {
                bracket = Some((a, fa, da, a_prev, f_prev, d_prev));
                break;
            }
            a_prev = a;
            f_prev = fa;
            d_prev = da;
            a *= 2.0;
            if a * inf_norm(d) > self.x_limit {
                return Err(MoeError::LeftDomain {
                    reason: format!(
                        "the subproblem looks unbounded below: the line search keeps \
                         decreasing f (now {fa:.6e}) out to step {a:.3e}"
                    ),
                });
            }
        }
        let (mut lo, mut flo, mut dlo, mut hi, mut fhi, mut dhi) =
            bracket.ok_or_else(|| MoeError::LeftDomain {
                reason: "line search: no bracket found in 60 expansions".into(),
            })?;
        for _ in 0..80 {
            // Safeguarded cubic interpolation between lo and hi, else bisection.
            let mut trial = 0.5 * (lo + hi);
            if fhi.is_finite() && dhi.is_finite() {
                let d1 = dlo + dhi - 3.0 * (flo - fhi) / (lo - hi);
                let disc = d1 * d1 - dlo * dhi;
                if disc >= 0.0 {
                    let d2 = (hi - lo).signum() * disc.sqrt();
                    let c = hi - (hi - lo) * (dhi + d2 - d1) / (dhi - dlo + 2.0 * d2);
                    let (mn, mx) = (lo.min(hi), lo.max(hi));
                    let margin = 0.1 * (mx - mn);
                    if c.is_finite() && c > mn + margin && c < mx - margin {
                        trial = c;
                    }
                }
            }
            let (ft, dt) = phi(trial, xt, gt)?;
            evals += 1;
            if !ft.is_finite() || !armijo(trial, ft) || ft > flo {
                hi = trial;
                fhi = ft;
                dhi = dt;
            } else {
                if curvature(dt) {
                    return Ok((trial, ft, evals));
                }
                if dt * (hi - lo) >= 0.0 {
                    hi = lo;
                    fhi = flo;
                    dhi = dlo;
                }
                lo = trial;
                flo = ft;
                dlo = dt;
            }
            if (hi - lo).abs() < 1e-16 * lo.abs().max(1e-16) {
                break;
            }
        }
        // No Wolfe point: fall back to the best sufficient-decrease point if it moved.
        if lo > 0.0 {
            let (fl, _) = phi(lo, xt, gt)?;
            evals += 1;
            if fl.is_finite() {
                return Ok((lo, fl, evals));
            }
        }
        Err(MoeError::LeftDomain {
            reason: "line search failed: no acceptable step along a descent direction".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Hessian diagonal of [`ill_conditioned`].
    const DIAG: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];

    /// $\sum_i \tfrac12 D_i (x_i - i)^2$ with $D$ = [`DIAG`]: minimiser $x_i = i$.
    fn ill_conditioned(x: &[f64], g: &mut [f64]) -> Result<f64> {
        let mut v = 0.0;
        for i in 0..4 {
            g[i] = DIAG[i] * (x[i] - i as f64);
            v += 0.5 * DIAG[i] * (x[i] - i as f64).powi(2);
        }
        Ok(v)
    }

    #[test]
    fn minimises_rosenbrock_and_quadratic() {
        let rosen = |x: &[f64], g: &mut [f64]| -> Result<f64> {
            let (a, b) = (x[0], x[1]);
            g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
            g[1] = 200.0 * (b - a * a);
            Ok((1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2))
        };
        let mut x = vec![-1.2, 1.0];
        let r = Lbfgs::default().minimize(rosen, &mut x).unwrap();
        assert!(r.converged, "{r:?}");
        assert!(
            (x[0] - 1.0).abs() < 1e-9 && (x[1] - 1.0).abs() < 1e-9,
            "{x:?}"
        );

        // Ill-conditioned quadratic: exact minimiser known.
        let q = ill_conditioned;
        let mut x = vec![5.0; 4];
        let r = Lbfgs::default().minimize(q, &mut x).unwrap();
        assert!(r.converged);
        for (i, xi) in x.iter().enumerate() {
            assert!((xi - i as f64).abs() < 1e-12, "{x:?}");
        }
    }

    #[test]
    fn exact_hessian_preconditioner_gives_a_newton_step() {
        let (diag, q) = (DIAG, ill_conditioned);
        let mut pc = |v: &mut [f64]| {
            for (vi, di) in v.iter_mut().zip(&diag) {
                *vi /= di;
            }
        };
        let mut x = vec![5.0; 4];
        let r = Lbfgs::default()
            .minimize_preconditioned(q, &mut x, Some(&mut pc))
            .unwrap();
        assert!(r.converged && r.iterations == 1, "{r:?}");
        for (i, xi) in x.iter().enumerate() {
            assert!((xi - i as f64).abs() < 1e-12, "{x:?}");
        }
    }

    #[test]
    fn domain_errors_shrink_the_step_and_unbounded_is_reported() {
        // f(x) = x − log x on x > 0: minimiser 1; trial points x ≤ 0 report LeftDomain.
        let f = |x: &[f64], g: &mut [f64]| -> Result<f64> {
            if x[0] <= 0.0 {
                return Err(MoeError::LeftDomain {
                    reason: "x ≤ 0".into(),
                });
            }
            g[0] = 1.0 - 1.0 / x[0];
            Ok(x[0] - x[0].ln())
        };
        let mut x = vec![8.0];
        let r = Lbfgs::default().minimize(f, &mut x).unwrap();
        assert!(r.converged && (x[0] - 1.0).abs() < 1e-10, "{x:?} {r:?}");

        let lin = |x: &[f64], g: &mut [f64]| -> Result<f64> {
            g[0] = -1.0;
            Ok(-x[0])
        };
        let mut x = vec![0.0];
        let e = Lbfgs::default().minimize(lin, &mut x).unwrap_err();
        assert!(matches!(e, MoeError::LeftDomain { .. }), "{e:?}");
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let f = |_: &[f64], _: &mut [f64]| -> Result<f64> { Ok(0.0) };
        let mut x = vec![0.0];
        for cfg in [
            Lbfgs {
                memory: 0,
                ..Lbfgs::default()
            },
            Lbfgs {
                grad_tol: f64::NAN,
                ..Lbfgs::default()
            },
            Lbfgs {
                c1: 0.95,
                ..Lbfgs::default()
            },
        ] {
            let e = cfg.minimize(f, &mut x).unwrap_err();
            assert!(matches!(e, MoeError::InvalidParam { .. }));
        }
    }
}
