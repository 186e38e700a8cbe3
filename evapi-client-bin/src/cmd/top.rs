//! `evapi-client top`: the admin API's client list in the terminal, with live rates,
//! refreshed every interval, for an operator who would otherwise curl the JSON.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use evapi_proto::text::for_terminal;
use http_body_util::{BodyExt, Empty};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// Longest wait for one admin request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET path` on the admin listener at `addr`; the JSON body.
async fn get(addr: &str, path: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to the admin listener {addr}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(conn);
        let mut req = Request::get(path).header(HOST, addr);
        if let Some(token) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let resp = sender
            .send_request(req.body(Empty::<Bytes>::new())?)
            .await
            .context("HTTP request")?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&body)
            .with_context(|| format!("{path}: not JSON (HTTP {status})"))?;
        if !status.is_success() {
            bail!(
                "{path}: HTTP {status}: {}",
                value["error"].as_str().unwrap_or("no reason given")
            );
        }
        anyhow::Ok(value)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .with_context(|| format!("no answer from {addr} within {REQUEST_TIMEOUT:?}"))?
}

/// Counters of one client at one poll.
#[derive(Debug, Clone, Copy)]
struct Sample {
    frames_in: u64,
    frames_out: u64,
}

/// Render one table: `now` the clients, `before` the previous poll's counters and
/// how long ago it was (rates are per second between the two).
fn table(
    addr: &str,
    clients: &[Value],
    before: Option<(&HashMap<u64, Sample>, Duration)>,
) -> String {
    let mut out = String::new();
    let num = |c: &Value, k: &str| c[k].as_u64().unwrap_or(0);
    let rate = |c: &Value, pick: fn(&Sample) -> u64, now: u64| -> String {
        let Some((prev, dt)) = before else {
            return "-".to_owned();
        };
        match prev.get(&num(c, "connid")) {
            Some(p) if dt.as_secs_f64() > 0.0 => format!(
                "{:.0}",
                now.saturating_sub(pick(p)) as f64 / dt.as_secs_f64()
            ),
            _ => "-".to_owned(),
        }
    };
    let queued: u64 = clients.iter().map(|c| num(c, "queue_bytes")).sum();
    let _ = writeln!(
        out,
        "evapi admin {}: {} clients, {queued} bytes queued",
        for_terminal(addr),
        clients.len()
    );
    let _ = writeln!(
        out,
        "{:>6} {:>6} {:<22} {:<12} {:<5} {:<14} {:>8} {:>8} {:>6} {:>9}",
        "CONIDX", "CONNID", "PEER", "TAG", "VIA", "IDENTITY", "IN/s", "OUT/s", "QUEUE", "QBYTES"
    );
    for c in clients {
        let peer = format!(
            "{}:{}",
            c["srcaddr"].as_str().unwrap_or("?"),
            num(c, "srcport")
        );
        let identity = c["auth"]
            .as_str()
            .or_else(|| c["tls_subject"].as_str())
            .unwrap_or("-");
        let state = if c["accepted"].as_bool() == Some(false) {
            " (pending)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:>6} {:>6} {:<22} {:<12} {:<5} {:<14} {:>8} {:>8} {:>6} {:>9}{state}",
            num(c, "conidx"),
            num(c, "connid"),
            for_terminal(&peer),
            for_terminal(c["tag"].as_str().unwrap_or("-")),
            for_terminal(c["transport"].as_str().unwrap_or("tcp")),
            for_terminal(identity),
            rate(c, |s| s.frames_in, num(c, "frames_in")),
            rate(c, |s| s.frames_out, num(c, "frames_out")),
            num(c, "queue_depth"),
            num(c, "queue_bytes"),
        );
    }
    out
}

fn samples(clients: &[Value]) -> HashMap<u64, Sample> {
    clients
        .iter()
        .filter_map(|c| {
            Some((
                c["connid"].as_u64()?,
                Sample {
                    frames_in: c["frames_in"].as_u64().unwrap_or(0),
                    frames_out: c["frames_out"].as_u64().unwrap_or(0),
                },
            ))
        })
        .collect()
}

/// The connected clients of a server's admin API (evapi-server --metrics ADDR),
/// with frames in and out per second, refreshed in place; Ctrl-C ends it.
#[derive(Debug, clap::Args)]
pub(crate) struct TopArgs {
    /// The server's --metrics address.
    #[arg(long, env = "EVAPI_METRICS", value_parser = evapi_cli::addr::evapi_text)]
    pub metrics: String,
    /// The server's --control-token (admin requests need it when it is set).
    #[arg(long, env = "EVAPI_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
    /// Time between refreshes.
    #[arg(long, env = "EVAPI_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// Print one table (two polls an interval apart, for the rates) and exit.
    #[arg(long)]
    pub once: bool,
}

impl TopArgs {
    /// Show the table until SIGINT or SIGTERM (or once).
    pub(crate) async fn run(self, _ctx: &super::Ctx) -> anyhow::Result<ExitCode> {
        show(
            &self.metrics,
            self.control_token.as_deref(),
            self.interval,
            self.once,
        )
        .await
        .map(|()| ExitCode::SUCCESS)
    }
}

/// Poll `addr`'s `/clients` every `interval` and print the table; with `once`, two
/// polls `interval` apart and one table (for scripts). Ends on Ctrl-C.
///
/// # Errors
///
/// The admin listener cannot be reached, refuses the token, or answers nonsense.
async fn show(
    addr: &str,
    token: Option<&str>,
    interval: Duration,
    once: bool,
) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal() && !once;
    let mut before: Option<(HashMap<u64, Sample>, Instant)> = None;
    loop {
        let list = get(addr, "/clients", token).await?;
        let clients = list["clients"].as_array().cloned().unwrap_or_default();
        let now = Instant::now();
        let shown = before
            .as_ref()
            .map(|(prev, at)| (prev, now.duration_since(*at)));
        if !once || shown.is_some() {
            let text = table(addr, &clients, shown);
            let mut stdout = std::io::stdout().lock();
            if terminal {
                // Home and clear: redraw in place.
                write!(stdout, "\x1b[H\x1b[2J")?;
            }
            write!(stdout, "{text}")?;
            if !terminal {
                writeln!(stdout)?;
            }
            stdout.flush()?;
            if once {
                return Ok(());
            }
        }
        before = Some((samples(&clients), now));
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = evapi_ops::signal::terminated() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_polls() {
        let clients: Vec<Value> = serde_json::from_str(
            r#"[{"conidx":0,"connid":7,"srcaddr":"127.0.0.1","srcport":5000,"tag":"app",
                 "transport":"tls","auth":"billing","frames_in":300,"frames_out":1000,
                 "queue_depth":2,"queue_bytes":90,"accepted":true}]"#,
        )
        .unwrap();
        let prev = HashMap::from([(
            7,
            Sample {
                frames_in: 100,
                frames_out: 0,
            },
        )]);
        let text = table("x", &clients, Some((&prev, Duration::from_secs(2))));
        let row = text.lines().nth(2).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "0",
                "7",
                "127.0.0.1:5000",
                "app",
                "tls",
                "billing",
                "100",
                "500",
                "2",
                "90"
            ]
        );
        assert!(text.starts_with("evapi admin x: 1 clients, 90 bytes queued"));
        let first = table("x", &clients, None);
        assert!(first.lines().nth(2).unwrap().contains(" - "));
    }
}
