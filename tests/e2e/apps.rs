//! Apps built on `evapi_client::app`, end to end: the `allow_list` example serving two
//! `evapi-sim sip` nodes under sipp, without a broker (issue 26).

use std::process::Command;
use std::time::Duration;

use evapi_tests::sipp::{self, SimNode};
use evapi_tests::{binary, Running};

/// The count on the line of a node's counters that starts with `label` (0 when none).
fn counter(counters: &str, label: &str) -> u64 {
    counters
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

fn assert_sipp_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "sipp failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `allow_list` example with `deny` serving `nodes` (`NAME=ADDR`), every tenth call
/// slower than its 1.5 s deadline.
fn allow_list(deny: &std::path::Path, nodes: [String; 2]) -> Running {
    let mut app = Command::new(binary("examples/allow_list"));
    app.arg(deny).args(nodes).env("SLOW_EVERY", "10");
    Running::spawn(app)
}

/// 50 calls on each of two nodes at once, each answered 200 or (the slow ones) 503:
/// sipp passes on both, and the slowest call took the deadline, not `fr_inv_timer`.
fn calls_on_both(sip_a: String, sip_b: String) {
    let on_b = std::thread::spawn(move || sipp::burst_either(&sip_b, 50, 50, 200, 503));
    let (out, times_a) = sipp::burst_either(&sip_a, 50, 50, 200, 503);
    assert_sipp_ok(&out);
    let (out, times_b) = on_b.join().unwrap();
    assert_sipp_ok(&out);
    let slowest = times_a.iter().chain(&times_b).max().copied().unwrap_or(0);
    assert!(
        (1500..4000).contains(&slowest),
        "the fallback went at the deadline, before fr_inv_timer: {slowest} ms"
    );
}

/// SIGTERM: the app lets the handlers in hand finish (the late ones too, counted), then
/// prints its exit line.
fn stop(app: Running) -> String {
    Command::new("kill")
        .args(["-TERM", &app.child.id().to_string()])
        .status()
        .unwrap();
    let (out, err, code) = app.finish(Duration::from_secs(15));
    assert_eq!(code, 0, "{err}");
    out
}

/// One app process, two nodes, calls on both at once. The handler is slower than the
/// deadline (1.5 s) for every tenth call: those calls get the fallback 503 well before
/// the nodes' `fr_inv_timer` (5 s), every other call its handler's answer, on its own
/// node; the handler's late answers are dropped, never sent (no node refuses anything).
/// Then the deny list changes on disk and the next calls are denied.
#[test]
#[ignore = "needs sipp (apt-get install sip-tester)"]
fn one_app_serves_two_nodes_answers_before_the_deadline_and_reloads_its_list() {
    sipp::require();
    let timer = ["--fr-inv-timer", "5s"];
    let mut a = SimNode::start(&timer);
    let mut b = SimNode::start(&timer);
    let dir = std::env::temp_dir().join(format!("evapi-app-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let deny = dir.join("deny.txt");
    std::fs::write(&deny, "# nobody yet\nsip:nobody@\n").unwrap();
    let mut app = allow_list(
        &deny,
        [format!("sip-a={}", a.evapi), format!("sip-b={}", b.evapi)],
    );
    a.wait_for_app();
    b.wait_for_app();

    // 100 calls, 50 on each node at once: calls 10, 20, ... 100 are slow.
    calls_on_both(a.sip.clone(), b.sip.clone());

    // The list changes on disk: the app reads it again within about a second, and says
    // so.
    std::fs::write(&deny, "sip:caller@\n").unwrap();
    app.wait_stderr("allow_list: 1 denied callers", Duration::from_secs(10));
    // Calls 101 ... 110: denied, the 110th slow.
    assert_sipp_ok(&sipp::burst_either(&a.sip, 10, 10, 403, 503).0);

    // Stop the app: what it did.
    let out = stop(app);
    assert!(
        out.contains("events 110, answered 99, fallback 11, late 11, stale 0"),
        "{out}"
    );
    let (a, b) = (a.finish(), b.finish());
    let both = |label: &str| counter(&a, label) + counter(&b, label);
    assert_eq!(both("final 200"), 90, "{a}{b}");
    assert_eq!(both("final 503"), 11, "{a}{b}");
    assert_eq!(counter(&a, "final 403"), 9, "{a}");
    assert_eq!(counter(&a, "refused continues"), 0, "{a}");
    assert_eq!(counter(&b, "refused continues"), 0, "{b}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/writing-an-app.md from its app to its CI job: the app in the guide is
/// `examples/first_app.rs` word for word, and the guide's scenario and recipe, run as
/// written (port made free, `my-app` being that example), pass.
#[test]
fn the_first_app_of_the_app_guide_passes_its_ci_recipe() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let guide = "docs/writing-an-app.md";
    let code = evapi_tests::doc_block(guide, "rust", "fn main");
    let example = std::fs::read_to_string(root.join("evapi-client/examples/first_app.rs")).unwrap();
    assert_eq!(code, example, "the guide's app is examples/first_app.rs");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let dir = std::env::temp_dir().join(format!("evapi-first-app-{}", std::process::id()));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let scenario = evapi_tests::doc_block(guide, "json", "\"external\": 1");
    std::fs::write(dir.join("my-app.json"), scenario.replace("8448", &port)).unwrap();
    std::os::unix::fs::symlink(binary("examples/first_app"), bin.join("my-app")).unwrap();
    std::os::unix::fs::symlink(binary("evapi-sim"), bin.join("evapi-sim")).unwrap();
    let recipe = evapi_tests::doc_block(guide, "sh", "my-app 127.0.0.1:8448");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &recipe.replace("8448", &port)])
        .current_dir(&dir)
        .env("PATH", path);
    let (out, err, code) = Running::spawn(cmd).finish(Duration::from_secs(60));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("PASSED"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same app against two real Kamailio 5.6 nodes (tests/interop/kamailio.cfg:
/// `evapi_async_relay` of every INVITE, `t_continue` on the answer): every call of each
/// node answered on its own socket, every tenth past the deadline answered 503 by the
/// fallback at 1.5 s, long before Kamailio's `fr_inv_timer` (30 s), and Kamailio never
/// sees the late answers.
#[test]
#[ignore = "needs kamailio and sipp (apt-get install kamailio kamailio-extra-modules sip-tester); .ci/run runs it"]
fn one_app_serves_two_kamailio_nodes_and_answers_before_the_deadline() {
    use evapi_tests::kamailio::{self, Kamailio, Options};
    kamailio::require();
    sipp::require();
    let k1 = Kamailio::start(&Options::default());
    let k2 = Kamailio::start(&Options::default());
    let dir = std::env::temp_dir().join(format!("evapi-app-kam-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let deny = dir.join("deny.txt");
    std::fs::write(&deny, "sip:nobody@\n").unwrap();
    let app = allow_list(
        &deny,
        [format!("k1={}", k1.evapi), format!("k2={}", k2.evapi)],
    );
    assert!(k1.wait_clients(1, Duration::from_secs(10)), "{}", k1.log());
    assert!(k2.wait_clients(1, Duration::from_secs(10)), "{}", k2.log());

    calls_on_both(k1.sip.to_string(), k2.sip.to_string());

    let out = stop(app);
    assert!(
        out.contains("events 100, answered 90, fallback 10, late 10, stale 0"),
        "{out}"
    );
    for k in [&k1, &k2] {
        let log = k.log();
        assert!(!log.contains("t_continue"), "t_continue trouble:\n{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
