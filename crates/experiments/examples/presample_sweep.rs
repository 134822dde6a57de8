//! Starts on a sample (`--presample`) against direct fits on random draws: for each GLM
//! expert, 30 gated mixtures ($K = 2$, $d = 5$ with the intercept, $n = 20\,000$,
//! [`em_as_md::testkit::draw`] seeds 2000–2029, $\theta^\ast$ at scale 1.5), one random
//! start each (`--init random --n-init 1`, plain EM, relative tolerance $10^{-8}$),
//! fitted directly and with the starts on a tenth of the rows
//! ([`em_as_md::MoeValidParams::fit_presampled`]): on how many draws the sample's fit ends
//! higher, lower or equal (within $10^{-6}$ relative), on how many the sample stage failed
//! and the direct fit ran instead (a failed `sample fit` restart in the report), how many
//! runs do not converge, the median full-data iterations and the median ratio of wall
//! times. Quoted in
//! `docs/07-starts.md`.
//!
//! `cargo run --release -p mdem-experiments --example presample_sweep`

use em_as_md::testkit::{draw, DrawConfig};
use em_as_md::{
    Accel, Expert, Gating, InitMethod, LinearGaussian, Logistic, MixtureOfExperts, MoeError,
    MoeParams, Poisson,
};
use std::sync::Arc;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), MoeError> {
    let experts: Vec<(&str, Arc<dyn Expert>)> = vec![
        ("linear", Arc::new(LinearGaussian::new())),
        ("logistic", Arc::new(Logistic::new())),
        ("Poisson", Arc::new(Poisson::new())),
    ];
    let n = 20_000;
    println!("| expert | sample higher / lower / equal L | sample stage failed (direct fit instead) | not converged: direct / sample | full-data iterations: direct / sample (median) | time direct / sample (median ratio) |");
    println!("|---|---|---|---|---|---|");
    for (name, e) in experts {
        let model = MixtureOfExperts::new(e.clone(), 2, 5, Gating::Softmax)?;
        let dc = DrawConfig {
            truth_scale: 1.5,
            ..DrawConfig::default()
        };
        let (mut higher, mut lower, mut equal, mut nc, mut failed) = (0, 0, 0, [0; 2], 0);
        let (mut it_direct, mut it_sample, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for seed in 2000..2030u64 {
            let d = draw(&model, &dc, n, seed)?;
            let params = MoeParams::new(2)
                .expert_shared(e.clone())
                .gating(Gating::Softmax)
                .n_init(1)
                .seed(seed)
                .init(InitMethod::RandomPartition)
                .accel(Accel::None)
                .tol(1e-8)
                .max_iters(5000)
                .check()?;
            let clock = Instant::now();
            let direct = params.fit(&d.data)?;
            let t_direct = clock.elapsed().as_secs_f64();
            let clock = Instant::now();
            let sample = params.fit_presampled(&d.data, n / 10)?;
            let t_sample = clock.elapsed().as_secs_f64();
            let (ld, ls) = (
                direct.report().log_likelihood,
                sample.report().log_likelihood,
            );
            let rel = (ls - ld) / ld.abs();
            if rel > 1e-6 {
                higher += 1;
            } else if rel < -1e-6 {
                lower += 1;
            } else {
                equal += 1;
            }
            let sample_failed = sample
                .report()
                .restarts
                .iter()
                .any(|r| r.error.is_some() && r.init == em_as_md::fit::stream::SAMPLE_START);
            if sample_failed {
                failed += 1;
                eprintln!("{name}, seed {seed}: the sample stage failed");
            }
            nc[0] += usize::from(!direct.report().converged());
            nc[1] += usize::from(!sample.report().converged());
            it_direct.push(direct.report().iterations as f64);
            it_sample.push(sample.report().iterations as f64);
            ratio.push(t_direct / t_sample);
        }
        println!(
            "| {name} | {higher} / {lower} / {equal} | {failed} | {} / {} | {:.0} / {:.0} | {:.2} |",
            nc[0],
            nc[1],
            median(it_direct),
            median(it_sample),
            median(ratio)
        );
    }
    Ok(())
}
