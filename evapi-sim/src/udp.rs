//! The SIP socket's kernel side: a receive buffer sized for bursts, and the count of
//! datagrams the kernel dropped because that buffer was full.
//!
//! Linux caps `SO_RCVBUF` at `net.core.rmem_max` (often 208 KiB, a few milliseconds of
//! a sipp burst); a process with `CAP_NET_ADMIN` (root) may pass the cap with
//! `SO_RCVBUFFORCE`. The size obtained is what the kernel reports back (it doubles the
//! request for its own bookkeeping). Drops are read from `/proc/net/udp` (the `drops`
//! column of this socket's row, found by its inode).

use std::os::fd::AsRawFd;

use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use tokio::net::UdpSocket;
use tracing::{info, warn};

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
    async fn a_fresh_socket_has_dropped_nothing_and_gets_its_buffer() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(kernel_drops(&socket), Some(0));
        // Small enough for any rmem_max: the kernel gives at least what was asked.
        assert!(size_receive_buffer(&socket, 64 * 1024) >= 64 * 1024);
    }
}
