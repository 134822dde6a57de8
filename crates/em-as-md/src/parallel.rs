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
/// per-chunk accumulators in chunk order. `init` creates an empty accumulator (small:
/// the sums only); work buffers belong in [`fold_rows_with`]'s scratch.
pub fn fold_rows<S, I, B>(n: usize, init: I, body: B) -> Result<S>
where
    S: Mergeable,
    I: Fn() -> S + Sync,
    B: Fn(&mut S, Range<usize>) -> Result<()> + Sync,
{
    fold_rows_with(n, || (), init, |_, acc, rows| body(acc, rows))
}

/// [`fold_rows`] with per-worker scratch: `scratch` builds work buffers once per rayon
/// job (reused across the chunks that job folds, so chunk-sized buffers are neither
/// allocated nor zeroed per chunk), while `init` builds the per-chunk accumulator that is
/// merged. Whatever the scratch holds on entry must not influence the result: `body`
/// overwrites what it reads, so the sums stay bit-identical across thread counts.
pub fn fold_rows_with<S, T, J, I, B>(n: usize, scratch: J, init: I, body: B) -> Result<S>
where
    S: Mergeable,
    T: Send,
    J: Fn() -> T + Sync + Send,
    I: Fn() -> S + Sync,
    B: Fn(&mut T, &mut S, Range<usize>) -> Result<()> + Sync,
{
    let n_chunks = n.div_ceil(CHUNK).max(1);
    let parts: Vec<Result<S>> = (0..n_chunks)
        .into_par_iter()
        .map_init(scratch, |t, c| {
            let mut acc = init();
            body(t, &mut acc, c * CHUNK..((c + 1) * CHUNK).min(n))?;
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

    #[test]
    fn scratch_is_reused_without_changing_the_sum() {
        let n = 7 * CHUNK + 5;
        let v: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.11).cos() * 1e2).collect();
        let created = std::sync::atomic::AtomicUsize::new(0);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    fold_rows_with(
                        n,
                        || {
                            created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            vec![f64::NAN; CHUNK]
                        },
                        || 0.0f64,
                        |buf, acc, r| {
                            // Squares through the (stale) scratch buffer, then summed.
                            let m = r.len();
                            for (b, x) in buf[..m].iter_mut().zip(&v[r]) {
                                *b = x * x;
                            }
                            *acc += buf[..m].iter().sum::<f64>();
                            Ok(())
                        },
                    )
                    .unwrap()
                })
        };
        let one = run(1);
        let per_thread = created.swap(0, std::sync::atomic::Ordering::Relaxed);
        assert!(
            per_thread < n.div_ceil(CHUNK),
            "scratch built {per_thread} times"
        );
        assert_eq!(one.to_bits(), run(2).to_bits());
        let plain = fold_rows(
            n,
            || 0.0f64,
            |acc, r| {
                *acc += v[r].iter().map(|x| x * x).sum::<f64>();
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(one.to_bits(), plain.to_bits());
    }
}
