//! `evapi-client listen`: print messages as they come.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::script;
use std::io::IsTerminal as _;

use base64::Engine as _;
use bytes::Bytes;
use evapi_client::Client;

use super::Ctx;

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
    /// Print each message's bytes exactly as they came, for pipes. Without it, control
    /// characters a terminal would act on (escape sequences, \r, C1, bidi controls)
    /// are shown escaped (\x1b).
    #[arg(long, env = "EVAPI_RAW", conflicts_with = "json")]
    pub raw: bool,
}

impl ListenArgs {
    /// Print until --count, --timeout, SIGINT/SIGTERM or the end of the connection
    /// (with several nodes, each is reconnected when lost, and listening goes on).
    pub(crate) async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let Self {
            json,
            count,
            timeout,
            matching,
            raw,
        } = self;
        if raw && std::io::stdout().is_terminal() {
            eprintln!(
                "evapi-client: --raw on a terminal: peers' control characters reach it as they are"
            );
        }
        let mut source = Source::open(ctx).await?;
        // Lines name their node when several may speak.
        let several = ctx.nodes.len() > 1 || ctx.nats.is_some() && ctx.node.is_none();
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut signals = evapi_ops::signal::Signals::new();
        let mut seen = 0usize;
        let mut out = std::io::stdout().lock();
        loop {
            if count.is_some_and(|n| seen >= n) {
                return Ok(ExitCode::SUCCESS);
            }
            let next = tokio::select! {
                () = evapi_ops::time::sleep_until(deadline) => {
                    if let Some(n) = count {
                        eprintln!("evapi-client: {seen} of {n} messages before the timeout");
                        return Ok(ExitCode::from(evapi_cli::exit::FAILED));
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                // Stopped by hand (or by a script's kill): what was shown is the result.
                _ = signals.stop() => return Ok(ExitCode::SUCCESS),
                next = source.next(ctx.max_frame) => next?,
            };
            let Some((node, msg)) = next else {
                if ctx.nats.is_some() {
                    anyhow::bail!("the NATS subscription at {} ended", ctx.addr);
                }
                anyhow::bail!("connection to {} closed by the server", ctx.addr);
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
                    Ok(text) => serde_json::json!({ "ts": ts, "node": &*node, "msg": text }),
                    Err(_) => serde_json::json!({
                        "ts": ts,
                        "node": &*node,
                        "msg_b64": base64::engine::general_purpose::STANDARD.encode(&msg),
                    }),
                };
                // serde_json escapes C0; C1, DEL and bidi controls are escaped here.
                writeln!(
                    out,
                    "{}",
                    evapi_proto::text::json_for_terminal(&line.to_string())
                )?;
            } else {
                if several {
                    write!(out, "[{node}] ")?;
                }
                if raw {
                    out.write_all(&msg)?;
                } else {
                    out.write_all(evapi_proto::text::bytes_for_terminal(&msg).as_bytes())?;
                }
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
    }
}

/// Where messages come from: one connection, one per node (reconnected on its own),
/// or the nodes' events on NATS (each names its node).
enum Source {
    One(Box<Client>, Arc<str>),
    Many(tokio::sync::mpsc::Receiver<(Arc<str>, Bytes)>),
    Nats(Box<evapi_nats::NatsApp>),
}

/// Messages read ahead from several nodes; past this the readers wait.
const MERGED: usize = 1024;

impl Source {
    async fn open(ctx: &Ctx) -> anyhow::Result<Self> {
        if let Some(options) = &ctx.nats {
            let mut options = options.clone();
            options.wait = Some(ctx.wait);
            let nats = options.connect(None).await?;
            let app = evapi_nats::NatsApp::observe(nats, ctx.node.as_deref()).await?;
            return Ok(Self::Nats(Box::new(app)));
        }
        if ctx.nodes.len() <= 1 {
            let name = ctx
                .nodes
                .first()
                .map_or_else(|| ctx.addr.clone(), |n| n.name.clone());
            return Ok(Self::One(
                Box::new(Client::connect(&ctx.addr, &ctx.config).await?),
                name.into(),
            ));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(MERGED);
        for node in &ctx.nodes {
            tokio::spawn(read_node(node.clone(), ctx.config.clone(), tx.clone()));
        }
        Ok(Self::Many(rx))
    }

    /// The next message and its node; `None` when the (single) connection ended.
    async fn next(&mut self, max_frame: usize) -> anyhow::Result<Option<(Arc<str>, Bytes)>> {
        match self {
            Self::One(client, name) => Ok(client.recv().await?.map(|m| (Arc::clone(name), m))),
            Self::Many(rx) => Ok(rx.recv().await),
            Self::Nats(app) => loop {
                let Some(event) = app.next().await else {
                    return Ok(None);
                };
                // What a socket with this --max-frame would not have taken.
                if event.payload.len() > max_frame {
                    tracing::warn!(
                        bytes = event.payload.len(),
                        max_frame,
                        node = %event.node,
                        "event larger than --max-frame, skipped"
                    );
                    continue;
                }
                return Ok(Some((Arc::from(event.node), event.payload)));
            },
        }
    }
}

/// Read `node` into `tx` for as long as the receiver lives, reconnecting (jittered
/// backoff) whenever the connection is lost.
async fn read_node(
    node: evapi_client::nodes::Node,
    config: evapi_client::ClientConfig,
    tx: tokio::sync::mpsc::Sender<(Arc<str>, Bytes)>,
) {
    let name: Arc<str> = node.name.clone().into();
    let mut link = evapi_client::nodes::Link::new(&node, &config);
    loop {
        let Ok(mut client) = link.connect().await else {
            return;
        };
        let ended = loop {
            match client.recv().await {
                Ok(Some(msg)) => {
                    if tx.send((Arc::clone(&name), msg)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        link.lost(ended.as_ref());
    }
}
