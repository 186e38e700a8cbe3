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
