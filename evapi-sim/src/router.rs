//! The async-relay core: what a Kamailio routing script with `evapi_async_relay` and a
//! `t_continue` in `evapi:message-received` does, as one sans-I/O state machine.
//!
//! It owns the [`Table`], the event template, the route (relay, or suspend then relay,
//! multicast or unicast by tag), tag registration, answer reading (one grammar:
//! [`evapi_proto::AnswerReader`]) and the final reply decision. It has no socket and no
//! clock: every input carries `now`, and the driver sends what it is told to:
//!
//! - [`Router::request`]: a new request; returns the event and where it goes.
//! - [`Router::message`]: a message from an app; a tag registration or an answer.
//! - [`Router::handle_timeout`], when [`Router::poll_timeout`] says so.
//! - [`Router::cancel`]: the request was cancelled (CANCEL, 487).
//!
//! Final replies come out of [`Router::poll_reply`], exactly one per transaction. Both
//! drivers, scenario runs ([`crate::engine`]) and SIP over UDP ([`crate::uas`]), use it;
//! neither has routing of its own.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use evapi_proto::{check_reason, AnswerError, AnswerReader, TransactionId, Verdict};
use evapi_server::{ClientEnv, UnicastPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::request::Request;
use crate::template::{EvapiEnv, Template, Vars};
use crate::tm::{Expired, Refusal, Table, TmConfig};

/// Kamailio routing actions for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `evapi_relay`, then reply at once (fire and forget).
    Relay,
    /// `evapi_async_relay`: suspend, relay to all clients.
    #[default]
    AsyncRelay,
    /// `evapi_async_multicast`: suspend, relay to clients with the tag.
    AsyncMulticast,
    /// `evapi_async_unicast`: suspend, relay to the first client with the tag.
    AsyncUnicast,
}

impl Action {
    /// The name used in scenario files.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Action::Relay => "relay",
            Action::AsyncRelay => "async_relay",
            Action::AsyncMulticast => "async_multicast",
            Action::AsyncUnicast => "async_unicast",
        }
    }
}

/// An outcome that an answer's `action` maps to.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// Final code.
    pub code: u16,
    /// Reason phrase.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Invalid answers logged at warn level before the rest go to debug: enough to see the
/// mistake, not a log line per call when an app answers everything wrongly.
pub const INVALID_ANSWERS_LOGGED: u64 = 5;

/// How the core routes and reads.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// What the script does with a request.
    pub action: Action,
    /// Tag for `async_multicast` / `async_unicast`.
    pub tag: Option<String>,
    /// Final code of a fire-and-forget `relay`.
    pub relay_code: u16,
    /// The event sent for each request.
    pub event: Template,
    /// Reason phrase of a reply when the answer has none, rendered on the way back with
    /// the answer as `$evapi(...)`; `None`: the code's usual phrase.
    pub reason: Option<Template>,
    /// Where answers carry ids, and the answer rules.
    pub reader: AnswerReader,
    /// `{"action": NAME}` answers and the reply each leads to.
    pub actions: BTreeMap<String, Outcome>,
    /// Transaction table settings (timers, timeout code).
    pub tm: TmConfig,
    /// Transactions waiting for their final reply at once; `None`: no cap. A driver
    /// asks [`Router::is_full`] before a new request and answers 503 when it is.
    pub max_transactions: Option<usize>,
    /// Which app of the tag an `async_unicast` event goes to; with
    /// [`UnicastPolicy::Hash`] the key is the Call-ID, so every transaction of a call
    /// reaches the same app.
    pub unicast_policy: UnicastPolicy,
    /// When a suspended request's event reaches no app: end it at once with this
    /// final code (e.g. 503), counted as "no app", instead of holding it until
    /// `fr_inv_timer` (Kamailio's behaviour, and the default: `None`).
    pub no_app_reply: Option<u16>,
}

/// Where an event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout<'a> {
    /// Every connected app (`evapi_relay`, `evapi_async_relay`).
    All,
    /// Every app with this tag (`evapi_async_multicast`).
    Multicast(&'a str),
    /// The app chosen for this tag (`evapi_async_unicast`) by `policy`, with `key`
    /// (the Call-ID) for [`UnicastPolicy::Hash`].
    Unicast {
        /// The tag.
        tag: &'a str,
        /// How to choose among the apps with the tag.
        policy: UnicastPolicy,
        /// The request's Call-ID.
        key: &'a str,
    },
}

/// The event to send for a new request.
#[derive(Debug, Clone, Copy)]
#[must_use = "the event must go out to the apps, or the suspended transaction waits for an answer to nothing"]
pub struct Relay<'a> {
    /// The transaction created for it.
    pub id: TransactionId,
    /// Recipients.
    pub to: Fanout<'a>,
    /// The rendered event.
    pub event: &'a [u8],
}

/// Why a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Fire-and-forget relay: replied at once.
    Relayed,
    /// An app's answer; `latency` from the request to the answer.
    Answered {
        /// Request to answer.
        latency: Duration,
    },
    /// The final response timer fired.
    TimedOut,
    /// The request was cancelled.
    Cancelled,
    /// Its event reached no app and [`RouterConfig::no_app_reply`] ended it at once.
    NoApp,
}

/// A final reply to send. Exactly one per transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<T> {
    /// Which transaction.
    pub id: TransactionId,
    /// The final code (200-699).
    pub code: u16,
    /// The reason phrase, checked with [`evapi_proto::check_reason`].
    pub reason: Cow<'static, str>,
    /// Why.
    pub cause: Cause,
    /// The driver's data for the transaction.
    pub data: T,
}

/// What a message from an app was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Message {
    /// `{"tag": T}` without ids: the driver sets the sender's tag (`evapi_set_tag`).
    Register(String),
    /// A valid answer; its reply is waiting in [`Router::poll_reply`].
    Resumed(TransactionId),
    /// A well-formed answer the table refused (late, twice, unknown...).
    Refused(Refusal),
    /// Not a valid answer.
    Invalid(AnswerError),
}

/// What happened, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouterCounters {
    /// Final replies by code.
    pub finals: BTreeMap<u16, u64>,
    /// Transactions ended by their timer.
    pub timeouts: u64,
    /// Refused continues by reason name (see [`Refusal::name`]).
    pub refused: BTreeMap<&'static str, u64>,
    /// App messages that were not valid answers.
    pub invalid_answers: u64,
    /// Events that reached no app.
    pub undelivered: u64,
    /// Tag registrations seen.
    pub registrations: u64,
    /// Requests refused because `max_transactions` were waiting.
    pub busy: u64,
    /// Requests answered at once because their event reached no app
    /// ([`RouterConfig::no_app_reply`]).
    pub no_app: u64,
}

impl RouterCounters {
    /// All refused continues.
    #[must_use]
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}

#[derive(Debug, Clone)]
struct Call<T> {
    data: T,
    /// Kept only when a reason template needs the request on the way back.
    request: Option<Box<Request>>,
}

/// The async-relay core. `T` is the driver's per-transaction data, handed back with the
/// transaction's reply.
#[derive(Debug)]
pub struct Router<T> {
    config: RouterConfig,
    table: Table<Call<T>>,
    event: String,
    replies: VecDeque<Reply<T>>,
    expired: Vec<Expired<Call<T>>>,
    /// The Call-ID of the last request, for hash unicast (a buffer reused).
    key: String,
    counters: RouterCounters,
    /// Transactions without their final reply yet.
    open: usize,
}

impl<T: Clone> Router<T> {
    /// A core with an empty table.
    #[must_use]
    pub fn new(config: RouterConfig) -> Self {
        Self {
            table: Table::new(config.tm.clone()),
            config,
            event: String::new(),
            replies: VecDeque::new(),
            expired: Vec::new(),
            key: String::new(),
            counters: RouterCounters::default(),
            open: 0,
        }
    }

    /// Transactions waiting for their final reply now.
    #[must_use]
    pub fn open(&self) -> usize {
        self.open
    }

    /// Whether `max_transactions` are waiting for their final reply: a new request
    /// should then be refused (503) without a transaction. Counts the refusal.
    pub fn is_full(&mut self) -> bool {
        let full = self
            .config
            .max_transactions
            .is_some_and(|max| self.open >= max);
        if full {
            self.counters.busy += 1;
        }
        full
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Counters so far.
    #[must_use]
    pub fn counters(&self) -> &RouterCounters {
        &self.counters
    }

    /// A new request: create its transaction, suspend it unless the route is a plain
    /// relay, and render its event. The driver sends the event and reports a miss with
    /// [`Router::undelivered`]; a plain relay's reply is queued at once.
    pub fn request(&mut self, now: Instant, request: &Request, data: T) -> Relay<'_> {
        let keep = self
            .config
            .reason
            .is_some()
            .then(|| Box::new(request.clone()));
        let call = Call {
            data,
            request: keep,
        };
        let id = self
            .table
            .create(&request.transaction_key(), request.is_invite(), call, now);
        self.open += 1;
        self.event.clear();
        self.config.event.render(
            &Vars {
                request,
                tid: Some(id),
                evapi: None,
            },
            &mut self.event,
        );
        if self.config.action == Action::Relay {
            let code = self.config.relay_code;
            if let Ok(call) = self.table.reply(id, code, now) {
                let data = call.data.clone();
                self.push_reply(id, code, standard_reason(code), Cause::Relayed, data);
            }
        } else {
            // `evapi_async_*` suspends first; an event nobody receives leaves the
            // transaction waiting for its timer, as in Kamailio.
            let _ = self.table.suspend(id, now);
        }
        let tag = self.config.tag.as_deref().unwrap_or_default();
        let to = match self.config.action {
            Action::Relay | Action::AsyncRelay => Fanout::All,
            Action::AsyncMulticast => Fanout::Multicast(tag),
            Action::AsyncUnicast => {
                self.key.clear();
                self.key.push_str(&request.call_id);
                Fanout::Unicast {
                    tag,
                    policy: self.config.unicast_policy,
                    key: &self.key,
                }
            }
        };
        Relay {
            id,
            to,
            event: self.event.as_bytes(),
        }
    }

    /// The event for a request that starts no transaction (a MESSAGE relayed fire and
    /// forget): `$T(...)` has no value (`<null>` in a string, `null` as a JSON value).
    pub fn render(&mut self, request: &Request) -> &[u8] {
        self.event.clear();
        self.config.event.render(
            &Vars {
                request,
                tid: None,
                evapi: None,
            },
            &mut self.event,
        );
        self.event.as_bytes()
    }

    /// The event of `id` (or of a request without a transaction) reached no app:
    /// counted; a suspended transaction waits for its timer, as in Kamailio.
    /// With [`RouterConfig::no_app_reply`], a suspended transaction ends at once with
    /// that code (its reply is then in [`Router::poll_reply`]).
    pub fn undelivered(&mut self, now: Instant, id: Option<TransactionId>) {
        self.counters.undelivered += 1;
        let Some(id) = id else { return };
        debug!(tindex = id.index, tlabel = id.label, "event reached no app");
        let Some(code) = self.config.no_app_reply else {
            return;
        };
        if let Ok(call) = self.table.reply(id, code, now) {
            let data = call.data.clone();
            self.counters.no_app += 1;
            self.push_reply(id, code, standard_reason(code), Cause::NoApp, data);
        }
    }

    /// A message from `app`: a tag registration, or an answer that resumes a
    /// transaction (its reply is then in [`Router::poll_reply`]).
    pub fn message(&mut self, now: Instant, app: &ClientEnv, msg: &[u8]) -> Message {
        let Ok(value) = serde_json::from_slice::<Value>(msg) else {
            return self.invalid(app, msg, AnswerError::NotJson);
        };
        if let Some(tag) = self.registration(&value) {
            self.counters.registrations += 1;
            return Message::Register(tag);
        }
        let answer = match self.config.reader.read_value(&value) {
            Ok(a) => a,
            Err(e) => return self.invalid(app, msg, e),
        };
        let (code, outcome_reason) = match &answer.verdict {
            Verdict::Code(code) => (*code, None),
            Verdict::Action(name) => match self.config.actions.get(name) {
                Some(o) => (o.code, o.reason.clone()),
                None => {
                    let unknown = AnswerError::UnknownAction(name.clone());
                    return self.invalid(app, msg, unknown);
                }
            },
        };
        match self.table.resume(answer.id, code, now) {
            Ok((call, created)) => {
                let call = call.clone();
                let reason = match answer.reason.or(outcome_reason) {
                    Some(r) => Cow::Owned(r),
                    None => self.reason_on_the_way_back(answer.id, code, &call, app, msg),
                };
                let latency = now.saturating_duration_since(created);
                self.push_reply(
                    answer.id,
                    code,
                    reason,
                    Cause::Answered { latency },
                    call.data,
                );
                Message::Resumed(answer.id)
            }
            Err(refusal) => {
                *self.counters.refused.entry(refusal.name()).or_default() += 1;
                info!(conidx = app.conidx, %refusal, "continue refused");
                Message::Refused(refusal)
            }
        }
    }

    /// Cancel `id` (a CANCEL for a request still waiting): its reply is 487 unless it
    /// has one already. Returns whether a reply was queued.
    pub fn cancel(&mut self, now: Instant, id: TransactionId) -> bool {
        match self.table.reply(id, 487, now) {
            Ok(call) => {
                let data = call.data.clone();
                self.push_reply(id, 487, standard_reason(487), Cause::Cancelled, data);
                true
            }
            Err(_) => false,
        }
    }

    /// When [`Router::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.table.poll_timeout()
    }

    /// Fire the timers due at `now`: transactions still waiting end with the timeout
    /// code.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.table.handle_timeout(now, &mut self.expired);
        let mut expired = std::mem::take(&mut self.expired);
        for e in expired.drain(..) {
            debug!(
                tindex = e.id.index,
                tlabel = e.id.label,
                "final response timer fired"
            );
            self.counters.timeouts += 1;
            self.push_reply(
                e.id,
                e.code,
                standard_reason(e.code),
                Cause::TimedOut,
                e.data.data,
            );
        }
        self.expired = expired;
    }

    /// The next final reply to send.
    #[must_use]
    pub fn poll_reply(&mut self) -> Option<Reply<T>> {
        self.replies.pop_front()
    }

    fn push_reply(
        &mut self,
        id: TransactionId,
        code: u16,
        reason: Cow<'static, str>,
        cause: Cause,
        data: T,
    ) {
        *self.counters.finals.entry(code).or_default() += 1;
        self.open = self.open.saturating_sub(1);
        self.replies.push_back(Reply {
            id,
            code,
            reason,
            cause,
            data,
        });
    }

    /// `{"tag": T}` with no transaction ids under any shape.
    fn registration(&self, value: &Value) -> Option<String> {
        let tag = value.get("tag")?.as_str()?;
        match self.config.reader.ids(value) {
            Ok(None) => Some(tag.to_owned()),
            _ => None,
        }
    }

    fn invalid(&mut self, app: &ClientEnv, msg: &[u8], why: AnswerError) -> Message {
        self.counters.invalid_answers += 1;
        let text = String::from_utf8_lossy(&msg[..msg.len().min(200)]);
        if self.counters.invalid_answers <= INVALID_ANSWERS_LOGGED {
            warn!(conidx = app.conidx, reason = %why, msg = ?text, "not a valid answer");
        } else {
            debug!(conidx = app.conidx, reason = %why, msg = ?text, "not a valid answer");
        }
        Message::Invalid(why)
    }

    /// The reason template, with the answer as `$evapi(...)` (as a `t_reply` in
    /// message-received would build it); the code's usual phrase without a template or
    /// when the rendered phrase is not a valid one.
    fn reason_on_the_way_back(
        &self,
        id: TransactionId,
        code: u16,
        call: &Call<T>,
        app: &ClientEnv,
        msg: &[u8],
    ) -> Cow<'static, str> {
        let (Some(template), Some(request)) = (&self.config.reason, &call.request) else {
            return standard_reason(code);
        };
        let srcaddr = app.srcaddr.to_string();
        let msg = String::from_utf8_lossy(msg);
        let reason = template.render_string(&Vars {
            request,
            tid: Some(id),
            evapi: Some(EvapiEnv {
                srcaddr: &srcaddr,
                srcport: app.srcport,
                conidx: app.conidx,
                msg: &msg,
            }),
        });
        match check_reason(&reason) {
            Ok(()) => Cow::Owned(reason),
            Err(e) => {
                warn!(error = %e, "reason template gave an invalid phrase; using the standard one");
                standard_reason(code)
            }
        }
    }
}

/// The usual reason phrase of `code` (RFC 3261 section 21).
#[must_use]
pub fn standard_reason(code: u16) -> Cow<'static, str> {
    Cow::Borrowed(evapi_proto::answer::reason_phrase(code))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::scenario::{Answers, DEFAULT_EVENT};

    const DOC_EVENT: &str = "{ \"event\": \"suspend\",\n \"data\": { \"index\": \"$T(id_index)\", \"label\": \"$T(id_label)\" }\n}";

    fn config(event: &str, action: Action) -> RouterConfig {
        RouterConfig {
            action,
            tag: Some("app".into()),
            relay_code: 200,
            event: Template::parse(event).expect("template"),
            reason: None,
            reader: AnswerReader::default(),
            actions: Answers::default().actions,
            tm: TmConfig {
                fr_inv_timer: Duration::from_secs(10),
                ..TmConfig::default()
            },
            max_transactions: None,
            unicast_policy: UnicastPolicy::First,
            no_app_reply: None,
        }
    }

    fn app() -> ClientEnv {
        ClientEnv::tcp(0, 1, (Ipv4Addr::LOCALHOST, 40000).into())
    }

    fn invite(n: u32) -> Request {
        Request {
            method: "INVITE".into(),
            ruri: format!("sip:{n}@example.com"),
            from_uri: "sip:a@example.org".into(),
            to_uri: format!("sip:{n}@example.com"),
            call_id: format!("call-{n}"),
            cseq: 1,
            source: "127.0.0.1:5060".parse().expect("address"),
        }
    }

    /// Mirror the event back with a code, as `evapi-client respond` does.
    fn mirror(event: &[u8], code: u16, reason: Option<&str>) -> Vec<u8> {
        let mut v: Value = serde_json::from_slice(event).expect("event is JSON");
        v["code"] = code.into();
        if let Some(r) = reason {
            v["reason"] = r.into();
        }
        serde_json::to_vec(&v).expect("serializable")
    }

    #[test]
    fn the_module_documentation_example_resumes() {
        let t0 = Instant::now();
        let mut r: Router<u32> = Router::new(config(DOC_EVENT, Action::AsyncRelay));
        let relay = r.request(t0, &invite(1), 7);
        assert_eq!(relay.to, Fanout::All);
        let answer = mirror(relay.event, 486, None);
        let id = relay.id;
        let t1 = t0 + Duration::from_millis(3);
        assert_eq!(r.message(t1, &app(), &answer), Message::Resumed(id));
        let reply = r.poll_reply().expect("one reply");
        assert_eq!(
            (reply.code, reply.reason.as_ref(), reply.data, reply.cause),
            (
                486,
                "Busy Here",
                7,
                Cause::Answered {
                    latency: Duration::from_millis(3)
                }
            )
        );
        assert_eq!(r.poll_reply(), None);
        // The same answer again is refused with the reason, and changes nothing.
        assert_eq!(
            r.message(t1, &app(), &answer),
            Message::Refused(Refusal::AlreadyResumed(id))
        );
        assert_eq!(r.poll_reply(), None);
        assert_eq!(r.counters().finals, BTreeMap::from([(486, 1)]));
    }

    #[test]
    fn injected_headers_and_bad_codes_never_reach_a_reply() {
        let t0 = Instant::now();
        let mut r: Router<()> = Router::new(config(DEFAULT_EVENT, Action::AsyncRelay));
        let id = r.request(t0, &invite(1), ()).id;
        let inject = format!(
            r#"{{"tindex":{},"tlabel":{},"code":486,"reason":"Busy\r\nX-Injected: evil"}}"#,
            id.index, id.label
        );
        assert!(matches!(
            r.message(t0, &app(), inject.as_bytes()),
            Message::Invalid(AnswerError::BadReason(_))
        ));
        for code in ["99", "-486", "1000000000000", "\"abc\"", "700"] {
            let msg = format!(
                r#"{{"tindex":{},"tlabel":{},"code":{code}}}"#,
                id.index, id.label
            );
            assert!(
                matches!(
                    r.message(t0, &app(), msg.as_bytes()),
                    Message::Invalid(AnswerError::BadCode(_))
                ),
                "{msg}"
            );
        }
        assert_eq!(r.poll_reply(), None, "the transaction keeps waiting");
        assert_eq!(r.counters().invalid_answers, 6);
        // ... until its timer, which ends it with the timeout code.
        r.handle_timeout(t0 + Duration::from_secs(10));
        let reply = r.poll_reply().expect("timeout reply");
        assert_eq!((reply.code, reply.cause), (408, Cause::TimedOut));
    }

    #[test]
    fn at_most_max_transactions_wait_at_once() {
        let t0 = Instant::now();
        let mut c = config(DEFAULT_EVENT, Action::AsyncRelay);
        c.max_transactions = Some(2);
        let mut r: Router<()> = Router::new(c);
        assert!(!r.is_full());
        let a = r.request(t0, &invite(1), ()).id;
        let _ = r.request(t0, &invite(2), ()).id;
        assert!(r.is_full(), "two waiting");
        let msg = format!(
            r#"{{"tindex":{},"tlabel":{},"code":486}}"#,
            a.index, a.label
        );
        assert_eq!(r.message(t0, &app(), msg.as_bytes()), Message::Resumed(a));
        assert!(!r.is_full(), "one ended, room again");
        assert_eq!(r.counters().busy, 1);
    }

    #[test]
    fn an_unknown_action_is_an_invalid_answer_that_names_it() {
        let t0 = Instant::now();
        let mut r: Router<()> = Router::new(config(DEFAULT_EVENT, Action::AsyncRelay));
        let id = r.request(t0, &invite(1), ()).id;
        let msg = format!(
            r#"{{"tindex":{},"tlabel":{},"action":"dance"}}"#,
            id.index, id.label
        );
        assert_eq!(
            r.message(t0, &app(), msg.as_bytes()),
            Message::Invalid(AnswerError::UnknownAction("dance".into()))
        );
        let msg = format!(
            r#"{{"tindex":{},"tlabel":{},"action":"reject"}}"#,
            id.index, id.label
        );
        assert_eq!(r.message(t0, &app(), msg.as_bytes()), Message::Resumed(id));
        assert_eq!(r.poll_reply().expect("403").code, 403);
    }

    #[test]
    fn tag_registration_and_routes_by_tag() {
        let t0 = Instant::now();
        let mut r: Router<()> = Router::new(config(DEFAULT_EVENT, Action::AsyncUnicast));
        assert_eq!(
            r.message(t0, &app(), br#"{"tag":"app"}"#),
            Message::Register("app".into())
        );
        assert_eq!(
            r.request(t0, &invite(1), ()).to,
            Fanout::Unicast {
                tag: "app",
                policy: UnicastPolicy::First,
                key: "call-1"
            }
        );
        let mut m: Router<()> = Router::new(config(DEFAULT_EVENT, Action::AsyncMulticast));
        assert_eq!(m.request(t0, &invite(1), ()).to, Fanout::Multicast("app"));
    }

    #[test]
    fn plain_relay_replies_at_once_and_answers_are_late() {
        let t0 = Instant::now();
        let mut r: Router<()> = Router::new(config(DEFAULT_EVENT, Action::Relay));
        let id = r.request(t0, &invite(1), ()).id;
        let reply = r.poll_reply().expect("immediate");
        assert_eq!((reply.code, reply.cause), (200, Cause::Relayed));
        let msg = format!(
            r#"{{"tindex":{},"tlabel":{},"code":486}}"#,
            id.index, id.label
        );
        assert!(matches!(
            r.message(t0, &app(), msg.as_bytes()),
            Message::Refused(_)
        ));
    }

    #[test]
    fn cancel_gives_487_once_and_a_later_answer_is_refused() {
        let t0 = Instant::now();
        let mut r: Router<()> = Router::new(config(DEFAULT_EVENT, Action::AsyncRelay));
        let id = r.request(t0, &invite(1), ()).id;
        assert!(r.cancel(t0, id));
        assert!(!r.cancel(t0, id));
        let reply = r.poll_reply().expect("487");
        assert_eq!(
            (reply.code, reply.reason.as_ref()),
            (487, "Request Terminated")
        );
        let msg = format!(
            r#"{{"tindex":{},"tlabel":{},"code":200}}"#,
            id.index, id.label
        );
        assert_eq!(
            r.message(t0, &app(), msg.as_bytes()),
            Message::Refused(Refusal::AlreadyReplied(id))
        );
    }

    #[test]
    fn reason_template_is_rendered_with_the_answer_and_checked() {
        let t0 = Instant::now();
        let mut c = config(DEFAULT_EVENT, Action::AsyncRelay);
        c.reason = Some(Template::parse("app $evapi(conidx) for $rU").expect("template"));
        let mut r: Router<()> = Router::new(c);
        let id = r.request(t0, &invite(42), ()).id;
        let msg = format!(
            r#"{{"tindex":{},"tlabel":{},"code":486}}"#,
            id.index, id.label
        );
        assert_eq!(r.message(t0, &app(), msg.as_bytes()), Message::Resumed(id));
        assert_eq!(r.poll_reply().expect("reply").reason, "app 0 for 42");

        // A template that pulls the answer's text in cannot smuggle a line break.
        let mut c = config(DEFAULT_EVENT, Action::AsyncRelay);
        c.reason = Some(Template::parse("$evapi(msg)").expect("template"));
        let mut r: Router<()> = Router::new(c);
        let id = r.request(t0, &invite(1), ()).id;
        let msg = format!(
            "{{\"tindex\":{},\"tlabel\":{},\"code\":486,\"x\":\"\\n\"}}\r\nX-Evil: 1",
            id.index, id.label
        );
        // Not JSON as a whole: invalid, nothing sent.
        assert!(matches!(
            r.message(t0, &app(), msg.as_bytes()),
            Message::Invalid(_)
        ));
        let msg = format!(
            "{{\"tindex\":{},\"tlabel\":{},\"code\":486}}\n",
            id.index, id.label
        );
        assert_eq!(r.message(t0, &app(), msg.as_bytes()), Message::Resumed(id));
        assert_eq!(r.poll_reply().expect("reply").reason, "Busy Here");
    }
}
