//! The bridge's outbox: events read from the node and not yet confirmed by JetStream,
//! bounded in bytes. Sans-I/O: the bridge feeds it and acts on what it says.
//!
//! An event is *held* from the moment it is accepted until JetStream confirms it. A
//! held event is either *queued* (to be published, or published again after a failed
//! confirmation) or *in flight* (published, confirmation pending). Past the byte bound
//! new events are refused (the bridge sheds them) while the held ones stay, except the
//! ones past their deadline: an event whose transaction has ended at the node (its
//! `fr_inv_timer` passed) is of no use to anyone, so it is dropped (and counted) before
//! it is published and before a live event is shed to make room. Time is an input.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

#[derive(Debug)]
struct Held {
    event: Bytes,
    /// After this the event's transaction has ended at the node.
    deadline: Option<Instant>,
    /// When it was read from the node.
    since: Instant,
    /// The transaction it names (sealed when published, see [`super::seal`]).
    ids: Option<evapi_proto::TransactionId>,
}

/// Events held until JetStream confirms them.
#[derive(Debug)]
pub struct Outbox {
    limit: usize,
    /// By sequence number: the first is the oldest.
    held: BTreeMap<u64, Held>,
    queued: VecDeque<u64>,
    bytes: usize,
    next_seq: u64,
    expired: u64,
}

impl Outbox {
    /// An outbox holding at most `limit` bytes of events.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            held: BTreeMap::new(),
            queued: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
            expired: 0,
        }
    }

    /// Accept `event` (read at `now`, of no use after `deadline`) if it fits, after
    /// dropping what has expired when it would not; its sequence number, or `None`:
    /// shed it.
    pub fn offer(&mut self, event: Bytes, deadline: Option<Instant>, now: Instant) -> Option<u64> {
        if self.bytes.saturating_add(event.len()) > self.limit {
            self.drop_expired(now);
            if self.bytes.saturating_add(event.len()) > self.limit {
                return None;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += event.len();
        self.held.insert(
            seq,
            Held {
                event,
                deadline,
                since: now,
                ids: None,
            },
        );
        self.queued.push_back(seq);
        Some(seq)
    }

    /// Note the transaction the held event `seq` names (its seal is made from it).
    pub fn set_ids(&mut self, seq: u64, ids: evapi_proto::TransactionId) {
        if let Some(held) = self.held.get_mut(&seq) {
            held.ids = Some(ids);
        }
    }

    /// The transaction the held event `seq` names, when noted.
    #[must_use]
    pub fn ids(&self, seq: u64) -> Option<evapi_proto::TransactionId> {
        self.held.get(&seq)?.ids
    }

    /// The next event to publish (retried ones first), skipping and dropping the ones
    /// past their deadline at `now`. It stays held (in flight) until
    /// [`Outbox::confirmed`]. With the event: its deadline.
    pub fn take_next(&mut self, now: Instant) -> Option<(u64, Bytes, Option<Instant>)> {
        while let Some(seq) = self.queued.pop_front() {
            let Some(held) = self.held.get(&seq) else {
                continue;
            };
            if held.deadline.is_some_and(|d| d <= now) {
                self.forget(seq);
                self.expired += 1;
                continue;
            }
            return Some((seq, held.event.clone(), held.deadline));
        }
        None
    }

    /// JetStream confirmed `seq`: forget it. False when it was not held (a second
    /// confirmation of an event published twice).
    pub fn confirmed(&mut self, seq: u64) -> bool {
        self.forget(seq)
    }

    /// Publishing `seq` failed: queue it again, first.
    pub fn failed(&mut self, seq: u64) {
        if self.held.contains_key(&seq) && !self.queued.contains(&seq) {
            self.queued.push_front(seq);
        }
    }

    /// Drop the queued events past their deadline at `now` (counted as expired).
    pub fn drop_expired(&mut self, now: Instant) {
        let dead: Vec<u64> = self
            .queued
            .iter()
            .copied()
            .filter(|seq| {
                self.held
                    .get(seq)
                    .is_some_and(|h| h.deadline.is_some_and(|d| d <= now))
            })
            .collect();
        if dead.is_empty() {
            return;
        }
        self.queued.retain(|seq| !dead.contains(seq));
        for seq in dead {
            self.forget(seq);
            self.expired += 1;
        }
    }

    fn forget(&mut self, seq: u64) -> bool {
        match self.held.remove(&seq) {
            Some(held) => {
                self.bytes -= held.event.len();
                true
            }
            None => false,
        }
    }

    /// Events dropped because their deadline passed before they were published, since
    /// the last call (a bridge adds them to counters that outlive this outbox).
    pub fn take_expired(&mut self) -> u64 {
        std::mem::take(&mut self.expired)
    }

    /// How long the oldest held event has waited at `now`.
    #[must_use]
    pub fn oldest_age(&self, now: Instant) -> Option<std::time::Duration> {
        self.held
            .first_key_value()
            .map(|(_, h)| now.saturating_duration_since(h.since))
    }

    /// Bytes held.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Events held.
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

    /// One instant for the tests that are not about time.
    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    impl Outbox {
        /// An event with no deadline, read at [`t0`].
        fn offer_now(&mut self, event: Bytes) -> Option<u64> {
            self.offer(event, None, t0())
        }
    }

    #[test]
    fn the_ids_go_with_their_event_until_confirmed() {
        let ids = evapi_proto::TransactionId { index: 1, label: 2 };
        let mut out = Outbox::new(1024);
        let seq = out.offer(ev(4), None, t0()).unwrap();
        out.set_ids(seq, ids);
        let (taken, _, _) = out.take_next(t0()).unwrap();
        assert_eq!(out.ids(taken), Some(ids));
        out.confirmed(taken);
        assert_eq!(out.ids(taken), None);
    }

    #[test]
    fn expired_events_are_dropped_before_publishing_and_before_a_live_one_is_shed() {
        let t = t0();
        let s = |n| std::time::Duration::from_secs(n);
        let mut out = Outbox::new(10);
        assert_eq!(out.offer(ev(4), Some(t + s(2)), t), Some(0));
        assert_eq!(out.offer(ev(4), Some(t + s(30)), t + s(1)), Some(1));
        assert_eq!(out.oldest_age(t + s(3)), Some(s(3)));
        // Full for a live 4-byte event until the first one's call has ended.
        assert_eq!(
            out.offer(ev(4), None, t + s(1)),
            None,
            "shed: nothing has expired"
        );
        assert_eq!(
            out.offer(ev(4), None, t + s(2)),
            Some(2),
            "room made from the dead one"
        );
        assert_eq!((out.take_expired(), out.len(), out.bytes()), (1, 2, 8));
        // Publishing skips what died meanwhile.
        assert_eq!(out.take_next(t + s(31)).map(|(seq, _, _)| seq), Some(2));
        assert_eq!((out.take_expired(), out.len()), (1, 1), "one more since");
        assert_eq!(out.take_next(t + s(31)), None);
    }

    #[test]
    fn the_byte_bound_refuses_new_events_and_keeps_the_held_ones() {
        let mut out = Outbox::new(10);
        assert_eq!(out.offer_now(ev(6)), Some(0));
        assert_eq!(out.offer_now(ev(5)), None, "6 + 5 > 10");
        assert_eq!(out.offer_now(ev(4)), Some(1));
        assert_eq!((out.bytes(), out.len()), (10, 2));
        assert_eq!(out.offer_now(ev(0)), Some(2), "an empty event fits");
        let (seq, _, _) = out.take_next(t0()).expect("queued");
        assert!(out.confirmed(seq));
        assert_eq!(out.bytes(), 4);
        assert_eq!(out.offer_now(ev(6)), Some(3));
    }

    #[test]
    fn a_failed_publication_goes_first_and_a_late_confirmation_counts_once() {
        let mut out = Outbox::new(100);
        for _ in 0..3 {
            out.offer_now(ev(1));
        }
        let (a, _, _) = out.take_next(t0()).expect("0");
        let (b, _, _) = out.take_next(t0()).expect("1");
        out.failed(b);
        out.failed(b);
        assert_eq!(
            out.take_next(t0()).map(|(s, _, _)| s),
            Some(b),
            "retried before 2"
        );
        assert_eq!(out.take_next(t0()).map(|(s, _, _)| s), Some(2));
        assert_eq!(out.take_next(t0()), None);
        assert!(out.confirmed(a));
        assert!(out.confirmed(b));
        assert!(
            !out.confirmed(b),
            "the second confirmation of a republished event"
        );
        out.failed(a);
        assert_eq!(
            out.take_next(t0()),
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
                    0 => if let Some(seq) = out.offer_now(ev(n)) { accepted.insert(seq); },
                    1 => if let Some((seq, _, _)) = out.take_next(t0()) { in_flight.push(seq); },
                    2 => if let Some(seq) = in_flight.pop() { if out.confirmed(seq) { confirmed.insert(seq); } },
                    _ => if let Some(seq) = in_flight.pop() { out.failed(seq); },
                }
                prop_assert!(out.bytes() <= 100);
                prop_assert_eq!(out.len(), accepted.len() - confirmed.len());
            }
            // Drain: every held event comes out and is confirmed exactly once.
            for seq in in_flight { out.failed(seq); }
            while let Some((seq, _, _)) = out.take_next(t0()) {
                prop_assert!(out.confirmed(seq));
                prop_assert!(confirmed.insert(seq));
            }
            prop_assert_eq!(&confirmed, &accepted);
            prop_assert!(out.is_empty());
        }
    }
}
