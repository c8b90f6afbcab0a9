use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct SmokeArgs {}

pub fn run(_args: SmokeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
