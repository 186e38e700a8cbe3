//! The one clock of the simulator's drivers.
//!
//! The sans-I/O cores ([`crate::tm`], [`crate::router`], [`crate::ist`]) take
//! `std::time::Instant` as an input and never read a clock. Drivers read time only
//! through [`now`], which is tokio's clock (and wait with `evapi_ops::time`), so a test on a paused runtime
//! (`#[tokio::test(start_paused = true)]`) moves every timer of a run at once.

use std::time::Instant;

/// Now, on tokio's clock (virtual when the runtime's time is paused).
#[must_use]
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
