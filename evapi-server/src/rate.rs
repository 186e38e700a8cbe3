//! Per-client rate limit on frames and bytes per second (sans-I/O, time as input).
//!
//! A generic cell rate algorithm: each frame (and each byte) moves a theoretical
//! arrival time forward by its cost; a client may be up to one second ahead (a
//! second's worth of burst). When it is further ahead, the connection hands on no
//! more frames and reads nothing until the theoretical time comes: TCP flow control
//! then pushes back on the client, and nothing it sent is lost. Empty frames count
//! like any other.

use std::time::Duration;

use tokio::time::Instant;

/// How much a client may send ahead of its rate: one second's worth.
pub const RATE_BURST: Duration = Duration::from_secs(1);

/// Limits for one client; `None` in a field: no limit on that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rate {
    /// Frames per second, empty ones included.
    pub frames: Option<u32>,
    /// Payload bytes per second.
    pub bytes: Option<u64>,
}

impl Rate {
    /// Whether any limit is set.
    #[must_use]
    pub fn is_limited(&self) -> bool {
        self.frames.is_some() || self.bytes.is_some()
    }
}

/// The state of one client's limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    rate: Rate,
    /// Theoretical arrival time of frames and of bytes.
    frames_tat: Instant,
    bytes_tat: Instant,
}

impl Limiter {
    /// A new client starts with its full burst allowance.
    pub(crate) fn new(rate: Rate, now: Instant) -> Self {
        let start = now.checked_sub(RATE_BURST).unwrap_or(now);
        Self {
            rate,
            frames_tat: start,
            bytes_tat: start,
        }
    }

    /// Account `frames` and `bytes` received at `now`; `Some(t)`: do not read again
    /// before `t`.
    #[must_use]
    pub(crate) fn take(&mut self, now: Instant, frames: u64, bytes: u64) -> Option<Instant> {
        let floor = now.checked_sub(RATE_BURST).unwrap_or(now);
        let mut resume = None;
        if let Some(per_s) = self.rate.frames.filter(|r| *r > 0) {
            self.frames_tat = self.frames_tat.max(floor) + cost(frames, u64::from(per_s));
            resume = resume.max(Some(self.frames_tat));
        }
        if let Some(per_s) = self.rate.bytes.filter(|r| *r > 0) {
            self.bytes_tat = self.bytes_tat.max(floor) + cost(bytes, per_s);
            resume = resume.max(Some(self.bytes_tat));
        }
        resume.filter(|t| *t > now)
    }
}

/// `n` units at `per_s` a second.
fn cost(n: u64, per_s: u64) -> Duration {
    let nanos = u128::from(n) * 1_000_000_000 / u128::from(per_s);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_of_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::new(
            Rate {
                frames: Some(100),
                bytes: None,
            },
            t0,
        );
        // 100 frames at once: the burst allowance, no pause (tat = t0 + 1 s but the
        // client started a second "behind").
        let t1 = t0 + RATE_BURST;
        assert_eq!(l.take(t1, 100, 0), None);
        // The next frame must wait its 10 ms.
        assert_eq!(l.take(t1, 1, 0), Some(t1 + Duration::from_millis(10)));
        // 1000 frames in one read (a flood): a pause of about 10 s.
        assert_eq!(
            l.take(t1, 1000, 0),
            Some(t1 + Duration::from_millis(10) + Duration::from_secs(10))
        );
    }

    #[test]
    fn bytes_and_frames_both_bound_and_the_later_wins() {
        let t0 = Instant::now() + RATE_BURST;
        let mut l = Limiter::new(
            Rate {
                frames: Some(1000),
                bytes: Some(1000),
            },
            t0,
        );
        // 1 frame of 3,000 bytes: 1 ms by frames, 3 s by bytes; 1 s of burst.
        assert_eq!(l.take(t0, 1, 3000), Some(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn a_client_under_its_rate_is_never_paused() {
        let mut now = Instant::now();
        let mut l = Limiter::new(
            Rate {
                frames: Some(10),
                bytes: Some(10_000),
            },
            now,
        );
        for _ in 0..1000 {
            now += Duration::from_millis(100);
            assert_eq!(l.take(now, 1, 1000), None);
        }
        let unlimited = Rate::default();
        assert!(!unlimited.is_limited());
        let mut l = Limiter::new(unlimited, now);
        assert_eq!(l.take(now, u64::MAX, u64::MAX), None);
    }
}
