//! The table of connected clients, indexed by `conidx` slot.
//!
//! Slots are handed out lowest-free-first and reused after a disconnect, as Kamailio's
//! evapi does, so `$evapi(conidx)` stays a small number. Each connection also gets a
//! `connid` that is never reused. The table sits behind a std `RwLock` that is never
//! held across an `.await`: relays take the read lock, iterate and push into each
//! client's bounded [`Outbox`], which never waits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::outbox::Outbox;
use crate::routes::{ClientEnv, CloseReason, Transport};

/// Per-connection traffic counters, updated by its reader and writer.
#[derive(Debug, Default)]
pub(crate) struct ConnCounters {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dropped: AtomicU64,
}

/// One connected client, shared by its tasks and the registry.
#[derive(Debug)]
pub(crate) struct Conn {
    pub conidx: usize,
    pub connid: u64,
    pub peer: SocketAddr,
    pub since: SystemTime,
    tag: Mutex<Option<Arc<str>>>,
    /// Frames waiting for this client's writer.
    pub outbox: Outbox,
    pub counters: ConnCounters,
    /// Cancelled when the connection must end; the first reason set wins.
    pub closing: CancellationToken,
    reason: OnceLock<CloseReason>,
    /// Cancelled when the connection must end *without* flushing its queue (a client
    /// over its queue bound does not read: waiting for it would hold its slot).
    pub abort: CancellationToken,
    /// Set once connection-new accepted it: only accepted connections receive relays,
    /// multicasts and unicasts (a connection the route is about to reject gets none).
    accepted: AtomicBool,
    pub transport: Transport,
    /// Set once, after the TLS handshake, when the client showed a certificate.
    pub tls_subject: OnceLock<Arc<str>>,
    /// Set once, after a good token.
    pub auth: OnceLock<Arc<str>>,
}

impl Conn {
    pub(crate) fn new(
        conidx: usize,
        connid: u64,
        peer: SocketAddr,
        transport: Transport,
        outbox: Outbox,
        closing: CancellationToken,
    ) -> Self {
        Self {
            conidx,
            connid,
            peer,
            since: SystemTime::now(),
            tag: Mutex::new(None),
            outbox,
            counters: ConnCounters::default(),
            abort: CancellationToken::new(),
            closing,
            reason: OnceLock::new(),
            accepted: AtomicBool::new(false),
            transport,
            tls_subject: OnceLock::new(),
            auth: OnceLock::new(),
        }
    }

    /// connection-new accepted it.
    pub(crate) fn accept(&self) {
        self.accepted.store(true, Ordering::Release);
    }

    /// Whether it may receive relays.
    pub(crate) fn is_accepted(&self) -> bool {
        self.accepted.load(Ordering::Acquire)
    }

    pub(crate) fn tag(&self) -> Option<Arc<str>> {
        self.tag
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Only through [`Registry::set_tag`], which keeps the tag index in step.
    fn replace_tag(&self, tag: Option<Arc<str>>) -> Option<Arc<str>> {
        std::mem::replace(
            &mut *self.tag.lock().unwrap_or_else(PoisonError::into_inner),
            tag,
        )
    }

    /// Ask the connection to end for `reason` (ignored if it is already ending).
    pub(crate) fn close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.closing.cancel();
    }

    /// End it at once for `reason`, dropping what is queued (the socket is shut down
    /// without waiting for the peer to read).
    pub(crate) fn abort(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.abort.cancel();
        self.closing.cancel();
    }

    /// Why it ended: the reason given to [`close`](Self::close), or `fallback` (the
    /// server-wide token was cancelled, i.e. shutdown, or the reader saw EOF).
    pub(crate) fn reason_or(&self, fallback: CloseReason) -> CloseReason {
        *self.reason.get_or_init(|| fallback)
    }

    pub(crate) fn env(&self) -> ClientEnv {
        ClientEnv {
            conidx: self.conidx,
            connid: self.connid,
            srcaddr: self.peer.ip(),
            srcport: self.peer.port(),
            tag: self.tag(),
            transport: self.transport,
            tls_subject: self.tls_subject.get().cloned(),
            auth: self.auth.get().cloned(),
        }
    }

    pub(crate) fn queue_depth(&self) -> usize {
        self.outbox.depth()
    }
}

/// The clients with one tag, in conidx order, and where round-robin is.
#[derive(Debug, Default)]
pub(crate) struct Tagged {
    pub conns: Vec<Arc<Conn>>,
    pub next: std::sync::atomic::AtomicUsize,
}

/// The slot table, and an index of clients by tag (so multicast and unicast look at
/// the clients of their tag only, not at every client).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    slots: RwLock<Vec<Option<Arc<Conn>>>>,
    by_tag: RwLock<HashMap<Arc<str>, Tagged>>,
    next_connid: AtomicU64,
}

impl Registry {
    /// Put a new connection in the lowest free slot; `make` receives its conidx and connid.
    pub(crate) fn insert(&self, make: impl FnOnce(usize, u64) -> Conn) -> Arc<Conn> {
        let connid = self.next_connid.fetch_add(1, Ordering::Relaxed);
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let conidx = slots
            .iter()
            .position(Option::is_none)
            .unwrap_or(slots.len());
        let conn = Arc::new(make(conidx, connid));
        if conidx == slots.len() {
            slots.push(Some(Arc::clone(&conn)));
        } else {
            slots[conidx] = Some(Arc::clone(&conn));
        }
        conn
    }

    /// Tag `conn` (`None` clears its tag), keeping the index in step.
    pub(crate) fn set_tag(&self, conn: &Arc<Conn>, tag: Option<Arc<str>>) {
        // Lock order: the index, then the slots (as in `remove`), so a connection that
        // is being removed is never indexed again.
        let mut index = self.by_tag.write().unwrap_or_else(PoisonError::into_inner);
        if self
            .by_conidx(conn.conidx)
            .is_none_or(|c| c.connid != conn.connid)
        {
            return;
        }
        let old = conn.replace_tag(tag.clone());
        if let Some(old) = old {
            Self::unindex(&mut index, &old, conn.connid);
        }
        if let Some(tag) = tag {
            let entry = index.entry(tag).or_default();
            let at = entry.conns.partition_point(|c| c.conidx < conn.conidx);
            entry.conns.insert(at, Arc::clone(conn));
        }
    }

    fn unindex(index: &mut HashMap<Arc<str>, Tagged>, tag: &str, connid: u64) {
        if let Some(entry) = index.get_mut(tag) {
            entry.conns.retain(|c| c.connid != connid);
            if entry.conns.is_empty() {
                index.remove(tag);
            }
        }
    }

    /// Run `f` with the clients tagged `tag` (under the index's read lock: `f` must not
    /// block).
    pub(crate) fn with_tag<T>(&self, tag: &str, f: impl FnOnce(Option<&Tagged>) -> T) -> T {
        let index = self.by_tag.read().unwrap_or_else(PoisonError::into_inner);
        f(index.get(tag))
    }

    /// Free the connection's slot (only if it still holds that connection).
    pub(crate) fn remove(&self, conn: &Conn) {
        let mut index = self.by_tag.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(tag) = conn.tag() {
            Self::unindex(&mut index, &tag, conn.connid);
        }
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(conn.conidx) {
            if slot.as_ref().is_some_and(|c| c.connid == conn.connid) {
                *slot = None;
            }
        }
        while slots.last().is_some_and(Option::is_none) {
            slots.pop();
        }
    }

    /// Run `f` over every connected client, in conidx order, under the read lock.
    /// `f` must not block: it runs with the table locked.
    pub(crate) fn for_each(&self, f: impl FnMut(&Arc<Conn>)) {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots.iter().flatten().for_each(f);
    }

    /// The first client (lowest conidx) for which `pred` holds.
    pub(crate) fn find(&self, mut pred: impl FnMut(&Conn) -> bool) -> Option<Arc<Conn>> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots.iter().flatten().find(|c| pred(c)).cloned()
    }

    pub(crate) fn by_conidx(&self, conidx: usize) -> Option<Arc<Conn>> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots.get(conidx).cloned().flatten()
    }

    pub(crate) fn len(&self) -> usize {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots.iter().flatten().count()
    }
}
