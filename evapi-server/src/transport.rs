//! The listener seam: the server accepts from TCP, a Unix domain socket or in-memory
//! streams (tests, same-process clients); TLS, when
//! configured, is layered on accepted TCP streams by the connection task. Past the
//! handshake a connection is any `AsyncRead + AsyncWrite` pair, so the reader and
//! the writer do not know what carries them.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::DuplexStream;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// The address a Unix-socket client is reported with (`srcaddr` 127.0.0.1,
/// `srcport` 0): it is local, and the socket file's permissions say who may connect.
pub const UNIX_PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Where the server accepts connections.
#[derive(Debug)]
pub enum Listener {
    /// TCP (with TLS on top when the config has a TLS setup).
    Tcp(TcpListener),
    /// A Unix domain socket, for apps on the same host; no TLS, no allow-list (the
    /// file's permissions decide), token authentication applies when configured.
    Unix(UnixListener),
    /// In-memory streams from a [`MemoryConnector`], for tests and for embedding a
    /// client in the same process; treated as local, as a Unix socket.
    Memory(MemoryListener),
}

/// Bytes buffered in each direction of an in-memory connection.
pub const MEMORY_BUFFER: usize = 64 * 1024;
/// In-memory connections waiting to be accepted.
const MEMORY_BACKLOG: usize = 128;

/// The accepting end of in-memory connections.
#[derive(Debug)]
pub struct MemoryListener {
    incoming: tokio::sync::mpsc::Receiver<DuplexStream>,
}

/// Makes in-memory connections to a [`MemoryListener`]; cloneable.
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    tx: tokio::sync::mpsc::Sender<DuplexStream>,
}

/// A listener and the connector that reaches it.
#[must_use]
pub fn memory() -> (MemoryListener, MemoryConnector) {
    let (tx, incoming) = tokio::sync::mpsc::channel(MEMORY_BACKLOG);
    (MemoryListener { incoming }, MemoryConnector { tx })
}

impl MemoryConnector {
    /// A new connection: the client's end of an in-memory duplex stream.
    ///
    /// # Errors
    ///
    /// `ConnectionRefused` when the server is gone.
    pub async fn connect(&self) -> io::Result<DuplexStream> {
        let (client, server) = tokio::io::duplex(MEMORY_BUFFER);
        self.tx
            .send(server)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "server gone"))?;
        Ok(client)
    }
}

impl From<MemoryListener> for Listener {
    fn from(l: MemoryListener) -> Self {
        Listener::Memory(l)
    }
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Listener::Tcp(l)
    }
}

impl From<UnixListener> for Listener {
    fn from(l: UnixListener) -> Self {
        Listener::Unix(l)
    }
}

/// An accepted stream, before any handshake.
#[derive(Debug)]
pub(crate) enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
    Memory(DuplexStream),
}

impl Listener {
    pub(crate) async fn accept(&mut self) -> io::Result<(Accepted, SocketAddr)> {
        match self {
            Listener::Memory(l) => match l.incoming.recv().await {
                Some(s) => Ok((Accepted::Memory(s), UNIX_PEER)),
                // Every connector dropped: nothing more will come.
                None => std::future::pending().await,
            },
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Accepted::Tcp(s), peer))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((Accepted::Unix(s), UNIX_PEER))
            }
        }
    }

    /// Where it listens, for the log.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "tcp".to_owned(), |a| a.to_string()),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix".to_owned()),
            Listener::Memory(_) => "memory".to_owned(),
        }
    }
}
