//! Shard statistics: EM over rows that are never all in memory at once.
//!
//! Every quantity an EM iteration reads of the data is a **sum over rows**, so a chunk, a
//! thread, a file and a machine are the same thing to it:
//!
//! * the **E-step** at $\theta$ (round [`Round::E`]) sums
//!   $\sum_i\log p(y_i\mid x_i;\theta)$, the expert weights $W_k = \sum_i r_{ik}$, the
//!   closed-form experts' sufficient statistics (Gram matrices
//!   $\sum_i r_{ik}x_ix_i^\top$, $\sum_i r_{ik}y_ix_i$, $\sum_i r_{ik}y_i^2$ of
//!   Gaussian-regression experts; weighted moments of Gaussian-mixture components) and,
//!   for a softmax gate, the gate M-step's $Q$, $\nabla Q$, $-\nabla^2Q$ at the current gate
//!   (its first Newton round) — [`EStats`];
//! * an M-step that has no closed form is solved by Newton's method whose every
//!   evaluation is a **round** of the same kind: the gate's
//!   $Q(W) = \sum_i\sum_k r_{ik}(\theta)\log\pi_k(x_i; W)$ ([`Round::Gate`]) or expert
//!   $k$'s $Q(\vartheta) = \sum_i r_{ik}(\theta)[\langle T(y_i), \eta(x_i)\rangle -
//!   A(\eta(x_i))]$ ([`Round::Expert`]) with gradient and Hessian sums
//!   ([`NewtonSums`]); each shard recomputes its responsibilities $r_{ik}(\theta)$ from
//!   $\theta$, so nothing of size $n$ is kept between rounds.
//!
//! [`MixtureOfExperts::accumulate`] computes a round's [`ShardStats`] on one shard of
//! rows, [`ShardStats::merge`] adds two (associative: merged in a fixed order, the sums are
//! bit-identical for any thread count), [`ShardStats::to_bytes`] / [`ShardStats::from_bytes`]
//! carry them between processes (CBOR with a format name and version, so a worker of
//! another version is refused, not misread), and [`MixtureOfExperts::m_step_from_shards`]
//! runs the M-step from merged statistics, asking for further rounds through a callback —
//! a local loop over a [`RowSource`], or a cluster scheduler.
//!
//! **One implementation.** The per-row code is the in-memory E-step's
//! ([`EmModel::e_step`](crate::model::EmModel::e_step)) and the in-memory M-step's Newton solves (the gate's
//! [`fit_softmax_gate`](crate::model::gate::fit_softmax_gate), an expert's
//! [`glm_newton`](crate::model::expert::glm_newton)) run the same driver over their own
//! passes; a [`ShardProblem`] over an [`InMemory`](crate::data::source::InMemory) source
//! whose chunk holds every row takes bit-for-bit the in-memory steps, and any two
//! sources with the same rows and chunk size take bit-for-bit the same steps as each other.
//! Experts with closed-form M-steps (Gaussian regression, Gaussian mixture) and the
//! GLM experts (logistic, Poisson, multinomial — whose [`Expert::glm_solve`](crate::model::expert::Expert::glm_solve)
//! picks Newton or L-BFGS for both) follow the in-memory fit exactly. A user's expert in
//! the GLM layout gets shards through the
//! [`Expert`](crate::model::expert::Expert) trait's `natural`, `moments` and family, with
//! nothing to write.

use crate::data::source::RowSource;
use crate::error::{MoeError, Result};
use crate::inner::softmax::{Labels, SoftmaxRegression};
use crate::inner::sums::NewtonSums;
use crate::inner::InnerStats;
use crate::model::expert::{check_glm_layout, glm_solve_by_rounds};
use crate::model::gate::{gate_mstep_by_rounds, GateStats};
use crate::model::mixture::steps::{objective_from_sum, EPass};
use crate::model::mixture::{ClusterStats, LinearStats, MixtureOfExperts, MoeStats};
use crate::model::ConditionalFamily;
use crate::solve::em_map::EmMap;
use crate::solve::executor::Objective;
use crate::Dataset;
use faer::Mat;
use mirror::newton::Need;
use serde::{Deserialize, Serialize};

/// The format name written into every serialised [`ShardStats`] and [`Round`].
pub const SHARD_FORMAT: &str = "mdem-shard";
/// The version of that format; bytes of another version are refused.
pub const SHARD_VERSION: u32 = 1;

/// Which derivatives a Newton round asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoundNeed {
    /// $Q$ only.
    Value,
    /// $Q$ and $\nabla Q$.
    Gradient,
    /// $Q$, $\nabla Q$ and $-\nabla^2 Q$.
    Hessian,
}

impl RoundNeed {
    fn of(need: Option<Need>) -> Self {
        match need {
            None => RoundNeed::Value,
            Some(Need::Gradient) => RoundNeed::Gradient,
            Some(Need::Hessian) => RoundNeed::Hessian,
        }
    }
    fn need(self) -> Option<Need> {
        match self {
            RoundNeed::Value => None,
            RoundNeed::Gradient => Some(Need::Gradient),
            RoundNeed::Hessian => Some(Need::Hessian),
        }
    }
}

/// What one pass over the shards computes (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Round {
    /// The E-step at θ: [`EStats`].
    E {
        /// θ.
        theta: Vec<f64>,
    },
    /// A Newton round of the gate's M-step: [`NewtonSums`] of $Q(W)$ with the
    /// responsibilities at θ as labels.
    Gate {
        /// θ of the E-step (the labels).
        theta: Vec<f64>,
        /// Gate parameters $W$ to evaluate at.
        w: Vec<f64>,
        /// Whether to form $-\nabla^2 Q$.
        hessian: bool,
    },
    /// A Newton round of expert `expert`'s M-step: [`NewtonSums`] of its weighted
    /// $Q(\vartheta)$ with the responsibilities at θ as weights.
    Expert {
        /// θ of the E-step (the weights).
        theta: Vec<f64>,
        /// The expert (0-based).
        expert: usize,
        /// Its parameters $\vartheta$ to evaluate at.
        params: Vec<f64>,
        /// Which derivatives to form.
        need: RoundNeed,
    },
}

/// The merged E-step sums of some rows (see the [module documentation](self)); matrices
/// are stored column-major, one $d\times d$ (or $q\times q$) block per expert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EStats {
    /// $K$.
    pub k: usize,
    /// $\sum_i \log p(y_i\mid x_i;\theta)$.
    pub log_likelihood: f64,
    /// $W_k = \sum_i r_{ik}$.
    pub weight: Vec<f64>,
    /// Gaussian-regression experts: $G_k$ ($K$ blocks $d\times d$), $b_k$, $s_k$.
    pub linear: Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
    /// Gaussian-mixture components: centres $c_k$, $s_k$, $S_k$ ($K$ blocks $q\times q$).
    pub clusters: Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
    /// Softmax gate: the first Newton round's sums at the gate of θ (Hessian full,
    /// column-major).
    pub gate: Option<GateSumsWire>,
}

/// A softmax gate's first-round sums in [`EStats`]: $W$, $Q$, the terms' sizes,
/// $\nabla Q$, $-\nabla^2 Q$ (full, column-major).
pub type GateSumsWire = (Vec<f64>, f64, f64, Vec<f64>, Vec<f64>);

/// A round's statistics over some rows: what a worker returns and the driver merges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardStats {
    /// Rows summed.
    pub rows: u64,
    /// The sums.
    pub sums: Sums,
}

/// The sums of a [`ShardStats`], by kind of round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Sums {
    /// Of a [`Round::E`].
    E(EStats),
    /// Of a [`Round::Gate`] or [`Round::Expert`].
    Newton(NewtonSums),
}

/// The envelope of serialised rounds and statistics.
#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    format: String,
    version: u32,
    body: T,
}

fn to_bytes<T: Serialize>(body: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    ciborium::into_writer(
        &Envelope {
            format: SHARD_FORMAT.into(),
            version: SHARD_VERSION,
            body,
        },
        &mut out,
    )
    .map_err(|e| MoeError::Io(format!("serialising shard statistics: {e}")))?;
    Ok(out)
}

fn from_bytes<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    // Format and version first, so bytes of another version are named as such.
    #[derive(Deserialize)]
    struct Head {
        format: String,
        version: u32,
    }
    let bad = |e: String| MoeError::InvalidParam {
        name: "shard bytes",
        reason: e,
    };
    let head: Head =
        ciborium::from_reader(bytes).map_err(|e| bad(format!("not {SHARD_FORMAT} bytes: {e}")))?;
    if head.format != SHARD_FORMAT || head.version != SHARD_VERSION {
        return Err(bad(format!(
            "format {:?} version {}, expected {SHARD_FORMAT:?} version {SHARD_VERSION}",
            head.format, head.version
        )));
    }
    let env: Envelope<T> = ciborium::from_reader(bytes).map_err(|e| bad(e.to_string()))?;
    Ok(env.body)
}

impl Round {
    /// CBOR bytes with the format name and version.
    ///
    /// # Errors
    /// `Io` if serialisation fails.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        to_bytes(self)
    }
    /// A round from [`Round::to_bytes`].
    ///
    /// # Errors
    /// `InvalidParam { name: "shard bytes" }` for bytes that are not a round of this
    /// format and version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Round> {
        from_bytes(bytes)
    }
}

fn add(a: &mut [f64], b: &[f64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

fn mismatch() -> MoeError {
    MoeError::InvalidParam {
        name: "stats",
        reason: "shard statistics of different rounds or shapes cannot be merged".into(),
    }
}

impl ShardStats {
    /// `self ← self ⊕ other`: every sum added (associative; merge in a fixed order for
    /// bit-identical results).
    ///
    /// # Errors
    /// `InvalidParam { name: "stats" }` when the two are not parts of one round.
    pub fn merge(&mut self, other: &ShardStats) -> Result<()> {
        match (&mut self.sums, &other.sums) {
            (Sums::E(a), Sums::E(b)) => {
                let same = |x: &Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
                            y: &Option<(Vec<f64>, Vec<f64>, Vec<f64>)>| {
                    match (x, y) {
                        (None, None) => true,
                        (Some(x), Some(y)) => {
                            (x.0.len(), x.1.len(), x.2.len()) == (y.0.len(), y.1.len(), y.2.len())
                        }
                        _ => false,
                    }
                };
                let gate_same = match (&a.gate, &b.gate) {
                    (None, None) => true,
                    (Some(x), Some(y)) => {
                        x.0 == y.0 && x.3.len() == y.3.len() && x.4.len() == y.4.len()
                    }
                    _ => false,
                };
                let centres_same = match (&a.clusters, &b.clusters) {
                    (Some(x), Some(y)) => x.0 == y.0,
                    _ => true,
                };
                if a.k != b.k
                    || a.weight.len() != b.weight.len()
                    || !same(&a.linear, &b.linear)
                    || !same(&a.clusters, &b.clusters)
                    || !centres_same
                    || !gate_same
                {
                    return Err(mismatch());
                }
                a.log_likelihood += b.log_likelihood;
                add(&mut a.weight, &b.weight);
                if let (Some(x), Some(y)) = (a.linear.as_mut(), b.linear.as_ref()) {
                    add(&mut x.0, &y.0);
                    add(&mut x.1, &y.1);
                    add(&mut x.2, &y.2);
                }
                if let (Some(x), Some(y)) = (a.clusters.as_mut(), b.clusters.as_ref()) {
                    add(&mut x.1, &y.1);
                    add(&mut x.2, &y.2);
                }
                if let (Some(x), Some(y)) = (a.gate.as_mut(), b.gate.as_ref()) {
                    x.1 += y.1;
                    x.2 += y.2;
                    add(&mut x.3, &y.3);
                    add(&mut x.4, &y.4);
                }
            }
            (Sums::Newton(a), Sums::Newton(b)) => a.merge(b)?,
            _ => return Err(mismatch()),
        }
        self.rows += other.rows;
        Ok(())
    }

    /// CBOR bytes with the format name and version (what a worker sends back).
    ///
    /// # Errors
    /// `Io` if serialisation fails.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        to_bytes(self)
    }

    /// Statistics from [`ShardStats::to_bytes`].
    ///
    /// # Errors
    /// `InvalidParam { name: "shard bytes" }` for bytes that are not statistics of this
    /// format and version.
    pub fn from_bytes(bytes: &[u8]) -> Result<ShardStats> {
        from_bytes(bytes)
    }

    fn e(&self) -> Result<&EStats> {
        match &self.sums {
            Sums::E(e) => Ok(e),
            Sums::Newton(_) => Err(MoeError::InvalidParam {
                name: "stats",
                reason: "expected the statistics of an E-step round".into(),
            }),
        }
    }

    fn newton(self) -> Result<NewtonSums> {
        match self.sums {
            Sums::Newton(s) => Ok(s),
            Sums::E(_) => Err(MoeError::InvalidParam {
                name: "stats",
                reason: "expected the statistics of a Newton round".into(),
            }),
        }
    }

    /// $L(\theta) = -\frac1n\sum_i \log p(y_i\mid x_i;\theta)$ of merged E-step statistics
    /// (without the model's penalty: [`penalised_objective`](Self::penalised_objective)
    /// adds it).
    ///
    /// # Errors
    /// `InvalidParam` for statistics of another round; `NonFinite` when $L$ is not finite.
    pub fn objective(&self) -> Result<f64> {
        objective_from_sum(self.e()?.log_likelihood, 0.0, self.rows as usize)
    }

    /// The objective EM minimises, $L(\theta) = \frac1n\big(-\sum_i\log p(y_i\mid x_i;
    /// \theta) + R(\theta)\big)$ with the penalty of `model` at the θ of the E round
    /// ([`ConditionalFamily::penalty`]; equal to [`objective`](Self::objective) without a
    /// ridge).
    ///
    /// # Errors
    /// As [`objective`](Self::objective).
    pub fn penalised_objective(&self, model: &MixtureOfExperts, theta: &[f64]) -> Result<f64> {
        objective_from_sum(
            self.e()?.log_likelihood,
            model.penalty(theta),
            self.rows as usize,
        )
    }
}

fn flatten(ms: &[Mat<f64>]) -> Vec<f64> {
    ms.iter()
        .flat_map(|m| (0..m.ncols()).flat_map(move |j| m.col_as_slice(j).iter().copied()))
        .collect()
}

fn blocks(v: &[f64], k: usize) -> Vec<Mat<f64>> {
    let s = v
        .len()
        .checked_div(k)
        .map_or(0, |b| (b as f64).sqrt() as usize);
    (0..k)
        .map(|c| Mat::from_fn(s, s, |a, b| v[c * s * s + b * s + a]))
        .collect()
}

impl MixtureOfExperts {
    /// The statistics of `round` over the rows of `chunk` (a shard: any subset of the
    /// rows, standardised as the fit's). See the [module documentation](self).
    ///
    /// # Errors
    /// As [`EmModel::e_step`](crate::model::EmModel::e_step) (a target outside the support names the chunk's row);
    /// `InvalidParam` for an expert index out of range or parameters of the wrong length.
    pub fn accumulate(&self, round: &Round, chunk: &Dataset) -> Result<ShardStats> {
        let rows = chunk.n() as u64;
        let k = self.n_experts();
        let sums = match round {
            Round::E { theta } => {
                let (st, ll) = self.e_fold(chunk, theta, EPass::Sums)?;
                Sums::E(EStats {
                    k,
                    log_likelihood: ll,
                    weight: st.weight,
                    linear: st.linear.map(|l| (flatten(&l.gram), l.rhs, l.syy)),
                    clusters: st.clusters.map(|c| (c.centre, c.sum, flatten(&c.scatter))),
                    gate: st.gate.map(|g| {
                        let h = flatten(std::slice::from_ref(&g.hess));
                        (g.w, g.q, g.abs, g.grad, h)
                    }),
                })
            }
            Round::Gate { theta, w, hessian } => {
                let (st, _) = self.e_fold(chunk, theta, EPass::Responsibilities)?;
                let reg = SoftmaxRegression::new(chunk, k, Labels::Soft(&st.resp), None)?;
                if w.len() != reg.dim() {
                    return Err(MoeError::InvalidParam {
                        name: "w",
                        reason: format!(
                            "expected {} gate parameters, found {}",
                            reg.dim(),
                            w.len()
                        ),
                    });
                }
                Sums::Newton(reg.round(w, *hessian)?)
            }
            Round::Expert {
                theta,
                expert,
                params,
                need,
            } => {
                if *expert >= k || params.len() != self.expert().n_params(chunk.d()) {
                    return Err(MoeError::InvalidParam {
                        name: "expert",
                        reason: format!(
                            "expert {expert} with {} parameters: the model has {k} experts of {}",
                            params.len(),
                            self.expert().n_params(chunk.d())
                        ),
                    });
                }
                let (st, _) = self.e_fold(chunk, theta, EPass::Responsibilities)?;
                let w = st.column(*expert);
                Sums::Newton(
                    self.expert()
                        .weighted_round(chunk, &w, params, need.need())?,
                )
            }
        };
        Ok(ShardStats { rows, sums })
    }

    /// The M-step from merged E-step statistics `e` at `theta` into `next`, with the
    /// Newton rounds of the gate and of experts without closed forms made by `round`
    /// (merged over every row). The same solves, settings and tolerances as the
    /// in-memory M-step ([`EmModel::m_step`](crate::model::EmModel::m_step)).
    ///
    /// # Errors
    /// As [`EmModel::m_step`](crate::model::EmModel::m_step); `InvalidParam` for statistics of another round or model;
    /// whatever `round` returns.
    pub fn m_step_from_shards(
        &self,
        e: &ShardStats,
        theta: &[f64],
        next: &mut [f64],
        round: &mut dyn FnMut(&Round) -> Result<ShardStats>,
    ) -> Result<InnerStats> {
        self.check_theta(theta)?;
        self.check_theta(next)?;
        let es = e.e()?;
        let (k, d) = (self.n_experts(), self.n_features());
        if es.k != k || es.weight.len() != k {
            return Err(mismatch());
        }
        let n = e.rows as usize;
        let stats = MoeStats {
            k,
            resp: Vec::new(),
            weight: es.weight.clone(),
            linear: es.linear.as_ref().map(|(g, rhs, syy)| LinearStats {
                gram: blocks(g, k),
                rhs: rhs.clone(),
                syy: syy.clone(),
            }),
            clusters: es.clusters.as_ref().map(|(c, s, sc)| ClusterStats {
                centre: c.clone(),
                sum: s.clone(),
                scatter: blocks(sc, k),
            }),
            gate: es.gate.as_ref().map(|(w, q, abs, grad, h)| GateStats {
                w: w.clone(),
                q: *q,
                abs: *abs,
                grad: grad.clone(),
                hess: blocks(h, 1).pop().unwrap_or_else(|| Mat::zeros(0, 0)),
            }),
        };
        let cfg = self.gate_config();
        let expert = self.expert().clone();
        let round = std::cell::RefCell::new(round);
        self.m_step_with(
            d,
            &stats,
            theta,
            next,
            &mut |start, out, initial| {
                gate_mstep_by_rounds(cfg, start, out, n, initial, &mut |w, hessian| {
                    (round.borrow_mut())(&Round::Gate {
                        theta: theta.to_vec(),
                        w: w.to_vec(),
                        hessian,
                    })?
                    .newton()
                })
            },
            &mut |c, start, out| {
                check_glm_layout(expert.as_ref(), d)?;
                let wsum = stats.weight[c];
                if wsum <= 0.0 {
                    return Err(MoeError::NotPositiveDefinite {
                        block: crate::error::Block::Expert(None),
                        pivot: 0,
                    });
                }
                let ridge = (expert.ridge(), expert.n_regressed() * d);
                let solve = expert.glm_solve(d);
                glm_solve_by_rounds(solve, wsum, n, start, out, ridge, &mut |x, need| {
                    (round.borrow_mut())(&Round::Expert {
                        theta: theta.to_vec(),
                        expert: c,
                        params: x.to_vec(),
                        need: RoundNeed::of(need),
                    })?
                    .newton()
                })
            },
        )
    }
}

/// The statistics of `round` merged over every chunk of `source`, in chunk order; a
/// chunk's error names its rows from the source's first.
///
/// # Errors
/// As [`MixtureOfExperts::accumulate`] and the source's pass.
pub fn pass(model: &MixtureOfExperts, source: &dyn RowSource, round: &Round) -> Result<ShardStats> {
    let mut total: Option<ShardStats> = None;
    source.for_each_chunk(&mut |_, chunk| {
        let s = model.accumulate(round, chunk)?;
        match total.as_mut() {
            Some(t) => t.merge(&s),
            None => {
                total = Some(s);
                Ok(())
            }
        }
    })?;
    total.ok_or_else(|| MoeError::Source("the row source has no rows".into()))
}

/// A mixture of experts with its rows in a [`RowSource`]: an [`EmMap`] whose E-step is
/// one pass of [`Round::E`] and whose M-step asks for its Newton rounds as further passes,
/// so [`Em`](crate::solve::Em) and [`Squarem`](crate::solve::squarem::Squarem) run on it
/// through the [`Executor`](crate::solve::Executor) unchanged (limits, observers,
/// checkpoints). Memory is bounded by the source's chunk, not by $n$.
pub struct ShardProblem<'a> {
    /// The model.
    pub model: &'a MixtureOfExperts,
    /// The rows.
    pub source: &'a dyn RowSource,
}

impl<'a> ShardProblem<'a> {
    /// The problem of `model` on `source`.
    ///
    /// # Errors
    /// `InvalidData` when the source's columns do not match the model's; `InvalidParam`
    /// for more experts than rows.
    pub fn new(model: &'a MixtureOfExperts, source: &'a dyn RowSource) -> Result<Self> {
        if source.d() != model.n_features() || source.q() != model.expert().family().obs_dim() {
            return Err(MoeError::InvalidData {
                row: None,
                column: None,
                reason: format!(
                    "model expects {} features and {} target columns, the source has {} and {}",
                    model.n_features(),
                    model.expert().family().obs_dim(),
                    source.d(),
                    source.q()
                ),
            });
        }
        if model.n_experts() > source.n_rows() {
            return Err(MoeError::InvalidParam {
                name: "n_experts",
                reason: format!("{} experts for {} rows", model.n_experts(), source.n_rows()),
            });
        }
        Ok(ShardProblem { model, source })
    }
}

impl Objective for ShardProblem<'_> {
    fn objective(&self, theta: &[f64]) -> Result<f64> {
        self.e_step(theta).map(|(_, l)| l)
    }
}

impl EmMap for ShardProblem<'_> {
    type Stats = ShardStats;
    fn n_params(&self) -> usize {
        self.model.n_params()
    }
    fn e_step(&self, theta: &[f64]) -> Result<(ShardStats, f64)> {
        let s = pass(
            self.model,
            self.source,
            &Round::E {
                theta: theta.to_vec(),
            },
        )?;
        let l = s.penalised_objective(self.model, theta)?;
        Ok((s, l))
    }
    fn m_step(&self, stats: &ShardStats, theta: &[f64], next: &mut [f64]) -> Result<InnerStats> {
        self.model.m_step_from_shards(stats, theta, next, &mut |r| {
            pass(self.model, self.source, r)
        })
    }
}
