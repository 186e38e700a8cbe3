//! What several subcommands share: report outputs, `--metrics`, the id-fields flag and
//! running a scenario (`demo`, `run`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use evapi_cli::exit::{FAILED as EXIT_FAILED, INTERRUPTED as EXIT_INTERRUPTED};
use evapi_proto::IdFields;
use evapi_sim::engine::{self, RunOptions};
use evapi_sim::scenario::Loaded;

/// Reports people and CI systems read, for `demo`, `run` and `replay`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct OutputArgs {
    /// Write an HTML report here: one self-contained file (no script, no network) with
    /// the outcome table, latency histogram and percentile curve, rate over time and
    /// answers per app.
    #[arg(long, env = "EVAPI_HTML")]
    pub html: Option<PathBuf>,
    /// Write a JUnit XML file here (each expectation, or each replayed transaction, a
    /// test case; a replay lists at most 1,000 failed and 1,000 passed).
    #[arg(long, env = "EVAPI_JUNIT")]
    pub junit: Option<PathBuf>,
}

impl OutputArgs {
    pub(crate) fn write(
        &self,
        page: impl FnOnce() -> evapi_sim::html::Page,
        junit: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if let Some(path) = &self.html {
            let mut page = page();
            page.made_by(&format!("evapi-sim {}", evapi_cli::VERSION));
            std::fs::write(path, evapi_sim::html::render(&page))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if let Some(path) = &self.junit {
            std::fs::write(path, junit())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// `--metrics` and its admin token, for `demo` and `run`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MetricsArgs {
    /// Serve Prometheus metrics (the socket's and the run's) at GET /metrics, and the
    /// socket's admin API, on this address while the run lasts.
    #[arg(long, env = "EVAPI_METRICS", value_parser = evapi_cli::addr::evapi)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Bearer token for admin requests on --metrics (required for them off loopback).
    #[arg(long, env = "EVAPI_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
}

pub(super) fn parse_id_fields(s: &str) -> Result<IdFields, String> {
    match s.split_once(',') {
        Some((i, l)) if !i.trim().is_empty() && !l.trim().is_empty() => {
            Ok(IdFields::new(i.trim(), l.trim()))
        }
        _ => Err(format!(
            "expected INDEX,LABEL (e.g. tr_index,tr_label), got {s:?}"
        )),
    }
}

/// Run `loaded` to the end (or SIGINT/SIGTERM), print its summary and write its
/// reports; the exit code says whether every expectation held.
pub(super) async fn scenario(
    loaded: &Loaded,
    options: &RunOptions,
    progress: bool,
    report_path: Option<&std::path::Path>,
    outputs: &OutputArgs,
) -> anyhow::Result<ExitCode> {
    let bar = crate::progress::Bar::new(loaded.scenario.traffic.count, progress);
    // Ctrl-C (or SIGTERM) stops the traffic; the partial report is still printed.
    let interrupt = tokio_util::sync::CancellationToken::new();
    let on_signal = interrupt.clone();
    let signals = tokio::spawn(async move {
        evapi_ops::signal::terminated().await;
        on_signal.cancel();
    });
    let options = RunOptions {
        interrupt: Some(interrupt),
        ..options.clone()
    };
    let report = engine::run(loaded, &options, &bar).await;
    signals.abort();
    let report = report?;
    println!("{}", report.summary());
    if let Some(path) = report_path {
        let json = serde_json::to_string_pretty(&report).context("report")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    outputs.write(|| report.page(), || evapi_sim::junit::run(&report))?;
    if report.interrupted {
        eprintln!("evapi-sim: interrupted; the counts above are partial");
        Ok(ExitCode::from(EXIT_INTERRUPTED))
    } else if report.passed {
        Ok(ExitCode::SUCCESS)
    } else {
        let failed: Vec<String> = report
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: expected {}, got {}", c.what, c.expected, c.actual))
            .collect();
        eprintln!("evapi-sim: expectations failed: {}", failed.join("; "));
        Ok(ExitCode::from(EXIT_FAILED))
    }
}
