//! Criterion benchmarks of the generic mirror-descent machinery: one projected
//! mirror-descent step per (map, set) pair and one Bregman divergence per map, at
//! dimension 100.
//!
//! Run: `cargo bench --bench mirror_descent`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mirror::{
    bregman, BlockSum, BoxSet, Constant, Euclidean, MirrorDescent, MirrorMap, NegEntropy, Simplex,
    Unconstrained,
};
use std::hint::black_box;

const N: usize = 100;

/// A point in the open simplex and a deterministic "gradient".
fn inputs() -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let w: Vec<f64> = (0..N)
        .map(|j| 1.0 + (j as f64 * 0.37).sin().abs())
        .collect();
    let s: f64 = w.iter().sum();
    let x: Vec<f64> = w.iter().map(|v| v / s).collect();
    let y: Vec<f64> = x.iter().rev().copied().collect();
    let g: Vec<f64> = (0..N).map(|j| (j as f64 * 0.11).cos()).collect();
    (x, y, g)
}

fn block_map() -> BlockSum<'static> {
    BlockSum::new(vec![
        (Box::new(Euclidean::new(N / 2).expect("dim > 0")), 2.0),
        (Box::new(NegEntropy::new(N / 2).expect("dim > 0")), 0.5),
    ])
    .expect("valid blocks")
}

fn bench_step(c: &mut Criterion) {
    let (x, _, g) = inputs();
    let eta = Constant::new(0.1).expect("valid step");
    let cases: Vec<(&str, MirrorDescent<'static>)> = vec![
        (
            "euclidean/unconstrained",
            MirrorDescent::new(Euclidean::new(N).unwrap(), Unconstrained, eta).unwrap(),
        ),
        (
            "euclidean/simplex",
            MirrorDescent::new(Euclidean::new(N).unwrap(), Simplex::new(N).unwrap(), eta).unwrap(),
        ),
        (
            "euclidean/box",
            MirrorDescent::new(
                Euclidean::new(N).unwrap(),
                BoxSet::uniform(N, 0.0, 0.012).unwrap(),
                eta,
            )
            .unwrap(),
        ),
        (
            "negentropy/simplex",
            MirrorDescent::new(NegEntropy::new(N).unwrap(), Simplex::new(N).unwrap(), eta).unwrap(),
        ),
        (
            "negentropy/unconstrained",
            MirrorDescent::new(NegEntropy::new(N).unwrap(), Unconstrained, eta).unwrap(),
        ),
        (
            "blocksum/unconstrained",
            MirrorDescent::new(block_map(), Unconstrained, eta).unwrap(),
        ),
    ];
    // The block map's entropy half must itself lie on its simplex.
    let mut xb = x.clone();
    let s2: f64 = xb[N / 2..].iter().sum();
    xb[N / 2..].iter_mut().for_each(|v| *v /= s2);
    let mut group = c.benchmark_group("md_step");
    for (name, md) in &cases {
        let theta = if name.starts_with("blocksum") {
            &xb
        } else {
            &x
        };
        group.bench_with_input(BenchmarkId::from_parameter(name), theta, |b, theta| {
            b.iter(|| md.step(black_box(theta), black_box(&g), 0).unwrap())
        });
    }
    group.finish();
}

/// (name, map, a, b) for one Bregman benchmark.
type BregmanCase<'a> = (&'static str, Box<dyn MirrorMap>, &'a [f64], &'a [f64]);

fn bench_bregman(c: &mut Criterion) {
    let (x, y, _) = inputs();
    let (mut xb, mut yb) = (x.clone(), y.clone());
    for v in [&mut xb, &mut yb] {
        let s2: f64 = v[N / 2..].iter().sum();
        v[N / 2..].iter_mut().for_each(|e| *e /= s2);
    }
    let maps: Vec<BregmanCase> = vec![
        ("euclidean", Box::new(Euclidean::new(N).unwrap()), &x, &y),
        (
            "euclidean_scaled",
            Box::new(Euclidean::scaled((1..=N).map(|j| j as f64).collect()).unwrap()),
            &x,
            &y,
        ),
        ("negentropy", Box::new(NegEntropy::new(N).unwrap()), &x, &y),
        ("blocksum", Box::new(block_map()), &xb, &yb),
    ];
    let mut group = c.benchmark_group("bregman");
    for (name, map, a, b) in &maps {
        group.bench_function(*name, |bch| {
            bch.iter(|| bregman(map.as_ref(), black_box(a), black_box(b)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_step, bench_bregman);
criterion_main!(benches);
