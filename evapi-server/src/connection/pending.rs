//! The pending stage of a connection: the TLS handshake and the token, each within its
//! timeout, in the bounded pending pool (holding no app slot); every way it can fail is
//! counted against the address.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tracing::{debug, Instrument};

use super::{admit, serve, Ctx, Ready, Stream, READ_CHUNK};
use crate::auth::{Tokens, MAX_AUTH_FRAME};
use crate::handle::Shared;
use crate::refusals::Refusal;
use crate::routes::EventRoutes;
use crate::transport::Accepted;
use evapi_ops::pool::Ticket;
use evapi_ops::throttle::until_checkable;
use evapi_proto::FrameCodec;

/// A pending connection's place in the pool, given back however the task ends.
pub(super) struct InPool {
    pub(super) shared: Arc<Shared>,
    pub(super) ticket: Ticket,
}

impl Drop for InPool {
    fn drop(&mut self) {
        self.shared.pending().leave(&self.ticket);
    }
}

/// The pending stage: the TLS handshake and the token, each within its timeout, while
/// the pool may evict the connection to make room. Any way it ends other than a good
/// token (or shutdown) is a failure of the address; a good token leaves the pool and
/// takes an app's slot.
pub(super) async fn authenticate_then_serve<R: EventRoutes>(
    stream: Accepted,
    peer: SocketAddr,
    in_pool: InPool,
    ctx: Arc<Ctx<R>>,
) {
    let span = tracing::info_span!("pending", %peer);
    async move {
        let shared = Arc::clone(&ctx.handle.shared);
        let local = matches!(stream, Accepted::Unix(_) | Accepted::Memory(_));
        match pending(stream, peer, local, &in_pool.ticket, &shared).await {
            Ok(ready) => {
                // A good token does not clear the address's failures (they age out):
                // one token held must not buy fresh guesses at others.
                drop(in_pool);
                if let Some(admitted) = admit(ready, peer, &ctx) {
                    serve(admitted, ctx).await;
                }
            }
            Err((why, stream)) => {
                drop(in_pool);
                pending_failed(&shared, peer, local, why);
                drop(stream);
            }
        }
    }
    .instrument(span)
    .await;
}

/// Count a pending connection that ended without authenticating.
fn pending_failed(shared: &Shared, peer: SocketAddr, local: bool, why: Refused) {
    if why == Refused::Shutdown {
        return;
    }
    // A guess (a token or first frame checked and wrong) counts against the address and
    // the global ceiling; a timeout, a close or a failed handshake against the address
    // only; an eviction not at all (others caused it: charging it would let any address
    // get an app's address throttled by churning connections).
    if !local {
        let now = std::time::Instant::now();
        match why {
            Refused::WrongToken | Refused::NotAuth | Refused::BadFrame | Refused::Throttled => {
                shared.throttle().guessed_wrong(peer.ip(), now);
            }
            Refused::Closed | Refused::Timeout | Refused::Handshake => {
                shared.throttle().failed(peer.ip(), now);
            }
            Refused::Evicted | Refused::Shutdown => {}
        }
    }
    let counters = &shared.counters;
    let refusal = match why {
        Refused::Handshake => {
            counters.tls_failed.fetch_add(1, Ordering::Relaxed);
            Refusal::Tls
        }
        Refused::Evicted => {
            counters.pending_evicted.fetch_add(1, Ordering::Relaxed);
            Refusal::Evicted
        }
        Refused::Throttled => {
            counters.refused_throttled.fetch_add(1, Ordering::Relaxed);
            Refusal::Throttled
        }
        _ => {
            counters.auth_failed.fetch_add(1, Ordering::Relaxed);
            Refusal::Auth
        }
    };
    shared.refusals.note(refusal);
    debug!(reason = why.describe(), "pending connection closed");
}

/// The TLS handshake (when on) and the token (when asked for).
async fn pending(
    stream: Accepted,
    peer: SocketAddr,
    local: bool,
    ticket: &Ticket,
    shared: &Shared,
) -> Result<Ready, (Refused, Option<Stream>)> {
    #[cfg(feature = "tls")]
    let config = &shared.config;
    #[cfg(feature = "tls")]
    let tls = shared.tls();
    #[cfg(not(feature = "tls"))]
    let tls: Option<std::convert::Infallible> = None;
    let (mut stream, tls_subject) = match (stream, tls) {
        #[cfg(feature = "tls")]
        (Accepted::Tcp(tcp), Some(acceptor)) => {
            super::tune(&tcp, config);
            let handshake = tokio::select! {
                biased;
                () = shared.shutdown.cancelled() => return Err((Refused::Shutdown, None)),
                () = ticket.evicted.cancelled() => return Err((Refused::Evicted, None)),
                h = tokio::time::timeout(config.handshake_timeout, acceptor.accept(tcp)) => h,
            };
            match handshake {
                Ok(Ok(tls)) => {
                    let subject = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(crate::tls::identity);
                    (Stream::Tls(Box::new(tls)), subject)
                }
                Ok(Err(e)) => {
                    debug!(error = %e, "TLS handshake failed");
                    return Err((Refused::Handshake, None));
                }
                Err(_) => {
                    debug!(timeout = ?config.handshake_timeout, "TLS handshake not finished in time");
                    return Err((Refused::Handshake, None));
                }
            }
        }
        (stream, _) => (Stream::Plain(stream), None),
    };
    let mut buf = BytesMut::new();
    let auth = match shared.tokens() {
        None => None,
        Some(tokens) => {
            let ip = (!local).then(|| peer.ip());
            let frame = match &mut stream {
                Stream::Plain(Accepted::Tcp(s)) => auth_frame(s, &mut buf, ticket, shared).await,
                Stream::Plain(Accepted::Unix(s)) => auth_frame(s, &mut buf, ticket, shared).await,
                Stream::Plain(Accepted::Memory(s)) => auth_frame(s, &mut buf, ticket, shared).await,
                #[cfg(feature = "tls")]
                Stream::Tls(s) => auth_frame(s.as_mut(), &mut buf, ticket, shared).await,
            };
            let checked = match frame {
                Ok(frame) => check_token(&frame, &tokens, ip, ticket, shared).await,
                Err(why) => Err(why),
            };
            // The stream goes back with the refusal: it is closed once the failure is
            // counted, so a client that sees the close finds its address charged.
            match checked {
                Ok(name) => Some(name),
                Err(why) => return Err((why, Some(stream))),
            }
        }
    };
    Ok(Ready {
        stream,
        buf,
        auth,
        tls_subject,
    })
}

/// Read the first frame within the auth timeout.
async fn auth_frame<S: AsyncRead + Unpin>(
    rd: &mut S,
    buf: &mut BytesMut,
    ticket: &Ticket,
    shared: &Shared,
) -> Result<bytes::Bytes, Refused> {
    let config = &shared.config;
    let mut codec = FrameCodec::new(config.framing, MAX_AUTH_FRAME.min(config.max_frame));
    let deadline = Instant::now() + config.auth_timeout;
    loop {
        match codec.decode_frame(buf) {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(_) => return Err(Refused::BadFrame),
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return Err(Refused::Shutdown),
            () = ticket.evicted.cancelled() => return Err(Refused::Evicted),
            () = tokio::time::sleep_until(deadline) => return Err(Refused::Timeout),
            read = rd.read_buf(buf) => read,
        };
        match read {
            Ok(0) | Err(_) => return Err(Refused::Closed),
            Ok(_) => {}
        }
    }
}

/// Check the token of `frame`: after the global ceiling lets it (guessing from many
/// addresses waits for the next window) and unless its address got blocked while it
/// was pending (connections opened together before the first failure).
async fn check_token(
    frame: &[u8],
    tokens: &Tokens,
    ip: Option<std::net::IpAddr>,
    ticket: &Ticket,
    shared: &Shared,
) -> Result<Arc<str>, Refused> {
    tokio::select! {
        biased;
        () = shared.shutdown.cancelled() => return Err(Refused::Shutdown),
        () = ticket.evicted.cancelled() => return Err(Refused::Evicted),
        () = until_checkable(&shared.throttle, shared.config.max_auth_failures) => {}
    }
    if let Some(ip) = ip {
        if shared
            .throttle()
            .blocked(ip, std::time::Instant::now())
            .is_some()
        {
            return Err(Refused::Throttled);
        }
    }
    let token = crate::auth::parse_auth_frame(frame).map_err(|_| Refused::NotAuth)?;
    let checked = tokens.check(token.as_bytes());
    if checked.is_none() {
        shared.counters.wrong_tokens.fetch_add(1, Ordering::Relaxed);
    }
    checked.ok_or(Refused::WrongToken)
}

/// Why a pending connection ended before connection-new (no route runs for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Closed,
    Timeout,
    BadFrame,
    NotAuth,
    WrongToken,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Handshake,
    Evicted,
    Throttled,
    Shutdown,
}

impl Refused {
    fn describe(self) -> &'static str {
        match self {
            Refused::Closed => "closed the connection before authenticating",
            Refused::Timeout => "no authentication frame in time",
            Refused::BadFrame => "bytes that are not a frame",
            Refused::NotAuth => "the first frame is not {\"auth\": TOKEN}",
            Refused::WrongToken => "unknown token",
            Refused::Handshake => "TLS handshake failed or not finished in time",
            Refused::Evicted => {
                "the pending pool was full and this was the oldest of the busiest address"
            }
            Refused::Throttled => "its address was blocked meanwhile",
            Refused::Shutdown => "the server is shutting down",
        }
    }
}
