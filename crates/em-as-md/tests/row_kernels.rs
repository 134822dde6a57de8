//! The mixture's allocation-free row functions (`realise_jacobian_t`,
//! `complete_log_partition`, `complete_mean`, `complete_fisher`, `row_posterior`'s
//! stored $A(\varphi)$) against the generic ones and against independent computations
//! (finite differences, a textbook log-sum-exp and block Fisher), for softmax and constant
//! gating, $K = 1, 2, 3$, linear-Gaussian and logistic experts; and the trait defaults
//! for a model that does not override them (SymMoLinE).

use em_as_md::mirror::MirrorError;
use em_as_md::solve::problem::{row_posterior, row_posterior_given, RowObservation, RowScratch};
use em_as_md::{
    ConditionalFamily, Expert, Gating, LinearGaussian, Logistic, MixtureOfExperts, SymMoLinE,
};
use faer::Mat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// Every setting of the brief: (expert, gating, K).
fn models(d: usize) -> Vec<MixtureOfExperts> {
    let mut out = Vec::new();
    let experts: [Arc<dyn Expert>; 2] =
        [Arc::new(LinearGaussian::new()), Arc::new(Logistic::new())];
    for e in experts {
        for gating in [Gating::Softmax, Gating::Constant] {
            for k in 1..=3 {
                out.push(MixtureOfExperts::new(e.clone(), k, d, gating).unwrap());
            }
        }
    }
    out
}

fn random_x(rng: &mut ChaCha8Rng, d: usize) -> Vec<f64> {
    (0..d)
        .map(|j| {
            if j == 0 {
                1.0
            } else {
                2.0 * rng.random::<f64>() - 1.0
            }
        })
        .collect()
}

/// A work buffer filled with garbage: the functions must not read stale contents.
fn dirty_work(m: &dyn ConditionalFamily) -> Vec<f64> {
    vec![f64::NAN; m.row_work_len()]
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn direct_jacobian_equals_vjp_jacobian_and_finite_differences() {
    let d = 3;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for m in models(d) {
        let (p, np) = (m.complete().dim(), m.n_params());
        for _ in 0..4 {
            let theta = m.random_params(&mut rng, 0.8);
            let x = random_x(&mut rng, d);
            let reference = m.realise_jacobian(&theta, &x);
            // Contiguous columns (the stacked block of the diagnostics)…
            let mut jt = Mat::from_fn(np, p, |_, _| f64::NAN);
            let mut work = dirty_work(&m);
            m.realise_jacobian_t(&theta, &x, jt.as_mut(), &mut work);
            // …and a transposed view (strided columns: the buffered path).
            let mut j = Mat::from_fn(p, np, |_, _| f64::NAN);
            m.realise_jacobian_t(&theta, &x, j.as_mut().transpose_mut(), &mut work);
            // Central differences of the realisation.
            let mut th = theta.clone();
            let (mut fp, mut fm) = (vec![0.0; p], vec![0.0; p]);
            for c in 0..np {
                let h = 1e-6 * theta[c].abs().max(1.0);
                th[c] = theta[c] + h;
                m.realise(&th, &x, &mut fp);
                th[c] = theta[c] - h;
                m.realise(&th, &x, &mut fm);
                th[c] = theta[c];
                for r in 0..p {
                    let want = reference[(r, c)];
                    assert!(
                        close(jt[(c, r)], want, 1e-14) && close(j[(r, c)], want, 1e-14),
                        "{} K={} ({r},{c}): {} / {} vs {want}",
                        m.complete().name(),
                        m.n_experts(),
                        jt[(c, r)],
                        j[(r, c)]
                    );
                    let fd = (fp[r] - fm[r]) / (2.0 * h);
                    assert!(
                        close(jt[(c, r)], fd, 1e-6),
                        "{} K={} ({r},{c}): {} vs fd {fd}",
                        m.complete().name(),
                        m.n_experts(),
                        jt[(c, r)]
                    );
                }
            }
        }
    }
}

/// The textbook block Fisher of the module documentation from the expert family's own
/// `mean` and `fisher` (the implementation before the allocation-free one).
fn textbook_fisher(m: &MixtureOfExperts, phi: &[f64]) -> Mat<f64> {
    let (k, fam) = (m.n_experts(), m.expert().family());
    let p = fam.dim();
    let dim = m.complete().dim();
    let eta = |c: usize| &phi[k + c * p..k + (c + 1) * p];
    let logits: Vec<f64> = (0..k)
        .map(|c| phi[c] + fam.log_partition(eta(c)).unwrap())
        .collect();
    let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
    let rho: Vec<f64> = logits.iter().map(|l| (l - mx).exp() / z).collect();
    let mut mu = vec![0.0; dim];
    let mut ms = Vec::new();
    for c in 0..k {
        let mut mc = vec![0.0; p];
        fam.mean(eta(c), &mut mc).unwrap();
        mu[c] = rho[c];
        for j in 0..p {
            mu[k + c * p + j] = rho[c] * mc[j];
        }
        ms.push(mc);
    }
    let mut h = Mat::from_fn(dim, dim, |a, b| -mu[a] * mu[b]);
    for c in 0..k {
        let f = fam.fisher(eta(c)).unwrap();
        let off = k + c * p;
        h[(c, c)] += rho[c];
        for j in 0..p {
            h[(c, off + j)] += rho[c] * ms[c][j];
            h[(off + j, c)] += rho[c] * ms[c][j];
            for l in 0..p {
                h[(off + j, off + l)] += rho[c] * (f[(j, l)] + ms[c][j] * ms[c][l]);
            }
        }
    }
    h
}

#[test]
fn allocation_free_family_functions_match_generic_and_independent_ones() {
    let d = 3;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for m in models(d) {
        let fam = m.complete();
        let p = fam.dim();
        let k = m.n_experts();
        for _ in 0..4 {
            let theta = m.random_params(&mut rng, 0.8);
            let x = random_x(&mut rng, d);
            let mut phi = vec![0.0; p];
            m.realise(&theta, &x, &mut phi);
            // Perturb the a-part so that A(φ) ≠ LSE of the gate (a general point).
            for a in phi[..k].iter_mut() {
                *a += 0.3 * (rng.random::<f64>() - 0.5);
            }
            let mut work = dirty_work(&m);
            // log-partition: bit-identical to the generic one, and the textbook LSE.
            let a = m.complete_log_partition(&phi, &mut work).unwrap();
            assert_eq!(a.to_bits(), fam.log_partition(&phi).unwrap().to_bits());
            let eta_fam = m.expert().family();
            let pe = eta_fam.dim();
            let lse = (0..k)
                .map(|c| {
                    (phi[c]
                        + eta_fam
                            .log_partition(&phi[k + c * pe..k + (c + 1) * pe])
                            .unwrap())
                    .exp()
                })
                .sum::<f64>()
                .ln();
            assert!(close(a, lse, 1e-13), "{a} vs {lse}");
            // mean: bit-identical to the generic one, and ∇A by central differences.
            let mut mu = vec![f64::NAN; p];
            m.complete_mean(&phi, &mut mu, &mut work).unwrap();
            let mut mu_ref = vec![0.0; p];
            fam.mean(&phi, &mut mu_ref).unwrap();
            let mut ph = phi.clone();
            for r in 0..p {
                assert_eq!(mu[r].to_bits(), mu_ref[r].to_bits());
                let h = 1e-6;
                ph[r] = phi[r] + h;
                let ap = m.complete_log_partition(&ph, &mut work).unwrap();
                ph[r] = phi[r] - h;
                let am = m.complete_log_partition(&ph, &mut work).unwrap();
                ph[r] = phi[r];
                assert!(close(mu[r], (ap - am) / (2.0 * h), 1e-7));
            }
            // Fisher: the textbook block formula, the generic `fisher`, and ∇ of the mean.
            let mut f = Mat::from_fn(p, p, |_, _| f64::NAN);
            m.complete_fisher(&phi, f.as_mut(), &mut work).unwrap();
            let tb = textbook_fisher(&m, &phi);
            let generic = fam.fisher(&phi).unwrap();
            let (mut mp, mut mm) = (vec![0.0; p], vec![0.0; p]);
            for c in 0..p {
                let h = 1e-6;
                ph[c] = phi[c] + h;
                m.complete_mean(&ph, &mut mp, &mut work).unwrap();
                ph[c] = phi[c] - h;
                m.complete_mean(&ph, &mut mm, &mut work).unwrap();
                ph[c] = phi[c];
                for r in 0..p {
                    assert!(
                        close(f[(r, c)], tb[(r, c)], 1e-14),
                        "({r},{c}) {} vs {}",
                        f[(r, c)],
                        tb[(r, c)]
                    );
                    assert_eq!(f[(r, c)].to_bits(), generic[(r, c)].to_bits());
                    assert!(close(f[(r, c)], (mp[r] - mm[r]) / (2.0 * h), 1e-6));
                }
            }
        }
    }
}

#[test]
fn allocation_free_functions_reject_points_outside_the_domain() {
    let m = MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 2, Gating::Softmax).unwrap();
    let p = m.complete().dim();
    // η = (η₁, η₂) with η₂ ≥ 0 is outside the Gaussian's natural domain.
    let phi = vec![0.1, -0.2, 0.5, 0.3, 1.0, -0.5];
    assert_eq!(phi.len(), p);
    let mut work = dirty_work(&m);
    assert!(matches!(
        m.complete_log_partition(&phi, &mut work),
        Err(MirrorError::OutsideDomain { .. })
    ));
    let mut mu = vec![0.0; p];
    assert!(matches!(
        m.complete_mean(&phi, &mut mu, &mut work),
        Err(MirrorError::OutsideDomain { .. })
    ));
    let mut f = Mat::zeros(p, p);
    assert!(matches!(
        m.complete_fisher(&phi, f.as_mut(), &mut work),
        Err(MirrorError::OutsideDomain { .. })
    ));
    let mut nan_a = vec![f64::NAN, 0.0, 0.5, -0.3, 1.0, -0.5];
    assert!(matches!(
        m.complete_log_partition(&nan_a, &mut work),
        Err(MirrorError::OutsideDomain { .. })
    ));
    nan_a[0] = 0.0;
    assert!(m.complete_log_partition(&nan_a, &mut work).is_ok());
}

#[test]
fn row_posterior_keeps_the_log_partition() {
    let d = 3;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for m in models(d) {
        let mut s = RowScratch::new(&m);
        assert!(s.log_partition.is_nan());
        for _ in 0..4 {
            let theta = m.random_params(&mut rng, 0.8);
            let x = random_x(&mut rng, d);
            let y = if m.expert().name().contains("logistic") {
                [if rng.random::<bool>() { 1.0 } else { 0.0 }]
            } else {
                [rng.random::<f64>() * 4.0 - 2.0]
            };
            m.realise(&theta, &x, &mut s.phi);
            let lp = row_posterior(&m, &y, 0, &mut s).unwrap();
            let a = m.complete().log_partition(&s.phi).unwrap();
            assert_eq!(s.log_partition.to_bits(), a.to_bits());
            // A(φ_i) = LSE_k g_k(x) for the realised point, and log p(y) is the predictive.
            let mut g = vec![0.0; m.n_experts()];
            m.gate_logits(&theta, &x, &mut g);
            let mx = g.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + g.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            assert!(close(s.log_partition, lse, 1e-12));
            assert!(close(lp, m.log_predictive(&theta, &x, &y).unwrap(), 1e-12));
        }
    }
}

/// One `RowObservation` per row serves many parameters: `row_posterior_given` equals
/// `row_posterior` bit for bit (log-likelihood, A, posterior, E_post T), and both report
/// a target outside the support with the same error.
#[test]
fn row_posterior_given_shares_the_target_terms() {
    let d = 3;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for m in models(d) {
        let logistic = m.expert().name().contains("logistic");
        let (mut s1, mut s2) = (RowScratch::new(&m), RowScratch::new(&m));
        let mut ob = RowObservation::new(&m);
        for _ in 0..3 {
            let x = random_x(&mut rng, d);
            let y = if logistic {
                [if rng.random::<bool>() { 1.0 } else { 0.0 }]
            } else {
                [rng.random::<f64>() * 4.0 - 2.0]
            };
            ob.set(&m, &y);
            let mut obs = vec![y[0], 0.0];
            let mut t = vec![0.0; m.complete().dim()];
            for z in 0..m.n_experts() {
                obs[1] = z as f64;
                m.complete().sufficient_stats(&obs, &mut t);
                assert_eq!(ob.stats(z), Some(&t[..]));
            }
            assert_eq!(ob.stats(m.n_experts()), None);
            for _ in 0..3 {
                let theta = m.random_params(&mut rng, 0.8);
                m.realise(&theta, &x, &mut s1.phi);
                s2.phi.copy_from_slice(&s1.phi);
                let a = row_posterior(&m, &y, 4, &mut s1).unwrap();
                let b = row_posterior_given(&m, &ob, 4, &mut s2).unwrap();
                assert_eq!(a.to_bits(), b.to_bits());
                assert_eq!(s1.log_partition.to_bits(), s2.log_partition.to_bits());
                assert_eq!(s1.resp, s2.resp);
                assert_eq!(s1.post_stats, s2.post_stats);
            }
        }
        if logistic {
            // y = 0.5 has probability zero under every expert.
            let y = [0.5];
            ob.set(&m, &y);
            assert_eq!(ob.stats(0), None);
            let theta = m.random_params(&mut rng, 0.8);
            m.realise(&theta, &random_x(&mut rng, d), &mut s1.phi);
            s2.phi.copy_from_slice(&s1.phi);
            let a = row_posterior(&m, &y, 7, &mut s1).unwrap_err();
            let b = row_posterior_given(&m, &ob, 7, &mut s2).unwrap_err();
            assert_eq!(a.to_string(), b.to_string());
            assert!(a.to_string().contains("outside the support"), "{a}");
        }
    }
}

#[test]
fn defaults_serve_models_without_overrides() {
    let m = SymMoLinE::new(3, 1.0).unwrap();
    let theta = m.random_theta(2.0, 1.0, 5).unwrap();
    let (p, np) = (m.complete().dim(), m.n_params());
    assert_eq!(m.row_work_len(), p + np);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..4 {
        let x = random_x(&mut rng, 3);
        let mut work = dirty_work(&m);
        let reference = m.realise_jacobian(&theta, &x);
        let mut jt = Mat::from_fn(np, p, |_, _| f64::NAN);
        m.realise_jacobian_t(&theta, &x, jt.as_mut(), &mut work);
        let mut phi = vec![0.0; p];
        m.realise(&theta, &x, &mut phi);
        let mut f = Mat::from_fn(p, p, |_, _| f64::NAN);
        m.complete_fisher(&phi, f.as_mut(), &mut work).unwrap();
        let generic = m.complete().fisher(&phi).unwrap();
        let mut mu = vec![0.0; p];
        m.complete_mean(&phi, &mut mu, &mut work).unwrap();
        let mut mu_ref = vec![0.0; p];
        m.complete().mean(&phi, &mut mu_ref).unwrap();
        assert_eq!(
            m.complete_log_partition(&phi, &mut work).unwrap().to_bits(),
            m.complete().log_partition(&phi).unwrap().to_bits()
        );
        for r in 0..p {
            assert_eq!(mu[r].to_bits(), mu_ref[r].to_bits());
            for c in 0..np {
                assert_eq!(jt[(c, r)].to_bits(), reference[(r, c)].to_bits());
            }
            for c in 0..p {
                assert_eq!(f[(r, c)].to_bits(), generic[(r, c)].to_bits());
            }
        }
    }
}

#[test]
fn short_buffers_are_typed_errors_or_a_temporary_fallback() {
    let m = MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 2, 2, Gating::Softmax).unwrap();
    let (p, np) = (m.complete().dim(), m.n_params());
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let theta = m.random_params(&mut rng, 0.5);
    let x = [1.0, 0.4];
    let mut phi = vec![0.0; p];
    m.realise(&theta, &x, &mut phi);
    let mut short = vec![0.0; 1];
    assert!(matches!(
        m.complete_log_partition(&phi, &mut short),
        Err(MirrorError::DimensionMismatch { .. })
    ));
    let mut mu = vec![0.0; p];
    assert!(matches!(
        m.complete_mean(&phi, &mut mu, &mut short),
        Err(MirrorError::DimensionMismatch { .. })
    ));
    let mut work = dirty_work(&m);
    let mut mu_short = vec![0.0; p - 1];
    assert!(matches!(
        m.complete_mean(&phi, &mut mu_short, &mut work),
        Err(MirrorError::DimensionMismatch { .. })
    ));
    let mut f = Mat::zeros(p, p);
    assert!(matches!(
        m.complete_fisher(&phi, f.as_mut(), &mut short),
        Err(MirrorError::DimensionMismatch { .. })
    ));
    let mut f_bad = Mat::zeros(p, p - 1);
    assert!(matches!(
        m.complete_fisher(&phi, f_bad.as_mut(), &mut work),
        Err(MirrorError::DimensionMismatch { .. })
    ));
    // The Jacobian has no error channel: a short buffer is replaced by a temporary one.
    let mut jt = Mat::zeros(np, p);
    m.realise_jacobian_t(&theta, &x, jt.as_mut(), &mut short);
    let reference = m.realise_jacobian(&theta, &x);
    for r in 0..p {
        for c in 0..np {
            assert_eq!(jt[(c, r)].to_bits(), reference[(r, c)].to_bits());
        }
    }
}
