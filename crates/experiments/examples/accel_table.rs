//! Prints the accelerated-EM table of `docs/08-accelerated-em.md` (Markdown on stdout):
//! `cargo run --release -p mdem-experiments --example accel_table [-- --quick]`.

use experiments::accel::{accel_markdown, accel_table, AccelConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let cfg = if quick {
        AccelConfig {
            n: 500,
            scales: vec![1.0],
            ..AccelConfig::default()
        }
    } else {
        AccelConfig::default()
    };
    let rows = accel_table(&cfg)?;
    print!("{}", accel_markdown(&rows, &cfg));
    Ok(())
}
