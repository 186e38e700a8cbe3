//! The pool of pending connections: accepted, but not yet an app, because their TLS
//! handshake or their token has still to come. They never hold one of `max_clients`
//! (an app takes its slot only once it has authenticated), so silent connections cannot
//! lock the apps out: the pool has its own bound and a share per address; an address
//! over its share loses its own oldest pending connection, and when the pool is full
//! the address with the most pending connections loses its oldest. An app has one or
//! two connections pending at a time, so attackers churning silent connections evict
//! each other first, however long the app's TLS handshake takes: to evict it they need
//! more addresses than the pool has places (then the oldest of the one-connection
//! addresses goes first, and an app that authenticates quickly is rarely the oldest).
//!
//! Plain data with no clock or socket: the connection task holds a [`Ticket`] while it is
//! pending and watches its eviction token; the accept loop calls [`Pool::enter`]. The
//! event socket, the control socket and the HTTP listener ([`crate::http`]) each keep
//! one.

use std::collections::{BTreeMap, HashMap};
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
    /// The oldest pending connection of the address with the most pending (the pool
    /// was full; among addresses with as many, the oldest connection of all).
    Busiest,
}

/// The pending connections, oldest first.
#[derive(Debug)]
pub struct Pool {
    max: usize,
    per_ip: usize,
    next: u64,
    /// By entry order: the first is the oldest.
    entries: BTreeMap<u64, Entry>,
    /// Pending connections per address (`None`: local transports, counted together).
    per_address: HashMap<Option<IpAddr>, usize>,
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
            per_address: HashMap::new(),
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
    /// is full, the oldest of the address with the most pending connections is. The
    /// evicted one's token is cancelled.
    pub fn enter(&mut self, ip: Option<IpAddr>) -> (Ticket, Eviction) {
        let mut eviction = Eviction::None;
        if ip.is_some() && self.per_address.get(&ip).copied().unwrap_or(0) >= self.per_ip {
            self.evict_oldest_of(ip);
            eviction = Eviction::SameAddress;
        }
        if eviction == Eviction::None && self.entries.len() >= self.max {
            let most = self.per_address.values().copied().max().unwrap_or(0);
            // The oldest connection among the addresses with `most` pending.
            let victim = self
                .entries
                .iter()
                .find(|(_, e)| self.per_address.get(&e.ip).copied() == Some(most))
                .map(|(&id, _)| id);
            if let Some(id) = victim {
                self.evict(id);
                eviction = Eviction::Busiest;
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
        *self.per_address.entry(ip).or_insert(0) += 1;
        (Ticket { id, evicted }, eviction)
    }

    /// The connection of `ticket` is no longer pending (authenticated, refused or gone).
    pub fn leave(&mut self, ticket: &Ticket) {
        self.remove(ticket.id);
    }

    fn evict_oldest_of(&mut self, ip: Option<IpAddr>) {
        let oldest = self
            .entries
            .iter()
            .find(|(_, e)| e.ip == ip)
            .map(|(&id, _)| id);
        if let Some(id) = oldest {
            self.evict(id);
        }
    }

    fn evict(&mut self, id: u64) {
        if let Some(evicted) = self.remove(id) {
            evicted.cancel();
        }
    }

    fn remove(&mut self, id: u64) -> Option<CancellationToken> {
        let entry = self.entries.remove(&id)?;
        if let Some(n) = self.per_address.get_mut(&entry.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&entry.ip);
            }
        }
        Some(entry.evicted)
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
        assert_eq!(eviction, Eviction::Busiest);
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

    /// Found by an attack on the TLS socket: 16 addresses holding their 4 pending each,
    /// every connection reopened at once, evicted an app whose handshake took 30-50 ms
    /// every time (it was always the oldest). Now they evict each other, and the app,
    /// older than any of them, stays.
    #[test]
    fn attackers_at_their_share_evict_each_other_not_a_slow_app() {
        let mut pool = Pool::new(64, 4);
        let mut attackers = Vec::new();
        for n in 0..64u32 {
            attackers.push(pool.enter(ip(1 + (n % 16) as u8)).0);
        }
        let (app, eviction) = pool.enter(ip(200));
        assert_eq!(eviction, Eviction::Busiest);
        for n in 0..100_000u32 {
            // Each attacker address reopens what was closed, as fast as it can.
            let (ticket, _) = pool.enter(ip(1 + (n % 16) as u8));
            attackers.push(ticket);
            attackers.retain(|t| !t.evicted.is_cancelled());
            assert!(!app.evicted.is_cancelled(), "the app was evicted at {n}");
        }
        assert_eq!(pool.len(), 64);
    }

    #[test]
    fn local_connections_have_no_share_but_count_in_the_pool() {
        let mut pool = Pool::new(2, 1);
        let (l1, _) = pool.enter(None);
        let (_l2, eviction) = pool.enter(None);
        assert_eq!(eviction, Eviction::None);
        let (_l3, eviction) = pool.enter(None);
        assert_eq!(eviction, Eviction::Busiest);
        assert!(l1.evicted.is_cancelled());
    }
}
