//! Waiting on the deadlines that sans-I/O cores hand back.

use std::time::Instant;

/// Sleep until `at` on tokio's clock (a `std` or a tokio `Instant`); forever when there
/// is nothing to wait for (a core with no timer armed returns `None`).
pub async fn sleep_until<I: Into<tokio::time::Instant>>(at: Option<I>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The earliest of several optional deadlines.
#[must_use]
pub fn earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_earliest_deadline_is_the_smallest_given() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(earliest([None, Some(t1), Some(t0)]), Some(t0));
        assert_eq!(earliest([None, None]), None);
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_never_wakes() {
        let slept =
            tokio::time::timeout(Duration::from_secs(3600), sleep_until(None::<Instant>)).await;
        assert!(slept.is_err());
        let at = Instant::now() + Duration::from_millis(10);
        tokio::time::timeout(Duration::from_secs(1), sleep_until(Some(at)))
            .await
            .expect("a deadline wakes");
    }
}
