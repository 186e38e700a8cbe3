//! The `evapi-client` program: one module per subcommand, each with its flags (a
//! `clap::Args` struct) and its `run(self, &Ctx)`; [`Args`] holds the global flags and
//! [`run`] turns them into a [`Ctx`] and dispatches. To add a subcommand: a module here
//! with `XArgs` and `run`, a variant in [`Command`], an arm in [`run`]. The logic lives in
//! the `evapi_client` library; these modules only wire flags, runtime and output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use evapi_client::client::DEFAULT_ADDR;
use evapi_client::{ClientConfig, SuspendMatcher};
use evapi_nats::{AppConfig, AppMode, NatsOptions};
use evapi_proto::{Framing, DEFAULT_MAX_FRAME};

mod bridge;
mod listen;
mod proxy;
mod record;
mod repl;
mod respond;
mod script;
mod send;
mod shared;
mod top;

/// Talk to an evapi event socket (evapi-server's or Kamailio's evapi module).
#[derive(Debug, Parser)]
#[command(
    name = "evapi-client",
    version = evapi_cli::VERSION,
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
pub(crate) struct Args {
    /// Address of the evapi socket: IP, IP:port, [v6]:port or host:port (port 8448 when
    /// none is given). respond and listen serve several nodes: repeat it (or
    /// comma-separate), each optionally named: --addr sip-a=10.0.0.1 --addr
    /// sip-b=10.0.0.2.
    #[arg(
        help_heading = "Connecting (every subcommand)",
        long,
        env = "EVAPI_ADDR",
        default_value = DEFAULT_ADDR,
        global = true,
        value_delimiter = ',',
        value_name = "[NAME=]ADDR",
        value_parser = shared::node
    )]
    pub addr: Vec<evapi_client::nodes::Node>,

    /// Framing: netstring (Kamailio netstring_format=1), bare (=0) or line (NDJSON).
    #[arg(
        help_heading = "Connecting (every subcommand)",
        long,
        env = "EVAPI_FRAMING",
        default_value = "netstring",
        global = true
    )]
    pub framing: Framing,

    /// Longest frame accepted or sent, in bytes.
    #[arg(help_heading = "Connecting (every subcommand)", long, env = "EVAPI_MAX_FRAME", default_value_t = DEFAULT_MAX_FRAME, global = true)]
    pub max_frame: usize,

    /// Give up connecting after this long.
    #[arg(help_heading = "Connecting (every subcommand)", long, env = "EVAPI_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub connect_timeout: Duration,

    /// Keep retrying to connect for this long, for a client started before its server
    /// (e.g. 10s in CI); 0s tries once.
    #[arg(help_heading = "Connecting (every subcommand)", long, env = "EVAPI_WAIT", default_value = "0s", value_parser = humantime::parse_duration, global = true)]
    pub wait: Duration,

    /// Speak TLS; the server's certificate is checked against --tls-ca (or the
    /// system's trust store) and the host name in --addr (or --tls-server-name).
    #[arg(
        help_heading = "Connecting (every subcommand)",
        long,
        env = "EVAPI_TLS",
        global = true
    )]
    pub tls: bool,

    /// CA certificates (PEM) to verify the server with; implies --tls.
    #[arg(
        help_heading = "Connecting (every subcommand)",
        long,
        env = "EVAPI_TLS_CA",
        value_name = "FILE",
        global = true
    )]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for servers that require one (mutual TLS); implies
    /// --tls, needs --tls-key.
    #[arg(
        help_heading = "Connecting (every subcommand)",
        long,
        env = "EVAPI_TLS_CERT",
        value_name = "FILE",
        global = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(
        help_heading = "Connecting (every subcommand)",
        long,
        env = "EVAPI_TLS_KEY",
        value_name = "FILE",
        global = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// The name the server's certificate must carry, when not the host in --addr.
    #[arg(
        help_heading = "Connecting (every subcommand)",
        long,
        env = "EVAPI_TLS_SERVER_NAME",
        value_name = "NAME",
        global = true
    )]
    pub tls_server_name: Option<String>,

    /// Authenticate with this token (a server started with --auth-tokens). Prefer the
    /// variable to the flag: flags show in `ps`.
    #[arg(
        help_heading = "Connecting (every subcommand)",
        long,
        env = "EVAPI_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,

    /// Send this frame first on every connection, and again after each reconnect (e.g.
    /// '{"hello":"billing"}' that the node's message route answers with
    /// evapi_set_tag): what the app declared is never lost with a restarted node.
    #[arg(
        help_heading = "Connecting (every subcommand)",
        long,
        env = "EVAPI_HELLO",
        value_name = "FRAME",
        global = true
    )]
    pub hello: Option<String>,

    #[command(flatten)]
    pub nats: shared::NatsArgs,

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
    pub(crate) fn client_config(&self) -> anyhow::Result<ClientConfig> {
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
        config.hello = self.hello.clone().map(bytes::Bytes::from);
        Ok(config)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    Repl(repl::ReplArgs),
    Send(send::SendArgs),
    Listen(listen::ListenArgs),
    Respond(respond::RespondArgs),
    Bridge(bridge::BridgeArgs),
    Run(script::RunArgs),
    Proxy(proxy::ProxyArgs),
    Record(record::RecordArgs),
    Top(top::TopArgs),
}

/// What every subcommand is handed, from the global flags.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// Where app commands connect: --addr, or the NATS URL when they go over NATS.
    pub addr: String,
    /// --addr as given: the node's socket (bridge; respond without NATS).
    pub node_addr: String,
    /// Every --addr (respond and listen serve several).
    pub nodes: Vec<evapi_client::nodes::Node>,
    /// How to connect (over NATS for the app commands when --nats is given).
    pub config: ClientConfig,
    /// --nats and its settings.
    pub nats: Option<NatsOptions>,
    /// --node.
    pub node: Option<String>,
    /// --ack-wait.
    pub ack_wait: Duration,
    /// --framing.
    pub framing: Framing,
    /// --max-frame.
    pub max_frame: usize,
    /// --connect-timeout.
    pub connect_timeout: Duration,
    /// --wait.
    pub wait: Duration,
}

/// Default log level (see `evapi_cli::Verbosity` for the ladder).
pub(crate) const LOG_LEVEL: &str = "warn";

/// Whether the error is a server that could not be reached (refused, no answer).
pub(crate) fn is_unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        matches!(
            e.downcast_ref::<evapi_client::ClientError>(),
            Some(
                evapi_client::ClientError::Connect { .. }
                    | evapi_client::ClientError::ConnectTimeout { .. }
            )
        ) || e
            .downcast_ref::<evapi_nats::NatsError>()
            .is_some_and(evapi_nats::NatsError::is_unreachable)
    })
}

/// Whether the error is stdout going away (`| head`): exit quietly then.
pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
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
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ctx = context(&args)?;
    if let Command::Repl(repl) = &args.command {
        return repl.run(&ctx);
    }
    let multi = matches!(&args.command, Command::Respond(r) if r.connections > 1);
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
            Command::Send(send) => send.run(&ctx).await,
            Command::Listen(listen) => listen.run(&ctx).await,
            Command::Respond(respond) => respond.run(&ctx).await,
            Command::Bridge(bridge) => bridge.run(&ctx).await,
            Command::Run(script) => script.run(&ctx).await,
            Command::Top(top) => top.run(&ctx).await,
            Command::Proxy(proxy) => proxy.run(&ctx).await,
            Command::Record(record) => record.run(&ctx).await,
            Command::Repl(_) => unreachable!("handled before the runtime starts"),
        }
    });
    // The connection is closed: what the app took over NATS and did not answer goes back.
    runtime.block_on(ctx.config.settle(Duration::from_secs(2)));
    // A blocking stdin read (send -) may still be pending; do not wait for it.
    runtime.shutdown_background();
    result
}

/// The context of a run: with --nats, the app commands talk to NATS and their
/// "address" is its URL.
fn context(args: &Args) -> anyhow::Result<Ctx> {
    let mut config = args.client_config()?;
    let nats = args.nats.options()?;
    let nodes = args.addr.clone();
    let first = nodes
        .first()
        .map(|n| n.addr.clone())
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    if nodes.len() > 1 {
        let many = matches!(args.command, Command::Respond(_) | Command::Listen(_));
        anyhow::ensure!(
            many,
            "several --addr: only respond and listen serve several nodes; give this command one"
        );
    }
    let mut addr = first.clone();
    if let Some(options) = &nats {
        let (mode, matcher) = match &args.command {
            Command::Listen(_) => (AppMode::Observe, SuspendMatcher::default()),
            Command::Repl(repl) => (AppMode::Take, repl.ids.matcher()),
            Command::Send(_)
            | Command::Run(_)
            | Command::Respond(_)
            | Command::Bridge(_)
            | Command::Top(_) => (AppMode::Take, SuspendMatcher::default()),
            Command::Proxy(_) | Command::Record(_) => {
                anyhow::bail!("proxy and record talk to a node's socket, not to NATS: drop --nats")
            }
        };
        if matches!(args.command, Command::Send(_)) {
            anyhow::ensure!(
                args.nats.node.is_some(),
                "send --nats needs --node: the node whose socket gets the payloads"
            );
        }
        if !matches!(args.command, Command::Bridge(_) | Command::Respond(_)) {
            addr.clone_from(&options.url);
            // The one-shot commands wait as long as --wait says; services for ever.
            let mut options = options.clone();
            options.wait = Some(args.wait);
            config = evapi_nats::over_nats(
                config,
                AppConfig {
                    nats: options,
                    mode,
                    node: args.nats.node.clone(),
                    matcher,
                    ack_wait: args.nats.ack_wait,
                },
            );
        }
    }
    Ok(Ctx {
        addr,
        node_addr: first,
        nodes,
        config,
        nats,
        node: args.nats.node.clone(),
        ack_wait: args.nats.ack_wait,
        framing: args.framing,
        max_frame: args.max_frame,
        connect_timeout: args.connect_timeout,
        wait: args.wait,
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Args::command().debug_assert();
    }
}
