//! Raw TCP helpers for byte-level tests: send exact bytes, read what comes back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a peer may stay silent before we conclude it has nothing more to send.
pub const QUIET: Duration = Duration::from_millis(400);
/// After the expected bytes arrived, how long to watch for anything extra.
pub const EXTRA: Duration = Duration::from_millis(150);
/// How long expected bytes may take to arrive.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// Pause between the parts of a split write, so the peer reads them separately.
pub const GAP: Duration = Duration::from_millis(100);

/// A raw client connection.
#[derive(Debug)]
pub struct Raw(pub TcpStream);

impl Raw {
    /// Connect.
    ///
    /// # Panics
    ///
    /// When the peer is not there.
    #[must_use]
    pub fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).expect("peer listening");
        s.set_nodelay(true).expect("nodelay");
        Raw(s)
    }

    /// Write each part separately, pausing [`GAP`] after each.
    ///
    /// # Panics
    ///
    /// When the connection fails.
    pub fn send_parts(&mut self, parts: &[&[u8]]) {
        for part in parts {
            self.0.write_all(part).expect("write");
            std::thread::sleep(GAP);
        }
    }

    /// Everything received until the peer is quiet for [`QUIET`]; `<EOF>` appended if
    /// the peer closed.
    ///
    /// # Panics
    ///
    /// On socket errors other than a timeout or reset.
    pub fn drain(&mut self) -> Vec<u8> {
        self.0.set_read_timeout(Some(QUIET)).expect("timeout");
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => {
                    out.extend_from_slice(b"<EOF>");
                    return out;
                }
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return out
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    out.extend_from_slice(b"<EOF>");
                    return out;
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Read until at least `len` bytes (or EOF) came, waiting up to [`PATIENCE`], then
    /// [`EXTRA`] more for anything beyond; `len` 0 waits [`QUIET`] for nothing to come.
    /// `<EOF>` is appended if the peer closed.
    ///
    /// # Panics
    ///
    /// On socket errors other than a timeout or reset.
    pub fn collect(&mut self, len: usize) -> Vec<u8> {
        if len == 0 {
            return self.drain();
        }
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while out.len() < len {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return out;
            }
            self.0.set_read_timeout(Some(left)).expect("timeout");
            match self.0.read(&mut buf) {
                Ok(0) => {
                    out.extend_from_slice(b"<EOF>");
                    return out;
                }
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    out.extend_from_slice(b"<EOF>");
                    return out;
                }
                Err(_) => return out,
            }
        }
        self.0.set_read_timeout(Some(EXTRA)).expect("timeout");
        match self.0.read(&mut buf) {
            Ok(0) => out.extend_from_slice(b"<EOF>"),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        out
    }

    /// Read until `needle` has been received (or [`QUIET`] passes); all bytes read.
    ///
    /// # Panics
    ///
    /// On socket errors.
    pub fn until(&mut self, needle: &[u8]) -> Vec<u8> {
        self.0
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while !out.windows(needle.len()).any(|w| w == needle) {
            match self.0.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    }
}

/// Replace the conidx in `echo:N:` with `#`, for comparing streams from peers whose
/// slot numbering may differ by earlier connections. Works on bytes: payloads may be
/// binary.
#[must_use]
pub fn without_conidx(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"echo:") {
            out.extend_from_slice(b"echo:#");
            i += 5;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}
