//! Checks shared by the diagnostics' integration tests.

use diagnostics::information::information;
use diagnostics::ratios::{bregman_ratios, PairRatio};
use em_as_md::{ConditionalFamily, Problem};
use faer::Mat;

/// The bits of a matrix, column by column.
fn bits(m: &Mat<f64>) -> Vec<u64> {
    (0..m.ncols())
        .flat_map(|j| (0..m.nrows()).map(move |i| m[(i, j)].to_bits()))
        .collect()
}

/// The Bregman ratios of `pairs` of `points` and the information matrices at
/// `points[1]` are bit-identical on rayon pools of 1, 2 and 3 threads.
pub fn same_on_1_2_3_threads<M: ConditionalFamily + ?Sized>(
    p: &Problem<'_, M>,
    points: &[Vec<f64>],
    pairs: &[(usize, usize)],
) {
    let run = || {
        let ratios: Vec<PairRatio> = bregman_ratios(p, points, pairs)
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let info = information(p, &points[1], true).unwrap();
        (
            ratios,
            bits(&info.complete),
            bits(&info.missing),
            bits(&info.curvature),
        )
    };
    let pool = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(run)
    };
    let one = pool(1);
    assert_eq!(one, pool(2));
    assert_eq!(one, pool(3));
}
