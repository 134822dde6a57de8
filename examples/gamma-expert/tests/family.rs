//! The family passes mirror's consistency harness at shapes from 0.6 to 30 and rates from
//! 0.1 to 10, and at points the sweep places near the boundary of the natural domain.

use gamma_expert::GammaShapeRate;
use mirror::{check_family_sweep, SweepConfig};

#[test]
fn gamma_passes_check_family_across_the_domain() {
    let mut thetas = Vec::new();
    for shape in [0.6, 1.0, 3.0, 30.0] {
        for rate in [0.1, 1.0, 10.0] {
            thetas.push(vec![-rate, shape - 1.0]);
        }
    }
    let report = check_family_sweep(&GammaShapeRate, &thetas, &SweepConfig::default()).unwrap();
    assert!(report.passed(), "{report}");
    // The sweep added points near the boundary (θ₁ → 0⁻, θ₂ → −1⁺) beyond the given ones.
    assert!(
        report.reports.len() > thetas.len(),
        "{}",
        report.reports.len()
    );
}
