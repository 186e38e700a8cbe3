//! The HTML report's content ([`Page`]) from a run's data: a scenario run's
//! [`Report`] and the SIP front's [`UasCounters`]. The data knows nothing of its
//! renderers; this module and [`crate::junit`] read it.

use crate::front::UasCounters;
use crate::html::{Page, PageTable};
use crate::report::{Report, TIMELINE_BIN_MS};

impl Report {
    /// The HTML report's content (see [`crate::html`]).
    #[must_use]
    pub fn page(&self) -> Page {
        let mut outcomes = PageTable {
            caption: "Final replies".into(),
            header: vec!["code".into(), "count".into()],
            rows: self
                .finals
                .iter()
                .map(|(code, n)| vec![code.to_string(), n.to_string()])
                .collect(),
        };
        for (label, n) in [
            ("timed out", self.timeouts),
            ("invalid answers", self.invalid_answers),
            ("undelivered events", self.undelivered),
        ] {
            outcomes.rows.push(vec![label.into(), n.to_string()]);
        }
        for (reason, n) in &self.refused {
            outcomes
                .rows
                .push(vec![format!("refused: {reason}"), n.to_string()]);
        }
        let checks = PageTable {
            caption: "Expectations".into(),
            header: vec![
                "expectation".into(),
                "expected".into(),
                "actual".into(),
                "result".into(),
            ],
            rows: self
                .checks
                .iter()
                .map(|c| {
                    vec![
                        c.what.clone(),
                        c.expected.to_string(),
                        c.actual.to_string(),
                        if c.ok { "ok" } else { "FAILED" }.to_owned(),
                    ]
                })
                .collect(),
        };
        let mut tables = Vec::new();
        if !self.cases.is_empty() {
            // The failed cases first, each with what it wanted and what it got.
            let mut verdicts: Vec<&crate::cases::CaseVerdict> = self.cases.iter().collect();
            verdicts.sort_by_key(|v| v.ok());
            let failed = verdicts.iter().filter(|v| !v.ok()).count();
            tables.push(PageTable {
                caption: format!(
                    "Cases: {} passed, {failed} failed",
                    self.cases.len() - failed
                ),
                header: vec![
                    "case".into(),
                    "calls".into(),
                    "passed".into(),
                    "expected".into(),
                    "actual".into(),
                    "result".into(),
                ],
                rows: verdicts
                    .iter()
                    .map(|v| {
                        let side = |f: fn(&crate::cases::Mismatch) -> &str| {
                            v.mismatches
                                .iter()
                                .map(|m| format!("{}: {}", m.what, f(m)))
                                .collect::<Vec<_>>()
                                .join("; ")
                        };
                        vec![
                            v.name.clone(),
                            v.calls.to_string(),
                            v.passed.to_string(),
                            side(|m| &m.expected),
                            side(|m| &m.actual),
                            if v.ok() { "ok" } else { "FAILED" }.to_owned(),
                        ]
                    })
                    .collect(),
            });
        }
        tables.extend([outcomes, checks]);
        Page {
            title: format!("{} (evapi-sim)", self.name),
            passed: self.passed,
            summary: format!(
                "{} requests in {} ms, {} answered",
                self.requests, self.duration_ms, self.latency.count
            ),
            tables,
            details: Vec::new(),
            latency: vec![("suspend to final reply".into(), self.latency.clone())],
            timeline: self.timeline.clone(),
            bin_ms: TIMELINE_BIN_MS,
            per_app: self.per_app.clone(),
            provenance: Vec::new(),
            timeline_of: "final replies".into(),
        }
    }
}

impl UasCounters {
    /// The HTML report's content (see [`crate::html`]).
    #[must_use]
    pub fn page(&self) -> Page {
        let rows = |pairs: Vec<(String, u64)>| -> Vec<Vec<String>> {
            pairs
                .into_iter()
                .map(|(k, v)| vec![k, v.to_string()])
                .collect()
        };
        let requests = PageTable {
            caption: "Requests and final responses".into(),
            header: vec!["what".into(), "count".into()],
            rows: rows(
                self.requests
                    .iter()
                    .map(|(m, n)| (m.clone(), *n))
                    .chain(
                        self.routing
                            .finals
                            .iter()
                            .map(|(c, n)| (format!("final {c}"), *n)),
                    )
                    .chain([
                        ("busy (503)".to_owned(), self.routing.busy),
                        ("no app".to_owned(), self.routing.no_app),
                        ("retransmitted INVITEs".to_owned(), self.sip.retransmissions),
                        ("final retransmits".to_owned(), self.sip.final_retransmits),
                        ("malformed".to_owned(), self.malformed),
                    ])
                    .collect(),
            ),
        };
        let checks = PageTable {
            caption: "Health (each should be 0)".into(),
            header: vec!["what".into(), "count".into()],
            rows: rows(
                self.checks()
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), *v))
                    .collect(),
            ),
        };
        let bad: u64 = self.checks().iter().map(|(_, n)| n).sum();
        Page {
            title: "evapi-sim sip".into(),
            passed: bad == 0,
            summary: format!(
                "{} requests, {} final responses, {} answered by apps",
                self.requests.values().sum::<u64>(),
                self.routing.finals.values().sum::<u64>(),
                self.latency.count
            ),
            tables: vec![requests, checks],
            details: Vec::new(),
            latency: vec![("suspend to final response".into(), self.latency.clone())],
            timeline: self.timeline.clone(),
            bin_ms: TIMELINE_BIN_MS,
            per_app: self.per_app.clone(),
            provenance: Vec::new(),
            timeline_of: "final replies".into(),
        }
    }
}
