//! Test support (compiled only for tests; also included by the integration tests through
//! `#[path]`): a 1-D two-component unit-variance Gaussian mixture written as a complete-data
//! exponential family over $(y, z)$, with a linear and a curved realisation map, a seeded
//! data generator and an EM map written by hand (closed form, no `Problem` code).
//!
//! Complete-data family: $T(y, z) = (1[z=0],\ 1[z=0]\,y,\ 1[z=1]\,y)$,
//! $h(y, z) = \mathcal N(y; 0, 1)$, $\varphi = (a, b_0, b_1)$,
//! $A(\varphi) = \log\big(e^{a + b_0^2/2} + e^{b_1^2/2}\big)$, so that
//! $p(z = 0) = \pi_0 = \sigma(a + b_0^2/2 - b_1^2/2)$ and $y \mid z \sim \mathcal N(b_z, 1)$.
#![allow(dead_code)]

use em_as_md::{ConditionalFamily, Dataset, MoeError};
use faer::Mat;
use mirror::{ExponentialFamily, MirrorError};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

fn lse2(u: f64, v: f64) -> f64 {
    let m = u.max(v);
    m + ((u - m).exp() + (v - m).exp()).ln()
}

/// One standard normal draw (Box–Muller).
pub fn std_normal(rng: &mut (impl RngCore + ?Sized)) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The complete-data family of the two-Gaussian mixture (see the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct TwoGauss;

impl TwoGauss {
    fn pi0(phi: &[f64]) -> f64 {
        sigmoid(phi[0] + 0.5 * phi[1] * phi[1] - 0.5 * phi[2] * phi[2])
    }
}

impl ExponentialFamily for TwoGauss {
    fn name(&self) -> String {
        "TwoGauss".into()
    }
    fn dim(&self) -> usize {
        3
    }
    fn obs_dim(&self) -> usize {
        2
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s.len() == 2 && s[0].is_finite() && (s[1] == 0.0 || s[1] == 1.0)
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta.len() == 3 && theta.iter().all(|v| v.is_finite())
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu.len() == 3 && mu.iter().all(|v| v.is_finite()) && mu[0] > 0.0 && mu[0] < 1.0
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        if s[1] == 0.0 {
            t.copy_from_slice(&[1.0, s[0], 0.0]);
        } else {
            t.copy_from_slice(&[0.0, 0.0, s[0]]);
        }
    }
    fn log_base_measure(&self, s: &[f64]) -> f64 {
        -0.5 * s[0] * s[0] - 0.5 * (2.0 * std::f64::consts::PI).ln()
    }
    fn log_partition(&self, phi: &[f64]) -> mirror::Result<f64> {
        if !self.in_natural_domain(phi) {
            return Err(MirrorError::OutsideDomain {
                what: "natural parameter",
                reason: "TwoGauss needs 3 finite values".into(),
            });
        }
        Ok(lse2(phi[0] + 0.5 * phi[1] * phi[1], 0.5 * phi[2] * phi[2]))
    }
    fn mean(&self, phi: &[f64], mu: &mut [f64]) -> mirror::Result<()> {
        self.log_partition(phi)?;
        let p0 = Self::pi0(phi);
        mu[0] = p0;
        mu[1] = p0 * phi[1];
        mu[2] = (1.0 - p0) * phi[2];
        Ok(())
    }
    fn fisher(&self, phi: &[f64]) -> mirror::Result<Mat<f64>> {
        self.log_partition(phi)?;
        let p0 = Self::pi0(phi);
        let p1 = 1.0 - p0;
        let v = p0 * p1;
        let (b0, b1) = (phi[1], phi[2]);
        let h = [
            [v, v * b0, -v * b1],
            [v * b0, p0 + v * b0 * b0, -v * b0 * b1],
            [-v * b1, -v * b0 * b1, p1 + v * b1 * b1],
        ];
        Ok(Mat::from_fn(3, 3, |i, j| h[i][j]))
    }
    fn sample(&self, phi: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> mirror::Result<()> {
        let p0 = Self::pi0(phi);
        let z = if rng.random::<f64>() < p0 { 0.0 } else { 1.0 };
        let m = if z == 0.0 { phi[1] } else { phi[2] };
        s[0] = m + std_normal(rng);
        s[1] = z;
        Ok(())
    }
    fn natural_from_mean(&self, mu: &[f64], phi: &mut [f64]) -> mirror::Result<()> {
        if !self.in_mean_domain(mu) {
            return Err(MirrorError::OutsideDomain {
                what: "mean parameter",
                reason: "TwoGauss needs 0 < mu_0 < 1".into(),
            });
        }
        let p0 = mu[0];
        let b0 = mu[1] / p0;
        let b1 = mu[2] / (1.0 - p0);
        phi[0] = (p0 / (1.0 - p0)).ln() - 0.5 * b0 * b0 + 0.5 * b1 * b1;
        phi[1] = b0;
        phi[2] = b1;
        Ok(())
    }
}

/// Realisation $\varphi(\theta) = \theta$ (natural parametrisation; linear).
#[derive(Debug, Clone, Copy, Default)]
pub struct GmmNatural;

impl ConditionalFamily for GmmNatural {
    fn complete(&self) -> &dyn ExponentialFamily {
        &TwoGauss
    }
    fn n_latent(&self) -> usize {
        2
    }
    fn n_params(&self) -> usize {
        3
    }
    fn n_features(&self) -> usize {
        1
    }
    fn realise(&self, theta: &[f64], _x: &[f64], phi: &mut [f64]) {
        phi.copy_from_slice(theta);
    }
    fn realise_vjp(&self, _theta: &[f64], _x: &[f64], v: &[f64], grad: &mut [f64]) {
        for (g, u) in grad.iter_mut().zip(v) {
            *g += u;
        }
    }
    fn is_linear(&self) -> bool {
        true
    }
}

/// Realisation from $\theta = (w, \mu_0, \mu_1)$ with $w = \log(\pi_0/\pi_1)$:
/// $\varphi = (w - \mu_0^2/2 + \mu_1^2/2,\ \mu_0,\ \mu_1)$ (curved).
#[derive(Debug, Clone, Copy, Default)]
pub struct GmmCurved;

impl ConditionalFamily for GmmCurved {
    fn complete(&self) -> &dyn ExponentialFamily {
        &TwoGauss
    }
    fn n_latent(&self) -> usize {
        2
    }
    fn n_params(&self) -> usize {
        3
    }
    fn n_features(&self) -> usize {
        1
    }
    fn realise(&self, theta: &[f64], _x: &[f64], phi: &mut [f64]) {
        phi[0] = theta[0] - 0.5 * theta[1] * theta[1] + 0.5 * theta[2] * theta[2];
        phi[1] = theta[1];
        phi[2] = theta[2];
    }
    fn realise_vjp(&self, theta: &[f64], _x: &[f64], v: &[f64], grad: &mut [f64]) {
        grad[0] += v[0];
        grad[1] += -theta[1] * v[0] + v[1];
        grad[2] += theta[2] * v[0] + v[2];
    }
}

/// $n$ draws from $\pi_0\,\mathcal N(\mu_0, 1) + (1-\pi_0)\,\mathcal N(\mu_1, 1)$, feature $x = 1$.
pub fn gmm_data(n: usize, pi0: f64, mu0: f64, mu1: f64, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let y: Vec<f64> = (0..n)
        .map(|_| {
            let m = if rng.random::<f64>() < pi0 { mu0 } else { mu1 };
            m + std_normal(&mut rng)
        })
        .collect();
    Dataset::from_rows(&vec![1.0; n], 1, &y, 1).expect("finite data")
}

/// $\theta$ for $(\pi_0, \mu_0, \mu_1)$ in either parametrisation.
pub fn gmm_theta(curved: bool, pi0: f64, mu0: f64, mu1: f64) -> Vec<f64> {
    let w = (pi0 / (1.0 - pi0)).ln();
    if curved {
        vec![w, mu0, mu1]
    } else {
        vec![w - 0.5 * mu0 * mu0 + 0.5 * mu1 * mu1, mu0, mu1]
    }
}

/// $(\pi_0, \mu_0, \mu_1)$ from $\theta$.
pub fn gmm_moments(curved: bool, theta: &[f64]) -> (f64, f64, f64) {
    let w = if curved {
        theta[0]
    } else {
        theta[0] + 0.5 * theta[1] * theta[1] - 0.5 * theta[2] * theta[2]
    };
    (sigmoid(w), theta[1], theta[2])
}

/// E-step sums $(\sum_i r_{i0}, \sum_i r_{i0}y_i, \sum_i r_{i1}y_i)$ and $L(\theta)$, in closed
/// form (written independently of any `Problem` code).
pub fn gmm_e_step(data: &Dataset, curved: bool, theta: &[f64]) -> (Vec<f64>, f64) {
    let (p0, m0, m1) = gmm_moments(curved, theta);
    let (mut s0, mut s0y, mut s1y, mut ll) = (0.0, 0.0, 0.0, 0.0);
    let n = data.n();
    let c = -0.5 * (2.0 * std::f64::consts::PI).ln();
    for i in 0..n {
        let y = data.y(i)[0];
        let l0 = p0.ln() - 0.5 * (y - m0) * (y - m0);
        let l1 = (1.0 - p0).ln() - 0.5 * (y - m1) * (y - m1);
        ll += lse2(l0, l1) + c;
        let r0 = sigmoid(l0 - l1);
        s0 += r0;
        s0y += r0 * y;
        s1y += (1.0 - r0) * y;
    }
    (vec![s0, s0y, s1y, n as f64], -ll / n as f64)
}

/// M-step from the sums of [`gmm_e_step`].
pub fn gmm_m_step(stats: &[f64], curved: bool, next: &mut [f64]) -> Result<(), MoeError> {
    let (s0, s0y, s1y, n) = (stats[0], stats[1], stats[2], stats[3]);
    let s1 = n - s0;
    if !(s0 > 0.0 && s1 > 0.0) {
        return Err(MoeError::NonFinite { what: "GMM M-step" });
    }
    next.copy_from_slice(&gmm_theta(curved, s0 / n, s0y / s0, s1y / s1));
    Ok(())
}

/// The EM map in closed form: [`gmm_m_step`] ∘ [`gmm_e_step`].
pub fn gmm_em_map(
    data: &Dataset,
    curved: bool,
    theta: &[f64],
    next: &mut [f64],
) -> Result<(), MoeError> {
    let (st, _) = gmm_e_step(data, curved, theta);
    gmm_m_step(&st, curved, next)
}

macro_rules! gmm_em_model {
    ($t:ty, $curved:expr) => {
        impl em_as_md::EmModel for $t {
            type Stats = Vec<f64>;
            fn e_step(&self, data: &Dataset, theta: &[f64]) -> em_as_md::Result<(Vec<f64>, f64)> {
                Ok(gmm_e_step(data, $curved, theta))
            }
            fn m_step(
                &self,
                _data: &Dataset,
                stats: &Vec<f64>,
                _theta: &[f64],
                next: &mut [f64],
            ) -> em_as_md::Result<em_as_md::InnerStats> {
                gmm_m_step(stats, $curved, next)?;
                Ok(em_as_md::InnerStats {
                    converged: true,
                    ..Default::default()
                })
            }
        }
    };
}
gmm_em_model!(GmmNatural, false);
gmm_em_model!(GmmCurved, true);

/// Runs `iters` EM steps from `theta0`; returns the trajectory and $L(\theta_t)$.
pub fn run_gmm_em<M: ConditionalFamily>(
    model: &M,
    data: &Dataset,
    curved: bool,
    theta0: &[f64],
    iters: usize,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let problem = em_as_md::Problem::new(model, data).expect("problem");
    let mut traj = vec![theta0.to_vec()];
    let mut vals = vec![problem.objective(theta0).expect("objective")];
    let mut next = theta0.to_vec();
    for _ in 0..iters {
        gmm_em_map(data, curved, traj.last().expect("non-empty"), &mut next).expect("em");
        vals.push(problem.objective(&next).expect("objective"));
        traj.push(next.clone());
    }
    (traj, vals)
}
