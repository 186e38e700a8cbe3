//! The listener seam: the server accepts from TCP or a Unix domain socket; TLS, when
//! configured, is layered on accepted TCP streams by the connection task. Past the
//! handshake a connection is any `AsyncRead + AsyncWrite` pair, so the reader and
//! the writer do not know what carries them.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

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
}

impl Listener {
    pub(crate) async fn accept(&self) -> io::Result<(Accepted, SocketAddr)> {
        match self {
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
        }
    }
}
