//! `evapi-sim sip`: the transaction model behind real SIP over UDP, so sipp can drive it.
//!
//! INVITE: 100 Trying, a tm transaction is created and suspended, the event relayed;
//! the app's answer (or the final response timer) gives the final response, with a To
//! tag, retransmitted on Timer G until the ACK comes (RFC 3261 17.2.1). Retransmitted
//! INVITEs get the last response again; the ACK of a final response is absorbed (matched
//! by branch, or by Call-ID and CSeq for the ACK of a 2xx). CANCEL: 200, and 487 for the
//! INVITE if it has no final response yet. OPTIONS and BYE: 200. MESSAGE: an evapi relay
//! of the event (fire and forget), then 200. Malformed requests are logged and dropped,
//! or answered 400 where their headers can be read.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use evapi_client::respond::reason_phrase;
use evapi_proto::TransactionId;
use evapi_server::{Config, Handle, Server};
use serde::Serialize;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::answer;
use crate::apps::{self, Inbound, SimRoutes};
use crate::request::Request;
use crate::scenario::Answers;
use crate::sip::{self, SipRequest};
use crate::template::{Template, Vars};
use crate::tm::{Expired, Table, TmConfig};

/// RFC 3261 T1: round-trip estimate, first retransmit interval.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2: longest retransmit interval of a final response.
pub const T2: Duration = Duration::from_secs(4);
/// RFC 3261 T4: how long a message may stay in the network; Timer I for UDP.
pub const T4: Duration = Duration::from_secs(5);
/// Timer H: give up waiting for the ACK of a final response (64 * T1).
pub const TIMER_H: Duration = Duration::from_secs(32);
/// Largest UDP datagram read.
const MAX_DATAGRAM: usize = 65_535;

/// Settings of the SIP front.
#[derive(Debug, Clone)]
pub struct UasOptions {
    /// Code sent when the final response timer fires.
    pub code_on_timeout: u16,
    /// Event template.
    pub event: Template,
    /// Relay to the first app with this tag instead of to all.
    pub unicast_tag: Option<String>,
    /// Reason phrase of the final response when the app's answer has none; may use
    /// `$evapi(...)` of the answer and the request's pseudo-variables.
    pub reason: Option<Template>,
    /// fr timers.
    pub tm: TmConfig,
    /// How answers are read.
    pub answers: Answers,
}

/// What happened, printed at the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UasCounters {
    /// Requests received, by method.
    pub requests: std::collections::BTreeMap<String, u64>,
    /// Retransmitted requests absorbed.
    pub retransmissions: u64,
    /// Final responses sent, by code.
    pub finals: std::collections::BTreeMap<u16, u64>,
    /// Final responses retransmitted (Timer G).
    pub final_retransmits: u64,
    /// Final responses never acknowledged (Timer H).
    pub unacked: u64,
    /// Datagrams that were not valid requests.
    pub malformed: u64,
    /// Transactions ended by their timer.
    pub timeouts: u64,
    /// Continues refused.
    pub refused: u64,
    /// App messages that were not valid answers.
    pub invalid_answers: u64,
    /// Events relayed to nobody.
    pub undelivered: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Proceeding,
    Completed,
    Confirmed,
}

struct InviteTx {
    tid: TransactionId,
    req: SipRequest,
    peer: SocketAddr,
    to_tag: String,
    last: Arc<[u8]>,
    phase: Phase,
    interval: Duration,
    given_up_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// Retransmit the final response (Timer G).
    Retransmit,
    /// Forget the transaction (Timer I after the ACK, or Timer H without it).
    Forget,
}

/// The UAS: socket, transaction table, SIP transactions, the evapi handle.
struct Uas {
    socket: Arc<UdpSocket>,
    handle: Handle,
    options: UasOptions,
    table: Table<()>,
    txs: HashMap<String, InviteTx>,
    by_tid: HashMap<TransactionId, String>,
    by_dialog: HashMap<(String, u32), String>,
    timers: BinaryHeap<Reverse<(Instant, TimerKind, String)>>,
    tags: u64,
    counters: UasCounters,
    event: String,
    /// Where answers carry the ids (from `options.answers`, built once).
    fields: evapi_proto::IdFields,
}

/// Serve SIP on `socket` and the evapi socket on `listener` until `shutdown` resolves;
/// returns the counters.
pub async fn run(
    socket: UdpSocket,
    listener: TcpListener,
    options: UasOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> UasCounters {
    let (tx, mut inbound) = mpsc::channel(apps::INBOUND_QUEUE);
    let server = Server::new(
        Config {
            max_clients: 64,
            // The routes only hand messages to this loop: run them on the connection's
            // task rather than hop through a worker (one task switch less per answer).
            workers: 0,
            ..Config::default()
        },
        SimRoutes::new(tx),
    );
    let handle = server.handle();
    let server_task = tokio::spawn(server.run(listener, std::future::pending()));
    let fields = options.answers.id_fields();
    let mut uas = Uas {
        socket: Arc::new(socket),
        handle: handle.clone(),
        table: Table::new(options.tm.clone()),
        options,
        txs: HashMap::new(),
        by_tid: HashMap::new(),
        by_dialog: HashMap::new(),
        timers: BinaryHeap::new(),
        tags: 0,
        counters: UasCounters::default(),
        event: String::new(),
        fields,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut expired: Vec<Expired<()>> = Vec::new();
    tokio::pin!(shutdown);
    loop {
        let wake = [
            uas.table.poll_timeout().map(Instant::from_std),
            uas.timers.peek().map(|Reverse((at, _, _))| *at),
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            () = &mut shutdown => break,
            got = uas.socket.recv_from(&mut buf) => match got {
                Ok((n, peer)) => uas.datagram(&buf[..n], peer).await,
                Err(e) => warn!(error = %e, "UDP receive failed"),
            },
            msg = inbound.recv() => match msg {
                Some(Inbound::Message(client, msg)) => uas.answer(&client, &msg).await,
                Some(Inbound::Connected) => {}
                None => break,
            },
            () = sleep_until(wake) => {
                let now = Instant::now();
                uas.table.handle_timeout(now.into_std(), &mut expired);
                for e in expired.drain(..) {
                    uas.counters.timeouts += 1;
                    let code = uas.options.code_on_timeout;
                    uas.final_response(e.id, code, reason_phrase(code)).await;
                }
                uas.sip_timers(now).await;
            }
        }
    }
    handle.shutdown();
    let _ = server_task.await;
    uas.counters
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Uas {
    async fn send(&self, bytes: &[u8], peer: SocketAddr) {
        if let Err(e) = self.socket.send_to(bytes, peer).await {
            warn!(%peer, error = %e, "UDP send failed");
        }
    }

    fn next_tag(&mut self) -> String {
        self.tags += 1;
        format!("sim{:x}", self.tags)
    }

    async fn datagram(&mut self, data: &[u8], peer: SocketAddr) {
        let req = match sip::parse(data) {
            Ok(req) => req,
            Err(e) => {
                self.counters.malformed += 1;
                if e == sip::SipError::Response {
                    debug!(%peer, "response ignored: this is a UAS");
                    return;
                }
                warn!(%peer, error = %e, "malformed SIP request");
                if e.answerable() {
                    if let Some(req) = sip::parse_for_reply(data) {
                        let tag = self.next_tag();
                        self.send(&sip::response(&req, 400, "Bad Request", Some(&tag)), peer)
                            .await;
                    }
                }
                return;
            }
        };
        *self
            .counters
            .requests
            .entry(req.method.clone())
            .or_default() += 1;
        let key = format!(
            "{}|{}",
            req.branch().unwrap_or_default(),
            req.sent_by().unwrap_or_default()
        );
        match req.method.as_str() {
            "INVITE" => self.invite(req, key, peer).await,
            "ACK" => self.ack(&req, &key),
            "CANCEL" => self.cancel(&req, &key, peer).await,
            "MESSAGE" => {
                self.render(&req, peer, None);
                if self.handle.relay(self.event.as_bytes()).is_err() {
                    self.counters.undelivered += 1;
                }
                self.reply_now(&req, 200, peer).await;
            }
            "OPTIONS" | "BYE" => self.reply_now(&req, 200, peer).await,
            _ => self.reply_now(&req, 501, peer).await,
        }
    }

    async fn reply_now(&mut self, req: &SipRequest, code: u16, peer: SocketAddr) {
        let tag = self.next_tag();
        let resp = sip::response(req, code, reason_phrase(code), Some(&tag));
        self.send(&resp, peer).await;
    }

    fn render(&mut self, req: &SipRequest, peer: SocketAddr, tid: Option<TransactionId>) {
        let request = request_of(req, peer);
        self.event.clear();
        self.options.event.render(
            &Vars {
                request: &request,
                tid,
                evapi: None,
            },
            &mut self.event,
        );
    }

    async fn invite(&mut self, req: SipRequest, key: String, peer: SocketAddr) {
        if let Some(tx) = self.txs.get(&key) {
            self.counters.retransmissions += 1;
            let last = Arc::clone(&tx.last);
            self.send(&last, peer).await;
            return;
        }
        let trying: Arc<[u8]> = sip::response(&req, 100, "Trying", None).into();
        self.send(&trying, peer).await;
        let now = Instant::now();
        let call_id = req.header("Call-ID").unwrap_or_default().to_owned();
        let tkey = {
            let mut k = call_id.clone().into_bytes();
            k.push(b' ');
            k.extend_from_slice(req.cseq_number().to_string().as_bytes());
            k
        };
        let tid = self.table.create(&tkey, true, (), now.into_std());
        let _ = self.table.suspend(tid, now.into_std());
        self.render(&req, peer, Some(tid));
        let sent = match &self.options.unicast_tag {
            Some(tag) => self.handle.unicast(self.event.as_bytes(), tag),
            None => self.handle.relay(self.event.as_bytes()),
        };
        if sent.is_err() {
            self.counters.undelivered += 1;
        }
        let to_tag = self.next_tag();
        self.by_tid.insert(tid, key.clone());
        self.by_dialog
            .insert((call_id, req.cseq_number()), key.clone());
        self.txs.insert(
            key,
            InviteTx {
                tid,
                req,
                peer,
                to_tag,
                last: trying,
                phase: Phase::Proceeding,
                interval: T1,
                given_up_at: now + TIMER_H,
            },
        );
    }

    fn ack(&mut self, req: &SipRequest, key: &str) {
        let key = if self.txs.contains_key(key) {
            key.to_owned()
        } else {
            // The ACK of a 2xx is a new transaction: match it by Call-ID and CSeq.
            let dialog = (
                req.header("Call-ID").unwrap_or_default().to_owned(),
                req.cseq_number(),
            );
            match self.by_dialog.get(&dialog) {
                Some(k) => k.clone(),
                None => {
                    debug!("ACK for no known transaction, absorbed");
                    return;
                }
            }
        };
        if let Some(tx) = self.txs.get_mut(&key) {
            if tx.phase == Phase::Completed {
                tx.phase = Phase::Confirmed;
                self.timers
                    .push(Reverse((Instant::now() + T4, TimerKind::Forget, key)));
            }
        }
    }

    async fn cancel(&mut self, req: &SipRequest, key: &str, peer: SocketAddr) {
        let Some(tx) = self.txs.get(key) else {
            self.reply_now(req, 481, peer).await;
            return;
        };
        let (tid, proceeding) = (tx.tid, tx.phase == Phase::Proceeding);
        self.reply_now(req, 200, peer).await;
        if proceeding
            && self
                .table
                .reply(tid, 487, std::time::Instant::now())
                .is_ok()
        {
            self.final_response(tid, 487, "Request Terminated").await;
        }
    }

    async fn answer(&mut self, client: &evapi_server::ClientEnv, msg: &[u8]) {
        if apps::register(&self.handle, &self.fields, client, msg) {
            return;
        }
        match answer::read(msg, &self.fields, &self.options.answers.actions) {
            Ok(d) => match self.table.resume(d.id, d.code, std::time::Instant::now()) {
                Ok(_) => {
                    let reason = match d.reason {
                        Some(reason) => reason,
                        None => self.reason_for(d.id, d.code, client, msg),
                    };
                    self.final_response(d.id, d.code, &reason).await;
                }
                Err(refusal) => {
                    self.counters.refused += 1;
                    info!(%refusal, "continue refused");
                }
            },
            Err(why) => {
                self.counters.invalid_answers += 1;
                debug!(reason = %why, "not a valid answer");
            }
        }
    }

    /// The reason phrase when the app gave none: the `reason` template, on the way back
    /// with `$evapi(...)` of the answer (as a `t_reply` in message-received would build
    /// it), or the code's usual phrase.
    fn reason_for(
        &self,
        tid: TransactionId,
        code: u16,
        client: &evapi_server::ClientEnv,
        msg: &[u8],
    ) -> String {
        let (Some(template), Some(tx)) = (
            &self.options.reason,
            self.by_tid.get(&tid).and_then(|k| self.txs.get(k)),
        ) else {
            return reason_phrase(code).to_owned();
        };
        let request = request_of(&tx.req, tx.peer);
        let srcaddr = client.srcaddr.to_string();
        let msg = String::from_utf8_lossy(msg);
        let reason = template.render_string(&Vars {
            request: &request,
            tid: Some(tid),
            evapi: Some(crate::template::EvapiEnv {
                srcaddr: &srcaddr,
                srcport: client.srcport,
                conidx: client.conidx,
                msg: &msg,
            }),
        });
        // A reason phrase is one line of text (RFC 3261 25.1).
        reason.replace(['\r', '\n'], " ")
    }

    async fn final_response(&mut self, tid: TransactionId, code: u16, reason: &str) {
        let Some(key) = self.by_tid.get(&tid).cloned() else {
            return;
        };
        let Some(tx) = self.txs.get_mut(&key) else {
            return;
        };
        if tx.phase != Phase::Proceeding {
            return;
        }
        let resp: Arc<[u8]> = sip::response(&tx.req, code, reason, Some(&tx.to_tag)).into();
        tx.last = Arc::clone(&resp);
        tx.phase = Phase::Completed;
        let peer = tx.peer;
        *self.counters.finals.entry(code).or_default() += 1;
        self.timers
            .push(Reverse((Instant::now() + T1, TimerKind::Retransmit, key)));
        self.send(&resp, peer).await;
    }

    async fn sip_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, kind, key))) = self.timers.peek().cloned() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(tx) = self.txs.get_mut(&key) else {
                continue;
            };
            match kind {
                TimerKind::Retransmit if tx.phase == Phase::Completed => {
                    if now >= tx.given_up_at {
                        self.counters.unacked += 1;
                        self.forget(&key);
                        continue;
                    }
                    let (last, peer) = (Arc::clone(&tx.last), tx.peer);
                    tx.interval = (tx.interval * 2).min(T2);
                    let next = now + tx.interval;
                    self.timers
                        .push(Reverse((next, TimerKind::Retransmit, key)));
                    self.counters.final_retransmits += 1;
                    self.send(&last, peer).await;
                }
                TimerKind::Retransmit => {}
                TimerKind::Forget => self.forget(&key),
            }
        }
    }

    fn forget(&mut self, key: &str) {
        if let Some(tx) = self.txs.remove(key) {
            self.by_tid.remove(&tx.tid);
            let dialog = (
                tx.req.header("Call-ID").unwrap_or_default().to_owned(),
                tx.req.cseq_number(),
            );
            self.by_dialog.remove(&dialog);
        }
    }
}

/// What templates read of a SIP request.
fn request_of(req: &SipRequest, peer: SocketAddr) -> Request {
    Request {
        method: req.method.clone(),
        ruri: req.uri.clone(),
        from_uri: req.uri_of("From"),
        to_uri: req.uri_of("To"),
        call_id: req.header("Call-ID").unwrap_or_default().to_owned(),
        cseq: req.cseq_number(),
        source: peer,
    }
}

impl UasCounters {
    /// A table for people.
    #[must_use]
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::from("evapi-sim sip: counters\n");
        for (m, n) in &self.requests {
            let _ = writeln!(s, "  {m:<24} {n:>8}");
        }
        for (c, n) in &self.finals {
            let _ = writeln!(s, "  final {c:<18} {n:>8}");
        }
        let rows = [
            ("retransmissions", self.retransmissions),
            ("final retransmits", self.final_retransmits),
            ("unacknowledged finals", self.unacked),
            ("timeouts", self.timeouts),
            ("refused continues", self.refused),
            ("invalid answers", self.invalid_answers),
            ("undelivered events", self.undelivered),
            ("malformed", self.malformed),
        ];
        for (what, n) in rows {
            let _ = writeln!(s, "  {what:<24} {n:>8}");
        }
        s
    }
}
