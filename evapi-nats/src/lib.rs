//! Scale-out over NATS JetStream: a bridge per SIP node, and apps that answer from
//! anywhere.
//!
//! - The **bridge** reads a node's evapi socket at full speed and publishes every
//!   event to the JetStream stream [`STREAM`] on `evapi.<node>.events`, with the header
//!   [`NODE_HEADER`]; it takes `evapi.<node>.answers` from the JetStream stream
//!   [`ANSWERS_STREAM`] (its durable consumer `answers-<node>`), writes each answer to
//!   the node's socket, then acknowledges it: answers published while the bridge was
//!   away (restarting, or NATS failing over) wait in the stream and are written once.
//! - **Responders** share the durable pull consumer [`CONSUMER`] of that work-queue
//!   stream: each event goes to one of them; its answer is published to the answers
//!   subject of the node named in the event's header and stored by JetStream (one per
//!   event: its message id names the event), then the event is acknowledged.
//!   A responder that dies before acknowledging has its events redelivered to another
//!   after the ack wait; a second answer to the same transaction is refused by the
//!   node's transaction table (exactly one final reply).
//!
//! Only JetStream features of nats-server 2.9 are used (Debian 12's): one subject
//! filter per consumer, work-queue retention, explicit acks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use tracing::{debug, info, warn};

use evapi_client::client::{ClientError, Secret};

mod app;
mod bridge;
pub mod expected;

/// The Rust example of docs/scale-out.md compiles (a doctest).
#[cfg(doctest)]
#[doc = include_str!("../../docs/scale-out.md")]
pub struct ScaleOutGuide;
pub mod outbox;
pub mod seal;
pub mod untransacted;

pub use app::{
    app_io, confirm_answer, over_nats, respond, AppConfig, AppMode, NatsApp, NatsEvent, NatsRoute,
    Taking, ANSWER_CONFIRM, DEFAULT_MAX_IN_FLIGHT, FLUSH_PATIENCE,
};
pub use bridge::{
    bridge, BridgeConfig, BridgeCounts, BridgeStats, DEFAULT_ANSWERS_BUFFER_BYTES,
    DEFAULT_BUFFER_BYTES,
};

/// The JetStream stream that holds every node's events until a responder takes them.
pub const STREAM: &str = "EVAPI_EVENTS";
/// The JetStream stream that holds every node's answers until its bridge has written
/// them to the node.
pub const ANSWERS_STREAM: &str = "EVAPI_ANSWERS";
/// The durable consumer the responders share (a work queue: one responder per event).
pub const CONSUMER: &str = "evapi-responders";
/// The header naming the node an event came from.
pub const NODE_HEADER: &str = "Evapi-Node";
/// The header carrying an event's deadline: milliseconds since the Unix epoch after
/// which its transaction has ended at the node (its `fr_inv_timer`), so an app must not
/// answer it (apps on other hosts compare it with their own clock: keep clocks in sync).
pub const DEADLINE_HEADER: &str = "Evapi-Deadline";
/// Default ack wait: an event taken by a responder that then died is redelivered after
/// this long (well inside fr_inv_timer and sipp's 32 s INVITE retransmissions).
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(5);
/// Events published and awaiting JetStream's confirmation at once, per bridge.
pub const DEFAULT_WINDOW: usize = 4096;
/// How long buffered events may wait in JetStream for a responder: older ones are of
/// no use (their transactions have timed out at the node).
pub const EVENT_MAX_AGE: Duration = Duration::from_secs(120);

/// The subject of `node`'s events.
#[must_use]
pub fn events_subject(node: &str) -> String {
    format!("evapi.{node}.events")
}

/// The subject of answers for `node`.
#[must_use]
pub fn answers_subject(node: &str) -> String {
    format!("evapi.{node}.answers")
}

/// Whether `node` can be a subject token: letters, digits, `-`, `_`, at most 64 bytes.
#[must_use]
pub fn valid_node(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= 64
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What kind of failure a [`NatsError`] is, to branch on ([`NatsError::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NatsErrorKind {
    /// A setting that cannot work: a server URL that does not parse, none given, a
    /// credentials file that cannot be read. Retrying does not help.
    Settings,
    /// Nobody answered at the server URL(s): no server listening, no route, a timeout.
    Unreachable,
    /// A server answered and refused: credentials, a certificate.
    Refused,
    /// The JetStream stream could not be made, or exists with other settings.
    Stream,
    /// A JetStream consumer could not be made.
    Consumer,
    /// Publishing, or JetStream's confirmation of it, failed.
    Publish,
    /// Subscribing, or pulling messages, failed.
    Subscribe,
    /// Acknowledging a message (or giving it back) failed.
    Acknowledge,
    /// A flush failed or was not answered in time.
    Flush,
    /// The node's evapi socket failed (not NATS).
    Node,
}

/// What went wrong on the NATS side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The stream, the consumer or the connection's settings could not be set up.
    #[error("{what}")]
    Setup {
        /// Which: [`NatsErrorKind::Settings`], [`NatsErrorKind::Stream`] or
        /// [`NatsErrorKind::Consumer`].
        kind: NatsErrorKind,
        /// What was being set up.
        what: String,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// NATS could not be reached, or refused the connection.
    #[error("cannot connect to NATS at {url}")]
    Connect {
        /// The server URL(s).
        url: String,
        /// Nobody answered (as opposed to a refusal: credentials, a certificate).
        unreachable: bool,
        /// async-nats's reason.
        #[source]
        source: async_nats::ConnectError,
    },
    /// Publishing, subscribing, acknowledging or flushing failed.
    #[error("NATS: cannot {what}")]
    Nats {
        /// Which: [`NatsErrorKind::Publish`], [`NatsErrorKind::Subscribe`],
        /// [`NatsErrorKind::Acknowledge`] or [`NatsErrorKind::Flush`].
        kind: NatsErrorKind,
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The node's evapi socket failed.
    #[error(transparent)]
    Node(#[from] ClientError),
}

/// Any error as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `.map_err(nats_error(NatsErrorKind::Flush, "flush"))`: a NATS operation that failed,
/// with its cause kept.
fn nats_error<E: Into<BoxError>>(
    kind: NatsErrorKind,
    what: &str,
) -> impl FnOnce(E) -> NatsError + '_ {
    move |source| NatsError::Nats {
        kind,
        what: what.to_owned(),
        source: source.into(),
    }
}

/// `.map_err(setup_error(NatsErrorKind::Stream, "the JetStream stream"))`.
fn setup_error<E: Into<BoxError>>(
    kind: NatsErrorKind,
    what: &str,
) -> impl FnOnce(E) -> NatsError + '_ {
    move |source| NatsError::Setup {
        kind,
        what: what.to_owned(),
        source: source.into(),
    }
}

impl NatsError {
    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> NatsErrorKind {
        match self {
            Self::Setup { kind, .. } | Self::Nats { kind, .. } => *kind,
            Self::Connect {
                unreachable: true, ..
            } => NatsErrorKind::Unreachable,
            Self::Connect { .. } => NatsErrorKind::Refused,
            Self::Node(_) => NatsErrorKind::Node,
        }
    }

    /// Whether NATS could not be reached (nobody listening, no route, a timeout).
    #[must_use]
    pub fn is_unreachable(&self) -> bool {
        self.kind() == NatsErrorKind::Unreachable
    }
}

/// How to reach NATS: the server(s), credentials and TLS, as async-nats takes them.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// Server URL(s), comma-separated: `nats://HOST:PORT`, `tls://HOST:PORT`.
    pub url: String,
    /// A credentials file (JWT and NKey seed, `nsc`'s `.creds`).
    pub creds: Option<PathBuf>,
    /// An NKey seed (`SU...`), for servers that list the user's public key.
    pub nkey: Option<Secret>,
    /// A token (nats-server `authorization { token: .. }`).
    pub token: Option<Secret>,
    /// User and password.
    pub user: Option<(String, Secret)>,
    /// CA certificates (PEM) to verify the server with; implies TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for servers that verify clients.
    pub tls_cert: Option<(PathBuf, PathBuf)>,
    /// Refuse to talk to NATS without TLS.
    pub require_tls: bool,
    /// The connection's name, shown by the server's monitoring.
    pub name: Option<String>,
    /// How long to keep trying a server that cannot be reached at first; `None`:
    /// for ever.
    pub wait: Option<Duration>,
    /// How the events' stream and the apps' consumer are made (when this process
    /// creates them) and must be (when they exist).
    pub stream: StreamSettings,
}

/// The state of a NATS connection, kept by its event callback: for logs and metrics.
#[derive(Debug, Default)]
pub struct LinkStatus {
    /// Connected now.
    pub(crate) connected: AtomicBool,
    /// Times the connection was lost.
    pub(crate) disconnects: AtomicU64,
    /// Events held for NATS now (a bridge's outbox), said when NATS is lost and back.
    pub(crate) held: AtomicU64,
    /// When the connection was lost, while it is.
    down_since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl NatsOptions {
    /// Options for `url` alone.
    #[must_use]
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Connect, then async-nats reconnects by itself for as long as the process lives,
    /// and `link` (when given) follows the state. A server that cannot be reached is
    /// tried again (every 100 ms doubling to 5 s) for [`NatsOptions::wait`], so a
    /// client started before its NATS server waits for it; a refusal (credentials,
    /// TLS) fails at once.
    ///
    /// # Errors
    ///
    /// [`NatsError::Setup`]: a credentials file that cannot be read, a refusal, or no
    /// server within the wait.
    pub async fn connect(
        &self,
        link: Option<Arc<LinkStatus>>,
    ) -> Result<async_nats::Client, NatsError> {
        let link = link.unwrap_or_default();
        let servers = self.servers()?;
        let deadline = self.wait.map(|w| tokio::time::Instant::now() + w);
        let mut pause = Duration::from_millis(100);
        let mut warned = false;
        loop {
            let opts = self.options(&link).await?;
            match opts.connect(servers.clone()).await {
                Ok(client) => return Ok(client),
                Err(e)
                    if unreachable(&e)
                        && deadline.is_none_or(|d| tokio::time::Instant::now() + pause < d) =>
                {
                    // Once at warn level; the retries after it at debug level.
                    if warned {
                        debug!(url = %self.url, error = %e, retry_in = ?pause, "NATS not reachable yet");
                    } else {
                        warn!(url = %self.url, error = %e, "NATS not reachable yet; retrying (every 100 ms doubling to 5 s)");
                        warned = true;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(source) => {
                    return Err(NatsError::Connect {
                        url: self.url.clone(),
                        unreachable: unreachable(&source),
                        source,
                    })
                }
            }
        }
    }

    /// The servers of [`NatsOptions::url`]: comma-separated URLs, each
    /// `nats://HOST:PORT`, `tls://HOST:PORT` or `HOST:PORT`. A cluster's clients list
    /// several; the client connects to one and moves to another when it is lost.
    ///
    /// # Errors
    ///
    /// [`NatsError::Setup`] naming the URL that does not parse, or none given.
    pub fn servers(&self) -> Result<Vec<async_nats::ServerAddr>, NatsError> {
        let servers = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse::<async_nats::ServerAddr>()
                    .map_err(|source| NatsError::Setup {
                        kind: NatsErrorKind::Settings,
                        what: format!("NATS server URL {u:?}"),
                        source: source.into(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(NatsError::Setup {
                kind: NatsErrorKind::Settings,
                what: "--nats".to_owned(),
                source: "no server URL given".into(),
            });
        }
        Ok(servers)
    }

    async fn options(
        &self,
        link: &Arc<LinkStatus>,
    ) -> Result<async_nats::ConnectOptions, NatsError> {
        let mut opts = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            // Reconnect forever once connected; the bridge buffers meanwhile.
            .max_reconnects(None);
        if let Some(path) = &self.creds {
            opts = opts
                .credentials_file(path)
                .await
                .map_err(|source| NatsError::Setup {
                    kind: NatsErrorKind::Settings,
                    what: format!("credentials file {}", path.display()),
                    source: source.into(),
                })?;
        }
        if let Some(seed) = &self.nkey {
            opts = opts.nkey(seed.expose().to_owned());
        }
        if let Some(token) = &self.token {
            opts = opts.token(token.expose().to_owned());
        }
        if let Some((user, password)) = &self.user {
            opts = opts.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(ca) = &self.tls_ca {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.tls_cert {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if self.require_tls {
            opts = opts.require_tls(true);
        }
        if let Some(name) = &self.name {
            opts = opts.name(name);
        }
        let state = Arc::clone(link);
        let url = self.url.clone();
        Ok(opts.event_callback(move |event| {
            let (state, url) = (Arc::clone(&state), url.clone());
            async move {
                match event {
                    async_nats::Event::Connected => {
                        state.connected.store(true, Ordering::Relaxed);
                        let down = state
                            .down_since
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .take();
                        let held = state.held.load(Ordering::Relaxed);
                        match down {
                            Some(since) => warn!(
                                %url,
                                down_for = ?since.elapsed(),
                                held,
                                "NATS is back"
                            ),
                            None => info!(%url, "connected to NATS"),
                        }
                    }
                    async_nats::Event::Disconnected => {
                        state.connected.store(false, Ordering::Relaxed);
                        state.disconnects.fetch_add(1, Ordering::Relaxed);
                        state
                            .down_since
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get_or_insert_with(std::time::Instant::now);
                        let held = state.held.load(Ordering::Relaxed);
                        warn!(%url, held, "lost NATS, reconnecting (events are held meanwhile)");
                    }
                    other => warn!(%url, event = %other, "NATS"),
                }
            }
        }))
    }
}

/// Whether a failed connection is worth trying again: nobody listening yet, no route,
/// a timeout. A refusal (credentials, a certificate) is not: it fails the same way
/// every time.
fn unreachable(e: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    use std::io::ErrorKind as Io;
    match e.kind() {
        Kind::TimedOut | Kind::Dns => true,
        Kind::Io => std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    Io::ConnectionRefused
                        | Io::ConnectionReset
                        | Io::ConnectionAborted
                        | Io::NotConnected
                        | Io::TimedOut
                        | Io::AddrNotAvailable
                        | Io::UnexpectedEof
                        | Io::BrokenPipe
                        | Io::HostUnreachable
                        | Io::NetworkUnreachable
                )
            }),
        _ => false,
    }
}

/// The events stream, created when missing: subjects `evapi.*.events`, work-queue
/// retention (an event is gone once a responder acknowledged it), at most `max_age`
/// old (events nobody took in time are useless: their transactions timed out).
///
/// # Errors
///
/// [`NatsError::Setup`] when JetStream refuses, or the stream exists with other
/// replicas or storage.
pub async fn events_stream(
    js: &jetstream::Context,
    max_age: Duration,
    settings: StreamSettings,
) -> Result<stream::Stream, NatsError> {
    ensure_stream(js, STREAM, "evapi.*.events", max_age, settings).await
}

/// A JetStream context for making or checking streams and consumers: in a cluster that
/// has just formed, or is electing leaders, that takes seconds (publications have
/// their own, shorter, wait).
pub(crate) fn setup_context(nats: &async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(nats.clone());
    js.set_timeout(SETUP_TIMEOUT);
    js
}

/// How long JetStream may take to make or check a stream or a consumer.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// The answers stream, created when missing: subjects `evapi.*.answers`, work-queue
/// retention (an answer is gone once its node's bridge wrote it and acknowledged it),
/// at most [`EVENT_MAX_AGE`] old (an answer older than its call is of no use), the same
/// replicas and storage as the events.
///
/// # Errors
///
/// As [`events_stream`].
pub async fn answers_stream(
    js: &jetstream::Context,
    settings: StreamSettings,
) -> Result<stream::Stream, NatsError> {
    ensure_stream(
        js,
        ANSWERS_STREAM,
        "evapi.*.answers",
        EVENT_MAX_AGE,
        settings,
    )
    .await
}

/// The stream `name` on `subjects`, created when missing; an existing one must have
/// the replicas and storage asked for (those are not changed), and gets the byte bound
/// asked for.
async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &str,
    max_age: Duration,
    settings: StreamSettings,
) -> Result<stream::Stream, NatsError> {
    let storage = if settings.memory {
        stream::StorageType::Memory
    } else {
        stream::StorageType::File
    };
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects.to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage,
            num_replicas: settings.replicas.max(1),
            max_age,
            max_bytes: settings.max_bytes,
            discard: stream::DiscardPolicy::New,
            // Republications (after a lost confirmation) carry the same message id;
            // JetStream stores each once within this window.
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|source| NatsError::Setup {
            kind: NatsErrorKind::Stream,
            what: format!(
                "the JetStream stream {name} ({} replica(s), {} storage; more replicas than servers in the cluster is refused)",
                settings.replicas.max(1),
                settings.storage_name()
            ),
            source: source.into(),
        })?;
    // An existing stream keeps its replicas and storage: say so when they differ from
    // what was asked.
    let info = stream.info().await.map_err(setup_error(
        NatsErrorKind::Stream,
        "the JetStream stream's settings",
    ))?;
    let (replicas, memory) = (
        info.config.num_replicas.max(1),
        info.config.storage == stream::StorageType::Memory,
    );
    if replicas != settings.replicas.max(1) || memory != settings.memory {
        return Err(NatsError::Setup {
            kind: NatsErrorKind::Stream,
            what: format!(
                "the JetStream stream {name} exists with {replicas} replica(s) and {} storage, not the {} and {} asked (--replicas, --storage)",
                if memory { "memory" } else { "file" },
                settings.replicas.max(1),
                settings.storage_name()
            ),
            source: "change it with `nats stream edit` (replicas) or remove it while nothing waits in it, then start again"
                .into(),
        });
    }
    // The byte bound can change in place: a stream made without one (by an older
    // version, or by hand) would otherwise hold without end.
    if let Some(change) = bound_change(
        info.config.max_bytes,
        info.config.discard,
        info.state.bytes,
        settings.max_bytes,
    ) {
        match change {
            BoundChange::Set => {
                let mut config = info.config.clone();
                config.max_bytes = settings.max_bytes;
                config.discard = stream::DiscardPolicy::New;
                match js.update_stream(&config).await {
                    Ok(_) => info!(
                        stream = name,
                        was = info.config.max_bytes,
                        max_bytes = settings.max_bytes,
                        discard_was = ?info.config.discard,
                        "the JetStream stream's byte bound set to --stream-max-bytes (discard new)"
                    ),
                    Err(e) => warn!(
                        stream = name,
                        existing = info.config.max_bytes,
                        asked = settings.max_bytes,
                        error = %e,
                        "the JetStream stream's byte bound differs from --stream-max-bytes and cannot be changed from here; set it with `nats stream edit --max-bytes`"
                    ),
                }
            }
            BoundChange::WouldDelete => warn!(
                stream = name,
                existing = info.config.max_bytes,
                asked = settings.max_bytes,
                holds = info.state.bytes,
                "the JetStream stream holds too much to lower its byte bound in place (nats-server would delete its oldest messages): left as it is; lower it with `nats stream edit --max-bytes` once it has drained"
            ),
        }
    }
    Ok(stream)
}

/// What to do with an existing stream's byte bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BoundChange {
    /// Set the bound asked for (and discard new).
    Set,
    /// Leave it: lowering it under what is stored would make nats-server delete the
    /// oldest messages (it does so on a bound lowered in place, whatever the discard
    /// policy).
    WouldDelete,
}

/// How an existing stream's bound (`existing`, -1 or 0: none; with `discard`), holding
/// `stored` bytes, meets the bound `asked`: `None` when it already is what was asked. A
/// higher bound is always set; a lower one (or one where there was none) only while what
/// is stored is under half of it, so messages arriving meanwhile are not deleted either.
fn bound_change(
    existing: i64,
    discard: stream::DiscardPolicy,
    stored: u64,
    asked: i64,
) -> Option<BoundChange> {
    if existing == asked && discard == stream::DiscardPolicy::New {
        return None;
    }
    let raising = existing > 0 && asked >= existing;
    let room = u64::try_from(asked).unwrap_or(0) / 2;
    Some(if raising || stored <= room {
        BoundChange::Set
    } else {
        BoundChange::WouldDelete
    })
}

/// How the events' stream is made: JetStream replicas (a cluster's servers hold that
/// many copies, so one can die without losing events) and storage (file survives a
/// restart of nats-server; memory is faster and loses what it holds when the server
/// goes); and, for the apps' consumer, how many events may be taken and unacknowledged
/// at once across every app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Copies of each event in a cluster (1: a single server).
    pub replicas: usize,
    /// Memory storage instead of file.
    pub memory: bool,
    /// The consumer's `max_ack_pending` for the whole fleet of apps; `None`: the
    /// server's default (1,000 in nats-server 2.9).
    pub max_ack_pending: Option<i64>,
    /// Most bytes each stream holds (events; answers); past it JetStream refuses new
    /// messages (discard new: nothing stored is dropped): the bridge holds its events,
    /// an app gives its event back. Bounds what an app with credentials can make
    /// JetStream store. Set on a stream that exists with another bound (or none) too,
    /// when the NATS user may update it and, if it lowers the bound, while the stream
    /// holds under half of it (else a warning says why not).
    pub max_bytes: i64,
}

/// Default of [`StreamSettings::max_bytes`]: 256 MiB per stream.
pub const DEFAULT_STREAM_MAX_BYTES: i64 = 256 * 1024 * 1024;

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            memory: false,
            max_ack_pending: None,
            max_bytes: DEFAULT_STREAM_MAX_BYTES,
        }
    }
}

impl StreamSettings {
    fn storage_name(self) -> &'static str {
        if self.memory {
            "memory"
        } else {
            "file"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller branches on the kind, not on the message: settings that cannot work
    /// are not retried, a server nobody answers at is.
    #[test]
    fn errors_say_their_kind() {
        let bad = NatsOptions::url("nats://[::1");
        let e = bad.servers().expect_err("not a URL");
        assert_eq!(e.kind(), NatsErrorKind::Settings);
        assert!(!e.is_unreachable());
        let none = NatsOptions::url(" , ");
        assert_eq!(
            none.servers().map_err(|e| e.kind()).err(),
            Some(NatsErrorKind::Settings)
        );
        let node = NatsError::Node(evapi_client::ClientError::Encode(
            evapi_proto::EncodeError::TooLarge {
                framing: evapi_proto::Framing::Netstring,
                len: 2,
                max: 1,
            },
        ));
        assert_eq!(node.kind(), NatsErrorKind::Node);
        let flush = nats_error(NatsErrorKind::Flush, "flush")("no answer");
        assert_eq!(flush.kind(), NatsErrorKind::Flush);
        assert_eq!(flush.to_string(), "NATS: cannot flush");
    }

    #[test]
    fn a_stream_bound_is_never_lowered_under_what_it_holds() {
        use stream::DiscardPolicy::{New, Old};
        let mib = 1 << 20;
        // As asked: nothing to do.
        assert_eq!(bound_change(mib, New, 10, mib), None);
        // Only the discard policy differs: set (it deletes nothing).
        assert_eq!(bound_change(mib, Old, 10, mib), Some(BoundChange::Set));
        // Raised: always, however full.
        assert_eq!(
            bound_change(mib, New, 1 << 19, 4 * mib),
            Some(BoundChange::Set)
        );
        // Lowered, or set where there was none (-1), while it holds under half.
        assert_eq!(bound_change(4 * mib, New, 100, mib), Some(BoundChange::Set));
        assert_eq!(bound_change(-1, Old, 100, mib), Some(BoundChange::Set));
        // Lowered under what it holds, or too near it: left as it is.
        assert_eq!(
            bound_change(-1, Old, 3 << 20, mib),
            Some(BoundChange::WouldDelete)
        );
        assert_eq!(
            bound_change(4 * mib, New, (1 << 19) + 1, mib),
            Some(BoundChange::WouldDelete)
        );
    }

    #[test]
    fn several_servers_are_comma_separated_and_bad_ones_named() {
        let options = |url: &str| NatsOptions {
            url: url.to_owned(),
            ..NatsOptions::default()
        };
        let servers = options("nats://127.0.0.1:4222, tls://10.0.0.2:4223,127.0.0.1:4224")
            .servers()
            .expect("three URLs");
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[1].port(), 4223);
        let err = options("nats://a:4222,nats://b:notaport")
            .servers()
            .unwrap_err();
        assert!(err.to_string().contains("\"nats://b:notaport\""), "{err}");
        assert!(options(" , ").servers().is_err());
    }

    #[test]
    fn subjects_and_node_names() {
        assert_eq!(events_subject("sip-1"), "evapi.sip-1.events");
        assert_eq!(answers_subject("sip-1"), "evapi.sip-1.answers");
        assert!(valid_node("sip_1-b"));
        for bad in ["", "a.b", "a b", "*", ">", &"x".repeat(65)] {
            assert!(!valid_node(bad), "{bad:?}");
        }
    }
}
