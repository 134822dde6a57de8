//! The E- and M-steps of a [`MixtureOfExperts`] (its [`EmModel`] implementation); the
//! mathematics, and why they make EM the unit-step KL mirror-descent step, are in
//! [`crate::solve::em`].

use crate::data::Dataset;
use crate::error::{Block, MoeError, Result};
use crate::inner::gram::{add_weighted_grams, gram_buffer_len};
use crate::inner::parallel::{fold_rows_into, fold_rows_with, Mergeable, CHUNK};
use crate::inner::thin::{chunk_add_scaled, chunk_dots, lane_dot};
use crate::inner::InnerStats;
use crate::model::expert::{
    ComponentDensity, GaussianRegression, WeightedFit, WeightedGram, WeightedMoments,
};
use crate::model::gate::{
    constant_gate_mstep, fit_softmax_gate_from, gate_chunk, gate_softmax_rows, GateFit,
    GateScratch, GateSolver, GateStats, GateSums,
};
use crate::model::mixture::{Gating, MixtureOfExperts};
use crate::model::{ConditionalFamily, EmModel};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use mirror::special::{log_sum_exp, softmax_rows, SumOfLogs};
use std::ops::Range;

/// Merged weighted least-squares statistics of $K$ Gaussian-regression experts
/// ([`GaussianRegression`](crate::model::expert::GaussianRegression)):
/// $G_k = \sum_i r_{ik}x_ix_i^\top$, $b_k = \sum_i r_{ik}y_ix_i$, $s_k = \sum_i r_{ik}y_i^2$.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearStats {
    /// $G_k$ ($d\times d$ each).
    pub gram: Vec<Mat<f64>>,
    /// $b_k$ ($d$ each, concatenated).
    pub rhs: Vec<f64>,
    /// $s_k$.
    pub syy: Vec<f64>,
}

/// Merged weighted moments of $K$ Gaussian-mixture components
/// ([`GaussianClusters`](crate::model::expert::GaussianClusters)) about fixed centres
/// $c_k$ (the components' means at the E-step's $\theta$, or the data's mean for
/// statistics from given responsibilities):
/// $s_k = \sum_i r_{ik}(y_i - c_k)$, $S_k = \sum_i r_{ik}(y_i - c_k)(y_i - c_k)^\top$.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterStats {
    /// $c_k$ ($q$ each, concatenated).
    pub centre: Vec<f64>,
    /// $s_k$ ($q$ each, concatenated).
    pub sum: Vec<f64>,
    /// $S_k$ ($q\times q$ each).
    pub scatter: Vec<Mat<f64>>,
}

impl ClusterStats {
    fn zeros(centre: &[f64], k: usize) -> Self {
        let q = centre.len() / k.max(1);
        ClusterStats {
            centre: centre.to_vec(),
            sum: vec![0.0; centre.len()],
            scatter: (0..k).map(|_| Mat::zeros(q, q)).collect(),
        }
    }
}

/// The posterior statistics of a [`MixtureOfExperts`] ([`EmModel::Stats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MoeStats {
    pub(crate) k: usize,
    /// Responsibilities $r_{ik}$, row-major $n\times K$ (rows in data order).
    pub resp: Vec<f64>,
    /// $W_k = \sum_i r_{ik}$.
    pub weight: Vec<f64>,
    /// Gram statistics when the experts offer the Gaussian-regression capability.
    pub linear: Option<LinearStats>,
    /// Weighted moments when the experts offer the Gaussian-mixture capability.
    pub clusters: Option<ClusterStats>,
    /// For a softmax gate solved by Newton: the gate M-step's objective, gradient and
    /// Hessian at the E-step's parameters with these responsibilities as labels (the first
    /// Newton pass); `None` otherwise (the L-BFGS gate does not use them).
    pub gate: Option<GateStats>,
}

impl MoeStats {
    /// No responsibilities and zero sums (the passes write the responsibilities into
    /// one $n\times K$ buffer of their own, [`fold_rows_into`]).
    fn empty(k: usize, d: usize, linear: bool, centres: Option<&[f64]>) -> Self {
        MoeStats {
            k,
            resp: Vec::new(),
            weight: vec![0.0; k],
            linear: linear.then(|| LinearStats {
                gram: (0..k).map(|_| Mat::zeros(d, d)).collect(),
                rhs: vec![0.0; k * d],
                syy: vec![0.0; k],
            }),
            clusters: centres.map(|c| ClusterStats::zeros(c, k)),
            gate: None,
        }
    }
    /// $K$.
    pub fn n_experts(&self) -> usize {
        self.k
    }
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.resp.len() / self.k.max(1)
    }
    /// Responsibilities of expert `k` as a column (allocates $n$ values).
    pub fn column(&self, k: usize) -> Vec<f64> {
        self.resp.iter().skip(k).step_by(self.k).copied().collect()
    }
}

impl Mergeable for MoeStats {
    /// Concatenates the responsibilities (chunks arrive in row order) and adds the sums.
    fn merge(&mut self, other: Self) {
        self.resp.extend_from_slice(&other.resp);
        for (a, b) in self.weight.iter_mut().zip(&other.weight) {
            *a += b;
        }
        if let (Some(a), Some(b)) = (self.linear.as_mut(), other.linear) {
            for (ga, gb) in a.gram.iter_mut().zip(&b.gram) {
                *ga += gb;
            }
            for (x, y) in a.rhs.iter_mut().zip(&b.rhs) {
                *x += y;
            }
            for (x, y) in a.syy.iter_mut().zip(&b.syy) {
                *x += y;
            }
        }
        if let (Some(a), Some(b)) = (self.clusters.as_mut(), other.clusters) {
            for (x, y) in a.sum.iter_mut().zip(&b.sum) {
                *x += y;
            }
            for (sa, sb) in a.scatter.iter_mut().zip(&b.scatter) {
                *sa += sb;
            }
        }
    }
}

/// Work buffers of the E-step for one worker (never merged; reused across chunks and
/// calls, see [`fold_rows_with`]).
struct EScratch {
    /// $(d, K, \dim T, \text{product columns}, \text{linear}, \text{gated}, q_{\text{clusters}})$
    /// the buffers are sized for.
    shape: (usize, usize, usize, usize, bool, bool, usize),
    /// Gaussian-mixture deviations $y_i - c_k$ of a chunk, $K$ blocks of $q\times m$
    /// (column-major), and a $q\times m$ work block.
    dev: Vec<f64>,
    work: Vec<f64>,
    lin: Mat<f64>,
    buf: Vec<f64>,
    w: Vec<f64>,
    t: Vec<f64>,
    eta: Vec<f64>,
    /// Row log-joints $\ell_{ik}$ of a chunk, column-major $m\times K$, then (in place)
    /// its responsibilities.
    ell: Vec<f64>,
    /// A chunk's responsibilities (row-major $m\times K$) when the pass does not keep
    /// them (else they go straight into the output).
    resp: Vec<f64>,
    /// Scratch of [`Expert::add_log_densities`](crate::Expert::add_log_densities).
    fast: Vec<f64>,
    /// Per row, the log-sum-exp of $\ell_{i\cdot}$ in two parts ([`softmax_rows`]).
    lmax: Vec<f64>,
    lsum: Vec<f64>,
    gate: Option<GateScratch>,
}

/// The E-step sums of one chunk.
struct EAcc {
    stats: MoeStats,
    ll: f64,
    gate: Option<GateSums>,
}

impl Mergeable for EAcc {
    fn merge(&mut self, other: Self) {
        self.stats.merge(other.stats);
        self.ll += other.ll;
        if let (Some(a), Some(b)) = (self.gate.as_mut(), other.gate) {
            a.merge(b);
        }
    }
}

/// $L = \frac1n\big(-\sum_i\log p(y_i\mid x_i) + R\big)$ from the merged sum `ll` over
/// $n$ rows and the model's penalty $R$ = `penalty` at the same θ
/// ([`ConditionalFamily::penalty`](crate::model::ConditionalFamily::penalty), 0 without a
/// ridge).
///
/// # Errors
/// `NonFinite` when $L$ is not finite.
pub(crate) fn objective_from_sum(ll: f64, penalty: f64, n: usize) -> Result<f64> {
    let objective = (penalty - ll) / n as f64;
    if !objective.is_finite() {
        return Err(MoeError::NonFinite {
            what: "objective L(θ) in the E-step",
        });
    }
    Ok(objective)
}

/// What one E-step pass computes ([`MixtureOfExperts::e_fold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EPass {
    /// Responsibilities, $L$ and every merged sum (the in-memory E-step).
    Full,
    /// $L$ and the merged sums, no responsibilities kept (a shard's E-step: memory
    /// bounded by the chunk, not by $n$).
    Sums,
    /// Responsibilities and $L$ only (an M-step round that needs the labels).
    Responsibilities,
    /// $L$ only ([`ConditionalFamily::objective_pass`]).
    LogLikelihood,
}

impl MixtureOfExperts {
    /// $L(\theta)$ from the E-step's pass alone ([`EPass::LogLikelihood`]), the penalty
    /// added as [`EmModel::e_step`] adds it.
    pub(crate) fn objective_by_e_pass(&self, data: &Dataset, theta: &[f64]) -> Result<f64> {
        let (_, ll) = self.e_fold(data, theta, EPass::LogLikelihood)?;
        objective_from_sum(ll, self.penalty(theta), data.n())
    }

    fn check_data(&self, data: &Dataset) -> Result<()> {
        if data.d() != self.n_features() || data.q() != self.expert().family().obs_dim() {
            return Err(MoeError::InvalidData {
                row: None,
                column: None,
                reason: format!(
                    "model expects {} features and {} target columns, data has {} and {}",
                    self.n_features(),
                    self.expert().family().obs_dim(),
                    data.d(),
                    data.q()
                ),
            });
        }
        if self.n_experts() > data.n() {
            return Err(MoeError::InvalidParam {
                name: "n_experts",
                reason: format!("{} experts for {} rows", self.n_experts(), data.n()),
            });
        }
        Ok(())
    }

    /// Adds the chunk's weights (and Gram statistics for Gaussian-regression experts) to `stats`,
    /// from the chunk's responsibilities `resp` ($m\times K$).
    fn accumulate_chunk(
        &self,
        data: &Dataset,
        rows: Range<usize>,
        resp: &[f64],
        stats: &mut MoeStats,
        buf: &mut [f64],
        w: &mut [f64],
    ) {
        let k = self.n_experts();
        let m = rows.len();
        // b_k += X_c (r_k ∘ y) for all k in one product (r_k ∘ y as the columns of an
        // m × K matrix in `w`), and s_k += Σ_i r_ik y_i², in lanes (`lane_dot`).
        if let Some(lin) = stats.linear.as_mut() {
            let y = &data.y_all()[rows.clone()];
            for c in 0..k {
                let col = &mut w[c * m..(c + 1) * m];
                for (li, (wl, yi)) in col.iter_mut().zip(y).enumerate() {
                    *wl = resp[li * k + c] * yi;
                }
                lin.syy[c] += lane_dot(col, Some(y));
            }
            chunk_add_scaled(data, rows.clone(), &w[..k * m], k, &mut lin.rhs);
        }
        // r_k as the columns of `w`: W_k += Σ_i r_ik in lanes, and the Grams' weights.
        for c in 0..k {
            let col = &mut w[c * m..(c + 1) * m];
            for (li, wl) in col.iter_mut().enumerate() {
                *wl = resp[li * k + c];
            }
            stats.weight[c] += lane_dot(col, None);
        }
        if let Some(lin) = stats.linear.as_mut() {
            // The K Grams X_c diag(r_k) X_cᵀ, stacked into as few products as fit.
            let grams = &mut lin.gram;
            add_weighted_grams(data, rows, &w[..k * m], k, buf, &mut |c, p| {
                grams[c] += p;
            });
        }
    }

    /// The M-step's statistics from given responsibilities `resp` (row-major $n\times K$,
    /// finite and $\ge 0$), e.g. random or k-means labels: initialisation is then one
    /// [`EmModel::m_step`].
    ///
    /// # Errors
    /// `InvalidParam` on a wrong length or $K > n$; `InvalidData` naming the row of a
    /// negative or non-finite responsibility.
    pub fn stats_from_responsibilities(&self, data: &Dataset, resp: &[f64]) -> Result<MoeStats> {
        self.stats_from_owned_responsibilities(data, resp.to_vec())
    }

    /// [`stats_from_responsibilities`](Self::stats_from_responsibilities) taking the
    /// responsibilities by value: they move into the statistics (a start then holds one
    /// $n\times K$ array, not two).
    pub(crate) fn stats_from_owned_responsibilities(
        &self,
        data: &Dataset,
        resp: Vec<f64>,
    ) -> Result<MoeStats> {
        self.check_data(data)?;
        let k = self.n_experts();
        if resp.len() != data.n() * k {
            return Err(MoeError::InvalidParam {
                name: "responsibilities",
                reason: format!("expected {} values, found {}", data.n() * k, resp.len()),
            });
        }
        if let Some(j) = resp.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(MoeError::InvalidData {
                row: Some(j / k),
                column: Some("responsibility".into()),
                reason: "responsibilities must be finite and >= 0".into(),
            });
        }
        let d = data.d();
        let linear = self.expert().gaussian_regression().is_some();
        // Gaussian-mixture moments about the data's mean (no component means exist yet).
        let q = data.q();
        let cq = if self.expert().gaussian_clusters().is_some() {
            q
        } else {
            0
        };
        let centres: Option<Vec<f64>> = (cq > 0).then(|| {
            let mut mean = vec![0.0; q];
            for yi in data.y_all().chunks_exact(q) {
                for (a, v) in mean.iter_mut().zip(yi) {
                    *a += v;
                }
            }
            let mean: Vec<f64> = mean.iter().map(|v| v / data.n() as f64).collect();
            (0..k).flat_map(|_| mean.iter().copied()).collect()
        });
        type Bufs = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);
        let mut stats = fold_rows_with(
            data.n(),
            |cached: Option<Bufs>| {
                let lens = (
                    if linear { gram_buffer_len(d) } else { 0 },
                    k * CHUNK,
                    k * cq * CHUNK,
                    cq * CHUNK,
                );
                cached
                    .filter(|(b, w, v, u)| (b.len(), w.len(), v.len(), u.len()) == lens)
                    .unwrap_or_else(|| {
                        (
                            vec![0.0; lens.0],
                            vec![0.0; lens.1],
                            vec![0.0; lens.2],
                            vec![0.0; lens.3],
                        )
                    })
            },
            || MoeStats::empty(k, d, linear, centres.as_deref()),
            |(buf, w, dev, work), st, rows| {
                let r = &resp[rows.start * k..rows.end * k];
                self.accumulate_chunk(data, rows.clone(), r, st, buf, w);
                if let (Some(cl), Some(cen)) = (st.clusters.as_mut(), centres.as_ref()) {
                    let m = rows.len();
                    let y = &data.y_all()[rows.start * cq..rows.end * cq];
                    cluster_deviations(y, cq, cen, &mut dev[..k * cq * m]);
                    accumulate_clusters(&dev[..k * cq * m], r, k, m, work, cl);
                }
                Ok(())
            },
        )?;
        // The chunks only add the sums.
        stats.resp = resp;
        Ok(stats)
    }

    /// The E-step's pass at θ over the rows of `data`, computing what `pass` asks for
    /// (see [`EPass`]) and $\sum_i \log p(y_i \mid x_i)$: [`EmModel::e_step`] is [`EPass::Full`]; the shard rounds of
    /// [`crate::shard`] use the others on one chunk at a time. Every variant runs the same
    /// per-row code, so a chunk's responsibilities and sums are those of the full pass.
    ///
    /// # Errors
    /// As [`EmModel::e_step`].
    pub(crate) fn e_fold(
        &self,
        data: &Dataset,
        theta: &[f64],
        pass: EPass,
    ) -> Result<(MoeStats, f64)> {
        self.check_theta(theta)?;
        self.check_data(data)?;
        let (keep_resp, sums) = match pass {
            EPass::Full => (true, true),
            EPass::Sums => (false, true),
            EPass::Responsibilities => (true, false),
            EPass::LogLikelihood => (false, false),
        };
        let k = self.n_experts();
        let d = data.d();
        let expert = self.expert();
        let fam = expert.family();
        let p = fam.dim();
        let r = expert.n_regressed();
        let el = self.expert_len();
        let gated = self.gating() == Gating::Softmax;
        // Everything that does not depend on the row, hoisted out of the loop.
        let consts: Vec<f64> = (0..k)
            .flat_map(|c| self.expert_block(theta, c)[r * d..el].to_vec())
            .collect();
        let lin_rows = match expert.gaussian_regression() {
            Some(g) => Some(gaussian_row_constants(self, g, theta)?),
            None => None,
        };
        let linear = lin_rows.is_some();
        // The Gaussian-mixture fast path: each component's mean, precision factor and
        // normalising constant, and the means as the centres of the merged moments.
        let cluster_parts: Option<Vec<ComponentDensity>> = match expert.gaussian_clusters() {
            Some(g) => Some(
                (0..k)
                    .map(|c| {
                        g.density_parts(self.expert_block(theta, c))
                            .map_err(|e| e.in_block(Block::Expert(Some(c))))
                    })
                    .collect::<Result<_>>()?,
            ),
            None => None,
        };
        let cq = if cluster_parts.is_some() { data.q() } else { 0 };
        let centres: Option<Vec<f64>> = cluster_parts
            .as_ref()
            .map(|parts| parts.iter().flat_map(|c| c.mean.iter().copied()).collect());
        let (coef, gcols) = self.coefficient_matrix(theta, lin_rows.as_ref().map(|l| &l.0[..]));
        let ncols = coef.ncols();
        let gate = self.gate_block(theta);
        let mut glog = vec![0.0; k];
        if !gated {
            glog[..k - 1].copy_from_slice(gate);
        }
        let const_lse_g = if gated { 0.0 } else { log_sum_exp(&glog) };
        let yall = data.y_all();
        let gate_fit = gated && k > 1;
        // Only the Newton gate M-step starts from the E-step's gate sums (L-BFGS makes its
        // own gradient passes and needs no Hessian).
        let gate_sums = sums && gate_fit && self.gate_config().solver == GateSolver::Newton;
        // The responsibilities are written in place, row-major n × K, by each chunk.
        let mut resp_all = vec![0.0; if keep_resp { data.n() * k } else { 0 }];
        let acc = fold_rows_into(
            data.n(),
            keep_resp.then_some((resp_all.as_mut_slice(), k)),
            |cached: Option<EScratch>| {
                let shape = (d, k, p, ncols, linear, gate_fit, cq);
                cached
                    .filter(|s| s.shape == shape)
                    .unwrap_or_else(|| EScratch {
                        shape,
                        lin: Mat::zeros(CHUNK, ncols),
                        buf: vec![0.0; if linear { gram_buffer_len(d) } else { 0 }],
                        dev: vec![0.0; k * cq * CHUNK],
                        work: vec![0.0; cq * CHUNK],
                        w: vec![0.0; k * CHUNK],
                        t: vec![0.0; p],
                        eta: vec![0.0; p],
                        ell: vec![0.0; k * CHUNK],
                        resp: vec![0.0; k * CHUNK],
                        fast: vec![0.0; CHUNK],
                        lmax: vec![0.0; CHUNK],
                        lsum: vec![0.0; CHUNK],
                        gate: gate_fit.then(|| GateScratch::new(d, k)),
                    })
            },
            || EAcc {
                stats: MoeStats::empty(k, d, sums && linear, centres.as_deref().filter(|_| sums)),
                ll: 0.0,
                gate: gate_sums.then(|| GateSums::new(d, k, true)),
            },
            |s, acc, rows, out| {
                let m = rows.len();
                if ncols > 0 {
                    chunk_dots(data, rows.clone(), coef.as_ref(), &mut s.lin);
                }
                // Column slices of the chunk's products (no per-element matrix indexing).
                let cols: Vec<&[f64]> = (0..ncols).map(|j| &s.lin.col_as_slice(j)[..m]).collect();
                // Gate probabilities and LSE_k g_k per row, kept for the gate's sums.
                if let Some(gs) = s.gate.as_mut() {
                    gate_softmax_rows(
                        &cols[..k - 1],
                        k,
                        &mut gs.probs[..m * k],
                        &mut gs.gmax[..m],
                        &mut gs.gsum[..m],
                    )?;
                }
                // log p(y_i | x_i) = LSE_k ℓ_ik − LSE_k g_k = (m_i − m^g_i) + log(z_i / z^g_i),
                // with the logarithms summed by block (one per few hundred rows, not two
                // per row): `shifts` gathers the m's, `logs`/`glogs` the z's.
                let (mut shifts, mut logs, mut glogs) = (0.0, SumOfLogs::new(), SumOfLogs::new());
                // ℓ_ik = g_k + log p_F(y_i; η_k(x_i)) (the gate's LSE is subtracted once),
                // built column by column (column-major m × K in `s.ell`): gate logits
                // g_k (g_{K-1} = 0) and LSE_k g_k = m^g + log z^g first.
                let ell = &mut s.ell[..k * m];
                for (c, col) in ell.chunks_exact_mut(m).enumerate() {
                    match (gated, cols.get(c)) {
                        (true, Some(g)) if c + 1 < k => col.copy_from_slice(&g[..m]),
                        (true, _) => col.fill(0.0),
                        (false, _) => col.fill(glog[c]),
                    }
                }
                if !gated {
                    shifts -= const_lse_g * m as f64;
                } else if let Some(gs) = s.gate.as_ref() {
                    for (mx, z) in gs.gmax[..m].iter().zip(&gs.gsum[..m]) {
                        shifts -= mx;
                        glogs.add_log(*z);
                    }
                }
                if let (Some(parts), Some(cen)) = (cluster_parts.as_ref(), centres.as_ref()) {
                    let y = &yall[rows.start * cq..rows.end * cq];
                    cluster_deviations(y, cq, cen, &mut s.dev[..k * cq * m]);
                    cluster_log_densities(parts, &s.dev[..k * cq * m], m, &mut s.work, ell);
                } else if let Some((_, cst, inv)) = lin_rows.as_ref() {
                    let y = &yall[rows.clone()];
                    for (c, col) in ell.chunks_exact_mut(m).enumerate() {
                        let mean = &cols[gcols + c][..m];
                        for (l, (yi, mu)) in col.iter_mut().zip(y.iter().zip(mean)) {
                            *l += linear_gaussian_log_density(*yi, *mu, cst[c], inv[c]);
                        }
                    }
                } else {
                    for i in rows.clone() {
                        let y = data.y(i);
                        if !expert.check_target(y) {
                            return Err(MoeError::InvalidData {
                                row: Some(i),
                                column: Some("target".into()),
                                reason: format!(
                                    "value {y:?} is outside the support of {}",
                                    fam.name()
                                ),
                            });
                        }
                    }
                    // An expert's batched densities (p = r = 1: η is the one product
                    // column), else the family's row by row.
                    let q = data.q();
                    let y = &yall[rows.start * q..rows.end * q];
                    let mut batched = p == 1 && r == 1;
                    for c in 0..k {
                        if !batched {
                            break;
                        }
                        let col = &mut ell[c * m..(c + 1) * m];
                        let ok =
                            expert.add_log_densities(y, &cols[gcols + c][..m], col, &mut s.fast);
                        if !ok && c > 0 {
                            return Err(MoeError::InvalidParam {
                                name: "expert",
                                reason: "add_log_densities declined after accepting a block".into(),
                            });
                        }
                        batched = ok;
                    }
                    let generic = if batched { 0..0 } else { rows.clone() };
                    for (li, i) in generic.enumerate() {
                        let y = data.y(i);
                        fam.sufficient_stats(y, &mut s.t);
                        let log_h = fam.log_base_measure(y);
                        for c in 0..k {
                            for j in 0..p {
                                s.eta[j] = if j < r {
                                    cols[gcols + c * r + j][li]
                                } else {
                                    consts[c * (p - r) + (j - r)]
                                };
                            }
                            let a = fam.log_partition(&s.eta)?;
                            let inner: f64 = s.t.iter().zip(&s.eta).map(|(u, v)| u * v).sum();
                            ell[c * m + li] += log_h + inner - a;
                        }
                    }
                }
                // Responsibilities r_ik = e^{ℓ_ik - LSE} (the LSE's exponentials reused),
                // the chunk's exponentials in one vectorised call.
                let (ell, lmax, lsum) = (&mut s.ell[..k * m], &mut s.lmax[..m], &mut s.lsum[..m]);
                softmax_rows(ell, m, lmax, lsum);
                let resp = match out {
                    Some(o) => o,
                    None => &mut s.resp[..k * m],
                };
                for (li, (&mx, &z)) in lmax.iter().zip(lsum.iter()).enumerate() {
                    if !mx.is_finite() {
                        return Err(MoeError::NonFinite {
                            what: "row log-likelihood in the E-step",
                        });
                    }
                    shifts += mx;
                    logs.add_log(z);
                    for (c, r) in resp[li * k..(li + 1) * k].iter_mut().enumerate() {
                        *r = ell[c * m + li];
                    }
                }
                acc.ll += shifts + (logs.value() - glogs.value());
                if let (Some(gsum), Some(gs)) = (acc.gate.as_mut(), s.gate.as_mut()) {
                    gate_chunk(data, rows.clone(), &cols[..k - 1], resp, k, gsum, gs);
                }
                drop(cols);
                if sums {
                    self.accumulate_chunk(data, rows, resp, &mut acc.stats, &mut s.buf, &mut s.w);
                }
                if let Some(cl) = acc.stats.clusters.as_mut() {
                    accumulate_clusters(&s.dev[..k * cq * m], resp, k, m, &mut s.work, cl);
                }
                Ok(())
            },
        )?;
        let mut stats = acc.stats;
        stats.resp = resp_all;
        stats.gate = acc.gate.map(|g| g.finish(gate));
        Ok((stats, acc.ll))
    }

    /// The M-step from merged statistics, whatever holds the rows: the closed forms
    /// (constant gate, Gaussian-regression and Gaussian-mixture experts) read `stats`
    /// alone; the softmax gate and the other experts are solved by `gate(start, out,
    /// initial)` and `expert(k, start, out)`, which the in-memory M-step runs over the
    /// responsibilities and [`crate::shard`] as rounds over a row source. Inner work is
    /// summed in the returned [`InnerStats`] (`hessians` counts the $K$ Gram matrices of
    /// Gaussian-regression experts and every Newton Hessian).
    ///
    /// # Errors
    /// `NotPositiveDefinite { expert, pivot }` naming the expert whose weighted Gram /
    /// Hessian failed Cholesky ([`Block::Gate`] for the gate); `NonFinite` for a degenerate
    /// expert (zero weight or zero residual variance); whatever `gate`/`expert` return.
    #[allow(clippy::type_complexity)]
    pub(crate) fn m_step_with(
        &self,
        d: usize,
        stats: &MoeStats,
        theta: &[f64],
        next: &mut [f64],
        gate: &mut dyn FnMut(&[f64], &mut [f64], Option<&GateStats>) -> Result<InnerStats>,
        expert_fit: &mut dyn FnMut(usize, &[f64], &mut [f64]) -> Result<InnerStats>,
    ) -> Result<InnerStats> {
        let k = self.n_experts();
        let mut total = InnerStats {
            converged: true,
            ..InnerStats::default()
        };
        let mut add = |s: InnerStats| {
            total.iterations += s.iterations;
            total.residual = total.residual.max(s.residual);
            total.converged &= s.converged;
            total.hessians += s.hessians;
            total.fallbacks += s.fallbacks;
        };
        let gl = self.gate_len();
        if k > 1 {
            match self.gating() {
                Gating::Softmax => {
                    let s = gate(self.gate_block(theta), &mut next[..gl], stats.gate.as_ref())?;
                    add(s);
                }
                Gating::Constant => constant_gate_mstep(&stats.weight, &mut next[..gl])?,
            }
        }
        let expert = self.expert();
        let at = |e: MoeError, c: usize| e.in_block(Block::Expert(Some(c)));
        if let (Some(g), Some(cl)) = (expert.gaussian_clusters(), stats.clusters.as_ref()) {
            let q = g.obs_dim();
            for c in 0..k {
                let moments = WeightedMoments {
                    wsum: stats.weight[c],
                    centre: &cl.centre[c * q..(c + 1) * q],
                    sum: &cl.sum[c * q..(c + 1) * q],
                    scatter: cl.scatter[c].as_ref(),
                };
                let floored = g
                    .solve_from_moments(moments, self.expert_block_mut(next, c))
                    .map_err(|e| at(e, c))?;
                add(InnerStats {
                    iterations: 0,
                    residual: 0.0,
                    converged: true,
                    hessians: 1,
                    fallbacks: u64::from(floored),
                });
            }
            return Ok(total);
        }
        match (expert.gaussian_regression(), stats.linear.as_ref()) {
            (Some(g), Some(lin)) => {
                for c in 0..k {
                    let merged = WeightedGram {
                        gram: lin.gram[c].as_ref(),
                        rhs: &lin.rhs[c * d..(c + 1) * d],
                        syy: lin.syy[c],
                        wsum: stats.weight[c],
                    };
                    g.solve_from_gram(merged, self.expert_block_mut(next, c))
                        .map_err(|e| at(e, c))?;
                    add(InnerStats {
                        iterations: 0,
                        residual: 0.0,
                        converged: true,
                        hessians: 1,
                        fallbacks: 0,
                    });
                }
            }
            _ => {
                for c in 0..k {
                    let s = expert_fit(
                        c,
                        self.expert_block(theta, c),
                        self.expert_block_mut(next, c),
                    )
                    .map_err(|e| at(e, c))?;
                    add(s);
                }
            }
        }
        Ok(total)
    }

    /// The coefficient matrix $[\,W \mid B\,]$ ($d\times$ (gate columns + $K r$)) used to
    /// compute all gate logits and regressed expert components of a chunk in one product.
    /// With `means` (Gaussian-regression experts: $\beta_k$, $K d$ values) expert $k$ has
    /// the one column $\beta_k$, so the product gives the regression means.
    pub(super) fn coefficient_matrix(
        &self,
        theta: &[f64],
        means: Option<&[f64]>,
    ) -> (Mat<f64>, usize) {
        let d = self.n_features();
        let k = self.n_experts();
        let r = match means {
            Some(_) => 1,
            None => self.expert().n_regressed(),
        };
        let gcols = match self.gating() {
            Gating::Softmax => k - 1,
            Gating::Constant => 0,
        };
        let gate = self.gate_block(theta);
        let c = Mat::from_fn(d, gcols + k * r, |a, j| {
            if j < gcols {
                gate[j * d + a]
            } else {
                let (e, comp) = ((j - gcols) / r, (j - gcols) % r);
                match means {
                    Some(b) => b[e * d + a],
                    None => self.expert_block(theta, e)[comp * d + a],
                }
            }
        });
        (c, gcols)
    }
}

/// Per-expert quantities of the Gaussian-regression row log-density: the mean
/// coefficients $\beta_k$ ($K d$ values), $c_k = -\tfrac12\log(2\pi\sigma_k^2)$ and
/// $1/(2\sigma_k^2)$.
///
/// # Errors
/// The capability's `LeftDomain` when some block is not a valid parameter (e.g.
/// $\tau_k \ge 0$), or `NonFinite` for a variance that is not finite and $> 0$.
fn gaussian_row_constants(
    m: &MixtureOfExperts,
    g: &dyn GaussianRegression,
    theta: &[f64],
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let (k, d) = (m.n_experts(), m.n_features());
    let (mut beta, mut cst, mut inv) = (vec![0.0; k * d], vec![0.0; k], vec![0.0; k]);
    for c in 0..k {
        let v = g.mean_variance(m.expert_block(theta, c), &mut beta[c * d..(c + 1) * d])?;
        if !(v > 0.0 && v.is_finite()) {
            return Err(MoeError::NonFinite {
                what: "variance of a Gaussian-regression expert",
            });
        }
        cst[c] = -0.5 * (2.0 * std::f64::consts::PI * v).ln();
        inv[c] = 0.5 / v;
    }
    Ok((beta, cst, inv))
}

/// The Gaussian log-density with precomputed constants:
/// $\log N(y;\,\beta^\top x, \sigma^2) = c - (y - \beta^\top x)^2/(2\sigma^2)$, $c = -\tfrac12\log(2\pi\sigma^2)$
/// (equal to $\log h_F(y) + \langle T_F(y),\eta\rangle - A_F(\eta)$ of the Gaussian family at
/// $\eta = (\gamma^\top x, \tau)$ for [`LinearGaussian`](crate::model::expert::LinearGaussian);
/// the tests compare it with statrs' density).
#[inline]
fn linear_gaussian_log_density(y: f64, mean: f64, c: f64, inv_two_s2: f64) -> f64 {
    let e = y - mean;
    c - e * e * inv_two_s2
}

/// The deviations $y_i - c_k$ of a chunk's rows `y` (row-major $m\times q$) from every
/// centre $c_k$ (`centres`, $K q$ values), as $K$ column-major $q\times m$ blocks in `dev`.
fn cluster_deviations(y: &[f64], q: usize, centres: &[f64], dev: &mut [f64]) {
    let m = y.len() / q;
    for (c, block) in dev.chunks_exact_mut(q * m).enumerate() {
        let centre = &centres[c * q..(c + 1) * q];
        for (out, yi) in block.chunks_exact_mut(q).zip(y.chunks_exact(q)) {
            for ((o, v), cj) in out.iter_mut().zip(yi).zip(centre) {
                *o = v - cj;
            }
        }
    }
}

/// Adds $\log N(y_i; m_k, \Sigma_k) = c_k - \tfrac12\lVert L_k^\top(y_i - m_k)\rVert^2$
/// ([`ComponentDensity::log_density`]) to the chunk's log-joints `ell` (column-major
/// $m\times K$), from the deviations `dev` about the means: one product
/// $Z_k = L_k^\top D_k$ ($q\times m$) per component into `work`.
fn cluster_log_densities(
    parts: &[ComponentDensity],
    dev: &[f64],
    m: usize,
    work: &mut [f64],
    ell: &mut [f64],
) {
    for (c, part) in parts.iter().enumerate() {
        let q = part.mean.len();
        let d = MatRef::from_column_major_slice(&dev[c * q * m..(c + 1) * q * m], q, m);
        let z = &mut work[..q * m];
        matmul(
            faer::MatMut::from_column_major_slice_mut(z, q, m),
            Accum::Replace,
            part.chol_precision.transpose(),
            d,
            1.0,
            Par::Seq,
        );
        for (l, zi) in ell[c * m..(c + 1) * m].iter_mut().zip(z.chunks_exact(q)) {
            let maha: f64 = zi.iter().map(|v| v * v).sum();
            *l += part.log_norm - 0.5 * maha;
        }
    }
}

/// Adds a chunk's weighted moments to `cl`: $s_k \mathrel{+}= D_k r_k$ and
/// $S_k \mathrel{+}= (D_k \operatorname{diag} r_k) D_k^\top$ (one product per component),
/// with `resp` the chunk's responsibilities (row-major $m\times K$).
fn accumulate_clusters(
    dev: &[f64],
    resp: &[f64],
    k: usize,
    m: usize,
    work: &mut [f64],
    cl: &mut ClusterStats,
) {
    let q = cl.centre.len() / k;
    for c in 0..k {
        let dc = &dev[c * q * m..(c + 1) * q * m];
        let a = &mut work[..q * m];
        let sum = &mut cl.sum[c * q..(c + 1) * q];
        for (li, (ai, di)) in a.chunks_exact_mut(q).zip(dc.chunks_exact(q)).enumerate() {
            let r = resp[li * k + c];
            for ((av, dv), s) in ai.iter_mut().zip(di).zip(sum.iter_mut()) {
                *av = r * dv;
                *s += *av;
            }
        }
        let d = MatRef::from_column_major_slice(dc, q, m);
        matmul(
            cl.scatter[c].as_mut(),
            Accum::Add,
            MatRef::from_column_major_slice(a, q, m),
            d.transpose(),
            1.0,
            Par::Seq,
        );
    }
}

impl EmModel for MixtureOfExperts {
    type Stats = MoeStats;

    /// Log-space E-step over row chunks (see the [module documentation](crate::solve::em)).
    ///
    /// # Errors
    /// `InvalidParam` for a wrong θ length or $K > n$; `InvalidData` naming the row whose
    /// target is outside the expert family's support; `Mirror`/`NonFinite` when an
    /// expert's natural parameter leaves its domain.
    fn e_step(&self, data: &Dataset, theta: &[f64]) -> Result<(MoeStats, f64)> {
        let (stats, ll) = self.e_fold(data, theta, EPass::Full)?;
        Ok((
            stats,
            objective_from_sum(ll, self.penalty(theta), data.n())?,
        ))
    }

    /// Gate M-step (Newton, or closed form for constant gating) and one expert fit per
    /// expert (closed-form WLS from the merged Grams for Gaussian-regression experts ([`GaussianRegression::solve_from_gram`]), Newton
    /// otherwise); inner work summed in the returned [`InnerStats`] (`hessians` counts the
    /// $K$ Gram matrices of Gaussian-regression experts and every Newton Hessian).
    ///
    /// # Errors
    /// `NotPositiveDefinite { expert, pivot }` naming the expert whose weighted Gram /
    /// Hessian failed Cholesky ([`Block::Gate`] for the gate); `NonFinite` for a degenerate
    /// expert (zero weight or zero residual variance).
    fn m_step(
        &self,
        data: &Dataset,
        stats: &MoeStats,
        theta: &[f64],
        next: &mut [f64],
    ) -> Result<InnerStats> {
        self.check_theta(theta)?;
        self.check_theta(next)?;
        self.check_data(data)?;
        let k = self.n_experts();
        if stats.k != k || stats.resp.len() != data.n() * k {
            return Err(MoeError::InvalidParam {
                name: "stats",
                reason: "statistics do not match this model and data".into(),
            });
        }
        let cfg = self.gate_config();
        let expert = self.expert();
        self.m_step_with(
            data.d(),
            stats,
            theta,
            next,
            &mut |start, out, initial| {
                fit_softmax_gate_from(GateFit::new(data, &stats.resp, k, start), out, cfg, initial)
            },
            &mut |c, start, out| {
                let w = stats.column(c);
                expert.weighted_fit(WeightedFit::new(data, &w, start), out)
            },
        )
    }
}
