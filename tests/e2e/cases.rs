//! The simulator as a test harness for an app's decisions: examples/python/busy_odd.py
//! (asyncio, the standard library) against examples/python/scenario.json and its
//! cases.csv, as docs/simulator.md tells an app developer to run it in CI.

use std::path::{Path, PathBuf};
use std::process::Command;

use evapi_tests::{binary, Running};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/python")
        .join(name)
}

/// `evapi-sim run` of the example scenario on a free port, the app (with `app_flags`)
/// on it; the simulator's stdout, exit code and JUnit XML.
fn judge(app_flags: &[&str]) -> (String, i32, String) {
    evapi_tests::require_tool("python3", "python3");
    let junit = std::env::temp_dir().join(format!(
        "evapi-cases-{}-{}.xml",
        std::process::id(),
        app_flags.len()
    ));
    let junit_arg = junit.display().to_string();
    let scenario = example("scenario.json").display().to_string();
    let (sim, addr) = crate::sim_with_client::sim(&scenario, &["--junit", &junit_arg]);
    let mut app = Command::new("python3");
    app.arg(example("busy_odd.py"))
        .args(["--addr", &addr])
        .args(app_flags);
    let _app = Running::spawn(app);
    let (out, err, code) = sim.finish(std::time::Duration::from_secs(60));
    let xml = std::fs::read_to_string(&junit).unwrap();
    let _ = std::fs::remove_file(&junit);
    (format!("{out}{err}"), code, xml)
}

#[test]
#[ignore = "needs python3"]
fn the_python_example_decides_every_call_as_its_cases_say() {
    let (out, code, xml) = judge(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cases: 5 passed, 0 failed"), "{out}");
    assert!(out.contains("  28 requests"), "{out}");
    assert!(
        xml.contains(r#"<testcase name="odd callee is busy""#),
        "{xml}"
    );
    assert!(!xml.contains("<failure"), "{xml}");
}

/// The rule swapped: the run fails (exit 1), and each failed case is named with what it
/// wanted and what it got, field by field, in the summary and in JUnit.
#[test]
#[ignore = "needs python3"]
fn a_wrong_app_fails_naming_each_call_it_got_wrong() {
    let (out, code, xml) = judge(&["--wrong"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cases: 1 passed, 4 failed"), "{out}");
    for line in [
        "FAIL odd callee is busy: 1 of 1 call(s) failed",
        "code         expected 486, got 200",
        "/route       expected absent, got \"gw1\"",
        "FAIL even callees are billed by number: 20 of 20 call(s) failed",
        "/acct        expected matching /^4[0-9]+0$/, got absent",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
    assert!(!out.contains("FAIL no number is refused"), "{out}");
    assert_eq!(xml.matches("<failure").count(), 4, "{xml}");
    assert!(
        xml.contains("1 of 1 call(s) failed; code: expected 486, got 200"),
        "{xml}"
    );
}

/// The Python recipe of docs/simulator.md, run as written (port changed to a free one,
/// the JUnit file into a temporary directory).
#[test]
#[ignore = "needs python3"]
fn the_python_recipe_in_the_simulator_guide_runs_as_written() {
    evapi_tests::require_tool("python3", "python3");
    let dir = std::env::temp_dir().join(format!("evapi-py-recipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junit = dir.join("cases.xml");
    let junit_arg = format!("--junit {}", junit.display());
    let (out, err, code) = crate::sim_with_client::run_guide_recipe(
        "python3 examples/python/busy_odd.py",
        &[("--junit cases.xml", &junit_arg)],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cases: 5 passed, 0 failed"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("even callee goes to the gateway"), "{xml}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `evapi-sim load` for an app with a rule: request URIs by number (`--ruri`), several
/// expected codes. With 200 and 486 expected every call passes; with 486 alone the
/// even half fails, and the message says what came.
#[test]
#[ignore = "needs python3"]
fn load_takes_request_uris_and_several_expected_codes() {
    evapi_tests::require_tool("python3", "python3");
    let mut node = evapi_tests::sipp::SimNode::start(&[]);
    let mut app = Command::new("python3");
    app.arg(example("busy_odd.py"))
        .args(["--addr", &node.evapi]);
    let _app = Running::spawn(app);
    node.wait_for_app();
    let load = |expect: &str| {
        let out = Command::new(binary("evapi-sim"))
            .args(["load", &node.sip, "--rate", "500", "--calls", "100"])
            .args(["--ruri", "sip:{n}@example.com", "--expect-code", expect])
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.code(),
        )
    };
    let (out, err, code) = load("200,486");
    assert_eq!(code, Some(0), "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["codes"]["200"], 50, "{out}");
    assert_eq!(report["codes"]["486"], 50, "{out}");
    let (_, err, code) = load("486");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("50 of 100 calls failed: expected 486, got 200 x50"),
        "{err}"
    );
    let (_, _, code) = load("any");
    assert_eq!(code, Some(0));
    let _ = node.finish();
}
