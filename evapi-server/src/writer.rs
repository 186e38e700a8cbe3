//! One writer task per connection: takes everything queued in the client's
//! [`Outbox`](crate::outbox::Outbox) at once and writes it with vectored writes, so a
//! frame is never torn and a burst of frames costs one system call.
//!
//! A write that makes no progress for the send timeout ends the connection
//! (`send-timeout`). When the connection is asked to close, what is still queued is
//! flushed first, within one send timeout in all, then the socket is shut down; an
//! aborted connection (a slow client over its queue bound) is closed at once instead.

use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn};

use crate::handle::Shared;
use crate::registry::Conn;
use crate::routes::CloseReason;

/// Buffers per `writev` call (Linux allows 1024; more buys nothing at these sizes).
const MAX_IOV: usize = 64;

pub(crate) async fn run<W: AsyncWrite + Unpin>(mut wr: W, conn: Arc<Conn>, shared: Arc<Shared>) {
    let send_timeout = shared.config.send_timeout;
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let frames = conn.outbox.take(&mut batch);
        if frames == 0 {
            tokio::select! {
                biased;
                () = conn.outbox.ready() => continue,
                () = conn.closing.cancelled() => break,
            }
        }
        // No deadline for the batch as a whole: the send timeout is "no progress for
        // this long" (each write), so a slow but steady reader is never cut off however
        // long its backlog takes.
        let written = tokio::select! {
            biased;
            // Aborted (slow client): stop writing at once; dropping the socket closes it.
            () = conn.abort.cancelled() => return,
            w = write_batch(&mut wr, &mut batch, send_timeout, None) => w,
        };
        if let Err(reason) = written.result {
            fail(&conn, &shared, reason, send_timeout);
            return;
        }
        account(&conn, &shared, frames, written.bytes);
    }

    // Closing: no new frames; flush what is queued within one send timeout, unless the
    // connection was aborted.
    conn.outbox.close();
    if conn.abort.is_cancelled() {
        return;
    }
    let deadline = Instant::now() + send_timeout;
    let frames = conn.outbox.take(&mut batch);
    if frames > 0 {
        let written = write_batch(&mut wr, &mut batch, send_timeout, Some(deadline)).await;
        if let Err(reason) = written.result {
            debug!(%reason, "flush before close abandoned");
            return;
        }
        account(&conn, &shared, frames, written.bytes);
    }
    let _ = timeout_at(deadline, wr.shutdown()).await;
}

fn account(conn: &Conn, shared: &Shared, frames: usize, bytes: usize) {
    let c = &conn.counters;
    c.frames_out.fetch_add(frames as u64, Ordering::Relaxed);
    c.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    let s = &shared.counters;
    s.frames_out.fetch_add(frames as u64, Ordering::Relaxed);
    s.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
}

fn fail(conn: &Conn, shared: &Shared, reason: CloseReason, send_timeout: Duration) {
    if reason == CloseReason::SendTimeout {
        shared
            .counters
            .send_timeouts
            .fetch_add(1, Ordering::Relaxed);
        warn!(
            conidx = conn.conidx,
            connid = conn.connid,
            peer = %conn.peer,
            timeout = ?send_timeout,
            "write made no progress for the send timeout, disconnecting"
        );
    }
    conn.close(reason);
}

struct Written {
    /// Bytes written, complete only when `result` is `Ok`.
    bytes: usize,
    result: Result<(), CloseReason>,
}

/// Write every segment of `batch` (which is left empty). Each `writev` may wait at most
/// `per_write` (no progress), and, when given, nothing goes past `deadline`.
async fn write_batch<W: AsyncWrite + Unpin>(
    wr: &mut W,
    batch: &mut Vec<Bytes>,
    per_write: Duration,
    deadline: Option<Instant>,
) -> Written {
    let mut bytes = 0;
    let mut start = 0;
    let result = loop {
        if start == batch.len() {
            break Ok(());
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut count = 0;
        for (slot, segment) in slices.iter_mut().zip(&batch[start..]) {
            *slot = IoSlice::new(segment);
            count += 1;
        }
        let no_progress = Instant::now() + per_write;
        let limit = deadline.map_or(no_progress, |d| d.min(no_progress));
        let written = match timeout_at(limit, wr.write_vectored(&slices[..count])).await {
            Err(_) => break Err(CloseReason::SendTimeout),
            Ok(Err(e)) => {
                debug!(error = %e, "write failed");
                break Err(CloseReason::Reset);
            }
            Ok(Ok(0)) => break Err(CloseReason::Reset),
            Ok(Ok(n)) => n,
        };
        bytes += written;
        let mut left = written;
        while left > 0 {
            let head = &mut batch[start];
            if left >= head.len() {
                left -= head.len();
                start += 1;
            } else {
                head.advance(left);
                left = 0;
            }
        }
    };
    batch.clear();
    // TLS keeps records in its own buffer until flushed (plain TCP: nothing to do).
    let result = match result {
        Ok(()) => {
            let limit = deadline.unwrap_or_else(|| Instant::now() + per_write);
            match timeout_at(limit, wr.flush()).await {
                Err(_) => Err(CloseReason::SendTimeout),
                Ok(Err(_)) => Err(CloseReason::Reset),
                Ok(Ok(())) => Ok(()),
            }
        }
        e => e,
    };
    Written { bytes, result }
}
