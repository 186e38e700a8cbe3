//! A transparent proxy between an evapi node (Kamailio, or any evapi server) and its
//! apps: each app connects here, the proxy connects to the node for it and copies bytes
//! both ways unchanged. With a [`Recorder`] it also frames a copy of each direction (to
//! timestamp whole frames) and writes them to a transcript.
//!
//! Forwarding comes first: a byte read is written on before it is framed, a framing
//! error only stops the framing of that direction (the rest is recorded raw), and a
//! recorder that falls behind drops records, never traffic.
//!
//! Connections cannot be hoarded: at `max_clients`, the connection quiet the longest
//! (no byte either way) is closed to make room for the new one, so idle connections
//! cannot lock the apps out (an app that gets events is never the quietest for long),
//! and `idle_timeout` closes a connection quiet for that long.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use evapi_proto::transcript::{Entry, Payload, Side};
use evapi_proto::{FrameCodec, Framing};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::recorder::Recorder;

/// Default `max_clients`: apps connected through the proxy at once.
pub const DEFAULT_MAX_CLIENTS: usize = 64;
/// Default `connect_timeout` to the node.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read in one go from either side.
const READ_BUFFER: usize = 64 * 1024;
/// After one side closed, how long the other direction may still drain.
const LINGER: Duration = Duration::from_secs(2);

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The node's evapi socket.
    pub upstream: String,
    /// The framing on the wire (for the transcript only: bytes pass unchanged).
    pub framing: Framing,
    /// Longest frame the transcript frames; a longer one ends framing of that
    /// direction (it is still forwarded, and recorded raw).
    pub max_frame: usize,
    /// Apps connected at once; more are closed at once (logged).
    pub max_clients: usize,
    /// How long connecting to the node may take.
    pub connect_timeout: Duration,
    /// Close a connection with no byte either way for this long; `None`: never (the
    /// quietest is still closed first when `max_clients` are connected).
    pub idle_timeout: Option<Duration>,
}

/// Counts of a proxy run.
#[derive(Debug, Default)]
pub struct ProxyCounts {
    /// Apps accepted and connected to the node.
    pub connections: AtomicU64,
    /// Apps refused (the node unreachable).
    pub refused: AtomicU64,
    /// Connections closed to make room at `max_clients` (the quietest) or for being
    /// idle past `idle_timeout`.
    pub evicted: AtomicU64,
    /// Frames recorded from the node.
    pub node_frames: AtomicU64,
    /// Frames recorded from apps.
    pub app_frames: AtomicU64,
}

/// Accept apps on `listener` until `shutdown` resolves; each gets its own connection
/// to the node. Returns the counts.
pub async fn run(
    listener: TcpListener,
    config: ProxyConfig,
    recorder: Option<Arc<Recorder>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Arc<ProxyCounts> {
    let counts = Arc::new(ProxyCounts::default());
    let config = Arc::new(config);
    let live = Arc::new(Live::default());
    let mut tasks = JoinSet::new();
    let mut next_conn = 0u64;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (app, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and the like: back off a little instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if live.len() >= config.max_clients && live.evict_quietest() {
            debug!(%peer, max = config.max_clients, "max apps through the proxy: the quietest connection closed to make room");
            counts.evicted.fetch_add(1, Ordering::Relaxed);
        }
        next_conn += 1;
        let here = live.enter(next_conn);
        let (config, recorder, counts, live) = (
            Arc::clone(&config),
            recorder.clone(),
            Arc::clone(&counts),
            Arc::clone(&live),
        );
        tasks.spawn(async move {
            connection(app, peer, next_conn, config, recorder, &counts, &here).await;
            live.leave(next_conn);
        });
    }
    tasks.shutdown().await;
    counts
}

/// The connections now, with when each last carried a byte, for eviction.
#[derive(Debug, Default)]
struct Live {
    started: std::sync::OnceLock<std::time::Instant>,
    conns: std::sync::Mutex<std::collections::HashMap<u64, Arc<Here>>>,
}

/// One connection's activity and its way to be closed from outside.
#[derive(Debug)]
struct Here {
    /// Milliseconds since the proxy started, at the last byte either way.
    last: AtomicU64,
    start: std::time::Instant,
    close: tokio_util::sync::CancellationToken,
}

impl Here {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }

    /// Returns once the connection has been quiet for `limit` (never without one).
    async fn idle(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            let quiet = self.quiet_for();
            if quiet >= limit {
                return;
            }
            tokio::time::sleep(limit - quiet).await;
        }
    }
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Arc<Here>>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn enter(&self, conn: u64) -> Arc<Here> {
        let here = Arc::new(Here {
            last: AtomicU64::new(0),
            start: *self.started.get_or_init(std::time::Instant::now),
            close: tokio_util::sync::CancellationToken::new(),
        });
        here.touch();
        self.lock().insert(conn, Arc::clone(&here));
        here
    }

    fn leave(&self, conn: u64) {
        self.lock().remove(&conn);
    }

    /// Close the connection quiet the longest; false when there is none.
    fn evict_quietest(&self) -> bool {
        let mut conns = self.lock();
        let quietest = conns
            .iter()
            .min_by_key(|(_, h)| h.last.load(Ordering::Relaxed))
            .map(|(c, _)| *c);
        match quietest.and_then(|c| conns.remove(&c)) {
            Some(here) => {
                here.close.cancel();
                true
            }
            None => false,
        }
    }
}

async fn connection(
    app: TcpStream,
    peer: SocketAddr,
    conn: u64,
    config: Arc<ProxyConfig>,
    recorder: Option<Arc<Recorder>>,
    counts: &ProxyCounts,
    here: &Here,
) {
    let Some(node) = connect_node(&config, peer, counts).await else {
        return;
    };
    let _ = app.set_nodelay(true);
    let _ = node.set_nodelay(true);
    counts.connections.fetch_add(1, Ordering::Relaxed);
    info!(%peer, conn, "app connected through the proxy");
    if let Some(rec) = &recorder {
        rec.record(
            Entry::Open {
                t: rec.t(),
                conn,
                peer: peer.to_string(),
            },
            0,
        );
    }
    let (app_read, app_write) = app.into_split();
    let (node_read, node_write) = node.into_split();
    let up = pump(
        Side::App,
        conn,
        app_read,
        node_write,
        &config,
        recorder.as_deref(),
        counts,
        here,
    );
    let down = pump(
        Side::Node,
        conn,
        node_read,
        app_write,
        &config,
        recorder.as_deref(),
        counts,
        here,
    );
    tokio::pin!(up, down);
    let (first, result, by_proxy) = tokio::select! {
        r = &mut up => (Side::App, r, false),
        r = &mut down => (Side::Node, r, false),
        () = here.close.cancelled() => {
            info!(%peer, conn, "closed to make room for a new app (the quietest connection)");
            (Side::App, Err(std::io::Error::other("closed by the proxy to make room")), true)
        }
        () = here.idle(config.idle_timeout) => {
            counts.evicted.fetch_add(1, Ordering::Relaxed);
            info!(%peer, conn, "closed: idle past --idle-timeout");
            (Side::App, Err(std::io::Error::other("closed by the proxy: idle")), true)
        }
    };
    if let Some(rec) = &recorder {
        rec.record(
            Entry::Close {
                t: rec.t(),
                conn,
                by: first,
                error: result.as_ref().err().map(ToString::to_string),
            },
            0,
        );
    }
    if by_proxy {
        // Closed by the proxy: nothing of either direction is waited for.
        return;
    }
    debug!(
        conn,
        by = first.name(),
        "closed; the other direction drains"
    );
    let _ = match first {
        Side::App => tokio::time::timeout(LINGER, &mut down).await,
        Side::Node => tokio::time::timeout(LINGER, &mut up).await,
    };
}

/// The node's connection for the app at `peer`, or `None` (counted as refused, logged)
/// when it cannot be reached within `--connect-timeout`.
async fn connect_node(
    config: &ProxyConfig,
    peer: SocketAddr,
    counts: &ProxyCounts,
) -> Option<TcpStream> {
    match tokio::time::timeout(
        config.connect_timeout,
        TcpStream::connect(config.upstream.as_str()),
    )
    .await
    {
        Ok(Ok(node)) => return Some(node),
        Ok(Err(e)) => {
            warn!(%peer, upstream = %config.upstream, error = %e, "cannot reach the node: app closed");
        }
        Err(_) => {
            warn!(%peer, upstream = %config.upstream, "the node did not answer in time: app closed");
        }
    }
    counts.refused.fetch_add(1, Ordering::Relaxed);
    None
}

/// Copy `from`'s bytes to `to` until end of stream (then shut `to`'s write side), framing
/// a copy for the recorder.
#[allow(clippy::too_many_arguments)]
async fn pump(
    side: Side,
    conn: u64,
    mut input: impl AsyncRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
    config: &ProxyConfig,
    recorder: Option<&Recorder>,
    counts: &ProxyCounts,
    here: &Here,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut codec = FrameCodec::new(config.framing, config.max_frame);
    let mut pending = BytesMut::new();
    let mut framing = true;
    let mut raw = crate::recorder::RawRedaction::default();
    let mut raw_payload = |bytes: &[u8]| match side {
        Side::App => raw.payload(bytes),
        Side::Node => Payload::of(bytes),
    };
    let frames = match side {
        Side::Node => &counts.node_frames,
        Side::App => &counts.app_frames,
    };
    loop {
        let n = input.read(&mut buf).await?;
        here.touch();
        if n == 0 {
            let _ = output.shutdown().await;
            return Ok(());
        }
        output.write_all(&buf[..n]).await?;
        let Some(rec) = recorder else { continue };
        if !framing {
            rec.record(
                Entry::Raw {
                    t: rec.t(),
                    conn,
                    from: side,
                    error: None,
                    payload: raw_payload(&buf[..n]),
                },
                n,
            );
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        let t = rec.t();
        loop {
            match codec.decode_frame(&mut pending) {
                Ok(Some(frame)) => {
                    frames.fetch_add(1, Ordering::Relaxed);
                    // A copy of its own: the frame shares the read buffer's
                    // allocation, which the recorder's byte bound would not count.
                    rec.record_frame(t, conn, side, bytes::Bytes::copy_from_slice(&frame));
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(conn, from = side.name(), error = %e, "not framed as --framing says: recorded raw from here on (still forwarded)");
                    framing = false;
                    let rest = pending.split();
                    rec.record(
                        Entry::Raw {
                            t,
                            conn,
                            from: side,
                            error: Some(e.to_string()),
                            payload: raw_payload(&rest),
                        },
                        rest.len(),
                    );
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::RecorderConfig;
    use evapi_proto::transcript::TranscriptReader;

    /// The proxy's settings in these tests: netstring, a 2 s connect timeout, no idle
    /// timeout.
    fn config(upstream: String, max_frame: usize, max_clients: usize) -> ProxyConfig {
        ProxyConfig {
            upstream,
            framing: Framing::Netstring,
            max_frame,
            max_clients,
            connect_timeout: Duration::from_secs(2),
            idle_timeout: None,
        }
    }

    #[tokio::test]
    async fn bytes_pass_unchanged_bad_framing_is_recorded_raw_and_max_clients_holds() {
        // (At max_clients the quietest connection makes room: regression of issue 24,
        // where 64 idle connections kept every app out.)
        // The node: echoes whatever it gets.
        let node = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = node.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = node.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let dir = std::env::temp_dir().join(format!("evapi-proxy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.jsonl");
        let recorder = Arc::new(
            Recorder::start(RecorderConfig {
                path: path.clone(),
                rotate_bytes: 0,
                max_bytes: 0,
                buffer_bytes: 1 << 20,
                source: "proxy",
                node: upstream.clone(),
                framing: Framing::Netstring,
            })
            .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = config(upstream, 16, 1);
        let task = tokio::spawn(run(listener, config, Some(Arc::clone(&recorder)), async {
            let _ = stopped.await;
        }));

        // A frame, one over --max-frame (16 bytes), then garbage: all forwarded as sent.
        let mut app = TcpStream::connect(addr).await.unwrap();
        let sent = b"5:hello,20:aaaaaaaaaaaaaaaaaaaa,zz";
        app.write_all(sent).await.unwrap();
        let mut echoed = vec![0u8; sent.len()];
        app.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, sent);

        // At --max-clients 1 a second app makes room: the first, now the quietest, is
        // closed, and the second is served.
        let mut second = TcpStream::connect(addr).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), app.read(&mut [0u8; 8]))
            .await
            .expect("the quietest closed, not left open")
            .unwrap_or(0);
        assert_eq!(n, 0);
        second.write_all(b"2:hi,").await.unwrap();
        let mut echoed = [0u8; 5];
        second.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"2:hi,");

        drop(app);
        drop(second);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = stop.send(());
        let counts = task.await.unwrap();
        assert_eq!(counts.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(counts.app_frames.load(Ordering::Relaxed), 2);
        let recorder = Arc::try_unwrap(recorder).expect("the proxy let go of it");
        recorder.finish().await.unwrap();

        let file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        let entries: Vec<Entry> = TranscriptReader::new(file, 1 << 16)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let from_app = |e: &&Entry| {
            matches!(
                e,
                Entry::Frame {
                    from: Side::App,
                    ..
                } | Entry::Raw {
                    from: Side::App,
                    ..
                }
            )
        };
        let app_side: Vec<&Entry> = entries.iter().filter(from_app).collect();
        assert!(
            matches!(app_side[0], Entry::Frame { payload: Payload::Text(t), .. } if t == "hello")
        );
        let Entry::Raw {
            error: Some(error),
            payload,
            ..
        } = app_side[1]
        else {
            panic!("the oversized frame starts the raw record: {entries:?}")
        };
        assert!(error.contains("16"), "{error}");
        // Every byte after the last good frame is in the raw record, in order.
        let raw: Vec<u8> = app_side[1..]
            .iter()
            .flat_map(|e| match e {
                Entry::Raw { payload, .. } => payload.bytes().unwrap(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(raw, b"20:aaaaaaaaaaaaaaaaaaaa,zz");
        assert!(payload.bytes().is_ok());
        assert!(entries
            .iter()
            .any(|e| matches!(e, Entry::Close { by: Side::App, .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_timeout_is_closed() {
        let node = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = node.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = node.accept().await {
                held.push(s);
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ProxyConfig {
            idle_timeout: Some(Duration::from_millis(300)),
            ..config(upstream, 1024, 4)
        };
        let task = tokio::spawn(run(listener, config, None, std::future::pending()));
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut [0u8; 8]))
            .await
            .expect("closed for being idle")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() >= Duration::from_millis(300));
        task.abort();
    }

    #[tokio::test]
    async fn an_app_is_closed_and_counted_refused_when_the_node_is_unreachable() {
        // A port bound and never listening: connections to it are refused, and no
        // other program can take it meanwhile.
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let upstream = held.local_addr().unwrap().to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = config(upstream, 1024, 4);
        let task = tokio::spawn(run(listener, config, None, async {
            let _ = stopped.await;
        }));
        let mut app = TcpStream::connect(addr).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), app.read(&mut [0u8; 8]))
            .await
            .expect("closed at once, not left hanging")
            .unwrap_or(0);
        assert_eq!(n, 0);
        let _ = stop.send(());
        let counts = task.await.unwrap();
        assert_eq!(counts.refused.load(Ordering::Relaxed), 1);
        assert_eq!(counts.connections.load(Ordering::Relaxed), 0);
    }
}
