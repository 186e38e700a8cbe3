use std::io::Write;
use std::process::Stdio;

use evapi_proto::Framing;

use crate::common::*;

#[test]
fn payloads_reach_the_server_in_order() {
    let srv = start(Framing::Netstring);
    let (out, err, code) = output(srv.client(&["send", "hello", r#"{"event":"x"}"#]));
    assert_eq!((out.as_str(), err.as_str(), code), ("", "", 0));
    assert_eq!(srv.msg(), "hello");
    assert_eq!(srv.msg(), r#"{"event":"x"}"#);
}

#[test]
fn a_dash_sends_one_payload_per_stdin_line() {
    let srv = start(Framing::Line);
    let mut cmd = srv.client(&["--framing", "line", "send", "-"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"a\":1}\n{\"b\":2}\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(srv.msg(), "{\"a\":1}");
    assert_eq!(srv.msg(), "{\"b\":2}");
}

#[test]
fn expect_reply_prints_the_replies_or_exits_1_on_timeout() {
    let srv = start(Framing::Netstring);
    let (out, _, code) = output(srv.client(&[
        "send",
        "echo pong",
        "echo pong again",
        "--expect-reply",
        "2",
    ]));
    assert_eq!((out.as_str(), code), ("pong\npong again\n", 0));

    let (out, err, code) =
        output(srv.client(&["send", "no echo", "--expect-reply", "--timeout", "300ms"]));
    assert_eq!((out.as_str(), code), ("", 1));
    assert_eq!(err, "evapi-client: 0 of 1 replies within 300ms\n");
}

#[test]
fn connection_refused_is_one_line_naming_the_address_and_exit_2() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let mut cmd = std::process::Command::new(evapi_tests::binary("evapi-client"));
    cmd.args(["--addr", &addr, "send", "x"]);
    let (_, err, code) = output(cmd);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("evapi-client: cannot connect to {addr}: ")),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let srv = start(Framing::Netstring);
    let (_, err, code) = output(srv.client(&["send"]));
    assert_eq!(code, 2);
    assert!(err.contains("PAYLOADS"), "{err}");
    let (_, err, code) = output(srv.client(&["--framing", "xml", "send", "x"]));
    assert_eq!(code, 2);
    assert!(err.contains("unknown framing \"xml\""), "{err}");
}

#[test]
fn the_address_and_framing_come_from_the_environment_too() {
    let srv = start(Framing::Line);
    let mut cmd = std::process::Command::new(evapi_tests::binary("evapi-client"));
    cmd.env("EVAPI_ADDR", &srv.addr)
        .env("EVAPI_FRAMING", "line")
        .args(["send", "from the environment"]);
    let (out, err, code) = output(cmd);
    assert_eq!((out.as_str(), err.as_str(), code), ("", "", 0));
    assert_eq!(srv.msg(), "from the environment");
}

#[test]
fn an_unusable_address_cannot_start_and_exits_2() {
    let mut cmd = std::process::Command::new(evapi_tests::binary("evapi-client"));
    cmd.args(["--addr", "", "send", "x"]);
    let (_, err, code) = output(cmd);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("an empty address"), "{err}");
}

#[test]
fn bare_framing_sends_the_payload_as_it_is() {
    let srv = start(Framing::Bare);
    let (_, err, code) = output(srv.client(&["--framing", "bare", "send", "as it is"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(srv.msg(), "as it is");
}

#[test]
fn a_payload_over_max_frame_is_refused_before_sending() {
    let srv = start(Framing::Netstring);
    let (_, err, code) = output(srv.client(&["--max-frame", "4", "send", "12345"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("payload of 5 bytes exceeds the limit of 4 bytes"),
        "{err}"
    );
}

/// `--wait` keeps retrying a refused connection, so a client can start before its
/// server (the CI recipe in docs/simulator.md depends on it).
#[test]
fn wait_retries_until_the_server_is_up() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let mut cmd = std::process::Command::new(evapi_tests::binary("evapi-client"));
    cmd.args(["--addr", &addr, "--wait", "20s", "send", "waited"]);
    let run = Running::spawn(cmd);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let srv = start_on(Framing::Netstring, &addr);
    assert_eq!(srv.msg(), "waited");
    let (_, err, code) = run.finish();
    assert_eq!(code, 0, "{err}");
}

/// `--wait` is a bound too: with no server for that long the client gives up (exit 2)
/// with the last error, instead of retrying for ever.
#[test]
fn wait_gives_up_when_no_server_comes_in_time() {
    // Bound and never listening: connections are refused, and no other program can
    // take the port meanwhile.
    let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    held.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let addr = held.local_addr().unwrap().as_socket().unwrap().to_string();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(evapi_tests::binary("evapi-client"))
        .args(["--addr", &addr, "--wait", "700ms", "send", "never"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("cannot connect to {addr}")), "{err}");
    assert!(
        took >= std::time::Duration::from_millis(600) && took < std::time::Duration::from_secs(5),
        "gave up after {took:?}"
    );
}

/// `--connect-timeout`: a server that never completes the handshake (its accept
/// backlog is full, so the kernel drops the SYN) is given up on after that long.
#[test]
fn connect_timeout_gives_up_on_a_server_that_never_answers() {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the backlog: nobody accepts these.
    let _held: Vec<std::net::TcpStream> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).ok()
        })
        .collect();
    let started = std::time::Instant::now();
    let mut cmd = std::process::Command::new(evapi_tests::binary("evapi-client"));
    cmd.args([
        "--addr",
        &addr.to_string(),
        "--connect-timeout",
        "300ms",
        "send",
        "x",
    ]);
    let (_, err, code) = output(cmd);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no answer within 300ms"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// Sent with the wrong framing, the payload breaks the server's framing and the server
/// closes the connection: send says so and fails, rather than exiting 0 for a payload
/// that went nowhere.
#[test]
fn a_payload_the_server_refuses_is_not_reported_as_sent() {
    let srv = start(Framing::Netstring);
    let (_, err, code) = output(srv.client(&["--framing", "bare", "send", r#"{"event":"x"}"#]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("closed the connection right after the payloads"),
        "{err}"
    );
}
