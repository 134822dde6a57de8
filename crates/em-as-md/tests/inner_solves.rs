//! Inner solves (issue 11, item 3): the M-steps on the one Newton driver.

use em_as_md::fit::init::InitMethod;
use em_as_md::fit::MoeParams;
use em_as_md::model::expert::Multinomial;
use em_as_md::model::mixture::Gating;
use em_as_md::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Three well-separated classes: class c has features centred at 4·(cos, sin)(2πc/3).
fn three_classes(n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for i in 0..n {
        let c = i % 3;
        let a = 2.0 * std::f64::consts::PI * c as f64 / 3.0;
        let z0: f64 = StandardNormal.sample(&mut rng);
        let z1: f64 = StandardNormal.sample(&mut rng);
        xs.push(4.0 * a.cos() + 0.5 * z0);
        xs.push(4.0 * a.sin() + 0.5 * z1);
        ys.push(c as f64);
        let _ = rng.random::<f64>();
    }
    Dataset::from_rows(&xs, 2, &ys, 1).unwrap().with_intercept()
}

#[test]
fn two_multinomial_experts_fit_clean_three_class_data() {
    for seed in 0..8 {
        let data = three_classes(300, seed);
        let fit = |k: usize| {
            MoeParams::new(k)
                .expert(Multinomial::new(3).unwrap())
                .gating(Gating::Softmax)
                .n_init(1)
                .seed(seed)
                .init(InitMethod::KMeansPlusPlus)
                .tol(1e-8)
                .max_iters(500)
                .check()
                .unwrap()
                .fit(&data)
        };
        let one = fit(1).unwrap();
        let two = fit(2);
        let two = two.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let (l1, l2) = (
            one.log_likelihood(&data).unwrap(),
            two.log_likelihood(&data).unwrap(),
        );
        assert!(l2 >= l1, "{l2} < {l1}");
    }
}

mod common;

use common::gamma::GammaShapeRate;
use em_as_md::model::expert::{glm_newton, Expert, Glm, InnerBudget, WeightedFit, INNER_TOL};
use mirror::ExponentialFamily;
use std::sync::Arc;

/// The Gamma-regression expert of the user's example: $-\lambda(x) = \beta^\top x$, the
/// shape a constant ($\theta_2 = k - 1$).
fn gamma_expert() -> Glm {
    Glm::with_constants(Arc::new(GammaShapeRate), 1, vec![0.0]).unwrap()
}

/// Features (1, u), u ∈ [0, 1]; y ~ Gamma(shape, rate(u) = rate·(1 + u)).
fn gamma_data(n: usize, shape: f64, rate: f64, rng: &mut ChaCha8Rng) -> Dataset {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let u: f64 = rng.random();
        let g = rand_distr::Gamma::new(shape, 1.0 / (rate * (1.0 + u))).unwrap();
        xs.extend([1.0, u]);
        ys.push(g.sample(rng));
    }
    Dataset::from_rows(&xs, 2, &ys, 1).unwrap()
}

/// The weight-averaged objective's pieces computed directly from the family's
/// `log_partition`, `mean` and `fisher` (independent of the M-step code):
/// gradient of $-Q/W$, the Hessian $\frac1W\sum_i w_i J_i^\top\nabla^2A J_i$ and
/// $\frac1W\sum_i w_i(|\langle T_i, \eta_i\rangle| + |A(\eta_i)|)$.
#[allow(clippy::needless_range_loop)] // (rows index data and weights alike)
fn gamma_pieces(data: &Dataset, w: &[f64], th: &[f64]) -> (Vec<f64>, faer::Mat<f64>, f64) {
    let fam = GammaShapeRate;
    let wsum: f64 = w.iter().sum();
    let mut g = vec![0.0; 3];
    let mut h = faer::Mat::<f64>::zeros(3, 3);
    let mut abs = 0.0;
    for i in 0..data.n() {
        let x = data.x(i);
        let eta = [th[0] * x[0] + th[1] * x[1], th[2]];
        let (mut t, mut mu) = ([0.0; 2], [0.0; 2]);
        fam.sufficient_stats(data.y(i), &mut t);
        fam.mean(&eta, &mut mu).unwrap();
        let f = fam.fisher(&eta).unwrap();
        let j = [[x[0], x[1], 0.0], [0.0, 0.0, 1.0]];
        for a in 0..3 {
            g[a] += w[i] * ((mu[0] - t[0]) * j[0][a] + (mu[1] - t[1]) * j[1][a]) / wsum;
            for b in 0..3 {
                let mut s = 0.0;
                for p in 0..2 {
                    for q in 0..2 {
                        s += j[p][a] * f[(p, q)] * j[q][b];
                    }
                }
                h[(a, b)] += w[i] * s / wsum;
            }
        }
        abs += w[i]
            * ((t[0] * eta[0]).abs()
                + (t[1] * eta[1]).abs()
                + fam.log_partition(&eta).unwrap().abs())
            / wsum;
    }
    (g, h, abs)
}

/// The user's case: a weighted Gamma fit started where the Newton decrement
/// $\lambda^2 = g^\top H^{-1}g$ lies in $[10^{-14}, 10^{-13}]$ — above the old hard-coded
/// pure-Newton threshold $10^{-14}$ — while $Q$'s round-off is far larger, so the value
/// cannot confirm any step. The gradient is still ~100× the tolerance there; the solve must
/// end converged with residual ≤ tol.
#[test]
fn decrement_inside_round_off_band_still_converges() {
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    // Shape 1000, rate ~1000: |A| ~ 7000 per row, so Q's round-off is ~1e-11.
    let data = gamma_data(2000, 1000.0, 1000.0, &mut rng);
    let w: Vec<f64> = (0..data.n()).map(|_| 0.05 + rng.random::<f64>()).collect();
    let e = gamma_expert();
    let mut opt = vec![0.0; 3];
    let st = glm_newton(
        &e,
        WeightedFit::new(&data, &w, &[-1000.0, -1000.0, 999.0]),
        &mut opt,
        InnerBudget::new(1e-12, 200),
    )
    .unwrap();
    assert!(st.converged, "{st:?}");
    // Perturb along 20 directions to λ² ≈ 4e-14.
    let (_, h0, abs) = gamma_pieces(&data, &w, &opt);
    for _ in 0..20 {
        let v: Vec<f64> = (0..3).map(|_| StandardNormal.sample(&mut rng)).collect();
        let vhv: f64 = (0..3)
            .map(|a| (0..3).map(|b| v[a] * h0[(a, b)] * v[b]).sum::<f64>())
            .sum();
        let s = (4e-14 / vhv).sqrt();
        let start: Vec<f64> = opt.iter().zip(&v).map(|(o, vi)| o + s * vi).collect();
        let (g, h, _) = gamma_pieces(&data, &w, &start);
        let hg = mirror::linalg::cholesky_solve(h.as_ref(), &g).unwrap();
        let lambda2: f64 = g.iter().zip(&hg).map(|(a, b)| a * b).sum();
        let gnorm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let noise = mirror::newton::sum_noise(abs, data.n());
        assert!((1e-14..=1e-13).contains(&lambda2), "λ² = {lambda2:e}");
        assert!(
            noise > 10.0 * lambda2,
            "round-off {noise:e} vs λ² {lambda2:e}"
        );
        assert!(gnorm > 10.0 * INNER_TOL, "‖g‖ = {gnorm:e}");
        let mut out = vec![0.0; 3];
        let st = glm_newton(
            &e,
            WeightedFit::new(&data, &w, &start),
            &mut out,
            InnerBudget::EXACT,
        )
        .unwrap();
        assert!(
            st.converged && st.residual <= INNER_TOL,
            "{st:?}, ‖g₀‖ = {gnorm:e}"
        );
        // The independent gradient agrees.
        let (g, _, _) = gamma_pieces(&data, &w, &out);
        assert!(
            g.iter().map(|v| v * v).sum::<f64>().sqrt() <= 2.0 * INNER_TOL,
            "{g:?}"
        );
    }
}

/// 200 random weighted M-steps of the Gamma-regression expert (random shapes, rates,
/// responsibility-like weights and in-domain starts): every one converges to the default
/// inner tolerance, and its gradient — computed independently — meets it.
#[test]
fn two_hundred_gamma_mixture_m_steps_all_converge() {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let e = gamma_expert();
    let mut failures = Vec::new();
    for m in 0..200 {
        let shape = 0.5 * 60f64.powf(rng.random::<f64>());
        let rate = 0.1 * 100f64.powf(rng.random::<f64>());
        let n = 50 + rng.random_range(0..400);
        let data = gamma_data(n, shape, rate, &mut rng);
        // Responsibilities of one expert: some rows nearly 0, some nearly 1.
        let w: Vec<f64> = (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                1.0 / (1.0 + (3.0 * z).exp())
            })
            .collect();
        let mut start = vec![0.0; 3];
        e.init_params(2, &mut rng, 0.5, &mut start);
        let mut out = vec![0.0; 3];
        let st = e
            .weighted_fit(WeightedFit::new(&data, &w, &start), &mut out)
            .unwrap();
        let (g, _, _) = gamma_pieces(&data, &w, &out);
        let gn = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        if !(st.converged && st.residual <= INNER_TOL && gn <= 2.0 * INNER_TOL) {
            failures.push((m, shape, rate, n, st, gn));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
}

/// A weighted M-step started outside the natural domain (a positive first natural
/// parameter of the Gamma family: a negative rate) is refused with the same typed error by
/// Newton — whose first pass, with derivatives, checks the domain — and by L-BFGS — which
/// checks it with a value-only pass first.
#[test]
fn a_start_outside_the_domain_is_refused_by_both_solves() {
    use em_as_md::model::expert::{glm_fit, GlmSolve};
    use em_as_md::MoeError;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let data = gamma_data(300, 2.0, 1.0, &mut rng);
    let w = vec![1.0; data.n()];
    let e = gamma_expert();
    let start = [0.5, 0.0, 1.0];
    for solve in [
        GlmSolve::Newton(InnerBudget::EXACT),
        GlmSolve::Lbfgs(InnerBudget::new(1e-8, 100)),
    ] {
        let mut out = vec![0.0; 3];
        let err = glm_fit(&e, WeightedFit::new(&data, &w, &start), &mut out, solve).unwrap_err();
        assert!(
            matches!(
                err,
                MoeError::NonFinite {
                    what: "expert log-partition in the M-step"
                }
            ),
            "{solve:?}: {err}"
        );
    }
    // The same expert from a start inside the domain solves.
    let mut out = vec![0.0; 3];
    let st = glm_fit(
        &e,
        WeightedFit::new(&data, &w, &[-1.0, -1.0, 1.0]),
        &mut out,
        GlmSolve::Newton(InnerBudget::EXACT),
    )
    .unwrap();
    assert!(st.converged, "{st:?}");
}
