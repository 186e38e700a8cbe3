//! `evapi-sim run`.

use std::path::PathBuf;
use std::process::ExitCode;

use evapi_cli::exit::CANNOT_START as EXIT_BAD_SCENARIO;
use evapi_sim::engine::RunOptions;
use evapi_sim::scenario::Scenario;

use super::shared::{scenario, MetricsArgs, OutputArgs};

/// Run a scenario file.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The scenario (JSON; simulator.md in the docs, /usr/share/doc/evapi-sim when
    /// packaged).
    pub scenario: PathBuf,
    /// Listen here instead of the scenario's server.bind.
    #[arg(long, env = "EVAPI_BIND")]
    #[arg(value_parser = evapi_cli::addr::evapi)]
    pub bind: Option<std::net::SocketAddr>,
    /// Write the JSON report here.
    #[arg(long, env = "EVAPI_REPORT")]
    pub report: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, env = "EVAPI_NO_PROGRESS")]
    pub no_progress: bool,
    #[command(flatten)]
    pub outputs: OutputArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

impl RunArgs {
    /// Load the scenario (exit 2 when it is unusable) and run it.
    pub(crate) fn run(self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
        let loaded = match Scenario::load(&self.scenario) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("evapi-sim: {e}");
                return Ok(ExitCode::from(EXIT_BAD_SCENARIO));
            }
        };
        let options = RunOptions {
            bind: self.bind.map(|a| a.to_string()),
            fallback_to_ephemeral: false,
            interrupt: None,
            metrics: self.metrics.metrics,
            control_token: self.metrics.control_token.map(Into::into),
        };
        runtime.block_on(scenario(
            &loaded,
            &options,
            !self.no_progress,
            self.report.as_deref(),
            &self.outputs,
        ))
    }
}
