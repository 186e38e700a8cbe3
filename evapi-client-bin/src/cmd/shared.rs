//! Flags and helpers more than one subcommand takes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use evapi_client::{Secret, SuspendMatcher};
use evapi_nats::NatsOptions;
use evapi_proto::{Framing, IdFields};

/// NATS: where events come from instead of --addr (and where `bridge` sends them).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "NATS (scale-out: scale-out.md in the docs)")]
pub(crate) struct NatsArgs {
    /// NATS server(s): comma-separated or the flag repeated (nats://HOST:PORT,
    /// tls://HOST:PORT; a cluster's servers); respond,
    /// run, repl and send take events from the JetStream work queue instead of
    /// --addr, listen watches them; bridge joins --addr to it.
    #[arg(
        long,
        env = "EVAPI_NATS",
        value_name = "URL",
        global = true,
        value_delimiter = ','
    )]
    pub nats: Vec<String>,
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
    /// Copies of each event in a JetStream cluster (the events' stream is made with
    /// it; an existing stream that differs is refused, with how to change it).
    #[arg(long, env = "EVAPI_REPLICAS", default_value_t = 1, global = true)]
    pub replicas: usize,
    /// Where JetStream keeps the events: file (survives a nats-server restart) or
    /// memory (faster; what it holds is lost when the server goes).
    #[arg(long, env = "EVAPI_STORAGE", default_value = "file", value_parser = ["file", "memory"], global = true)]
    pub storage: String,
    /// Events taken and not yet acknowledged at once by all apps together (the
    /// consumer's max_ack_pending; default: the server's, 1,000 in nats-server 2.9);
    /// size it for the fleet: apps x --max-in-flight.
    #[arg(long, env = "EVAPI_MAX_ACK_PENDING", global = true)]
    pub max_ack_pending: Option<i64>,
    /// Most bytes each JetStream stream holds (events; answers); past it new messages
    /// are refused, nothing stored is dropped (the bridge holds and sheds, apps give
    /// events back). Also set on an existing stream, unless that would lower its bound
    /// under twice what it holds (a warning says so).
    #[arg(long, env = "EVAPI_STREAM_MAX_BYTES", default_value_t = evapi_nats::DEFAULT_STREAM_MAX_BYTES, value_parser = clap::value_parser!(i64).range(1024..), global = true)]
    pub stream_max_bytes: i64,
}

impl NatsArgs {
    /// The connection options, when --nats is given.
    ///
    /// # Errors
    ///
    /// A bad --node, or an --nats-nkey file that cannot be read.
    pub(crate) fn options(&self) -> anyhow::Result<Option<NatsOptions>> {
        if self.nats.is_empty() {
            return Ok(None);
        }
        let url = self.nats.join(",");
        if let Some(node) = &self.node {
            anyhow::ensure!(
                evapi_nats::valid_node(node),
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
            url,
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
            stream: evapi_nats::StreamSettings {
                replicas: self.replicas.max(1),
                memory: self.storage == "memory",
                max_ack_pending: self.max_ack_pending,
                max_bytes: self.stream_max_bytes,
            },
            wait: None,
        }))
    }
}

/// Where a suspend event keeps its ids, when not `tindex`/`tlabel` or `data.index`/`data.label`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct IdArgs {
    /// Dotted path of the transaction index in suspend events (e.g. tr_index, data.index).
    #[arg(long, env = "EVAPI_INDEX_FIELD", requires = "label_field")]
    pub index_field: Option<String>,
    /// Dotted path of the transaction label in suspend events.
    #[arg(long, env = "EVAPI_LABEL_FIELD", requires = "index_field")]
    pub label_field: Option<String>,
}

impl IdArgs {
    pub(crate) fn matcher(&self) -> SuspendMatcher {
        match (&self.index_field, &self.label_field) {
            (Some(i), Some(l)) => SuspendMatcher::with_fields(IdFields::new(i, l)),
            _ => SuspendMatcher::default(),
        }
    }
}

/// How a transcript is written (proxy, record).
#[derive(Debug, clap::Args)]
pub(crate) struct RecordingArgs {
    /// Start a new file (FILE.1, FILE.2, ...) once one reaches this many bytes (0: never;
    /// with --record-max-bytes, at most a quarter of it).
    #[arg(long, env = "EVAPI_ROTATE_BYTES", default_value_t = evapi_record::recorder::DEFAULT_ROTATE_BYTES)]
    rotate_bytes: u64,
    /// Bytes of transcript on disk, all parts together (0: no bound); past it the oldest
    /// parts are deleted, so the transcript keeps the newest traffic (without rotation,
    /// recording stops there, and what is not recorded is counted in a "lost" line).
    #[arg(long, env = "EVAPI_RECORD_MAX_BYTES", default_value_t = evapi_record::recorder::DEFAULT_MAX_BYTES)]
    record_max_bytes: u64,
    /// Payload bytes waiting for the disk at most; past it records are dropped (and
    /// counted, with a "lost" line in the transcript), never traffic.
    #[arg(long, env = "EVAPI_RECORD_BUFFER_BYTES", default_value_t = evapi_record::recorder::DEFAULT_BUFFER_BYTES)]
    record_buffer_bytes: usize,
}

impl RecordingArgs {
    pub(crate) fn recorder(
        &self,
        path: PathBuf,
        source: &'static str,
        node: &str,
        framing: Framing,
    ) -> anyhow::Result<evapi_record::recorder::Recorder> {
        evapi_record::recorder::Recorder::start(evapi_record::recorder::RecorderConfig {
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
pub(crate) fn final_code(text: &str) -> Result<u16, String> {
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    evapi_proto::check_final_code(n).map_err(|e| e.to_string())
}

/// `--reason`: a phrase that can go into a SIP status line.
pub(crate) fn reason_phrase(text: &str) -> Result<String, String> {
    evapi_proto::check_reason(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

pub(crate) async fn finish_recording(
    recorder: evapi_record::recorder::Recorder,
) -> anyhow::Result<()> {
    let written = recorder
        .finish()
        .await
        .context("cannot write the transcript")?;
    let mut note = String::new();
    if written.lost > 0 {
        note += &format!(
            ", {} lost (the disk fell behind: raise --record-buffer-bytes)",
            written.lost
        );
    }
    if written.past_max > 0 {
        note += &format!(
            ", {} not written (--record-max-bytes reached; with --rotate-bytes the oldest parts go instead)",
            written.past_max
        );
    }
    eprintln!(
        "transcript: {} entries in {} file(s){note}",
        written.entries, written.files
    );
    Ok(())
}

/// `--node`, or the host name with dots made dashes.
pub(crate) fn node_name(node: Option<String>) -> anyhow::Result<String> {
    let node = match node {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_else(|_| "node".to_owned())
            .trim()
            .replace('.', "-"),
    };
    anyhow::ensure!(
        evapi_nats::valid_node(&node),
        "--node {node:?}: letters, digits, '-' and '_' only, at most 64"
    );
    Ok(node)
}

/// `--addr`: `[NAME=]ADDR`, the address as every address flag takes it.
pub(crate) fn node(text: &str) -> Result<evapi_client::nodes::Node, String> {
    evapi_client::nodes::Node::parse(text, evapi_cli::addr::evapi_text)
}
