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
}

#[test]
fn match_filters_and_timeout_before_count_exits_1() {
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&[
        "listen",
        "--match",
        "suspend",
        "--count",
        "2",
        "--timeout",
        "1s",
    ]));
    srv.connected();
    srv.relay(r#"{"event":"suspend","tindex":1}"#);
    srv.relay(r#"{"event":"other"}"#);
    let (out, err, code) = run.finish();
    assert_eq!(out, "{\"event\":\"suspend\",\"tindex\":1}\n");
    assert_eq!(err, "evapi-client: 1 of 2 messages before the timeout\n");
    assert_eq!(code, 1);
}

#[test]
fn a_timeout_without_count_ends_quietly() {
    let srv = start(Framing::Netstring);
    let (out, _, code) = output(srv.client(&["listen", "--timeout", "200ms"]));
    assert_eq!((out.as_str(), code), ("", 0));
}

#[test]
fn the_server_closing_is_an_error_exit_2() {
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&["listen"]));
    let c = srv.connected();
    srv.handle
        .close(evapi_server::Target::Connid(c.connid))
        .unwrap();
    let (_, err, code) = run.finish();
    assert_eq!(code, 2);
    assert!(err.contains("closed by the server"), "{err}");
}

/// A netstring client on a line-framed server: the decode error says what the bytes
/// look like, which is the usual mistake.
#[test]
fn a_framing_mismatch_is_named_in_the_error() {
    let srv = start(Framing::Line);
    let run = Running::spawn(srv.client(&["listen", "--count", "1"]));
    srv.connected();
    srv.relay(r#"{"event":"x"}"#);
    let (_, err, code) = run.finish();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the bytes look like line or bare framing (no length prefix); is the peer started with --framing line or bare?"),
        "{err}"
    );
}
