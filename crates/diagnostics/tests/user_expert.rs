//! A researcher's own expert is first-class: a Gamma family with unknown shape written
//! here (as a user's crate would write it) and registered under a name, a user's own
//! expert type registered with its builder, and every built-in expert all go through
//! the same path — `MoeParams` with 4 seeded restarts from k-means++ and random starts,
//! prediction, information criteria, save → load with bit-identical predictions, standard
//! errors, and standard errors that follow aligned labels.

use diagnostics::stderr::standard_errors;
use em_as_md::fit::align::{layout_of, permute_theta};
use em_as_md::fit::io::{from_json, to_json};
use em_as_md::fit::UNGATED_START;
use em_as_md::model::registry::{self, ExpertEntry, FamilyEntry};
use em_as_md::{
    Dataset, Expert, ExpertSpec, FittedMoe, Gating, GaussianRegression, Glm, InitMethod,
    LinearGaussian, Logistic, MixtureOfExperts, MoeError, MoeParams, Multinomial, Params, Poisson,
    Problem, RegistryError,
};
use mirror::special::{digamma, trigamma};
use mirror::{faer, rand, ExponentialFamily, MirrorError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::Distribution;
use statrs::function::gamma::ln_gamma;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------
// The user's family: Gamma with unknown shape and rate,
// T(s) = (s, ln s), θ = (−rate, shape − 1), h = 1,
// A(θ) = ln Γ(θ₂ + 1) − (θ₂ + 1) ln(−θ₁).

struct GammaShape;

fn shape_rate(theta: &[f64]) -> mirror::Result<(f64, f64)> {
    if GammaShape.in_natural_domain(theta) {
        Ok((theta[1] + 1.0, -theta[0]))
    } else {
        Err(MirrorError::OutsideDomain {
            what: "natural parameter",
            reason: format!("{theta:?}: need theta_1 < 0 < theta_2 + 1"),
        })
    }
}

impl ExponentialFamily for GammaShape {
    fn name(&self) -> String {
        "Gamma(shape, rate)".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s.len() == 1 && s[0] > 0.0 && s[0].is_finite()
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta.len() == 2
            && theta[0] < 0.0
            && theta[0].is_finite()
            && theta[1] > -1.0
            && theta[1].is_finite()
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu.len() == 2 && mu[0] > 0.0 && mu[0].is_finite() && mu[1].is_finite() && mu[1] < mu[0].ln()
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = s[0];
        t[1] = s[0].ln();
    }
    fn log_base_measure(&self, _s: &[f64]) -> f64 {
        0.0
    }
    fn log_partition(&self, theta: &[f64]) -> mirror::Result<f64> {
        let (shape, rate) = shape_rate(theta)?;
        Ok(ln_gamma(shape) - shape * rate.ln())
    }
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> mirror::Result<()> {
        let (shape, rate) = shape_rate(theta)?;
        mu[0] = shape / rate;
        mu[1] = digamma(shape) - rate.ln();
        Ok(())
    }
    fn fisher(&self, theta: &[f64]) -> mirror::Result<faer::Mat<f64>> {
        let (shape, rate) = shape_rate(theta)?;
        Ok(faer::Mat::from_fn(2, 2, |i, j| match (i, j) {
            (0, 0) => shape / (rate * rate),
            (1, 1) => trigamma(shape),
            _ => 1.0 / rate,
        }))
    }
    fn sample(
        &self,
        theta: &[f64],
        rng: &mut dyn rand::RngCore,
        s: &mut [f64],
    ) -> mirror::Result<()> {
        let (shape, rate) = shape_rate(theta)?;
        let g = rand_distr::Gamma::new(shape, 1.0 / rate).map_err(|_| {
            MirrorError::InvalidParameter {
                name: "shape",
                value: shape,
                reason: "a Gamma law rand_distr can sample",
            }
        })?;
        s[0] = g.sample(rng);
        Ok(())
    }
    /// θ = 0 is outside the domain: start Newton at the unit exponential law.
    fn newton_start(&self, theta: &mut [f64]) {
        theta[0] = -1.0;
        theta[1] = 0.0;
    }
}

/// The builder registered under `gamma` (no parameters).
fn gamma_family(_: &[f64]) -> em_as_md::Result<Arc<dyn ExponentialFamily>> {
    Ok(Arc::new(GammaShape))
}

/// Registers the family once per test process (every test calls it; registering the same
/// entry again is a no-op).
fn register_gamma() {
    registry::register_family(
        FamilyEntry::new("gamma", &[], gamma_family)
            .summary("Gamma with unknown shape and rate, T(s) = (s, ln s)"),
    )
    .unwrap();
}

/// The Gamma-regression expert: −rate regressed on x (canonical link), shape − 1 a
/// constant starting at 0.
fn gamma_expert() -> Glm {
    register_gamma();
    Glm::registered("gamma", &Params::new())
        .unwrap()
        .regressing(1, vec![0.0])
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// A user's own expert type: linear regression with Gaussian noise, written from scratch
// with its own closed-form M-step, offering the Gaussian-regression capability.

#[derive(Debug, Default)]
struct MyLinear {
    family: mirror::Gaussian,
}

impl Expert for MyLinear {
    fn name(&self) -> String {
        "my linear".into()
    }
    fn family(&self) -> &dyn ExponentialFamily {
        &self.family
    }
    fn n_regressed(&self) -> usize {
        1
    }
    fn default_constants(&self, out: &mut [f64]) {
        out[0] = -0.5;
    }
    fn spec(&self) -> Option<ExpertSpec> {
        Some(ExpertSpec::new("my-linear"))
    }
    fn gaussian_regression(&self) -> Option<&dyn GaussianRegression> {
        Some(self)
    }
}

impl GaussianRegression for MyLinear {
    fn mean_variance(&self, params: &[f64], beta: &mut [f64]) -> em_as_md::Result<f64> {
        let d = beta.len();
        let tau = params[d];
        if !(tau.is_finite() && tau < 0.0) {
            return Err(MoeError::LeftDomain {
                reason: format!("tau = {tau}"),
            });
        }
        let s2 = -0.5 / tau;
        for (b, g) in beta.iter_mut().zip(params) {
            *b = g * s2;
        }
        Ok(s2)
    }
    /// β = G⁻¹b by faer's LLᵀ, σ² = (s − 2βᵀb + βᵀGβ)/W, returned as (β/σ², −1/(2σ²)).
    fn solve_from_gram(
        &self,
        stats: em_as_md::WeightedGram<'_>,
        out: &mut [f64],
    ) -> em_as_md::Result<()> {
        let em_as_md::WeightedGram {
            gram,
            rhs,
            syy,
            wsum,
        } = stats;
        use faer::linalg::solvers::Solve;
        let d = rhs.len();
        let g = faer::Mat::from_fn(d, d, |a, b| gram[(a.max(b), a.min(b))]);
        let llt = g
            .llt(faer::Side::Lower)
            .map_err(|_| MoeError::NotPositiveDefinite {
                block: em_as_md::error::Block::Expert(None),
                pivot: 0,
            })?;
        let beta = llt.solve(faer::Mat::from_fn(d, 1, |a, _| rhs[a]));
        let quad: f64 = (0..d)
            .map(|a| beta[(a, 0)] * (0..d).map(|b| g[(a, b)] * beta[(b, 0)]).sum::<f64>())
            .sum();
        let lin: f64 = (0..d).map(|a| beta[(a, 0)] * rhs[a]).sum();
        let s2 = (syy - 2.0 * lin + quad) / wsum;
        for a in 0..d {
            out[a] = beta[(a, 0)] / s2;
        }
        out[d] = -0.5 / s2;
        Ok(())
    }
}

fn build_my_linear(spec: &ExpertSpec) -> em_as_md::Result<Arc<dyn Expert>> {
    spec.no_glm_fields()?;
    spec.params.only("my-linear", &[])?;
    Ok(Arc::new(MyLinear::default()))
}

fn register_my_linear() {
    registry::register_expert(ExpertEntry::new(
        "my-linear",
        "a user's own linear-Gaussian expert",
        "a finite number",
        build_my_linear,
    ))
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// The shared exercise.

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// $n$ rows with $x \sim U(lo, hi)$ drawn from `model` at `truth` (features (1, x)).
fn simulate(
    model: &MixtureOfExperts,
    truth: &[f64],
    n: usize,
    lo: f64,
    hi: f64,
    seed: u64,
) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut x, mut y) = (Vec::with_capacity(n), Vec::new());
    for _ in 0..n {
        let xi: f64 = rng.random_range(lo..hi);
        y.extend(model.sample(truth, &[1.0, xi], &mut rng).unwrap().0);
        x.push(xi);
    }
    Dataset::from_rows(&x, 1, &y, 1).unwrap().with_intercept()
}

/// Fits with 4 restarts from k-means++ and from random starts, and checks what every
/// expert must offer; returns the k-means++ fit. With `identified`, every standard error
/// must exist (a binary target identifies a mixture only weakly: for logistic experts
/// some may not).
fn exercise(params: MoeParams, data: &Dataset, what: &str, identified: bool) -> FittedMoe {
    let mut fits = Vec::new();
    for init in [InitMethod::KMeansPlusPlus, InitMethod::Random] {
        let fit = params
            .clone()
            .init(init.clone())
            .n_init(4)
            .seed(17)
            .check()
            .unwrap()
            .fit(data)
            .unwrap_or_else(|e| panic!("{what} {init:?}: {e}"));
        let rep = fit.report();
        // Four seeded starts, and for a gated fit one more from the ungated optimum.
        let seeded = rep.restarts.iter().filter(|r| r.init != UNGATED_START);
        assert_eq!(seeded.count(), 4, "{what}");
        assert!(
            rep.restarts.iter().all(|r| r.error.is_none()),
            "{what}: {:?}",
            rep.restarts
        );
        // The kept restart has the largest log-likelihood of the four.
        let best = rep.restarts[rep.best_restart].log_likelihood.unwrap();
        assert!(rep
            .restarts
            .iter()
            .all(|r| r.log_likelihood.unwrap() <= best));
        // EM never increases L.
        assert!(
            rep.trace
                .windows(2)
                .all(|w| w[1].objective <= w[0].objective + 1e-10 * w[0].objective.abs().max(1.0)),
            "{what} {init:?}: L increased"
        );
        fits.push(fit);
    }
    let fit = fits.swap_remove(0);
    let n = data.n();
    // Prediction and likelihoods.
    let m = fit.model().expert().predict_dim();
    let mean = fit.predict_mean(data).unwrap();
    assert_eq!(mean.len(), n * m);
    assert!(mean.iter().all(|v| v.is_finite()), "{what}");
    let lpd = fit.log_predictive_density(data).unwrap();
    let ll: f64 = lpd.iter().sum();
    assert!(
        (ll - fit.report().log_likelihood).abs() < 1e-8 * ll.abs(),
        "{what}"
    );
    let resp = fit.responsibilities(data).unwrap();
    assert!(resp.chunks(2).all(|r| (r[0] + r[1] - 1.0).abs() < 1e-12));
    // Information criteria (deviance convention).
    let p = fit.n_free_params() as f64;
    assert!(
        (fit.aic() - (-2.0 * ll + 2.0 * p)).abs() < 1e-6 * ll.abs(),
        "{what}"
    );
    assert!((fit.bic() - fit.aic() - p * ((n as f64).ln() - 2.0)).abs() < 1e-8 * fit.bic().abs());
    assert!(fit.icl() >= fit.bic());

    // Save → load: the same description, the same θ, bit-identical predictions.
    let path = std::env::temp_dir().join(format!(
        "mdem-user-expert-{}-{}.json",
        std::process::id(),
        what.replace(' ', "_")
    ));
    fit.save(&path).unwrap();
    let back = FittedMoe::load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(
        back.model().spec().unwrap(),
        fit.model().spec().unwrap(),
        "{what}"
    );
    assert_eq!(bits(back.theta()), bits(fit.theta()), "{what}");
    assert_eq!(
        bits(&back.predict_mean(data).unwrap()),
        bits(&mean),
        "{what}"
    );
    assert_eq!(
        bits(&back.log_predictive_density(data).unwrap()),
        bits(&lpd),
        "{what}"
    );
    assert_eq!(back.bic().to_bits(), fit.bic().to_bits());
    // Saving the loaded model writes the same file.
    assert_eq!(to_json(&back).unwrap(), to_json(&fit).unwrap());

    // Standard errors at θ̂, and in relabelled components: permuted from the fit's labels
    // they equal the standard errors computed from scratch at the relabelled θ̂.
    let problem = Problem::new(fit.model(), data).unwrap();
    let se = standard_errors(&problem, fit.theta(), 1e10).unwrap();
    assert_eq!(se.se.len(), fit.theta().len());
    assert!(
        !identified
            || se
                .se
                .iter()
                .all(|v| v.is_some_and(|s| s.is_finite() && s > 0.0)),
        "{what}: {:?} {:?}",
        se.se,
        se.warnings
    );
    let layout = layout_of(fit.model());
    let perm = [1, 0];
    let moved = se.permuted(&layout, &perm).unwrap();
    let theta_p = permute_theta(fit.theta(), &layout, &perm).unwrap();
    let scratch = standard_errors(&problem, &theta_p, 1e10).unwrap();
    assert_eq!(moved.warnings.len(), scratch.warnings.len(), "{what}");
    for (j, (a, b)) in moved.se.iter().zip(&scratch.se).enumerate() {
        let (Some(a), Some(b)) = (a, b) else {
            assert_eq!(a.is_some(), b.is_some(), "{what}: coordinate {j}");
            continue;
        };
        assert!(
            (a - b).abs() < 1e-6 * b,
            "{what}: coordinate {j}: permuted {a} vs from scratch {b}"
        );
    }
    fit
}

#[test]
fn a_user_family_registered_by_name_is_first_class() {
    let expert = gamma_expert();
    // Truth: gate w = (1, −1.5); −rate = (−0.5 − 0.25x) with shape 2 and (−4 − x) with shape 5.
    let model = MixtureOfExperts::new(Arc::new(expert.clone()), 2, 2, Gating::Softmax).unwrap();
    let truth = [1.0, -1.5, -0.5, -0.25, 1.0, -4.0, -1.0, 4.0];
    let data = simulate(&model, &truth, 800, 0.0, 2.0, 5);
    let fit = exercise(
        MoeParams::new(2).expert(expert.clone()),
        &data,
        "gamma",
        true,
    );
    // The fit finds the truth (up to labels).
    let (aligned, perm) = fit
        .aligned_to(
            &FittedMoe::new(
                model.clone(),
                truth.to_vec(),
                fit.feature_names().to_vec(),
                fit.report().clone(),
            )
            .unwrap(),
        )
        .unwrap();
    assert_eq!(perm.len(), 2);
    for (a, t) in aligned.theta().iter().zip(truth) {
        assert!(
            (a - t).abs() < 0.35 * (1.0 + t.abs()),
            "{:?} vs {truth:?}",
            aligned.theta()
        );
    }
    // The description names the family, so the file does.
    let json: serde_json::Value = serde_json::from_str(&to_json(&fit).unwrap()).unwrap();
    let e = &json["spec"]["expert"];
    assert_eq!(e["name"], "glm");
    assert_eq!(e["family"]["name"], "gamma");
    assert_eq!(e["n_regressed"], 1);
    // The same expert from a MixtureOfExperts the user already has.
    let again = MoeParams::for_model(&model)
        .init(InitMethod::KMeansPlusPlus)
        .n_init(4)
        .seed(17)
        .check()
        .unwrap()
        .fit(&data)
        .unwrap();
    assert_eq!(bits(again.theta()), bits(fit.theta()));
}

#[test]
fn an_unregistered_family_on_load_is_a_typed_error_naming_it() {
    let expert = gamma_expert();
    let model = MixtureOfExperts::new(Arc::new(expert), 2, 2, Gating::Constant).unwrap();
    let truth = [0.3, -0.5, -0.25, 1.0, -4.0, -1.0, 4.0];
    let data = simulate(&model, &truth, 200, 0.0, 2.0, 9);
    let fit = MoeParams::for_model(&model)
        .max_iters(5)
        .check()
        .unwrap()
        .fit(&data)
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&to_json(&fit).unwrap()).unwrap();
    v["spec"]["expert"]["family"]["name"] = "gamma-by-another-program".into();
    let err = from_json(&v.to_string()).unwrap_err();
    match &err {
        MoeError::Registry(RegistryError::UnknownFamily { name, known }) => {
            assert_eq!(name, "gamma-by-another-program");
            assert!(known.iter().any(|k| k == "gamma") && known.iter().any(|k| k == "bernoulli"));
            assert!(
                err.to_string().contains("gamma-by-another-program"),
                "{err}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A family value without a registered name fits, but cannot be saved.
    let anonymous = MoeParams::new(2)
        .gating(Gating::Constant)
        .expert(
            Glm::new(Arc::new(GammaShape))
                .regressing(1, vec![0.0])
                .unwrap(),
        )
        .max_iters(5)
        .check()
        .unwrap()
        .fit(&data)
        .unwrap();
    let err = to_json(&anonymous).unwrap_err();
    assert!(
        matches!(&err, MoeError::Registry(RegistryError::NotSerialisable { expert, .. }) if expert == "GLM(Gamma(shape, rate))"),
        "{err:?}"
    );
}

#[test]
fn a_user_expert_type_registered_with_its_builder_is_first_class() {
    register_my_linear();
    let model =
        MixtureOfExperts::new(Arc::new(MyLinear::default()), 2, 2, Gating::Constant).unwrap();
    let mut truth = vec![0.4];
    for (beta, s2) in [([1.0, 2.0], 0.09), ([-1.0, -0.5], 0.25)] {
        let mut b = [0.0; 3];
        LinearGaussian::natural_from_beta(&beta, s2, &mut b).unwrap();
        truth.extend(b);
    }
    let data = simulate(&model, &truth, 600, -2.0, 2.0, 3);
    let mine = exercise(
        MoeParams::new(2)
            .gating(Gating::Constant)
            .expert(MyLinear::default())
            .tol(1e-12),
        &data,
        "my-linear",
        true,
    );
    // The fast path ran: with constant gating the M-step is the closed form only (no inner
    // Newton iterations), one Gram solve per expert and M-step (an accelerated step takes
    // several M-steps).
    for r in &mine.report().trace {
        assert!(
            r.inner.iterations == 0 && r.inner.hessians > 0 && r.inner.hessians % 2 == 0,
            "{:?}",
            r.inner
        );
    }
    // The same fit as the built-in linear expert.
    let builtin = MoeParams::new(2)
        .gating(Gating::Constant)
        .init(InitMethod::KMeansPlusPlus)
        .tol(1e-12)
        .n_init(4)
        .seed(17)
        .check()
        .unwrap()
        .fit(&data)
        .unwrap();
    for (a, b) in mine.theta().iter().zip(builtin.theta()) {
        assert!(
            (a - b).abs() < 1e-6 * (1.0 + b.abs()),
            "{:?} vs {:?}",
            mine.theta(),
            builtin.theta()
        );
    }
    assert_eq!(
        mine.model().spec().unwrap().expert,
        ExpertSpec::new("my-linear")
    );
}

#[test]
fn every_built_in_expert_goes_through_the_same_path() {
    let mut rng = ChaCha8Rng::seed_from_u64(40);
    let experts: [(Arc<dyn Expert>, &str); 5] = [
        (Arc::new(LinearGaussian::new()), "linear"),
        (
            Arc::new(LinearGaussian::with_ridge(1e-3).unwrap()),
            "ridge linear",
        ),
        (Arc::new(Logistic::new()), "logistic"),
        (Arc::new(Multinomial::new(3).unwrap()), "multinomial"),
        (Arc::new(Poisson::new()), "poisson"),
    ];
    for (expert, what) in experts {
        let model = MixtureOfExperts::new(expert.clone(), 2, 2, Gating::Softmax).unwrap();
        // Well-separated experts: every regressed component has slope +2 in expert 0 and
        // −2 in expert 1, and the gate switches smoothly at x = 0.
        let mut truth = model.random_params(&mut rng, 0.5);
        let (el, g) = (model.expert_len(), model.gate_len());
        truth[..2].copy_from_slice(&[0.0, 1.0]);
        for j in 0..expert.n_regressed() {
            truth[g + 2 * j + 1] = 2.0;
            truth[g + el + 2 * j + 1] = -2.0;
        }
        let data = simulate(&model, &truth, 1000, -2.0, 2.0, 41);
        // A categorical target identifies the mixture only weakly: EM crawls (hundreds of
        // iterations); 150 are enough to exercise the path, and the standard errors may
        // then be undefined for some coordinates.
        let classifier = expert.n_classes().is_some();
        let params = MoeParams::new(2)
            .expert_shared(expert.clone())
            .max_iters(if classifier { 150 } else { 1000 });
        let fit = exercise(params, &data, what, !classifier);
        assert_eq!(
            fit.model().spec().unwrap().expert.name,
            if what == "ridge linear" {
                "linear"
            } else {
                what
            }
        );
    }
}
