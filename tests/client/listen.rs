use evapi_proto::Framing;

use crate::common::*;

#[test]
fn prints_count_messages_raw_then_exits_0() {
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&["listen", "--count", "2"]));
    srv.connected();
    srv.relay(r#"{"event":"one"}"#);
    srv.relay("two");
    srv.relay("three");
    let (out, _, code) = run.finish();
    assert_eq!((out.as_str(), code), ("{\"event\":\"one\"}\ntwo\n", 0));
}

/// Issue 34: relayed text reached the terminal raw (OSC 52 wrote the clipboard, OSC 0
/// the title, `\r` overwrote a line). Plain output shows controls escaped, JSON lines
/// escape C1, DEL and bidi controls too, and `--raw` keeps the bytes for pipes.
#[test]
fn a_peers_control_characters_are_shown_not_executed() {
    let attack = "\u{1b}]52;c;cm0gLXJmIH4vKg==\u{7}\u{1b}]0;pwned\u{7}ok\rX\u{85}\u{202e}";
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&["listen", "--count", "1"]));
    srv.connected();
    srv.relay(attack);
    let (out, _, code) = run.finish();
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "\\x1b]52;c;cm0gLXJmIH4vKg==\\x07\\x1b]0;pwned\\x07ok\\rX\\x85\\u{202e}\n"
    );
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&["listen", "--json", "--count", "1"]));
    srv.connected();
    srv.relay(attack);
    let (out, _, _) = run.finish();
    assert!(
        !out.trim_end()
            .chars()
            .any(evapi_proto::text::is_unsafe_for_terminal),
        "{out:?}"
    );
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["msg"], attack, "the same JSON, escaped");
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&["listen", "--raw", "--count", "1"]));
    srv.connected();
    srv.relay(attack);
    let (out, _, _) = run.finish();
    assert_eq!(out, format!("{attack}\n"), "--raw is raw");
}

/// `--timeout` with `--count`: what came is printed, and too few in time is exit 1
/// (what CI scripts check).
#[test]
fn too_few_messages_within_the_timeout_is_exit_1() {
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&["listen", "--count", "2", "--timeout", "400ms"]));
    srv.connected();
    srv.relay("only one");
    let (out, err, code) = run.finish();
    assert_eq!((out.as_str(), code), ("only one\n", 1), "{err}");
}

#[test]
fn json_lines_carry_text_or_base64_and_a_timestamp() {
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&["listen", "--json", "--count", "2"]));
    srv.connected();
    srv.relay("héllo");
    let _ = srv.handle.relay(&[0, 255, 1]).unwrap();
    let (out, _, code) = run.finish();
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().all(|l| l["ts"].as_f64().unwrap() > 1.7e9));
    assert_eq!(lines[0]["msg"], "héllo");
    assert_eq!(lines[1]["msg_b64"], "AP8B");
    assert_eq!(
        lines[0]["node"],
        srv.addr.as_str(),
        "an unnamed node is its address"
    );
}

#[test]
fn two_named_nodes_each_line_says_which() {
    let a = start(Framing::Netstring);
    let b = start(Framing::Netstring);
    let mut cmd = std::process::Command::new(evapi_tests::binary("evapi-client"));
    cmd.args(["--addr", &format!("sip-a={},sip-b={}", a.addr, b.addr)])
        .args(["listen", "--json", "--count", "2"])
        .stdin(std::process::Stdio::null());
    let run = Running::spawn(cmd);
    a.connected();
    b.connected();
    a.relay("from a");
    let mut text = std::process::Command::new(evapi_tests::binary("evapi-client"));
    text.args([
        "--addr",
        &format!("sip-a={}", a.addr),
        "--addr",
        &format!("sip-b={}", b.addr),
    ])
    .args(["listen", "--count", "1"])
    .stdin(std::process::Stdio::null());
    let plain = Running::spawn(text);
    a.connected();
    b.connected();
    b.relay("from b");
    let (out, _, code) = run.finish();
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        (lines[0]["node"].as_str(), lines[0]["msg"].as_str()),
        (Some("sip-a"), Some("from a"))
    );
    assert_eq!(
        (lines[1]["node"].as_str(), lines[1]["msg"].as_str()),
        (Some("sip-b"), Some("from b"))
    );
    let (out, _, code) = plain.finish();
    assert_eq!((out.as_str(), code), ("[sip-b] from b\n", 0));
}

/// `--hello` is the first frame on every connection, again after a node dropped it: a
/// restarted node's message route can set the app's tag again.
#[test]
fn the_hello_frame_opens_every_connection_again_after_a_reconnect() {
    let a = start(Framing::Netstring);
    let b = start(Framing::Netstring);
    let mut cmd = std::process::Command::new(evapi_tests::binary("evapi-client"));
    cmd.args(["--addr", &format!("sip-a={},sip-b={}", a.addr, b.addr)])
        .args(["--hello", r#"{"hello":"billing"}"#])
        .args(["listen", "--count", "1"])
        .stdin(std::process::Stdio::null());
    let run = Running::spawn(cmd);
    let first = a.connected();
    assert_eq!(a.msg(), r#"{"hello":"billing"}"#);
    b.connected();
    assert_eq!(b.msg(), r#"{"hello":"billing"}"#);
    a.handle
        .close(evapi_server::Target::Connid(first.connid))
        .unwrap();
    let again = loop {
        match a.next() {
            Ev::New(c) => break c,
            Ev::Closed(_) | Ev::Msg(_) => {}
        }
    };
    assert_ne!(again.connid, first.connid);
    assert_eq!(a.msg(), r#"{"hello":"billing"}"#, "declared again");
    a.relay("after the restart");
    let (out, _, code) = run.finish();
    assert_eq!((out.as_str(), code), ("[sip-a] after the restart\n", 0));
}

/// Stopped by a signal (a script's `kill`, Ctrl-C), listen exits 0 with what it showed.
#[test]
fn sigterm_ends_listen_cleanly() {
    use std::io::BufRead as _;
    let srv = start(Framing::Netstring);
    let mut run = Running::spawn(srv.client(&["listen"]));
    srv.connected();
    srv.relay("one");
    let stdout = run.0.stdout.take().expect("piped");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "one\n");
    run.term();
    let (_, _, code) = run.finish();
    assert_eq!(code, 0, "SIGTERM is a clean end, not 143");
}

/// One node, restarted on the same address: listen connects again and goes on
/// printing; with --exit-on-close the end of the connection ends it, exit 2.
#[test]
fn a_single_node_restarted_is_heard_again_unless_exit_on_close() {
    let srv = start(Framing::Netstring);
    let addr = srv.addr.clone();
    let run = Running::spawn(srv.client(&["listen", "--count", "1"]));
    let once = Running::spawn(srv.client(&["listen", "--exit-on-close"]));
    srv.connected();
    srv.connected();
    drop(srv);
    let (out, err, code) = once.finish();
    assert_eq!((out.as_str(), code), ("", 2), "{err}");
    assert!(err.contains("closed by the server"), "{err}");
    let srv = start_on(Framing::Netstring, &addr);
    srv.connected();
    srv.relay("after the restart");
    let (out, err, code) = run.finish();
    assert_eq!((out.as_str(), code), ("after the restart\n", 0), "{err}");
}
