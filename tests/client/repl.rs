use std::process::Command;

use evapi_proto::Framing;
use rexpect::session::spawn_command;

use crate::common::*;

/// The REPL in a pseudo-terminal, with its history in a fresh directory (returned).
fn spawn_repl(srv: &Srv, name: &str) -> (rexpect::session::PtySession, std::path::PathBuf) {
    let home = std::env::temp_dir().join(format!("evapi-client-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(evapi_tests::binary("evapi-client"));
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
    // Keys typed before the next prompt may be discarded by the terminal: wait for it.
    p.exp_string("send kept").unwrap();
    p.exp_string("evapi> ").unwrap();
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
    p.exp_string("-- connected to").unwrap();
    let second = loop {
        match srv.next() {
            Ev::New(c) => break c,
            Ev::Closed(_) | Ev::Msg(_) => {}
        }
    };
    assert_ne!(second.connid, first.connid);
    p.send_line("send after the drop").unwrap();
    assert_eq!(srv.msg(), "after the drop");
    // Keys typed before the next prompt may be discarded by the terminal: wait for it.
    p.exp_string("after the drop").unwrap();
    p.exp_string("evapi> ").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}

/// Every command's output appears exactly once, in order, while events stream in
/// (regression: output printed from the network side raced the prompt redraw and some
/// results never appeared).
#[test]
fn every_command_prints_its_output_while_events_stream_in() {
    let srv = start(Framing::Netstring);
    let (mut p, _home) = spawn_repl(&srv, "stream");
    p.exp_string("evapi> ").unwrap();
    srv.connected();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let (handle, stop) = (srv.handle.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = handle.relay(format!(r#"{{"event":"tick","n":{n}}}"#).as_bytes());
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    for i in 0..10 {
        p.send_line("stats").unwrap();
        p.exp_string("-- sent 0, received")
            .unwrap_or_else(|e| panic!("stats #{i}: {e}"));
        p.exp_string("evapi> ").unwrap();
        p.send_line("json").unwrap();
        p.exp_string("!! usage: json JSON")
            .unwrap_or_else(|e| panic!("usage #{i}: {e}"));
        p.exp_string("evapi> ").unwrap();
    }
    // A typo is refused, not sent as raw text.
    p.send_line("contnue 1 2 486").unwrap();
    p.exp_string("did you mean continue?").unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    feeder.join().unwrap();
    p.exp_string("evapi> ").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}

/// Regression (review of the one-printer change): Enter pressed during a flood of
/// events left the printer inside rustyline's external printer while the terminal
/// waited for it, and the REPL hung. Every command still prints during and after a
/// flood.
#[test]
fn commands_print_during_and_after_a_flood_of_events() {
    let srv = start(Framing::Netstring);
    let (mut p, _home) = spawn_repl(&srv, "flood");
    p.exp_string("evapi> ").unwrap();
    srv.connected();
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feeder = {
        let (handle, flooding) = (srv.handle.clone(), std::sync::Arc::clone(&flooding));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = handle.relay(format!(r#"{{"event":"flood","n":{n}}}"#).as_bytes());
                n += 1;
                if n.is_multiple_of(64) {
                    std::thread::yield_now();
                }
            }
        })
    };
    for i in 0..5 {
        p.send_line("stats").unwrap();
        p.exp_string("-- sent 0, received")
            .unwrap_or_else(|e| panic!("stats #{i} during the flood: {e}"));
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    feeder.join().unwrap();
    p.send_line("help auto").unwrap();
    p.exp_string("--pending")
        .unwrap_or_else(|e| panic!("help after the flood: {e}"));
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}

/// With the server gone, a line is refused at once (never queued for a later server),
/// and quit leaves at once.
#[test]
fn while_disconnected_lines_are_refused_and_quit_is_immediate() {
    let srv = start(Framing::Netstring);
    let (mut p, _home) = spawn_repl(&srv, "gone");
    p.exp_string("evapi> ").unwrap();
    srv.connected();
    let addr = srv.addr.clone();
    drop(srv);
    // The port refuses connections from now on (a listener still being torn down could
    // otherwise take the REPL's next attempt and flip its state once more).
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(std::time::Instant::now() < deadline, "{addr} still accepts");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    p.exp_string("reconnecting").unwrap();
    // The prompt being typed at says so at once, in the width it was drawn with.
    p.exp_string("evapi! ").unwrap();
    // One Enter: the next prompt shows the state (the port refuses, so it cannot flip
    // back). A single line at a time: lines typed ahead of the prompts made this test
    // wait on a prompt that had already been matched.
    p.send_line("").unwrap();
    p.exp_string("evapi (disconnected)> ").unwrap();
    p.send_line("send too early").unwrap();
    p.exp_string("!! not connected (reconnecting to").unwrap();
    p.exp_string("evapi").unwrap();
    let asked = std::time::Instant::now();
    p.send_line("quit").unwrap();
    p.exp_eof().unwrap();
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(1),
        "quit took {:?}",
        asked.elapsed()
    );
}

/// Without a terminal the REPL reads commands from stdin, prints their results and
/// the messages that arrive, and exits 1 if a command failed.
#[test]
fn batch_mode_when_stdin_is_not_a_terminal() {
    let srv = start(Framing::Netstring);
    let mut cmd = srv.client(&["repl", "--no-color"]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"send x\nstats\nquit\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(srv.msg(), "x");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, "-- sent 1, received 0, answered automatically 0\n");
    assert_eq!(out.status.code(), Some(0));

    let mut cmd = srv.client(&["repl"]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"contnue 1 2 486\nsend y\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(srv.msg(), "y", "later commands still run");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("!! unknown command \"contnue\""),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(1), "a command failed");
}

/// Answering by hand without retyping ids: suspends wait in a numbered list, `continue
/// CODE` answers the oldest, `continue #N` a given one (Tab completes N), and `auto
/// --pending` answers those already waiting, each in the event's own id fields.
#[test]
fn pending_suspends_are_answered_by_number_or_oldest_first() {
    let srv = start(Framing::Netstring);
    let (mut p, _home) = spawn_repl(&srv, "pending");
    p.exp_string("evapi> ").unwrap();
    srv.connected();
    srv.relay(r#"{"event":"suspend","tindex":"3021","tlabel":"1031213871"}"#);
    p.exp_string("pending #1").unwrap();
    srv.relay(r#"{"event":"suspend","data":{"index":"5","label":"6"}}"#);
    p.exp_string("pending #2").unwrap();
    srv.relay(r#"{"event":"suspend","tindex":7,"tlabel":8}"#);
    p.exp_string("pending #3").unwrap();
    p.send_line("pending").unwrap();
    p.exp_string("#1").unwrap();
    p.exp_string("tindex 3021:1031213871").unwrap();
    p.exp_string("#3").unwrap();
    p.exp_string("evapi> ").unwrap();

    p.send_line("continue 486").unwrap();
    assert_eq!(
        srv.msg(),
        r#"{"tindex":3021,"tlabel":1031213871,"code":486,"reason":"Busy Here"}"#
    );
    p.exp_string("evapi> ").unwrap();
    // Tab after "continue #" offers the pending numbers; 3 is completed.
    p.send("continue #3\t").unwrap();
    p.flush().unwrap();
    p.send_line("404").unwrap();
    assert_eq!(
        srv.msg(),
        r#"{"tindex":7,"tlabel":8,"code":404,"reason":"Not Found"}"#
    );
    p.exp_string("evapi> ").unwrap();
    p.send_line("continue #3 404").unwrap();
    p.exp_string("!! no pending suspend #3").unwrap();
    p.exp_string("evapi> ").unwrap();
    p.send_line("auto 480 --pending").unwrap();
    assert_eq!(
        srv.msg(),
        r#"{"data":{"index":5,"label":6},"code":480,"reason":"Temporarily Unavailable"}"#
    );
    p.exp_string("and the 1 pending").unwrap();
    p.exp_string("evapi> ").unwrap();
    p.send_line("pending").unwrap();
    p.exp_string("no suspend is waiting for an answer").unwrap();
    p.exp_string("evapi> ").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}

/// help COMMAND, filter, timestamps, and connect to another server (whose messages
/// then arrive, while the old server's pending suspends are dropped).
#[test]
fn help_filter_timestamps_and_connect() {
    let srv = start(Framing::Netstring);
    let other = start(Framing::Netstring);
    let (mut p, _home) = spawn_repl(&srv, "connect");
    p.exp_string("evapi> ").unwrap();
    srv.connected();
    p.send_line("help auto").unwrap();
    p.exp_string("--pending").unwrap();
    p.exp_string("evapi> ").unwrap();
    p.send_line("filter keep").unwrap();
    p.exp_string("-- showing only messages that contain keep")
        .unwrap();
    p.exp_string("evapi> ").unwrap();
    p.send_line("timestamps on").unwrap();
    p.exp_string("-- timestamps on").unwrap();
    p.exp_string("evapi> ").unwrap();
    srv.relay(r#"{"hidden":1}"#);
    srv.relay(r#"{"keep":2}"#);
    // The shown one carries an RFC 3339 time; the hidden one never appears before it.
    let (before, _) = p.exp_regex(r"20\d\d-\d\d-\d\dT[0-9:.]+Z << \{").unwrap();
    assert!(!before.contains("hidden"), "{before}");
    p.exp_string("\"keep\": 2").unwrap();
    p.send_line(&format!("connect {}", other.addr)).unwrap();
    p.exp_string(&format!("-- connecting to {}", other.addr))
        .unwrap();
    p.exp_string(&format!("-- connected to {}", other.addr))
        .unwrap();
    other.connected();
    p.send_line("send to the other").unwrap();
    assert_eq!(other.msg(), "to the other");
    // The prompt drawn after this line (earlier redraws may still be unread).
    p.exp_string("send to the other").unwrap();
    p.exp_string("evapi> ").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}
