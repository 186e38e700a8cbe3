//! What a run ended with: counts per final code, refusals, latency percentiles, and
//! the scenario's expectations checked against them. Rendered as a human summary and
//! as JSON (`--report FILE`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::scenario::Expect;

/// Upper bounds of the latency histogram's buckets, microseconds (the last bucket,
/// `le_us: null`, holds the rest).
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// One histogram bucket: how many latencies were at most `le_us` (and above the
/// previous bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Upper bound in microseconds; `None` for the last, open bucket.
    pub le_us: Option<u64>,
    /// Latencies in this bucket.
    pub count: u64,
}

/// Latency in microseconds (suspend to final reply, or request to final response);
/// every figure is 0 when nothing was measured (`count` 0), which the summary shows
/// as "n/a".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// How many latencies were measured.
    pub count: u64,
    /// Fastest.
    pub min_us: u64,
    /// Mean.
    pub mean_us: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Counts per bucket of [`BUCKETS_US`], empty buckets included.
    pub buckets: Vec<Bucket>,
    /// Latency at each of [`CURVE_PERMILLE`] (per mille, microseconds), for the HTML
    /// report's percentile curve; not in the JSON report.
    #[serde(skip)]
    pub curve: Vec<(u32, u64)>,
}

/// The percentiles of [`Latency::curve`], per mille.
pub const CURVE_PERMILLE: [u32; 25] = [
    0, 50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 550, 600, 650, 700, 750, 800, 850, 900,
    950, 975, 990, 995, 999, 1000,
];

impl Latency {
    /// Figures of `h` (microseconds).
    #[must_use]
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let mut buckets = Vec::with_capacity(BUCKETS_US.len() + 1);
        let mut below = 0;
        for le in BUCKETS_US {
            let upto = h.count_between(0, le);
            buckets.push(Bucket {
                le_us: Some(le),
                count: upto - below,
            });
            below = upto;
        }
        buckets.push(Bucket {
            le_us: None,
            count: h.len() - below,
        });
        Self {
            count: h.len(),
            min_us: h.min(),
            mean_us: h.mean().round() as u64,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            buckets,
            curve: CURVE_PERMILLE
                .iter()
                .map(|p| (*p, h.value_at_quantile(f64::from(*p) / 1000.0)))
                .collect(),
        }
    }

    /// One line for people: the percentiles, or "n/a" when nothing was measured (all
    /// zeros would read as instant answers).
    #[must_use]
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "n/a (no answers)".to_owned();
        }
        format!(
            "p50 {} p90 {} p99 {} p99.9 {} max {} (min {}, mean {}, {} answers)",
            us(self.p50_us),
            us(self.p90_us),
            us(self.p99_us),
            us(self.p999_us),
            us(self.max_us),
            us(self.min_us),
            us(self.mean_us),
            self.count
        )
    }
}

/// One expectation and whether it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, e.g. `final 200`.
    pub what: String,
    /// The expected count.
    pub expected: u64,
    /// The actual count.
    pub actual: u64,
    /// Whether they are equal.
    pub ok: bool,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub name: String,
    /// Requests generated.
    pub requests: u64,
    /// Final replies per code.
    pub finals: BTreeMap<u16, u64>,
    /// Ended by the final response timer.
    pub timeouts: u64,
    /// Continues refused, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// Messages from apps that were not valid answers.
    pub invalid_answers: u64,
    /// Events relayed to nobody (no client, or no client with the tag).
    pub undelivered: u64,
    /// Requests answered at once because their event reached no app
    /// (`route.no_app_reply`).
    #[serde(skip_serializing_if = "is_zero")]
    pub no_app: u64,
    /// Suspend-to-final latency of resumed transactions.
    pub latency: Latency,
    /// Wall time of the traffic, milliseconds.
    pub duration_ms: u64,
    /// Expectations and their results.
    pub checks: Vec<Check>,
    /// Whether every expectation held.
    pub passed: bool,
    /// Whether the run was stopped before the end (Ctrl-C); the counts are partial and
    /// `passed` is false.
    pub interrupted: bool,
    /// Final replies per [`TIMELINE_BIN_MS`] since the start, by code and cause (HTML
    /// report only).
    #[serde(skip)]
    pub timeline: Timeline,
    /// Answers per app, by `conidx` (HTML report only).
    #[serde(skip)]
    pub per_app: BTreeMap<String, u64>,
    /// The verdict on each case, in the scenario's order (none without cases).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<crate::cases::CaseVerdict>,
}

/// Width of a timeline bin, milliseconds.
pub const TIMELINE_BIN_MS: u64 = 100;

/// Counts per bin of [`TIMELINE_BIN_MS`] since the start, one series per kind of
/// outcome ("486 answered", "408 timer"), so that a rate chart says what it counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    /// Count per bin, by label.
    pub series: BTreeMap<String, Vec<u64>>,
}

impl Timeline {
    /// Count one `label` at `elapsed` since the start (bins are added as time goes;
    /// past an hour, the last bin).
    pub fn count(&mut self, label: &str, elapsed: Duration) {
        const MAX_BINS: usize = 36_000;
        let bin = usize::try_from(elapsed.as_millis() / u128::from(TIMELINE_BIN_MS))
            .unwrap_or(usize::MAX)
            .min(MAX_BINS - 1);
        let bins = match self.series.get_mut(label) {
            Some(bins) => bins,
            None => self.series.entry(label.to_owned()).or_default(),
        };
        if bins.len() <= bin {
            bins.resize(bin + 1, 0);
        }
        bins[bin] += 1;
    }

    /// How many bins the longest series has.
    #[must_use]
    pub fn bins(&self) -> usize {
        self.series.values().map(Vec::len).max().unwrap_or(0)
    }

    /// Whether nothing was counted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.series
            .values()
            .all(|bins| bins.iter().all(|n| *n == 0))
    }
}

/// A final reply's series on the rate chart: its code and why it was sent
/// (`486 answered`, `408 timer`, `487 cancelled`, `503 no app`, `200 relayed`).
#[must_use]
pub fn reply_label(code: u16, cause: &crate::router::Cause) -> String {
    use crate::router::Cause;
    let why = match cause {
        Cause::Answered { .. } => "answered",
        Cause::Relayed => "relayed",
        Cause::TimedOut => "timer",
        Cause::Cancelled => "cancelled",
        Cause::NoApp => "no app",
    };
    format!("{code} {why}")
}

/// How reports name an app: its `conidx`, its address and port, and its tag and token
/// name when it has them (`0 127.0.0.1:40312 tag billing token router`).
#[must_use]
pub fn app_label(app: &evapi_server::ClientEnv) -> String {
    let mut label = format!("{} {}:{}", app.conidx, app.srcaddr, app.srcport);
    if let Some(tag) = &app.tag {
        let _ = write!(label, " tag {tag}");
    }
    if let Some(auth) = &app.auth {
        let _ = write!(label, " token {auth}");
    }
    label
}

/// What every driver counts of its final replies, for the reports: the latency of
/// answered requests, final replies per [`TIMELINE_BIN_MS`] since the start by code and
/// cause, answers per app. Time is an input.
#[derive(Debug)]
pub struct RunStats {
    latency: Histogram<u64>,
    started: std::time::Instant,
    timeline: Timeline,
    per_app: BTreeMap<String, u64>,
}

impl RunStats {
    /// Counting from `started`.
    ///
    /// # Panics
    ///
    /// Never: 3 significant figures is a precision hdrhistogram accepts.
    #[must_use]
    pub fn new(started: std::time::Instant) -> Self {
        Self {
            latency: Histogram::new(3).expect("3 significant figures is a valid precision"),
            started,
            timeline: Timeline::default(),
            per_app: BTreeMap::new(),
        }
    }

    /// Count from `started` instead (the run's first request).
    pub fn restart(&mut self, started: std::time::Instant) {
        self.started = started;
    }

    /// A final reply of `code` at `now`, for `cause`.
    pub fn reply(&mut self, now: std::time::Instant, code: u16, cause: &crate::router::Cause) {
        if let crate::router::Cause::Answered { latency } = cause {
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            let _ = self.latency.record(us.max(1));
        }
        self.timeline.count(
            &reply_label(code, cause),
            now.saturating_duration_since(self.started),
        );
    }

    /// An app resumed a transaction.
    pub fn answered_by(&mut self, app: &evapi_server::ClientEnv) {
        *self.per_app.entry(app_label(app)).or_default() += 1;
    }

    /// The answer latencies so far.
    #[must_use]
    pub fn latency(&self) -> Latency {
        Latency::of(&self.latency)
    }

    /// The timeline and the answers per app, for a report.
    #[must_use]
    pub fn take(&mut self) -> (Timeline, BTreeMap<String, u64>) {
        (
            std::mem::take(&mut self.timeline),
            std::mem::take(&mut self.per_app),
        )
    }
}

impl Report {
    /// Check `expect` against the counts and fill `checks` and `passed`.
    pub fn check(&mut self, expect: &Expect) {
        let mut checks = Vec::new();
        for (code, &want) in &expect.codes {
            let code: u16 = code.parse().unwrap_or_default();
            let got = self.finals.get(&code).copied().unwrap_or(0);
            checks.push(check(format!("final {code}"), want, got));
        }
        if let Some(want) = expect.timeouts {
            checks.push(check("timeouts".to_owned(), want, self.timeouts));
        }
        if let Some(want) = expect.refused {
            checks.push(check(
                "refused continues".to_owned(),
                want,
                self.refused_total(),
            ));
        }
        if let Some(want) = expect.invalid_answers {
            checks.push(check(
                "invalid answers".to_owned(),
                want,
                self.invalid_answers,
            ));
        }
        self.passed = !self.interrupted
            && checks.iter().all(|c| c.ok)
            && self.cases.iter().all(crate::cases::CaseVerdict::ok);
        self.checks = checks;
    }

    /// All refused continues.
    #[must_use]
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// The human summary.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let secs = Duration::from_millis(self.duration_ms).as_secs_f64();
        let _ = writeln!(s, "{}", self.name);
        let _ = writeln!(
            s,
            "  {} requests in {:.2}s ({:.0}/s)",
            self.requests,
            secs,
            self.requests as f64 / secs.max(1e-3)
        );
        let _ = writeln!(s, "\n  outcome                 count");
        for (code, n) in &self.finals {
            let _ = writeln!(s, "  final {code:<17} {n:>5}");
        }
        let _ = writeln!(s, "  timeouts                {:>5}", self.timeouts);
        let _ = writeln!(s, "  refused continues       {:>5}", self.refused_total());
        for (why, n) in &self.refused {
            let _ = writeln!(s, "    {why:<21} {n:>5}");
        }
        let _ = writeln!(s, "  invalid answers         {:>5}", self.invalid_answers);
        let _ = writeln!(s, "  undelivered events      {:>5}", self.undelivered);
        if self.no_app > 0 {
            let _ = writeln!(s, "  no app (answered now)   {:>5}", self.no_app);
        }
        let _ = writeln!(
            s,
            "\n  latency (suspend to final reply): {}",
            self.latency.line()
        );
        if !self.checks.is_empty() {
            let _ = writeln!(s, "\n  expectations");
            for c in &self.checks {
                let mark = if c.ok { "ok  " } else { "FAIL" };
                let _ = writeln!(
                    s,
                    "  {mark} {:<22} expected {:>5}, got {:>5}",
                    c.what, c.expected, c.actual
                );
            }
        }
        if !self.cases.is_empty() {
            let failed: Vec<&crate::cases::CaseVerdict> =
                self.cases.iter().filter(|c| !c.ok()).collect();
            let _ = writeln!(
                s,
                "\n  cases: {} passed, {} failed",
                self.cases.len() - failed.len(),
                failed.len()
            );
            // The failed ones first and by name, field by field; at most 20 listed.
            for c in failed.iter().take(CASES_LISTED) {
                let _ = writeln!(
                    s,
                    "  FAIL {}: {} of {} call(s) failed",
                    c.name,
                    c.calls - c.passed,
                    c.calls
                );
                if c.calls == 0 {
                    let _ = writeln!(s, "       no call of this case ended");
                }
                for m in &c.mismatches {
                    let _ = writeln!(
                        s,
                        "       {:<12} expected {}, got {}",
                        m.what, m.expected, m.actual
                    );
                }
            }
            if failed.len() > CASES_LISTED {
                let _ = writeln!(
                    s,
                    "  ... and {} more failed case(s) (--report FILE has them all)",
                    failed.len() - CASES_LISTED
                );
            }
        }
        let verdict = match (self.interrupted, self.passed) {
            (true, _) => "INTERRUPTED (partial counts)",
            (false, true) => "PASSED",
            (false, false) => "FAILED",
        };
        let _ = write!(s, "\n  {verdict}");
        s
    }
}

/// Failed cases the summary lists by name.
const CASES_LISTED: usize = 20;

fn check(what: String, expected: u64, actual: u64) -> Check {
    Check {
        what,
        expected,
        actual,
        ok: expected == actual,
    }
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1}ms", v as f64 / 1000.0)
    } else {
        format!("{v}us")
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_answers_read_as_n_a_not_as_instant() {
        let h = Histogram::<u64>::new(3).expect("valid precision");
        let l = Latency::of(&h);
        assert_eq!(l.line(), "n/a (no answers)");
    }

    #[test]
    fn figures_and_buckets() {
        let mut h = Histogram::<u64>::new(3).expect("valid precision");
        for v in [50, 150, 150, 900, 20_000_000] {
            h.record(v).expect("in range");
        }
        let l = Latency::of(&h);
        assert_eq!((l.count, l.min_us, l.p50_us), (5, 50, 150));
        let counts: Vec<u64> = l.buckets.iter().map(|b| b.count).collect();
        assert_eq!(counts, [1, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(l.buckets.last().map(|b| b.le_us), Some(None));
        assert!(l.line().starts_with("p50 150us p90 "), "{}", l.line());
        assert!(l.line().ends_with("5 answers)"), "{}", l.line());
    }

    #[test]
    fn apps_are_named_by_slot_address_tag_and_token() {
        let mut app =
            evapi_server::ClientEnv::tcp(2, 9, (std::net::Ipv4Addr::LOCALHOST, 40312).into());
        assert_eq!(app_label(&app), "2 127.0.0.1:40312");
        app.tag = Some("billing".into());
        app.auth = Some("router".into());
        assert_eq!(
            app_label(&app),
            "2 127.0.0.1:40312 tag billing token router"
        );
    }
}
