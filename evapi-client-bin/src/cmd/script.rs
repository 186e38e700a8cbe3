//! `evapi-client run`: a send/expect script (docs/client.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::script::{self, RunError};
use anyhow::Context as _;

use super::Ctx;

/// Run a send/expect script (the language: client.md in the docs,
/// /usr/share/doc/evapi-client when packaged); `-` reads it from stdin.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The script file.
    pub script: PathBuf,
    /// Default wait for each expect step.
    #[arg(long, env = "EVAPI_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
}

impl RunArgs {
    /// Run the script; exit 1 at the first failed step.
    pub(crate) async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let Self {
            script: path,
            timeout,
        } = self;
        let (addr, config, path) = (ctx.addr.as_str(), &ctx.config, path.as_path());
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
                .context("cannot read the script from stdin")?
        } else {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
        };
        let steps = script::parse(&text).with_context(|| format!("{}", path.display()))?;
        match script::run(&steps, addr, config, timeout).await {
            Ok(summary) => {
                println!(
                    "ok: {} steps, {} sent, {} received",
                    summary.steps, summary.sent, summary.received
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(RunError::Failed(failure)) => {
                eprintln!("{}: {failure}", path.display());
                Ok(ExitCode::from(evapi_cli::exit::FAILED))
            }
            Err(e) => Err(e.into()),
        }
    }
}
