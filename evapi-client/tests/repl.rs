use std::process::Command;

use evapi_proto::Framing;
use rexpect::session::spawn_command;

use crate::common::*;

/// The REPL in a pseudo-terminal, with its history in a fresh directory (returned).
fn spawn_repl(srv: &Srv, name: &str) -> (rexpect::session::PtySession, std::path::PathBuf) {
    let home = std::env::temp_dir().join(format!("evapi-client-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("evapi-client"));
    cmd.args(["--addr", &srv.addr, "repl", "--no-color"])
        .env("XDG_DATA_HOME", &home)
        .env("HOME", &home)
        .env("TERM", "xterm");
    let session = spawn_command(cmd, Some(PATIENCE.as_millis() as u64)).unwrap();
    (session, home)
}

#[test]
fn a_session_in_a_real_terminal() {
    let srv = start(Framing::Netstring);
    let (mut p, home) = spawn_repl(&srv, "session");
    p.exp_string("evapi> ").unwrap();
    srv.connected();

    p.send_line("send hello").unwrap();
    assert_eq!(srv.msg(), "hello");
    p.send_line("json {\"a\": [1, 2]}").unwrap();
    assert_eq!(srv.msg(), "{\"a\":[1,2]}");
    p.send_line("json {oops").unwrap();
    p.exp_string("!! not valid JSON").unwrap();

    // An event arrives while a line is half typed: it is printed above the prompt and
    // the half line survives.
    p.send("send wor").unwrap();
    p.flush().unwrap();
    p.exp_string("send wor").unwrap();
    srv.relay(r#"{"event":"ping","n":1}"#);
    p.exp_string("\"event\": \"ping\"").unwrap();
    p.send_line("ld").unwrap();
    assert_eq!(srv.msg(), "world");

    // Suspends answered by rule, and by hand.
    p.send_line("auto 486").unwrap();
    p.exp_string("answering every suspend with 486 Busy Here")
        .unwrap();
    srv.relay(r#"{"event":"suspend","tindex":"1","tlabel":"2"}"#);
    assert_eq!(
        srv.msg(),
        r#"{"tindex":1,"tlabel":2,"code":486,"reason":"Busy Here"}"#
    );
    p.send_line("auto off").unwrap();
    p.exp_string("automatic answers off").unwrap();
    p.send_line("continue 7 8 404").unwrap();
    assert_eq!(
        srv.msg(),
        r#"{"tindex":7,"tlabel":8,"code":404,"reason":"Not Found"}"#
    );
    p.send_line("stats").unwrap();
    p.exp_string("sent 5, received 2, answered automatically 1")
        .unwrap();
    // `last` shows the last message received, pretty-printed.
    p.send_line("last").unwrap();
    p.exp_string("\"tlabel\": \"2\"").unwrap();
    // Tab completes a command name: "sta" becomes "stats".
    p.send("sta\t").unwrap();
    p.flush().unwrap();
    p.exp_string("stats").unwrap();
    p.send_line("").unwrap();
    p.exp_string("sent 5, received 2").unwrap();

    // Ctrl-C drops the line being typed; Ctrl-D leaves.
    p.send("send dropped").unwrap();
    p.flush().unwrap();
    p.exp_string("send dropped").unwrap();
    p.send_control('c').unwrap();
    // A fresh prompt shows the line was dropped (typing on before it may be discarded).
    p.exp_string("evapi> ").unwrap();
    p.send_line("send kept").unwrap();
    assert_eq!(srv.msg(), "kept");
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();

    let history = std::fs::read_to_string(home.join("evapi-client").join("history")).unwrap();
    assert!(
        history.contains("send hello") && history.contains("continue 7 8 404"),
        "{history}"
    );
    assert!(!history.contains("dropped"), "{history}");
}

#[test]
fn the_repl_reconnects_when_the_server_drops_it() {
    let srv = start(Framing::Netstring);
    let (mut p, _home) = spawn_repl(&srv, "reconnect");
    p.exp_string("evapi> ").unwrap();
    let first = srv.connected();
    srv.handle
        .close(evapi_server::Target::Connid(first.connid))
        .unwrap();
    p.exp_string("lost: closed by the server; reconnecting")
        .unwrap();
    p.exp_string("reconnected to").unwrap();
    let second = loop {
        match srv.next() {
            Ev::New(c) => break c,
            Ev::Closed(_) | Ev::Msg(_) => {}
        }
    };
    assert_ne!(second.connid, first.connid);
    p.send_line("send after the drop").unwrap();
    assert_eq!(srv.msg(), "after the drop");
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}
