//! Initialisation: where EM starts.
//!
//! EM only climbs to the optimum of the basin it starts in, so the start decides which
//! optimum a restart finds. Mixtures of regressions are the hard case: two regression
//! lines that cross overlap in every region of $(x, y)$, so a start that groups points by
//! position (k-means) puts every restart in the same wrong basin. The strategies below
//! draw starts in different ways; the default, [`InitMethod::Auto`], spreads the restarts
//! across them. Each restart $r$ draws only from its own seeded stream
//! ([`restart_rng`](crate::fit::restart_rng)`(seed, r)`), so the same seed gives the same
//! starts at any thread count.
//!
//! Every method but the last two produces posterior responsibilities $r_{ik}$ (rows summing
//! to one), and one M-step turns them into $\theta_0$ (see
//! [`theta_from_responsibilities`](crate::fit::theta_from_responsibilities)):
//!
//! * [`InitMethod::RandomPartition`] (as R's flexmix): each row goes to a uniformly random
//!   expert, $z_i \sim \mathcal U\{0..K-1\}$ ([`random_partition_labels`]), softened by
//!   [`HARD_FLOOR`] (below);
//! * [`InitMethod::Subset`] (as R's mixtools): expert $k$ is fitted by its weighted M-step
//!   on its own random subset $S_k$ of $m$ rows, the subsets disjoint
//!   ([`random_subsets`], [`subset_size`]); the gate starts uniform ($\pi_k = 1/K$). The
//!   subset is as small as the expert allows, $m = p_E + 1$ with $p_E$ the expert's
//!   parameter count ([`Expert::n_params`](crate::Expert::n_params)), because a subset
//!   lies inside one component with probability $\approx K^{1-m}$: small subsets are what
//!   make some starts land near a true expert (the RANSAC argument);
//! * [`InitMethod::KMeansPlusPlus`]: k-means++ seeding ($D^2$ sampling) followed by a few
//!   Lloyd iterations on the standardised columns of $(x, y)$ (constant columns such as
//!   the intercept are skipped), turned into hard labels ([`kmeanspp_labels`]) and then
//!   into responsibilities $r_{ik} = (1-\varepsilon)\,[z_i = k] + \varepsilon/K$ with
//!   $\varepsilon$ = [`HARD_FLOOR`] so that no expert starts with zero weight (which would
//!   make its weighted least-squares system singular);
//! * [`InitMethod::Random`]: $r_i \sim \mathrm{Dirichlet}(1,\dots,1)$ drawn as normalised
//!   $\mathrm{Exp}(1)$ variables ([`random_responsibilities`]);
//! * [`InitMethod::ShortEm`] (Biernacki, Celeux & Govaert 2003, "Choosing starting values
//!   for the EM algorithm…", CSDA 41): [`SHORT_EM_CANDIDATES`] cheap starts (alternately
//!   [`InitMethod::Subset`] and [`InitMethod::RandomPartition`]), each run for
//!   [`SHORT_EM_ITERS`] EM iterations; the one with the largest log-likelihood is the
//!   restart's $\theta_0$ and is run to convergence. Over the restarts of a fit this is
//!   "many short runs, keep the best few, run them to convergence": one kept per restart;
//! * [`InitMethod::Theta`]: the caller's parameters.
//!
//! [`InitMethod::Auto`] gives restart $r$ the strategy [`AUTO_CYCLE`]$[r \bmod 4]$:
//! k-means++, short-EM, random partition, random subsets, so one start suffices for
//! well-separated data (k-means++ first, as before) and 20 starts try each strategy 5 times.

use crate::data::Dataset;
use crate::error::{MoeError, Result};
use rand::seq::index::sample;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::Exp1;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Weight spread over all experts when hard labels become responsibilities.
pub const HARD_FLOOR: f64 = 0.05;

/// Lloyd iterations after k-means++ seeding.
pub const LLOYD_ITERS: usize = 10;

/// EM iterations of each short run of [`InitMethod::ShortEm`] (Biernacki et al. use 5).
pub const SHORT_EM_ITERS: u64 = 5;

/// Cheap starts tried by one [`InitMethod::ShortEm`] restart.
pub const SHORT_EM_CANDIDATES: usize = 10;

/// The strategies [`InitMethod::Auto`] cycles through: restart $r$ uses entry $r \bmod 4$.
pub const AUTO_CYCLE: [InitMethod; 4] = [
    InitMethod::KMeansPlusPlus,
    InitMethod::ShortEm,
    InitMethod::RandomPartition,
    InitMethod::Subset,
];

/// How the starting parameters are chosen (see the [module](self) documentation for each
/// strategy and why it exists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum InitMethod {
    /// Restart $r$ uses [`AUTO_CYCLE`]$[r \bmod 4]$.
    #[default]
    Auto,
    /// Every row to a uniformly random expert (flexmix), softened by [`HARD_FLOOR`], then
    /// one M-step.
    RandomPartition,
    /// Each expert fitted on its own random subset of [`subset_size`] rows (mixtools),
    /// uniform gate.
    Subset,
    /// k-means++ on $(x, y)$, hard labels softened by [`HARD_FLOOR`], then one M-step.
    KMeansPlusPlus,
    /// Best of [`SHORT_EM_CANDIDATES`] short EM runs ([`SHORT_EM_ITERS`] iterations) from
    /// subset and random-partition starts.
    ShortEm,
    /// Random Dirichlet(1, …, 1) responsibilities, then one M-step.
    Random,
    /// The given parameter vector (restarts then all start here).
    Theta(Vec<f64>),
}

impl InitMethod {
    /// The strategy restart `index` uses: [`AUTO_CYCLE`] for [`InitMethod::Auto`], itself
    /// otherwise.
    pub fn for_restart(&self, index: usize) -> InitMethod {
        match self {
            InitMethod::Auto => AUTO_CYCLE[index % AUTO_CYCLE.len()].clone(),
            m => m.clone(),
        }
    }

    /// The name used by the command line (`--init`) and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            InitMethod::Auto => "auto",
            InitMethod::RandomPartition => "random",
            InitMethod::Subset => "subset",
            InitMethod::KMeansPlusPlus => "kmeans",
            InitMethod::ShortEm => "short-em",
            InitMethod::Random => "dirichlet",
            InitMethod::Theta(_) => "given",
        }
    }

    /// The method named `name` ([`InitMethod::name`]; `kmeans++` is accepted for
    /// `kmeans`), `None` for an unknown name or `given`.
    pub fn from_name(name: &str) -> Option<InitMethod> {
        Some(match name {
            "auto" => InitMethod::Auto,
            "random" => InitMethod::RandomPartition,
            "subset" => InitMethod::Subset,
            "kmeans" | "kmeans++" => InitMethod::KMeansPlusPlus,
            "short-em" => InitMethod::ShortEm,
            "dirichlet" => InitMethod::Random,
            _ => return None,
        })
    }
}

/// Hard labels with every row sent to a uniformly random expert: $z_i \sim \mathcal
/// U\{0..K-1\}$ independently.
pub fn random_partition_labels(n: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    (0..n).map(|_| rng.random_range(0..k.max(1))).collect()
}

/// Rows per expert for [`InitMethod::Subset`]: $m = \min(p_E + 1,\ \lfloor n/K \rfloor)$
/// with $p_E$ = `expert_params`, the fewest rows that determine the expert with one to
/// spare (see the [module](self) documentation), and never more than a $K$-th of the data.
pub fn subset_size(expert_params: usize, n: usize, k: usize) -> usize {
    (expert_params + 1).min(n / k.max(1)).max(1)
}

/// $K$ disjoint random subsets of `m` rows each, drawn together without replacement
/// (uniform over all such choices), returned as hard labels: `Some(k)` for the rows of
/// $S_k$, `None` for the others.
///
/// # Errors
/// `InvalidParam { name: "n_experts" }` when $Km > n$.
pub fn random_subsets(
    n: usize,
    k: usize,
    m: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Option<usize>>> {
    if k * m > n {
        return Err(MoeError::InvalidParam {
            name: "n_experts",
            reason: format!("{k} subsets of {m} rows need {} rows, found {n}", k * m),
        });
    }
    let mut labels = vec![None; n];
    for (j, i) in sample(rng, n, k * m).into_iter().enumerate() {
        labels[i] = Some(j / m);
    }
    Ok(labels)
}

/// Row-major $n\times K$ responsibilities, each row an independent
/// $\mathrm{Dirichlet}(1,\dots,1)$ draw: $r_{ik} = E_{ik}/\sum_l E_{il}$, $E_{ik}\sim\mathrm{Exp}(1)$.
pub fn random_responsibilities(n: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut r = vec![0.0; n * k];
    for row in r.chunks_mut(k.max(1)) {
        let mut s = 0.0;
        for v in row.iter_mut() {
            let e: f64 = rng.sample(Exp1);
            // Exp(1) is > 0 with probability one; guard the measure-zero case anyway.
            *v = e.max(f64::MIN_POSITIVE);
            s += *v;
        }
        row.iter_mut().for_each(|v| *v /= s);
    }
    r
}

/// Responsibilities from hard labels: $r_{ik} = (1-\varepsilon)[z_i = k] + \varepsilon/K$.
pub fn hard_responsibilities(labels: &[usize], k: usize, floor: f64) -> Vec<f64> {
    let mut r = vec![floor / k as f64; labels.len() * k];
    for (i, &z) in labels.iter().enumerate() {
        r[i * k + z] += 1.0 - floor;
    }
    r
}

/// The standardised points $(x_i, y_i)$ with constant columns dropped, read from the data
/// on demand: a copy would hold $n$ more rows of every column (as much as the design
/// itself) for the whole start.
struct StdPoints<'a> {
    data: &'a Dataset,
    /// Kept columns $j$ (features, then targets) with their mean and standard deviation.
    keep: Vec<(usize, f64, f64)>,
}

impl<'a> StdPoints<'a> {
    fn new(data: &'a Dataset) -> Self {
        let (n, d, q) = (data.n(), data.d(), data.q());
        let mut keep = Vec::new();
        for j in 0..d + q {
            let col = |i: usize| Self::raw(data, i, j);
            let mean = (0..n).map(col).sum::<f64>() / n as f64;
            let var = (0..n).map(|i| (col(i) - mean).powi(2)).sum::<f64>() / n as f64;
            if var > 1e-12 * (1.0 + mean * mean) {
                keep.push((j, mean, var.sqrt()));
            }
        }
        StdPoints { data, keep }
    }
    fn raw(data: &Dataset, i: usize, j: usize) -> f64 {
        let d = data.d();
        if j < d {
            data.x(i)[j]
        } else {
            data.y(i)[j - d]
        }
    }
    /// The dimension $m$ of a point.
    fn dim(&self) -> usize {
        self.keep.len()
    }
    /// Point $i$ into `out` ($m$ values).
    fn write(&self, i: usize, out: &mut [f64]) {
        for (o, &(j, mean, sd)) in out.iter_mut().zip(&self.keep) {
            *o = (Self::raw(self.data, i, j) - mean) / sd;
        }
    }
    /// $d_i \leftarrow \min(d_i, \lVert p_i - c\rVert^2)$ for every row (in parallel;
    /// each row's value does not depend on the split).
    fn min_sq_dist(&self, centre: &[f64], d2: &mut [f64]) {
        let m = self.dim();
        d2.par_chunks_mut(KMEANS_CHUNK)
            .enumerate()
            .for_each(|(ci, part)| {
                let mut p = vec![0.0; m];
                for (l, v) in part.iter_mut().enumerate() {
                    self.write(ci * KMEANS_CHUNK + l, &mut p);
                    *v = v.min(sq_dist(&p, centre));
                }
            });
    }
    /// Labels every row with its nearest centre (the first on ties) and returns the
    /// per-centre sums of the points and the counts: chunk sums merged in chunk order, so
    /// the result does not depend on the number of threads.
    fn assign(&self, centres: &[f64], labels: &mut [usize]) -> (Vec<f64>, Vec<usize>) {
        let m = self.dim();
        let k = centres.len() / m.max(1);
        let parts: Vec<(Vec<f64>, Vec<usize>)> = labels
            .par_chunks_mut(KMEANS_CHUNK)
            .enumerate()
            .map(|(ci, part)| {
                let (mut sums, mut counts) = (vec![0.0; k * m], vec![0usize; k]);
                let mut p = vec![0.0; m];
                for (l, z) in part.iter_mut().enumerate() {
                    self.write(ci * KMEANS_CHUNK + l, &mut p);
                    let mut best = (f64::INFINITY, 0);
                    for (c, centre) in centres.chunks_exact(m).enumerate() {
                        let dist = sq_dist(&p, centre);
                        if dist < best.0 {
                            best = (dist, c);
                        }
                    }
                    *z = best.1;
                    counts[*z] += 1;
                    for (s, v) in sums[*z * m..(*z + 1) * m].iter_mut().zip(&p) {
                        *s += v;
                    }
                }
                (sums, counts)
            })
            .collect();
        let (mut sums, mut counts) = (vec![0.0; k * m], vec![0usize; k]);
        for (s, c) in parts {
            sums.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
            counts.iter_mut().zip(&c).for_each(|(a, b)| *a += b);
        }
        (sums, counts)
    }
}

/// Rows per chunk of the k-means passes (fixed, so the merged sums are thread-independent).
const KMEANS_CHUNK: usize = 4096;

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Hard labels $z_i \in \{0..K-1\}$ from k-means++ seeding plus [`LLOYD_ITERS`] Lloyd
/// iterations on the standardised $(x, y)$ columns.
///
/// # Errors
/// `InvalidParam { name: "n_experts" }` when $K = 0$ or $K > n$.
pub fn kmeanspp_labels(data: &Dataset, k: usize, rng: &mut ChaCha8Rng) -> Result<Vec<usize>> {
    let n = data.n();
    if k == 0 || k > n {
        return Err(MoeError::InvalidParam {
            name: "n_experts",
            reason: format!("between 1 and the number of rows ({n})"),
        });
    }
    let pts = StdPoints::new(data);
    let m = pts.dim();
    if m == 0 {
        // Every column constant: all points coincide; spread labels round-robin.
        return Ok((0..n).map(|i| i % k).collect());
    }
    // D² seeding.
    let mut centres = vec![0.0; k * m];
    let first = rng.random_range(0..n);
    pts.write(first, &mut centres[..m]);
    let mut d2 = vec![f64::INFINITY; n];
    pts.min_sq_dist(&centres[..m], &mut d2);
    for c in 1..k {
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let mut u = rng.random_range(0.0..total);
            let mut chosen = n - 1;
            for (i, &w) in d2.iter().enumerate() {
                if u < w {
                    chosen = i;
                    break;
                }
                u -= w;
            }
            chosen
        } else {
            rng.random_range(0..n)
        };
        pts.write(pick, &mut centres[c * m..(c + 1) * m]);
        pts.min_sq_dist(&centres[c * m..(c + 1) * m], &mut d2);
    }
    // Lloyd: assign, then move each centre to its points' mean (kept where it has none).
    let mut labels = vec![0usize; n];
    for it in 0..=LLOYD_ITERS {
        let (sums, counts) = pts.assign(&centres, &mut labels);
        if it == LLOYD_ITERS {
            break;
        }
        for c in 0..k {
            if counts[c] > 0 {
                for j in 0..m {
                    centres[c * m + j] = sums[c * m + j] / counts[c] as f64;
                }
            }
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn random_rows_are_distributions_and_seeded() {
        let mut a = ChaCha8Rng::seed_from_u64(3);
        let mut b = ChaCha8Rng::seed_from_u64(3);
        let r = random_responsibilities(500, 3, &mut a);
        assert_eq!(r, random_responsibilities(500, 3, &mut b));
        for row in r.chunks(3) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert!(row.iter().all(|v| *v > 0.0));
        }
        // Dirichlet(1,1,1) marginal mean is 1/3 and variance 1/18 (independent check).
        let mean = r.iter().step_by(3).sum::<f64>() / 500.0;
        let var = r.iter().step_by(3).map(|v| (v - mean).powi(2)).sum::<f64>() / 500.0;
        assert!((mean - 1.0 / 3.0).abs() < 0.04, "{mean}");
        assert!((var - 1.0 / 18.0).abs() < 0.015, "{var}");
    }

    /// Random data with a constant column (dropped by `StdPoints`) and uneven scales.
    fn uneven(n: usize, seed: u64) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x: Vec<f64> = (0..n)
            .flat_map(|_| {
                let a: f64 = rng.random_range(-1.0..1.0);
                let b: f64 = rng.random_range(100.0..300.0);
                [a, 7.0, b]
            })
            .collect();
        let y: Vec<f64> = (0..n).map(|_| rng.random_range(-0.01..0.01)).collect();
        Dataset::from_rows(&x, 3, &y, 1).unwrap()
    }

    #[test]
    fn chunked_lloyd_sums_and_distances_are_the_direct_ones() {
        let data = uneven(5000, 4);
        let pts = StdPoints::new(&data);
        let m = pts.dim();
        assert_eq!(m, 3, "the constant column is dropped");
        // Standardised points, formed directly.
        let p: Vec<Vec<f64>> = (0..data.n())
            .map(|i| {
                let mut v = vec![0.0; m];
                pts.write(i, &mut v);
                v
            })
            .collect();
        let centres = [p[3].clone(), p[10].clone(), vec![0.1, -0.2, 0.3]].concat();
        let mut labels = vec![0; data.n()];
        let (got_sums, got_counts) = pts.assign(&centres, &mut labels);
        let mut sums = vec![0.0; 3 * m];
        let mut counts = vec![0usize; 3];
        for (i, pi) in p.iter().enumerate() {
            let d: Vec<f64> = centres
                .chunks(m)
                .map(|c| pi.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum())
                .collect();
            let best = (0..3).fold(0, |b, c| if d[c] < d[b] { c } else { b });
            // Ties aside (none here at this precision), the same nearest centre.
            assert!(d[labels[i]] <= d[best] * (1.0 + 1e-12) + 1e-15, "row {i}");
            counts[labels[i]] += 1;
            for j in 0..m {
                sums[labels[i] * m + j] += pi[j];
            }
        }
        assert_eq!(got_counts, counts);
        for (g, d) in got_sums.iter().zip(&sums) {
            assert!((g - d).abs() < 1e-9 * d.abs().max(1.0), "{g} vs {d}");
        }
        // D² distances likewise.
        let mut d2 = vec![f64::INFINITY; data.n()];
        pts.min_sq_dist(&centres[..m], &mut d2);
        for (i, pi) in p.iter().enumerate() {
            let direct: f64 = pi
                .iter()
                .zip(&centres[..m])
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            assert!((d2[i] - direct).abs() <= 1e-12 * direct.max(1.0), "row {i}");
        }
    }

    #[test]
    fn kmeans_labels_do_not_depend_on_the_thread_count() {
        // More rows than one chunk, so that chunk sums are merged.
        let data = uneven(3 * KMEANS_CHUNK + 17, 5);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| kmeanspp_labels(&data, 3, &mut ChaCha8Rng::seed_from_u64(9)).unwrap())
        };
        assert_eq!(run(1), run(2));
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn kmeans_separates_well_separated_clusters() {
        // Three clusters in (x, y) around (0, -10), (5, 0), (10, 10).
        let n = 90;
        let x: Vec<f64> = (0..n)
            .map(|i| 5.0 * (i % 3) as f64 + (i % 7) as f64 * 0.01)
            .collect();
        let y: Vec<f64> = (0..n)
            .map(|i| 10.0 * ((i % 3) as f64 - 1.0) + 0.1 * ((i * 13 % 5) as f64))
            .collect();
        let data = Dataset::from_rows(&x, 1, &y, 1).unwrap().with_intercept();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let z = kmeanspp_labels(&data, 3, &mut rng).unwrap();
        for i in 0..n {
            for j in 0..n {
                assert_eq!(z[i] == z[j], i % 3 == j % 3);
            }
        }
        let r = hard_responsibilities(&z, 3, HARD_FLOOR);
        assert!((r[z[0]] - (1.0 - HARD_FLOOR + HARD_FLOOR / 3.0)).abs() < 1e-15);
        assert!((r[..3].iter().sum::<f64>() - 1.0).abs() < 1e-15);
        let e = kmeanspp_labels(&data, 91, &mut rng).unwrap_err();
        assert!(matches!(
            e,
            MoeError::InvalidParam {
                name: "n_experts",
                ..
            }
        ));
    }
}
