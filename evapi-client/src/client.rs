//! [`Client`]: one connection to an evapi socket (TCP, TLS or Unix socket, with an
//! optional token), framed, with connect timeout and optional reconnect with backoff. [`Client::split`] gives independent reader and
//! writer halves for programs that receive and send at the same time.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use evapi_proto::{CodecError, DecodeError, EncodeError, FrameCodec, Framing, DEFAULT_MAX_FRAME};
use futures_util::{SinkExt, StreamExt};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::{TcpStream, UnixStream};
use tokio_util::codec::{Framed, FramedRead, FramedWrite};
use tracing::{debug, info};

use crate::backoff::Backoff;
use crate::transport::{self, Io, ReadIo, WriteIo};

/// Default for [`ClientConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default evapi address, Kamailio's default port on loopback.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8448";

/// How to connect: start from [`ClientConfig::default`] and set the fields you need
/// (more may come, so it cannot be written as a struct literal outside this crate).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Framing; must match the server's.
    pub framing: Framing,
    /// Longest frame accepted or sent, in bytes.
    pub max_frame: usize,
    /// Give up a connection attempt after this long.
    pub connect_timeout: Duration,
    /// Keep retrying a refused or timed-out connection for this long (zero: one
    /// attempt), for a client started before its server.
    pub wait: Duration,
    /// Speak TLS with this rustls setup (see [`transport::client_config`]); `None`:
    /// plain TCP, as to Kamailio.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The name the server's certificate must carry; `None`: the host part of the
    /// address.
    pub tls_server_name: Option<String>,
    /// Authenticate with this token right after connecting (the server's
    /// `--auth-tokens`): send `{"auth":TOKEN}`, wait for `{"auth":"ok"}`.
    pub token: Option<Secret>,
    /// Send this frame first (after the token) on every connection made with this
    /// configuration, so what an app declares on connect (a hello that the node's
    /// message route answers with `evapi_set_tag`, say) is declared again after every
    /// reconnect. Not sent over NATS (the bridge holds the node's connection).
    pub hello: Option<Bytes>,
    /// Open connections with this instead of a socket (the address is then only a
    /// name in messages); `None`: TCP, TLS or Unix socket as the address says. Call
    /// [`ClientConfig::settle`] before the program exits.
    pub connector: Option<Arc<dyn Connector>>,
}

/// A carrier other than a socket for [`Client`]s: given the framing and frame bound, it
/// opens a stream that behaves like an evapi socket (an in-process pipe to a task, as
/// the `evapi-nats` crate's NATS route does). Set on [`ClientConfig::connector`].
pub trait Connector: fmt::Debug + Send + Sync {
    /// Open one connection.
    ///
    /// # Errors
    ///
    /// The carrier cannot be reached or refuses the connection.
    fn connect(
        &self,
        framing: Framing,
        max_frame: usize,
    ) -> Pin<Box<dyn Future<Output = Result<Io, ClientError>> + Send + '_>>;

    /// Wait, at most `patience`, for the connections that are closed to finish their
    /// work (the NATS route gives back the events its app took and did not answer).
    /// Nothing to wait for by default.
    fn settle(&self, patience: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let _ = patience;
        Box::pin(std::future::ready(()))
    }
}

impl ClientConfig {
    /// Wait, at most `patience`, for what this configuration's [`Connector`] still does
    /// for closed connections. Nothing to wait for over sockets.
    pub async fn settle(&self, patience: Duration) {
        if let Some(connector) = &self.connector {
            connector.settle(patience).await;
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            framing: Framing::Netstring,
            max_frame: DEFAULT_MAX_FRAME,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            wait: Duration::ZERO,
            tls: None,
            tls_server_name: None,
            token: None,
            hello: None,
            connector: None,
        }
    }
}

/// A token, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a token.
    #[must_use]
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What can go wrong talking to an evapi socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection attempt failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A [`Connector`] could not open its transport (over NATS: NATS unreachable, or
    /// refusing the subscription); `source` is the connector's own error, to downcast.
    #[error("cannot open the transport to {addr}")]
    Transport {
        /// Where the connector goes (e.g. the NATS URL).
        addr: String,
        /// The connector's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No answer to the connection attempt in time.
    #[error("cannot connect to {addr}: no answer within {timeout:?}")]
    ConnectTimeout {
        /// The address tried.
        addr: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The connection failed after it was established.
    #[error("connection to {addr} lost")]
    Lost {
        /// The peer.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server sent bytes that break the framing.
    #[error("bad frame from {addr}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Decode {
        /// The peer.
        addr: String,
        /// What was wrong, with its byte offset.
        #[source]
        source: DecodeError,
        /// When the bytes look like another framing, which (see
        /// [`Framing::mismatch_hint`](evapi_proto::Framing::mismatch_hint)).
        hint: Option<&'static str>,
    },
    /// The payload cannot be sent in this framing.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The TLS handshake failed (untrusted or mismatched certificate, not a TLS
    /// server, ...).
    #[error("TLS with {addr} failed")]
    Tls {
        /// The peer.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The TLS server ended the connection with an alert that refuses this client
    /// (with TLS 1.3 it comes on the first read, after the handshake: a missing or
    /// untrusted client certificate).
    #[error("TLS with {addr} refused: {reason}")]
    TlsRefused {
        /// The peer.
        addr: String,
        /// What the alert means for the user.
        reason: String,
        /// The alert.
        #[source]
        source: io::Error,
    },
    /// The server did not accept the token.
    #[error("authentication with {addr} failed: {reason}")]
    Auth {
        /// The peer.
        addr: String,
        /// What happened (never the token).
        reason: String,
    },
}

impl ClientError {
    /// Whether the connection is gone (as opposed to a payload that could not be sent).
    #[must_use]
    pub fn is_disconnect(&self) -> bool {
        !matches!(self, ClientError::Encode(_))
    }

    /// A receive error, with a framing hint from the bytes that did not decode.
    fn from_recv(addr: &str, err: CodecError, buffered: &[u8], framing: Framing) -> Self {
        let mut e = Self::from_codec(addr, err);
        if let ClientError::Decode { hint, .. } = &mut e {
            *hint = Framing::mismatch_hint(buffered, framing);
        }
        e
    }

    fn from_codec(addr: &str, err: CodecError) -> Self {
        match err {
            CodecError::Decode(source) => ClientError::Decode {
                addr: addr.to_owned(),
                source,
                hint: None,
            },
            CodecError::Encode(e) => ClientError::Encode(e),
            CodecError::Io(source) => match tls_refusal(&source) {
                Some(reason) => ClientError::TlsRefused {
                    addr: addr.to_owned(),
                    reason,
                    source,
                },
                None => ClientError::Lost {
                    addr: addr.to_owned(),
                    source,
                },
            },
            // CodecError is non_exhaustive; anything new is a lost connection to us.
            other => ClientError::Lost {
                addr: addr.to_owned(),
                source: io::Error::other(other.to_string()),
            },
        }
    }
}

/// Pauses between attempts while [`ClientConfig::wait`] lasts: 50 ms doubling up to 1 s
/// (no jitter: one program waiting for its server).
const WAIT_RETRY: Backoff = Backoff::doubling(Duration::from_millis(50), Duration::from_secs(1));

/// A connection to an evapi socket.
#[derive(Debug)]
pub struct Client {
    addr: String,
    framed: Framed<Io, FrameCodec>,
}

impl Client {
    /// Connect to `addr` (host:port), retrying for up to [`ClientConfig::wait`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] or [`ClientError::ConnectTimeout`] of the last attempt.
    pub async fn connect(addr: &str, config: &ClientConfig) -> Result<Self, ClientError> {
        let deadline = tokio::time::Instant::now() + config.wait;
        let mut attempt = 1u32;
        loop {
            match Self::connect_once(addr, config).await {
                Err(e) => {
                    // The last try at the deadline itself: the whole wait is used.
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    let nap = WAIT_RETRY.pause(attempt).min(left);
                    debug!(addr, error = %e, retry_in = ?nap, "not up yet, retrying");
                    tokio::time::sleep(nap).await;
                    attempt = attempt.saturating_add(1);
                }
                done => return done,
            }
        }
    }

    async fn connect_once(addr: &str, config: &ClientConfig) -> Result<Self, ClientError> {
        let timeout = config.connect_timeout;
        let timed_out = || ClientError::ConnectTimeout {
            addr: addr.to_owned(),
            timeout,
        };
        let connect_error = |source| ClientError::Connect {
            addr: addr.to_owned(),
            source,
        };
        if let Some(connector) = &config.connector {
            let io = connector.connect(config.framing, config.max_frame).await?;
            return Ok(Self {
                addr: addr.to_owned(),
                framed: Framed::new(io, FrameCodec::new(config.framing, config.max_frame)),
            });
        }
        let io = if let Some(path) = addr.strip_prefix("unix:") {
            let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
                .await
                .map_err(|_| timed_out())?
                .map_err(connect_error)?;
            Io::Unix(stream)
        } else {
            let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| timed_out())?
                .map_err(connect_error)?;
            // Events and answers are small; latency matters more than packet count.
            let _ = stream.set_nodelay(true);
            match &config.tls {
                None => Io::Tcp(stream),
                Some(tls) => {
                    let tls_error = |source| ClientError::Tls {
                        addr: addr.to_owned(),
                        source,
                    };
                    let name = config
                        .tls_server_name
                        .as_deref()
                        .unwrap_or_else(|| transport::server_name(addr));
                    let name = rustls_pki_types::ServerName::try_from(name.to_owned())
                        .map_err(|e| tls_error(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
                    let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
                    let stream = tokio::time::timeout(timeout, connector.connect(name, stream))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(tls_error)?;
                    Io::Tls(Box::new(stream))
                }
            }
        };
        debug!(addr, "connected");
        let mut client = Self {
            addr: addr.to_owned(),
            framed: Framed::new(io, FrameCodec::new(config.framing, config.max_frame)),
        };
        if let Some(token) = &config.token {
            client.authenticate(token, timeout).await?;
        }
        if let Some(hello) = &config.hello {
            client.send(hello).await?;
            debug!(addr, "hello sent");
        }
        Ok(client)
    }

    /// Send the token and wait for the server's `{"auth":"ok"}`.
    async fn authenticate(&mut self, token: &Secret, timeout: Duration) -> Result<(), ClientError> {
        let frame = serde_json::json!({ "auth": token.expose() }).to_string();
        self.send(frame.as_bytes()).await?;
        let addr = self.addr.clone();
        let fail = |reason: String| ClientError::Auth { addr, reason };
        let answer = match tokio::time::timeout(timeout, self.recv()).await {
            Err(_) => return Err(fail(format!("no answer within {timeout:?}"))),
            Ok(Ok(Some(answer))) => answer,
            Ok(Ok(None) | Err(ClientError::Lost { .. })) => {
                return Err(fail(
                    "the server closed the connection (wrong token, or not expected)".to_owned(),
                ))
            }
            Ok(Err(e)) => return Err(e),
        };
        let ok = serde_json::from_slice::<serde_json::Value>(&answer)
            .is_ok_and(|v| v.get("auth").and_then(|a| a.as_str()) == Some("ok"));
        if !ok {
            let shown = String::from_utf8_lossy(&answer[..answer.len().min(120)]).into_owned();
            return Err(fail(format!(
                "expected {{\"auth\":\"ok\"}} first, got {shown:?} (does the server use tokens?)"
            )));
        }
        debug!(addr = %self.addr, "authenticated");
        Ok(())
    }

    /// Connect, retrying with `backoff` while the attempt fails.
    ///
    /// # Errors
    ///
    /// The last attempt's error once the attempts are used up.
    pub async fn connect_with_retry(
        addr: &str,
        config: &ClientConfig,
        backoff: &Backoff,
    ) -> Result<Self, ClientError> {
        let mut attempt = 1u32;
        loop {
            match Self::connect_once(addr, config).await {
                Ok(client) => return Ok(client),
                Err(e) if backoff.exhausted(attempt) => return Err(e),
                Err(e) => {
                    let wait = backoff.jittered(attempt);
                    info!(addr, attempt, error = %e, retry_in = ?wait, "connect failed, retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// The address this client connected to.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Send one payload and flush.
    ///
    /// # Errors
    ///
    /// [`ClientError::Encode`] when the framing cannot carry it (nothing sent), or a
    /// lost connection.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let addr = &self.addr;
        self.framed
            .send(payload)
            .await
            .map_err(|e| ClientError::from_codec(addr, e))
    }

    /// The next message; `None` when the server closed the connection cleanly.
    ///
    /// # Errors
    ///
    /// A bad frame or a lost connection.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, ClientError> {
        match self.framed.next().await {
            Some(Ok(msg)) => Ok(Some(msg)),
            Some(Err(e)) => Err(ClientError::from_recv(
                &self.addr,
                e,
                self.framed.read_buffer(),
                self.framed.codec().framing(),
            )),
            None => Ok(None),
        }
    }

    /// Split into halves that can be used from different tasks.
    #[must_use]
    pub fn split(self) -> (Reader, Writer) {
        let codec = self.framed.codec().clone();
        let parts = self.framed.into_parts();
        let (rd, wr) = parts.io.split();
        let mut reader = FramedRead::new(rd, codec.clone());
        // Keep anything already read but not yet decoded.
        *reader.read_buffer_mut() = parts.read_buf;
        (
            Reader {
                addr: self.addr.clone(),
                inner: reader,
            },
            Writer {
                addr: self.addr,
                inner: FramedWrite::new(wr, codec),
            },
        )
    }
}

/// The receiving half of a [`Client`].
#[derive(Debug)]
pub struct Reader {
    addr: String,
    inner: FramedRead<ReadIo, FrameCodec>,
}

impl Reader {
    /// The next message; `None` when the server closed the connection cleanly.
    ///
    /// # Errors
    ///
    /// A bad frame or a lost connection.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, ClientError> {
        match self.inner.next().await {
            Some(Ok(msg)) => Ok(Some(msg)),
            Some(Err(e)) => Err(ClientError::from_recv(
                &self.addr,
                e,
                self.inner.read_buffer(),
                self.inner.decoder().framing(),
            )),
            None => Ok(None),
        }
    }
}

/// The sending half of a [`Client`].
#[derive(Debug)]
pub struct Writer {
    addr: String,
    inner: FramedWrite<WriteIo, FrameCodec>,
}

impl Writer {
    /// Send one payload and flush.
    ///
    /// # Errors
    ///
    /// [`ClientError::Encode`] (nothing sent) or a lost connection.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.inner
            .send(payload)
            .await
            .map_err(|e| ClientError::from_codec(&self.addr, e))
    }

    /// Queue one payload without flushing (see [`flush`](Self::flush)).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn feed(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.inner
            .feed(payload)
            .await
            .map_err(|e| ClientError::from_codec(&self.addr, e))
    }

    /// Flush, then close the sending direction (TCP FIN): the server reads everything
    /// sent so far, then sees the end of the stream.
    ///
    /// # Errors
    ///
    /// A lost connection.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.flush().await?;
        tokio::io::AsyncWriteExt::shutdown(self.inner.get_mut())
            .await
            .map_err(|source| ClientError::Lost {
                addr: self.addr.clone(),
                source,
            })
    }

    /// Write out everything fed so far.
    ///
    /// # Errors
    ///
    /// A lost connection.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        SinkExt::<&[u8]>::flush(&mut self.inner)
            .await
            .map_err(|e| ClientError::from_codec(&self.addr, e))
    }
}

/// What a TLS alert from the server means for the user, when `e` carries one (read by
/// every receive, so a refusal reads the same on any command): with TLS
/// 1.3 a server that refuses the client's certificate (or its absence) says so only
/// after the handshake, on the first read.
fn tls_refusal(e: &io::Error) -> Option<String> {
    use rustls::AlertDescription as A;
    let rustls::Error::AlertReceived(alert) = e.get_ref()?.downcast_ref::<rustls::Error>()? else {
        return None;
    };
    Some(match alert {
        A::CertificateRequired => {
            "the server requires a client certificate (mutual TLS): give --tls-cert and --tls-key".to_owned()
        }
        A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::CertificateExpired
        | A::CertificateRevoked | A::UnsupportedCertificate => format!(
            "the server refused the client certificate ({alert:?}): is it signed by the CA the server trusts, and valid now?"
        ),
        other => format!("the server ended TLS with the alert {other:?}"),
    })
}
