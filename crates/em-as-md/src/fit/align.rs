//! Label alignment: mixtures are identifiable only up to a permutation of their
//! components, so two fits (restarts, bootstrap replicates, truth vs estimate) are
//! compared after matching their components.
//!
//! **Layout** ([`ParamLayout`], the crate-wide contract): θ = gate block, then expert
//! blocks $k = 0..K-1$ of equal length. The gate block holds $K-1$ vectors of length
//! $d_g$ ($d_g = d$ for a softmax gate on the features, $d_g = 1$ for constant mixing
//! logits, $d_g = 0$ for a single expert); expert $K-1$ is the reference with $w_{K-1} = 0$.
//!
//! **Permuting** ([`permute_theta`]): with full logits $W_k$ ($W_{K-1} = 0$) the permuted
//! model has $W'_k = W_{\sigma(k)}$; re-referencing to the new last component gives
//! $$ w'_k = W_{\sigma(k)} - W_{\sigma(K-1)}, \qquad k < K-1, $$
//! which leaves every softmax, hence the likelihood, unchanged.
//!
//! **Matching** ([`align_components`]): the cost of pairing reference component $k$ with
//! component $j$ of the other fit is
//! $$ C_{kj} = \|e^{\text{ref}}_k - e_j\|_2^2 + \|\bar W^{\text{ref}}_k - \bar W_j\|_2^2, $$
//! with $e$ the expert blocks and $\bar W_k = W_k - \frac1K\sum_l W_l$ the centred full
//! gate logits (invariant to the choice of reference). The assignment minimising
//! $\sum_k C_{k\sigma(k)}$ is found exactly by the Hungarian algorithm
//! ([`min_cost_assignment`], $O(K^3)$, any $K$), tested against exhaustive search.
//!
//! **The permutation is linear.** $\theta' = P\theta$ with the sparse matrix
//! $P$ = [`permutation_map`] (expert blocks moved, gate rows $w'_k = W_{\sigma(k)} -
//! W_{\sigma(K-1)}$ re-referenced: differences, not a plain reordering). So quantities
//! attached to $\theta$ transform with it: a covariance as $\Sigma' = P\Sigma P^\top$, an
//! information matrix as $I' = P^{-\top} I P^{-1}$, where $P^{-1}$ is the map of the
//! inverse permutation ([`inverse_permutation`]). `diagnostics::StandardErrors::permuted`
//! uses it to move standard errors to aligned labels; [`FittedMoe::aligned_to`] aligns a
//! whole fit and returns the permutation.

use crate::error::{MoeError, Result};
use crate::fit::predict::FittedMoe;
use faer::Mat;

/// Where the components live inside a flattened MoE parameter vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamLayout {
    /// Number of components $K \ge 1$.
    pub n_experts: usize,
    /// Length $d_g$ of one gate vector (0 when there is no gate block).
    pub gate_dim: usize,
    /// Length of one expert block.
    pub expert_len: usize,
}

impl ParamLayout {
    /// Length of the gate block, $(K-1)\,d_g$.
    pub fn gate_len(&self) -> usize {
        self.n_experts.saturating_sub(1) * self.gate_dim
    }
    /// Total length of θ.
    pub fn len(&self) -> usize {
        self.gate_len() + self.n_experts * self.expert_len
    }
    /// Whether θ is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Expert block $k$ of θ.
    pub fn expert<'a>(&self, theta: &'a [f64], k: usize) -> &'a [f64] {
        let s = self.gate_len() + k * self.expert_len;
        &theta[s..s + self.expert_len]
    }
    /// Full gate logits $W_k$ (with $W_{K-1} = 0$), row-major $K \times d_g$.
    pub fn full_gate(&self, theta: &[f64]) -> Vec<f64> {
        let mut w = vec![0.0; self.n_experts * self.gate_dim];
        w[..self.gate_len()].copy_from_slice(&theta[..self.gate_len()]);
        w
    }
    fn check(&self, theta: &[f64], what: &'static str) -> Result<()> {
        if self.n_experts == 0 {
            return Err(MoeError::InvalidParam {
                name: "n_experts",
                reason: ">= 1".into(),
            });
        }
        if theta.len() != self.len() {
            return Err(MoeError::InvalidParam {
                name: what,
                reason: format!("length {} expected, found {}", self.len(), theta.len()),
            });
        }
        Ok(())
    }
}

/// The layout of a [`MixtureOfExperts`](crate::model::mixture::MixtureOfExperts): $d_g = d$ for a
/// softmax gate, $1$ for constant mixing logits.
pub fn layout_of(model: &crate::model::mixture::MixtureOfExperts) -> ParamLayout {
    use crate::ConditionalFamily;
    ParamLayout {
        n_experts: model.n_experts(),
        gate_dim: match model.gating() {
            crate::model::mixture::Gating::Softmax => model.n_features(),
            crate::model::mixture::Gating::Constant => 1,
        },
        expert_len: model.expert_len(),
    }
}

fn check_perm(perm: &[usize], k: usize) -> Result<()> {
    let mut seen = vec![false; k];
    if perm.len() != k
        || perm
            .iter()
            .any(|&p| p >= k || std::mem::replace(&mut seen[p], true))
    {
        return Err(MoeError::InvalidParam {
            name: "perm",
            reason: format!("a permutation of 0..{k}"),
        });
    }
    Ok(())
}

/// Relabels the components: component $k$ of the result is component `perm[k]` of
/// `theta`, with the gate re-referenced as in the module documentation.
///
/// # Errors
/// `InvalidParam { name: "theta" }` for a wrong length, `{ name: "perm" }` when `perm`
/// is not a permutation of $0..K$.
pub fn permute_theta(theta: &[f64], layout: &ParamLayout, perm: &[usize]) -> Result<Vec<f64>> {
    layout.check(theta, "theta")?;
    let k = layout.n_experts;
    check_perm(perm, k)?;
    let dg = layout.gate_dim;
    let w = layout.full_gate(theta);
    let mut out = vec![0.0; theta.len()];
    let last = perm[k - 1];
    for new in 0..k - 1 {
        let old = perm[new];
        for j in 0..dg {
            out[new * dg + j] = w[old * dg + j] - w[last * dg + j];
        }
    }
    let g = layout.gate_len();
    let e = layout.expert_len;
    for (new, &old) in perm.iter().enumerate() {
        out[g + new * e..g + (new + 1) * e].copy_from_slice(layout.expert(theta, old));
    }
    Ok(out)
}

/// The matrix $P$ ($p\times p$, $p$ = `layout.len()`) of [`permute_theta`]:
/// `permute_theta(θ, layout, perm)` $= P\theta$ for every $\theta$. Row $g + k e + a$
/// (expert $k$'s entry $a$) is $e_{g + \sigma(k) e + a}^\top$; row $k d_g + j$ (gate vector
/// $k < K-1$, entry $j$) is $e_{\sigma(k) d_g + j} - e_{\sigma(K-1) d_g + j}$, each term
/// present only when its component is not the old reference $K-1$ (whose logits are 0).
///
/// # Errors
/// `InvalidParam { name: "perm" }` when `perm` is not a permutation of $0..K$,
/// `{ name: "n_experts" }` for $K = 0$.
pub fn permutation_map(layout: &ParamLayout, perm: &[usize]) -> Result<Mat<f64>> {
    let k = layout.n_experts;
    if k == 0 {
        return Err(MoeError::InvalidParam {
            name: "n_experts",
            reason: ">= 1".into(),
        });
    }
    check_perm(perm, k)?;
    let (p, dg, g, e) = (
        layout.len(),
        layout.gate_dim,
        layout.gate_len(),
        layout.expert_len,
    );
    let mut m = Mat::<f64>::zeros(p, p);
    let last = perm[k - 1];
    for (new, &old) in perm.iter().enumerate().take(k - 1) {
        for j in 0..dg {
            let row = new * dg + j;
            if old + 1 < k {
                m[(row, old * dg + j)] += 1.0;
            }
            if last + 1 < k {
                m[(row, last * dg + j)] -= 1.0;
            }
        }
    }
    for (new, &old) in perm.iter().enumerate() {
        for a in 0..e {
            m[(g + new * e + a, g + old * e + a)] = 1.0;
        }
    }
    Ok(m)
}

/// The inverse permutation: `inverse[perm[k]] = k`, so that permuting by `perm` and then
/// by its inverse restores $\theta$ (and `permutation_map` of the inverse is $P^{-1}$).
///
/// # Errors
/// `InvalidParam { name: "perm" }` when `perm` is not a permutation of $0..K$.
pub fn inverse_permutation(perm: &[usize]) -> Result<Vec<usize>> {
    check_perm(perm, perm.len())?;
    let mut inv = vec![0; perm.len()];
    for (k, &p) in perm.iter().enumerate() {
        inv[p] = k;
    }
    Ok(inv)
}

/// The $K\times K$ matching cost $C_{kj}$ of the module documentation (row-major; row =
/// reference component, column = other component).
///
/// # Errors
/// `InvalidParam` when either vector does not fit the layout.
pub fn component_costs(reference: &[f64], other: &[f64], layout: &ParamLayout) -> Result<Vec<f64>> {
    layout.check(reference, "reference")?;
    layout.check(other, "other")?;
    let k = layout.n_experts;
    let dg = layout.gate_dim;
    let centred = |theta: &[f64]| {
        let mut w = layout.full_gate(theta);
        for j in 0..dg {
            let mean = (0..k).map(|l| w[l * dg + j]).sum::<f64>() / k as f64;
            for l in 0..k {
                w[l * dg + j] -= mean;
            }
        }
        w
    };
    let (wr, wo) = (centred(reference), centred(other));
    let mut c = vec![0.0; k * k];
    for a in 0..k {
        for b in 0..k {
            let ex: f64 = layout
                .expert(reference, a)
                .iter()
                .zip(layout.expert(other, b))
                .map(|(x, y)| (x - y) * (x - y))
                .sum();
            let gt: f64 = (0..dg)
                .map(|j| (wr[a * dg + j] - wo[b * dg + j]).powi(2))
                .sum();
            c[a * k + b] = ex + gt;
        }
    }
    Ok(c)
}

/// The permutation `perm` minimising $\sum_k C_{k,\sigma(k)}$ (with $\sigma$ = `perm`) for a square cost
/// matrix (row-major $K\times K$), by the Hungarian algorithm (Kuhn–Munkres with
/// potentials, $O(K^3)$).
///
/// # Errors
/// `InvalidParam { name: "cost" }` when the matrix is not square or has a non-finite entry.
pub fn min_cost_assignment(cost: &[f64], k: usize) -> Result<Vec<usize>> {
    if cost.len() != k * k || cost.iter().any(|c| !c.is_finite()) {
        return Err(MoeError::InvalidParam {
            name: "cost",
            reason: format!("a finite {k} × {k} matrix"),
        });
    }
    if k == 0 {
        return Ok(Vec::new());
    }
    // 1-based arrays as in the classical formulation; p[j] = row matched to column j.
    let inf = f64::INFINITY;
    let mut u = vec![0.0; k + 1];
    let mut v = vec![0.0; k + 1];
    let mut p = vec![0usize; k + 1];
    let mut way = vec![0usize; k + 1];
    for i in 1..=k {
        p[0] = i;
        let mut j0 = 0usize;
        let mut minv = vec![inf; k + 1];
        let mut used = vec![false; k + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0usize;
            for j in 1..=k {
                if !used[j] {
                    let cur = cost[(i0 - 1) * k + (j - 1)] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=k {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut perm = vec![0usize; k];
    for j in 1..=k {
        perm[p[j] - 1] = j - 1;
    }
    Ok(perm)
}

/// Matches the components of `other` to those of `reference`: returns `perm` such that
/// component `perm[k]` of `other` corresponds to component `k` of `reference`, so
/// `permute_theta(other, layout, &perm)` is `other` written in the reference's labels.
///
/// # Errors
/// `InvalidParam` when either vector does not fit the layout.
pub fn align_components(
    reference: &[f64],
    other: &[f64],
    layout: &ParamLayout,
) -> Result<Vec<usize>> {
    let c = component_costs(reference, other, layout)?;
    min_cost_assignment(&c, layout.n_experts)
}

/// `other` relabelled to match `reference` (see [`align_components`]).
///
/// # Errors
/// As [`align_components`].
pub fn align_to(reference: &[f64], other: &[f64], layout: &ParamLayout) -> Result<Vec<f64>> {
    let perm = align_components(reference, other, layout)?;
    permute_theta(other, layout, &perm)
}

impl FittedMoe {
    /// The same fit with its components relabelled: component $k$ of the result is
    /// component `perm[k]` of this fit ([`permute_theta`]; the likelihood, predictions and
    /// report are unchanged).
    ///
    /// # Errors
    /// `InvalidParam { name: "perm" }` when `perm` is not a permutation of $0..K$.
    pub fn permuted(&self, perm: &[usize]) -> Result<FittedMoe> {
        let layout = layout_of(self.model());
        let theta = permute_theta(self.theta(), &layout, perm)?;
        FittedMoe::new(
            self.model().clone(),
            theta,
            self.feature_names().to_vec(),
            self.report().clone(),
        )
    }

    /// This fit written in the labels of `reference` ([`align_components`]), and the
    /// permutation `perm` used (component `perm[k]` of this fit is component $k$ of the
    /// result). Quantities computed in this fit's labels follow with the same `perm`,
    /// e.g. standard errors with `diagnostics::StandardErrors::permuted`.
    ///
    /// # Errors
    /// `InvalidParam { name: "reference" }` when the two fits do not share a parameter
    /// layout ($K$, gate and expert lengths).
    pub fn aligned_to(&self, reference: &FittedMoe) -> Result<(FittedMoe, Vec<usize>)> {
        let layout = layout_of(self.model());
        if layout_of(reference.model()) != layout {
            return Err(MoeError::InvalidParam {
                name: "reference",
                reason: format!(
                    "the reference's layout {:?} differs from this fit's {layout:?}",
                    layout_of(reference.model())
                ),
            });
        }
        let perm = align_components(reference.theta(), self.theta(), &layout)?;
        Ok((self.permuted(&perm)?, perm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn brute(cost: &[f64], k: usize) -> f64 {
        fn rec(cost: &[f64], k: usize, row: usize, used: &mut Vec<bool>) -> f64 {
            if row == k {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for j in 0..k {
                if !used[j] {
                    used[j] = true;
                    best = best.min(cost[row * k + j] + rec(cost, k, row + 1, used));
                    used[j] = false;
                }
            }
            best
        }
        rec(cost, k, 0, &mut vec![false; k])
    }

    #[test]
    fn hungarian_matches_exhaustive_search() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for k in 1..=7 {
            for _ in 0..20 {
                let cost: Vec<f64> = (0..k * k).map(|_| rng.random_range(-3.0..5.0)).collect();
                let perm = min_cost_assignment(&cost, k).unwrap();
                check_perm(&perm, k).unwrap();
                let total: f64 = (0..k).map(|r| cost[r * k + perm[r]]).sum();
                assert!((total - brute(&cost, k)).abs() < 1e-12, "k={k}");
            }
        }
    }

    #[test]
    fn permutation_recovers_labels_and_preserves_softmax() {
        let layout = ParamLayout {
            n_experts: 4,
            gate_dim: 2,
            expert_len: 3,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let theta: Vec<f64> = (0..layout.len())
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let perm = vec![2, 0, 3, 1];
        let permuted = permute_theta(&theta, &layout, &perm).unwrap();
        // Expert blocks moved.
        for (new, &old) in perm.iter().enumerate() {
            assert_eq!(layout.expert(&permuted, new), layout.expert(&theta, old));
        }
        // Gate probabilities at a point are permuted, not changed.
        let x = [0.7, -1.3];
        let probs = |t: &[f64]| {
            let w = layout.full_gate(t);
            let g: Vec<f64> = (0..4)
                .map(|k| w[2 * k] * x[0] + w[2 * k + 1] * x[1])
                .collect();
            let m = g.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = g.iter().map(|v| (v - m).exp()).sum();
            g.iter().map(|v| (v - m).exp() / s).collect::<Vec<_>>()
        };
        let (p0, p1) = (probs(&theta), probs(&permuted));
        for (new, &old) in perm.iter().enumerate() {
            assert!((p1[new] - p0[old]).abs() < 1e-14);
        }
        // Alignment finds the inverse labelling.
        let found = align_components(&theta, &permuted, &layout).unwrap();
        let back = permute_theta(&permuted, &layout, &found).unwrap();
        for (a, b) in back.iter().zip(&theta) {
            assert!((a - b).abs() < 1e-12);
        }
        assert_eq!(align_to(&theta, &permuted, &layout).unwrap(), back);
    }

    #[test]
    fn permutation_map_is_permute_theta_and_its_inverse_is_the_inverse_perm() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (k, dg, e) in [(1, 0, 2), (2, 1, 1), (3, 2, 3), (4, 3, 2)] {
            let layout = ParamLayout {
                n_experts: k,
                gate_dim: dg,
                expert_len: e,
            };
            let theta: Vec<f64> = (0..layout.len())
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let mut perm: Vec<usize> = (0..k).collect();
            for i in (1..k).rev() {
                perm.swap(i, rng.random_range(0..=i));
            }
            let p = permutation_map(&layout, &perm).unwrap();
            let direct = permute_theta(&theta, &layout, &perm).unwrap();
            for (r, d) in direct.iter().enumerate() {
                let pt: f64 = (0..theta.len()).map(|c| p[(r, c)] * theta[c]).sum();
                assert!((pt - d).abs() < 1e-14, "K={k}: row {r}");
            }
            let inv = inverse_permutation(&perm).unwrap();
            let q = permutation_map(&layout, &inv).unwrap();
            let pq = &p * &q;
            for r in 0..theta.len() {
                for c in 0..theta.len() {
                    let id = if r == c { 1.0 } else { 0.0 };
                    assert_eq!(pq[(r, c)], id, "K={k}: P P⁻¹ at ({r}, {c})");
                }
            }
        }
        assert!(matches!(
            inverse_permutation(&[0, 0]),
            Err(MoeError::InvalidParam { name: "perm", .. })
        ));
    }

    #[test]
    fn bad_inputs_are_typed() {
        let layout = ParamLayout {
            n_experts: 2,
            gate_dim: 1,
            expert_len: 1,
        };
        let e = permute_theta(&[0.0; 3], &layout, &[0, 0]).unwrap_err();
        assert!(matches!(e, MoeError::InvalidParam { name: "perm", .. }));
        let e = permute_theta(&[0.0; 2], &layout, &[0, 1]).unwrap_err();
        assert!(matches!(e, MoeError::InvalidParam { name: "theta", .. }));
        let e = min_cost_assignment(&[0.0, f64::NAN, 1.0, 2.0], 2).unwrap_err();
        assert!(matches!(e, MoeError::InvalidParam { name: "cost", .. }));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 48,
            rng_seed: proptest::test_runner::RngSeed::Fixed(7),
            ..proptest::prelude::ProptestConfig::default()
        })]
        /// Any relabelling of well-separated random parameters is undone by alignment,
        /// and permuting twice composes.
        #[test]
        fn alignment_inverts_random_relabellings(
            k in 1usize..7, dg in 0usize..4, e in 1usize..4, seed in 0u64..1000
        ) {
            let layout = ParamLayout { n_experts: k, gate_dim: if k == 1 { 0 } else { dg }, expert_len: e };
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut theta: Vec<f64> = (0..layout.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
            // Separate the experts so the matching is unambiguous.
            for c in 0..k {
                let s = layout.gate_len() + c * e;
                theta[s] += 10.0 * c as f64;
            }
            let mut perm: Vec<usize> = (0..k).collect();
            for i in (1..k).rev() {
                perm.swap(i, rng.random_range(0..=i));
            }
            let shuffled = permute_theta(&theta, &layout, &perm).unwrap();
            let back = align_to(&theta, &shuffled, &layout).unwrap();
            for (a, b) in back.iter().zip(&theta) {
                proptest::prop_assert!((a - b).abs() < 1e-12);
            }
            let twice = permute_theta(&shuffled, &layout, &perm).unwrap();
            let composed: Vec<usize> = (0..k).map(|i| perm[perm[i]]).collect();
            let direct = permute_theta(&theta, &layout, &composed).unwrap();
            for (a, b) in twice.iter().zip(&direct) {
                proptest::prop_assert!((a - b).abs() < 1e-12);
            }
        }
    }
}
