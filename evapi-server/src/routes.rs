//! Event routes: what the embedder runs when a client connects, sends, or goes away.
//!
//! Kamailio runs `event_route[evapi:connection-new]`, `[evapi:connection-closed]` and
//! `[evapi:message-received]` with `$evapi(srcaddr)`, `$evapi(srcport)`,
//! `$evapi(conidx)` and `$evapi(msg)` set. Here each is a method of [`EventRoutes`]
//! with a default that does nothing, handed a [`ClientEnv`] (those values plus our
//! `connid` and the client's tag) and a [`Handle`] to act with.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::Handle;

/// Who a route is about: Kamailio's `$evapi(...)` environment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientEnv {
    /// `$evapi(conidx)`: the client's slot, reused after it disconnects (lowest free first).
    pub conidx: usize,
    /// Unique for the server's lifetime, never reused; safer than `conidx` for control.
    pub connid: u64,
    /// `$evapi(srcaddr)`.
    pub srcaddr: IpAddr,
    /// `$evapi(srcport)`.
    pub srcport: u16,
    /// The client's tag, if one was set.
    pub tag: Option<Arc<str>>,
    /// How it is connected (ours).
    pub transport: Transport,
    /// With mutual TLS: the subject of the client's verified certificate (its common
    /// name, or the whole subject when it has none).
    pub tls_subject: Option<Arc<str>>,
    /// With token authentication: the name of the token the client presented.
    pub auth: Option<Arc<str>>,
}

impl ClientEnv {
    /// A plain-TCP client with no tag and no identity, as Kamailio sees every client.
    #[must_use]
    pub fn tcp(conidx: usize, connid: u64, peer: std::net::SocketAddr) -> Self {
        Self {
            conidx,
            connid,
            srcaddr: peer.ip(),
            srcport: peer.port(),
            tag: None,
            transport: Transport::Tcp,
            tls_subject: None,
            auth: None,
        }
    }
}

/// How a client is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Transport {
    /// Plain TCP, as Kamailio.
    #[default]
    Tcp,
    /// TLS over TCP.
    Tls,
    /// A Unix domain socket (local; `srcaddr` is 127.0.0.1 and `srcport` 0).
    Unix,
    /// An in-memory stream in the same process (as `Unix` for addresses).
    Memory,
}

impl Transport {
    /// The lower-case name used in notifications and logs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Unix => "unix",
            Transport::Memory => "memory",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What `connection-new` decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Admit {
    /// Serve the client.
    #[default]
    Accept,
    /// Serve the client under this tag (as `evapi_set_tag` in the route).
    AcceptWithTag(String),
    /// Close the client (as `evapi_close` in the route). connection-closed still runs,
    /// with [`CloseReason::Rejected`].
    Reject,
}

/// Why a connection ended, reported to `connection-closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client closed its side (EOF).
    Peer,
    /// The socket failed (reset, broken pipe, ...).
    Reset,
    /// The client sent bytes that break the framing.
    BadFrame,
    /// The client's send queue filled up (it does not read fast enough).
    SlowClient,
    /// A write to the client made no progress for the send timeout.
    SendTimeout,
    /// A `close` from the handle or the control interface.
    Server,
    /// `connection-new` rejected it.
    Rejected,
    /// The server is shutting down.
    Shutdown,
    /// A frame did not arrive whole within the read timeout of its first byte
    /// (a slowloris client holding a slot and a buffer).
    ReadTimeout,
    /// No frame with content arrived for the idle timeout (opt-in).
    IdleTimeout,
}

impl CloseReason {
    /// Every reason, in [`index`](Self::index) order.
    pub const ALL: [CloseReason; 10] = [
        CloseReason::Peer,
        CloseReason::Reset,
        CloseReason::BadFrame,
        CloseReason::SlowClient,
        CloseReason::SendTimeout,
        CloseReason::Server,
        CloseReason::Rejected,
        CloseReason::Shutdown,
        CloseReason::ReadTimeout,
        CloseReason::IdleTimeout,
    ];

    /// A dense index, for counting by reason.
    #[must_use]
    pub fn index(self) -> usize {
        match self {
            CloseReason::Peer => 0,
            CloseReason::Reset => 1,
            CloseReason::BadFrame => 2,
            CloseReason::SlowClient => 3,
            CloseReason::SendTimeout => 4,
            CloseReason::Server => 5,
            CloseReason::Rejected => 6,
            CloseReason::Shutdown => 7,
            CloseReason::ReadTimeout => 8,
            CloseReason::IdleTimeout => 9,
        }
    }

    /// The lower-case name used in notifications and logs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Peer => "peer",
            CloseReason::Reset => "reset",
            CloseReason::BadFrame => "bad-frame",
            CloseReason::SlowClient => "slow-client",
            CloseReason::SendTimeout => "send-timeout",
            CloseReason::Server => "server",
            CloseReason::Rejected => "rejected",
            CloseReason::Shutdown => "shutdown",
            CloseReason::ReadTimeout => "read-timeout",
            CloseReason::IdleTimeout => "idle-timeout",
        }
    }

    /// Whether the server side decided to close (queued frames are flushed first).
    #[must_use]
    pub fn is_server_side(self) -> bool {
        !matches!(self, CloseReason::Peer | CloseReason::Reset)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The embedder's event routes. Every method has a do-nothing default.
///
/// Routes run on tokio tasks: `connection-new` and `connection-closed` on the
/// connection's task, `message-received` on a worker task (or the connection's task
/// with `workers = 0`). For one connection, the routes run in order: new, then each
/// message in arrival order, then closed.
pub trait EventRoutes: Send + Sync + 'static {
    /// `evapi:connection-new`: a client connected (after the allow-list and
    /// max-clients checks). It is *pending* while this runs: relays, multicasts and
    /// unicasts do not reach it. Reading starts when this returns.
    fn connection_new(
        &self,
        server: &Handle,
        client: &ClientEnv,
    ) -> impl Future<Output = Admit> + Send {
        let _ = (server, client);
        async { Admit::Accept }
    }

    /// The client is *accepted* (connection-new said so): from now on it receives
    /// relays. Ours, not Kamailio's: the place to tell others that it can be sent to
    /// (the binary prints its connection-new notification here, so a controller that
    /// relays on seeing it always reaches the client).
    fn connection_accepted(
        &self,
        server: &Handle,
        client: &ClientEnv,
    ) -> impl Future<Output = ()> + Send {
        let _ = (server, client);
        async {}
    }

    /// `evapi:message-received`: one complete message from a client.
    fn message_received(
        &self,
        server: &Handle,
        client: &ClientEnv,
        msg: Bytes,
    ) -> impl Future<Output = ()> + Send {
        let _ = (server, client, msg);
        async {}
    }

    /// `evapi:connection-closed`: the connection is gone (its socket is closed and
    /// relays no longer reach it).
    fn connection_closed(
        &self,
        server: &Handle,
        client: &ClientEnv,
        reason: CloseReason,
    ) -> impl Future<Output = ()> + Send {
        let _ = (server, client, reason);
        async {}
    }
}

/// Routes that do nothing: a server that only relays.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRoutes;

impl EventRoutes for NoRoutes {}
