//! Random starts ([`MixtureOfExperts::random_params`] through [`Expert::init_params`]) lie
//! in the natural domain of the expert family, for every built-in expert and for [`Glm`]
//! over families whose natural domain is constrained: mirror's multivariate Gaussian
//! ($P \succ 0$), mirror's Gaussian ($\tau < 0$), mirror's Exponential and the examples'
//! Gamma family with known shape ($\theta < 0$). For 200 starts at each of the scales
//! 0.1, 1 and 5, every expert's $\eta_k(x)$ passes the family's own
//! `in_natural_domain` at every data row (features: the intercept, then standard normal
//! and far-out values), and the E-step's $L$ is finite.
//!
//! (The built-in Poisson expert keeps random slopes, so it is checked on the standard
//! normal rows and at scales 0.1 and 1 only: mirror caps the Poisson log-rate at
//! $\log\lambda_{\max} \approx 44$, which its scale-5 starts exceed. `Glm` over mirror's
//! Poisson is checked everywhere.)
//!
//! Also: for unconstrained families `Glm` starts are bit-identical to the built-ins'
//! (same draws), starts are random (experts and seeds differ), scale 0 gives the family's
//! base point, and a family with no known in-domain point gives a typed error.

use em_as_md::{
    Dataset, EmModel, Expert, Gating, Glm, LinearGaussian, Logistic, MixtureOfExperts, MoeError,
    Multinomial, Poisson,
};
use mirror::{ExponentialFamily, MirrorError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::sync::Arc;

#[path = "../../../examples/common/gamma.rs"]
mod gamma;
use gamma::GammaKnownShape;

/// Features: intercept, then $d-1$ standard normal entries; the last rows are far out
/// (±10 in every feature) so that a start valid only near the origin would fail.
fn features(n: usize, d: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut x = Vec::with_capacity(n * (d - 1));
    for i in 0..n {
        for _ in 1..d {
            let v: f64 = match i {
                _ if i + 2 == n => 10.0,
                _ if i + 1 == n => -10.0,
                _ => StandardNormal.sample(rng),
            };
            x.push(v);
        }
    }
    x
}

/// A data set for `expert` with `d` features (intercept first): targets drawn from the
/// family at its `newton_start` point (which is in the domain for every family here), so
/// they lie in the support.
fn dataset(expert: &dyn Expert, n: usize, d: usize, seed: u64) -> Dataset {
    let fam = expert.family();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut base = vec![0.0; fam.dim()];
    fam.newton_start(&mut base);
    assert!(fam.in_natural_domain(&base), "{}", fam.name());
    let q = fam.obs_dim();
    let mut y = vec![0.0; n * q];
    for row in y.chunks_mut(q) {
        fam.sample(&base, &mut rng, row).unwrap();
    }
    let x = features(n, d, &mut rng);
    Dataset::from_rows(&x, d - 1, &y, q)
        .unwrap()
        .with_intercept()
}

fn experts() -> Vec<(Arc<dyn Expert>, &'static str)> {
    let mvn2 = Arc::new(mirror::MultivariateGaussian::new(2).unwrap());
    let mvn3 = Arc::new(mirror::MultivariateGaussian::new(3).unwrap());
    vec![
        (Arc::new(LinearGaussian::new()), "linear-Gaussian"),
        (
            Arc::new(LinearGaussian::with_ridge(0.5).unwrap()),
            "ridge linear-Gaussian",
        ),
        (Arc::new(Logistic::new()), "logistic"),
        (Arc::new(Poisson::new()), "Poisson"),
        (Arc::new(Multinomial::new(4).unwrap()), "multinomial"),
        (Arc::new(Glm::new(mvn2)), "Glm(MVN d=2)"),
        (Arc::new(Glm::new(mvn3.clone())), "Glm(MVN d=3)"),
        (
            // Mean part regressed, precision part constant (a valid start: P = 2I).
            Arc::new(Glm::with_constants(mvn3, 3, vec![-1.0, 0.0, 0.0, -1.0, 0.0, -1.0]).unwrap()),
            "Glm(MVN d=3, constant precision)",
        ),
        (
            Arc::new(Glm::new(Arc::new(mirror::Gaussian::new()))),
            "Glm(Gaussian)",
        ),
        (
            Arc::new(
                Glm::with_constants(Arc::new(mirror::Gaussian::new()), 1, vec![-0.5]).unwrap(),
            ),
            "Glm(Gaussian, constant tau)",
        ),
        (
            Arc::new(Glm::new(Arc::new(mirror::Exponential::new()))),
            "Glm(Exponential)",
        ),
        (
            Arc::new(Glm::new(Arc::new(GammaKnownShape { k: 2.5 }))),
            "Glm(Gamma, examples)",
        ),
        (
            Arc::new(Glm::new(Arc::new(mirror::Poisson::new()))),
            "Glm(Poisson)",
        ),
        (
            Arc::new(Glm::new(Arc::new(mirror::Bernoulli::new()))),
            "Glm(Bernoulli)",
        ),
        (
            Arc::new(Glm::new(Arc::new(mirror::Categorical::new(3).unwrap()))),
            "Glm(Categorical)",
        ),
    ]
}

#[test]
fn random_starts_lie_in_the_natural_domain_and_give_a_finite_e_step() {
    let (n, d, k) = (40, 3, 3);
    for (expert, label) in experts() {
        let data = dataset(expert.as_ref(), n, d, 7);
        let fam = expert.family();
        let mut eta = vec![0.0; fam.dim()];
        // The built-in Poisson keeps random slopes (its documented behaviour), so some
        // far-out x always takes bᵀx past mirror's cap log λ_max ≈ 44: checked on the
        // standard normal rows only. Every other expert is checked on all rows.
        let rows = if label == "Poisson" { n - 2 } else { n };
        let data = if label == "Poisson" {
            data.select(&(0..rows).collect::<Vec<_>>())
        } else {
            data
        };
        for gating in [Gating::Softmax, Gating::Constant] {
            let model = MixtureOfExperts::new(expert.clone(), k, d, gating).unwrap();
            for scale in [0.1, 1.0, 5.0] {
                if label == "Poisson" && scale > 1.0 {
                    // Known limitation of the built-in (kept unchanged): at scale 5 a
                    // start exceeds the cap on standard normal rows too (e.g. start 145).
                    continue;
                }
                let mut rng = ChaCha8Rng::seed_from_u64(11);
                for start in 0..200 {
                    let theta = model.random_params(&mut rng, scale);
                    assert!(theta.iter().all(|v| v.is_finite()), "{label}: {theta:?}");
                    for kk in 0..k {
                        for i in 0..rows {
                            model.expert_natural(&theta, kk, data.x(i), &mut eta);
                            assert!(
                                fam.in_natural_domain(&eta),
                                "{label}, scale {scale}, start {start}, expert {kk}, row {i}: \
                                 η = {eta:?} is outside the domain"
                            );
                        }
                    }
                    let l = match model.e_step(&data, &theta) {
                        Ok((_, l)) => l,
                        Err(e) => panic!("{label}, scale {scale}, start {start}: E-step {e}"),
                    };
                    assert!(
                        l.is_finite(),
                        "{label}, scale {scale}, start {start}: L = {l}"
                    );
                }
            }
        }
    }
}

#[test]
fn glm_starts_equal_the_built_ins_where_the_domain_is_unconstrained() {
    // Same family, same draws: Glm over an unconstrained family (and the Gaussian with a
    // constant τ = −1/2) starts exactly where the matching built-in does.
    let pairs: Vec<(Arc<dyn Expert>, Arc<dyn Expert>)> = vec![
        (
            Arc::new(Logistic::new()),
            Arc::new(Glm::new(Arc::new(mirror::Bernoulli::new()))),
        ),
        (
            Arc::new(Multinomial::new(3).unwrap()),
            Arc::new(Glm::new(Arc::new(mirror::Categorical::new(3).unwrap()))),
        ),
        (
            Arc::new(LinearGaussian::new()),
            Arc::new(
                Glm::with_constants(Arc::new(mirror::Gaussian::new()), 1, vec![-0.5]).unwrap(),
            ),
        ),
    ];
    for (builtin, glm) in pairs {
        let a = MixtureOfExperts::new(builtin.clone(), 3, 4, Gating::Softmax).unwrap();
        let b = MixtureOfExperts::new(glm, 3, 4, Gating::Softmax).unwrap();
        for scale in [0.1, 1.0, 5.0] {
            let ta = a.random_params(&mut ChaCha8Rng::seed_from_u64(5), scale);
            let tb = b.random_params(&mut ChaCha8Rng::seed_from_u64(5), scale);
            assert_eq!(ta, tb, "{}", builtin.name());
        }
    }
}

#[test]
fn constrained_glm_starts_are_random_and_scale_zero_is_the_base_point() {
    let mvn = Arc::new(mirror::MultivariateGaussian::new(2).unwrap());
    let glm = Glm::new(mvn.clone());
    let model = MixtureOfExperts::new(Arc::new(glm.clone()), 3, 1, Gating::Constant).unwrap();
    // Scale 0: every expert at the base point, mean 0 and identity covariance.
    let theta = model.random_params(&mut ChaCha8Rng::seed_from_u64(1), 0.0);
    for k in 0..3 {
        let (m, c) = mvn
            .mean_cov_from_natural(model.expert_block(&theta, k))
            .unwrap();
        assert_eq!(m, vec![0.0, 0.0]);
        for i in 0..2 {
            for j in 0..2 {
                assert_eq!(c[(i, j)], if i == j { 1.0 } else { 0.0 });
            }
        }
    }
    assert_eq!(glm.start_point().unwrap(), vec![0.0, 0.0, -0.5, 0.0, -0.5]);
    // Scale 1: experts differ from each other, from the base point and between seeds, in
    // the mean part and in the precision part.
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let t1 = model.random_params(&mut rng, 1.0);
    let t2 = model.random_params(&mut rng, 1.0);
    for k in 0..3 {
        let b1 = model.expert_block(&t1, k);
        let b2 = model.expert_block(&t2, k);
        let b_next = model.expert_block(&t1, (k + 1) % 3);
        for blk in [b2, b_next] {
            assert!(
                b1[..2] != blk[..2] && b1[2..] != blk[2..],
                "{b1:?} vs {blk:?}"
            );
        }
        assert!(b1[2..].iter().zip([-0.5, 0.0, -0.5]).all(|(a, b)| *a != b));
    }
    // Gamma regression: random intercepts, zero slopes (θ(x) < 0 for every x).
    let gam = MixtureOfExperts::new(
        Arc::new(Glm::new(Arc::new(GammaKnownShape { k: 2.0 }))),
        2,
        3,
        Gating::Softmax,
    )
    .unwrap();
    let theta = gam.random_params(&mut ChaCha8Rng::seed_from_u64(3), 1.0);
    let (e0, e1) = (gam.expert_block(&theta, 0), gam.expert_block(&theta, 1));
    assert!(
        e0[0] < 0.0 && e1[0] < 0.0 && e0[0] != e1[0],
        "{e0:?} {e1:?}"
    );
    assert_eq!((&e0[1..], &e1[1..]), (&[0.0, 0.0][..], &[0.0, 0.0][..]));
}

/// A family whose natural domain excludes its `newton_start` (the trait's default 0):
/// $\theta > 1$, an exponential-type law on $\{0\}$ with $A(\theta) = -\log(\theta - 1)$
/// (only the domain matters here).
struct NoStart;

impl ExponentialFamily for NoStart {
    fn name(&self) -> String {
        "NoStart".into()
    }
    fn dim(&self) -> usize {
        1
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s[0] >= 0.0
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta[0] > 1.0 && theta[0].is_finite()
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu[0] > 0.0
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = -s[0];
    }
    fn log_base_measure(&self, _s: &[f64]) -> f64 {
        0.0
    }
    fn log_partition(&self, theta: &[f64]) -> mirror::Result<f64> {
        Ok(-(theta[0] - 1.0).ln())
    }
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> mirror::Result<()> {
        mu[0] = -1.0 / (theta[0] - 1.0);
        Ok(())
    }
    fn fisher(&self, theta: &[f64]) -> mirror::Result<faer::Mat<f64>> {
        Ok(faer::Mat::from_fn(1, 1, |_, _| (theta[0] - 1.0).powi(-2)))
    }
    fn sample(&self, _: &[f64], _: &mut dyn rand::RngCore, s: &mut [f64]) -> mirror::Result<()> {
        s[0] = 0.0;
        Ok(())
    }
}

#[test]
fn a_family_without_an_in_domain_start_gives_a_typed_error() {
    let glm = Glm::new(Arc::new(NoStart));
    assert!(matches!(
        glm.start_point(),
        Err(MoeError::Mirror(MirrorError::OutsideDomain { .. }))
    ));
    // Invalid user constants fall back to the family's start when that one is valid.
    let g = Glm::with_constants(Arc::new(mirror::Gaussian::new()), 1, vec![3.0]).unwrap();
    assert_eq!(g.start_point().unwrap(), vec![0.0, -0.5]);
    let mut out = vec![0.0; 3];
    g.init_params(2, &mut ChaCha8Rng::seed_from_u64(0), 1.0, &mut out);
    assert_eq!(out[2], -0.5);
    // With a start that is valid, the user's constants are kept.
    let g = Glm::with_constants(Arc::new(mirror::Gaussian::new()), 1, vec![-2.0]).unwrap();
    assert_eq!(g.start_point().unwrap(), vec![0.0, -2.0]);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let scale = rng.random_range(0.5..2.0);
    g.init_params(2, &mut rng, scale, &mut out);
    assert_eq!(out[2], -2.0);
}
