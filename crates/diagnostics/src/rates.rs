//! Rates: the linear rate certified by $\hat\alpha$, the rate observed on a run, and the
//! EM-map rate (Meng–Rubin SEM).
//!
//! * **Certified.** If $L$ is $\alpha$-strongly convex and $1$-smooth relative to
//!   $\mathcal A$ on a region containing the iterates, EM (mirror descent with unit step)
//!   satisfies $L(\theta_t) - L^\star \le (1-\alpha)^t\,(L(\theta_0) - L^\star)$, so
//!   $\epsilon$-suboptimality takes at most
//!   $t = \big\lceil \log(\epsilon/(L_0 - L^\star)) / \log(1 - \alpha)\big\rceil$ iterations
//!   ([`predicted_rate`], [`iterations_to`]).
//! * **Observed.** From objective values $L_t$: ratios of successive decreases
//!   $q_t = (L_{t+1} - L_{t+2})/(L_t - L_{t+1})$ (free of $L^\star$), and suboptimality
//!   ratios $(L_{t+1} - L^\star)/(L_t - L^\star)$ with $L^\star$ from Aitken's
//!   $\Delta^2$ extrapolation $L^\star = L_{t+2} - \frac{(L_{t+1} - L_{t+2})^2}{(L_t - L_{t+1}) - (L_{t+1} - L_{t+2})}$
//!   on the last reliable triple ([`observed_rate`], [`aitken_limit`]).
//! * **EM map.** $DM(\theta^\star)$ by central differences of the EM map,
//!   $DM_{:,j} \approx (M(\theta^\star + h_j e_j) - M(\theta^\star - h_j e_j))/(2h_j)$, and its
//!   spectral radius ([`em_map_jacobian`], [`spectral_radius`]).
//!
//! **Scales.** Near $\theta^\star$ the parameter error contracts by $\lambda = \rho(DM)$ per
//! iteration and $L - L^\star$, quadratic in it, by $\lambda^2$. The local Bregman ratio
//! gives $1 - \hat\alpha \to \lambda_{\max}(I_c^{-1}I_m) = \lambda$ (linear realisations).
//! So the certified rate $1 - \hat\alpha$ bounds the observed objective rate $q \approx \lambda^2$
//! from above, and compares like-for-like with $\sqrt q$ (reported as
//! [`ObservedRate::contraction`]) and with the SEM radius.

use crate::error::{DiagnosticsError, Result};
use faer::Mat;
use serde::{Deserialize, Serialize};

/// The certified rate on the objective gap, $1 - \alpha$, for $\alpha \in (0, 1]$;
/// `None` when $\alpha \le 0$ (no linear rate is certified) or not finite.
pub fn predicted_rate(alpha: f64) -> Option<f64> {
    (alpha.is_finite() && alpha > 0.0).then(|| (1.0 - alpha).max(0.0))
}

/// Iterations after which $(1-\alpha)^t\,\text{gap}_0 \le \epsilon$:
/// $t = \lceil\log(\epsilon/\text{gap}_0)/\log(1-\alpha)\rceil$ (0 when already below;
/// 1 when $\alpha \ge 1$); `None` when $\alpha \le 0$ or an input is not finite and positive.
pub fn iterations_to(alpha: f64, initial_gap: f64, target: f64) -> Option<u64> {
    if !(alpha.is_finite()
        && alpha > 0.0
        && initial_gap.is_finite()
        && target > 0.0
        && target.is_finite())
    {
        return None;
    }
    if initial_gap <= target {
        return Some(0);
    }
    if alpha >= 1.0 {
        return Some(1);
    }
    let t = (target / initial_gap).ln() / (1.0 - alpha).ln();
    Some(t.ceil() as u64)
}

/// The rate read off a sequence of objective values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedRate {
    /// Median of the successive-decrease ratios $q_t$ over the tail of the linear phase
    /// (the last half of the reliable ratios): the observed linear rate of $L - L^\star$.
    pub rate: f64,
    /// $\sqrt{\text{rate}}$: the matching per-iteration contraction of the parameter error,
    /// comparable with $1-\hat\alpha$ and the SEM radius.
    pub contraction: f64,
    /// Median suboptimality ratio $(L_{t+1} - L^\star)/(L_t - L^\star)$ over the same tail
    /// (`None` when $L^\star$ could not be estimated).
    pub gap_rate: Option<f64>,
    /// $L^\star$ used for `gap_rate`: Aitken's estimate when available, else the last value.
    pub l_star: f64,
    /// Whether `l_star` came from Aitken extrapolation.
    pub l_star_aitken: bool,
    /// Reliable ratios found (both decreases above the noise floor).
    pub n_ratios: usize,
    /// Ratios in the median.
    pub n_used: usize,
    /// First index $t$ of the analysed values.
    pub start: usize,
    /// Number of increases $L_{t+1} > L_t + \text{noise}$ over the whole sequence.
    pub increases: usize,
    /// The largest increase (0 when monotone).
    pub max_increase: f64,
}

/// Noise floor for differences of objective values: `rel * max(1, |L_last|)`.
pub fn noise_floor(values: &[f64], rel: f64) -> f64 {
    rel * values.last().map_or(1.0, |v| v.abs().max(1.0))
}

/// Aitken's $\Delta^2$ limit from the last triple whose two decreases exceed `noise` and
/// contract ($d_t > d_{t+1} > $ `noise`): $L^\star = L_{t+2} - d_{t+1}^2/(d_t - d_{t+1})$.
pub fn aitken_limit(values: &[f64], noise: f64) -> Option<f64> {
    if values.len() < 3 {
        return None;
    }
    (0..values.len() - 2).rev().find_map(|t| {
        let d0 = values[t] - values[t + 1];
        let d1 = values[t + 1] - values[t + 2];
        (d1 > noise && d0 > d1).then(|| values[t + 2] - d1 * d1 / (d0 - d1))
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len();
    if m % 2 == 1 {
        v[m / 2]
    } else {
        0.5 * (v[m / 2 - 1] + v[m / 2])
    }
}

/// The observed rate of `values[start..]` (see [`ObservedRate`]); `noise_rel` sets the
/// noise floor ([`noise_floor`]). `None` when fewer than one reliable ratio exists (the run
/// is too short, converged in a step, or never decreased).
pub fn observed_rate(values: &[f64], start: usize, noise_rel: f64) -> Option<ObservedRate> {
    let noise = noise_floor(values, noise_rel);
    let mut increases = 0;
    let mut max_increase = 0.0f64;
    for w in values.windows(2) {
        let inc = w[1] - w[0];
        if inc > noise {
            increases += 1;
            max_increase = max_increase.max(inc);
        }
    }
    let tail = values.get(start..)?;
    if tail.len() < 3 {
        return None;
    }
    let mut ratios = Vec::new();
    for t in 0..tail.len() - 2 {
        let d0 = tail[t] - tail[t + 1];
        let d1 = tail[t + 1] - tail[t + 2];
        if d0.abs() > noise && d1.abs() > noise {
            ratios.push((t, d1 / d0));
        }
    }
    if ratios.is_empty() {
        return None;
    }
    let n_ratios = ratios.len();
    let keep = n_ratios.div_ceil(2);
    let last = &ratios[n_ratios - keep..];
    let mut q: Vec<f64> = last.iter().map(|r| r.1).collect();
    let rate = median(&mut q);
    let aitken = aitken_limit(tail, noise);
    let l_last = *tail.last()?;
    let l_star = aitken.map_or(l_last, |a| a.min(l_last));
    let mut g: Vec<f64> = last
        .iter()
        .filter_map(|&(t, _)| {
            let (a, b) = (tail[t] - l_star, tail[t + 1] - l_star);
            (a > 10.0 * noise && b > 10.0 * noise).then(|| b / a)
        })
        .collect();
    let gap_rate = (!g.is_empty()).then(|| median(&mut g));
    Some(ObservedRate {
        rate,
        contraction: rate.max(0.0).sqrt(),
        gap_rate,
        l_star,
        l_star_aitken: aitken.is_some(),
        n_ratios,
        n_used: keep,
        start,
        increases,
        max_increase,
    })
}

/// An EM map $\theta \mapsto M(\theta)$ (E-step then M-step), writing into its second argument.
pub type EmMapFn<'a> = dyn Fn(&[f64], &mut [f64]) -> em_as_md::Result<()> + Sync + 'a;

/// Result of the Meng–Rubin SEM computation.
#[derive(Debug, Clone)]
pub struct SemResult {
    /// $DM(\theta)$ by central differences.
    pub jacobian: Mat<f64>,
    /// Spectral radius $\max_j|\lambda_j(DM)|$.
    pub radius: f64,
    /// $\|M(\theta) - \theta\|_\infty$: how far `theta` is from a fixed point.
    pub fixed_point_residual: f64,
}

/// $DM(\theta)_{:,j} = (M(\theta + h_je_j) - M(\theta - h_je_j))/(2h_j)$,
/// $h_j = $ `rel_step`$\cdot\max(1, |\theta_j|)$, and its spectral radius.
///
/// # Errors
/// `InvalidConfig` for a non-positive step; `Model` when the EM map fails;
/// `Linalg` when the eigen-solver fails or an entry is not finite.
pub fn em_map_jacobian(map: &EmMapFn<'_>, theta: &[f64], rel_step: f64) -> Result<SemResult> {
    if !(rel_step.is_finite() && rel_step > 0.0) {
        return Err(crate::ratios::invalid("sem_step", "finite and > 0"));
    }
    let p = theta.len();
    let mut m0 = vec![0.0; p];
    map(theta, &mut m0)?;
    let fixed_point_residual = m0
        .iter()
        .zip(theta)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let mut jac = Mat::zeros(p, p);
    let (mut plus, mut minus) = (vec![0.0; p], vec![0.0; p]);
    let mut t = theta.to_vec();
    for j in 0..p {
        let h = rel_step * theta[j].abs().max(1.0);
        t[j] = theta[j] + h;
        map(&t, &mut plus)?;
        t[j] = theta[j] - h;
        map(&t, &mut minus)?;
        t[j] = theta[j];
        for i in 0..p {
            jac[(i, j)] = (plus[i] - minus[i]) / (2.0 * h);
        }
    }
    let radius = spectral_radius(&jac)?;
    Ok(SemResult {
        jacobian: jac,
        radius,
        fixed_point_residual,
    })
}

/// $\max_j |\lambda_j(A)|$ of a square matrix (faer's general eigen-solver).
///
/// # Errors
/// `Linalg` for a non-finite entry or a failed eigen-solve; `DimensionMismatch` for a
/// non-square or empty matrix.
pub fn spectral_radius(a: &Mat<f64>) -> Result<f64> {
    if a.nrows() != a.ncols() || a.nrows() == 0 {
        return Err(DiagnosticsError::DimensionMismatch {
            what: "spectral radius (square matrix)",
            expected: a.nrows(),
            found: a.ncols(),
        });
    }
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            if !a[(i, j)].is_finite() {
                return Err(DiagnosticsError::Linalg {
                    what: "spectral radius",
                    reason: format!("entry ({i}, {j}) is not finite"),
                });
            }
        }
    }
    let ev = a.eigenvalues().map_err(|e| DiagnosticsError::Linalg {
        what: "general eigen-solver",
        reason: format!("{e:?}"),
    })?;
    Ok(ev.iter().map(|c| c.norm()).fold(0.0, f64::max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, rng_seed: proptest::test_runner::RngSeed::Fixed(1001), failure_persistence: None, ..ProptestConfig::default() })]
        /// On an exactly linear sequence L_t = L* + c r^t the observed rate is r, Aitken
        /// recovers L*, and the iteration count is the smallest t with gap below target.
        #[test]
        fn geometric_sequence_is_recovered(r in 0.05f64..0.95, c in 0.1f64..10.0, ls in -3.0f64..3.0) {
            let vals: Vec<f64> = (0..60).map(|t| ls + c * r.powi(t)).collect();
            let o = observed_rate(&vals, 0, 1e-13).unwrap();
            prop_assert!((o.rate - r).abs() < 1e-4, "{} vs {r}", o.rate);
            prop_assert!((o.contraction - r.sqrt()).abs() < 1e-4);
            prop_assert!(o.l_star_aitken);
            prop_assert!((o.l_star - ls).abs() < 1e-9 * (1.0 + c));
            prop_assert!((o.gap_rate.unwrap() - r).abs() < 1e-3);
            prop_assert_eq!(o.increases, 0);
            let alpha = 1.0 - r;
            let t = iterations_to(alpha, c, 1e-6).unwrap();
            prop_assert!(c * r.powi(t as i32) <= 1e-6 * (1.0 + 1e-12));
            prop_assert!(t == 0 || c * r.powi(t as i32 - 1) > 1e-6);
        }
    }

    #[test]
    fn increases_are_counted_and_short_runs_give_none() {
        let vals = [3.0, 2.0, 2.5, 1.0, 0.9, 0.89];
        let o = observed_rate(&vals, 0, 1e-12).unwrap();
        assert_eq!(o.increases, 1);
        assert!((o.max_increase - 0.5).abs() < 1e-12);
        assert!(observed_rate(&[1.0, 0.5], 0, 1e-12).is_none());
        assert!(observed_rate(&[1.0, 1.0, 1.0, 1.0], 0, 1e-12).is_none());
        assert_eq!(predicted_rate(0.0), None);
        assert_eq!(predicted_rate(0.25), Some(0.75));
        assert_eq!(iterations_to(-0.1, 1.0, 1e-3), None);
        assert_eq!(iterations_to(0.5, 1e-4, 1e-3), Some(0));
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn sem_of_a_linear_map_is_its_matrix() {
        // M(θ) = θ* + B(θ − θ*) has DM = B exactly; radius from the eigenvalues of B.
        let b = [[0.5, 0.2], [-0.1, 0.3]];
        let map = move |t: &[f64], out: &mut [f64]| -> em_as_md::Result<()> {
            out[0] = 1.0 + b[0][0] * (t[0] - 1.0) + b[0][1] * (t[1] + 2.0);
            out[1] = -2.0 + b[1][0] * (t[0] - 1.0) + b[1][1] * (t[1] + 2.0);
            Ok(())
        };
        let s = em_map_jacobian(&map, &[1.0, -2.0], 1e-4).unwrap();
        for i in 0..2 {
            for j in 0..2 {
                assert!((s.jacobian[(i, j)] - b[i][j]).abs() < 1e-9);
            }
        }
        // Eigenvalues of [[.5,.2],[-.1,.3]]: 0.4 ± sqrt(0.01 − 0.02) → complex, |λ|² = det = 0.17.
        assert!((s.radius - 0.17f64.sqrt()).abs() < 1e-9);
        assert!(s.fixed_point_residual < 1e-12);
        assert!(matches!(
            em_map_jacobian(&map, &[1.0, -2.0], 0.0),
            Err(DiagnosticsError::InvalidConfig {
                field: "sem_step",
                ..
            })
        ));
        let bad = Mat::from_fn(2, 2, |_, _| f64::NAN);
        assert!(matches!(
            spectral_radius(&bad),
            Err(DiagnosticsError::Linalg { .. })
        ));
    }
}
