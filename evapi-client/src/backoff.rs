//! [`Backoff`]: the one home of doubling pauses in the client crates: reconnects
//! ([`Client::connect_with_retry`](crate::Client::connect_with_retry), [`nodes`](crate::nodes)),
//! the `--wait` for a server not up yet, and the NATS bridge's publish retries.

use std::time::Duration;

/// Pauses that double from `initial` up to `max`, for at most `attempts` tries (`None`:
/// forever).
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First wait.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Tries in all, the first included; `None` tries forever.
    pub attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            attempts: Some(10),
        }
    }
}

impl Backoff {
    /// Doubling from `initial` to `max`, for ever.
    #[must_use]
    pub const fn doubling(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempts: None,
        }
    }

    /// The wait before attempt `attempt` (1 = the second try): `initial` doubled
    /// `attempt - 1` times, at most `max`.
    #[must_use]
    pub fn pause(&self, attempt: u32) -> Duration {
        self.initial
            .checked_mul(1u32 << attempt.saturating_sub(1).min(16))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// [`Backoff::pause`] with a random part taken off (up to half), so apps that lost
    /// the same server do not all come back in the same instant.
    #[must_use]
    pub fn jittered(&self, attempt: u32) -> Duration {
        let keep = 0.5 + fastrand::f64() * 0.5;
        self.pause(attempt).mul_f64(keep)
    }

    /// Whether `attempt` tries have used up the attempts.
    #[must_use]
    pub fn exhausted(&self, attempt: u32) -> bool {
        self.attempts.is_some_and(|n| attempt >= n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_to_their_cap() {
        let b = Backoff::doubling(Duration::from_millis(50), Duration::from_secs(1));
        let ms: Vec<u128> = (1..=7).map(|a| b.pause(a).as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.pause(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_takes_off_at_most_half() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            attempts: None,
        };
        for _ in 0..100 {
            let first = b.jittered(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let late = b.jittered(40);
            assert!(late >= Duration::from_millis(2500) && late <= Duration::from_secs(5));
        }
    }

    #[test]
    fn attempts_are_counted_with_the_first() {
        let b = Backoff {
            attempts: Some(3),
            ..Backoff::default()
        };
        assert!(!b.exhausted(2) && b.exhausted(3));
        assert!(!Backoff::doubling(Duration::ZERO, Duration::ZERO).exhausted(u32::MAX));
    }
}
