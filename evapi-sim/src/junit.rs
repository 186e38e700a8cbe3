//! JUnit XML for CI systems (GitLab, Jenkins, GitHub test reporters): each judged
//! transaction of a replay, or each expectation of a scenario run, is a test case; a
//! failure carries the reason. The shape is the common one (`testsuites` > `testsuite` >
//! `testcase` > `failure`), checked against `docs/junit.xsd` in the tests.

use std::fmt::Write as _;

use crate::replay::ReplayReport;
use crate::report::Report;

/// XML text with the five special characters escaped, and characters XML 1.0 cannot
/// hold (control characters other than tab, CR, LF) replaced by U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

struct Case {
    name: String,
    seconds: f64,
    failure: Option<(String, String)>,
}

fn document(suite: &str, cases: &[Case]) -> String {
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let total: f64 = cases.iter().map(|c| c.seconds).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{s}\" tests=\"{n}\" failures=\"{failures}\" errors=\"0\" time=\"{total:.6}\">",
        s = escape(suite),
        n = cases.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{s}\" tests=\"{n}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{total:.6}\">",
        s = escape(suite),
        n = cases.len()
    );
    for case in cases {
        let _ = write!(
            out,
            "    <testcase classname=\"{s}\" name=\"{name}\" time=\"{t:.6}\"",
            s = escape(suite),
            name = escape(&case.name),
            t = case.seconds
        );
        match &case.failure {
            None => out.push_str("/>\n"),
            Some((message, detail)) => {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\" type=\"mismatch\">{}</failure>\n    </testcase>",
                    escape(message),
                    escape(detail)
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// A replay's transactions as test cases (the listed ones: every failure, then the
/// passed up to the report's bound), plus one case for refused answers.
#[must_use]
pub fn replay(report: &ReplayReport) -> String {
    let mut cases: Vec<Case> = report
        .outcomes
        .iter()
        .map(|o| {
            let verdict = o.verdict.name();
            Case {
                name: format!("transaction {}", o.id),
                seconds: o.replayed_us.unwrap_or(0) as f64 / 1e6,
                failure: o.failed().then(|| {
                    let detail = if o.diff.is_empty() {
                        format!("{verdict} (recorded answer latency {:?} us)", o.recorded_us)
                    } else {
                        o.diff.join("\n")
                    };
                    (format!("answer {verdict}"), detail)
                }),
            }
        })
        .collect();
    let refused: u64 = report.refused.values().sum();
    let list: Vec<String> = report
        .refused
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    cases.push(Case {
        name: "no answer refused (late, duplicate, unknown ids)".into(),
        seconds: 0.0,
        failure: (refused > 0).then(|| (format!("{refused} answers refused"), list.join(", "))),
    });
    document("evapi-sim replay", &cases)
}

/// A SIP load test's health checks as test cases (each count should be 0).
#[must_use]
pub fn sip(counters: &crate::uas::UasCounters) -> String {
    let cases: Vec<Case> = counters
        .checks()
        .iter()
        .map(|(what, n)| Case {
            name: format!("no {what}"),
            seconds: 0.0,
            failure: (*n > 0).then(|| (format!("{n} {what}"), format!("{what}: {n}, expected 0"))),
        })
        .collect();
    document("evapi-sim sip", &cases)
}

/// A scenario run's expectations as test cases.
#[must_use]
pub fn run(report: &Report) -> String {
    let cases: Vec<Case> = report
        .checks
        .iter()
        .map(|c| Case {
            name: format!("{} = {}", c.what, c.expected),
            seconds: 0.0,
            failure: (!c.ok).then(|| {
                (
                    format!("{}: expected {}, got {}", c.what, c.expected, c.actual),
                    format!("expected {}, got {}", c.expected, c.actual),
                )
            }),
        })
        .collect();
    document(&format!("evapi-sim run {}", report.name), &cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_control_characters_replaced() {
        assert_eq!(
            escape("a<b & \"c\"\u{1}"),
            "a&lt;b &amp; &quot;c&quot;\u{FFFD}"
        );
    }

    #[test]
    fn a_failed_case_carries_its_reason() {
        let xml = document(
            "s",
            &[
                Case {
                    name: "ok".into(),
                    seconds: 0.5,
                    failure: None,
                },
                Case {
                    name: "bad".into(),
                    seconds: 0.0,
                    failure: Some(("m<".into(), "code: 200 -> 503".into())),
                },
            ],
        );
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert!(
            xml.contains(
                "<failure message=\"m&lt;\" type=\"mismatch\">code: 200 -&gt; 503</failure>"
            ),
            "{xml}"
        );
    }
}
