//! Weighted Gram matrices $X^\top\operatorname{diag}(w)X$, several at once, the dominant
//! cost of linear experts' M-steps and of the gate's Newton Hessians.

use crate::data::Dataset;
use crate::inner::thin::scaled_copies;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};

/// Values in the scaled copy of one [`add_weighted_grams`] sub-block (128 KiB: it stays
/// in L2 cache while faer multiplies it, and fewer, larger products amortise faer's
/// per-call overhead — measured about 10% faster than 256-row blocks at $d = 10$).
const GRAM_BLOCK_VALUES: usize = 16 * 1024;

/// Rows of the stacked product in [`add_weighted_grams`]: up to this many ($\ge d$) rows of
/// weighted Grams are formed by one faer product (a tall $Sd\times d$ output uses the
/// matrix kernel far better than $S$ separate $d\times d$ ones, the point of stacking).
const STACK_ROWS: usize = 128;

/// Grams stacked per product for $d$ features.
fn stack_width(d: usize) -> usize {
    (STACK_ROWS / d.max(1)).max(1)
}

/// Rows per sub-block when `rows_out` stacked Gram rows are formed at once.
fn gram_block_rows(rows_out: usize) -> usize {
    (GRAM_BLOCK_VALUES / rows_out.max(1)).clamp(64, crate::inner::parallel::CHUNK)
}

/// Length of the scratch buffer [`add_weighted_grams`] needs for $d$ features (any number
/// of Grams).
pub(crate) fn gram_buffer_len(d: usize) -> usize {
    (1..=stack_width(d))
        .map(|s| s * d * gram_block_rows(s * d))
        .max()
        .unwrap_or(0)
}

/// Weighted Gram update $G \mathrel{+}= X_c \operatorname{diag}(w) X_c^\top$ for the rows
/// `rows` of `data` ($X_c$ is $d\times m$, columns are rows $x_i$; `w` holds the $m$
/// weights of those rows): [`add_weighted_grams`] with one Gram.
pub(crate) fn add_weighted_gram(
    data: &Dataset,
    rows: std::ops::Range<usize>,
    w: &[f64],
    buf: &mut [f64],
    mut gram: MatMut<'_, f64>,
) {
    add_weighted_grams(data, rows, w, 1, buf, &mut |_, g| {
        gram += g;
    });
}

/// $B$ weighted Grams of the same rows, $G_b \mathrel{+}= X_c\operatorname{diag}(w_b)X_c^\top$,
/// $b < B$, with `w` the column-major $m\times B$ weights: per sub-block of rows, up to
/// `STACK_ROWS`$/d$ of them are formed by one faer product
/// $[\,X_c\operatorname{diag}(w_{b})\,;\,X_c\operatorname{diag}(w_{b+1})\,;\dots]\,X_c^\top$
/// of the $w$-scaled column copies (in the preallocated `buf`, $\ge$ [`gram_buffer_len`]
/// values) against the data, and `add(b, P_b)` receives each $d\times d$ product to add.
pub(crate) fn add_weighted_grams(
    data: &Dataset,
    rows: std::ops::Range<usize>,
    w: &[f64],
    nb: usize,
    buf: &mut [f64],
    add: &mut dyn FnMut(usize, MatRef<'_, f64>),
) {
    let d = data.d();
    let m_all = rows.len();
    let mut prod = Mat::<f64>::zeros(0, 0);
    let mut first = 0;
    while first < nb {
        let s = stack_width(d).min(nb - first);
        let sd = s * d;
        let block = gram_block_rows(sd);
        prod.resize_with(sd, d, |_, _| 0.0);
        let mut start = rows.start;
        let mut accum = Accum::Replace;
        while start < rows.end {
            let end = (start + block).min(rows.end);
            let m = end - start;
            let b = &mut buf[..sd * m];
            let w0 = first * m_all + (start - rows.start);
            scaled_copies(data.x_rows(start..end), d, &w[w0..], m_all, s, b);
            let bm = MatRef::from_column_major_slice(b, sd, m);
            let xc = data.xt().subcols(start, m);
            matmul(prod.as_mut(), accum, bm, xc.transpose(), 1.0, Par::Seq);
            accum = Accum::Add;
            start = end;
        }
        if rows.is_empty() {
            prod.fill(0.0);
        }
        for j in 0..s {
            add(first + j, prod.as_ref().subrows(j * d, d));
        }
        first += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn data(n: usize, d: usize, seed: u64) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Row-major rows (1, x_1, …, x_{d−1}).
        let xs: Vec<f64> = (0..n * d)
            .map(|j| {
                if j % d == 0 {
                    1.0
                } else {
                    StandardNormal.sample(&mut rng)
                }
            })
            .collect();
        Dataset::from_rows(&xs, d, &vec![0.0; n], 1).unwrap()
    }

    #[test]
    fn stacked_weighted_grams_match_plain_sums() {
        use rand::Rng;
        // d = 7 stacks 18 Grams per product; d = 200 one (its sub-blocks are 64 rows);
        // row ranges span several sub-blocks and start mid-data.
        for (n, d, nb, rows) in [
            (3000, 7, 23, 100..2900),
            (300, 200, 3, 5..290),
            (50, 3, 2, 7..7),
        ] {
            let ds = data(n, d, 11);
            let m = rows.len();
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let w: Vec<f64> = (0..m * nb).map(|_| rng.random::<f64>() - 0.3).collect();
            let mut buf = vec![f64::NAN; gram_buffer_len(d)];
            let mut got = vec![Mat::<f64>::zeros(d, d); nb];
            add_weighted_grams(&ds, rows.clone(), &w, nb, &mut buf, &mut |b, p| {
                got[b] += p;
            });
            for (b, g) in got.iter().enumerate() {
                for a1 in 0..d {
                    for a2 in 0..d {
                        let plain: f64 = rows
                            .clone()
                            .enumerate()
                            .map(|(li, i)| w[b * m + li] * ds.x(i)[a1] * ds.x(i)[a2])
                            .sum();
                        assert!(
                            (g[(a1, a2)] - plain).abs() <= 1e-11 * (1.0 + plain.abs()),
                            "d={d} b={b} ({a1},{a2}): {} vs {plain}",
                            g[(a1, a2)]
                        );
                    }
                }
            }
        }
    }
}
