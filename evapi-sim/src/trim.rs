//! Give back the memory of collections a burst made large: a hash map or queue keeps
//! its capacity after its entries are gone, so without this a process that once held
//! 100,000 transactions holds their tables for ever. The cores call [`Trim::due`] from
//! their timer handling and trim their collections when it says so.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How often a core looks at its collections' sizes.
pub(crate) const EVERY: Duration = Duration::from_secs(1);

/// Capacity kept beyond what is in use, below which nothing is trimmed (small tables
/// are not worth a reallocation).
const SLACK: usize = 1024;

/// When a core trims next.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Trim {
    next: Option<Instant>,
}

impl Trim {
    /// Whether trimming is due at `now` (then the next is [`EVERY`] later).
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        match self.next {
            Some(at) if now < at => false,
            _ => {
                self.next = Some(now + EVERY);
                true
            }
        }
    }
}

/// Whether a collection of `len` entries and `capacity` should shrink.
fn oversized(len: usize, capacity: usize) -> bool {
    capacity > len.saturating_mul(4).saturating_add(SLACK)
}

/// Shrink `map` to twice its entries when it holds far fewer than it has room for.
pub(crate) fn map<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if oversized(map.len(), map.capacity()) {
        map.shrink_to(map.len() * 2);
    }
}

/// Shrink `queue` likewise.
pub(crate) fn queue<T>(queue: &mut VecDeque<T>) {
    if oversized(queue.len(), queue.capacity()) {
        queue.shrink_to(queue.len() * 2);
    }
}

/// Shrink `heap` likewise.
pub(crate) fn heap<T: Ord>(heap: &mut BinaryHeap<T>) {
    if oversized(heap.len(), heap.capacity()) {
        heap.shrink_to(heap.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_emptied_after_a_burst_gives_its_room_back() {
        let mut m: HashMap<u64, [u8; 64]> = (0..100_000).map(|i| (i, [0; 64])).collect();
        let big = m.capacity();
        m.retain(|k, _| *k < 10);
        map(&mut m);
        assert!(m.capacity() < big / 100, "{} of {big}", m.capacity());
        assert_eq!(m.len(), 10);
        // In use: left alone.
        let mut busy: HashMap<u64, u8> = (0..5000).map(|i| (i, 0)).collect();
        let cap = busy.capacity();
        map(&mut busy);
        assert_eq!(busy.capacity(), cap);
    }

    #[test]
    fn trimming_is_due_once_a_second() {
        let t0 = Instant::now();
        let mut trim = Trim::default();
        assert!(trim.due(t0));
        assert!(!trim.due(t0 + Duration::from_millis(999)));
        assert!(trim.due(t0 + EVERY));
    }
}
