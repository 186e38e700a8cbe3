//! A progress bar on stderr for runs longer than a second, only on a terminal.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Runs shorter than this show no bar.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// The bar, hidden for the first second of a run.
pub struct Bar {
    bar: ProgressBar,
    started: Instant,
    wanted: bool,
    shown: std::cell::Cell<bool>,
}

impl Bar {
    /// A bar for `total` requests; `wanted` false keeps it hidden.
    #[must_use]
    pub fn new(total: u64, wanted: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} final replies ({per_sec})")
        {
            bar.set_style(style);
        }
        Self {
            bar,
            started: Instant::now(),
            wanted: wanted && std::io::stderr().is_terminal(),
            shown: std::cell::Cell::new(false),
        }
    }

    /// Update the count.
    pub fn set(&self, done: u64) {
        if self.wanted && !self.shown.get() && self.started.elapsed() >= SHOW_AFTER {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown.set(true);
        }
        self.bar.set_position(done);
    }

    /// Clear the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
