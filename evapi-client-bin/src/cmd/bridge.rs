//! `evapi-client bridge`: the I/O around [`evapi_nats::bridge`]: NATS and the
//! node connected (the node again after it closes), metrics, the exit line.

use std::process::ExitCode;
use std::sync::Arc;

use std::time::Duration;

use super::shared::{final_code, node_name, IdArgs};
use super::Ctx;
use evapi_client::{Backoff, Client, ClientConfig};
use evapi_nats::{BridgeConfig, BridgeCounts, NatsOptions};
use evapi_proto::IdFields;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Join a node's evapi socket (--addr) to NATS JetStream: every event is published
/// on evapi.NODE.events, every answer on evapi.NODE.answers is written back.
///
/// The node's socket is read at full speed whatever NATS does: events JetStream has
/// not confirmed are held (and published again when NATS is back) up to
/// --buffer-bytes; past it new events are shed, answered with --shed-code when set.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  evapi-client --addr 127.0.0.1:8448 bridge --nats nats://127.0.0.1:4222 --node sip-a
  evapi-client bridge --nats tls://nats.example.com:4222 --nats-tls-ca ca.pem \\
      --nats-creds bridge.creds --shed-code 503 --metrics 127.0.0.1:9101")]
pub(crate) struct BridgeArgs {
    /// Events published and awaiting JetStream's confirmation at once.
    #[arg(long, env = "EVAPI_WINDOW", default_value_t = evapi_nats::DEFAULT_WINDOW)]
    pub window: usize,
    /// Bytes of events held while JetStream does not confirm them (NATS away); past
    /// it new events are shed.
    #[arg(long, env = "EVAPI_BUFFER_BYTES", default_value_t = evapi_nats::DEFAULT_BUFFER_BYTES)]
    pub buffer_bytes: usize,
    /// Bytes of answers from NATS waiting to be written to the node (a node that
    /// reads slowly); past it answers go back to the stream for a second later, counted.
    #[arg(long, env = "EVAPI_ANSWERS_BUFFER_BYTES", default_value_t = evapi_nats::DEFAULT_ANSWERS_BUFFER_BYTES)]
    pub answers_buffer_bytes: usize,
    /// Without --seal-key-file: for this long after it starts, the bridge writes
    /// answers naming transactions it did not see (its predecessor may have published
    /// them before a restart); later such answers are dropped as forged. 0s: never.
    /// With a seal key it does not apply: such answers need the predecessor's seal.
    #[arg(long, env = "EVAPI_PREDECESSOR_GRACE", default_value = "120s", value_parser = humantime::parse_duration)]
    pub predecessor_grace: Duration,
    /// A file holding the node's seal key, a text line of at least 32 bytes, the same
    /// for every bridge of the node (e.g. `head -c 32 /dev/urandom | base64`, chmod
    /// 600): events are sealed (header Evapi-Seal, an HMAC of node, ids and deadline,
    /// which apps copy onto their answers), and an answer naming a transaction is
    /// written only with a valid seal, also after a restart.
    #[arg(long, env = "EVAPI_SEAL_KEY_FILE", value_name = "FILE")]
    pub seal_key_file: Option<std::path::PathBuf>,
    /// How long an event is of use: the node's fr_inv_timer. Each event carries its
    /// deadline (header Evapi-Deadline); past it the bridge drops it unpublished (and
    /// sheds it before a live one) and apps skip it. 0s: no deadline.
    #[arg(long, env = "EVAPI_EVENT_TTL", default_value = "120s", value_parser = humantime::parse_duration)]
    pub event_ttl: Duration,
    /// Answer shed suspend events with this SIP code (e.g. 503) at once; without it
    /// they wait for the node's own timer (fr_inv_timer).
    #[arg(long, env = "EVAPI_SHED_CODE", value_parser = final_code)]
    pub shed_code: Option<u16>,
    /// Write to the node answers naming no transaction that match RULE, repeated for
    /// several: `tag` allows `{"tag":"x"}`, `event,name` a JSON object with only those
    /// top-level keys, `*` anything. None is written by default: such frames resume no
    /// call but steer the node's message-received route (an evapi_set_tag, say). With
    /// --seal-key-file an allowed frame also needs its own seal (docs/scale-out.md).
    #[arg(
        long = "allow-untransacted",
        value_name = "RULE",
        env = "EVAPI_ALLOW_UNTRANSACTED",
        value_delimiter = ';'
    )]
    pub allow_untransacted: Vec<String>,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long, env = "EVAPI_METRICS", value_parser = evapi_cli::addr::evapi_text)]
    pub metrics: Option<String>,
    #[command(flatten)]
    pub ids: IdArgs,
}

impl BridgeArgs {
    /// Bridge until SIGINT or SIGTERM.
    pub(crate) async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let Some(options) = &ctx.nats else {
            anyhow::bail!("bridge needs --nats URL (the NATS server to publish to)");
        };
        let mut bridge = BridgeConfig::new(node_name(ctx.node.clone())?);
        bridge.window = self.window;
        bridge.buffer_bytes = self.buffer_bytes;
        bridge.answers_buffer_bytes = self.answers_buffer_bytes;
        bridge.predecessor_grace = self.predecessor_grace;
        if let Some(path) = &self.seal_key_file {
            bridge.seal = Some(Arc::new(evapi_nats::seal::SealKey::from_file(path)?));
        }
        for rule in &self.allow_untransacted {
            bridge.untransacted.allow(rule)?;
        }
        bridge.event_ttl = (!self.event_ttl.is_zero()).then_some(self.event_ttl);
        bridge.stream = options.stream;
        if let (Some(i), Some(l)) = (&self.ids.index_field, &self.ids.label_field) {
            bridge.ids = evapi_proto::answer::AnswerReader::with_fields([IdFields::new(i, l)]);
        }
        bridge.shed = self.shed_code.map(|code| {
            evapi_client::respond::Responder::with(code, None, Duration::ZERO, self.ids.matcher())
        });
        serve(
            &ctx.node_addr,
            &ctx.config,
            options,
            bridge,
            self.metrics.as_deref(),
        )
        .await
    }
}

/// Run the bridge until SIGINT/SIGTERM.
async fn serve(
    addr: &str,
    config: &ClientConfig,
    options: &NatsOptions,
    bridge: BridgeConfig,
    metrics: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let counts = Arc::new(BridgeCounts::default());
    let stop = CancellationToken::new();
    if let Some(at) = metrics {
        let collector = Box::new(crate::metrics::BridgeMetrics(Arc::clone(&counts)));
        crate::metrics::serve(at, "bridge", collector, stop.clone().cancelled_owned()).await?;
    }
    let mut options = options.clone();
    options.name = Some(format!("evapi bridge {}", bridge.node));
    let nats = options.connect(Some(counts.link())).await?;
    eprintln!(
        "bridging {addr} as node {}: events on {}, answers on {}",
        bridge.node,
        evapi_nats::events_subject(&bridge.node),
        evapi_nats::answers_subject(&bridge.node)
    );
    let forever = Backoff {
        attempts: None,
        ..Backoff::default()
    };
    // One watcher for the whole run, so a signal is never missed between phases; the
    // bridge, told by `stop`, publishes what it holds (for up to 5 s) and returns.
    let watcher = stop.clone();
    tokio::spawn(async move {
        evapi_ops::signal::terminated().await;
        watcher.cancel();
    });
    let mut first = true;
    let result = loop {
        let node = if first {
            Client::connect(addr, config).await
        } else {
            tokio::select! {
                c = Client::connect_with_retry(addr, config, &forever) => c,
                () = stop.cancelled() => break Ok(()),
            }
        };
        first = false;
        let node = match node {
            Ok(node) => node,
            Err(e) => break Err(anyhow::Error::from(e)),
        };
        let ended = evapi_nats::bridge(node, nats.clone(), &bridge, &counts, stop.clone()).await;
        if stop.is_cancelled() {
            // The node going away while the bridge stops (a node shut down before its
            // bridge, or a reconnect it accepted then reset) is not the bridge failing:
            // what it held was published. A NATS error here still is.
            break match ended {
                Err(evapi_nats::NatsError::Node(e)) => {
                    warn!(addr, error = %e, "the node's connection ended while stopping");
                    Ok(())
                }
                other => other.map_err(Into::into),
            };
        }
        match ended {
            Ok(()) => warn!(addr, "the node closed the connection; reconnecting"),
            Err(e) => warn!(addr, error = %e, "the bridge stopped; reconnecting"),
        }
    };
    stop.cancel();
    let c = counts.snapshot();
    println!(
        "bridged {} events ({} confirmed, {} retried, {} shed, {} expired, {} held), {} answers, {} dropped answers, {} refused answers, {} answers past the buffer, {} answers expired, {} answers redelivered, {} answers to a predecessor's events, {} refused naming no transaction",
        c.events,
        c.published,
        c.retries,
        c.shed,
        c.expired,
        c.buffered,
        c.answers,
        c.answers_dropped,
        c.answers_refused,
        c.answers_shed,
        c.answers_expired,
        c.answers_redelivered,
        c.answers_unverified,
        c.untransacted_refused,
    );
    result?;
    Ok(ExitCode::SUCCESS)
}
