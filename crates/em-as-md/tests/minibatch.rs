//! Mini-batch EM as stochastic mirror descent: one batch holding every row with a unit
//! constant step is the EM step (closed-form blocks); two passes of decaying steps reach
//! the exact EM optimum to 1e-3 relative; the Polyak average is no worse than that; bad
//! schedules are refused.

use em_as_md::data::source::{InMemory, RowSource, Synthetic};
use em_as_md::fit::minibatch::{MiniBatchEm, StepSchedule};
use em_as_md::shard::ShardProblem;
use em_as_md::solve::executor::Executor;
use em_as_md::{
    Dataset, Em, Expert, Gating, LinearGaussian, Logistic, MixtureOfExperts, MoeError, Problem,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

mod common;

fn setup(
    expert: Arc<dyn Expert>,
    gating: Gating,
    n: usize,
) -> (MixtureOfExperts, Dataset, Vec<f64>) {
    let m = MixtureOfExperts::new(expert, 2, 3, gating).unwrap();
    let mut truth = m.random_params(&mut ChaCha8Rng::seed_from_u64(21), 1.5);
    // Well-separated experts: the optimum is near the truth.
    let len = truth.len();
    truth[len / 2..].iter_mut().for_each(|v| *v *= 2.0);
    let src = Synthetic::new(m.clone(), truth.clone(), n, n, 5).unwrap();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    src.for_each_chunk(&mut |_, c| {
        for i in 0..c.n() {
            x.extend_from_slice(c.x(i));
            y.extend_from_slice(c.y(i));
        }
        Ok(())
    })
    .unwrap();
    let data = Dataset::from_rows(&x, 3, &y, 1).unwrap();
    let start = m.random_params(&mut ChaCha8Rng::seed_from_u64(22), 0.2);
    // A start near the truth (as a sample fit would give), so both runs reach one optimum.
    let theta0: Vec<f64> = truth.iter().zip(&start).map(|(t, s)| t + 0.3 * s).collect();
    (m, data, theta0)
}

fn exact_optimum(m: &MixtureOfExperts, data: &Dataset, theta0: &[f64]) -> f64 {
    let run = Executor::new(Problem::new(m, data).unwrap(), Em::new())
        .theta0(theta0.to_vec())
        .max_iters(2000)
        .tol(1e-13)
        .run()
        .unwrap();
    assert!(run.termination.is_converged(), "{:?}", run.termination);
    run.best.objective
}

#[test]
fn one_full_batch_with_unit_step_is_the_em_step() {
    let (m, data, theta0) = setup(Arc::new(LinearGaussian::new()), Gating::Constant, 6000);
    let em = Executor::new(
        ShardProblem::new(&m, &InMemory::new(&data, 6000).unwrap()).unwrap(),
        Em::new(),
    )
    .theta0(theta0.clone())
    .max_iters(1)
    .run()
    .unwrap();
    let unit = StepSchedule {
        eta0: 1.0,
        t0: 1.0,
        a: 0.0,
    };
    let mb = MiniBatchEm {
        passes: 1,
        schedule: unit,
        average: false,
        evaluate: false,
    }
    .run(&m, &InMemory::new(&data, 6000).unwrap(), &theta0)
    .unwrap();
    assert_eq!(mb.steps, 1);
    assert!(common::rel_vec(&mb.theta, &em.state.theta) < 1e-12);
}

#[test]
fn two_passes_reach_the_em_optimum_to_1e_3() {
    for (expert, gating) in [
        (
            Arc::new(LinearGaussian::new()) as Arc<dyn Expert>,
            Gating::Constant,
        ),
        (
            Arc::new(LinearGaussian::new()) as Arc<dyn Expert>,
            Gating::Softmax,
        ),
        (
            Arc::new(Logistic::new()) as Arc<dyn Expert>,
            Gating::Softmax,
        ),
    ] {
        let name = format!("{} {gating:?}", expert.name());
        let (m, data, theta0) = setup(expert, gating, 60_000);
        let best = exact_optimum(&m, &data, &theta0);
        let run = MiniBatchEm {
            passes: 2,
            schedule: StepSchedule::default(),
            average: true,
            evaluate: true,
        }
        .run(&m, &InMemory::new(&data, 1024).unwrap(), &theta0)
        .unwrap();
        assert!((run.passes - 2.0).abs() < 1e-12);
        assert_eq!(run.trajectory.len(), 3);
        let gap = (run.objective - best) / best.abs();
        assert!(
            gap < 1e-3,
            "{name}: L {} vs EM {best} (gap {gap:.2e})",
            run.objective
        );
        // EM's optimum is a maximum of the likelihood: nothing ends below it by more
        // than round-off.
        assert!(run.objective >= best - 1e-9 * best.abs(), "{name}");
    }
}

#[test]
fn bad_schedules_and_passes_are_refused() {
    let (m, data, theta0) = setup(Arc::new(LinearGaussian::new()), Gating::Constant, 3000);
    let src = InMemory::new(&data, 500).unwrap();
    let run = |schedule, passes| {
        MiniBatchEm {
            passes,
            schedule,
            average: false,
            evaluate: false,
        }
        .run(&m, &src, &theta0)
    };
    for (s, name) in [
        (
            StepSchedule {
                eta0: 0.0,
                t0: 1.0,
                a: 0.6,
            },
            "eta0",
        ),
        (
            StepSchedule {
                eta0: 1.0,
                t0: 0.5,
                a: 0.6,
            },
            "t0",
        ),
        (
            StepSchedule {
                eta0: 1.0,
                t0: 1.0,
                a: 0.4,
            },
            "a",
        ),
        (
            StepSchedule {
                eta0: 1.0,
                t0: 1.0,
                a: 1.5,
            },
            "a",
        ),
    ] {
        match run(s, 1) {
            Err(MoeError::InvalidParam { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(matches!(
        run(StepSchedule::default(), 0),
        Err(MoeError::InvalidParam { name: "passes", .. })
    ));
    // The step never exceeds 1 (a convex combination of statistics).
    let s = StepSchedule {
        eta0: 5.0,
        t0: 1.0,
        a: 0.6,
    };
    assert!((0..10).all(|t| s.eta(t) <= 1.0));
}

#[test]
fn minibatch_gradient_baselines_descend_and_stay_behind_minibatch_em() {
    use em_as_md::fit::minibatch::{GradientStep, MiniBatchGradient};
    use em_as_md::AdamSettings;
    let (m, data, theta0) = setup(Arc::new(LinearGaussian::new()), Gating::Softmax, 30_000);
    let src = InMemory::new(&data, 1024).unwrap();
    let em = MiniBatchEm {
        passes: 2,
        schedule: StepSchedule::default(),
        average: true,
        evaluate: true,
    }
    .run(&m, &src, &theta0)
    .unwrap();
    for step in [
        GradientStep::Gd { lr: 0.05 },
        GradientStep::Adam(AdamSettings::default()),
    ] {
        let (theta, traj) = MiniBatchGradient { passes: 2, step }
            .run(&m, &src, &theta0)
            .unwrap();
        assert_eq!(traj.len(), 3);
        assert_eq!(theta.len(), theta0.len());
        // Descends from the start…
        assert!(traj[2].1 < traj[0].1, "{step:?}: {traj:?}");
        // …and mini-batch EM, the same number of passes, is at least as good.
        assert!(
            em.objective <= traj[2].1 + 1e-12,
            "{step:?}: EM {} vs {}",
            em.objective,
            traj[2].1
        );
    }
    let bad = MiniBatchGradient {
        passes: 1,
        step: GradientStep::Gd { lr: -1.0 },
    }
    .run(&m, &src, &theta0);
    assert!(matches!(
        bad,
        Err(MoeError::InvalidParam { name: "lr", .. })
    ));
}
