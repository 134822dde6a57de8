//! Bregman ratios in the stacked natural parameters $\Phi$: empirical relative smoothness
//! $\hat L$ and relative strong convexity $\hat\alpha$.
//!
//! For realisable $\Phi = \Phi(\theta)$, $\Phi' = \Phi(\theta')$ the ratio is
//! $$ \rho(\theta, \theta') = \frac{D_\ell(\Phi, \Phi')}{D_{\mathcal A}(\Phi, \Phi')}
//!   = \frac{\ell(\Phi) - \ell(\Phi') - \langle \nabla\ell(\Phi'), \Phi - \Phi'\rangle}
//!          {\mathcal A(\Phi) - \mathcal A(\Phi') - \langle \nabla\mathcal A(\Phi'), \Phi - \Phi'\rangle}, $$
//! with $\mathcal A(\Phi) = \frac1n\sum_i A(\varphi_i)$ and
//! $\nabla_{\varphi_i}\ell = \frac1n(\nabla A(\varphi_i) - \mathbb E_{z\mid y_i;\varphi_i}[T(y_i,z)])$.
//! Over a set of pairs, $\hat L = \max\rho$ and $\hat\alpha = \min\rho$.
//!
//! **Why $\hat L \le 1$.** $\mathcal A - \ell = \frac1n\sum_i B_i(\varphi_i)$ with
//! $B_i(\varphi) = \log\sum_z h(y_i, z)\,e^{\langle T(y_i, z), \varphi\rangle}$, the
//! log-partition of row $i$'s posterior over $z$, which is convex; hence
//! $D_\ell = D_{\mathcal A} - D_{\mathcal A - \ell} \le D_{\mathcal A}$.
//! The ratio is computed from the definition (values and gradient of $\ell$, values and
//! gradient of $A$), not from this decomposition. Note what each check can catch: since
//! $D_{\mathcal A} - D_\ell = D_B$ holds for *any* functions `log_partition` and `mean` that
//! the family supplies (the $A$ terms cancel), $\rho \le 1$ whenever $D_{\mathcal A} > 0$; a
//! measured $\rho > 1$ therefore flags round-off or an implementation error in the
//! objective, while a family whose `mean` is not the gradient of its `log_partition` (or
//! whose $A$ is not convex) shows up as pairs with $D_{\mathcal A} < 0$, counted in
//! [`RatioSummary::negative_bregman`].
//!
//! **Round-off.** Numerator and denominator are differences of $O(1)$ numbers that are
//! $O(\|\Phi - \Phi'\|^2)$ small; the ratio's absolute round-off is estimated as
//! $16\,\varepsilon_{\text{mach}}\,S / D_{\mathcal A}$ with $S$ the average absolute size of
//! the terms summed. Pairs with a larger estimate than the configured bound, or with
//! $D_{\mathcal A}$ below a floor, are skipped and counted, never silently used.

use crate::error::{DiagnosticsError, Result};
use em_as_md::inner::parallel::fold_rows_with;
use em_as_md::solve::problem::{
    point_rows, BlockScratch, PointBlock, PointRows, RowObservation, POINT_BLOCK_ROWS,
};
use em_as_md::{ConditionalFamily, Mergeable, Problem};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Numerator, denominator and round-off estimate of one Bregman ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairRatio {
    /// $D_\ell(\Phi, \Phi') = \ell(\Phi) - \ell(\Phi') - \langle\nabla\ell(\Phi'), \Phi-\Phi'\rangle$.
    pub numerator: f64,
    /// $D_{\mathcal A}(\Phi, \Phi')$.
    pub denominator: f64,
    /// Estimated absolute round-off of `numerator / denominator`
    /// ($16\,\varepsilon\,S/D_{\mathcal A}$; `f64::INFINITY` when $D_{\mathcal A} \le 0$).
    pub roundoff: f64,
    /// Estimated absolute round-off of the denominator, $16\,\varepsilon\,S$.
    pub denominator_roundoff: f64,
}

impl PairRatio {
    /// $\rho = D_\ell / D_{\mathcal A}$, or `None` when $D_{\mathcal A} \le 0$.
    pub fn ratio(&self) -> Option<f64> {
        (self.denominator > 0.0).then(|| self.numerator / self.denominator)
    }
}

/// The Bregman ratio $\rho(\theta, \theta')$ of one pair, in one parallel pass over the
/// rows: [`bregman_ratios`] (where the formula and its row terms are) on the one pair.
///
/// # Errors
/// `DimensionMismatch` for a wrong-length parameter; `Model` when a realised parameter
/// leaves the natural domain or a row has zero likelihood.
pub fn bregman_ratio<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    theta: &[f64],
    theta_prime: &[f64],
) -> Result<PairRatio> {
    bregman_ratios(problem, &[theta, theta_prime], &[(0, 1)])?
        .pop()
        .unwrap_or_else(|| {
            Err(DiagnosticsError::InvalidTrajectory {
                reason: "no ratio for the pair".into(),
            })
        })
}

/// The ratio from its row sums: divides by $n$, rejects a non-finite part, and sets the
/// round-off estimates $16\,\varepsilon\,S/D_{\mathcal A}$ and $16\,\varepsilon\,S$.
fn finish_ratio(num: f64, den: f64, scale: f64, n: usize) -> Result<PairRatio> {
    let nf = n as f64;
    let (num, den, scale) = (num / nf, den / nf, scale / nf);
    if !(num.is_finite() && den.is_finite()) {
        return Err(em_as_md::MoeError::NonFinite {
            what: "Bregman ratio",
        }
        .into());
    }
    let roundoff = if den > 0.0 {
        16.0 * f64::EPSILON * scale / den
    } else {
        f64::INFINITY
    };
    Ok(PairRatio {
        numerator: num,
        denominator: den,
        roundoff,
        denominator_roundoff: 16.0 * f64::EPSILON * scale,
    })
}

/// A model error met at one point of [`bregman_ratios`] while folding a chunk: the row
/// and stage (0: realisation/posterior/log-partition, 1: mean) fix which error of a pair
/// the one-pair computation would have met first.
#[derive(Debug, Clone)]
struct PointFailure {
    row: usize,
    stage: u8,
    error: em_as_md::MoeError,
}

/// Per-worker buffers of [`bregman_ratios`]' row loop: the target terms of a block's rows
/// (shared by all points), one [`PointBlock`] per point, the evaluators' scratch, and the
/// pair contractions of a block.
struct BatchScratch {
    obs: Vec<RowObservation>,
    blocks: Vec<PointBlock>,
    sc: BlockScratch,
    g_mean: Vec<f64>,
    g_post: Vec<f64>,
}

/// Row sums of every pair, and the first failure of every point (as a first or second
/// element: `fail_eval`, or as a second element only: `fail_mean`).
struct BatchAcc {
    /// `(num, den, scale)` per pair, flattened.
    sums: Vec<f64>,
    fail_eval: Vec<Option<PointFailure>>,
    fail_mean: Vec<Option<PointFailure>>,
}

impl Mergeable for BatchAcc {
    fn merge(&mut self, other: Self) {
        for (a, b) in self.sums.iter_mut().zip(other.sums) {
            *a += b;
        }
        // Chunks merge in row order: the earlier failure is the one kept.
        for (a, b) in self
            .fail_eval
            .iter_mut()
            .zip(other.fail_eval)
            .chain(self.fail_mean.iter_mut().zip(other.fail_mean))
        {
            if a.is_none() {
                *a = b;
            }
        }
    }
}

/// The row terms of one pair on a block of $m$ rows, added to `out = (num, den, scale)`
/// row by row in row order:
/// $g^\mu_i = \langle\nabla A(\varphi'_i), \varphi_i - \varphi'_i\rangle$,
/// $g^T_i = \langle\mathbb E_{\text{post}}'\[T\], \varphi_i - \varphi'_i\rangle$ (each summed over
/// the components in order), then
/// $-\log p_i + \log p'_i - (g^\mu_i - g^T_i)$, $A_i - A'_i - g^\mu_i$ and the sum of
/// their terms' magnitudes; `p` is the dimension of $\varphi$. `g_mean`, `g_post` are
/// work buffers of length $\ge m$.
fn pair_block_terms(
    a: &PointBlock,
    b: &PointBlock,
    (m, p): (usize, usize),
    g_mean: &mut [f64],
    g_post: &mut [f64],
    out: &mut [f64],
) {
    let (g_mean, g_post) = (&mut g_mean[..m], &mut g_post[..m]);
    g_mean.fill(0.0);
    g_post.fill(0.0);
    // Component by component over the rows (vectorised); per row the components are
    // summed in order, as the one-row contraction does.
    let (pa, pb) = (&a.phi[..p * m], &b.phi[..p * m]);
    let (mb, tb) = (&b.mean[..p * m], &b.post_stats[..p * m]);
    for ((pa, pb), (mb, tb)) in pa
        .chunks_exact(m)
        .zip(pb.chunks_exact(m))
        .zip(mb.chunks_exact(m).zip(tb.chunks_exact(m)))
    {
        for (l, ((x, y), (u, t))) in pa.iter().zip(pb).zip(mb.iter().zip(tb)).enumerate() {
            let d = x - y;
            g_mean[l] += u * d;
            g_post[l] += t * d;
        }
    }
    let (lp, lp2) = (&a.log_lik[..m], &b.log_lik[..m]);
    let (aa, a2) = (&a.log_partition[..m], &b.log_partition[..m]);
    for l in 0..m {
        let (gm, gp) = (g_mean[l], g_post[l]);
        out[0] += -lp[l] + lp2[l] - (gm - gp);
        out[1] += aa[l] - a2[l] - gm;
        out[2] += lp[l].abs() + lp2[l].abs() + aa[l].abs() + a2[l].abs() + gm.abs() + gp.abs();
    }
}

/// The Bregman ratios of many pairs $(\theta, \theta')$,
/// $$ \rho(\theta,\theta') = \frac{\frac1n\sum_i\big[-\log p(y_i;\varphi_i) + \log p(y_i;\varphi'_i)
///   \;-\; \langle \nabla A(\varphi'_i) - \mathbb E_{z\mid y_i;\varphi'_i}\[T\], \varphi_i - \varphi'_i\rangle\big]}
///   {\frac1n\sum_i\big[A(\varphi_i) - A(\varphi'_i) - \langle \nabla A(\varphi'_i), \varphi_i - \varphi'_i\rangle\big]}, $$
/// in **one** parallel pass over the rows, by blocks of [`POINT_BLOCK_ROWS`] rows: the
/// target's terms $T(y_i, z)$, $\log h(y_i, z)$ are computed once per row
/// ([`RowObservation`]), each distinct point gets the model's row evaluator
/// ([`point_rows`]: the model's own, such as the mixture of experts', or the generic row
/// functions; they give the same numbers up to round-off), which evaluates the block's
/// rows at once ([`PointRows::posterior_block`]: the mixture takes the block's
/// exponentials in one vectorised call); the row quantities of each distinct point
/// ($\varphi_i$, $\log p(y_i;\varphi_i)$, $A(\varphi_i)$, and for a point that is some
/// pair's $\theta'$ also $\nabla A(\varphi_i)$ and $\mathbb E_{\text{post}}\[T\]$) are
/// computed once per row and point, shared by every pair that uses the point. A pair's row
/// terms depend only on its two points' row quantities and are summed in row order in the
/// same row chunks whatever the batch, so each result is **bit-identical** to
/// `bregman_ratio(problem, &points[a], &points[b])` (the same function on one pair), and
/// for any number of threads, including which model error a failing pair reports (up to
/// errors at the same row in the same stage).
///
/// `pairs` holds `(a, b)` = indices of $(\theta, \theta')$ into `points`; the result has
/// one entry per pair.
///
/// # Errors
/// The outer `Err` is `DimensionMismatch` for an index outside `points` or a wrong-length
/// point (the first one in pair order); a pair whose evaluation fails in the model gets
/// its own `Err` entry.
pub fn bregman_ratios<M: ConditionalFamily + ?Sized, P: AsRef<[f64]> + Sync>(
    problem: &Problem<'_, M>,
    points: &[P],
    pairs: &[(usize, usize)],
) -> Result<Vec<Result<PairRatio>>> {
    let model = problem.model;
    let data = problem.data;
    let np = model.n_params();
    for &(a, b) in pairs {
        if a >= points.len() || b >= points.len() {
            return Err(DiagnosticsError::DimensionMismatch {
                what: "pair index",
                expected: points.len(),
                found: a.max(b),
            });
        }
        for t in [a, b] {
            if points[t].as_ref().len() != np {
                return Err(DiagnosticsError::DimensionMismatch {
                    what: "theta",
                    expected: np,
                    found: points[t].as_ref().len(),
                });
            }
        }
    }
    // Compact the points in use: `slot[pt]` is the point's index in the row buffers;
    // points with bit-identical coordinates share one slot (their row values are equal).
    let mut slot = vec![usize::MAX; points.len()];
    let mut used: Vec<usize> = Vec::new();
    let mut second: Vec<bool> = Vec::new();
    let same = |u: &[f64], v: &[f64]| u.iter().zip(v).all(|(a, b)| a.to_bits() == b.to_bits());
    for &(a, b) in pairs {
        for (t, is_second) in [(a, false), (b, true)] {
            if slot[t] == usize::MAX {
                slot[t] = match used
                    .iter()
                    .position(|&u| same(points[u].as_ref(), points[t].as_ref()))
                {
                    Some(s) => s,
                    None => {
                        used.push(t);
                        second.push(false);
                        used.len() - 1
                    }
                };
            }
            second[slot[t]] |= is_second;
        }
    }
    let m = used.len();
    let cp: Vec<(usize, usize)> = pairs.iter().map(|&(a, b)| (slot[a], slot[b])).collect();
    let n = data.n();
    let p = model.complete().dim();
    let cap = POINT_BLOCK_ROWS;
    // One row evaluator per distinct point: the model's own (e.g. the mixture's, with
    // what does not depend on the row computed once) or the generic row functions.
    let evals: Vec<Box<dyn PointRows + '_>> = used
        .iter()
        .map(|&u| point_rows(model, points[u].as_ref()))
        .collect();
    let acc = fold_rows_with(
        n,
        |cached: Option<BatchScratch>| {
            let fits = |c: &BatchScratch| {
                c.blocks.len() == m
                    && c.obs.len() == cap
                    && c.sc.fits(model, cap)
                    && c.blocks
                        .iter()
                        .all(|b| b.capacity() == cap && b.phi.len() == p * cap)
            };
            match cached {
                // The target terms are rebuilt (their sizes are the model's, not checked here).
                Some(c) if fits(&c) => BatchScratch {
                    obs: (0..cap).map(|_| RowObservation::new(model)).collect(),
                    ..c
                },
                _ => BatchScratch {
                    obs: (0..cap).map(|_| RowObservation::new(model)).collect(),
                    blocks: (0..m).map(|_| PointBlock::new(model, cap)).collect(),
                    sc: BlockScratch::new(model, cap),
                    g_mean: vec![0.0; cap],
                    g_post: vec![0.0; cap],
                },
            }
        },
        || BatchAcc {
            sums: vec![0.0; 3 * cp.len()],
            fail_eval: vec![None; m],
            fail_mean: vec![None; m],
        },
        |sc, acc, rows| {
            let mut start = rows.start;
            while start < rows.end {
                let block = start..(start + cap).min(rows.end);
                let bm = block.len();
                for (ob, i) in sc.obs.iter_mut().zip(block.clone()) {
                    ob.set(model, data.y(i));
                }
                for u in 0..m {
                    if acc.fail_eval[u].is_some() {
                        continue;
                    }
                    let with_mean = second[u] && acc.fail_mean[u].is_none();
                    let f = evals[u].posterior_block(
                        data,
                        block.clone(),
                        &sc.obs[..bm],
                        with_mean,
                        &mut sc.sc,
                        &mut sc.blocks[u],
                    );
                    if let Some((row, error)) = f.mean {
                        acc.fail_mean[u] = Some(PointFailure {
                            row,
                            stage: 1,
                            error,
                        });
                    }
                    if let Some((row, error)) = f.posterior {
                        acc.fail_eval[u] = Some(PointFailure {
                            row,
                            stage: 0,
                            error,
                        });
                    }
                }
                let BatchAcc {
                    sums,
                    fail_eval,
                    fail_mean,
                } = &mut *acc;
                for (&(ua, ub), out) in cp.iter().zip(sums.chunks_exact_mut(3)) {
                    if fail_eval[ua].is_some() || fail_eval[ub].is_some() || fail_mean[ub].is_some()
                    {
                        continue;
                    }
                    pair_block_terms(
                        &sc.blocks[ua],
                        &sc.blocks[ub],
                        (bm, p),
                        &mut sc.g_mean,
                        &mut sc.g_post,
                        out,
                    );
                }
                start = block.end;
            }
            Ok(())
        },
    )?;
    Ok(cp
        .iter()
        .enumerate()
        .map(|(c, &(ua, ub))| {
            // The one-pair computation meets, in row order, a's evaluation, then b's
            // evaluation, then b's mean.
            let fails = [
                (&acc.fail_eval[ua], 0u8),
                (&acc.fail_eval[ub], 1),
                (&acc.fail_mean[ub], 2),
            ];
            let first = fails
                .iter()
                .filter_map(|(f, o)| f.as_ref().map(|f| ((f.row, *o, f.stage), f)))
                .min_by_key(|(k, _)| *k);
            match first {
                Some((_, f)) => Err(f.error.clone().into()),
                None => finish_ratio(acc.sums[3 * c], acc.sums[3 * c + 1], acc.sums[3 * c + 2], n),
            }
        })
        .collect())
}

/// Sampling and acceptance settings for the ratios.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatioConfig {
    /// Radius (Euclidean, in $\theta$) of the ball around the final iterate that is sampled.
    pub radius: f64,
    /// Number of points sampled uniformly in the ball.
    pub n_samples: usize,
    /// Seed of the sampler (ChaCha8).
    pub seed: u64,
    /// Pairs with $D_{\mathcal A} <$ this are skipped (counted in `skipped_small`).
    pub min_bregman: f64,
    /// Pairs whose ratio round-off estimate exceeds this are skipped (counted in
    /// `skipped_roundoff`).
    pub max_ratio_error: f64,
}

impl Default for RatioConfig {
    fn default() -> Self {
        RatioConfig {
            radius: 0.1,
            n_samples: 24,
            seed: 0x5eed,
            min_bregman: 1e-14,
            max_ratio_error: 1e-8,
        }
    }
}

impl RatioConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// `InvalidConfig` naming the first offending field.
    pub fn validate(&self) -> Result<()> {
        if !(self.radius.is_finite() && self.radius > 0.0) {
            return Err(invalid("radius", "finite and > 0"));
        }
        if !(self.min_bregman.is_finite() && self.min_bregman >= 0.0) {
            return Err(invalid("min_bregman", "finite and >= 0"));
        }
        if !(self.max_ratio_error.is_finite() && self.max_ratio_error > 0.0) {
            return Err(invalid("max_ratio_error", "finite and > 0"));
        }
        Ok(())
    }
}

pub(crate) fn invalid(field: &'static str, reason: &str) -> DiagnosticsError {
    DiagnosticsError::InvalidConfig {
        field,
        reason: reason.to_string(),
    }
}

/// `count` points uniform in the Euclidean ball of radius `radius` around `center`
/// (Gaussian direction, radius $r\,U^{1/p}$), from a ChaCha8 stream seeded with `seed`.
pub fn sample_ball(center: &[f64], radius: f64, count: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let p = center.len();
    (0..count)
        .map(|_| {
            let mut u: Vec<f64> = (0..p).map(|_| std_normal(&mut rng)).collect();
            let norm = u.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
            let r = radius * rng.random::<f64>().powf(1.0 / p.max(1) as f64);
            for (ui, c) in u.iter_mut().zip(center) {
                *ui = c + r * *ui / norm;
            }
            u
        })
        .collect()
}

fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Where a pair comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairKind {
    /// An iterate and the final iterate (either order).
    Trajectory,
    /// Two successive iterates $(\theta_{t+1}, \theta_t)$.
    Consecutive,
    /// A sampled point and the final iterate, or two sampled points.
    Neighbourhood,
    /// A short step from a sampled point along its top missing-information direction.
    Probe,
}

/// One evaluated pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatioRecord {
    /// Provenance.
    pub kind: PairKind,
    /// Index of $\theta$ in the point list given to [`evaluate_pairs`].
    pub first: usize,
    /// Index of $\theta'$.
    pub second: usize,
    /// The ratio and its parts.
    pub value: PairRatio,
}

/// Extremes of the accepted ratios and the bookkeeping of skipped pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatioSummary {
    /// $\hat L = \max\rho$ over accepted pairs (`None` when none was accepted).
    pub l_hat: Option<f64>,
    /// $\hat\alpha = \min\rho$ over accepted pairs.
    pub alpha_hat: Option<f64>,
    /// Round-off estimate of the pair attaining $\hat L$.
    pub l_hat_roundoff: f64,
    /// Provenance of the pair attaining $\hat\alpha$.
    pub alpha_kind: Option<PairKind>,
    /// Accepted pairs.
    pub used: usize,
    /// Pairs skipped for $D_{\mathcal A}$ below the floor.
    pub skipped_small: usize,
    /// Pairs skipped for a round-off estimate above the bound.
    pub skipped_roundoff: usize,
    /// Pairs skipped because the model failed at one end (outside the natural domain).
    pub skipped_domain: usize,
    /// Pairs with $D_{\mathcal A} <$ −(its round-off estimate): the family's `mean` is not the
    /// gradient of a convex `log_partition` (an inconsistent family).
    pub negative_bregman: usize,
    /// The first model error met, in words.
    pub first_domain_error: Option<String>,
    /// Every accepted pair.
    pub records: Vec<RatioRecord>,
}

/// Evaluates $\rho$ on `pairs` of indices into `points` and summarises them. All pairs
/// are evaluated in one pass over the rows ([`bregman_ratios`]; each value is
/// bit-identical to [`bregman_ratio`] on the pair). A model error at a pair is counted in `skipped_domain` (sampled points may leave the
/// natural domain) rather than returned.
///
/// # Errors
/// `InvalidConfig` from [`RatioConfig::validate`]; `DimensionMismatch` for an index
/// outside `points` (reported as such) or a wrong-length point.
pub fn evaluate_pairs<M: ConditionalFamily + ?Sized>(
    problem: &Problem<'_, M>,
    points: &[Vec<f64>],
    pairs: &[(usize, usize, PairKind)],
    cfg: &RatioConfig,
) -> Result<RatioSummary> {
    cfg.validate()?;
    let mut out = RatioSummary {
        l_hat: None,
        alpha_hat: None,
        l_hat_roundoff: 0.0,
        alpha_kind: None,
        used: 0,
        skipped_small: 0,
        skipped_roundoff: 0,
        skipped_domain: 0,
        negative_bregman: 0,
        first_domain_error: None,
        records: Vec::new(),
    };
    let ab: Vec<(usize, usize)> = pairs.iter().map(|&(a, b, _)| (a, b)).collect();
    let values = bregman_ratios(problem, points, &ab)?;
    for (&(a, b, kind), value) in pairs.iter().zip(values) {
        let value = match value {
            Ok(v) => v,
            Err(DiagnosticsError::Model(e)) => {
                out.skipped_domain += 1;
                out.first_domain_error.get_or_insert_with(|| e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(rho) = value.ratio() else {
            if value.denominator < -value.denominator_roundoff {
                out.negative_bregman += 1;
            } else {
                out.skipped_small += 1;
            }
            continue;
        };
        if value.denominator < cfg.min_bregman {
            out.skipped_small += 1;
            continue;
        }
        if value.roundoff > cfg.max_ratio_error {
            out.skipped_roundoff += 1;
            continue;
        }
        out.used += 1;
        if out.l_hat.is_none_or(|l| rho > l) {
            out.l_hat = Some(rho);
            out.l_hat_roundoff = value.roundoff;
        }
        if out.alpha_hat.is_none_or(|l| rho < l) {
            out.alpha_hat = Some(rho);
            out.alpha_kind = Some(kind);
        }
        out.records.push(RatioRecord {
            kind,
            first: a,
            second: b,
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use mirror::ExponentialFamily;
    use proptest::prelude::*;

    /// Independent computation from the `Problem` API: $\ell$ from `objective`,
    /// $\nabla\ell$ from `ell_and_gradient`, $D_{\mathcal A}$ from `stacked_bregman`.
    fn ratio_via_problem<M: ConditionalFamily>(
        p: &Problem<'_, M>,
        a: &[f64],
        b: &[f64],
    ) -> (f64, f64) {
        let la = p.objective(a).unwrap();
        let phi_a = p.realise_all(a).unwrap();
        let phi_b = p.realise_all(b).unwrap();
        let mut g = vec![0.0; phi_b.len()];
        let lb = p.ell_and_gradient(&phi_b, &mut g).unwrap();
        let inner: f64 = g
            .iter()
            .zip(phi_a.iter().zip(&phi_b))
            .map(|(g, (x, y))| g * (x - y))
            .sum();
        (la - lb - inner, p.stacked_bregman(a, b).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, rng_seed: proptest::test_runner::RngSeed::Fixed(1001), failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn fused_ratio_matches_problem_api(
            seed in 0u64..1000, sep in 0.5f64..4.0, curved in any::<bool>(),
            d0 in -0.8f64..0.8, d1 in -0.8f64..0.8, d2 in -0.8f64..0.8,
        ) {
            let data = gmm_data(150, 0.4, -sep / 2.0, sep / 2.0, seed);
            let a = gmm_theta(curved, 0.45, -sep / 2.0 + 0.1, sep / 2.0);
            let b: Vec<f64> = a.iter().zip([d0, d1, d2]).map(|(x, d)| x + d).collect();
            let (num, den) = if curved {
                let p = Problem::new(&GmmCurved, &data).unwrap();
                let r = bregman_ratio(&p, &a, &b).unwrap();
                let (n2, d2) = ratio_via_problem(&p, &a, &b);
                prop_assert!((r.numerator - n2).abs() < 1e-10 * (1.0 + n2.abs()));
                prop_assert!((r.denominator - d2).abs() < 1e-10 * (1.0 + d2.abs()));
                (r.numerator, r.denominator)
            } else {
                let p = Problem::new(&GmmNatural, &data).unwrap();
                let r = bregman_ratio(&p, &a, &b).unwrap();
                let (n2, d2) = ratio_via_problem(&p, &a, &b);
                prop_assert!((r.numerator - n2).abs() < 1e-10 * (1.0 + n2.abs()));
                prop_assert!((r.denominator - d2).abs() < 1e-10 * (1.0 + d2.abs()));
                (r.numerator, r.denominator)
            };
            // L̂ ≤ 1: D_ℓ ≤ D_A for every pair.
            prop_assert!(num <= den + 1e-10, "num {num} > den {den}");
        }
    }

    #[test]
    fn local_ratio_matches_quadratic_form() {
        // For a short pair, ρ → 1 − eᵀ I_m e / eᵀ I_c e; check ρ with finite differences of
        // L along the direction (second difference) against D_A's second difference.
        let data = gmm_data(300, 0.5, -1.0, 1.0, 3);
        let p = Problem::new(&GmmNatural, &data).unwrap();
        let a = gmm_theta(false, 0.5, -1.0, 1.0);
        let e = [0.3, -0.5, 0.8];
        let h = 1e-3;
        let b: Vec<f64> = a.iter().zip(e).map(|(x, d)| x + h * d).collect();
        let c: Vec<f64> = a.iter().zip(e).map(|(x, d)| x - h * d).collect();
        let r = bregman_ratio(&p, &b, &a).unwrap().ratio().unwrap();
        let l = |t: &[f64]| p.objective(t).unwrap();
        let second_l = (l(&b) - 2.0 * l(&a) + l(&c)) / (h * h);
        let ap = |t: &[f64]| TwoGauss.log_partition(t).unwrap();
        let second_a = (ap(&b) - 2.0 * ap(&a) + ap(&c)) / (h * h);
        assert!(
            (r - second_l / second_a).abs() < 5e-3,
            "{r} vs {}",
            second_l / second_a
        );
    }

    #[test]
    fn config_validation_names_field() {
        let bad = RatioConfig {
            radius: -1.0,
            ..RatioConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(DiagnosticsError::InvalidConfig {
                field: "radius",
                ..
            })
        ));
        let bad = RatioConfig {
            max_ratio_error: f64::NAN,
            ..RatioConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(DiagnosticsError::InvalidConfig {
                field: "max_ratio_error",
                ..
            })
        ));
    }

    #[test]
    fn ball_samples_stay_in_ball_and_are_seeded() {
        let c = [1.0, -2.0, 0.5];
        let s = sample_ball(&c, 0.3, 50, 9);
        assert_eq!(s, sample_ball(&c, 0.3, 50, 9));
        for x in &s {
            let d: f64 = x
                .iter()
                .zip(&c)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt();
            assert!(d <= 0.3 + 1e-12);
        }
        assert_ne!(s, sample_ball(&c, 0.3, 50, 10));
    }

    #[test]
    fn wrong_length_is_typed() {
        let data = gmm_data(20, 0.5, -1.0, 1.0, 1);
        let p = Problem::new(&GmmNatural, &data).unwrap();
        let err = bregman_ratio(&p, &[0.0; 2], &[0.0; 3]).unwrap_err();
        assert!(matches!(
            err,
            DiagnosticsError::DimensionMismatch {
                expected: 3,
                found: 2,
                ..
            }
        ));
    }
}
