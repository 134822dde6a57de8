//! Initialisation strategies ([`InitMethod`]) and the gated fit's start from the ungated
//! optimum, on the crossing regression lines of mixtools' `tonedata` (`data/tonedata.csv`)
//! where the start decides the optimum: every strategy is seeded and gives the same result
//! at any thread count, `Auto` cycles through the strategies and the report names them,
//! short-EM's start beats a short run from its first candidate, random subsets and
//! partitions have the stated laws, the ungated optimum maps to gated parameters with the
//! same law, and the gated fit never ends below the ungated one.

mod common;

use common::{untimed, with_threads};
use em_as_md::data::csv::load_csv;
use em_as_md::fit::init::{
    random_partition_labels, random_subsets, subset_size, AUTO_CYCLE, SHORT_EM_ITERS,
};
use em_as_md::fit::{
    gated_from_ungated, initial_theta, restart_rng, MoeParams, UngatedStart, UNGATED_START,
};
use em_as_md::solve::em::Em;
use em_as_md::solve::executor::Executor;
use em_as_md::solve::problem::Problem;
use em_as_md::{
    Accel, ConditionalFamily, Dataset, FittedMoe, Gating, GradientDescent, InitMethod,
    LinearGaussian, MirrorDescent, MixtureOfExperts, Step,
};
use std::sync::Arc;

/// `tuned` on `stretchratio`, with an intercept column when `intercept`.
fn tone_with(intercept: bool) -> Dataset {
    let path = format!("{}/../../data/tonedata.csv", env!("CARGO_MANIFEST_DIR"));
    load_csv(
        &path,
        "tuned",
        Some(&["stretchratio".to_string()]),
        intercept,
    )
    .unwrap()
    .dataset
}

fn tone() -> Dataset {
    tone_with(true)
}

/// `p` checked and fitted to `data`, both expected to succeed.
fn fitted(p: MoeParams, data: &Dataset) -> FittedMoe {
    p.check().unwrap().fit(data).unwrap()
}

fn params(gating: Gating, init: InitMethod, n_init: usize) -> MoeParams {
    MoeParams::new(2)
        .expert(LinearGaussian::new())
        .gating(gating)
        .init(init)
        .n_init(n_init)
        .seed(0)
        .max_iters(500)
}

#[test]
fn gated_is_never_below_ungated_on_crossing_lines() {
    let data = tone();
    let ungated = fitted(params(Gating::Constant, InitMethod::Auto, 8), &data);
    let u = ungated.report().log_likelihood;
    // It mattered here: from gated starts alone, EM ends in a worse basin than the
    // ungated optimum, which the gated model contains (gate slope 0).
    let alone = fitted(
        params(Gating::Softmax, InitMethod::Auto, 8).ungated_start(UngatedStart::Off),
        &data,
    );
    assert_eq!(alone.report().restarts.len(), 8);
    assert!(
        alone.report().log_likelihood < u - 1.0,
        "gated starts alone {} vs ungated {u}",
        alone.report().log_likelihood
    );
    // With the start from the ungated optimum (run by default when, as here, every
    // gated start ends below the ungated fit), never below.
    let valid = params(Gating::Softmax, InitMethod::Auto, 8)
        .check()
        .unwrap();
    let gated = valid.fit(&data).unwrap();
    let rep = gated.report();
    assert!(
        rep.log_likelihood >= u - 1e-9,
        "{} < {u}",
        rep.log_likelihood
    );
    assert_eq!(rep.restarts.len(), 9);
    assert!(rep
        .ungated
        .is_some_and(|g| g.start_ran && g.log_likelihood == u));
    assert_eq!(valid.n_restarts(&data), 9);
    assert_eq!(rep.restarts[8].init, UNGATED_START);
    assert_eq!(rep.best_restart, 8);
    // Its start is the ungated optimum with the same likelihood, and re-running from it
    // retraces the kept restart.
    let model = valid.model(data.d()).unwrap();
    let theta0 = valid.restart_theta0(&model, &data, 8).unwrap();
    // The report records that start (what `mdem certify` re-runs from).
    assert_eq!(rep.start_theta, theta0);
    let problem = Problem::new(&model, &data).unwrap();
    let n = data.n() as f64;
    assert!((-n * problem.objective(&theta0).unwrap() - u).abs() < 1e-9 * u.abs().max(1.0));
    let rerun = valid.run_restart(&model, &data, 8).unwrap();
    assert_eq!(rerun.best.theta, gated.theta());
    assert!(valid.restart_theta0(&model, &data, 9).is_err());
}

#[test]
fn md_and_gd_fits_through_fit_with_include_the_ungated_start() {
    let data = tone();
    let u = fitted(params(Gating::Constant, InitMethod::Auto, 8), &data)
        .report()
        .log_likelihood;
    let valid = params(Gating::Softmax, InitMethod::Auto, 8)
        .check()
        .unwrap();
    let alone = params(Gating::Softmax, InitMethod::Auto, 8)
        .ungated_start(UngatedStart::Off)
        .check()
        .unwrap();
    let n = data.n() as f64;
    let model = valid.model(data.d()).unwrap();
    let problem = Problem::new(&model, &data).unwrap();
    let md = || MirrorDescent::with_eta(0.5);
    let gd = || GradientDescent::new(Step::armijo());
    for (fit, solver) in [
        (valid.fit_with(&data, md).unwrap(), "MD(η=0.5)"),
        (valid.fit_with(&data, gd).unwrap(), "GD"),
    ] {
        let rep = fit.report();
        assert!(rep.solver.starts_with(solver), "{}", rep.solver);
        // The eight seeded starts and the start from the ungated EM optimum.
        assert_eq!(rep.restarts.len(), 9);
        assert_eq!(rep.restarts[8].init, UNGATED_START);
        assert!(
            rep.log_likelihood >= u - 1e-9 * u.abs(),
            "{solver}: gated {} < ungated {u}",
            rep.log_likelihood
        );
        // The report's log-likelihood is the objective at the returned parameters.
        let at = -n * problem.objective(fit.theta()).unwrap();
        assert!((at - rep.log_likelihood).abs() < 1e-9 * at.abs(), "{at}");
        // That start mattered: the ungated start won, so the kept run is a run of this
        // solver from it.
        assert_eq!(rep.best_restart, 8, "{solver}");
    }
    // From the gated starts alone, mirror descent ends below the ungated optimum here.
    let md_alone = alone.fit_with(&data, md).unwrap();
    assert_eq!(md_alone.report().restarts.len(), 8);
    assert!(md_alone.report().log_likelihood < u - 1.0);
    // `fit` is `fit_with` on the acceleration's solver: the same restarts, bit for bit.
    let em = params(Gating::Softmax, InitMethod::Auto, 8)
        .accel(Accel::None)
        .check()
        .unwrap();
    let a = em.fit(&data).unwrap();
    let b = em.fit_with(&data, || Ok(Em::new())).unwrap();
    assert_eq!(a.theta(), b.theta());
    assert_eq!(untimed(&a.report().restarts), untimed(&b.report().restarts));
}

#[test]
fn ungated_parameters_map_to_a_gated_model_with_the_same_law() {
    let data = tone();
    let ungated = fitted(
        params(Gating::Constant, InitMethod::KMeansPlusPlus, 1),
        &data,
    );
    let expert: Arc<dyn em_as_md::Expert> = Arc::new(LinearGaussian::new());
    let gated = MixtureOfExperts::new(expert, 2, data.d(), Gating::Softmax).unwrap();
    let theta = gated_from_ungated(&gated, ungated.model(), ungated.theta(), &data)
        .unwrap()
        .expect("the intercept is a constant column");
    for i in 0..data.n() {
        let a = gated.log_predictive(&theta, data.x(i), data.y(i)).unwrap();
        let b = ungated
            .model()
            .log_predictive(ungated.theta(), data.x(i), data.y(i))
            .unwrap();
        assert!((a - b).abs() < 1e-12, "row {i}: {a} vs {b}");
    }
    // Without a constant column the gated model does not contain the ungated one.
    let no_intercept = tone_with(false);
    let e: Arc<dyn em_as_md::Expert> = Arc::new(LinearGaussian::new());
    let g1 = MixtureOfExperts::new(e.clone(), 2, 1, Gating::Softmax).unwrap();
    let u1 = MixtureOfExperts::new(e, 2, 1, Gating::Constant).unwrap();
    let t1 = vec![0.3; u1.n_params()];
    assert_eq!(
        gated_from_ungated(&g1, &u1, &t1, &no_intercept).unwrap(),
        None
    );
    // A mismatched pair is an error naming theta.
    assert!(gated_from_ungated(&u1, &g1, &t1, &no_intercept).is_err());
}

#[test]
fn every_strategy_is_seeded_and_thread_count_independent() {
    let data = tone();
    for init in [
        InitMethod::Auto,
        InitMethod::RandomPartition,
        InitMethod::Subset,
        InitMethod::KMeansPlusPlus,
        InitMethod::ShortEm,
    ] {
        let valid = params(Gating::Softmax, init.clone(), 4).check().unwrap();
        let one = with_threads(1, || valid.fit(&data).unwrap());
        let two = with_threads(2, || valid.fit(&data).unwrap());
        assert_eq!(one.theta(), two.theta(), "{init:?}");
        assert_eq!(
            untimed(&one.report().restarts),
            untimed(&two.report().restarts),
            "{init:?}"
        );
        let model = valid.model(data.d()).unwrap();
        // Different restarts draw different starts (the streams differ).
        let a = initial_theta(&model, &data, &init.for_restart(1), 0, 1).unwrap();
        let b = initial_theta(&model, &data, &init.for_restart(1), 0, 2).unwrap();
        if !matches!(init, InitMethod::Auto) {
            assert_ne!(a, b, "{init:?}");
        }
        // The report names each start's strategy, and records the kept restart's start
        // as drawn again (`mdem certify` re-runs EM from it).
        for r in &one.report().restarts[..4] {
            assert_eq!(r.init, init.for_restart(r.index).name());
        }
        let best = one.report().best_restart;
        let attempt = one.report().restarts[best].attempt();
        let drawn = valid.retry_theta0(&model, &data, best, attempt).unwrap();
        assert_eq!(one.report().start_theta, drawn, "{init:?}");
        // `kept_theta0` gives the recorded start, and without one (an older report) draws
        // the same again; a recorded start is used as it is.
        let mut rep = one.report().clone();
        assert_eq!(valid.kept_theta0(&model, &data, &rep).unwrap(), drawn);
        rep.start_theta.clear();
        assert_eq!(valid.kept_theta0(&model, &data, &rep).unwrap(), drawn);
        rep.start_theta = vec![0.25; drawn.len()];
        assert_eq!(
            valid.kept_theta0(&model, &data, &rep).unwrap(),
            vec![0.25; drawn.len()]
        );
    }
}

#[test]
fn auto_cycles_through_the_strategies_and_names_round_trip() {
    let names: Vec<&str> = (0..8)
        .map(|r| InitMethod::Auto.for_restart(r).name())
        .collect();
    assert_eq!(
        names,
        ["kmeans", "short-em", "random", "subset", "kmeans", "short-em", "random", "subset"]
    );
    assert_eq!(AUTO_CYCLE.len(), 4);
    for m in [
        InitMethod::Auto,
        InitMethod::RandomPartition,
        InitMethod::Subset,
        InitMethod::KMeansPlusPlus,
        InitMethod::ShortEm,
        InitMethod::Random,
    ] {
        assert_eq!(InitMethod::from_name(m.name()), Some(m.clone()));
        assert_eq!(
            m.for_restart(3),
            if m == InitMethod::Auto {
                InitMethod::Subset
            } else {
                m
            }
        );
    }
    assert_eq!(
        InitMethod::from_name("kmeans++"),
        Some(InitMethod::KMeansPlusPlus)
    );
    assert_eq!(InitMethod::from_name("given"), None);
    assert_eq!(
        MoeParams::new(2).check().unwrap().params().init_method(),
        &InitMethod::Auto
    );
}

#[test]
fn short_em_start_beats_a_short_run_from_its_first_candidate() {
    // Short-EM's first candidate is the subset start drawn from the same stream, so
    // `SHORT_EM_ITERS` EM iterations from `initial_theta(Subset)` are one of the runs it
    // compares: its start can only be as good or better.
    let data = tone();
    let model = params(Gating::Constant, InitMethod::ShortEm, 1)
        .check()
        .unwrap()
        .model(data.d())
        .unwrap();
    let problem = Problem::new(&model, &data).unwrap();
    for index in 0..6 {
        let short = initial_theta(&model, &data, &InitMethod::ShortEm, 3, index).unwrap();
        let first = initial_theta(&model, &data, &InitMethod::Subset, 3, index).unwrap();
        let run = Executor::new(Problem::new(&model, &data).unwrap(), Em::new())
            .theta0(first)
            .max_iters(SHORT_EM_ITERS)
            .run()
            .unwrap();
        // (The executor's recorded objective and a fresh evaluation agree to round-off.)
        let l_short = problem.objective(&short).unwrap();
        let l_first = run.best.objective;
        assert!(
            l_short <= l_first + 1e-12 * l_first.abs(),
            "{l_short} > {l_first}"
        );
    }
}

#[test]
fn random_subsets_and_partitions_have_the_stated_laws() {
    assert_eq!(subset_size(3, 150, 2), 4);
    assert_eq!(subset_size(30, 40, 2), 20);
    let (n, k, m) = (50, 3, 4);
    // Each row is in some subset with probability Km/n, uniformly over rows.
    let mut hits = vec![0usize; n];
    let draws = 3000;
    for s in 0..draws {
        let labels = random_subsets(n, k, m, &mut restart_rng(7, s)).unwrap();
        for c in 0..k {
            assert_eq!(labels.iter().filter(|l| **l == Some(c)).count(), m);
        }
        for (i, l) in labels.iter().enumerate() {
            hits[i] += usize::from(l.is_some());
        }
    }
    let p = (k * m) as f64 / n as f64;
    let sd = (draws as f64 * p * (1.0 - p)).sqrt();
    for h in hits {
        assert!((h as f64 - draws as f64 * p).abs() < 5.0 * sd, "{h}");
    }
    assert!(random_subsets(10, 3, 4, &mut restart_rng(0, 0)).is_err());
    // Random partitions: each label uniform on 0..K.
    let z = random_partition_labels(30_000, 3, &mut restart_rng(1, 0));
    for c in 0..3 {
        let f = z.iter().filter(|v| **v == c).count() as f64 / 30_000.0;
        assert!((f - 1.0 / 3.0).abs() < 0.015, "{f}");
    }
}

/// Data from a strongly gated two-expert model (gate slope 4 on $x \sim U(-2, 2)$), on
/// which gated starts find the gated optimum, far above the ungated fit.
fn strongly_gated(n: usize) -> Dataset {
    use rand::{Rng, SeedableRng};
    let model =
        MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 2, Gating::Softmax).unwrap();
    let mut truth = vec![0.0, 4.0];
    for (b, s2) in [([1.0, 2.0], 0.1), ([-1.0, -1.0], 0.2)] {
        let mut block = vec![0.0; 3];
        LinearGaussian::natural_from_beta(&b, s2, &mut block).unwrap();
        truth.extend(block);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(31);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let xi: f64 = rng.random_range(-2.0..2.0);
        y.push(model.sample(&truth, &[1.0, xi], &mut rng).unwrap().0[0]);
        x.push(xi);
    }
    Dataset::from_rows(&x, 1, &y, 1).unwrap().with_intercept()
}

/// [`UngatedStart::WhenBelow`] (the default) skips the start from the ungated optimum when
/// a gated start already ended above the ungated fit, and still reports that fit and its
/// time; [`UngatedStart::Always`] runs it, from the same seeded starts otherwise.
#[test]
fn the_ungated_start_runs_only_when_below_unless_always() {
    let data = strongly_gated(600);
    let u = fitted(params(Gating::Constant, InitMethod::Auto, 4), &data)
        .report()
        .log_likelihood;
    let when_below = fitted(params(Gating::Softmax, InitMethod::Auto, 4), &data);
    let rep = when_below.report();
    let ung = rep.ungated.expect("a gated fit reports its ungated fit");
    assert_eq!(ung.log_likelihood, u);
    assert!(
        rep.log_likelihood > u + 10.0,
        "{} vs {u}",
        rep.log_likelihood
    );
    assert!(!ung.start_ran);
    assert_eq!(rep.restarts.len(), 4);
    assert!(rep.restarts.iter().all(|r| r.init != UNGATED_START));
    // Its time is still counted as building starts.
    assert!(ung.seconds > 0.0 && ung.em_seconds > 0.0 && ung.em_seconds <= ung.seconds);
    assert!(rep.start_seconds() >= ung.seconds);
    assert!(rep.start_em_seconds() >= ung.em_seconds);

    let always = fitted(
        params(Gating::Softmax, InitMethod::Auto, 4).ungated_start(UngatedStart::Always),
        &data,
    );
    let ra = always.report();
    assert!(ra
        .ungated
        .is_some_and(|g| g.start_ran && g.log_likelihood == u));
    assert_eq!(ra.restarts.len(), 5);
    assert_eq!(ra.restarts[4].init, UNGATED_START);
    // The seeded starts are the same runs.
    for (a, b) in ra.restarts[..4].iter().zip(&rep.restarts) {
        assert_eq!(a.log_likelihood, b.log_likelihood);
    }
    assert!(ra.log_likelihood >= rep.log_likelihood);
    assert!(ra.restarts[4].log_likelihood.unwrap() >= ung.restart_log_likelihood - 1e-9);

    let off = fitted(
        params(Gating::Softmax, InitMethod::Auto, 4).ungated_start(UngatedStart::Off),
        &data,
    );
    assert!(off.report().ungated.is_none());
    assert_eq!(off.report().restarts.len(), 4);
}

#[test]
fn the_ungated_fit_beside_the_gated_starts_does_not_depend_on_the_threads() {
    // Under `WhenBelow` the ungated fit runs beside the gated starts on its own share of
    // the threads (1 of 2, 1 of 3, 2 of 6); the fit must be the one a single thread gives,
    // whether the extra start ran (crossing lines) or not (a strongly gated sample).
    for (data, n_init, ran) in [(tone(), 8, true), (strongly_gated(600), 3, false)] {
        let valid = params(Gating::Softmax, InitMethod::Auto, n_init)
            .check()
            .unwrap();
        let fits: Vec<FittedMoe> = [1, 2, 3, 6]
            .into_iter()
            .map(|t| with_threads(t, || valid.fit(&data).unwrap()))
            .collect();
        let one = fits[0].report();
        let ung = one.ungated.expect("a gated fit reports its ungated fit");
        assert_eq!(ung.start_ran, ran);
        for other in &fits[1..] {
            let rep = other.report();
            assert_eq!(other.theta(), fits[0].theta());
            assert_eq!(untimed(&rep.restarts), untimed(&one.restarts));
            let u = rep.ungated.expect("a gated fit reports its ungated fit");
            assert_eq!(u.log_likelihood.to_bits(), ung.log_likelihood.to_bits());
            assert_eq!(u.start_ran, ran);
        }
    }
}
