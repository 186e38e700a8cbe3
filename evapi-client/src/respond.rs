//! The auto-responder: answers every suspend event on a connection, fast.
//!
//! Answers are written in batches: after each message the loop takes whatever else is
//! already readable before flushing, so a burst of events costs a few system calls, not
//! one per answer. With a delay, answers wait in a FIFO queue (every answer has the same
//! delay, so they fall due in arrival order).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use evapi_ops::time::sleep_until;
use evapi_proto::{Continue, TopLevelIds};
use futures_util::FutureExt;
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
}

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

/// Counters shared by every responder connection.
#[derive(Debug, Default)]
pub struct Counts {
    /// Answers sent.
    pub answered: AtomicU64,
    /// Messages that were not suspend events.
    pub ignored: AtomicU64,
    /// Suspend events whose ids were not valid.
    pub invalid: AtomicU64,
    /// Events answered with the fallback because the handler would have missed the
    /// deadline (its answer dropped, never sent).
    pub fallback: AtomicU64,
    /// Events given back unanswered (over NATS: stopping, or pulled and not started).
    pub given_back: AtomicU64,
    /// Events in hand now (over NATS: taken, not yet answered and confirmed).
    pub in_flight: AtomicU64,
    /// Events skipped unanswered because their deadline had passed (over NATS).
    pub expired: AtomicU64,
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
/// # Errors
///
/// Never while `stop` holds: losses are retried; the error type is kept for callers
/// that pass a finite backoff later.
pub async fn serve_node(
    node: &crate::nodes::Node,
    config: &crate::ClientConfig,
    responder: &Responder,
    counts: &Counts,
    remaining: Option<&AtomicU64>,
    stop: &CancellationToken,
) -> Result<(), ClientError> {
    let mut link = crate::nodes::Link::new(node, config);
    loop {
        let client = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            client = link.connect() => client?,
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
    let mut pending: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    loop {
        let due = pending.front().map(|(at, _)| *at);
        let msg = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(Stop::Done),
            () = sleep_until(due) => {
                let now = Instant::now();
                while pending.front().is_some_and(|(at, _)| *at <= now) {
                    if let Some((_, answer)) = pending.pop_front() {
                        if send_counted(writer, &answer, counts, remaining, stop).await? {
                            writer.flush().await?;
                            return Ok(Stop::Done);
                        }
                    }
                }
                writer.flush().await?;
                continue;
            }
            msg = reader.recv() => msg?,
        };
        let Some(mut msg) = msg else {
            return Ok(Stop::Closed);
        };
        // Answer everything already readable, then flush once.
        loop {
            if let Some((after, fallback)) = responder.fallback(&msg, counts) {
                counts.fallback.fetch_add(1, Ordering::Relaxed);
                debug!(deadline = ?after, "the handler would be late: the fallback goes at the deadline");
                pending.push_back((Instant::now() + after, fallback));
            } else if let Some(answer) = responder.answer(&msg, counts) {
                if responder.delay.is_zero() {
                    if send_counted(writer, &answer, counts, remaining, stop).await? {
                        writer.flush().await?;
                        return Ok(Stop::Done);
                    }
                } else {
                    pending.push_back((Instant::now() + responder.delay, answer));
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
