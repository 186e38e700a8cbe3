//! Refused and failed connections, logged as one summary line per interval instead of a
//! line each: an attacker who opens thousands of connections must not also fill the
//! operator's disk with log lines. Each refusal is still counted for good in the
//! server's counters (Prometheus `evapi_connections_refused_total`); here are only the
//! counts since the last summary.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the accept loop logs what was refused since the last summary (nothing when
/// nothing was).
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Why a connection never became an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address is not in the allow-list.
    Allow,
    /// Its address already has `max_clients_per_ip` apps.
    PerIp,
    /// Its address failed authentication too often lately.
    Throttled,
    /// Every app slot was taken.
    MaxClients,
    /// A wrong or missing token, a bad first frame, a timeout or a close before the token.
    Auth,
    /// The TLS handshake failed or did not finish in time.
    Tls,
    /// Evicted from the full pending pool (the oldest of the busiest address).
    Evicted,
}

impl Refusal {
    const ALL: [Refusal; 7] = [
        Refusal::Allow,
        Refusal::PerIp,
        Refusal::Throttled,
        Refusal::MaxClients,
        Refusal::Auth,
        Refusal::Tls,
        Refusal::Evicted,
    ];

    fn name(self) -> &'static str {
        match self {
            Refusal::Allow => "allow-list",
            Refusal::PerIp => "per-ip",
            Refusal::Throttled => "throttled",
            Refusal::MaxClients => "max-clients",
            Refusal::Auth => "auth",
            Refusal::Tls => "tls",
            Refusal::Evicted => "evicted",
        }
    }
}

/// Counts since the last summary.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    since: [AtomicU64; Refusal::ALL.len()],
}

impl Refusals {
    /// Count one refusal.
    pub(crate) fn note(&self, why: Refusal) {
        self.since[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts since the last call (`auth 120, evicted 7`), reset to zero; `None`
    /// when there were none.
    pub(crate) fn take_summary(&self) -> Option<String> {
        let mut text = String::new();
        for why in Refusal::ALL {
            let n = self.since[why as usize].swap(0, Ordering::Relaxed);
            if n > 0 {
                if !text.is_empty() {
                    text.push_str(", ");
                }
                let _ = write!(text, "{} {n}", why.name());
            }
        }
        (!text.is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_counts_by_reason_and_starts_afresh() {
        let r = Refusals::default();
        assert_eq!(r.take_summary(), None);
        for _ in 0..120 {
            r.note(Refusal::Auth);
        }
        r.note(Refusal::Evicted);
        assert_eq!(r.take_summary().as_deref(), Some("auth 120, evicted 1"));
        assert_eq!(r.take_summary(), None);
    }
}
