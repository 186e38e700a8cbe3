//! The one clock of the simulator's drivers.
//!
//! The sans-I/O cores ([`crate::tm`], [`crate::router`], [`crate::ist`]) take
//! `std::time::Instant` as an input and never read a clock. Drivers read time only
//! through [`now`], which is tokio's clock, so a test on a paused runtime
//! (`#[tokio::test(start_paused = true)]`) moves every timer of a run at once.

use std::time::Instant;

/// Now, on tokio's clock (virtual when the runtime's time is paused).
#[must_use]
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Sleep until `at` on tokio's clock; forever when there is nothing to wait for.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The earliest of several optional deadlines.
#[must_use]
pub fn earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}
