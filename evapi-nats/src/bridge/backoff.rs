//! Publishing while JetStream refuses, and the warnings it is worth.

use std::time::{Duration, Instant};

use evapi_client::Backoff;
use tracing::warn;

/// Publishing while JetStream refuses (a cluster electing a stream leader answers at
/// once, "no responders"): after a failure, a pause that doubles from
/// [`BACKOFF_FIRST`] to [`BACKOFF_MAX`], then one publication at a time until one is
/// confirmed, then the whole window again. A failover costs a few retries a second,
/// not a storm of the whole window republished as fast as refusals come back.
#[derive(Debug, Default)]
pub(super) struct PublishPause {
    /// Failures in a row (0: none).
    failures: u32,
    resume_at: Option<tokio::time::Instant>,
}

/// The pauses after failed publications: 50 ms doubling to 400 ms (the longest stall a
/// recovery may add).
const PAUSES: Backoff = Backoff::doubling(BACKOFF_FIRST, Duration::from_millis(400));
/// The first pause after a failed publication.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);

impl PublishPause {
    /// A publication failed at `now`: pause (the pause doubles, unless a pause is
    /// already running: the other publications in flight fail with the same cause).
    pub(super) fn failed(&mut self, now: tokio::time::Instant) {
        if self.resume_at.is_some_and(|at| at > now) {
            return;
        }
        self.failures = self.failures.saturating_add(1);
        self.resume_at = Some(now + PAUSES.pause(self.failures));
    }

    /// A publication was confirmed: the whole window again.
    pub(super) fn succeeded(&mut self) {
        self.failures = 0;
        self.resume_at = None;
    }

    pub(super) fn is_failing(&self) -> bool {
        self.failures > 0
    }

    /// Publications in flight allowed: `window`, or one while failing.
    pub(super) fn window(&self, window: usize) -> usize {
        if self.is_failing() {
            1
        } else {
            window
        }
    }

    /// Whether the pause is over at `now`.
    pub(super) fn may_publish(&self, now: tokio::time::Instant) -> bool {
        self.resume_at.is_none_or(|at| now >= at)
    }

    /// When the running pause ends (`None`: none running).
    pub(super) fn resume_at(&self) -> Option<tokio::time::Instant> {
        self.resume_at
            .filter(|at| *at > tokio::time::Instant::now())
    }
}

/// How often the bridge says that publications are being retried.
const RETRY_LOG_EVERY: Duration = Duration::from_secs(5);

/// Failed publications, said as one line per [`RETRY_LOG_EVERY`] with the count and the
/// last reason, never one line per event.
#[derive(Debug, Default)]
pub(super) struct Retrying {
    since_log: u64,
    logged: Option<Instant>,
}

impl Retrying {
    /// Pulling answers failed for `why` (NATS away): said once per
    /// [`RETRY_LOG_EVERY`] with the count.
    pub(super) fn note_answers(&mut self, why: &str, node: &str) {
        self.since_log += 1;
        if self.logged.is_none_or(|at| at.elapsed() >= RETRY_LOG_EVERY) {
            warn!(node, failures = self.since_log, last_error = why, every = ?RETRY_LOG_EVERY, "pulling answers from JetStream failed; trying on");
            self.since_log = 0;
            self.logged = Some(Instant::now());
        }
    }

    /// A publication failed for `why`; `held`: events held now (the caller may hold
    /// the outbox's lock, so it is passed in).
    pub(super) fn note(&mut self, why: &str, node: &str, held: usize) {
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
        let mut b = PublishPause::default();
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
            let next = b.resume_at.unwrap();
            assert!(next - at <= Duration::from_millis(400), "capped");
            at = next;
        }
        b.failed(at);
        assert_eq!(
            b.resume_at,
            Some(at + Duration::from_millis(400)),
            "at the cap"
        );
        b.succeeded();
        assert_eq!(b.window(4096), 4096);
        assert!(b.may_publish(at) && !b.is_failing());
    }
}
