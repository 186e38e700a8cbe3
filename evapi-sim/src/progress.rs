//! The binary's view of a run: the listening address on stderr, and a progress bar for
//! runs longer than a second, only on a terminal.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Runs shorter than this show no bar.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// The bar, hidden for the first second of a run.
pub struct Bar {
    bar: ProgressBar,
    started: Instant,
    wanted: bool,
    shown: AtomicBool,
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
            shown: AtomicBool::new(false),
        }
    }

    /// Update the count.
    pub fn set(&self, done: u64) {
        if self.wanted
            && !self.shown.load(Ordering::Relaxed)
            && self.started.elapsed() >= SHOW_AFTER
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown.store(true, Ordering::Relaxed);
        }
        self.bar.set_position(done);
    }

    /// Clear the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl evapi_sim::engine::Observer for Bar {
    fn listening(&self, addr: SocketAddr) {
        eprintln!("evapi socket on {addr}");
    }

    fn waiting_for_apps(&self, count: usize, addr: SocketAddr) {
        eprintln!("waiting for {count} external app(s) to connect to {addr}");
    }

    fn progress(&self, done: u64, _total: u64) {
        self.set(done);
    }

    fn finished(&self) {
        self.finish();
    }
}
