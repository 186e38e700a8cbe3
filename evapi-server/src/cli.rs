//! Flags, and the plumbing around the library: stdin and `--control` connections in,
//! replies and notifications out on stdout, signals to graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use evapi_proto::Framing;
use evapi_server::args::{reload_on_hangup, SecurityArgs};
use evapi_server::auth::MIN_TOKEN_LEN;
use evapi_server::config::{
    DEFAULT_BIND, DEFAULT_CLIENT_QUEUE, DEFAULT_MAX_CLIENTS, DEFAULT_WORKERS,
};
use evapi_server::control::socket::{self, ControlLimits, ControlListener};
use evapi_server::control::JsonLines;
use evapi_server::{
    Config, Handle, Listener, OversizePolicy, Server, SlowClientPolicy, UnicastPolicy,
};
use ipnet::IpNet;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Default `--notify-queue`: lines waiting for stdout.
pub(crate) const DEFAULT_NOTIFY_QUEUE: usize = 4096;
/// Default `--control-max-line`: a relay of a 1 MiB frame in base64 (about 1.4 MB) fits.
pub(crate) const DEFAULT_CONTROL_MAX_LINE: usize = 2 * 1024 * 1024;
/// Default `--control-max-connections`.
pub(crate) const DEFAULT_CONTROL_CONNECTIONS: usize = 8;
/// A Kamailio-evapi-compatible event socket, driven by JSON lines.
///
/// Applications connect over TCP. Control commands arrive as JSON lines on stdin (and on
/// --control connections); each gets one JSON reply line on stdout. Every event route
/// (connection-new, message-received, connection-closed) is written to stdout as a JSON
/// line. Logs go to stderr.
#[derive(Debug, Parser)]
#[command(
    name = "evapi-server",
    version = evapi_cli::VERSION,
    after_help = "\
Examples:
  evapi-server                                   # 127.0.0.1:8448, netstring, as Kamailio
  evapi-server --bind 127.0.0.1:9000 --framing line --max-clients 64
  echo '{\"stats\":true}' | evapi-server   # a command on stdin, its JSON reply on stdout
  evapi-server --control 127.0.0.1:9001          # also take commands over TCP

Commands (JSON lines):
  {\"relay\": P}   {\"multicast\": P, \"tag\": T}   {\"unicast\": P, \"tag\": T}
  {\"close\": N}   {\"close\": {\"connid\": C}}     {\"set_tag\": T, \"conidx\": N}
  {\"close_tag\": T}   {\"clients\": true}   {\"stats\": true}   {\"drain\": true}
  P: a JSON string is sent as its text, other JSON as compact JSON;
     add \"encoding\":\"base64\" to send raw bytes. An \"id\" is echoed in the reply."
)]
pub(crate) struct Args {
    /// Address to listen on (Kamailio's bind_addr).
    /// IP, IP:port, [v6]:port or host:port; the port defaults to 8448.
    #[arg(help_heading = "Listening", long, env = "EVAPI_BIND", default_value = DEFAULT_BIND, value_parser = evapi_cli::addr::evapi)]
    pub bind: SocketAddr,

    /// Framing: netstring (Kamailio netstring_format=1), bare (=0) or line (NDJSON).
    #[arg(
        help_heading = "Listening",
        long,
        env = "EVAPI_FRAMING",
        default_value = "netstring"
    )]
    pub framing: Framing,

    /// Tasks running message-received; 0 runs it on each connection's own task.
    #[arg(help_heading = "Delivery and limits", long, env = "EVAPI_WORKERS", default_value_t = DEFAULT_WORKERS)]
    pub workers: usize,

    /// Clients served at once; one more is accepted and closed at once.
    #[arg(help_heading = "Delivery and limits", long, env = "EVAPI_MAX_CLIENTS", default_value_t = DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,

    /// Longest frame in bytes, both ways.
    #[arg(help_heading = "Delivery and limits", long, env = "EVAPI_MAX_FRAME", default_value_t = evapi_proto::DEFAULT_MAX_FRAME)]
    pub max_frame: usize,

    /// Frames queued per client before the slow-client policy applies (the outgoing
    /// relay queue; what Kamailio's context_mlimit bounds).
    #[arg(help_heading = "Delivery and limits", long, env = "EVAPI_CLIENT_QUEUE", default_value_t = DEFAULT_CLIENT_QUEUE)]
    pub client_queue: usize,

    /// Bytes queued per client before the slow-client policy applies.
    #[arg(help_heading = "Delivery and limits", long, env = "EVAPI_CLIENT_QUEUE_BYTES", default_value_t = evapi_server::config::DEFAULT_CLIENT_QUEUE_BYTES)]
    pub client_queue_bytes: usize,

    /// Bytes queued for all clients together; past it, new frames are refused and the
    /// slow-client policy applies to the client that could not take one.
    #[arg(help_heading = "Delivery and limits", long, env = "EVAPI_MAX_QUEUED_BYTES", default_value_t = evapi_server::config::DEFAULT_MAX_QUEUED_BYTES)]
    pub max_queued_bytes: usize,

    /// A write to a client that makes no progress this long disconnects it (e.g. 5s, 500ms).
    #[arg(help_heading = "Delivery and limits", long, env = "EVAPI_SEND_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub send_timeout: Duration,

    /// Incoming messages waiting for the workers before new ones are dropped and
    /// counted; 0 = never drop, pause reading the client instead (TCP pushes back).
    /// Ours, not Kamailio's context_mlimit: that bounds the outgoing relay queue, which
    /// --client-queue bounds here.
    #[arg(
        help_heading = "Delivery and limits",
        long,
        env = "EVAPI_QUEUE_LIMIT",
        default_value_t = 0
    )]
    pub queue_limit: usize,

    /// A frame must arrive whole within this long of its first byte, or the client is
    /// closed (slowloris defence).
    #[arg(help_heading = "Delivery and limits", long, env = "EVAPI_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,

    /// Close a client that sends no frame with content for this long (white space,
    /// empty or blank frames and partial frames do not count); off by default: Kamailio
    /// apps may be silent for hours.
    #[arg(help_heading = "Delivery and limits", long, env = "EVAPI_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Connections from one IP address at once (default: no cap), so one host cannot
    /// take every slot.
    #[arg(
        help_heading = "Delivery and limits",
        long,
        env = "EVAPI_MAX_CLIENTS_PER_IP"
    )]
    pub max_clients_per_ip: Option<usize>,

    /// Only these clients may connect: CIDRs or addresses, repeat or comma-separate.
    #[arg(help_heading = "Listening", long, env = "EVAPI_ALLOW", value_delimiter = ',', value_parser = parse_net)]
    pub allow: Vec<IpNet>,

    /// What to do with a client whose queue is full.
    #[arg(help_heading = "Delivery and limits", long, env = "EVAPI_SLOW_CLIENT", value_enum, default_value_t = SlowClient::Disconnect)]
    pub slow_client: SlowClient,

    /// What to do with a client frame over --max-frame: close the client, or skip the
    /// frame (without buffering it) and keep reading.
    #[arg(help_heading = "Delivery and limits", long, env = "EVAPI_OVERSIZE", value_enum, default_value_t = Oversize::Close)]
    pub oversize: Oversize,

    /// Which client of a tag a unicast goes to: first (lowest conidx, as Kamailio),
    /// round-robin, least-queued, or hash (by the command's "key").
    #[arg(help_heading = "Delivery and limits", long, env = "EVAPI_UNICAST_POLICY", default_value = "first", value_parser = parse_policy)]
    pub unicast_policy: UnicastPolicy,

    /// Serve Prometheus metrics at GET /metrics, and the admin API (/clients, /stats,
    /// POST /clients/{connid}/close, /tags/{tag}/close, /drain ...), on this address.
    /// Admin requests need `Authorization: Bearer` with --control-token when it is set;
    /// without one they are served on a loopback address only.
    #[arg(help_heading = "Metrics and admin API", long, env = "EVAPI_METRICS", value_parser = evapi_cli::addr::evapi)]
    pub metrics: Option<SocketAddr>,

    /// Also accept control connections (JSON lines over TCP) on this address.
    #[arg(help_heading = "Control interface", long, env = "EVAPI_CONTROL", value_parser = evapi_cli::addr::evapi)]
    pub control: Option<SocketAddr>,

    /// Lines waiting to be written to stdout; past this, notifications are dropped and
    /// counted (a controller that stops reading stdout must not stall intake from every
    /// client), while command replies wait.
    #[arg(help_heading = "Control interface", long, env = "EVAPI_NOTIFY_QUEUE", default_value_t = DEFAULT_NOTIFY_QUEUE)]
    pub notify_queue: usize,

    /// Longest control line in bytes (stdin and --control); a longer one is answered
    /// with an error and skipped, never buffered whole.
    #[arg(help_heading = "Control interface", long, env = "EVAPI_CONTROL_MAX_LINE", default_value_t = DEFAULT_CONTROL_MAX_LINE)]
    pub control_max_line: usize,

    /// Control connections served at once; more are closed at once with an error line.
    #[arg(help_heading = "Control interface", long, env = "EVAPI_CONTROL_MAX_CONNECTIONS", default_value_t = DEFAULT_CONTROL_CONNECTIONS)]
    pub control_max_connections: usize,

    /// A control connection (--control, --control-unix) with no complete line for this
    /// long, idle or half-written, gets an error line and is closed, so idle
    /// connections cannot hold the slots. 0s: never.
    #[arg(help_heading = "Control interface", long, env = "EVAPI_CONTROL_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub control_idle_timeout: std::time::Duration,

    /// Listen on this Unix domain socket instead of --bind (for apps on this host; its
    /// permissions, --unix-mode, decide who may connect). A stale socket file is replaced.
    #[arg(
        help_heading = "Listening",
        long,
        env = "EVAPI_UNIX",
        value_name = "PATH"
    )]
    pub unix: Option<PathBuf>,

    /// Take control commands on this Unix domain socket too (the recommended way to
    /// control from another process; permissions from --unix-mode).
    #[arg(
        help_heading = "Control interface",
        long,
        env = "EVAPI_CONTROL_UNIX",
        value_name = "PATH"
    )]
    pub control_unix: Option<PathBuf>,

    /// Permissions of the Unix socket files, in octal.
    #[arg(help_heading = "Listening", long, env = "EVAPI_UNIX_MODE", default_value = "600", value_parser = parse_mode)]
    pub unix_mode: u32,

    /// Token that a --control TCP connection must send first, as {"auth":"TOKEN"};
    /// required when --control is not a loopback address. Prefer the variable to the
    /// flag (flags show in `ps`).
    #[arg(
        help_heading = "Control interface",
        long,
        env = "EVAPI_CONTROL_TOKEN",
        hide_env_values = true
    )]
    pub control_token: Option<String>,

    #[command(flatten)]
    pub security: SecurityArgs,

    #[command(flatten)]
    pub verbosity: evapi_cli::Verbosity,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 600 or 660"))
}

/// `--oversize` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Oversize {
    /// Close the client.
    Close,
    /// Skip the frame, keep the client.
    Skip,
}

/// `--slow-client` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SlowClient {
    /// Disconnect the client.
    Disconnect,
    /// Keep it; drop the frames that do not fit and count them.
    Drop,
}

fn parse_policy(s: &str) -> Result<UnicastPolicy, String> {
    UnicastPolicy::from_name(s)
        .ok_or_else(|| format!("{s:?}: expected first, round-robin, least-queued or hash"))
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or CIDR (e.g. 127.0.0.1, 10.0.0.0/8)"))
}

impl Args {
    fn config(&self) -> Config {
        Config {
            framing: self.framing,
            workers: self.workers,
            max_clients: self.max_clients,
            max_frame: self.max_frame,
            client_queue: self.client_queue.max(1),
            client_queue_bytes: self.client_queue_bytes.max(1),
            read_timeout: self.read_timeout,
            idle_timeout: self.idle_timeout,
            max_clients_per_ip: self.max_clients_per_ip.map(|n| n.max(1)),
            max_queued_bytes: self.max_queued_bytes.max(1),
            send_timeout: self.send_timeout,
            queue_limit: self.queue_limit,
            allow: self.allow.clone(),
            slow_client: match self.slow_client {
                SlowClient::Disconnect => SlowClientPolicy::Disconnect,
                SlowClient::Drop => SlowClientPolicy::Drop,
            },
            oversize: match self.oversize {
                Oversize::Close => OversizePolicy::Close,
                Oversize::Skip => OversizePolicy::Skip,
            },
            unicast_policy: self.unicast_policy,
            ..Config::default()
        }
    }
}

/// Bind a Unix socket at `path` with `mode`, replacing a stale socket file (never
/// another kind of file).
fn bind_unix(path: &std::path::Path, mode: u32) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(
            meta.file_type().is_socket(),
            "{} exists and is not a socket; not replacing it",
            path.display()
        );
        std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
    Ok(listener)
}

/// Default log level (see `evapi_cli::Verbosity` for the ladder).
pub(crate) const LOG_LEVEL: &str = "info";

/// Run the server until SIGINT or SIGTERM.
///
/// # Errors
///
/// When the runtime cannot start or an address cannot be bound.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = runtime.block_on(serve(args));
    // A blocking read of stdin may still be pending; do not wait for it.
    runtime.shutdown_background();
    result
}

/// What `serve` listens on.
struct Listeners {
    socket: Listener,
    control: Option<TcpListener>,
    control_unix: Option<UnixListener>,
    metrics: Option<TcpListener>,
}

impl Listeners {
    /// Bind every address the flags ask for, after refusing settings that would open
    /// the control interface to strangers.
    async fn bind(args: &Args) -> anyhow::Result<Self> {
        if let Some(addr) = args.control {
            anyhow::ensure!(
                addr.ip().is_loopback() || args.control_token.is_some(),
                "--control {addr} is not a loopback address: anyone who reaches it could relay, \
                 close and tag; set --control-token (or use --control-unix)"
            );
        }
        if let Some(token) = &args.control_token {
            anyhow::ensure!(
                token.len() >= MIN_TOKEN_LEN,
                "--control-token is shorter than {MIN_TOKEN_LEN} bytes"
            );
        }
        let socket: Listener = match &args.unix {
            Some(path) => bind_unix(path, args.unix_mode)?.into(),
            None => TcpListener::bind(args.bind)
                .await
                .with_context(|| format!("cannot bind {}", args.bind))?
                .into(),
        };
        let control = match args.control {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind control address {addr}"))?,
            ),
            None => None,
        };
        let metrics = match args.metrics {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind metrics address {addr}"))?,
            ),
            None => None,
        };
        let control_unix = match &args.control_unix {
            Some(path) => Some(bind_unix(path, args.unix_mode)?),
            None => None,
        };
        Ok(Self {
            socket,
            control,
            control_unix,
            metrics,
        })
    }

    /// The first line on stdout: where we listen, so scripts can bind port 0 and read
    /// the port back.
    fn hello(&self, args: &Args) -> anyhow::Result<serde_json::Value> {
        let mut hello = serde_json::json!({ "listening": self.socket.describe() });
        if let Some(control) = &self.control {
            hello["control"] = control.local_addr()?.to_string().into();
        }
        if let Some(path) = &args.control_unix {
            hello["control_unix"] = path.display().to_string().into();
        }
        if let Some(metrics) = &self.metrics {
            hello["metrics"] = metrics.local_addr()?.to_string().into();
        }
        Ok(hello)
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let mut config = args.config();
    args.security.apply(&mut config)?;
    let listeners = Listeners::bind(&args).await?;
    let hello = listeners.hello(&args)?;
    let Listeners {
        socket: listener,
        control,
        control_unix,
        metrics,
    } = listeners;

    let (out_tx, out_rx) = mpsc::channel::<String>(args.notify_queue.max(1));
    let stdout_task = tokio::spawn(write_lines(tokio::io::stdout(), out_rx));
    let _ = out_tx.send(hello.to_string()).await;

    let server = Server::new(config, JsonLines::new(out_tx.clone()));
    let handle = server.handle();
    let stdin_task = tokio::spawn(control_stdin(handle.clone(), out_tx, args.control_max_line));
    let limits = ControlLimits {
        max_line: args.control_max_line,
        max_connections: args.control_max_connections.max(1),
        token: args.control_token.clone().map(Arc::from),
        auth_timeout: args.security.auth_timeout,
        idle_timeout: (!args.control_idle_timeout.is_zero()).then_some(args.control_idle_timeout),
    };
    let control_task = control.map(|l| {
        tokio::spawn(socket::serve(
            ControlListener::Tcp(l),
            handle.clone(),
            limits.clone(),
        ))
    });
    // The socket file's permissions guard a Unix control socket: no token asked.
    let control_unix_task = control_unix.map(|l| {
        tokio::spawn(socket::serve(
            ControlListener::Unix(l),
            handle.clone(),
            ControlLimits {
                token: None,
                ..limits.clone()
            },
        ))
    });
    let reload_task = tokio::spawn(reload_on_hangup(args.security.clone(), handle.clone()));
    let metrics_task = metrics.map(|l| {
        tokio::spawn(evapi_server::admin::serve(
            l,
            evapi_server::metrics::registry(&handle),
            handle.clone(),
            args.control_token.clone().map(Arc::from),
            std::future::pending(),
        ))
    });

    server
        .run(listener, async {
            evapi_ops::signal::terminated().await;
            info!("signal received");
        })
        .await;

    stdin_task.abort();
    reload_task.abort();
    for task in [control_task, control_unix_task, metrics_task]
        .into_iter()
        .flatten()
    {
        task.abort();
    }
    for path in [&args.unix, &args.control_unix].into_iter().flatten() {
        let _ = std::fs::remove_file(path);
    }
    let _ = stdin_task.await;
    // Every sender is gone now; the writer drains what is left and ends.
    let _ = stdout_task.await;
    Ok(())
}

/// Write lines to `out`, flushing whenever the queue runs dry.
async fn write_lines(out: impl AsyncWrite + Unpin, mut rx: mpsc::Receiver<String>) {
    let mut out = tokio::io::BufWriter::new(out);
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        for line in batch.drain(..) {
            if out.write_all(line.as_bytes()).await.is_err() || out.write_all(b"\n").await.is_err()
            {
                // stdout is gone (broken pipe): nothing more can be reported.
                return;
            }
        }
        if out.flush().await.is_err() {
            return;
        }
    }
}

async fn control_stdin(handle: Handle, out: mpsc::Sender<String>, max_line: usize) {
    // stdin closed: keep serving; commands can still come over --control.
    if let Err(e) = socket::stdin_lines(&handle, tokio::io::stdin(), max_line, &out).await {
        warn!(error = %e, "cannot read stdin; control on stdin stops");
    }
}
