//! Numerically careful kernels shared by the whole workspace: log-sum-exp with $-\infty$
//! handled, softmax (of one vector, or of every row of a block at once with the block's
//! exponentials vectorised, [`softmax_rows`]), sums of logarithms with one logarithm per
//! block, $\log(1 + e^x)$ and the logistic function; and the polygamma functions a
//! family with a Gamma or Beta factor needs for $\nabla A$ and $\nabla^2 A$: the digamma
//! function $\psi = (\log\Gamma)'$ ([`digamma`]) and the trigamma function $\psi_1 = \psi'$
//! ([`trigamma`]).

/// $\log \sum_j e^{v_j}$, computed as $m + \log\sum_j e^{v_j - m}$ with $m = \max_j v_j$.
///
/// Returns $-\infty$ when every entry is $-\infty$ (an empty sum), and for an empty slice;
/// returns $+\infty$ if any entry is $+\infty$; NaN propagates (callers check finiteness).
pub fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m.is_infinite() {
        // An all −∞ sum is log 0; a +∞ term dominates. NaN falls through below.
        if v.iter().any(|x| x.is_nan()) {
            return f64::NAN;
        }
        return m;
    }
    let s: f64 = v.iter().map(|&x| (x - m).exp()).sum();
    m + s.ln()
}

/// Softmax in place: $v_j \leftarrow e^{v_j - \mathrm{LSE}(v)}$; returns $\mathrm{LSE}(v)$.
///
/// $\mathrm{LSE}(v) = m + \log z$ with $(m, z)$ from [`softmax_parts`], which does the work
/// (see there for the two-entry path and the handling of $\pm\infty$ and NaN).
#[inline]
pub fn softmax_in_place(v: &mut [f64]) -> f64 {
    let (m, z) = softmax_parts(v);
    m + z.ln()
}

/// Softmax in place, returning the log-sum-exp in two parts $(m, z)$ with
/// $\mathrm{LSE}(v) = m + \log z$: $m = \max_j v_j$ and $z = \sum_j e^{v_j - m} \in [1, n]$.
/// No logarithm is taken, so a caller summing many LSEs can take one logarithm per block
/// of rows ([`SumOfLogs`]) instead of one per row.
///
/// Computed as $e_j = e^{v_j - m}$, $v_j \leftarrow e_j / z$: one exponential per entry —
/// the exponentials of the log-sum-exp are the probabilities' numerators (hot in every
/// E-step). Two entries take one exponential and no branch on which entry is larger (it is
/// unpredictable row to row): $e = e^{-|v_1 - v_2|}$, $z = 1 + e$, probabilities $1/z$
/// (the larger entry) and $e/z$.
///
/// Entries equal to $-\infty$ get probability exactly 0. If every entry is $-\infty$ the
/// slice is left as zeros and $(-\infty, 1)$ is returned (the caller decides what that
/// means); a $+\infty$ or NaN entry gives NaN probabilities and returns $(+\infty, 1)$ or
/// $(\mathrm{NaN}, 1)$ (callers check $m$'s finiteness; $z$ is then 1).
#[inline]
pub fn softmax_parts(v: &mut [f64]) -> (f64, f64) {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        let lse = log_sum_exp(v);
        if lse == f64::NEG_INFINITY {
            v.iter_mut().for_each(|x| *x = 0.0);
        } else {
            v.iter_mut().for_each(|x| *x = f64::NAN);
        }
        return (lse, 1.0);
    }
    if let [a, b] = v {
        let e = (-(*a - *b).abs()).exp();
        let z = 1.0 + e;
        if z.is_nan() {
            // A NaN entry (`f64::max` skipped it when finding m).
            v.iter_mut().for_each(|x| *x = f64::NAN);
            return (f64::NAN, 1.0);
        }
        let (hi, lo) = (1.0 / z, e / z);
        let a_max = *a >= *b;
        *a = if a_max { hi } else { lo };
        *b = if a_max { lo } else { hi };
        return (m, z);
    }
    let mut z = 0.0;
    for x in v.iter_mut() {
        *x = (*x - m).exp();
        z += *x;
    }
    if z.is_nan() {
        v.iter_mut().for_each(|x| *x = f64::NAN);
        return (f64::NAN, 1.0);
    }
    let inv = 1.0 / z;
    for x in v.iter_mut() {
        *x *= inv;
    }
    (m, z)
}

/// [`softmax_parts`] for a vector whose **last entry is the reference 0** (a softmax gate
/// or a multinomial logit with a reference class): when every entry is at most
/// [`UNSHIFTED_MAX`] the exponentials are taken unshifted, $e_j = e^{v_j}$ with $e_{K-1} = 1$,
/// so $K-1$ exponentials suffice (the max-shifted form spends one on $e^0$), and
/// $(m, z) = (0, 1 + \sum_{j<K-1} e^{v_j})$. Each probability $e_j/z$ has the same relative
/// accuracy as in the shifted form: $z \ge 1$, and an $e^{v_j}$ that underflows is a
/// probability below $e^{-745}$. Larger entries, $\pm\infty$ and NaN take
/// [`softmax_parts`], and so do two-entry vectors (its one-exponential path). `v` must end with 0 (checked in debug builds).
#[inline]
pub fn softmax_parts_ref0(v: &mut [f64]) -> (f64, f64) {
    debug_assert_eq!(v.last(), Some(&0.0));
    let Some((_, free)) = v.split_last_mut() else {
        return (f64::NEG_INFINITY, 1.0);
    };
    // NaN fails `<=` and takes the general path.
    if free.len() < 2 || !free.iter().all(|x| *x <= UNSHIFTED_MAX) {
        return softmax_parts(v);
    }
    let mut z = 1.0;
    for x in free.iter_mut() {
        *x = x.exp();
        z += *x;
    }
    // (no NaN here: NaN entries took the general path)
    let inv = 1.0 / z;
    for x in v.iter_mut() {
        *x *= inv;
    }
    // The reference entry: e^0 / z.
    if let Some(last) = v.last_mut() {
        *last = inv;
    }
    (0.0, z)
}

/// Largest entry [`softmax_parts_ref0`] exponentiates unshifted: $e^{700} \approx 10^{304}$
/// leaves room for a sum of many such terms below `f64::MAX`.
pub const UNSHIFTED_MAX: f64 = 700.0;

/// [`softmax_parts`] for every row of a column-major $m\times K$ block at once: row $i$
/// (entries `block[c * m + i]`, $c < K$) becomes its softmax, and `shift[i]`, `sum[i]`
/// get its $(m_i, z_i)$, with the same special values as [`softmax_parts`] (a row with a
/// NaN entry or a non-finite maximum gets $m_i$ NaN or $\pm\infty$; callers check).
///
/// The same formulas as [`softmax_parts`], rearranged so that the exponentials of the
/// whole block are one call of [`exp_in_place`](crate::batch_exp::exp_in_place) (the
/// E-step's responsibilities: this is where its exponentials are). $K = 2$ keeps its one
/// exponential per row, $e^{-|v_1 - v_2|}$. `shift` and `sum` have length $m$, `block`
/// length $mK$.
///
/// An empty block ($m = 0$) is left alone.
///
/// # Panics
/// If the lengths disagree (a caller's bug, not a data error).
pub fn softmax_rows(block: &mut [f64], m: usize, shift: &mut [f64], sum: &mut [f64]) {
    assert!(shift.len() == m && sum.len() == m);
    if m == 0 {
        assert!(block.is_empty());
        return;
    }
    assert!(block.len().is_multiple_of(m));
    let k = block.len() / m;
    // Row maxima (f64::max skips NaN: NaN entries are found separately).
    shift.copy_from_slice(&block[..m]);
    let mut bad = false;
    for col in block.chunks_exact(m) {
        for (mx, &v) in shift.iter_mut().zip(col) {
            *mx = mx.max(v);
            bad |= v.is_nan();
        }
    }
    bad |= shift.iter().any(|mx| !mx.is_finite());
    // Rows with special values take the scalar path, on a copy taken before the block is
    // overwritten (an error path: allocating here is fine).
    let special: Vec<(usize, Vec<f64>, (f64, f64))> = if bad {
        (0..m)
            .filter_map(|i| {
                let mut row: Vec<f64> = (0..k).map(|c| block[c * m + i]).collect();
                let bad_row = !shift[i].is_finite() || row.iter().any(|v| v.is_nan());
                bad_row.then(|| {
                    let parts = softmax_parts(&mut row);
                    (i, row, parts)
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    if k == 2 {
        let (a, b) = block.split_at_mut(m);
        // a ← −|a − b|, b ← whether a was the larger; then one exponential per row.
        for (x, y) in a.iter_mut().zip(b.iter_mut()) {
            let a_max = *x >= *y;
            *x = -(*x - *y).abs();
            *y = if a_max { 1.0 } else { 0.0 };
        }
        crate::batch_exp::exp_in_place(a);
        for ((x, y), z) in a.iter_mut().zip(b.iter_mut()).zip(sum.iter_mut()) {
            let e = *x;
            *z = 1.0 + e;
            let (hi, lo) = (1.0 / *z, e / *z);
            let a_max = *y == 1.0;
            *x = if a_max { hi } else { lo };
            *y = if a_max { lo } else { hi };
        }
    } else {
        for col in block.chunks_exact_mut(m) {
            for (v, mx) in col.iter_mut().zip(shift.iter()) {
                *v -= mx;
            }
        }
        crate::batch_exp::exp_in_place(block);
        sum.fill(0.0);
        for col in block.chunks_exact(m) {
            for (z, e) in sum.iter_mut().zip(col) {
                *z += e;
            }
        }
        for col in block.chunks_exact_mut(m) {
            for (v, z) in col.iter_mut().zip(sum.iter()) {
                *v *= 1.0 / z;
            }
        }
    }
    for (i, row, (mx, z)) in special {
        for (c, v) in row.into_iter().enumerate() {
            block[c * m + i] = v;
        }
        shift[i] = mx;
        sum[i] = z;
    }
}

/// $\sum_i \log z_i$ over positive factors $z_i$ with one logarithm per block of factors:
/// the factors are multiplied into a running product $P$, and $\log P$ is added to the
/// total (and $P$ reset to 1) only when $P$ leaves $[2^{-512}, 2^{512}]$. A factor outside
/// $[2^{-256}, 2^{256}]$ is added as its own logarithm, so $P$ never overflows or
/// underflows.
///
/// **Why.** An E-step sums one log-sum-exp per row, $m_i + \log z_i$ with
/// $z_i \in [1, K]$ ([`softmax_parts`]); the logarithm is then the most expensive
/// operation per row. Here it is taken about once per $512/\log_2 K$ rows.
///
/// **Accuracy.** Each product rounds with relative error at most $u = 2^{-53}$, so after
/// $m$ factors $\log P$ is off by at most about $m u$ in absolute terms: the same order as
/// summing $m$ correctly rounded logarithms of moderate size. Callers keep $m$ bounded by
/// using one accumulator per row chunk.
///
/// **Special values.** A zero factor makes the sum $-\infty$, a $+\infty$ factor
/// $+\infty$, a NaN factor (or $0 \cdot \infty$) NaN, as $\sum_i\log z_i$ would; a
/// negative factor gives NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SumOfLogs {
    /// Logarithms of the flushed blocks (and of out-of-range factors).
    logs: f64,
    /// Product of the factors since the last flush.
    prod: f64,
}

impl SumOfLogs {
    /// Flush bound on the running product ($2^{512}$).
    const PROD_MAX: f64 = 1.340_780_792_994_259_7e154;
    /// Largest factor multiplied in ($2^{256}$); larger or smaller ones are logged.
    const FACTOR_MAX: f64 = 1.157_920_892_373_162e77;

    /// The empty sum (0).
    pub const fn new() -> Self {
        SumOfLogs {
            logs: 0.0,
            prod: 1.0,
        }
    }

    /// Adds $\log z$.
    #[inline]
    pub fn add_log(&mut self, z: f64) {
        if (1.0 / Self::FACTOR_MAX..=Self::FACTOR_MAX).contains(&z) {
            self.prod *= z;
            if !(1.0 / Self::PROD_MAX..=Self::PROD_MAX).contains(&self.prod) {
                self.logs += self.prod.ln();
                self.prod = 1.0;
            }
        } else {
            self.logs += z.ln();
        }
    }

    /// The sum $\sum_i\log z_i$ so far.
    pub fn value(&self) -> f64 {
        self.logs + self.prod.ln()
    }
}

impl Default for SumOfLogs {
    fn default() -> Self {
        SumOfLogs::new()
    }
}

/// $\log(1 + e^x)$ without overflow or loss of precision for large $|x|$.
pub fn log1p_exp(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// The logistic function $\sigma(x) = 1 / (1 + e^{-x})$, stable for large $|x|$.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// $\log\Gamma(x)$ for $x > 0$, the log-partition ingredient of Gamma- and Beta-type
/// families (whose $\nabla A$ and $\nabla^2 A$ are then [`digamma`] and [`trigamma`]).
///
/// Delegates to [`statrs::function::gamma::ln_gamma`] (Lanczos approximation, within
/// about $10^{-15}$); the tests check it against $\log\Gamma(1) = \log\Gamma(2) = 0$,
/// $\log\Gamma(\tfrac12) = \tfrac12\log\pi$ and the recurrence
/// $\log\Gamma(x+1) = \log\Gamma(x) + \log x$. NaN for NaN; $+\infty$ at $0$ and $+\infty$.
pub fn ln_gamma(x: f64) -> f64 {
    statrs::function::gamma::ln_gamma(x)
}

/// The digamma function $\psi(x) = \frac{d}{dx}\log\Gamma(x) = \Gamma'(x)/\Gamma(x)$.
///
/// Delegates to [`statrs::function::gamma::digamma`] (recurrence
/// $\psi(x) = \psi(x+1) - 1/x$ up to $x \ge 12$, then the asymptotic series
/// $\psi(x) \sim \log x - \frac1{2x} - \sum_{k\ge1} \frac{B_{2k}}{2k\,x^{2k}}$, and the
/// reflection $\psi(1-x) - \psi(x) = \pi\cot(\pi x)$ for $x < 0$); the tests hold it to
/// $10^{-14}$ relative at closed-form points and check it against finite differences of
/// $\log\Gamma$, so a family's $\nabla A$ may rely on it.
///
/// **Special values** (statrs's convention): $-\infty$ at the poles
/// $x \in \{0, -1, -2, \dots\}$ (the two one-sided limits there are $\mp\infty$), NaN for
/// NaN and $-\infty$, $+\infty$ at $+\infty$. Never panics.
pub fn digamma(x: f64) -> f64 {
    statrs::function::gamma::digamma(x)
}

/// Threshold above which [`trigamma`] uses its asymptotic series: at $x \ge 10$ the first
/// omitted term, $B_{20}/x^{21} \le 5.3\cdot10^{-19}$, is far below the rounding of the
/// result ($\psi_1(x) \ge 1/x$); at $x = 6$ the series would bottom out near $10^{-15}$
/// relative only after 18 terms.
const TRIGAMMA_ASYMPTOTIC: f64 = 10.0;

/// Bernoulli numbers $B_2, B_4, \dots, B_{18}$ of the asymptotic series of [`trigamma`].
const BERNOULLI_EVEN: [f64; 9] = [
    1.0 / 6.0,
    -1.0 / 30.0,
    1.0 / 42.0,
    -1.0 / 30.0,
    5.0 / 66.0,
    -691.0 / 2730.0,
    7.0 / 6.0,
    -3617.0 / 510.0,
    43867.0 / 798.0,
];

/// The trigamma function $\psi_1(x) = \psi'(x) = \frac{d^2}{dx^2}\log\Gamma(x)
/// = \sum_{k\ge0} (x+k)^{-2}$ (statrs has no trigamma).
///
/// * $x \ge 10$: the asymptotic series
///   $\psi_1(x) \sim \frac1x + \frac1{2x^2} + \sum_{k=1}^{9} \frac{B_{2k}}{x^{2k+1}}$
///   ($B_{2k}$ the Bernoulli numbers), whose error is below the first omitted term,
///   $|B_{20}|/x^{21} \le 5.3\cdot10^{-19}$;
/// * $0 < x < 10$: the recurrence $\psi_1(x) = \psi_1(x+1) + 1/x^2$ up to $x \ge 10$;
/// * $x < 0$, not an integer: the reflection formula
///   $\psi_1(x) = \dfrac{\pi^2}{\sin^2(\pi x)} - \psi_1(1 - x)$, with $\sin^2(\pi x)$ taken
///   at $x - \operatorname{round}(x)$ (exact in floating point), so the period is
///   removed without rounding.
///
/// **Special values**: $+\infty$ at the poles $x \in \{0, -1, -2, \dots\}$ (where
/// $\psi_1 \to +\infty$ from both sides) and for $0 < x < 10^{-154}$, where $1/x^2$
/// overflows; $0$ at $+\infty$; NaN for NaN and $-\infty$. Never panics.
///
/// Accuracy: a few units in the last place for $x > 0$ (the tests hold it to
/// $10^{-13}$ relative at closed-form points and check it against finite differences
/// of [`digamma`] over $[10^{-3}, 10^3]$).
pub fn trigamma(x: f64) -> f64 {
    if x.is_nan() || x == f64::NEG_INFINITY {
        return f64::NAN;
    }
    if x == f64::INFINITY {
        return 0.0;
    }
    if x <= 0.0 {
        let frac = x - x.round();
        if frac == 0.0 {
            return f64::INFINITY;
        }
        let s = (std::f64::consts::PI * frac).sin();
        return std::f64::consts::PI * std::f64::consts::PI / (s * s) - trigamma(1.0 - x);
    }
    let mut z = x;
    let mut recur = 0.0;
    while z < TRIGAMMA_ASYMPTOTIC {
        recur += 1.0 / (z * z);
        z += 1.0;
    }
    let inv = 1.0 / z;
    let inv2 = inv * inv;
    // Σ_k B_2k / z^{2k+1} = inv · Σ_k B_2k inv2^k, by Horner from the smallest term.
    let mut series = 0.0;
    for b in BERNOULLI_EVEN.iter().rev() {
        series = (series + b) * inv2;
    }
    let asym = inv + 0.5 * inv2 + inv * series;
    recur + asym
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Euler–Mascheroni constant γ (OEIS A001620).
    const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
    /// Catalan's constant G (OEIS A006752).
    const CATALAN: f64 = 0.915_965_594_177_219;

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs()
    }

    #[test]
    fn ln_gamma_closed_forms_and_recurrence() {
        // Γ(1) = Γ(2) = 1 (statrs's Lanczos sum is within a few ulps of it).
        assert!(ln_gamma(1.0).abs() < 1e-15 && ln_gamma(2.0).abs() < 1e-15);
        let half = 0.5 * std::f64::consts::PI.ln();
        assert!((ln_gamma(0.5) - half).abs() < 1e-14 * half);
        for &x in &[1e-3, 0.3, 1.7, 4.0, 25.5, 300.0] {
            let lhs = ln_gamma(x + 1.0);
            let rhs = ln_gamma(x) + x.ln();
            assert!(
                (lhs - rhs).abs() <= 1e-13 * (1.0 + lhs.abs()),
                "{x}: {lhs} vs {rhs}"
            );
        }
    }

    #[test]
    fn digamma_closed_forms() {
        use std::f64::consts::{LN_2, PI};
        // ψ(1) = −γ, ψ(1/2) = −γ − 2 ln 2, ψ(1/4) = −γ − π/2 − 3 ln 2, ψ(n+1) = −γ + H_n.
        assert!(rel(digamma(1.0), -EULER_GAMMA) < 1e-14, "{}", digamma(1.0));
        assert!(rel(digamma(0.5), -EULER_GAMMA - 2.0 * LN_2) < 1e-14);
        assert!(rel(digamma(0.25), -EULER_GAMMA - PI / 2.0 - 3.0 * LN_2) < 1e-14);
        let mut harmonic = 0.0;
        for n in 1..=30u32 {
            harmonic += 1.0 / f64::from(n);
            let want = -EULER_GAMMA + harmonic;
            assert!(rel(digamma(f64::from(n) + 1.0), want) < 1e-14, "n = {n}");
        }
        // Poles and special values, as documented.
        assert_eq!(digamma(0.0), f64::NEG_INFINITY);
        assert_eq!(digamma(-3.0), f64::NEG_INFINITY);
        assert!(digamma(f64::NAN).is_nan() && digamma(f64::NEG_INFINITY).is_nan());
        assert_eq!(digamma(f64::INFINITY), f64::INFINITY);
    }

    #[test]
    fn digamma_recurrence_and_derivative_of_ln_gamma() {
        use statrs::function::gamma::ln_gamma;
        let mut x = 1e-3;
        while x < 1e3 {
            // ψ(x+1) − ψ(x) = 1/x.
            let d = digamma(x + 1.0) - digamma(x);
            assert!(
                (d - 1.0 / x).abs() <= 1e-13 * (1.0 / x).max(digamma(x).abs()),
                "x = {x}"
            );
            // ψ = (log Γ)' by Richardson-extrapolated central differences.
            let h = 1e-3 * x;
            let c = |h: f64| (ln_gamma(x + h) - ln_gamma(x - h)) / (2.0 * h);
            let fd = (4.0 * c(h / 2.0) - c(h)) / 3.0;
            let scale = digamma(x).abs().max(1.0);
            assert!(
                (fd - digamma(x)).abs() < 1e-8 * scale,
                "x = {x}: {fd} vs {}",
                digamma(x)
            );
            x *= 1.37;
        }
    }

    #[test]
    fn trigamma_closed_forms() {
        use std::f64::consts::PI;
        let pi2 = PI * PI;
        // ψ₁(1) = π²/6, ψ₁(1/2) = π²/2, ψ₁(1/4) = π² + 8G, ψ₁(3/4) = π² − 8G.
        let cases = [
            (1.0, pi2 / 6.0),
            (0.5, pi2 / 2.0),
            (0.25, pi2 + 8.0 * CATALAN),
            (0.75, pi2 - 8.0 * CATALAN),
            (1.5, pi2 / 2.0 - 4.0),
            // Reflection branch: ψ₁(−1/2) = ψ₁(1/2) + 4 (from the recurrence), and
            // ψ₁(−3/2) = ψ₁(−1/2) + 4/9.
            (-0.5, pi2 / 2.0 + 4.0),
            (-1.5, pi2 / 2.0 + 4.0 + 4.0 / 9.0),
        ];
        for (x, want) in cases {
            assert!(
                rel(trigamma(x), want) <= 1e-13,
                "ψ₁({x}) = {} vs {want}",
                trigamma(x)
            );
        }
        // ψ₁(n+1) = π²/6 − Σ_{k≤n} 1/k², across the switch to the asymptotic series.
        let mut partial = 0.0;
        for n in 1..=40u32 {
            partial += 1.0 / f64::from(n * n);
            let want = pi2 / 6.0 - partial;
            let x = f64::from(n) + 1.0;
            assert!(
                rel(trigamma(x), want) <= 1e-13,
                "ψ₁({x}) = {} vs {want}",
                trigamma(x)
            );
        }
        // Large x: ψ₁(x) = 1/x + 1/(2x²) + 1/(6x³) + O(x⁻⁵).
        for x in [1e4, 1e8, 1e200] {
            let want = 1.0 / x + 0.5 / (x * x) + 1.0 / (6.0 * x * x * x);
            assert!(rel(trigamma(x), want) <= 1e-15, "x = {x}");
        }
    }

    #[test]
    fn trigamma_special_values() {
        for pole in [0.0, -0.0, -1.0, -7.0, -1e6] {
            assert_eq!(trigamma(pole), f64::INFINITY, "pole {pole}");
        }
        assert_eq!(trigamma(1e-200), f64::INFINITY);
        assert_eq!(trigamma(f64::INFINITY), 0.0);
        assert!(trigamma(f64::NAN).is_nan() && trigamma(f64::NEG_INFINITY).is_nan());
        // Near a pole ψ₁(x) ≈ 1/(x − pole)², from both sides.
        for eps in [1e-4, -1e-4] {
            let x = -2.0 + eps;
            assert!(rel(trigamma(x), 1.0 / (eps * eps)) < 1e-3, "x = {x}");
        }
    }

    #[test]
    fn trigamma_is_the_derivative_of_digamma() {
        let mut x = 1e-3;
        while x <= 1e3 {
            let h = 1e-3 * x;
            let c = |h: f64| (digamma(x + h) - digamma(x - h)) / (2.0 * h);
            let fd = (4.0 * c(h / 2.0) - c(h)) / 3.0;
            let t = trigamma(x);
            assert!(rel(fd, t) < 1e-9, "x = {x}: finite difference {fd} vs {t}");
            // And the recurrence it is built on, ψ₁(x) − ψ₁(x+1) = 1/x².
            let d = trigamma(x) - trigamma(x + 1.0);
            assert!(rel(d, 1.0 / (x * x)) < 1e-12, "x = {x}");
            x *= 1.29;
        }
        // The reflection branch against finite differences too.
        for x in [-0.3, -1.7, -5.45] {
            let h = 1e-5;
            let fd = (digamma(x + h) - digamma(x - h)) / (2.0 * h);
            assert!(
                rel(fd, trigamma(x)) < 1e-6,
                "x = {x}: {fd} vs {}",
                trigamma(x)
            );
        }
    }

    /// Rows of a column-major block against [`softmax_parts`] on each row alone.
    fn check_softmax_rows(rows: &[Vec<f64>]) {
        let (m, k) = (rows.len(), rows[0].len());
        let mut block: Vec<f64> = (0..k)
            .flat_map(|c| rows.iter().map(move |r| r[c]))
            .collect();
        let (mut shift, mut sum) = (vec![0.0; m], vec![0.0; m]);
        softmax_rows(&mut block, m, &mut shift, &mut sum);
        for (i, row) in rows.iter().enumerate() {
            let mut want = row.clone();
            let (mx, z) = softmax_parts(&mut want);
            let same = |a: f64, b: f64| {
                (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 4e-16 * b.abs()
            };
            assert!(
                same(shift[i], mx) && same(sum[i], z),
                "row {row:?}: ({}, {}) vs ({mx}, {z})",
                shift[i],
                sum[i]
            );
            for c in 0..k {
                assert!(
                    same(block[c * m + i], want[c]),
                    "row {row:?} entry {c}: {} vs {}",
                    block[c * m + i],
                    want[c]
                );
            }
        }
    }

    #[test]
    fn softmax_rows_equals_softmax_parts_row_by_row() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for k in 1..=5 {
            let rows: Vec<Vec<f64>> = (0..257)
                .map(|_| {
                    (0..k)
                        .map(|_| rng.random_range(-50.0..50.0) * rng.random_range(0.0..20.0))
                        .collect()
                })
                .collect();
            check_softmax_rows(&rows);
            // Special values mixed in with ordinary rows.
            let mut rows = rows;
            let inf = f64::INFINITY;
            rows[3] = vec![f64::NEG_INFINITY; k];
            rows[7] = vec![f64::NAN; k];
            rows[8][0] = inf;
            rows[9][k - 1] = f64::NEG_INFINITY;
            if k > 1 {
                rows[10][1] = f64::NAN;
            }
            check_softmax_rows(&rows);
        }
        // No rows: nothing to do, and no panic.
        softmax_rows(&mut [], 0, &mut [], &mut []);
    }

    #[test]
    fn lse_handles_infinities() {
        assert_eq!(
            log_sum_exp(&[f64::NEG_INFINITY, f64::NEG_INFINITY]),
            f64::NEG_INFINITY
        );
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[f64::NEG_INFINITY, 0.0]), 0.0);
        assert_eq!(log_sum_exp(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert!(log_sum_exp(&[1.0, f64::NAN]).is_nan());
        // Naive evaluation overflows here; the shifted one does not.
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-12);
    }

    #[test]
    fn sum_of_logs_special_values() {
        let sum = |z: &[f64]| {
            let mut s = SumOfLogs::default();
            z.iter().for_each(|&x| s.add_log(x));
            s.value()
        };
        assert_eq!(sum(&[]), 0.0);
        assert_eq!(sum(&[2.0, 0.0, 3.0]), f64::NEG_INFINITY);
        assert_eq!(sum(&[2.0, f64::INFINITY]), f64::INFINITY);
        assert!(sum(&[2.0, f64::NAN, 3.0]).is_nan());
        assert!(sum(&[0.0, f64::INFINITY]).is_nan());
        assert!(sum(&[2.0, -1.0]).is_nan());
        // 2000 factors of 2 leave [2^-512, 2^512] three times (products of powers of 2 are
        // exact: only the flushed logarithms round).
        assert!((sum(&[2.0; 2000]) - 2000.0 * 2f64.ln()).abs() < 1e-12);
        assert!((sum(&[0.5; 2000]) + 2000.0 * 2f64.ln()).abs() < 1e-12);
        // Factors at the limits of f64 are logged directly, never overflowing P.
        let big = [f64::MAX, f64::MAX, f64::MIN_POSITIVE, 1e-320];
        let exact: f64 = big.iter().map(|x| x.ln()).sum();
        assert!((sum(&big) - exact).abs() < 1e-12 * exact.abs());
    }

    #[test]
    fn softmax_with_a_zero_reference_special_values() {
        // Two entries and huge or non-finite entries take the shifted path.
        for v in [
            vec![3.0, 0.0],
            vec![800.0, 1.0, 0.0],
            vec![f64::INFINITY, 1.0, 0.0],
            vec![f64::NAN, 1.0, 0.0],
            vec![f64::NEG_INFINITY, f64::NEG_INFINITY, 0.0],
        ] {
            let (mut a, mut b) = (v.clone(), v.clone());
            let (ra, rb) = (softmax_parts_ref0(&mut a), softmax_parts(&mut b));
            let same = |x: f64, y: f64| x == y || (x.is_nan() && y.is_nan());
            assert!(same(ra.0, rb.0) && same(ra.1, rb.1), "{v:?}");
            if v.iter().any(|x| x.is_nan()) {
                assert!(
                    ra.0.is_nan() && a.iter().all(|p| p.is_nan()),
                    "{v:?}: {ra:?} {a:?}"
                );
            }
            assert!(a
                .iter()
                .zip(&b)
                .all(|(x, y)| x == y || (x.is_nan() && y.is_nan())));
        }
        // −∞ logits get probability exactly 0 on the unshifted path too.
        let mut v = [f64::NEG_INFINITY, 1.0, 0.0];
        let (m, z) = softmax_parts_ref0(&mut v);
        assert_eq!((m, v[0]), (0.0, 0.0));
        assert!((z - (1.0 + 1f64.exp())).abs() < 1e-15);
    }

    #[test]
    fn softmax_handles_infinities_and_large_values() {
        let mut v = [f64::NEG_INFINITY, 0.0, 0.0];
        assert_eq!(softmax_in_place(&mut v), 2f64.ln());
        assert_eq!(v, [0.0, 0.5, 0.5]);
        let mut v = [0.0, f64::NEG_INFINITY];
        assert_eq!(softmax_in_place(&mut v), 0.0);
        assert_eq!(v, [1.0, 0.0]);
        let mut v = [f64::NEG_INFINITY; 3];
        assert_eq!(softmax_in_place(&mut v), f64::NEG_INFINITY);
        assert_eq!(v, [0.0; 3]);
        let mut v = [1.0, f64::INFINITY];
        assert_eq!(softmax_in_place(&mut v), f64::INFINITY);
        assert!(v.iter().all(|p| p.is_nan()));
        let mut v = [1.0, f64::NAN];
        assert!(softmax_in_place(&mut v).is_nan());
        // The naive e^{1000} overflows; the shifted form gives (1/(1+e), e/(1+e)).
        let mut v = [1000.0, 1001.0];
        let lse = softmax_in_place(&mut v);
        let e = 1f64.exp();
        assert!((lse - (1001.0 + (1.0 + 1.0 / e).ln())).abs() < 1e-12);
        assert!((v[0] - 1.0 / (1.0 + e)).abs() < 1e-15 && (v[1] - e / (1.0 + e)).abs() < 1e-15);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn lse_matches_naive_sum(v in proptest::collection::vec(-20.0f64..20.0, 1..8)) {
            let naive = v.iter().map(|x| x.exp()).sum::<f64>().ln();
            prop_assert!((log_sum_exp(&v) - naive).abs() < 1e-12 * naive.abs().max(1.0));
        }

        #[test]
        fn softmax_sums_to_one(v in proptest::collection::vec(-50.0f64..50.0, 1..8)) {
            let mut p = v.clone();
            let lse = softmax_in_place(&mut p);
            prop_assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            // Against the textbook definitions e^{v_j}/Σ e^{v_l} and log Σ e^{v_l}.
            let z: f64 = v.iter().map(|x| x.exp()).sum();
            prop_assert!((lse - z.ln()).abs() < 1e-12 * z.ln().abs().max(1.0));
            for (pj, x) in p.iter().zip(&v) {
                prop_assert!((pj - x.exp() / z).abs() < 1e-13);
            }
        }

        #[test]
        fn softmax_parts_recombine_to_the_lse(v in proptest::collection::vec(-50.0f64..50.0, 1..8)) {
            let mut p = v.clone();
            let (m, z) = softmax_parts(&mut p);
            prop_assert!(m == v.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            prop_assert!((1.0..=v.len() as f64 + 1e-12).contains(&z));
            prop_assert!((m + z.ln() - log_sum_exp(&v)).abs() < 1e-12 * m.abs().max(1.0));
            let mut q = v.clone();
            softmax_in_place(&mut q);
            prop_assert!(p == q);
        }

        #[test]
        fn softmax_with_a_zero_reference_matches_the_shifted_softmax(
            v in proptest::collection::vec(-800.0f64..720.0, 1..7)
        ) {
            let mut v = v;
            v.push(0.0);
            let mut a = v.clone();
            let mut b = v.clone();
            let (ma, za) = softmax_parts_ref0(&mut a);
            let (mb, zb) = softmax_parts(&mut b);
            let (la, lb) = (ma + za.ln(), mb + zb.ln());
            prop_assert!((la - lb).abs() <= 1e-13 * lb.abs().max(1.0), "{la} vs {lb}");
            // Same relative accuracy, tiny probabilities included: both forms are exact up
            // to the conditioning of e^x in its argument, |x| u relative.
            let big = v.iter().fold(1.0f64, |a, x| a.max(x.abs()));
            for (x, y) in a.iter().zip(&b) {
                prop_assert!((x - y).abs() <= 8.0 * f64::EPSILON * big * y.abs() + 1e-300,
                    "{a:?} vs {b:?}");
            }
        }

        #[test]
        fn sum_of_logs_matches_the_sum_of_logarithms(
            z in proptest::collection::vec(prop_oneof![0.5f64..10.0, 1e-300f64..1e-200, 1e200f64..1e300], 0..3000)
        ) {
            let mut s = SumOfLogs::new();
            for &x in &z {
                s.add_log(x);
            }
            // Reference: the logarithms summed with Neumaier compensation (independent of
            // the blocking).
            let (mut sum, mut comp) = (0.0f64, 0.0f64);
            for x in &z {
                let l = x.ln();
                let t = sum + l;
                comp += if sum.abs() >= l.abs() { (sum - t) + l } else { (l - t) + sum };
                sum = t;
            }
            let exact = sum + comp;
            let scale: f64 = z.iter().map(|x| x.ln().abs()).sum::<f64>().max(1.0);
            prop_assert!((s.value() - exact).abs() <= 1e-13 * scale + z.len() as f64 * 4e-16,
                "{} vs {}", s.value(), exact);
        }

        #[test]
        fn log1p_exp_and_sigmoid_match_naive(x in -30.0f64..30.0) {
            prop_assert!((log1p_exp(x) - (1.0 + x.exp()).ln()).abs() < 1e-12);
            prop_assert!((sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() < 1e-14);
            // σ is the derivative of log(1+eˣ): central difference.
            let h = 1e-5;
            let fd = (log1p_exp(x + h) - log1p_exp(x - h)) / (2.0 * h);
            prop_assert!((fd - sigmoid(x)).abs() < 1e-8);
        }
    }
}
