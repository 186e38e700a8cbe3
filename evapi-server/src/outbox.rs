//! A client's send queue: bounded in frames and in bytes (its own, and a total shared
//! by every client), written by that client's writer task.
//!
//! Small frames (up to [`COALESCE_MAX`] bytes) are copied into a growing tail buffer, so
//! a burst of events becomes one contiguous segment and costs no allocation per frame;
//! larger frames are queued as reference-counted segments without copying, so fanning
//! a big event out to many clients shares one buffer. The writer takes every queued
//! segment at once and writes them with vectored writes. Frames are only ever appended
//! whole, so a client never receives a torn frame.
//!
//! The lock is a std mutex held for a copy or a swap, never across an `.await`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

/// Frames up to this size are copied into the tail buffer rather than queued by reference.
pub const COALESCE_MAX: usize = 4096;
/// Tail buffer capacity reserved at a time.
const TAIL_CHUNK: usize = 16 * 1024;

/// The outcome of offering a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued.
    Queued,
    /// The queue holds its limit of frames or bytes, or every client's queues together
    /// hold the total limit; nothing was queued.
    Full,
    /// The connection is closing; nothing was queued.
    Closed,
}

#[derive(Debug, Default)]
struct Inner {
    /// Sealed segments, in order, before `tail`.
    segments: Vec<Bytes>,
    /// Small frames being coalesced.
    tail: BytesMut,
    /// Frames queued (in `segments` and `tail`).
    frames: usize,
    /// Bytes queued.
    bytes: usize,
    closed: bool,
}

/// Bytes queued for all clients together, and their limit.
#[derive(Debug)]
pub(crate) struct Total {
    used: AtomicUsize,
    limit: usize,
}

impl Total {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes queued now, all clients.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Take `n` bytes if they fit under the limit.
    fn reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= self.limit).then_some(used + n)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One client's queue; see the module docs.
#[derive(Debug)]
pub(crate) struct Outbox {
    inner: Mutex<Inner>,
    ready: Notify,
    limit: usize,
    byte_limit: usize,
    total: Arc<Total>,
}

impl Outbox {
    /// A queue that holds at most `limit` frames and `byte_limit` bytes (one frame
    /// always fits an empty queue), counted against `total` too.
    pub fn new(limit: usize, byte_limit: usize, total: Arc<Total>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            limit: limit.max(1),
            byte_limit,
            total,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue one encoded frame. `shared` is the same frame as `Bytes`, given when the
    /// caller has one (large frames), so it can be queued without copying.
    pub fn push(&self, frame: &[u8], shared: Option<&Bytes>) -> Push {
        let was_empty = {
            let mut inner = self.lock();
            if inner.closed {
                return Push::Closed;
            }
            if inner.frames >= self.limit
                || (inner.frames > 0 && inner.bytes + frame.len() > self.byte_limit)
                || !self.total.reserve(frame.len())
            {
                return Push::Full;
            }
            let was_empty = inner.frames == 0;
            match shared {
                Some(bytes) if frame.len() > COALESCE_MAX => {
                    if !inner.tail.is_empty() {
                        let sealed = inner.tail.split().freeze();
                        inner.segments.push(sealed);
                    }
                    inner.segments.push(bytes.clone());
                }
                _ => {
                    if inner.tail.capacity() - inner.tail.len() < frame.len() {
                        inner.tail.reserve(frame.len().max(TAIL_CHUNK));
                    }
                    inner.tail.extend_from_slice(frame);
                }
            }
            inner.frames += 1;
            inner.bytes += frame.len();
            was_empty
        };
        if was_empty {
            self.ready.notify_one();
        }
        Push::Queued
    }

    /// Move every queued segment into `out` (in order) and return how many frames they
    /// hold; 0 when the queue is empty.
    pub fn take(&self, out: &mut Vec<Bytes>) -> usize {
        let mut inner = self.lock();
        let frames = std::mem::take(&mut inner.frames);
        self.total.release(std::mem::take(&mut inner.bytes));
        out.append(&mut inner.segments);
        if !inner.tail.is_empty() {
            out.push(inner.tail.split().freeze());
        }
        frames
    }

    /// Wait until something may have been queued (or [`close`](Self::close) was called).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Refuse further frames; what is queued stays for a final [`take`](Self::take).
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Frames waiting.
    pub fn depth(&self) -> usize {
        self.lock().frames
    }

    /// The frame limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // What a gone client still had queued no longer counts against the total.
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.total.release(inner.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_coalesce_large_ones_are_shared_and_order_holds() {
        let q = Outbox::new(10, usize::MAX, Total::new(usize::MAX));
        assert_eq!(q.push(b"1:a,", None), Push::Queued);
        assert_eq!(q.push(b"1:b,", None), Push::Queued);
        let big = Bytes::from(vec![b'x'; COALESCE_MAX + 1]);
        assert_eq!(q.push(&big, Some(&big)), Push::Queued);
        assert_eq!(q.push(b"1:c,", None), Push::Queued);
        assert_eq!(q.depth(), 4);
        let mut out = Vec::new();
        assert_eq!(q.take(&mut out), 4);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], "1:a,1:b,");
        assert_eq!(
            out[1].as_ptr(),
            big.as_ptr(),
            "large frame queued without a copy"
        );
        assert_eq!(out[2], "1:c,");
        assert_eq!(q.take(&mut Vec::new()), 0);
    }

    #[test]
    fn bytes_are_bounded_per_client_and_in_total() {
        let total = Total::new(20);
        let a = Outbox::new(100, 10, Arc::clone(&total));
        let b = Outbox::new(100, 10, Arc::clone(&total));
        assert_eq!(a.push(b"6:abcdef,", None), Push::Queued, "9 bytes");
        assert_eq!(a.push(b"1:x,", None), Push::Full, "13 > 10 for this client");
        assert_eq!(b.push(b"6:ghijkl,", None), Push::Queued);
        assert_eq!(total.used(), 18);
        let c = Outbox::new(100, 100, Arc::clone(&total));
        assert_eq!(c.push(b"1:y,", None), Push::Full, "22 > 20 in total");
        let mut out = Vec::new();
        assert_eq!(a.take(&mut out), 1);
        assert_eq!(total.used(), 9, "taken bytes leave the total");
        assert_eq!(c.push(b"1:y,", None), Push::Queued);
        drop(b);
        assert_eq!(total.used(), 4, "a dropped queue releases its bytes");
        // One frame always fits an empty queue, whatever its own byte limit.
        let d = Outbox::new(100, 1, Arc::clone(&total));
        assert_eq!(d.push(b"3:big,", None), Push::Queued);
    }

    #[test]
    fn the_limit_counts_frames_and_close_refuses_more() {
        let q = Outbox::new(2, usize::MAX, Total::new(usize::MAX));
        assert_eq!(q.push(b"1:a,", None), Push::Queued);
        assert_eq!(q.push(b"1:b,", None), Push::Queued);
        assert_eq!(q.push(b"1:c,", None), Push::Full);
        q.close();
        let mut out = Vec::new();
        assert_eq!(q.take(&mut out), 2, "queued frames survive close");
        assert_eq!(q.push(b"1:d,", None), Push::Closed);
    }
}
