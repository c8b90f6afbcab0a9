//! `serve`: the AI node (see [`crate::serve`]) and its configuration check.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use crate::serve::config::ServeConfig;

/// `serve --config serve.toml [--check]`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The node's configuration (see packaging/serve.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Validate the configuration, open every detector and try every destination, then exit
    /// (status 1 when anything failed).
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match ServeConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => bail!("{e}"),
    };
    if args.check {
        println!("config {}: ok", args.config.display());
        let lines = crate::serve::check(&config);
        let failed = lines.iter().filter(|l| l.problem.is_some()).count();
        for l in &lines {
            match &l.problem {
                None => println!("{}: ok", l.what),
                Some(p) => println!("{}: FAILED: {p}", l.what),
            }
        }
        if failed > 0 {
            eprintln!("{failed} check(s) failed");
            return Ok(ExitCode::FAILURE);
        }
        println!("all {} checks passed", lines.len() + 1);
        return Ok(ExitCode::SUCCESS);
    }
    crate::serve::run(config)?;
    Ok(ExitCode::SUCCESS)
}
