//! Standard errors follow aligned labels: relabelling a fit re-references its gate (a
//! linear map of θ whose gate rows are differences), so the standard errors move with
//! $\Sigma' = P\Sigma P^\top$, not by reordering the vector. Checked against the standard
//! errors computed from scratch at the relabelled θ̂ (the information at that point).

use diagnostics::stderr::standard_errors;
use em_as_md::fit::align::{layout_of, permutation_map};
use em_as_md::{Dataset, FittedMoe, Gating, LinearGaussian, MixtureOfExperts, MoeParams, Problem};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// Three gated linear experts: gate $w_0 = (1, 2)$, $w_1 = (0.5, -2)$; experts
/// $\beta = (2, 1), (-2, 0.5), (0, -1.5)$ with $\sigma^2 = 0.09, 0.16, 0.04$.
fn data(n: usize, seed: u64) -> Dataset {
    let model =
        MixtureOfExperts::new(Arc::new(LinearGaussian::new()), 3, 2, Gating::Softmax).unwrap();
    let mut theta = vec![1.0, 2.0, 0.5, -2.0];
    for (beta, s2) in [([2.0, 1.0], 0.09), ([-2.0, 0.5], 0.16), ([0.0, -1.5], 0.04)] {
        let mut block = [0.0; 3];
        LinearGaussian::natural_from_beta(&beta, s2, &mut block).unwrap();
        theta.extend(block);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let xi: f64 = rng.random_range(-2.0..2.0);
        y.push(model.sample(&theta, &[1.0, xi], &mut rng).unwrap().0[0]);
        x.push(xi);
    }
    Dataset::from_rows(&x, 1, &y, 1).unwrap().with_intercept()
}

#[test]
fn standard_errors_permuted_with_the_labels_equal_those_computed_from_scratch() {
    let data = data(900, 12);
    let fit: FittedMoe = MoeParams::new(3)
        .tol(1e-12)
        .n_init(2)
        .seed(5)
        .check()
        .unwrap()
        .fit(&data)
        .unwrap();
    let layout = layout_of(fit.model());
    // A reference in other labels: the fit relabelled by σ = (2, 0, 1). Aligning the fit
    // to it recovers σ.
    let sigma = [2, 0, 1];
    let reference = fit.permuted(&sigma).unwrap();
    let (aligned, perm) = fit.aligned_to(&reference).unwrap();
    assert_eq!(perm, sigma);
    assert_eq!(aligned.theta(), reference.theta());

    let problem = Problem::new(fit.model(), &data).unwrap();
    let se = standard_errors(&problem, fit.theta(), 1e10).unwrap();
    assert!(se.warnings.is_empty(), "{:?}", se.warnings);
    let moved = se.permuted(&layout, &perm).unwrap();
    // Independent: the observed information at the relabelled θ̂, inverted from scratch.
    let scratch = standard_errors(&problem, aligned.theta(), 1e10).unwrap();
    assert!(scratch.warnings.is_empty(), "{:?}", scratch.warnings);
    let p = fit.theta().len();
    for j in 0..p {
        let (a, b) = (moved.se[j].unwrap(), scratch.se[j].unwrap());
        assert!((a - b).abs() < 1e-7 * b, "coordinate {j}: {a} vs {b}");
    }
    for (a, b) in moved.covariance.iter().zip(&scratch.covariance) {
        assert!((a - b).abs() < 1e-7 * (1e-3 + b.abs()), "{a} vs {b}");
    }
    for (a, b) in moved.eigenvalues.iter().zip(&scratch.eigenvalues) {
        assert!((a - b).abs() < 1e-9 * (1.0 + b.abs()), "{a} vs {b}");
    }

    // Not a reordering: the new gate vector 1 is w_0 − w_1 (component σ(1) = 0 against the
    // new reference σ(2) = 1), whose variance involves the covariance of w_0 and w_1.
    let pm = permutation_map(&layout, &perm).unwrap();
    let d = layout.gate_dim;
    for j in 0..d {
        let row = d + j;
        assert_eq!((pm[(row, j)], pm[(row, d + j)]), (1.0, -1.0));
        let (old0, old1) = (se.se[j].unwrap(), se.se[d + j].unwrap());
        let new = moved.se[row].unwrap();
        assert!(
            (new - old0).abs() > 0.01 * new && (new - old1).abs() > 0.01 * new,
            "gate entry {j}: {new} is a reordering of {old0}, {old1}"
        );
        let c = se.covariance[j * p + d + j];
        let var = old0 * old0 + old1 * old1 - 2.0 * c;
        assert!((new * new - var).abs() < 1e-9 * var, "{new}² vs {var}");
    }
    // Expert blocks are moved as they are: their standard errors are reordered (up to the
    // rounding of PΣPᵀ's symmetrisation).
    let (g, e) = (layout.gate_len(), layout.expert_len);
    for (new, &old) in perm.iter().enumerate() {
        for a in 0..e {
            let (x, y) = (
                moved.se[g + new * e + a].unwrap(),
                se.se[g + old * e + a].unwrap(),
            );
            assert!((x - y).abs() < 1e-12 * y);
        }
    }
    // Bad inputs are typed errors.
    assert!(se.permuted(&layout, &[0, 0, 1]).is_err());
    let mut read_back: diagnostics::StandardErrors =
        serde_json::from_str(&serde_json::to_string(&se).unwrap()).unwrap();
    assert!(read_back.covariance.is_empty());
    assert!(matches!(
        read_back.permuted(&layout, &perm),
        Err(diagnostics::DiagnosticsError::InvalidConfig {
            field: "covariance",
            ..
        })
    ));
    read_back.se.pop();
    assert!(read_back.permuted(&layout, &perm).is_err());
}
