//! Whole fits to relative tolerance $10^{-10}$ by every [`Accel`] choice — plain EM,
//! SQUAREM, mirror descent with $\eta_t = 1/\hat L_t$, Anderson and Newton with the EM
//! safeguard — from one start, on gated linear, logistic and Poisson
//! experts ($K = 2$, $d = 3$ with intercept, $n = 2000$, data drawn from a random model by
//! [`em_as_md::testkit::draw`]). Before criterion's timings the bench prints, per model
//! and solver, the EM-equivalent passes over the data and the final $L$, so that time,
//! passes and the optimum reached come from the same run.
//!
//! Run with `cargo bench --bench accel`; `ACCEL_BENCH_QUICK=1` prints the passes only.
//! The table of `docs/08-accelerated-em.md` (more models, several SNRs, λmax) is printed
//! by `cargo run --release -p mdem-experiments --example accel_table`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use em_as_md::solve::accel::Accel;
use em_as_md::testkit::{draw, DrawConfig};
use em_as_md::{
    Executor, Expert, FitResult, Gating, LinearGaussian, Logistic, MixtureOfExperts, Poisson,
    Problem,
};
use std::hint::black_box;
use std::sync::Arc;

const N: usize = 2000;
const TOL: f64 = 1e-10;
const MAX_ITERS: u64 = 5000;

struct Case {
    name: &'static str,
    model: MixtureOfExperts,
    data: em_as_md::Dataset,
    theta0: Vec<f64>,
}

fn cases() -> Vec<Case> {
    let experts: [(&'static str, Arc<dyn Expert>); 3] = [
        ("gated linear", Arc::new(LinearGaussian::new())),
        ("gated logistic", Arc::new(Logistic::new())),
        ("gated Poisson", Arc::new(Poisson::new())),
    ];
    experts
        .into_iter()
        .map(|(name, expert)| {
            let model = MixtureOfExperts::new(expert, 2, 3, Gating::Softmax).expect("model");
            let d = draw(&model, &DrawConfig::default(), N, 11).expect("draw");
            Case {
                name,
                model,
                data: d.data,
                theta0: d.theta0,
            }
        })
        .collect()
}

fn fit(case: &Case, accel: Accel) -> FitResult {
    let problem = Problem::new(&case.model, &case.data).expect("problem");
    Executor::new(problem, accel.solver())
        .theta0(case.theta0.clone())
        .max_iters(MAX_ITERS)
        .tol(TOL)
        .run()
        .expect("fit")
}

fn print_passes(cases: &[Case]) {
    println!("model            solver    passes  iterations  final L            termination");
    for c in cases {
        for a in Accel::ALL {
            let r = fit(c, a);
            let passes: u64 = r.trace.iter().map(|t| t.step.passes).sum();
            println!(
                "{:<16} {:<8} {:>7} {:>11}  {:<17.12} {}",
                c.name,
                a.as_str(),
                passes,
                r.state.iter,
                r.best.objective,
                r.termination
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    let cases = cases();
    print_passes(&cases);
    if std::env::var_os("ACCEL_BENCH_QUICK").is_some() {
        return;
    }
    let mut group = c.benchmark_group("accel");
    group.sample_size(10);
    for case in &cases {
        for a in Accel::ALL {
            group.bench_function(BenchmarkId::new(a.as_str(), case.name), |b| {
                b.iter(|| black_box(fit(case, a)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
