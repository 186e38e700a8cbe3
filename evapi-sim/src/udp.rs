//! The SIP socket's kernel side: a receive buffer sized for bursts, and the count of
//! datagrams the kernel dropped because that buffer was full.
//!
//! Linux caps `SO_RCVBUF` at `net.core.rmem_max` (often 208 KiB, a few milliseconds of
//! a sipp burst); a process with `CAP_NET_ADMIN` (root) may pass the cap with
//! `SO_RCVBUFFORCE`. The size obtained is what the kernel reports back (it doubles the
//! request for its own bookkeeping). Drops are read from `/proc/net/udp` (the `drops`
//! column of this socket's row, found by its inode).

use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    getsockopt, sendmmsg, setsockopt, sockopt, MsgFlags, MultiHeaders, SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{info, warn};

/// Datagrams handed to the kernel in one `sendmmsg` call.
pub const SEND_BATCH: usize = 64;

/// Default receive buffer asked for the SIP socket: about 40,000 INVITEs of sipp's size.
pub const DEFAULT_RCVBUF: usize = 16 * 1024 * 1024;

/// Ask for a receive buffer of `wanted` bytes (past `rmem_max` too when allowed) and
/// return the size the kernel reports; logs it, and warns when it is short.
pub fn size_receive_buffer(socket: &UdpSocket, wanted: usize) -> usize {
    let _ = setsockopt(socket, sockopt::RcvBuf, &wanted);
    let mut got = getsockopt(socket, sockopt::RcvBuf).unwrap_or(0);
    let mut forced = false;
    if got < wanted && setsockopt(socket, sockopt::RcvBufForce, &wanted).is_ok() {
        got = getsockopt(socket, sockopt::RcvBuf).unwrap_or(got);
        forced = true;
    }
    if got < wanted {
        warn!(
            wanted,
            got,
            "SIP receive buffer smaller than asked (raise net.core.rmem_max, or run with CAP_NET_ADMIN): bursts may be dropped"
        );
    } else {
        info!(wanted, got, forced, "SIP receive buffer");
    }
    got
}

/// Send every `(bytes, peer)` of `datagrams`, [`SEND_BATCH`] per system call
/// (`sendmmsg`), waiting while the socket's send buffer is full. A datagram the kernel
/// refuses (e.g. an unreachable address) is logged and skipped; the rest still go.
pub async fn send_all<B: AsRef<[u8]>>(socket: &UdpSocket, datagrams: &[(B, SocketAddr)]) {
    let mut start = 0;
    while start < datagrams.len() {
        let chunk = &datagrams[start..(start + SEND_BATCH).min(datagrams.len())];
        let slices: Vec<[IoSlice<'_>; 1]> = chunk
            .iter()
            .map(|(bytes, _)| [IoSlice::new(bytes.as_ref())])
            .collect();
        let addrs: Vec<Option<SockaddrStorage>> = chunk
            .iter()
            .map(|(_, peer)| Some(SockaddrStorage::from(*peer)))
            .collect();
        // Built per call, inside it: its raw pointers never live across an await, so
        // the caller's future stays Send.
        let sent = socket.try_io(Interest::WRITABLE, || {
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(chunk.len(), None);
            sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &slices,
                &addrs,
                [],
                MsgFlags::empty(),
            )
            .map(|results| results.count())
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => {
                let _ = socket.writable().await;
            }
            Ok(n) => start += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = socket.writable().await;
            }
            Err(e) => {
                warn!(peer = %chunk[0].1, error = %e, "UDP send failed");
                start += 1;
            }
        }
    }
}

/// Datagrams the kernel dropped on `socket` (its receive buffer was full), since it
/// was opened; `None` when `/proc` does not say.
#[must_use]
pub fn kernel_drops(socket: &UdpSocket) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
    let inode: u64 = link
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .find_map(|path| drops_in(&std::fs::read_to_string(path).ok()?, inode))
}

/// The `drops` column of the row with `inode` in a `/proc/net/udp` table.
fn drops_in(table: &str, inode: u64) -> Option<u64> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let inode_col = header.iter().position(|h| *h == "inode")?;
    // The header's "tx_queue rx_queue" and "tr tm->when" are one field each in the
    // rows, so a row's inode is two fields before the header's; drops come last.
    let at = inode_col.checked_sub(2)?;
    lines.find_map(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        (fields.get(at)?.parse::<u64>().ok()? == inode)
            .then(|| fields.last()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0
  124: 0100007F:13C5 00000000:0000 07 00000000:00040000 00:00000000 00000000     0        0 777 2 0000000000000000 1137
";

    #[test]
    fn the_drops_of_the_row_with_our_inode() {
        assert_eq!(drops_in(TABLE, 777), Some(1137));
        assert_eq!(drops_in(TABLE, 4242), Some(0));
        assert_eq!(drops_in(TABLE, 1), None);
        assert_eq!(drops_in("", 777), None);
        assert_eq!(drops_in("garbage\nmore garbage", 777), None);
    }

    #[tokio::test]
    async fn a_batch_larger_than_one_call_arrives_whole_and_in_order() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let to = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let datagrams: Vec<(Vec<u8>, SocketAddr)> = (0..SEND_BATCH * 2 + 5)
            .map(|i| (format!("datagram {i}").into_bytes(), to))
            .collect();
        send_all(&tx, &datagrams).await;
        let mut buf = [0u8; 64];
        for (want, _) in &datagrams {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want.as_slice());
        }
    }

    #[tokio::test]
    async fn a_fresh_socket_has_dropped_nothing_and_gets_its_buffer() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(kernel_drops(&socket), Some(0));
        // Small enough for any rmem_max: the kernel gives at least what was asked.
        assert!(size_receive_buffer(&socket, 64 * 1024) >= 64 * 1024);
    }
}
