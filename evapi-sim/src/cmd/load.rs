//! `evapi-sim load`.

use std::process::ExitCode;

use anyhow::Context as _;
use evapi_cli::exit::FAILED as EXIT_FAILED;

/// SIP load with microsecond latency: INVITEs at a fixed rate, each expecting a final
/// code, ACKed; prints a JSON report (p50/p90/p99/max in microseconds).
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// The SIP server (UDP; IP, IP:port or host:port, the port defaults to 5060).
    #[arg(value_parser = evapi_cli::addr::sip)]
    pub target: std::net::SocketAddr,
    /// Calls per second.
    #[arg(long, env = "EVAPI_RATE", default_value_t = 1000)]
    pub rate: u64,
    /// Calls in all.
    #[arg(long, env = "EVAPI_CALLS", default_value_t = 10_000)]
    pub calls: u64,
    /// The final code a successful call gets.
    #[arg(long, env = "EVAPI_EXPECT_CODE", default_value_t = 486)]
    pub expect_code: u16,
    /// A call without a final response after this long fails.
    #[arg(long, env = "EVAPI_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

impl LoadArgs {
    /// Calls at a rate against a SIP target, the report on stdout.
    pub(crate) fn run(self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
        let options = evapi_sim::load::LoadOptions {
            target: self.target,
            rate: self.rate.max(1),
            calls: self.calls.max(1),
            expect_code: self.expect_code,
            timeout: self.timeout,
        };
        let expect_code = self.expect_code;
        let report = runtime
            .block_on(evapi_sim::load::run(&options))
            .context("load generator")?;
        println!("{}", serde_json::to_string(&report).context("report")?);
        if report.failed == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        let got: Vec<String> = report
            .codes
            .iter()
            .filter(|(code, _)| **code != expect_code.to_string())
            .map(|(code, n)| format!("{code} x{n}"))
            .collect();
        eprintln!(
            "evapi-sim load: {} of {} calls failed: expected {expect_code}, got {}",
            report.failed,
            report.calls,
            got.join(", ")
        );
        Ok(ExitCode::from(EXIT_FAILED))
    }
}
