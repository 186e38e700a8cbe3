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
pub(crate) struct ListenArgs {
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
    /// Exit 2 when a node closes the connection or it is lost, as a one-shot script
    /// expects. Without it, listen connects again (jittered backoff, for ever) and
    /// goes on when the node is back.
    #[arg(long, env = "EVAPI_EXIT_ON_CLOSE")]
    pub exit_on_close: bool,
}

impl ListenArgs {
    /// Print until --count, --timeout or SIGINT/SIGTERM; each node is connected again
    /// when lost, and listening goes on (with --exit-on-close, the end of a connection
    /// ends it).
    pub(crate) async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let Self {
            json,
            count,
            timeout,
            matching,
            raw,
            exit_on_close,
        } = self;
        if raw && std::io::stdout().is_terminal() {
            eprintln!(
                "evapi-client: --raw on a terminal: peers' control characters reach it as they are"
            );
        }
        let mut source = Source::open(ctx, exit_on_close).await?;
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
            let (node, msg) = match next {
                Next::Message(node, msg) => (node, msg),
                Next::Closed(why) => anyhow::bail!("{why}"),
                Next::Ended => anyhow::bail!("the NATS subscription at {} ended", ctx.addr),
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

/// Where messages come from: one connection per node (reconnected on its own, unless
/// --exit-on-close), or the nodes' events on NATS (each names its node).
enum Source {
    Nodes(tokio::sync::mpsc::Receiver<Next>),
    Nats(Box<evapi_nats::NatsApp>),
}

/// What a source gave.
enum Next {
    /// A message from this node.
    Message(Arc<str>, Bytes),
    /// A node's connection ended (--exit-on-close), and why.
    Closed(String),
    /// The NATS subscription ended.
    Ended,
}

/// Messages read ahead from the nodes; past this the readers wait.
const MERGED: usize = 1024;

impl Source {
    async fn open(ctx: &Ctx, exit_on_close: bool) -> anyhow::Result<Self> {
        if let Some(options) = &ctx.nats {
            let mut options = options.clone();
            options.wait = Some(ctx.wait);
            let nats = options.connect(None).await?;
            let app = evapi_nats::NatsApp::observe(nats, ctx.node.as_deref()).await?;
            return Ok(Self::Nats(Box::new(app)));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(MERGED);
        if ctx.nodes.len() <= 1 {
            // One node: it must be there (within --wait) to begin with.
            let node = ctx
                .nodes
                .first()
                .cloned()
                .unwrap_or_else(|| evapi_client::nodes::Node::at(ctx.addr.clone()));
            let first = Client::connect(&ctx.addr, &ctx.config).await?;
            tokio::spawn(read_node(
                node,
                ctx.config.clone(),
                Some(first),
                exit_on_close,
                tx,
            ));
        } else {
            // Several: one that is down at the start does not hold up the others.
            for node in &ctx.nodes {
                let reader = read_node(
                    node.clone(),
                    ctx.config.clone(),
                    None,
                    exit_on_close,
                    tx.clone(),
                );
                tokio::spawn(reader);
            }
        }
        Ok(Self::Nodes(rx))
    }

    /// The next message and its node, or the end of a connection or subscription.
    async fn next(&mut self, max_frame: usize) -> anyhow::Result<Next> {
        match self {
            // The readers live as long as the receiver: the channel never ends first.
            Self::Nodes(rx) => Ok(rx.recv().await.unwrap_or(Next::Ended)),
            Self::Nats(app) => loop {
                let Some(event) = app.next().await else {
                    return Ok(Next::Ended);
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
                return Ok(Next::Message(Arc::from(event.node), event.payload));
            },
        }
    }
}

/// Read `node` into `tx` for as long as the receiver lives (starting with `first`, when
/// already connected), connecting again (jittered backoff) whenever the connection is
/// lost; with `exit_on_close`, the first loss is sent instead.
async fn read_node(
    node: evapi_client::nodes::Node,
    config: evapi_client::ClientConfig,
    first: Option<Client>,
    exit_on_close: bool,
    tx: tokio::sync::mpsc::Sender<Next>,
) {
    let name: Arc<str> = node.name.clone().into();
    let mut link = evapi_client::nodes::Link::new(&node, &config);
    let mut first = first;
    loop {
        let mut client = match first.take() {
            Some(client) => client,
            None => match link.connect().await {
                Ok(client) => client,
                Err(e) => {
                    let why = format!("cannot connect to {node}, and retrying cannot help: {e}");
                    let _ = tx.send(Next::Closed(why)).await;
                    return;
                }
            },
        };
        let ended = loop {
            match client.recv().await {
                Ok(Some(msg)) => {
                    if tx
                        .send(Next::Message(Arc::clone(&name), msg))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        if exit_on_close {
            let why = match &ended {
                Some(e) => e.to_string(),
                None => format!("connection to {} closed by the server", node.addr),
            };
            let _ = tx.send(Next::Closed(why)).await;
            return;
        }
        link.lost(ended.as_ref());
    }
}
