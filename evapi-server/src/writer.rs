//! One writer task per connection: drains the client's bounded queue in batches and
//! writes each batch with vectored writes, so a frame is never torn and many small
//! frames cost one system call.
//!
//! A write that makes no progress for the send timeout ends the connection
//! (`send-timeout`). When the connection is asked to close, what is still queued is
//! flushed first, within one send timeout in all, then the socket is shut down.

use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn};

use crate::handle::Shared;
use crate::registry::Conn;
use crate::routes::CloseReason;

/// Frames taken from the queue per batch.
pub const MAX_BATCH: usize = 256;
/// Buffers per `writev` call (Linux allows 1024; more buys nothing at these sizes).
const MAX_IOV: usize = 64;

pub(crate) async fn run(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
) {
    let send_timeout = shared.config.send_timeout;
    let mut batch: Vec<Bytes> = Vec::with_capacity(MAX_BATCH);
    loop {
        let n = tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
            () = conn.closing.cancelled() => break,
        };
        if n == 0 {
            break;
        }
        let deadline = Instant::now() + send_timeout;
        if let Err(reason) =
            write_batch(&mut wr, &mut batch, send_timeout, deadline, &conn, &shared).await
        {
            fail(&conn, &shared, reason, send_timeout);
            return;
        }
    }

    // Closing: no new frames; flush what is queued within one send timeout in all.
    rx.close();
    let deadline = Instant::now() + send_timeout;
    loop {
        batch.clear();
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        if let Err(reason) =
            write_batch(&mut wr, &mut batch, send_timeout, deadline, &conn, &shared).await
        {
            debug!(%reason, left = rx.len(), "flush before close abandoned");
            return;
        }
    }
    let _ = timeout_at(deadline, wr.shutdown()).await;
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

/// Write every frame of `batch` (which is left empty). Each `writev` may wait at most
/// `per_write`, and nothing past `deadline`.
async fn write_batch(
    wr: &mut OwnedWriteHalf,
    batch: &mut Vec<Bytes>,
    per_write: Duration,
    deadline: Instant,
    conn: &Conn,
    shared: &Shared,
) -> Result<(), CloseReason> {
    let frames = batch.len() as u64;
    let bytes: usize = batch.iter().map(Bytes::len).sum();
    let mut start = 0;
    while start < batch.len() {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut count = 0;
        for (slot, frame) in slices.iter_mut().zip(&batch[start..]) {
            *slot = IoSlice::new(frame);
            count += 1;
        }
        let limit = deadline.min(Instant::now() + per_write);
        let written = match timeout_at(limit, wr.write_vectored(&slices[..count])).await {
            Err(_) => return Err(CloseReason::SendTimeout),
            Ok(Err(e)) => {
                debug!(error = %e, "write failed");
                return Err(CloseReason::Reset);
            }
            Ok(Ok(0)) => return Err(CloseReason::Reset),
            Ok(Ok(n)) => n,
        };
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
    }
    batch.clear();
    let c = &conn.counters;
    c.frames_out.fetch_add(frames, Ordering::Relaxed);
    c.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    shared
        .counters
        .frames_out
        .fetch_add(frames, Ordering::Relaxed);
    shared
        .counters
        .bytes_out
        .fetch_add(bytes as u64, Ordering::Relaxed);
    Ok(())
}
