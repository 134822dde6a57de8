//! A plain mixture (no features): $K = 2$ bivariate Gaussians as a mixture of experts
//! with the intercept as the only feature ($d = 1$), $q = 2$ target columns, experts
//! `Glm::new(MultivariateGaussian::new(2))` (every natural component "regressed" on the
//! constant 1, i.e. free) and constant gating.
//!
//! Checks: the EM step equals the independently computed MD(η = 1) step; EM converges
//! with a non-increasing $L$; the fit recovers the means and covariances of two
//! well-separated components (labels aligned); and at the fitted θ each component is the
//! closed-form responsibility-weighted mean and covariance (computed here from the
//! E-step's responsibilities, not by the crate's Newton M-step).

use em_as_md::fit::align::{align_to, layout_of};
use em_as_md::{
    Dataset, Em, EmModel, Executor, FitState, Gating, Glm, MirrorDescent, MixtureOfExperts,
    Problem, Solver, Termination,
};
use faer::Mat;
use mirror::MultivariateGaussian;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

mod common;
use common::rel_vec;

fn cov(a: f64, b: f64, c: f64) -> Mat<f64> {
    Mat::from_fn(2, 2, |i, j| match (i, j) {
        (0, 0) => a,
        (1, 1) => c,
        _ => b,
    })
}

struct Setup {
    model: MixtureOfExperts,
    mvn: MultivariateGaussian,
    data: Dataset,
    truth: Vec<f64>,
    means: [[f64; 2]; 2],
    covs: [Mat<f64>; 2],
}

fn setup(n: usize, seed: u64) -> Setup {
    let mvn = MultivariateGaussian::new(2).unwrap();
    let expert = Glm::new(Arc::new(mvn.clone()));
    let model = MixtureOfExperts::new(Arc::new(expert), 2, 1, Gating::Constant).unwrap();
    let means = [[0.0, 0.0], [5.0, 3.0]];
    let covs = [cov(1.0, 0.3, 0.5), cov(0.6, -0.2, 1.2)];
    // θ = (logit of component 0 vs 1; natural parameter of component 0; of component 1).
    let mut truth = vec![(0.4f64 / 0.6).ln()];
    for k in 0..2 {
        truth.extend(mvn.natural_from_mean_cov(&means[k], &covs[k]).unwrap());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut y = Vec::with_capacity(2 * n);
    for _ in 0..n {
        y.extend(model.sample(&truth, &[1.0], &mut rng).unwrap().0);
    }
    let data = Dataset::from_rows(&[], 0, &y, 2).unwrap().with_intercept();
    Setup {
        model,
        mvn,
        data,
        truth,
        means,
        covs,
    }
}

/// A start with shifted means, unit covariances and equal weights.
fn start(s: &Setup, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut theta = vec![0.0];
    for m in &s.means {
        let shifted = [
            m[0] + rng.random_range(-1.0..1.0),
            m[1] + rng.random_range(-1.0..1.0),
        ];
        theta.extend(
            s.mvn
                .natural_from_mean_cov(&shifted, &cov(1.0, 0.0, 1.0))
                .unwrap(),
        );
    }
    theta
}

#[test]
fn plain_gaussian_mixture_em_step_equals_md_eta_one() {
    let s = setup(400, 5);
    let problem = Problem::new(&s.model, &s.data).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for _ in 0..3 {
        let theta0 = start(&s, &mut rng);
        let l0 = problem.objective(&theta0).unwrap();
        let (s_em, _) = Em::new()
            .next_iter(&problem, FitState::new(theta0.clone(), l0))
            .unwrap();
        let (s_md, rec) = MirrorDescent::new(1.0, 1e-11, 500)
            .unwrap()
            .next_iter(&problem, FitState::new(theta0.clone(), l0))
            .unwrap();
        assert!(rec.inner.converged, "MD inner solve: {rec:?}");
        let e = rel_vec(&s_md.theta, &s_em.theta);
        assert!(
            e < 1e-8,
            "θ differ by {e:e}:\nEM {:?}\nMD {:?}",
            s_em.theta,
            s_md.theta
        );
        let el = (s_md.objective - s_em.objective).abs() / s_em.objective.abs().max(1.0);
        assert!(el < 1e-8, "L: EM {} MD {}", s_em.objective, s_md.objective);
        assert!(rel_vec(&s_em.theta, &theta0) > 1e-3, "the step moved");
    }
}

#[test]
fn plain_gaussian_mixture_em_converges_and_recovers_components() {
    let n = 3000;
    let s = setup(n, 7);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // Start with the components swapped, so alignment is exercised.
    let mut theta0 = start(&s, &mut rng);
    let (a, b) = theta0[1..].split_at_mut(5);
    a.swap_with_slice(b);
    let fit = Executor::new(Problem::new(&s.model, &s.data).unwrap(), Em::new())
        .theta0(theta0)
        .tol(1e-12)
        .max_iters(500)
        .run()
        .unwrap();
    assert!(
        matches!(fit.termination, Termination::Converged { .. }),
        "{:?} after {} iterations",
        fit.termination,
        fit.trace.len()
    );
    let l: Vec<f64> = fit.trace.iter().map(|r| r.objective).collect();
    for w in l.windows(2) {
        assert!(
            w[1] <= w[0] + 1e-10 * w[0].abs().max(1.0),
            "L increased: {} -> {}",
            w[0],
            w[1]
        );
    }
    let theta = align_to(&s.truth, &fit.best.theta, &layout_of(&s.model)).unwrap();
    let pi0 = 1.0 / (1.0 + (-theta[0]).exp());
    assert!((pi0 - 0.4).abs() < 0.04, "π₀ = {pi0}");
    for k in 0..2 {
        let (m, c) = s
            .mvn
            .mean_cov_from_natural(&theta[1 + 5 * k..6 + 5 * k])
            .unwrap();
        for i in 0..2 {
            assert!(
                (m[i] - s.means[k][i]).abs() < 0.1,
                "component {k}: mean {m:?} vs {:?}",
                s.means[k]
            );
            for j in 0..2 {
                assert!(
                    (c[(i, j)] - s.covs[k][(i, j)]).abs() < 0.15,
                    "component {k}: cov[{i}{j}] {} vs {}",
                    c[(i, j)],
                    s.covs[k][(i, j)]
                );
            }
        }
    }

    // Fixed point: each fitted component is the closed-form weighted MLE under the
    // responsibilities at the fitted θ (computed here, not by the M-step code).
    let (stats, _) = s.model.e_step(&s.data, &fit.best.theta).unwrap();
    let mut weights = [0.0; 2];
    for (k, wk) in weights.iter_mut().enumerate() {
        let r = stats.column(k);
        let w: f64 = r.iter().sum();
        *wk = w;
        let mut m = [0.0; 2];
        for (i, ri) in r.iter().enumerate() {
            let y = s.data.y(i);
            m[0] += ri * y[0] / w;
            m[1] += ri * y[1] / w;
        }
        let mut c = Mat::<f64>::zeros(2, 2);
        for (i, ri) in r.iter().enumerate() {
            let y = s.data.y(i);
            for a in 0..2 {
                for b in 0..2 {
                    c[(a, b)] += ri * (y[a] - m[a]) * (y[b] - m[b]) / w;
                }
            }
        }
        let closed = s.mvn.natural_from_mean_cov(&m, &c).unwrap();
        let fitted = &fit.best.theta[1 + 5 * k..6 + 5 * k];
        assert!(
            rel_vec(fitted, &closed) < 1e-6,
            "component {k}: fitted {fitted:?} vs closed form {closed:?}"
        );
    }
    let logit = (weights[0] / weights[1]).ln();
    assert!((fit.best.theta[0] - logit).abs() < 1e-6);
}

/// The same fit from [`MixtureOfExperts::random_params`] starts (no hand-built start):
/// for several seeds and scales every start is in the domain (the precision part of each
/// component positive definite), EM converges with a non-increasing $L$ and recovers
/// the two components.
#[test]
fn plain_gaussian_mixture_fits_from_random_params_starts() {
    let s = setup(1500, 9);
    let problem = Problem::new(&s.model, &s.data).unwrap();
    let layout = layout_of(&s.model);
    for (seed, scale) in [
        (1u64, 1.0),
        (2, 1.0),
        (3, 3.0),
        (4, 3.0),
        (5, 5.0),
        (6, 0.5),
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let theta0 = s.model.random_params(&mut rng, scale);
        for k in 0..2 {
            assert!(
                s.mvn
                    .mean_cov_from_natural(&theta0[1 + 5 * k..6 + 5 * k])
                    .is_ok(),
                "seed {seed}: start {theta0:?}"
            );
        }
        let fit = Executor::new(problem, Em::new())
            .theta0(theta0)
            .tol(1e-12)
            .max_iters(1000)
            .run()
            .unwrap_or_else(|e| panic!("seed {seed}, scale {scale}: {e}"));
        assert!(
            matches!(fit.termination, Termination::Converged { .. }),
            "seed {seed}: {:?} after {} iterations",
            fit.termination,
            fit.trace.len()
        );
        let l: Vec<f64> = fit.trace.iter().map(|r| r.objective).collect();
        for w in l.windows(2) {
            assert!(w[1] <= w[0] + 1e-10 * w[0].abs().max(1.0), "seed {seed}");
        }
        let theta = align_to(&s.truth, &fit.best.theta, &layout).unwrap();
        for k in 0..2 {
            let (m, _) = s
                .mvn
                .mean_cov_from_natural(&theta[1 + 5 * k..6 + 5 * k])
                .unwrap();
            for i in 0..2 {
                assert!(
                    (m[i] - s.means[k][i]).abs() < 0.15,
                    "seed {seed}, scale {scale}, component {k}: mean {m:?} vs {:?}",
                    s.means[k]
                );
            }
        }
    }
}
