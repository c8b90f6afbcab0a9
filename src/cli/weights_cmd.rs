use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct WeightsArgs {}

pub fn run(_args: WeightsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
