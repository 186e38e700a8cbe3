//! The SIP front as a sans-I/O core: what `evapi-sim sip` does with each datagram, app
//! message and timer, with no socket and no clock (time is an input). It joins the two
//! cores below it, [`crate::ist`] (SIP transactions) and [`crate::router`] (suspend,
//! relay, answers, final replies), and dispatches on the method:
//!
//! - INVITE: a server transaction is created and suspended, its event goes to the apps;
//!   the app's answer (or the final response timer) gives the final response. At
//!   [`RouterConfig::max_transactions`] a new INVITE gets 503 and no transaction (its
//!   retransmissions too, until there is room); known ones go on as usual.
//! - CANCEL: 200, and 487 for the INVITE if it has no final response yet.
//! - MESSAGE: its event goes to every app (fire and forget), then 200.
//! - OPTIONS and BYE: 200. Any other method: 501.
//! - Malformed requests are counted and dropped, or answered 400 where their headers
//!   can be read; responses are ignored (this is a UAS).
//!
//! The driver ([`crate::uas`]) owns the UDP socket and the embedded evapi socket: it
//! hands datagrams to [`Front::datagram`] with a `deliver` function that gives an event
//! to the apps (and says whether any got it), app messages to [`Front::message`], wakes
//! at [`Front::poll_timeout`], and sends what [`Front::poll_transmit`] gives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use evapi_server::ClientEnv;
use tracing::{debug, warn};

use crate::ist::{Invite, IstCounters, Transmit, TxKey, UasTransactions};
use crate::report::RunStats;
use crate::request::Request;
use crate::router::{Fanout, Message, Router, RouterConfig, RouterCounters};
use crate::sip;

/// Settings of the SIP transaction layer.
#[derive(Debug, Clone, Copy)]
pub struct SipSettings {
    /// Most Timer G retransmissions of one final response (see
    /// [`UasTransactions::with_final_retransmits`]).
    pub final_retransmits: u32,
    /// Seconds in a `Retry-After` header on every 503.
    pub retry_after: Option<u32>,
    /// When a 100 Trying goes out if the final response is not there (see
    /// [`UasTransactions::set_trying_after`]).
    pub trying_after: std::time::Duration,
    /// Longest request taken, in bytes: a longer one is answered 513 Message Too Large
    /// at once, statelessly, and counted; it makes no transaction and no event. What a
    /// transaction holds (its headers, kept until its final response, and the
    /// response, kept through its timers) is a small multiple of its request, so this
    /// and `--max-transactions` bound the table's bytes.
    pub max_request_bytes: usize,
}

/// Default [`SipSettings::max_request_bytes`]: 8 KiB, several times a real INVITE with
/// its SDP (0.5 to 2 KB), well under UDP's 64 KiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 8 * 1024;

/// What happened, printed at the end.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UasCounters {
    /// Requests received, by method.
    pub requests: BTreeMap<String, u64>,
    /// Datagrams that were not valid requests.
    pub malformed: u64,
    /// Requests longer than [`SipSettings::max_request_bytes`], answered 513.
    pub too_large: u64,
    /// The SIP transaction layer.
    #[serde(flatten)]
    pub sip: IstCounters,
    /// The async-relay core.
    #[serde(flatten)]
    pub routing: RouterCounters,
    /// Datagrams the kernel dropped because the SIP socket's receive buffer was full
    /// (`None`: /proc did not say).
    pub kernel_drops: Option<u64>,
    /// Suspend-to-final latency of answered INVITEs (HTML report).
    #[serde(skip)]
    pub latency: crate::report::Latency,
    /// Final replies per [`crate::report::TIMELINE_BIN_MS`] since the start (HTML).
    #[serde(skip)]
    pub timeline: crate::report::Timeline,
    /// Answers per app, by `conidx` (HTML).
    #[serde(skip)]
    pub per_app: BTreeMap<String, u64>,
}

/// The SIP front's state.
#[derive(Debug)]
pub struct Front {
    router: Router<TxKey>,
    ist: UasTransactions,
    requests: BTreeMap<String, u64>,
    malformed: u64,
    too_large: u64,
    max_request_bytes: usize,
    stats: RunStats,
    /// Round trips of the answers sent since [`Front::take_round_trips`], when kept.
    round_trips: Option<Vec<Duration>>,
}

impl Front {
    /// A front with no transaction yet, counting from `now`.
    #[must_use]
    pub fn new(router: RouterConfig, sip: SipSettings, now: Instant) -> Self {
        let mut ist = UasTransactions::with_final_retransmits(sip.final_retransmits);
        ist.set_retry_after(sip.retry_after);
        ist.set_trying_after(sip.trying_after);
        Self {
            router: Router::new(router),
            ist,
            requests: BTreeMap::new(),
            malformed: 0,
            too_large: 0,
            max_request_bytes: sip.max_request_bytes,
            stats: RunStats::new(now),
            round_trips: None,
        }
    }

    /// Keep each answer's round trip until the driver takes them
    /// ([`Front::take_round_trips`]), e.g. for a histogram it serves.
    pub fn keep_round_trips(&mut self) {
        self.round_trips.get_or_insert_with(Vec::new);
    }

    /// Hand `each` the round trips of the answers sent since the last call (none
    /// unless [`Front::keep_round_trips`]); the driver calls it after each
    /// [`Front::poll_transmit`] loop, so they never pile up.
    pub fn take_round_trips(&mut self, mut each: impl FnMut(Duration)) {
        if let Some(kept) = &mut self.round_trips {
            kept.drain(..).for_each(&mut each);
        }
    }

    /// The routing counters so far, and the transactions suspended now: what a driver
    /// publishes.
    #[must_use]
    pub fn routing(&self) -> (&crate::router::RouterCounters, usize) {
        (self.router.counters(), self.router.open())
    }

    /// A datagram from `peer` at `now`. `deliver` gives an event to the apps as the
    /// route says and returns whether any app got it.
    pub fn datagram(
        &mut self,
        now: Instant,
        data: &[u8],
        peer: SocketAddr,
        deliver: &mut dyn FnMut(Fanout<'_>, &[u8]) -> bool,
    ) {
        if data.len() > self.max_request_bytes {
            // Nothing of it is kept: one stateless 513, no transaction, no event.
            if let Some(req) = sip::parse_for_reply(data) {
                self.too_large += 1;
                debug!(%peer, bytes = data.len(), max = self.max_request_bytes, "request too large, answered 513");
                self.ist.stateless(&req, 513, peer);
            } else {
                self.malformed += 1;
            }
            return;
        }
        let req = match sip::parse(data) {
            Ok(req) => req,
            Err(e) => {
                self.malformed += 1;
                if e == sip::SipError::Response {
                    debug!(%peer, "response ignored: this is a UAS");
                    return;
                }
                warn!(%peer, error = %e, "malformed SIP request");
                if e.answerable() {
                    if let Some(req) = sip::parse_for_reply(data) {
                        self.ist.stateless(&req, 400, peer);
                    }
                }
                return;
            }
        };
        match self.requests.get_mut(req.method.as_str()) {
            Some(n) => *n += 1,
            None => {
                self.requests.insert(req.method.clone(), 1);
            }
        }
        match req.method.as_str() {
            "INVITE" => {
                let key = crate::ist::key(&req);
                if !self.ist.knows(&key) && self.router.is_full() {
                    self.ist.stateless(&req, 503, peer);
                    return;
                }
                if let Invite::New(key) = self.ist.invite_keyed(now, key, &req, peer) {
                    let request = Request::from_sip(&req, peer);
                    let relay = self.router.request(now, &request, key.clone());
                    let (id, sent) = (relay.id, deliver(relay.to, relay.event));
                    self.ist.set_tid(&key, id);
                    if !sent {
                        self.router.undelivered(now, Some(id));
                    }
                }
            }
            "ACK" => self.ist.ack(now, &req),
            "CANCEL" => {
                if let Some(tid) = self.ist.cancel(&req, peer) {
                    self.router.cancel(now, tid);
                }
            }
            "MESSAGE" => {
                let event = self.router.render(&Request::from_sip(&req, peer));
                if !deliver(Fanout::All, event) {
                    self.router.undelivered(now, None);
                }
                self.ist.stateless(&req, 200, peer);
            }
            "OPTIONS" | "BYE" => self.ist.stateless(&req, 200, peer),
            _ => self.ist.stateless(&req, 501, peer),
        }
    }

    /// A message from `app` at `now`; the tag to set on the app when it registered
    /// one (`{"tag": T}`).
    #[must_use]
    pub fn message(&mut self, now: Instant, app: &ClientEnv, msg: &[u8]) -> Option<String> {
        match self.router.message(now, app, msg) {
            Message::Register(tag) => Some(tag),
            Message::Resumed(_) => {
                self.stats.answered_by(app);
                None
            }
            Message::Refused(_) | Message::Invalid(_) => None,
        }
    }

    /// When the next timer fires.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        evapi_ops::time::earliest([self.router.poll_timeout(), self.ist.poll_timeout()])
    }

    /// Run the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.router.handle_timeout(now);
        self.ist.handle_timeout(now);
    }

    /// The next datagram to send. Final replies the router decided go to their SIP
    /// transactions first (at `now`).
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        while let Some(reply) = self.router.poll_reply() {
            if let (crate::router::Cause::Answered { latency }, Some(kept)) =
                (reply.cause, &mut self.round_trips)
            {
                kept.push(latency);
            }
            self.stats.reply(now, reply.code, &reply.cause);
            self.ist
                .respond(now, &reply.data, reply.code, &reply.reason);
        }
        self.ist.poll_transmit()
    }

    /// What happened, with the kernel's drop count.
    #[must_use]
    pub fn finish(mut self, kernel_drops: Option<u64>) -> UasCounters {
        let (timeline, per_app) = self.stats.take();
        UasCounters {
            requests: self.requests,
            malformed: self.malformed,
            too_large: self.too_large,
            sip: self.ist.counters(),
            routing: self.router.counters().clone(),
            kernel_drops,
            latency: self.stats.latency(),
            timeline,
            per_app,
        }
    }
}

/// The SIP front's health checks and its summary for people (its HTML page: `pages`).
impl UasCounters {
    /// The health checks of a load test, as `(what, count)`: each should be 0.
    #[must_use]
    pub fn checks(&self) -> [(&'static str, u64); 6] {
        [
            ("kernel drops", self.kernel_drops.unwrap_or(0)),
            ("timeouts", self.routing.timeouts),
            ("refused continues", self.routing.refused_total()),
            ("invalid answers", self.routing.invalid_answers),
            ("undelivered events", self.routing.undelivered),
            ("unacknowledged finals", self.sip.unacked),
        ]
    }

    /// A table for people.
    #[must_use]
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::from("evapi-sim sip: counters\n");
        for (m, n) in &self.requests {
            let _ = writeln!(s, "  {m:<24} {n:>8}");
        }
        for (c, n) in &self.routing.finals {
            let _ = writeln!(s, "  final {c:<18} {n:>8}");
        }
        let rows = [
            ("busy (503)", self.routing.busy),
            ("no app", self.routing.no_app),
            ("retransmissions", self.sip.retransmissions),
            ("final retransmits", self.sip.final_retransmits),
            ("unacknowledged finals", self.sip.unacked),
            ("timeouts", self.routing.timeouts),
            ("refused continues", self.routing.refused_total()),
            ("invalid answers", self.routing.invalid_answers),
            ("undelivered events", self.routing.undelivered),
            ("malformed", self.malformed),
            ("too large (513)", self.too_large),
            ("kernel drops", self.kernel_drops.unwrap_or(0)),
        ];
        for (what, n) in rows {
            let _ = writeln!(s, "  {what:<24} {n:>8}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const PEER: ([u8; 4], u16) = ([127, 0, 0, 1], 5060);

    fn peer() -> SocketAddr {
        PEER.into()
    }

    fn front(max: Option<usize>, t0: Instant) -> Front {
        let answers = crate::scenario::Answers::default();
        let router = RouterConfig {
            action: crate::scenario::Action::AsyncRelay,
            tag: None,
            relay_code: 200,
            event: crate::template::Template::parse(crate::scenario::DEFAULT_EVENT)
                .expect("the default event parses"),
            reason: None,
            reader: answers.reader(),
            actions: answers.actions,
            tm: crate::tm::TmConfig {
                fr_inv_timer: Duration::from_secs(10),
                ..crate::tm::TmConfig::default()
            },
            max_transactions: max,
            unicast_policy: evapi_server::UnicastPolicy::First,
            no_app_reply: None,
        };
        let sip = SipSettings {
            final_retransmits: 2,
            retry_after: Some(5),
            trying_after: Duration::from_millis(200),
            max_request_bytes: 4096,
        };
        Front::new(router, sip, t0)
    }

    fn request(method: &str, call: &str, cseq_method: &str) -> Vec<u8> {
        format!(
            "{method} sip:bob@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-{call}\r\n\
             From: <sip:alice@127.0.0.1>;tag=a-{call}\r\n\
             To: <sip:bob@127.0.0.1>\r\n\
             Call-ID: {call}\r\n\
             CSeq: 1 {cseq_method}\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// Status lines of what the front sends at `now`.
    fn sent(front: &mut Front, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| front.poll_transmit(now))
            .map(|t| {
                assert_eq!(t.peer, peer());
                let text = String::from_utf8_lossy(&t.bytes).into_owned();
                text.lines().next().unwrap_or_default().to_owned()
            })
            .collect()
    }

    /// `method` (call `call`, CSeq method `cseq`) from [`peer`] at `now`.
    fn request_to(
        f: &mut Front,
        apps: &mut Apps,
        now: Instant,
        method: &str,
        call: &str,
        cseq: &str,
    ) {
        f.datagram(
            now,
            &request(method, call, cseq),
            peer(),
            &mut apps.deliver(),
        );
    }

    /// Events the apps got.
    #[derive(Default)]
    struct Apps {
        events: Vec<serde_json::Value>,
        up: bool,
    }

    impl Apps {
        fn deliver(&mut self) -> impl FnMut(Fanout<'_>, &[u8]) -> bool + '_ {
            |_, event| {
                if self.up {
                    self.events
                        .push(serde_json::from_slice(event).expect("events are JSON"));
                }
                self.up
            }
        }
    }

    fn app() -> ClientEnv {
        ClientEnv::tcp(0, 1, (Ipv4Addr::LOCALHOST, 40000).into())
    }

    fn answer(event: &serde_json::Value, code: u16) -> Vec<u8> {
        serde_json::json!({"tindex": event["tindex"], "tlabel": event["tlabel"], "code": code})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn an_invite_is_suspended_and_the_apps_answer_is_its_final_response() {
        let t0 = Instant::now();
        let mut f = front(None, t0);
        let mut apps = Apps {
            up: true,
            ..Apps::default()
        };
        request_to(&mut f, &mut apps, t0, "INVITE", "c1", "INVITE");
        assert_eq!(apps.events.len(), 1);
        assert!(sent(&mut f, t0).is_empty(), "nothing before the answer");
        // No answer within trying_after: 100 Trying.
        let t1 = t0 + Duration::from_millis(250);
        f.handle_timeout(t1);
        assert_eq!(sent(&mut f, t1), ["SIP/2.0 100 Trying"]);
        assert_eq!(f.message(t1, &app(), &answer(&apps.events[0], 486)), None);
        assert_eq!(sent(&mut f, t1), ["SIP/2.0 486 Busy Here"]);
        // A second answer to the same ids is refused: exactly one final response.
        let _ = f.message(t1, &app(), &answer(&apps.events[0], 200));
        assert!(sent(&mut f, t1).is_empty());
        let c = f.finish(None);
        assert_eq!(c.requests["INVITE"], 1);
        assert_eq!(c.routing.finals[&486], 1);
        assert_eq!(c.routing.refused_total(), 1);
        assert_eq!(c.per_app["0 127.0.0.1:40000"], 1, "{:?}", c.per_app);
        assert_eq!(c.latency.count, 1);
    }

    #[test]
    fn cancel_gets_200_and_the_invite_487() {
        let t0 = Instant::now();
        let mut f = front(None, t0);
        let mut apps = Apps {
            up: true,
            ..Apps::default()
        };
        request_to(&mut f, &mut apps, t0, "INVITE", "c2", "INVITE");
        request_to(&mut f, &mut apps, t0, "CANCEL", "c2", "CANCEL");
        let lines = sent(&mut f, t0);
        assert!(lines.contains(&"SIP/2.0 200 OK".to_owned()), "{lines:?}");
        assert!(
            lines.contains(&"SIP/2.0 487 Request Terminated".to_owned()),
            "{lines:?}"
        );
        // The app's late answer finds the transaction ended.
        let _ = f.message(t0, &app(), &answer(&apps.events[0], 200));
        assert!(sent(&mut f, t0).is_empty());
    }

    /// Issue 34: 12,000 INVITEs of 63 KB (a 21 KB Call-ID, branch and From tag) grew
    /// the simulator to 2.26 GB; past --max-request-bytes a request keeps nothing.
    #[test]
    fn a_request_past_the_byte_bound_gets_513_and_keeps_nothing() {
        let t0 = Instant::now();
        let mut f = front(None, t0);
        let mut apps = Apps {
            up: true,
            ..Apps::default()
        };
        let big = "x".repeat(5000);
        let invite = request("INVITE", &big, "INVITE");
        assert!(invite.len() > 4096);
        f.datagram(t0, &invite, peer(), &mut apps.deliver());
        assert_eq!(sent(&mut f, t0), ["SIP/2.0 513 Message Too Large"]);
        assert!(apps.events.is_empty(), "no event");
        assert!(!f.ist.knows(&crate::ist::key(&sip::parse(&invite).unwrap())));
        // A small one is a call as any other.
        request_to(&mut f, &mut apps, t0, "INVITE", "a", "INVITE");
        assert_eq!(apps.events.len(), 1);
        let done = f.finish(None);
        assert_eq!((done.too_large, done.malformed), (1, 0));
    }

    #[test]
    fn at_the_cap_a_new_invite_gets_503_with_retry_after_and_no_event() {
        let t0 = Instant::now();
        let mut f = front(Some(1), t0);
        let mut apps = Apps {
            up: true,
            ..Apps::default()
        };
        request_to(&mut f, &mut apps, t0, "INVITE", "a", "INVITE");
        request_to(&mut f, &mut apps, t0, "INVITE", "b", "INVITE");
        let t = f.poll_transmit(t0).expect("a 503");
        let text = String::from_utf8_lossy(&t.bytes).into_owned();
        assert!(
            text.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nRetry-After: 5\r\n"), "{text}");
        assert_eq!(apps.events.len(), 1, "no event for the refused INVITE");
        // Its retransmission while still full: 503 again, no transaction.
        request_to(&mut f, &mut apps, t0, "INVITE", "b", "INVITE");
        assert_eq!(sent(&mut f, t0), ["SIP/2.0 503 Service Unavailable"]);
        assert_eq!(f.finish(None).routing.busy, 2);
    }

    #[test]
    fn an_event_no_app_got_and_the_timer_end_the_invite() {
        let t0 = Instant::now();
        let mut f = front(None, t0);
        let mut nobody = Apps::default();
        request_to(&mut f, &mut nobody, t0, "INVITE", "n", "INVITE");
        let mut t = t0;
        let mut lines = Vec::new();
        for _ in 0..200 {
            let Some(at) = f.poll_timeout() else { break };
            t = at;
            f.handle_timeout(t);
            lines.extend(sent(&mut f, t));
            if lines.iter().any(|l| !l.contains(" 100 ")) {
                break;
            }
        }
        let last = lines.last().expect("a final response");
        let code = crate::tm::DEFAULT_TIMEOUT_CODE;
        assert!(last.starts_with(&format!("SIP/2.0 {code} ")), "{lines:?}");
        // Kamailio's way: held until fr_inv_timer (10 s here), not ended at once.
        assert_eq!(t.duration_since(t0), Duration::from_secs(10), "{lines:?}");
        let c = f.finish(None);
        assert_eq!(c.routing.undelivered, 1);
        assert_eq!(c.routing.timeouts, 1);
    }

    #[test]
    fn other_methods_and_bad_datagrams() {
        let t0 = Instant::now();
        let mut f = front(None, t0);
        let mut apps = Apps {
            up: true,
            ..Apps::default()
        };
        request_to(&mut f, &mut apps, t0, "OPTIONS", "o", "OPTIONS");
        request_to(&mut f, &mut apps, t0, "BYE", "b", "BYE");
        request_to(&mut f, &mut apps, t0, "SUBSCRIBE", "s", "SUBSCRIBE");
        request_to(&mut f, &mut apps, t0, "MESSAGE", "m", "MESSAGE");
        assert_eq!(
            sent(&mut f, t0),
            [
                "SIP/2.0 200 OK",
                "SIP/2.0 200 OK",
                "SIP/2.0 501 Not Implemented",
                "SIP/2.0 200 OK"
            ]
        );
        assert_eq!(apps.events.len(), 1, "MESSAGE relayed");
        f.datagram(t0, b"SIP/2.0 200 OK\r\n\r\n", peer(), &mut apps.deliver());
        f.datagram(t0, b"\x00\xffgarbage", peer(), &mut apps.deliver());
        assert!(
            sent(&mut f, t0).is_empty(),
            "responses and garbage get nothing"
        );
        assert_eq!(f.finish(None).malformed, 2);
    }
}
