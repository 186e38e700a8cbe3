//! The app side: events from NATS, answers routed back to the node that sent each one.
//!
//! [`NatsApp`] is the library API (a stream of [`NatsEvent`]s and `answer(event, ..)`).
//! [`app_io`] puts a `NatsApp` behind an in-process pipe that behaves like an evapi
//! socket, so every client command (listen, run, repl, send) works over NATS unchanged:
//! events arrive as frames, and a frame the app writes is routed by the transaction ids
//! in it to the node whose event carried them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::pull, AckKind};
use bytes::Bytes;
use futures_util::StreamExt;
use tracing::{debug, info, warn};

use super::{
    answers_stream, answers_subject, events_stream, nats_error, setup_error, valid_node, NatsError,
    NatsErrorKind, NatsOptions,
};
use super::{StreamSettings, CONSUMER, DEADLINE_HEADER, EVENT_MAX_AGE, NODE_HEADER};
use evapi_client::suspend::SuspendMatcher;

mod pipe;
mod respond;

pub use pipe::app_io;
pub use pipe::{over_nats, NatsRoute};
pub use respond::respond;

/// How an app takes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppMode {
    /// As one of the instances sharing the work queue: each event goes to one app,
    /// which answers (or it is redelivered to another after the ack wait).
    #[default]
    Take,
    /// Watch every event without taking it (the responders still get them).
    Observe,
}

/// An app's connection to NATS, for [`app_io`].
#[derive(Debug, Clone, Default)]
pub struct AppConfig {
    /// The NATS server and credentials.
    pub nats: NatsOptions,
    /// Take or watch.
    pub mode: AppMode,
    /// Watching: only this node's events. Taking: where frames that answer no taken
    /// event go (a message to the node's `evapi:message-received`).
    pub node: Option<String>,
    /// Where suspend events keep their transaction ids.
    pub matcher: SuspendMatcher,
    /// An event taken and not answered within this long goes to another app
    /// (zero: [`DEFAULT_ACK_WAIT`](crate::DEFAULT_ACK_WAIT)).
    pub ack_wait: Duration,
}

/// One event, from one node.
#[derive(Debug)]
pub struct NatsEvent {
    /// The node that sent it.
    pub node: String,
    /// The event as the node wrote it.
    pub payload: Bytes,
    msg: Option<jetstream::Message>,
}

enum Source {
    Take(Box<pull::Stream>),
    Observe(async_nats::Subscriber),
    /// No longer taking or watching (see [`NatsApp::stop_taking`]).
    Stopped,
}

/// Events from NATS and the way back to their nodes.
pub struct NatsApp {
    nats: async_nats::Client,
    /// Where answers are published (and stored until their bridge writes them).
    js: jetstream::Context,
    source: Source,
    /// Events skipped (acknowledged unanswered) because their deadline had passed.
    expired: u64,
}

impl std::fmt::Debug for NatsApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("takes", &matches!(self.source, Source::Take(_)))
            .finish_non_exhaustive()
    }
}

impl NatsApp {
    /// Take events as one of the apps sharing the work queue (the durable consumer
    /// [`CONSUMER`], created when missing with `ack_wait`).
    ///
    /// # Errors
    ///
    /// JetStream refuses the stream or the consumer.
    pub async fn take(nats: async_nats::Client, ack_wait: Duration) -> Result<Self, NatsError> {
        Self::take_at_most(
            nats,
            ack_wait,
            DEFAULT_MAX_IN_FLIGHT,
            StreamSettings::default(),
        )
        .await
    }

    /// [`NatsApp::take`], with the stream made as `settings` say (see [`StreamSettings`]),
    /// holding at most about `max_in_flight` events at once: each pull
    /// from the work queue asks for that many (async-nats asks for 200 by default), so
    /// a slow app takes only what it can work on and the rest go to the other apps.
    ///
    /// # Errors
    ///
    /// JetStream refuses the stream or the consumer.
    pub async fn take_at_most(
        nats: async_nats::Client,
        ack_wait: Duration,
        max_in_flight: usize,
        settings: StreamSettings,
    ) -> Result<Self, NatsError> {
        let js = answers_context(&nats);
        let setup = super::setup_context(&nats);
        let stream = events_stream(&setup, EVENT_MAX_AGE, settings).await?;
        answers_stream(&setup, settings).await?;
        let consumer = stream
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.to_owned()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait,
                    max_ack_pending: settings.max_ack_pending.unwrap_or_default(),
                    ..Default::default()
                },
            )
            .await
            .map_err(setup_error(
                NatsErrorKind::Consumer,
                "the JetStream consumer",
            ))?;
        warn_if_settled_otherwise(&consumer.cached_info().config, ack_wait, settings);
        let messages = consumer
            .stream()
            .max_messages_per_batch(max_in_flight.max(1))
            .heartbeat(Duration::from_secs(15))
            .messages()
            .await
            .map_err(nats_error(NatsErrorKind::Subscribe, "pull events"))?;
        // Scripts and tests wait for this line rather than sleeping (readiness).
        info!(consumer = CONSUMER, "taking events from JetStream");
        Ok(Self {
            nats,
            js,
            source: Source::Take(Box::new(messages)),
            expired: 0,
        })
    }

    /// Watch the events of `node` (every node when `None`) without taking them.
    ///
    /// # Errors
    ///
    /// NATS refuses the subscription.
    pub async fn observe(nats: async_nats::Client, node: Option<&str>) -> Result<Self, NatsError> {
        let subject = super::events_subject(node.unwrap_or("*"));
        let sub = nats
            .subscribe(subject.clone())
            .await
            .map_err(nats_error(NatsErrorKind::Subscribe, "subscribe"))?;
        // The server knows the subscription once the flush returns: events published
        // from now on are seen.
        tokio::time::timeout(FLUSH_PATIENCE, nats.flush())
            .await
            .map_err(|e| NatsError::Nats {
                kind: NatsErrorKind::Flush,
                what: "flush: NATS did not answer".to_owned(),
                source: e.into(),
            })?
            .map_err(nats_error(NatsErrorKind::Flush, "flush"))?;
        info!(%subject, "watching events");
        Ok(Self {
            js: answers_context(&nats),
            nats,
            source: Source::Observe(sub),
            expired: 0,
        })
    }

    /// Events skipped so far because their deadline had passed (their calls had ended).
    #[must_use]
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// Whether events are taken (and must be answered or acknowledged).
    #[must_use]
    pub fn takes(&self) -> bool {
        matches!(self.source, Source::Take(_))
    }

    /// The next event; `None` when the subscription ends. Errors of the pull (NATS
    /// away, missed heartbeats) are logged and waited out: async-nats reconnects.
    pub async fn next(&mut self) -> Option<NatsEvent> {
        loop {
            match &mut self.source {
                Source::Take(stream) => match stream.next().await? {
                    Ok(msg) => {
                        // With less than this left, an answer would reach the node late.
                        if expired(&msg.message, SystemTime::now() + DEADLINE_MARGIN) {
                            // Its call has ended at the node: an answer would be
                            // refused, and would take an app's time from live calls.
                            self.expired += 1;
                            debug!(subject = %msg.subject, "event past its deadline, skipped");
                            let _ = msg.ack().await;
                            continue;
                        }
                        let (node, payload) = node_of(&msg.message);
                        if let Some(node) = node {
                            return Some(NatsEvent {
                                node,
                                payload,
                                msg: Some(msg),
                            });
                        }
                        warn!(subject = %msg.subject, "event without a node name, dropped");
                        let _ = msg.ack().await;
                    }
                    Err(e) => {
                        warn!(error = %e, "taking events from JetStream");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                Source::Stopped => return None,
                Source::Observe(sub) => {
                    let msg = sub.next().await?;
                    let (node, payload) = node_of(&msg);
                    match node {
                        Some(node) => {
                            return Some(NatsEvent {
                                node,
                                payload,
                                msg: None,
                            })
                        }
                        None => warn!(subject = %msg.subject, "event without a node name"),
                    }
                }
            }
        }
    }

    /// Send `answer` to the node of `event` and acknowledge the event once the node's
    /// bridge confirms it has the answer; see [`confirm_answer`].
    ///
    /// # Errors
    ///
    /// No bridge confirmed the answer (the event was given back), or NATS fails.
    pub async fn answer(
        &self,
        event: &NatsEvent,
        answer: impl Into<Bytes>,
    ) -> Result<(), NatsError> {
        confirm_answer(&self.js, event, answer.into()).await
    }

    /// Wait until the NATS server has everything sent so far, at most
    /// [`FLUSH_PATIENCE`] (with NATS away it would wait for its return: a stopping app
    /// must not hang on it).
    ///
    /// # Errors
    ///
    /// NATS fails, or does not answer in time.
    pub async fn flush(&self) -> Result<(), NatsError> {
        match tokio::time::timeout(FLUSH_PATIENCE, self.nats.flush()).await {
            Ok(flushed) => flushed.map_err(nats_error(NatsErrorKind::Flush, "flush")),
            Err(elapsed) => Err(NatsError::Nats {
                kind: NatsErrorKind::Flush,
                what: format!("flush: NATS did not answer within {FLUSH_PATIENCE:?}"),
                source: elapsed.into(),
            }),
        }
    }

    /// Send `payload` to `node` (its bridge writes it to the node's socket); returns
    /// once the NATS server has it.
    ///
    /// # Errors
    ///
    /// NATS fails.
    pub async fn send(&self, node: &str, payload: impl Into<Bytes>) -> Result<(), NatsError> {
        self.nats
            .publish(answers_subject(node), payload.into())
            .await
            .map_err(nats_error(NatsErrorKind::Publish, "publish"))?;
        self.flush().await
    }

    /// Stop taking, and give back (negative acknowledgement: redelivered to another app
    /// at once) the events already pulled for this app and not yet handed out: the ones
    /// buffered, and those that arrive within `patience` (a pull asked for them), at
    /// most `at_most` (one pull's batch: the stream would otherwise keep pulling more,
    /// only to give them back). They are collected first and given back once the pull
    /// has ended, so the server cannot hand them straight back to this app. Returns how
    /// many went back.
    pub async fn give_back_pulled(&mut self, patience: Duration, at_most: usize) -> u64 {
        let mut pulled = Vec::new();
        if let Source::Take(stream) = &mut self.source {
            let until = tokio::time::Instant::now() + patience;
            while pulled.len() < at_most {
                match tokio::time::timeout_at(until, stream.next()).await {
                    Ok(Some(Ok(msg))) => pulled.push(msg),
                    _ => break,
                }
            }
        }
        self.stop_taking().await;
        for msg in &pulled {
            let _ = msg.ack_with(AckKind::Nak(None)).await;
        }
        pulled.len() as u64
    }

    /// Take no more events: the pull subscription ends, and once the server knows it
    /// (flushed) it hands this app nothing more. Call it before giving events back, or
    /// the server may hand them straight back to this app's pending pull.
    pub async fn stop_taking(&mut self) {
        self.source = Source::Stopped;
        let _ = self.flush().await;
    }

    /// Acknowledge `event` without answering it (it was not a suspend event).
    ///
    /// # Errors
    ///
    /// NATS fails.
    pub async fn ack(&self, event: &NatsEvent) -> Result<(), NatsError> {
        match &event.msg {
            Some(msg) => msg.ack().await.map_err(nats_error(
                NatsErrorKind::Acknowledge,
                "acknowledge an event",
            )),
            None => Ok(()),
        }
    }

    /// Give `event` back: it is redelivered (to another app) at once.
    ///
    /// # Errors
    ///
    /// NATS fails.
    pub async fn give_back(&self, event: &NatsEvent) -> Result<(), NatsError> {
        match &event.msg {
            Some(msg) => msg
                .ack_with(AckKind::Nak(None))
                .await
                .map_err(nats_error(NatsErrorKind::Acknowledge, "give an event back")),
            None => Ok(()),
        }
    }
}

/// An event whose answer JetStream did not store comes again after this long.
const ANSWER_RETRY: Duration = Duration::from_millis(500);
/// The longest wait for NATS to confirm what an app sent ([`NatsApp::flush`]).
pub const FLUSH_PATIENCE: Duration = Duration::from_secs(2);
/// How long an app waits for JetStream to store an answer before it gives the event
/// back (to be redelivered and answered again).
pub const ANSWER_CONFIRM: Duration = Duration::from_secs(2);
/// Answers waiting for their confirmation at once in one responder; past it the
/// responder waits for the oldest before taking the next event.
const CONFIRMING_MAX: usize = 1024;

/// How long a stopping app waits for events a pull already asked for, to give them
/// back rather than leave them to the ack wait.
const GIVE_BACK_PATIENCE: Duration = Duration::from_millis(200);

/// How an app takes events: the ack wait, events in hand at once, the stream's settings.
#[derive(Debug, Clone, Copy)]
pub struct Taking {
    /// An event taken and not answered within this long goes to another app.
    pub ack_wait: Duration,
    /// Events in hand at once.
    pub max_in_flight: usize,
    /// How the stream and the consumer are made.
    pub stream: StreamSettings,
}

/// Events an app holds at once by default (taken, not yet answered and confirmed).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// Publish `answer` for the node of `event` to JetStream (the stream
/// [`super::ANSWERS_STREAM`]), and acknowledge the event only once JetStream has stored
/// it: the answer then waits in the stream for the node's bridge, even one that is
/// restarting, and is written to the node once. Its message id names the event
/// (`answer-<node>-<event's stream sequence>`), so a second answer to the same event
/// (it was redelivered to another app) is stored once, not twice; the event's deadline
/// goes with it, and a bridge drops an answer whose call has ended. When JetStream does
/// not confirm within [`ANSWER_CONFIRM`] (NATS away), the event is given back and
/// redelivered, so an answer is never lost while its event is acknowledged.
///
/// # Errors
///
/// JetStream did not store the answer (the event was given back).
pub async fn confirm_answer(
    js: &jetstream::Context,
    event: &NatsEvent,
    answer: Bytes,
) -> Result<(), NatsError> {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(msg) = &event.msg {
        // The event's own id (`<node>-<boot>-<seq>`, unique even if the stream is made
        // again), else its place in the stream.
        let event_id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .or_else(|| {
                msg.info()
                    .ok()
                    .map(|i| format!("{}-{}", event.node, i.stream_sequence))
            });
        if let Some(event_id) = event_id {
            let id = format!("answer-{event_id}");
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        }
        if let Some(deadline) = msg.headers.as_ref().and_then(|h| h.get(DEADLINE_HEADER)) {
            headers.insert(DEADLINE_HEADER, deadline.as_str());
        }
        // The bridge's proof that the event's transaction was suspended at the node.
        if let Some(seal) = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(super::seal::SEAL_HEADER))
        {
            headers.insert(super::seal::SEAL_HEADER, seal.as_str());
        }
    }
    let stored = async {
        js.publish_with_headers(answers_subject(&event.node), headers, answer)
            .await?
            .await
            .map_err(async_nats::Error::from)
    };
    match stored.await {
        Ok(_) => match &event.msg {
            Some(msg) => msg.ack().await.map_err(nats_error(
                NatsErrorKind::Acknowledge,
                "acknowledge an event",
            )),
            None => Ok(()),
        },
        Err(e) => {
            if let Some(msg) = &event.msg {
                // Not at once: JetStream is away or full, and would refuse it again.
                let _ = msg.ack_with(AckKind::Nak(Some(ANSWER_RETRY))).await;
            }
            Err(NatsError::Nats {
                kind: NatsErrorKind::Publish,
                what: format!(
                    "store the answer for node {} (JetStream did not confirm; the event is given back)",
                    event.node
                ),
                source: e,
            })
        }
    }
}

/// A JetStream context whose publications wait at most [`ANSWER_CONFIRM`] for their
/// confirmation.
fn answers_context(nats: &async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(nats.clone());
    js.set_timeout(ANSWER_CONFIRM);
    js
}

/// The node an event came from (its header, else its subject) and its payload.
/// How long before an event's deadline an app gives it up (skips it): the answer has to
/// travel to the node's bridge and be written.
pub(crate) const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// Whether `msg` carries a deadline (header [`DEADLINE_HEADER`]) that has passed at
/// `now`. An unreadable deadline counts as none: the event is answered.
pub(super) fn expired(msg: &async_nats::Message, now: SystemTime) -> bool {
    let Some(ms) = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(DEADLINE_HEADER))
        .and_then(|v| v.as_str().parse::<u64>().ok())
    else {
        return false;
    };
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .is_some_and(|deadline| deadline <= now)
}

fn node_of(msg: &async_nats::Message) -> (Option<String>, Bytes) {
    let node = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(NODE_HEADER))
        .map(|v| v.as_str().to_owned())
        .or_else(|| msg.subject.split('.').nth(1).map(str::to_owned))
        .filter(|n| valid_node(n));
    (node, msg.payload.clone())
}

/// The apps' consumer is shared by the fleet and made by the first app: an app asking
/// for another ack wait or `max_ack_pending` does not change it (each app would undo
/// the last one's); say so, with how to change it.
fn warn_if_settled_otherwise(
    existing: &jetstream::consumer::Config,
    ack_wait: Duration,
    settings: StreamSettings,
) {
    let pending_differs = settings
        .max_ack_pending
        .is_some_and(|asked| asked != existing.max_ack_pending);
    if existing.ack_wait != ack_wait || pending_differs {
        warn!(
            consumer = CONSUMER,
            ack_wait = ?existing.ack_wait,
            max_ack_pending = existing.max_ack_pending,
            asked_ack_wait = ?ack_wait,
            asked_max_ack_pending = ?settings.max_ack_pending,
            "the apps' JetStream consumer exists with other settings, kept for the whole fleet (--ack-wait and --max-ack-pending apply when it is made); change them with `nats consumer edit EVAPI_EVENTS {CONSUMER}`"
        );
    }
}
