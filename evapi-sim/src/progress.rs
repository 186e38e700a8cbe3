//! The binary's view of a run: the listening address on stderr, and progress on
//! stderr. On a terminal, a bar (after the first second) with the rate, timeouts and an
//! ETA; otherwise (CI logs) one line every [`LINE_EVERY`], so a long run is not silent.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use evapi_sim::engine::{Observer, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Runs shorter than this show no bar.
const SHOW_AFTER: Duration = Duration::from_secs(1);
/// Without a terminal, a progress line this often.
pub(crate) const LINE_EVERY: Duration = Duration::from_secs(10);

/// Progress on stderr, as a bar on a terminal or as periodic lines elsewhere.
pub(crate) struct Bar {
    bar: ProgressBar,
    started: Instant,
    terminal: bool,
    wanted: bool,
    shown: AtomicBool,
    /// When the last plain line was written (no terminal).
    last_line: Mutex<Instant>,
}

impl Bar {
    /// Progress for `total` requests; `wanted` false shows none.
    #[must_use]
    pub(crate) fn new(total: u64, wanted: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:40} {human_pos}/{human_len} final replies {msg} ETA {eta}",
        ) {
            bar.set_style(style);
        }
        let now = Instant::now();
        Self {
            bar,
            started: now,
            terminal: std::io::stderr().is_terminal(),
            wanted,
            shown: AtomicBool::new(false),
            last_line: Mutex::new(now),
        }
    }

    /// The progress line without a terminal.
    #[must_use]
    pub(crate) fn line(p: &Progress, elapsed: Duration) -> String {
        let rate = p.done as f64 / elapsed.as_secs_f64().max(1e-3);
        format!(
            "progress: {}/{} final replies, {rate:.0}/s, {} timeouts, {} invalid answers",
            p.done, p.total, p.timeouts, p.invalid
        )
    }

    fn update(&self, p: &Progress) {
        if !self.wanted {
            return;
        }
        let elapsed = self.started.elapsed();
        if !self.terminal {
            let Ok(mut last) = self.last_line.lock() else {
                return;
            };
            if last.elapsed() >= LINE_EVERY {
                *last = Instant::now();
                eprintln!("{}", Self::line(p, elapsed));
            }
            return;
        }
        if !self.shown.load(Ordering::Relaxed) && elapsed >= SHOW_AFTER {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown.store(true, Ordering::Relaxed);
        }
        let rate = p.done as f64 / elapsed.as_secs_f64().max(1e-3);
        self.bar
            .set_message(format!("{rate:.0}/s, {} timeouts", p.timeouts));
        self.bar.set_position(p.done);
    }
}

impl Observer for Bar {
    fn listening(&self, addr: SocketAddr) {
        eprintln!("evapi socket on {addr}");
    }

    fn waiting_for_apps(&self, count: usize, addr: SocketAddr) {
        eprintln!("waiting for {count} external app(s) to connect to {addr}");
    }

    fn progress(&self, progress: &Progress) {
        self.update(progress);
    }

    fn finished(&self) {
        // Cleared, also after an interruption, so the summary starts on a clean line.
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_line_has_rounded_rates_and_the_counts() {
        let p = Progress {
            done: 3343,
            total: 10_000,
            timeouts: 12,
            invalid: 1,
        };
        assert_eq!(
            Bar::line(&p, Duration::from_millis(1000)),
            "progress: 3343/10000 final replies, 3343/s, 12 timeouts, 1 invalid answers"
        );
    }
}
