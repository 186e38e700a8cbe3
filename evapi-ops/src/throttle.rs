//! Secrets compared safely, and the slowdown of addresses that keep failing them.
//!
//! [`token_matches`] compares SHA-256 digests in constant time, so neither the content
//! nor the length of a configured token leaks through timing. [`Throttle`] is sans-I/O
//! (time is an input): the event socket's token handshake, the control socket's
//! `--control-token` and the admin API's bearer token share one per server
//! ([`SharedThrottle`]), so an address that guesses at one door is slowed at all three,
//! and guesses at all three count against one global ceiling ([`until_checkable`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// A SHA-256 digest of a secret.
pub type Digest = [u8; 32];

/// The SHA-256 digest of `secret` (kept instead of the secret, compared with
/// [`digests_match`]).
#[must_use]
pub fn digest(secret: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether two digests are equal, in constant time.
#[must_use]
pub fn digests_match(a: &Digest, b: &Digest) -> bool {
    bool::from(a.ct_eq(b))
}

/// Whether `given` is `expected`, in time that depends on neither (both are hashed
/// first, then the digests compared in constant time).
#[must_use]
pub fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    digests_match(&digest(given), &digest(expected))
}

/// Failures from one address before it is slowed down.
pub const THROTTLE_FREE_FAILURES: u32 = 3;
/// First refusal window after [`THROTTLE_FREE_FAILURES`]; it doubles per failure.
pub const THROTTLE_FIRST: Duration = Duration::from_millis(250);
/// Longest refusal window.
pub const THROTTLE_MAX: Duration = Duration::from_secs(30);
/// An address with no failure for this long starts afresh.
pub const THROTTLE_FORGET: Duration = Duration::from_secs(300);
/// Addresses remembered at once (about 80 bytes each: 5 MiB in all); past it, forgotten
/// entries go first, then the oldest eighth of the addresses that are not blocked now,
/// so an attacker with many addresses cannot make the table forget a blocked one.
pub const THROTTLE_ADDRESSES: usize = 65_536;
/// The window of the global failure count ([`Throttle::global_wait`]).
pub const GLOBAL_WINDOW: Duration = Duration::from_secs(1);
/// Default global ceiling: wrong guesses per [`GLOBAL_WINDOW`] from all addresses
/// together before every further check waits for the next window.
pub const DEFAULT_MAX_AUTH_FAILURES: u32 = 50;

/// One throttle shared by the doors of a server (socket, control, admin).
pub type SharedThrottle = Arc<Mutex<Throttle>>;

/// Lock `throttle` (a panic elsewhere while it was held does not matter: its state is
/// counts and times, valid at every step).
pub fn lock(throttle: &Mutex<Throttle>) -> std::sync::MutexGuard<'_, Throttle> {
    throttle.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wait until a token may be checked: while `limit` wrong guesses from all addresses
/// together were counted in the current [`GLOBAL_WINDOW`], until that window ends (then
/// look again). Returns at once below the ceiling or with `limit` 0. Callers race it
/// against their own ends (shutdown, eviction).
pub async fn until_checkable(throttle: &Mutex<Throttle>, limit: u32) {
    loop {
        let wait = lock(throttle).global_wait(Instant::now(), limit);
        let Some(until) = wait else { return };
        tokio::time::sleep_until(until.into()).await;
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Instant,
}

/// Slows down addresses that keep failing authentication: after
/// [`THROTTLE_FREE_FAILURES`] failures, new connections from that address are refused
/// for a window that doubles with each further failure, up to [`THROTTLE_MAX`]. A
/// failure is any pending connection that did not authenticate: a wrong or missing
/// token, a failed TLS handshake, a timeout, a close by the client, an eviction from
/// the pending pool. Failures from all addresses together are also counted per
/// [`GLOBAL_WINDOW`], so guessing from many addresses is held to a global rate.
///
/// Plain data, time as an input: the server keeps it behind a mutex.
#[derive(Debug, Default)]
pub struct Throttle {
    records: HashMap<IpAddr, Record>,
    /// When the current global window began, and the failures in it.
    global: Option<(Instant, u32)>,
}

impl Throttle {
    /// A token (or first frame) from `ip` was checked at `now` and was wrong: a failure
    /// of the address, and one guess against the global ceiling.
    pub fn guessed_wrong(&mut self, ip: IpAddr, now: Instant) {
        self.global = match self.global {
            Some((start, n)) if now.saturating_duration_since(start) < GLOBAL_WINDOW => {
                Some((start, n.saturating_add(1)))
            }
            _ => Some((now, 1)),
        };
        self.failed(ip, now);
    }

    /// Count a failed attempt from `ip` at `now` (a timeout, a close before the token,
    /// a failed TLS handshake): a failure of the address only, since nothing was
    /// guessed.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.records.len() >= THROTTLE_ADDRESSES && !self.records.contains_key(&ip) {
            self.make_room(now);
        }
        let record = self.records.entry(ip).or_insert(Record {
            failures: 0,
            last: now,
            blocked_until: now,
        });
        if now.saturating_duration_since(record.last) >= THROTTLE_FORGET {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last = now;
        if let Some(over) = record.failures.checked_sub(THROTTLE_FREE_FAILURES + 1) {
            let window = THROTTLE_FIRST
                .checked_mul(1u32 << over.min(16))
                .unwrap_or(THROTTLE_MAX)
                .min(THROTTLE_MAX);
            record.blocked_until = now + window;
        }
    }

    /// Forget entries past [`THROTTLE_FORGET`]; if that is not enough, the oldest eighth
    /// of the entries not blocked at `now`; if every entry is blocked, those whose block
    /// ends soonest. Amortized: one pass makes room for many new addresses.
    fn make_room(&mut self, now: Instant) {
        self.records
            .retain(|_, r| now.saturating_duration_since(r.last) < THROTTLE_FORGET);
        if self.records.len() < THROTTLE_ADDRESSES {
            return;
        }
        let goal = THROTTLE_ADDRESSES - THROTTLE_ADDRESSES / 8;
        let mut unblocked: Vec<(Instant, IpAddr)> = self
            .records
            .iter()
            .filter(|(_, r)| r.blocked_until <= now)
            .map(|(ip, r)| (r.last, *ip))
            .collect();
        unblocked.sort_unstable();
        for (_, ip) in unblocked.iter().take(self.records.len() - goal) {
            self.records.remove(ip);
        }
        if self.records.len() > goal {
            let mut blocked: Vec<(Instant, IpAddr)> = self
                .records
                .iter()
                .map(|(ip, r)| (r.blocked_until, *ip))
                .collect();
            blocked.sort_unstable();
            for (_, ip) in blocked.iter().take(self.records.len() - goal) {
                self.records.remove(ip);
            }
        }
    }

    /// Addresses remembered now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no address is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// With `limit` failures per [`GLOBAL_WINDOW`] from all addresses together already
    /// reached at `now`: until when token checks wait (the end of the window). `None`:
    /// check at once. A `limit` of 0 turns the global ceiling off.
    #[must_use]
    pub fn global_wait(&self, now: Instant, limit: u32) -> Option<Instant> {
        let (start, n) = self.global?;
        let end = start + GLOBAL_WINDOW;
        (limit > 0 && n >= limit && now < end).then_some(end)
    }

    /// How much longer `ip` is refused at `now`, if it is.
    #[must_use]
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let record = self.records.get(&ip)?;
        (record.blocked_until > now).then(|| record.blocked_until - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks wait for the end of the window in which the ceiling was reached, and
    /// not at all below it (real time: the throttle takes `std` instants).
    #[tokio::test]
    async fn at_the_global_ceiling_checks_wait_for_the_next_window() {
        let throttle = Mutex::new(Throttle::default());
        let quick = tokio::time::timeout(Duration::from_millis(50), until_checkable(&throttle, 2));
        quick.await.expect("no failure yet: at once");
        // Two guesses in a window that began 800 ms ago: the ceiling of 2 is reached
        // and the window ends in 200 ms.
        let begun = Instant::now() - Duration::from_millis(800);
        lock(&throttle).guessed_wrong([192, 0, 2, 1].into(), begun);
        lock(&throttle).guessed_wrong([192, 0, 2, 2].into(), begun);
        let t0 = Instant::now();
        until_checkable(&throttle, 2).await;
        assert!(
            Instant::now() >= begun + GLOBAL_WINDOW,
            "checked {:?} after the ceiling, before its window ended",
            t0.elapsed()
        );
        let off = tokio::time::timeout(Duration::from_millis(50), until_checkable(&throttle, 0));
        off.await.expect("0: no ceiling");
    }

    #[test]
    fn repeated_failures_from_one_address_are_refused_for_a_growing_window() {
        let ip: IpAddr = [192, 0, 2, 1].into();
        let other: IpAddr = [192, 0, 2, 2].into();
        let t0 = Instant::now();
        let mut throttle = Throttle::default();
        for _ in 0..THROTTLE_FREE_FAILURES {
            throttle.failed(ip, t0);
            assert_eq!(
                throttle.blocked(ip, t0),
                None,
                "the first failures are free"
            );
        }
        throttle.failed(ip, t0);
        assert_eq!(throttle.blocked(ip, t0), Some(THROTTLE_FIRST));
        assert_eq!(throttle.blocked(other, t0), None);
        throttle.failed(ip, t0);
        assert_eq!(throttle.blocked(ip, t0), Some(THROTTLE_FIRST * 2));
        for _ in 0..40 {
            throttle.failed(ip, t0);
        }
        assert_eq!(throttle.blocked(ip, t0), Some(THROTTLE_MAX));
        assert_eq!(throttle.blocked(ip, t0 + THROTTLE_MAX), None);
        // Long quiet: afresh.
        let later = t0 + THROTTLE_FORGET;
        throttle.failed(ip, later);
        assert_eq!(throttle.blocked(ip, later), None);
    }

    #[test]
    fn a_full_table_forgets_unblocked_addresses_before_a_blocked_one() {
        let t0 = Instant::now();
        let mut throttle = Throttle::default();
        let attacker = IpAddr::from([192, 0, 2, 1]);
        for _ in 0..=THROTTLE_FREE_FAILURES + 3 {
            throttle.failed(attacker, t0);
        }
        assert!(throttle.blocked(attacker, t0).is_some());
        // Many addresses, one failure each (none blocked), after the attacker.
        for i in 0..(THROTTLE_ADDRESSES as u32 + 1000) {
            let ip = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            throttle.failed(ip, t0 + Duration::from_millis(1));
        }
        assert!(throttle.len() <= THROTTLE_ADDRESSES);
        assert!(
            throttle
                .blocked(attacker, t0 + Duration::from_millis(2))
                .is_some(),
            "the blocked address was forgotten"
        );
    }

    #[test]
    fn failures_from_all_addresses_are_held_to_a_global_rate() {
        let t0 = Instant::now();
        let mut throttle = Throttle::default();
        for i in 0..50u32 {
            assert_eq!(throttle.global_wait(t0, 50), None, "failure {i}");
            throttle.guessed_wrong(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(throttle.global_wait(t0, 50), Some(t0 + GLOBAL_WINDOW));
        assert_eq!(throttle.global_wait(t0, 0), None, "0 turns it off");
        assert_eq!(throttle.global_wait(t0 + GLOBAL_WINDOW, 50), None);
        throttle.guessed_wrong(IpAddr::from([1, 1, 1, 1]), t0 + GLOBAL_WINDOW);
        assert_eq!(
            throttle.global_wait(t0 + GLOBAL_WINDOW, 50),
            None,
            "a new window"
        );
        // Timeouts and closes count against their address, not as guesses.
        let mut quiet = Throttle::default();
        for i in 0..100u32 {
            quiet.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(quiet.global_wait(t0, 50), None);
    }

    #[test]
    fn the_throttle_remembers_a_bounded_number_of_addresses() {
        let t0 = Instant::now();
        let mut throttle = Throttle::default();
        for i in 0..(THROTTLE_ADDRESSES as u32 + 50) {
            let ip = IpAddr::from(i.to_be_bytes());
            throttle.failed(ip, t0 + Duration::from_millis(u64::from(i)));
        }
        let kept = throttle.records.len();
        assert!(
            kept <= THROTTLE_ADDRESSES && kept > THROTTLE_ADDRESSES / 2,
            "{kept}"
        );
    }
}
