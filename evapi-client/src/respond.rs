//! The auto-responder: answers every suspend event on a connection, fast.
//!
//! Answers are written in batches: after each message the loop takes whatever else is
//! already readable before flushing, so a burst of events costs a few system calls, not
//! one per answer. With a delay, answers wait in a FIFO queue (every answer has the same
//! delay, so they fall due in arrival order).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use evapi_ops::time::sleep_until;
use evapi_proto::{Continue, TopLevelIds};
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::client::{Client, ClientError, Reader, Writer};
use crate::suspend::{ReplyTemplate, SuspendMatcher};

/// How to answer.
#[derive(Debug, Clone)]
pub struct Responder {
    /// Recognises suspend events.
    pub matcher: SuspendMatcher,
    /// SIP code to answer with.
    pub code: u16,
    /// Reason phrase.
    pub reason: String,
    /// Shape of the answer; `None`: `{"tindex":..,"tlabel":..,"code":..,"reason":..}`.
    pub template: Option<ReplyTemplate>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// An answer before this deadline whatever the handler takes: when the answer would
    /// come later (`delay` past it), the fallback goes at the deadline instead and the
    /// handler's answer is dropped (counted, never sent).
    pub deadline: Option<Deadline>,
    /// Events held at once (waiting for `delay` or the deadline) by every connection
    /// of this responder together; past it, a connection's socket is not read, so the
    /// node holds its events. Clones share it. `None`: unbounded.
    in_flight: Option<Arc<Semaphore>>,
}

/// Events a responder on sockets holds at once by default ([`Responder::max_in_flight`]):
/// about 2 MB of answers waiting, far above what a load test at 1,000 calls/s with a
/// second's delay needs.
pub const DEFAULT_MAX_HELD: usize = 10_000;

/// When an app must have answered, and with what when its handler has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    /// Counted from the event's arrival; choose it below the node's `fr_inv_timer`.
    pub after: Duration,
    /// The fallback's SIP code (e.g. 503, or 200 to let calls through).
    pub code: u16,
    /// Its reason phrase.
    pub reason: String,
}

impl Responder {
    /// Answer with `code` and its usual reason phrase.
    #[must_use]
    pub fn new(code: u16) -> Self {
        Self {
            matcher: SuspendMatcher::default(),
            code,
            reason: reason_phrase(code).to_owned(),
            template: None,
            delay: Duration::ZERO,
            deadline: None,
            in_flight: None,
        }
    }

    /// Hold at most `n` events at once (at least 1), across every connection this
    /// responder (and its clones) serves: an event whose answer waits (`delay`, or a
    /// fallback's deadline) counts until its answer is written. Past it, the sockets are
    /// not read until an answer goes.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.in_flight = Some(Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS))));
        self
    }

    /// A permit to hold one more event, once one is free (never, when unbounded: the
    /// caller then needs none).
    async fn room(&self) -> Option<OwnedSemaphorePermit> {
        match &self.in_flight {
            Some(s) => Arc::clone(s).acquire_owned().await.ok(),
            None => std::future::pending().await,
        }
    }

    /// Answer with `code`, `reason` (its usual phrase when `None`), after `delay`,
    /// recognising events with `matcher`: the one constructor the CLI and the
    /// simulator's built-in responders share.
    #[must_use]
    pub fn with(
        code: u16,
        reason: Option<String>,
        delay: Duration,
        matcher: SuspendMatcher,
    ) -> Self {
        Self {
            matcher,
            reason: reason.unwrap_or_else(|| reason_phrase(code).to_owned()),
            delay,
            ..Self::new(code)
        }
    }

    /// The answer to `msg`, or `None` when it is not a suspend event (counted in `counts`).
    pub fn answer(&self, msg: &[u8], counts: &Counts) -> Option<Vec<u8>> {
        self.answer_as(msg, self.code, &self.reason, counts)
    }

    /// When the handler's answer (after `delay`) would miss the deadline: when to send
    /// the fallback instead, after the event's arrival, and the fallback to `msg`.
    fn fallback(&self, msg: &[u8], counts: &Counts) -> Option<(Duration, Vec<u8>)> {
        let d = self.deadline.as_ref().filter(|d| self.delay > d.after)?;
        Some((d.after, self.answer_as(msg, d.code, &d.reason, counts)?))
    }

    /// `msg` answered with `code` and `reason`, in the shape of every answer.
    fn answer_as(&self, msg: &[u8], code: u16, reason: &str, counts: &Counts) -> Option<Vec<u8>> {
        // Fast path: ids at the top level, answered under the same names. Anything else,
        // including invalid ids (for the error message), takes the full parse below.
        if self.template.is_none() && self.matcher.top_level_first() {
            if let Some(id) = serde_json::from_slice::<TopLevelIds>(msg)
                .ok()
                .and_then(TopLevelIds::id)
            {
                let answer = Continue::reply(id, code, reason);
                return serde_json::to_vec(&answer).ok();
            }
        }
        match self.matcher.parse(msg) {
            Ok(Some(s)) => Some(match &self.template {
                Some(t) => t.render(&s, code, reason),
                None => s.answer(code, reason),
            }),
            Ok(None) => {
                counts.ignored.fetch_add(1, Ordering::Relaxed);
                debug!(msg = ?String::from_utf8_lossy(msg), "not a suspend event, ignored");
                None
            }
            Err(e) => {
                counts.invalid.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "suspend event with invalid ids, not answered");
                None
            }
        }
    }
}

/// Counters shared by every responder connection, counted as they go;
/// [`RespondStats`] is what callers read ([`Counts::snapshot`]).
#[derive(Debug, Default)]
pub struct Counts {
    answered: AtomicU64,
    ignored: AtomicU64,
    invalid: AtomicU64,
    fallback: AtomicU64,
    given_back: AtomicU64,
    in_flight: AtomicU64,
    expired: AtomicU64,
}

/// What a responder did so far: a snapshot ([`Counts::snapshot`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RespondStats {
    /// Answers sent.
    pub answered: u64,
    /// Messages that were not suspend events.
    pub ignored: u64,
    /// Suspend events whose ids were not valid.
    pub invalid: u64,
    /// Events answered with the fallback because the handler would have missed the
    /// deadline (its answer dropped, never sent).
    pub fallback: u64,
    /// Events given back unanswered (over NATS: stopping, or pulled and not started).
    pub given_back: u64,
    /// Events in hand now (read, not yet answered; over NATS: not yet confirmed).
    pub in_flight: u64,
    /// Events skipped unanswered because their deadline had passed (over NATS).
    pub expired: u64,
}

impl Counts {
    /// What was counted so far.
    #[must_use]
    pub fn snapshot(&self) -> RespondStats {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RespondStats {
            answered: n(&self.answered),
            ignored: n(&self.ignored),
            invalid: n(&self.invalid),
            fallback: n(&self.fallback),
            given_back: n(&self.given_back),
            in_flight: n(&self.in_flight),
            expired: n(&self.expired),
        }
    }

    /// For a responder on another transport (over NATS): `n` more events answered.
    pub fn add_answered(&self, n: u64) {
        self.answered.fetch_add(n, Ordering::Relaxed);
    }

    /// For a responder on another transport: `n` more events given back unanswered.
    pub fn add_given_back(&self, n: u64) {
        self.given_back.fetch_add(n, Ordering::Relaxed);
    }

    /// For a responder on another transport: the events in hand now.
    pub fn set_in_flight(&self, n: u64) {
        self.in_flight.store(n, Ordering::Relaxed);
    }

    /// For a responder on another transport: the events skipped as expired so far.
    pub fn set_expired(&self, n: u64) {
        self.expired.store(n, Ordering::Relaxed);
    }
}

/// How long a stopping responder waits for the server to close after its last answer.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why a responder connection stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The answer limit was reached or `stop` was cancelled.
    Done,
    /// The server closed the connection.
    Closed,
}

/// Answer suspend events on `client` until the server closes, `stop` is cancelled, or
/// `remaining` (when given) reaches zero; cancels `stop` itself in that last case.
///
/// # Errors
///
/// A lost connection or a bad frame from the server.
pub async fn run(
    client: Client,
    responder: &Responder,
    counts: &Counts,
    remaining: Option<&AtomicU64>,
    stop: &CancellationToken,
) -> Result<Stop, ClientError> {
    let (mut reader, mut writer) = client.split();
    let stopped = answer_loop(&mut reader, &mut writer, responder, counts, remaining, stop).await?;
    if stopped == Stop::Done {
        // Close gracefully: the answers sent must reach the server even though more
        // events may be on their way (closing with unread data would reset the
        // connection, and the server would lose what it had not read yet).
        writer.close().await?;
        let drain = async { while let Ok(Some(_)) = reader.recv().await {} };
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    }
    Ok(stopped)
}

/// Answer the suspend events of `node` until `stop` (or `remaining` reaching zero),
/// reconnecting whenever its connection is lost (jittered backoff, forever): a node that
/// is down or restarting never stops the others, and after a restart its new
/// connection starts afresh (no answer carries an older connection's ids: answers are
/// written on the connection their event came on). Says when the node is lost and back.
///
/// `first`, when given, is a connection to the node already open (the caller's first
/// connect, with its own patience): served before any reconnect.
///
/// # Errors
///
/// A setting that can never work (a TLS setup refused): losses are retried.
pub async fn serve_node(
    node: &crate::nodes::Node,
    config: &crate::ClientConfig,
    first: Option<Client>,
    responder: &Responder,
    counts: &Counts,
    remaining: Option<&AtomicU64>,
    stop: &CancellationToken,
) -> Result<(), ClientError> {
    let mut link = crate::nodes::Link::new(node, config);
    let mut first = first;
    loop {
        let client = match first.take() {
            Some(client) => client,
            None => tokio::select! {
                () = stop.cancelled() => return Ok(()),
                client = link.connect() => client?,
            },
        };
        match run(client, responder, counts, remaining, stop).await {
            Ok(Stop::Done) => return Ok(()),
            Ok(Stop::Closed) => link.lost(None),
            Err(e) => link.lost(Some(&e)),
        }
    }
}

async fn answer_loop(
    reader: &mut Reader,
    writer: &mut Writer,
    responder: &Responder,
    counts: &Counts,
    remaining: Option<&AtomicU64>,
    stop: &CancellationToken,
) -> Result<Stop, ClientError> {
    // Answers waiting for their time, each with its room (when bounded): dropping the
    // entry frees it. Those still here at the end are never sent.
    let mut pending: VecDeque<Held> = VecDeque::new();
    let ended = answer(
        reader,
        writer,
        responder,
        counts,
        remaining,
        stop,
        &mut pending,
    )
    .await;
    counts
        .in_flight
        .fetch_sub(pending.len() as u64, Ordering::Relaxed);
    ended
}

async fn answer(
    reader: &mut Reader,
    writer: &mut Writer,
    responder: &Responder,
    counts: &Counts,
    remaining: Option<&AtomicU64>,
    stop: &CancellationToken,
    pending: &mut VecDeque<Held>,
) -> Result<Stop, ClientError> {
    let bounded = responder.in_flight.is_some();
    // Room for the next event read, when bounded.
    let mut room: Option<OwnedSemaphorePermit> = None;
    loop {
        let due = pending.front().map(|held| held.at);
        let may_read = !bounded || room.is_some();
        let msg = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(Stop::Done),
            () = sleep_until(due) => {
                let now = Instant::now();
                while pending.front().is_some_and(|held| held.at <= now) {
                    if let Some(held) = pending.pop_front() {
                        counts.in_flight.fetch_sub(1, Ordering::Relaxed);
                        if send_counted(writer, &held.answer, counts, remaining, stop).await? {
                            writer.flush().await?;
                            return Ok(Stop::Done);
                        }
                    }
                }
                writer.flush().await?;
                continue;
            }
            permit = responder.room(), if !may_read => {
                room = permit;
                continue;
            }
            msg = reader.recv(), if may_read => msg?,
        };
        let Some(mut msg) = msg else {
            return Ok(Stop::Closed);
        };
        // Answer everything already readable (while there is room), then flush once.
        loop {
            let held = if let Some((after, fallback)) = responder.fallback(&msg, counts) {
                counts.fallback.fetch_add(1, Ordering::Relaxed);
                debug!(deadline = ?after, "the handler would be late: the fallback goes at the deadline");
                Some((after, fallback))
            } else if let Some(answer) = responder.answer(&msg, counts) {
                if responder.delay.is_zero() {
                    if send_counted(writer, &answer, counts, remaining, stop).await? {
                        writer.flush().await?;
                        return Ok(Stop::Done);
                    }
                    None
                } else {
                    Some((responder.delay, answer))
                }
            } else {
                None
            };
            if let Some((after, answer)) = held {
                counts.in_flight.fetch_add(1, Ordering::Relaxed);
                pending.push_back(Held {
                    at: Instant::now() + after,
                    answer,
                    _room: room.take(),
                });
            }
            if bounded && room.is_none() {
                room = responder
                    .in_flight
                    .as_ref()
                    .and_then(|s| Arc::clone(s).try_acquire_owned().ok());
                if room.is_none() {
                    break;
                }
            }
            match reader.recv().now_or_never() {
                Some(Ok(Some(next))) => msg = next,
                Some(Ok(None)) => {
                    writer.flush().await?;
                    return Ok(Stop::Closed);
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        writer.flush().await?;
    }
}

/// An answer waiting for its time.
struct Held {
    at: Instant,
    answer: Vec<u8>,
    /// Its room among the responder's events in hand, freed with it.
    _room: Option<OwnedSemaphorePermit>,
}

/// Feed one answer; true when the limit is now reached (and `stop` cancelled).
async fn send_counted(
    writer: &mut Writer,
    answer: &[u8],
    counts: &Counts,
    remaining: Option<&AtomicU64>,
    stop: &CancellationToken,
) -> Result<bool, ClientError> {
    if let Some(left) = remaining {
        // Claim one answer of the budget; none left means another connection used it.
        if left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_err()
        {
            stop.cancel();
            return Ok(true);
        }
    }
    writer.feed(answer).await?;
    counts.answered.fetch_add(1, Ordering::Relaxed);
    if remaining.is_some_and(|left| left.load(Ordering::Acquire) == 0) {
        stop.cancel();
        return Ok(true);
    }
    Ok(false)
}

/// The usual reason phrase of a SIP status code; lives in [`evapi_proto::answer`].
pub use evapi_proto::answer::reason_phrase;
