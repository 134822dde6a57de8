//! Generic projected mirror descent.
//!
//! One step from $\theta_t$ with gradient $g = \nabla f(\theta_t)$ and step $\eta_t$ is
//! $$ \theta_{t+1} = \arg\min_{\theta \in C}\ \langle g, \theta\rangle +
//!    \tfrac{1}{\eta_t} D_\psi(\theta, \theta_t), $$
//!
//! computed in three stages ([`MirrorDescent::step`]):
//! 1. the dual step $y = \nabla\psi(\theta_t) - \eta_t g$;
//! 2. back to the primal space, $x = \nabla\psi^{\ast}(y)$ (the unconstrained minimiser);
//! 3. the Bregman projection $\theta_{t+1} = \arg\min_{\theta\in C} D_\psi(\theta, x)$
//!    ([`ConstraintSet::project`]).
//!
//! Stages 2–3 give the constrained minimiser because, for $\theta$ in the domain,
//! $\langle g,\theta\rangle + \frac1\eta D_\psi(\theta,\theta_t)
//!  = \frac1\eta D_\psi(\theta, x) + \text{const}$ (the three-point identity).
//!
//! With $\psi = \tfrac12\|\cdot\|^2$ ([`Euclidean`](crate::map::Euclidean)) this is
//! projected gradient descent, $\theta_{t+1} = \Pi_C(\theta_t - \eta g)$; with negative
//! entropy on the simplex ([`NegEntropy`](crate::map::NegEntropy)) it is the
//! exponentiated-gradient method, $\theta_{t+1,j} \propto \theta_{t,j} e^{-\eta g_j}$.
//!
//! Reference: A. Beck, M. Teboulle, *Mirror descent and nonlinear projected subgradient
//! methods for convex optimization*, Oper. Res. Lett. 31 (2003).

use crate::error::{check_len, MirrorError, Result};
use crate::map::{MapKind, MirrorMap, SIMPLEX_TOL};

/// Tolerance used by the built-in sets' [`ConstraintSet::contains`].
pub const CONTAINS_TOL: f64 = 1e-9;

/// A closed convex constraint set $C$ with a Bregman projection.
///
/// Implement it for your own set. `project` must return the exact Bregman projection
/// $\arg\min_{\theta \in C} D_\psi(\theta, x)$ for the given map, or
/// `Err(MirrorError::Unsupported { .. })` when it has no algorithm for that map: never an
/// approximation that silently differs (for instance a Euclidean projection used with a
/// non-Euclidean map). Branch on [`MirrorMap::kind`] to choose the algorithm.
pub trait ConstraintSet: Send + Sync {
    /// Short name used in error messages, e.g. `"simplex"`.
    fn name(&self) -> String;
    /// The dimension of the set, or `None` if it applies in any dimension.
    fn dim(&self) -> Option<usize>;
    /// Whether `x` lies in $C$ (built-ins allow a slack of [`CONTAINS_TOL`]).
    fn contains(&self, x: &[f64]) -> bool;
    /// The Bregman projection $\arg\min_{\theta \in C} D_\psi(\theta, x)$ written into
    /// `out`, for a point `x` in the domain of $\psi$.
    ///
    /// # Errors
    /// `Unsupported` for a map this set cannot project with exactly; `DimensionMismatch`;
    /// `OutsideDomain` when the projection would leave the domain of $\psi$.
    fn project(&self, map: &dyn MirrorMap, x: &[f64], out: &mut [f64]) -> Result<()>;
}

/// A borrowed set is a set.
impl<C: ConstraintSet + ?Sized> ConstraintSet for &C {
    fn name(&self) -> String {
        (**self).name()
    }
    fn dim(&self) -> Option<usize> {
        (**self).dim()
    }
    fn contains(&self, x: &[f64]) -> bool {
        (**self).contains(x)
    }
    fn project(&self, map: &dyn MirrorMap, x: &[f64], out: &mut [f64]) -> Result<()> {
        (**self).project(map, x, out)
    }
}

/// A boxed set is a set.
impl<C: ConstraintSet + ?Sized> ConstraintSet for Box<C> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn dim(&self) -> Option<usize> {
        (**self).dim()
    }
    fn contains(&self, x: &[f64]) -> bool {
        (**self).contains(x)
    }
    fn project(&self, map: &dyn MirrorMap, x: &[f64], out: &mut [f64]) -> Result<()> {
        (**self).project(map, x, out)
    }
}

fn unsupported(set: &str, map: &dyn MirrorMap) -> MirrorError {
    MirrorError::Unsupported {
        what: "Bregman projection",
        reason: format!(
            "the {set} set has no exact Bregman projection for a mirror map of kind {:?} \
             (dimension {})",
            map.kind(),
            map.dim()
        ),
    }
}

fn require_in_domain(map: &dyn MirrorMap, out: &[f64], set: &str) -> Result<()> {
    if map.in_domain(out) {
        Ok(())
    } else {
        Err(MirrorError::OutsideDomain {
            what: "Bregman projection",
            reason: format!("the projection onto the {set} set, {out:?}, leaves the domain of ψ"),
        })
    }
}

/// No constraint: $C$ is the whole domain of $\psi$, the projection is the identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unconstrained;

impl ConstraintSet for Unconstrained {
    fn name(&self) -> String {
        "unconstrained".into()
    }
    fn dim(&self) -> Option<usize> {
        None
    }
    fn contains(&self, x: &[f64]) -> bool {
        x.iter().all(|v| v.is_finite())
    }
    fn project(&self, map: &dyn MirrorMap, x: &[f64], out: &mut [f64]) -> Result<()> {
        check_len("projection: x", map.dim(), x.len())?;
        check_len("projection: out", map.dim(), out.len())?;
        out.copy_from_slice(x);
        require_in_domain(map, out, "unconstrained")
    }
}

/// The probability simplex $\Delta_n = \{\theta : \theta_j \ge 0,\ \sum_j\theta_j = 1\}$.
///
/// Exact Bregman projections:
/// * [`NegEntropy`](crate::map::NegEntropy): $\theta = x / \sum_j x_j$
///   ([`simplex_project_entropic`]); after a mirror step $x$ is already on $\Delta_n$
///   and this only removes round-off.
/// * Euclidean with scaling $d$: $\theta_j = \max(0, x_j - \tau/d_j)$ with the
///   multiplier $\tau$ found exactly by sorting ([`simplex_project_euclidean`]).
///
/// Any other map gives `Unsupported`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Simplex {
    dim: usize,
}

impl Simplex {
    /// The simplex $\Delta_{\text{dim}}$.
    ///
    /// # Errors
    /// `InvalidParameter` if `dim == 0`.
    pub fn new(dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(MirrorError::InvalidParameter {
                name: "dim",
                value: 0.0,
                reason: "dimension must be at least 1",
            });
        }
        Ok(Simplex { dim })
    }
}

impl ConstraintSet for Simplex {
    fn name(&self) -> String {
        "simplex".into()
    }
    fn dim(&self) -> Option<usize> {
        Some(self.dim)
    }
    fn contains(&self, x: &[f64]) -> bool {
        x.len() == self.dim
            && x.iter().all(|&v| v.is_finite() && v >= -CONTAINS_TOL)
            && (x.iter().sum::<f64>() - 1.0).abs() <= SIMPLEX_TOL
    }
    fn project(&self, map: &dyn MirrorMap, x: &[f64], out: &mut [f64]) -> Result<()> {
        check_len("simplex projection: map", self.dim, map.dim())?;
        check_len("simplex projection: x", self.dim, x.len())?;
        check_len("simplex projection: out", self.dim, out.len())?;
        match map.kind() {
            MapKind::NegEntropy => simplex_project_entropic(x, out)?,
            MapKind::Euclidean { scale } => simplex_project_euclidean(x, scale, out)?,
            _ => return Err(unsupported("simplex", map)),
        }
        require_in_domain(map, out, "simplex")
    }
}

/// KL (negative-entropy) projection onto the simplex:
/// $\arg\min_{\theta\in\Delta} \mathrm{KL}(\theta\|x) = x / \sum_j x_j$ for $x > 0$.
///
/// # Errors
/// `OutsideDomain` unless every $x_j$ is finite and $> 0$; `DimensionMismatch`.
pub fn simplex_project_entropic(x: &[f64], out: &mut [f64]) -> Result<()> {
    check_len("entropic simplex projection: out", x.len(), out.len())?;
    if x.is_empty() || !x.iter().all(|&v| v.is_finite() && v > 0.0) {
        return Err(MirrorError::OutsideDomain {
            what: "entropic simplex projection",
            reason: format!("{x:?} must be finite and positive"),
        });
    }
    let s: f64 = x.iter().sum();
    if !s.is_finite() {
        return Err(MirrorError::NonFinite {
            what: "entropic simplex projection: normaliser",
        });
    }
    for (o, v) in out.iter_mut().zip(x) {
        *o = v / s;
    }
    Ok(())
}

/// (Diagonally weighted) Euclidean projection onto the simplex,
/// $$ \arg\min_{\theta\in\Delta} \tfrac12\sum_j d_j(\theta_j - x_j)^2, \qquad
///    \theta_j = \max\!\big(0,\ x_j - \tau/d_j\big), $$
/// where the multiplier $\tau$ solves $\sum_j \max(0, x_j - \tau/d_j) = 1$. The left side
/// is piecewise linear and decreasing in $\tau$ with breakpoints $b_j = d_j x_j$; sorting
/// them in decreasing order, the active set is the longest prefix $A_k$ with
/// $b_{(k)} > \tau_k = (\sum_{A_k} x_j - 1) / \sum_{A_k} d_j^{-1}$, and $\tau = \tau_k$
/// (Held–Wolfe–Crowder 1974; Duchi et al. 2008 for $d = \mathbf 1$). $O(n \log n)$.
///
/// # Errors
/// `DimensionMismatch`; `NonFinite` if `x` has a non-finite entry; `InvalidParameter` if
/// a scale is not finite and $> 0$.
pub fn simplex_project_euclidean(x: &[f64], scale: &[f64], out: &mut [f64]) -> Result<()> {
    let n = x.len();
    check_len("Euclidean simplex projection: scale", n, scale.len())?;
    check_len("Euclidean simplex projection: out", n, out.len())?;
    if !x.iter().all(|v| v.is_finite()) {
        return Err(MirrorError::NonFinite {
            what: "Euclidean simplex projection: x",
        });
    }
    if let Some(&d) = scale.iter().find(|d| !(d.is_finite() && **d > 0.0)) {
        return Err(MirrorError::InvalidParameter {
            name: "Euclidean scale",
            value: d,
            reason: "must be finite and > 0",
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| (scale[j] * x[j]).total_cmp(&(scale[i] * x[i])));
    let (mut sx, mut sw) = (0.0, 0.0);
    let mut tau = f64::NAN;
    for &j in &order {
        sx += x[j];
        sw += 1.0 / scale[j];
        let t = (sx - 1.0) / sw;
        if scale[j] * x[j] > t {
            tau = t;
        } else {
            break;
        }
    }
    // The first breakpoint always qualifies (b = d x > (x − 1) d), so τ is set unless
    // the sums overflowed.
    if !tau.is_finite() {
        return Err(MirrorError::NonFinite {
            what: "Euclidean simplex projection: multiplier",
        });
    }
    for ((o, &v), &d) in out.iter_mut().zip(x).zip(scale) {
        *o = (v - tau / d).max(0.0);
    }
    Ok(())
}

/// A box $C = \{\theta : lo_j \le \theta_j \le hi_j\}$ (bounds may be infinite).
///
/// Its Bregman projection is the coordinate clamp $\theta_j = \min(hi_j, \max(lo_j, x_j))$,
/// **exact for separable maps** ($\psi(x) = \sum_j\psi_j(x_j)$: Euclidean with any
/// diagonal scaling, any 1-D map, block sums of those), because then
/// $D_\psi(\theta, x) = \sum_j D_{\psi_j}(\theta_j, x_j)$ and each 1-D term is convex in
/// $\theta_j$ and minimal at $x_j$. Any other map gives `Unsupported` (negative entropy
/// lives on the simplex and is not separable there).
#[derive(Debug, Clone, PartialEq)]
pub struct BoxSet {
    lo: Vec<f64>,
    hi: Vec<f64>,
}

impl BoxSet {
    /// The box $[lo, hi]$.
    ///
    /// # Errors
    /// `DimensionMismatch` if the lengths differ; `InvalidParameter` if empty, a bound
    /// is NaN, or $lo_j > hi_j$.
    pub fn new(lo: Vec<f64>, hi: Vec<f64>) -> Result<Self> {
        check_len("box: hi", lo.len(), hi.len())?;
        if lo.is_empty() {
            return Err(MirrorError::InvalidParameter {
                name: "dim",
                value: 0.0,
                reason: "dimension must be at least 1",
            });
        }
        for (&l, &h) in lo.iter().zip(&hi) {
            if l.is_nan() || h.is_nan() {
                return Err(MirrorError::InvalidParameter {
                    name: "box bound",
                    value: f64::NAN,
                    reason: "bounds must not be NaN",
                });
            }
            if l > h {
                return Err(MirrorError::InvalidParameter {
                    name: "box lower bound",
                    value: l,
                    reason: "lower bound must not exceed the upper bound",
                });
            }
        }
        Ok(BoxSet { lo, hi })
    }

    /// The same bounds $[lo, hi]$ in every one of `dim` coordinates.
    ///
    /// # Errors
    /// As [`BoxSet::new`].
    pub fn uniform(dim: usize, lo: f64, hi: f64) -> Result<Self> {
        Self::new(vec![lo; dim], vec![hi; dim])
    }

    /// Lower bounds.
    pub fn lo(&self) -> &[f64] {
        &self.lo
    }

    /// Upper bounds.
    pub fn hi(&self) -> &[f64] {
        &self.hi
    }
}

impl ConstraintSet for BoxSet {
    fn name(&self) -> String {
        "box".into()
    }
    fn dim(&self) -> Option<usize> {
        Some(self.lo.len())
    }
    fn contains(&self, x: &[f64]) -> bool {
        x.len() == self.lo.len()
            && x.iter()
                .zip(self.lo.iter().zip(&self.hi))
                .all(|(&v, (&l, &h))| !v.is_nan() && v >= l - CONTAINS_TOL && v <= h + CONTAINS_TOL)
    }
    fn project(&self, map: &dyn MirrorMap, x: &[f64], out: &mut [f64]) -> Result<()> {
        let n = self.lo.len();
        check_len("box projection: map", n, map.dim())?;
        check_len("box projection: x", n, x.len())?;
        check_len("box projection: out", n, out.len())?;
        match map.kind() {
            MapKind::Euclidean { .. } | MapKind::Separable => {}
            _ => return Err(unsupported("box", map)),
        }
        if x.iter().any(|v| v.is_nan()) {
            return Err(MirrorError::NonFinite {
                what: "box projection: x",
            });
        }
        for (o, (&v, (&l, &h))) in out
            .iter_mut()
            .zip(x.iter().zip(self.lo.iter().zip(&self.hi)))
        {
            *o = v.clamp(l, h);
        }
        require_in_domain(map, out, "box")
    }
}

/// A step-size schedule $t \mapsto \eta_t$ ($t = 0, 1, 2, \dots$ counts steps taken).
pub trait StepSize: Send + Sync {
    /// The step $\eta_t$ for step number `t` (must be finite and $> 0$; the driver
    /// checks).
    fn eta(&self, t: usize) -> f64;
}

/// A borrowed schedule is a schedule.
impl<S: StepSize + ?Sized> StepSize for &S {
    fn eta(&self, t: usize) -> f64 {
        (**self).eta(t)
    }
}

/// A boxed schedule is a schedule.
impl<S: StepSize + ?Sized> StepSize for Box<S> {
    fn eta(&self, t: usize) -> f64 {
        (**self).eta(t)
    }
}

fn validated_step(name: &'static str, v: f64) -> Result<f64> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(MirrorError::InvalidParameter {
            name,
            value: v,
            reason: "step size must be finite and > 0",
        })
    }
}

/// Constant step $\eta_t = \eta$.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constant {
    eta: f64,
}

impl Constant {
    /// # Errors
    /// `InvalidParameter` unless $\eta$ is finite and $> 0$.
    pub fn new(eta: f64) -> Result<Self> {
        Ok(Constant {
            eta: validated_step("eta", eta)?,
        })
    }
}

impl StepSize for Constant {
    fn eta(&self, _t: usize) -> f64 {
        self.eta
    }
}

/// Decaying step $\eta_t = c / \sqrt{t + 1}$ (the classical choice for non-smooth
/// convex objectives, giving an $O(1/\sqrt T)$ rate for the averaged iterate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InvSqrt {
    c: f64,
}

impl InvSqrt {
    /// # Errors
    /// `InvalidParameter` unless $c$ is finite and $> 0$.
    pub fn new(c: f64) -> Result<Self> {
        Ok(InvSqrt {
            c: validated_step("c", c)?,
        })
    }
}

impl StepSize for InvSqrt {
    fn eta(&self, t: usize) -> f64 {
        self.c / ((t + 1) as f64).sqrt()
    }
}

/// A user schedule from a closure $t \mapsto \eta_t$, e.g.
/// `StepFn(|t| 1.0 / (t as f64 + 10.0))`. Returned values are validated at every step.
#[derive(Clone, Copy)]
pub struct StepFn<F>(pub F);

impl<F> std::fmt::Debug for StepFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepFn(..)")
    }
}

impl<F: Fn(usize) -> f64 + Send + Sync> StepSize for StepFn<F> {
    fn eta(&self, t: usize) -> f64 {
        (self.0)(t)
    }
}

/// Projected mirror descent with a mirror map $\psi$, a constraint set $C$ and a
/// step-size schedule $\eta_t$ (see the [module docs](self) for the update).
pub struct MirrorDescent<'a> {
    map: Box<dyn MirrorMap + 'a>,
    set: Box<dyn ConstraintSet + 'a>,
    step: Box<dyn StepSize + 'a>,
}

impl std::fmt::Debug for MirrorDescent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorDescent")
            .field("map", &self.map.kind())
            .field("set", &self.set.name())
            .finish_non_exhaustive()
    }
}

/// The iterates and objective values of [`MirrorDescent::minimize`]:
/// `iterates[t]` is $\theta_t$ and `objective[t]` is $f(\theta_t)$, for
/// $t = 0, \dots, T$ (so both have length $T + 1$).
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    /// $\theta_0, \dots, \theta_T$.
    pub iterates: Vec<Vec<f64>>,
    /// $f(\theta_0), \dots, f(\theta_T)$.
    pub objective: Vec<f64>,
}

impl Trajectory {
    /// The last iterate $\theta_T$.
    pub fn last(&self) -> &[f64] {
        self.iterates.last().map(Vec::as_slice).unwrap_or(&[])
    }

    /// Index of the iterate with the smallest objective (mirror descent is not monotone
    /// for large steps, so the best and the last may differ).
    pub fn best_index(&self) -> usize {
        self.objective
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0)
    }
}

impl<'a> MirrorDescent<'a> {
    /// Assembles the method.
    ///
    /// # Errors
    /// `DimensionMismatch` if the set has a dimension different from the map's.
    pub fn new(
        map: impl MirrorMap + 'a,
        set: impl ConstraintSet + 'a,
        step: impl StepSize + 'a,
    ) -> Result<Self> {
        if let Some(d) = set.dim() {
            check_len("mirror descent: constraint set", map.dim(), d)?;
        }
        Ok(MirrorDescent {
            map: Box::new(map),
            set: Box::new(set),
            step: Box::new(step),
        })
    }

    /// The mirror map $\psi$.
    pub fn map(&self) -> &dyn MirrorMap {
        self.map.as_ref()
    }

    /// The constraint set $C$.
    pub fn set(&self) -> &dyn ConstraintSet {
        self.set.as_ref()
    }

    /// The step $\eta_t$ of step number `t`.
    ///
    /// # Errors
    /// `InvalidParameter` if the schedule returns a value that is not finite and $> 0$.
    pub fn eta(&self, t: usize) -> Result<f64> {
        validated_step("step size", self.step.eta(t))
    }

    /// One step $\theta_{t+1} = \arg\min_{\theta\in C} \langle g, \theta\rangle +
    /// \frac1{\eta_t} D_\psi(\theta, \theta_t)$, as
    /// $\Pi^\psi_C\big(\nabla\psi^{\ast}(\nabla\psi(\theta_t) - \eta_t g)\big)$.
    ///
    /// # Errors
    /// `DimensionMismatch`; `OutsideDomain` if $\theta_t$ is not in the domain of
    /// $\psi$; `NonFinite` for a non-finite gradient or dual point; `InvalidParameter` for
    /// a bad step size; `Unsupported` if the set cannot project with this map.
    pub fn step(&self, theta: &[f64], grad: &[f64], t: usize) -> Result<Vec<f64>> {
        let n = self.map.dim();
        check_len("mirror descent: theta", n, theta.len())?;
        check_len("mirror descent: gradient", n, grad.len())?;
        if !self.map.in_domain(theta) {
            return Err(MirrorError::OutsideDomain {
                what: "mirror descent iterate",
                reason: format!("{theta:?} is not in the domain of ψ"),
            });
        }
        if !grad.iter().all(|g| g.is_finite()) {
            return Err(MirrorError::NonFinite {
                what: "mirror descent: gradient",
            });
        }
        let eta = self.eta(t)?;
        let mut y = vec![0.0; n];
        self.map.grad(theta, &mut y)?;
        for (y, g) in y.iter_mut().zip(grad) {
            *y -= eta * g;
        }
        if !y.iter().all(|v| v.is_finite()) {
            return Err(MirrorError::NonFinite {
                what: "mirror descent: dual point",
            });
        }
        let mut x = vec![0.0; n];
        self.map.grad_conj(&y, &mut x)?;
        let mut out = vec![0.0; n];
        self.set.project(self.map.as_ref(), &x, &mut out)?;
        if !out.iter().all(|v| v.is_finite()) {
            return Err(MirrorError::NonFinite {
                what: "mirror descent: new iterate",
            });
        }
        Ok(out)
    }

    /// Runs `iters` steps from `theta0` on an objective $f$ with gradient `grad`, and
    /// returns the [`Trajectory`] ($T + 1$ iterates and objective values).
    ///
    /// # Errors
    /// `OutsideDomain` if `theta0` is not in $C$ or not in the domain of $\psi$;
    /// `NonFinite` if $f$ returns a non-finite value; any error of [`step`](Self::step).
    pub fn minimize(
        &self,
        mut f: impl FnMut(&[f64]) -> f64,
        mut grad: impl FnMut(&[f64]) -> Vec<f64>,
        theta0: &[f64],
        iters: usize,
    ) -> Result<Trajectory> {
        check_len("mirror descent: theta0", self.map.dim(), theta0.len())?;
        if !self.set.contains(theta0) || !self.map.in_domain(theta0) {
            return Err(MirrorError::OutsideDomain {
                what: "mirror descent start",
                reason: format!(
                    "{theta0:?} must lie in the {} set and in the domain of ψ",
                    self.set.name()
                ),
            });
        }
        let eval = |f: &mut dyn FnMut(&[f64]) -> f64, x: &[f64]| -> Result<f64> {
            let v = f(x);
            if v.is_finite() {
                Ok(v)
            } else {
                Err(MirrorError::NonFinite {
                    what: "mirror descent: objective",
                })
            }
        };
        let mut traj = Trajectory {
            iterates: vec![theta0.to_vec()],
            objective: vec![eval(&mut f, theta0)?],
        };
        for t in 0..iters {
            let theta = traj.last().to_vec();
            let g = grad(&theta);
            let next = self.step(&theta, &g, t)?;
            traj.objective.push(eval(&mut f, &next)?);
            traj.iterates.push(next);
        }
        Ok(traj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{Euclidean, NegEntropy};

    #[test]
    fn public_types_are_send_sync() {
        fn ok<T: Send + Sync>() {}
        ok::<MirrorDescent<'static>>();
        ok::<Simplex>();
        ok::<BoxSet>();
        ok::<Trajectory>();
    }

    #[test]
    fn euclidean_simplex_projection_of_a_point_on_the_simplex_is_itself() {
        let x = [0.2, 0.3, 0.5];
        let mut out = [0.0; 3];
        simplex_project_euclidean(&x, &[1.0; 3], &mut out).unwrap();
        for (a, b) in out.iter().zip(&x) {
            assert!((a - b).abs() < 1e-15);
        }
        // A far-away point projects onto a vertex.
        simplex_project_euclidean(&[10.0, 0.0, -3.0], &[1.0; 3], &mut out).unwrap();
        assert_eq!(out, [1.0, 0.0, 0.0]);
        // Overflowing sums are reported, not turned into NaN.
        let err = simplex_project_euclidean(&[1e308, 1e308, 1e308], &[1e10; 3], &mut out);
        assert!(matches!(err, Err(MirrorError::NonFinite { .. })), "{err:?}");
        let err = simplex_project_entropic(&[1e308, 1e308, 1e308], &mut out);
        assert!(matches!(err, Err(MirrorError::NonFinite { .. })), "{err:?}");
    }

    #[test]
    fn unsupported_combinations_are_typed_errors() {
        let map = NegEntropy::new(3).unwrap();
        let set = BoxSet::uniform(3, 0.0, 1.0).unwrap();
        let mut out = [0.0; 3];
        let err = set.project(&map, &[0.2, 0.3, 0.5], &mut out).unwrap_err();
        assert!(matches!(err, MirrorError::Unsupported { .. }), "{err:?}");
        let e = Euclidean::new(2).unwrap();
        let err = MirrorDescent::new(e, Simplex::new(3).unwrap(), Constant::new(1.0).unwrap())
            .unwrap_err();
        assert!(
            matches!(err, MirrorError::DimensionMismatch { .. }),
            "{err:?}"
        );
    }
}
