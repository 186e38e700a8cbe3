//! JUnit XML for CI systems (GitLab, Jenkins, GitHub test reporters): each judged
//! transaction of a replay, or each expectation of a scenario run, is a test case; a
//! failure carries the reason. The shape is the common one (`testsuites` > `testsuite` >
//! `testcase` > `failure`), checked against `docs/junit.xsd` in the tests.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report as Junit, TestCase, TestCaseStatus, TestSuite};

use crate::replay::ReplayReport;
use crate::report::Report;

struct Case {
    name: String,
    seconds: f64,
    /// The failure's message and its detail.
    failure: Option<(String, String)>,
}

/// The cases as one suite of one report, serialized by quick-junit (which escapes the
/// text and drops characters XML 1.0 cannot hold).
fn document(suite: &str, cases: &[Case]) -> String {
    document_timed(suite, cases, None)
}

/// [`document`], with the run's wall-clock duration as the suite's time when the cases
/// have none of their own (checks of a whole run).
fn document_timed(suite: &str, cases: &[Case], run_seconds: Option<f64>) -> String {
    let mut test_suite = TestSuite::new(suite);
    for case in cases {
        let status = match &case.failure {
            None => TestCaseStatus::success(),
            Some((message, detail)) => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status
                    .set_message(message.as_str())
                    .set_type("mismatch")
                    .set_description(detail.as_str());
                status
            }
        };
        let mut test_case = TestCase::new(case.name.as_str(), status);
        test_case
            .set_classname(suite)
            .set_time(Duration::from_secs_f64(case.seconds.max(0.0)));
        test_suite.add_test_case(test_case);
    }
    let total: f64 = run_seconds
        .unwrap_or_else(|| cases.iter().map(|c| c.seconds.max(0.0)).sum())
        .max(0.0);
    test_suite.set_time(Duration::from_secs_f64(total));
    let mut report = Junit::new(suite);
    report
        .set_time(Duration::from_secs_f64(total))
        .add_test_suite(test_suite);
    // Serializing into a String fails only on I/O, which a String never gives.
    report.to_string().unwrap_or_default()
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
pub fn sip(counters: &crate::front::UasCounters) -> String {
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

/// A scenario run's expectations as test cases, timed by the run; a failed count says
/// what came instead (the final codes received, by code).
#[must_use]
pub fn run(report: &Report) -> String {
    let came: Vec<String> = report
        .finals
        .iter()
        .map(|(code, n)| format!("{n} x {code}"))
        .chain((report.timeouts > 0).then(|| format!("{} timed out", report.timeouts)))
        .collect();
    let came = if came.is_empty() {
        "no final reply".to_owned()
    } else {
        came.join(", ")
    };
    // Each case is a test case of its own, the failed ones first.
    let mut verdicts: Vec<&crate::cases::CaseVerdict> = report.cases.iter().collect();
    verdicts.sort_by_key(|v| v.ok());
    let by_case = verdicts.into_iter().map(|v| Case {
        name: v.name.clone(),
        seconds: v.slowest_us as f64 / 1e6,
        failure: (!v.ok()).then(|| {
            let detail: Vec<String> = v
                .mismatches
                .iter()
                .map(|m| {
                    format!(
                        "{}\n  expected: {}\n  actual:   {}",
                        m.what, m.expected, m.actual
                    )
                })
                .collect();
            (v.why(), detail.join("\n"))
        }),
    });
    let cases: Vec<Case> = by_case
        .chain(report.checks.iter().map(|c| Case {
            name: format!("{} = {}", c.what, c.expected),
            seconds: 0.0,
            failure: (!c.ok).then(|| {
                (
                    format!("{}: expected {}, got {}", c.what, c.expected, c.actual),
                    format!(
                        "expected {}, got {}; final replies of the run: {came}",
                        c.expected, c.actual
                    ),
                )
            }),
        }))
        .collect();
    document_timed(
        &format!("evapi-sim run {}", report.name),
        &cases,
        Some(report.duration_ms as f64 / 1000.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_control_characters_dropped() {
        let xml = document(
            "s",
            &[Case {
                name: "a<b & \"c\"\u{1}".into(),
                seconds: 0.0,
                failure: None,
            }],
        );
        assert!(xml.contains("name=\"a&lt;b &amp; &quot;c&quot;\""), "{xml}");
        assert!(!xml.contains('\u{1}'), "{xml}");
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
        assert!(xml.contains("tests=\"2\""), "{xml}");
        assert!(xml.contains("failures=\"1\""), "{xml}");
        assert!(
            xml.contains(
                "<failure message=\"m&lt;\" type=\"mismatch\">code: 200 -&gt; 503</failure>"
            ),
            "{xml}"
        );
    }

    #[test]
    fn a_run_is_timed_and_a_failed_count_says_what_came() {
        let report = Report {
            name: "demo".into(),
            requests: 10,
            finals: [(486, 10)].into_iter().collect(),
            timeouts: 0,
            refused: std::collections::BTreeMap::new(),
            invalid_answers: 0,
            undelivered: 0,
            no_app: 0,
            latency: crate::report::Latency::default(),
            duration_ms: 3750,
            checks: vec![crate::report::Check {
                what: "final 200".into(),
                expected: 10,
                actual: 0,
                ok: false,
            }],
            passed: false,
            interrupted: false,
            timeline: crate::report::Timeline::default(),
            per_app: std::collections::BTreeMap::new(),
            cases: Vec::new(),
        };
        let xml = run(&report);
        assert!(xml.contains("time=\"3.750\""), "{xml}");
        assert!(
            xml.contains("expected 10, got 0; final replies of the run: 10 x 486</failure>"),
            "{xml}"
        );
    }
}
