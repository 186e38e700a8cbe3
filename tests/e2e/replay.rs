//! Record and replay: the proxy between the real Kamailio and an app records a sipp
//! burst; the transcript replays against the app (every answer matched) and against an
//! app that answers otherwise (every difference reported, exit 1, JUnit valid).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use evapi_tests::kamailio::{self, Kamailio, Options};
use evapi_tests::{binary, require_tool, sipp, Running};

const CALLS: u32 = 1000;

/// The address after `marker` in a line like "... apps connect to 127.0.0.1:PORT, ...".
fn addr_after(line: &str, marker: &str) -> String {
    let rest = &line[line.find(marker).expect("the marker") + marker.len()..];
    rest.split([',', ' ']).next().unwrap_or_default().to_owned()
}

/// Read the rest of a child's stderr on a thread; the text when it ends.
fn collect(
    mut log: std::io::BufReader<std::process::ChildStderr>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = log.read_to_string(&mut text);
        text
    })
}

fn respond(addr: &str, code: &str) -> Running {
    let mut cmd = Command::new(binary("evapi-client"));
    cmd.args(["--addr", addr, "respond", "--code", code]);
    Running::spawn(cmd)
}

/// `evapi-sim replay` of `transcript` against `evapi-client respond --code CODE`:
/// its stdout and exit code.
fn replay(transcript: &Path, code: &str, junit: &Path) -> (String, i32) {
    let mut cmd = Command::new(binary("evapi-sim"));
    cmd.arg("replay")
        .arg(transcript)
        .args(["--bind", "127.0.0.1:0", "--speed", "20", "--junit"])
        .arg(junit)
        .arg("--html")
        .arg(junit.with_extension("html"));
    let mut sim = Running::spawn(cmd);
    let (line, log) = sim.stderr_line("waiting for an app on");
    let err = collect(log);
    let _app = respond(&addr_after(&line, "waiting for an app on "), code);
    let (out, _, status) = sim.finish(Duration::from_secs(60));
    let err = err.join().unwrap_or_default();
    assert!(status == 0 || status == 1, "exit {status}\n{out}\n{err}");
    (out, status)
}

fn workdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("evapi-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
#[ignore = "needs kamailio, sipp and xmllint (apt-get install kamailio kamailio-extra-modules sip-tester libxml2-utils); .ci/run runs it"]
fn a_kamailio_burst_recorded_through_the_proxy_replays_against_the_app() {
    kamailio::require();
    sipp::require();
    require_tool("xmllint", "libxml2-utils");
    let dir = workdir();
    let transcript = dir.join("burst.jsonl");
    let kam = Kamailio::start(&Options::default());

    // Record: the app talks to Kamailio through the proxy during a sipp burst.
    let mut cmd = Command::new(binary("evapi-client"));
    cmd.args(["proxy", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(kam.evapi.to_string())
        .arg("--record")
        .arg(&transcript);
    let mut proxy = Running::spawn(cmd);
    let (line, log) = proxy.stderr_line("apps connect to");
    let proxy_log = collect(log);
    let app = respond(&addr_after(&line, "apps connect to "), "486");
    assert!(kam.wait_clients(1, Duration::from_secs(5)));
    let out = sipp::burst_486(&kam.sip.to_string(), CALLS, 500);
    assert_eq!(
        out.status.code(),
        Some(0),
        "sipp through the proxy\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(app);
    Command::new("kill")
        .args(["-TERM", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    let (_, _, code) = proxy.finish(Duration::from_secs(30));
    let proxy_log = proxy_log.join().unwrap();
    assert_eq!(code, 0, "{proxy_log}");
    assert!(
        proxy_log.contains(&format!("frames from the node {CALLS}, from apps {CALLS}")),
        "{proxy_log}"
    );
    assert!(!proxy_log.contains("lost"), "{proxy_log}");

    // Replay against the same app: every answer as recorded.
    let (out, code) = replay(&transcript, "486", &dir.join("same.xml"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!(
            "replayed {CALLS} events ({CALLS} suspended): {CALLS} matched, 0 different, 0 missing, 0 extra"
        )),
        "{out}"
    );

    // Against an app that answers 503: every answer differs, named, exit 1.
    let junit = dir.join("different.xml");
    let (out, code) = replay(&transcript, "503", &junit);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!(
            "replayed {CALLS} events ({CALLS} suspended): 0 matched, {CALLS} different"
        )),
        "{out}"
    );
    assert!(out.contains("code: 486 -> 503"), "{out}");
    let html = std::fs::read_to_string(junit.with_extension("html")).unwrap();
    assert!(
        html.contains(&format!(
            "FAILED: {CALLS} events ({CALLS} suspended): 0 matched, {CALLS} different"
        )),
        "{html}"
    );
    assert!(html.contains("Differences (first 100 of 1000)"));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<failure ").count(), CALLS as usize);
    evapi_tests::check_junit(&[&junit, &dir.join("same.xml")]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A recording whose oldest parts the recorder deleted to stay within
/// `--record-max-bytes` (the first file and `.1` gone, `.2` and `.3` left) replays from
/// the oldest part left, through the newest.
#[test]
fn a_recording_whose_first_parts_were_deleted_replays_from_the_oldest_left() {
    let dir = workdir().join("parts");
    std::fs::create_dir_all(&dir).unwrap();
    let transcript = dir.join("day.jsonl");
    for (part, index) in [(2u32, 1u32), (3, 2)] {
        let header = format!(
            r#"{{"format":"evapi-transcript","version":1,"started":"2026-12-01T10:00:00.000000Z","source":"proxy","node":"127.0.0.1:8448","framing":"netstring","part":{part}}}"#
        );
        let event = format!(r#"{{\"event\":\"suspend\",\"tindex\":{index},\"tlabel\":7}}"#);
        let answer =
            format!(r#"{{\"tindex\":{index},\"tlabel\":7,\"code\":486,\"reason\":\"Busy Here\"}}"#);
        let lines = [
            header,
            format!(
                r#"{{"kind":"frame","t":{t},"conn":1,"from":"node","text":"{event}"}}"#,
                t = index * 1000
            ),
            format!(
                r#"{{"kind":"frame","t":{t},"conn":1,"from":"app","text":"{answer}"}}"#,
                t = index * 1000 + 500
            ),
        ];
        let path = evapi_proto::transcript::part_path(&transcript, part);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }
    let (out, code) = replay(&transcript, "486", &dir.join("parts.xml"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("replayed 2 events (2 suspended): 2 matched, 0 different, 0 missing"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Found by a re-test of issue 24: a transcript with events at t = 0 and t = 2^64-1,
/// replayed at `--speed 1e-7`, waited for the second one without end (its time
/// saturates at a year). A replay longer than `--max-duration` (24 h) is refused before
/// it starts, with what to do instead; `--speed max` plays the same file at once.
#[test]
fn a_replay_longer_than_max_duration_is_refused_before_it_starts() {
    let dir = workdir().join("span");
    std::fs::create_dir_all(&dir).unwrap();
    let transcript = dir.join("span.jsonl");
    let lines = [
        r#"{"format":"evapi-transcript","version":1,"started":"2026-12-01T10:00:00.000000Z","source":"record","node":"127.0.0.1:8448","framing":"netstring","part":0}"#,
        r#"{"kind":"frame","t":0,"conn":1,"from":"node","text":"{\"event\":\"x\"}"}"#,
        r#"{"kind":"frame","t":18446744073709551615,"conn":1,"from":"node","text":"{\"event\":\"y\"}"}"#,
    ];
    std::fs::write(&transcript, lines.join("\n") + "\n").unwrap();
    let mut cmd = Command::new(binary("evapi-sim"));
    cmd.arg("replay")
        .arg(&transcript)
        .args(["--bind", "127.0.0.1:0", "--speed", "1e-7"]);
    let (_, err, code) = Running::spawn(cmd).finish(Duration::from_secs(10));
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("longer than --max-duration 1day") && err.contains("--speed max"),
        "{err}"
    );
    let mut cmd = Command::new(binary("evapi-sim"));
    cmd.arg("replay")
        .arg(&transcript)
        .args(["--bind", "127.0.0.1:0", "--speed", "max"]);
    let mut sim = Running::spawn(cmd);
    let (line, log) = sim.stderr_line("waiting for an app on");
    let _log = collect(log);
    let _app = respond(&addr_after(&line, "waiting for an app on "), "486");
    let (out, _, code) = sim.finish(Duration::from_secs(10));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("replayed 2 events"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
