//! Adaptive double-exponential quadrature of a function of one variable over a finite,
//! half-infinite or infinite interval, with integrable endpoint singularities.
//!
//! [`integrate`] computes $\int_a^b f(x)\,dx$; [`integrate_with_breaks`] does the same over
//! consecutive pieces $[x_0, x_1], [x_1, x_2], \dots$ (the ends may be $\mp\infty$), and
//! [`integrate_exp_with_breaks`] integrates $e^{g}$ given $g = \log f$, forming each term
//! as $e^{g + \log w}$ so that a density overflowing `f64` next to an integrable
//! singularity still counts. That is how [`check_family`](crate::check_family) integrates
//! a one-dimensional density: from `log_density`, with breaks at sample quantiles so that
//! every piece holds mass.
//!
//! **Method.** After a change of variables $x = \phi(t)$ whose derivative decays
//! double-exponentially as $|t| \to \infty$, the trapezoidal rule
//! $$ \int_a^b f(x)\,dx = \int_{-\infty}^{\infty} f(\phi(t))\,\phi'(t)\,dt
//!    \approx h \sum_{k} f(\phi(kh))\,\phi'(kh) $$
//! converges exponentially in the number of nodes, also for integrands with integrable
//! power or logarithmic singularities at finite ends (such as $x^{-0.4}$ at $0$, a Gamma
//! density of shape $0.6$), because the nodes crowd double-exponentially towards the ends.
//! With $u = \frac\pi2\sinh t$ the maps are
//!
//! | range | map $\phi(t)$ | name |
//! |---|---|---|
//! | $[a, b]$ | $c + r\tanh u$, $c = \frac{a+b}2$, $r = \frac{b-a}2$ | tanh-sinh |
//! | $[a, \infty)$ | $a + L e^{u}$ | exp-sinh |
//! | $(-\infty, b]$ | $b - L e^{u}$ | exp-sinh, reflected |
//! | $(-\infty, \infty)$ | $L \sinh u$ | sinh-sinh |
//!
//! with $L$ = [`QuadratureConfig::scale`] (for [`integrate_with_breaks`], the width of the
//! finite piece next to the tail). On $[a, b]$ the distance of a node to its nearer end is
//! computed directly, $\delta = r\,\frac{2e^{-2u}}{1 + e^{-2u}}$, and the node is $a + \delta$
//! or $b - \delta$: no cancellation in $1 - \tanh u$, and no node is ever placed *at* an end
//! (nodes that round onto an end are dropped), so $f$ may be infinite or undefined there.
//!
//! **Levels and errors.** Level $\ell$ uses $h = 2^{-\ell}$ on $|t| \le 6.8$ (beyond it
//! the nodes leave the range of `f64`); each level reuses the previous level's nodes. A
//! piece's error estimate after level $\ell$ is
//! $|S_\ell - S_{\ell-1}| + \tau_- + \tau_+ + 8\varepsilon h\sum_k|\phi'f|$: the change from
//! the previous level (which, the convergence being quadratic, bounds the error of $S_\ell$
//! generously), the tails $\tau_\pm$ beyond the outermost nonzero term on each side, and
//! rounding. A tail is extrapolated geometrically from a reference term $q_{\rm ref}$,
//! $1/16$ unit of $t$ inside the outermost nonzero one (the outermost nodes next to a
//! finite end are rounded onto representable numbers, which distorts their terms), and
//! the term $q_{\rm in}$ a quarter unit further in, $m$ steps of $h$ away:
//! $\rho = (q_{\rm ref}/q_{\rm in})^{1/m}$, $\tau = h\,q_{\rm ref}\,\rho/(1-\rho)$
//! ($+\infty$ if $\rho \ge 1$; the few terms between the reference and the outermost one
//! are counted twice, which errs on the safe side). It is large for an integrand that does not decay (a
//! non-integrable singularity) and for a strong singularity at an end that `f64` cannot
//! approach closer than one unit in the last place, so such integrals are reported as not
//! converged instead of silently short. A piece stops at the first level $\ell \ge 3$ that meets its share of
//! the tolerance, or at [`QuadratureConfig::max_level`].
//!
//! **Adaptivity.** While the summed estimate exceeds
//! $\max(\text{abs\\_tol}, \text{rel\\_tol}\sum_i|S_i|)$, the piece with the largest estimate
//! is split (a finite piece in halves, at the geometric mean if it lies on one side of 0
//! and spans more than three decades; $[a, \infty)$ into $[a, a + L]$ and
//! $[a + L, \infty)$ with scale $2L$; the whole line at $0$), up to
//! [`QuadratureConfig::max_pieces`]. A piece whose estimate is dominated by its tails
//! $\tau_\pm$ is not split (its end stays where it is in both halves, so no split would
//! help), and the splitting stops once such pieces alone exceed the tolerance. Interior kinks and steep features
//! are handled this way.
//!
//! **Why hand-written.** The crates that offer quadrature (`quadrature` 0.1: finite
//! intervals only and unmaintained since 2019; `bilby` and `rint` 0.x: young; the
//! `scirs2-integrate` tree: a large dependency for one function) either lack the
//! half-infinite maps with endpoint control that a density near the edge of its support
//! needs — nodes never on the end, distances to the end without cancellation, an honest
//! truncation estimate — or are not yet established; the double-exponential rules are
//! short and are tested here against closed forms.

use crate::error::{MirrorError, Result};
use std::collections::HashMap;
use std::f64::consts::FRAC_PI_2;

/// Largest $|t|$ of the double-exponential nodes: $\frac\pi2\sinh 6.8 \approx 703$, so the
/// exp-sinh nodes $L e^{u}$ span $e^{\pm 703}$, the whole range of `f64`.
const T_MAX: f64 = 6.8;
/// A piece is not accepted before this level ($h = 1/8$, about 110 nodes).
const MIN_LEVEL: u32 = 3;

/// Tolerances and limits of [`integrate`].
#[derive(Debug, Clone, PartialEq)]
pub struct QuadratureConfig {
    /// Absolute tolerance on the integral.
    pub abs_tol: f64,
    /// Tolerance relative to $\int|f|$ (estimated by $\sum_i |S_i|$ over the pieces).
    pub rel_tol: f64,
    /// Length scale $L$ of the maps of infinite ranges (see the
    /// [module documentation](self)): about the width of the region holding the mass.
    pub scale: f64,
    /// Finest level: step $h = 2^{-\text{max\\_level}}$ (level 8: about 3500 nodes per piece).
    pub max_level: u32,
    /// Largest number of pieces the adaptive splitting may create.
    pub max_pieces: usize,
}

impl Default for QuadratureConfig {
    fn default() -> Self {
        QuadratureConfig {
            abs_tol: 1e-12,
            rel_tol: 1e-12,
            scale: 1.0,
            max_level: 8,
            max_pieces: 64,
        }
    }
}

impl QuadratureConfig {
    fn validate(&self) -> Result<()> {
        let nonneg = |name: &'static str, v: f64| -> Result<()> {
            if v >= 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(MirrorError::InvalidParameter {
                    name,
                    value: v,
                    reason: "finite and >= 0",
                })
            }
        };
        nonneg("abs_tol", self.abs_tol)?;
        nonneg("rel_tol", self.rel_tol)?;
        if self.abs_tol == 0.0 && self.rel_tol == 0.0 {
            return Err(MirrorError::InvalidParameter {
                name: "abs_tol",
                value: 0.0,
                reason: "abs_tol or rel_tol must be > 0",
            });
        }
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            return Err(MirrorError::InvalidParameter {
                name: "scale",
                value: self.scale,
                reason: "finite and > 0",
            });
        }
        if !(MIN_LEVEL..=16).contains(&self.max_level) {
            return Err(MirrorError::InvalidParameter {
                name: "max_level",
                value: f64::from(self.max_level),
                reason: "between 3 and 16",
            });
        }
        if self.max_pieces == 0 {
            return Err(MirrorError::InvalidParameter {
                name: "max_pieces",
                value: 0.0,
                reason: "at least 1",
            });
        }
        Ok(())
    }
}

/// The result of [`integrate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Integral {
    /// The estimate of $\int_a^b f$.
    pub value: f64,
    /// Estimated absolute error (see the [module documentation](self)).
    pub error: f64,
    /// Whether `error` $\le \max(\text{abs\\_tol}, \text{rel\\_tol}\sum_i|S_i|)$.
    pub converged: bool,
    /// Number of evaluations of $f$.
    pub evaluations: usize,
    /// Number of pieces the range ended up split into.
    pub pieces: usize,
}

/// $\int_a^b f(x)\,dx$ by adaptive double-exponential quadrature (see the
/// [module documentation](self)); $a$ may be $-\infty$ and $b$ may be $+\infty$, and
/// $\int_a^b = -\int_b^a$ when $a > b$. $f$ is never evaluated at a finite end.
///
/// An integral that does not reach the tolerance is returned with `converged == false`
/// and its error estimate (the caller decides whether that is good enough).
///
/// # Errors
/// `InvalidParameter` for a NaN bound, an infinite bound of the wrong sign, or a bad
/// [`QuadratureConfig`]; `NonFinite` if $f$ returns NaN or $\pm\infty$ at a node (a
/// non-integrable singularity usually shows up so).
///
/// ```
/// use mirror::quadrature::{integrate, QuadratureConfig};
/// // ∫₀^∞ x^{-0.4} e^{-x} dx = Γ(0.6), with a singularity at 0.
/// let r = integrate(|x: f64| x.powf(-0.4) * (-x).exp(), 0.0, f64::INFINITY,
///                   &QuadratureConfig::default()).unwrap();
/// let gamma_06 = statrs::function::gamma::gamma(0.6);
/// assert!(r.converged && (r.value - gamma_06).abs() < 1e-12 * gamma_06);
/// ```
pub fn integrate<F: FnMut(f64) -> f64>(
    f: F,
    a: f64,
    b: f64,
    config: &QuadratureConfig,
) -> Result<Integral> {
    if a.is_nan() || b.is_nan() {
        return Err(MirrorError::InvalidParameter {
            name: if a.is_nan() { "a" } else { "b" },
            value: f64::NAN,
            reason: "an integration bound must not be NaN",
        });
    }
    if a > b {
        let mut r = integrate_with_breaks(f, &[b, a], config)?;
        r.value = -r.value;
        return Ok(r);
    }
    integrate_with_breaks(f, &[a, b], config)
}

/// $\int_{x_0}^{x_n} f(x)\,dx$ as the sum over the pieces $[x_{i-1}, x_i]$ of
/// `breaks` $= (x_0, \dots, x_n)$, non-decreasing, finite except possibly
/// $x_0 = -\infty$ and $x_n = +\infty$; empty pieces are dropped. A tail's length scale
/// $L$ is the width of the finite piece next to it (else [`QuadratureConfig::scale`]).
/// Breaks placed where $f$ has mass, or at kinks of $f$, make the quadrature cheaper.
///
/// # Errors
/// As [`integrate`]; also `InvalidParameter` if `breaks` has fewer than 2 entries, is
/// not non-decreasing, or has an infinite interior entry.
pub fn integrate_with_breaks<F: FnMut(f64) -> f64>(
    mut f: F,
    breaks: &[f64],
    config: &QuadratureConfig,
) -> Result<Integral> {
    adaptive(&mut Integrand::Plain(&mut f), breaks, config)
}

/// $\int_{x_0}^{x_n} e^{g(x)}\,dx$ for a log-integrand $g$ (a log-density), over the
/// pieces of `breaks` as in [`integrate_with_breaks`]. Each term is formed as
/// $e^{g(x) + \log w}$ with the logarithm of the weight computed directly, so an
/// integrand that overflows `f64` where its weighted term does not (a density
/// $\propto s^{-0.97}$ at $s = 10^{-320}$) still contributes; $g = -\infty$ is a zero.
///
/// # Errors
/// As [`integrate_with_breaks`]; `NonFinite` if $g$ is NaN or $+\infty$ at a node.
///
/// ```
/// use mirror::quadrature::{integrate_exp_with_breaks, QuadratureConfig};
/// // ∫₀^∞ e^{−x²/2} dx = √(π/2), from the logarithm of the integrand.
/// let r = integrate_exp_with_breaks(|x| -0.5 * x * x, &[0.0, f64::INFINITY],
///                                   &QuadratureConfig::default()).unwrap();
/// assert!((r.value - (std::f64::consts::PI / 2.0).sqrt()).abs() < 1e-13);
/// ```
pub fn integrate_exp_with_breaks<G: FnMut(f64) -> f64>(
    mut log_f: G,
    breaks: &[f64],
    config: &QuadratureConfig,
) -> Result<Integral> {
    adaptive(&mut Integrand::Log(&mut log_f), breaks, config)
}

/// The adaptive driver behind [`integrate_with_breaks`] and [`integrate_exp_with_breaks`].
fn adaptive(f: &mut Integrand<'_>, breaks: &[f64], config: &QuadratureConfig) -> Result<Integral> {
    config.validate()?;
    let pieces = initial_pieces(breaks, config.scale)?;
    let n0 = pieces.len().max(1) as f64;
    let mut evaluations = 0usize;
    let mut done: Vec<Done> = Vec::with_capacity(pieces.len());
    for p in pieces {
        let share = 1.0 / n0;
        let r = run_piece(f, p, share, config, &mut evaluations)?;
        done.push(Done::new(p, share, r));
    }
    loop {
        let (total, l1, err) = totals(&done);
        let target = config.abs_tol.max(config.rel_tol * l1);
        let converged = err <= target;
        let worst = done
            .iter()
            .enumerate()
            .filter(|(_, d)| d.splittable && d.error > 0.0)
            .max_by(|x, y| x.1.error.total_cmp(&y.1.error))
            .map(|(i, _)| i);
        // What the unsplittable pieces already miss cannot be split away.
        let stuck: f64 = done.iter().filter(|d| !d.splittable).map(|d| d.error).sum();
        let i = match worst {
            Some(i) if !converged && stuck <= target && done.len() < config.max_pieces => i,
            _ => {
                return Ok(Integral {
                    value: total,
                    error: err,
                    converged,
                    evaluations,
                    pieces: done.len(),
                })
            }
        };
        let parent = done.swap_remove(i);
        let (c1, c2) = split(parent.piece);
        let share = 0.5 * parent.share;
        for c in [c1, c2] {
            let r = run_piece(f, c, share, config, &mut evaluations)?;
            done.push(Done::new(c, share, r));
        }
    }
}

/// One piece of the range.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Piece {
    /// $[a, b]$, tanh-sinh.
    Finite(f64, f64),
    /// $[a, \infty)$ with scale $L$, exp-sinh.
    Upper(f64, f64),
    /// $(-\infty, b]$ with scale $L$, reflected exp-sinh.
    Lower(f64, f64),
    /// $(-\infty, \infty)$ with scale $L$, sinh-sinh.
    Whole(f64),
}

/// A piece with its result.
struct Done {
    piece: Piece,
    share: f64,
    value: f64,
    error: f64,
    splittable: bool,
}

impl Done {
    /// A piece whose estimate is dominated by the truncation at an end is not split: the
    /// end stays where it is in both halves.
    fn new(piece: Piece, share: f64, r: PieceResult) -> Self {
        Done {
            piece,
            share,
            value: r.value,
            error: r.error,
            splittable: !r.truncation_bound,
        }
    }
}

/// (sum of values, sum of |values|, sum of error estimates), compensated.
fn totals(done: &[Done]) -> (f64, f64, f64) {
    let mut v = Neumaier::default();
    let mut l1 = 0.0;
    let mut e = 0.0;
    for d in done {
        v.add(d.value);
        l1 += d.value.abs();
        e += d.error;
    }
    (v.sum(), l1, e)
}

fn initial_pieces(breaks: &[f64], scale: f64) -> Result<Vec<Piece>> {
    let bad = |value: f64, reason: &'static str| MirrorError::InvalidParameter {
        name: "breaks",
        value,
        reason,
    };
    let n = breaks.len();
    if n < 2 {
        return Err(bad(n as f64, "at least two break points"));
    }
    for (i, &x) in breaks.iter().enumerate() {
        if x.is_nan() {
            return Err(bad(x, "break points must not be NaN"));
        }
        let end_ok = (i == 0 && x == f64::NEG_INFINITY) || (i == n - 1 && x == f64::INFINITY);
        if x.is_infinite() && !end_ok {
            return Err(bad(x, "only the first break may be -inf and the last +inf"));
        }
        if i > 0 && x < breaks[i - 1] {
            return Err(bad(x, "break points must be non-decreasing"));
        }
    }
    if n == 2 && breaks[0] == f64::NEG_INFINITY && breaks[1] == f64::INFINITY {
        return Ok(vec![Piece::Whole(scale)]);
    }
    let width = |i: usize| -> f64 {
        // Width of the finite piece [breaks[i], breaks[i+1]], if there is one.
        match (breaks.get(i), breaks.get(i + 1)) {
            (Some(&l), Some(&r)) if l.is_finite() && r.is_finite() && r > l => r - l,
            _ => scale,
        }
    };
    let mut out = Vec::with_capacity(n - 1);
    for i in 0..n - 1 {
        let (l, r) = (breaks[i], breaks[i + 1]);
        if l == r {
            continue;
        }
        out.push(if l == f64::NEG_INFINITY {
            Piece::Lower(r, width(1))
        } else if r == f64::INFINITY {
            Piece::Upper(l, width(i.saturating_sub(1)))
        } else {
            Piece::Finite(l, r)
        });
    }
    Ok(out)
}

fn split(p: Piece) -> (Piece, Piece) {
    match p {
        Piece::Finite(a, b) => {
            // Midpoint; geometric mean for a piece of one sign spanning more than three
            // decades (a power law across many decades needs splits in the logarithm).
            let m = if a > 0.0 && b > 1e3 * a {
                a.sqrt() * b.sqrt()
            } else if b < 0.0 && a < 1e3 * b {
                -(a.abs().sqrt() * b.abs().sqrt())
            } else {
                0.5 * a + 0.5 * b
            };
            (Piece::Finite(a, m), Piece::Finite(m, b))
        }
        Piece::Upper(a, l) => (Piece::Finite(a, a + l), Piece::Upper(a + l, 2.0 * l)),
        Piece::Lower(b, l) => (Piece::Lower(b - l, 2.0 * l), Piece::Finite(b - l, b)),
        Piece::Whole(l) => (Piece::Lower(0.0, l), Piece::Upper(0.0, l)),
    }
}

/// A node $x = \phi(t)$ with its weight $w = \phi'(t)$ and $\log w$ (computed directly,
/// so it stays finite where $w$ underflows).
#[derive(Debug, Clone, Copy)]
struct Node {
    x: f64,
    w: f64,
    ln_w: f64,
}

/// The node of a piece at $t$, or `None` if it falls on or outside the piece's finite end
/// or outside the range of `f64`.
fn node(p: Piece, t: f64) -> Option<Node> {
    let u = FRAC_PI_2 * t.sinh();
    let dudt = FRAC_PI_2 * t.cosh();
    let (x, w, ln_w) = match p {
        Piece::Finite(a, b) => {
            let r = 0.5 * (b - a);
            // δ = r (1 − tanh|u|) = r·2e/(1+e), e = e^{−2|u|}; φ' = r·u'·4e/(1+e)².
            let e = (-2.0 * u.abs()).exp();
            let delta = r * 2.0 * e / (1.0 + e);
            let w = r * dudt * 4.0 * e / ((1.0 + e) * (1.0 + e));
            let ln_w = r.ln() + dudt.ln() + 4f64.ln() - 2.0 * u.abs() - 2.0 * e.ln_1p();
            let x = if t < 0.0 { a + delta } else { b - delta };
            if !(x > a && x < b) {
                return None;
            }
            (x, w, ln_w)
        }
        Piece::Upper(a, l) => {
            let g = l * u.exp();
            let x = a + g;
            if x <= a {
                return None;
            }
            (x, g * dudt, l.ln() + u + dudt.ln())
        }
        Piece::Lower(b, l) => {
            let g = l * u.exp();
            let x = b - g;
            if x >= b {
                return None;
            }
            (x, g * dudt, l.ln() + u + dudt.ln())
        }
        Piece::Whole(l) => {
            // log cosh u = |u| + log(1 + e^{−2|u|}) − log 2.
            let ln_cosh = u.abs() + (-2.0 * u.abs()).exp().ln_1p() - std::f64::consts::LN_2;
            (
                l * u.sinh(),
                l * u.cosh() * dudt,
                l.ln() + ln_cosh + dudt.ln(),
            )
        }
    };
    (x.is_finite() && w.is_finite() && ln_w.is_finite()).then_some(Node { x, w, ln_w })
}

/// The integrand: $f$ itself, or $\log f$ (then the term $e^{\log f(x) + \log w}$ is
/// formed without $f$, which may overflow where $wf$ does not).
enum Integrand<'a> {
    Plain(&'a mut dyn FnMut(f64) -> f64),
    Log(&'a mut dyn FnMut(f64) -> f64),
}

impl Integrand<'_> {
    /// The term $w f(x)$ of a node, `None` if the node is not evaluated (a weight that
    /// underflowed, for a plain integrand).
    fn term(&mut self, nd: Node, evaluations: &mut usize) -> Result<Option<f64>> {
        let term = match self {
            Integrand::Plain(f) => {
                if nd.w == 0.0 {
                    return Ok(None);
                }
                let fx = f(nd.x);
                *evaluations += 1;
                if !fx.is_finite() {
                    return Err(MirrorError::NonFinite {
                        what: "quadrature integrand (NaN or infinite at a node)",
                    });
                }
                nd.w * fx
            }
            Integrand::Log(log_f) => {
                let l = log_f(nd.x);
                *evaluations += 1;
                if l.is_nan() || l == f64::INFINITY {
                    return Err(MirrorError::NonFinite {
                        what: "quadrature log-integrand (NaN or +infinity at a node)",
                    });
                }
                (l + nd.ln_w).exp()
            }
        };
        if !term.is_finite() {
            return Err(MirrorError::NonFinite {
                what: "quadrature term (weight times integrand overflows)",
            });
        }
        Ok(Some(term))
    }
}

/// What one piece gave: its value, its error estimate, and whether that estimate is
/// dominated by the truncation at the ends of the $t$-range (which no split removes).
struct PieceResult {
    value: f64,
    error: f64,
    truncation_bound: bool,
}

/// The terms $\phi'(t_k) f(\phi(t_k))$ of one piece so far, at $t_k = k\,2^{-\text{max\\_level}}$.
#[derive(Default)]
struct Terms {
    /// Nonzero terms by $k$.
    terms: HashMap<i64, f64>,
    /// Outermost $k$ with a nonzero term, for $t < 0$ and $t > 0$.
    outer: [i64; 2],
    /// Their sum.
    sum: Neumaier,
    /// The sum of their absolute values.
    l1: f64,
}

impl Terms {
    fn add(&mut self, k: i64, term: f64) {
        if term == 0.0 {
            return;
        }
        self.sum.add(term);
        self.l1 += term.abs();
        self.terms.insert(k, term);
        let side = usize::from(k > 0);
        if k.abs() > self.outer[side].abs() {
            self.outer[side] = k;
        }
    }
}

/// Double-exponential levels on one piece until its share of the tolerance is met or
/// `max_level` is reached.
fn run_piece(
    f: &mut Integrand<'_>,
    p: Piece,
    share: f64,
    config: &QuadratureConfig,
    evaluations: &mut usize,
) -> Result<PieceResult> {
    let fine = f64::from(1u32 << config.max_level);
    let mut st = Terms::default();
    let mut eval = |k: i64, st: &mut Terms| -> Result<()> {
        if let Some(nd) = node(p, k as f64 / fine) {
            if let Some(term) = f.term(nd, evaluations)? {
                st.add(k, term);
            }
        }
        Ok(())
    };
    let kmax = (T_MAX * fine).floor() as i64;
    // Level 0: h = 1.
    let step0 = 1i64 << config.max_level;
    let mut k = -(kmax / step0) * step0;
    while k <= kmax {
        eval(k, &mut st)?;
        k += step0;
    }
    let mut prev = st.sum.sum();
    let mut out = PieceResult {
        value: prev,
        error: f64::INFINITY,
        truncation_bound: false,
    };
    for level in 1..=config.max_level {
        let step = 1i64 << (config.max_level - level);
        let h = step as f64 / fine;
        // New nodes: odd multiples of h.
        let mut k = step;
        while k <= kmax {
            eval(k, &mut st)?;
            eval(-k, &mut st)?;
            k += 2 * step;
        }
        let s = h * st.sum.sum();
        // What lies beyond the outermost nonzero terms of each side, extrapolated
        // geometrically from a reference term 1/16 unit of t inside the outermost one and
        // the term a further 1/4 unit inwards. (Near a finite end the outermost nodes are
        // rounded onto the representable numbers next to it, which distorts their terms;
        // 1/16 unit inwards the distance to the end is already ten times larger.)
        let mut tail = 0.0;
        for &k_out in &st.outer {
            let back = |k: i64, by: f64| k - k.signum() * k.abs().min(by as i64);
            let k_ref = back(k_out, fine / 16.0);
            let k_in = back(k_ref, fine / 4.0);
            if k_ref == k_in {
                continue;
            }
            let term = |k: i64| st.terms.get(&k).map_or(0.0, |v: &f64| v.abs());
            let (t_ref, t_in) = (term(k_ref), term(k_in));
            let steps = (k_ref - k_in).abs() as f64 / step as f64;
            let rho = if t_in > 0.0 {
                (t_ref / t_in).powf(1.0 / steps)
            } else {
                1.0
            };
            tail += if rho < 1.0 {
                h * t_ref * rho / (1.0 - rho)
            } else {
                f64::INFINITY
            };
        }
        let change = (s - prev).abs();
        let rounding = 8.0 * f64::EPSILON * h * st.l1;
        out = PieceResult {
            value: s,
            error: change + tail + rounding,
            truncation_bound: tail > change,
        };
        let target = 0.5 * (config.abs_tol * share).max(config.rel_tol * s.abs());
        if level >= MIN_LEVEL && out.error <= target {
            break;
        }
        prev = s;
    }
    Ok(out)
}

/// Neumaier's compensated summation.
#[derive(Debug, Default, Clone, Copy)]
struct Neumaier {
    sum: f64,
    comp: f64,
}

impl Neumaier {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        self.comp += if self.sum.abs() >= x.abs() {
            (self.sum - t) + x
        } else {
            (x - t) + self.sum
        };
        self.sum = t;
    }
    fn sum(&self) -> f64 {
        self.sum + self.comp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn cfg() -> QuadratureConfig {
        QuadratureConfig::default()
    }

    /// The integral converged, is within `rel` of `exact`, and its error estimate covers
    /// the actual error up to $10^{-13}$ relative: the rounding of the integrand itself
    /// (an exponential of an argument of size $m$ is off by about $m$ units in the last
    /// place), which no quadrature sees, and the slack of a difference-of-levels estimate
    /// where the integrand is not smooth (a kink).
    fn assert_close(r: &Integral, exact: f64, rel: f64, what: &str) {
        let actual = (r.value - exact).abs();
        assert!(r.converged, "{what}: not converged: {r:?}");
        assert!(
            actual <= rel * exact.abs(),
            "{what}: {} vs {exact} ({r:?})",
            r.value
        );
        assert!(
            actual <= r.error + 1e-13 * exact.abs(),
            "{what}: error estimate {} below the actual error {actual}",
            r.error
        );
    }

    #[test]
    fn gamma_integrals_with_endpoint_singularities() {
        // ∫₀^∞ x^{k−1} e^{−x} dx = Γ(k); k < 1 is singular at 0. Exact values: Γ(1/2) = √π,
        // Γ(5/2) = 3√π/4, Γ(n) = (n−1)!; for k = 0.1, 0.3, 0.6 the values of CPython's
        // `math.gamma` (independent of this crate and of statrs).
        let sqrt_pi = PI.sqrt();
        let factorial = |n: u32| (1..=n).map(f64::from).product::<f64>();
        for (k, exact) in [
            (0.1, 9.513_507_698_668_732),
            (0.3, 2.991_568_987_687_591),
            (0.6, 1.489_192_248_812_816_9),
            (0.5, sqrt_pi),
            (1.0, 1.0),
            (2.5, 0.75 * sqrt_pi),
            (3.0, 2.0),
            (30.0, factorial(29)),
        ] {
            let r = integrate(
                |x| ((k - 1.0) * x.ln() - x).exp(),
                0.0,
                f64::INFINITY,
                &cfg(),
            )
            .unwrap();
            assert_close(&r, exact, 1e-12, &format!("Gamma({k})"));
        }
        // With a rate: ∫₀^∞ x^{-1/2} e^{−λx} dx = √(π/λ), λ from 1e-3 to 1e3, all with the
        // default scale L = 1.
        for lambda in [1e-3, 0.1, 1.0, 10.0, 1e3] {
            let r = integrate(
                |x| x.powf(-0.5) * (-lambda * x).exp(),
                0.0,
                f64::INFINITY,
                &cfg(),
            )
            .unwrap();
            let exact = (PI / lambda).sqrt();
            assert_close(&r, exact, 1e-11, &format!("rate {lambda}"));
        }
    }

    #[test]
    fn log_integrand_survives_where_the_integrand_overflows() {
        // x^{−0.97} e^{−x} overflows f64 at the tanh-sinh nodes next to 0 on [0, 1]
        // (x ~ 1e-320), its terms w·f do not: ∫₀^∞ = Γ(0.03) (CPython's math.gamma). What
        // lies below the smallest node, ≈ (5e-324)^{0.03}/0.03 ≈ 7e-9, is inside the
        // error estimate.
        let g = |x: f64| -0.97 * x.ln() - x;
        let breaks = [0.0, 1.0, f64::INFINITY];
        let e = integrate_with_breaks(|x| g(x).exp(), &breaks, &cfg()).unwrap_err();
        assert!(matches!(e, MirrorError::NonFinite { .. }), "{e:?}");
        let loose = QuadratureConfig {
            rel_tol: 1e-9,
            ..cfg()
        };
        let r = integrate_exp_with_breaks(g, &breaks, &loose).unwrap();
        assert_close(&r, 32.784_998_351_794_14, 1e-9, "Gamma(0.03) from its log");
        // On a tame integrand the log form agrees with the plain one, and −∞ is a zero.
        let r = integrate_exp_with_breaks(
            |x: f64| if x < 1.0 { f64::NEG_INFINITY } else { -x },
            &[0.0, 1.0, f64::INFINITY],
            &cfg(),
        )
        .unwrap();
        assert_close(&r, (-1f64).exp(), 1e-13, "e^{-x} on [1, ∞) via log");
        for bad in [f64::NAN, f64::INFINITY] {
            let e = integrate_exp_with_breaks(|_| bad, &[0.0, 1.0], &cfg()).unwrap_err();
            assert!(matches!(e, MirrorError::NonFinite { .. }), "{bad}: {e:?}");
        }
    }

    #[test]
    fn beta_like_endpoint_singularities() {
        // ∫₀¹ x^{a−1} (1−x)^{b−1} dx = B(a, b) = Γ(a)Γ(b)/Γ(a+b): B(a, 1) = 1/a,
        // B(a, 2) = 1/(a(a+1)), B(2, 3) = 1/12, B(1/2, 1/2) = π, B(1/2, 3/2) = π/2. At 1 the
        // nodes stop one unit in the last place short of the end, so the right-end
        // singularity is kept mild (b − 1 ≥ −1/2: what is lost, ≤ (1.1e-16)^{1/2}/(1/2) ≈
        // 2e-8, is inside the estimate, and the tolerance is set to match).
        let loose = QuadratureConfig {
            rel_tol: 1e-7,
            ..cfg()
        };
        for (a, b, exact, config) in [
            (0.6, 1.0, 1.0 / 0.6, cfg()),
            (0.1, 2.0, 1.0 / (0.1 * 1.1), cfg()),
            (2.0, 3.0, 1.0 / 12.0, cfg()),
            (1.0, 1.0, 1.0, cfg()),
            (0.5, 0.5, PI, loose.clone()),
            (0.5, 1.5, PI / 2.0, cfg()),
        ] {
            let r = integrate(
                |x| x.powf(a - 1.0) * (1.0 - x).powf(b - 1.0),
                0.0,
                1.0,
                &config,
            )
            .unwrap();
            let rel = (config.rel_tol * 10.0).max(1e-11);
            assert_close(&r, exact, rel, &format!("Beta({a}, {b})"));
        }
        // A logarithmic singularity: ∫₀¹ ln x dx = −1.
        let r = integrate(|x: f64| x.ln(), 0.0, 1.0, &cfg()).unwrap();
        assert_close(&r, -1.0, 1e-12, "ln x");
    }

    #[test]
    fn singular_end_beyond_the_reach_of_f64_is_reported_not_hidden() {
        // (1−x)^{−0.9} near 1: the mass closer to 1 than one ulp, (1.1e-16)^{0.1}/0.1 ≈ 0.25,
        // cannot be reached; the estimate must say so (and cover the actual error).
        let r = integrate(|x: f64| (1.0 - x).powf(-0.9), 0.0, 1.0, &cfg()).unwrap();
        assert!(!r.converged, "{r:?}");
        assert!((r.value - 10.0).abs() <= r.error, "{r:?}");
    }

    #[test]
    fn gaussian_tails_and_the_whole_line() {
        let phi = |x: f64| (-0.5 * x * x).exp();
        let r = integrate(phi, f64::NEG_INFINITY, f64::INFINITY, &cfg()).unwrap();
        assert_close(&r, (2.0 * PI).sqrt(), 1e-13, "whole line");
        // ∫_c^∞ e^{−x²/2} dx = √(π/2) erfc(c/√2), far into the tail too. Reference values
        // from CPython's `math.erfc` (the C library's, correctly rounded to within an ulp);
        // statrs's erfc is off by up to 4e-11 relative at these points, too coarse here.
        for (c, exact) in [
            (-2.0, 2.449_602_150_638_108_3),
            (0.0, 1.253_314_137_315_500_1),
            (3.0, 3.383_692_573_952_73e-3),
            (8.0, 1.559_363_567_083_444_7e-15),
        ] {
            let r = integrate(phi, c, f64::INFINITY, &cfg()).unwrap();
            assert_close(&r, exact, 1e-11, &format!("upper tail from {c}"));
            let r = integrate(phi, f64::NEG_INFINITY, -c, &cfg()).unwrap();
            assert_close(&r, exact, 1e-11, &format!("lower tail to {}", -c));
        }
        // A narrow Gaussian away from the origin, found with breaks where its mass is
        // (relative tolerance only, as the integral is 0.025; 1e-11, as the ends of the
        // pieces near 50 are resolved only to ulp(50) = 7e-15, 5e-13 of their width).
        let (m, s) = (50.0, 1e-2);
        let g = |x: f64| (-0.5 * ((x - m) / s).powi(2)).exp();
        let breaks = [
            f64::NEG_INFINITY,
            m - 3.0 * s,
            m,
            m + 3.0 * s,
            f64::INFINITY,
        ];
        let rel_only = QuadratureConfig {
            abs_tol: 0.0,
            rel_tol: 1e-11,
            ..cfg()
        };
        let r = integrate_with_breaks(g, &breaks, &rel_only).unwrap();
        assert_close(&r, s * (2.0 * PI).sqrt(), 1e-11, "narrow Gaussian");
    }

    #[test]
    fn exponential_densities_and_reversed_bounds() {
        for lambda in [1e-4, 1.0, 1e4] {
            let r =
                integrate(|x| lambda * (-lambda * x).exp(), 0.0, f64::INFINITY, &cfg()).unwrap();
            assert_close(&r, 1.0, 1e-12, &format!("Exp({lambda})"));
            // The same density over [1/λ, ∞): e^{−1}.
            let r = integrate(
                |x| lambda * (-lambda * x).exp(),
                1.0 / lambda,
                f64::INFINITY,
                &cfg(),
            )
            .unwrap();
            assert_close(&r, (-1f64).exp(), 1e-12, &format!("Exp({lambda}) tail"));
        }
        // ∫₁⁰ = −∫₀¹; an empty range is 0.
        let r = integrate(|x: f64| x * x, 1.0, 0.0, &cfg()).unwrap();
        assert!((r.value + 1.0 / 3.0).abs() < 1e-15, "{r:?}");
        let r = integrate(|x: f64| x * x, 2.0, 2.0, &cfg()).unwrap();
        assert_eq!((r.value, r.evaluations), (0.0, 0));
    }

    #[test]
    fn interior_kink_is_resolved_by_splitting() {
        // ∫_{−1}^{2} e^{−|x−0.3|} dx = (1 − e^{−1.3}) + (1 − e^{−1.7}).
        let exact = 2.0 - (-1.3f64).exp() - (-1.7f64).exp();
        let r = integrate(|x: f64| (-(x - 0.3).abs()).exp(), -1.0, 2.0, &cfg()).unwrap();
        assert_close(&r, exact, 1e-11, "kink");
        assert!(r.pieces > 1, "{r:?}");
        // With a break at the kink one level of pieces suffices.
        let r = integrate_with_breaks(|x: f64| (-(x - 0.3).abs()).exp(), &[-1.0, 0.3, 2.0], &cfg())
            .unwrap();
        assert_close(&r, exact, 1e-13, "kink at a break");
        assert_eq!(r.pieces, 2);
    }

    #[test]
    fn non_integrable_and_bad_inputs() {
        // 1/(x−1) on (1, 2]: finite at every node (they stop an ulp from 1), but the terms
        // do not decay towards the end: never converges, whatever the splitting.
        let r = integrate(|x: f64| 1.0 / (x - 1.0), 1.0, 2.0, &cfg()).unwrap();
        assert!(!r.converged && r.value > 10.0, "{r:?}");
        // 1/x overflows at the nodes nearest 0: a typed error, not a number.
        let e = integrate(|x: f64| 1.0 / x, 0.0, 1.0, &cfg()).unwrap_err();
        assert!(matches!(e, MirrorError::NonFinite { .. }), "{e:?}");
        let e = integrate(|_| f64::NAN, 0.0, 1.0, &cfg()).unwrap_err();
        assert!(matches!(e, MirrorError::NonFinite { .. }), "{e:?}");
        // The integrand is never called at a finite end.
        let r = integrate(
            |x: f64| if x == 0.0 || x == 1.0 { f64::NAN } else { 1.0 },
            0.0,
            1.0,
            &cfg(),
        )
        .unwrap();
        assert!((r.value - 1.0).abs() < 1e-15);
        let invalid = |e: MirrorError| matches!(e, MirrorError::InvalidParameter { .. });
        assert!(invalid(
            integrate(|x| x, f64::NAN, 1.0, &cfg()).unwrap_err()
        ));
        assert!(invalid(
            integrate(|x| x, f64::INFINITY, f64::INFINITY, &cfg()).unwrap_err()
        ));
        for bad in [
            QuadratureConfig {
                abs_tol: -1.0,
                ..cfg()
            },
            QuadratureConfig {
                abs_tol: 0.0,
                rel_tol: 0.0,
                ..cfg()
            },
            QuadratureConfig {
                scale: 0.0,
                ..cfg()
            },
            QuadratureConfig {
                max_level: 2,
                ..cfg()
            },
            QuadratureConfig {
                max_pieces: 0,
                ..cfg()
            },
        ] {
            assert!(
                invalid(integrate(|x| x, 0.0, 1.0, &bad).unwrap_err()),
                "{bad:?}"
            );
        }
        for breaks in [vec![0.0], vec![1.0, 0.0], vec![0.0, f64::INFINITY, 1.0]] {
            assert!(invalid(
                integrate_with_breaks(|x| x, &breaks, &cfg()).unwrap_err()
            ));
        }
    }
}
