//! An app in a few lines: a handler called for every event of every node, whose answer
//! goes back to the node the event came from.
//!
//! [`App`] serves several nodes at once (each with its own connection, reconnected on
//! its own, the [`ClientConfig::hello`] frame sent again after each reconnect), runs
//! handlers concurrently across calls and in order within a call ([`OrderBy`]), holds at
//! most [`App::max_in_flight`] events at a time (past it, the sockets are not read, and
//! the nodes hold their events), and answers a suspend event with a fallback when the
//! handler has not answered within [`App::deadline`]: the call is never left to the
//! node's `fr_inv_timer`, and the handler's late answer is dropped and counted.
//!
//! ```no_run
//! use std::time::Duration;
//! use evapi_client::app::{App, Decision, Incoming};
//! use evapi_client::{nodes::Node, ClientConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn app() {
//! let nodes = [Node::at("127.0.0.1:8448"), Node::at("127.0.0.1:8449")];
//! let app = App::new(nodes, ClientConfig::default())
//!     .deadline(Duration::from_secs(2), Decision::new(503));
//! app.run(
//!     |event: Incoming| async move {
//!         let from = event.str("/fu").unwrap_or_default();
//!         Some(Decision::new(if from.contains("spam") { 403 } else { 200 }))
//!     },
//!     CancellationToken::new(),
//! )
//! .await;
//! # }
//! ```
//!
//! # Layout
//!
//! - [`Lanes`]: the ordered-concurrency core, without I/O: events in, which to start
//!   now out, one FIFO per call, a bound on events in hand.
//! - [`App::run`]: the shell: one task per node (connect, read, write answers), one
//!   dispatcher over [`Lanes`], one task per event being handled.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::nodes::{Link, Node};
use crate::suspend::SuspendMatcher;
use crate::ClientConfig;

mod event;
mod lanes;

pub use event::{Decision, Handler, Incoming, Notice};
pub use lanes::Lanes;

/// Which events must be handled one after the other.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrderBy {
    /// Events of the same call, by its Call-ID: the first of `callid`, `call_id`, `ci`
    /// present at the top level of the event (the default).
    CallId,
    /// Events with the same text at this JSON pointer (e.g. `/data/ci`).
    Pointer(String),
    /// None: every event is handled as soon as there is room.
    Nothing,
}

impl OrderBy {
    /// The key of `event`'s lane: its node and the ordering text; `None` (handled at
    /// once) when it has none.
    fn key(&self, event: &Incoming) -> Option<(Arc<str>, String)> {
        let text = match self {
            Self::CallId => ["/callid", "/call_id", "/ci"]
                .iter()
                .find_map(|p| event.str(p)),
            Self::Pointer(p) => event.str(p),
            Self::Nothing => None,
        }?;
        Some((Arc::clone(&event.node), text.to_owned()))
    }
}

/// What an app did, counted as it goes; [`AppStats`] is what callers see.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) events: AtomicU64,
    pub(crate) answered: AtomicU64,
    pub(crate) fallback: AtomicU64,
    pub(crate) late: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) undeliverable: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) most_in_flight: AtomicU64,
}

/// What an app did so far: a snapshot ([`AppCounters::snapshot`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppStats {
    /// Events read.
    pub events: u64,
    /// Answers the handler gave, sent.
    pub answered: u64,
    /// Fallbacks sent at the deadline.
    pub fallback: u64,
    /// Handler answers that came after the fallback: dropped, never sent.
    pub late: u64,
    /// Answers dropped because their connection had gone (never sent to a newer one).
    pub stale: u64,
    /// Answers dropped because the node was not reading (its queue full).
    pub undeliverable: u64,
    /// Answers the handler gave with a reason no node would accept: not sent.
    pub invalid: u64,
    /// Events in hand now (waiting their turn or being handled).
    pub in_flight: u64,
    /// The most events in hand at once so far.
    pub most_in_flight: u64,
}

/// A handle on a running app's counters ([`App::counters`]): cheap to clone, read
/// with [`AppCounters::snapshot`] while the app runs (e.g. for metrics).
#[derive(Debug, Clone)]
pub struct AppCounters(Arc<Counters>);

impl AppCounters {
    /// The counts now.
    #[must_use]
    pub fn snapshot(&self) -> AppStats {
        let c = &self.0;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AppStats {
            events: n(&c.events),
            answered: n(&c.answered),
            fallback: n(&c.fallback),
            late: n(&c.late),
            stale: n(&c.stale),
            undeliverable: n(&c.undeliverable),
            invalid: n(&c.invalid),
            in_flight: n(&c.in_flight),
            most_in_flight: n(&c.most_in_flight),
        }
    }
}

/// Answers queued for one connection; past this the node is not reading, and answers
/// are dropped (counted) rather than held.
const ANSWER_QUEUE: usize = 4096;

/// Events read ahead of the dispatcher, for all nodes together.
const READ_AHEAD: usize = 64;

/// An app: the nodes it serves and how it handles their events.
#[derive(Debug, Clone)]
pub struct App {
    nodes: Vec<Node>,
    config: ClientConfig,
    matcher: SuspendMatcher,
    order: OrderBy,
    max_in_flight: usize,
    deadline: Option<(Duration, Decision)>,
    drain: Duration,
    counters: Arc<Counters>,
}

impl App {
    /// Serve `nodes`, connecting with `config` (token, TLS, hello frame, framing), with
    /// events of one call in order, at most 1,000 in hand, no deadline.
    #[must_use]
    pub fn new(nodes: impl IntoIterator<Item = Node>, config: ClientConfig) -> Self {
        Self {
            nodes: nodes.into_iter().collect(),
            config,
            matcher: SuspendMatcher::default(),
            order: OrderBy::CallId,
            max_in_flight: 1000,
            deadline: None,
            drain: Duration::from_secs(5),
            counters: Arc::default(),
        }
    }

    /// Which events are handled one after the other (default [`OrderBy::CallId`]).
    #[must_use]
    pub fn order_by(mut self, order: OrderBy) -> Self {
        self.order = order;
        self
    }

    /// At most `n` events in hand, waiting their turn or being handled (default 1,000):
    /// past it, the nodes' sockets are not read until one finishes.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Answer a suspend event with `fallback` when the handler has not answered it
    /// within `after` of its arrival (choose `after` below the node's `fr_inv_timer`,
    /// with room for the answer's trip); the handler's answer is then dropped.
    #[must_use]
    pub fn deadline(mut self, after: Duration, fallback: Decision) -> Self {
        self.deadline = Some((after, fallback));
        self
    }

    /// Recognise suspend events with `matcher` (default: the usual id fields).
    #[must_use]
    pub fn matcher(mut self, matcher: SuspendMatcher) -> Self {
        self.matcher = matcher;
        self
    }

    /// On stop, wait at most this long for the events in hand to be answered (default
    /// 5 s).
    #[must_use]
    pub fn drain(mut self, patience: Duration) -> Self {
        self.drain = patience;
        self
    }

    /// The counters, to read while the app runs (e.g. for metrics).
    #[must_use]
    pub fn counters(&self) -> AppCounters {
        AppCounters(Arc::clone(&self.counters))
    }

    /// Serve every node until `stop`: then stop reading, let the events in hand be
    /// answered (at most [`App::drain`]), and close.
    pub async fn run<H: Handler>(self, handler: H, stop: CancellationToken) {
        let handler = Arc::new(handler);
        let shared = Arc::new(Shared {
            matcher: self.matcher,
            deadline: self.deadline,
            counters: Arc::clone(&self.counters),
        });
        let (events_tx, events_rx) = mpsc::channel(READ_AHEAD);
        let reading = stop.child_token();
        let mut nodes = tokio::task::JoinSet::new();
        for node in self.nodes {
            nodes.spawn(serve_node(
                node,
                self.config.clone(),
                Arc::clone(&shared),
                Arc::clone(&handler),
                events_tx.clone(),
                reading.clone(),
            ));
        }
        drop(events_tx);
        dispatch(
            events_rx,
            &self.order,
            self.max_in_flight,
            &handler,
            &shared,
            &stop,
            self.drain,
        )
        .await;
        // The events in hand are done: every connection's answers are written, then
        // the connections close.
        let _ = tokio::time::timeout(self.drain, async {
            while nodes.join_next().await.is_some() {}
        })
        .await;
    }
}

/// What every task of a running app shares.
#[derive(Debug)]
struct Shared {
    matcher: SuspendMatcher,
    deadline: Option<(Duration, Decision)>,
    counters: Arc<Counters>,
}

/// One connection to a node: where its events' answers go.
#[derive(Debug)]
struct Conn {
    answers: mpsc::Sender<Vec<u8>>,
    /// Cancelled when the connection is lost: its answers are dropped from then on.
    gone: CancellationToken,
    in_hand: AtomicUsize,
}

type Lane = Option<(Arc<str>, String)>;

/// One event's answer, decided once: by its handler, or by the fallback at its
/// deadline, whichever comes first (the other is dropped). The deadline is watched
/// from the moment the event is read, so an event still waiting its turn behind a slow
/// handler of the same call gets its fallback on time too.
struct InHand {
    conn: Arc<Conn>,
    /// The event's node, ids and arrival ([`Incoming::for_reply`]).
    event: Incoming,
    /// Whether a watchdog sends the fallback at the deadline (a suspend event, with a
    /// deadline set).
    watched: bool,
    decided: std::sync::atomic::AtomicBool,
    /// Cancelled once decided: the watchdog stops waiting.
    settled: CancellationToken,
}

impl InHand {
    fn new(conn: Arc<Conn>, event: &Incoming, shared: &Shared) -> Arc<Self> {
        let watched = shared.deadline.is_some() && event.id.is_some();
        Arc::new(Self {
            conn,
            event: event.for_reply(),
            watched,
            decided: std::sync::atomic::AtomicBool::new(false),
            settled: CancellationToken::new(),
        })
    }

    /// Claim the decision: true for the first caller only, and the event then leaves
    /// its connection's count in hand (it will not be answered by anyone else).
    fn claim(&self) -> bool {
        if self.decided.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.conn.in_hand.fetch_sub(1, Ordering::AcqRel);
        self.settled.cancel();
        true
    }

    fn is_decided(&self) -> bool {
        self.decided.load(Ordering::Acquire)
    }
}

/// Watch `decision`'s deadline (when it has one): at the deadline, unless decided by
/// then, the fallback is sent.
fn watch(decision: &Arc<InHand>, shared: &Arc<Shared>) {
    let Some((after, fallback)) = shared.deadline.clone().filter(|_| decision.watched) else {
        return;
    };
    let (decision, shared) = (Arc::clone(decision), Arc::clone(shared));
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep_until(decision.event.arrived + after) => {
                if decision.claim() && send(&decision.conn, &decision.event, &fallback, &shared.counters) {
                    shared.counters.fallback.fetch_add(1, Ordering::Relaxed);
                    warn!(node = %decision.event.node, id = ?decision.event.id, code = fallback.code, "no answer from the handler by the deadline: fallback sent");
                }
            }
            () = decision.settled.cancelled() => {}
        }
    });
}

/// Says that an event's handling ended, however it ended (a handler that panics too):
/// its lane may start the next event, and an event nobody will answer leaves the count
/// in hand.
struct Finished {
    decision: Arc<InHand>,
    lane: Option<Lane>,
    done: mpsc::UnboundedSender<Lane>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        if !self.decision.watched {
            self.decision.claim();
        }
        if let Some(lane) = self.lane.take() {
            let _ = self.done.send(lane);
        }
    }
}

/// Hand events to handlers: in order within a lane, at most `max` in hand.
async fn dispatch<H: Handler>(
    mut events: mpsc::Receiver<(Arc<Conn>, Incoming)>,
    order: &OrderBy,
    max: usize,
    handler: &Arc<H>,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    drain: Duration,
) {
    let mut lanes: Lanes<(Arc<str>, String), (Arc<InHand>, Incoming)> = Lanes::new(max);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Lane>();
    let start = |lane: Lane, (decision, event): (Arc<InHand>, Incoming)| {
        let (handler, shared, done) = (Arc::clone(handler), Arc::clone(shared), done_tx.clone());
        tokio::spawn(async move {
            let _finished = Finished {
                decision: Arc::clone(&decision),
                lane: Some(lane),
                done,
            };
            handle_one(&*handler, &decision, event, &shared).await;
        });
    };
    let mut drained_by: Option<Instant> = None;
    loop {
        let counters = &shared.counters;
        let in_hand = lanes.in_hand() as u64;
        counters.in_flight.store(in_hand, Ordering::Relaxed);
        counters
            .most_in_flight
            .fetch_max(in_hand, Ordering::Relaxed);
        if drained_by.is_some() && lanes.in_hand() == 0 {
            return;
        }
        tokio::select! {
            biased;
            Some(lane) = done_rx.recv() => {
                if let Some(next) = lanes.finish(lane.as_ref()) {
                    start(lane, next);
                }
            }
            () = stop.cancelled(), if drained_by.is_none() => {
                drained_by = Some(Instant::now() + drain);
            }
            () = evapi_ops::time::sleep_until(drained_by) => {
                warn!(in_hand = lanes.in_hand(), "stopping with events still being handled");
                return;
            }
            got = events.recv(), if drained_by.is_none() && lanes.has_room() => {
                let Some((conn, event)) = got else {
                    drained_by = Some(Instant::now() + drain);
                    continue;
                };
                let lane = order.key(&event);
                let decision = InHand::new(conn, &event, shared);
                watch(&decision, shared);
                if let Some(item) = lanes.push(lane.clone(), (decision, event)) {
                    start(lane, item);
                }
            }
        }
    }
}

/// Handle one event: the handler's answer, written to the connection the event came
/// on, unless the fallback went first (the answer is then dropped, counted late). An
/// event whose fallback went while it waited its turn is not handed to the handler.
async fn handle_one<H: Handler>(handler: &H, decision: &InHand, event: Incoming, shared: &Shared) {
    let counters = &shared.counters;
    if decision.is_decided() {
        return;
    }
    let Some(answer) = handler.handle(event).await else {
        return;
    };
    let event = &decision.event;
    if event.id.is_none() {
        return;
    }
    if evapi_proto::check_reason(&answer.reason).is_err() {
        counters.invalid.fetch_add(1, Ordering::Relaxed);
        warn!(node = %event.node, reason = ?answer.reason, "the handler's reason phrase is not valid: not sent");
        return;
    }
    if !decision.claim() {
        // The fallback went first: the node has its final reply.
        counters.late.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if send(&decision.conn, event, &answer, counters) {
        counters.answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// Queue `answer` to `event` on `conn`; whether it was queued.
fn send(conn: &Conn, event: &Incoming, answer: &Decision, counters: &Counters) -> bool {
    let Some(frame) = event.reply(answer) else {
        return false;
    };
    if conn.gone.is_cancelled() {
        counters.stale.fetch_add(1, Ordering::Relaxed);
        debug!(node = %event.node, "answer for a connection that is gone: dropped");
        return false;
    }
    match conn.answers.try_send(frame) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => {
            counters.stale.fetch_add(1, Ordering::Relaxed);
            false
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            counters.undeliverable.fetch_add(1, Ordering::Relaxed);
            warn!(node = %event.node, "the node is not reading its answers: answer dropped");
            false
        }
    }
}

/// Serve `node` until `stop`: connect (again whenever lost), read events into
/// `events`, write answers.
async fn serve_node<H: Handler>(
    node: Node,
    config: ClientConfig,
    shared: Arc<Shared>,
    handler: Arc<H>,
    events: mpsc::Sender<(Arc<Conn>, Incoming)>,
    stop: CancellationToken,
) {
    let name: Arc<str> = node.name.clone().into();
    let mut link = Link::new(&node, &config);
    let mut lost_at: Option<Instant> = None;
    loop {
        let client = tokio::select! {
            () = stop.cancelled() => return,
            client = link.connect() => match client {
                Ok(client) => client,
                Err(e) => {
                    warn!(node = %name, error = %e, "cannot connect, and retrying cannot help");
                    return;
                }
            },
        };
        handler.notice(match lost_at.take() {
            Some(at) => Notice::Reconnected {
                node: Arc::clone(&name),
                down_for: at.elapsed(),
            },
            None => Notice::Connected {
                node: Arc::clone(&name),
            },
        });
        let (mut reader, writer) = client.split();
        let (answers, queued) = mpsc::channel(ANSWER_QUEUE);
        let conn = Arc::new(Conn {
            answers,
            gone: CancellationToken::new(),
            in_hand: AtomicUsize::new(0),
        });
        let writing = tokio::spawn(write_answers(writer, queued, conn.gone.clone()));
        let lost = loop {
            let msg = tokio::select! {
                () = stop.cancelled() => break None,
                msg = reader.recv() => msg,
            };
            let payload = match msg {
                Ok(Some(payload)) => payload,
                Ok(None) => break Some(None),
                Err(e) => break Some(Some(e)),
            };
            shared.counters.events.fetch_add(1, Ordering::Relaxed);
            let event = Incoming::new(Arc::clone(&name), payload, Instant::now(), &shared.matcher);
            conn.in_hand.fetch_add(1, Ordering::AcqRel);
            tokio::select! {
                () = stop.cancelled() => break None,
                sent = events.send((Arc::clone(&conn), event)) => if sent.is_err() { break None },
            }
        };
        match lost {
            // Stopping: the answers of the events in hand are still written; the
            // writer ends once the last of them is (every sender dropped).
            None => {
                drop(conn);
                let _ = writing.await;
                return;
            }
            Some(why) => {
                conn.gone.cancel();
                let unanswered = conn.in_hand.load(Ordering::Acquire);
                if unanswered > 0 {
                    warn!(node = %name, unanswered, "connection lost with events in hand: their answers are dropped");
                }
                handler.notice(Notice::Lost {
                    node: Arc::clone(&name),
                    unanswered,
                });
                link.lost(why.as_ref());
                lost_at = Some(Instant::now());
            }
        }
    }
}

/// Write a connection's answers, flushing when none is waiting, until every sender is
/// gone or the connection is.
async fn write_answers(
    mut writer: crate::Writer,
    mut queued: mpsc::Receiver<Vec<u8>>,
    gone: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            () = gone.cancelled() => return,
            first = queued.recv() => first,
        };
        let Some(first) = first else {
            let _ = writer.close().await;
            return;
        };
        if writer.feed(&first).await.is_err() {
            return;
        }
        while let Ok(more) = queued.try_recv() {
            if writer.feed(&more).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use evapi_proto::TransactionId;

    fn suspend(node: &str, call: &str, index: u32) -> Incoming {
        let payload = format!(r#"{{"event":"suspend","tindex":{index},"tlabel":1,"ci":"{call}"}}"#);
        Incoming::new(
            node.into(),
            Bytes::from(payload),
            Instant::now(),
            &SuspendMatcher::default(),
        )
    }

    #[test]
    fn events_know_their_call_and_how_to_answer() {
        let e = suspend("sip-a", "c1", 7);
        assert_eq!(e.id, Some(TransactionId { index: 7, label: 1 }));
        assert_eq!(OrderBy::CallId.key(&e), Some(("sip-a".into(), "c1".into())));
        assert_eq!(OrderBy::Nothing.key(&e), None);
        assert_eq!(
            OrderBy::Pointer("/event".into()).key(&e),
            Some(("sip-a".into(), "suspend".into()))
        );
        let reply: serde_json::Value =
            serde_json::from_slice(&e.reply(&Decision::new(486)).unwrap()).unwrap();
        assert_eq!(reply["tindex"], 7);
        assert_eq!(reply["code"], 486);
        assert_eq!(reply["reason"], "Busy Here");
        let plain = Incoming::new(
            "n".into(),
            Bytes::from_static(b"hello"),
            Instant::now(),
            &SuspendMatcher::default(),
        );
        assert!(plain.json.is_none() && plain.reply(&Decision::new(200)).is_none());
    }

    fn conn() -> (Arc<Conn>, mpsc::Receiver<Vec<u8>>) {
        let (answers, rx) = mpsc::channel(8);
        let conn = Conn {
            answers,
            gone: CancellationToken::new(),
            in_hand: AtomicUsize::new(0),
        };
        (Arc::new(conn), rx)
    }

    fn shared(deadline: Option<Duration>) -> Arc<Shared> {
        Arc::new(Shared {
            matcher: SuspendMatcher::default(),
            deadline: deadline.map(|d| (d, Decision::with_reason(503, "Try Later"))),
            counters: Arc::default(),
        })
    }

    fn code(frame: &[u8]) -> u64 {
        serde_json::from_slice::<serde_json::Value>(frame).unwrap()["code"]
            .as_u64()
            .unwrap()
    }

    /// `event` read on `conn` (counted in hand), its deadline watched, then handled.
    async fn handle<H: Handler>(
        handler: &H,
        conn: &Arc<Conn>,
        event: Incoming,
        shared: &Arc<Shared>,
    ) {
        conn.in_hand.fetch_add(1, Ordering::AcqRel);
        let decision = InHand::new(Arc::clone(conn), &event, shared);
        watch(&decision, shared);
        handle_one(handler, &decision, event, shared).await;
    }

    /// Events `indices` of `call`, read on `conn` (counted in hand) and queued for the
    /// dispatcher.
    async fn read(
        tx: &mpsc::Sender<(Arc<Conn>, Incoming)>,
        conn: &Arc<Conn>,
        call: &str,
        indices: impl IntoIterator<Item = u32>,
    ) {
        for index in indices {
            conn.in_hand.fetch_add(1, Ordering::AcqRel);
            tx.send((Arc::clone(conn), suspend("n", call, index)))
                .await
                .unwrap();
        }
    }

    /// A handler slower than the deadline: the fallback goes at the deadline, the
    /// handler's answer is counted late and never sent.
    #[tokio::test(start_paused = true)]
    async fn past_the_deadline_the_fallback_goes_and_the_late_answer_is_dropped() {
        let (conn, mut rx) = conn();
        let shared = shared(Some(Duration::from_secs(2)));
        let slow = |_: Incoming| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Some(Decision::new(200))
        };
        let started = Instant::now();
        let event = suspend("n", "c", 1);
        let handled = handle(&slow, &conn, event, &shared);
        let watching = async {
            let frame = rx.recv().await.unwrap();
            (
                frame,
                started.elapsed(),
                conn.in_hand.load(Ordering::Acquire),
            )
        };
        let ((), (frame, at, in_hand)) = tokio::join!(handled, watching);
        assert_eq!(code(&frame), 503);
        assert_eq!(at, Duration::from_secs(2), "at the deadline, not later");
        assert_eq!(
            in_hand, 0,
            "decided: no longer in hand, though still handled"
        );
        assert!(rx.try_recv().is_err(), "the late 200 was never sent");
        assert_eq!(shared.counters.late.load(Ordering::Relaxed), 1);
        assert_eq!(shared.counters.fallback.load(Ordering::Relaxed), 1);
        assert_eq!(shared.counters.answered.load(Ordering::Relaxed), 0);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "the handler finished"
        );

        // In time: the handler's answer, no fallback.
        let quick = |_: Incoming| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some(Decision::new(486))
        };
        handle(&quick, &conn, suspend("n", "c", 2), &shared).await;
        assert_eq!(code(&rx.recv().await.unwrap()), 486);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(rx.try_recv().is_err(), "no fallback after an answer");
        assert_eq!(shared.counters.answered.load(Ordering::Relaxed), 1);
        assert_eq!(shared.counters.fallback.load(Ordering::Relaxed), 1);
    }

    /// A handler that answers nothing (or panics) for a suspend event: the fallback
    /// goes at the deadline all the same.
    #[tokio::test(start_paused = true)]
    async fn no_answer_from_the_handler_means_the_fallback() {
        let (conn, mut rx) = conn();
        let shared = shared(Some(Duration::from_secs(1)));
        let silent = |_: Incoming| async { None };
        handle(&silent, &conn, suspend("n", "c", 1), &shared).await;
        assert_eq!(code(&rx.recv().await.unwrap()), 503);
        assert_eq!(shared.counters.fallback.load(Ordering::Relaxed), 1);
    }

    /// An answer whose connection is gone is dropped, never written anywhere.
    #[tokio::test(start_paused = true)]
    async fn answers_for_a_lost_connection_are_dropped() {
        let (conn, mut rx) = conn();
        let shared = shared(None);
        conn.gone.cancel();
        let answer = |_: Incoming| async { Some(Decision::new(200)) };
        handle(&answer, &conn, suspend("n", "c", 1), &shared).await;
        assert!(rx.try_recv().is_err());
        assert_eq!(shared.counters.stale.load(Ordering::Relaxed), 1);
    }

    /// A reason no node would accept is not sent; with a deadline, the fallback goes.
    #[tokio::test(start_paused = true)]
    async fn an_invalid_reason_is_not_sent() {
        let (conn, mut rx) = conn();
        let shared = shared(Some(Duration::from_secs(1)));
        let bad = |_: Incoming| async { Some(Decision::with_reason(200, "OK\r\nX: y")) };
        handle(&bad, &conn, suspend("n", "c", 1), &shared).await;
        assert_eq!(code(&rx.recv().await.unwrap()), 503);
        assert_eq!(shared.counters.invalid.load(Ordering::Relaxed), 1);
    }

    /// Events of one call queued behind a handler that never returns: each gets its
    /// fallback at its own deadline, counted from its arrival, not from its turn.
    #[tokio::test(start_paused = true)]
    async fn events_waiting_their_turn_get_their_fallback_on_time() {
        let stuck = Arc::new(|_: Incoming| async {
            std::future::pending::<()>().await;
            Some(Decision::new(200))
        });
        let shared = shared(Some(Duration::from_millis(1500)));
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let (conn, mut written) = conn();
        let started = Instant::now();
        read(&tx, &conn, "same-call", 1..=3).await;
        let stop = CancellationToken::new();
        let run = dispatch(
            rx,
            &OrderBy::CallId,
            10,
            &stuck,
            &shared,
            &stop,
            Duration::from_millis(10),
        );
        let check = async {
            for _ in 0..3 {
                assert_eq!(code(&written.recv().await.unwrap()), 503);
            }
            assert_eq!(
                started.elapsed(),
                Duration::from_millis(1500),
                "all three on time"
            );
            assert_eq!(conn.in_hand.load(Ordering::Acquire), 0, "Lost would say 0");
            stop.cancel();
        };
        let ((), ()) = tokio::join!(run, check);
        assert_eq!(shared.counters.fallback.load(Ordering::Relaxed), 3);
    }

    /// A handler that panics on an event does not stop its call's lane: the call's next
    /// event is handled, and nothing is left counted in hand.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_handler_does_not_block_its_call() {
        let handler = Arc::new(|e: Incoming| async move {
            assert!(
                e.id.is_some_and(|id| id.index != 1),
                "the handler's own bug"
            );
            Some(Decision::new(200))
        });
        let shared = shared(None);
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let (conn, mut written) = conn();
        read(&tx, &conn, "same-call", [1, 2]).await;
        let stop = CancellationToken::new();
        let run = dispatch(
            rx,
            &OrderBy::CallId,
            10,
            &handler,
            &shared,
            &stop,
            Duration::from_secs(1),
        );
        let check = async {
            let frame = written.recv().await.unwrap();
            let reply: serde_json::Value = serde_json::from_slice(&frame).unwrap();
            assert_eq!(reply["tindex"], 2, "the call's next event was handled");
            stop.cancel();
        };
        let ((), ()) = tokio::join!(run, check);
        assert_eq!(conn.in_hand.load(Ordering::Acquire), 0);
    }

    /// Events of one call are handled in order while many calls are handled at once:
    /// 1,000 calls of 3 events each, handlers that take a random while; every call's
    /// events in order, and hundreds in hand at once.
    #[tokio::test(start_paused = true)]
    async fn one_call_in_order_a_thousand_calls_at_once() {
        let seen: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u32>>>> =
            Arc::default();
        let log = Arc::clone(&seen);
        let handler = Arc::new(move |e: Incoming| {
            let log = Arc::clone(&log);
            async move {
                // Later events of a call are quicker: out of order if run at once.
                let step = e.id.map_or(0, |id| id.index % 3);
                tokio::time::sleep(Duration::from_millis(u64::from(30 - 10 * step))).await;
                let call = e.str("/ci").unwrap_or_default().to_owned();
                log.lock().unwrap().entry(call).or_default().push(step);
                Some(Decision::new(200))
            }
        });
        let shared = shared(None);
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let (answers, mut written) = mpsc::channel(ANSWER_QUEUE);
        let conn = Arc::new(Conn {
            answers,
            gone: CancellationToken::new(),
            in_hand: AtomicUsize::new(0),
        });
        let feed = async {
            for call in 0..1000u32 {
                read(
                    &tx,
                    &conn,
                    &format!("call-{call}"),
                    (0..3).map(|step| call * 3 + step),
                )
                .await;
            }
        };
        let stop = CancellationToken::new();
        let run = dispatch(
            rx,
            &OrderBy::CallId,
            5000,
            &handler,
            &shared,
            &stop,
            Duration::from_secs(1),
        );
        let count = async {
            for _ in 0..3000 {
                written.recv().await.unwrap();
            }
            stop.cancel();
        };
        let ((), (), ()) = tokio::join!(feed, run, count);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1000);
        assert!(seen.values().all(|steps| steps == &[0, 1, 2]), "in order");
        let most = shared.counters.most_in_flight.load(Ordering::Relaxed);
        assert!(most >= 500, "concurrently: {most} in hand at most");
        assert_eq!(shared.counters.answered.load(Ordering::Relaxed), 3000);
        assert_eq!(conn.in_hand.load(Ordering::Acquire), 0);
    }
}
