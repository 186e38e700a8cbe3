//! The transaction ids a bridge is waiting answers for: those of the suspend events it
//! read from its node. An answer from NATS that names a transaction reaches the node only
//! if that transaction is here, and it leaves at once, so a forged answer (anyone who can
//! publish on the answers subject) and a second answer to the same call (a redelivered
//! event answered twice) are dropped at the bridge, before the node's tm sees them.
//!
//! Plain data with time as an input; bounded in age ([`EVENT_MAX_AGE`]: events older than
//! that are gone from JetStream, their transactions ended at the node) and in count
//! ([`MAX_EXPECTED`], the oldest forgotten first).
//!
//! [`EVENT_MAX_AGE`]: super::EVENT_MAX_AGE

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use evapi_proto::TransactionId;

/// Transactions waiting for an answer at once; past it the oldest is forgotten (about
/// 70 bytes each: 18 MiB in all, two minutes of calls at 2,000 a second).
pub const MAX_EXPECTED: usize = 262_144;

/// What to do with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It names a transaction the node suspended and nobody answered yet: write it.
    Expected,
    /// It names a transaction already answered: drop it.
    Duplicate,
    /// It names a transaction the bridge never saw (or saw longer ago than the age
    /// bound): drop it, unless the bridge has just started and a predecessor may have
    /// published that event.
    Unknown,
}

/// The transactions waiting for an answer.
#[derive(Debug)]
pub struct Expected {
    /// When each was read from the node, and whether it has been answered.
    ids: HashMap<TransactionId, (Instant, bool)>,
    /// Arrival order, for the bounds (entries already answered are skipped lazily).
    order: VecDeque<(Instant, TransactionId)>,
    max_age: Duration,
    max: usize,
}

impl Expected {
    /// Ids kept for at most `max_age`, at most `max` of them.
    #[must_use]
    pub fn new(max_age: Duration, max: usize) -> Self {
        Self {
            ids: HashMap::new(),
            order: VecDeque::new(),
            max_age,
            max: max.max(1),
        }
    }

    /// The node suspended `id` at `now` and its event went out.
    pub fn event(&mut self, id: TransactionId, now: Instant) {
        self.expire(now);
        while self.ids.len() >= self.max {
            match self.order.pop_front() {
                Some((at, old)) => {
                    if self.ids.get(&old).map(|e| e.0) == Some(at) {
                        self.ids.remove(&old);
                    }
                }
                None => break,
            }
        }
        self.ids.insert(id, (now, false));
        self.order.push_back((now, id));
    }

    /// An answer naming `id` arrived at `now`: whether it may go to the node. The first
    /// answer to an expected transaction is [`Admission::Expected`]; every later one, for
    /// as long as the age bound, is [`Admission::Duplicate`].
    pub fn answer(&mut self, id: TransactionId, now: Instant) -> Admission {
        self.expire(now);
        match self.ids.get_mut(&id) {
            Some((_, answered @ false)) => {
                *answered = true;
                Admission::Expected
            }
            Some((_, true)) => Admission::Duplicate,
            None => Admission::Unknown,
        }
    }

    /// Remember `id` as answered at `now` (an answer the bridge let through without
    /// having seen its event): a second answer is then a duplicate.
    pub fn answered(&mut self, id: TransactionId, now: Instant) {
        self.expire(now);
        if self.ids.insert(id, (now, true)).is_none() {
            self.order.push_back((now, id));
        }
    }

    /// Transactions remembered now (waiting, or answered within the age bound).
    #[must_use]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether none is waiting.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.order.front() {
            // An entry of the order that a later event of the same ids replaced.
            let replaced = self.ids.get(&id).map(|e| e.0) != Some(at);
            if !replaced && now.saturating_duration_since(at) < self.max_age {
                break;
            }
            self.order.pop_front();
            if !replaced {
                self.ids.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u32, label: u32) -> TransactionId {
        TransactionId { index, label }
    }

    #[test]
    fn one_answer_per_event_and_none_for_strangers() {
        let t0 = Instant::now();
        let mut e = Expected::new(Duration::from_secs(120), 100);
        e.event(id(1, 10), t0);
        e.event(id(2, 20), t0);
        assert_eq!(e.answer(id(9, 9), t0), Admission::Unknown, "forged");
        assert_eq!(
            e.answer(id(1, 11), t0),
            Admission::Unknown,
            "right index, wrong label"
        );
        assert_eq!(e.answer(id(1, 10), t0), Admission::Expected);
        assert_eq!(
            e.answer(id(1, 10), t0),
            Admission::Duplicate,
            "a second answer"
        );
        assert_eq!(e.answer(id(2, 20), t0), Admission::Expected);
    }

    #[test]
    fn ids_die_with_their_age_and_the_oldest_go_past_the_count() {
        let t0 = Instant::now();
        let mut e = Expected::new(Duration::from_secs(120), 3);
        e.event(id(1, 1), t0);
        e.event(id(2, 2), t0 + Duration::from_secs(60));
        let late = t0 + Duration::from_secs(121);
        assert_eq!(
            e.answer(id(1, 1), late),
            Admission::Unknown,
            "older than the bound"
        );
        assert_eq!(e.answer(id(2, 2), late), Admission::Expected);
        for n in 10..14 {
            e.event(id(n, n), late);
        }
        assert_eq!(e.len(), 3);
        assert_eq!(
            e.answer(id(10, 10), late),
            Admission::Unknown,
            "the oldest forgotten"
        );
        // An answered one is remembered as answered until its age is up.
        assert_eq!(e.answer(id(13, 13), late), Admission::Expected);
        assert_eq!(e.answer(id(13, 13), late), Admission::Duplicate);
        let later = late + Duration::from_secs(121);
        assert_eq!(e.answer(id(13, 13), later), Admission::Unknown);
        e.event(id(13, 13), later);
        assert_eq!(e.answer(id(13, 13), late), Admission::Expected);
    }

    /// Kamailio reuses a (index, label) pair only for a new transaction: the same ids
    /// suspended again after an answer are expected again.
    #[test]
    fn ids_suspended_again_are_expected_again() {
        let t0 = Instant::now();
        let mut e = Expected::new(Duration::from_secs(120), 10);
        e.event(id(1, 1), t0);
        assert_eq!(e.answer(id(1, 1), t0), Admission::Expected);
        e.event(id(1, 1), t0 + Duration::from_secs(1));
        assert_eq!(
            e.answer(id(1, 1), t0 + Duration::from_secs(2)),
            Admission::Expected
        );
    }
}
