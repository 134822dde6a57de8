//! The inner numerics every M-step and mirror-descent subproblem shares: the solvers'
//! report ([`InnerStats`]), the Cholesky policy, weighted Gram matrices, L-BFGS, the
//! deterministic parallel fold over rows and the one weighted soft-label softmax
//! regression ([`softmax`]). Nothing here knows about experts, gates or EM.

pub mod cholesky;
pub mod gram;
pub mod lbfgs;
pub mod parallel;
mod report;
pub mod softmax;
pub mod sums;
pub(crate) mod thin;

pub use lbfgs::{Lbfgs, LbfgsReport};
pub use parallel::{fold_rows, fold_rows_with, Mergeable};
pub use report::InnerStats;
pub use softmax::{Labels, SoftmaxRegression, SoftmaxStats};
pub use sums::NewtonSums;

/// The first index whose value fails `ok`, scanning without a branch per value first
/// (the scan vectorises; the M-step checks its weights, and each pass its labels and
/// weights, on every call).
pub(crate) fn first_failing(values: &[f64], ok: impl Fn(f64) -> bool) -> Option<usize> {
    if values.iter().fold(true, |all, &v| all & ok(v)) {
        None
    } else {
        values.iter().position(|&v| !ok(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn first_failing_finds_the_first_bad_value() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let ok = |v: f64| v.is_finite() & (v >= 0.0);
        for _ in 0..200 {
            let n = rng.random_range(0..40);
            let mut v: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..2.0)).collect();
            for _ in 0..rng.random_range(0..3) {
                if n > 0 {
                    let i = rng.random_range(0..n);
                    v[i] = [f64::NAN, -1.0, f64::INFINITY, -0.0][rng.random_range(0..4)];
                }
            }
            let want = v.iter().position(|x| !(x.is_finite() && *x >= 0.0));
            assert_eq!(first_failing(&v, ok), want, "{v:?}");
        }
    }
}
