//! `evapi-sim sip`: the async-relay core behind real SIP over UDP, so sipp can drive it.
//!
//! A thin driver: it owns the UDP socket, the embedded evapi server and the clock, and
//! hands every input to the two sans-I/O cores, [`crate::ist`] (SIP transactions) and
//! [`crate::router`] (suspend, relay, answers, final replies). INVITE: a transaction is
//! created and suspended, the event relayed; the app's answer (or the final response
//! timer) gives the final response. CANCEL: 200, and 487 for the INVITE if it has no
//! final response yet. OPTIONS and BYE: 200. MESSAGE: a fire-and-forget relay of the
//! event, then 200. Malformed requests are logged and dropped, or answered 400 where
//! their headers can be read.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use evapi_server::{Config, Handle, Server};
use serde::Serialize;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::apps::{self, Inbound, SimRoutes};
use crate::clock;
use crate::ist::{Invite, IstCounters, TxKey, UasTransactions};
use crate::metrics::SimMetrics;
use crate::request::Request;
use crate::router::{Delivery, Message, Router, RouterConfig, RouterCounters};
use crate::sip;

/// Largest UDP datagram read.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams read in one go once the socket is readable, before replies are sent and
/// timers looked at: a burst drains into the cores instead of waiting in the kernel.
const RECV_BATCH: usize = 256;

/// Settings of the SIP front.
#[derive(Debug)]
pub struct UasOptions {
    /// Routing, answers, timers.
    pub router: RouterConfig,
    /// The embedded evapi socket.
    pub server: Config,
    /// Most Timer G retransmissions of one final response (see
    /// [`UasTransactions::with_final_retransmits`]).
    pub final_retransmits: u32,
    /// Seconds in a `Retry-After` header on every 503.
    pub retry_after: Option<u32>,
    /// When a 100 Trying goes out if the final response is not there (see
    /// [`UasTransactions::set_trying_after`]).
    pub trying_after: std::time::Duration,
    /// Serve Prometheus metrics (the server's and the core's) and the admin API on
    /// this listener; admin requests need this bearer token when one is given.
    pub metrics: Option<(TcpListener, Option<std::sync::Arc<str>>)>,
}

/// What happened, printed at the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UasCounters {
    /// Requests received, by method.
    pub requests: BTreeMap<String, u64>,
    /// Datagrams that were not valid requests.
    pub malformed: u64,
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
    pub timeline: Vec<u64>,
    /// Answers per app, by `conidx` (HTML).
    #[serde(skip)]
    pub per_app: BTreeMap<String, u64>,
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
    let server = Server::new(options.server, SimRoutes::new(tx));
    let handle = server.handle();
    let server_task = tokio::spawn(server.run(listener, std::future::pending()));
    let metrics = SimMetrics::new();
    let http_task = options.metrics.map(|(l, token)| {
        tokio::spawn(evapi_server::admin::serve(
            l,
            metrics.registry(&handle),
            handle.clone(),
            token,
            std::future::pending(),
        ))
    });
    let mut publish = tokio::time::interval(crate::metrics::PUBLISH_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut uas = Uas {
        socket,
        handle: handle.clone(),
        router: Router::new(options.router),
        ist: {
            let mut ist = UasTransactions::with_final_retransmits(options.final_retransmits);
            ist.set_retry_after(options.retry_after);
            ist.set_trying_after(options.trying_after);
            ist
        },
        requests: BTreeMap::new(),
        malformed: 0,
        metrics,
        outgoing: Vec::new(),
        latency: hdrhistogram::Histogram::new(3)
            .expect("3 significant figures is a valid precision"),
        timeline: Vec::new(),
        started: clock::now(),
        per_app: BTreeMap::new(),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    tokio::pin!(shutdown);
    loop {
        let wake = evapi_ops::time::earliest([uas.router.poll_timeout(), uas.ist.poll_timeout()]);
        tokio::select! {
            () = &mut shutdown => break,
            got = uas.socket.recv_from(&mut buf) => match got {
                Ok((n, peer)) => {
                    uas.datagram(&buf[..n], peer);
                    for _ in 1..RECV_BATCH {
                        match uas.socket.try_recv_from(&mut buf) {
                            Ok((n, peer)) => uas.datagram(&buf[..n], peer),
                            Err(e) => {
                                if e.kind() != std::io::ErrorKind::WouldBlock {
                                    warn!(error = %e, "UDP receive failed");
                                }
                                break;
                            }
                        }
                    }
                }
                Err(e) => warn!(error = %e, "UDP receive failed"),
            },
            msg = inbound.recv() => match msg {
                Some(Inbound::Message(client, msg)) => {
                    match uas.router.message(clock::now(), &client, &msg) {
                        Message::Register(tag) => {
                            apps::set_tag(&uas.handle, &client, &tag);
                        }
                        Message::Resumed(_) => {
                            *uas.per_app.entry(client.conidx.to_string()).or_default() += 1;
                        }
                        Message::Refused(_) | Message::Invalid(_) => {}
                    }
                }
                Some(Inbound::Connected) => {}
                None => break,
            },
            () = evapi_ops::time::sleep_until(wake) => {
                let now = clock::now();
                uas.router.handle_timeout(now);
                uas.ist.handle_timeout(now);
            }
            _ = publish.tick(), if http_task.is_some() => {
                uas.metrics.publish(uas.router.counters(), uas.router.open());
                uas.metrics.kernel_drops(crate::udp::kernel_drops(&uas.socket));
            }
        }
        uas.flush().await;
    }
    // Datagrams that arrived before the shutdown are still handled (an ACK in the
    // socket's buffer counts), nothing after.
    while let Ok((n, peer)) = uas.socket.try_recv_from(&mut buf) {
        uas.datagram(&buf[..n], peer);
    }
    uas.flush().await;
    let kernel_drops = crate::udp::kernel_drops(&uas.socket);
    uas.metrics
        .publish(uas.router.counters(), uas.router.open());
    uas.metrics.kernel_drops(kernel_drops);
    handle.shutdown();
    let _ = server_task.await;
    if let Some(task) = http_task {
        task.abort();
    }
    UasCounters {
        requests: uas.requests,
        malformed: uas.malformed,
        sip: uas.ist.counters(),
        routing: uas.router.counters().clone(),
        kernel_drops,
        latency: crate::report::Latency::of(&uas.latency),
        timeline: uas.timeline,
        per_app: uas.per_app,
    }
}

/// The driver's state: I/O handles and the two cores.
struct Uas {
    socket: UdpSocket,
    handle: Handle,
    router: Router<TxKey>,
    ist: UasTransactions,
    requests: BTreeMap<String, u64>,
    malformed: u64,
    metrics: SimMetrics,
    /// Datagrams of one flush, sent in batches (a buffer reused).
    outgoing: Vec<(std::sync::Arc<[u8]>, SocketAddr)>,
    /// What the HTML report draws.
    latency: hdrhistogram::Histogram<u64>,
    timeline: Vec<u64>,
    started: std::time::Instant,
    per_app: BTreeMap<String, u64>,
}

impl Uas {
    /// Final replies decided by the router go to their SIP transactions; then every
    /// datagram the transaction layer queued is sent.
    async fn flush(&mut self) {
        let now = clock::now();
        while let Some(reply) = self.router.poll_reply() {
            if let crate::router::Cause::Answered { latency } = reply.cause {
                self.metrics.answered(latency);
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                let _ = self.latency.record(us.max(1));
            }
            crate::report::count_in(
                &mut self.timeline,
                now.saturating_duration_since(self.started),
            );
            self.ist
                .respond(now, &reply.data, reply.code, &reply.reason);
        }
        self.outgoing.clear();
        while let Some(t) = self.ist.poll_transmit() {
            self.outgoing.push((t.bytes, t.peer));
        }
        crate::udp::send_all(&self.socket, &self.outgoing).await;
        self.outgoing.clear();
    }

    fn datagram(&mut self, data: &[u8], peer: SocketAddr) {
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
        let now = clock::now();
        match req.method.as_str() {
            "INVITE" => {
                // At the cap, a new INVITE gets 503 and no transaction (its
                // retransmissions too, until there is room); known ones go on as usual.
                let key = crate::ist::key(&req);
                if !self.ist.knows(&key) && self.router.is_full() {
                    self.ist.stateless(&req, 503, peer);
                    return;
                }
                if let Invite::New(key) = self.ist.invite_keyed(now, key, &req, peer) {
                    let request = Request::from_sip(&req, peer);
                    let relay = self.router.request(now, &request, key.clone());
                    let (id, sent) = (relay.id, apps::deliver(&self.handle, relay.to, relay.event));
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
                if !apps::deliver(&self.handle, Delivery::All, event) {
                    self.router.undelivered(now, None);
                }
                self.ist.stateless(&req, 200, peer);
            }
            "OPTIONS" | "BYE" => self.ist.stateless(&req, 200, peer),
            _ => self.ist.stateless(&req, 501, peer),
        }
    }
}

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

    /// The HTML report's content (see [`crate::html`]).
    #[must_use]
    pub fn page(&self) -> crate::html::Page {
        use crate::html::{Page, Table};
        let rows = |pairs: Vec<(String, u64)>| -> Vec<Vec<String>> {
            pairs
                .into_iter()
                .map(|(k, v)| vec![k, v.to_string()])
                .collect()
        };
        let requests = Table {
            caption: "Requests and final responses".into(),
            header: vec!["what".into(), "count".into()],
            rows: rows(
                self.requests
                    .iter()
                    .map(|(m, n)| (m.clone(), *n))
                    .chain(
                        self.routing
                            .finals
                            .iter()
                            .map(|(c, n)| (format!("final {c}"), *n)),
                    )
                    .chain([
                        ("busy (503)".to_owned(), self.routing.busy),
                        ("no app".to_owned(), self.routing.no_app),
                        ("retransmitted INVITEs".to_owned(), self.sip.retransmissions),
                        ("final retransmits".to_owned(), self.sip.final_retransmits),
                        ("malformed".to_owned(), self.malformed),
                    ])
                    .collect(),
            ),
        };
        let checks = Table {
            caption: "Health (each should be 0)".into(),
            header: vec!["what".into(), "count".into()],
            rows: rows(
                self.checks()
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), *v))
                    .collect(),
            ),
        };
        let bad: u64 = self.checks().iter().map(|(_, n)| n).sum();
        Page {
            title: "evapi-sim sip".into(),
            passed: bad == 0,
            summary: format!(
                "{} requests, {} final responses, {} answered by apps",
                self.requests.values().sum::<u64>(),
                self.routing.finals.values().sum::<u64>(),
                self.latency.count
            ),
            tables: vec![requests, checks],
            details: Vec::new(),
            latency: vec![("suspend to final response".into(), self.latency.clone())],
            timeline: self.timeline.clone(),
            bin_ms: crate::report::TIMELINE_BIN_MS,
            per_app: self.per_app.clone(),
        }
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
            ("kernel drops", self.kernel_drops.unwrap_or(0)),
        ];
        for (what, n) in rows {
            let _ = writeln!(s, "  {what:<24} {n:>8}");
        }
        s
    }
}
