//! Deterministic parallel reduction over row chunks.
//!
//! Rows are cut into chunks of a fixed size ([`CHUNK`]), independent of the number of
//! threads; each chunk folds into its own accumulator (in parallel with rayon), and the
//! accumulators are merged **in chunk order** on one thread (with one thread, or one
//! chunk, the chunks fold in order on the calling thread, which then waits on no pool).
//! Floating-point sums are therefore bit-identical for 1, 2 or 64 threads.

use crate::error::Result;
use rayon::prelude::*;
use std::any::Any;
use std::cell::RefCell;
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
    fold_rows_with(n, |_| (), init, |_, acc, rows| body(acc, rows))
}

/// [`fold_rows`] with per-worker scratch: work buffers are built once per rayon job and
/// reused across the chunks that job folds, and kept in a small per-thread cache between
/// calls, so an iterative solver's passes neither allocate nor zero chunk-sized buffers.
/// `scratch(cached)` returns the buffers to use, given the value of type `T` an earlier
/// fold left on this thread (if any): reuse it when its sizes fit, else build anew.
/// `init` builds the per-chunk accumulator that is merged. Whatever the scratch holds on
/// entry must not influence the result (`body` overwrites what it reads), so the sums
/// stay bit-identical across thread counts.
pub fn fold_rows_with<S, T, J, I, B>(n: usize, scratch: J, init: I, body: B) -> Result<S>
where
    S: Mergeable,
    T: Send + 'static,
    J: Fn(Option<T>) -> T + Sync + Send,
    I: Fn() -> S + Sync,
    B: Fn(&mut T, &mut S, Range<usize>) -> Result<()> + Sync,
{
    fold_rows_into(n, None, scratch, init, |t, acc, rows, _| body(t, acc, rows))
}

/// [`fold_rows_with`] that also writes per-row output in place: with `out = Some((buf,
/// width))` (`buf.len() == n * width`, row-major) the chunk of rows `a..b` gets
/// `Some(&mut buf[a * width..b * width])`, with `None` every chunk gets `None`. Each chunk
/// writes only its own rows, so the output is the same whatever the thread count, and it
/// is written once where it will stay (the E-step's $n\times K$ responsibilities: no
/// per-chunk copies merged and re-grown).
///
/// # Panics
/// If `buf.len() != n * width` (a caller's bug, not a data error).
pub fn fold_rows_into<S, T, J, I, B>(
    n: usize,
    out: Option<(&mut [f64], usize)>,
    scratch: J,
    init: I,
    body: B,
) -> Result<S>
where
    S: Mergeable,
    T: Send + 'static,
    J: Fn(Option<T>) -> T + Sync + Send,
    I: Fn() -> S + Sync,
    B: Fn(&mut T, &mut S, Range<usize>, Option<&mut [f64]>) -> Result<()> + Sync,
{
    let n_chunks = n.div_ceil(CHUNK).max(1);
    let outs: Vec<Option<&mut [f64]>> = match out {
        Some((buf, width)) => {
            assert_eq!(buf.len(), n * width, "output buffer of n × width values");
            if n == 0 {
                vec![Some(buf)]
            } else if width == 0 {
                (0..n_chunks).map(|_| Some(&mut [][..])).collect()
            } else {
                buf.chunks_mut(CHUNK * width).map(Some).collect()
            }
        }
        None => (0..n_chunks).map(|_| None).collect(),
    };
    let fold_chunk = |t: &mut Cached<T>, (c, o): (usize, Option<&mut [f64]>)| {
        let mut acc = init();
        let t = t.0.as_mut().expect("scratch is present until dropped");
        body(t, &mut acc, c * CHUNK..((c + 1) * CHUNK).min(n), o)?;
        Ok(acc)
    };
    let new_scratch = || Cached(Some(scratch(take_cached::<T>())));
    // One thread or one chunk: the same chunks in the same order on this thread, without
    // handing the pass to the pool and waiting for it (a wake-up per pass, which costs
    // about a tenth of a gradient pass at 20 000 rows).
    let parts: Vec<Result<S>> = if n_chunks == 1 || rayon::current_num_threads() == 1 {
        let mut t = new_scratch();
        outs.into_iter()
            .enumerate()
            .map(|co| fold_chunk(&mut t, co))
            .collect()
    } else {
        outs.into_par_iter()
            .enumerate()
            .map_init(new_scratch, fold_chunk)
            .collect()
    };
    let mut it = parts.into_iter();
    let mut total = it.next().expect("at least one chunk")?;
    for p in it {
        total.merge(p?);
    }
    Ok(total)
}

/// $\sum_i v_i$ in the order the E-step sums the responsibilities $W_k = \sum_i r_{ik}$:
/// each [`CHUNK`] in eight interleaved partial sums (lane $l$ takes $i \equiv l \pmod 8$,
/// then a fixed pairwise reduction), then the chunk totals in chunk order (so a weighted
/// fit's total weight equals the E-step's $W_k$ bit for bit, as the streamed M-step, which
/// has only the latter, needs).
pub fn chunked_sum(v: &[f64]) -> f64 {
    v.chunks(CHUNK)
        .map(|c| crate::inner::thin::lane_dot(c, None))
        .fold(0.0, |a, b| a + b)
}

/// Scratch values per thread kept between folds (a few: one per type in use).
const SCRATCH_CACHE_LEN: usize = 8;

thread_local! {
    /// Scratch values left by earlier folds on this thread, of any type.
    static SCRATCH_CACHE: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// A fold's scratch value, returned to its thread's cache when the rayon job drops it.
struct Cached<T: 'static>(Option<T>);

impl<T: 'static> Drop for Cached<T> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            SCRATCH_CACHE.with(|c| {
                let mut c = c.borrow_mut();
                if c.len() < SCRATCH_CACHE_LEN {
                    c.push(Box::new(t));
                }
            });
        }
    }
}

/// Takes a cached scratch value of type `T` from this thread's cache.
fn take_cached<T: 'static>() -> Option<T> {
    SCRATCH_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let i = c.iter().position(|b| b.is::<T>())?;
        c.swap_remove(i).downcast::<T>().ok().map(|b| *b)
    })
}

/// `f` run inside a fresh rayon pool of `threads` threads (for tests of thread-count
/// independence).
#[cfg(test)]
pub(crate) fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_is_identical_across_thread_counts() {
        let n = 10 * CHUNK + 17;
        let v: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.37).sin() * 1e3).collect();
        let run = |threads: usize| {
            with_threads(threads, || {
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

    /// Each chunk writes its own rows of the output; the rows and the merged sum are the
    /// same for 1, 2 and 3 threads and equal a direct loop.
    #[test]
    fn output_rows_are_written_in_place_whatever_the_thread_count() {
        let (n, width) = (5 * CHUNK + 3, 3);
        let run = |threads: usize| {
            with_threads(threads, || {
                let mut out = vec![f64::NAN; n * width];
                let total = fold_rows_into(
                    n,
                    Some((&mut out[..], width)),
                    |_| (),
                    || 0.0f64,
                    |_, acc, rows, o| {
                        let o = o.expect("an output slice per chunk");
                        assert_eq!(o.len(), rows.len() * width);
                        for (i, row) in rows.zip(o.chunks_exact_mut(width)) {
                            for (j, v) in row.iter_mut().enumerate() {
                                *v = (i * width + j) as f64 * 0.5;
                                *acc += *v;
                            }
                        }
                        Ok(())
                    },
                )
                .unwrap();
                (out, total)
            })
        };
        let (one, s1) = run(1);
        let direct: Vec<f64> = (0..n * width).map(|v| v as f64 * 0.5).collect();
        assert_eq!(one, direct);
        for threads in [2, 3] {
            let (o, s) = run(threads);
            assert_eq!(o, one);
            assert_eq!(s.to_bits(), s1.to_bits());
        }
        let plain: f64 = direct.iter().sum();
        assert!((s1 - plain).abs() <= 1e-12 * plain);
        // No rows: one call with an empty slice.
        let mut empty: Vec<f64> = Vec::new();
        let calls = fold_rows_into(
            0,
            Some((&mut empty[..], width)),
            |_| (),
            || 0.0f64,
            |_, acc, rows, o| {
                assert!(rows.is_empty() && o.is_some_and(|o| o.is_empty()));
                *acc += 1.0;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(calls, 1.0);
    }

    #[test]
    fn scratch_is_reused_without_changing_the_sum() {
        let n = 7 * CHUNK + 5;
        let v: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.11).cos() * 1e2).collect();
        let created = std::sync::atomic::AtomicUsize::new(0);
        // Squares through a (stale, NaN-filled when new) scratch buffer, then summed.
        let fold = || {
            fold_rows_with(
                n,
                |cached: Option<Vec<f64>>| {
                    cached.unwrap_or_else(|| {
                        created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        vec![f64::NAN; CHUNK]
                    })
                },
                || 0.0f64,
                |buf, acc, r| {
                    let m = r.len();
                    for (b, x) in buf[..m].iter_mut().zip(&v[r]) {
                        *b = x * x;
                    }
                    *acc += buf[..m].iter().sum::<f64>();
                    Ok(())
                },
            )
            .unwrap()
        };
        let one = with_threads(1, || {
            let first = fold();
            let built = created.swap(0, std::sync::atomic::Ordering::Relaxed);
            assert!(
                built >= 1 && built < n.div_ceil(CHUNK),
                "built {built} times"
            );
            // A second fold on the same thread finds the cached buffer: none built.
            let second = fold();
            assert_eq!(created.load(std::sync::atomic::Ordering::Relaxed), 0);
            assert_eq!(first.to_bits(), second.to_bits());
            first
        });
        assert_eq!(one.to_bits(), with_threads(2, fold).to_bits());
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
