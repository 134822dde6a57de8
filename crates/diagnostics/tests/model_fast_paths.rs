//! The certificate's passes through the mixture's own row evaluator
//! (`ConditionalFamily::point_rows`) and information sums
//! (`ConditionalFamily::information_sums`, weighted Gram products) against the generic
//! paths on the **same** model (a wrapper that forwards every row function but offers
//! neither capability), for linear-Gaussian, logistic, Poisson and multinomial experts,
//! softmax and constant gating, on random parameter points:
//! * [`bregman_ratios`]: $D_\ell$ and $D_{\mathcal A}$ within the pass's own round-off
//!   estimate $16\,\varepsilon\,S$ (the mixture's posterior probabilities come from the
//!   log-sum-exp's exponentials and may differ from the generic ones in the last bits),
//!   failing pairs with the same error;
//! * [`information`] ($I_c$, $I_m$, $C$): to a relative $10^{-12}$ of each matrix's
//!   largest entry (the summation order differs), times $\max\lVert\nabla A_F\rVert^2$ for
//!   $I_c$ when that exceeds 1 (the generic $J_i^\top\nabla^2A\,J_i$ cancels terms of that
//!   size: Poisson experts with large means);
//! * both for 1, 2 and 3 threads, bit for bit.

use diagnostics::information::{curvature_term, information};
use diagnostics::ratios::bregman_ratios;
use diagnostics::DiagnosticsError;
use em_as_md::testkit::RowFunctionsOnly;
use em_as_md::{
    ConditionalFamily, Dataset, Expert, Gating, LinearGaussian, Logistic, MixtureOfExperts,
    Multinomial, Poisson, Problem,
};
use faer::Mat;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

mod common;

/// The mixture through the generic paths only: every row function forwarded, none of
/// its pass-level fast paths offered.
fn generic(model: &MixtureOfExperts) -> RowFunctionsOnly<'_, MixtureOfExperts> {
    RowFunctionsOnly::new(model)
}

fn experts() -> Vec<Arc<dyn Expert>> {
    vec![
        Arc::new(LinearGaussian::new()),
        Arc::new(Logistic::new()),
        Arc::new(Poisson::new()),
        Arc::new(Multinomial::new(3).unwrap()),
    ]
}

/// `n` rows drawn from `model` at random parameters (intercept + 2 standard normal
/// features), and those parameters.
fn instance(model: &MixtureOfExperts, seed: u64, n: usize) -> (Dataset, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let truth = model.random_params(&mut rng, 1.0);
    let d = model.n_features();
    let (mut x, mut y) = (Vec::with_capacity(d * n), Vec::new());
    for _ in 0..n {
        let mut xi = vec![1.0; d];
        for v in &mut xi[1..] {
            *v = rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng);
        }
        let (yi, _) = model.sample(&truth, &xi, &mut rng).unwrap();
        x.extend_from_slice(&xi);
        y.extend_from_slice(&yi);
    }
    let q = y.len() / n;
    (Dataset::from_rows(&x, d, &y, q).unwrap(), truth)
}

/// Points around `truth`: relative and absolute perturbations of several sizes.
fn points(truth: &[f64]) -> Vec<Vec<f64>> {
    (0..5)
        .map(|s| {
            truth
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    let h = 0.04 * s as f64 * (((j * (s + 2)) % 5) as f64 - 2.0);
                    v * (1.0 + 0.5 * h) + 0.1 * h
                })
                .collect()
        })
        .collect()
}

fn max_rel(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let mut scale = 0.0f64;
    let mut err = 0.0f64;
    for j in 0..b.ncols() {
        for i in 0..b.nrows() {
            scale = scale.max(b[(i, j)].abs());
            err = err.max((a[(i, j)] - b[(i, j)]).abs());
        }
    }
    if scale == 0.0 {
        err
    } else {
        err / scale
    }
}

/// $\max_{i,k}\lVert\nabla A_F(\eta_k(x_i))\rVert^2$ at `theta`.
fn max_mean_sq(model: &MixtureOfExperts, data: &Dataset, theta: &[f64]) -> f64 {
    let fam = model.expert().family();
    let p = fam.dim();
    let (mut eta, mut mu) = (vec![0.0; p], vec![0.0; p]);
    let mut out = 0.0f64;
    for i in 0..data.n() {
        for k in 0..model.n_experts() {
            model.expert_natural(theta, k, data.x(i), &mut eta);
            fam.mean(&eta, &mut mu).unwrap();
            out = out.max(mu.iter().map(|m| m * m).sum());
        }
    }
    out
}

fn models() -> Vec<MixtureOfExperts> {
    let mut out = Vec::new();
    for e in experts() {
        for gating in [Gating::Softmax, Gating::Constant] {
            for k in [2, 3] {
                out.push(MixtureOfExperts::new(e.clone(), k, 3, gating).unwrap());
            }
        }
    }
    out
}

#[test]
fn model_ratios_equal_generic_ratios_to_round_off() {
    for (t, model) in models().iter().enumerate() {
        let (data, truth) = instance(model, 40 + t as u64, 2600);
        let fast = Problem::new(model, &data).unwrap();
        let wrapped = generic(model);
        let generic = Problem::new(&wrapped, &data).unwrap();
        let mut pts = points(&truth);
        // A point outside the natural domain (every pair using it fails alike).
        pts.push(vec![f64::NAN; truth.len()]);
        let pairs = [
            (1, 0),
            (0, 1),
            (2, 1),
            (3, 0),
            (4, 3),
            (0, 4),
            (5, 0),
            (0, 5),
        ];
        let a = bregman_ratios(&fast, &pts, &pairs).unwrap();
        let b = bregman_ratios(&generic, &pts, &pairs).unwrap();
        for ((pair, a), b) in pairs.iter().zip(a).zip(b) {
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    let name = model.expert().name();
                    let tol = b.denominator_roundoff;
                    assert!(
                        (a.numerator - b.numerator).abs() <= tol,
                        "{name} {pair:?}: D_ℓ {} vs {}",
                        a.numerator,
                        b.numerator
                    );
                    assert!(
                        (a.denominator - b.denominator).abs() <= tol,
                        "{name} {pair:?}: D_A {} vs {}",
                        a.denominator,
                        b.denominator
                    );
                    assert!(
                        b.denominator > 0.0 && b.denominator > 1e3 * tol,
                        "{name} {pair:?}"
                    );
                }
                (Err(DiagnosticsError::Model(a)), Err(DiagnosticsError::Model(b))) => {
                    assert_eq!(a.to_string(), b.to_string())
                }
                (a, b) => panic!("{pair:?}: model {a:?}, generic {b:?}"),
            }
        }
    }
}

#[test]
fn model_information_equals_generic_information() {
    for (t, model) in models().iter().enumerate() {
        let (data, truth) = instance(model, 70 + t as u64, 2600);
        let fast = Problem::new(model, &data).unwrap();
        let wrapped = generic(model);
        let generic = Problem::new(&wrapped, &data).unwrap();
        for (s, th) in points(&truth).iter().enumerate() {
            let with_c = s == 1;
            let a = information(&fast, th, with_c).unwrap();
            let b = information(&generic, th, with_c).unwrap();
            let name = format!(
                "{} K={} {:?}",
                model.expert().name(),
                model.n_experts(),
                model.gating()
            );
            let (ec, em) = (
                max_rel(&a.complete, &b.complete),
                max_rel(&a.missing, &b.missing),
            );
            // The generic J_iᵀ∇²A J_i cancels entries of size ρ_k‖μ_k‖² down to ρ_k F_k
            // (μ_k = ∇A_F(η_k): a Poisson mean e^η): its own round-off grows like ‖μ‖².
            let tol = 1e-12 * max_mean_sq(model, &data, th).max(1.0);
            assert!(ec < tol, "{name}: I_c relative error {ec:e} > {tol:e}");
            assert!(em < 1e-12, "{name}: I_m relative error {em:e}");
            // C: the model's closed form against central differences (see
            // `closed_form_curvature_equals_central_differences`).
            let ecc = max_rel(&a.curvature, &b.curvature);
            assert!(ecc < CURVATURE_TOL, "{name}: C relative error {ecc:e}");
            assert_eq!(a.curvature_computed, b.curvature_computed);
            // Not vacuous.
            assert!(
                b.complete[(0, 0)].abs() > 1e-4
                    && max_rel(
                        &b.missing,
                        &Mat::zeros(b.missing.nrows(), b.missing.ncols())
                    ) > 1e-8,
                "{name}"
            );
        }
    }
}

/// Relative tolerance (to the largest entry) between the closed-form curvature term $C$
/// and the generic central differences of `curvature_term`: their truncation error is
/// $\frac{h^2}{6}\partial^3_\theta(J^\top v)$ with $h = 10^{-5}\max(1, |\theta_k|)$, i.e.
/// $\approx 10^{-10}$ times the third derivatives' size relative to $C$'s, plus a round-off
/// of $\varepsilon\,|J^\top v|/h \approx 10^{-11}$; $10^{-7}$ leaves room for third
/// derivatives a thousand times $C$'s entries, and an error in a formula (a wrong sign,
/// a missing factor $\rho_k - r_k$) is of relative size 1.
const CURVATURE_TOL: f64 = 1e-7;

#[test]
fn closed_form_curvature_equals_central_differences() {
    let mut worst = 0.0f64;
    for (t, model) in models().iter().enumerate() {
        let (data, truth) = instance(model, 110 + t as u64, 2600);
        let fast = Problem::new(model, &data).unwrap();
        let n = data.n() as f64;
        for th in points(&truth).iter().skip(1) {
            let name = format!(
                "{} K={} {:?}",
                model.expert().name(),
                model.n_experts(),
                model.gating()
            );
            let closed = model
                .curvature_sums(&data, th)
                .expect("closed form offered");
            let closed = Mat::from_fn(closed.nrows(), closed.ncols(), |a, b| closed[(a, b)] / n);
            let fd = curvature_term(&fast, th).unwrap();
            let e = max_rel(&closed, &fd);
            worst = worst.max(e);
            assert!(e < CURVATURE_TOL, "{name}: C relative error {e:e}");
            // Not vacuous: C is far from zero away from the optimum.
            assert!(
                max_rel(&fd, &Mat::zeros(fd.nrows(), fd.ncols())) > 1e-6,
                "{name}"
            );
        }
    }
    eprintln!("largest relative difference closed form vs central differences: {worst:e}");
}

/// Louis' identity with the closed-form $C$: $I_c + C - I_m = \nabla^2L$, the Hessian of
/// the objective by central differences of its gradient (an independent computation).
#[test]
fn observed_information_with_closed_form_curvature_is_the_hessian() {
    for (t, model) in models().iter().enumerate().step_by(3) {
        let (data, truth) = instance(model, 130 + t as u64, 1500);
        let p = Problem::new(model, &data).unwrap();
        let th = &points(&truth)[2];
        let obs = information(&p, th, true).unwrap().observed();
        let np = th.len();
        let (mut gp, mut gm, mut x) = (vec![0.0; np], vec![0.0; np], th.clone());
        for c in 0..np {
            let h = 1e-5 * th[c].abs().max(1.0);
            x[c] = th[c] + h;
            p.objective_and_gradient(&x, &mut gp).unwrap();
            x[c] = th[c] - h;
            p.objective_and_gradient(&x, &mut gm).unwrap();
            x[c] = th[c];
            for r in 0..np {
                let hess = (gp[r] - gm[r]) / (2.0 * h);
                assert!(
                    (obs[(r, c)] - hess).abs() < 1e-5 * (1.0 + hess.abs()),
                    "{} ({r},{c}): {} vs {hess}",
                    model.expert().name(),
                    obs[(r, c)]
                );
            }
        }
    }
}

#[test]
fn information_outside_the_domain_fails_as_the_generic_path_does() {
    let model =
        MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 3, Gating::Softmax).unwrap();
    let (data, truth) = instance(&model, 5, 500);
    let fast = Problem::new(&model, &data).unwrap();
    let wrapped = generic(&model);
    let generic = Problem::new(&wrapped, &data).unwrap();
    let mut bad = truth.clone();
    let last = bad.len() - 1;
    bad[last] = 0.5; // τ > 0: no variance.
    let a = information(&fast, &bad, false).unwrap_err();
    let b = information(&generic, &bad, false).unwrap_err();
    assert_eq!(a.to_string(), b.to_string());
}

#[test]
fn model_fast_paths_are_identical_for_any_thread_count() {
    let e: [Arc<dyn Expert>; 2] = [Arc::new(LinearGaussian::new()), Arc::new(Logistic::new())];
    for (t, e) in e.into_iter().enumerate() {
        let model = MixtureOfExperts::new(e, 3, 3, Gating::Softmax).unwrap();
        let (data, truth) = instance(&model, 90 + t as u64, 6100);
        let p = Problem::new(&model, &data).unwrap();
        let pts = points(&truth);
        let pairs = [(1, 0), (0, 1), (2, 1), (3, 0), (4, 2)];
        common::same_on_1_2_3_threads(&p, &pts, &pairs);
    }
}
