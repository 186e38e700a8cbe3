//! `evapi-sim replay`: play a recorded transcript's events to an app, as the node did,
//! and judge the app's answers against the recorded ones.
//!
//! Sans-I/O: a [`Plan`] is built from the transcript's entries (the node's frames in
//! order, with their time offsets and transaction ids; the app's recorded answer to
//! each); a [`Judge`] takes `now` with every input, recreates each suspended
//! transaction in the simulator's tm table when its event goes out (so a late or second
//! answer is refused as Kamailio's `t_continue` would refuse it), and ends with a
//! [`ReplayReport`]. The driver in `cli` owns the socket and the clock.
//!
//! Answers are matched by transaction id (found where answers carry them: `tindex` /
//! `tlabel`, `data.index` / `data.label`, ...). Field paths in `ignore` are left out of
//! the comparison (timestamps, ids of the app's own).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use evapi_proto::transcript::{Entry, Side};
use evapi_proto::{AnswerReader, TransactionId};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::report::Latency;
use crate::tm::{Refusal, Table, TmConfig};

/// Default wait for an app's answer (the replay's `fr_inv_timer`).
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Differences listed in full in the report; the rest are counted.
pub const MAX_LISTED: usize = 1000;

/// One event to play.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Microseconds since the first event.
    pub at_us: u64,
    /// The payload, as recorded.
    pub payload: Vec<u8>,
    /// Its transaction ids, when it carries them (then an answer is expected).
    pub ids: Option<TransactionId>,
}

#[derive(Debug, Clone)]
struct Recorded {
    payload: Vec<u8>,
    latency_us: u64,
}

/// A suspended event of the recording: when it went out, and the app's answer if the
/// recording has one. One map for both halves keeps a large transcript's plan small.
#[derive(Debug, Clone)]
struct Suspended {
    sent: u64,
    answer: Option<Recorded>,
}

/// What to play and what the recording says the answers were.
///
/// Built one entry at a time ([`Plan::add`]), so a transcript is never held twice: the
/// plan keeps the payloads (moved out of the entries) and one map entry per suspended
/// event.
#[derive(Debug, Default)]
pub struct Plan {
    /// The node's frames, in order.
    pub events: Vec<Planned>,
    recorded: HashMap<TransactionId, Suspended>,
    answered: usize,
    /// `t` of the first event.
    first: Option<u64>,
    /// App frames in the recording that answered no recorded event (or carried no ids).
    pub unpaired: u64,
    /// Raw (unframed) chunks and lost entries in the transcript: the plan may miss
    /// frames.
    pub gaps: u64,
}

impl Plan {
    /// Build the plan from a transcript's entries.
    ///
    /// # Errors
    ///
    /// A payload that is not valid base64.
    pub fn new(
        entries: impl IntoIterator<Item = Entry>,
        reader: &AnswerReader,
    ) -> Result<Self, base64::DecodeError> {
        let mut plan = Plan::default();
        for entry in entries {
            plan.add(entry, reader)?;
        }
        Ok(plan)
    }

    /// Add the transcript's next entry.
    ///
    /// # Errors
    ///
    /// A payload that is not valid base64.
    pub fn add(&mut self, entry: Entry, reader: &AnswerReader) -> Result<(), base64::DecodeError> {
        match entry {
            Entry::Frame {
                t, from, payload, ..
            } => {
                let payload = payload.into_bytes()?;
                let ids = ids_of(reader, &payload);
                match from {
                    Side::Node => {
                        let start = *self.first.get_or_insert(t);
                        if let Some(id) = ids {
                            self.recorded.insert(
                                id,
                                Suspended {
                                    sent: t,
                                    answer: None,
                                },
                            );
                        }
                        self.events.push(Planned {
                            at_us: t.saturating_sub(start),
                            payload,
                            ids,
                        });
                    }
                    Side::App => match ids.and_then(|id| self.recorded.get_mut(&id)) {
                        Some(suspended) if suspended.answer.is_none() => {
                            suspended.answer = Some(Recorded {
                                payload,
                                latency_us: t.saturating_sub(suspended.sent),
                            });
                            self.answered += 1;
                        }
                        _ => self.unpaired += 1,
                    },
                }
            }
            Entry::Raw { .. } | Entry::Lost { .. } => self.gaps += 1,
            Entry::Open { .. } | Entry::Close { .. } => {}
        }
        Ok(())
    }

    /// Events that carry transaction ids.
    #[must_use]
    pub fn suspended(&self) -> usize {
        self.events.iter().filter(|e| e.ids.is_some()).count()
    }

    /// Recorded answers.
    #[must_use]
    pub fn answered(&self) -> usize {
        self.answered
    }

    /// The recorded answers, by the ids of the events they answered (taken by the
    /// judge; the plan keeps the events and the counts).
    fn take_answers(&mut self) -> HashMap<TransactionId, Suspended> {
        std::mem::take(&mut self.recorded)
    }
}

fn ids_of(reader: &AnswerReader, payload: &[u8]) -> Option<TransactionId> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    reader.ids(&value).ok().flatten().map(|(id, _)| id)
}

/// How one transaction of the recording fared in the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The app answered as recorded.
    Matched,
    /// The app answered otherwise.
    Different,
    /// Recorded with an answer; the app gave none in time.
    Missing,
    /// The app answered an event the recording has no answer to.
    Extra,
    /// Neither the recording nor the app answered: as recorded.
    Unanswered,
}

/// One judged transaction.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The recorded ids (`index:label`).
    pub id: String,
    /// The verdict.
    pub verdict: Verdict,
    /// For `different`: each differing field, `path: recorded -> replayed`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<String>,
    /// The recorded answer's latency, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_us: Option<u64>,
    /// The app's answer latency in the replay, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed_us: Option<u64>,
}

impl Verdict {
    /// Its name in reports, e.g. `different`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Matched => "matched",
            Verdict::Different => "different",
            Verdict::Missing => "missing",
            Verdict::Extra => "extra",
            Verdict::Unanswered => "unanswered",
        }
    }
}

impl Outcome {
    /// Whether this counts as a difference (exit code 1).
    #[must_use]
    pub fn failed(&self) -> bool {
        matches!(
            self.verdict,
            Verdict::Different | Verdict::Missing | Verdict::Extra
        )
    }
}

/// What a replay ended with.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Events played.
    pub events: u64,
    /// Of them, with transaction ids (suspended transactions).
    pub suspended: u64,
    /// Verdicts, counted.
    pub matched: u64,
    /// Answers that differ.
    pub different: u64,
    /// Answers missing.
    pub missing: u64,
    /// Answers to events the recording has none to.
    pub extra: u64,
    /// Events neither side answered.
    pub unanswered: u64,
    /// Answers refused as Kamailio would (late, duplicate, unknown ids), by reason.
    pub refused: std::collections::BTreeMap<String, u64>,
    /// App messages that were not answers (no transaction ids).
    pub other_messages: u64,
    /// Recorded answer latency.
    pub recorded_latency: Latency,
    /// Replayed answer latency.
    pub replayed_latency: Latency,
    /// Every transaction that failed (up to [`MAX_LISTED`]), then every other one up to
    /// the same bound.
    pub outcomes: Vec<Outcome>,
    /// Answers per [`crate::report::TIMELINE_BIN_MS`] since the first event (HTML only).
    #[serde(skip)]
    pub timeline: Vec<u64>,
    /// Messages per app, by `conidx` (HTML only).
    #[serde(skip)]
    pub per_app: std::collections::BTreeMap<String, u64>,
}

impl ReplayReport {
    /// The HTML report's content (see [`crate::html`]), titled `title`.
    #[must_use]
    pub fn page(&self, title: &str) -> crate::html::Page {
        use crate::html::{Page, Table};
        let mut verdicts = Table {
            caption: "Answers against the recording".into(),
            header: vec!["verdict".into(), "transactions".into()],
            rows: [
                ("matched", self.matched),
                ("different", self.different),
                ("missing", self.missing),
                ("extra", self.extra),
                ("unanswered (as recorded)", self.unanswered),
            ]
            .iter()
            .map(|(k, v)| vec![(*k).to_owned(), v.to_string()])
            .collect(),
        };
        for (reason, n) in &self.refused {
            verdicts
                .rows
                .push(vec![format!("refused: {reason}"), n.to_string()]);
        }
        let listed: Vec<&Outcome> = self
            .outcomes
            .iter()
            .filter(|o| o.failed())
            .take(100)
            .collect();
        let failed = Table {
            caption: format!(
                "Differences (first {} of {})",
                listed.len(),
                self.different + self.missing + self.extra
            ),
            header: vec!["transaction".into(), "verdict".into(), "what".into()],
            rows: listed
                .iter()
                .map(|o| vec![o.id.clone(), o.verdict.name().to_owned(), o.diff.join("; ")])
                .collect(),
        };
        let details = if failed.rows.is_empty() {
            Vec::new()
        } else {
            vec![failed]
        };
        Page {
            title: title.to_owned(),
            passed: !self.failed(),
            summary: format!(
                "{} events ({} suspended): {} matched, {} different, {} missing, {} extra",
                self.events, self.suspended, self.matched, self.different, self.missing, self.extra
            ),
            tables: vec![verdicts],
            details,
            latency: vec![
                ("recorded".into(), self.recorded_latency.clone()),
                ("replayed".into(), self.replayed_latency.clone()),
            ],
            timeline: self.timeline.clone(),
            bin_ms: crate::report::TIMELINE_BIN_MS,
            per_app: self.per_app.clone(),
        }
    }

    /// Whether anything differed from the recording.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.different + self.missing + self.extra + self.refused.values().sum::<u64>() > 0
    }

    /// The summary for people.
    #[must_use]
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "replayed {} events ({} suspended): {} matched, {} different, {} missing, {} extra, {} unanswered (as recorded)",
            self.events, self.suspended, self.matched, self.different, self.missing, self.extra, self.unanswered
        );
        if !self.refused.is_empty() {
            let list: Vec<String> = self
                .refused
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(
                out,
                "refused answers (as Kamailio would): {}",
                list.join(", ")
            );
        }
        if self.other_messages > 0 {
            let _ = writeln!(
                out,
                "other app messages (no transaction ids): {}",
                self.other_messages
            );
        }
        let _ = writeln!(
            out,
            "answer latency, recorded: {}",
            self.recorded_latency.line()
        );
        let _ = writeln!(
            out,
            "answer latency, replayed: {}",
            self.replayed_latency.line()
        );
        for o in self.outcomes.iter().filter(|o| o.failed()).take(20) {
            let _ = write!(out, "  {} {}", o.id, o.verdict.name());
            if !o.diff.is_empty() {
                let _ = write!(out, ": {}", o.diff.join("; "));
            }
            out.push('\n');
        }
        out
    }
}

#[derive(Debug, Clone)]
struct Live {
    recorded: TransactionId,
    sent: Instant,
}

/// Judges the app's answers while the plan plays.
#[derive(Debug)]
pub struct Judge {
    reader: AnswerReader,
    ignore: Vec<Vec<String>>,
    answers: HashMap<TransactionId, Suspended>,
    table: Table<Live>,
    /// Recorded ids -> the tm table's.
    ours: HashMap<TransactionId, TransactionId>,
    report: ReplayReport,
    recorded_h: Histogram<u64>,
    replayed_h: Histogram<u64>,
    passed: Vec<Outcome>,
    /// When the first event went out.
    started: Option<Instant>,
}

impl Judge {
    /// A judge for `plan`'s answers (taken from it); an answer is awaited `timeout`
    /// (then missing), and the dotted field paths in `ignore` are not compared.
    ///
    /// # Panics
    ///
    /// Never: the histogram bounds are constants that hdrhistogram accepts.
    #[must_use]
    pub fn new(
        plan: &mut Plan,
        reader: AnswerReader,
        ignore: &[String],
        timeout: Duration,
    ) -> Self {
        let tm = TmConfig {
            fr_timer: timeout,
            fr_inv_timer: timeout,
            ..TmConfig::default()
        };
        let histogram = || {
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant bounds are valid for hdrhistogram")
        };
        Self {
            reader,
            ignore: ignore
                .iter()
                .map(|p| p.split('.').map(str::to_owned).collect())
                .collect(),
            answers: plan.take_answers(),
            table: Table::new(tm),
            ours: HashMap::new(),
            report: ReplayReport::default(),
            recorded_h: histogram(),
            replayed_h: histogram(),
            passed: Vec::new(),
            started: None,
        }
    }

    /// `event` went out at `now`.
    pub fn sent(&mut self, now: Instant, event: &Planned) {
        self.started.get_or_insert(now);
        self.report.events += 1;
        let Some(recorded) = event.ids else { return };
        self.report.suspended += 1;
        let key = format!("{}:{}", recorded.index, recorded.label);
        let id = self.table.create(
            key.as_bytes(),
            true,
            Live {
                recorded,
                sent: now,
            },
            now,
        );
        // A fresh transaction always suspends.
        let _ = self.table.suspend(id, now);
        self.ours.insert(recorded, id);
    }

    /// A message from the app at `now`.
    pub fn message(&mut self, now: Instant, msg: &[u8]) {
        let Some(recorded) = ids_of(&self.reader, msg) else {
            self.report.other_messages += 1;
            return;
        };
        let Some(&id) = self.ours.get(&recorded) else {
            self.refuse(Refusal::Unknown(recorded));
            return;
        };
        let sent = match self.table.resume(id, 0, now) {
            Ok((live, _)) => live.sent,
            Err(refusal) => {
                self.refuse(refusal);
                return;
            }
        };
        if let Some(start) = self.started {
            crate::report::count_in(
                &mut self.report.timeline,
                now.saturating_duration_since(start),
            );
        }
        let replayed_us =
            u64::try_from(now.saturating_duration_since(sent).as_micros()).unwrap_or(u64::MAX);
        let _ = self.replayed_h.record(replayed_us.max(1));
        let outcome = match self.answers.get(&recorded).and_then(|s| s.answer.as_ref()) {
            None => Outcome {
                id: recorded.to_string(),
                verdict: Verdict::Extra,
                diff: Vec::new(),
                recorded_us: None,
                replayed_us: Some(replayed_us),
            },
            Some(rec) => {
                let diff = self.compare(&rec.payload, msg);
                Outcome {
                    id: recorded.to_string(),
                    verdict: if diff.is_empty() {
                        Verdict::Matched
                    } else {
                        Verdict::Different
                    },
                    diff,
                    recorded_us: Some(rec.latency_us),
                    replayed_us: Some(replayed_us),
                }
            }
        };
        self.push(outcome);
    }

    fn refuse(&mut self, refusal: Refusal) {
        *self
            .report
            .refused
            .entry(refusal.name().to_owned())
            .or_default() += 1;
    }

    /// When [`Judge::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.table.poll_timeout()
    }

    /// Answers not given by `now` (past the timeout) are judged.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired = Vec::new();
        self.table.handle_timeout(now, &mut expired);
        for e in expired {
            let recorded = e.data.recorded;
            let outcome = match self.answers.get(&recorded).and_then(|s| s.answer.as_ref()) {
                Some(rec) => Outcome {
                    id: recorded.to_string(),
                    verdict: Verdict::Missing,
                    diff: Vec::new(),
                    recorded_us: Some(rec.latency_us),
                    replayed_us: None,
                },
                None => Outcome {
                    id: recorded.to_string(),
                    verdict: Verdict::Unanswered,
                    diff: Vec::new(),
                    recorded_us: None,
                    replayed_us: None,
                },
            };
            self.push(outcome);
        }
    }

    /// Suspended transactions still waiting for the app.
    #[must_use]
    pub fn waiting(&self) -> u64 {
        let c = self.table.counters();
        c.suspended - c.resumed - c.timed_out
    }

    fn push(&mut self, outcome: Outcome) {
        let r = &mut self.report;
        match outcome.verdict {
            Verdict::Matched => r.matched += 1,
            Verdict::Different => r.different += 1,
            Verdict::Missing => r.missing += 1,
            Verdict::Extra => r.extra += 1,
            Verdict::Unanswered => r.unanswered += 1,
        }
        if let Some(us) = outcome.recorded_us {
            let _ = self.recorded_h.record(us.max(1));
        }
        if outcome.failed() {
            if r.outcomes.len() < MAX_LISTED {
                r.outcomes.push(outcome);
            }
        } else if self.passed.len() < MAX_LISTED {
            self.passed.push(outcome);
        }
    }

    /// The report (outcomes: the failed first, then the passed).
    #[must_use]
    pub fn finish(mut self) -> ReplayReport {
        self.report.recorded_latency = Latency::of(&self.recorded_h);
        self.report.replayed_latency = Latency::of(&self.replayed_h);
        self.report.outcomes.append(&mut self.passed);
        self.report
    }

    /// Differences between the recorded and the replayed answer, ignored paths left out.
    fn compare(&self, recorded: &[u8], replayed: &[u8]) -> Vec<String> {
        let (Ok(mut a), Ok(mut b)) = (
            serde_json::from_slice::<Value>(recorded),
            serde_json::from_slice::<Value>(replayed),
        ) else {
            return if recorded == replayed {
                Vec::new()
            } else {
                vec![format!(
                    "(payload): {} -> {}",
                    String::from_utf8_lossy(recorded),
                    String::from_utf8_lossy(replayed)
                )]
            };
        };
        for path in &self.ignore {
            remove(&mut a, path);
            remove(&mut b, path);
        }
        let mut out = Vec::new();
        diff("", &a, &b, &mut out);
        out
    }
}

fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = value;
    for key in parents {
        match at.get_mut(key.as_str()) {
            Some(next) => at = next,
            None => return,
        }
    }
    if let Some(map) = at.as_object_mut() {
        map.remove(last.as_str());
    }
}

/// Each leaf where `a` and `b` differ, as `path: a -> b` (`(absent)` for a missing field).
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    let name = |p: &str| {
        if p.is_empty() {
            "(root)".to_owned()
        } else {
            p.to_owned()
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match y.get(k) {
                    Some(vb) => diff(&p, va, vb, out),
                    None => out.push(format!("{p}: {va} -> (absent)")),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.push(format!("{p}: (absent) -> {vb}"));
                }
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{}: {a} -> {b}", name(path))),
    }
}

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
                    *per_app.entry(client.conidx.to_string()).or_default() += 1;
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
                        apps::deliver(&embedded.handle, crate::router::Delivery::All, &event.payload);
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

#[cfg(test)]
mod tests {
    use super::*;
    use evapi_proto::transcript::Payload;

    fn frame(t: u64, from: Side, text: &str) -> Entry {
        Entry::Frame {
            t,
            conn: 1,
            from,
            payload: Payload::of(text.as_bytes()),
        }
    }

    /// Regression (issue 24): `t` = 2^64-1 with `--speed 1e-7` panicked (exit 101).
    #[test]
    fn offsets_saturate_whatever_the_transcript_and_speed() {
        assert_eq!(offset(2_000_000, 1.0), Duration::from_secs(2));
        assert_eq!(offset(2_000_000, 10.0), Duration::from_millis(200));
        for (t, f) in [
            (u64::MAX, 1e-7),
            (u64::MAX, f64::MIN_POSITIVE),
            (u64::MAX, 1.0),
            (1, f64::MIN_POSITIVE),
        ] {
            assert_eq!(offset(t, f), MAX_OFFSET, "{t} at {f}");
        }
        assert_eq!(offset(0, f64::MIN_POSITIVE), Duration::ZERO);
        assert_eq!(offset(5, f64::MAX), Duration::ZERO);
        let now = Instant::now();
        assert!(now.checked_add(MAX_OFFSET).is_some());
    }

    proptest::proptest! {
        #[test]
        fn any_offset_and_speed_give_a_time_within_the_cap(t in proptest::num::u64::ANY, f in 1e-300f64..1e300) {
            proptest::prop_assert!(offset(t, f) <= MAX_OFFSET);
        }
    }

    fn plan() -> Plan {
        Plan::new(
            [
                frame(
                    1000,
                    Side::Node,
                    r#"{"tindex":1,"tlabel":1,"ruri":"sip:a@x"}"#,
                ),
                frame(
                    1500,
                    Side::App,
                    r#"{"tindex":1,"tlabel":1,"code":486,"ts":1}"#,
                ),
                frame(2000, Side::Node, r#"{"tindex":2,"tlabel":1}"#),
                frame(2100, Side::Node, r#"{"event":"notice"}"#),
                frame(2600, Side::App, r#"{"tindex":2,"tlabel":1,"code":200}"#),
                frame(3000, Side::Node, r#"{"tindex":3,"tlabel":1}"#),
                frame(3100, Side::App, r#"{"hello":1}"#),
            ],
            &AnswerReader::default(),
        )
        .unwrap()
    }

    #[test]
    fn the_plan_pairs_recorded_answers_with_their_events() {
        let p = plan();
        assert_eq!(p.events.len(), 4);
        assert_eq!(p.events[1].at_us, 1000, "offsets from the first event");
        assert_eq!(p.suspended(), 3);
        assert_eq!(p.answered(), 2);
        assert_eq!(p.unpaired, 1);
    }

    #[test]
    fn answers_are_judged_against_the_recording() {
        let mut p = plan();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut j = Judge::new(
            &mut p,
            AnswerReader::default(),
            &["ts".to_owned()],
            Duration::from_secs(5),
        );
        for e in &p.events {
            j.sent(t0, e);
        }
        // Same as recorded but for the ignored timestamp: matched.
        j.message(ms(1), br#"{"tindex":1,"tlabel":1,"code":486,"ts":99}"#);
        // A different code: the diff names it.
        j.message(ms(2), br#"{"tindex":2,"tlabel":1,"code":503}"#);
        // A second answer is refused, as t_continue refuses it.
        j.message(ms(3), br#"{"tindex":2,"tlabel":1,"code":200}"#);
        // Ids never played.
        j.message(ms(4), br#"{"tindex":9,"tlabel":9,"code":200}"#);
        j.message(ms(5), br#"{"hello":2}"#);
        assert_eq!(j.waiting(), 1);
        j.handle_timeout(ms(5000));
        // Late: the timer ended it.
        j.message(ms(5001), br#"{"tindex":3,"tlabel":1,"code":200}"#);
        let r = j.finish();
        assert_eq!(
            (r.matched, r.different, r.missing, r.extra, r.unanswered),
            (1, 1, 0, 0, 1)
        );
        assert_eq!(r.refused.get("already-resumed"), Some(&1));
        assert_eq!(r.refused.get("unknown"), Some(&1));
        assert_eq!(r.refused.get("late"), Some(&1));
        assert_eq!(r.other_messages, 1);
        assert!(r.failed());
        let different = r
            .outcomes
            .iter()
            .find(|o| o.verdict == Verdict::Different)
            .unwrap();
        assert_eq!(different.diff, ["code: 200 -> 503"]);
        assert_eq!(r.recorded_latency.count, 2);
        assert!(
            r.summary().contains("1 matched, 1 different"),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn a_silent_app_leaves_every_recorded_answer_missing() {
        let mut p = plan();
        let t0 = Instant::now();
        let mut j = Judge::new(&mut p, AnswerReader::default(), &[], Duration::from_secs(1));
        for e in &p.events {
            j.sent(t0, e);
        }
        j.handle_timeout(t0 + Duration::from_secs(1));
        let r = j.finish();
        assert_eq!((r.missing, r.unanswered, r.matched), (2, 1, 0));
        assert!(r.failed());
    }

    #[test]
    fn diffs_name_nested_and_absent_fields() {
        let mut out = Vec::new();
        let a: Value = serde_json::json!({"code":486,"data":{"r":"busy","x":1}});
        let b: Value = serde_json::json!({"code":486,"data":{"r":"free"},"y":true});
        diff("", &a, &b, &mut out);
        assert_eq!(
            out,
            [
                "data.r: \"busy\" -> \"free\"",
                "data.x: 1 -> (absent)",
                "y: (absent) -> true"
            ]
        );
    }
}
