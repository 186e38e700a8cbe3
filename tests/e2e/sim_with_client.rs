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
pub(crate) fn sim(scenario_file: &str, extra: &[&str]) -> (Running, String) {
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

/// The ```sh block of docs/simulator.md that contains `marker`, run with bash from the
/// workspace root as written, but with port 8448 changed to a free one, each of
/// `replace` applied, and the workspace's binaries first on PATH: its stdout, stderr
/// and exit code.
pub(crate) fn run_guide_recipe(marker: &str, replace: &[(&str, &str)]) -> (String, String, i32) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let guide = std::fs::read_to_string(root.join("docs/simulator.md")).unwrap();
    let recipe = guide
        .split("```sh\n")
        .find(|block| block.contains(marker))
        .and_then(|block| block.split("```").next())
        .unwrap_or_else(|| panic!("a recipe with {marker:?} in docs/simulator.md"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut script = recipe.replace("8448", &port.to_string());
    for (from, to) in replace {
        script = script.replace(from, to);
    }
    let bin_dir = binary("evapi-sim").parent().unwrap().to_owned();
    let _ = binary("evapi-client");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script])
        .current_dir(&root)
        .env("PATH", path);
    Running::spawn(cmd).finish(std::time::Duration::from_secs(60))
}

/// The CI recipe in docs/simulator.md, run as written (port changed to a free one):
/// the app starts while the simulator may not listen yet, and `--wait` covers that.
#[test]
fn the_ci_recipe_in_the_simulator_guide_runs_as_written() {
    let (out, _, code) =
        run_guide_recipe("evapi-sim run evapi-sim/scenarios/external-app.json", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PASSED"), "{out}");
}
