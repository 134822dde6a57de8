//! Prints the accelerated-EM table of `docs/08-accelerated-em.md` (Markdown on stdout):
//! `cargo run --release -p mdem-experiments --example accel_table [-- [--quick] [--init NAME]]`.
//! `--init kmeans` (or any `mdem fit --init` strategy) starts the gated rows where a fit's
//! first restart by that strategy would, instead of at an independent random point.

use em_as_md::InitMethod;
use experiments::accel::{accel_markdown, accel_table, AccelConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let init = match args.iter().position(|a| a == "--init") {
        None => None,
        Some(i) => {
            let name = args.get(i + 1).ok_or("--init needs a strategy name")?;
            Some(InitMethod::from_name(name).ok_or_else(|| {
                format!("--init: unknown strategy {name:?} (auto, random, subset, kmeans, short-em, dirichlet)")
            })?)
        }
    };
    let base = AccelConfig {
        init,
        ..AccelConfig::default()
    };
    let cfg = if quick {
        AccelConfig {
            n: 500,
            scales: vec![1.0],
            ..base
        }
    } else {
        base
    };
    let rows = accel_table(&cfg)?;
    print!("{}", accel_markdown(&rows, &cfg));
    Ok(())
}
