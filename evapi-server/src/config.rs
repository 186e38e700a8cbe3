//! Server settings, one field per Kamailio evapi modparam plus our additions.
//!
//! | Kamailio modparam   | field                                   | default          |
//! |---------------------|-----------------------------------------|------------------|
//! | `bind_addr`         | the listener given to [`Server::run`](crate::Server::run) (binary: `--bind`) | `127.0.0.1:8448` ([`DEFAULT_BIND`]) |
//! | `netstring_format`  | [`Config::framing`]                     | netstring        |
//! | `workers`           | [`Config::workers`]                     | 1                |
//! | `max_clients`       | [`Config::max_clients`]                 | 8                |
//! | `send_data_timeout` | [`Config::send_timeout`]                | 5 s              |
//! | `context_mlimit`    | [`Config::queue_limit`]                 | 0 (no drops)     |
//! | (ours)              | [`Config::max_frame`], [`Config::allow`], [`Config::client_queue`], [`Config::slow_client`] | |

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Tokens;
use crate::rate::Rate;

use evapi_proto::{Framing, DEFAULT_MAX_FRAME};
use ipnet::IpNet;

/// Default listen address, Kamailio's evapi default port on loopback.
pub const DEFAULT_BIND: &str = "127.0.0.1:8448";
/// Default for [`Config::max_clients`], as Kamailio.
pub const DEFAULT_MAX_CLIENTS: usize = 8;
/// Default for [`Config::workers`].
pub const DEFAULT_WORKERS: usize = 1;
/// Default for [`Config::client_queue`]: frames waiting to be written to one client.
pub const DEFAULT_CLIENT_QUEUE: usize = 4096;
/// Default for [`Config::read_timeout`]: 30 s for one frame (a 1 MiB frame at 300 kbit/s).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`Config::client_queue_bytes`]: 4 MiB waiting for one client.
pub const DEFAULT_CLIENT_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Default for [`Config::max_queued_bytes`]: 256 MiB waiting for all clients together.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 256 * 1024 * 1024;
/// Default for [`Config::send_timeout`].
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages a worker's queue holds when [`Config::queue_limit`] is 0; past this, the
/// connection's reader waits (TCP flow control pushes back on the client), nothing is lost.
pub const DEFAULT_WORKER_QUEUE: usize = 1024;
/// Most bytes one read takes in bare framing, where one read is one message: Kamailio
/// 5.6 reads up to 32 KiB at a time, so a 20 KB write is one message from both.
pub const BARE_READ: usize = 32 * 1024;
/// Default for [`Config::max_pending`].
pub const DEFAULT_MAX_PENDING: usize = 64;
/// Default for [`Config::max_pending_per_ip`].
pub const DEFAULT_MAX_PENDING_PER_IP: usize = 4;
/// Default for [`Config::max_auth_failures`].
pub const DEFAULT_MAX_AUTH_FAILURES: u32 = evapi_ops::throttle::DEFAULT_MAX_AUTH_FAILURES;
/// Default for [`Config::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`Config::auth_timeout`].
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`Config::keepalive`]: first probe after 60 s of silence, then every
/// 10 s; after [`KEEPALIVE_PROBES`] unanswered probes the kernel resets the connection.
pub const DEFAULT_KEEPALIVE: Keepalive = Keepalive {
    idle: Duration::from_secs(60),
    interval: Duration::from_secs(10),
};
/// Unanswered keepalive probes before the kernel gives up on a peer.
pub const KEEPALIVE_PROBES: u32 = 6;
/// Longest tag, in bytes: Kamailio 5.6's `evapi_set_tag` accepts 63 and refuses 64
/// (observed), so an app tested against us behaves the same on the real thing.
pub const MAX_TAG_LEN: usize = 63;

/// What to do with a client whose send queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowClientPolicy {
    /// Disconnect it (after flushing what is queued, within the send timeout).
    #[default]
    Disconnect,
    /// Keep it connected; frames that do not fit are dropped and counted.
    Drop,
}

/// Which client of a tag a unicast goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnicastPolicy {
    /// The lowest `conidx` with the tag, as Kamailio: one instance gets everything.
    #[default]
    First,
    /// Each client of the tag in turn.
    RoundRobin,
    /// The client with the fewest bytes waiting in its queue (lowest `conidx` on ties).
    LeastQueued,
    /// By a key (for the simulator, the Call-ID): the same key goes to the same
    /// client while it is connected (rendezvous hashing, so a client joining or
    /// leaving moves only its own share of keys). Without a key: as `First`.
    Hash,
}

impl UnicastPolicy {
    /// The name used on the command line and in control commands.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            UnicastPolicy::First => "first",
            UnicastPolicy::RoundRobin => "round-robin",
            UnicastPolicy::LeastQueued => "least-queued",
            UnicastPolicy::Hash => "hash",
        }
    }

    /// The policy named `name` (as [`name`](Self::name) gives).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::First, Self::RoundRobin, Self::LeastQueued, Self::Hash]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// What to do with a client frame over `max_frame`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OversizePolicy {
    /// Close the client (after delivering the frames before it).
    #[default]
    Close,
    /// Drop that frame without buffering it, log and count it, and keep reading
    /// (netstring and line framing). Bytes that are not a frame at all still close.
    Skip,
}

/// TCP keepalive timings: a peer that vanished (host down, cable pulled) is found
/// after `idle + KEEPALIVE_PROBES x interval` and its slot freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before the first probe.
    pub idle: Duration,
    /// Between probes.
    pub interval: Duration,
}

/// A rustls server setup for the event socket (feature `tls`: an
/// `Arc<rustls::ServerConfig>`, see [`tls::server_config`](crate::tls::server_config)).
#[cfg(feature = "tls")]
pub type TlsSetup = Arc<rustls::ServerConfig>;

/// Without the feature `tls`, a type with no value: [`Config::tls`] is always `None`.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone)]
pub enum TlsSetup {}

/// Everything a server needs to know; [`Config::default`] matches Kamailio's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Framing on every connection.
    pub framing: Framing,
    /// Tasks that run `message-received`. 0 runs it on the connection's own task, so a
    /// slow handler stalls that connection's reading (and only that one).
    pub workers: usize,
    /// Connections served at once; one more is accepted and closed at once, with a log line.
    pub max_clients: usize,
    /// Longest frame in bytes, both ways. Without it a length prefix could make us
    /// buffer whatever a peer claims.
    pub max_frame: usize,
    /// Frames queued for one client before the slow-client policy applies (what maps to
    /// Kamailio's `context_mlimit`, the bound on the outgoing queue).
    pub client_queue: usize,
    /// Bytes queued for one client before the slow-client policy applies (default
    /// [`DEFAULT_CLIENT_QUEUE_BYTES`]). Without it, a stalled client with big frames
    /// could hold `client_queue` x `max_frame` bytes (4 GiB at the defaults). What the
    /// writer has already taken for the socket is not counted: at most about twice this
    /// per client in all.
    pub client_queue_bytes: usize,
    /// Bytes queued for all clients together before new frames are refused (each
    /// refusal applies the slow-client policy to that client). Default
    /// [`DEFAULT_MAX_QUEUED_BYTES`].
    pub max_queued_bytes: usize,
    /// A write to a client that makes no progress for this long disconnects it.
    pub send_timeout: Duration,
    /// Incoming messages waiting for the workers before new ones are dropped and
    /// counted. 0 = never drop: reading pauses instead (bounded by
    /// [`DEFAULT_WORKER_QUEUE`] per worker). Ours: Kamailio's `context_mlimit` bounds
    /// the outgoing queue, which [`Config::client_queue`] does here.
    pub queue_limit: usize,
    /// Clients allowed to connect; empty = everyone.
    pub allow: Vec<IpNet>,
    /// What to do when a client's queue is full.
    pub slow_client: SlowClientPolicy,
    /// What to do with a client frame over `max_frame`.
    pub oversize: OversizePolicy,
    /// How long graceful shutdown waits for connections to flush before giving up.
    pub shutdown_timeout: Duration,
    /// A frame must arrive whole within this long of its first byte, or the client is
    /// closed (`read-timeout`). Without it, clients that send a partial frame and stop
    /// (slowloris) hold a slot and a buffer each for as long as they like. Default
    /// [`DEFAULT_READ_TIMEOUT`].
    pub read_timeout: Duration,
    /// Close a client that has sent no frame with content for this long
    /// (`idle-timeout`): white space between frames, frames of white space only (an
    /// empty netstring, an empty line, a lone space in bare framing) and partial frames
    /// are not activity, so a peer cannot hold its slot by trickling bytes. `None` (the default): never, since Kamailio
    /// apps may be silent for hours.
    pub idle_timeout: Option<Duration>,
    /// Connections from one IP address at once; one more is refused like one over
    /// `max_clients`. `None` (the default): no per-address cap.
    pub max_clients_per_ip: Option<usize>,
    /// Serve TLS on TCP connections with this rustls setup (see
    /// [`tls::server_config`](crate::tls::server_config)); `None` (the default):
    /// plain TCP, as Kamailio. Replaced at run time by
    /// [`Handle::set_tls`](crate::Handle::set_tls).
    pub tls: Option<TlsSetup>,
    /// A TLS handshake must finish within this long of the connect, or the
    /// connection is closed (default [`DEFAULT_HANDSHAKE_TIMEOUT`]); without it a
    /// client that never finishes holds a slot.
    pub handshake_timeout: Duration,
    /// Require a token: a client's first frame must be `{"auth":"<token>"}` (see
    /// [`auth`](crate::auth)); `None` (the default): no authentication, as Kamailio.
    /// Replaced at run time by [`Handle::set_tokens`](crate::Handle::set_tokens).
    pub tokens: Option<Arc<Tokens>>,
    /// With tokens, the first frame must arrive within this long of the connect
    /// (after the TLS handshake), or the connection is closed (default
    /// [`DEFAULT_AUTH_TIMEOUT`]).
    pub auth_timeout: Duration,
    /// Connections still in their TLS handshake or before their token, at once. They
    /// hold none of `max_clients` (an app takes its slot once it has authenticated);
    /// when the pool is full, the oldest pending connection of the address with the most
    /// is closed to make room, so silent connections cannot lock the apps out. Default [`DEFAULT_MAX_PENDING`].
    pub max_pending: usize,
    /// Pending connections from one IP address at once; past it that address's oldest
    /// pending connection is closed (and counts as its failure). Default
    /// [`DEFAULT_MAX_PENDING_PER_IP`].
    pub max_pending_per_ip: usize,
    /// Failed authentications per second from all addresses together (app tokens,
    /// control tokens and admin bearer tokens alike); past it every token check waits
    /// for the next second, so guessing from many addresses is held to about this rate. 0: no global ceiling. Default [`DEFAULT_MAX_AUTH_FAILURES`].
    pub max_auth_failures: u32,
    /// Per-client limit on frames and bytes per second; past it the server stops
    /// reading that client for a while (nothing is lost, TCP pushes back). Default:
    /// none.
    pub max_rate: Rate,
    /// TCP keepalive on every accepted TCP connection (default [`DEFAULT_KEEPALIVE`]);
    /// `None`: the system's timings (Linux: 2 hours).
    pub keepalive: Option<Keepalive>,
    /// Which client of a tag [`Handle::unicast`](crate::Handle::unicast) picks
    /// (default [`UnicastPolicy::First`], as Kamailio).
    pub unicast_policy: UnicastPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            framing: Framing::Netstring,
            workers: DEFAULT_WORKERS,
            max_clients: DEFAULT_MAX_CLIENTS,
            max_frame: DEFAULT_MAX_FRAME,
            client_queue: DEFAULT_CLIENT_QUEUE,
            client_queue_bytes: DEFAULT_CLIENT_QUEUE_BYTES,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            queue_limit: 0,
            allow: Vec::new(),
            slow_client: SlowClientPolicy::Disconnect,
            oversize: OversizePolicy::Close,
            shutdown_timeout: DEFAULT_SEND_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            idle_timeout: None,
            max_clients_per_ip: None,
            tls: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tokens: None,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_per_ip: DEFAULT_MAX_PENDING_PER_IP,
            max_auth_failures: DEFAULT_MAX_AUTH_FAILURES,
            max_rate: Rate::default(),
            keepalive: Some(DEFAULT_KEEPALIVE),
            unicast_policy: UnicastPolicy::First,
        }
    }
}

impl Config {
    /// Whether a client at `ip` may connect.
    #[must_use]
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}
