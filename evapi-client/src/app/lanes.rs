//! Ordered concurrency, the app's sans-I/O core.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Ordered concurrency without I/O: items enter with a key; an item starts at once
/// unless an item of the same key is being handled, in which case it waits its turn;
/// items without a key start at once. At most `max` are in hand (waiting or handled).
#[derive(Debug)]
pub struct Lanes<K, T> {
    waiting: HashMap<K, VecDeque<T>>,
    in_hand: usize,
    max: usize,
}

impl<K: Hash + Eq + Clone, T> Lanes<K, T> {
    /// At most `max` in hand (at least one).
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            waiting: HashMap::new(),
            in_hand: 0,
            max: max.max(1),
        }
    }

    /// Whether another item may enter.
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.in_hand < self.max
    }

    /// Items in hand.
    #[must_use]
    pub fn in_hand(&self) -> usize {
        self.in_hand
    }

    /// `item` enters with `key`: returned when it may start now, kept otherwise.
    #[must_use]
    pub fn push(&mut self, key: Option<K>, item: T) -> Option<T> {
        self.in_hand += 1;
        let Some(key) = key else {
            return Some(item);
        };
        match self.waiting.get_mut(&key) {
            Some(lane) => {
                lane.push_back(item);
                None
            }
            None => {
                self.waiting.insert(key, VecDeque::new());
                Some(item)
            }
        }
    }

    /// The item of `key` finished: the next of its lane, to start now.
    #[must_use]
    pub fn finish(&mut self, key: Option<&K>) -> Option<T> {
        self.in_hand = self.in_hand.saturating_sub(1);
        let key = key?;
        let lane = self.waiting.get_mut(key)?;
        match lane.pop_front() {
            Some(next) => Some(next),
            None => {
                self.waiting.remove(key);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lane_at_a_time_and_never_more_than_max_in_hand() {
        let mut lanes: Lanes<&str, u32> = Lanes::new(4);
        assert_eq!(
            lanes.push(Some("a"), 1),
            Some(1),
            "an idle lane starts at once"
        );
        assert_eq!(lanes.push(Some("a"), 2), None, "its next waits");
        assert_eq!(lanes.push(Some("b"), 3), Some(3), "another call does not");
        assert_eq!(lanes.push(None, 4), Some(4), "no key: at once");
        assert!(!lanes.has_room(), "4 in hand");
        assert_eq!(lanes.finish(None), None);
        assert!(lanes.has_room());
        assert_eq!(lanes.finish(Some(&"a")), Some(2), "then a's next");
        assert_eq!(lanes.finish(Some(&"a")), None, "a is idle again");
        assert_eq!(lanes.push(Some("a"), 5), Some(5), "and starts at once");
        assert_eq!(lanes.in_hand(), 2);
    }
}
