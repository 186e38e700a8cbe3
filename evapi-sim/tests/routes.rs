//! Scenario features the shipped scenarios do not cover, in-process on tokio's paused
//! clock: durations are virtual, so rates and timers can be checked exactly.

use evapi_sim::engine::{self, Quiet, RunOptions};
use evapi_sim::report::Report;
use evapi_sim::scenario::Scenario;

async fn run(text: &str) -> Report {
    let loaded = Scenario::parse(text, "test").unwrap();
    let options = RunOptions {
        bind: Some("127.0.0.1:0".to_owned()),
        fallback_to_ephemeral: false,
        interrupt: None,
        metrics: None,
        control_token: None,
    };
    engine::run(&loaded, &options, &Quiet).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn plain_relay_replies_at_once_and_late_answers_are_refused() {
    let report = run(r#"{
        "traffic": { "count": 20, "concurrency": 0 },
        "route": { "action": "relay", "relay_code": 202 },
        "responders": [ { "kind": "answer", "code": 486 } ],
        "linger": "1s"
    }"#)
    .await;
    assert_eq!(report.finals.get(&202), Some(&20), "{}", report.summary());
    assert_eq!(report.finals.get(&486), None);
    // The app answered every event, but each transaction already had its reply.
    assert_eq!(report.refused.get("already-replied"), Some(&20));
}

#[tokio::test(start_paused = true)]
async fn an_action_answer_maps_to_its_reply() {
    let report = run(r#"{
        "traffic": { "count": 10 },
        "responders": [ { "kind": "answer", "code": 200 } ],
        "answers": { "actions": { "forward": { "code": 200, "reason": "OK" } } }
    }"#)
    .await;
    assert_eq!(report.finals.get(&200), Some(&10));
    // The built-in "reject" action gives 403; a bad code in an action fails the load.
    let err = Scenario::parse(
        r#"{ "answers": { "actions": { "x": { "code": 99 } } } }"#,
        "bad",
    )
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        "bad: answers.actions.x.code: \"code\" must be a final SIP code (200-699), got 99"
    );
}

#[tokio::test(start_paused = true)]
async fn the_rate_spreads_requests_over_virtual_time() {
    // 50 requests at 100/s: the last one is issued at 490 ms.
    let report = run(r#"{
        "traffic": { "count": 50, "rate": 100, "concurrency": 0 },
        "responders": [ { "kind": "answer", "code": 486 } ]
    }"#)
    .await;
    assert_eq!(report.finals.get(&486), Some(&50));
    assert!(
        (490..=500).contains(&report.duration_ms),
        "{} ms",
        report.duration_ms
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_holds_requests_back_until_transactions_end() {
    // A silent app and at most 10 open transactions of a 1 s timer: 30 requests take
    // three waves, 3 s of virtual time, and every one ends 408.
    let report = run(r#"{
        "traffic": { "count": 30, "concurrency": 10 },
        "responders": [ { "kind": "silent" } ],
        "timers": { "fr_inv_timer": "1s" }
    }"#)
    .await;
    assert_eq!(report.finals.get(&408), Some(&30));
    assert_eq!(report.timeouts, 30);
    assert_eq!(report.duration_ms, 3000, "{}", report.summary());
}

/// The evapi module documentation's async example template (Example 1.6), verbatim,
/// through a scenario run with a built-in responder: answered in the event's shape.
#[tokio::test(start_paused = true)]
async fn the_module_documentation_example_runs_as_a_scenario() {
    let event = "{ \"event\": \"suspend\",\n \"data\": { \"index\": \"$T(id_index)\", \"label\": \"$T(id_label)\" }\n}";
    let scenario = serde_json::json!({
        "traffic": { "count": 100 },
        "route": { "event": event },
        "responders": [ { "kind": "answer", "code": 486 } ],
        "expect": { "codes": { "486": 100 }, "timeouts": 0, "invalid_answers": 0 }
    });
    let report = run(&scenario.to_string()).await;
    assert!(report.passed, "{}", report.summary());
    assert_eq!(report.finals.get(&486), Some(&100));
}

/// Interrupting a run (what Ctrl-C does in the binary) stops the traffic and still
/// gives the partial report, marked interrupted and never passed.
#[tokio::test(start_paused = true)]
async fn an_interrupted_run_reports_what_was_done() {
    let loaded = Scenario::parse(
        r#"{
            "name": "interrupted",
            "traffic": { "count": 100, "rate": 10, "concurrency": 0 },
            "responders": [ { "kind": "answer", "code": 486 } ],
            "expect": { "codes": { "486": 100 } }
        }"#,
        "test",
    )
    .unwrap();
    let interrupt = tokio_util::sync::CancellationToken::new();
    let options = RunOptions {
        bind: Some("127.0.0.1:0".to_owned()),
        fallback_to_ephemeral: false,
        interrupt: Some(interrupt.clone()),
        metrics: None,
        control_token: None,
    };
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1950)).await;
        interrupt.cancel();
    });
    let report = engine::run(&loaded, &options, &Quiet).await.unwrap();
    stopper.await.unwrap();
    assert!(report.interrupted);
    assert!(!report.passed);
    // Requests 0..=19 were due by 1.9 s (one every 100 ms from 0).
    assert_eq!(report.requests, 20);
    assert_eq!(report.finals.get(&486), Some(&20));
    insta::assert_snapshot!(crate::scenarios::redact_summary(&report.summary()));
}
