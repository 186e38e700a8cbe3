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
//! - *answering* writes to the node what arrives on `evapi.<node>.answers`, and the
//!   shed answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::outbox::Outbox;
use super::{answers_subject, events_stream, events_subject, nats_error, Link, NatsError};
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
    /// Bytes held in the outbox now.
    pub buffered_bytes: AtomicU64,
    /// Events held in the outbox now.
    pub buffered: AtomicU64,
    /// The NATS connection's state.
    pub link: Arc<Link>,
}

impl BridgeCounts {
    fn held(&self, outbox: &Outbox) {
        self.buffered_bytes
            .store(outbox.bytes() as u64, Ordering::Relaxed);
        self.buffered.store(outbox.len() as u64, Ordering::Relaxed);
    }
}

/// Bridge one node: its events to NATS, its answers back, until `stop` or the node's
/// socket ends (then what is held is published for up to 5 s more).
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
    events_stream(&js, EVENT_MAX_AGE).await?;
    let mut answers = nats
        .subscribe(answers_subject(&config.node))
        .await
        .map_err(nats_error)?;
    let (mut reader, mut writer) = node_conn.split();
    let outbox = Mutex::new(Outbox::new(config.buffer_bytes));
    let lock = || outbox.lock().unwrap_or_else(PoisonError::into_inner);
    let queued = Notify::new();
    let node_gone = CancellationToken::new();
    let (shed_tx, mut shed_rx) = mpsc::channel::<Vec<u8>>(1024);

    let reading = async {
        let mut last_warning: Option<Instant> = None;
        let mut shed_since = 0u64;
        let ignored = Counts::default();
        let result = loop {
            let msg = tokio::select! {
                () = stop.cancelled() => break Ok(()),
                msg = reader.recv() => msg,
            };
            let msg = match msg {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    info!(node = %config.node, "the node closed its evapi socket");
                    break Ok(());
                }
                Err(e) => break Err(NatsError::Node(e)),
            };
            let len = msg.len();
            let accepted = {
                let mut out = lock();
                let seq = out.offer(msg.clone());
                counts.held(&out);
                seq
            };
            if accepted.is_some() {
                counts.events.fetch_add(1, Ordering::Relaxed);
                queued.notify_one();
                continue;
            }
            counts.shed.fetch_add(1, Ordering::Relaxed);
            shed_since += 1;
            if last_warning.is_none_or(|at| at.elapsed() >= SHED_LOG_EVERY) {
                warn!(
                    node = %config.node,
                    shed = shed_since,
                    buffered_bytes = lock().bytes(),
                    event_bytes = len,
                    "NATS is not confirming and the buffer is full: shedding events"
                );
                last_warning = Some(Instant::now());
                shed_since = 0;
            }
            if let Some(answer) = config.shed.as_ref().and_then(|r| r.answer(&msg, &ignored)) {
                if shed_tx.try_send(answer).is_ok() {
                    counts.shed_answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        node_gone.cancel();
        result
    };

    let publishing = async {
        let subject = events_subject(&config.node);
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut confirming = FuturesUnordered::new();
        let mut drain_until: Option<tokio::time::Instant> = None;
        loop {
            // Publish what is queued, up to the window.
            while confirming.len() < config.window.max(1) {
                let Some((seq, event)) = lock().take_next() else {
                    break;
                };
                let mut headers = HeaderMap::new();
                headers.insert(NODE_HEADER, config.node.as_str());
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    format!("{}-{boot}-{seq}", config.node).as_str(),
                );
                // Bounded: with NATS away the client's queue can fill and hold us.
                let publish = js.publish_with_headers(subject.clone(), headers, event);
                match tokio::time::timeout(CONFIRM_TIMEOUT, publish).await {
                    Ok(Ok(ack)) => confirming.push(async move { (seq, ack.await) }),
                    Ok(Err(e)) => {
                        warn!(error = %e, "cannot publish to JetStream, retrying");
                        lock().failed(seq);
                        counts.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    Err(_) => {
                        warn!("NATS is not taking publications, retrying");
                        lock().failed(seq);
                        counts.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
            if node_gone.is_cancelled() || stop.is_cancelled() {
                let until = *drain_until.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN);
                if lock().is_empty() || tokio::time::Instant::now() >= until {
                    let held = lock().len();
                    if held > 0 {
                        warn!(held, "stopping with events JetStream has not confirmed");
                    }
                    return;
                }
            }
            tokio::select! {
                Some((seq, confirmation)) = confirming.next(), if !confirming.is_empty() => {
                    let mut out = lock();
                    match confirmation {
                        Ok(_) => {
                            if out.confirmed(seq) {
                                counts.published.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, seq, "JetStream did not confirm an event, publishing it again");
                            out.failed(seq);
                            counts.retries.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    counts.held(&out);
                }
                () = queued.notified() => {}
                () = node_gone.cancelled(), if drain_until.is_none() => {}
                () = stop.cancelled(), if drain_until.is_none() => {}
                () = tokio::time::sleep(RETRY_PAUSE), if drain_until.is_some() => {}
            }
        }
    };

    let answering = async {
        loop {
            let answer = tokio::select! {
                () = stop.cancelled() => return Ok::<(), NatsError>(()),
                () = node_gone.cancelled() => return Ok(()),
                msg = answers.next() => match msg {
                    Some(msg) => {
                        counts.answers.fetch_add(1, Ordering::Relaxed);
                        msg.payload
                    }
                    None => return Ok(()),
                },
                Some(shed) = shed_rx.recv() => Bytes::from(shed),
            };
            if let Err(e) = writer.send(&answer).await {
                if e.is_disconnect() {
                    return Err(e.into());
                }
                // Anyone allowed to publish on the answers subject can send anything:
                // a frame the node's framing cannot carry is dropped, not fatal.
                counts.answers_dropped.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, bytes = answer.len(), "answer from NATS not written to the node");
            }
        }
    };

    let (read, (), answered) = tokio::join!(reading, publishing, answering);
    read.and(answered)
}
