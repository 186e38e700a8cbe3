//! The bridge's outbox: events read from the node and not yet confirmed by JetStream,
//! bounded in bytes. Sans-I/O: the bridge feeds it and acts on what it says.
//!
//! An event is *held* from the moment it is accepted until JetStream confirms it. A
//! held event is either *queued* (to be published, or published again after a failed
//! confirmation) or *in flight* (published, confirmation pending). Past the byte bound
//! new events are refused (the bridge sheds them) while the held ones stay: nothing
//! accepted is dropped, however long NATS is away.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// Events held until JetStream confirms them.
#[derive(Debug)]
pub struct Outbox {
    limit: usize,
    held: HashMap<u64, Bytes>,
    queued: VecDeque<u64>,
    bytes: usize,
    next_seq: u64,
}

impl Outbox {
    /// An outbox that holds at most `limit` bytes of events.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            held: HashMap::new(),
            queued: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
        }
    }

    /// Accept `event`, queued for publication, and return its sequence number (the
    /// suffix of its JetStream message id); `None` when it would pass the byte bound.
    pub fn offer(&mut self, event: Bytes) -> Option<u64> {
        if self.bytes.saturating_add(event.len()) > self.limit {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += event.len();
        self.held.insert(seq, event);
        self.queued.push_back(seq);
        Some(seq)
    }

    /// The next event to publish (it is then in flight).
    pub fn take_next(&mut self) -> Option<(u64, Bytes)> {
        while let Some(seq) = self.queued.pop_front() {
            if let Some(event) = self.held.get(&seq) {
                return Some((seq, event.clone()));
            }
        }
        None
    }

    /// JetStream stored `seq`: it leaves the outbox. False when it was not held (a
    /// confirmation of a republished event that was confirmed already).
    pub fn confirmed(&mut self, seq: u64) -> bool {
        match self.held.remove(&seq) {
            Some(event) => {
                self.bytes -= event.len();
                true
            }
            None => false,
        }
    }

    /// The publication of `seq` was not confirmed: publish it again, first.
    pub fn failed(&mut self, seq: u64) {
        if self.held.contains_key(&seq) && !self.queued.contains(&seq) {
            self.queued.push_front(seq);
        }
    }

    /// Bytes held.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Events held (queued or in flight).
    #[must_use]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn the_byte_bound_refuses_new_events_and_keeps_the_held_ones() {
        let mut out = Outbox::new(10);
        assert_eq!(out.offer(ev(6)), Some(0));
        assert_eq!(out.offer(ev(5)), None, "6 + 5 > 10");
        assert_eq!(out.offer(ev(4)), Some(1));
        assert_eq!((out.bytes(), out.len()), (10, 2));
        assert_eq!(out.offer(ev(0)), Some(2), "an empty event fits");
        let (seq, _) = out.take_next().expect("queued");
        assert!(out.confirmed(seq));
        assert_eq!(out.bytes(), 4);
        assert_eq!(out.offer(ev(6)), Some(3));
    }

    #[test]
    fn a_failed_publication_goes_first_and_a_late_confirmation_counts_once() {
        let mut out = Outbox::new(100);
        for _ in 0..3 {
            out.offer(ev(1));
        }
        let (a, _) = out.take_next().expect("0");
        let (b, _) = out.take_next().expect("1");
        out.failed(b);
        out.failed(b);
        assert_eq!(out.take_next().map(|(s, _)| s), Some(b), "retried before 2");
        assert_eq!(out.take_next().map(|(s, _)| s), Some(2));
        assert_eq!(out.take_next(), None);
        assert!(out.confirmed(a));
        assert!(out.confirmed(b));
        assert!(
            !out.confirmed(b),
            "the second confirmation of a republished event"
        );
        out.failed(a);
        assert_eq!(
            out.take_next(),
            None,
            "a confirmed event is never republished"
        );
        assert_eq!((out.len(), out.bytes()), (1, 1));
    }

    proptest! {
        /// Whatever happens to confirmations, the bound holds and every accepted event
        /// is held until confirmed.
        #[test]
        fn bounded_and_nothing_accepted_is_lost(ops in proptest::collection::vec((0u8..4, 0usize..40), 1..200)) {
            let mut out = Outbox::new(100);
            let mut accepted = std::collections::BTreeSet::new();
            let mut confirmed = std::collections::BTreeSet::new();
            let mut in_flight = Vec::new();
            for (op, n) in ops {
                match op {
                    0 => if let Some(seq) = out.offer(ev(n)) { accepted.insert(seq); },
                    1 => if let Some((seq, _)) = out.take_next() { in_flight.push(seq); },
                    2 => if let Some(seq) = in_flight.pop() { if out.confirmed(seq) { confirmed.insert(seq); } },
                    _ => if let Some(seq) = in_flight.pop() { out.failed(seq); },
                }
                prop_assert!(out.bytes() <= 100);
                prop_assert_eq!(out.len(), accepted.len() - confirmed.len());
            }
            // Drain: every held event comes out and is confirmed exactly once.
            for seq in in_flight { out.failed(seq); }
            while let Some((seq, _)) = out.take_next() {
                prop_assert!(out.confirmed(seq));
                prop_assert!(confirmed.insert(seq));
            }
            prop_assert_eq!(&confirmed, &accepted);
            prop_assert!(out.is_empty());
        }
    }
}
