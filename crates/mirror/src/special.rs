//! Numerically careful kernels shared by the whole workspace: log-sum-exp with $-\infty$
//! handled, softmax (of one vector, or of every row of a block at once with the block's
//! exponentials vectorised, [`softmax_rows`]), sums of logarithms with one logarithm per
//! block, $\log(1 + e^x)$ and the logistic function.

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
    assert!(block.len() % m == 0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
