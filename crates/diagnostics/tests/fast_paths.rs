//! The batched computations of the certificate against the straightforward ones, on a
//! gated mixture of two linear experts (curved realisation) with rows spanning several
//! row chunks:
//! * [`information`] (stacked block products) against the per-row sums
//!   $\frac1n\sum_i J_i^\top\nabla^2A(\varphi_i)J_i$ and $\frac1n\sum_i J_i^\top\mathrm{Cov}_{\text{post}}\[T\]J_i$
//!   formed row by row from `realise_jacobian`, `fisher` and the posterior, to 1e-10 relative;
//! * [`bregman_ratios`] (one pass for all pairs) against [`bregman_ratio`] pair by pair,
//!   bit for bit, failing pairs included;
//! * [`bregman_ratios`] against an independent one-pair computation from the `Problem`
//!   API ($\ell$, $\nabla\ell$ and $D_{\mathcal A}$ evaluated separately), to round-off;
//! * [`curvature_term`] (one pass for all $2n_\theta$ perturbations) against one pass per
//!   perturbation with $v_i$ formed row by row beforehand, bit for bit;
//! * [`standard_errors_from_information`] against [`standard_errors`], bit for bit;
//! * the ratios, the information and the curvature term for 1, 2 and 3 threads, bit for bit.

use diagnostics::information::{curvature_term, information, InformationMatrices};
use diagnostics::ratios::{bregman_ratio, bregman_ratios};
use diagnostics::stderr::{standard_errors, standard_errors_from_information};
use diagnostics::DiagnosticsError;
use em_as_md::solve::problem::{row_posterior, RowScratch};
use em_as_md::{
    fold_rows, ConditionalFamily, Dataset, Gating, LinearGaussian, MixtureOfExperts, Problem,
};
use faer::Mat;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

mod common;

fn moe_instance(seed: u64, n: usize) -> (MixtureOfExperts, Dataset, Vec<f64>) {
    let model =
        MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 3, Gating::Softmax).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let truth = model.random_params(&mut rng, 1.5);
    let mut x = Vec::with_capacity(3 * n);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let mut xi = [1.0, 0.0, 0.0];
        for v in &mut xi[1..] {
            *v = rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng);
        }
        let (yi, _) = model.sample(&truth, &xi, &mut rng).unwrap();
        x.extend_from_slice(&xi);
        y.push(yi[0]);
    }
    (model, Dataset::from_rows(&x, 3, &y, 1).unwrap(), truth)
}

/// $I_c$ and $I_m$ row by row: `realise_jacobian`, `fisher`, the posterior covariance
/// $\sum_z r_z (T_z - \bar T)(T_z - \bar T)^\top$, and $J^\top F J$, $J^\top\mathrm{Cov}\,J$ as
/// explicit triple sums; symmetrised and divided by $n$.
fn straightforward<M: ConditionalFamily>(
    p: &Problem<'_, M>,
    theta: &[f64],
) -> (Mat<f64>, Mat<f64>) {
    let model = p.model;
    let data = p.data;
    let fam = model.complete();
    let (np, d, k, q, n) = (
        model.n_params(),
        fam.dim(),
        model.n_latent(),
        data.q(),
        data.n(),
    );
    let mut ic = Mat::<f64>::zeros(np, np);
    let mut im = Mat::<f64>::zeros(np, np);
    let mut s = RowScratch::new(model);
    let mut obs = vec![0.0; fam.obs_dim()];
    let mut tz = vec![0.0; d];
    for i in 0..n {
        model.realise(theta, data.x(i), &mut s.phi);
        row_posterior(model, data.y(i), i, &mut s).unwrap();
        let jac = model.realise_jacobian(theta, data.x(i));
        let f = fam.fisher(&s.phi).unwrap();
        let mut cov = Mat::<f64>::zeros(d, d);
        obs[..q].copy_from_slice(data.y(i));
        for z in 0..k {
            obs[q] = z as f64;
            fam.sufficient_stats(&obs, &mut tz);
            for a in 0..d {
                for b in 0..d {
                    cov[(a, b)] +=
                        s.resp[z] * (tz[a] - s.post_stats[a]) * (tz[b] - s.post_stats[b]);
                }
            }
        }
        for u in 0..np {
            for v in 0..np {
                let (mut c1, mut c2) = (0.0, 0.0);
                for a in 0..d {
                    for b in 0..d {
                        c1 += jac[(a, u)] * f[(a, b)] * jac[(b, v)];
                        c2 += jac[(a, u)] * cov[(a, b)] * jac[(b, v)];
                    }
                }
                ic[(u, v)] += c1;
                im[(u, v)] += c2;
            }
        }
    }
    let sym = |m: &Mat<f64>| Mat::from_fn(np, np, |a, b| 0.5 * (m[(a, b)] + m[(b, a)]) / n as f64);
    (sym(&ic), sym(&im))
}

fn max_rel(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let scale = (0..b.ncols())
        .flat_map(|j| (0..b.nrows()).map(move |i| (i, j)))
        .map(|(i, j)| b[(i, j)].abs())
        .fold(0.0f64, f64::max);
    (0..b.ncols())
        .flat_map(|j| (0..b.nrows()).map(move |i| (i, j)))
        .map(|(i, j)| (a[(i, j)] - b[(i, j)]).abs() / scale)
        .fold(0.0f64, f64::max)
}

#[test]
fn batched_information_equals_row_by_row_sums() {
    // 5 003 rows: three row chunks, the last one partial, and a partial row block.
    let (model, data, truth) = moe_instance(7, 5003);
    let p = Problem::new(&model, &data).unwrap();
    for (t, shift) in [0.0, 0.2, -0.3].into_iter().enumerate() {
        let th: Vec<f64> = truth
            .iter()
            .enumerate()
            .map(|(j, v)| v + shift * (((j + t) % 3) as f64 - 1.0))
            .collect();
        let info = information(&p, &th, false).unwrap();
        let (ic, im) = straightforward(&p, &th);
        let (ec, em) = (max_rel(&info.complete, &ic), max_rel(&info.missing, &im));
        assert!(ec < 1e-10, "I_c relative error {ec:e} at shift {shift}");
        assert!(em < 1e-10, "I_m relative error {em:e} at shift {shift}");
        // Not vacuous: both matrices are far from zero.
        assert!(ic[(0, 0)].abs() > 1e-3 && im[(0, 0)].abs() > 1e-6);
    }
}

#[test]
fn batched_ratios_equal_pairwise_ratios_bit_for_bit() {
    let (model, data, truth) = moe_instance(11, 4500);
    let p = Problem::new(&model, &data).unwrap();
    let np = truth.len();
    let mut points = vec![truth.clone()];
    for s in 1..6 {
        points.push(
            truth
                .iter()
                .enumerate()
                .map(|(j, v)| v + 0.05 * s as f64 * (((j * s) % 5) as f64 - 2.0))
                .collect(),
        );
    }
    // A duplicate of point 2 (shares its slot) and a point outside the natural domain.
    points.push(points[2].clone());
    let mut bad = truth.clone();
    bad.iter_mut().for_each(|v| *v = f64::NAN);
    points.push(bad);
    let bad_idx = points.len() - 1;
    let pairs: Vec<(usize, usize)> = vec![
        (1, 0),
        (0, 1),
        (2, 1),
        (3, 2),
        (6, 0),
        (0, 6),
        (4, 5),
        (5, 4),
        (2, 2),
        (bad_idx, 0),
        (0, bad_idx),
    ];
    let batch = bregman_ratios(&p, &points, &pairs).unwrap();
    assert_eq!(batch.len(), pairs.len());
    let mut failed = 0;
    for (&(a, b), got) in pairs.iter().zip(&batch) {
        match (bregman_ratio(&p, &points[a], &points[b]), got) {
            (Ok(want), Ok(got)) => assert_eq!(&want, got, "pair ({a}, {b})"),
            (Err(DiagnosticsError::Model(w)), Err(DiagnosticsError::Model(g))) => {
                assert_eq!(w.to_string(), g.to_string(), "pair ({a}, {b})");
                failed += 1;
            }
            (w, g) => panic!("pair ({a}, {b}): one-pair {w:?}, batched {g:?}"),
        }
    }
    assert_eq!(failed, 2);
    // Index and length errors are typed.
    assert!(matches!(
        bregman_ratios(&p, &points, &[(0, 99)]),
        Err(DiagnosticsError::DimensionMismatch {
            what: "pair index",
            ..
        })
    ));
    let short = vec![truth.clone(), vec![0.0; np - 1]];
    assert!(matches!(
        bregman_ratios(&p, &short, &[(0, 1)]),
        Err(DiagnosticsError::DimensionMismatch { what: "theta", .. })
    ));
}

/// $D_\ell$ and $D_{\mathcal A}$ of one pair from the `Problem` API: $\ell$ from `objective`,
/// $\nabla\ell$ from `ell_and_gradient`, $D_{\mathcal A}$ from `stacked_bregman`.
fn ratio_via_problem<M: ConditionalFamily>(p: &Problem<'_, M>, a: &[f64], b: &[f64]) -> (f64, f64) {
    let la = p.objective(a).unwrap();
    let phi_a = p.realise_all(a).unwrap();
    let phi_b = p.realise_all(b).unwrap();
    let mut g = vec![0.0; phi_b.len()];
    let lb = p.ell_and_gradient(&phi_b, &mut g).unwrap();
    let inner: f64 = g
        .iter()
        .zip(phi_a.iter().zip(&phi_b))
        .map(|(g, (x, y))| g * (x - y))
        .sum();
    (la - lb - inner, p.stacked_bregman(a, b).unwrap())
}

#[test]
fn batched_ratios_equal_independent_one_pair_ratios() {
    // 4 500 rows (three row chunks); points in several roles, probes close to a point.
    let (model, data, truth) = moe_instance(5, 4500);
    let p = Problem::new(&model, &data).unwrap();
    let mut points = vec![truth.clone()];
    for s in 1..5 {
        // Relative steps keep every expert's precision parameter negative.
        let h = if s == 4 { 1e-3 } else { 0.05 * s as f64 };
        points.push(
            truth
                .iter()
                .enumerate()
                .map(|(j, v)| v * (1.0 + h * (((j * (s + 1)) % 5) as f64 - 2.0)))
                .collect(),
        );
    }
    let pairs = [
        (1, 0),
        (0, 1),
        (2, 1),
        (3, 0),
        (0, 3),
        (4, 0),
        (3, 2),
        (1, 2),
    ];
    let batch = bregman_ratios(&p, &points, &pairs).unwrap();
    for (&(a, b), got) in pairs.iter().zip(batch) {
        let got = got.unwrap();
        let (num, den) = ratio_via_problem(&p, &points[a], &points[b]);
        // Both sides difference O(1) row terms: allow ten times the batch's own round-off
        // estimate 16 ε S on top of a relative 1e-10.
        let tol = |v: f64| 10.0 * got.denominator_roundoff + 1e-10 * v.abs();
        assert!(
            (got.numerator - num).abs() <= tol(num),
            "pair ({a}, {b}): D_ℓ {} vs {num}",
            got.numerator
        );
        assert!(
            (got.denominator - den).abs() <= tol(den),
            "pair ({a}, {b}): D_A {} vs {den}",
            got.denominator
        );
        // Not vacuous: the pair moved the realised parameters.
        assert!(den > 0.0, "pair ({a}, {b})");
    }
}

/// $C(\theta)$ as it was computed before the one-pass version: $v_i$ row by row first,
/// then one `fold_rows` pass per perturbed $\theta \pm h_ke_k$.
fn curvature_separate_passes<M: ConditionalFamily>(p: &Problem<'_, M>, theta: &[f64]) -> Mat<f64> {
    let (model, data) = (p.model, p.data);
    let (np, d, n) = (model.n_params(), model.complete().dim(), data.n());
    let mut v = vec![0.0; n * d];
    let mut s = RowScratch::new(model);
    for i in 0..n {
        model.realise(theta, data.x(i), &mut s.phi);
        row_posterior(model, data.y(i), i, &mut s).unwrap();
        model
            .complete_mean(&s.phi, &mut s.mean, &mut s.work)
            .unwrap();
        for j in 0..d {
            v[i * d + j] = s.mean[j] - s.post_stats[j];
        }
    }
    let g = |th: &[f64]| -> Vec<f64> {
        let out = fold_rows(
            n,
            || vec![0.0; np],
            |acc, rows| {
                for i in rows {
                    model.realise_vjp(th, data.x(i), &v[i * d..(i + 1) * d], acc);
                }
                Ok(())
            },
        )
        .unwrap();
        out.into_iter().map(|x| x / n as f64).collect()
    };
    let mut c = Mat::zeros(np, np);
    let mut tp = theta.to_vec();
    for k in 0..np {
        let h = 1e-5 * theta[k].abs().max(1.0);
        tp[k] = theta[k] + h;
        let gp = g(&tp);
        tp[k] = theta[k] - h;
        let gm = g(&tp);
        tp[k] = theta[k];
        for r in 0..np {
            c[(r, k)] = (gp[r] - gm[r]) / (2.0 * h);
        }
    }
    Mat::from_fn(np, np, |a, b| 0.5 * (c[(a, b)] + c[(b, a)]))
}

#[test]
fn one_pass_curvature_equals_separate_passes_bit_for_bit() {
    let (model, data, truth) = moe_instance(9, 5003);
    let p = Problem::new(&model, &data).unwrap();
    let th: Vec<f64> = truth.iter().map(|v| v * 0.9 + 0.05).collect();
    let got = curvature_term(&p, &th).unwrap();
    let want = curvature_separate_passes(&p, &th);
    let mut nonzero = 0;
    for j in 0..want.ncols() {
        for i in 0..want.nrows() {
            assert_eq!(got[(i, j)].to_bits(), want[(i, j)].to_bits(), "C[{i}, {j}]");
            nonzero += usize::from(want[(i, j)] != 0.0);
        }
    }
    // Not vacuous: the gated linear experts' realisation is curved.
    assert!(nonzero > 0);
    assert!(matches!(
        curvature_term(&p, &th[1..]),
        Err(DiagnosticsError::DimensionMismatch { what: "theta", .. })
    ));
}

#[test]
fn standard_errors_from_information_match() {
    let (model, data, truth) = moe_instance(3, 2500);
    let p = Problem::new(&model, &data).unwrap();
    let direct = standard_errors(&p, &truth, 1e8).unwrap();
    let info: InformationMatrices = information(&p, &truth, true).unwrap();
    let reused = standard_errors_from_information(&info, data.n(), 1e8).unwrap();
    assert_eq!(direct, reused);
    assert!(direct.se.iter().all(|s| s.is_some()));
    assert!(matches!(
        standard_errors_from_information(&info, data.n(), 1.0),
        Err(DiagnosticsError::InvalidConfig {
            field: "max_condition",
            ..
        })
    ));
}

#[test]
fn batched_passes_are_identical_for_any_thread_count() {
    let (model, data, truth) = moe_instance(13, 6000);
    let p = Problem::new(&model, &data).unwrap();
    let points: Vec<Vec<f64>> = (0..4)
        .map(|s| truth.iter().map(|v| v * (1.0 + 0.03 * s as f64)).collect())
        .collect();
    let pairs = [(1, 0), (0, 1), (2, 1), (3, 0), (3, 2)];
    common::same_on_1_2_3_threads(&p, &points, &pairs);
}
