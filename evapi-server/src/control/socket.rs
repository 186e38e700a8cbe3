//! The control interface's I/O: JSON lines from stdin, a TCP or a Unix socket, run
//! through [`super::execute`], a reply line each, in order.
//!
//! Control connections are bounded like the event socket's: with a token, a connection
//! is *pending* until its `{"auth":"TOKEN"}` line, in a pool of its own
//! ([`CONTROL_MAX_PENDING`], [`CONTROL_MAX_PENDING_PER_IP`] from one address, the
//! busiest address's oldest closed to make room), and takes one of `max_connections` only once it has
//! authenticated, so silent connections cannot lock the controller out. A wrong token
//! counts against its address in the server's throttle (the one the event socket and
//! the admin API use), a blocked address is refused before its line is read, and at
//! the server's global ceiling of wrong guesses (`--max-auth-failures`) token lines
//! wait for the next window before they are checked.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Handle;
use evapi_ops::throttle::until_checkable;

/// Replies waiting for a control connection's writer; past this, reading its next
/// line waits (the controller must read its replies).
pub const CONTROL_REPLY_QUEUE: usize = 64;
/// Bytes reserved for each read of a control stream.
const CONTROL_READ: usize = 8 * 1024;
/// Control connections waiting for their token line at once; past it the oldest of the
/// address with the most waiting is closed to make room.
pub const CONTROL_MAX_PENDING: usize = 16;
/// Of those, from one address; past it that address's oldest is closed.
pub const CONTROL_MAX_PENDING_PER_IP: usize = 4;
/// First pause after a failed accept (e.g. out of file descriptors); it doubles up to
/// [`ACCEPT_BACKOFF_MAX`], so a failing accept cannot spin a core.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// Longest pause between failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a refused connection is given to take its one error line.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// Limits and the token for control connections.
#[derive(Debug, Clone)]
pub struct ControlLimits {
    /// Longest line, in bytes; a longer one gets an error reply and is skipped.
    pub max_line: usize,
    /// Authenticated control connections at once (`--control-max-connections`).
    pub max_connections: usize,
    /// The first line must be `{"auth":"TOKEN"}` with this token; `None`: no token
    /// (loopback, or a Unix socket whose file permissions decide).
    pub token: Option<Arc<str>>,
    /// The token line must arrive within this long.
    pub auth_timeout: Duration,
    /// A connection without a complete line with content for this long (idle, or
    /// half a line) gets one error line and is closed, so idle connections cannot hold
    /// the slots (`--control-idle-timeout`); `None`: never.
    pub idle_timeout: Option<Duration>,
}

/// Default `--control-idle-timeout`: room for a person typing at `nc`, short enough
/// that idle connections free their slots within the minute.
pub const DEFAULT_CONTROL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where control connections come from.
#[derive(Debug)]
pub enum ControlListener {
    /// `--control ADDR`.
    Tcp(TcpListener),
    /// `--control-unix PATH`.
    Unix(UnixListener),
}

enum ControlStream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl ControlListener {
    async fn accept(&self) -> std::io::Result<(ControlStream, Option<IpAddr>, String)> {
        match self {
            ControlListener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                Ok((ControlStream::Tcp(s), Some(peer.ip()), peer.to_string()))
            }
            ControlListener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((ControlStream::Unix(s), None, "unix".to_owned()))
            }
        }
    }
}

/// One reply line saying what went wrong.
#[must_use]
pub fn error_line(error: &str) -> String {
    serde_json::json!({ "ok": false, "error": error }).to_string()
}

/// Serve control connections from `listener` until the task is dropped.
pub async fn serve(listener: ControlListener, handle: Handle, limits: ControlLimits) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let pool = Arc::new(std::sync::Mutex::new(evapi_ops::pool::Pool::new(
        CONTROL_MAX_PENDING,
        CONTROL_MAX_PENDING_PER_IP,
    )));
    let mut backoff = ACCEPT_BACKOFF_FIRST;
    loop {
        let (stream, ip, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_FIRST;
                accepted
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "control accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let blocked = ip.and_then(|ip| {
            handle
                .shared
                .throttle()
                .blocked(ip, std::time::Instant::now())
        });
        if let Some(left) = blocked {
            debug!(%peer, retry_in = ?left, "control connection refused: too many wrong tokens from this address");
            refuse(
                stream,
                "too many wrong tokens from this address; try again later",
            );
            continue;
        }
        let (handle, limits, permits, pool) = (
            handle.clone(),
            limits.clone(),
            Arc::clone(&permits),
            Arc::clone(&pool),
        );
        let ticket = limits.token.is_some().then(|| {
            pool.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .enter(ip)
                .0
        });
        tokio::spawn(async move {
            let evicted = ticket.as_ref().map(|t| t.evicted.clone());
            let admission = Admission {
                permits,
                max: limits.max_connections,
                permit: None,
                pending: ticket.map(|t| (pool, t)),
                ip,
                handle: handle.clone(),
            };
            let result = match stream {
                ControlStream::Tcp(s) => {
                    let (rd, wr) = s.into_split();
                    connection(&handle, rd, wr, &limits, admission, evicted).await
                }
                ControlStream::Unix(s) => {
                    let (rd, wr) = s.into_split();
                    connection(&handle, rd, wr, &limits, admission, evicted).await
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "control connection read failed");
            }
            debug!(%peer, "control connection ended");
        });
    }
}

/// Send one error line and close, without holding the accept loop.
fn refuse(stream: ControlStream, why: &str) {
    let line = error_line(why) + "\n";
    tokio::spawn(async move {
        let write = async {
            match stream {
                ControlStream::Tcp(mut s) => s.write_all(line.as_bytes()).await,
                ControlStream::Unix(mut s) => s.write_all(line.as_bytes()).await,
            }
        };
        let _ = tokio::time::timeout(REFUSAL_WRITE, write).await;
    });
}

/// A control connection's way from pending to a slot: its place in the pending pool
/// (given back once it authenticates or ends), then a permit held while it lasts.
struct Admission {
    permits: Arc<Semaphore>,
    max: usize,
    permit: Option<OwnedSemaphorePermit>,
    pending: Option<(
        Arc<std::sync::Mutex<evapi_ops::pool::Pool>>,
        evapi_ops::pool::Ticket,
    )>,
    ip: Option<IpAddr>,
    handle: Handle,
}

impl Admission {
    /// Leave the pending pool and take a slot; `Err` with the reply when none is free.
    fn take_slot(&mut self) -> Result<(), String> {
        self.leave_pool();
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                self.permit = Some(permit);
                info!("controller connected");
                Ok(())
            }
            Err(_) => {
                warn!(
                    max_connections = self.max,
                    "control connection refused: too many"
                );
                Err(format!(
                    "too many control connections ({}); try again later",
                    self.max
                ))
            }
        }
    }

    /// Before its token line is checked: wait while the server's global ceiling of
    /// wrong guesses is reached (guessing from many addresses, at any of the server's
    /// doors), and refuse when the address got blocked while it was pending (several
    /// connections opened together before the first failure).
    async fn may_check(&self) -> Result<(), &'static str> {
        let shared = &self.handle.shared;
        until_checkable(&shared.throttle, shared.config.max_auth_failures).await;
        let now = std::time::Instant::now();
        match self.ip {
            Some(ip) if shared.throttle().blocked(ip, now).is_some() => {
                Err("too many wrong tokens from this address; try again later")
            }
            _ => Ok(()),
        }
    }

    /// A token line was checked and was wrong (or not a token line): a failure of the
    /// address, and a guess against the global ceiling.
    fn guessed_wrong(&mut self) {
        self.leave_pool();
        if let Some(ip) = self.ip {
            self.handle
                .shared
                .throttle()
                .guessed_wrong(ip, std::time::Instant::now());
        }
    }

    /// No token line in time, a close, or an overlong line: a failure of the address
    /// only (nothing was checked).
    fn failed(&mut self) {
        self.leave_pool();
        if let Some(ip) = self.ip {
            self.handle
                .shared
                .throttle()
                .failed(ip, std::time::Instant::now());
        }
    }

    fn leave_pool(&mut self) {
        if let Some((pool, ticket)) = self.pending.take() {
            pool.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .leave(&ticket);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.permit.is_some() {
            info!("controller disconnected");
        }
        self.leave_pool();
    }
}

/// One control connection: lines in, replies out in order.
async fn connection(
    handle: &Handle,
    rd: impl AsyncRead + Unpin,
    mut wr: impl AsyncWrite + Unpin + Send + 'static,
    limits: &ControlLimits,
    mut admission: Admission,
    evicted: Option<CancellationToken>,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<String>(CONTROL_REPLY_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(mut reply) = rx.recv().await {
            reply.push('\n');
            if wr.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let result = if limits.token.is_none() {
        match admission.take_slot() {
            Ok(()) => lines(handle, rd, limits.max_line, &tx, None, limits.idle_timeout).await,
            Err(why) => {
                let _ = tx.send(error_line(&why)).await;
                Ok(())
            }
        }
    } else {
        let auth = limits.token.as_deref().map(|t| Auth {
            token: t,
            deadline: tokio::time::Instant::now() + limits.auth_timeout,
            admission: &mut admission,
        });
        let evicted = evicted.unwrap_or_default();
        let ended = tokio::select! {
            r = lines(handle, rd, limits.max_line, &tx, auth, limits.idle_timeout) => Some(r),
            () = evicted.cancelled() => None,
        };
        match ended {
            Some(r) => r,
            None => {
                // Evicted while pending: charged to nobody, as on the socket (others
                // caused it: charging it would let anyone get an address throttled).
                admission.leave_pool();
                let _ = tx
                    .send(error_line("closed to make room: no token line yet"))
                    .await;
                Ok(())
            }
        }
    };
    drop(tx);
    let _ = writer.await;
    result
}

/// The first line's check, and what to do after it.
struct Auth<'a> {
    token: &'a str,
    deadline: tokio::time::Instant,
    admission: &'a mut Admission,
}

/// Control lines from `input`, at most `max_line` bytes each: a reply per line on
/// `replies`, in order. A line that is too long or not UTF-8 gets an error reply, and
/// reading goes on (one bad line never ends control). With `auth`, the first line must
/// be `{"auth":"TOKEN"}` before its deadline, or the connection ends after one error
/// line (and the address is charged a failure); after a good one the connection takes
/// its slot. Ends when `input` ends or nobody takes replies any more.
///
/// # Errors
///
/// Reading `input` failed.
pub async fn stdin_lines(
    handle: &Handle,
    input: impl AsyncRead + Unpin,
    max_line: usize,
    replies: &mpsc::Sender<String>,
) -> std::io::Result<()> {
    lines(handle, input, max_line, replies, None, None).await
}

async fn lines(
    handle: &Handle,
    mut input: impl AsyncRead + Unpin,
    max_line: usize,
    replies: &mpsc::Sender<String>,
    mut auth: Option<Auth<'_>>,
    idle_timeout: Option<Duration>,
) -> std::io::Result<()> {
    use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Decoder as _};
    // The codec is driven by hand, not through FramedRead: FramedRead ends the stream
    // after any error, and an overlong line must not end control. After that error the
    // codec discards up to the next newline by itself.
    let mut codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max_line);
    let mut buf = bytes::BytesMut::with_capacity(CONTROL_READ.min(max_line + 1));
    let mut eof = false;
    // Reset by each line with content only: blank lines and half lines keep nothing open.
    let mut idle_until = idle_timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        let line = if eof {
            codec.decode_eof(&mut buf)
        } else {
            codec.decode(&mut buf)
        };
        let reply = match line {
            Ok(None) if eof => {
                if let Some(auth) = auth.as_mut() {
                    auth.admission.failed();
                }
                return Ok(());
            }
            Ok(None) => {
                let read = match &mut auth {
                    Some(a) => {
                        match tokio::time::timeout_at(a.deadline, input.read_buf(&mut buf)).await {
                            Ok(read) => read?,
                            Err(_) => {
                                a.admission.failed();
                                let _ = replies
                                    .send(error_line("no {\"auth\": TOKEN} line in time"))
                                    .await;
                                return Ok(());
                            }
                        }
                    }
                    None => match idle_until {
                        None => input.read_buf(&mut buf).await?,
                        Some(at) => {
                            match tokio::time::timeout_at(at, input.read_buf(&mut buf)).await {
                                Ok(read) => read?,
                                Err(_) => {
                                    debug!("control connection idle, closing");
                                    let _ = replies
                                        .send(error_line(&format!(
                                        "no control line for {:?}, closed (--control-idle-timeout)",
                                        idle_timeout.unwrap_or_default()
                                    )))
                                        .await;
                                    return Ok(());
                                }
                            }
                        }
                    },
                };
                if read == 0 {
                    eof = true;
                }
                continue;
            }
            Ok(Some(bytes)) if auth.is_some() => {
                let Some(a) = auth.take() else { continue };
                if let Err(why) = a.admission.may_check().await {
                    a.admission.guessed_wrong();
                    let _ = replies.send(error_line(why)).await;
                    return Ok(());
                }
                if super::check_auth_line(&bytes, a.token) {
                    if let Err(why) = a.admission.take_slot() {
                        let _ = replies.send(error_line(&why)).await;
                        return Ok(());
                    }
                    serde_json::json!({ "ok": true, "auth": "ok" }).to_string()
                } else {
                    a.admission.guessed_wrong();
                    debug!("control connection: wrong or missing token, closing");
                    let _ = replies
                        .send(error_line(
                            "authentication failed; the first line must be {\"auth\": TOKEN}",
                        ))
                        .await;
                    return Ok(());
                }
            }
            Ok(Some(bytes)) => match std::str::from_utf8(&bytes) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => {
                    idle_until = idle_timeout.map(|t| tokio::time::Instant::now() + t);
                    super::execute(handle, text.trim_end_matches('\r'))
                }
                Err(e) => error_line(&format!(
                    "control line is not UTF-8 (invalid byte at {})",
                    e.valid_up_to()
                )),
            },
            Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) if auth.is_some() => {
                if let Some(a) = auth.as_mut() {
                    a.admission.failed();
                }
                let _ = replies
                    .send(error_line("authentication line too long"))
                    .await;
                return Ok(());
            }
            Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => error_line(&format!(
                "control line longer than {max_line} bytes, skipped"
            )),
            Err(AnyDelimiterCodecError::Io(e)) => return Err(e),
        };
        if replies.send(reply).await.is_err() {
            return Ok(());
        }
    }
}
