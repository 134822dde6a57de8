//! Fitting on a row source ([`MoeValidParams::fit_stream`]): starts from a sample in
//! memory, then exact EM over every row in passes ([`crate::shard`]).

use crate::data::source::RowSource;
use crate::data::Dataset;
use crate::error::{MoeError, Result};
use crate::fit::predict::{classification_entropy, FitReport, FittedMoe};
use crate::fit::separation::{Separation, SeparationSums};
use crate::fit::MoeValidParams;
use crate::shard::ShardProblem;
use crate::solve::accel::Accel;
use crate::solve::anderson::Anderson;
use crate::solve::executor::{Executor, FitResult};
use crate::solve::squarem::Squarem;
use crate::solve::Em;
use crate::Termination;
use std::time::Instant;

/// The strategy name of a streamed fit's start in reports.
pub const SAMPLE_START: &str = "sample fit";

impl MoeValidParams {
    /// Fits on the rows of `source`, never holding more of them than a chunk:
    ///
    /// 1. **Start**: [`fit`](Self::fit) on `sample` (rows of the source in memory, e.g.
    ///    the [`Survey::sample`](crate::data::source::Survey::sample) of a
    ///    [`FileSource`](crate::data::source::FileSource)), with every restart, strategy
    ///    and the gated-from-ungated start; its best $\theta$ starts the full fit.
    /// 2. **Exact EM over the source**: EM, SQUAREM with [`Accel::Squarem`] or
    ///    Anderson-accelerated EM with [`Accel::Anderson`], on a [`ShardProblem`] through the [`Executor`] with these
    ///    limits and observers — every E-step and every Newton round of the M-step one
    ///    pass over the source. The steps are the in-memory steps on the same rows.
    /// 3. **Summaries**: one more pass for $\hat\ell$ and the classification entropy.
    ///
    /// The report has one restart (the full fit, strategy [`SAMPLE_START`]). A converged
    /// run whose classifying expert is separated over all rows (the summaries' pass,
    /// [`SeparationSums`]) ends [`Termination::Separated`], as [`fit`](Self::fit) does.
    ///
    /// # Errors
    /// `InvalidParam { name: "accel" }` for [`Accel::Md`] (its inner solves need the
    /// rows in memory) and [`Accel::Newton`] (its observed-information pass is written for
    /// rows in memory); the errors of [`fit`](Self::fit) on the sample; those of the
    /// passes ([`MoeError::Source`] for a file that cannot be read or changed).
    pub fn fit_stream(&self, source: &dyn RowSource, sample: &Dataset) -> Result<FittedMoe> {
        let clock = Instant::now();
        let p = self.params();
        if matches!(p.accel_method(), Accel::Md | Accel::Newton) {
            return Err(MoeError::InvalidParam {
                name: "accel",
                reason: format!(
                    "{} needs the rows in memory; use squarem, anderson or none on a row source",
                    p.accel_method()
                ),
            });
        }
        let start_clock = Instant::now();
        let start = self.fit(sample)?;
        let start_seconds = start_clock.elapsed().as_secs_f64();
        let model = self.model(source.d())?;
        let problem = ShardProblem::new(&model, source)?;
        let theta0 = start.theta().to_vec();
        let result: FitResult = match p.accel_method() {
            Accel::Squarem => self
                .limits(Executor::new(problem, Squarem::new()).theta0(theta0), 0)
                .run()?,
            Accel::Anderson => self
                .limits(Executor::new(problem, Anderson::new()).theta0(theta0), 0)
                .run()?,
            Accel::None | Accel::Md | Accel::Newton => self
                .limits(Executor::new(problem, Em::new()).theta0(theta0), 0)
                .run()?,
        };
        let theta = result.best.theta.clone();
        let summaries = stream_summaries(&model, source, &theta)?;
        let (log_likelihood, entropy) = (summaries.log_likelihood, summaries.entropy);
        // As in memory: a separated classifying expert creeps, it does not converge.
        let mut result = result;
        if result.termination.is_converged() {
            if let Some(s) = summaries.separated.first() {
                result.termination = Termination::Separated {
                    expert: s.expert,
                    mean_nll: s.mean_nll,
                };
            }
        }
        let n = source.n_rows();
        let solver = match p.accel_method() {
            Accel::None => "EM over a row source".into(),
            a => format!("EM accelerated by {a} over a row source"),
        };
        let seconds = clock.elapsed().as_secs_f64();
        let report = FitReport::single_run(
            solver,
            SAMPLE_START,
            &result,
            n,
            log_likelihood,
            entropy,
            start_seconds,
            seconds,
        );
        FittedMoe::new(model, theta, source.feature_names().to_vec(), report)
    }
}

/// What the last pass of a streamed fit computes ([`stream_summaries`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSummaries {
    /// $\hat\ell = \sum_i\log p(y_i\mid x_i;\theta)$.
    pub log_likelihood: f64,
    /// The classification entropy $\sum_i H(r_i)$.
    pub entropy: f64,
    /// The separated classifying experts ([`SeparationSums::separated`] over every row;
    /// empty for other experts).
    pub separated: Vec<Separation>,
}

/// $\hat\ell$, the classification entropy and, for a classifying expert, the separation
/// test over every row of `source`, one chunk at a time (all are sums over rows; merged
/// in chunk order).
///
/// # Errors
/// As the E-step and the source's pass.
pub fn stream_summaries(
    model: &crate::model::mixture::MixtureOfExperts,
    source: &dyn RowSource,
    theta: &[f64],
) -> Result<StreamSummaries> {
    use crate::model::mixture::steps::EPass;
    let (mut ll, mut entropy) = (0.0, 0.0);
    let classifying = model.expert().n_classes().is_some();
    let mut separation = SeparationSums::new(model.n_experts());
    source.for_each_chunk(&mut |_, chunk| {
        let (stats, chunk_ll) = model.e_fold(chunk, theta, EPass::Full)?;
        ll += chunk_ll;
        entropy += classification_entropy(&stats.resp);
        if classifying {
            let mut part = SeparationSums::new(model.n_experts());
            part.add_rows(model, chunk, theta, &stats.resp)?;
            separation.merge(&part);
        }
        Ok(())
    })?;
    if !ll.is_finite() {
        return Err(MoeError::NonFinite {
            what: "log-likelihood over the row source",
        });
    }
    Ok(StreamSummaries {
        log_likelihood: ll,
        entropy,
        separated: separation.separated(),
    })
}
