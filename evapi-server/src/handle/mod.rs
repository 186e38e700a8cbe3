//! [`Handle`]: what an embedder (or the control interface) uses to act on a running
//! server: Kamailio's `evapi_relay`, `evapi_multicast`, `evapi_unicast`, `evapi_close`,
//! `evapi_set_tag`, plus a snapshot of the clients and counters.
//!
//! A relay encodes the frame once and appends it to each matching client's bounded
//! queue (its outbox), without waiting: a full queue applies the
//! slow-client policy to that client only. Small frames are encoded into a per-thread
//! scratch buffer, so relaying allocates nothing per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::UNIX_EPOCH;

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

#[cfg(feature = "tls")]
use tokio_rustls::TlsAcceptor;

use crate::auth::Tokens;
use crate::config::{Config, SlowClientPolicy, UnicastPolicy, MAX_TAG_LEN};
use crate::outbox::{Push, COALESCE_MAX};
use crate::registry::Tagged;
use crate::registry::{Conn, Registry};
use crate::routes::CloseReason;

mod info;

use evapi_ops::throttle::{SharedThrottle, Throttle};
pub use info::{ClientInfo, ControlError, Delivery, RelayError, ReloadError, Stats, Target};

/// State shared by the handle, the accept loop and the connections.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub registry: Registry,
    pub counters: Counters,
    /// Cancelled on shutdown; every connection's token is a child of it.
    pub shutdown: CancellationToken,
    /// Cancelled by [`Handle::drain`]: stop accepting, let clients finish.
    pub draining: CancellationToken,
    /// Bytes queued for all clients, against [`Config::max_queued_bytes`].
    pub queued_total: Arc<crate::outbox::Total>,
    /// The TLS setup new connections get (replaced on reload; existing ones keep theirs).
    tls: RwLock<Option<crate::config::TlsSetup>>,
    /// The token table new connections are checked against (replaced on reload).
    tokens: RwLock<Option<Arc<Tokens>>>,
    /// Addresses that keep failing authentication, at the socket, the control socket
    /// and the admin API alike.
    pub throttle: SharedThrottle,
    /// Connections in their TLS handshake or before their token.
    pub pending: Mutex<evapi_ops::pool::Pool>,
    /// Refusals since the last logged summary.
    pub refusals: crate::refusals::Refusals,
}

impl Shared {
    /// Whether TLS is on.
    pub(crate) fn tls_on(&self) -> bool {
        self.tls
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The TLS acceptor for a new connection, if TLS is on.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(&self) -> Option<TlsAcceptor> {
        self.tls
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .map(TlsAcceptor::from)
    }

    /// The token table for a new connection, if authentication is on.
    pub(crate) fn tokens(&self) -> Option<Arc<Tokens>> {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        evapi_ops::throttle::lock(&self.throttle)
    }

    pub(crate) fn pending(&self) -> std::sync::MutexGuard<'_, evapi_ops::pool::Pool> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Server-wide counters (atomics), snapshotted into [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub refused_max_clients: AtomicU64,
    pub refused_allow: AtomicU64,
    pub refused_per_ip: AtomicU64,
    pub rejected: AtomicU64,
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub relays: AtomicU64,
    pub dropped: AtomicU64,
    pub slow_clients: AtomicU64,
    pub send_timeouts: AtomicU64,
    pub bad_frames: AtomicU64,
    pub worker_dropped: AtomicU64,
    pub tls_failed: AtomicU64,
    pub auth_failed: AtomicU64,
    pub refused_throttled: AtomicU64,
    pub pending_evicted: AtomicU64,
    pub wrong_tokens: AtomicU64,
    pub rate_limited: AtomicU64,
    pub relay_no_client: AtomicU64,
    /// Connections ended, by [`CloseReason::index`].
    pub closed: [AtomicU64; CloseReason::ALL.len()],
}

/// A cloneable handle on a running (or about to run) server.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(config: Config) -> Self {
        Self {
            shared: Arc::new(Shared {
                queued_total: crate::outbox::Total::new(config.max_queued_bytes),
                tls: RwLock::new(config.tls.clone()),
                tokens: RwLock::new(config.tokens.clone()),
                throttle: SharedThrottle::default(),
                pending: Mutex::new(evapi_ops::pool::Pool::new(
                    config.max_pending,
                    config.max_pending_per_ip,
                )),
                refusals: crate::refusals::Refusals::default(),
                config,
                registry: Registry::default(),
                counters: Counters::default(),
                shutdown: CancellationToken::new(),
                draining: CancellationToken::new(),
            }),
        }
    }

    /// The server's settings (as given at start: [`set_tls`](Self::set_tls) and
    /// [`set_tokens`](Self::set_tokens) do not change them).
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Serve new TLS connections with `tls` (new certificates after a renewal);
    /// connections already up keep theirs.
    ///
    /// # Errors
    ///
    /// [`ReloadError::NotEnabled`] when the server was started without TLS: turning TLS
    /// on at run time would change what every client must speak.
    pub fn set_tls(&self, tls: crate::config::TlsSetup) -> Result<(), ReloadError> {
        let mut slot = self
            .shared
            .tls
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            return Err(ReloadError::NotEnabled("TLS"));
        }
        *slot = Some(tls);
        Ok(())
    }

    /// Check new connections against `tokens`; connections already up stay.
    ///
    /// # Errors
    ///
    /// [`ReloadError::NotEnabled`] when the server was started without tokens.
    pub fn set_tokens(&self, tokens: Arc<Tokens>) -> Result<(), ReloadError> {
        let mut slot = self
            .shared
            .tokens
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            return Err(ReloadError::NotEnabled("token authentication"));
        }
        *slot = Some(tokens);
        Ok(())
    }

    /// `evapi_relay`: send `payload` to every connected client.
    ///
    /// # Errors
    ///
    /// [`RelayError::Empty`], [`RelayError::NoClient`], or an encode error; nothing
    /// is sent then.
    pub fn relay(&self, payload: &[u8]) -> Result<Delivery, RelayError> {
        let delivery = self.with_frame(payload, |frame, shared| {
            let mut delivery = Delivery::default();
            self.shared
                .registry
                .for_each(|conn| self.offer(conn, frame, shared, &mut delivery));
            delivery
        })?;
        if delivery == Delivery::default() {
            debug!("relay: no client connected");
            self.no_client();
            return Err(RelayError::NoClient);
        }
        Ok(self.count(delivery))
    }

    /// `evapi_multicast`: send `payload` to every client tagged `tag`.
    ///
    /// # Errors
    ///
    /// [`RelayError::Empty`], [`RelayError::NoTag`], or an encode error.
    pub fn multicast(&self, payload: &[u8], tag: &str) -> Result<Delivery, RelayError> {
        let delivery = self.with_frame(payload, |frame, shared| {
            let mut delivery = Delivery::default();
            self.shared.registry.with_tag(tag, |tagged| {
                for conn in tagged.map_or(&[][..], |t| &t.conns) {
                    self.offer(conn, frame, shared, &mut delivery);
                }
            });
            delivery
        })?;
        if delivery == Delivery::default() {
            self.no_client();
            return Err(RelayError::NoTag(tag.to_owned()));
        }
        Ok(self.count(delivery))
    }

    /// `evapi_unicast`: send `payload` to one client tagged `tag`, picked by the
    /// configured [`UnicastPolicy`] (by default the lowest conidx, as Kamailio).
    ///
    /// # Errors
    ///
    /// [`RelayError::Empty`], [`RelayError::NoTag`], or an encode error.
    pub fn unicast(&self, payload: &[u8], tag: &str) -> Result<Delivery, RelayError> {
        self.unicast_by(payload, tag, self.shared.config.unicast_policy, None)
    }

    /// [`unicast`](Self::unicast) with this `policy`, and for [`UnicastPolicy::Hash`]
    /// this `key` (the same key reaches the same client while it is connected).
    ///
    /// # Errors
    ///
    /// As [`unicast`](Self::unicast).
    pub fn unicast_by(
        &self,
        payload: &[u8],
        tag: &str,
        policy: UnicastPolicy,
        key: Option<&[u8]>,
    ) -> Result<Delivery, RelayError> {
        let delivery = self.with_frame(payload, |frame, shared| {
            let conn = self
                .shared
                .registry
                .with_tag(tag, |tagged| pick(tagged?, policy, key))?;
            let mut delivery = Delivery::default();
            self.offer(&conn, frame, shared, &mut delivery);
            Some(delivery)
        })?;
        let Some(delivery) = delivery else {
            self.no_client();
            return Err(RelayError::NoTag(tag.to_owned()));
        };
        Ok(self.count(delivery))
    }

    /// Close every client tagged `tag` (after flushing their queues); how many.
    ///
    /// # Errors
    ///
    /// [`ControlError::NoTag`] when no client has the tag.
    pub fn close_tag(&self, tag: &str) -> Result<usize, ControlError> {
        let conns: Vec<Arc<Conn>> = self
            .shared
            .registry
            .with_tag(tag, |t| t.map(|t| t.conns.clone()).unwrap_or_default());
        if conns.is_empty() {
            return Err(ControlError::NoTag(tag.to_owned()));
        }
        for conn in &conns {
            conn.close(CloseReason::Server);
        }
        Ok(conns.len())
    }

    /// Stop accepting new connections and let the connected clients finish: the
    /// server's `run` returns once the last one is gone (or at shutdown).
    pub fn drain(&self) {
        self.shared.draining.cancel();
    }

    /// Whether [`drain`](Self::drain) was called.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.shared.draining.is_cancelled()
    }

    fn no_client(&self) {
        self.shared
            .counters
            .relay_no_client
            .fetch_add(1, Ordering::Relaxed);
    }

    /// `evapi_close`: close a client, after flushing what is queued to it (within the
    /// send timeout). connection-closed runs with reason `server`.
    ///
    /// # Errors
    ///
    /// [`ControlError::NoConidx`] / [`ControlError::NoConnid`] when there is no such client.
    pub fn close(&self, target: Target) -> Result<(), ControlError> {
        let conn = self.lookup(target)?;
        conn.close(CloseReason::Server);
        Ok(())
    }

    /// `evapi_set_tag`: tag a client (an empty tag clears it).
    ///
    /// # Errors
    ///
    /// [`ControlError::TagTooLong`] over [`MAX_TAG_LEN`] bytes, or no such client.
    pub fn set_tag(&self, target: Target, tag: &str) -> Result<(), ControlError> {
        check_tag(tag)?;
        let conn = self.lookup(target)?;
        self.shared
            .registry
            .set_tag(&conn, (!tag.is_empty()).then(|| Arc::from(tag)));
        Ok(())
    }

    /// Whether the connection `connid` was accepted by connection-new (and is still
    /// there): from then on it receives relays.
    #[must_use]
    pub fn is_accepted(&self, connid: u64) -> bool {
        self.shared
            .registry
            .find(|c| c.connid == connid)
            .is_some_and(|c| c.is_accepted())
    }

    /// The connected clients, in conidx order.
    #[must_use]
    pub fn clients(&self) -> Vec<ClientInfo> {
        let mut out = Vec::new();
        self.shared.registry.for_each(|c| {
            let n = &c.counters;
            out.push(ClientInfo {
                conidx: c.conidx,
                connid: c.connid,
                srcaddr: c.peer.ip(),
                srcport: c.peer.port(),
                tag: c.tag().map(|t| t.to_string()),
                connected_since: c
                    .since
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                frames_in: n.frames_in.load(Ordering::Relaxed),
                bytes_in: n.bytes_in.load(Ordering::Relaxed),
                frames_out: n.frames_out.load(Ordering::Relaxed),
                bytes_out: n.bytes_out.load(Ordering::Relaxed),
                dropped: n.dropped.load(Ordering::Relaxed),
                queue_depth: c.queue_depth(),
                queue_bytes: c.outbox.bytes(),
                accepted: c.is_accepted(),
                transport: c.transport,
                tls_subject: c.tls_subject.get().map(|s| s.to_string()),
                auth: c.auth.get().map(|s| s.to_string()),
            });
        });
        out
    }

    /// Clients connected now.
    #[must_use]
    pub fn connected(&self) -> usize {
        self.shared.registry.len()
    }

    /// The server-wide counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            connected: self.connected(),
            accepted: get(&c.accepted),
            refused_max_clients: get(&c.refused_max_clients),
            refused_allow: get(&c.refused_allow),
            refused_per_ip: get(&c.refused_per_ip),
            rejected: get(&c.rejected),
            frames_in: get(&c.frames_in),
            bytes_in: get(&c.bytes_in),
            frames_out: get(&c.frames_out),
            bytes_out: get(&c.bytes_out),
            relays: get(&c.relays),
            dropped: get(&c.dropped),
            slow_clients: get(&c.slow_clients),
            send_timeouts: get(&c.send_timeouts),
            bad_frames: get(&c.bad_frames),
            worker_dropped: get(&c.worker_dropped),
            queued_bytes: self.shared.queued_total.used(),
            tls_failed: get(&c.tls_failed),
            auth_failed: get(&c.auth_failed),
            refused_throttled: get(&c.refused_throttled),
            pending: self.shared.pending().len(),
            pending_evicted: get(&c.pending_evicted),
            wrong_tokens: get(&c.wrong_tokens),
            rate_limited: get(&c.rate_limited),
            relay_no_client: get(&c.relay_no_client),
            closed: CloseReason::ALL
                .iter()
                .map(|r| (r.name(), get(&c.closed[r.index()])))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    /// Start a graceful shutdown: stop accepting, flush and close every connection.
    /// [`Server::run`](crate::Server::run) returns when that is done.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Encode `payload` once and run `f` with the frame: small frames from a per-thread
    /// scratch buffer (no allocation), large ones as `Bytes` that queues can share.
    fn with_frame<T>(
        &self,
        payload: &[u8],
        f: impl FnOnce(&[u8], Option<&Bytes>) -> T,
    ) -> Result<T, RelayError> {
        thread_local! {
            static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(COALESCE_MAX + 32));
        }
        if payload.is_empty() {
            return Err(RelayError::Empty);
        }
        let config = &self.shared.config;
        if payload.len() + 16 <= COALESCE_MAX {
            // `f` only queues bytes; it never relays again, so the borrow cannot nest.
            SCRATCH.with(|scratch| {
                let mut buf = scratch.borrow_mut();
                buf.clear();
                evapi_proto::encode(config.framing, payload, config.max_frame, &mut buf)?;
                Ok(f(&buf, None))
            })
        } else {
            let mut buf = BytesMut::with_capacity(payload.len() + 16);
            evapi_proto::encode(config.framing, payload, config.max_frame, &mut buf)?;
            // Counted in the total once, however many queues take it.
            let (frame, counted) = self.counted_once(buf);
            if counted {
                Ok(f(&frame, Some(&frame)))
            } else {
                // Over the total: only clients that keep up (nothing queued) take it.
                OVER_TOTAL.with(|over| over.set(true));
                let result = f(&frame, Some(&frame));
                OVER_TOTAL.with(|over| over.set(false));
                Ok(result)
            }
        }
    }

    /// A large frame counted once in the total, and whether it was. When the total is
    /// full and the policy is to disconnect slow clients, the clients holding the most
    /// queued bytes are cut off first, never one with nothing queued, until the frame
    /// fits: a client that keeps up never pays for the ones that stopped reading. If it
    /// still does not fit (or the policy is to drop), it goes uncounted and only the
    /// clients with nothing queued take it (the others count it dropped).
    fn counted_once(&self, mut buf: BytesMut) -> (Bytes, bool) {
        let total = &self.shared.queued_total;
        loop {
            match total.shared(buf) {
                Ok(frame) => return (frame, true),
                Err(back) => {
                    buf = back;
                    if self.shared.config.slow_client != SlowClientPolicy::Disconnect
                        || !self.cut_the_biggest_holder()
                    {
                        return (buf.freeze(), false);
                    }
                }
            }
        }
    }

    /// Cut off the client holding the most queued bytes (its queue dropped at once);
    /// false when no client holds any.
    fn cut_the_biggest_holder(&self) -> bool {
        let mut biggest: Option<(usize, Arc<Conn>)> = None;
        self.shared.registry.for_each(|conn| {
            let held = conn.outbox.bytes();
            // One frame waiting is a client that keeps up, never cut for the total.
            if held > 0
                && conn.outbox.depth() > 1
                && !conn.closing.is_cancelled()
                && biggest.as_ref().is_none_or(|(most, _)| held > *most)
            {
                biggest = Some((held, Arc::clone(conn)));
            }
        });
        let Some((held, conn)) = biggest else {
            return false;
        };
        warn!(
            conidx = conn.conidx,
            connid = conn.connid,
            peer = %conn.peer,
            queued_bytes = held,
            max_queued_bytes = self.shared.config.max_queued_bytes,
            "queued bytes of all clients at their bound: cutting off the client that holds the most"
        );
        self.shared
            .counters
            .slow_clients
            .fetch_add(1, Ordering::Relaxed);
        conn.outbox.discard();
        conn.abort(CloseReason::SlowClient);
        true
    }

    fn offer(&self, conn: &Conn, frame: &[u8], shared: Option<&Bytes>, delivery: &mut Delivery) {
        // Pending connections (connection-new still deciding) are not recipients.
        if !conn.is_accepted() {
            return;
        }
        // Only large (shared) frames can be over the total; small ones skip the lookup.
        let over_total = shared.is_some() && OVER_TOTAL.with(std::cell::Cell::get);
        let mut push = if over_total && conn.outbox.depth() > 0 {
            Push::Full
        } else {
            conn.outbox.push(frame, shared)
        };
        // The total is full (small frames, copied per client): a client that keeps up
        // (nothing queued) is never the one refused; with the disconnect policy the
        // clients holding the most are cut first.
        while push == Push::TotalFull {
            if conn.outbox.depth() == 0 {
                push = conn.outbox.push_over_total(frame, shared);
            } else if self.shared.config.slow_client == SlowClientPolicy::Disconnect
                && self.cut_the_biggest_holder()
            {
                push = conn.outbox.push(frame, shared);
            } else {
                push = Push::Full;
            }
        }
        match push {
            Push::Queued => delivery.queued += 1,
            Push::Full | Push::TotalFull => {
                delivery.dropped += 1;
                conn.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if self.shared.config.slow_client == SlowClientPolicy::Disconnect
                    && !conn.closing.is_cancelled()
                {
                    warn!(
                        conidx = conn.conidx,
                        connid = conn.connid,
                        peer = %conn.peer,
                        queue = conn.outbox.limit(),
                        "client does not read fast enough: send queue full, disconnecting"
                    );
                    self.shared
                        .counters
                        .slow_clients
                        .fetch_add(1, Ordering::Relaxed);
                    // At once: a client that does not read would hold its slot for the
                    // whole send timeout if its queue were flushed first.
                    conn.abort(CloseReason::SlowClient);
                }
            }
            // The connection is ending; it no longer counts as a recipient.
            Push::Closed => {}
        }
    }

    fn count(&self, delivery: Delivery) -> Delivery {
        if delivery.queued > 0 {
            self.shared.counters.relays.fetch_add(1, Ordering::Relaxed);
        }
        delivery
    }

    fn lookup(&self, target: Target) -> Result<Arc<Conn>, ControlError> {
        match target {
            Target::Conidx(i) => self
                .shared
                .registry
                .by_conidx(i)
                .ok_or(ControlError::NoConidx(i)),
            Target::Connid(id) => self
                .shared
                .registry
                .find(|c| c.connid == id)
                .ok_or(ControlError::NoConnid(id)),
        }
    }
}

thread_local! {
    /// Set while a frame that did not fit the total is offered: only clients with
    /// nothing queued take it.
    static OVER_TOTAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Refuse tags over [`MAX_TAG_LEN`] bytes, and tags with a character a terminal would
/// act on ([`evapi_proto::text::is_unsafe_for_terminal`]: `top` and logs print tags).
pub(crate) fn check_tag(tag: &str) -> Result<(), ControlError> {
    if tag.len() > MAX_TAG_LEN {
        return Err(ControlError::TagTooLong {
            len: tag.len(),
            max: MAX_TAG_LEN,
        });
    }
    if let Some((at, _)) = tag
        .char_indices()
        .find(|&(_, c)| evapi_proto::text::is_unsafe_for_terminal(c) || c == '\n')
    {
        return Err(ControlError::TagNotPrintable { at });
    }
    Ok(())
}

/// The accepted client of `tagged` that `policy` picks.
fn pick(tagged: &Tagged, policy: UnicastPolicy, key: Option<&[u8]>) -> Option<Arc<Conn>> {
    let accepted = || tagged.conns.iter().filter(|c| c.is_accepted());
    let chosen = match (policy, key) {
        (UnicastPolicy::First, _) | (UnicastPolicy::Hash, None) => accepted().next(),
        (UnicastPolicy::RoundRobin, _) => {
            let n = accepted().count();
            if n == 0 {
                return None;
            }
            let turn = tagged.next.fetch_add(1, Ordering::Relaxed);
            accepted().nth(turn % n)
        }
        (UnicastPolicy::LeastQueued, _) => accepted().min_by_key(|c| c.outbox.bytes()),
        // Rendezvous hashing: the client with the highest hash of (key, connid).
        (UnicastPolicy::Hash, Some(key)) => accepted().max_by_key(|c| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            c.connid.hash(&mut h);
            h.finish()
        }),
    };
    chosen.cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 34: a tag `ESC[2J` wiped `top`'s table; tags are printable text now.
    #[test]
    fn tags_with_control_characters_are_refused() {
        assert_eq!(check_tag("billing-eu.1"), Ok(()));
        assert_eq!(check_tag("日本"), Ok(()));
        for (tag, at) in [
            ("\u{1b}[2J", 0),
            ("a\nb", 1),
            ("ab\u{85}", 2),
            ("x\u{202e}", 1),
        ] {
            assert_eq!(
                check_tag(tag),
                Err(ControlError::TagNotPrintable { at }),
                "{tag:?}"
            );
        }
        assert!(matches!(
            check_tag(&"t".repeat(MAX_TAG_LEN + 1)),
            Err(ControlError::TagTooLong { .. })
        ));
    }
}
