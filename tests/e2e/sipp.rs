use std::io::Read;
use std::process::Command;

use evapi_tests::{binary, sipp, Running};

#[test]
#[ignore = "needs sipp (apt-get install sip-tester); .ci/run runs it"]
fn sipp_calls_are_all_resumed_by_the_client_responder() {
    sipp::require();
    let mut cmd = Command::new(binary("evapi-sim"));
    cmd.args([
        "sip",
        "--listen",
        "127.0.0.1:0",
        "--bind",
        "127.0.0.1:0",
        "-q",
    ]);
    let mut sim = Running::spawn(cmd);
    let (line, _rest) = sim.stderr_line("SIP on udp:");
    // "SIP on udp:127.0.0.1:PORT , evapi socket on 127.0.0.1:PORT"
    let words: Vec<&str> = line.split_whitespace().collect();
    let sip_addr = words[2].trim_start_matches("udp:").to_owned();
    let evapi_addr = words[words.len() - 1].to_owned();

    let mut respond = Command::new(binary("evapi-client"));
    respond.args(["--addr", &evapi_addr, "respond", "--code", "486"]);
    let _app = Running::spawn(respond);

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
    sim.child.wait().unwrap();
    let mut counters = String::new();
    sim.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut counters)
        .unwrap();
    assert!(
        counters.contains("  final 486                     500"),
        "{counters}"
    );
    assert!(
        counters.contains("  timeouts                        0"),
        "{counters}"
    );
}
