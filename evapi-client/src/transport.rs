//! How a client reaches a socket: plain TCP (as to Kamailio), TLS over TCP
//! (rustls), or a Unix domain socket (`unix:PATH`); and the TLS settings from PEM
//! files. The rest of the client sees one `AsyncRead + AsyncWrite` stream.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use evapi_ops::pem::{load_certs, load_key, load_roots};
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

/// Why TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// A PEM file could not be read or holds nothing usable.
    #[error(transparent)]
    File(#[from] evapi_ops::pem::PemError),
    /// The system's trust store has no CA certificate.
    #[error("no CA certificate in the system trust store; give one with --tls-ca")]
    NoSystemRoots,
    /// rustls refused the settings.
    #[error("rustls refused the TLS settings")]
    Rustls(#[from] rustls::Error),
}

/// A rustls client setup: servers are verified against the CAs in `ca` (PEM), or
/// against the system's trust store when `ca` is `None`; `cert_and_key` (PEM files)
/// is the client certificate for servers that ask for one (mutual TLS).
///
/// # Errors
///
/// A file that cannot be read or parsed, or a key that does not fit its certificate.
pub fn client_config(
    ca: Option<&Path>,
    cert_and_key: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let roots = match ca {
        Some(path) => load_roots(path)?,
        None => {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsSetupError::NoSystemRoots);
            }
            roots
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match cert_and_key {
        Some((cert, key)) => {
            let certs = load_certs(cert)?;
            let key = load_key(key)?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name a TLS server's certificate is checked against: the host part of
/// `addr` (`host:port`, `[v6]:port`, `IP:port`).
#[must_use]
pub fn server_name(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// One connected stream, whatever carries it.
#[derive(Debug)]
pub enum Io {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
    /// A Unix domain socket.
    Unix(UnixStream),
    /// An in-process pipe to a task that stands in for a socket (the NATS app side).
    Memory(tokio::io::DuplexStream),
}

/// The receiving half of an [`Io`].
#[derive(Debug)]
pub enum ReadIo {
    /// Plain TCP.
    Tcp(tokio::net::tcp::OwnedReadHalf),
    /// TLS (one stream shared with its writer).
    Tls(tokio::io::ReadHalf<Box<TlsStream<TcpStream>>>),
    /// A Unix domain socket.
    Unix(tokio::net::unix::OwnedReadHalf),
    /// An in-process pipe.
    Memory(tokio::io::ReadHalf<tokio::io::DuplexStream>),
}

/// The sending half of an [`Io`].
#[derive(Debug)]
pub enum WriteIo {
    /// Plain TCP.
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    /// TLS (one stream shared with its reader).
    Tls(tokio::io::WriteHalf<Box<TlsStream<TcpStream>>>),
    /// A Unix domain socket.
    Unix(tokio::net::unix::OwnedWriteHalf),
    /// An in-process pipe.
    Memory(tokio::io::WriteHalf<tokio::io::DuplexStream>),
}

impl Io {
    /// Halves usable from different tasks (plain TCP and Unix split without a lock).
    #[must_use]
    pub fn split(self) -> (ReadIo, WriteIo) {
        match self {
            Io::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadIo::Tcp(r), WriteIo::Tcp(w))
            }
            Io::Tls(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadIo::Tls(r), WriteIo::Tls(w))
            }
            Io::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadIo::Unix(r), WriteIo::Unix(w))
            }
            Io::Memory(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadIo::Memory(r), WriteIo::Memory(w))
            }
        }
    }
}

/// Delegate a poll method to whichever variant is inside.
macro_rules! delegate {
    ($self:ident, $enum:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            $enum::Tcp($s) => $call,
            $enum::Tls($s) => $call,
            $enum::Unix($s) => $call,
            $enum::Memory($s) => $call,
        }
    };
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, Io, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncRead for ReadIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, ReadIo, s => Pin::new(s).poll_read(cx, buf))
    }
}

macro_rules! impl_write {
    ($enum:ident) => {
        impl AsyncWrite for $enum {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                delegate!(self, $enum, s => Pin::new(s).poll_write(cx, buf))
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                delegate!(self, $enum, s => Pin::new(s).poll_write_vectored(cx, bufs))
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $enum::Tcp(s) => s.is_write_vectored(),
                    $enum::Tls(s) => s.is_write_vectored(),
                    $enum::Unix(s) => s.is_write_vectored(),
                    $enum::Memory(s) => s.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                delegate!(self, $enum, s => Pin::new(s).poll_flush(cx))
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                delegate!(self, $enum, s => Pin::new(s).poll_shutdown(cx))
            }
        }
    };
}

impl_write!(Io);
impl_write!(WriteIo);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_part() {
        assert_eq!(server_name("evapi.example.com:8448"), "evapi.example.com");
        assert_eq!(server_name("127.0.0.1:8448"), "127.0.0.1");
        assert_eq!(server_name("[::1]:8448"), "::1");
        assert_eq!(server_name("localhost"), "localhost");
    }
}
