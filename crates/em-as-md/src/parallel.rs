//! Deterministic parallel reduction over row chunks.
//!
//! Rows are cut into chunks of a fixed size ([`CHUNK`]), independent of the number of
//! threads; each chunk folds into its own accumulator (in parallel with rayon), and the
//! accumulators are merged **in chunk order** on one thread. Floating-point sums are
//! therefore bit-identical for 1, 2 or 64 threads.

use crate::error::Result;
use rayon::prelude::*;
use std::ops::Range;

/// Rows per chunk.
pub const CHUNK: usize = 2048;

/// A value that can absorb another of its kind by an associative sum (sufficient
/// statistics, gradients, log-likelihood totals): `merge` is what lets the E-step run
/// per chunk, per thread, and later per machine.
pub trait Mergeable: Send {
    /// `self ← self ⊕ other`.
    fn merge(&mut self, other: Self);
}

impl Mergeable for f64 {
    fn merge(&mut self, other: Self) {
        *self += other;
    }
}

impl Mergeable for Vec<f64> {
    fn merge(&mut self, other: Self) {
        debug_assert_eq!(self.len(), other.len());
        for (a, b) in self.iter_mut().zip(other) {
            *a += b;
        }
    }
}

impl<A: Mergeable, B: Mergeable> Mergeable for (A, B) {
    fn merge(&mut self, other: Self) {
        self.0.merge(other.0);
        self.1.merge(other.1);
    }
}

/// Folds `body` over the rows `0..n` in fixed-size chunks, in parallel, and merges the
/// per-chunk accumulators in chunk order. `init` creates an empty accumulator (and is
/// where per-chunk scratch buffers are allocated, never per row).
pub fn fold_rows<S, I, B>(n: usize, init: I, body: B) -> Result<S>
where
    S: Mergeable,
    I: Fn() -> S + Sync,
    B: Fn(&mut S, Range<usize>) -> Result<()> + Sync,
{
    let n_chunks = n.div_ceil(CHUNK).max(1);
    let parts: Vec<Result<S>> = (0..n_chunks)
        .into_par_iter()
        .map(|c| {
            let mut acc = init();
            body(&mut acc, c * CHUNK..((c + 1) * CHUNK).min(n))?;
            Ok(acc)
        })
        .collect();
    let mut it = parts.into_iter();
    let mut total = it.next().expect("at least one chunk")?;
    for p in it {
        total.merge(p?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_is_identical_across_thread_counts() {
        let n = 10 * CHUNK + 17;
        let v: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.37).sin() * 1e3).collect();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    fold_rows(
                        n,
                        || 0.0f64,
                        |acc, r| {
                            *acc += v[r].iter().sum::<f64>();
                            Ok(())
                        },
                    )
                    .unwrap()
                })
        };
        let one = run(1);
        assert_eq!(one.to_bits(), run(2).to_bits());
        assert_eq!(one.to_bits(), run(3).to_bits());
        // …and agrees with a plain sum up to round-off.
        let plain: f64 = v.iter().sum();
        assert!((one - plain).abs() < 1e-9 * plain.abs().max(1.0));
    }
}
