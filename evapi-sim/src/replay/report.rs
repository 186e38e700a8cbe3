//! What a replay ended with: the verdict of each transaction, counts, latencies, and
//! their rendering (summary, HTML page).

use serde::Serialize;

use crate::report::Latency;

/// How one transaction of the recording fared in the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Comparison {
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
pub struct ReplayedCall {
    /// The recorded ids (`index:label`).
    pub id: String,
    /// The verdict.
    pub verdict: Comparison,
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

impl Comparison {
    /// Its name in reports, e.g. `different`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Comparison::Matched => "matched",
            Comparison::Different => "different",
            Comparison::Missing => "missing",
            Comparison::Extra => "extra",
            Comparison::Unanswered => "unanswered",
        }
    }
}

impl ReplayedCall {
    /// Whether this counts as a difference (exit code 1).
    #[must_use]
    pub fn failed(&self) -> bool {
        matches!(
            self.verdict,
            Comparison::Different | Comparison::Missing | Comparison::Extra
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
    /// Every transaction that failed (up to [`MAX_LISTED`](super::MAX_LISTED)), then every other one up to
    /// the same bound.
    pub outcomes: Vec<ReplayedCall>,
    /// Answers per [`crate::report::TIMELINE_BIN_MS`] since the first event (HTML only).
    #[serde(skip)]
    pub timeline: crate::report::Timeline,
    /// Messages per app, by `conidx` (HTML only).
    #[serde(skip)]
    pub per_app: std::collections::BTreeMap<String, u64>,
}

impl ReplayReport {
    /// The HTML report's content (see [`crate::html`]), titled `title`.
    #[must_use]
    pub fn page(&self, title: &str) -> crate::html::Page {
        use crate::html::{Page, PageTable};
        let mut verdicts = PageTable {
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
        let listed: Vec<&ReplayedCall> = self
            .outcomes
            .iter()
            .filter(|o| o.failed())
            .take(100)
            .collect();
        let failed = PageTable {
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
            provenance: Vec::new(),
            timeline_of: "answers".into(),
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
        const SHOWN: usize = 20;
        for o in self.outcomes.iter().filter(|o| o.failed()).take(SHOWN) {
            let _ = write!(out, "  {} {}", o.id, o.verdict.name());
            if !o.diff.is_empty() {
                let _ = write!(out, ": {}", o.diff.join("; "));
            }
            out.push('\n');
        }
        let failed = self.different + self.missing + self.extra;
        if failed > SHOWN as u64 {
            let _ = writeln!(
                out,
                "  ... and {} more (listed, up to 1,000, in --report, --junit and --html files)",
                failed - SHOWN as u64
            );
        }
        out
    }
}
