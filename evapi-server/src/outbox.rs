//! A client's send queue: bounded in frames, written by that client's writer task.
//!
//! Small frames (up to [`COALESCE_MAX`] bytes) are copied into a growing tail buffer, so
//! a burst of events becomes one contiguous segment and costs no allocation per frame;
//! larger frames are queued as reference-counted segments without copying, so fanning
//! a big event out to many clients shares one buffer. The writer takes every queued
//! segment at once and writes them with vectored writes. Frames are only ever appended
//! whole, so a client never receives a torn frame.
//!
//! The lock is a std mutex held for a copy or a swap, never across an `.await`.

use std::sync::{Mutex, PoisonError};

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
    /// The queue holds its limit of frames; nothing was queued.
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
    closed: bool,
}

/// One client's queue; see the module docs.
#[derive(Debug)]
pub(crate) struct Outbox {
    inner: Mutex<Inner>,
    ready: Notify,
    limit: usize,
}

impl Outbox {
    /// A queue that holds at most `limit` frames.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            limit: limit.max(1),
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
            if inner.frames >= self.limit {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_coalesce_large_ones_are_shared_and_order_holds() {
        let q = Outbox::new(10);
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
    fn the_limit_counts_frames_and_close_refuses_more() {
        let q = Outbox::new(2);
        assert_eq!(q.push(b"1:a,", None), Push::Queued);
        assert_eq!(q.push(b"1:b,", None), Push::Queued);
        assert_eq!(q.push(b"1:c,", None), Push::Full);
        q.close();
        let mut out = Vec::new();
        assert_eq!(q.take(&mut out), 2, "queued frames survive close");
        assert_eq!(q.push(b"1:d,", None), Push::Closed);
    }
}
