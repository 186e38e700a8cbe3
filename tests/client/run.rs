use std::path::Path;

use evapi_proto::Framing;

use crate::common::*;

fn script(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "evapi-client-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_passing_script_uses_every_step_kind() {
    let srv = start(Framing::Netstring);
    let dir = tempdir();
    let path = script(
        &dir,
        "pass.evapi",
        "# the test server relays back whatever follows 'echo '\n\
         timeout 2s\n\
         send echo pong\n\
         expect pong\n\
         send echo {\"code\":200,\"reason\":\"OK\",\"extra\":[1]}\n\
         expect-json {\"code\":200}\n\
         send echo the answer is 42\n\
         expect-contains answer\n\
         expect-none 100ms\n\
         sleep 10ms\n\
         close\n\
         send echo again\n\
         expect again\n",
    );
    let (out, err, code) = output(srv.client(&["run", &path]));
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        ("ok: 12 steps, 4 sent, 4 received\n", "", 0)
    );
}

/// Run a failing script; stderr with the temp path replaced.
fn failure(srv: &Srv, text: &str) -> (String, i32) {
    let dir = tempdir();
    let path = script(&dir, "fail.evapi", text);
    let (out, err, code) = output(srv.client(&["run", &path, "--timeout", "300ms"]));
    assert_eq!(out, "");
    (err.replace(&path, "[script]"), code)
}

#[test]
fn failing_steps_show_line_expected_and_got() {
    let srv = start(Framing::Netstring);
    let mut report = String::new();
    for text in [
        "send echo pong\nexpect ping\n",
        "send echo pong\nexpect-contains zz\n",
        "send echo {\"code\":486,\"reason\":\"Busy Here\"}\nexpect-json {\"code\":200,\"reason\":\"Busy Here\"}\n",
        "send echo not json\nexpect-json {\"code\":200}\n",
        "\n# nothing comes back\nexpect pong\n",
        "send echo surprise\nexpect-none 1s\n",
    ] {
        let (err, code) = failure(&srv, text);
        assert_eq!(code, 1, "{err}");
        report.push_str(&err);
        report.push_str("---\n");
    }
    insta::assert_snapshot!(report);
}

#[test]
fn syntax_errors_exit_2_before_connecting() {
    // No server at all: a syntax error must be found first.
    let dir = tempdir();
    let path = script(&dir, "bad.evapi", "send x\nexpekt y\n");
    let mut cmd = std::process::Command::new(evapi_tests::binary("evapi-client"));
    cmd.args(["--addr", "127.0.0.1:1", "run", &path]);
    let (_, err, code) = output(cmd);
    assert_eq!(code, 2);
    assert_eq!(
        err.replace(&path, "[script]"),
        "evapi-client: [script]: line 2: unknown step \"expekt\": expected one of send, expect, \
         expect-contains, expect-json, expect-none, sleep, close, timeout\n"
    );
}

/// The example script in docs/client.md runs as written against an app that answers as
/// the guide says, and prints the success line the guide promises.
#[test]
fn the_script_in_the_client_guide_runs_as_written() {
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/client.md"))
            .unwrap();
    let block = guide
        .split("```text\n# checks.evapi\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the checks.evapi block in docs/client.md");
    let promised = guide
        .split("On success it prints `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .expect("the promised success line");
    let srv = start(Framing::Netstring);
    let dir = tempdir();
    let path = script(&dir, "checks.evapi", block);
    let run = Running::spawn(srv.client(&["run", &path]));
    // The app under test: answers ping, route and hello as the guide's script expects.
    let sends = block.lines().filter(|l| l.starts_with("send ")).count();
    for _ in 0..sends {
        let msg = String::from_utf8(srv.msg().to_vec()).unwrap();
        let reply = match msg.as_str() {
            r#"{"event":"ping"}"# => r#"{"event":"pong"}"#,
            m if m.contains(r#""cmd":"route""#) => r#"{"target":"sip:bob@10.0.0.7"}"#,
            "hello" => "hello back",
            other => panic!("the guide's script sent {other:?}"),
        };
        srv.relay(reply);
    }
    let (out, err, code) = run.finish();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim_end(), promised);
}
