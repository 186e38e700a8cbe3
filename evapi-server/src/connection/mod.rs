//! One client connection: admission, the pending stage, connection-new, the read loop,
//! and the end.
//!
//! Admission is explicit and happens before any route: the allow-list, the per-address
//! cap and the throttle; then, where TLS or tokens are on, the pending stage (handshake
//! and token, in the bounded pending pool of [`evapi_ops::pool`], holding no app slot);
//! then a `max_clients` permit that lives as long as the connection. The read loop
//! decodes frames as they arrive and hands each to message-received; a frame that
//! breaks the framing closes only this connection, after the frames before it were
//! delivered.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use evapi_proto::{FrameCodec, Framing};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
#[cfg(feature = "tls")]
use tokio_rustls::server::TlsStream;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::config::{OversizePolicy, BARE_READ, KEEPALIVE_PROBES};
use crate::handle::{check_tag, Shared};
use crate::outbox::Outbox;
use crate::rate::Limiter;
use crate::refusals::Refusal;
use crate::registry::Conn;
use crate::routes::{Admit, CloseReason, EventRoutes, Transport};
use crate::transport::Accepted;
use crate::workers::Workers;
use crate::{writer, Handle};
mod pending;

use pending::{authenticate_then_serve, InPool};

/// Bytes reserved for each socket read.
const READ_CHUNK: usize = 16 * 1024;

/// What every connection task shares.
pub(crate) struct Ctx<R> {
    pub handle: Handle,
    pub routes: Arc<R>,
    pub workers: Workers,
    pub permits: Arc<Semaphore>,
}

/// Frees the slot even if a route panics, so a conidx is never leaked.
struct Registered {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.registry.remove(&self.conn);
    }
}

/// A connection that passed admission and holds its slot.
pub(crate) struct Admitted {
    ready: Ready,
    conn: Arc<Conn>,
    permit: OwnedSemaphorePermit,
    registered: Registered,
}

/// A stream ready to be an app: its TLS handshake done and its token checked, where
/// those are asked for.
pub(crate) struct Ready {
    stream: Stream,
    /// Bytes read after the authentication frame, for the read loop.
    buf: BytesMut,
    /// The token's name.
    auth: Option<Arc<str>>,
    /// The client certificate's subject.
    tls_subject: Option<String>,
}

/// A stream before or after its TLS handshake.
enum Stream {
    Plain(Accepted),
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream<TcpStream>>),
}

/// A new connection, from the accept loop. First the checks that cost nothing (the
/// allow-list, the per-address cap, the throttle); then, when TLS or tokens are on, it
/// is pending: it enters the pending pool and a task of its own, and takes an app's
/// slot only once it has authenticated; otherwise it takes its slot at once, in accept
/// order (Kamailio's `conidx` follows connection order). Refusals are counted and
/// logged as periodic summaries, never a line each.
pub(crate) fn accepted<R: EventRoutes>(
    stream: Accepted,
    peer: SocketAddr,
    ctx: &Arc<Ctx<R>>,
    tracker: &TaskTracker,
) {
    let shared = &ctx.handle.shared;
    let local = matches!(stream, Accepted::Unix(_) | Accepted::Memory(_));
    if !screen(peer, local, shared) {
        return;
    }
    let pending =
        shared.tls_on() && matches!(stream, Accepted::Tcp(_)) || shared.tokens().is_some();
    if pending {
        let (ticket, _) = shared.pending().enter((!local).then(|| peer.ip()));
        let in_pool = InPool {
            shared: Arc::clone(shared),
            ticket,
        };
        tracker.spawn(authenticate_then_serve(
            stream,
            peer,
            in_pool,
            Arc::clone(ctx),
        ));
    } else {
        let ready = Ready {
            stream: Stream::Plain(stream),
            buf: BytesMut::new(),
            auth: None,
            tls_subject: None,
        };
        if let Some(admitted) = admit(ready, peer, ctx) {
            tracker.spawn(serve(admitted, Arc::clone(ctx)));
        }
    }
}

/// The allow-list, the per-address cap and the authentication slowdown (not for
/// Unix-socket clients: the socket file's permissions decide who they are).
fn screen(peer: SocketAddr, local: bool, shared: &Shared) -> bool {
    let config = &shared.config;
    if local {
        return true;
    }
    if !config.allows(peer.ip()) {
        shared
            .counters
            .refused_allow
            .fetch_add(1, Ordering::Relaxed);
        shared.refusals.note(Refusal::Allow);
        debug!(%peer, "connection refused: address not in the allow-list");
        return false;
    }
    if !under_per_ip_cap(peer, shared) {
        return false;
    }
    let blocked = shared
        .throttle()
        .blocked(peer.ip(), std::time::Instant::now());
    if let Some(left) = blocked {
        shared
            .counters
            .refused_throttled
            .fetch_add(1, Ordering::Relaxed);
        shared.refusals.note(Refusal::Throttled);
        debug!(%peer, retry_in = ?left, "connection refused: too many failed authentications from this address");
        return false;
    }
    true
}

/// Whether `peer`'s address has fewer apps than `max_clients_per_ip` (counted and logged
/// when not).
fn under_per_ip_cap(peer: SocketAddr, shared: &Shared) -> bool {
    let Some(cap) = shared.config.max_clients_per_ip else {
        return true;
    };
    let mut from_ip = 0;
    shared.registry.for_each(|c| {
        if c.peer.ip() == peer.ip() && matches!(c.transport, Transport::Tcp | Transport::Tls) {
            from_ip += 1;
        }
    });
    if from_ip < cap {
        return true;
    }
    shared
        .counters
        .refused_per_ip
        .fetch_add(1, Ordering::Relaxed);
    shared.refusals.note(Refusal::PerIp);
    debug!(%peer, max_clients_per_ip = cap, "connection refused: too many from this address");
    false
}

/// An app's slot: a `max_clients` permit, then the lowest free `conidx`. `None`:
/// refused and closed (counted).
pub(crate) fn admit<R>(ready: Ready, peer: SocketAddr, ctx: &Ctx<R>) -> Option<Admitted> {
    let shared = &ctx.handle.shared;
    let config = &shared.config;
    let local = matches!(
        ready.stream,
        Stream::Plain(Accepted::Unix(_) | Accepted::Memory(_))
    );
    // Again after the pending stage: connections pending together were not counted at
    // accept.
    if !local && !under_per_ip_cap(peer, shared) {
        return None;
    }
    let Ok(permit) = Arc::clone(&ctx.permits).try_acquire_owned() else {
        shared
            .counters
            .refused_max_clients
            .fetch_add(1, Ordering::Relaxed);
        shared.refusals.note(Refusal::MaxClients);
        debug!(%peer, max_clients = config.max_clients, "connection refused: max clients reached");
        return None;
    };
    let transport = match &ready.stream {
        Stream::Plain(Accepted::Tcp(tcp)) => {
            tune(tcp, config);
            Transport::Tcp
        }
        #[cfg(feature = "tls")]
        Stream::Tls(_) => Transport::Tls,
        Stream::Plain(Accepted::Unix(_)) => Transport::Unix,
        Stream::Plain(Accepted::Memory(_)) => Transport::Memory,
    };
    let closing = shared.shutdown.child_token();
    let (queue, queue_bytes) = (config.client_queue, config.client_queue_bytes);
    let total = Arc::clone(&shared.queued_total);
    let conn = shared.registry.insert(|conidx, connid| {
        let outbox = Outbox::new(queue, queue_bytes, total);
        Conn::new(conidx, connid, peer, transport, outbox, closing)
    });
    if let Some(subject) = &ready.tls_subject {
        let _ = conn.tls_subject.set(subject.as_str().into());
    }
    if let Some(name) = &ready.auth {
        let _ = conn.auth.set(Arc::clone(name));
    }
    let registered = Registered {
        shared: Arc::clone(shared),
        conn: Arc::clone(&conn),
    };
    Some(Admitted {
        ready,
        conn,
        permit,
        registered,
    })
}

/// Socket options for an accepted TCP connection.
fn tune(tcp: &TcpStream, config: &crate::Config) {
    // Events are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    // As Kamailio: a peer that vanished without a FIN (host down, cable pulled) is
    // found by the kernel's keepalive probes and frees its slot; ours come sooner.
    let sock = socket2::SockRef::from(tcp);
    match config.keepalive {
        Some(k) => {
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(k.idle)
                .with_interval(k.interval)
                .with_retries(KEEPALIVE_PROBES);
            let _ = sock.set_tcp_keepalive(&keepalive);
        }
        None => {
            let _ = sock.set_keepalive(true);
        }
    }
}

pub(crate) async fn serve<R: EventRoutes>(admitted: Admitted, ctx: Arc<Ctx<R>>) {
    let Admitted {
        ready,
        conn,
        permit,
        registered,
    } = admitted;
    let peer = conn.peer;
    let span = tracing::info_span!("conn", conidx = conn.conidx, connid = conn.connid, %peer);
    async move {
        let Ready {
            stream, buf, auth, ..
        } = ready;
        match stream {
            Stream::Plain(Accepted::Unix(unix)) => {
                let (rd, wr) = unix.into_split();
                run(rd, wr, buf, auth, conn, registered, &ctx).await;
            }
            Stream::Plain(Accepted::Memory(duplex)) => {
                let (rd, wr) = tokio::io::split(duplex);
                run(rd, wr, buf, auth, conn, registered, &ctx).await;
            }
            Stream::Plain(Accepted::Tcp(tcp)) => {
                let (rd, wr) = tcp.into_split();
                run(rd, wr, buf, auth, conn, registered, &ctx).await;
            }
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => {
                let (rd, wr) = tokio::io::split(*tls);
                run(rd, wr, buf, auth, conn, registered, &ctx).await;
            }
        }
        drop(permit);
    }
    .instrument(span)
    .await;
}

/// Serve one connection over any transport, from connection-new to connection-closed.
/// `buf`: bytes read after the authentication frame; `auth`: the token's name, whose
/// `{"auth":"ok"}` frame goes out before anything else.
async fn run<Rd, Wr, R>(
    rd: Rd,
    wr: Wr,
    buf: BytesMut,
    auth: Option<Arc<str>>,
    conn: Arc<Conn>,
    registered: Registered,
    ctx: &Ctx<R>,
) where
    Rd: AsyncRead + Unpin + Send,
    Wr: AsyncWrite + Unpin + Send + 'static,
    R: EventRoutes,
{
    let shared = Arc::clone(&ctx.handle.shared);
    let writer =
        tokio::spawn(writer::run(wr, Arc::clone(&conn), Arc::clone(&shared)).in_current_span());
    let mut buf = buf;
    if buf.capacity() < READ_CHUNK {
        buf.reserve(READ_CHUNK);
    }
    let input = Input { rd, buf };
    if let Some(name) = auth {
        info!(auth = %name, "client authenticated");
        let ok = crate::auth::ok_frame(&name);
        let mut frame = BytesMut::new();
        let config = &shared.config;
        if evapi_proto::encode(config.framing, &ok, config.max_frame, &mut frame).is_ok() {
            let _ = conn.outbox.push(&frame, None);
        }
    }
    info!(transport = %conn.transport, "client connected");
    shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
    let reason = match ctx.routes.connection_new(&ctx.handle, &conn.env()).await {
        Admit::Accept => {
            conn.accept();
            ctx.routes
                .connection_accepted(&ctx.handle, &conn.env())
                .await;
            read_loop(input, &conn, ctx).await
        }
        Admit::AcceptWithTag(tag) => {
            match check_tag(&tag) {
                Ok(()) => shared.registry.set_tag(&conn, Some(tag.into())),
                Err(e) => warn!(error = %e, "connection-new: tag not set"),
            }
            conn.accept();
            ctx.routes
                .connection_accepted(&ctx.handle, &conn.env())
                .await;
            read_loop(input, &conn, ctx).await
        }
        Admit::Reject => {
            shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
            CloseReason::Rejected
        }
    };
    conn.close(reason);
    let client = conn.env();
    drop(registered);
    let _ = writer.await;
    let reason = conn.reason_or(reason);
    info!(%reason, "client disconnected");
    shared.counters.closed[reason.index()].fetch_add(1, Ordering::Relaxed);
    if !ctx.workers.closed(client.clone(), reason).await {
        ctx.routes
            .connection_closed(&ctx.handle, &client, reason)
            .await;
    }
}

/// The reading side of a connection and what was read but not yet decoded (bytes a
/// client sent right after its authentication frame stay here for the read loop).
struct Input<Rd> {
    rd: Rd,
    buf: BytesMut,
}

async fn read_loop<Rd: AsyncRead + Unpin, R: EventRoutes>(
    input: Input<Rd>,
    conn: &Conn,
    ctx: &Ctx<R>,
) -> CloseReason {
    let shared = &ctx.handle.shared;
    let mut codec = FrameCodec::new(shared.config.framing, shared.config.max_frame)
        .skip_oversize(shared.config.oversize == OversizePolicy::Skip);
    let bare = shared.config.framing == Framing::Bare;
    let netstring = shared.config.framing == Framing::Netstring;
    let Input { mut rd, mut buf } = input;
    let config = &shared.config;
    // When the frame now in `buf` began (None: no partial frame), and the last read.
    let mut frame_started: Option<Instant> = None;
    let mut last_read = Instant::now();
    // Idle means no frame with content: white space, frames of white space only and
    // partial frames are not activity.
    let mut last_frame = last_read;
    let mut limiter = config
        .max_rate
        .is_limited()
        .then(|| Limiter::new(config.max_rate, last_read));
    // Bytes that came with the authentication frame are decoded before any read.
    let mut carried = !buf.is_empty();
    loop {
        let read_deadline = frame_started.map(|t| t + config.read_timeout);
        let idle_deadline = config.idle_timeout.map(|d| last_frame + d);
        if bare && buf.capacity() - buf.len() < BARE_READ {
            buf.reserve(BARE_READ);
        } else if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let mut room = (&mut buf).limit(if bare { BARE_READ } else { usize::MAX });
        let read = if std::mem::take(&mut carried) {
            Ok(room.get_ref().len())
        } else {
            tokio::select! {
                biased;
                () = conn.closing.cancelled() => return conn.reason_or(CloseReason::Shutdown),
                () = evapi_ops::time::sleep_until(read_deadline) => {
                    warn!(timeout = ?config.read_timeout, buffered = buf.len(), "a frame did not arrive whole in time, closing");
                    return CloseReason::ReadTimeout;
                }
                () = evapi_ops::time::sleep_until(idle_deadline) => {
                    info!(timeout = ?config.idle_timeout, "client idle, closing");
                    return CloseReason::IdleTimeout;
                }
                read = rd.read_buf(&mut room) => read,
            }
        };
        last_read = Instant::now();
        let frames_before = conn.counters.frames_in.load(Ordering::Relaxed);
        let eof = match read {
            Ok(0) => true,
            Ok(_) => false,
            // A TLS peer that closed without close_notify: a close, not a failure.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => true,
            Err(e) => {
                debug!(error = %e, "read failed");
                return CloseReason::Reset;
            }
        };
        loop {
            let decoded = if eof {
                codec.decode_frame_eof(&mut buf)
            } else {
                codec.decode_frame(&mut buf)
            };
            match decoded {
                Ok(Some(msg)) => {
                    // Over --max-rate: wait before handing this frame on (frames already
                    // buffered wait too, so a flood in one read is paced like any other).
                    if let Some(limiter) = &mut limiter {
                        let now = Instant::now();
                        if let Some(resume) = limiter.take(now, 1, msg.len() as u64) {
                            shared.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                            debug!(pause = ?resume.saturating_duration_since(now), "over --max-rate, reading paused");
                            tokio::select! {
                                biased;
                                () = conn.closing.cancelled() => return conn.reason_or(CloseReason::Shutdown),
                                () = tokio::time::sleep_until(resume) => {}
                            }
                            // Time paused by us is not the client's delay.
                            last_read = Instant::now();
                            if frame_started.is_some() {
                                frame_started = Some(last_read);
                            }
                        }
                    }
                    // Bare and line framings take anything, so a netstring client is not
                    // an error there; its first message still gets a hint in the log.
                    // (In netstring framing a decoded payload is not framing: no hint.)
                    if !netstring && conn.counters.frames_in.load(Ordering::Relaxed) == 0 {
                        if let Some(hint) = Framing::mismatch_hint(&msg, shared.config.framing) {
                            warn!(hint, "first message from client");
                        }
                    }
                    // A frame of nothing but white space (an empty netstring, an empty
                    // line, a lone space in bare framing) is not activity either.
                    if !msg.iter().all(u8::is_ascii_whitespace) {
                        last_frame = last_read;
                    }
                    conn.counters.frames_in.fetch_add(1, Ordering::Relaxed);
                    conn.counters
                        .bytes_in
                        .fetch_add(msg.len() as u64, Ordering::Relaxed);
                    shared.counters.frames_in.fetch_add(1, Ordering::Relaxed);
                    shared
                        .counters
                        .bytes_in
                        .fetch_add(msg.len() as u64, Ordering::Relaxed);
                    if let Some((client, msg)) =
                        ctx.workers.message(&ctx.handle, conn.env(), msg).await
                    {
                        ctx.routes.message_received(&ctx.handle, &client, msg).await;
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_recoverable() => {
                    shared.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "frame over the limit from client, skipped");
                }
                Err(e) if e.is_truncated() => {
                    warn!(error = %e, "client closed the connection inside a frame");
                    return CloseReason::Peer;
                }
                Err(e) => {
                    shared.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                    // On the first frame, a framing mismatch is the usual cause: say so.
                    let hint = (conn.counters.frames_in.load(Ordering::Relaxed) == 0)
                        .then(|| Framing::mismatch_hint(&buf, shared.config.framing))
                        .flatten();
                    match hint {
                        Some(hint) => {
                            warn!(error = %e, hint, "bad frame from client, closing the connection");
                        }
                        None => warn!(error = %e, "bad frame from client, closing the connection"),
                    }
                    return CloseReason::BadFrame;
                }
            }
        }
        if eof {
            return CloseReason::Peer;
        }
        // A partial frame left in the buffer started now if this read completed the
        // one before it (or none was pending); it must be whole by the read timeout.
        frame_started = if buf.is_empty() {
            None
        } else if frame_started.is_none()
            || conn.counters.frames_in.load(Ordering::Relaxed) != frames_before
        {
            Some(last_read)
        } else {
            frame_started
        };
    }
}
