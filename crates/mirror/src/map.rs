//! Mirror maps and their Bregman divergences.
//!
//! A mirror map is a strictly convex, differentiable potential $\psi$ on a convex domain
//! whose gradient $\nabla\psi$ maps primal points to the dual space and whose conjugate
//! gradient $\nabla\psi^*$ maps them back. Its Bregman divergence is
//! $$ D_\psi(a, b) = \psi(a) - \psi(b) - \langle \nabla\psi(b), a - b\rangle \;\ge\; 0 .$$

use crate::error::{check_len, MirrorError, Result};

/// A mirror map $\psi$: potential, gradient (primal → dual) and conjugate gradient
/// (dual → primal).
///
/// Implementations must satisfy $\nabla\psi^*(\nabla\psi(x)) = x$ on the domain; where
/// $\psi$ is only defined on an affine subset (negative entropy on the simplex), `grad_conj`
/// returns the point of that subset whose gradient equals the dual point up to the
/// subset's normal directions.
pub trait MirrorMap: Send + Sync {
    /// Dimension of the primal space.
    fn dim(&self) -> usize;
    /// Whether `x` lies in the (interior of the) domain of $\psi$.
    fn in_domain(&self, x: &[f64]) -> bool;
    /// The potential $\psi(x)$.
    fn potential(&self, x: &[f64]) -> Result<f64>;
    /// The gradient $\nabla\psi(x)$ written into `out` (primal → dual).
    fn grad(&self, x: &[f64], out: &mut [f64]) -> Result<()>;
    /// The conjugate gradient $\nabla\psi^*(y)$ written into `out` (dual → primal).
    fn grad_conj(&self, y: &[f64], out: &mut [f64]) -> Result<()>;
}

/// Bregman divergence of any mirror map:
/// $$ D_\psi(a, b) = \psi(a) - \psi(b) - \langle \nabla\psi(b), a - b\rangle .$$
///
/// Round-off can make the value slightly negative when $a \approx b$; it is clamped at
/// zero only when the negative part is within `1e-12 · (|ψ(a)| + |ψ(b)| + 1)`, otherwise
/// the negative value is returned so that an inconsistent map is visible.
///
/// # Errors
/// `DimensionMismatch` on wrong lengths, `OutsideDomain` when either point is outside
/// the domain, `NonFinite` if the result is not finite.
pub fn bregman<M: MirrorMap + ?Sized>(map: &M, a: &[f64], b: &[f64]) -> Result<f64> {
    let n = map.dim();
    check_len("bregman: first argument", n, a.len())?;
    check_len("bregman: second argument", n, b.len())?;
    let mut g = vec![0.0; n];
    map.grad(b, &mut g)?;
    let pa = map.potential(a)?;
    let pb = map.potential(b)?;
    let inner: f64 = g
        .iter()
        .zip(a.iter().zip(b))
        .map(|(g, (a, b))| g * (a - b))
        .sum();
    let d = pa - pb - inner;
    if !d.is_finite() {
        return Err(MirrorError::NonFinite {
            what: "bregman divergence",
        });
    }
    let slack = 1e-12 * (pa.abs() + pb.abs() + 1.0);
    Ok(if d < 0.0 && d > -slack { 0.0 } else { d })
}
