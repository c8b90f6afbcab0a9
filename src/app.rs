//! The desktop application (egui).
pub fn run() -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not implemented yet")
}
