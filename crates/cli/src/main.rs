fn main() -> anyhow::Result<()> {
    mdem_cli::run()
}
