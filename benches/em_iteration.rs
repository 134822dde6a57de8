//! One EM iteration for linear-Gaussian experts beside its floor, on the same data in the
//! same run.
//!
//! * **EM iteration**: one E-step (log-space responsibilities, the $K$ weighted Gram
//!   matrices fused into the same pass) and one M-step ($K$ Cholesky solves and, for the
//!   softmax gate, its Newton steps) — exactly what [`em_as_md::Em`] does per iteration.
//! * **Floor**: the unavoidable dense work with faer on the same data: the $K$ weighted
//!   Grams $X^\top\operatorname{diag}(r_k)X$ (columns scaled by $\sqrt{r_k}$ into a
//!   preallocated $d\times n$ buffer, one product each), right-hand sides
//!   $X^\top\operatorname{diag}(r_k)y$, $K$ Cholesky solves, plus for the gated model
//!   Gram-sized ($d\times d$) weighted products (each with a $d\times d$ Cholesky), counted
//!   counted three ways from the M-step's [`em_as_md::InnerStats`] (`iterations` = gate
//!   Newton steps taken; `hessians` − $K$ = gate Hessians formed, `hessians` also counting
//!   the $K$ expert Grams; the Hessian the E-step forms at $\theta_t$ counts):
//!   - **floor (issue)**: one Gram per gate Newton step taken, as the issue words it;
//!   - **floor (a)**: one Gram per gate Hessian formed — one per Newton step that forms
//!     one; steps that reuse the factored Hessian ([`em_as_md::GateConfig::reuse_below`])
//!     form none and add nothing to the floor, although they cost a gradient pass;
//!   - **floor (b)**: the Gram-sized blocks actually formed — the softmax gate's
//!     $(K-1)d$-square Hessian has $(K-1)K/2$ distinct $d\times d$ blocks
//!     $X^\top\operatorname{diag}(\pi_k(\delta_{kl}-\pi_l))X$, $k \le l < K-1$.
//!
//!   (a) is below (issue) whenever a step reuses the Hessian; for $K = 2$ (a) and (b)
//!   agree, for $K = 4$ (b) has 6 blocks per Hessian where (a) has 1.
//!
//! Settings: $n \in \{20\,000, 100\,000\}$, $d = 10$ (intercept included),
//! $K \in \{2, 4\}$, gated and ungated. Besides criterion's report, the bench prints the
//! ratios to the three floors (medians over 21 rounds in which the EM iteration and the
//! floors are timed in turn, so drifts of the machine's load hit both) and the time of whole
//! gated $K = 2$ and $K = 4$, $n = 20\,000$ fits to relative tolerance $10^{-8}$.
//!
//! Run with `cargo bench --bench em_iteration`. Switches: `EM_BENCH_QUICK=1` prints the
//! ratios without criterion's measurements; `EM_BENCH_SPLIT=1` also times the E- and
//! M-step apart; `EM_BENCH_NOFLOOR=1` skips the floors; `EM_BENCH_ONLY=n=100000,K=2,gated`
//! runs one setting (`EM_BENCH_ONLY=whole`: the whole fit only); `EM_BENCH_REUSE=<x>` sets [`GateConfig::reuse_below`];
//! `EM_BENCH_LOOP=<reps>` only repeats the EM iteration `reps` times (for a profiler).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use em_as_md::{
    ConditionalFamily, Dataset, Em, EmModel, FitState, GateConfig, Gating, InnerStats,
    LinearGaussian, MixtureOfExperts, Problem, Solver,
};
use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{Accum, Mat, MatRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

const D: usize = 10;

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller (the root package does not depend on rand_distr).
    let u: f64 = rng.random::<f64>().max(1e-300);
    let v: f64 = rng.random::<f64>();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// The gate M-step settings: the default, or `EM_BENCH_REUSE=<reuse_below>`.
fn gate_config() -> GateConfig {
    let mut cfg = GateConfig::default();
    if let Some(v) = std::env::var("EM_BENCH_REUSE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.reuse_below = v;
    }
    cfg
}

struct Case {
    model: MixtureOfExperts,
    data: Dataset,
    theta: Vec<f64>,
}

fn case(n: usize, k: usize, gating: Gating) -> Case {
    let model = MixtureOfExperts::new(Arc::new(LinearGaussian::new()), k, D, gating)
        .unwrap()
        .with_gate_config(gate_config())
        .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(42 + k as u64);
    let mut truth = model.random_params(&mut rng, 1.0);
    for c in 0..k {
        let beta: Vec<f64> = (0..D).map(|_| 2.0 * normal(&mut rng)).collect();
        LinearGaussian::natural_from_beta(&beta, 0.25, model.expert_block_mut(&mut truth, c))
            .unwrap();
    }
    let mut xs = Vec::with_capacity(n * D);
    let mut ys = Vec::with_capacity(n);
    for _ in 0..n {
        let start = xs.len();
        xs.push(1.0);
        for _ in 1..D {
            xs.push(normal(&mut rng));
        }
        let (y, _) = model.sample(&truth, &xs[start..], &mut rng).unwrap();
        ys.push(y[0]);
    }
    let data = Dataset::from_rows(&xs, D, &ys, 1).unwrap();
    // Start from random responsibilities and run a few EM iterations, so the timed
    // iteration is a typical mid-fit one (gate Newton warm-started).
    let resp: Vec<f64> = (0..n * k).map(|_| 0.5 + rng.random::<f64>()).collect();
    let resp: Vec<f64> = resp
        .chunks(k)
        .flat_map(|r| {
            let s: f64 = r.iter().sum();
            r.iter().map(move |v| v / s).collect::<Vec<_>>()
        })
        .collect();
    let stats = model.stats_from_responsibilities(&data, &resp).unwrap();
    let start = model.random_params(&mut rng, 0.0);
    let mut theta = vec![0.0; model.n_params()];
    model.m_step(&data, &stats, &start, &mut theta).unwrap();
    for _ in 0..5 {
        let (s, _) = model.e_step(&data, &theta).unwrap();
        let mut next = vec![0.0; theta.len()];
        model.m_step(&data, &s, &theta, &mut next).unwrap();
        theta = next;
    }
    Case { model, data, theta }
}

/// One EM iteration (E-step + M-step); returns the M-step's inner statistics.
fn em_iteration(c: &Case) -> InnerStats {
    let (stats, l) = c.model.e_step(&c.data, &c.theta).unwrap();
    let mut next = vec![0.0; c.theta.len()];
    let inner = c
        .model
        .m_step(&c.data, &stats, &c.theta, &mut next)
        .unwrap();
    black_box((l, &next));
    inner
}

/// Buffers of the floor, allocated once.
struct Floor {
    resp: Vec<f64>,
    buf: Mat<f64>,
    wy: Vec<f64>,
    /// Gate Newton steps taken (linear experts are closed form: 0 inner iterations).
    gate_steps: u64,
    /// Gate block Hessians formed (`hessians` minus the $K$ expert Grams).
    gate_hessians: u64,
}

fn floor_setup(c: &Case) -> Floor {
    let (stats, _) = c.model.e_step(&c.data, &c.theta).unwrap();
    let inner = em_iteration(c);
    let k = c.model.n_experts() as u64;
    Floor {
        resp: stats.resp,
        buf: Mat::zeros(D, c.data.n()),
        wy: vec![0.0; c.data.n()],
        gate_steps: inner.iterations,
        gate_hessians: inner.hessians.saturating_sub(k),
    }
}

/// $G = X\operatorname{diag}(w)X^\top$ with $X$ the $d\times n$ feature matrix, through
/// the $\sqrt w$-scaled copy in `buf`, plus one Cholesky solve against `rhs`.
fn gram_and_solve(
    xt: MatRef<'_, f64>,
    w: impl Fn(usize) -> f64,
    buf: &mut Mat<f64>,
    rhs: &[f64],
) -> f64 {
    let n = xt.ncols();
    for i in 0..n {
        let s = w(i).sqrt();
        let src = xt.col(i);
        let mut dst = buf.col_mut(i);
        for a in 0..D {
            dst[a] = s * src[a];
        }
    }
    let mut g = Mat::<f64>::zeros(D, D);
    matmul(
        g.as_mut(),
        Accum::Replace,
        buf.as_ref(),
        buf.transpose(),
        1.0,
        faer::get_global_parallelism(),
    );
    for a in 0..D {
        g[(a, a)] += 1e-12;
    }
    let b = Mat::from_fn(D, 1, |a, _| rhs[a]);
    let x = g.llt(faer::Side::Lower).unwrap().solve(&b);
    x[(0, 0)]
}

/// Gram-sized gate blocks of floor (b): $(K-1)K/2$ per gate Hessian formed.
fn gate_blocks(k: usize, f: &Floor) -> u64 {
    f.gate_hessians * ((k - 1) * k / 2) as u64
}

/// The floor with `gate_grams` Gram-sized gate products (see the module documentation);
/// block $j$ uses the weights of the $j$-th distinct pair $(k, l)$, $k \le l < K-1$
/// (magnitudes $\pi_k\pi_l$ off the diagonal, so the $\sqrt w$ scaling applies: same cost).
fn floor(c: &Case, f: &mut Floor, gate_grams: u64) -> f64 {
    let k = c.model.n_experts();
    let n = c.data.n();
    let xt = c.data.xt();
    let y = c.data.y_all();
    let mut acc = 0.0;
    for e in 0..k {
        for (i, (w, yi)) in f.wy.iter_mut().zip(y).enumerate() {
            *w = f.resp[i * k + e] * yi;
        }
        // rhs = X (r ∘ y).
        let mut rhs = Mat::<f64>::zeros(D, 1);
        let wy = MatRef::from_column_major_slice(&f.wy, n, 1);
        matmul(
            rhs.as_mut(),
            Accum::Replace,
            xt,
            wy,
            1.0,
            faer::get_global_parallelism(),
        );
        let rhs: Vec<f64> = (0..D).map(|a| rhs[(a, 0)]).collect();
        let resp = &f.resp;
        acc += gram_and_solve(xt, |i| resp[i * k + e], &mut f.buf, &rhs);
    }
    let pairs: Vec<(usize, usize)> = (0..k.saturating_sub(1))
        .flat_map(|a| (a..k - 1).map(move |b| (a, b)))
        .collect();
    for j in 0..gate_grams as usize {
        let (a, b) = pairs[j % pairs.len().max(1)];
        let resp = &f.resp;
        let rhs = vec![1.0; D];
        let w = |i: usize| {
            let (pa, pb) = (resp[i * k + a], resp[i * k + b]);
            if a == b {
                pa * (1.0 - pa)
            } else {
                pa * pb
            }
        };
        acc += gram_and_solve(xt, w, &mut f.buf, &rhs);
    }
    acc
}

fn median_secs(mut run: impl FnMut(), reps: usize) -> f64 {
    run(); // warm-up
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            run();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[reps / 2]
}

/// Medians of `kinds` timed jobs (`run(j)` runs job `j`) over `reps` rounds, the jobs
/// interleaved within each round, so slow drifts of the machine's load hit the EM
/// iteration and its floors alike (the ratios are what the bench reports). Each job runs
/// twice in a row and the second run is timed: its caches are as warm as in a fit's
/// consecutive iterations, not cooled by the job before it.
fn interleaved_medians(kinds: usize, reps: usize, mut run: impl FnMut(usize)) -> Vec<f64> {
    let mut t = vec![Vec::with_capacity(reps); kinds];
    for _ in 0..reps {
        for (j, tj) in t.iter_mut().enumerate() {
            run(j);
            let s = Instant::now();
            run(j);
            tj.push(s.elapsed().as_secs_f64());
        }
    }
    t.into_iter()
        .map(|mut v| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[reps / 2]
        })
        .collect()
}

/// A whole gated fit with `k` experts, $n = 20\,000$, to relative tolerance $10^{-8}$ from
/// the M-step of random responsibilities: (iterations, gate Newton steps, gate Hessians,
/// final $L$, seconds).
fn whole_fit_once(c: &Case, k: usize) -> (u64, u64, u64, f64, f64) {
    // Restart from the initial M-step (not the warmed-up θ) for an honest whole fit.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let resp: Vec<f64> = (0..c.data.n())
        .flat_map(|_| {
            let r: Vec<f64> = (0..k).map(|_| 0.5 + rng.random::<f64>()).collect();
            let s: f64 = r.iter().sum();
            r.into_iter().map(move |v| v / s)
        })
        .collect();
    let start = Instant::now();
    let stats = c.model.stats_from_responsibilities(&c.data, &resp).unwrap();
    let mut theta = vec![0.0; c.model.n_params()];
    let warm = c.model.random_params(&mut rng, 0.0);
    c.model.m_step(&c.data, &stats, &warm, &mut theta).unwrap();
    let problem = Problem::new(&c.model, &c.data).unwrap();
    let l0 = c.model.e_step(&c.data, &theta).unwrap().1;
    let mut em = Em::new();
    let mut state = em.init(&problem, FitState::new(theta, l0)).unwrap();
    let (mut iters, mut steps, mut hessians) = (0, 0, 0);
    loop {
        let prev = state.objective;
        let (s, rec) = em.next_iter(&problem, state).unwrap();
        state = s;
        iters += 1;
        steps += rec.inner.iterations;
        // `hessians` also counts the K expert Grams.
        hessians += rec.inner.hessians - k as u64;
        if (prev - state.objective).abs() / prev.abs().max(1.0) < 1e-8 || iters >= 1000 {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    (iters, steps, hessians, state.objective, secs)
}

/// [`whole_fit_once`] for $K = 2$ and $4$, median time of 5 fits (every fit takes the same
/// path: the counts are those of each).
fn whole_fit() {
    for k in [2, 4] {
        let c = case(20_000, k, Gating::Softmax);
        let runs: Vec<_> = (0..5).map(|_| whole_fit_once(&c, k)).collect();
        let mut secs: Vec<f64> = runs.iter().map(|r| r.4).collect();
        secs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (iters, steps, hessians, l, _) = runs[0];
        println!(
            "whole fit: n = 20000, d = 10, K = {k} gated linear, rel. tol 1e-8: {iters} iterations ({steps} gate Newton steps, {hessians} gate Hessians), {:.3} s (median of 5), L = {l:.6}",
            secs[2]
        );
    }
}

fn bench(cr: &mut Criterion) {
    let only = std::env::var("EM_BENCH_ONLY").ok();
    if only.as_deref().is_none_or(|o| o == "whole") {
        whole_fit();
    }
    let mut group = cr.benchmark_group("em_iteration");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(2));
    group.warm_up_time(std::time::Duration::from_millis(300));
    for &n in &[20_000usize, 100_000] {
        for &k in &[2usize, 4] {
            for gating in [Gating::Constant, Gating::Softmax] {
                let label = format!(
                    "n={n},K={k},{}",
                    if gating == Gating::Softmax {
                        "gated"
                    } else {
                        "ungated"
                    }
                );
                if std::env::var("EM_BENCH_ONLY").is_ok_and(|o| o != label) {
                    continue;
                }
                let c = case(n, k, gating);
                let mut f = floor_setup(&c);
                if let Some(reps) = std::env::var("EM_BENCH_LOOP")
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                {
                    for _ in 0..reps {
                        em_iteration(&c);
                    }
                    continue;
                }
                if std::env::var_os("EM_BENCH_SPLIT").is_some() {
                    let t_e = median_secs(
                        || {
                            black_box(c.model.e_step(&c.data, &c.theta).unwrap());
                        },
                        11,
                    );
                    let (st, _) = c.model.e_step(&c.data, &c.theta).unwrap();
                    let mut nx = vec![0.0; c.theta.len()];
                    let t_m = median_secs(
                        || {
                            c.model.m_step(&c.data, &st, &c.theta, &mut nx).unwrap();
                        },
                        11,
                    );
                    println!(
                        "{label}: E-step {:.3} ms, M-step {:.3} ms",
                        t_e * 1e3,
                        t_m * 1e3
                    );
                }
                if std::env::var_os("EM_BENCH_NOFLOOR").is_some() {
                    let t_em = median_secs(
                        || {
                            em_iteration(&c);
                        },
                        11,
                    );
                    println!("{label}: EM iteration {:.3} ms", t_em * 1e3);
                    continue;
                }
                let (grams_i, grams_a, grams_b) =
                    (f.gate_steps, f.gate_hessians, gate_blocks(k, &f));
                // The EM iteration interleaved with its floors.
                let t = interleaved_medians(4, 21, |j| match j {
                    0 => {
                        em_iteration(&c);
                    }
                    1 => {
                        black_box(floor(&c, &mut f, grams_i));
                    }
                    2 => {
                        black_box(floor(&c, &mut f, grams_a));
                    }
                    _ => {
                        black_box(floor(&c, &mut f, grams_b));
                    }
                });
                let (t_em, t_floor_i, t_floor, t_floor_b) = (t[0], t[1], t[2], t[3]);
                println!(
                    "{label}: EM iteration {:.3} ms | floor (issue) {:.3} ms ({} gate Newton steps, 1 Gram each), ratio {:.2} | floor (a) {:.3} ms ({} gate Hessians, 1 Gram each), ratio {:.2} | floor (b) {:.3} ms ({} gate Hessians × {} blocks = {} Grams), ratio {:.2}",
                    t_em * 1e3,
                    t_floor_i * 1e3,
                    f.gate_steps,
                    t_em / t_floor_i,
                    t_floor * 1e3,
                    grams_a,
                    t_em / t_floor,
                    t_floor_b * 1e3,
                    f.gate_hessians,
                    (k - 1) * k / 2,
                    grams_b,
                    t_em / t_floor_b
                );
                if std::env::var_os("EM_BENCH_QUICK").is_some() {
                    continue;
                }
                group.bench_function(BenchmarkId::new("em", &label), |b| {
                    b.iter(|| em_iteration(&c))
                });
                group.bench_function(BenchmarkId::new("floor_issue", &label), |b| {
                    b.iter(|| black_box(floor(&c, &mut f, grams_i)))
                });
                group.bench_function(BenchmarkId::new("floor_a", &label), |b| {
                    b.iter(|| black_box(floor(&c, &mut f, grams_a)))
                });
                group.bench_function(BenchmarkId::new("floor_b", &label), |b| {
                    b.iter(|| black_box(floor(&c, &mut f, grams_b)))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
