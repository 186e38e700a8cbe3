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
    /// The final codes a successful call may get: one (486), several (200,486), or
    /// "any" for any final response (an app with a rule).
    #[arg(long, env = "EVAPI_EXPECT_CODE", default_value = "486", value_parser = expected)]
    pub expect_code: evapi_sim::load::ExpectedCodes,
    /// The request URI of each call; {n} is the call's number from 0 (e.g.
    /// "sip:{n}@example.com" for an app deciding by number). Default:
    /// sip:callee{n}@TARGET.
    #[arg(long, env = "EVAPI_RURI", value_parser = ruri)]
    pub ruri: Option<String>,
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
            expect: self.expect_code.clone(),
            ruri: self.ruri,
            timeout: self.timeout,
        };
        let expected = self.expect_code;
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
            .filter(|(code, _)| !code.parse().is_ok_and(|c| expected.accepts(c)))
            .map(|(code, n)| format!("{code} x{n}"))
            .collect();
        eprintln!(
            "evapi-sim load: {} of {} calls failed: expected {expected}, got {}",
            report.failed,
            report.calls,
            got.join(", ")
        );
        Ok(ExitCode::from(EXIT_FAILED))
    }
}

/// `486`, `200,486` or `any`.
fn expected(text: &str) -> Result<evapi_sim::load::ExpectedCodes, String> {
    if text.trim().eq_ignore_ascii_case("any") {
        return Ok(evapi_sim::load::ExpectedCodes::AnyFinal);
    }
    let codes = text
        .split(',')
        .map(|c| match c.trim().parse::<u16>() {
            Ok(code) if (200..700).contains(&code) => Ok(code),
            _ => Err(format!("{c:?} is not a final SIP code (200-699)")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(evapi_sim::load::ExpectedCodes::Codes(codes))
}

/// A request URI template: a sip: or sips: URI on one line (no spaces or controls).
fn ruri(text: &str) -> Result<String, String> {
    let ok = (text.starts_with("sip:") || text.starts_with("sips:"))
        && text.len() <= 256
        && !text
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'<' || b == b'>');
    if ok {
        Ok(text.to_owned())
    } else {
        Err("a sip: or sips: URI, at most 256 bytes, no spaces, controls or <>".to_owned())
    }
}
