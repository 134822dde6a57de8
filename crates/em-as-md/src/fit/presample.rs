//! Large data in memory: the starts on a random sample of the rows, EM on all of them
//! from the best.
//!
//! EM's early iterations decide the basin and move $\theta$ far; they need the data only
//! as much as the step they take, which a few tens of thousands of rows already fix. So
//! [`MoeValidParams::fit_presampled`] runs every start ([`fit`](MoeValidParams::fit):
//! restarts, strategies, retries and the gated-from-ungated start) on a sample of $m$
//! rows, and then EM with the chosen acceleration on all $n$ rows from the sample fit's
//! optimum, to the same tolerance. The returned $\hat\theta$ is a fixed point of EM on
//! the full data, as a direct fit's is; what changes is the start, and with it the
//! number of full passes: on the performance chapter's gated linear file
//! ($n = 200\,000$, $K = 3$) 5 full-data iterations instead of 34.
//!
//! The sample's size is a number of rows or a fraction of them ([`Presample`], as the
//! command line's `--presample` and Python's `presample=` take it).
//!
//! It is the in-memory form of the streamed fit's start
//! ([`MoeValidParams::fit_stream`](crate::fit::MoeValidParams::fit_stream)), which holds
//! nothing but a chunk. The ungated fit that keeps a gated fit at or above the ungated
//! one runs on the sample, with the other starts: the guarantee holds there, not over
//! all rows (the full-data stage would otherwise refit the ungated model on every row,
//! which is the cost the sample saves).

use crate::data::Dataset;
use crate::error::{MoeError, Result};
use crate::fit::init::InitMethod;
use crate::fit::predict::{FittedMoe, RestartSummary};
use crate::fit::stream::SAMPLE_START;
use crate::fit::{MoeValidParams, UngatedStart};
use rand::seq::index::sample;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// The random stream of the sample's rows (restart streams are the low indices, so a
/// high one draws rows independent of every start).
const SAMPLE_STREAM: u64 = u64::MAX - 1;

/// `m` of the `n` row indices, uniformly without replacement, in increasing order: the
/// same rows for the same `seed`, whatever the thread count.
pub fn presample_rows(n: usize, m: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(SAMPLE_STREAM);
    let mut rows = sample(&mut rng, n, m.min(n)).into_vec();
    rows.sort_unstable();
    rows
}

/// How large the sample is: a number of rows, or a fraction of them (the form the command
/// line's `--presample` and Python's `presample=` take).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Presample {
    /// This many rows (at least 1).
    Rows(usize),
    /// This fraction of the rows, in $(0, 1)$.
    Fraction(f64),
}

impl Presample {
    /// A number as the front ends take it: an integer $\ge 1$ is a number of rows, a
    /// number in $(0, 1)$ a fraction of them.
    ///
    /// # Errors
    /// `InvalidParam { name: "presample" }` for anything else (0, a non-integer above 1,
    /// a negative or non-finite number).
    pub fn from_value(v: f64) -> Result<Presample> {
        if v > 0.0 && v < 1.0 {
            Ok(Presample::Fraction(v))
        } else if v >= 1.0 && v.fract() == 0.0 && v <= usize::MAX as f64 {
            Ok(Presample::Rows(v as usize))
        } else {
            Err(MoeError::InvalidParam {
                name: "presample",
                reason: format!(
                    "expected a number of rows (an integer >= 1) or a fraction of them in (0, 1), got {v}"
                ),
            })
        }
    }

    /// [`from_value`](Self::from_value) of a command-line word.
    ///
    /// # Errors
    /// As [`from_value`](Self::from_value), and for a word that is not a number.
    pub fn parse(text: &str) -> Result<Presample> {
        let v = text.trim().parse::<f64>().map_err(|_| MoeError::InvalidParam {
            name: "presample",
            reason: format!(
                "expected a number of rows (an integer >= 1) or a fraction of them in (0, 1), got '{text}'"
            ),
        })?;
        Presample::from_value(v)
    }

    /// The rows of the sample out of `n`: $\lceil f n\rceil$ for a fraction (at least 1),
    /// where a product within a few ulps of an integer counts as that integer (0.07 of 100
    /// rows is 7, though `0.07 * 100.0` rounds to 7.000000000000001).
    pub fn rows(self, n: usize) -> usize {
        match self {
            Presample::Rows(m) => m,
            Presample::Fraction(f) => {
                let x = f * n as f64;
                let whole = x.round();
                let m = if (x - whole).abs() <= 4.0 * f64::EPSILON * x {
                    whole
                } else {
                    x.ceil()
                };
                (m as usize).max(1)
            }
        }
    }
}

impl MoeValidParams {
    /// Fits on `rows` randomly chosen rows first ([`presample_rows`], seeded by
    /// [`MoeParams::seed`](crate::fit::MoeParams::seed)), with every start of
    /// [`fit`](Self::fit), then runs EM with the chosen acceleration on all rows of
    /// `data` from the best of them, with the same limits and tolerance (see the
    /// [module documentation](self)); the iteration and time limits apply to each of the
    /// two stages, a cancellation to both. With `rows` $\ge n$ it is [`fit`](Self::fit).
    ///
    /// The report describes the full-data run as one restart whose strategy is
    /// [`SAMPLE_START`] and whose [`RestartSummary::start_seconds`](crate::fit::predict::RestartSummary::start_seconds)
    /// is the sample fit's wall time (its EM iterations in
    /// [`start_em_seconds`](crate::fit::predict::RestartSummary::start_em_seconds));
    /// [`FitReport::ungated`](crate::fit::FitReport::ungated) is `None`, the ungated fit
    /// having run on the sample. When the sample stage fails where a direct fit need not
    /// (every start failing on the sample, or the sample's optimum failing on rows the
    /// sample did not hold, as a Poisson rate that overflows there), the direct fit runs
    /// instead and its report gets one more restart, strategy [`SAMPLE_START`], with that
    /// error.
    ///
    /// ```
    /// use em_as_md::testkit::{draw, DrawConfig};
    /// use em_as_md::{Gating, LinearGaussian, MixtureOfExperts, MoeParams};
    /// use std::sync::Arc;
    ///
    /// let model = MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 3, Gating::Softmax)?;
    /// let d = draw(&model, &DrawConfig::default(), 6000, 4)?;
    /// let params = MoeParams::new(2).n_init(2).seed(1).check()?;
    /// let fast = params.fit_presampled(&d.data, 1500)?;
    /// assert_eq!(fast.report().restarts[0].init, em_as_md::fit::stream::SAMPLE_START);
    /// assert_eq!(fast.report().n_rows, 6000);
    /// # Ok::<(), em_as_md::MoeError>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidParam { name: "presample" }` for `rows` $= 0$ and for a sample the model
    /// cannot be fitted on (too few rows for its parameters: the sample fit's own error,
    /// quoted); `InvalidData` naming the data's row for a sampled row the model refuses
    /// (a target outside the experts' support); the errors of [`fit`](Self::fit) on all
    /// rows.
    pub fn fit_presampled(&self, data: &Dataset, rows: usize) -> Result<FittedMoe> {
        if rows == 0 {
            return Err(MoeError::InvalidParam {
                name: "presample",
                reason: "the sample needs at least one row".into(),
            });
        }
        if rows >= data.n() {
            return self.fit(data);
        }
        let clock = Instant::now();
        let p = self.params();
        let picked = presample_rows(data.n(), rows, p.seed_value());
        let sample = data.select(&picked);
        // Either stage can fail where a direct fit does not: every start failing on the
        // sample, or the sample's optimum failing on rows the sample did not hold (a
        // Poisson rate that overflows there). Then the direct fit runs, and the report
        // keeps the failure as a failed `sample fit` restart. A sample too small for the
        // model is the caller's error, returned as it is.
        let staged = self
            .fit(&sample)
            .map_err(|e| in_the_sample(e, &picked))
            .and_then(|on_sample| {
                let sample_seconds = clock.elapsed().as_secs_f64();
                let full = p
                    .clone()
                    .init(InitMethod::Theta(on_sample.theta().to_vec()))
                    .n_init(1)
                    .ungated_start(UngatedStart::Off)
                    .check()?
                    .fit(data)?;
                Ok((on_sample, sample_seconds, full))
            });
        let (on_sample, sample_seconds, full) = match staged {
            Ok(v) => v,
            Err(e) if is_input_error(&e) => return Err(e),
            Err(e) => return self.direct_after_failed_sample(data, &e, clock),
        };
        let sample_em_seconds = on_sample.report().em_seconds();
        Ok(full.amend_report(|report| {
            for r in &mut report.restarts {
                r.init = SAMPLE_START.into();
                r.start_seconds += sample_seconds;
                r.start_em_seconds += sample_em_seconds;
            }
            report.seconds = clock.elapsed().as_secs_f64();
        }))
    }

    /// [`fit`](Self::fit) on all rows after the sample stage failed with `failure`: its
    /// report with one more restart, strategy [`SAMPLE_START`], failed with that error
    /// (the time spent on it in its `start_seconds`).
    fn direct_after_failed_sample(
        &self,
        data: &Dataset,
        failure: &MoeError,
        clock: Instant,
    ) -> Result<FittedMoe> {
        let lost = clock.elapsed().as_secs_f64();
        Ok(self.fit(data)?.amend_report(|report| {
            report.restarts.push(RestartSummary {
                index: report.restarts.len(),
                init: SAMPLE_START.into(),
                log_likelihood: None,
                termination: None,
                iterations: 0,
                error: Some(failure.to_string()),
                retry_errors: Vec::new(),
                seconds: 0.0,
                start_seconds: lost,
                start_em_seconds: 0.0,
            });
            report.seconds = clock.elapsed().as_secs_f64();
        }))
    }
}

/// An input error of the sample stage in the caller's terms: a row of the sample is row
/// `picked[i]` of the data; an error about the sample as a whole (too few rows for the
/// model) is an error of `presample`. Other errors unchanged.
fn in_the_sample(e: MoeError, picked: &[usize]) -> MoeError {
    match e.root() {
        MoeError::InvalidData {
            row: Some(i),
            column,
            reason,
        } => MoeError::InvalidData {
            row: Some(picked.get(*i).copied().unwrap_or(*i)),
            column: column.clone(),
            reason: reason.clone(),
        },
        root if is_input_error(root) => MoeError::InvalidParam {
            name: "presample",
            reason: format!("a sample of {} rows: {root}", picked.len()),
        },
        _ => e,
    }
}

/// Errors in the input or the settings (another start cannot change them).
fn is_input_error(e: &MoeError) -> bool {
    matches!(
        e.root(),
        MoeError::InvalidData { .. } | MoeError::InvalidParam { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::MoeParams;
    use crate::model::expert::LinearGaussian;
    use crate::model::mixture::{Gating, MixtureOfExperts};
    use crate::testkit::{draw, DrawConfig};
    use std::sync::Arc;

    fn gated_draw(n: usize, seed: u64) -> Dataset {
        let model =
            MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 3, Gating::Softmax).unwrap();
        let dc = DrawConfig {
            truth_scale: 2.0,
            ..DrawConfig::default()
        };
        draw(&model, &dc, n, seed).unwrap().data
    }

    #[test]
    fn presample_reads_rows_or_a_fraction() {
        assert_eq!(Presample::parse("20000").unwrap(), Presample::Rows(20_000));
        assert_eq!(Presample::parse("0.1").unwrap(), Presample::Fraction(0.1));
        assert_eq!(Presample::from_value(3.0).unwrap(), Presample::Rows(3));
        assert_eq!(Presample::Fraction(0.1).rows(20_001), 2001);
        // Products a rounding above an integer are that integer.
        let (f, n) = (0.07, 100usize);
        assert!(f * n as f64 > 7.0, "the product rounds above 7");
        assert_eq!(Presample::Fraction(0.07).rows(100), 7);
        assert_eq!(Presample::Fraction(0.07).rows(600), 42);
        assert_eq!(Presample::Fraction(0.071).rows(100), 8);
        assert_eq!(Presample::Fraction(1e-9).rows(10), 1);
        assert_eq!(Presample::Rows(7).rows(3), 7);
        for bad in ["0", "1.5", "-3", "0.0", "inf", "NaN", "x", ""] {
            let e = Presample::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("presample") && e.contains("fraction"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn rows_are_distinct_sorted_and_seeded() {
        let a = presample_rows(1000, 100, 3);
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a[99] < 1000);
        assert_eq!(a, presample_rows(1000, 100, 3));
        assert_ne!(a, presample_rows(1000, 100, 4));
        assert_eq!(presample_rows(10, 50, 3), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn the_presampled_fit_is_a_full_data_em_fixed_point_at_the_direct_fits_optimum() {
        let data = gated_draw(8000, 21);
        // Plain EM, so that iterations count full passes.
        let params = MoeParams::new(2)
            .n_init(3)
            .seed(5)
            .tol(1e-10)
            .accel(crate::Accel::None)
            .check()
            .unwrap();
        let direct = params.fit(&data).unwrap();
        let fast = params.fit_presampled(&data, 1000).unwrap();
        let (ld, lf) = (direct.report().log_likelihood, fast.report().log_likelihood);
        // Both converged on all rows, to the same optimum (well-separated experts, a
        // single basin worth the name): equal to the tolerance's order.
        assert!(fast.report().converged() && direct.report().converged());
        assert!((ld - lf).abs() <= 1e-6 * ld.abs(), "{ld} vs {lf}");
        assert_eq!(fast.report().n_rows, 8000);
        assert_eq!(fast.report().restarts.len(), 1);
        assert_eq!(fast.report().restarts[0].init, SAMPLE_START);
        assert!(fast.report().ungated.is_none());
        // Fewer full-data iterations than the direct fit's best start.
        let (it_fast, it_direct) = (fast.report().iterations, direct.report().iterations);
        assert!(it_fast < it_direct, "{it_fast} vs {it_direct}");
        // An EM fixed point on all rows: one more EM step barely moves L.
        let (stats, l0) = crate::EmModel::e_step(fast.model(), &data, fast.theta()).unwrap();
        let mut next = vec![0.0; fast.theta().len()];
        crate::EmModel::m_step(fast.model(), &data, &stats, fast.theta(), &mut next).unwrap();
        let (_, l1) = crate::EmModel::e_step(fast.model(), &data, &next).unwrap();
        assert!(
            l0 - l1 <= 1e-9 * l0.abs() && l1 <= l0 + 1e-12 * l0.abs(),
            "{l0} → {l1}"
        );
    }

    #[test]
    fn a_failed_sample_stage_falls_back_to_the_direct_fit_and_says_so() {
        // Found by `examples/presample_sweep.rs` (Poisson, seed 2007): the sample stage
        // fails where the direct fit does not.
        let expert: Arc<dyn crate::Expert> = Arc::new(crate::Poisson::new());
        let model = MixtureOfExperts::new(expert.clone(), 2, 5, Gating::Softmax).unwrap();
        let dc = DrawConfig {
            truth_scale: 1.5,
            ..DrawConfig::default()
        };
        let data = draw(&model, &dc, 20_000, 2007).unwrap().data;
        let params = MoeParams::new(2)
            .expert_shared(expert)
            .n_init(1)
            .seed(2007)
            .init(InitMethod::RandomPartition)
            .accel(crate::Accel::None)
            .tol(1e-8)
            .max_iters(5000)
            .check()
            .unwrap();
        let fit = params.fit_presampled(&data, 2000).unwrap();
        let direct = params.fit(&data).unwrap();
        assert_eq!(fit.theta(), direct.theta());
        let (rf, rd) = (fit.report(), direct.report());
        assert_eq!(rf.restarts.len(), rd.restarts.len() + 1);
        for (a, b) in rf.restarts.iter().zip(&rd.restarts) {
            assert_eq!(
                (&a.init, a.log_likelihood, a.iterations, &a.error),
                (&b.init, b.log_likelihood, b.iterations, &b.error)
            );
        }
        let failed = rf.restarts.last().unwrap();
        assert_eq!(failed.init, SAMPLE_START);
        assert!(failed.error.is_some() && failed.log_likelihood.is_none());
        assert_eq!(rf.best_restart, rd.best_restart);
    }

    #[test]
    fn input_errors_of_the_sample_name_the_data_row_or_the_sample() {
        // Counts for Poisson experts, one negative at a row the sample holds: the sample's
        // error names that row of the data, not of the sample.
        let picked = presample_rows(400, 100, 1);
        let bad = picked[57];
        let x: Vec<f64> = (0..400).map(|i| (i as f64 * 0.37).sin()).collect();
        let y: Vec<f64> = (0..400)
            .map(|i| if i == bad { -1.0 } else { (i % 5) as f64 })
            .collect();
        let counts = Dataset::from_rows(&x, 1, &y, 1).unwrap().with_intercept();
        let poisson = MoeParams::new(2)
            .expert(crate::Poisson::new())
            .seed(1)
            .check()
            .unwrap();
        assert!(matches!(
            poisson.fit(&counts),
            Err(MoeError::InvalidData { row: Some(r), .. }) if r == bad
        ));
        match poisson.fit_presampled(&counts, 100) {
            Err(MoeError::InvalidData { row: Some(r), .. }) => assert_eq!(r, bad),
            other => panic!("{other:?}"),
        }
        let params = MoeParams::new(2).seed(1).check().unwrap();
        // Too few rows in the sample for the model: an error of `presample`.
        let data = gated_draw(400, 3);
        match params.fit_presampled(&data, 5) {
            Err(MoeError::InvalidParam {
                name: "presample",
                reason,
            }) => assert!(reason.contains("a sample of 5 rows"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deterministic_and_a_full_sample_is_the_direct_fit() {
        let data = gated_draw(3000, 8);
        let params = MoeParams::new(2).n_init(2).seed(9).check().unwrap();
        let a = params.fit_presampled(&data, 700).unwrap();
        let b = params.fit_presampled(&data, 700).unwrap();
        assert_eq!(a.theta(), b.theta());
        let whole = params.fit_presampled(&data, 3000).unwrap();
        assert_eq!(whole.theta(), params.fit(&data).unwrap().theta());
        assert!(matches!(
            params.fit_presampled(&data, 0),
            Err(MoeError::InvalidParam {
                name: "presample",
                ..
            })
        ));
    }
}
