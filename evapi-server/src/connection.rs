//! One client connection: admission, connection-new, the read loop, and the end.
//!
//! Admission is explicit and happens before any route: the allow-list, then a
//! `max_clients` permit that lives as long as the connection. The read loop decodes
//! frames as they arrive and hands each to message-received; a frame that breaks the
//! framing closes only this connection, after the frames before it were delivered.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use evapi_proto::{FrameCodec, Framing};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::config::{OversizePolicy, BARE_READ};
use crate::handle::{check_tag, Shared};
use crate::registry::Conn;
use crate::routes::{Admit, CloseReason, EventRoutes};
use crate::workers::Workers;
use crate::{writer, Handle};

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
    stream: TcpStream,
    conn: Arc<Conn>,
    permit: OwnedSemaphorePermit,
    registered: Registered,
}

/// Admission, run by the accept loop itself so slots are handed out in accept order
/// (Kamailio's `conidx` follows connection order): the allow-list, then a
/// `max_clients` permit, then the lowest free slot. `None`: refused and closed.
pub(crate) fn admit<R>(stream: TcpStream, peer: SocketAddr, ctx: &Ctx<R>) -> Option<Admitted> {
    let shared = &ctx.handle.shared;
    let config = &shared.config;
    if !config.allows(peer.ip()) {
        shared
            .counters
            .refused_allow
            .fetch_add(1, Ordering::Relaxed);
        warn!(%peer, "connection refused: address not in the allow-list");
        return None;
    }
    if let Some(cap) = config.max_clients_per_ip {
        let mut from_ip = 0;
        shared.registry.for_each(|c| {
            if c.peer.ip() == peer.ip() {
                from_ip += 1;
            }
        });
        if from_ip >= cap {
            shared
                .counters
                .refused_per_ip
                .fetch_add(1, Ordering::Relaxed);
            warn!(%peer, max_clients_per_ip = cap, "connection refused: too many from this address");
            return None;
        }
    }
    let Ok(permit) = Arc::clone(&ctx.permits).try_acquire_owned() else {
        shared
            .counters
            .refused_max_clients
            .fetch_add(1, Ordering::Relaxed);
        warn!(%peer, max_clients = config.max_clients, "connection refused: max clients reached");
        return None;
    };
    // Events are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    // As Kamailio: a peer that vanished without a FIN (host down, cable pulled) is found
    // by the kernel's keepalive probes and frees its slot.
    let _ = socket2::SockRef::from(&stream).set_keepalive(true);
    let closing = shared.shutdown.child_token();
    let (queue, queue_bytes) = (config.client_queue, config.client_queue_bytes);
    let total = Arc::clone(&shared.queued_total);
    let conn = shared.registry.insert(|conidx, connid| {
        Conn::new(conidx, connid, peer, queue, queue_bytes, total, closing)
    });
    shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
    let registered = Registered {
        shared: Arc::clone(shared),
        conn: Arc::clone(&conn),
    };
    Some(Admitted {
        stream,
        conn,
        permit,
        registered,
    })
}

pub(crate) async fn serve<R: EventRoutes>(admitted: Admitted, ctx: Arc<Ctx<R>>) {
    let Admitted {
        stream,
        conn,
        permit,
        registered,
    } = admitted;
    let shared = Arc::clone(&ctx.handle.shared);
    let peer = conn.peer;
    let span = tracing::info_span!("conn", conidx = conn.conidx, connid = conn.connid, %peer);
    async move {
        info!("client connected");
        let (rd, wr) = stream.into_split();
        let writer =
            tokio::spawn(writer::run(wr, Arc::clone(&conn), Arc::clone(&shared)).in_current_span());
        let reason = match ctx.routes.connection_new(&ctx.handle, &conn.env()).await {
            Admit::Accept => {
                conn.accept();
                ctx.routes
                    .connection_accepted(&ctx.handle, &conn.env())
                    .await;
                read_loop(rd, &conn, &ctx).await
            }
            Admit::AcceptWithTag(tag) => {
                match check_tag(&tag) {
                    Ok(()) => conn.set_tag(Some(tag.into())),
                    Err(e) => warn!(error = %e, "connection-new: tag not set"),
                }
                conn.accept();
                ctx.routes
                    .connection_accepted(&ctx.handle, &conn.env())
                    .await;
                read_loop(rd, &conn, &ctx).await
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
        drop(permit);
        let reason = conn.reason_or(reason);
        info!(%reason, "client disconnected");
        if !ctx.workers.closed(client.clone(), reason).await {
            ctx.routes
                .connection_closed(&ctx.handle, &client, reason)
                .await;
        }
    }
    .instrument(span)
    .await;
}

async fn read_loop<R: EventRoutes>(
    mut rd: OwnedReadHalf,
    conn: &Conn,
    ctx: &Ctx<R>,
) -> CloseReason {
    let shared = &ctx.handle.shared;
    let mut codec = FrameCodec::new(shared.config.framing, shared.config.max_frame)
        .skip_oversize(shared.config.oversize == OversizePolicy::Skip);
    let bare = shared.config.framing == Framing::Bare;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let config = &shared.config;
    // When the frame now in `buf` began (None: no partial frame), and the last read.
    let mut frame_started: Option<Instant> = None;
    let mut last_read = Instant::now();
    loop {
        let read_deadline = frame_started.map(|t| t + config.read_timeout);
        let idle_deadline = config.idle_timeout.map(|d| last_read + d);
        if bare && buf.capacity() - buf.len() < BARE_READ {
            buf.reserve(BARE_READ);
        } else if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let mut room = (&mut buf).limit(if bare { BARE_READ } else { usize::MAX });
        let read = tokio::select! {
            biased;
            () = conn.closing.cancelled() => return conn.reason_or(CloseReason::Shutdown),
            () = sleep_until(read_deadline) => {
                warn!(timeout = ?config.read_timeout, buffered = buf.len(), "a frame did not arrive whole in time, closing");
                return CloseReason::ReadTimeout;
            }
            () = sleep_until(idle_deadline) => {
                info!(timeout = ?config.idle_timeout, "client idle, closing");
                return CloseReason::IdleTimeout;
            }
            read = rd.read_buf(&mut room) => read,
        };
        last_read = Instant::now();
        let frames_before = conn.counters.frames_in.load(Ordering::Relaxed);
        let eof = match read {
            Ok(0) => true,
            Ok(_) => false,
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
                    // Bare and line framings take anything, so a netstring client is not
                    // an error there; its first message still gets a hint in the log.
                    if conn.counters.frames_in.load(Ordering::Relaxed) == 0 {
                        if let Some(hint) = Framing::mismatch_hint(&msg, shared.config.framing) {
                            warn!(hint, "first message from client");
                        }
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

/// Sleep until `at`; forever when there is none.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
