//! Products of a chunk of rows with one or two columns: $g_i = x_i^\top b$ per row
//! ([`rows_dot`]) and $\sum_i r_i x_i$ ([`add_rows_scaled`]), the logits and gradients
//! of the gate's and the logistic experts' Newton passes and of the E-step; and the
//! $w$-scaled row copies that the weighted Grams multiply ([`scaled_copies`]).
//!
//! With so few columns and $d$ around ten, faer's matrix–vector paths spend most of their
//! time on per-row overhead (about 0.1 ms for $20\,000 \times 11$ values, where the
//! arithmetic needs a fraction of that). These kernels hold a row's $d \le$ [`MAX_D`]
//! values in at most three 8-lane blocks: the dot product sums the lane-wise products
//! over the blocks and then the 8 lanes by a fixed tree ([`lane_sum`]); the scaled sum
//! keeps one accumulator per lane block for the whole chunk, each lane summed in row
//! order. Whole `mdem fit` runs on the peer files (one thread): gated linear and
//! logistic fits 11–14 % faster than with faer's products.
//!
//! **Same bits everywhere.** On x86-64 the widest of AVX-512 and AVX2 the CPU offers runs
//! (checked at run time by [`ExpLevel::detect`], as for [`mirror::batch_exp`]); elsewhere
//! the portable code does.
//! All perform the same multiplications and additions in the same order (no fused
//! multiply-add; a row's lanes beyond $d$ are zeros, read by masked loads or from a
//! zero-padded copy), so they return the same bits (tested).

use crate::data::Dataset;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
// The instruction-set level `exp_in_place` runs at is the one these kernels use too.
use mirror::batch_exp::ExpLevel;
use std::ops::Range;

/// Values per lane block.
const LANES: usize = 8;
/// Widest row the kernels take (three lane blocks); callers use faer beyond it.
pub(crate) const MAX_D: usize = 3 * LANES;
/// Most columns [`chunk_dots`] and [`chunk_add_scaled`] give the kernels (one pass over
/// the rows per column); with more, faer's blocked product is as fast or faster.
const MAX_COLS: usize = 2;

/// $\sum_\ell u_\ell$ over 8 lanes by the fixed tree
/// $((u_0 + u_4) + (u_2 + u_6)) + ((u_1 + u_5) + (u_3 + u_7))$.
fn lane_sum(u: &[f64; LANES]) -> f64 {
    let t = [u[0] + u[4], u[1] + u[5], u[2] + u[6], u[3] + u[7]];
    (t[0] + t[2]) + (t[1] + t[3])
}

/// $\sum_i u_iv_i$ (or $\sum_i u_i$ with `v = None`) in 8 lanes, lane $l$ taking
/// $i \equiv l \pmod 8$ in order, then [`lane_sum`]: eight independent additions per step
/// instead of one chain whose every addition waits for the last (the E-step's per-chunk
/// totals $W_k$ and $\sum_i r_{ik}y_i^2$ were latency-bound that way). A fixed order, so
/// the same bits for any thread count.
pub(crate) fn lane_dot(u: &[f64], v: Option<&[f64]>) -> f64 {
    let mut acc = [0.0; LANES];
    let value = |i: usize| match v {
        Some(v) => u[i] * v[i],
        None => u[i],
    };
    let full = u.len() / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += value(base + l);
        }
    }
    for (l, i) in (full..u.len()).enumerate() {
        acc[l] += value(i);
    }
    lane_sum(&acc)
}

/// `out[i]` $= x_i^\top b$ for the `out.len()` rows of `x`, by lane blocks of zero-padded
/// copies (the reference the vector kernels follow).
fn dot_portable(x: &[f64], d: usize, b: &[f64], out: &mut [f64]) {
    let nb = d.div_ceil(LANES);
    let (mut bp, mut xr) = ([0.0; MAX_D], [0.0; MAX_D]);
    bp[..d].copy_from_slice(&b[..d]);
    for (o, xi) in out.iter_mut().zip(x.chunks_exact(d)) {
        xr[..d].copy_from_slice(xi);
        let mut u = [0.0; LANES];
        for lb in 0..nb {
            for l in 0..LANES {
                u[l] += xr[lb * LANES + l] * bp[lb * LANES + l];
            }
        }
        *o = lane_sum(&u);
    }
}

/// $g \mathrel{+}= \sum_i r_i x_i$ over the `r.len()` rows of `x`, each lane summed in row
/// order from 0 and then added to $g$.
fn scaled_portable(x: &[f64], d: usize, r: &[f64], g: &mut [f64]) {
    let mut acc = [0.0; MAX_D];
    for (xi, &ri) in x.chunks_exact(d).zip(r) {
        for (a, v) in acc.iter_mut().zip(xi) {
            *a += ri * v;
        }
    }
    for (ga, aa) in g[..d].iter_mut().zip(&acc) {
        *ga += aa;
    }
}

/// `out` row $i$ $= (w_{0i}x_i, \dots, w_{s-1,i}x_i)$ ($sd$ values) for the rows of `x`,
/// with $w_{ji}$ = `w[j * stride + i]`.
fn copies_portable(x: &[f64], d: usize, w: &[f64], stride: usize, s: usize, out: &mut [f64]) {
    for (i, (xi, oi)) in x
        .chunks_exact(d)
        .zip(out.chunks_exact_mut(s * d))
        .enumerate()
    {
        for (j, part) in oi.chunks_exact_mut(d).enumerate() {
            let wi = w[j * stride + i];
            for (o, v) in part.iter_mut().zip(xi) {
                *o = wi * v;
            }
        }
    }
}

/// The kernels with AVX2 and AVX-512 intrinsics. Written out because the compiler, given
/// the portable loops with `target_feature`, vectorised them in 2-lane registers. Loads
/// of a row's last lane block are masked (masked-off lanes read as 0 and never fault;
/// their addresses are formed with `wrapping_add`, as an AVX2 half block can start past
/// the last row's end), so no row is copied; the operations and their order are the
/// portable code's.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::LANES;
    use std::arch::x86_64::*;

    /// Lanes of lane block `lb` that lie within $d$, as an AVX-512 mask.
    fn mask8(d: usize, lb: usize) -> __mmask8 {
        let n = (d - lb * LANES).min(LANES);
        ((1u16 << n) - 1) as __mmask8
    }

    /// The same lanes as two AVX2 masks (lanes 0–3 and 4–7 of the block).
    fn mask4x2(d: usize, lb: usize) -> [[i64; 4]; 2] {
        let n = (d - lb * LANES).min(LANES);
        let lane = |l: usize| if l < n { -1 } else { 0 };
        [
            [lane(0), lane(1), lane(2), lane(3)],
            [lane(4), lane(5), lane(6), lane(7)],
        ]
    }

    /// [`super::dot_portable`]: $m$ = `out.len()` rows.
    ///
    /// # Safety
    /// `x` holds at least `out.len() * d` values, `b` at least `d`, $d \le 24$.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_512(x: &[f64], d: usize, b: &[f64], out: &mut [f64]) {
        let nb = d.div_ceil(LANES);
        let masks: [__mmask8; 3] = std::array::from_fn(|lb| if lb < nb { mask8(d, lb) } else { 0 });
        let mut bv = [_mm512_setzero_pd(); 3];
        for lb in 0..nb {
            bv[lb] =
                unsafe { _mm512_maskz_loadu_pd(masks[lb], b.as_ptr().wrapping_add(lb * LANES)) };
        }
        for (i, o) in out.iter_mut().enumerate() {
            let row = unsafe { x.as_ptr().add(i * d) };
            let mut u = _mm512_setzero_pd();
            for lb in 0..nb {
                let xv = unsafe { _mm512_maskz_loadu_pd(masks[lb], row.wrapping_add(lb * LANES)) };
                u = _mm512_add_pd(u, _mm512_mul_pd(xv, bv[lb]));
            }
            let t = _mm256_add_pd(_mm512_castpd512_pd256(u), _mm512_extractf64x4_pd::<1>(u));
            let w = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd::<1>(t));
            *o = _mm_cvtsd_f64(_mm_add_sd(w, _mm_unpackhi_pd(w, w)));
        }
    }

    /// As [`dot_512`], in pairs of 4-lane registers.
    ///
    /// # Safety
    /// As [`dot_512`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_256(x: &[f64], d: usize, b: &[f64], out: &mut [f64]) {
        let nb = d.div_ceil(LANES);
        let mut masks = [[_mm256_setzero_si256(); 2]; 3];
        let mut bv = [[_mm256_setzero_pd(); 2]; 3];
        for lb in 0..nb {
            let mk = mask4x2(d, lb);
            for h in 0..2 {
                masks[lb][h] = unsafe { _mm256_loadu_si256(mk[h].as_ptr().cast()) };
                bv[lb][h] = unsafe {
                    _mm256_maskload_pd(b.as_ptr().wrapping_add(lb * LANES + 4 * h), masks[lb][h])
                };
            }
        }
        for (i, o) in out.iter_mut().enumerate() {
            let row = unsafe { x.as_ptr().add(i * d) };
            let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
            for lb in 0..nb {
                let (x0, x1) = unsafe {
                    (
                        _mm256_maskload_pd(row.wrapping_add(lb * LANES), masks[lb][0]),
                        _mm256_maskload_pd(row.wrapping_add(lb * LANES + 4), masks[lb][1]),
                    )
                };
                lo = _mm256_add_pd(lo, _mm256_mul_pd(x0, bv[lb][0]));
                hi = _mm256_add_pd(hi, _mm256_mul_pd(x1, bv[lb][1]));
            }
            let t = _mm256_add_pd(lo, hi);
            let w = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd::<1>(t));
            *o = _mm_cvtsd_f64(_mm_add_sd(w, _mm_unpackhi_pd(w, w)));
        }
    }

    /// [`super::scaled_portable`]: $m$ = `r.len()` rows.
    ///
    /// # Safety
    /// `x` holds at least `r.len() * d` values, `g` at least `d`, $d \le 24$.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scaled_512(x: &[f64], d: usize, r: &[f64], g: &mut [f64]) {
        let nb = d.div_ceil(LANES);
        let masks: [__mmask8; 3] = std::array::from_fn(|lb| if lb < nb { mask8(d, lb) } else { 0 });
        let mut acc = [_mm512_setzero_pd(); 3];
        for (i, &ri) in r.iter().enumerate() {
            let row = unsafe { x.as_ptr().add(i * d) };
            let rv = _mm512_set1_pd(ri);
            for lb in 0..nb {
                let xv = unsafe { _mm512_maskz_loadu_pd(masks[lb], row.wrapping_add(lb * LANES)) };
                acc[lb] = _mm512_add_pd(acc[lb], _mm512_mul_pd(rv, xv));
            }
        }
        let mut sums = [0.0; 3 * LANES];
        for (dst, a) in sums.chunks_exact_mut(LANES).zip(&acc).take(nb) {
            unsafe { _mm512_storeu_pd(dst.as_mut_ptr(), *a) };
        }
        for (ga, s) in g[..d].iter_mut().zip(&sums) {
            *ga += s;
        }
    }

    /// [`super::copies_portable`]: $m$ = `out.len() / (s d)` rows.
    ///
    /// # Safety
    /// `x` holds at least $md$ values, `w` at least $(s-1)\,$`stride`$ + m$, $d \le 24$.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn copies_512(
        x: &[f64],
        d: usize,
        w: &[f64],
        stride: usize,
        s: usize,
        out: &mut [f64],
    ) {
        let nb = d.div_ceil(LANES);
        let masks: [__mmask8; 3] = std::array::from_fn(|lb| if lb < nb { mask8(d, lb) } else { 0 });
        for (i, oi) in out.chunks_exact_mut(s * d).enumerate() {
            let row = unsafe { x.as_ptr().add(i * d) };
            let mut xv = [_mm512_setzero_pd(); 3];
            for lb in 0..nb {
                xv[lb] = unsafe { _mm512_maskz_loadu_pd(masks[lb], row.wrapping_add(lb * LANES)) };
            }
            for (j, part) in oi.chunks_exact_mut(d).enumerate() {
                let wv = _mm512_set1_pd(w[j * stride + i]);
                for lb in 0..nb {
                    let dst = part.as_mut_ptr().wrapping_add(lb * LANES);
                    unsafe { _mm512_mask_storeu_pd(dst, masks[lb], _mm512_mul_pd(wv, xv[lb])) };
                }
            }
        }
    }

    /// As [`copies_512`], in pairs of 4-lane registers.
    ///
    /// # Safety
    /// As [`copies_512`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn copies_256(
        x: &[f64],
        d: usize,
        w: &[f64],
        stride: usize,
        s: usize,
        out: &mut [f64],
    ) {
        let nb = d.div_ceil(LANES);
        let mut masks = [[_mm256_setzero_si256(); 2]; 3];
        for (lb, m) in masks.iter_mut().enumerate().take(nb) {
            for (mh, k) in m.iter_mut().zip(&mask4x2(d, lb)) {
                *mh = unsafe { _mm256_loadu_si256(k.as_ptr().cast()) };
            }
        }
        for (i, oi) in out.chunks_exact_mut(s * d).enumerate() {
            let row = unsafe { x.as_ptr().add(i * d) };
            let mut xv = [[_mm256_setzero_pd(); 2]; 3];
            for lb in 0..nb {
                for h in 0..2 {
                    xv[lb][h] = unsafe {
                        _mm256_maskload_pd(row.wrapping_add(lb * LANES + 4 * h), masks[lb][h])
                    };
                }
            }
            for (j, part) in oi.chunks_exact_mut(d).enumerate() {
                let wv = _mm256_set1_pd(w[j * stride + i]);
                for lb in 0..nb {
                    for h in 0..2 {
                        let dst = part.as_mut_ptr().wrapping_add(lb * LANES + 4 * h);
                        let v = _mm256_mul_pd(wv, xv[lb][h]);
                        unsafe { _mm256_maskstore_pd(dst, masks[lb][h], v) };
                    }
                }
            }
        }
    }

    /// As [`scaled_512`], in pairs of 4-lane registers.
    ///
    /// # Safety
    /// As [`scaled_512`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scaled_256(x: &[f64], d: usize, r: &[f64], g: &mut [f64]) {
        let nb = d.div_ceil(LANES);
        let mut masks = [[_mm256_setzero_si256(); 2]; 3];
        for (lb, m) in masks.iter_mut().enumerate().take(nb) {
            for (mh, k) in m.iter_mut().zip(&mask4x2(d, lb)) {
                *mh = unsafe { _mm256_loadu_si256(k.as_ptr().cast()) };
            }
        }
        let mut acc = [[_mm256_setzero_pd(); 2]; 3];
        for (i, &ri) in r.iter().enumerate() {
            let row = unsafe { x.as_ptr().add(i * d) };
            let rv = _mm256_set1_pd(ri);
            for lb in 0..nb {
                for h in 0..2 {
                    let xv = unsafe {
                        _mm256_maskload_pd(row.wrapping_add(lb * LANES + 4 * h), masks[lb][h])
                    };
                    acc[lb][h] = _mm256_add_pd(acc[lb][h], _mm256_mul_pd(rv, xv));
                }
            }
        }
        let mut sums = [0.0; 3 * LANES];
        for (dst, a) in sums
            .chunks_exact_mut(4)
            .zip(acc.iter().flatten())
            .take(2 * nb)
        {
            unsafe { _mm256_storeu_pd(dst.as_mut_ptr(), *a) };
        }
        for (ga, s) in g[..d].iter_mut().zip(&sums) {
            *ga += s;
        }
    }
}

/// `out[i]` $= x_i^\top b$ for the $m$ = `out.len()` rows of `x` ($1 \le d \le$
/// [`MAX_D`] values each, row $i$ at `x[i*d..]`), by the widest kernel the CPU offers.
fn rows_dot(x: &[f64], d: usize, b: &[f64], out: &mut [f64]) {
    assert!((1..=MAX_D).contains(&d) && b.len() >= d && x.len() >= out.len() * d);
    match ExpLevel::detect() {
        // SAFETY: the CPU supports the features; lengths checked above.
        #[cfg(target_arch = "x86_64")]
        ExpLevel::Avx512 => unsafe { x86::dot_512(x, d, b, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        ExpLevel::Avx2 => unsafe { x86::dot_256(x, d, b, out) },
        _ => dot_portable(x, d, b, out),
    }
}

/// $g \mathrel{+}= \sum_i r_i x_i$ over the $m$ = `r.len()` rows of `x` (as in
/// [`rows_dot`]), each lane summed in row order and then added to $g$.
fn add_rows_scaled(x: &[f64], d: usize, r: &[f64], g: &mut [f64]) {
    assert!((1..=MAX_D).contains(&d) && g.len() >= d && x.len() >= r.len() * d);
    match ExpLevel::detect() {
        // SAFETY: the CPU supports the features; lengths checked above.
        #[cfg(target_arch = "x86_64")]
        ExpLevel::Avx512 => unsafe { x86::scaled_512(x, d, r, g) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        ExpLevel::Avx2 => unsafe { x86::scaled_256(x, d, r, g) },
        _ => scaled_portable(x, d, r, g),
    }
}

/// The $w$-scaled copies of the weighted Grams' stacked product
/// ([`add_weighted_grams`](crate::inner::gram::add_weighted_grams)): row $i$ of `out`
/// ($sd$ values) becomes $(w_{0i}x_i, \dots, w_{s-1,i}x_i)$ for the $m$ rows of `x`, with
/// $w_{ji}$ = `w[j * stride + i]`; one product per value, so the same bits on every
/// instruction set (tested). The kernels take $d \le$ [`MAX_D`]; the portable loop, which
/// the compiler leaves in 2-lane registers, the rest.
pub(crate) fn scaled_copies(
    x: &[f64],
    d: usize,
    w: &[f64],
    stride: usize,
    s: usize,
    out: &mut [f64],
) {
    let m = x.len() / d.max(1);
    assert!(
        d >= 1 && s >= 1 && out.len() == m * s * d && w.len() >= (s - 1) * stride + m,
        "scaled_copies: lengths do not match"
    );
    match ExpLevel::detect() {
        // SAFETY: the CPU supports the features; lengths checked above.
        #[cfg(target_arch = "x86_64")]
        ExpLevel::Avx512 if d <= MAX_D => unsafe { x86::copies_512(x, d, w, stride, s, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        ExpLevel::Avx2 if d <= MAX_D => unsafe { x86::copies_256(x, d, w, stride, s, out) },
        _ => copies_portable(x, d, w, stride, s, out),
    }
}

/// Whether the kernels take $d$ features and $p$ columns.
fn by_kernels(d: usize, p: usize) -> bool {
    (1..=MAX_D).contains(&d) && p <= MAX_COLS
}

/// The logits of a chunk: column $j$ of `out` (first $m$ = `rows.len()` entries)
/// becomes $X_c^\top b_j$ for the rows `rows` of `data` and the columns of `b`
/// ($d\times p$): by [`rows_dot`] when $d \le$ [`MAX_D`] and $p \le$ [`MAX_COLS`], else
/// one faer product.
pub(crate) fn chunk_dots(
    data: &Dataset,
    rows: Range<usize>,
    b: MatRef<'_, f64>,
    out: &mut Mat<f64>,
) {
    let (d, m) = (data.d(), rows.len());
    if by_kernels(d, b.ncols()) {
        let x = data.x_rows(rows);
        for j in 0..b.ncols() {
            let bj: [f64; MAX_D] = std::array::from_fn(|a| if a < d { b[(a, j)] } else { 0.0 });
            rows_dot(x, d, &bj, &mut out.col_as_slice_mut(j)[..m]);
        }
    } else {
        matmul(
            out.as_mut().subrows_mut(0, m),
            Accum::Replace,
            data.xt().subcols(rows.start, m).transpose(),
            b,
            1.0,
            Par::Seq,
        );
    }
}

/// $G \mathrel{+}= X_c R$ for the rows `rows` of `data`, with `r` the column-major
/// $m\times p$ weights and `g` the column-major $d\times p$ sums: by
/// [`add_rows_scaled`] when $d \le$ [`MAX_D`] and $p \le$ [`MAX_COLS`], else one faer
/// product.
pub(crate) fn chunk_add_scaled(
    data: &Dataset,
    rows: Range<usize>,
    r: &[f64],
    p: usize,
    g: &mut [f64],
) {
    let (d, m) = (data.d(), rows.len());
    if by_kernels(d, p) {
        let x = data.x_rows(rows);
        for (rj, gj) in r.chunks_exact(m.max(1)).zip(g.chunks_exact_mut(d)).take(p) {
            add_rows_scaled(x, d, rj, gj);
        }
    } else {
        matmul(
            MatMut::from_column_major_slice_mut(g, d, p),
            Accum::Add,
            data.xt().subcols(rows.start, m),
            MatRef::from_column_major_slice(&r[..m * p], m, p),
            1.0,
            Par::Seq,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn draw(len: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random::<f64>() * 4.0 - 2.0).collect()
    }

    /// Both kernels against plain sums, for one to three lane blocks, and with the same
    /// bits from every instruction set the machine has.
    #[test]
    fn thin_products_match_plain_sums_with_the_same_bits_everywhere() {
        for (m, d, p) in [
            (37, 1, 1),
            (50, 8, 2),
            (61, 11, 1),
            (40, 17, 5),
            (33, 24, 3),
        ] {
            let x = draw(m * d, 1 + d as u64);
            let b = draw(p * d, 2 + d as u64);
            let ld = m + 3;
            let r = draw(p * ld, 3 + d as u64);
            let mut dots = vec![f64::NAN; p * ld];
            let mut g = draw(p * d, 4);
            let g0 = g.clone();
            for j in 0..p {
                rows_dot(&x, d, &b[j * d..], &mut dots[j * ld..j * ld + m]);
                add_rows_scaled(&x, d, &r[j * ld..j * ld + m], &mut g[j * d..(j + 1) * d]);
            }
            for j in 0..p {
                for i in 0..m {
                    let plain: f64 = (0..d).map(|a| x[i * d + a] * b[j * d + a]).sum();
                    let got = dots[j * ld + i];
                    assert!(
                        (got - plain).abs() <= 1e-13 * (1.0 + plain.abs()),
                        "{got} {plain}"
                    );
                }
                for a in 0..d {
                    let plain: f64 =
                        g0[j * d + a] + (0..m).map(|i| r[j * ld + i] * x[i * d + a]).sum::<f64>();
                    let got = g[j * d + a];
                    assert!(
                        (got - plain).abs() <= 1e-12 * (1.0 + plain.abs()),
                        "{got} {plain}"
                    );
                }
            }
            let bits = |v: &[f64]| v.iter().map(|t| t.to_bits()).collect::<Vec<_>>();
            let mut portable = vec![f64::NAN; p * ld];
            let mut gp = g0.clone();
            for j in 0..p {
                let bj = &b[j * d..(j + 1) * d];
                dot_portable(&x, d, bj, &mut portable[j * ld..j * ld + m]);
                let rj = &r[j * ld..j * ld + m];
                scaled_portable(&x, d, rj, &mut gp[j * d..(j + 1) * d]);
            }
            assert_eq!(bits(&portable[..]), bits(&dots[..]));
            assert_eq!(bits(&gp), bits(&g));
            #[cfg(target_arch = "x86_64")]
            for (name, ok) in [
                ("avx2", std::arch::is_x86_feature_detected!("avx2")),
                ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ] {
                if !ok {
                    continue;
                }
                let mut v = vec![f64::NAN; p * ld];
                let mut gv = g0.clone();
                for j in 0..p {
                    let (bj, oj) = (&b[j * d..(j + 1) * d], &mut v[j * ld..j * ld + m]);
                    let (rj, gj) = (&r[j * ld..j * ld + m], &mut gv[j * d..(j + 1) * d]);
                    // SAFETY: the feature was detected; lengths as the kernels need.
                    unsafe {
                        if name == "avx2" {
                            x86::dot_256(&x, d, bj, oj);
                            x86::scaled_256(&x, d, rj, gj);
                        } else {
                            x86::dot_512(&x, d, bj, oj);
                            x86::scaled_512(&x, d, rj, gj);
                        }
                    }
                }
                assert_eq!(bits(&portable[..]), bits(&v[..]), "{name}");
                assert_eq!(bits(&gp), bits(&gv), "{name}");
            }
        }
    }

    /// `lane_dot` against plain sums, for lengths around the lane count.
    #[test]
    fn lane_dot_matches_plain_sums() {
        for len in [0, 1, 7, 8, 9, 63, 200] {
            let u = draw(len, 7 + len as u64);
            let v = draw(len, 8 + len as u64);
            let plain: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
            let got = lane_dot(&u, Some(&v));
            assert!(
                (got - plain).abs() <= 1e-13 * (1.0 + plain.abs()),
                "{got} {plain}"
            );
            let plain: f64 = u.iter().sum();
            let got = lane_dot(&u, None);
            assert!(
                (got - plain).abs() <= 1e-13 * (1.0 + plain.abs()),
                "{got} {plain}"
            );
        }
    }

    /// The scaled copies: each value one product $w_{ji}x_{ia}$, the same bits from every
    /// instruction set, for one to three lane blocks and beyond the kernels' width.
    #[test]
    fn scaled_copies_are_the_products_with_the_same_bits_everywhere() {
        for (m, d, s) in [
            (37, 1, 3),
            (50, 8, 2),
            (61, 11, 11),
            (40, 17, 7),
            (33, 24, 5),
            (9, 30, 4),
        ] {
            let x = draw(m * d, 5 + d as u64);
            let stride = m + 2;
            let w = draw(s * stride, 6 + d as u64);
            let mut out = vec![f64::NAN; m * s * d];
            scaled_copies(&x, d, &w, stride, s, &mut out);
            for i in 0..m {
                for j in 0..s {
                    for a in 0..d {
                        let want = w[j * stride + i] * x[i * d + a];
                        assert_eq!(out[i * s * d + j * d + a].to_bits(), want.to_bits());
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            for (name, ok) in [
                ("avx2", std::arch::is_x86_feature_detected!("avx2")),
                ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ] {
                if !ok || d > MAX_D {
                    continue;
                }
                let mut v = vec![f64::NAN; m * s * d];
                // SAFETY: the feature was detected; lengths as the kernels need.
                unsafe {
                    if name == "avx2" {
                        x86::copies_256(&x, d, &w, stride, s, &mut v);
                    } else {
                        x86::copies_512(&x, d, &w, stride, s, &mut v);
                    }
                }
                let bits = |t: &[f64]| t.iter().map(|u| u.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&out), bits(&v), "{name}");
            }
        }
    }

    /// The chunk wrappers give faer's products, on the kernels ($d \le 24$, at most two
    /// columns) and on faer's path (wider, or more columns).
    #[test]
    fn chunk_products_match_faer() {
        for (n, d, p) in [(300, 11, 1), (300, 11, 2), (300, 11, 3), (200, 30, 2)] {
            let x = draw(n * d, 7 + d as u64);
            let data = Dataset::from_rows(&x, d, &vec![0.0; n], 1).unwrap();
            let rows = 17..n - 5;
            let m = rows.len();
            let b = Mat::from_fn(d, p, |a, j| ((a * 3 + j * 5) % 7) as f64 - 3.0);
            let mut out = Mat::<f64>::zeros(n, p);
            chunk_dots(&data, rows.clone(), b.as_ref(), &mut out);
            let xc = data.xt().subcols(rows.start, m);
            let expect = xc.transpose() * &b;
            let r = draw(m * p, 9);
            let mut g = draw(d * p, 10);
            let mut want = Mat::from_fn(d, p, |a, j| g[j * d + a]);
            chunk_add_scaled(&data, rows.clone(), &r, p, &mut g);
            want += xc * MatRef::from_column_major_slice(&r, m, p);
            for j in 0..p {
                for i in 0..m {
                    let (a, e) = (out[(i, j)], expect[(i, j)]);
                    assert!(
                        (a - e).abs() <= 1e-12 * (1.0 + e.abs()),
                        "d {d} p {p}: {a} {e}"
                    );
                }
                for a in 0..d {
                    let (v, e) = (g[j * d + a], want[(a, j)]);
                    assert!(
                        (v - e).abs() <= 1e-11 * (1.0 + e.abs()),
                        "d {d} p {p}: {v} {e}"
                    );
                }
            }
        }
    }
}
