//! Fit SymMoLinE by EM at a high and at a low signal-to-noise ratio and print the two
//! convergence certificates side by side: measured relative smoothness L̂ and strong
//! convexity α̂ of the objective w.r.t. the complete-data log-partition, the linear rate
//! they certify, the observed rate, the SEM rate of the EM map and the missing-information
//! estimate 1 − max λ_max(I_c⁻¹ I_m).
//!
//! Run with `cargo run --release --example certify`.

use diagnostics::{certify, Certificate, CertifyConfig, RatioConfig};
use em_as_md::{Em, Executor, FitState, IterRecord, Observer, ObserverMode, Problem, SymMoLinE};
use std::sync::{Arc, Mutex};

/// Records every iterate θ_t and L(θ_t) (the executor's trace keeps only the records).
#[derive(Clone, Default)]
struct Iterates(Arc<Mutex<(Vec<Vec<f64>>, Vec<f64>)>>);

impl Observer for Iterates {
    fn observe_init(&mut self, _solver: &str, state: &FitState) {
        let mut g = self.0.lock().expect("observer lock");
        g.0.push(state.theta.clone());
        g.1.push(state.objective);
    }
    fn observe_iter(&mut self, state: &FitState, _record: &IterRecord) {
        let mut g = self.0.lock().expect("observer lock");
        g.0.push(state.theta.clone());
        g.1.push(state.objective);
    }
}

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
    let iterates = Iterates::default();
    Executor::new(problem, Em::new())
        .theta0(theta0)
        .max_iters(2000)
        .tol(1e-14)
        .add_observer(Box::new(iterates.clone()), ObserverMode::Always)
        .run()?;
    let (traj, vals) = iterates.0.lock().expect("observer lock").clone();
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
    println!(
        "{:<width$} | {}",
        "SymMoLinE, high SNR", "SymMoLinE, low SNR"
    );
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
