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

use async_nats::jetstream::{self, consumer::pull, AckKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::expected::{Expected, Verdict, MAX_EXPECTED};
use super::outbox::Outbox;
use super::{answers_stream, answers_subject, events_stream, events_subject};
use super::{nats_error, setup_error, Link, NatsError};
use super::{EVENT_MAX_AGE, NODE_HEADER};
use crate::client::Client;
use crate::respond::{Counts, Responder};

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
            predecessor_grace: super::EVENT_MAX_AGE,
            event_ttl: Some(super::EVENT_MAX_AGE),
            stream: super::StreamSettings::default(),
        }
    }
}

/// Counters of a bridge, read by its metrics and its exit line.
#[derive(Debug, Default)]
pub struct BridgeCounts {
    /// Events read from the node and accepted into the outbox.
    pub events: AtomicU64,
    /// Events JetStream confirmed.
    pub published: AtomicU64,
    /// Publications tried again after a failed confirmation.
    pub retries: AtomicU64,
    /// Events refused past `buffer_bytes`.
    pub shed: AtomicU64,
    /// Shed events answered with the shed code.
    pub shed_answered: AtomicU64,
    /// Answers from NATS for the node.
    pub answers: AtomicU64,
    /// Answers from NATS the node's framing could not carry (over `--max-frame`).
    pub answers_dropped: AtomicU64,
    /// Answers from NATS dropped because they name a transaction the bridge is not
    /// waiting for (forged, a second answer, or older than the events' age bound).
    pub answers_refused: AtomicU64,
    /// Answers from NATS naming a transaction this bridge did not see, written because
    /// the bridge started less than the events' age bound ago (a predecessor may have
    /// published the event; the node's tm refuses any that name no live call).
    pub answers_unverified: AtomicU64,
    /// Answers from NATS given back to the stream (for later) because
    /// `answers_buffer_bytes` were waiting already.
    pub answers_shed: AtomicU64,
    /// Answers dropped because the deadline they carry (their event's) had passed: the
    /// call has ended at the node.
    pub answers_expired: AtomicU64,
    /// Answers JetStream delivered more than once: a bridge stopped or failed before
    /// acknowledging them, held them past the ack wait (5 s) while the node read
    /// slowly, or gave them back past `answers_buffer_bytes`. A second answer to a
    /// call is refused (here, or by the node).
    pub answers_redelivered: AtomicU64,
    /// Bytes of answers waiting for the node now.
    pub answers_buffered_bytes: AtomicU64,
    /// Bytes held in the outbox now.
    pub buffered_bytes: AtomicU64,
    /// Events held in the outbox now.
    pub buffered: AtomicU64,
    /// Events dropped because their deadline passed before JetStream took them.
    pub expired: AtomicU64,
    /// Milliseconds the oldest held event has waited (0: none held).
    pub oldest_held_ms: AtomicU64,
    /// Whether publications are failing now (NATS away, or a stream without a leader
    /// while a cluster elects one): the bridge is connected but cannot store events.
    pub failing: std::sync::atomic::AtomicBool,
    /// The NATS connection's state.
    pub link: Arc<Link>,
}

impl BridgeCounts {
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
        mut reader: crate::client::Reader,
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
            let accepted = {
                let mut out = self.outbox();
                let now = Instant::now();
                let deadline = self.config.event_ttl.map(|ttl| now + ttl);
                let seq = out.offer(msg.clone(), deadline, now);
                self.counts.held(&mut out);
                seq
            };
            if accepted.is_some() {
                self.counts.events.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = transaction(&self.config.ids, &msg) {
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
        let mut backoff = Backoff::default();
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
                    next
                };
                let Some((seq, event, deadline)) = next else {
                    break;
                };
                let mut headers = HeaderMap::new();
                headers.insert(NODE_HEADER, self.config.node.as_str());
                if let Some(ms) = deadline.and_then(wall_ms) {
                    headers.insert(super::DEADLINE_HEADER, ms.to_string().as_str());
                }
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    format!("{}-{boot}-{seq}", self.config.node).as_str(),
                );
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

    /// Answers from JetStream into the queue for the node, within
    /// --answers-buffer-bytes (past it an answer goes back to the stream for a second
    /// later). Errors of the pull (NATS away, missed heartbeats) are waited out.
    async fn collect_answers(&self, js: &jetstream::Context, mut answers: pull::Stream) {
        let mut failing = Retrying::default();
        loop {
            let msg = tokio::select! {
                () = self.stop.cancelled() => return,
                () = self.node_gone.cancelled() => return,
                msg = answers.next() => match msg {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        failing.note_answers(&e.to_string(), &self.config.node);
                        continue;
                    }
                    // The consumer is gone (deleted, or its stream): made again, or
                    // no answer would reach the node any more.
                    None => match self.answers_again(js).await {
                        Some(again) => {
                            answers = again;
                            continue;
                        }
                        None => return,
                    },
                },
            };
            self.counts.answers.fetch_add(1, Ordering::Relaxed);
            if msg.info().is_ok_and(|i| i.delivered > 1) {
                self.counts
                    .answers_redelivered
                    .fetch_add(1, Ordering::Relaxed);
            }
            // What an entry holds: its message (payload, headers, where to acknowledge
            // it) and its own size.
            let cost = msg.payload.len() + msg.subject.len() + ANSWER_OVERHEAD;
            let past_bound = {
                let mut queue = self.answers_waiting();
                let past = queue.bytes + cost > self.config.answers_buffer_bytes;
                if past {
                    self.counts.answers_shed.fetch_add(1, Ordering::Relaxed);
                    queue.shed_since += 1;
                    Some(msg)
                } else {
                    queue.bytes += cost;
                    queue
                        .answers
                        .push_back((msg.payload.clone(), Some(msg), cost));
                    self.counts
                        .answers_buffered_bytes
                        .store(queue.bytes as u64, Ordering::Relaxed);
                    None
                }
            };
            if let Some(msg) = past_bound {
                let _ = msg.ack_with(AckKind::Nak(Some(ANSWER_LATER))).await;
                continue;
            }
            self.answer_arrived.notify_one();
        }
    }

    /// The queued answers (shed answers first) to the node, each checked against the
    /// transactions this bridge published; then each is confirmed to its app.
    async fn write_answers(
        &self,
        mut writer: crate::client::Writer,
        mut shed_rx: mpsc::Receiver<Vec<u8>>,
    ) -> Result<(), NatsError> {
        let mut last_report = Instant::now();
        let started = Instant::now();
        loop {
            let next = {
                let mut queue = self.answers_waiting();
                let next = queue.answers.pop_front();
                if let Some((_, _, cost)) = &next {
                    queue.bytes -= cost;
                    self.counts
                        .answers_buffered_bytes
                        .store(queue.bytes as u64, Ordering::Relaxed);
                }
                if last_report.elapsed() >= ANSWER_LOG_EVERY
                    && (queue.shed_since > 0 || queue.refused_since > 0)
                {
                    warn!(
                        node = %self.config.node,
                        refused = queue.refused_since,
                        shed = queue.shed_since,
                        every = ?ANSWER_LOG_EVERY,
                        "answers from NATS dropped: naming no transaction this bridge waits for (forged, second or late answers), or past --answers-buffer-bytes"
                    );
                    queue.shed_since = 0;
                    queue.refused_since = 0;
                    last_report = Instant::now();
                }
                next
            };
            // Shed answers first: they end calls at once, and a flood of answers from
            // NATS must not hold them back.
            if let Ok(shed) = shed_rx.try_recv() {
                if let Err(e) = writer.send(&shed).await {
                    if e.is_disconnect() {
                        return Err(e.into());
                    }
                }
                if let Some(answer) = next {
                    let mut queue = self.answers_waiting();
                    queue.bytes += answer.2;
                    queue.answers.push_front(answer);
                }
                continue;
            }
            let (answer, reply) = match next {
                Some((answer, reply, _)) => {
                    let ended = reply
                        .as_ref()
                        .is_some_and(|m| super::app::expired(&m.message, SystemTime::now()));
                    if ended {
                        // Its call has ended at the node: written, it would be refused.
                        self.counts.answers_expired.fetch_add(1, Ordering::Relaxed);
                        self.done(reply);
                        continue;
                    }
                    if let Some(id) = transaction(&self.config.ids, &answer) {
                        let verdict = self.expecting().answer(id, Instant::now());
                        let predecessor = started.elapsed() < self.config.predecessor_grace;
                        match verdict {
                            Verdict::Expected => {}
                            Verdict::Unknown if predecessor => {
                                self.counts
                                    .answers_unverified
                                    .fetch_add(1, Ordering::Relaxed);
                                // Remembered as answered: a second answer is refused.
                                self.expecting().answered(id, Instant::now());
                            }
                            Verdict::Duplicate | Verdict::Unknown => {
                                self.counts.answers_refused.fetch_add(1, Ordering::Relaxed);
                                self.answers_waiting().refused_since += 1;
                                // Decided: not to be delivered again.
                                self.done(reply);
                                continue;
                            }
                        }
                    }
                    (answer, reply)
                }
                None => tokio::select! {
                    () = self.stop.cancelled() => return Ok::<(), NatsError>(()),
                    () = self.node_gone.cancelled() => return Ok(()),
                    () = self.answer_arrived.notified() => continue,
                    Some(shed) = shed_rx.recv() => (Bytes::from(shed), None),
                },
            };
            if let Err(e) = writer.send(&answer).await {
                if e.is_disconnect() {
                    return Err(e.into());
                }
                // Anyone allowed to publish on the answers subject can send anything:
                // a frame the node's framing cannot carry is dropped, not fatal.
                self.counts.answers_dropped.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, bytes = answer.len(), "answer from NATS not written to the node");
            }
            // Written (or never writable): out of the stream.
            self.done(reply);
        }
    }
}

impl Run<'_> {
    /// The bridge is done with an answer (written, or dropped for good): acknowledged
    /// by [`Run::ack_answers`], never waited for here. Past [`ACKS_QUEUED`] waiting
    /// (NATS away) it is not acknowledged: it comes again after the ack wait, and the
    /// node refuses a second answer.
    fn done(&self, answer: Option<jetstream::Message>) {
        if let Some(msg) = answer {
            let _ = self.acks.try_send(msg);
        }
    }

    /// Acknowledge answers as they are done with, until the bridge stops (then what
    /// is queued, each within [`ACK_PUBLISH`]).
    async fn ack_answers(&self, mut acks: mpsc::Receiver<jetstream::Message>) {
        loop {
            let msg = tokio::select! {
                msg = acks.recv() => msg,
                () = self.stop.cancelled() => None,
                () = self.node_gone.cancelled() => None,
            };
            let Some(msg) = msg else { break };
            let _ = msg.ack().await;
        }
        while let Ok(msg) = acks.try_recv() {
            let _ = tokio::time::timeout(ACK_PUBLISH, msg.ack()).await;
        }
    }

    /// The answers' consumer again, after it ended: tried every second until made
    /// (`None`: the bridge stops meanwhile).
    async fn answers_again(&self, js: &jetstream::Context) -> Option<pull::Stream> {
        loop {
            warn!(node = %self.config.node, "the answers' consumer ended (deleted?): making it again");
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = self.node_gone.cancelled() => return None,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            match answers_consumer(js, &self.config.node, self.config.stream).await {
                Ok(answers) => {
                    warn!(node = %self.config.node, "the answers' consumer made again: answers flow");
                    return Some(answers);
                }
                Err(e) => {
                    warn!(node = %self.config.node, error = %e, "cannot make the answers' consumer yet")
                }
            }
        }
    }
}

/// The node's answers, from its durable consumer of the answers stream (created when
/// missing): whatever was published for the node and not yet acknowledged by one of
/// its bridges, in order.
async fn answers_consumer(
    js: &jetstream::Context,
    node: &str,
    settings: super::StreamSettings,
) -> Result<pull::Stream, NatsError> {
    let stream = answers_stream(js, settings).await?;
    let name = format!("answers-{node}");
    stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: answers_subject(node),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: ANSWER_ACK_WAIT,
                ..Default::default()
            },
        )
        .await
        .map_err(setup_error("the answers' JetStream consumer"))?
        .stream()
        .max_messages_per_batch(ANSWER_BATCH)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .map_err(nats_error("pull answers"))
}

/// Longest wait to hand an acknowledgement to the NATS client when stopping.
const ACK_PUBLISH: Duration = Duration::from_millis(100);
/// Acknowledgements waiting for the NATS client at most.
const ACKS_QUEUED: usize = 16 * 1024;
/// An answer taken by a bridge that then stopped is delivered again after this long.
const ANSWER_ACK_WAIT: Duration = Duration::from_secs(5);
/// Answers asked for at once from the stream.
const ANSWER_BATCH: usize = 1024;
/// An answer given back (the queue for the node was full) comes again after this long.
const ANSWER_LATER: Duration = Duration::from_secs(1);
/// What an answer waiting for the node costs besides its payload and reply subject.
const ANSWER_OVERHEAD: usize = 64;

/// Answers from NATS waiting for the node (with where to confirm each), and what was
/// dropped since the last warning.
#[derive(Debug, Default)]
struct AnswerQueue {
    answers: std::collections::VecDeque<(Bytes, Option<jetstream::Message>, usize)>,
    bytes: usize,
    shed_since: u64,
    refused_since: u64,
}

/// The transaction a message names (an event's or an answer's ids), if any.
fn transaction(
    ids: &evapi_proto::answer::AnswerReader,
    msg: &[u8],
) -> Option<evapi_proto::TransactionId> {
    let value: serde_json::Value = serde_json::from_slice(msg).ok()?;
    ids.ids(&value).ok().flatten().map(|(id, _)| id)
}

/// `at` on the wall clock, in milliseconds since the Unix epoch (for other hosts).
fn wall_ms(at: Instant) -> Option<u128> {
    let wall = SystemTime::now().checked_add(at.saturating_duration_since(Instant::now()))?;
    wall.duration_since(UNIX_EPOCH).ok().map(|d| d.as_millis())
}

/// Publishing while JetStream refuses (a cluster electing a stream leader answers at
/// once, "no responders"): after a failure, a pause that doubles from
/// [`BACKOFF_FIRST`] to [`BACKOFF_MAX`], then one publication at a time until one is
/// confirmed, then the whole window again. A failover costs a few retries a second,
/// not a storm of the whole window republished as fast as refusals come back.
#[derive(Debug, Default)]
struct Backoff {
    pause: Option<Duration>,
    resume_at: Option<tokio::time::Instant>,
}

/// The first pause after a failed publication.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// The longest pause (the stall a recovery may add).
const BACKOFF_MAX: Duration = Duration::from_millis(400);

impl Backoff {
    /// A publication failed at `now`: pause (the pause doubles, unless a pause is
    /// already running: the other publications in flight fail with the same cause).
    fn failed(&mut self, now: tokio::time::Instant) {
        if self.resume_at.is_some_and(|at| at > now) {
            return;
        }
        let pause = self
            .pause
            .map_or(BACKOFF_FIRST, |p| (p * 2).min(BACKOFF_MAX));
        self.pause = Some(pause);
        self.resume_at = Some(now + pause);
    }

    /// A publication was confirmed: the whole window again.
    fn succeeded(&mut self) {
        self.pause = None;
        self.resume_at = None;
    }

    fn is_failing(&self) -> bool {
        self.pause.is_some()
    }

    /// Publications in flight allowed: `window`, or one while failing.
    fn window(&self, window: usize) -> usize {
        if self.is_failing() {
            1
        } else {
            window
        }
    }

    /// Whether the pause is over at `now`.
    fn may_publish(&self, now: tokio::time::Instant) -> bool {
        self.resume_at.is_none_or(|at| now >= at)
    }

    /// When the running pause ends (`None`: none running).
    fn resume_at(&self) -> Option<tokio::time::Instant> {
        self.resume_at
            .filter(|at| *at > tokio::time::Instant::now())
    }
}

/// How often the bridge says that publications are being retried.
const RETRY_LOG_EVERY: Duration = Duration::from_secs(5);

/// Failed publications, said as one line per [`RETRY_LOG_EVERY`] with the count and the
/// last reason, never one line per event.
#[derive(Debug, Default)]
struct Retrying {
    since_log: u64,
    logged: Option<Instant>,
}

impl Retrying {
    /// Pulling answers failed for `why` (NATS away): said once per
    /// [`RETRY_LOG_EVERY`] with the count.
    fn note_answers(&mut self, why: &str, node: &str) {
        self.since_log += 1;
        if self.logged.is_none_or(|at| at.elapsed() >= RETRY_LOG_EVERY) {
            warn!(node, failures = self.since_log, last_error = why, every = ?RETRY_LOG_EVERY, "pulling answers from JetStream failed; trying on");
            self.since_log = 0;
            self.logged = Some(Instant::now());
        }
    }

    /// A publication failed for `why`; `held`: events held now (the caller may hold
    /// the outbox's lock, so it is passed in).
    fn note(&mut self, why: &str, node: &str, held: usize) {
        self.since_log += 1;
        if self.logged.is_none_or(|at| at.elapsed() >= RETRY_LOG_EVERY) {
            warn!(
                node,
                retries = self.since_log,
                held,
                last_error = why,
                every = ?RETRY_LOG_EVERY,
                "publishing to JetStream again (NATS away or not confirming)"
            );
            self.since_log = 0;
            self.logged = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refusals pause publishing (the pause doubling to its cap, not pushed further by
    /// the other refusals of the same moment), one probe at a time, then the whole
    /// window once a publication is confirmed.
    #[test]
    fn refusals_pause_then_probe_then_open_the_window() {
        let t0 = tokio::time::Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.window(4096), 4096);
        assert!(b.may_publish(t0));
        b.failed(t0);
        b.failed(t0 + Duration::from_millis(1));
        assert_eq!(
            b.resume_at,
            Some(t0 + BACKOFF_FIRST),
            "one pause for a burst"
        );
        assert!(!b.may_publish(t0 + Duration::from_millis(49)));
        assert!(b.may_publish(t0 + BACKOFF_FIRST));
        assert_eq!(b.window(4096), 1, "a probe");
        let mut at = t0 + BACKOFF_FIRST;
        for _ in 0..10 {
            b.failed(at);
            at = b.resume_at.unwrap();
        }
        assert_eq!(b.pause, Some(BACKOFF_MAX), "capped");
        b.succeeded();
        assert_eq!(b.window(4096), 4096);
        assert!(b.may_publish(at) && !b.is_failing());
    }
}
