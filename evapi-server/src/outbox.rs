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
//! The total counts what the process holds: a coalesced small frame is a copy per client
//! and counts per client, but a large frame shared by many queues counts once, from its
//! encoding until the last queue lets go of it ([`Total::shared`]).
//!
//! The lock is a std mutex held for a copy or a swap, never across an `.await`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

/// Frames up to this size are copied into the tail buffer rather than queued by reference.
pub(crate) const COALESCE_MAX: usize = 4096;
/// Tail buffer capacity reserved at a time.
const TAIL_CHUNK: usize = 16 * 1024;

/// The outcome of offering a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued.
    Queued,
    /// The queue holds its limit of frames or bytes; nothing was queued.
    Full,
    /// Every client's queues together hold the total limit; nothing was queued.
    TotalFull,
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
    /// Of those, the bytes this queue counted in the total (its own copies: the
    /// coalesced small frames; shared frames are counted once, by their owner).
    counted: usize,
    closed: bool,
}

/// Bytes queued for all clients together, and their limit.
#[derive(Debug)]
pub(crate) struct Total {
    used: AtomicUsize,
    limit: usize,
}

impl Total {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes queued now, all clients.
    pub(crate) fn used(&self) -> usize {
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

    /// `frame` as `Bytes` that count against the total once, for as long as any clone
    /// of them lives (every queue that holds the frame shares that one count).
    ///
    /// # Errors
    ///
    /// The frame back, when its bytes do not fit under the limit.
    pub(crate) fn shared(self: &Arc<Self>, frame: BytesMut) -> Result<Bytes, BytesMut> {
        if !self.reserve(frame.len()) {
            return Err(frame);
        }
        Ok(Bytes::from_owner(Counted {
            frame,
            total: Arc::clone(self),
        }))
    }
}

/// A shared frame's bytes, released from the total when the last queue drops them.
struct Counted {
    frame: BytesMut,
    total: Arc<Total>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.total.release(self.frame.len());
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
    pub(crate) fn new(limit: usize, byte_limit: usize, total: Arc<Total>) -> Self {
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
    /// caller has one (large frames, already counted in the total by
    /// [`Total::shared`]), so it can be queued without copying or counting again.
    pub(crate) fn push(&self, frame: &[u8], shared: Option<&Bytes>) -> Push {
        self.push_inner(frame, shared, false)
    }

    /// [`push`](Self::push), counted in the total even past its limit: for a client
    /// with nothing queued when the total is full (it keeps up; the bound is for those
    /// that do not). The total then exceeds its limit by at most one small frame per
    /// such client.
    pub(crate) fn push_over_total(&self, frame: &[u8], shared: Option<&Bytes>) -> Push {
        self.push_inner(frame, shared, true)
    }

    fn push_inner(&self, frame: &[u8], shared: Option<&Bytes>, force: bool) -> Push {
        let was_empty = {
            let mut inner = self.lock();
            if inner.closed {
                return Push::Closed;
            }
            // A shared frame was counted once by its owner ([`Total::shared`]) and is
            // queued by reference, whatever its size.
            let by_reference = shared;
            if inner.frames >= self.limit
                || (inner.frames > 0 && inner.bytes + frame.len() > self.byte_limit)
            {
                return Push::Full;
            }
            if by_reference.is_none() && !(force || self.total.reserve(frame.len())) {
                return Push::TotalFull;
            }
            if by_reference.is_none() && force {
                self.total.used.fetch_add(frame.len(), Ordering::AcqRel);
            }
            let was_empty = inner.frames == 0;
            match by_reference {
                Some(bytes) => {
                    if !inner.tail.is_empty() {
                        let sealed = inner.tail.split().freeze();
                        inner.segments.push(sealed);
                    }
                    inner.segments.push(bytes.clone());
                }
                None => {
                    if inner.tail.capacity() - inner.tail.len() < frame.len() {
                        inner.tail.reserve(frame.len().max(TAIL_CHUNK));
                    }
                    inner.tail.extend_from_slice(frame);
                    inner.counted += frame.len();
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
    pub(crate) fn take(&self, out: &mut Vec<Bytes>) -> usize {
        let mut inner = self.lock();
        let frames = std::mem::take(&mut inner.frames);
        inner.bytes = 0;
        self.total.release(std::mem::take(&mut inner.counted));
        out.append(&mut inner.segments);
        if !inner.tail.is_empty() {
            out.push(inner.tail.split().freeze());
        }
        frames
    }

    /// Wait until something may have been queued (or [`close`](Self::close) was called).
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Refuse further frames; what is queued stays for a final [`take`](Self::take).
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Refuse further frames and drop what is queued (its bytes leave the total at
    /// once, shared frames once no other queue holds them): for a client cut off.
    pub(crate) fn discard(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.segments.clear();
        inner.tail.clear();
        inner.frames = 0;
        inner.bytes = 0;
        self.total.release(std::mem::take(&mut inner.counted));
        drop(inner);
        self.ready.notify_one();
    }

    /// Frames waiting.
    pub(crate) fn depth(&self) -> usize {
        self.lock().frames
    }

    /// The frame limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // What a gone client still had queued no longer counts against the total.
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.total.release(inner.counted);
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
        assert_eq!(c.push(b"1:y,", None), Push::TotalFull, "22 > 20 in total");
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

    /// Regression (issue 24): a shared frame counted once per client, so 66 stalled
    /// readers made the total look 66 times fuller than the memory held.
    #[test]
    fn a_shared_frame_counts_once_until_the_last_queue_lets_go() {
        let total = Total::new(10 * COALESCE_MAX);
        let big = BytesMut::from(&vec![b'x'; 2 * COALESCE_MAX][..]);
        let frame = total.shared(big).expect("fits");
        assert_eq!(total.used(), 2 * COALESCE_MAX);
        let queues: Vec<Outbox> = (0..66)
            .map(|_| Outbox::new(100, usize::MAX, Arc::clone(&total)))
            .collect();
        for q in &queues {
            assert_eq!(q.push(&frame, Some(&frame)), Push::Queued);
        }
        drop(frame);
        assert_eq!(total.used(), 2 * COALESCE_MAX, "66 queues, counted once");
        let mut out = Vec::new();
        for q in &queues[..65] {
            q.take(&mut out);
            out.clear();
        }
        assert_eq!(total.used(), 2 * COALESCE_MAX, "one queue still holds it");
        queues[65].discard();
        assert_eq!(total.used(), 0, "the last one let go");
        assert!(
            total
                .shared(BytesMut::from(&vec![b'y'; 11 * COALESCE_MAX][..]))
                .is_err(),
            "over the limit"
        );
        assert_eq!(total.used(), 0);
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
