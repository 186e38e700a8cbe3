use std::io::Read;
use std::path::Path;
use std::process::Command;

use evapi_tests::{binary, Running};

fn scenario(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../evapi-sim/scenarios")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Start `evapi-sim run` on an ephemeral port and return it with its socket address.
fn sim(scenario_file: &str, extra: &[&str]) -> (Running, String) {
    let mut cmd = Command::new(binary("evapi-sim"));
    cmd.args(["run", "--no-progress", "--bind", "127.0.0.1:0"])
        .args(extra)
        .arg(scenario_file);
    let mut sim = Running::spawn(cmd);
    let (line, rest) = sim.stderr_line("evapi socket on ");
    // Keep reading stderr so the simulator never blocks on it.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let mut rest = rest;
        let _ = rest.read_to_string(&mut sink);
    });
    let addr = line
        .split("evapi socket on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_owned();
    (sim, addr)
}

/// A run ends by itself; one that hangs fails after a minute instead of holding CI.
fn finish(run: Running) -> (String, i32) {
    let (out, _, code) = run.finish(std::time::Duration::from_secs(60));
    (out, code)
}

#[test]
fn the_client_responder_resumes_every_suspended_invite() {
    let (sim, addr) = sim(&scenario("external-app.json"), &[]);
    let mut respond = Command::new(binary("evapi-client"));
    respond.args(["--addr", &addr, "respond", "--code", "486"]);
    let _app = Running::spawn(respond);
    let (out, code) = finish(sim);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("  final 486                 500"), "{out}");
    assert!(out.contains("  refused continues           0"), "{out}");
}

#[test]
fn an_action_answer_from_a_reply_template_maps_to_the_configured_outcome() {
    let (sim, addr) = sim(&scenario("external-app.json"), &[]);
    let mut respond = Command::new(binary("evapi-client"));
    respond.args([
        "--addr",
        &addr,
        "respond",
        "--reply",
        r#"{"tindex":"$tindex","tlabel":"$tlabel","action":"forward","target":"sip:${ru}"}"#,
    ]);
    let _app = Running::spawn(respond);
    let (out, code) = finish(sim);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("  final 200                 500"), "{out}");
}
