//! Certificates on the 1-D two-Gaussian mixture (test family in `src/testkit.rs`).

#[path = "../src/testkit.rs"]
mod testkit;

use diagnostics::certificate::{certify, CertifyConfig, Verdict};
use em_as_md::Problem;
use testkit::*;

fn fit(sep: f64, seed: u64, iters: usize) -> (em_as_md::Dataset, Vec<Vec<f64>>, Vec<f64>) {
    let data = gmm_data(2000, 0.4, -sep / 2.0, sep / 2.0, seed);
    let th0 = gmm_theta(false, 0.5, -sep / 2.0 - 0.5, sep / 2.0 + 0.3);
    let (traj, vals) = run_gmm_em(&GmmNatural, &data, false, &th0, iters);
    (data, traj, vals)
}

#[test]
fn explore() {
    for sep in [4.0, 3.0, 2.0, 1.0, 0.0] {
        let (data, traj, vals) = fit(sep, 1, 3000);
        let p = Problem::new(&GmmNatural, &data).unwrap();
        let cfg = CertifyConfig { ratios: diagnostics::ratios::RatioConfig { radius: 0.05, ..Default::default() }, ..Default::default() };
        let c = certify(&p, &traj, &vals, &cfg).unwrap();
        println!("sep {sep}\n{c}");
        let _ = Verdict::Certified;
    }
}
