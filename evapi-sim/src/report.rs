//! What a run ended with: counts per final code, refusals, latency percentiles, and
//! the scenario's expectations checked against them. Rendered as a human summary and
//! as JSON (`--report FILE`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::scenario::Expect;

/// Latency percentiles in microseconds (suspend to final reply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
}

impl Latency {
    /// Percentiles of `h` (microseconds).
    #[must_use]
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
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
    /// Suspend-to-final latency of resumed transactions.
    pub latency: Latency,
    /// Wall time of the traffic, milliseconds.
    pub duration_ms: u64,
    /// Expectations and their results.
    pub checks: Vec<Check>,
    /// Whether every expectation held.
    pub passed: bool,
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
        self.passed = checks.iter().all(|c| c.ok);
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
        let l = &self.latency;
        let _ = writeln!(
            s,
            "\n  latency (suspend to final reply): p50 {} p90 {} p99 {} max {}",
            us(l.p50_us),
            us(l.p90_us),
            us(l.p99_us),
            us(l.max_us)
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
        let _ = write!(s, "\n  {}", if self.passed { "PASSED" } else { "FAILED" });
        s
    }
}

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
