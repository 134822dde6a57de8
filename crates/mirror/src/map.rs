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

    /// The structure of $\psi$ that Bregman projections can exploit (see [`MapKind`]).
    ///
    /// Default: [`MapKind::Separable`] in dimension 1 (every 1-D potential is
    /// separable), [`MapKind::General`] otherwise. Override only with a true statement:
    /// constraint sets choose their projection algorithm from it.
    fn kind(&self) -> MapKind<'_> {
        if self.dim() == 1 {
            MapKind::Separable
        } else {
            MapKind::General
        }
    }
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

/// What a constraint set may assume about a mirror map when it computes a Bregman
/// projection (returned by [`MirrorMap::kind`]).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum MapKind<'a> {
    /// $\psi(x) = \tfrac12 \sum_j d_j x_j^2$ with the given positive diagonal scaling
    /// $d$ (all ones for the plain Euclidean map), on all of $\mathbb R^n$.
    Euclidean {
        /// The diagonal $d$.
        scale: &'a [f64],
    },
    /// Negative entropy on the probability simplex ([`NegEntropy`]).
    NegEntropy,
    /// $\psi(x) = \sum_j \psi_j(x_j)$ with each $\psi_j$ strictly convex on an interval:
    /// the Bregman projection onto a box is then the coordinate clamp.
    Separable,
    /// No structure known.
    General,
}

/// Tolerance on $|\sum_j x_j - 1|$ within which a point counts as lying on the
/// probability simplex (used by [`NegEntropy`] and the simplex constraint set).
pub const SIMPLEX_TOL: f64 = 1e-9;

fn check_finite(what: &'static str, x: &[f64]) -> Result<()> {
    if x.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(MirrorError::NonFinite { what })
    }
}

fn check_dim(dim: usize) -> Result<()> {
    if dim == 0 {
        Err(MirrorError::InvalidParameter {
            name: "dim",
            value: 0.0,
            reason: "dimension must be at least 1",
        })
    } else {
        Ok(())
    }
}

fn check_positive(name: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(MirrorError::InvalidParameter {
            name,
            value: v,
            reason: "must be finite and > 0",
        })
    }
}

/// The (diagonally scaled) Euclidean mirror map on $\mathbb R^n$:
/// $$ \psi(x) = \tfrac12 \sum_j d_j x_j^2, \qquad \nabla\psi(x) = d \odot x, \qquad
///    \nabla\psi^{\ast}(y) = y \oslash d, $$
/// with Bregman divergence $D_\psi(a, b) = \tfrac12\sum_j d_j (a_j - b_j)^2$. With
/// $d = \mathbf 1$ ([`Euclidean::new`]) mirror descent is (projected) gradient descent;
/// a general $d > 0$ ([`Euclidean::scaled`]) gives diagonally preconditioned gradient
/// descent, $x^+ = x - \eta\, g \oslash d$.
#[derive(Debug, Clone, PartialEq)]
pub struct Euclidean {
    scale: Vec<f64>,
}

impl Euclidean {
    /// $\psi(x) = \tfrac12\|x\|^2$ on $\mathbb R^{\text{dim}}$.
    ///
    /// # Errors
    /// `InvalidParameter` if `dim == 0`.
    pub fn new(dim: usize) -> Result<Self> {
        check_dim(dim)?;
        Ok(Euclidean {
            scale: vec![1.0; dim],
        })
    }

    /// $\psi(x) = \tfrac12\sum_j d_j x_j^2$ with the given diagonal $d$.
    ///
    /// # Errors
    /// `InvalidParameter` if `scale` is empty or an entry is not finite and $> 0$.
    pub fn scaled(scale: Vec<f64>) -> Result<Self> {
        check_dim(scale.len())?;
        for &d in &scale {
            check_positive("Euclidean scale", d)?;
        }
        Ok(Euclidean { scale })
    }

    /// The diagonal scaling $d$.
    pub fn scale(&self) -> &[f64] {
        &self.scale
    }

    fn guard(&self, what: &'static str, x: &[f64]) -> Result<()> {
        check_len(what, self.scale.len(), x.len())?;
        check_finite(what, x)
    }
}

impl MirrorMap for Euclidean {
    fn dim(&self) -> usize {
        self.scale.len()
    }
    fn in_domain(&self, x: &[f64]) -> bool {
        x.len() == self.scale.len() && x.iter().all(|v| v.is_finite())
    }
    fn potential(&self, x: &[f64]) -> Result<f64> {
        self.guard("Euclidean potential: x", x)?;
        Ok(0.5
            * x.iter()
                .zip(&self.scale)
                .map(|(x, d)| d * x * x)
                .sum::<f64>())
    }
    fn grad(&self, x: &[f64], out: &mut [f64]) -> Result<()> {
        self.guard("Euclidean grad: x", x)?;
        check_len("Euclidean grad: out", self.scale.len(), out.len())?;
        for ((o, x), d) in out.iter_mut().zip(x).zip(&self.scale) {
            *o = d * x;
        }
        Ok(())
    }
    fn grad_conj(&self, y: &[f64], out: &mut [f64]) -> Result<()> {
        self.guard("Euclidean grad_conj: y", y)?;
        check_len("Euclidean grad_conj: out", self.scale.len(), out.len())?;
        for ((o, y), d) in out.iter_mut().zip(y).zip(&self.scale) {
            *o = y / d;
        }
        Ok(())
    }
    fn kind(&self) -> MapKind<'_> {
        MapKind::Euclidean { scale: &self.scale }
    }
}

/// Negative entropy on the probability simplex
/// $\Delta_n = \{x \in \mathbb R^n : x_j \ge 0,\ \sum_j x_j = 1\}$:
/// $$ \psi(x) = \sum_j x_j \log x_j, \qquad \nabla\psi(x) = \mathbf 1 + \log x, \qquad
///    \nabla\psi^{\ast}(y) = \operatorname{softmax}(y) = \frac{e^{y}}{\sum_k e^{y_k}} . $$
///
/// **Simplex convention.** $\psi$ is taken as $+\infty$ off the affine hull
/// $\{\sum_j x_j = 1\}$, so its conjugate is $\psi^{\ast}(y) = \log\sum_k e^{y_k}$ and
/// $\nabla\psi^{\ast}$ is the softmax. A dual point is determined only up to adding a
/// multiple of $\mathbf 1$ (the normal of the simplex): $\nabla\psi^{\ast}(\nabla\psi(x) + c\mathbf 1) = x$
/// for every $c$. Membership allows $|\sum_j x_j - 1| \le$ [`SIMPLEX_TOL`].
/// `in_domain` and `grad` require the relative interior ($x_j > 0$); `potential`
/// accepts the closed simplex with $0\log 0 = 0$.
///
/// Its Bregman divergence on the simplex is the Kullback–Leibler divergence:
/// $$ D_\psi(a, b) = \sum_j a_j \log\frac{a_j}{b_j} - \sum_j (a_j - b_j)
///    = \mathrm{KL}(a \,\|\, b) . $$
/// Mirror descent with this map is the exponentiated-gradient method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegEntropy {
    dim: usize,
}

impl NegEntropy {
    /// Negative entropy on $\Delta_{\text{dim}}$.
    ///
    /// # Errors
    /// `InvalidParameter` if `dim == 0`.
    pub fn new(dim: usize) -> Result<Self> {
        check_dim(dim)?;
        Ok(NegEntropy { dim })
    }

    fn on_simplex(x: &[f64], strict: bool) -> bool {
        let ok = x
            .iter()
            .all(|&v| v.is_finite() && (v > 0.0 || (!strict && v == 0.0)));
        ok && (x.iter().sum::<f64>() - 1.0).abs() <= SIMPLEX_TOL
    }

    fn guard(&self, what: &'static str, x: &[f64], strict: bool) -> Result<()> {
        check_len(what, self.dim, x.len())?;
        if Self::on_simplex(x, strict) {
            Ok(())
        } else {
            Err(MirrorError::OutsideDomain {
                what,
                reason: format!(
                    "{x:?} is not in the {} probability simplex (entries {}, sum 1 ± {SIMPLEX_TOL:e})",
                    if strict { "relatively open" } else { "closed" },
                    if strict { "> 0" } else { ">= 0" },
                ),
            })
        }
    }
}

impl MirrorMap for NegEntropy {
    fn dim(&self) -> usize {
        self.dim
    }
    fn in_domain(&self, x: &[f64]) -> bool {
        x.len() == self.dim && Self::on_simplex(x, true)
    }
    fn potential(&self, x: &[f64]) -> Result<f64> {
        self.guard("negative entropy: x", x, false)?;
        Ok(x.iter()
            .filter(|&&v| v > 0.0)
            .map(|&v| v * v.ln())
            .sum::<f64>())
    }
    fn grad(&self, x: &[f64], out: &mut [f64]) -> Result<()> {
        self.guard("negative entropy grad: x", x, true)?;
        check_len("negative entropy grad: out", self.dim, out.len())?;
        for (o, &x) in out.iter_mut().zip(x) {
            *o = 1.0 + x.ln();
        }
        Ok(())
    }
    fn grad_conj(&self, y: &[f64], out: &mut [f64]) -> Result<()> {
        check_len("negative entropy grad_conj: y", self.dim, y.len())?;
        check_len("negative entropy grad_conj: out", self.dim, out.len())?;
        check_finite("negative entropy grad_conj: y", y)?;
        out.copy_from_slice(y);
        crate::special::softmax_in_place(out);
        Ok(())
    }
    fn kind(&self) -> MapKind<'_> {
        MapKind::NegEntropy
    }
}

/// A block-diagonal weighted sum of mirror maps, for parameters made of several blocks
/// $x = (x_1, \dots, x_B)$ stored one after another:
/// $$ \psi(x) = \sum_b c_b\, \psi_b(x_b), \qquad
///    \nabla\psi(x)\_b = c_b \nabla\psi_b(x_b), \qquad
///    \nabla\psi^{\ast}(y)\_b = \nabla\psi_b^{\ast}(y_b / c_b), $$
/// with weights $c_b > 0$. Its Bregman divergence is the weighted sum of the blocks'
/// divergences, $D_\psi(a, b) = \sum_b c_b D_{\psi_b}(a_b, b_b)$.
///
/// [`kind`](MirrorMap::kind): Euclidean (with scaling $c_b d_{b,j}$) if every block is
/// Euclidean, separable if every block is Euclidean or separable, general otherwise.
pub struct BlockSum<'a> {
    blocks: Vec<Box<dyn MirrorMap + 'a>>,
    weights: Vec<f64>,
    offsets: Vec<usize>,
    euclid_scale: Option<Vec<f64>>,
    separable: bool,
}

impl std::fmt::Debug for BlockSum<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockSum")
            .field("weights", &self.weights)
            .field("offsets", &self.offsets)
            .finish_non_exhaustive()
    }
}

impl<'a> BlockSum<'a> {
    /// Builds $\psi = \sum_b c_b \psi_b$ from `(map, weight)` pairs, in block order.
    ///
    /// # Errors
    /// `InvalidParameter` if there are no blocks or a weight is not finite and $> 0$.
    pub fn new(blocks: Vec<(Box<dyn MirrorMap + 'a>, f64)>) -> Result<Self> {
        if blocks.is_empty() {
            return Err(MirrorError::InvalidParameter {
                name: "blocks",
                value: 0.0,
                reason: "a block sum needs at least one block",
            });
        }
        let mut maps = Vec::with_capacity(blocks.len());
        let mut weights = Vec::with_capacity(blocks.len());
        let mut offsets = vec![0];
        for (map, w) in blocks {
            check_positive("block weight", w)?;
            check_dim(map.dim())?;
            offsets.push(offsets.last().copied().unwrap_or(0) + map.dim());
            maps.push(map);
            weights.push(w);
        }
        let mut euclid: Option<Vec<f64>> = Some(Vec::new());
        let mut separable = true;
        for (m, &w) in maps.iter().zip(&weights) {
            match m.kind() {
                MapKind::Euclidean { scale } => {
                    if let Some(e) = euclid.as_mut() {
                        e.extend(scale.iter().map(|d| w * d));
                    }
                }
                MapKind::Separable => euclid = None,
                _ => {
                    euclid = None;
                    separable = false;
                }
            }
        }
        Ok(BlockSum {
            blocks: maps,
            weights,
            offsets,
            euclid_scale: euclid,
            separable,
        })
    }

    /// Equal weights $c_b = 1$.
    ///
    /// # Errors
    /// As [`BlockSum::new`].
    pub fn unweighted(blocks: Vec<Box<dyn MirrorMap + 'a>>) -> Result<Self> {
        Self::new(blocks.into_iter().map(|m| (m, 1.0)).collect())
    }

    /// Number of blocks $B$.
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The index range of block `b` inside the stacked vector (`None` if out of range).
    pub fn block_range(&self, b: usize) -> Option<std::ops::Range<usize>> {
        (b < self.blocks.len()).then(|| self.offsets[b]..self.offsets[b + 1])
    }

    /// The weight $c_b$ of block `b` (`None` if out of range).
    pub fn weight(&self, b: usize) -> Option<f64> {
        self.weights.get(b).copied()
    }

    /// The map $\psi_b$ of block `b` (`None` if out of range).
    pub fn block(&self, b: usize) -> Option<&(dyn MirrorMap + 'a)> {
        self.blocks.get(b).map(|m| m.as_ref())
    }

    fn ranges(&self) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
        (0..self.blocks.len()).map(|b| (b, self.offsets[b]..self.offsets[b + 1]))
    }
}

impl MirrorMap for BlockSum<'_> {
    fn dim(&self) -> usize {
        self.offsets[self.blocks.len()]
    }
    fn in_domain(&self, x: &[f64]) -> bool {
        x.len() == self.dim() && self.ranges().all(|(b, r)| self.blocks[b].in_domain(&x[r]))
    }
    fn potential(&self, x: &[f64]) -> Result<f64> {
        check_len("block sum potential: x", self.dim(), x.len())?;
        let mut total = 0.0;
        for (b, r) in self.ranges() {
            total += self.weights[b] * self.blocks[b].potential(&x[r])?;
        }
        Ok(total)
    }
    fn grad(&self, x: &[f64], out: &mut [f64]) -> Result<()> {
        check_len("block sum grad: x", self.dim(), x.len())?;
        check_len("block sum grad: out", self.dim(), out.len())?;
        for (b, r) in self.ranges() {
            let o = &mut out[r.clone()];
            self.blocks[b].grad(&x[r], o)?;
            o.iter_mut().for_each(|v| *v *= self.weights[b]);
        }
        Ok(())
    }
    fn grad_conj(&self, y: &[f64], out: &mut [f64]) -> Result<()> {
        check_len("block sum grad_conj: y", self.dim(), y.len())?;
        check_len("block sum grad_conj: out", self.dim(), out.len())?;
        let mut scaled = Vec::new();
        for (b, r) in self.ranges() {
            let c = self.weights[b];
            scaled.clear();
            scaled.extend(y[r.clone()].iter().map(|v| v / c));
            self.blocks[b].grad_conj(&scaled, &mut out[r])?;
        }
        Ok(())
    }
    fn kind(&self) -> MapKind<'_> {
        match (&self.euclid_scale, self.separable) {
            (Some(scale), _) => MapKind::Euclidean { scale },
            (None, true) => MapKind::Separable,
            (None, false) => MapKind::General,
        }
    }
}

/// A borrowed map is a map (so `&map` can be handed to a driver that takes ownership).
impl<M: MirrorMap + ?Sized> MirrorMap for &M {
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn in_domain(&self, x: &[f64]) -> bool {
        (**self).in_domain(x)
    }
    fn potential(&self, x: &[f64]) -> Result<f64> {
        (**self).potential(x)
    }
    fn grad(&self, x: &[f64], out: &mut [f64]) -> Result<()> {
        (**self).grad(x, out)
    }
    fn grad_conj(&self, y: &[f64], out: &mut [f64]) -> Result<()> {
        (**self).grad_conj(y, out)
    }
    fn kind(&self) -> MapKind<'_> {
        (**self).kind()
    }
}

/// A boxed map is a map.
impl<M: MirrorMap + ?Sized> MirrorMap for Box<M> {
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn in_domain(&self, x: &[f64]) -> bool {
        (**self).in_domain(x)
    }
    fn potential(&self, x: &[f64]) -> Result<f64> {
        (**self).potential(x)
    }
    fn grad(&self, x: &[f64], out: &mut [f64]) -> Result<()> {
        (**self).grad(x, out)
    }
    fn grad_conj(&self, y: &[f64], out: &mut [f64]) -> Result<()> {
        (**self).grad_conj(y, out)
    }
    fn kind(&self) -> MapKind<'_> {
        (**self).kind()
    }
}
