//! The bridge of one node: its evapi socket read at full speed into the [`Outbox`],
//! published to JetStream from there, answers from NATS written back.
//!
//! Three loops share one connection:
//! - *reading* never waits on NATS: an event goes into the outbox, or, past
//!   `--buffer-bytes`, is shed (counted, logged, and answered with the shed code when
//!   one is set, so the call ends at once instead of at the node's timer);
//! - *publishing* takes events from the outbox, publishes each with a message id
//!   (`Nats-Msg-Id: <node>-<boot>-<seq>`), keeps at most `window` confirmations
//!   pending, and puts back first any event whose confirmation failed (NATS away):
//!   the republication has the same id, and JetStream stores it once;
//! - *collecting* pulls the node's answers from JetStream (the stream
//!   [`super::ANSWERS_STREAM`], durable consumer `answers-<node>`: what apps answered
//!   while this bridge was away waits there) into a queue bounded by
//!   `--answers-buffer-bytes` (past it an answer is given back to the stream for later
//!   and counted: a node that reads slowly cannot make the bridge hold gigabytes);
//! - *answering* writes that queue to the node, and the shed answers, acknowledging
//!   each answer to JetStream once written (an answer whose call has ended, by the
//!   deadline it carries, is dropped and counted). An answer that
//!   names a transaction goes to the node only if the bridge read that transaction's
//!   suspend event and nobody answered it yet ([`super::expected`]): forged answers and
//!   second answers are dropped and counted. For the events' age bound after it starts,
//!   the bridge also writes answers naming transactions it did not see (its predecessor
//!   may have published them before a restart), counted as unverified; second answers
//!   are refused all along. Messages that name no transaction (an app's `send --node`)
//!   pass as they are: they cannot resume a call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self};
use async_nats::HeaderMap;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::expected::{Expected, MAX_EXPECTED};
use super::outbox::Outbox;
use super::{events_stream, events_subject};
use super::{LinkStatus, NatsError};
use super::{EVENT_MAX_AGE, NODE_HEADER};
use evapi_client::client::Client;
use evapi_client::respond::{Counts, Responder};

mod answers;
mod backoff;

use answers::{answers_consumer, AnswerQueue, ACKS_QUEUED};
use backoff::{PublishPause, Retrying};

/// Default bound of the outbox: events held while NATS does not confirm them.
pub const DEFAULT_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// After the node closes, how long the bridge keeps publishing what it holds.
const DRAIN: Duration = Duration::from_secs(5);
/// Pause before publishing again after NATS refused a publication outright.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// At most one "shedding" warning per this long (with the count since the last).
const SHED_LOG_EVERY: Duration = Duration::from_secs(5);
/// How long JetStream has to confirm a publication before it is tried again.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);
/// Default bound of answers from NATS waiting to be written to the node.
pub const DEFAULT_ANSWERS_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// At most one warning about dropped answers per this long (with the counts since).
const ANSWER_LOG_EVERY: Duration = Duration::from_secs(10);

/// How a bridge runs.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The node's name in subjects (see [`super::valid_node`]).
    pub node: String,
    /// Bytes of events held while JetStream has not confirmed them; past it new events
    /// are shed.
    pub buffer_bytes: usize,
    /// Publications awaiting confirmation at once.
    pub window: usize,
    /// Answer shed suspend events with this (e.g. 503); `None`: leave them to the
    /// node's own timer.
    pub shed: Option<Responder>,
    /// Bytes of answers from NATS waiting for the node; past it answers go back to the stream for a second later.
    pub answers_buffer_bytes: usize,
    /// Where transaction ids are in events and answers.
    pub ids: evapi_proto::answer::AnswerReader,
    /// Seal suspend events with this key, and take answers naming transactions this
    /// bridge did not see only when sealed with it (an earlier bridge of the node
    /// published their events), at any time instead of within `predecessor_grace`;
    /// see [`super::seal`]. Every bridge of a node needs the same key.
    pub seal: Option<Arc<super::seal::SealKey>>,
    /// For this long after the bridge starts, answers naming transactions it did not
    /// see are written (a predecessor may have published their events); later they are
    /// dropped. Default: the events' age bound.
    pub predecessor_grace: Duration,
    /// How long an event is of use after it is read: the node's `fr_inv_timer`. Past it
    /// the bridge drops the event instead of publishing it, sends it with this deadline
    /// (header [`super::DEADLINE_HEADER`]) so apps skip it, and sheds it before a live
    /// one. `None`: no deadline. Default: the events' age bound (120 s, Kamailio's
    /// default `fr_inv_timer`).
    pub event_ttl: Option<Duration>,
    /// How the events' stream is made (replicas, storage).
    pub stream: super::StreamSettings,
    /// Which answers naming no transaction are written to the node (none by default:
    /// they would steer its `message-received` route); with [`BridgeConfig::seal`],
    /// an allowed one needs its own seal too ([`super::seal::SealKey::seal_frame`]).
    pub untransacted: super::untransacted::UntransactedRules,
}

impl BridgeConfig {
    /// A bridge for `node` with the default bounds and no shed answer.
    #[must_use]
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            window: super::DEFAULT_WINDOW,
            shed: None,
            answers_buffer_bytes: DEFAULT_ANSWERS_BUFFER_BYTES,
            ids: evapi_proto::answer::AnswerReader::default(),
            seal: None,
            predecessor_grace: super::EVENT_MAX_AGE,
            event_ttl: Some(super::EVENT_MAX_AGE),
            stream: super::StreamSettings::default(),
            untransacted: super::untransacted::UntransactedRules::none(),
        }
    }
}

/// What a bridge did so far, and holds now: a snapshot ([`BridgeCounts::snapshot`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeStats {
    /// Events read from the node and accepted into the outbox.
    pub events: u64,
    /// Events JetStream confirmed.
    pub published: u64,
    /// Publications tried again after a failed confirmation.
    pub retries: u64,
    /// Events refused past `buffer_bytes`.
    pub shed: u64,
    /// Shed events answered with the shed code.
    pub shed_answered: u64,
    /// Answers from NATS for the node.
    pub answers: u64,
    /// Answers from NATS the node's framing could not carry (over `--max-frame`).
    pub answers_dropped: u64,
    /// Answers from NATS dropped because they name a transaction the bridge is not
    /// waiting for (forged, a second answer, or older than the events' age bound).
    pub answers_refused: u64,
    /// Of those, answers naming no transaction that no rule allows, or with a key,
    /// without their own seal.
    pub untransacted_refused: u64,
    /// Answers from NATS naming a transaction this bridge did not see, written because
    /// they carry a valid seal (an earlier bridge of the node published the event), or,
    /// without a seal key, because the bridge started less than `predecessor_grace`
    /// ago (the node's tm refuses any that name no live call).
    pub answers_unverified: u64,
    /// Answers from NATS given back to the stream (for later) because
    /// `answers_buffer_bytes` were waiting already.
    pub answers_shed: u64,
    /// Answers dropped because the deadline they carry (their event's) had passed: the
    /// call has ended at the node.
    pub answers_expired: u64,
    /// Answers JetStream delivered more than once: a bridge stopped or failed before
    /// acknowledging them, held them past the ack wait (5 s) while the node read
    /// slowly, or gave them back past `answers_buffer_bytes`. A second answer to a
    /// call is refused (here, or by the node).
    pub answers_redelivered: u64,
    /// Bytes of answers waiting for the node now.
    pub answers_buffered_bytes: u64,
    /// Bytes held in the outbox now.
    pub buffered_bytes: u64,
    /// Events held in the outbox now.
    pub buffered: u64,
    /// Events dropped because their deadline passed before JetStream took them.
    pub expired: u64,
    /// Milliseconds the oldest held event has waited (0: none held).
    pub oldest_held_ms: u64,
    /// Whether publications are failing now (NATS away, or a stream without a leader
    /// while a cluster elects one): the bridge is connected but cannot store events.
    pub failing: bool,
    /// Whether NATS is connected now.
    pub connected: bool,
    /// Times the NATS connection was lost.
    pub disconnects: u64,
}

/// Counters of a bridge, counted as it runs; [`BridgeStats`] is what callers read
/// ([`BridgeCounts::snapshot`]).
#[derive(Debug, Default)]
pub struct BridgeCounts {
    /// Events read from the node and accepted into the outbox.
    pub(crate) events: AtomicU64,
    /// Events JetStream confirmed.
    pub(crate) published: AtomicU64,
    /// Publications tried again after a failed confirmation.
    pub(crate) retries: AtomicU64,
    /// Events refused past `buffer_bytes`.
    pub(crate) shed: AtomicU64,
    /// Shed events answered with the shed code.
    pub(crate) shed_answered: AtomicU64,
    /// Answers from NATS for the node.
    pub(crate) answers: AtomicU64,
    /// Answers from NATS the node's framing could not carry (over `--max-frame`).
    pub(crate) answers_dropped: AtomicU64,
    /// Answers from NATS dropped because they name a transaction the bridge is not
    /// waiting for (forged, a second answer, or older than the events' age bound).
    pub(crate) answers_refused: AtomicU64,
    /// Of those, answers naming no transaction that no rule allows, or with a key,
    /// without their own seal.
    pub(crate) untransacted_refused: AtomicU64,
    /// Answers from NATS naming a transaction this bridge did not see, written because
    /// they carry a valid seal (an earlier bridge of the node published the event), or,
    /// without a seal key, because the bridge started less than `predecessor_grace`
    /// ago (the node's tm refuses any that name no live call).
    pub(crate) answers_unverified: AtomicU64,
    /// Answers from NATS given back to the stream (for later) because
    /// `answers_buffer_bytes` were waiting already.
    pub(crate) answers_shed: AtomicU64,
    /// Answers dropped because the deadline they carry (their event's) had passed: the
    /// call has ended at the node.
    pub(crate) answers_expired: AtomicU64,
    /// Answers JetStream delivered more than once: a bridge stopped or failed before
    /// acknowledging them, held them past the ack wait (5 s) while the node read
    /// slowly, or gave them back past `answers_buffer_bytes`. A second answer to a
    /// call is refused (here, or by the node).
    pub(crate) answers_redelivered: AtomicU64,
    /// Bytes of answers waiting for the node now.
    pub(crate) answers_buffered_bytes: AtomicU64,
    /// Bytes held in the outbox now.
    pub(crate) buffered_bytes: AtomicU64,
    /// Events held in the outbox now.
    pub(crate) buffered: AtomicU64,
    /// Events dropped because their deadline passed before JetStream took them.
    pub(crate) expired: AtomicU64,
    /// Milliseconds the oldest held event has waited (0: none held).
    pub(crate) oldest_held_ms: AtomicU64,
    /// Whether publications are failing now (NATS away, or a stream without a leader
    /// while a cluster elects one): the bridge is connected but cannot store events.
    pub(crate) failing: std::sync::atomic::AtomicBool,
    /// The NATS connection's state.
    pub(crate) link: Arc<LinkStatus>,
}

impl BridgeCounts {
    /// What the bridge did so far, and holds now.
    #[must_use]
    pub fn snapshot(&self) -> BridgeStats {
        BridgeStats {
            events: self.events.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            shed_answered: self.shed_answered.load(Ordering::Relaxed),
            answers: self.answers.load(Ordering::Relaxed),
            answers_dropped: self.answers_dropped.load(Ordering::Relaxed),
            answers_refused: self.answers_refused.load(Ordering::Relaxed),
            untransacted_refused: self.untransacted_refused.load(Ordering::Relaxed),
            answers_unverified: self.answers_unverified.load(Ordering::Relaxed),
            answers_shed: self.answers_shed.load(Ordering::Relaxed),
            answers_expired: self.answers_expired.load(Ordering::Relaxed),
            answers_redelivered: self.answers_redelivered.load(Ordering::Relaxed),
            answers_buffered_bytes: self.answers_buffered_bytes.load(Ordering::Relaxed),
            buffered_bytes: self.buffered_bytes.load(Ordering::Relaxed),
            buffered: self.buffered.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            oldest_held_ms: self.oldest_held_ms.load(Ordering::Relaxed),
            failing: self.failing.load(Ordering::Relaxed),
            connected: self.link.connected.load(Ordering::Relaxed),
            disconnects: self.link.disconnects.load(Ordering::Relaxed),
        }
    }

    /// The NATS connection's state, for [`crate::NatsOptions::connect`] to keep.
    #[must_use]
    pub fn link(&self) -> Arc<LinkStatus> {
        Arc::clone(&self.link)
    }

    fn held(&self, outbox: &mut Outbox) {
        self.buffered_bytes
            .store(outbox.bytes() as u64, Ordering::Relaxed);
        self.buffered.store(outbox.len() as u64, Ordering::Relaxed);
        self.expired
            .fetch_add(outbox.take_expired(), Ordering::Relaxed);
        let oldest = outbox
            .oldest_age(Instant::now())
            .map_or(0, |a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX));
        self.oldest_held_ms.store(oldest, Ordering::Relaxed);
        self.link.held.store(outbox.len() as u64, Ordering::Relaxed);
    }
}

/// Bridge one node: its events to NATS, its answers back, until `stop` or the node's
/// socket ends (then what is held is published for up to 5 s more).
///
/// Four tasks share one `Run`: `read_node` (the node's events into the outbox),
/// `publish_events` (the outbox to JetStream, confirmed), `collect_answers` (answers
/// from NATS into a bounded queue) and `write_answers` (that queue, checked against the
/// events published, to the node).
///
/// # Errors
///
/// The stream cannot be set up, the answers cannot be subscribed, or the node's
/// connection fails.
pub async fn bridge(
    node_conn: Client,
    nats: async_nats::Client,
    config: &BridgeConfig,
    counts: &BridgeCounts,
    stop: CancellationToken,
) -> Result<(), NatsError> {
    let mut js = jetstream::new(nats.clone());
    js.set_timeout(CONFIRM_TIMEOUT);
    let setup = super::setup_context(&nats);
    events_stream(&setup, EVENT_MAX_AGE, config.stream).await?;
    let answers = answers_consumer(&setup, &config.node, config.stream).await?;
    info!(node = %config.node, "taking answers from JetStream");
    let (reader, writer) = node_conn.split();
    let (shed_tx, shed_rx) = mpsc::channel::<Vec<u8>>(1024);
    let (acks, acks_rx) = mpsc::channel::<jetstream::Message>(ACKS_QUEUED);
    let run = Run {
        acks,
        config,
        counts,
        stop,
        outbox: Mutex::new(Outbox::new(config.buffer_bytes)),
        queued: Notify::new(),
        node_gone: CancellationToken::new(),
        expected: Mutex::new(Expected::new(super::EVENT_MAX_AGE, MAX_EXPECTED)),
        waiting: Mutex::new(AnswerQueue::default()),
        answer_arrived: Notify::new(),
    };
    let (read, (), (), answered, ()) = tokio::join!(
        run.read_node(reader, shed_tx),
        run.publish_events(&js),
        run.collect_answers(&setup, answers),
        run.write_answers(writer, shed_rx),
        run.ack_answers(acks_rx),
    );
    read.and(answered)
}

/// What the four tasks of one bridge share.
struct Run<'a> {
    config: &'a BridgeConfig,
    counts: &'a BridgeCounts,
    stop: CancellationToken,
    /// Events read from the node, until JetStream confirms them.
    outbox: Mutex<Outbox>,
    /// An event was queued in the outbox.
    queued: Notify,
    /// The node's socket ended.
    node_gone: CancellationToken,
    /// Transactions of events published and not yet answered.
    expected: Mutex<Expected>,
    /// Answers from NATS waiting for the node.
    waiting: Mutex<AnswerQueue>,
    /// An answer was queued.
    answer_arrived: Notify,
    /// Answers done with, to acknowledge to JetStream (by their own task: the writer
    /// to the node never waits on NATS).
    acks: mpsc::Sender<jetstream::Message>,
}

impl Run<'_> {
    /// How long before its deadline an event is given up: a twentieth of the event's
    /// life, between 50 ms and 1 s (the node's timer started a little before the bridge
    /// read the event, and the answer still has to travel back).
    fn margin(&self) -> Duration {
        self.config.event_ttl.map_or(Duration::ZERO, |ttl| {
            (ttl / 20).clamp(Duration::from_millis(50), Duration::from_secs(1))
        })
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn expecting(&self) -> std::sync::MutexGuard<'_, Expected> {
        self.expected.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn answers_waiting(&self) -> std::sync::MutexGuard<'_, AnswerQueue> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node's events into the outbox (shed past its bound, answered with the shed
    /// code when set), until `stop` or the end of the node's socket.
    async fn read_node(
        &self,
        mut reader: evapi_client::client::Reader,
        shed_tx: mpsc::Sender<Vec<u8>>,
    ) -> Result<(), NatsError> {
        let mut last_warning: Option<Instant> = None;
        let mut shed_since = 0u64;
        let ignored = Counts::default();
        let result = loop {
            let msg = tokio::select! {
                () = self.stop.cancelled() => break Ok(()),
                msg = reader.recv() => msg,
            };
            let msg = match msg {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    info!(node = %self.config.node, "the node closed its evapi socket");
                    break Ok(());
                }
                Err(e) => break Err(NatsError::Node(e)),
            };
            let len = msg.len();
            let id = transaction(&self.config.ids, &msg);
            let accepted = {
                let mut out = self.outbox();
                let now = Instant::now();
                let deadline = self.config.event_ttl.map(|ttl| now + ttl);
                let seq = out.offer(msg.clone(), deadline, now);
                if let Some((seq, id)) = seq.zip(id) {
                    out.set_ids(seq, id);
                }
                self.counts.held(&mut out);
                seq
            };
            if accepted.is_some() {
                self.counts.events.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = id {
                    self.expecting().event(id, Instant::now());
                }
                self.queued.notify_one();
                continue;
            }
            self.counts.shed.fetch_add(1, Ordering::Relaxed);
            shed_since += 1;
            if last_warning.is_none_or(|at| at.elapsed() >= SHED_LOG_EVERY) {
                warn!(
                    node = %self.config.node,
                    shed = shed_since,
                    buffered_bytes = self.outbox().bytes(),
                    event_bytes = len,
                    "NATS is not confirming and the buffer is full: shedding events"
                );
                last_warning = Some(Instant::now());
                shed_since = 0;
            }
            if let Some(answer) = self
                .config
                .shed
                .as_ref()
                .and_then(|r| r.answer(&msg, &ignored))
            {
                if shed_tx.try_send(answer).is_ok() {
                    self.counts.shed_answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        self.node_gone.cancel();
        result
    }

    /// The outbox to JetStream, up to the window of unconfirmed publications; what is
    /// not confirmed goes again. After `stop` or the node's end, for up to [`DRAIN`].
    async fn publish_events(&self, js: &jetstream::Context) {
        let subject = events_subject(&self.config.node);
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut confirming = FuturesUnordered::new();
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut retrying = Retrying::default();
        let mut backoff = PublishPause::default();
        loop {
            // Publish what is queued, up to the window; while publications fail (NATS
            // away, a stream electing its leader), one at a time after a pause.
            while confirming.len() < backoff.window(self.config.window.max(1))
                && backoff.may_publish(tokio::time::Instant::now())
            {
                let next = {
                    let mut out = self.outbox();
                    // An event this close to its deadline is not published: its answer
                    // could not reach the node in time.
                    let next = out.take_next(Instant::now() + self.margin());
                    self.counts.held(&mut out);
                    next.map(|next| {
                        let ids = out.ids(next.0);
                        (next, ids)
                    })
                };
                let Some(((seq, event, deadline), ids)) = next else {
                    break;
                };
                let headers = self.event_headers(boot, seq, deadline, ids);
                // Bounded: with NATS away the client's queue can fill and hold us.
                let publish = js.publish_with_headers(subject.clone(), headers, event);
                match tokio::time::timeout(CONFIRM_TIMEOUT, publish).await {
                    Ok(Ok(ack)) => confirming.push(async move { (seq, ack.await) }),
                    Ok(Err(e)) => {
                        let held = self.outbox().len();
                        retrying.note(&e.to_string(), &self.config.node, held);
                        self.outbox().failed(seq);
                        self.counts.retries.fetch_add(1, Ordering::Relaxed);
                        backoff.failed(tokio::time::Instant::now());
                        self.counts.failing.store(true, Ordering::Relaxed);
                    }
                    Err(_) => {
                        let held = self.outbox().len();
                        retrying.note("NATS is not taking publications", &self.config.node, held);
                        self.outbox().failed(seq);
                        self.counts.retries.fetch_add(1, Ordering::Relaxed);
                        backoff.failed(tokio::time::Instant::now());
                        self.counts.failing.store(true, Ordering::Relaxed);
                    }
                }
            }
            if self.node_gone.is_cancelled() || self.stop.is_cancelled() {
                let until = *drain_until.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN);
                if self.outbox().is_empty() || tokio::time::Instant::now() >= until {
                    let held = self.outbox().len();
                    if held > 0 {
                        warn!(held, "stopping with events JetStream has not confirmed");
                    }
                    return;
                }
            }
            tokio::select! {
                Some((seq, confirmation)) = confirming.next(), if !confirming.is_empty() => {
                    let mut out = self.outbox();
                    match confirmation {
                        Ok(_) => {
                            if out.confirmed(seq) {
                                self.counts.published.fetch_add(1, Ordering::Relaxed);
                            }
                            backoff.succeeded();
                        }
                        Err(e) => {
                            retrying.note(&format!("JetStream did not confirm an event: {e}"), &self.config.node, out.len());
                            out.failed(seq);
                            self.counts.retries.fetch_add(1, Ordering::Relaxed);
                            backoff.failed(tokio::time::Instant::now());
                        }
                    }
                    self.counts.held(&mut out);
                    self.counts.failing.store(backoff.is_failing(), Ordering::Relaxed);
                }
                () = evapi_ops::time::sleep_until(backoff.resume_at()) => {}
                () = self.queued.notified() => {}
                () = self.node_gone.cancelled(), if drain_until.is_none() => {}
                () = self.stop.cancelled(), if drain_until.is_none() => {}
                () = tokio::time::sleep(RETRY_PAUSE), if drain_until.is_some() => {}
            }
        }
    }
}

impl Run<'_> {
    /// The headers of event `seq` of this run (`boot`): its node, its message id (one
    /// stored copy per event), its deadline and, with a seal key, the seal of the
    /// transaction `ids` it names.
    fn event_headers(
        &self,
        boot: impl std::fmt::Display,
        seq: u64,
        deadline: Option<Instant>,
        ids: Option<evapi_proto::TransactionId>,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(NODE_HEADER, self.config.node.as_str());
        let deadline = deadline.and_then(wall_ms).map(|ms| ms.to_string());
        if let Some(ms) = &deadline {
            headers.insert(super::DEADLINE_HEADER, ms.as_str());
        }
        if let (Some(key), Some(ids)) = (&self.config.seal, ids) {
            let seal = key.seal(&self.config.node, ids, deadline.as_deref().unwrap_or(""));
            headers.insert(super::seal::SEAL_HEADER, seal.as_str());
        }
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}-{boot}-{seq}", self.config.node).as_str(),
        );
        headers
    }
}

/// The transaction an event names, if any.
fn transaction(
    ids: &evapi_proto::answer::AnswerReader,
    msg: &[u8],
) -> Option<evapi_proto::TransactionId> {
    match named(ids, msg) {
        Named::Transaction(id) => Some(id),
        Named::Nothing | Named::Unreadable => None,
    }
}

/// What a message says about a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    /// No transaction: not JSON (no evapi config resumes a call from it), or JSON
    /// without ids.
    Nothing,
    /// This one.
    Transaction(evapi_proto::TransactionId),
    /// JSON we cannot read (too deep, malformed, or text with a `{` in it), ids we
    /// cannot take (`6.0`, `"+6"`, out of range), or two id shapes naming different
    /// transactions: the node's JSON reader may find ids in it other than those the
    /// bridge checked, so an answer like this is never written.
    Unreadable,
}

/// What `msg` says about a transaction, its ids where `ids` looks for them.
fn named(ids: &evapi_proto::answer::AnswerReader, msg: &[u8]) -> Named {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(msg) else {
        // Plain text passes; anything that may hold an object (after a byte order
        // mark, say, for a lenient reader) does not.
        return if msg.contains(&b'{') {
            Named::Unreadable
        } else {
            Named::Nothing
        };
    };
    let id = match ids.ids(&value) {
        Ok(Some((id, _))) => id,
        Ok(None) => return Named::Nothing,
        Err(_) => return Named::Unreadable,
    };
    // The first shape found names `id`; a node reading another shape must find the
    // same ids there, or none.
    let agree = ids
        .candidates()
        .iter()
        .all(|shape| match shape.find(&value) {
            Ok(None) => true,
            Ok(Some(other)) => other == id,
            Err(_) => false,
        });
    if agree {
        Named::Transaction(id)
    } else {
        Named::Unreadable
    }
}

/// `at` on the wall clock, in milliseconds since the Unix epoch (for other hosts).
fn wall_ms(at: Instant) -> Option<u128> {
    let wall = SystemTime::now().checked_add(at.saturating_duration_since(Instant::now()))?;
    wall.duration_since(UNIX_EPOCH).ok().map(|d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers the bridge cannot read are not let through as "naming no transaction":
    /// the node's JSON reader may take ids from them that the bridge never checked
    /// (found in review: `"tlabel":6.0` resumed transaction 6 at Kamailio).
    #[test]
    fn what_an_answer_names() {
        let ids = evapi_proto::answer::AnswerReader::default();
        let id = |index, label| Named::Transaction(evapi_proto::TransactionId { index, label });
        assert_eq!(
            named(&ids, br#"{"tindex":"5","tlabel":6,"code":200}"#),
            id(5, 6)
        );
        assert_eq!(
            named(&ids, br#" {"data":{"index":5,"label":"6"}}"#),
            id(5, 6)
        );
        assert_eq!(named(&ids, b"hello node"), Named::Nothing);
        assert_eq!(named(&ids, br#"{"event":"hi"}"#), Named::Nothing);
        for unreadable in [
            &br#"{"tindex":5,"tlabel":6.0,"code":200}"#[..],
            br#"{"tindex":5,"tlabel":6e0}"#,
            br#"{"tindex":5,"tlabel":"+6"}"#,
            br#"{"tindex":5,"tlabel":-6}"#,
            br#"{"tindex":5,"tlabel":99999999999}"#,
            br#"{"tindex":5}"#,
            br#"{"tindex":5,"tlabel":6"#,
        ] {
            assert_eq!(
                named(&ids, unreadable),
                Named::Unreadable,
                "{}",
                String::from_utf8_lossy(unreadable)
            );
        }
        let deep = format!(
            r#"{{"tindex":1,"tlabel":1,"x":{}1{}}}"#,
            r#"{"a":"#.repeat(200),
            "}".repeat(200)
        );
        assert_eq!(named(&ids, deep.as_bytes()), Named::Unreadable, "too deep");
        // Two shapes, two transactions: the node may read either (found in review).
        assert_eq!(
            named(
                &ids,
                br#"{"tindex":1,"tlabel":1,"data":{"index":2,"label":2}}"#
            ),
            Named::Unreadable
        );
        assert_eq!(
            named(
                &ids,
                br#"{"tindex":1,"tlabel":1,"data":{"index":"1","label":1}}"#
            ),
            id(1, 1),
            "the same ids twice"
        );
        assert_eq!(
            named(&ids, "\u{feff}{\"tindex\":1,\"tlabel\":1}".as_bytes()),
            Named::Unreadable,
            "an object after a byte order mark"
        );
    }
}
