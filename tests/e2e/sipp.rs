use std::process::Command;

use evapi_tests::{binary, sipp, Running};

/// The evapi module documentation's async example (Example 1.6), verbatim.
const MODULE_DOC_EVENT: &str = "{ \"event\": \"suspend\",\n \"data\": { \"index\": \"$T(id_index)\", \"label\": \"$T(id_label)\" }\n}";

/// `evapi-sim sip` (with `sim_args`) answered by `evapi-client respond --code 486`, a
/// sipp burst of 500 calls; returns the simulator's counters after SIGTERM.
fn burst_through_the_simulator(sim_args: &[&str]) -> String {
    sipp::require();
    let mut node = sipp::SimNode::start(sim_args);
    let mut respond = Command::new(binary("evapi-client"));
    respond.args(["--addr", &node.evapi, "respond", "--code", "486"]);
    let _app = Running::spawn(respond);
    node.wait_for_app();
    let out = sipp::burst_486(&node.sip, 500, 250);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "sipp reported failed calls:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.finish()
}

#[test]
#[ignore = "needs sipp (apt-get install sip-tester); .ci/run runs it"]
fn sipp_calls_are_all_resumed_by_the_client_responder() {
    let counters = burst_through_the_simulator(&[]);
    assert!(
        counters.contains("  final 486                     500"),
        "{counters}"
    );
    assert!(
        counters.contains("  timeouts                        0"),
        "{counters}"
    );
}

/// The module documentation's own template, answered by `evapi-client respond` in the
/// event's shape (`data.index`/`data.label`): every call resumed, no invalid answer.
#[test]
#[ignore = "needs sipp (apt-get install sip-tester); .ci/run runs it"]
fn the_module_documentation_example_works_under_sipp() {
    let counters = burst_through_the_simulator(&["--event", MODULE_DOC_EVENT]);
    for row in [
        "  final 486                     500",
        "  timeouts                        0",
        "  invalid answers                 0",
    ] {
        assert!(counters.contains(row), "{row:?} in\n{counters}");
    }
}

/// With no app connected and `--no-app-reply 503 --retry-after 5`, every INVITE of a
/// sipp burst is answered 503 at once (every response within 50 ms by sipp's clock,
/// instead of fr_inv_timer's 120 s) and counted as "no app".
#[test]
#[ignore = "needs sipp (apt-get install sip-tester); .ci/run runs it"]
fn with_no_app_sipp_calls_get_503_at_once() {
    sipp::require();
    let node = sipp::SimNode::start(&["--no-app-reply", "503", "--retry-after", "5"]);
    let (out, times) = sipp::burst_timed(&node.sip, 200, 100, 503);
    assert_eq!(
        out.status.code(),
        Some(0),
        "sipp reported failed calls:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(times.len(), 200, "a response time per call");
    let slowest = times.iter().max().copied().unwrap_or(0);
    assert!(slowest < 50, "every 503 within 50 ms: slowest {slowest} ms");
    let counters = node.finish();
    for row in [
        "  final 503                     200",
        "  no app                        200",
        "  timeouts                        0",
    ] {
        assert!(counters.contains(row), "{row:?} in\n{counters}");
    }
}
