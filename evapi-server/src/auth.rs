//! Token authentication: the token table, the first-frame handshake, and the slowdown
//! of addresses that keep failing.
//!
//! With tokens configured, a new connection is pending until its first frame is
//! `{"auth":"<token>"}`; the server answers `{"auth":"ok","name":"<name>"}` and only
//! then runs connection-new. This module is sans-I/O (time is an input); the
//! connection task drives it.
//!
//! Tokens are compared as SHA-256 digests in constant time, so neither the content
//! nor the length of a configured token leaks through timing. The table never prints
//! a token (its `Debug` shows names only).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// Longest first frame read while authenticating, in bytes; a longer one fails.
pub const MAX_AUTH_FRAME: usize = 4096;
/// Longest token name, in bytes (it is logged and passed to routes).
pub const MAX_NAME_LEN: usize = 64;
/// Shortest token accepted in a token file: 16 bytes (a guessable token is no guard).
pub const MIN_TOKEN_LEN: usize = 16;

type Digest = [u8; 32];

fn digest(token: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether `given` is `expected`, in time that depends on neither (both are hashed
/// first, then the digests compared in constant time).
#[must_use]
pub fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    bool::from(digest(given).ct_eq(&digest(expected)))
}

/// The `name token` table.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(Arc<str>, Digest)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(name, _)| name))
            .finish()
    }
}

/// Why a token file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `name token`, or breaks a rule.
    #[error("line {line}: {what}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the token itself).
        what: String,
    },
    /// No token at all: every client would be refused.
    #[error("no tokens (lines are `name token`; # starts a comment)")]
    Empty,
}

impl Tokens {
    /// Parse a token file: one `name token` pair per line, separated by white space;
    /// blank lines and lines starting with `#` are skipped. Names are unique, at most
    /// [`MAX_NAME_LEN`] bytes of letters, digits, `-`, `_`, `.`, `@`; tokens are at least
    /// [`MIN_TOKEN_LEN`] bytes and unique.
    ///
    /// # Errors
    ///
    /// The first line that breaks a rule, or [`TokensError::Empty`].
    pub fn parse(text: &str) -> Result<Self, TokensError> {
        let mut entries: Vec<(Arc<str>, Digest)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| TokensError::Line {
                line: line_no,
                what: what.to_owned(),
            };
            let mut parts = line.split_whitespace();
            let (Some(name), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("expected `name token`"));
            };
            if name.len() > MAX_NAME_LEN
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
            {
                return Err(bad(&format!(
                    "name {name:?}: up to {MAX_NAME_LEN} letters, digits, '-', '_', '.', '@'"
                )));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(&format!(
                    "the token of {name:?} is shorter than {MIN_TOKEN_LEN} bytes"
                )));
            }
            let d = digest(token.as_bytes());
            if entries.iter().any(|(n, _)| &**n == name) {
                return Err(bad(&format!("name {name:?} appears twice")));
            }
            if entries.iter().any(|(_, e)| bool::from(e.ct_eq(&d))) {
                return Err(bad(&format!("the token of {name:?} is used twice")));
            }
            entries.push((name.into(), d));
        }
        if entries.is_empty() {
            return Err(TokensError::Empty);
        }
        Ok(Self { entries })
    }

    /// Read and [`parse`](Self::parse) a token file.
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse), or the file cannot be read.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The name whose token this is. Every entry is compared, each in constant time.
    #[must_use]
    pub fn check(&self, token: &[u8]) -> Option<Arc<str>> {
        let d = digest(token);
        let mut found = None;
        for (name, e) in &self.entries {
            if bool::from(e.ct_eq(&d)) {
                found = Some(Arc::clone(name));
            }
        }
        found
    }

    /// How many tokens the table holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty (never, for one built by [`parse`](Self::parse)).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Why a first frame is not an authentication request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFrameError {
    /// Not a JSON object.
    #[error("first frame is not a JSON object")]
    NotJson,
    /// A JSON object without a string `auth` member.
    #[error("first frame has no \"auth\" string")]
    NoAuth,
}

/// The token in a first frame `{"auth":"<token>"}` (other members are ignored).
///
/// # Errors
///
/// [`AuthFrameError`] when the frame is not such an object.
pub fn parse_auth_frame(frame: &[u8]) -> Result<String, AuthFrameError> {
    let value: serde_json::Value =
        serde_json::from_slice(frame).map_err(|_| AuthFrameError::NotJson)?;
    let object = value.as_object().ok_or(AuthFrameError::NotJson)?;
    match object.get("auth") {
        Some(serde_json::Value::String(token)) => Ok(token.clone()),
        _ => Err(AuthFrameError::NoAuth),
    }
}

/// The frame the server sends after a good token.
#[must_use]
pub fn ok_frame(name: &str) -> Vec<u8> {
    serde_json::json!({"auth": "ok", "name": name})
        .to_string()
        .into_bytes()
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

    /// A good token from `ip`: forget its failures.
    pub fn succeeded(&mut self, ip: IpAddr) {
        self.records.remove(&ip);
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

    const FILE: &str =
        "# apps\nrouter  s3cret-router-token-1\n\nbilling\tbilling-token-0123456789\n";

    #[test]
    fn a_token_file_names_each_token() {
        let tokens = Tokens::parse(FILE).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(
            tokens.check(b"s3cret-router-token-1").as_deref(),
            Some("router")
        );
        assert_eq!(
            tokens.check(b"billing-token-0123456789").as_deref(),
            Some("billing")
        );
        assert_eq!(tokens.check(b"s3cret-router-token-"), None);
        assert_eq!(tokens.check(b""), None);
        assert_eq!(tokens.check(b"router"), None, "a name is not a token");
    }

    #[test]
    fn debug_never_shows_a_token() {
        let shown = format!("{:?}", Tokens::parse(FILE).unwrap());
        assert_eq!(shown, r#"["router", "billing"]"#);
    }

    #[test]
    fn bad_token_files_name_the_line_and_never_the_token() {
        let cases = [
            ("a short\n", 1, "shorter than 16"),
            ("x\n", 1, "expected `name token`"),
            ("a aaaaaaaaaaaaaaaaaaaa b\n", 1, "expected"),
            (
                "a aaaaaaaaaaaaaaaaaaaa\na bbbbbbbbbbbbbbbbbbbbb\n",
                2,
                "appears twice",
            ),
            (
                "a aaaaaaaaaaaaaaaaaaaa\nb aaaaaaaaaaaaaaaaaaaa\n",
                2,
                "used twice",
            ),
            ("#\nna/me aaaaaaaaaaaaaaaaaaaa\n", 2, "name \"na/me\""),
        ];
        for (text, line, what) in cases {
            let err = Tokens::parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("line {line}: ")),
                "{text:?}: {err}"
            );
            assert!(err.contains(what), "{text:?}: {err}");
            assert!(
                !err.contains("aaaaaaaa") && !err.contains("short\""),
                "{err}"
            );
        }
        assert!(matches!(
            Tokens::parse("# nothing\n\n"),
            Err(TokensError::Empty)
        ));
    }

    #[test]
    fn the_first_frame_must_be_an_auth_object() {
        assert_eq!(parse_auth_frame(br#"{"auth":"tok"}"#).unwrap(), "tok");
        assert_eq!(parse_auth_frame(br#"{"x":1,"auth":"tok"}"#).unwrap(), "tok");
        assert_eq!(
            parse_auth_frame(br#"{"auth":5}"#),
            Err(AuthFrameError::NoAuth)
        );
        assert_eq!(
            parse_auth_frame(br#"{"event":"x"}"#),
            Err(AuthFrameError::NoAuth)
        );
        assert_eq!(parse_auth_frame(b"[1]"), Err(AuthFrameError::NotJson));
        assert_eq!(parse_auth_frame(b"\xff"), Err(AuthFrameError::NotJson));
        assert_eq!(
            ok_frame("router"),
            br#"{"auth":"ok","name":"router"}"#.to_vec()
        );
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
        throttle.succeeded(ip);
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
