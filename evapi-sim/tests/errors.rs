use std::process::Command;

fn run_text(name: &str, text: &str) -> (String, String, i32) {
    let path = std::env::temp_dir().join(format!("evapi-sim-{name}-{}.json", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin!("evapi-sim"))
        .args(["run", "--no-progress", "--bind", "127.0.0.1:0"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let shown = path.display().to_string();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr)
            .unwrap()
            .replace(&shown, "[scenario]"),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn bad_scenario_files_exit_2_with_path_and_reason() {
    let mut report = String::new();
    for (name, text) in [
        ("not-json", "{ nope"),
        ("typo", r#"{"trafic": {"count": 1}}"#),
        (
            "unknown-var",
            r#"{"route": {"event": "{\"ru\":\"$ru\",\"x\":\"$xyz\"}"}}"#,
        ),
        ("no-tag", r#"{"route": {"action": "async_unicast"}}"#),
        ("bad-duration", r#"{"timers": {"fr_timer": "soon"}}"#),
        ("bad-responder", r#"{"responders": [{"kind": "psychic"}]}"#),
    ] {
        let (out, err, code) = run_text(name, text);
        assert_eq!((out.as_str(), code), ("", 2), "{name}: {err}");
        report.push_str(&format!("{name}: {err}"));
    }
    insta::assert_snapshot!(report);
}

#[test]
fn failed_expectations_exit_1_and_are_listed() {
    let (out, err, code) = run_text(
        "expect-wrong",
        r#"{"traffic": {"count": 20}, "responders": [{"kind": "answer", "code": 486}],
            "expect": {"codes": {"200": 20}, "timeouts": 0}}"#,
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("FAIL final 200              expected    20, got     0"),
        "{out}"
    );
    assert!(out.contains("ok   timeouts"), "{out}");
    assert!(out.trim_end().ends_with("FAILED"), "{out}");
    assert!(
        err.contains("evapi-sim: expectations failed: final 200: expected 20, got 0"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_exit_2() {
    let out = Command::new(assert_cmd::cargo::cargo_bin!("evapi-sim"))
        .args(["run", "/nonexistent/scenario.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("evapi-sim: /nonexistent/scenario.json: cannot read: "));
}

#[test]
fn an_external_app_that_never_comes_is_exit_2_after_external_timeout() {
    let (out, err, code) = run_text(
        "no-app",
        r#"{"traffic": {"count": 5}, "external": 1, "external_timeout": "300ms"}"#,
    );
    assert_eq!((out.as_str(), code), ("", 2), "{err}");
    assert!(
        err.contains("0 of 1 external app(s) connected to 127.0.0.1:")
            && err.contains("within 300ms (external_timeout)"),
        "{err}"
    );
}

/// Ctrl-C (SIGINT) during a run: the traffic stops, the partial summary and report are
/// still written, marked interrupted, and the exit code is 130.
#[test]
fn sigint_gives_the_partial_summary_and_report_and_exit_130() {
    use std::io::BufRead;
    let dir = std::env::temp_dir();
    let scenario = dir.join(format!("evapi-sim-sigint-{}.json", std::process::id()));
    let report = dir.join(format!(
        "evapi-sim-sigint-{}-report.json",
        std::process::id()
    ));
    std::fs::write(
        &scenario,
        r#"{"traffic": {"count": 5, "concurrency": 0}, "responders": [{"kind": "silent"}],
            "timers": {"fr_inv_timer": "60s"}}"#,
    )
    .unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin!("evapi-sim"))
        .args(["run", "--no-progress", "--bind", "127.0.0.1:0", "--report"])
        .arg(&report)
        .arg(&scenario)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("evapi socket on "), "{line}");
    // The silent app connects and the 5 INVITEs wait for their 60 s timer.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let asked = std::time::Instant::now();
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(out.status.code(), Some(130));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.trim_end().ends_with("INTERRUPTED (partial counts)"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        (json["interrupted"].as_bool(), json["passed"].as_bool()),
        (Some(true), Some(false))
    );
    let _ = std::fs::remove_file(&scenario);
    let _ = std::fs::remove_file(&report);
}

/// `replay --wait-app`: with no app within it, the replay fails (exit 2) saying so,
/// instead of waiting for ever.
#[test]
fn a_replay_with_no_app_within_wait_app_is_exit_2() {
    let path =
        std::env::temp_dir().join(format!("evapi-sim-wait-app-{}.jsonl", std::process::id()));
    let lines = [
        r#"{"format":"evapi-transcript","version":1,"started":"2026-12-01T10:00:00.000000Z","source":"record","node":"127.0.0.1:8448","framing":"netstring","part":0}"#,
        r#"{"kind":"frame","t":0,"conn":1,"from":"node","text":"{\"event\":\"x\"}"}"#,
    ];
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(assert_cmd::cargo::cargo_bin!("evapi-sim"))
        .arg("replay")
        .arg(&path)
        .args(["--bind", "127.0.0.1:0", "--wait-app", "300ms"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no app connected within 300ms"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// `load --timeout`: a call with no final response within it fails; the run says how
/// many and exits 1. The target is a UDP socket that reads nothing.
#[test]
fn load_calls_with_no_answer_within_timeout_fail() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = silent.local_addr().unwrap().to_string();
    let out = Command::new(assert_cmd::cargo::cargo_bin!("evapi-sim"))
        .args([
            "load",
            &target,
            "--calls",
            "2",
            "--rate",
            "100",
            "--timeout",
            "300ms",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("2 of 2 calls failed"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed"], 2, "{report}");
    drop(silent);
}

/// A cases file that is missing, or a case that can never pass, stops the run before it
/// starts (exit 2), naming the file, the row or the case and why.
#[test]
fn bad_cases_exit_2_naming_the_case() {
    for (name, text, says) in [
        (
            "no-cases-file",
            r#"{"cases_file": "no-such-cases.csv"}"#,
            "cases_file: ",
        ),
        (
            "bad-pattern",
            r#"{"cases": [{"name": "odd", "expect": {"fields": {"/acct": {"matches": "(["}}}}]}"#,
            "cases: case \"odd\" field /acct: ",
        ),
        (
            "two-checks",
            r#"{"cases": [{"expect": {"fields": {"/a": {"equals": 1, "present": true}}}}]}"#,
            "give exactly one of equals, matches, present",
        ),
        (
            "case-typo",
            r#"{"cases": [{"expect": {"cod": 486}}]}"#,
            "unknown field `cod`",
        ),
    ] {
        let (out, err, code) = run_text(name, text);
        assert_eq!((out.as_str(), code), ("", 2), "{name}: {err}");
        assert!(
            err.contains("[scenario]") && err.contains(says),
            "{name}: {err}"
        );
    }
}
