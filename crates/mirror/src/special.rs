//! Numerically careful scalar kernels shared by the whole workspace: log-sum-exp with
//! $-\infty$ handled, $\log(1 + e^x)$ and the logistic function.

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
/// Computed as $e_j = e^{v_j - m}$, $m = \max_j v_j$, $v_j \leftarrow e_j / \sum_l e_l$,
/// $\mathrm{LSE}(v) = m + \log\sum_l e_l$: one exponential per entry and one logarithm —
/// the exponentials of the log-sum-exp are the probabilities' numerators (hot in every
/// E-step). Two entries take one exponential:
/// $e = e^{-|v_1 - v_2|}$, probabilities $1/(1+e)$ (the larger entry) and $e/(1+e)$,
/// $\mathrm{LSE} = m + \log(1 + e)$.
///
/// Entries equal to $-\infty$ get probability exactly 0. If every entry is $-\infty$ the
/// slice is left as zeros and $-\infty$ is returned (the caller decides what that means);
/// a $+\infty$ or NaN entry gives NaN probabilities and returns $+\infty$ or NaN (callers
/// check the returned value's finiteness).
pub fn softmax_in_place(v: &mut [f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        let lse = log_sum_exp(v);
        if lse == f64::NEG_INFINITY {
            v.iter_mut().for_each(|x| *x = 0.0);
        } else {
            v.iter_mut().for_each(|x| *x = f64::NAN);
        }
        return lse;
    }
    if let [a, b] = v {
        // Two entries (a two-expert gate, a two-component posterior): with
        // e = e^{-|a-b|} ∈ (0, 1] the probabilities are 1/(1+e) and e/(1+e) and
        // LSE = max + log1p(e) — one exponential, and no branch on which entry is larger
        // (it is unpredictable row to row).
        let e = (-(*a - *b).abs()).exp();
        let s = 1.0 + e;
        let (hi, lo) = (1.0 / s, e / s);
        let a_max = *a >= *b;
        *a = if a_max { hi } else { lo };
        *b = if a_max { lo } else { hi };
        // ln(s), not ln_1p(e): the LSE needs absolute accuracy only (m dominates), which
        // ln(1 + e) has, and glibc's log1p costs several times log.
        return m + s.ln();
    }
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - m).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in v.iter_mut() {
        *x *= inv;
    }
    m + sum.ln()
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
