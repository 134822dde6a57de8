//! $e^x$ over a whole slice at once, vectorised, with the same bits on every machine.
//!
//! The E-step and the gate's Newton passes take several exponentials per row, and a scalar
//! `f64::exp` call (glibc's) was about a quarter of a gated EM iteration. [`exp_in_place`]
//! evaluates one branch-free kernel over the slice, which the compiler vectorises; the
//! kernel is compiled three times (baseline x86-64, AVX2 and AVX-512) and the widest the
//! CPU supports is chosen at run time, so the build stays portable.
//!
//! **Same result everywhere.** Rust never fuses a multiply and an add on its own, so the
//! vector lanes perform exactly the scalar operations in the same order: the three
//! versions (and non-x86 targets, which use the portable one) return identical bits. The
//! tests check this on whatever the test machine supports.
//!
//! **Method** (Cody–Waite reduction, Tang's scheme without a table):
//! $$ e^x = 2^k e^r,\qquad k = \operatorname{round}(x/\ln 2),\qquad
//!    r = (x - k\,\ln2_{\rm hi}) - k\,\ln2_{\rm lo},\quad |r| \le \tfrac12\ln 2, $$
//! with $\ln 2 = \ln2_{\rm hi} + \ln2_{\rm lo}$ split so that $k\ln2_{\rm hi}$ is exact
//! (fdlibm's constants), $e^r$ the Taylor polynomial of degree 13 (truncation below
//! $(\ln 2/2)^{14}/14! < 5\cdot10^{-18}$) in Horner form, and $2^k$ applied as two
//! exact power-of-two factors $2^{k_1}2^{k_2}$, $k_1 + k_2 = k$, so that results in the
//! subnormal range are rounded once and $x$ near the overflow threshold needs no special
//! case. Arguments are clamped to $[-746, 710]$ first (beyond it $e^x$ is $0$ or
//! $+\infty$ in `f64`, and the clamped value gives exactly that); NaN stays NaN.
//! The error is at most a few units in the last place; the tests bound it against
//! `f64::exp` over the whole range, including the subnormal results.

/// $\log_2 e$.
const LOG2E: f64 = std::f64::consts::LOG2_E;
/// High part of $\ln 2$, fdlibm's `ln2_hi` (its last 32 significand bits are zero, so $k\ln2_{\rm hi}$ is
/// exact for $|k| < 2^{20}$).
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
/// $\ln 2 - \ln2_{\rm hi}$ (fdlibm's `ln2_lo`).
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// $1.5\cdot2^{52}$: adding it rounds a value of magnitude below $2^{51}$ to an integer
/// (to nearest, ties to even), and the integer is then the low bits of the sum.
const SHIFTER: f64 = 6_755_399_441_055_744.0;
/// Taylor coefficients $1/j!$, $j = 13, 12, \dots, 2$ (the terms $1 + r$ are added last).
const INV_FACT: [f64; 12] = [
    1.0 / 6_227_020_800.0,
    1.0 / 479_001_600.0,
    1.0 / 39_916_800.0,
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
];

/// $e^x$ by the method in the [module documentation](self); branch-free so that a loop
/// over it vectorises.
#[inline(always)]
fn exp_kernel(x: f64) -> f64 {
    // Written as selects, so NaN (false in both comparisons) passes through unchanged.
    let x = if x > 710.0 { 710.0 } else { x };
    let x = if x < -746.0 { -746.0 } else { x };
    let t = x * LOG2E + SHIFTER;
    let kf = t - SHIFTER;
    // k in [−1077, 1025], read from the low bits of t.
    let k = (t.to_bits() as i64).wrapping_sub(SHIFTER.to_bits() as i64);
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    // e^r = 1 + r + r²q(r), q(r) = Σ_{j<12} r^j/(j+2)!, q by Estrin's scheme (a tree of
    // depth 4 instead of a chain of 12: the lanes' latency, not their count, bounds speed).
    let c = &INV_FACT;
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let a0 = c[11] + c[10] * r;
    let a1 = c[9] + c[8] * r;
    let a2 = c[7] + c[6] * r;
    let a3 = c[5] + c[4] * r;
    let a4 = c[3] + c[2] * r;
    let a5 = c[1] + c[0] * r;
    let b0 = a0 + a1 * r2;
    let b1 = a2 + a3 * r2;
    let b2 = a4 + a5 * r2;
    let q = (b0 + b1 * r4) + b2 * r8;
    let er = 1.0 + (r + r2 * q);
    // 2^k = 2^{k1} 2^{k2} with k1 = ⌊k/2⌋ (by a logical shift of k + 2048 ≥ 0, since
    // 64-bit arithmetic shifts do not vectorise before AVX-512); both in [−539, 513].
    // (Wrapping operations: for NaN, k is meaningless but the result is NaN regardless.)
    let k1 = ((k.wrapping_add(2048) as u64) >> 1) as i64 - 1024;
    let k2 = k.wrapping_sub(k1);
    let s1 = f64::from_bits((k1.wrapping_add(1023) as u64) << 52);
    let s2 = f64::from_bits((k2.wrapping_add(1023) as u64) << 52);
    er * s1 * s2
}

/// The kernel over a slice (inlined into each target-feature version below).
#[inline(always)]
fn exp_loop(xs: &mut [f64]) {
    for x in xs {
        *x = exp_kernel(*x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn exp_loop_avx2(xs: &mut [f64]) {
    exp_loop(xs);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp_loop_avx512(xs: &mut [f64]) {
    exp_loop(xs);
}

/// The instruction sets [`exp_in_place`] can use on this machine, widest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpLevel {
    /// Baseline (SSE2 on x86-64; whatever the target has elsewhere).
    Portable,
    /// 256-bit AVX2.
    Avx2,
    /// 512-bit AVX-512F.
    Avx512,
}

impl ExpLevel {
    /// The widest level this CPU supports (detected once per call; the detection is
    /// cached by the standard library).
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return ExpLevel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return ExpLevel::Avx2;
            }
        }
        ExpLevel::Portable
    }

    /// Every level this CPU supports, portable first.
    pub fn supported() -> Vec<Self> {
        let top = Self::detect();
        [ExpLevel::Portable, ExpLevel::Avx2, ExpLevel::Avx512]
            .into_iter()
            .filter(|l| *l as u8 <= top as u8)
            .collect()
    }
}

/// $x_j \leftarrow e^{x_j}$ for every entry, vectorised with the widest instruction set
/// the CPU has (see the [module documentation](self) for the method, the accuracy and why
/// the result is the same on every machine). $e^{-\infty} = 0$, $e^{+\infty} = +\infty$,
/// NaN stays NaN; overflow gives $+\infty$ and underflow $0$ or a subnormal, as `f64::exp`.
pub fn exp_in_place(xs: &mut [f64]) {
    exp_in_place_with(ExpLevel::detect(), xs);
}

/// [`exp_in_place`] at a given level (for tests and benchmarks comparing the versions).
/// A level the CPU does not support falls back to the portable version.
pub fn exp_in_place_with(level: ExpLevel, xs: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if level as u8 > ExpLevel::detect() as u8 {
            return exp_loop(xs);
        }
        match level {
            // SAFETY: the CPU supports the feature (checked just above).
            ExpLevel::Avx512 => unsafe { exp_loop_avx512(xs) },
            // SAFETY: as above.
            ExpLevel::Avx2 => unsafe { exp_loop_avx2(xs) },
            ExpLevel::Portable => exp_loop(xs),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = level;
        exp_loop(xs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Distance in units in the last place between two finite non-negative doubles (their
    /// bit patterns are ordered like the values).
    fn ulps(a: f64, b: f64) -> u64 {
        a.to_bits().abs_diff(b.to_bits())
    }

    fn check_against_std(xs: &[f64], max_ulps: u64) {
        for level in ExpLevel::supported() {
            let mut ys = xs.to_vec();
            exp_in_place_with(level, &mut ys);
            for (&x, &y) in xs.iter().zip(&ys) {
                let e = x.exp();
                assert!(
                    ulps(y, e) <= max_ulps,
                    "{level:?}: exp({x:e}) = {y:e}, std {e:e} ({} ulps)",
                    ulps(y, e)
                );
            }
        }
    }

    #[test]
    fn within_two_ulps_of_std_over_the_whole_range() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut xs: Vec<f64> = (0..200_000)
            .map(|_| rng.random_range(-760.0..720.0))
            .collect();
        xs.extend((0..100_000).map(|_| rng.random_range(-1.0..1.0)));
        xs.extend((0..50_000).map(|_| rng.random_range(-1e-6..1e-6)));
        // An evenly spaced sweep through the reduction's rounding boundaries k ± 1/2.
        xs.extend((-2100..2100).map(|j| (j as f64 + 0.5) * std::f64::consts::LN_2 / 2.0));
        check_against_std(&xs, 2);
    }

    #[test]
    fn subnormal_results_and_thresholds() {
        // Results below 2^-1022 are subnormal: the absolute error is then what counts, and
        // a few ulps of the subnormal grid is one rounding.
        let mut xs: Vec<f64> = (0..20_000)
            .map(|j| -708.0 - 38.0 * j as f64 / 20_000.0)
            .collect();
        xs.extend([
            709.782_712_893_383_9,
            709.782_712_893_384,
            709.79,
            -745.133_219_101_941_1,
            -745.133_219_101_941_2,
            -745.2,
            -708.396_418_532_264_1,
        ]);
        check_against_std(&xs, 2);
    }

    #[test]
    fn special_values() {
        for level in ExpLevel::supported() {
            let mut xs = [
                0.0,
                -0.0,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NAN,
                -f64::NAN,
                1e300,
                -1e300,
                f64::MIN_POSITIVE,
                1.0,
            ];
            exp_in_place_with(level, &mut xs);
            assert_eq!(xs[0], 1.0);
            assert_eq!(xs[1], 1.0);
            assert_eq!(xs[2], f64::INFINITY);
            assert_eq!(xs[3], 0.0);
            assert!(xs[4].is_nan() && xs[5].is_nan(), "{level:?}");
            assert_eq!(xs[6], f64::INFINITY);
            assert_eq!(xs[7], 0.0);
            assert_eq!(xs[8], 1.0);
            assert!(ulps(xs[9], std::f64::consts::E) <= 1);
        }
    }

    #[test]
    fn every_level_gives_the_same_bits() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        // Odd length, so the vector loops' scalar tails are exercised too.
        let xs: Vec<f64> = (0..100_003)
            .map(|_| rng.random_range(-750.0..712.0))
            .collect();
        let mut portable = xs.clone();
        exp_in_place_with(ExpLevel::Portable, &mut portable);
        for level in ExpLevel::supported() {
            let mut ys = xs.clone();
            exp_in_place_with(level, &mut ys);
            let same = ys
                .iter()
                .zip(&portable)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{level:?} differs from the portable version");
            // And the dispatched entry point is one of them.
        }
        let mut ys = xs.clone();
        exp_in_place(&mut ys);
        assert!(ys
            .iter()
            .zip(&portable)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
