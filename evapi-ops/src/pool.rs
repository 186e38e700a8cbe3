//! The pool of pending connections: accepted, but not yet an app, because their TLS
//! handshake or their token has still to come. They never hold one of `max_clients`
//! (an app takes its slot only once it has authenticated), so silent connections cannot
//! lock the apps out: the pool has its own bound, a share per address, and when it is
//! full the oldest pending connection goes first. An app that authenticates in
//! milliseconds is never the oldest for long, so it gets in while attackers churn.
//!
//! Plain data with no clock or socket: the connection task holds a [`Ticket`] while it is
//! pending and watches its eviction token; the accept loop calls [`Pool::enter`]. The
//! event socket, the control socket and the HTTP listener ([`crate::http`]) each keep
//! one.

use std::collections::BTreeMap;
use std::net::IpAddr;

use tokio_util::sync::CancellationToken;

/// A pending connection's place in the pool, given back with [`Pool::leave`] (the
/// connection code does it in a guard's `Drop`, so no path forgets it).
#[derive(Debug)]
#[must_use = "a ticket is given back with Pool::leave"]
pub struct Ticket {
    id: u64,
    /// Cancelled when the connection is evicted to make room: it must close.
    pub evicted: CancellationToken,
}

#[derive(Debug)]
struct Entry {
    /// `None` for local transports (Unix socket, in-memory), which have no address.
    ip: Option<IpAddr>,
    evicted: CancellationToken,
}

/// Who was evicted to make room for a new pending connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// The pool had room.
    None,
    /// The oldest pending connection of the same address (its share was full).
    SameAddress,
    /// The oldest pending connection of all (the pool was full).
    Oldest,
}

/// The pending connections, oldest first.
#[derive(Debug)]
pub struct Pool {
    max: usize,
    per_ip: usize,
    next: u64,
    /// By entry order: the first is the oldest.
    entries: BTreeMap<u64, Entry>,
}

impl Pool {
    /// At most `max` pending connections, at most `per_ip` of them from one address
    /// (both at least 1).
    #[must_use]
    pub fn new(max: usize, per_ip: usize) -> Self {
        Self {
            max: max.max(1),
            per_ip: per_ip.max(1),
            next: 0,
            entries: BTreeMap::new(),
        }
    }

    /// Pending connections now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no connection is pending.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A new pending connection from `ip`: it always gets in. If its address already has
    /// its share, that address's oldest pending connection is evicted; else, if the pool
    /// is full, the oldest of all is. The evicted one's token is cancelled.
    pub fn enter(&mut self, ip: Option<IpAddr>) -> (Ticket, Eviction) {
        let mut eviction = Eviction::None;
        if ip.is_some() {
            let mut same = self.entries.iter().filter(|(_, e)| e.ip == ip);
            if let Some((&oldest, _)) = same.next() {
                if 1 + same.count() >= self.per_ip {
                    self.evict(oldest);
                    eviction = Eviction::SameAddress;
                }
            }
        }
        if eviction == Eviction::None && self.entries.len() >= self.max {
            if let Some(&oldest) = self.entries.keys().next() {
                self.evict(oldest);
                eviction = Eviction::Oldest;
            }
        }
        let id = self.next;
        self.next += 1;
        let evicted = CancellationToken::new();
        self.entries.insert(
            id,
            Entry {
                ip,
                evicted: evicted.clone(),
            },
        );
        (Ticket { id, evicted }, eviction)
    }

    /// The connection of `ticket` is no longer pending (authenticated, refused or gone).
    pub fn leave(&mut self, ticket: &Ticket) {
        self.entries.remove(&ticket.id);
    }

    fn evict(&mut self, id: u64) {
        if let Some(entry) = self.entries.remove(&id) {
            entry.evicted.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn a_full_pool_evicts_its_oldest_and_always_admits_the_newest() {
        let mut pool = Pool::new(3, 3);
        let (a, _) = pool.enter(ip(1));
        let (b, _) = pool.enter(ip(2));
        let (c, _) = pool.enter(ip(3));
        let (d, eviction) = pool.enter(ip(4));
        assert_eq!(eviction, Eviction::Oldest);
        assert!(a.evicted.is_cancelled());
        assert!(!b.evicted.is_cancelled() && !c.evicted.is_cancelled());
        assert!(!d.evicted.is_cancelled());
        assert_eq!(pool.len(), 3);
        // One that leaves makes room: no eviction.
        pool.leave(&c);
        let (_e, eviction) = pool.enter(ip(5));
        assert_eq!(eviction, Eviction::None);
        assert!(!b.evicted.is_cancelled());
    }

    #[test]
    fn an_address_over_its_share_evicts_its_own_oldest_not_another_address() {
        let mut pool = Pool::new(10, 2);
        let (app, _) = pool.enter(ip(9));
        let (x1, _) = pool.enter(ip(1));
        let (x2, _) = pool.enter(ip(1));
        let (x3, eviction) = pool.enter(ip(1));
        assert_eq!(eviction, Eviction::SameAddress);
        assert!(x1.evicted.is_cancelled());
        assert!(!x2.evicted.is_cancelled() && !x3.evicted.is_cancelled());
        assert!(!app.evicted.is_cancelled(), "another address is untouched");
        assert_eq!(pool.len(), 3);
    }

    /// Many addresses churning silent connections: an app that authenticates before
    /// `max` newer connections arrive is never evicted.
    #[test]
    fn an_app_quicker_than_the_churn_always_gets_through() {
        let mut pool = Pool::new(64, 4);
        let mut attackers = Vec::new();
        for n in 0..10_000u32 {
            let addr = Some(IpAddr::from((n % 250 + 1).to_be_bytes()));
            attackers.push(pool.enter(addr).0);
            if n % 100 == 0 {
                let (app, _) = pool.enter(ip(200));
                // The app sends its token while fewer than 64 others arrive.
                for m in 0..30u32 {
                    attackers.push(pool.enter(Some(IpAddr::from((m + 1).to_be_bytes()))).0);
                }
                assert!(!app.evicted.is_cancelled(), "the app was evicted at {n}");
                pool.leave(&app);
            }
        }
        assert!(pool.len() <= 64);
    }

    #[test]
    fn local_connections_have_no_share_but_count_in_the_pool() {
        let mut pool = Pool::new(2, 1);
        let (l1, _) = pool.enter(None);
        let (_l2, eviction) = pool.enter(None);
        assert_eq!(eviction, Eviction::None);
        let (_l3, eviction) = pool.enter(None);
        assert_eq!(eviction, Eviction::Oldest);
        assert!(l1.evicted.is_cancelled());
    }
}
