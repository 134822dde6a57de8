//! Plug a new exponential family into `mirror` and let `check_family` audit it.
//!
//! The family here is not built in: the Gamma distribution with known shape $k$,
//! $$ p(s;\theta) = \frac{s^{k-1}}{\Gamma(k)}\exp\big(s\theta + k\log(-\theta)\big),\quad
//!    T(s) = s,\ \theta = -\text{rate} < 0,\ A(\theta) = -k\log(-\theta). $$
//!
//! The family is written in `examples/common/gamma.rs` (the `plug_in_expert` example uses
//! it as a mixture-of-experts expert). To adapt it: copy `GammaKnownShape`, change `T`, $\log h$, $A$, $\nabla A$, $\nabla^2 A$,
//! the domains and the sampler to your family's, keep `newton_start` inside your natural
//! domain (or override `natural_from_mean` with a closed form), and run
//! `cargo run --example plug_in_family`. The program prints the report and exits with
//! status 1 if any check fails.

#[path = "common/gamma.rs"]
mod gamma;

use gamma::GammaKnownShape;
use mirror::{check_family, CheckConfig, ExponentialFamily, Result};

fn main() -> Result<()> {
    let family = GammaKnownShape { k: 2.5 };
    let mut all_passed = true;
    for theta in [-0.5, -2.0] {
        let report = check_family(&family, &[theta], &CheckConfig::default())?;
        println!("{report}\n");
        all_passed &= report.passed();
    }
    if !all_passed {
        eprintln!("{} failed check_family", family.name());
        std::process::exit(1);
    }
    Ok(())
}
