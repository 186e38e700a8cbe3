//! `evapi-sim demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use evapi_sim::engine::RunOptions;
use evapi_sim::scenario::Scenario;

use super::shared::{scenario, MetricsArgs, OutputArgs};

/// 10,000 INVITEs through async_relay against a built-in responder, on 127.0.0.1:8448
/// (an ephemeral port if that is taken).
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Listen here instead of 127.0.0.1:8448.
    #[arg(long, env = "EVAPI_BIND")]
    #[arg(value_parser = evapi_cli::addr::evapi)]
    pub bind: Option<std::net::SocketAddr>,
    /// Write the JSON report here.
    #[arg(long, env = "EVAPI_REPORT")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub outputs: OutputArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// What the demo's numbers mean, and what to try next (printed after its summary).
const DEMO_EXPLAINED: &str = concat!(
    "\n  What it means: the 10,000 INVITEs were all sent at once, so the latency above is\n",
    "  mostly queueing (each waits for the ones before it), not the responder's speed;\n",
    "  `evapi-sim load` measures calls one by one at a fixed rate.\n",
    "  Try next: `evapi-sim run SCENARIO.json --html report.html` (your traffic, your\n",
    "  checks, charts), or your own app against `evapi-sim sip` driven by sipp\n",
    "  (simulator.md in the docs).",
);

impl DemoArgs {
    /// Run the demo scenario, then say what its numbers mean.
    pub(crate) fn run(self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
        let options = RunOptions {
            fallback_to_ephemeral: self.bind.is_none(),
            bind: self.bind.map(|a| a.to_string()),
            interrupt: None,
            metrics: self.metrics.metrics,
            control_token: self.metrics.control_token.map(Into::into),
        };
        let code = runtime.block_on(scenario(
            &Scenario::demo(),
            &options,
            true,
            self.report.as_deref(),
            &self.outputs,
        ))?;
        println!("{DEMO_EXPLAINED}");
        Ok(code)
    }
}
