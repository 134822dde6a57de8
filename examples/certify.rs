//! Fit SymMoLinE by EM at a high and at a low signal-to-noise ratio and print the two
//! convergence certificates side by side: measured relative smoothness L̂ and strong
//! convexity α̂ of the objective w.r.t. the complete-data log-partition, the linear rate
//! they certify, the observed rate, the SEM rate of the EM map and the missing-information
//! estimate 1 − max λ_max(I_c⁻¹ I_m).
//!
//! Run with `cargo run --release --example certify`.

use diagnostics::{certify, Certificate, CertifyConfig, RatioConfig};
use em_as_md::{Em, Executor, ObserverMode, Problem, SymMoLinE, TrajectoryObserver};

fn fit_and_certify(snr: f64) -> anyhow::Result<Certificate> {
    let d = 4;
    let model = SymMoLinE::new(d, 1.0)?;
    let truth = model.random_theta(snr, 1.0, 11)?;
    let (data, _) = model.simulate(&truth, 5000, 12)?;
    let problem = Problem::new(&model, &data)?;
    // Start away from the truth: β halved, gate zero.
    let theta0: Vec<f64> = truth[..d]
        .iter()
        .map(|b| 0.5 * b)
        .chain(vec![0.0; d])
        .collect();
    let iterates = TrajectoryObserver::new();
    Executor::new(problem, Em::new())
        .theta0(theta0)
        .max_iters(2000)
        .tol(1e-14)
        .add_observer(Box::new(iterates.clone()), ObserverMode::Always)
        .run()?;
    let (traj, vals) = iterates.take();
    let cfg = CertifyConfig {
        ratios: RatioConfig {
            radius: 0.05,
            ..Default::default()
        },
        snr: Some(model.snr(&truth)),
        ..Default::default()
    };
    Ok(certify(&problem, &traj, &vals, &cfg)?)
}

fn main() -> anyhow::Result<()> {
    let high = fit_and_certify(4.0)?;
    let low = fit_and_certify(0.8)?;
    let (a, b) = (high.to_string(), low.to_string());
    let width = 76;
    let (ha, hb) = ("SymMoLinE, high SNR", "SymMoLinE, low SNR");
    println!("{ha:<width$} | {hb}");
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    for i in 0..la.len().max(lb.len()) {
        let l = la.get(i).copied().unwrap_or("");
        let pad = width.saturating_sub(l.chars().count());
        println!(
            "{l}{} | {}",
            " ".repeat(pad),
            lb.get(i).copied().unwrap_or("")
        );
    }
    Ok(())
}
