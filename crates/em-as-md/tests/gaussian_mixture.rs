//! The Gaussian mixture's fast path ([`GaussianCluster`], the mixture's Gaussian-mixture
//! E-/M-step) against independent computations:
//! - the generic path `Glm(MultivariateGaussian)` on the same data and θ (row densities
//!   from the family's log-partition, M-step by Newton on the weighted objective): same
//!   objective, same M-step;
//! - a brute-force per-row loop of $\log\sum_k\pi_k N(y_i; m_k, \Sigma_k)$ from the
//!   family's `log_density`;
//! - EM ≡ MD(η = 1) by the public harness, for full, diagonal and spherical covariances;
//! - the diagonal and spherical M-steps against Newton on the same (linear-subfamily)
//!   objective, and the M-step as a stationary point of $Q$ by finite differences;
//! - a monotone log-likelihood under EM, the covariance floor, typed errors, thread-count
//!   independence, the registry round trip and k-means++ starts.

use em_as_md::error::Block;
use em_as_md::model::expert::{
    glm_newton, ComponentDensity, GaussianClusters, InnerBudget, WeightedMoments, REG_COVAR,
};
use em_as_md::model::registry::build_expert;
use em_as_md::testkit::em_md_gap;
use em_as_md::{
    ConditionalFamily, CovarianceType, Dataset, Em, EmModel, Executor, Expert, FittedMoe, Gating,
    GaussianCluster, Glm, InitMethod, MixtureOfExperts, MoeError, MoeParams, Problem, WeightedFit,
};
use faer::Mat;
use mirror::{ExponentialFamily, MultivariateGaussian};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::sync::Arc;

mod common;
use common::{rel_vec, with_threads};

const COVS: [CovarianceType; 3] = [
    CovarianceType::Full,
    CovarianceType::Diag,
    CovarianceType::Spherical,
];

/// $n$ rows from three well-separated correlated clusters in $q = 3$ dimensions, as a
/// data set with the intercept as its only feature.
fn clusters(n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres = [[0.0, 0.0, 0.0], [4.0, -3.0, 1.0], [-3.0, 4.0, 5.0]];
    let mut y = Vec::with_capacity(3 * n);
    for i in 0..n {
        let c = centres[i % 3];
        let z: [f64; 3] = std::array::from_fn(|_| StandardNormal.sample(&mut rng));
        y.extend([
            c[0] + z[0],
            c[1] + 0.6 * z[0] + 0.8 * z[1],
            c[2] + 0.3 * z[2] - 0.2 * z[1],
        ]);
    }
    Dataset::from_rows(&[], 0, &y, 3).unwrap().with_intercept()
}

fn model(cov: CovarianceType, reg: f64, k: usize) -> MixtureOfExperts {
    let e = GaussianCluster::new(3, cov, reg).unwrap();
    MixtureOfExperts::new(Arc::new(e), k, 1, Gating::Constant).unwrap()
}

/// A start with random means near the data and covariance `s` I, random mixing logits.
fn start(m: &MixtureOfExperts, rng: &mut ChaCha8Rng, s: f64) -> Vec<f64> {
    let e = GaussianCluster::new(3, CovarianceType::Full, 0.0).unwrap();
    let k = m.n_experts();
    let mut theta: Vec<f64> = (0..k - 1).map(|_| rng.random_range(-0.5..0.5)).collect();
    let cov = Mat::from_fn(3, 3, |i, j| if i == j { s } else { 0.0 });
    assert!(m.expert().gaussian_clusters().is_some());
    for _ in 0..k {
        let mean: Vec<f64> = (0..3).map(|_| rng.random_range(-3.0..4.0)).collect();
        let mut full = vec![0.0; e.block_len()];
        e.block_from_mean_cov(&mean, cov.as_ref(), &mut full)
            .unwrap();
        // Project the full block to the model's layout through its own constructor.
        let (mm, cc) = e.mean_cov(&full).unwrap();
        let own = cluster_of(m);
        let mut block = vec![0.0; own.block_len()];
        own.block_from_mean_cov(&mm, cc.as_ref(), &mut block)
            .unwrap();
        theta.extend(block);
    }
    theta
}

/// The model's expert rebuilt from its description (a `GaussianCluster`).
fn cluster_of(m: &MixtureOfExperts) -> GaussianCluster {
    let spec = m.expert().spec().unwrap();
    let q = spec.params.get("dim").unwrap() as usize;
    let cov = CovarianceType::from_code(spec.params.get("covariance").unwrap() as u64).unwrap();
    GaussianCluster::new(q, cov, spec.params.get("reg_covar").unwrap()).unwrap()
}

#[test]
fn fast_path_equals_the_generic_multivariate_gaussian_glm() {
    let data = clusters(900, 1);
    let fast = model(CovarianceType::Full, 0.0, 3);
    let generic = MixtureOfExperts::new(
        Arc::new(Glm::new(Arc::new(MultivariateGaussian::new(3).unwrap()))),
        3,
        1,
        Gating::Constant,
    )
    .unwrap();
    assert_eq!(fast.n_params(), generic.n_params());
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _ in 0..3 {
        let theta = start(&fast, &mut rng, 2.0);
        let (sf, lf) = fast.e_step(&data, &theta).unwrap();
        let (sg, lg) = generic.e_step(&data, &theta).unwrap();
        assert!(
            (lf - lg).abs() <= 1e-12 * lg.abs(),
            "L: fast {lf} generic {lg}"
        );
        assert!(rel_vec(&sf.resp, &sg.resp) < 1e-12);
        assert!(sf.clusters.is_some() && sg.clusters.is_none());
        let (mut nf, mut ng) = (theta.clone(), theta.clone());
        let inf = fast.m_step(&data, &sf, &theta, &mut nf).unwrap();
        let ing = generic.m_step(&data, &sg, &theta, &mut ng).unwrap();
        assert!(inf.converged && ing.converged && ing.iterations > 0);
        assert_eq!((inf.hessians, inf.fallbacks), (3, 0));
        let gap = rel_vec(&nf, &ng);
        assert!(gap < 1e-8, "M-steps differ by {gap:e}:\n{nf:?}\n{ng:?}");
    }
}

#[test]
fn e_step_objective_equals_a_brute_force_row_loop() {
    let data = clusters(300, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for cov in COVS {
        let m = model(cov, REG_COVAR, 3);
        let e = cluster_of(&m);
        let mvn = MultivariateGaussian::new(3).unwrap();
        let theta = start(&m, &mut rng, 1.5);
        let (_, l) = m.e_step(&data, &theta).unwrap();
        let mut logits = vec![0.0; 3];
        m.gate_logits(&theta, &[1.0], &mut logits);
        let lse = mirror::special::log_sum_exp(&logits);
        let mut total = 0.0;
        for i in 0..data.n() {
            let terms: Vec<f64> = (0..3)
                .map(|c| {
                    let mut nat = vec![0.0; mvn.dim()];
                    e.embed(m.expert_block(&theta, c), &mut nat);
                    logits[c] - lse + mvn.log_density(&nat, data.y(i)).unwrap()
                })
                .collect();
            total += mirror::special::log_sum_exp(&terms);
        }
        let brute = -total / data.n() as f64;
        assert!(
            (l - brute).abs() <= 1e-12 * brute.abs(),
            "{cov:?}: {l} vs {brute}"
        );
        // And the one-row density of the capability.
        let parts = e.density_parts(m.expert_block(&theta, 1)).unwrap();
        let mut nat = vec![0.0; mvn.dim()];
        e.embed(m.expert_block(&theta, 1), &mut nat);
        let y = data.y(7);
        assert!((parts.log_density(y) - mvn.log_density(&nat, y).unwrap()).abs() < 1e-12);
    }
}

#[test]
fn em_step_equals_md_eta_one_for_every_covariance_type() {
    let data = clusters(450, 5);
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for cov in COVS {
        let m = model(cov, 0.0, 3);
        for _ in 0..2 {
            let theta0 = start(&m, &mut rng, 2.0);
            let gap = em_md_gap(&m, &data, &theta0, 1.0).unwrap();
            assert!(gap.agrees(1e-7), "{cov:?}: {gap}");
            assert!(gap.em_step > 1e-3, "the step moved");
        }
    }
}

/// The closed-form M-step of every covariance model: for the full model it equals the
/// generic GLM Newton solve on the same objective (`glm_newton`, which needs the GLM
/// layout and refuses the diagonal and spherical blocks with a typed error), and for all
/// three it is a stationary point of $Q$ by central differences of the family's
/// `log_density` (EM ≡ MD above checks them against the L-BFGS mirror-descent solve).
#[test]
fn m_steps_are_the_maximisers_of_the_weighted_objective() {
    let data = clusters(400, 7);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let w: Vec<f64> = (0..data.n()).map(|_| rng.random_range(0.0..1.0)).collect();
    for cov in COVS {
        let e = GaussianCluster::new(3, cov, 0.0).unwrap();
        let np = e.block_len();
        assert_eq!(e.n_params(1), np);
        let mut s = vec![0.0; np];
        e.default_constants(&mut s[3..]);
        let mut closed = vec![0.0; np];
        let st = e
            .weighted_fit(WeightedFit::new(&data, &w, &s), &mut closed)
            .unwrap();
        assert!(st.converged && st.fallbacks == 0);
        let mut newton = vec![0.0; np];
        let sn = glm_newton(
            &e,
            WeightedFit::new(&data, &w, &s),
            &mut newton,
            InnerBudget::new(1e-12, 200),
        );
        if cov == CovarianceType::Full {
            assert!(sn.unwrap().converged);
            assert!(
                rel_vec(&closed, &newton) < 1e-8,
                "{cov:?}: closed {closed:?} newton {newton:?}"
            );
        } else {
            assert!(
                matches!(sn, Err(MoeError::InvalidParam { name: "expert", .. })),
                "{sn:?}"
            );
        }
        // Stationary point of Q(ϑ) = Σ w_i[⟨T(y_i), Eϑ⟩ − A(Eϑ)] by central differences.
        let q_of = |b: &[f64]| -> f64 {
            let mut nat = vec![0.0; e.mvn().dim()];
            e.embed(b, &mut nat);
            (0..data.n())
                .map(|i| w[i] * e.mvn().log_density(&nat, data.y(i)).unwrap())
                .sum()
        };
        let wsum: f64 = w.iter().sum();
        for j in 0..np {
            let h = 1e-5;
            let (mut p, mut mn) = (closed.clone(), closed.clone());
            p[j] += h;
            mn[j] -= h;
            let g = (q_of(&p) - q_of(&mn)) / (2.0 * h) / wsum;
            assert!(g.abs() < 1e-6, "{cov:?}: dQ/dϑ_{j} = {g:e}");
        }
    }
}

#[test]
fn spherical_and_diagonal_moments_are_the_closed_forms() {
    // Independent arithmetic: weights, points and the expected mean/variances by hand.
    let y = [0.0, 0.0, 2.0, 0.0, 0.0, 4.0];
    let data = Dataset::from_rows(&[], 0, &y, 2).unwrap().with_intercept();
    let w = [1.0, 1.0, 2.0];
    // W = 4, mean (2/4, 8/4) = (0.5, 2); deviations (−0.5,−2), (1.5,−2), (−0.5,2) with
    // weights 1, 1, 2: var_0 = (0.25 + 2.25 + 0.5)/4 = 0.75, var_1 = (4 + 4 + 8)/4 = 4.
    for (cov, var) in [
        (CovarianceType::Diag, [0.75, 4.0]),
        (CovarianceType::Spherical, [2.375, 2.375]),
    ] {
        let e = GaussianCluster::new(2, cov, 0.25).unwrap();
        let mut out = vec![0.0; e.block_len()];
        e.weighted_fit(WeightedFit::new(&data, &w, &out.clone()), &mut out)
            .unwrap();
        let (m, c) = e.mean_cov(&out).unwrap();
        assert!(
            (m[0] - 0.5).abs() < 1e-14 && (m[1] - 2.0).abs() < 1e-14,
            "{m:?}"
        );
        for j in 0..2 {
            assert!((c[(j, j)] - (var[j] + 0.25)).abs() < 1e-13, "{cov:?} {j}");
        }
        assert!(c[(0, 1)].abs() < 1e-15);
    }
}

/// A [`GaussianClusters`] with only the required methods (delegated), so that its
/// `mean_cov` is the trait's default.
struct OnlyRequired(GaussianCluster);

impl GaussianClusters for OnlyRequired {
    fn obs_dim(&self) -> usize {
        self.0.dim()
    }
    fn density_parts(&self, block: &[f64]) -> em_as_md::Result<ComponentDensity> {
        self.0.density_parts(block)
    }
    fn solve_from_moments(
        &self,
        stats: WeightedMoments<'_>,
        out: &mut [f64],
    ) -> em_as_md::Result<bool> {
        self.0.solve_from_moments(stats, out)
    }
}

#[test]
fn mean_cov_recovers_the_mean_and_covariance_a_block_was_built_from() {
    // Σ = (LLᵀ)⁻¹ from the precision factor (the trait's default) and the expert's own
    // inversion of its precision, against the (m, Σ) each block was built from.
    let m = [0.3, -1.2, 2.0];
    let sigma = Mat::from_fn(3, 3, |i, j| match (i, j) {
        (0, 0) => 2.0,
        (1, 1) => 1.5,
        (2, 2) => 0.7,
        (0, 1) | (1, 0) => 0.4,
        (1, 2) | (2, 1) => -0.3,
        _ => 0.1,
    });
    for cov in COVS {
        let e = GaussianCluster::new(3, cov, REG_COVAR).unwrap();
        // What the block keeps of Σ: all of it, its diagonal, or Σ₀₀ I (the spherical
        // block reads Σ₀₀).
        let kept = Mat::from_fn(3, 3, |i, j| match cov {
            CovarianceType::Full => sigma[(i, j)],
            CovarianceType::Diag if i == j => sigma[(i, i)],
            CovarianceType::Spherical if i == j => sigma[(0, 0)],
            _ => 0.0,
        });
        let mut block = vec![0.0; e.block_len()];
        e.block_from_mean_cov(&m, sigma.as_ref(), &mut block)
            .unwrap();
        let by_default = OnlyRequired(e.clone()).mean_cov(&block).unwrap();
        let by_expert = GaussianClusters::mean_cov(&e, &block).unwrap();
        for (mean, c) in [by_default, by_expert] {
            assert!(rel_vec(&mean, &m) < 1e-12, "{cov:?}: {mean:?}");
            for i in 0..3 {
                for j in 0..3 {
                    assert!(
                        (c[(i, j)] - kept[(i, j)]).abs() < 1e-12,
                        "{cov:?} ({i}, {j}): {} vs {}",
                        c[(i, j)],
                        kept[(i, j)]
                    );
                }
            }
        }
    }
    // A block outside the domain is the typed error of `density_parts`.
    let e = GaussianCluster::full(3).unwrap();
    let bad = vec![0.0; e.block_len()];
    assert!(matches!(
        OnlyRequired(e).mean_cov(&bad),
        Err(MoeError::LeftDomain { .. })
    ));
}

#[test]
fn em_log_likelihood_is_monotone_and_recovers_the_clusters() {
    let data = clusters(1500, 9);
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    for cov in COVS {
        let m = model(cov, REG_COVAR, 3);
        let theta0 = start(&m, &mut rng, 3.0);
        let fit = Executor::new(Problem::new(&m, &data).unwrap(), Em::new())
            .theta0(theta0)
            .tol(1e-12)
            .max_iters(500)
            .run()
            .unwrap();
        let l: Vec<f64> = fit.trace.iter().map(|r| r.objective).collect();
        assert!(l.len() > 3);
        for w in l.windows(2) {
            assert!(
                w[1] <= w[0] + 1e-12 * w[0].abs(),
                "{cov:?}: L rose {} -> {}",
                w[0],
                w[1]
            );
        }
    }
}

#[test]
fn a_collapsing_component_is_floored_and_reported_or_a_typed_error() {
    // Component 1 gets all its weight on one point: its covariance is 0.
    let data = clusters(60, 11);
    let n = data.n();
    let mut resp = vec![0.0; n * 2];
    for i in 0..n {
        let c = usize::from(i == 5);
        resp[i * 2 + c] = 1.0;
    }
    for cov in COVS {
        let m = model(cov, REG_COVAR, 2);
        let stats = m.stats_from_responsibilities(&data, &resp).unwrap();
        let theta = vec![0.0; m.n_params()];
        let mut next = theta.clone();
        let inner = m.m_step(&data, &stats, &theta, &mut next).unwrap();
        assert_eq!(
            inner.fallbacks, 1,
            "{cov:?}: the floored component is counted"
        );
        let (mean, c) = cluster_of(&m).mean_cov(m.expert_block(&next, 1)).unwrap();
        assert!(rel_vec(&mean, data.y(5)) < 1e-12);
        for j in 0..3 {
            assert!((c[(j, j)] - REG_COVAR).abs() < 1e-12 * (1.0 + REG_COVAR) + 1e-15);
        }
        // Without a floor the same M-step is a typed error naming the component.
        let m0 = model(cov, 0.0, 2);
        let stats = m0.stats_from_responsibilities(&data, &resp).unwrap();
        let err = m0.m_step(&data, &stats, &theta, &mut next).unwrap_err();
        assert!(
            matches!(
                err.root(),
                MoeError::NotPositiveDefinite {
                    block: Block::Expert(Some(1)),
                    ..
                }
            ),
            "{cov:?}: {err:?}"
        );
    }
}

#[test]
fn bad_input_gives_typed_errors() {
    assert!(matches!(
        GaussianCluster::new(3, CovarianceType::Full, -1.0),
        Err(MoeError::InvalidParam {
            name: "reg_covar",
            ..
        })
    ));
    assert!(matches!(
        GaussianCluster::new(3, CovarianceType::Full, f64::NAN),
        Err(MoeError::InvalidParam {
            name: "reg_covar",
            ..
        })
    ));
    assert!(matches!(
        GaussianCluster::new(0, CovarianceType::Full, 0.0),
        Err(MoeError::InvalidParam { name: "dim", .. })
    ));
    // K > n.
    let small = clusters(4, 12);
    let m = model(CovarianceType::Full, REG_COVAR, 5);
    let theta = vec![0.0; m.n_params()];
    assert!(matches!(
        m.e_step(&small, &theta),
        Err(MoeError::InvalidParam {
            name: "n_experts",
            ..
        })
    ));
    // A θ whose precision is not positive definite: LeftDomain naming the component.
    let m = model(CovarianceType::Full, REG_COVAR, 2);
    let data = clusters(30, 13);
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let mut theta = start(&m, &mut rng, 1.0);
    let b = m.expert_block_mut(&mut theta, 1);
    b[3] = 0.5; // λ₀₀ > 0: P₀₀ < 0
    let err = m.e_step(&data, &theta).unwrap_err();
    assert!(matches!(err.root(), MoeError::LeftDomain { .. }), "{err:?}");
    // A constant column with no floor: the covariance is singular in every component.
    let mut y = Vec::new();
    for i in 0..40 {
        y.extend([i as f64, 7.0, (i * i % 13) as f64]);
    }
    let flat = Dataset::from_rows(&[], 0, &y, 3).unwrap().with_intercept();
    let e = GaussianCluster::new(3, CovarianceType::Full, 0.0).unwrap();
    let mut out = vec![0.0; e.block_len()];
    let err = e
        .weighted_fit(WeightedFit::new(&flat, &[1.0; 40], &out.clone()), &mut out)
        .unwrap_err();
    assert!(
        matches!(err, MoeError::NotPositiveDefinite { .. }),
        "{err:?}"
    );
    // Zero weight: an empty component.
    let s = e.solve_from_moments(
        WeightedMoments {
            wsum: 0.0,
            centre: &[0.0; 3],
            sum: &[0.0; 3],
            scatter: Mat::<f64>::zeros(3, 3).as_ref(),
        },
        &mut out,
    );
    assert!(matches!(
        s,
        Err(MoeError::NotPositiveDefinite { pivot: 0, .. })
    ));
}

#[test]
fn e_and_m_steps_are_identical_for_any_thread_count() {
    let data = clusters(10_000, 15);
    let m = model(CovarianceType::Full, REG_COVAR, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    let theta = start(&m, &mut rng, 2.0);
    let run = || {
        let (s, l) = m.e_step(&data, &theta).unwrap();
        let mut next = theta.clone();
        m.m_step(&data, &s, &theta, &mut next).unwrap();
        (
            l.to_bits(),
            next.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        )
    };
    let one = with_threads(1, run);
    let two = with_threads(2, run);
    let three = with_threads(3, run);
    assert_eq!(one, two);
    assert_eq!(one, three);
}

#[test]
fn registry_round_trip_and_kmeans_starts_fit_and_reload() {
    for cov in COVS {
        let e = GaussianCluster::new(3, cov, 1e-4).unwrap();
        let back = build_expert(&e.spec().unwrap()).unwrap();
        assert_eq!(back.spec(), e.spec());
        assert_eq!(back.name(), e.name());
    }
    let data = clusters(600, 17);
    let fitted = MoeParams::new(3)
        .expert(GaussianCluster::full(3).unwrap())
        .gating(Gating::Constant)
        .init(InitMethod::KMeansPlusPlus)
        .n_init(2)
        .seed(3)
        .check()
        .unwrap()
        .fit(&data)
        .unwrap();
    assert!(
        fitted.report().converged(),
        "{:?}",
        fitted.report().termination
    );
    // Three clusters of 200 rows each are found: each mixing weight near 1/3.
    let resp = fitted.responsibilities(&data).unwrap();
    for c in 0..3 {
        let w: f64 = resp.iter().skip(c).step_by(3).sum::<f64>() / 600.0;
        assert!((w - 1.0 / 3.0).abs() < 0.02, "weight {c}: {w}");
    }
    let path = std::env::temp_dir().join(format!("gmm-{}.json", std::process::id()));
    fitted.save(&path).unwrap();
    let back = FittedMoe::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(back.theta(), fitted.theta());
    assert_eq!(
        back.responsibilities(&data).unwrap(),
        fitted.responsibilities(&data).unwrap()
    );
}
