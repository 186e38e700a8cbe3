//! The replay's driver: the embedded evapi socket, the clock, the plan's events sent
//! at their time (or as fast as answers come), the app's messages to the judge.

use std::time::Duration;

use super::{Judge, Plan, ReplayReport};

/// How fast the events go out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// At the recorded offsets divided by this factor (1: as recorded).
    Factor(f64),
    /// All at once.
    Max,
    /// Each once the app answered the one before (or its answer timed out).
    Answers,
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speed::Factor(factor) => write!(f, "{factor}"),
            Speed::Max => f.write_str("max"),
            Speed::Answers => f.write_str("answers"),
        }
    }
}

impl std::str::FromStr for Speed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "max" => Ok(Speed::Max),
            "answers" => Ok(Speed::Answers),
            _ => match s.parse::<f64>() {
                Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
                _ => Err(format!(
                    "{s:?}: a factor above 0 (1 = as recorded, 10 = ten times faster), max, or answers"
                )),
            },
        }
    }
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// No app connected in time.
    #[error("no app connected within {0:?}")]
    NoApp(Duration),
}

/// Serve the evapi socket on `listener`, wait (up to `wait_app`) for an app, play
/// The latest an event is played after the start, whatever its recorded offset and the
/// speed (a transcript is input: `t` = 2^64-1 with `--speed 1e-7` must not overflow).
pub const MAX_OFFSET: Duration = Duration::from_secs(366 * 24 * 3600);

/// When an event recorded `at_us` microseconds after the first one is played at speed
/// `factor`: saturating at [`MAX_OFFSET`].
#[must_use]
pub fn offset(at_us: u64, factor: f64) -> Duration {
    Duration::try_from_secs_f64(at_us as f64 / 1e6 / factor)
        .unwrap_or(MAX_OFFSET)
        .min(MAX_OFFSET)
}

/// How long sending `plan`'s events takes at `speed`: the last one's offset for a
/// factor (saturating at [`MAX_OFFSET`]); `None` for `max` and `answers`, which follow
/// the app, not the recorded times.
#[must_use]
pub fn playing_time(plan: &Plan, speed: Speed) -> Option<Duration> {
    match speed {
        Speed::Factor(factor) => Some(
            plan.events
                .iter()
                .map(|e| offset(e.at_us, factor))
                .max()
                .unwrap_or_default(),
        ),
        Speed::Max | Speed::Answers => None,
    }
}

/// `plan`'s events to every connected app at `speed` and judge the answers; returns the
/// report once every event went out and every answer came or timed out.
///
/// # Errors
///
/// [`ReplayError::NoApp`] when no app connected in time.
pub async fn play(
    listener: tokio::net::TcpListener,
    server: evapi_server::Config,
    plan: Plan,
    mut judge: Judge,
    speed: Speed,
    wait_app: Duration,
) -> Result<ReplayReport, ReplayError> {
    use crate::apps::{self, Embedded, Inbound};
    let mut embedded = Embedded::start(listener, server, None);
    let connected = tokio::time::timeout(wait_app, async {
        loop {
            match embedded.inbound.recv().await {
                Some(Inbound::Connected) | None => break,
                Some(Inbound::Message(..)) => {}
            }
        }
    })
    .await;
    if connected.is_err() {
        embedded.stop().await;
        return Err(ReplayError::NoApp(wait_app));
    }
    let start = crate::clock::now();
    let mut next = 0usize;
    let mut per_app = std::collections::BTreeMap::new();
    loop {
        let now = crate::clock::now();
        let due = plan.events.get(next).map(|e| match speed {
            Speed::Max => now,
            Speed::Answers => {
                if judge.waiting() == 0 {
                    now
                } else {
                    now + Duration::from_secs(3600)
                }
            }
            Speed::Factor(f) => start
                .checked_add(offset(e.at_us, f))
                .unwrap_or(now + MAX_OFFSET),
        });
        if due.is_none() && judge.waiting() == 0 {
            break;
        }
        let wake = evapi_ops::time::earliest([due, judge.poll_timeout()]);
        tokio::select! {
            msg = embedded.inbound.recv() => match msg {
                Some(Inbound::Message(client, msg)) => {
                    *per_app.entry(crate::report::app_label(&client)).or_default() += 1;
                    judge.message(crate::clock::now(), &msg);
                }
                Some(Inbound::Connected) => {}
                None => break,
            },
            () = evapi_ops::time::sleep_until(wake) => {
                let now = crate::clock::now();
                judge.handle_timeout(now);
                if let (Some(at), Some(event)) = (due, plan.events.get(next)) {
                    if at <= now {
                        apps::deliver(&embedded.handle, crate::router::Fanout::All, &event.payload);
                        judge.sent(now, event);
                        next += 1;
                    }
                }
            }
        }
    }
    embedded.stop().await;
    let mut report = judge.finish();
    report.per_app = per_app;
    Ok(report)
}
