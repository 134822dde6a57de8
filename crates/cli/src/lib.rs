//! The `mdem` command line. Under construction.

/// Entry point of the `mdem` binary.
pub fn run() -> anyhow::Result<()> {
    Ok(())
}
