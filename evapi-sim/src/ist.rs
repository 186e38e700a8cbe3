//! The SIP transaction layer of the simulator's UAS, sans-I/O: INVITE server
//! transactions (RFC 3261 section 17.2.1) and the stateless replies around them.
//!
//! An INVITE starts a transaction keyed by its top Via's branch and sent-by (section
//! 17.2.3). `100 Trying` goes out when the final response is not there within
//! [`DEFAULT_TRYING_AFTER`] (200 ms: section 17.2.1 requires it unless the TU answers
//! within 200 ms; configurable, zero sends it at once), or at once when the INVITE is
//! retransmitted before that. A retransmitted INVITE gets the last response again. The final response (from [`crate::router`]) moves it to Completed and is
//! retransmitted on Timer G (T1, doubling up to T2) until the ACK comes or Timer H
//! (64*T1) gives up; the ACK moves it to Confirmed, and Timer I (T4) forgets it. The ACK
//! of a 2xx is matched by Call-ID and CSeq, since it has a branch of its own.
//!
//! No socket and no clock: inputs take `now`, datagrams to send come out of
//! [`UasTransactions::poll_transmit`], and [`UasTransactions::poll_timeout`] says when to
//! call [`UasTransactions::handle_timeout`]. What to answer is not decided here.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evapi_proto::TransactionId;
use serde::Serialize;
use tracing::debug;

use crate::sip::{self, SipRequest};

/// RFC 3261 T1: round-trip estimate, first retransmit interval.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2: longest retransmit interval of a final response.
pub const T2: Duration = Duration::from_secs(4);
/// RFC 3261 T4: how long a message may stay in the network; Timer I for UDP.
pub const T4: Duration = Duration::from_secs(5);
/// Timer H: give up waiting for the ACK of a final response (64 * T1).
pub const TIMER_H: Duration = Duration::from_secs(32);
/// Timer G retransmissions of a final response that RFC 3261's timers give before
/// Timer H (at 0.5, 1.5, 3.5, 7.5, then every 4 s up to 31.5 s): the default bound.
pub const DEFAULT_FINAL_RETRANSMITS: u32 = 10;

/// When a 100 Trying goes out if the final response is not ready: RFC 3261 section
/// 17.2.1 requires a 100 unless the TU answers within 200 ms. An app that answers
/// sooner saves a datagram per call (and the simulator the bytes of a provisional
/// response while the transaction waits).
pub const DEFAULT_TRYING_AFTER: Duration = Duration::from_millis(200);

/// Headers a response copies from its request (section 8.2.6.2); the rest of an INVITE
/// (other headers, the body) is not kept while its transaction lives.
const KEPT_HEADERS: [&str; 5] = ["Via", "From", "To", "Call-ID", "CSeq"];

/// A transaction's key: top Via branch and sent-by.
pub type TxKey = Arc<str>;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The bytes.
    pub bytes: Arc<[u8]>,
    /// Where to.
    pub peer: SocketAddr,
}

/// What an INVITE was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invite {
    /// A new transaction with this key (100 Trying queued, or due on its timer).
    New(TxKey),
    /// A retransmission of a known one (its last response queued again).
    Retransmission,
}

/// Counters of the transaction layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IstCounters {
    /// Retransmitted INVITEs absorbed.
    pub retransmissions: u64,
    /// Final responses retransmitted (Timer G).
    pub final_retransmits: u64,
    /// Final responses never acknowledged (Timer H).
    pub unacked: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Proceeding,
    Completed,
    Confirmed,
}

/// The timers of an INVITE server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Send 100 Trying if no final response is there yet.
    Trying,
    /// Timer G: retransmit the final response.
    G,
    /// Timer H: stop waiting for the ACK.
    H,
    /// Timer I: absorb ACK retransmissions, then forget.
    I,
}

#[derive(Debug)]
struct InviteTx {
    tid: Option<TransactionId>,
    /// Until the final response: the headers it copies and its To tag (boxed, so a
    /// transaction held through its timers afterwards is small).
    pending: Option<Box<(SipRequest, String)>>,
    peer: SocketAddr,
    /// The last response sent, for a retransmitted INVITE: empty before the 100 Trying
    /// and once Confirmed.
    last: Arc<[u8]>,
    phase: Phase,
    interval: Duration,
    /// Timer G retransmissions so far.
    resent: u32,
    /// Call-ID and CSeq number (see [`dialog_key`]), shared with `by_dialog`.
    dialog: Arc<str>,
}

/// INVITE server transactions and stateless replies of one UAS.
#[derive(Debug)]
pub struct UasTransactions {
    /// Most Timer G retransmissions of one final response: each is a datagram sent
    /// to whatever address the INVITE came from, so a low bound limits what a forged
    /// source address can reflect.
    max_final_retransmits: u32,
    /// Seconds for a `Retry-After` header on every 503 (RFC 3261 section 21.5.4).
    retry_after: Option<u32>,
    /// See [`DEFAULT_TRYING_AFTER`].
    trying_after: Duration,
    txs: HashMap<TxKey, InviteTx>,
    by_dialog: HashMap<Arc<str>, TxKey>,
    /// Timer G (its interval varies), and any other timer set out of order.
    timers: BinaryHeap<Reverse<(Instant, Timer, TxKey)>>,
    /// The timers with a fixed delay (100 Trying, H, I), one queue each: set in the
    /// order they fire, so a queue is already sorted and costs O(1) per timer where the
    /// heap, holding a transaction's timers for 32 s at thousands of calls a second,
    /// costs a cache-missing O(log n).
    fixed: [VecDeque<(Instant, TxKey)>; 3],
    tags: u64,
    transmits: VecDeque<Transmit>,
    counters: IstCounters,
    trim: crate::trim::Trim,
    /// The empty datagram a confirmed transaction keeps instead of its response.
    nothing: Arc<[u8]>,
}

/// What matches the ACK of a 2xx to its INVITE: Call-ID and CSeq number.
fn dialog_key(req: &SipRequest) -> String {
    format!(
        "{}\u{0}{}",
        req.header("Call-ID").unwrap_or_default(),
        req.cseq_number()
    )
}

/// The transaction key of `req`.
#[must_use]
pub fn key(req: &SipRequest) -> TxKey {
    let branch = req.branch().unwrap_or_default();
    let sent_by = req.sent_by().unwrap_or_default();
    let mut k = String::with_capacity(branch.len() + sent_by.len() + 1);
    k.push_str(branch);
    k.push('|');
    k.push_str(sent_by);
    k.into()
}

impl Default for UasTransactions {
    fn default() -> Self {
        Self::new()
    }
}

impl UasTransactions {
    /// No transactions yet; final responses retransmitted as RFC 3261 says
    /// ([`DEFAULT_FINAL_RETRANSMITS`]).
    #[must_use]
    pub fn new() -> Self {
        Self::with_final_retransmits(DEFAULT_FINAL_RETRANSMITS)
    }

    /// No transactions yet; at most `max` Timer G retransmissions of each final
    /// response (0: none; the ACK is still awaited until Timer H, and a retransmitted
    /// INVITE still gets the final response again).
    #[must_use]
    pub fn with_final_retransmits(max: u32) -> Self {
        Self {
            max_final_retransmits: max,
            retry_after: None,
            trying_after: DEFAULT_TRYING_AFTER,
            txs: HashMap::new(),
            by_dialog: HashMap::new(),
            timers: BinaryHeap::new(),
            fixed: Default::default(),
            tags: 0,
            transmits: VecDeque::new(),
            counters: IstCounters::default(),
            trim: crate::trim::Trim::default(),
            nothing: Arc::from(Vec::new()),
        }
    }

    /// Put `Retry-After: secs` on every 503 from now on.
    pub fn set_retry_after(&mut self, secs: Option<u32>) {
        self.retry_after = secs;
    }

    /// Send 100 Trying for new INVITEs when no final response is there `after` their
    /// arrival ([`DEFAULT_TRYING_AFTER`]); zero: at once.
    pub fn set_trying_after(&mut self, after: Duration) {
        self.trying_after = after;
    }

    fn build(&self, req: &SipRequest, code: u16, reason: &str, to_tag: &str) -> Arc<[u8]> {
        let extra = match self.retry_after {
            Some(secs) if code == 503 => format!("Retry-After: {secs}\r\n"),
            _ => String::new(),
        };
        sip::response_with(req, code, reason, Some(to_tag), &extra).into()
    }

    /// Counters so far.
    #[must_use]
    pub fn counters(&self) -> IstCounters {
        self.counters
    }

    /// Transactions alive.
    #[must_use]
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether none is alive.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Whether a transaction with this key is alive here (a retransmission).
    #[must_use]
    pub fn knows(&self, key: &TxKey) -> bool {
        self.txs.contains_key(key)
    }

    /// An INVITE from `peer` at `now`: a new transaction, or a retransmission.
    pub fn invite(&mut self, now: Instant, req: &SipRequest, peer: SocketAddr) -> Invite {
        self.invite_keyed(now, key(req), req, peer)
    }

    /// [`UasTransactions::invite`] with its [`key`] already computed (a driver that
    /// looked it up first builds it once).
    pub fn invite_keyed(
        &mut self,
        now: Instant,
        key: TxKey,
        req: &SipRequest,
        peer: SocketAddr,
    ) -> Invite {
        if let Some(tx) = self.txs.get(&key) {
            self.counters.retransmissions += 1;
            match tx.phase {
                // The ACK came: the retransmission crossed it, absorbed (17.2.1).
                Phase::Confirmed => {}
                // Retransmitted before its 100 Trying was due: the client is waiting,
                // tell it now.
                Phase::Proceeding if tx.last.is_empty() => self.send_trying(&key),
                _ => {
                    let bytes = Arc::clone(&tx.last);
                    self.transmits.push_back(Transmit {
                        bytes,
                        peer: tx.peer,
                    });
                }
            }
            return Invite::Retransmission;
        }
        let mut kept = SipRequest {
            method: req.method.clone(),
            uri: String::new(),
            headers: Vec::with_capacity(KEPT_HEADERS.len() + 1),
            body: Vec::new(),
        };
        kept.headers.extend(
            req.headers
                .iter()
                .filter(|(n, _)| KEPT_HEADERS.iter().any(|k| n.eq_ignore_ascii_case(k)))
                .cloned(),
        );
        let dialog: Arc<str> = dialog_key(req).into();
        let to_tag = self.next_tag();
        self.by_dialog.insert(Arc::clone(&dialog), Arc::clone(&key));
        self.txs.insert(
            Arc::clone(&key),
            InviteTx {
                tid: None,
                pending: Some(Box::new((kept, to_tag))),
                peer,
                last: Arc::clone(&self.nothing),
                phase: Phase::Proceeding,
                interval: T1,
                resent: 0,
                dialog,
            },
        );
        if self.trying_after.is_zero() {
            self.send_trying(&key);
        } else {
            let at = now + self.trying_after;
            self.schedule(at, Timer::Trying, Arc::clone(&key));
        }
        Invite::New(key)
    }

    /// Send the 100 Trying of a Proceeding transaction and keep it as its last response.
    fn send_trying(&mut self, key: &TxKey) {
        let Some(tx) = self.txs.get_mut(key) else {
            return;
        };
        let Some(pending) = tx.pending.as_ref() else {
            return;
        };
        let trying: Arc<[u8]> = sip::response(&pending.0, 100, "Trying", None).into();
        tx.last = Arc::clone(&trying);
        self.transmits.push_back(Transmit {
            bytes: trying,
            peer: tx.peer,
        });
    }

    /// Remember which tm transaction the INVITE `key` belongs to (for CANCEL).
    pub fn set_tid(&mut self, key: &TxKey, tid: TransactionId) {
        if let Some(tx) = self.txs.get_mut(key) {
            tx.tid = Some(tid);
        }
    }

    /// An ACK: absorbed. The ACK of a final response confirms its transaction.
    pub fn ack(&mut self, now: Instant, req: &SipRequest) {
        let k = key(req);
        let k = if self.txs.contains_key(&k) {
            k
        } else {
            // The ACK of a 2xx is a new transaction: match it by Call-ID and CSeq.
            match self.by_dialog.get(dialog_key(req).as_str()) {
                Some(k) => Arc::clone(k),
                None => {
                    debug!("ACK for no known transaction, absorbed");
                    return;
                }
            }
        };
        if let Some(tx) = self.txs.get_mut(&k) {
            if tx.phase == Phase::Completed {
                tx.phase = Phase::Confirmed;
                // Confirmed only absorbs: the final response is not needed any more.
                tx.last = Arc::clone(&self.nothing);
                self.schedule(now + T4, Timer::I, k);
            }
        }
    }

    /// A CANCEL from `peer`: answered 200 when it matches an INVITE transaction, 481
    /// otherwise (section 9.2). Returns the tm transaction to end with 487 when the
    /// INVITE has no final response yet.
    #[must_use]
    pub fn cancel(&mut self, req: &SipRequest, peer: SocketAddr) -> Option<TransactionId> {
        let found = self
            .txs
            .get(&key(req))
            .map(|tx| (tx.phase == Phase::Proceeding).then_some(tx.tid).flatten());
        match found {
            None => {
                self.stateless(req, 481, peer);
                None
            }
            Some(tid) => {
                self.stateless(req, 200, peer);
                tid
            }
        }
    }

    /// Send the final response of `key`; ignored unless the transaction is still
    /// Proceeding (a transaction has one final response).
    pub fn respond(&mut self, now: Instant, key: &TxKey, code: u16, reason: &str) -> bool {
        match self.txs.get(key) {
            Some(tx) if tx.phase == Phase::Proceeding => {}
            _ => return false,
        }
        // Once built, the response is all a held transaction needs (with its key and
        // dialog, to match retransmissions and ACKs): the copied headers go.
        let Some((req, to_tag)) = self
            .txs
            .get_mut(key)
            .and_then(|tx| tx.pending.take())
            .map(|p| *p)
        else {
            return false;
        };
        let resp = self.build(&req, code, reason, &to_tag);
        let Some(tx) = self.txs.get_mut(key) else {
            return false;
        };
        tx.last = Arc::clone(&resp);
        tx.phase = Phase::Completed;
        self.transmits.push_back(Transmit {
            bytes: resp,
            peer: tx.peer,
        });
        self.schedule(now + T1, Timer::G, Arc::clone(key));
        self.schedule(now + TIMER_H, Timer::H, Arc::clone(key));
        true
    }

    /// A response outside any transaction (OPTIONS, BYE, MESSAGE, 400, 481, 501...).
    pub fn stateless(&mut self, req: &SipRequest, code: u16, peer: SocketAddr) {
        let tag = self.next_tag();
        let reason = crate::router::standard_reason(code);
        let bytes = self.build(req, code, &reason, &tag);
        self.transmits.push_back(Transmit { bytes, peer });
    }

    /// When [`UasTransactions::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let fixed = self
            .fixed
            .iter()
            .filter_map(|q| q.front().map(|(at, _)| *at));
        let heap = self.timers.peek().map(|Reverse((at, _, _))| *at);
        fixed.chain(heap).min()
    }

    /// Set `timer` for `key` at `at`: on its queue when it comes after everything
    /// there (always, with a clock that does not go back), else on the heap.
    fn schedule(&mut self, at: Instant, timer: Timer, key: TxKey) {
        let queue = match timer {
            Timer::Trying => Some(0),
            Timer::H => Some(1),
            Timer::I => Some(2),
            Timer::G => None,
        };
        if let Some(q) = queue.map(|i| &mut self.fixed[i]) {
            if q.back().is_none_or(|(last, _)| *last <= at) {
                q.push_back((at, key));
                return;
            }
        }
        self.timers.push(Reverse((at, timer, key)));
    }

    /// The earliest timer due at `now`, taken off its queue or the heap.
    fn next_due(&mut self, now: Instant) -> Option<(Timer, TxKey)> {
        const KINDS: [Timer; 3] = [Timer::Trying, Timer::H, Timer::I];
        let mut best: Option<(Instant, Option<usize>)> =
            self.timers.peek().map(|Reverse((at, _, _))| (*at, None));
        for (i, q) in self.fixed.iter().enumerate() {
            if let Some((at, _)) = q.front() {
                if best.is_none_or(|(b, _)| *at < b) {
                    best = Some((*at, Some(i)));
                }
            }
        }
        match best {
            Some((at, _)) if at > now => None,
            None => None,
            Some((_, None)) => self.timers.pop().map(|Reverse((_, t, k))| (t, k)),
            Some((_, Some(i))) => self.fixed[i].pop_front().map(|(_, k)| (KINDS[i], k)),
        }
    }

    /// Fire the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.trim.due(now) {
            crate::trim::map(&mut self.txs);
            crate::trim::map(&mut self.by_dialog);
            crate::trim::heap(&mut self.timers);
            for q in &mut self.fixed {
                crate::trim::queue(q);
            }
            crate::trim::queue(&mut self.transmits);
        }
        while let Some((timer, key)) = self.next_due(now) {
            let Some(tx) = self.txs.get_mut(&key) else {
                continue;
            };
            match (timer, tx.phase) {
                (Timer::Trying, Phase::Proceeding) if tx.last.is_empty() => {
                    self.send_trying(&key);
                }
                (Timer::G, Phase::Completed) if tx.resent < self.max_final_retransmits => {
                    tx.resent += 1;
                    tx.interval = (tx.interval * 2).min(T2);
                    self.counters.final_retransmits += 1;
                    self.transmits.push_back(Transmit {
                        bytes: Arc::clone(&tx.last),
                        peer: tx.peer,
                    });
                    let next = now + tx.interval;
                    self.schedule(next, Timer::G, key);
                }
                (Timer::H, Phase::Completed) => {
                    self.counters.unacked += 1;
                    self.forget(&key);
                }
                (Timer::I, Phase::Confirmed) => self.forget(&key),
                _ => {}
            }
        }
    }

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn next_tag(&mut self) -> String {
        self.tags += 1;
        format!("sim{:x}", self.tags)
    }

    fn forget(&mut self, key: &TxKey) {
        if let Some(tx) = self.txs.remove(key) {
            self.by_dialog.remove(&tx.dialog);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "127.0.0.1:5070";

    fn invite(branch: &str) -> SipRequest {
        let text = format!(
            "INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
             From: <sip:a@example.org>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: c-{branch}\r\n\
             CSeq: 1 INVITE\r\nContent-Length: 4\r\nX-Big: yes\r\n\r\nbody"
        );
        sip::parse(text.as_bytes()).expect("valid INVITE")
    }

    fn ack(branch: &str) -> SipRequest {
        let text = format!(
            "ACK sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
             From: <sip:a@example.org>;tag=1\r\nTo: <sip:b@example.com>;tag=x\r\nCall-ID: c-z9hG4bK1\r\n\
             CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        sip::parse(text.as_bytes()).expect("valid ACK")
    }

    fn drain(u: &mut UasTransactions) -> Vec<String> {
        std::iter::from_fn(|| u.poll_transmit())
            .map(|t| {
                let text = String::from_utf8_lossy(&t.bytes).into_owned();
                text.lines().next().unwrap_or_default().to_owned()
            })
            .collect()
    }

    fn peer() -> SocketAddr {
        PEER.parse().expect("address")
    }

    #[test]
    fn trying_waits_200_ms_for_the_final_response() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut u = UasTransactions::new();
        // Answered within 200 ms: the final response alone.
        let Invite::New(fast) = u.invite(t0, &invite("z9hG4bK1"), peer()) else {
            panic!("new")
        };
        assert!(drain(&mut u).is_empty(), "no 100 Trying yet");
        assert!(u.respond(ms(150), &fast, 486, "Busy Here"));
        assert_eq!(drain(&mut u), ["SIP/2.0 486 Busy Here"]);
        u.ack(ms(160), &ack("z9hG4bK1"));
        u.handle_timeout(ms(200));
        assert!(drain(&mut u).is_empty(), "no 100 after the final response");
        // Not answered: 100 Trying at 200 ms, and again for a retransmission.
        let slow = invite("z9hG4bK2");
        u.invite(t0, &slow, peer());
        u.handle_timeout(ms(199));
        assert!(drain(&mut u).is_empty());
        u.handle_timeout(ms(200));
        assert_eq!(drain(&mut u), ["SIP/2.0 100 Trying"]);
        assert_eq!(u.invite(ms(500), &slow, peer()), Invite::Retransmission);
        assert_eq!(drain(&mut u), ["SIP/2.0 100 Trying"]);
        // Retransmitted before 200 ms: the 100 goes at once, and only once.
        let eager = invite("z9hG4bK3");
        u.invite(ms(1000), &eager, peer());
        assert_eq!(u.invite(ms(1050), &eager, peer()), Invite::Retransmission);
        assert_eq!(drain(&mut u), ["SIP/2.0 100 Trying"]);
        u.handle_timeout(ms(1200));
        assert!(drain(&mut u).is_empty(), "already sent");
        assert_eq!(u.counters().retransmissions, 2);
    }

    #[test]
    fn trying_then_final_retransmitted_on_timer_g_until_ack() {
        let t0 = Instant::now();
        let mut u = UasTransactions::new();
        u.set_trying_after(Duration::ZERO);
        let req = invite("z9hG4bK1");
        let Invite::New(k) = u.invite(t0, &req, peer()) else {
            panic!("new transaction expected")
        };
        assert_eq!(drain(&mut u), ["SIP/2.0 100 Trying"]);
        assert_eq!(u.invite(t0, &req, peer()), Invite::Retransmission);
        assert_eq!(drain(&mut u), ["SIP/2.0 100 Trying"]);

        assert!(u.respond(t0, &k, 486, "Busy Here"));
        assert!(!u.respond(t0, &k, 200, "OK"), "one final response");
        assert_eq!(drain(&mut u), ["SIP/2.0 486 Busy Here"]);
        // Timer G: T1, 2*T1, 4*T1 ...
        for at in [500, 1500, 3500] {
            u.handle_timeout(t0 + Duration::from_millis(at - 1));
            assert!(drain(&mut u).is_empty(), "nothing before {at} ms");
            u.handle_timeout(t0 + Duration::from_millis(at));
            assert_eq!(drain(&mut u), ["SIP/2.0 486 Busy Here"], "at {at} ms");
        }
        assert_eq!(u.counters().final_retransmits, 3);
        // The INVITE retransmitted now gets the final again.
        assert_eq!(u.invite(t0, &req, peer()), Invite::Retransmission);
        assert_eq!(drain(&mut u), ["SIP/2.0 486 Busy Here"]);

        u.ack(t0 + Duration::from_secs(4), &ack("z9hG4bK1"));
        u.handle_timeout(t0 + Duration::from_millis(7500));
        assert!(drain(&mut u).is_empty(), "confirmed: no more retransmits");
        assert_eq!(u.len(), 1, "kept for Timer I");
        u.handle_timeout(t0 + Duration::from_secs(4) + T4);
        assert!(u.is_empty(), "forgotten after Timer I");
        assert_eq!(u.counters().unacked, 0);
    }

    /// Final responses sent by Timer G alone from `t0` to Timer H, at 10 ms steps.
    fn retransmits_until_h(u: &mut UasTransactions, t0: Instant) -> usize {
        let mut sent = 0;
        for step in 0..=3300u64 {
            u.handle_timeout(t0 + Duration::from_millis(step * 10));
            sent += drain(u).len();
        }
        sent
    }

    #[test]
    fn final_retransmissions_are_bounded() {
        let t0 = Instant::now();
        // RFC 3261's timers give 10 before Timer H: the default.
        let mut u = UasTransactions::new();
        let Invite::New(k) = u.invite(t0, &invite("z9hG4bK1"), peer()) else {
            panic!("new")
        };
        u.respond(t0, &k, 486, "Busy Here");
        drain(&mut u);
        assert_eq!(
            retransmits_until_h(&mut u, t0),
            DEFAULT_FINAL_RETRANSMITS as usize
        );
        assert!(u.is_empty(), "Timer H ended it");
        // Bounded at 2: two, then silence; the ACK is still taken until Timer H.
        let mut u = UasTransactions::with_final_retransmits(2);
        let req = invite("z9hG4bK2");
        let Invite::New(k) = u.invite(t0, &req, peer()) else {
            panic!("new")
        };
        u.respond(t0, &k, 486, "Busy Here");
        drain(&mut u);
        u.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(drain(&mut u).len(), 1);
        u.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(u.counters().final_retransmits, 1);
        assert_eq!(retransmits_until_h(&mut u, t0), 1, "one more, then none");
        assert_eq!(u.counters().final_retransmits, 2);
    }

    #[test]
    fn timer_h_counts_from_the_final_response_not_the_invite() {
        let t0 = Instant::now();
        let mut u = UasTransactions::new();
        let Invite::New(k) = u.invite(t0, &invite("z9hG4bK1"), peer()) else {
            panic!("new")
        };
        // The app answers after 100 s, long after 64*T1 from the INVITE.
        let t1 = t0 + Duration::from_secs(100);
        u.respond(t1, &k, 486, "Busy Here");
        drain(&mut u);
        u.handle_timeout(t1 + T1);
        assert_eq!(
            drain(&mut u),
            ["SIP/2.0 486 Busy Here"],
            "still retransmitted"
        );
        u.handle_timeout(t1 + TIMER_H - Duration::from_millis(1));
        assert_eq!(u.len(), 1);
        drain(&mut u);
        u.handle_timeout(t1 + TIMER_H);
        assert!(u.is_empty());
        assert_eq!(u.counters().unacked, 1);
    }

    #[test]
    fn timers_set_out_of_order_still_fire_on_time() {
        // Drivers pass a monotonic clock, but a core must not depend on it: a timer set
        // earlier than the last one of its kind still fires at its time.
        let t0 = Instant::now();
        let mut u = UasTransactions::new();
        let Invite::New(late) = u.invite(t0, &invite("z9hG4bK1"), peer()) else {
            panic!("new")
        };
        let Invite::New(early) = u.invite(t0, &invite("z9hG4bK2"), peer()) else {
            panic!("new")
        };
        u.respond(t0 + Duration::from_secs(10), &late, 486, "Busy Here");
        u.respond(t0, &early, 486, "Busy Here");
        u.handle_timeout(t0 + TIMER_H);
        assert_eq!(u.len(), 1, "the earlier Timer H fired");
        assert!(u.knows(&late));
        u.handle_timeout(t0 + Duration::from_secs(10) + TIMER_H);
        assert!(u.is_empty());
        assert_eq!(u.counters().unacked, 2);
    }

    #[test]
    fn the_ack_of_a_2xx_is_matched_by_dialog() {
        let t0 = Instant::now();
        let mut u = UasTransactions::new();
        let Invite::New(k) = u.invite(t0, &invite("z9hG4bK1"), peer()) else {
            panic!("new")
        };
        u.respond(t0, &k, 200, "OK");
        u.ack(t0, &ack("z9hG4bK-other"));
        drain(&mut u);
        u.handle_timeout(t0 + T1);
        assert!(drain(&mut u).is_empty(), "no retransmit after the 2xx ACK");
    }

    #[test]
    fn cancel_matches_only_a_proceeding_invite() {
        let t0 = Instant::now();
        let mut u = UasTransactions::new();
        let req = invite("z9hG4bK1");
        let Invite::New(k) = u.invite(t0, &req, peer()) else {
            panic!("new")
        };
        let tid = TransactionId { index: 1, label: 2 };
        u.set_tid(&k, tid);
        drain(&mut u);
        let mut cancel = req.clone();
        cancel.method = "CANCEL".into();
        assert_eq!(u.cancel(&cancel, peer()), Some(tid));
        assert_eq!(drain(&mut u), ["SIP/2.0 200 OK"]);
        u.respond(t0, &k, 487, "Request Terminated");
        drain(&mut u);
        assert_eq!(u.cancel(&cancel, peer()), None, "already final");
        assert_eq!(drain(&mut u), ["SIP/2.0 200 OK"]);
        let other = invite("z9hG4bK2");
        assert_eq!(u.cancel(&other, peer()), None);
        assert_eq!(
            drain(&mut u),
            ["SIP/2.0 481 Call/Transaction Does Not Exist"]
        );
    }

    #[test]
    fn only_the_headers_a_response_copies_are_kept() {
        let t0 = Instant::now();
        let mut u = UasTransactions::new();
        let Invite::New(k) = u.invite(t0, &invite("z9hG4bK1"), peer()) else {
            panic!("new")
        };
        let (req, _) = u.txs[&k]
            .pending
            .as_deref()
            .expect("kept until the final response");
        assert!(req.body.is_empty());
        assert_eq!(req.headers.len(), 5);
        assert!(u.respond(Instant::now(), &k, 486, "Busy Here"));
        assert!(
            u.txs[&k].pending.is_none(),
            "dropped once the response is built"
        );
    }
}
