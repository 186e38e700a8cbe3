//! The judge: the app's answers against the recorded ones, with the simulator's tm
//! table refusing late and second answers as Kamailio's `t_continue` would.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use evapi_proto::{AnswerReader, TransactionId};
use hdrhistogram::Histogram;
use serde_json::Value;

use super::diff::{diff, remove};
use super::plan::{ids_of, Plan, Planned, Suspended};
use super::{Comparison, ReplayReport, ReplayedCall, MAX_LISTED};
use crate::report::Latency;
use crate::tm::{Refusal, Table, TmConfig};

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
    passed: Vec<ReplayedCall>,
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
            self.report
                .timeline
                .count("answers", now.saturating_duration_since(start));
        }
        let replayed_us =
            u64::try_from(now.saturating_duration_since(sent).as_micros()).unwrap_or(u64::MAX);
        let _ = self.replayed_h.record(replayed_us.max(1));
        let outcome = match self.answers.get(&recorded).and_then(|s| s.answer.as_ref()) {
            None => ReplayedCall {
                id: recorded.to_string(),
                verdict: Comparison::Extra,
                diff: Vec::new(),
                recorded_us: None,
                replayed_us: Some(replayed_us),
            },
            Some(rec) => {
                let diff = self.compare(&rec.payload, msg);
                ReplayedCall {
                    id: recorded.to_string(),
                    verdict: if diff.is_empty() {
                        Comparison::Matched
                    } else {
                        Comparison::Different
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
                Some(rec) => ReplayedCall {
                    id: recorded.to_string(),
                    verdict: Comparison::Missing,
                    diff: Vec::new(),
                    recorded_us: Some(rec.latency_us),
                    replayed_us: None,
                },
                None => ReplayedCall {
                    id: recorded.to_string(),
                    verdict: Comparison::Unanswered,
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

    fn push(&mut self, outcome: ReplayedCall) {
        let r = &mut self.report;
        match outcome.verdict {
            Comparison::Matched => r.matched += 1,
            Comparison::Different => r.different += 1,
            Comparison::Missing => r.missing += 1,
            Comparison::Extra => r.extra += 1,
            Comparison::Unanswered => r.unanswered += 1,
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
