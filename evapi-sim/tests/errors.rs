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
