//! Scale-out over NATS JetStream: a bridge per SIP node, and apps that answer from
//! anywhere.
//!
//! - The **bridge** reads a node's evapi socket at full speed and publishes every
//!   event to the JetStream stream [`STREAM`] on `evapi.<node>.events`, with the header
//!   [`NODE_HEADER`]; it subscribes to `evapi.<node>.answers` (core NATS) and writes
//!   each answer to the node's socket.
//! - **Responders** share the durable pull consumer [`CONSUMER`] of that work-queue
//!   stream: each event goes to one of them; its answer is published to the answers
//!   subject of the node named in the event's header, then the event is acknowledged.
//!   A responder that dies before acknowledging has its events redelivered to another
//!   after the ack wait; a second answer to the same transaction is refused by the
//!   node's transaction table (exactly one final reply).
//!
//! Only JetStream features of nats-server 2.9 are used (Debian 12's): one subject
//! filter per consumer, work-queue retention, explicit acks.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client::{Client, ClientError};
use crate::respond::{Counts, Responder};

/// The JetStream stream that holds every node's events until a responder takes them.
pub const STREAM: &str = "EVAPI_EVENTS";
/// The durable consumer the responders share (a work queue: one responder per event).
pub const CONSUMER: &str = "evapi-responders";
/// The header naming the node an event came from.
pub const NODE_HEADER: &str = "Evapi-Node";
/// Default ack wait: an event taken by a responder that then died is redelivered after
/// this long (well inside fr_inv_timer and sipp's 32 s INVITE retransmissions).
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(5);
/// Events published but not yet confirmed by JetStream, per bridge; past it the bridge
/// stops reading the node until confirmations come back.
pub const DEFAULT_WINDOW: usize = 4096;

/// The subject of `node`'s events.
#[must_use]
pub fn events_subject(node: &str) -> String {
    format!("evapi.{node}.events")
}

/// The subject of answers for `node`.
#[must_use]
pub fn answers_subject(node: &str) -> String {
    format!("evapi.{node}.answers")
}

/// Whether `node` can be a subject token: letters, digits, `-`, `_`, at most 64 bytes.
#[must_use]
pub fn valid_node(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= 64
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What went wrong on the NATS side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The stream or consumer could not be set up.
    #[error("JetStream setup: {0}")]
    Setup(String),
    /// Publishing or subscribing failed.
    #[error("NATS: {0}")]
    Nats(String),
    /// The node's evapi socket failed.
    #[error(transparent)]
    Node(#[from] ClientError),
}

fn nats_error(e: impl std::fmt::Display) -> NatsError {
    NatsError::Nats(e.to_string())
}

/// The events stream, created when missing: subjects `evapi.*.events`, work-queue
/// retention (an event is gone once a responder acknowledged it), at most `max_age`
/// old (events nobody took in time are useless: their transactions timed out).
///
/// # Errors
///
/// [`NatsError::Setup`] when JetStream refuses.
pub async fn events_stream(
    js: &jetstream::Context,
    max_age: Duration,
) -> Result<stream::Stream, NatsError> {
    js.get_or_create_stream(stream::Config {
        name: STREAM.to_owned(),
        subjects: vec!["evapi.*.events".to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        max_age,
        ..Default::default()
    })
    .await
    .map_err(|e| NatsError::Setup(e.to_string()))
}

/// Counters of a bridge.
#[derive(Debug, Default)]
pub struct BridgeCounts {
    /// Events read from the node and published.
    pub events: std::sync::atomic::AtomicU64,
    /// Answers from NATS written to the node.
    pub answers: std::sync::atomic::AtomicU64,
    /// Publications JetStream did not confirm.
    pub publish_failed: std::sync::atomic::AtomicU64,
}

/// Bridge one node: its events to NATS, its answers back, until `stop` or the node's
/// socket ends.
///
/// # Errors
///
/// The stream cannot be set up, the answers cannot be subscribed, or the node's
/// connection fails.
pub async fn bridge(
    node_conn: Client,
    nats: async_nats::Client,
    node: &str,
    window: usize,
    counts: &BridgeCounts,
    stop: CancellationToken,
) -> Result<(), NatsError> {
    let js = jetstream::new(nats.clone());
    events_stream(&js, Duration::from_secs(120)).await?;
    let mut answers = nats
        .subscribe(answers_subject(node))
        .await
        .map_err(nats_error)?;
    let (mut reader, mut writer) = node_conn.split();
    let subject = events_subject(node);
    // Confirmations are awaited off the read loop, at most `window` outstanding.
    let (acks_tx, mut acks_rx) =
        mpsc::channel::<jetstream::context::PublishAckFuture>(window.max(1));
    let confirmer = async {
        while let Some(ack) = acks_rx.recv().await {
            if let Err(e) = ack.await {
                counts.publish_failed.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "JetStream did not confirm an event");
            }
        }
    };
    let events = async {
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                msg = reader.recv() => msg?,
            };
            let Some(msg) = msg else {
                info!("the node closed its evapi socket");
                return Ok(());
            };
            let mut headers = HeaderMap::new();
            headers.insert(NODE_HEADER, node);
            let ack = js
                .publish_with_headers(subject.clone(), headers, msg)
                .await
                .map_err(nats_error)?;
            counts.events.fetch_add(1, Ordering::Relaxed);
            if acks_tx.send(ack).await.is_err() {
                return Ok(());
            }
        }
    };
    let answers_in = async {
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return Ok::<(), NatsError>(()),
                msg = answers.next() => msg,
            };
            let Some(msg) = msg else { return Ok(()) };
            writer.send(&msg.payload).await?;
            counts.answers.fetch_add(1, Ordering::Relaxed);
        }
    };
    let result = tokio::select! {
        r = events => r,
        r = answers_in => r,
    };
    drop(acks_tx);
    confirmer.await;
    result
}

/// Answer events from every node with `responder`, as one of the instances sharing
/// the work queue, until `stop` or `count` answers.
///
/// # Errors
///
/// The stream or consumer cannot be set up, or NATS fails.
pub async fn respond(
    nats: async_nats::Client,
    responder: &Responder,
    ack_wait: Duration,
    counts: &Counts,
    count: Option<u64>,
    stop: CancellationToken,
) -> Result<(), NatsError> {
    let js = jetstream::new(nats.clone());
    let stream = events_stream(&js, Duration::from_secs(120)).await?;
    let consumer: pull::Stream = stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| NatsError::Setup(e.to_string()))?
        .messages()
        .await
        .map_err(nats_error)?;
    tokio::pin!(consumer);
    let mut answered = 0u64;
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            msg = consumer.next() => msg,
        };
        let Some(msg) = msg else { return Ok(()) };
        let msg = msg.map_err(nats_error)?;
        let node = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(NODE_HEADER))
            .map(|v| v.as_str().to_owned())
            .or_else(|| msg.subject.split('.').nth(1).map(str::to_owned))
            .filter(|n| valid_node(n));
        match (node, responder.answer(&msg.payload, counts)) {
            (Some(node), Some(answer)) => {
                // A slow app (--delay): one event at a time, as it would be.
                if !responder.delay.is_zero() {
                    tokio::time::sleep(responder.delay).await;
                }
                nats.publish(answers_subject(&node), Bytes::from(answer))
                    .await
                    .map_err(nats_error)?;
                // Sent before the ack: a crash between the two redelivers the event,
                // and the node refuses the second answer.
                nats.flush().await.map_err(nats_error)?;
                counts.answered.fetch_add(1, Ordering::Relaxed);
                answered += 1;
            }
            (None, _) => warn!(subject = %msg.subject, "event without a node name, dropped"),
            (_, None) => debug!("not a suspend event, acknowledged without an answer"),
        }
        msg.ack().await.map_err(nats_error)?;
        if count.is_some_and(|n| answered >= n) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_node_names() {
        assert_eq!(events_subject("sip-1"), "evapi.sip-1.events");
        assert_eq!(answers_subject("sip-1"), "evapi.sip-1.answers");
        assert!(valid_node("sip_1-b"));
        for bad in ["", "a.b", "a b", "*", ">", &"x".repeat(65)] {
            assert!(!valid_node(bad), "{bad:?}");
        }
    }
}
