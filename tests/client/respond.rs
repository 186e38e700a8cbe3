use bytes::Bytes;
use evapi_proto::Framing;

use crate::common::*;

#[test]
fn answers_every_suspend_shape_with_the_chosen_code_and_counts() {
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&["respond", "--code", "486", "--count", "3"]));
    srv.connected();
    srv.relay(r#"{"event":"suspend","tindex":"11","tlabel":"22"}"#);
    srv.relay(r#"{"event":"hello"}"#);
    srv.relay(r#"{"event":"suspend","data":{"index":3,"label":4}}"#);
    srv.relay(r#"{"tindex":5,"tlabel":6}"#);
    assert_eq!(
        srv.msg(),
        r#"{"tindex":11,"tlabel":22,"code":486,"reason":"Busy Here"}"#
    );
    assert_eq!(
        srv.msg(),
        r#"{"data":{"index":3,"label":4},"code":486,"reason":"Busy Here"}"#
    );
    assert_eq!(
        srv.msg(),
        r#"{"tindex":5,"tlabel":6,"code":486,"reason":"Busy Here"}"#
    );
    let (out, _, code) = run.finish();
    assert_eq!(code, 0);
    assert!(
        out.starts_with("answered 3, ignored 1, invalid 0 on 1 connection(s)"),
        "{out}"
    );
}

#[test]
fn codes_and_reasons_that_no_reader_would_accept_are_usage_errors() {
    let srv = start(Framing::Netstring);
    for (args, want) in [
        (
            &["respond", "--code", "99"][..],
            "\"code\" must be a final SIP code (200-699), got 99",
        ),
        (&["respond", "--code", "700"][..], "got 700"),
        (
            &["respond", "--reason", "Busy\r\nX-Evil: 1"][..],
            "reason contains control character 0x0d at byte 4",
        ),
    ] {
        let (_, err, code) = output(srv.client(args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn templates_and_custom_id_fields() {
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&[
        "respond",
        "--index-field",
        "tr_index",
        "--label-field",
        "tr_label",
        "--code",
        "302",
        "--reply",
        r#"{"tr_index":"$tindex","tr_label":"$tlabel","code":"$code","contact":"sip:${data.rU}@gw"}"#,
        "--count",
        "1",
    ]));
    srv.connected();
    srv.relay(r#"{"tr_index":7,"tr_label":8,"data":{"rU":"bob"}}"#);
    assert_eq!(
        srv.msg(),
        r#"{"tr_index":7,"tr_label":8,"code":302,"contact":"sip:bob@gw"}"#
    );
    assert_eq!(run.finish().2, 0);
}

#[test]
fn invalid_ids_are_counted_not_answered_and_delay_holds_answers() {
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&["respond", "--delay", "200ms", "--count", "1"]));
    srv.connected();
    srv.relay(r#"{"tindex":"abc","tlabel":1}"#);
    let start = std::time::Instant::now();
    srv.relay(r#"{"tindex":1,"tlabel":2}"#);
    assert_eq!(
        srv.msg(),
        r#"{"tindex":1,"tlabel":2,"code":200,"reason":"OK"}"#
    );
    assert!(start.elapsed() >= std::time::Duration::from_millis(200));
    let (out, _, code) = run.finish();
    assert_eq!(code, 0);
    assert!(out.starts_with("answered 1, ignored 0, invalid 1"), "{out}");
}

#[test]
fn several_connections_share_the_count() {
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&["respond", "--connections", "3", "--count", "6"]));
    for _ in 0..3 {
        srv.connected();
    }
    // Each relay reaches all three connections: 2 relays, 6 answers.
    srv.relay(r#"{"tindex":1,"tlabel":1}"#);
    srv.relay(r#"{"tindex":2,"tlabel":2}"#);
    // Three answers per transaction, one from each connection, whatever the order.
    let mut answers: Vec<String> = (0..6)
        .map(|_| String::from_utf8(srv.msg().to_vec()).unwrap())
        .collect();
    answers.sort();
    let one = r#"{"tindex":1,"tlabel":1,"code":200,"reason":"OK"}"#;
    let two = r#"{"tindex":2,"tlabel":2,"code":200,"reason":"OK"}"#;
    assert_eq!(answers, [one, one, one, two, two, two]);
    let (out, _, code) = run.finish();
    assert_eq!(code, 0);
    assert!(
        out.starts_with("answered 6, ignored 0, invalid 0 on 3 connection(s)"),
        "{out}"
    );
}

/// One responder for two nodes: each node's suspends are answered on that node's
/// connection only; a node that goes away and comes back (a restart on the same
/// address) is served again, with no answer on the other node meanwhile, and the other
/// node is served throughout.
#[test]
fn one_responder_serves_two_nodes_and_outlives_a_restart_of_one() {
    let a = start(Framing::Netstring);
    let b = start(Framing::Netstring);
    let b_addr = b.addr.clone();
    let mut cmd = std::process::Command::new(evapi_tests::binary("evapi-client"));
    cmd.args(["--addr", &format!("sip-a={}", a.addr)])
        .args(["--addr", &format!("sip-b={b_addr}")])
        .args(["respond", "--code", "486"])
        .stdin(std::process::Stdio::null());
    let run = Running::spawn(cmd);
    a.connected();
    b.connected();
    a.relay(r#"{"tindex":1,"tlabel":1}"#);
    b.relay(r#"{"tindex":2,"tlabel":2}"#);
    assert_eq!(
        a.msg(),
        r#"{"tindex":1,"tlabel":1,"code":486,"reason":"Busy Here"}"#
    );
    assert_eq!(
        b.msg(),
        r#"{"tindex":2,"tlabel":2,"code":486,"reason":"Busy Here"}"#
    );
    // Node b restarts on the same address; node a is served meanwhile.
    drop(b);
    a.relay(r#"{"tindex":3,"tlabel":3}"#);
    assert_eq!(
        a.msg(),
        r#"{"tindex":3,"tlabel":3,"code":486,"reason":"Busy Here"}"#
    );
    let b = start_on(Framing::Netstring, &b_addr);
    b.connected();
    b.relay(r#"{"tindex":4,"tlabel":4}"#);
    assert_eq!(
        b.msg(),
        r#"{"tindex":4,"tlabel":4,"code":486,"reason":"Busy Here"}"#
    );
    // Nothing of b's reached a.
    a.relay(r#"{"tindex":5,"tlabel":5}"#);
    assert_eq!(
        a.msg(),
        r#"{"tindex":5,"tlabel":5,"code":486,"reason":"Busy Here"}"#
    );
    run.term();
    let (out, err, code) = run.finish();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("answered 5, ignored 0, invalid 0 on 2 node(s)"),
        "{out}"
    );
    assert!(err.contains("node back") && err.contains("sip-b"), "{err}");
}

/// Several --addr are for respond and listen only; the others say so.
#[test]
fn several_nodes_are_refused_where_one_is_meant() {
    let (_, err, code) = output({
        let mut cmd = std::process::Command::new(evapi_tests::binary("evapi-client"));
        cmd.args(["--addr", "127.0.0.1:1,127.0.0.1:2", "send", "x"]);
        cmd
    });
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("only respond and listen serve several nodes"),
        "{err}"
    );
}

/// SIGTERM (what `kill` and service managers send) ends respond like Ctrl-C: exit 0
/// with its summary, not 143 and silence.
#[test]
fn sigterm_prints_the_summary() {
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&["respond"]));
    srv.connected();
    srv.relay(r#"{"tindex":1,"tlabel":1}"#);
    let _ = srv.msg();
    run.term();
    let (out, err, code) = run.finish();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("answered 1, ignored 0, invalid 0 on 1 connection(s)"),
        "{out}"
    );
}

/// A handler slower than the deadline: the fallback goes at the deadline (long before
/// the handler's 30 s), the handler's answer is never sent, and the summary counts it.
#[test]
fn past_the_deadline_the_fallback_answers_and_the_late_answer_is_dropped() {
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&[
        "respond",
        "--code",
        "200",
        "--delay",
        "30s",
        "--deadline",
        "100ms",
        "--fallback-code",
        "503",
        "--fallback-reason",
        "App Too Slow",
    ]));
    srv.connected();
    srv.relay(r#"{"tindex":7,"tlabel":8}"#);
    assert_eq!(
        srv.msg(),
        r#"{"tindex":7,"tlabel":8,"code":503,"reason":"App Too Slow"}"#
    );
    run.term();
    let (out, err, code) = run.finish();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("answered 1,"), "{out}");
    assert!(
        out.contains(", 1 with the fallback (the handler late)"),
        "{out}"
    );
    let (_, err, code) = output(srv.client(&["respond", "--deadline", "1s"]));
    assert_eq!(code, 2, "--deadline needs --fallback-code: {err}");
}

/// One node, restarted on the same address: respond connects again and answers the
/// new node's suspends (an app in production outlives its node's restart).
#[test]
fn a_single_node_restarted_is_served_again() {
    let srv = start(Framing::Netstring);
    let addr = srv.addr.clone();
    let run = Running::spawn(srv.client(&["respond", "--code", "486"]));
    srv.connected();
    srv.relay(r#"{"tindex":1,"tlabel":1}"#);
    assert_eq!(
        srv.msg(),
        r#"{"tindex":1,"tlabel":1,"code":486,"reason":"Busy Here"}"#
    );
    drop(srv);
    let srv = start_on(Framing::Netstring, &addr);
    srv.connected();
    srv.relay(r#"{"tindex":2,"tlabel":2}"#);
    assert_eq!(
        srv.msg(),
        r#"{"tindex":2,"tlabel":2,"code":486,"reason":"Busy Here"}"#
    );
    run.term();
    let (out, err, code) = run.finish();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("answered 2, ignored 0, invalid 0 on 1 connection(s)"),
        "{out}"
    );
    assert!(err.contains("node back"), "{err}");
}

/// --exit-on-close keeps the one-shot behaviour for scripts: the node closing ends
/// respond, exit 2 (a lost connection), saying so.
#[test]
fn exit_on_close_ends_when_the_node_closes() {
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&["respond", "--exit-on-close"]));
    srv.connected();
    srv.relay(r#"{"tindex":1,"tlabel":1}"#);
    let _ = srv.msg();
    drop(srv);
    let (out, err, code) = run.finish();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("closed by the server"), "{err}");
    assert!(out.starts_with("answered 1,"), "{out}");
}

/// --max-in-flight bounds a socket too: with 2 in hand and a 1 s delay, 4 suspends
/// relayed at once are answered two, then (a delay later) two more; unbounded, all
/// four would come together.
#[test]
fn max_in_flight_bounds_the_events_held_on_a_socket() {
    let srv = start(Framing::Netstring);
    let run = Running::spawn(srv.client(&["respond", "--delay", "1s", "--max-in-flight", "2"]));
    srv.connected();
    for i in 1..=4 {
        srv.relay(&format!(r#"{{"tindex":{i},"tlabel":{i}}}"#));
    }
    let first: Vec<Bytes> = (0..2).map(|_| srv.msg()).collect();
    assert!(
        srv.msg_within(std::time::Duration::from_millis(400))
            .is_none(),
        "a third answer came with the first two: the bound did not hold"
    );
    let then: Vec<Bytes> = (0..2).map(|_| srv.msg()).collect();
    assert_eq!(
        [first, then].concat(),
        (1..=4)
            .map(|i| Bytes::from(format!(
                r#"{{"tindex":{i},"tlabel":{i},"code":200,"reason":"OK"}}"#
            )))
            .collect::<Vec<_>>()
    );
    run.term();
    let (_, err, code) = run.finish();
    assert_eq!(code, 0, "{err}");
}
