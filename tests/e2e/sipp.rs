use std::process::Command;
use std::time::Duration;

use evapi_tests::{binary, sipp, Running};

/// The evapi module documentation's async example (Example 1.6), verbatim.
const MODULE_DOC_EVENT: &str = "{ \"event\": \"suspend\",\n \"data\": { \"index\": \"$T(id_index)\", \"label\": \"$T(id_label)\" }\n}";

/// `evapi-sim sip` (with `sim_args`) answered by `evapi-client respond --code 486`, a
/// sipp burst of 500 calls; returns the simulator's counters after SIGTERM.
fn burst_through_the_simulator(sim_args: &[&str]) -> String {
    sipp::require();
    let mut cmd = Command::new(binary("evapi-sim"));
    cmd.args([
        "sip",
        "--listen",
        "127.0.0.1:0",
        "--bind",
        "127.0.0.1:0",
        // info: its log says when an app is accepted (read below), nothing per call.
        "-v",
    ])
    .args(sim_args);
    let mut sim = Running::spawn(cmd);
    let (line, mut rest) = sim.stderr_line("SIP on udp:");
    // "SIP on udp:127.0.0.1:PORT , evapi socket on 127.0.0.1:PORT"
    let words: Vec<&str> = line.split_whitespace().collect();
    let sip_addr = words[2].trim_start_matches("udp:").to_owned();
    let evapi_addr = words[words.len() - 1].to_owned();

    let mut respond = Command::new(binary("evapi-client"));
    respond.args(["--addr", &evapi_addr, "respond", "--code", "486"]);
    let _app = Running::spawn(respond);
    // Start the calls once the simulator accepted the app (earlier INVITEs would reach
    // nobody and wait for their timer).
    let mut log = String::new();
    while !log.contains("app connected") {
        log.clear();
        let n = std::io::BufRead::read_line(&mut rest, &mut log).unwrap();
        assert!(n > 0, "the simulator ended before the app connected");
    }
    // Keep draining its log so it never blocks on stderr.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut rest, &mut std::io::sink());
    });

    let out = sipp::burst_486(&sip_addr, 500, 250);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "sipp reported failed calls:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM: the simulator prints its counters and exits.
    Command::new("kill")
        .args(["-TERM", &sim.child.id().to_string()])
        .status()
        .unwrap();
    let (counters, _, code) = sim.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{counters}");
    counters
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
    let mut cmd = Command::new(binary("evapi-sim"));
    cmd.args(["sip", "--listen", "127.0.0.1:0", "--bind", "127.0.0.1:0"])
        .args(["--no-app-reply", "503", "--retry-after", "5"]);
    let mut sim = Running::spawn(cmd);
    let (line, mut rest) = sim.stderr_line("SIP on udp:");
    let sip_addr = line
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_start_matches("udp:")
        .to_owned();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut rest, &mut std::io::sink());
    });
    let out = sipp::burst_expecting(&sip_addr, 200, 100, 503);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "sipp reported failed calls:\n{stdout}"
    );
    // "Response Time 1        | 00:00:00:000000  | 00:00:00:001000": the cumulative
    // average, hours:minutes:seconds:microseconds.
    let cumulative = stdout
        .lines()
        .find(|l| l.contains("Response Time 1"))
        .and_then(|l| l.rsplit('|').next())
        .map(str::trim)
        .unwrap_or_else(|| panic!("no response time in:\n{stdout}"));
    let parts: Vec<u64> = cumulative.split(':').map(|p| p.parse().unwrap()).collect();
    let micros = ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1_000_000 + parts[3];
    assert!(micros < 50_000, "average response time {cumulative}");
    Command::new("kill")
        .args(["-TERM", &sim.child.id().to_string()])
        .status()
        .unwrap();
    let (counters, _, code) = sim.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{counters}");
    for row in [
        "  final 503                     200",
        "  no app                        200",
        "  timeouts                        0",
    ] {
        assert!(counters.contains(row), "{row:?} in\n{counters}");
    }
}
