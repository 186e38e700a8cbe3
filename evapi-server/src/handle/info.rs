//! What the [`Handle`](super::Handle) takes and gives: targets, delivery counts, errors,
//! and the snapshots of the clients and counters.

use std::net::IpAddr;

use evapi_proto::EncodeError;
use serde::Serialize;

use crate::routes::Transport;

/// A connection, named by its slot (`conidx`, reused) or its lifetime-unique `connid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Kamailio's `$evapi(conidx)`.
    Conidx(usize),
    /// Our never-reused id.
    Connid(u64),
}

/// How many clients a relay reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[must_use]
pub struct Delivery {
    /// Clients the frame was queued for.
    pub queued: usize,
    /// Matching clients whose queue was full (disconnected or dropped per policy).
    pub dropped: usize,
}

/// Why a relay sent nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Empty payloads are refused, as Kamailio does: clients may not expect `0:,`.
    #[error("empty payload: nothing sent")]
    Empty,
    /// No client is connected (Kamailio logs "no client connected").
    #[error("no client connected")]
    NoClient,
    /// No connected client has this tag.
    #[error("no client with tag {0:?}")]
    NoTag(String),
    /// The framing cannot carry the payload.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Why a close or set_tag did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No client in that slot.
    #[error("no client at conidx {0}")]
    NoConidx(usize),
    /// No client has this tag.
    #[error("no client with tag {0:?}")]
    NoTag(String),
    /// That connection is gone (a connid is never reused, so it never hits another client).
    #[error("no client with connid {0}")]
    NoConnid(u64),
    /// Tags are at most [`MAX_TAG_LEN`](crate::config::MAX_TAG_LEN) bytes, as in Kamailio.
    #[error("tag of {len} bytes is longer than the {max}-byte limit")]
    TagTooLong {
        /// The tag's length in bytes.
        len: usize,
        /// [`MAX_TAG_LEN`](crate::config::MAX_TAG_LEN).
        max: usize,
    },
    /// Tags are printed by operators' tools (`top`, logs): no control characters.
    #[error("tag holds a control character (byte {at}): tags are printable text")]
    TagNotPrintable {
        /// Byte offset of the first control character.
        at: usize,
    },
}

/// Why a reload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The server was started without this, so it cannot be replaced.
    #[error("{0} was not enabled at start")]
    NotEnabled(&'static str),
}

/// One connected client, as of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ClientInfo {
    /// `$evapi(conidx)`.
    pub conidx: usize,
    /// Lifetime-unique id.
    pub connid: u64,
    /// `$evapi(srcaddr)`.
    pub srcaddr: IpAddr,
    /// `$evapi(srcport)`.
    pub srcport: u16,
    /// The tag, if set.
    pub tag: Option<String>,
    /// When it connected, in seconds since the Unix epoch.
    pub connected_since: u64,
    /// Frames received from it.
    pub frames_in: u64,
    /// Payload bytes received from it.
    pub bytes_in: u64,
    /// Frames written to it.
    pub frames_out: u64,
    /// Bytes written to it, framing included.
    pub bytes_out: u64,
    /// Frames not queued for it because its queue was full.
    pub dropped: u64,
    /// Frames waiting in its queue.
    pub queue_depth: usize,
    /// Bytes waiting in its queue (bounded by [`Config::client_queue_bytes`](crate::Config::client_queue_bytes)).
    pub queue_bytes: usize,
    /// Whether connection-new accepted it; until then it is pending and receives no
    /// relays.
    pub accepted: bool,
    /// How it is connected.
    pub transport: Transport,
    /// The subject of its client certificate (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_subject: Option<String>,
    /// The name of its token (token authentication).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

/// Server-wide counters since start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Clients connected now.
    pub connected: usize,
    /// Connections that reached connection-new.
    pub accepted: u64,
    /// Connections closed at once because `max_clients` were connected.
    pub refused_max_clients: u64,
    /// Connections closed at once because the allow-list does not include them.
    pub refused_allow: u64,
    /// Connections closed at once because their address had `max_clients_per_ip`.
    pub refused_per_ip: u64,
    /// Connections that connection-new rejected.
    pub rejected: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Frames written to clients.
    pub frames_out: u64,
    /// Bytes written to clients, framing included.
    pub bytes_out: u64,
    /// Relay, multicast and unicast calls that queued a frame.
    pub relays: u64,
    /// Frames not queued because a client's queue was full.
    pub dropped: u64,
    /// Clients disconnected because their queue was full.
    pub slow_clients: u64,
    /// Clients disconnected because a write made no progress for the send timeout.
    pub send_timeouts: u64,
    /// Bad frames from clients: connections closed for bytes that break the framing,
    /// plus frames over the limit skipped under `OversizePolicy::Skip`.
    pub bad_frames: u64,
    /// Messages dropped because the worker queue was over `queue_limit`.
    pub worker_dropped: u64,
    /// Bytes queued for all clients now (bounded by [`Config::max_queued_bytes`](crate::Config::max_queued_bytes)).
    pub queued_bytes: usize,
    /// Connections closed because the TLS handshake failed or did not finish in time.
    pub tls_failed: u64,
    /// Connections closed because authentication failed (wrong or missing token,
    /// timeout).
    pub auth_failed: u64,
    /// Connections refused because their address failed authentication too often
    /// lately (at connect, or at their token check).
    pub refused_throttled: u64,
    /// Pending connections (TLS handshake or token still to come) now; they hold no
    /// app slot.
    pub pending: usize,
    /// Pending connections closed to make room in the full pending pool (the oldest of
    /// the address with the most pending).
    pub pending_evicted: u64,
    /// Tokens checked and found wrong: the guesses that were actually tried (refusals
    /// by the throttle come before any check and are not counted here).
    pub wrong_tokens: u64,
    /// Times a client's reading was paused for going over [`Config::max_rate`](crate::Config::max_rate).
    pub rate_limited: u64,
    /// Relay, multicast and unicast calls that found no client (or none with the tag).
    pub relay_no_client: u64,
    /// Connections ended (those that reached connection-new), by reason name.
    pub closed: std::collections::BTreeMap<&'static str, u64>,
}
