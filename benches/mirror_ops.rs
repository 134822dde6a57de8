//! Criterion benchmarks of the per-family geometry: the KL divergence
//! $\mathrm{KL}(p_{\theta_1}\|p_{\theta_2}) = D_A(\theta_2, \theta_1)$, the Bregman divergence
//! of the log-partition through the generic [`mirror::bregman`], the mean map
//! $\nabla A$ and its inverse $\nabla A^*$, for every built-in family; and the batched
//! exponential [`mirror::batch_exp::exp_in_place`] at each instruction-set level the CPU
//! has, beside a loop of `f64::exp`, on a cache-resident block of 4096 values.
//!
//! Run with `cargo bench --bench mirror_ops`.

use criterion::{criterion_group, criterion_main, Criterion};
use faer::Mat;
use mirror::{
    bregman, Bernoulli, Categorical, Exponential, ExponentialFamily, Gaussian,
    GaussianKnownVariance, LogPartition, MultivariateGaussian, Poisson,
};
use std::hint::black_box;

/// A family with two natural parameters in its domain.
type Case = (Box<dyn ExponentialFamily>, Vec<f64>, Vec<f64>);

/// Every built-in family with two natural parameters in its domain.
fn cases() -> Vec<Case> {
    let mvn = MultivariateGaussian::new(3).expect("d = 3");
    let cov1 = Mat::from_fn(3, 3, |i, j| if i == j { 1.0 + i as f64 } else { 0.3 });
    let cov2 = Mat::from_fn(3, 3, |i, j| if i == j { 2.0 } else { -0.2 });
    let t1 = mvn
        .natural_from_mean_cov(&[0.1, -0.4, 1.0], &cov1)
        .expect("PD");
    let t2 = mvn
        .natural_from_mean_cov(&[0.5, 0.0, -1.0], &cov2)
        .expect("PD");
    vec![
        (Box::new(Bernoulli), vec![0.3], vec![-1.2]),
        (
            Box::new(Categorical::new(5).expect("k = 5")),
            vec![0.1, -0.5, 1.0, 0.3],
            vec![-0.2, 0.4, 0.0, 1.5],
        ),
        (Box::new(Poisson), vec![1.1], vec![0.4]),
        (Box::new(Exponential), vec![-0.7], vec![-2.0]),
        (
            Box::new(GaussianKnownVariance::new(2.0).expect("sigma2 > 0")),
            vec![0.3],
            vec![-0.8],
        ),
        (Box::new(Gaussian), vec![0.5, -0.25], vec![-1.0, -1.0]),
        (Box::new(mvn), t1, t2),
    ]
}

fn bench_kl(c: &mut Criterion) {
    let mut group = c.benchmark_group("kl");
    for (fam, t1, t2) in cases() {
        group.bench_function(fam.name(), |b| {
            b.iter(|| fam.kl(black_box(&t1), black_box(&t2)).expect("in domain"))
        });
    }
    group.finish();
}

fn bench_bregman(c: &mut Criterion) {
    let mut group = c.benchmark_group("bregman_log_partition");
    for (fam, t1, t2) in cases() {
        let map = LogPartition::new(&*fam);
        group.bench_function(fam.name(), |b| {
            b.iter(|| bregman(&map, black_box(&t2), black_box(&t1)).expect("in domain"))
        });
    }
    group.finish();
}

fn bench_mean_maps(c: &mut Criterion) {
    let mut group = c.benchmark_group("mean_and_inverse");
    for (fam, t1, _) in cases() {
        let mut mu = vec![0.0; fam.dim()];
        let mut back = vec![0.0; fam.dim()];
        group.bench_function(fam.name(), |b| {
            b.iter(|| {
                fam.mean(black_box(&t1), &mut mu).expect("in domain");
                fam.natural_from_mean(&mu, &mut back)
                    .expect("in mean domain");
                back[0]
            })
        });
    }
    group.finish();
}

fn bench_batch_exp(c: &mut Criterion) {
    use mirror::batch_exp::{exp_in_place_with, ExpLevel};
    let xs: Vec<f64> = (0..4096)
        .map(|j| -20.0 + 30.0 * j as f64 / 4096.0)
        .collect();
    let mut ys = xs.clone();
    let mut group = c.benchmark_group("exp of 4096 values");
    group.bench_function("f64::exp loop", |b| {
        b.iter(|| {
            ys.copy_from_slice(black_box(&xs));
            ys.iter_mut().for_each(|v| *v = v.exp());
            black_box(ys[0])
        })
    });
    for level in ExpLevel::supported() {
        group.bench_function(format!("exp_in_place {level:?}"), |b| {
            b.iter(|| {
                ys.copy_from_slice(black_box(&xs));
                exp_in_place_with(level, &mut ys);
                black_box(ys[0])
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_kl,
    bench_bregman,
    bench_mean_maps,
    bench_batch_exp
);
criterion_main!(benches);
