//! The answers' side of a bridge: collected from JetStream, queued within a byte
//! bound, written to the node, acknowledged once written.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer::pull, AckKind};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::warn;

use super::backoff::Retrying;
use super::{named, Named, Run, ANSWER_LOG_EVERY, DRAIN};
use crate::expected::Admission;
use crate::seal::SEAL_HEADER;
use crate::DEADLINE_HEADER;
use crate::{answers_stream, answers_subject, nats_error, setup_error, NatsError, NatsErrorKind};

impl Run<'_> {
    /// Answers from JetStream into the queue for the node, within
    /// --answers-buffer-bytes (past it an answer goes back to the stream for a second
    /// later). Errors of the pull (NATS away, missed heartbeats) are waited out.
    pub(super) async fn collect_answers(&self, js: &jetstream::Context, mut answers: pull::Stream) {
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
            // (Headers included: an answer of empty payload and large headers costs
            // what it holds.)
            let cost = msg.length.max(msg.payload.len()) + msg.subject.len() + ANSWER_OVERHEAD;
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
    pub(super) async fn write_answers(
        &self,
        mut writer: evapi_client::client::Writer,
        mut shed_rx: mpsc::Receiver<Vec<u8>>,
    ) -> Result<(), NatsError> {
        let mut last_report = Instant::now();
        let started = Instant::now();
        loop {
            let next = self.next_answer(&mut last_report);
            // Shed answers first: they end calls at once, and a flood of answers from
            // NATS must not hold them back.
            if let Ok(shed) = shed_rx.try_recv() {
                let Some(written) = self.write_to_node(&mut writer, &shed).await else {
                    return Ok(());
                };
                if let Err(e) = written {
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
                Some((answer, reply, _)) => match self.admit(answer, reply, started) {
                    Some(admitted) => admitted,
                    None => continue,
                },
                None => tokio::select! {
                    () = self.stop.cancelled() => return Ok::<(), NatsError>(()),
                    () = self.node_gone.cancelled() => return Ok(()),
                    () = self.answer_arrived.notified() => continue,
                    Some(shed) = shed_rx.recv() => (Bytes::from(shed), None),
                },
            };
            let Some(written) = self.write_to_node(&mut writer, &answer).await else {
                // Not written: left unacknowledged, the stream delivers it again.
                return Ok(());
            };
            if let Err(e) = written {
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

    /// Write `bytes` to the node: `None` when the bridge is told to stop and the node
    /// has not taken them within [`DRAIN`] of it (a node that stopped reading must not
    /// hold the bridge's stop for ever; what is not written stays in the stream).
    async fn write_to_node(
        &self,
        writer: &mut evapi_client::client::Writer,
        bytes: &[u8],
    ) -> Option<Result<(), crate::ClientError>> {
        let given_up = async {
            self.stop.cancelled().await;
            tokio::time::sleep(DRAIN).await;
        };
        tokio::select! {
            written = writer.send(bytes) => Some(written),
            () = given_up => {
                warn!(node = %self.config.node, bytes = bytes.len(), "the node has not read for {DRAIN:?} after the stop: the bridge stops without writing the rest (left in the stream)");
                None
            }
        }
    }

    /// The oldest queued answer, out of the queue; and, once per [`ANSWER_LOG_EVERY`]
    /// since `last_report`, one line saying how many were dropped meanwhile.
    fn next_answer(&self, last_report: &mut Instant) -> Option<Queued> {
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
                naming_no_transaction = queue.untransacted_since,
                shed = queue.shed_since,
                every = ?ANSWER_LOG_EVERY,
                "answers from NATS dropped: naming no transaction this bridge waits for (forged, second or late answers), naming no transaction at all and not allowed (--allow-untransacted) or not sealed, or past --answers-buffer-bytes"
            );
            queue.shed_since = 0;
            queue.refused_since = 0;
            queue.untransacted_since = 0;
            *last_report = Instant::now();
        }
        next
    }

    /// The answer as it may be written to the node, or `None` (counted, and done with)
    /// when its call has ended, it cannot be read (ids the node might read otherwise),
    /// it lacks a valid seal (with a seal key), or it names no transaction this bridge
    /// waits for (a forged or second answer). Ids the bridge did not see pass, counted
    /// as a predecessor's, when sealed, or, without a key, within the predecessor's
    /// grace from `started`.
    fn admit(
        &self,
        answer: Bytes,
        reply: Option<jetstream::Message>,
        started: Instant,
    ) -> Option<(Bytes, Option<jetstream::Message>)> {
        let ended = reply
            .as_ref()
            .is_some_and(|m| crate::app::expired(&m.message, SystemTime::now()));
        if ended {
            // Its call has ended at the node: written, it would be refused.
            self.counts.answers_expired.fetch_add(1, Ordering::Relaxed);
            self.done(reply);
            return None;
        }
        let id = match named(&self.config.ids, &answer) {
            Named::Nothing => return self.admit_untransacted(answer, reply),
            Named::Transaction(id) => id,
            Named::Unreadable => {
                self.refuse(reply);
                return None;
            }
        };
        // With a seal key every answer naming a transaction carries its event's seal,
        // checked before the answer counts (a forged one must not use up the call).
        if let Some(key) = &self.config.seal {
            let headers = reply.as_ref().and_then(|m| m.headers.as_ref());
            let deadline = headers
                .and_then(|h| h.get(DEADLINE_HEADER))
                .map_or("", |v| v.as_str());
            let sealed = headers
                .and_then(|h| h.get(SEAL_HEADER))
                .is_some_and(|seal| {
                    key.verify(&self.config.node, id, deadline, seal.as_str().as_bytes())
                });
            if !sealed {
                self.refuse(reply);
                return None;
            }
        }
        let verdict = self.expecting().answer(id, Instant::now());
        // An event this bridge did not see: an earlier bridge of the node's, proven by
        // its seal; without a key, taken on trust for a while.
        let predecessor =
            self.config.seal.is_some() || started.elapsed() < self.config.predecessor_grace;
        match verdict {
            Admission::Expected => {}
            Admission::Unknown if predecessor => {
                self.counts
                    .answers_unverified
                    .fetch_add(1, Ordering::Relaxed);
                // Remembered as answered: a second answer is refused.
                self.expecting().answered(id, Instant::now());
            }
            Admission::Duplicate | Admission::Unknown => {
                self.refuse(reply);
                return None;
            }
        }
        Some((answer, reply))
    }
}

impl Run<'_> {
    /// Drop an answer for good: counted refused, and not to be delivered again.
    /// A frame naming no transaction: written only when a rule allows it and, with a
    /// seal key, with its own seal (`Evapi-Seal`: [`SealKey::seal_frame`]); refused
    /// and counted otherwise.
    ///
    /// [`SealKey::seal_frame`]: crate::seal::SealKey::seal_frame
    fn admit_untransacted(
        &self,
        frame: Bytes,
        reply: Option<jetstream::Message>,
    ) -> Option<(Bytes, Option<jetstream::Message>)> {
        let sealed = || {
            let Some(key) = &self.config.seal else {
                return true;
            };
            reply
                .as_ref()
                .and_then(|m| m.headers.as_ref())
                .and_then(|h| h.get(SEAL_HEADER))
                .is_some_and(|seal| {
                    key.verify_frame(&self.config.node, &frame, seal.as_str().as_bytes())
                })
        };
        if self.config.untransacted.allows(&frame) && sealed() {
            return Some((frame, reply));
        }
        self.counts
            .untransacted_refused
            .fetch_add(1, Ordering::Relaxed);
        self.answers_waiting().untransacted_since += 1;
        self.refuse(reply);
        None
    }

    fn refuse(&self, reply: Option<jetstream::Message>) {
        self.counts.answers_refused.fetch_add(1, Ordering::Relaxed);
        self.answers_waiting().refused_since += 1;
        self.done(reply);
    }

    /// The bridge is done with an answer (written, or dropped for good): acknowledged
    /// by [`Run::ack_answers`], never waited for here. Past [`ACKS_QUEUED`] waiting
    /// (NATS away) it is not acknowledged: it comes again after the ack wait, and the
    /// node refuses a second answer.
    pub(super) fn done(&self, answer: Option<jetstream::Message>) {
        if let Some(msg) = answer {
            let _ = self.acks.try_send(msg);
        }
    }

    /// Acknowledge answers as they are done with, until the bridge stops (then what
    /// is queued, each within [`ACK_PUBLISH`]).
    pub(super) async fn ack_answers(&self, mut acks: mpsc::Receiver<jetstream::Message>) {
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
    pub(super) async fn answers_again(&self, js: &jetstream::Context) -> Option<pull::Stream> {
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
pub(super) async fn answers_consumer(
    js: &jetstream::Context,
    node: &str,
    settings: crate::StreamSettings,
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
        .map_err(setup_error(
            NatsErrorKind::Consumer,
            "the answers' JetStream consumer",
        ))?
        .stream()
        .max_messages_per_batch(ANSWER_BATCH)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .map_err(nats_error(NatsErrorKind::Subscribe, "pull answers"))
}

/// Longest wait to hand an acknowledgement to the NATS client when stopping.
const ACK_PUBLISH: Duration = Duration::from_millis(100);
/// Acknowledgements waiting for the NATS client at most.
pub(super) const ACKS_QUEUED: usize = 16 * 1024;
/// An answer taken by a bridge that then stopped is delivered again after this long.
const ANSWER_ACK_WAIT: Duration = Duration::from_secs(5);
/// Answers asked for at once from the stream.
const ANSWER_BATCH: usize = 1024;
/// An answer given back (the queue for the node was full) comes again after this long.
const ANSWER_LATER: Duration = Duration::from_secs(1);
/// What an answer waiting for the node costs besides its payload and reply subject.
const ANSWER_OVERHEAD: usize = 64;

/// An answer from NATS waiting for the node: its bytes, its message (where to
/// acknowledge it) and what it costs in the queue.
type Queued = (Bytes, Option<jetstream::Message>, usize);

/// Answers from NATS waiting for the node (with where to confirm each), and what was
/// dropped since the last warning.
#[derive(Debug, Default)]
pub(super) struct AnswerQueue {
    answers: std::collections::VecDeque<Queued>,
    bytes: usize,
    shed_since: u64,
    refused_since: u64,
    /// Of `refused_since`, frames naming no transaction.
    untransacted_since: u64,
}
