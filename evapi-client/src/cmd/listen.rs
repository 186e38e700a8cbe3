//! `evapi-client listen`: print messages as they come.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use evapi_client::{script, Client};

use super::{Ctx, EXIT_FAILED};

/// Print messages as they come.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// One JSON line per message: {"ts":..., "msg":...} (or "msg_b64" for binary).
    #[arg(long, env = "EVAPI_JSON")]
    pub json: bool,
    /// Exit 0 after this many (matching) messages.
    #[arg(long, env = "EVAPI_COUNT")]
    pub count: Option<usize>,
    /// Stop after this long; exit 1 if --count was not reached.
    #[arg(long, env = "EVAPI_TIMEOUT", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Only messages containing this text are printed and counted.
    #[arg(long = "match", env = "EVAPI_MATCH", value_name = "TEXT")]
    pub matching: Option<String>,
}

impl ListenArgs {
    /// Print until --count, --timeout or the end of the connection.
    pub(crate) async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let Self {
            json,
            count,
            timeout,
            matching,
        } = self;
        let (addr, config) = (ctx.addr.as_str(), &ctx.config);
        let mut client = Client::connect(addr, config).await?;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut seen = 0usize;
        let mut out = std::io::stdout().lock();
        loop {
            if count.is_some_and(|n| seen >= n) {
                return Ok(ExitCode::SUCCESS);
            }
            let next = match deadline {
                Some(at) => match tokio::time::timeout_at(at, client.recv()).await {
                    Ok(r) => r,
                    Err(_) if count.is_some() => {
                        eprintln!(
                            "evapi-client: {seen} of {} messages before the timeout",
                            count.unwrap_or(0)
                        );
                        return Ok(ExitCode::from(EXIT_FAILED));
                    }
                    Err(_) => return Ok(ExitCode::SUCCESS),
                },
                None => client.recv().await,
            };
            let Some(msg) = next? else {
                anyhow::bail!("connection to {addr} closed by the server");
            };
            if let Some(text) = &matching {
                if !script::contains(&msg, text.as_bytes()) {
                    continue;
                }
            }
            seen += 1;
            if json {
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let line = match std::str::from_utf8(&msg) {
                    Ok(text) => serde_json::json!({ "ts": ts, "msg": text }),
                    Err(_) => serde_json::json!({
                        "ts": ts,
                        "msg_b64": base64::engine::general_purpose::STANDARD.encode(&msg),
                    }),
                };
                writeln!(out, "{line}")?;
            } else {
                out.write_all(&msg)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
    }
}
