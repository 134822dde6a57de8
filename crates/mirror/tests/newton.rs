//! The shared Newton driver (`mirror::newton`) against independent computations: plain
//! gradient descent and closed forms on random strictly convex problems, the round-off
//! regression (a reference loop with the old fixed-threshold rule fails where the driver
//! succeeds), Hessian reuse, the initial evaluation, typed failures and settings checks.

use faer::linalg::solvers::{Solve, SolveLstsq};
use faer::Mat;
use mirror::family::newton_natural_from_mean;
use mirror::newton::{
    minimize, sum_noise, EvalOut, FnObjective, InitialEval, Need, NewtonEnd, NewtonFailure,
    NewtonObjective, NewtonReport, NewtonSettings, SettingsError,
};
use mirror::special::{log1p_exp, sigmoid};
use mirror::{
    Bernoulli, Categorical, Exponential, ExponentialFamily, Gaussian, GaussianKnownVariance,
    MultivariateGaussian, Poisson,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

// ---------------------------------------------------------------------------------------
// Test problems
// ---------------------------------------------------------------------------------------

/// Weighted ridge logistic regression
/// f(β) = (1/W) Σ wᵢ [log(1 + e^{xᵢᵀβ}) − yᵢ xᵢᵀβ] + (ρ/2)‖β‖²,
/// optionally with a deterministic pseudo-random perturbation of the value only.
struct Logistic {
    x: Vec<Vec<f64>>,
    y: Vec<f64>,
    w: Vec<f64>,
    ridge: f64,
    /// Size of the injected value perturbation (0 = none).
    perturb: f64,
    /// Whether the round-off estimate is reported (false = report 0).
    report_noise: bool,
    evals: usize,
    hessian_evals: usize,
}

impl Logistic {
    fn random(n: usize, d: usize, scale: f64, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let beta: Vec<f64> = (0..d)
            .map(|_| scale * rng.random_range(-1.0..1.0))
            .collect();
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut w = Vec::new();
        for _ in 0..n {
            let row: Vec<f64> = (0..d)
                .map(|j| {
                    if j == 0 {
                        1.0
                    } else {
                        StandardNormal.sample(&mut rng)
                    }
                })
                .collect();
            let p = sigmoid(dot(&row, &beta));
            y.push(if rng.random::<f64>() < p { 1.0 } else { 0.0 });
            w.push(rng.random_range(0.1..2.0));
            x.push(row);
        }
        Logistic {
            x,
            y,
            w,
            ridge: 1e-3,
            perturb: 0.0,
            report_noise: true,
            evals: 0,
            hessian_evals: 0,
        }
    }

    fn dim(&self) -> usize {
        self.x[0].len()
    }

    /// Value (unperturbed), Σ|parts|, gradient; Hessian if asked.
    fn parts(&self, b: &[f64], grad: &mut [f64], hess: Option<&mut Mat<f64>>) -> (f64, f64) {
        let d = self.dim();
        let wsum: f64 = self.w.iter().sum();
        let (mut f, mut abs) = (0.0, 0.0);
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut h = Mat::<f64>::zeros(d, d);
        for ((x, &y), &w) in self.x.iter().zip(&self.y).zip(&self.w) {
            let u = dot(x, b);
            let (l, yu) = (log1p_exp(u), y * u);
            f += w * (l - yu);
            abs += w * (l.abs() + yu.abs());
            let p = sigmoid(u);
            for a in 0..d {
                grad[a] += w * (p - y) * x[a];
                for c in 0..d {
                    h[(a, c)] += w * p * (1.0 - p) * x[a] * x[c];
                }
            }
        }
        let r = 0.5 * self.ridge * dot(b, b);
        for a in 0..d {
            grad[a] = grad[a] / wsum + self.ridge * b[a];
        }
        if let Some(hess) = hess {
            for a in 0..d {
                for c in 0..d {
                    hess[(a, c)] = h[(a, c)] / wsum + if a == c { self.ridge } else { 0.0 };
                }
            }
        }
        (f / wsum + r, abs / wsum + r)
    }

    fn value(&self, b: &[f64]) -> f64 {
        let mut g = vec![0.0; self.dim()];
        self.parts(b, &mut g, None).0 + self.perturb * hash_unit(b)
    }
}

impl NewtonObjective for Logistic {
    type Error = NewtonFailure;
    fn dim(&self) -> usize {
        Logistic::dim(self)
    }
    fn eval(&mut self, b: &[f64], need: Need, out: &mut EvalOut<'_>) -> Result<(), NewtonFailure> {
        self.evals += 1;
        let mut h = Mat::zeros(self.dim(), self.dim());
        let want = need == Need::Hessian;
        if want {
            self.hessian_evals += 1;
        }
        let (f, abs) = self.parts(b, out.grad, want.then_some(&mut h));
        if want {
            out.hess.copy_from(&h);
        }
        out.value = f + self.perturb * hash_unit(b);
        out.noise = if self.report_noise {
            sum_noise(abs, self.x.len()) + self.perturb
        } else {
            0.0
        };
        Ok(())
    }
}

/// A deterministic pseudo-random number in [−1, 1) from the bits of `x` (SplitMix64).
fn hash_unit(x: &[f64]) -> f64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for v in x {
        h ^= v.to_bits();
        h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// f(x) = log Σₖ exp(aₖᵀx + bₖ) + ½ xᵀQx + cᵀx with Q ≻ 0.
struct LseQuad {
    a: Vec<Vec<f64>>,
    b: Vec<f64>,
    q: Mat<f64>,
    c: Vec<f64>,
}

impl LseQuad {
    fn random(d: usize, k: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut u = |s: f64| s * rng.random_range(-1.0..1.0);
        let a = (0..k).map(|_| (0..d).map(|_| u(2.0)).collect()).collect();
        let b = (0..k).map(|_| u(1.0)).collect();
        let m = Mat::from_fn(d + 1, d, |_, _| u(1.0));
        let mut q = m.transpose() * &m;
        for i in 0..d {
            q[(i, i)] += 0.1;
        }
        let c = (0..d).map(|_| u(3.0)).collect();
        LseQuad { a, b, q, c }
    }

    fn dim(&self) -> usize {
        self.c.len()
    }

    fn eval_into(&self, x: &[f64], grad: &mut [f64], hess: Option<&mut Mat<f64>>) -> (f64, f64) {
        let d = self.dim();
        let z: Vec<f64> = self
            .a
            .iter()
            .zip(&self.b)
            .map(|(a, b)| dot(a, x) + b)
            .collect();
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let lse = m + s.ln();
        let p: Vec<f64> = e.iter().map(|v| v / s).collect();
        let qx: Vec<f64> = (0..d)
            .map(|i| (0..d).map(|j| self.q[(i, j)] * x[j]).sum())
            .collect();
        let quad = 0.5 * dot(x, &qx);
        let lin = dot(&self.c, x);
        let mean: Vec<f64> = (0..d)
            .map(|i| self.a.iter().zip(&p).map(|(a, pk)| pk * a[i]).sum())
            .collect();
        for i in 0..d {
            grad[i] = mean[i] + qx[i] + self.c[i];
        }
        if let Some(h) = hess {
            for i in 0..d {
                for j in 0..d {
                    let second: f64 = self.a.iter().zip(&p).map(|(a, pk)| pk * a[i] * a[j]).sum();
                    h[(i, j)] = second - mean[i] * mean[j] + self.q[(i, j)];
                }
            }
        }
        let f = lse + quad + lin;
        (f, lse.abs() + quad.abs() + lin.abs())
    }

    /// An upper bound on the largest Hessian eigenvalue: ‖Q‖_F + maxₖ‖aₖ‖².
    fn lipschitz(&self) -> f64 {
        let d = self.dim();
        let qf = (0..d)
            .flat_map(|i| (0..d).map(move |j| (i, j)))
            .map(|(i, j)| self.q[(i, j)].powi(2))
            .sum::<f64>()
            .sqrt();
        qf + self.a.iter().map(|a| dot(a, a)).fold(0.0, f64::max)
    }
}

impl NewtonObjective for LseQuad {
    type Error = NewtonFailure;
    fn dim(&self) -> usize {
        LseQuad::dim(self)
    }
    fn eval(&mut self, x: &[f64], need: Need, out: &mut EvalOut<'_>) -> Result<(), NewtonFailure> {
        let d = self.dim();
        let mut h = Mat::zeros(d, d);
        let want = need == Need::Hessian;
        let (f, abs) = self.eval_into(x, out.grad, want.then_some(&mut h));
        if want {
            out.hess.copy_from(&h);
        }
        out.value = f;
        out.noise = sum_noise(abs, self.a.len() + 2);
        Ok(())
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(u, v)| u * v).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0, |m, (u, v)| f64::max(m, (u - v).abs()))
}

/// Plain gradient descent with step 1/L to ‖∇f‖ ≤ 1e-13 (the independent generic solver).
fn gradient_descent(grad: impl Fn(&[f64], &mut [f64]), x0: &[f64], lipschitz: f64) -> Vec<f64> {
    let mut x = x0.to_vec();
    let mut g = vec![0.0; x.len()];
    for _ in 0..2_000_000 {
        grad(&x, &mut g);
        if norm(&g) <= 1e-13 {
            return x;
        }
        for (xi, gi) in x.iter_mut().zip(&g) {
            *xi -= gi / lipschitz;
        }
    }
    panic!(
        "gradient descent did not reach 1e-13 (‖g‖ = {:e})",
        norm(&g)
    );
}

fn settings(reuse_below: f64) -> NewtonSettings {
    NewtonSettings {
        tol: 1e-12,
        ..NewtonSettings::default()
    }
    .with_reuse_below(reuse_below)
}

// ---------------------------------------------------------------------------------------
// (a) agreement with independent solvers
// ---------------------------------------------------------------------------------------

#[test]
fn logistic_regression_matches_gradient_descent() {
    for seed in 0..4 {
        let d = 3 + seed as usize % 3;
        let base = Logistic::random(150, d, 1.5, 100 + seed);
        // L ≤ (1/4) λmax(XᵀWX / W) + ρ ≤ (1/4) maxᵢ‖xᵢ‖² + ρ.
        let l = 0.25 * base.x.iter().map(|x| dot(x, x)).fold(0.0, f64::max) + base.ridge;
        let gd = gradient_descent(
            |b, g| {
                base.parts(b, g, None);
            },
            &vec![0.0; d],
            l,
        );
        for reuse in [0.0, 0.01, 0.5] {
            let mut obj = Logistic::random(150, d, 1.5, 100 + seed);
            let mut x = vec![0.0; d];
            let rep = minimize(&mut obj, &mut x, &settings(reuse), None).unwrap();
            assert!(rep.converged, "seed {seed} reuse {reuse}: {rep:?}");
            assert_eq!(rep.end, NewtonEnd::Converged);
            assert!(rep.residual <= 1e-12);
            assert!(
                max_diff(&x, &gd) < 1e-9,
                "seed {seed} reuse {reuse}: {x:?} vs {gd:?}"
            );
            // The report's counts are the objective's own.
            assert_eq!(rep.evaluations, obj.evals);
            assert_eq!(rep.hessians, obj.hessian_evals);
        }
    }
}

#[test]
fn log_sum_exp_plus_quadratic_matches_gradient_descent() {
    for seed in 0..4 {
        let mut obj = LseQuad::random(4, 6, 200 + seed);
        let gd = gradient_descent(
            |x, g| {
                obj.eval_into(x, g, None);
            },
            &[0.0; 4],
            obj.lipschitz(),
        );
        for reuse in [0.0, 0.01, 0.5] {
            let mut x = vec![2.0, -1.0, 0.5, 3.0];
            let rep = minimize(&mut obj, &mut x, &settings(reuse), None).unwrap();
            assert!(rep.converged, "seed {seed} reuse {reuse}: {rep:?}");
            assert!(max_diff(&x, &gd) < 1e-9, "{x:?} vs {gd:?}");
        }
    }
}

#[test]
fn weighted_least_squares_matches_the_qr_closed_form() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (m, d) = (40, 5);
    let a = Mat::from_fn(m, d, |_, _| rng.random_range(-1.0..1.0));
    let b: Vec<f64> = (0..m).map(|_| rng.random_range(-2.0..2.0)).collect();
    let w: Vec<f64> = (0..m).map(|_| rng.random_range(0.5..2.0)).collect();
    // Closed form: the least-squares solution of √W A x = √W b by QR (faer).
    let sa = Mat::from_fn(m, d, |i, j| w[i].sqrt() * a[(i, j)]);
    let sb = Mat::from_fn(m, 1, |i, _| w[i].sqrt() * b[i]);
    let qr = sa.qr().solve_lstsq(&sb);
    let closed: Vec<f64> = (0..d).map(|j| qr[(j, 0)]).collect();
    // f(x) = (1/2m) Σ wᵢ (aᵢᵀx − bᵢ)².
    let mut obj = FnObjective::new(d, |x: &[f64], need: Need, out: &mut EvalOut<'_>| {
        let (mut f, mut abs) = (0.0, 0.0);
        out.grad.iter_mut().for_each(|g| *g = 0.0);
        for i in 0..m {
            let r: f64 = (0..d).map(|j| a[(i, j)] * x[j]).sum::<f64>() - b[i];
            f += 0.5 * w[i] * r * r / m as f64;
            abs += 0.5 * w[i] * r * r / m as f64;
            for j in 0..d {
                out.grad[j] += w[i] * r * a[(i, j)] / m as f64;
            }
        }
        if need == Need::Hessian {
            for j in 0..d {
                for k in 0..d {
                    out.hess[(j, k)] =
                        (0..m).map(|i| w[i] * a[(i, j)] * a[(i, k)]).sum::<f64>() / m as f64;
                }
            }
        }
        out.value = f;
        out.noise = sum_noise(abs, m);
        Ok::<(), NewtonFailure>(())
    });
    let mut x = vec![1.0; d];
    let rep = minimize(&mut obj, &mut x, &settings(0.0), None).unwrap();
    assert!(rep.converged, "{rep:?}");
    // A quadratic: one Newton step (perhaps a second to clean up round-off).
    assert!(rep.iterations <= 2, "{rep:?}");
    assert!(max_diff(&x, &closed) < 1e-9, "{x:?} vs {closed:?}");
}

// ---------------------------------------------------------------------------------------
// (b) the round-off regression
// ---------------------------------------------------------------------------------------

/// The old rule of the five loops, as a reference: Armijo on the value, plus the full
/// step without test only when the decrement is at most a fixed 1e-14; gives up when no
/// step size is accepted. Returns (converged, final ‖∇f‖).
fn old_rule_newton(obj: &Logistic, x0: &[f64], tol: f64) -> (bool, f64) {
    let d = x0.len();
    let mut x = x0.to_vec();
    let mut g = vec![0.0; d];
    let mut h = Mat::zeros(d, d);
    for _ in 0..50 {
        obj.parts(&x, &mut g, Some(&mut h));
        let f = obj.value(&x);
        if norm(&g) <= tol {
            return (true, norm(&g));
        }
        let llt = h.llt(faer::Side::Lower).unwrap();
        let sol = llt.solve(Mat::from_fn(d, 1, |i, _| g[i]));
        let dir: Vec<f64> = (0..d).map(|i| -sol[(i, 0)]).collect();
        let slope = -dot(&g, &dir);
        let mut t = 1.0;
        let mut accepted = None;
        while t > 1e-12 {
            let trial: Vec<f64> = x.iter().zip(&dir).map(|(a, p)| a + t * p).collect();
            let ft = obj.value(&trial);
            if ft <= f - 1e-4 * t * slope || (t == 1.0 && slope <= 1e-14) {
                accepted = Some(trial);
                break;
            }
            t *= 0.5;
        }
        match accepted {
            Some(trial) => x = trial,
            None => return (false, norm(&g)),
        }
    }
    (false, norm(&g))
}

/// Newton decrement gᵀH⁻¹g at `b`, by faer's own Cholesky.
fn decrement(obj: &Logistic, b: &[f64]) -> f64 {
    let d = b.len();
    let mut g = vec![0.0; d];
    let mut h = Mat::zeros(d, d);
    obj.parts(b, &mut g, Some(&mut h));
    let sol = h
        .llt(faer::Side::Lower)
        .unwrap()
        .solve(Mat::from_fn(d, 1, |i, _| g[i]));
    (0..d).map(|i| g[i] * sol[(i, 0)]).sum()
}

#[test]
fn value_round_off_does_not_stall_the_solve() {
    let d = 4;
    let mut obj = Logistic::random(300, d, 1.0, 42);
    // The exact minimiser, without perturbation.
    let mut xstar = vec![0.0; d];
    let rep = minimize(&mut obj, &mut xstar, &settings(0.0), None).unwrap();
    assert!(rep.converged);
    obj.perturb = 1e-13;
    let tol = 1e-10;
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    let (mut old_failures, mut starts) = (0, 0);
    let mut demonstrated = false;
    for _ in 0..40 {
        // A start whose Newton decrement is 1.6e-14 (above the old threshold 1e-14),
        // with a gradient far above tol.
        let v: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let probe: Vec<f64> = xstar.iter().zip(&v).map(|(a, b)| a + 1e-6 * b).collect();
        let scale = 1e-6 * (1.6e-14 / decrement(&obj, &probe)).sqrt();
        let x0: Vec<f64> = xstar.iter().zip(&v).map(|(a, b)| a + scale * b).collect();
        let lambda2 = decrement(&obj, &x0);
        assert!((lambda2 / 1.6e-14 - 1.0).abs() < 0.01, "{lambda2:e}");
        let mut g = vec![0.0; d];
        obj.parts(&x0, &mut g, None);
        assert!(norm(&g) > 100.0 * tol, "‖g‖ = {:e}", norm(&g));
        starts += 1;

        // The driver, with the value's round-off reported, always converges...
        let mut x = x0.clone();
        obj.report_noise = true;
        let s = NewtonSettings::new(tol, 50).unwrap();
        let rep = minimize(&mut obj, &mut x, &s, None).unwrap();
        assert!(rep.converged && rep.residual <= tol, "{rep:?}");
        assert!(rep.pure_steps >= 1, "{rep:?}");

        // ...while the old rule gives up from some of these starts.
        let (old_ok, old_residual) = old_rule_newton(&obj, &x0, tol);
        if !old_ok {
            old_failures += 1;
            assert!(old_residual > 100.0 * tol);
            // Without the round-off estimate the driver's rules reduce to Armijo, and it
            // stops there too: the estimate is what fixes the stall.
            let mut x = x0.clone();
            obj.report_noise = false;
            let rep0 = minimize(&mut obj, &mut x, &s, None).unwrap();
            // (It ends with no acceptable step, or creeps by round-off-sized Armijo
            // steps to the iteration limit.)
            assert!(!rep0.converged && rep0.residual > 100.0 * tol, "{rep0:?}");
            demonstrated = true;
        }
    }
    assert!(
        demonstrated,
        "the old rule never failed in {starts} starts (the test would show nothing)"
    );
    eprintln!("old rule failed from {old_failures} of {starts} starts; the driver from none");
}

#[test]
fn gradient_rule_accepts_a_step_the_value_cannot_judge() {
    // A start whose decrement is above the round-off (λ²/2 = 1.2 N, so no pure step),
    // where the value's round-off N makes the Newton step look like an increase: f is
    // perturbed by −N at the start and by +0.9 N elsewhere, so the computed change is
    // −1.2 N + 1.9 N > 0 and Armijo rejects every step size. The change is within the
    // round-off 2N and the gradient drops, so the driver accepts the full step there.
    let d = 4;
    let mut base = Logistic::random(300, d, 1.0, 21);
    let mut xstar = vec![0.0; d];
    assert!(
        minimize(&mut base, &mut xstar, &settings(0.0), None)
            .unwrap()
            .converged
    );
    let n_noise = 1e-13;
    let v = [0.3, -0.8, 0.5, 0.1];
    let probe: Vec<f64> = xstar.iter().zip(&v).map(|(a, b)| a + 1e-6 * b).collect();
    let scale = 1e-6 * (2.4 * n_noise / decrement(&base, &probe)).sqrt();
    let x0: Vec<f64> = xstar.iter().zip(&v).map(|(a, b)| a + scale * b).collect();
    assert!((decrement(&base, &x0) / (2.4 * n_noise) - 1.0).abs() < 0.01);
    let perturb = |x: &[f64]| {
        if x == &x0[..] {
            -n_noise
        } else {
            0.9 * n_noise
        }
    };
    let mut obj = FnObjective::new(d, |x: &[f64], need: Need, out: &mut EvalOut<'_>| {
        let mut h = Mat::zeros(d, d);
        let want = need == Need::Hessian;
        let (f, _) = base.parts(x, out.grad, want.then_some(&mut h));
        if want {
            out.hess.copy_from(&h);
        }
        out.value = f + perturb(x);
        out.noise = n_noise;
        Ok::<(), NewtonFailure>(())
    });
    let mut x = x0.clone();
    let tol = 1e-10;
    let rep = minimize(
        &mut obj,
        &mut x,
        &NewtonSettings::new(tol, 50).unwrap(),
        None,
    )
    .unwrap();
    assert!(rep.converged, "{rep:?}");
    assert_eq!((rep.gradient_steps, rep.pure_steps), (1, 0), "{rep:?}");
    assert!(max_diff(&x, &xstar) < 1e-9);
    // Armijo alone (the old rule: the decrement 2.4e-13 is above its 1e-14) stalls here.
    let mut x = x0.clone();
    let mut g = vec![0.0; d];
    base.parts(&x0, &mut g, None);
    let g0 = norm(&g);
    assert!(g0 > 100.0 * tol);
    let mut t = 1.0;
    let mut armijo_accepts = false;
    let dir = {
        let mut h = Mat::zeros(d, d);
        base.parts(&x0, &mut g, Some(&mut h));
        let sol = h
            .llt(faer::Side::Lower)
            .unwrap()
            .solve(Mat::from_fn(d, 1, |i, _| g[i]));
        (0..d).map(|i| -sol[(i, 0)]).collect::<Vec<_>>()
    };
    let f0 = base.parts(&x0, &mut g, None).0 + perturb(&x0);
    while t > 1e-12 {
        for j in 0..d {
            x[j] = x0[j] + t * dir[j];
        }
        // (Steps that round to x0 itself are no steps.)
        if x != x0 {
            let ft = base.parts(&x, &mut g, None).0 + perturb(&x);
            armijo_accepts |= ft <= f0 - 1e-4 * t * 2.4 * n_noise;
        }
        t *= 0.5;
    }
    assert!(!armijo_accepts);
}

// ---------------------------------------------------------------------------------------
// (c) Hessian reuse
// ---------------------------------------------------------------------------------------

#[test]
fn hessian_reuse_reaches_the_same_minimiser_with_fewer_hessians() {
    for seed in 0..3 {
        let d = 6;
        let mut plain_obj = Logistic::random(400, d, 3.0, 300 + seed);
        let start = vec![2.0; d];
        let mut plain = start.clone();
        let s = NewtonSettings::new(1e-12, 100).unwrap();
        let rp = minimize(&mut plain_obj, &mut plain, &s, None).unwrap();
        assert!(rp.converged && rp.iterations >= 5, "{rp:?}");
        for reuse in [0.01, 0.1, 0.5] {
            let mut obj = Logistic::random(400, d, 3.0, 300 + seed);
            let mut x = start.clone();
            let rr = minimize(&mut obj, &mut x, &s.with_reuse_below(reuse), None).unwrap();
            assert!(rr.converged, "reuse {reuse}: {rr:?}");
            assert!(max_diff(&x, &plain) < 1e-10, "{x:?} vs {plain:?}");
            assert!(
                rr.hessians < rp.hessians,
                "seed {seed} reuse {reuse}: {} vs {} Hessians ({rr:?} / {rp:?})",
                rr.hessians,
                rp.hessians
            );
            assert_eq!(rr.hessians, obj.hessian_evals);
            eprintln!(
                "seed {seed}: plain {} steps / {} Hessians / {} evaluations; reuse {reuse}: \
                 {} / {} / {}",
                rp.iterations,
                rp.hessians,
                rp.evaluations,
                rr.iterations,
                rr.hessians,
                rr.evaluations
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// (d) initial evaluation
// ---------------------------------------------------------------------------------------

#[test]
fn initial_evaluation_is_used_only_at_the_start_point() {
    let d = 4;
    let start = vec![0.3, -0.2, 0.1, 0.0];
    let s = settings(0.01);
    let run = |initial: Option<InitialEval<'_>>| -> (NewtonReport, Vec<f64>) {
        let mut obj = Logistic::random(200, d, 2.0, 9);
        let mut x = start.clone();
        let rep = minimize(&mut obj, &mut x, &s, initial).unwrap();
        assert_eq!(rep.evaluations, obj.evals);
        (rep, x)
    };
    let (base, xb) = run(None);
    // The caller's own evaluation at the start.
    let mut obj = Logistic::random(200, d, 2.0, 9);
    let mut grad = vec![0.0; d];
    let mut hess = Mat::zeros(d, d);
    let (f0, abs) = obj.parts(&start, &mut grad, Some(&mut hess));
    let noise = sum_noise(abs, 200);
    fn at<'a>(
        x: &'a [f64],
        value: f64,
        noise: f64,
        grad: &'a [f64],
        hess: &'a Mat<f64>,
    ) -> Option<InitialEval<'a>> {
        Some(InitialEval {
            x,
            value,
            noise,
            grad,
            hess: hess.as_ref(),
        })
    }
    let (used, xu) = run(at(&start, f0, noise, &grad, &hess));
    assert_eq!(used.evaluations + 1, base.evaluations);
    assert_eq!(used.hessians, base.hessians);
    assert_eq!(xu, xb);
    // One ulp away from the start: ignored, the start is evaluated as usual.
    let mut near = start.clone();
    near[1] = f64::from_bits(near[1].to_bits() + 1);
    let (ignored, xi) = run(at(&near, f0, noise, &grad, &hess));
    assert_eq!(ignored.evaluations, base.evaluations);
    assert_eq!(xi, xb);
    // A Hessian of the wrong size: ignored too.
    let small = Mat::zeros(d - 1, d - 1);
    let (ignored, _) = run(at(&start, f0, noise, &grad, &small));
    assert_eq!(ignored.evaluations, base.evaluations);
    // And it is really what the driver starts from: a wrong initial value at the start
    // is believed (the report's first value is then this one if no step is taken).
    obj.evals = 0;
    let mut x = start.clone();
    let rep = minimize(
        &mut obj,
        &mut x,
        &NewtonSettings::new(1e3, 5).unwrap(),
        Some(InitialEval {
            x: &start,
            value: 123.0,
            noise: 0.0,
            grad: &grad,
            hess: hess.as_ref(),
        }),
    )
    .unwrap();
    assert_eq!((rep.evaluations, rep.value, obj.evals), (0, 123.0, 0));
}

// ---------------------------------------------------------------------------------------
// (e) failures and the domain
// ---------------------------------------------------------------------------------------

/// A caller's own error type: the driver's failures convert into it.
#[derive(Debug, PartialEq)]
enum CallerError {
    Newton(NewtonFailure),
    Own(&'static str),
}

impl From<NewtonFailure> for CallerError {
    fn from(e: NewtonFailure) -> Self {
        CallerError::Newton(e)
    }
}

#[test]
fn singular_hessian_is_a_typed_failure_with_the_pivot() {
    // f = x₀² + x₁ + x₂²: Hessian diag(2, 0, 2), singular at pivot 1.
    let mut obj = FnObjective::new(3, |x: &[f64], need: Need, out: &mut EvalOut<'_>| {
        out.value = x[0] * x[0] + x[1] + x[2] * x[2];
        out.grad.copy_from_slice(&[2.0 * x[0], 1.0, 2.0 * x[2]]);
        if need == Need::Hessian {
            out.hess.fill(0.0);
            out.hess[(0, 0)] = 2.0;
            out.hess[(2, 2)] = 2.0;
        }
        Ok::<(), CallerError>(())
    });
    let mut x = [1.0, 1.0, 1.0];
    assert_eq!(
        minimize(&mut obj, &mut x, &NewtonSettings::default(), None).unwrap_err(),
        CallerError::Newton(NewtonFailure::NotPositiveDefinite { pivot: 1 })
    );
    // The objective's own errors pass through unchanged.
    let mut failing = FnObjective::new(1, |_: &[f64], _: Need, _: &mut EvalOut<'_>| {
        Err::<(), CallerError>(CallerError::Own("data"))
    });
    assert_eq!(
        minimize(&mut failing, &mut [0.0], &NewtonSettings::default(), None).unwrap_err(),
        CallerError::Own("data")
    );
}

#[test]
fn non_finite_gradient_and_value_are_typed_failures() {
    // f = (x − 3)², but the gradient is NaN beyond x = 1 (the first trial is x = 3).
    let mut obj = FnObjective::new(1, |x: &[f64], need: Need, out: &mut EvalOut<'_>| {
        out.value = (x[0] - 3.0).powi(2);
        out.grad[0] = if x[0] > 1.0 {
            f64::NAN
        } else {
            2.0 * (x[0] - 3.0)
        };
        if need == Need::Hessian {
            out.hess[(0, 0)] = 2.0;
        }
        Ok::<(), NewtonFailure>(())
    });
    assert_eq!(
        minimize(&mut obj, &mut [0.0], &NewtonSettings::default(), None).unwrap_err(),
        NewtonFailure::NonFinite { what: "gradient" }
    );
    // A NaN value (not +∞, the domain signal) is a failure too; so is a value never set.
    for bad in [f64::NAN, f64::NEG_INFINITY] {
        let mut obj = FnObjective::new(1, move |x: &[f64], need: Need, out: &mut EvalOut<'_>| {
            out.value = if x[0] > 1.0 {
                bad
            } else {
                (x[0] - 3.0).powi(2)
            };
            out.grad[0] = 2.0 * (x[0] - 3.0);
            if need == Need::Hessian {
                out.hess[(0, 0)] = 2.0;
            }
            Ok::<(), NewtonFailure>(())
        });
        assert_eq!(
            minimize(&mut obj, &mut [0.0], &NewtonSettings::default(), None).unwrap_err(),
            NewtonFailure::NonFinite { what: "value" }
        );
    }
    let mut unset = FnObjective::new(1, |_: &[f64], _: Need, out: &mut EvalOut<'_>| {
        out.grad[0] = 1.0;
        Ok::<(), NewtonFailure>(())
    });
    assert_eq!(
        minimize(&mut unset, &mut [0.0], &NewtonSettings::default(), None).unwrap_err(),
        NewtonFailure::NonFinite { what: "value" }
    );
    // +∞ at the start: outside the domain, nothing to start from.
    let mut outside = FnObjective::new(1, |_: &[f64], _: Need, out: &mut EvalOut<'_>| {
        out.value = f64::INFINITY;
        Ok::<(), NewtonFailure>(())
    });
    assert_eq!(
        minimize(&mut outside, &mut [0.0], &NewtonSettings::default(), None).unwrap_err(),
        NewtonFailure::NonFinite { what: "value" }
    );
    // Bad start points.
    assert!(matches!(
        minimize(
            &mut outside,
            &mut [0.0, 1.0],
            &NewtonSettings::default(),
            None
        ),
        Err(NewtonFailure::DimensionMismatch {
            expected: 1,
            found: 2,
            ..
        })
    ));
    assert_eq!(
        minimize(
            &mut outside,
            &mut [f64::NAN],
            &NewtonSettings::default(),
            None
        )
        .unwrap_err(),
        NewtonFailure::NonFinite {
            what: "starting point"
        }
    );
}

#[test]
fn infinite_value_outside_the_domain_halves_the_step() {
    // f(x) = x − log x on x > 0 (minimiser 1). From x = 3 the Newton step goes to −3,
    // then the halved one to 0: both outside; the quarter step lands at 1.5.
    let mut trials = Vec::new();
    let mut obj = FnObjective::new(1, |x: &[f64], need: Need, out: &mut EvalOut<'_>| {
        trials.push(x[0]);
        if x[0] <= 0.0 {
            out.value = f64::INFINITY;
            return Ok(());
        }
        out.value = x[0] - x[0].ln();
        out.noise = sum_noise(x[0] + x[0].ln().abs(), 2);
        out.grad[0] = 1.0 - 1.0 / x[0];
        if need == Need::Hessian {
            out.hess[(0, 0)] = 1.0 / (x[0] * x[0]);
        }
        Ok::<(), NewtonFailure>(())
    });
    let mut x = [3.0];
    let rep = minimize(&mut obj, &mut x, &NewtonSettings::default(), None).unwrap();
    assert!(rep.converged && (x[0] - 1.0).abs() < 1e-10, "{rep:?}");
    assert_eq!(&trials[..4], &[3.0, -3.0, 0.0, 1.5]);
}

#[test]
fn not_converging_is_reported_not_an_error() {
    // Iteration limit.
    let mut obj = LseQuad::random(4, 6, 11);
    let mut x = vec![5.0; 4];
    let rep = minimize(
        &mut obj,
        &mut x,
        &NewtonSettings::new(1e-12, 1).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(
        (rep.end, rep.converged, rep.iterations),
        (NewtonEnd::IterationLimit, false, 1)
    );
    assert!(rep.residual > 1e-12);
    // No acceptable step: a gradient of the wrong sign makes every direction ascend.
    let mut wrong = FnObjective::new(1, |x: &[f64], need: Need, out: &mut EvalOut<'_>| {
        out.value = x[0] * x[0];
        out.grad[0] = -2.0 * x[0];
        if need == Need::Hessian {
            out.hess[(0, 0)] = 2.0;
        }
        Ok::<(), NewtonFailure>(())
    });
    let mut x = [1.0];
    let rep = minimize(&mut wrong, &mut x, &NewtonSettings::default(), None).unwrap();
    assert_eq!(
        (rep.end, rep.converged),
        (NewtonEnd::NoAcceptableStep, false)
    );
    assert_eq!((x[0], rep.residual, rep.value), (1.0, 2.0, 1.0));
}

// ---------------------------------------------------------------------------------------
// (f) settings validation
// ---------------------------------------------------------------------------------------

#[test]
fn settings_validation_names_each_field() {
    let ok = NewtonSettings::default();
    assert!(ok.check().is_ok());
    let cases: Vec<(NewtonSettings, SettingsError)> = vec![
        (NewtonSettings { tol: 0.0, ..ok }, SettingsError::Tol(0.0)),
        (NewtonSettings { tol: -1.0, ..ok }, SettingsError::Tol(-1.0)),
        (
            NewtonSettings {
                tol: f64::INFINITY,
                ..ok
            },
            SettingsError::Tol(f64::INFINITY),
        ),
        (
            NewtonSettings { max_iter: 0, ..ok },
            SettingsError::MaxIter(0),
        ),
        (ok.with_reuse_below(-0.1), SettingsError::ReuseBelow(-0.1)),
        (ok.with_reuse_below(1.0), SettingsError::ReuseBelow(1.0)),
        (ok.with_armijo(0.0), SettingsError::Armijo(0.0)),
        (ok.with_armijo(0.5), SettingsError::Armijo(0.5)),
        (ok.with_min_step(0.0), SettingsError::MinStep(0.0)),
        (ok.with_min_step(1.5), SettingsError::MinStep(1.5)),
    ];
    for (s, want) in cases {
        assert_eq!(s.check().unwrap_err(), want, "{s:?}");
        // minimize refuses them before evaluating anything.
        let mut calls = 0;
        let mut obj = FnObjective::new(1, |_: &[f64], _: Need, _: &mut EvalOut<'_>| {
            calls += 1;
            Ok::<(), NewtonFailure>(())
        });
        assert_eq!(
            minimize(&mut obj, &mut [0.0], &s, None).unwrap_err(),
            NewtonFailure::Settings(want)
        );
        assert_eq!(calls, 0);
    }
    // NaN in each float field (NaN ≠ NaN, so match on the variant).
    assert!(matches!(
        NewtonSettings {
            tol: f64::NAN,
            ..ok
        }
        .check(),
        Err(SettingsError::Tol(_))
    ));
    assert!(matches!(
        ok.with_reuse_below(f64::NAN).check(),
        Err(SettingsError::ReuseBelow(_))
    ));
    assert!(matches!(
        ok.with_armijo(f64::NAN).check(),
        Err(SettingsError::Armijo(_))
    ));
    assert!(matches!(
        ok.with_min_step(f64::NAN).check(),
        Err(SettingsError::MinStep(_))
    ));
    let names: Vec<&str> = [
        SettingsError::Tol(0.0),
        SettingsError::MaxIter(0),
        SettingsError::ReuseBelow(0.0),
        SettingsError::Armijo(0.0),
        SettingsError::MinStep(0.0),
    ]
    .iter()
    .map(|e| e.field())
    .collect();
    assert_eq!(
        names,
        ["tol", "max_iter", "reuse_below", "armijo", "min_step"]
    );
    assert_eq!(
        NewtonSettings::new(0.0, 5).unwrap_err(),
        SettingsError::Tol(0.0)
    );
    assert_eq!(
        NewtonSettings::new(1e-8, 0).unwrap_err(),
        SettingsError::MaxIter(0)
    );
}

// ---------------------------------------------------------------------------------------
// The family inverse on the driver
// ---------------------------------------------------------------------------------------

#[test]
fn family_inverse_by_the_driver_matches_the_closed_forms() {
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let mvn = MultivariateGaussian::new(3).unwrap();
    for _ in 0..50 {
        let mut u = |lo: f64, hi: f64| rng.random_range(lo..hi);
        let (m0, m1, m2) = (u(-20.0, 20.0), u(-20.0, 20.0), u(-20.0, 20.0));
        let cov = {
            let a = Mat::from_fn(3, 3, |_, _| u(-1.0, 1.0));
            let mut c = a.transpose() * &a;
            for i in 0..3 {
                c[(i, i)] += 0.3;
            }
            c
        };
        let cases: Vec<(Box<dyn ExponentialFamily>, Vec<f64>)> = vec![
            (Box::new(Bernoulli), vec![u(-4.0, 4.0)]),
            (
                Box::new(Categorical::new(4).unwrap()),
                vec![u(-3.0, 3.0), u(-3.0, 3.0), u(-3.0, 3.0)],
            ),
            (Box::new(Poisson), vec![u(-3.0, 5.0)]),
            (Box::new(Exponential), vec![-u(0.05, 5.0)]),
            (
                Box::new(GaussianKnownVariance::new(u(0.2, 3.0)).unwrap()),
                vec![u(-20.0, 20.0)],
            ),
            (
                Box::new(Gaussian),
                Gaussian::natural_from_mean_var(u(-30.0, 30.0), u(0.1, 9.0))
                    .unwrap()
                    .to_vec(),
            ),
            (
                Box::new(mvn.clone()),
                mvn.natural_from_mean_cov(&[m0, m1, m2], &cov).unwrap(),
            ),
        ];
        for (fam, theta) in cases {
            let p = fam.dim();
            let mut mu = vec![0.0; p];
            fam.mean(&theta, &mut mu).unwrap();
            let mut newton = vec![0.0; p];
            newton_natural_from_mean(&*fam, &mu, &mut newton)
                .unwrap_or_else(|e| panic!("{} at {theta:?}: {e}", fam.name()));
            let mut back = vec![0.0; p];
            fam.mean(&newton, &mut back).unwrap();
            let scale = 1.0 + mu.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let resid = norm(&back.iter().zip(&mu).map(|(a, b)| a - b).collect::<Vec<_>>());
            assert!(resid <= 1e-12 * scale, "{}: residual {resid:e}", fam.name());
            for j in 0..p {
                assert!(
                    (newton[j] - theta[j]).abs() < 1e-6 * (1.0 + theta[j].abs()),
                    "{} newton {newton:?} vs {theta:?}",
                    fam.name()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reuse mode follows the softmax gate's rules
// ---------------------------------------------------------------------------------------

/// Value into the return, gradient into the slice, Hessian if asked.
type Parts<'a> = dyn Fn(&[f64], &mut [f64], Option<&mut Mat<f64>>) -> f64 + 'a;

/// A transliteration of em-as-md's `newton_gate` loop (at the time the driver was
/// written) for minimisation, on faer's own `Llt` and inverse, with Armijo as the only
/// acceptance rule. Returns the final point, accepted steps, Hessians and the sequence
/// of evaluations (`true` = with Hessian).
fn gate_reference(
    parts: &Parts<'_>,
    x0: &[f64],
    tol: f64,
    reuse_below: f64,
    min_step: f64,
) -> (Vec<f64>, usize, usize, Vec<bool>, Branches) {
    use faer::linalg::solvers::DenseSolveCore;
    let d = x0.len();
    let mut calls = Vec::new();
    let mut eval = |x: &[f64], hess: bool| {
        calls.push(hess);
        let mut g = vec![0.0; d];
        let mut h = Mat::zeros(d, d);
        let f = parts(x, &mut g, hess.then_some(&mut h));
        (f, g, h)
    };
    let (mut f, mut g, h0) = eval(x0, true);
    let mut x = x0.to_vec();
    let mut hessians = 1;
    let mut iterations = 0;
    let mut factor = h0.llt(faer::Side::Lower).unwrap();
    let mut fresh = true;
    let mut hinv: Option<Mat<f64>> = None;
    let mut ratio = f64::NAN;
    let mut branches = Branches::default();
    loop {
        let gnorm = norm(&g);
        if gnorm <= tol || iterations >= 50 {
            break;
        }
        let dir: Vec<f64> = match hinv.as_ref() {
            Some(h) => (0..d)
                .map(|a| -(0..d).map(|b| h[(a, b)] * g[b]).sum::<f64>())
                .collect(),
            None => {
                let s = factor.solve(Mat::from_fn(d, 1, |i, _| g[i]));
                (0..d).map(|i| -s[(i, 0)]).collect()
            }
        };
        let slope = -dot(&g, &dir);
        let reuse = reuse_below > 0.0 && (fresh || ratio <= reuse_below);
        let predicted = if fresh {
            gnorm * ratio * ratio
        } else {
            gnorm * ratio
        };
        let converging = predicted.is_finite() && predicted <= 0.1 * tol;
        if converging && !reuse {
            branches.converging_skips += 1;
        }
        let mut t = 1.0;
        let mut accepted = false;
        while t >= min_step {
            let trial: Vec<f64> = x.iter().zip(&dir).map(|(a, p)| a + t * p).collect();
            let full = t == 1.0;
            let want_h = full && !reuse && !converging;
            let (ft, gt, ht) = eval(&trial, want_h);
            if want_h {
                hessians += 1;
            }
            if ft <= f - 1e-4 * t * slope {
                accepted = true;
                if !full {
                    branches.backtracked += 1;
                }
                if want_h {
                    factor = ht.llt(faer::Side::Lower).unwrap();
                    hinv = None;
                } else {
                    let h = hinv.get_or_insert_with(|| factor.inverse());
                    let s: Vec<f64> = trial.iter().zip(&x).map(|(a, b)| a - b).collect();
                    let y: Vec<f64> = gt.iter().zip(&g).map(|(a, b)| a - b).collect();
                    let ys = dot(&y, &s);
                    if ys > 1e-12 * norm(&y) * norm(&s) {
                        let rho = 1.0 / ys;
                        let u: Vec<f64> = (0..d)
                            .map(|a| (0..d).map(|b| h[(a, b)] * y[b]).sum())
                            .collect();
                        let c = rho * rho * dot(&y, &u) + rho;
                        for b in 0..d {
                            for a in 0..d {
                                h[(a, b)] += c * s[a] * s[b] - rho * (s[a] * u[b] + u[a] * s[b]);
                            }
                        }
                    }
                }
                ratio = norm(&gt) / gnorm;
                x = trial;
                g = gt;
                f = ft;
                fresh = want_h;
                break;
            }
            t *= 0.5;
        }
        if !accepted {
            if fresh {
                break;
            }
            branches.stale_refreshes += 1;
            let (_, _, hm) = eval(&x, true);
            hessians += 1;
            factor = hm.llt(faer::Side::Lower).unwrap();
            hinv = None;
            fresh = true;
            ratio = f64::INFINITY;
            continue;
        }
        iterations += 1;
    }
    (x, iterations, hessians, calls, branches)
}

/// How often the reference loop took its rarer branches.
#[derive(Debug, Default, Clone, Copy)]
struct Branches {
    /// Full trials without a speculative Hessian because the step was predicted to converge
    /// while reuse was off.
    converging_skips: usize,
    /// Stale directions that failed the line search (fresh Hessian formed at x).
    stale_refreshes: usize,
    /// Backtracked steps.
    backtracked: usize,
}

/// Records the `Need` of every evaluation.
struct Recorder<'a, O> {
    inner: &'a mut O,
    calls: Vec<bool>,
}

impl<O: NewtonObjective<Error = NewtonFailure>> NewtonObjective for Recorder<'_, O> {
    type Error = NewtonFailure;
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn eval(&mut self, x: &[f64], need: Need, out: &mut EvalOut<'_>) -> Result<(), NewtonFailure> {
        self.calls.push(need == Need::Hessian);
        self.inner.eval(x, need, out)
    }
}

#[test]
fn reuse_mode_makes_the_gate_loops_hessian_decisions() {
    let mut compared = 0;
    let mut seen = Branches::default();
    // min_step = 0.25 makes stale directions that overshoot fail their line search, so
    // the stale-refresh branch runs too; tolerances 1e-7 and 1e-5 vary where the
    // converging prediction cuts in.
    for seed in 0..6 {
        for reuse in [0.01, 0.1, 0.5] {
            for (tol, min_step) in [(1e-7, 1e-12), (1e-5, 1e-12), (1e-7, 0.25)] {
                let d = 5;
                let mut obj = Logistic::random(300, d, 3.0, 500 + seed);
                // Round-off rules off, so that the acceptance is Armijo's, as in the
                // reference (and tolerances the value still resolves: without them
                // neither loop reaches 1e-10 here, the stall of the round-off test).
                obj.report_noise = false;
                let start = vec![if min_step < 0.1 { 1.5 } else { 0.3 }; d];
                let (xr, iters, hessians, calls, b) = gate_reference(
                    &|x, g, h| obj.parts(x, g, h).0,
                    &start,
                    tol,
                    reuse,
                    min_step,
                );
                seen.converging_skips += b.converging_skips;
                seen.stale_refreshes += b.stale_refreshes;
                seen.backtracked += b.backtracked;
                let mut rec = Recorder {
                    inner: &mut obj,
                    calls: Vec::new(),
                };
                let mut x = start.clone();
                let s = NewtonSettings::new(tol, 50)
                    .unwrap()
                    .with_reuse_below(reuse)
                    .with_min_step(min_step);
                let rep = minimize(&mut rec, &mut x, &s, None).unwrap();
                let case = format!("seed {seed} reuse {reuse} tol {tol} min_step {min_step}");
                assert_eq!(rec.calls, calls, "{case}");
                assert_eq!((rep.iterations, rep.hessians), (iters, hessians), "{case}");
                assert!(max_diff(&x, &xr) < 1e-9, "{case}");
                if min_step < 0.1 {
                    assert!(rep.converged, "{case}: {rep:?}");
                }
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 54);
    eprintln!("gate-rule branches exercised: {seen:?}");
}

/// f(x) = Σⱼ log cosh(xⱼ − cⱼ) + (μ/2)‖x‖²: its curvature grows towards the minimiser,
/// so a Hessian from farther out overshoots (the stale-refresh branch).
struct LogCosh {
    c: Vec<f64>,
    mu: f64,
}

impl LogCosh {
    fn parts(&self, x: &[f64], g: &mut [f64], h: Option<&mut Mat<f64>>) -> f64 {
        let mut f = 0.0;
        let mut curv = vec![0.0; x.len()];
        for j in 0..x.len() {
            let z = x[j] - self.c[j];
            // log cosh z = |z| + log(1 + e^{−2|z|}) − log 2
            f += z.abs() + (-2.0 * z.abs()).exp().ln_1p() - std::f64::consts::LN_2
                + 0.5 * self.mu * x[j] * x[j];
            g[j] = z.tanh() + self.mu * x[j];
            curv[j] = 1.0 - z.tanh().powi(2) + self.mu;
        }
        if let Some(h) = h {
            h.fill(0.0);
            for j in 0..x.len() {
                h[(j, j)] = curv[j];
            }
            // A coupling term (x₀ + x₁)²/2 so that the Hessian is not diagonal.
            for a in 0..2 {
                for b in 0..2 {
                    h[(a, b)] += 0.5;
                }
            }
        }
        let s = x[0] + x[1];
        g[0] += 0.5 * s;
        g[1] += 0.5 * s;
        f + 0.25 * s * s
    }
}

impl NewtonObjective for LogCosh {
    type Error = NewtonFailure;
    fn dim(&self) -> usize {
        self.c.len()
    }
    fn eval(&mut self, x: &[f64], need: Need, out: &mut EvalOut<'_>) -> Result<(), NewtonFailure> {
        let mut h = Mat::zeros(x.len(), x.len());
        let want = need == Need::Hessian;
        out.value = self.parts(x, out.grad, want.then_some(&mut h));
        if want {
            out.hess.copy_from(&h);
        }
        Ok(())
    }
}

#[test]
fn reuse_mode_matches_the_gate_loop_on_its_rare_branches() {
    let mut seen = Branches::default();
    let mut rng = ChaCha8Rng::seed_from_u64(600);
    let mut compared = 0;
    for _ in 0..40 {
        let d = 3;
        let mut obj = LogCosh {
            c: (0..d).map(|_| rng.random_range(-2.0..2.0)).collect(),
            mu: rng.random_range(0.01..0.2),
        };
        let start: Vec<f64> = (0..d).map(|_| rng.random_range(-2.5..2.5)).collect();
        for reuse in [0.01, 0.2, 0.6] {
            for (tol, min_step) in [(1e-6, 1e-12), (1e-3, 1e-12), (1e-6, 0.25), (1e-6, 1.0)] {
                let (xr, iters, hessians, calls, b) =
                    gate_reference(&|x, g, h| obj.parts(x, g, h), &start, tol, reuse, min_step);
                let mut rec = Recorder {
                    inner: &mut obj,
                    calls: Vec::new(),
                };
                let mut x = start.clone();
                let s = NewtonSettings::new(tol, 50)
                    .unwrap()
                    .with_reuse_below(reuse)
                    .with_min_step(min_step);
                let rep = minimize(&mut rec, &mut x, &s, None).unwrap();
                let case = format!("{start:?} reuse {reuse} tol {tol} min_step {min_step}");
                assert_eq!(rec.calls, calls, "{case}");
                assert_eq!((rep.iterations, rep.hessians), (iters, hessians), "{case}");
                assert!(max_diff(&x, &xr) < 1e-9, "{case}");
                seen.converging_skips += b.converging_skips;
                seen.stale_refreshes += b.stale_refreshes;
                seen.backtracked += b.backtracked;
                compared += 1;
            }
        }
    }
    eprintln!("gate-rule branches exercised ({compared} runs): {seen:?}");
    // Every rare branch was compared at least once (else this test would show nothing).
    assert!(seen.converging_skips > 0 && seen.stale_refreshes > 0 && seen.backtracked > 0);
}

/// The Gamma family with known shape of `examples/common/gamma.rs` (A(θ) = −k log(−θ),
/// θ < 0), which relies on the default Newton inversion from θ = −1.
struct GammaKnownShape {
    k: f64,
}

impl ExponentialFamily for GammaKnownShape {
    fn name(&self) -> String {
        format!("Gamma(shape {})", self.k)
    }
    fn dim(&self) -> usize {
        1
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn in_support(&self, s: &[f64]) -> bool {
        s[0] > 0.0 && s[0].is_finite()
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        theta[0] < 0.0 && theta[0].is_finite()
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        mu[0] > 0.0 && mu[0].is_finite()
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        t[0] = s[0];
    }
    fn log_base_measure(&self, s: &[f64]) -> f64 {
        (self.k - 1.0) * s[0].ln()
    }
    fn log_partition(&self, theta: &[f64]) -> mirror::Result<f64> {
        Ok(-self.k * (-theta[0]).ln())
    }
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> mirror::Result<()> {
        mu[0] = -self.k / theta[0];
        Ok(())
    }
    fn fisher(&self, theta: &[f64]) -> mirror::Result<Mat<f64>> {
        Ok(Mat::from_fn(1, 1, |_, _| self.k / (theta[0] * theta[0])))
    }
    fn sample(&self, _: &[f64], _: &mut dyn rand::RngCore, s: &mut [f64]) -> mirror::Result<()> {
        s[0] = 1.0;
        Ok(())
    }
    fn newton_start(&self, theta: &mut [f64]) {
        theta[0] = -1.0;
    }
}

#[test]
fn default_inversion_of_a_plug_in_family_halves_back_into_the_domain() {
    for k in [0.5, 2.5, 40.0] {
        let fam = GammaKnownShape { k };
        for e in -4..=6 {
            for m in [1.0, 3.7] {
                let mu = m * 10f64.powi(e);
                let mut theta = [0.0];
                newton_natural_from_mean(&fam, &[mu], &mut theta)
                    .unwrap_or_else(|err| panic!("k {k} μ {mu}: {err}"));
                // The stopping rule |∇A(θ) − μ| ≤ 1e-12 (1 + μ), checked independently;
                // θ then follows to 1e-12 (1 + μ) / A''(θ) = 1e-12 (1 + μ) θ² / k.
                let exact = -k / mu;
                assert!(
                    (-k / theta[0] - mu).abs() <= 1e-12 * (1.0 + mu),
                    "k {k} μ {mu}"
                );
                let bound = 2e-12 * (1.0 + mu) * exact * exact / k + 1e-14 * exact.abs();
                assert!(
                    (theta[0] - exact).abs() <= bound,
                    "k {k} μ {mu}: {} vs {exact}",
                    theta[0]
                );
            }
        }
    }
}

/// The Levenberg shift of a singular Hessian ([`NewtonSettings::shift_singular`]):
/// $f(x, y) = x^4/4 + y^2/2$ from $(0, 1)$ has $\nabla^2 f = \operatorname{diag}(3x^2, 1)$,
/// singular at the start. Without the shift the run fails at pivot 0; with it the first
/// direction is $-(H + \mu I)^{-1}\nabla f = (0, -1/(1+\mu))$ and the run converges to the
/// minimiser $(0, 0)$, reporting the shifted factorisations.
#[test]
fn a_singular_hessian_is_shifted_only_on_request() {
    let quartic = || {
        FnObjective::new(2, |x: &[f64], need: Need, out: &mut EvalOut<'_>| {
            out.value = x[0].powi(4) / 4.0 + x[1] * x[1] / 2.0;
            out.noise = sum_noise(out.value.abs(), 2);
            out.grad[0] = x[0].powi(3);
            out.grad[1] = x[1];
            if need == Need::Hessian {
                out.hess[(0, 0)] = 3.0 * x[0] * x[0];
                out.hess[(1, 0)] = 0.0;
                out.hess[(0, 1)] = 0.0;
                out.hess[(1, 1)] = 1.0;
            }
            Ok::<(), NewtonFailure>(())
        })
    };
    let settings = NewtonSettings::new(1e-10, 50).unwrap();
    let mut x = vec![0.0, 1.0];
    let e = minimize(&mut quartic(), &mut x, &settings, None).unwrap_err();
    assert!(
        matches!(e, NewtonFailure::NotPositiveDefinite { pivot: 0 }),
        "{e:?}"
    );
    let mut x = vec![0.0, 1.0];
    let rep = minimize(
        &mut quartic(),
        &mut x,
        &settings.with_shift_singular(true),
        None,
    )
    .unwrap();
    assert!(rep.converged && rep.residual <= 1e-10, "{rep:?}");
    assert!(rep.shifted >= 1, "{rep:?}");
    assert!(x[0] == 0.0 && x[1].abs() <= 1e-10, "{x:?}");
}
