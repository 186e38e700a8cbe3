//! Flags and the non-interactive subcommands: send, listen, respond, run.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Parser, Subcommand};
use evapi_client::client::DEFAULT_ADDR;
use evapi_client::nats::{AppConfig, AppMode, NatsOptions};
use evapi_client::respond::{self, Counts, Responder, Stop};
use evapi_client::script::{self, RunError};
use evapi_client::{Client, ClientConfig, ReplyTemplate, Secret, SuspendMatcher};
use evapi_proto::{Framing, IdFields, DEFAULT_MAX_FRAME};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

/// Exit code: an expectation failed (a script step, a listen timeout).
pub const EXIT_FAILED: u8 = 1;

/// Talk to an evapi event socket (evapi-server's or Kamailio's evapi module).
#[derive(Debug, Parser)]
#[command(
    name = "evapi-client",
    version,
    after_help = "\
Examples:
  evapi-client repl                                  # interactive, events shown as they come
  evapi-client send '{\"event\":\"ping\"}' --expect-reply
  evapi-client listen --json --count 10 --timeout 30s
  evapi-client respond --code 486                    # answer every suspend with 486 Busy Here
  evapi-client run checks.evapi                      # send/expect script for CI
  EVAPI_TOKEN=... evapi-client --tls --tls-ca ca.pem --addr evapi.example.com listen
  evapi-client top --metrics 127.0.0.1:9100          # who is connected, rates, queues

Exit codes: 0 success, 1 an expectation failed, 2 usage or I/O error."
)]
pub struct Args {
    /// Address of the evapi socket: IP, IP:port, [v6]:port or host:port (port 8448 when
    /// none is given).
    #[arg(long, env = "EVAPI_ADDR", default_value = DEFAULT_ADDR, global = true, value_parser = evapi_cli::addr::evapi_text)]
    pub addr: String,

    /// Framing: netstring (Kamailio netstring_format=1), bare (=0) or line (NDJSON).
    #[arg(
        long,
        env = "EVAPI_FRAMING",
        default_value = "netstring",
        global = true
    )]
    pub framing: Framing,

    /// Longest frame accepted or sent, in bytes.
    #[arg(long, env = "EVAPI_MAX_FRAME", default_value_t = DEFAULT_MAX_FRAME, global = true)]
    pub max_frame: usize,

    /// Give up connecting after this long.
    #[arg(long, env = "EVAPI_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub connect_timeout: Duration,

    /// Keep retrying to connect for this long, for a client started before its server
    /// (e.g. 10s in CI); 0s tries once.
    #[arg(long, env = "EVAPI_WAIT", default_value = "0s", value_parser = humantime::parse_duration, global = true)]
    pub wait: Duration,

    /// Speak TLS; the server's certificate is checked against --tls-ca (or the
    /// system's trust store) and the host name in --addr (or --tls-server-name).
    #[arg(long, env = "EVAPI_TLS", global = true)]
    pub tls: bool,

    /// CA certificates (PEM) to verify the server with; implies --tls.
    #[arg(long, env = "EVAPI_TLS_CA", value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for servers that require one (mutual TLS); implies
    /// --tls, needs --tls-key.
    #[arg(
        long,
        env = "EVAPI_TLS_CERT",
        value_name = "FILE",
        global = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "EVAPI_TLS_KEY",
        value_name = "FILE",
        global = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// The name the server's certificate must carry, when not the host in --addr.
    #[arg(
        long,
        env = "EVAPI_TLS_SERVER_NAME",
        value_name = "NAME",
        global = true
    )]
    pub tls_server_name: Option<String>,

    /// Authenticate with this token (a server started with --auth-tokens). Prefer the
    /// variable to the flag: flags show in `ps`.
    #[arg(long, env = "EVAPI_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub verbosity: evapi_cli::Verbosity,

    #[command(subcommand)]
    pub command: Command,
}

impl Args {
    /// How to connect, from the flags (loads TLS files).
    ///
    /// # Errors
    ///
    /// A TLS file that cannot be loaded.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let tls = if self.tls || self.tls_ca.is_some() || self.tls_cert.is_some() {
            let pair = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
            Some(
                evapi_client::transport::client_config(self.tls_ca.as_deref(), pair)
                    .context("cannot set up TLS")?,
            )
        } else {
            None
        };
        let mut config = ClientConfig::default();
        config.framing = self.framing;
        config.max_frame = self.max_frame;
        config.connect_timeout = self.connect_timeout;
        config.wait = self.wait;
        config.tls = tls;
        config.tls_server_name.clone_from(&self.tls_server_name);
        config.token = self.token.clone().map(evapi_client::Secret::new);
        Ok(config)
    }
}

/// NATS: where events come from instead of --addr (and where `bridge` sends them).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "NATS (scale-out; see docs/scale-out.md)")]
pub struct NatsArgs {
    /// NATS server(s), comma-separated (nats://HOST:PORT, tls://HOST:PORT): respond,
    /// run, repl and send take events from the JetStream work queue instead of
    /// --addr, listen watches them; bridge joins --addr to it.
    #[arg(long, env = "EVAPI_NATS", value_name = "URL", global = true)]
    pub nats: Option<String>,
    /// A node's name in subjects: bridge: this node's (default: the host name); listen:
    /// only its events; run, repl, send: where frames that answer no event go.
    #[arg(long, env = "EVAPI_NODE", global = true)]
    pub node: Option<String>,
    /// An event taken and not answered within this long (the app died) goes to
    /// another app.
    #[arg(long, env = "EVAPI_ACK_WAIT", default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub ack_wait: Duration,
    /// NATS credentials file (JWT and NKey seed, as `nsc` writes them).
    #[arg(long, env = "EVAPI_NATS_CREDS", value_name = "FILE", global = true)]
    pub nats_creds: Option<PathBuf>,
    /// A file holding an NKey seed (SU...), for servers that list its public key.
    #[arg(long, env = "EVAPI_NATS_NKEY", value_name = "FILE", global = true)]
    pub nats_nkey: Option<PathBuf>,
    /// NATS token (prefer the variable: flags show in `ps`).
    #[arg(long, env = "EVAPI_NATS_TOKEN", hide_env_values = true, global = true)]
    pub nats_token: Option<String>,
    /// NATS user; the password comes from --nats-password.
    #[arg(
        long,
        env = "EVAPI_NATS_USER",
        global = true,
        requires = "nats_password"
    )]
    pub nats_user: Option<String>,
    /// NATS password (prefer the variable).
    #[arg(
        long,
        env = "EVAPI_NATS_PASSWORD",
        hide_env_values = true,
        global = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<String>,
    /// CA certificates (PEM) to verify the NATS server with; implies TLS.
    #[arg(long, env = "EVAPI_NATS_TLS_CA", value_name = "FILE", global = true)]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS servers that verify clients.
    #[arg(
        long,
        env = "EVAPI_NATS_TLS_CERT",
        value_name = "FILE",
        global = true,
        requires = "nats_tls_key"
    )]
    pub nats_tls_cert: Option<PathBuf>,
    /// The private key of --nats-tls-cert (PEM).
    #[arg(
        long,
        env = "EVAPI_NATS_TLS_KEY",
        value_name = "FILE",
        global = true,
        requires = "nats_tls_cert"
    )]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS.
    #[arg(long, env = "EVAPI_NATS_REQUIRE_TLS", global = true)]
    pub nats_require_tls: bool,
}

impl NatsArgs {
    /// The connection options, when --nats is given.
    ///
    /// # Errors
    ///
    /// A bad --node, or an --nats-nkey file that cannot be read.
    pub fn options(&self) -> anyhow::Result<Option<NatsOptions>> {
        let Some(url) = &self.nats else {
            return Ok(None);
        };
        if let Some(node) = &self.node {
            anyhow::ensure!(
                evapi_client::nats::valid_node(node),
                "--node {node:?}: letters, digits, '-' and '_' only, at most 64"
            );
        }
        let nkey = match &self.nats_nkey {
            Some(path) => Some(Secret::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --nats-nkey {}", path.display()))?
                    .trim(),
            )),
            None => None,
        };
        Ok(Some(NatsOptions {
            url: url.clone(),
            creds: self.nats_creds.clone(),
            nkey,
            token: self.nats_token.clone().map(Secret::new),
            user: self
                .nats_user
                .clone()
                .zip(self.nats_password.clone().map(Secret::new)),
            tls_ca: self.nats_tls_ca.clone(),
            tls_cert: self.nats_tls_cert.clone().zip(self.nats_tls_key.clone()),
            require_tls: self.nats_require_tls,
            name: Some(format!("evapi-client {}", std::process::id())),
            wait: None,
        }))
    }
}

/// Where a suspend event keeps its ids, when not `tindex`/`tlabel` or `data.index`/`data.label`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdArgs {
    /// Dotted path of the transaction index in suspend events (e.g. tr_index, data.index).
    #[arg(long, env = "EVAPI_INDEX_FIELD", requires = "label_field")]
    pub index_field: Option<String>,
    /// Dotted path of the transaction label in suspend events.
    #[arg(long, env = "EVAPI_LABEL_FIELD", requires = "index_field")]
    pub label_field: Option<String>,
}

impl IdArgs {
    fn matcher(&self) -> SuspendMatcher {
        match (&self.index_field, &self.label_field) {
            (Some(i), Some(l)) => SuspendMatcher::with_fields(IdFields::new(i, l)),
            _ => SuspendMatcher::default(),
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Interactive prompt: incoming messages shown above it, commands to send and answer.
    Repl {
        /// No colours (NO_COLOR is respected too).
        #[arg(long, env = "EVAPI_NO_COLOR")]
        no_color: bool,
        #[command(flatten)]
        ids: IdArgs,
    },
    /// Send payloads and exit.
    Send {
        /// Payloads to send, each one message; `-` reads one payload per stdin line.
        #[arg(required = true)]
        payloads: Vec<String>,
        /// Then wait for N messages (1 if no number) and print them.
        #[arg(long, env = "EVAPI_EXPECT_REPLY", num_args = 0..=1, default_missing_value = "1", value_name = "N")]
        expect_reply: Option<usize>,
        /// How long --expect-reply waits in all.
        #[arg(long, env = "EVAPI_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print messages as they come.
    Listen {
        /// One JSON line per message: {"ts":..., "msg":...} (or "msg_b64" for binary).
        #[arg(long, env = "EVAPI_JSON")]
        json: bool,
        /// Exit 0 after this many (matching) messages.
        #[arg(long, env = "EVAPI_COUNT")]
        count: Option<usize>,
        /// Stop after this long; exit 1 if --count was not reached.
        #[arg(long, env = "EVAPI_TIMEOUT", value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Only messages containing this text are printed and counted.
        #[arg(long = "match", env = "EVAPI_MATCH", value_name = "TEXT")]
        matching: Option<String>,
    },
    /// Answer every suspend event (async relay) automatically; the load-test partner.
    Respond {
        /// SIP code to answer with.
        #[arg(long, env = "EVAPI_CODE", default_value_t = 200, value_parser = final_code)]
        code: u16,
        /// Reason phrase (default: the code's usual phrase); one line, at most 128 bytes.
        #[arg(long, env = "EVAPI_REASON", value_parser = reason_phrase)]
        reason: Option<String>,
        /// Answer template: JSON where "$tindex", "$tlabel", "$code", "$reason" and
        /// "$some.path" (into the event) are replaced, and "${...}" inside strings.
        #[arg(long, env = "EVAPI_REPLY", value_name = "TEMPLATE")]
        reply: Option<String>,
        /// Wait this long before each answer.
        #[arg(long, env = "EVAPI_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
        delay: Duration,
        /// Connections to open (each answers what it receives).
        #[arg(long, env = "EVAPI_CONNECTIONS", default_value_t = 1)]
        connections: usize,
        /// Exit after this many answers in all.
        #[arg(long, env = "EVAPI_COUNT")]
        count: Option<u64>,
        #[command(flatten)]
        ids: IdArgs,
    },
    /// Join a node's evapi socket (--addr) to NATS JetStream: every event is published
    /// on evapi.NODE.events, every answer on evapi.NODE.answers is written back.
    ///
    /// The node's socket is read at full speed whatever NATS does: events JetStream has
    /// not confirmed are held (and published again when NATS is back) up to
    /// --buffer-bytes; past it new events are shed, answered with --shed-code when set.
    #[command(after_help = "\
Examples:
  evapi-client --addr 127.0.0.1:8448 bridge --nats nats://127.0.0.1:4222 --node sip-a
  evapi-client bridge --nats tls://nats.example.com:4222 --nats-tls-ca ca.pem \\
      --nats-creds bridge.creds --shed-code 503 --metrics 127.0.0.1:9101")]
    Bridge {
        /// Events published and awaiting JetStream's confirmation at once.
        #[arg(long, env = "EVAPI_WINDOW", default_value_t = evapi_client::nats::DEFAULT_WINDOW)]
        window: usize,
        /// Bytes of events held while JetStream does not confirm them (NATS away); past
        /// it new events are shed.
        #[arg(long, env = "EVAPI_BUFFER_BYTES", default_value_t = evapi_client::nats::DEFAULT_BUFFER_BYTES)]
        buffer_bytes: usize,
        /// Bytes of answers from NATS waiting to be written to the node (a node that
        /// reads slowly); past it answers are dropped and counted.
        #[arg(long, env = "EVAPI_ANSWERS_BUFFER_BYTES", default_value_t = evapi_client::nats::DEFAULT_ANSWERS_BUFFER_BYTES)]
        answers_buffer_bytes: usize,
        /// For this long after it starts, the bridge writes answers naming transactions
        /// it did not see (its predecessor may have published them before a restart);
        /// later such answers are dropped as forged. 0s: never.
        #[arg(long, env = "EVAPI_PREDECESSOR_GRACE", default_value = "120s", value_parser = humantime::parse_duration)]
        predecessor_grace: Duration,
        /// Answer shed suspend events with this SIP code (e.g. 503) at once; without it
        /// they wait for the node's own timer (fr_inv_timer).
        #[arg(long, env = "EVAPI_SHED_CODE", value_parser = final_code)]
        shed_code: Option<u16>,
        /// Serve Prometheus metrics on this address (GET /metrics).
        #[arg(long, env = "EVAPI_METRICS", value_parser = evapi_cli::addr::evapi_text)]
        metrics: Option<String>,
        #[command(flatten)]
        ids: IdArgs,
    },
    /// Run a send/expect script (see docs/client.md); `-` reads it from stdin.
    Run {
        /// The script file.
        script: PathBuf,
        /// Default wait for each expect step.
        #[arg(long, env = "EVAPI_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
        timeout: Duration,
    },
    /// A transparent proxy between a node's evapi socket (--upstream) and its apps,
    /// recording every frame both ways to a transcript (--record; see docs/transcript.md).
    ///
    /// Point the apps at --listen instead of the node. Bytes pass unchanged; a copy of
    /// each direction is framed (--framing) to timestamp whole frames. Ends on Ctrl-C
    /// or SIGTERM, with the transcript flushed.
    #[command(after_help = "\
Examples:
  evapi-client proxy --listen 127.0.0.1:8449 --upstream 127.0.0.1:8448 --record day.jsonl
  evapi-client proxy --listen 127.0.0.1:8449 --upstream 10.0.0.5:8448 \\
      --record /var/log/evapi/day.jsonl --rotate-bytes 100000000   # day.jsonl, day.jsonl.1, ...
  evapi-sim replay day.jsonl                        # then: play it to an app")]
    Proxy {
        /// Where apps connect.
        #[arg(long, env = "EVAPI_LISTEN", value_parser = evapi_cli::addr::evapi_text)]
        listen: String,
        /// The node's evapi socket.
        #[arg(long, env = "EVAPI_UPSTREAM", value_parser = evapi_cli::addr::evapi_text)]
        upstream: String,
        /// Write the transcript here (without it the proxy only forwards).
        #[arg(long, env = "EVAPI_RECORD", value_name = "FILE")]
        record: Option<PathBuf>,
        #[command(flatten)]
        recording: RecordingArgs,
        /// Apps connected through the proxy at once; past it the connection quiet the
        /// longest (no byte either way) is closed to make room for the new one.
        #[arg(long, env = "EVAPI_MAX_CLIENTS", default_value_t = evapi_client::proxy::DEFAULT_MAX_CLIENTS)]
        max_clients: usize,
        /// Close a connection with no byte either way for this long (default: never).
        #[arg(long, env = "EVAPI_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
        idle_timeout: Option<Duration>,
    },
    /// Record what a node's socket (--addr) sends, as one more listening client, to a
    /// transcript (docs/transcript.md). Ends on Ctrl-C, SIGTERM, --count or --duration.
    #[command(after_help = "\
Examples:
  evapi-client --addr 127.0.0.1:8448 record events.jsonl --duration 1h
  evapi-client record events.jsonl --count 1000")]
    Record {
        /// The transcript file.
        file: PathBuf,
        /// Stop after this many frames.
        #[arg(long, env = "EVAPI_COUNT")]
        count: Option<u64>,
        /// Stop after this long.
        #[arg(long, env = "EVAPI_DURATION", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        #[command(flatten)]
        recording: RecordingArgs,
    },
    /// The connected clients of a server's admin API (evapi-server --metrics ADDR),
    /// with frames in and out per second, refreshed in place; Ctrl-C ends it.
    Top {
        /// The server's --metrics address.
        #[arg(long, env = "EVAPI_METRICS", value_parser = evapi_cli::addr::evapi_text)]
        metrics: String,
        /// The server's --control-token (admin requests need it when it is set).
        #[arg(long, env = "EVAPI_CONTROL_TOKEN", hide_env_values = true)]
        control_token: Option<String>,
        /// Time between refreshes.
        #[arg(long, env = "EVAPI_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
        interval: Duration,
        /// Print one table (two polls an interval apart, for the rates) and exit.
        #[arg(long)]
        once: bool,
    },
}

/// How a transcript is written (proxy, record).
#[derive(Debug, clap::Args)]
pub struct RecordingArgs {
    /// Start a new file (FILE.1, FILE.2, ...) once one reaches this many bytes (0: never).
    #[arg(long, env = "EVAPI_ROTATE_BYTES", default_value_t = evapi_client::recorder::DEFAULT_ROTATE_BYTES)]
    rotate_bytes: u64,
    /// Bytes of transcript on disk, all parts together (0: no bound); past it the oldest
    /// parts are deleted (without rotation, recording stops there, and what is not
    /// recorded is counted in a "lost" line).
    #[arg(long, env = "EVAPI_RECORD_MAX_BYTES", default_value_t = evapi_client::recorder::DEFAULT_MAX_BYTES)]
    record_max_bytes: u64,
    /// Payload bytes waiting for the disk at most; past it records are dropped (and
    /// counted, with a "lost" line in the transcript), never traffic.
    #[arg(long, env = "EVAPI_RECORD_BUFFER_BYTES", default_value_t = evapi_client::recorder::DEFAULT_BUFFER_BYTES)]
    record_buffer_bytes: usize,
}

impl RecordingArgs {
    fn recorder(
        &self,
        path: PathBuf,
        source: &'static str,
        node: &str,
        framing: Framing,
    ) -> anyhow::Result<evapi_client::recorder::Recorder> {
        evapi_client::recorder::Recorder::start(evapi_client::recorder::RecorderConfig {
            path,
            rotate_bytes: self.rotate_bytes,
            max_bytes: self.record_max_bytes,
            buffer_bytes: self.record_buffer_bytes,
            source,
            node: node.to_owned(),
            framing,
        })
        .context("cannot start the transcript")
    }
}

/// `--code`: a final SIP code, the rule every answer reader applies.
fn final_code(text: &str) -> Result<u16, String> {
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    evapi_proto::check_final_code(n).map_err(|e| e.to_string())
}

/// `--reason`: a phrase that can go into a SIP status line.
fn reason_phrase(text: &str) -> Result<String, String> {
    evapi_proto::check_reason(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

/// Default log level (see `evapi_cli::Verbosity` for the ladder).
pub const LOG_LEVEL: &str = "warn";

/// Whether the error is a server that could not be reached (refused, no answer).
pub fn is_unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        matches!(
            e.downcast_ref::<evapi_client::ClientError>(),
            Some(
                evapi_client::ClientError::Connect { .. }
                    | evapi_client::ClientError::ConnectTimeout { .. }
            )
        ) || e
            .downcast_ref::<evapi_client::nats::NatsError>()
            .is_some_and(evapi_client::nats::NatsError::is_unreachable)
    })
}

/// Whether the error is stdout going away (`| head`): exit quietly then.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Run the subcommand.
///
/// # Errors
///
/// Connection and I/O errors (exit code 2).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = args.client_config()?;
    let nats = args.nats.options()?;
    // With --nats, the app commands talk to NATS: the "address" is its URL.
    let mut addr = args.addr.clone();
    if let Some(options) = &nats {
        let (mode, matcher) = match &args.command {
            Command::Listen { .. } => (AppMode::Observe, SuspendMatcher::default()),
            Command::Repl { ids, .. } => (AppMode::Take, ids.matcher()),
            Command::Send { .. } | Command::Run { .. } => {
                (AppMode::Take, SuspendMatcher::default())
            }
            Command::Respond { .. } | Command::Bridge { .. } | Command::Top { .. } => {
                (AppMode::Take, SuspendMatcher::default())
            }
            Command::Proxy { .. } | Command::Record { .. } => {
                anyhow::bail!("proxy and record talk to a node's socket, not to NATS: drop --nats")
            }
        };
        if matches!(args.command, Command::Send { .. }) {
            anyhow::ensure!(
                args.nats.node.is_some(),
                "send --nats needs --node: the node whose socket gets the payloads"
            );
        }
        if !matches!(
            args.command,
            Command::Bridge { .. } | Command::Respond { .. }
        ) {
            addr.clone_from(&options.url);
            // The one-shot commands wait as long as --wait says; services for ever.
            let mut options = options.clone();
            options.wait = Some(args.wait);
            config = config.over_nats(AppConfig {
                nats: options,
                mode,
                node: args.nats.node.clone(),
                matcher,
                ack_wait: args.nats.ack_wait,
            });
        }
    }
    if let Command::Repl { no_color, ids } = &args.command {
        return crate::terminal::run(&addr, &config, *no_color, ids.matcher());
    }
    let multi = matches!(&args.command, Command::Respond { connections, .. } if *connections > 1);
    let runtime = if multi {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .context("cannot start the runtime")?;
    let result = runtime.block_on(async {
        match args.command {
            Command::Send {
                payloads,
                expect_reply,
                timeout,
            } => send(&addr, &config, payloads, expect_reply, timeout).await,
            Command::Listen {
                json,
                count,
                timeout,
                matching,
            } => listen(&addr, &config, json, count, timeout, matching).await,
            Command::Respond {
                code,
                reason,
                reply,
                delay,
                connections,
                count,
                ids,
            } => {
                let mut responder = Responder::with(code, reason, delay, ids.matcher());
                if let Some(reply) = reply {
                    responder.template = Some(ReplyTemplate::parse(&reply)?);
                }
                match &nats {
                    Some(options) => {
                        respond_nats(options, &responder, args.nats.ack_wait, count).await
                    }
                    None => {
                        run_respond(&args.addr, &config, responder, connections.max(1), count).await
                    }
                }
            }
            Command::Bridge {
                window,
                buffer_bytes,
                answers_buffer_bytes,
                predecessor_grace,
                shed_code,
                metrics,
                ids,
            } => {
                let Some(options) = &nats else {
                    anyhow::bail!("bridge needs --nats URL (the NATS server to publish to)");
                };
                let mut bridge =
                    evapi_client::nats::BridgeConfig::new(node_name(args.nats.node.clone())?);
                bridge.window = window;
                bridge.buffer_bytes = buffer_bytes;
                bridge.answers_buffer_bytes = answers_buffer_bytes;
                bridge.predecessor_grace = predecessor_grace;
                if let (Some(i), Some(l)) = (&ids.index_field, &ids.label_field) {
                    bridge.ids =
                        evapi_proto::answer::AnswerReader::with_fields([IdFields::new(i, l)]);
                }
                bridge.shed = shed_code
                    .map(|code| Responder::with(code, None, Duration::ZERO, ids.matcher()));
                crate::bridge::run(&args.addr, &config, options, bridge, metrics.as_deref()).await
            }
            Command::Run { script, timeout } => run_script(&addr, &config, &script, timeout).await,
            Command::Top {
                metrics,
                control_token,
                interval,
                once,
            } => crate::top::run(&metrics, control_token.as_deref(), interval, once)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Proxy {
                listen,
                upstream,
                record,
                recording,
                max_clients,
                idle_timeout,
            } => {
                let recorder = match record {
                    Some(path) => {
                        Some(recording.recorder(path, "proxy", &upstream, args.framing)?)
                    }
                    None => None,
                };
                let config = evapi_client::proxy::ProxyConfig {
                    upstream,
                    framing: args.framing,
                    max_frame: args.max_frame,
                    max_clients,
                    connect_timeout: args.connect_timeout,
                    idle_timeout,
                };
                run_proxy(&listen, config, recorder).await
            }
            Command::Record {
                file,
                count,
                duration,
                recording,
            } => {
                let recorder = recording.recorder(file, "record", &addr, args.framing)?;
                record(&addr, &config, recorder, count, duration).await
            }
            Command::Repl { .. } => unreachable!("handled before the runtime starts"),
        }
    });
    // The connection is closed: what the app took over NATS and did not answer goes back.
    runtime.block_on(config.settle(Duration::from_secs(2)));
    // A blocking stdin read (send -) may still be pending; do not wait for it.
    runtime.shutdown_background();
    result
}

async fn send(
    addr: &str,
    config: &ClientConfig,
    payloads: Vec<String>,
    expect_reply: Option<usize>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(addr, config).await?;
    for payload in payloads {
        if payload == "-" {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Some(line) = lines.next_line().await.context("cannot read stdin")? {
                client.send(line.as_bytes()).await?;
            }
        } else {
            client.send(payload.as_bytes()).await?;
        }
    }
    let Some(n) = expect_reply else {
        return Ok(ExitCode::SUCCESS);
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = std::io::stdout().lock();
    for got in 0..n {
        match tokio::time::timeout_at(deadline, client.recv()).await {
            Ok(Ok(Some(msg))) => {
                out.write_all(&msg)?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
            Ok(Ok(None)) => anyhow::bail!("connection to {addr} closed after {got} of {n} replies"),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                eprintln!(
                    "evapi-client: {got} of {n} replies within {}",
                    humantime::format_duration(timeout)
                );
                return Ok(ExitCode::from(EXIT_FAILED));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn listen(
    addr: &str,
    config: &ClientConfig,
    json: bool,
    count: Option<usize>,
    timeout: Option<Duration>,
    matching: Option<String>,
) -> anyhow::Result<ExitCode> {
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

async fn run_respond(
    addr: &str,
    config: &ClientConfig,
    responder: Responder,
    connections: usize,
    count: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let responder = Arc::new(responder);
    let counts = Arc::new(Counts::default());
    let remaining = count.map(|n| Arc::new(AtomicU64::new(n)));
    let stop = CancellationToken::new();
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(Client::connect(addr, config).await?);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let (responder, counts, remaining, stop) = (
            Arc::clone(&responder),
            Arc::clone(&counts),
            remaining.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            respond::run(client, &responder, &counts, remaining.as_deref(), &stop).await
        });
    }
    let mut failure = None;
    let mut interrupted = false;
    // SIGINT or SIGTERM: stop answering and print the summary.
    let mut signals = evapi_ops::signal::Signals::new();
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(Stop::Done))) => {}
                Some(Ok(Ok(Stop::Closed))) => {
                    if !stop.is_cancelled() {
                        failure.get_or_insert_with(|| anyhow::anyhow!("connection to {addr} closed by the server"));
                    }
                }
                Some(Ok(Err(e))) => {
                    failure.get_or_insert(e.into());
                }
                Some(Err(e)) => {
                    failure.get_or_insert(anyhow::anyhow!("responder task failed: {e}"));
                }
            },
            _ = signals.stop(), if !interrupted => {
                interrupted = true;
                stop.cancel();
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let answered = counts.answered.load(Ordering::Relaxed);
    println!(
        "answered {answered}, ignored {}, invalid {} on {connections} connection(s) in {secs:.2}s ({:.0}/s)",
        counts.ignored.load(Ordering::Relaxed),
        counts.invalid.load(Ordering::Relaxed),
        answered as f64 / secs.max(1e-9),
    );
    // Reaching --count, or Ctrl-C, is success even if the server then closed.
    let reached = count.is_some_and(|n| answered >= n);
    match failure {
        Some(e) if !reached && !interrupted => Err(e),
        _ => Ok(ExitCode::SUCCESS),
    }
}

async fn respond_nats(
    options: &NatsOptions,
    responder: &Responder,
    ack_wait: Duration,
    count: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let nats = options.connect(None).await?;
    let counts = Counts::default();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let respond =
        evapi_client::nats::respond(nats, responder, ack_wait, &counts, count, stop.clone());
    tokio::pin!(respond);
    let result = tokio::select! {
        r = &mut respond => r,
        // Stop taking, and wait for the answers sent to be confirmed (at most
        // ANSWER_CONFIRM each; unconfirmed ones are given back).
        () = evapi_ops::signal::terminated() => {
            stop.cancel();
            respond.await
        }
    };
    let answered = counts.answered.load(Ordering::Relaxed);
    println!(
        "answered {answered}, ignored {}, invalid {} over NATS in {:.2}s",
        counts.ignored.load(Ordering::Relaxed),
        counts.invalid.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    );
    result?;
    Ok(ExitCode::SUCCESS)
}

async fn run_proxy(
    listen: &str,
    config: evapi_client::proxy::ProxyConfig,
    recorder: Option<evapi_client::recorder::Recorder>,
) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!(
        "evapi-client proxy: apps connect to {}, forwarded to {}{}",
        listener
            .local_addr()
            .map_or_else(|_| listen.to_owned(), |a| a.to_string()),
        config.upstream,
        if recorder.is_some() {
            ", recording"
        } else {
            ""
        },
    );
    let recorder = recorder.map(Arc::new);
    let counts = evapi_client::proxy::run(
        listener,
        config,
        recorder.clone(),
        evapi_ops::signal::terminated(),
    )
    .await;
    eprintln!(
        "evapi-client proxy: {} connection(s), {} refused; frames from the node {}, from apps {}",
        counts.connections.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
        counts.node_frames.load(Ordering::Relaxed),
        counts.app_frames.load(Ordering::Relaxed),
    );
    if let Some(recorder) = recorder {
        let recorder = Arc::try_unwrap(recorder)
            .map_err(|_| anyhow::anyhow!("a connection still holds the transcript"))?;
        finish_recording(recorder).await?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn record(
    addr: &str,
    config: &ClientConfig,
    recorder: evapi_client::recorder::Recorder,
    count: Option<u64>,
    duration: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    use evapi_proto::transcript::{Entry, Payload, Side};
    let mut client = Client::connect(addr, config).await?;
    recorder.record(
        Entry::Open {
            t: recorder.t(),
            conn: 1,
            peer: "recorder".to_owned(),
        },
        0,
    );
    let until = duration.map(|d| tokio::time::Instant::now() + d);
    let mut frames = 0u64;
    let ended = loop {
        if count.is_some_and(|n| frames >= n) {
            break None;
        }
        let next = tokio::select! {
            next = client.recv() => next,
            () = evapi_ops::signal::terminated() => break None,
            () = async { tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now)).await }, if until.is_some() => break None,
        };
        match next {
            Ok(Some(frame)) => {
                frames += 1;
                recorder.record(
                    Entry::Frame {
                        t: recorder.t(),
                        conn: 1,
                        from: Side::Node,
                        payload: Payload::of(&frame),
                    },
                    frame.len(),
                );
            }
            Ok(None) => break Some(None),
            Err(e) => break Some(Some(e.to_string())),
        }
    };
    if let Some(error) = &ended {
        recorder.record(
            Entry::Close {
                t: recorder.t(),
                conn: 1,
                by: Side::Node,
                error: error.clone(),
            },
            0,
        );
    }
    eprintln!("evapi-client record: {frames} frame(s) from {addr}");
    finish_recording(recorder).await?;
    match ended {
        Some(Some(error)) => anyhow::bail!("connection to {addr} failed: {error}"),
        _ => Ok(ExitCode::SUCCESS),
    }
}

async fn finish_recording(recorder: evapi_client::recorder::Recorder) -> anyhow::Result<()> {
    let written = recorder
        .finish()
        .await
        .context("cannot write the transcript")?;
    eprintln!(
        "transcript: {} entries in {} file(s){}",
        written.entries,
        written.files,
        if written.lost > 0 {
            format!(
                ", {} lost (the disk fell behind: raise --record-buffer-bytes)",
                written.lost
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `--node`, or the host name with dots made dashes.
fn node_name(node: Option<String>) -> anyhow::Result<String> {
    let node = match node {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_else(|_| "node".to_owned())
            .trim()
            .replace('.', "-"),
    };
    anyhow::ensure!(
        evapi_client::nats::valid_node(&node),
        "--node {node:?}: letters, digits, '-' and '_' only, at most 64"
    );
    Ok(node)
}

async fn run_script(
    addr: &str,
    config: &ClientConfig,
    path: &std::path::Path,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the script from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let steps = script::parse(&text).with_context(|| format!("{}", path.display()))?;
    match script::run(&steps, addr, config, timeout).await {
        Ok(summary) => {
            println!(
                "ok: {} steps, {} sent, {} received",
                summary.steps, summary.sent, summary.received
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(RunError::Failed(failure)) => {
            eprintln!("{}: {failure}", path.display());
            Ok(ExitCode::from(EXIT_FAILED))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Args::command().debug_assert();
    }
}
