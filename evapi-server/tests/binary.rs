use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

use serde_json::Value;

use crate::common::PATIENCE;

/// The server binary, killed on drop whatever happens to the test.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin!("evapi-server"))
            .args(args)
            .arg("-q")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn line(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(PATIENCE)
            .expect("a stdout line within PATIENCE");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"))
    }

    fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// SIGTERM, then the exit status within PATIENCE (a hang fails the test).
    fn terminate(&mut self) -> std::process::ExitStatus {
        use wait_timeout::ChildExt as _;
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child
            .wait_timeout(PATIENCE)
            .unwrap()
            .expect("the server exits within PATIENCE of SIGTERM")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replace what changes from run to run (ports, clock) so the transcript can be snapshotted.
fn redact(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                // Redacted values keep their type in the snapshot: a port that turned
                // into a string would show as "[port]" (quoted) instead of [port].
                match key.as_str() {
                    "srcport" => *value = placeholder(value, "[port]", Value::is_u64),
                    "connected_since" => *value = placeholder(value, "[time]", Value::is_u64),
                    "listening" | "control" => {
                        *value = placeholder(value, "127.0.0.1:[port]", Value::is_string)
                    }
                    _ => *value = redact(value.take()),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                *item = redact(item.take());
            }
        }
        _ => {}
    }
    v
}

/// `text` when `value` has the type the docs promise, otherwise a marker that names the
/// wrong type, so the snapshot fails.
fn placeholder(value: &Value, text: &str, promised: fn(&Value) -> bool) -> Value {
    if promised(value) {
        text.into()
    } else {
        format!("WRONG TYPE: {value}").into()
    }
}

fn read_frame(client: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    client.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn control_commands_and_notifications_transcript() {
    let mut server = Running::start(&["--bind", "127.0.0.1:0"]);
    let mut transcript = Vec::new();
    let mut step = |title: &str, lines: Vec<Value>| {
        transcript.push(format!("# {title}"));
        transcript.extend(lines.into_iter().map(|l| redact(l).to_string()));
    };

    let hello = server.line();
    let addr = hello["listening"].as_str().unwrap().to_owned();
    step("start", vec![hello]);

    let mut client = TcpStream::connect(&addr).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    step("client connects", vec![server.line()]);

    client.write_all(b"5:hello,2:\xff\x00,").unwrap();
    step(
        "client sends text and binary",
        vec![server.line(), server.line()],
    );

    server.command(r#"{"relay":"text","id":"r1"}"#);
    step("relay a string", vec![server.line()]);
    assert_eq!(read_frame(&mut client, 7), b"4:text,");

    server.command(r#"{"relay":{"event":"x","data":[1,2]}}"#);
    step("relay JSON", vec![server.line()]);
    let json = br#"26:{"event":"x","data":[1,2]},"#;
    assert_eq!(read_frame(&mut client, json.len()), json);

    server.command(r#"{"relay":"AP8=","encoding":"base64"}"#);
    step("relay bytes", vec![server.line()]);
    assert_eq!(read_frame(&mut client, 5), b"2:\x00\xff,");

    server.command(r#"{"set_tag":"app","conidx":0}"#);
    server.command(r#"{"multicast":"m","tag":"app"}"#);
    server.command(r#"{"unicast":"u","tag":"nobody"}"#);
    step("tags", vec![server.line(), server.line(), server.line()]);
    assert_eq!(read_frame(&mut client, 4), b"1:m,");

    server.command(r#"{"clients":true}"#);
    let mut clients = server.line();
    // The writer counts a frame once its write returned, which can be just after the
    // client has read it: these two may lag by the last frame here.
    clients["clients"][0]["frames_out"] = "[settling]".into();
    clients["clients"][0]["bytes_out"] = "[settling]".into();
    step("clients", vec![clients]);

    server.command("not json");
    server.command("[1,2]");
    server.command(r#"{"frobnicate":1}"#);
    server.command(r#"{"relay":""}"#);
    server.command(r#"{"set_tag":"x"}"#);
    step("bad commands", (0..5).map(|_| server.line()).collect());

    server.command(r#"{"close":0}"#);
    // The reply and connection-closed race; order them for the snapshot.
    let mut lines = vec![server.line(), server.line()];
    lines.sort_by_key(|l| l.get("route").is_some());
    step("close", lines);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed after the queued frames");

    server.command(r#"{"close":{"connid":0},"id":7}"#);
    step("close a connid that is gone", vec![server.line()]);

    server.command(r#"{"stats":true}"#);
    step("stats", vec![server.line()]);

    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    insta::assert_snapshot!(transcript.join("\n"));
}

#[test]
fn control_over_tcp_and_relay_to_several_clients() {
    let server = Running::start(&[
        "--bind",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--framing",
        "line",
    ]);
    let hello = server.line();
    let addr = hello["listening"].as_str().unwrap();
    let control = hello["control"].as_str().unwrap();
    let mut a = TcpStream::connect(addr).unwrap();
    server.line();
    let mut b = TcpStream::connect(addr).unwrap();
    server.line();
    let mut ctl = TcpStream::connect(control).unwrap();
    ctl.write_all(b"{\"relay\":{\"n\":1}}\n").unwrap();
    let mut reply = String::new();
    BufReader::new(ctl.try_clone().unwrap())
        .read_line(&mut reply)
        .unwrap();
    assert_eq!(reply, "{\"ok\":true,\"delivered\":2}\n");
    for c in [&mut a, &mut b] {
        assert_eq!(read_frame(c, 8), b"{\"n\":1}\n");
    }
}

#[test]
fn a_busy_address_is_one_line_and_exit_code_2() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(assert_cmd::cargo::cargo_bin!("evapi-server"))
        .args(["--bind", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "cannot start: exit 2");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("evapi-server: cannot bind {addr}: ")),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");
}

#[test]
fn bind_takes_host_names_and_the_environment() {
    let server = Running::start(&["--bind", "localhost:0"]);
    let listening = server.line()["listening"].as_str().unwrap().to_owned();
    assert!(
        listening.starts_with("127.0.0.1:") || listening.starts_with("[::1]:"),
        "{listening}"
    );
    drop(server);
    let output = Command::new(assert_cmd::cargo::cargo_bin!("evapi-server"))
        .env("EVAPI_BIND", "nonsense:port")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("\"nonsense:port\": port \"port\" is not a number (0 to 65535)"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_are_usage_errors_and_help_has_examples() {
    let output = assert_cmd::cargo::cargo_bin_cmd!("evapi-server")
        .args(["--framing", "xml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown framing \"xml\""));

    let output = assert_cmd::cargo::cargo_bin_cmd!("evapi-server")
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("Examples:") && help.contains("--max-clients"));
}

#[test]
fn settings_come_from_the_environment_too() {
    let output = assert_cmd::cargo::cargo_bin_cmd!("evapi-server")
        .env("EVAPI_ALLOW", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not-an-address"));
}

/// SIGTERM flushes what is queued to every client before the close (DESIGN: closing
/// from the server side flushes within the send timeout), then exits 0.
#[test]
fn sigterm_flushes_every_queue_then_exits_0() {
    let mut server = Running::start(&["--bind", "127.0.0.1:0"]);
    let addr: std::net::SocketAddr = server.line()["listening"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // A client with a small receive buffer that does not read yet, so frames stay queued.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut client: TcpStream = socket.into();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = server.line(); // connection-new
    let payload = "q".repeat(1000);
    for _ in 0..500 {
        server.command(&format!(r#"{{"relay":"{payload}"}}"#));
    }
    for _ in 0..500 {
        assert_eq!(server.line()["ok"], true);
    }
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    let frame = format!("1000:{payload},");
    assert_eq!(got.len(), 500 * frame.len(), "every queued frame, then EOF");
    assert!(got.chunks(frame.len()).all(|c| c == frame.as_bytes()));
}

impl Running {
    fn raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }
}

/// Control lines are hostile until checked: a line that is not UTF-8, one over
/// --control-max-line and a wrong type each get an error reply, and control goes on
/// (one bad byte used to end stdin control for good).
#[test]
fn bad_control_lines_get_an_error_and_control_goes_on() {
    let mut server = Running::start(&["--bind", "127.0.0.1:0", "--control-max-line", "64"]);
    let _ = server.line();
    server.raw(b"{\"stats\":tr\xffue}\n");
    assert_eq!(
        server.line(),
        serde_json::json!({"ok": false, "error": "control line is not UTF-8 (invalid byte at 11)"})
    );
    server.raw(format!("{{\"relay\":\"{}\"}}\n", "x".repeat(100)).as_bytes());
    assert_eq!(
        server.line(),
        serde_json::json!({"ok": false, "error": "control line longer than 64 bytes, skipped"})
    );
    server.command(r#"{"relay":"x","encoding":5}"#);
    assert_eq!(
        server.line()["error"],
        "encoding: expected a string (\"base64\"), got a number"
    );
    server.command(r#"{"stats":true,"id":1}"#);
    assert_eq!(server.line()["ok"], true, "control still works");
}

/// Over TCP: the same checks per connection, and at most --control-max-connections
/// controllers; one more gets an error line and is closed.
#[test]
fn control_connections_are_bounded_and_survive_bad_lines() {
    let server = Running::start(&[
        "--bind",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--control-max-connections",
        "1",
    ]);
    let control = server.line()["control"].as_str().unwrap().to_owned();
    let mut first = TcpStream::connect(&control).unwrap();
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut replies = BufReader::new(first.try_clone().unwrap());
    first.write_all(b"\xff\n{\"stats\":true}\n").unwrap();
    let mut line = String::new();
    replies.read_line(&mut line).unwrap();
    assert!(line.contains("control line is not UTF-8"), "{line}");
    line.clear();
    replies.read_line(&mut line).unwrap();
    assert!(line.starts_with("{\"ok\":true,\"stats\""), "{line}");
    let mut second = TcpStream::connect(&control).unwrap();
    second.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut refused = String::new();
    second.read_to_string(&mut refused).unwrap();
    assert_eq!(
        refused,
        "{\"ok\":false,\"error\":\"too many control connections (1); try again later\"}\n"
    );
}

/// A controller that stops reading stdout does not stall intake: notifications past
/// --notify-queue are dropped (and counted in the log), every client message is still
/// read and handled, and commands over --control are still answered.
#[test]
fn a_stalled_stdout_does_not_stall_intake() {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin!("evapi-server"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--notify-queue",
            "16",
            "-q",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut hello = String::new();
    stdout.read_line(&mut hello).unwrap();
    let hello: Value = serde_json::from_str(&hello).unwrap();
    // From here on nobody reads stdout (its pipe fills at about 64 KiB).
    let mut client = TcpStream::connect(hello["listening"].as_str().unwrap()).unwrap();
    let frame = format!("100:{},", "n".repeat(100));
    let many = frame.repeat(5000);
    client.write_all(many.as_bytes()).unwrap();
    let mut ctl = TcpStream::connect(hello["control"].as_str().unwrap()).unwrap();
    ctl.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut replies = BufReader::new(ctl.try_clone().unwrap());
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        ctl.write_all(b"{\"stats\":true}\n").unwrap();
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        let stats: Value = serde_json::from_str(&line).unwrap();
        if stats["stats"]["frames_in"] == 5000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "intake stalled: {line}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A scratch directory removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("evapi-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn reply_line(stream: &TcpStream) -> String {
    let mut line = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

#[test]
fn control_off_loopback_needs_a_token() {
    let output = Command::new(assert_cmd::cargo::cargo_bin!("evapi-server"))
        .args(["--bind", "127.0.0.1:0", "--control", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--control-token"), "{stderr}");

    let token = "control-token-0123456789";
    let server = Running::start(&[
        "--bind",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--control-token",
        token,
    ]);
    let hello = server.line();
    let control = hello["control"].as_str().unwrap();
    // No token first: one error line, then the connection is closed.
    let mut ctl = TcpStream::connect(control).unwrap();
    ctl.set_read_timeout(Some(PATIENCE)).unwrap();
    ctl.write_all(b"{\"stats\":true}\n").unwrap();
    let reply = reply_line(&ctl);
    assert!(reply.contains("authentication failed"), "{reply}");
    let mut rest = Vec::new();
    ctl.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the error: {rest:?}");
    // A wrong token likewise; the right one opens the interface.
    let mut ctl = TcpStream::connect(control).unwrap();
    ctl.write_all(b"{\"auth\":\"control-token-0123456788\"}\n{\"stats\":true}\n")
        .unwrap();
    assert!(reply_line(&ctl).contains("authentication failed"));
    let mut ctl = TcpStream::connect(control).unwrap();
    ctl.write_all(format!("{{\"auth\":\"{token}\"}}\n{{\"stats\":true}}\n").as_bytes())
        .unwrap();
    let mut lines = BufReader::new(ctl.try_clone().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), r#"{"ok":true,"auth":"ok"}"#);
    assert!(lines.next().unwrap().unwrap().contains("\"stats\""));
}

#[test]
fn unix_sockets_for_apps_and_control_take_their_file_mode() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    let dir = Scratch::new("unix");
    let (app, ctl) = (dir.path("app.sock"), dir.path("ctl.sock"));
    let mut server =
        Running::start(&["--unix", &app, "--control-unix", &ctl, "--unix-mode", "660"]);
    let hello = server.line();
    assert_eq!(hello["listening"], format!("unix:{app}"));
    for path in [&app, &ctl] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "{path}");
    }
    let mut client = UnixStream::connect(&app).unwrap();
    let new = server.line();
    assert_eq!(new["transport"], "unix");
    assert_eq!(
        (new["srcaddr"].as_str(), new["srcport"].as_u64()),
        (Some("127.0.0.1"), Some(0))
    );
    let mut control = UnixStream::connect(&ctl).unwrap();
    control.write_all(b"{\"relay\":\"over unix\"}\n").unwrap();
    let mut reply = String::new();
    BufReader::new(control.try_clone().unwrap())
        .read_line(&mut reply)
        .unwrap();
    assert_eq!(reply, "{\"ok\":true,\"delivered\":1}\n");
    let mut got = vec![0; "9:over unix,".len()];
    client.read_exact(&mut got).unwrap();
    assert_eq!(got, b"9:over unix,");
    assert!(server.terminate().success());
    assert!(
        !std::path::Path::new(&app).exists(),
        "socket file removed on exit"
    );
}

/// Send a token frame, return the server's answer (empty when it closed).
fn try_token(addr: &str, token: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let frame = format!("{{\"auth\":\"{token}\"}}");
    c.write_all(format!("{}:{frame},", frame.len()).as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    // The ok frame, or EOF.
    while !got.ends_with(b"},") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn sighup_reloads_the_token_file_and_a_broken_file_changes_nothing() {
    let dir = Scratch::new("hup");
    let tokens = dir.path("tokens");
    std::fs::write(&tokens, "app first-token-0123456789\n").unwrap();
    let server = Running::start(&["--bind", "127.0.0.1:0", "--auth-tokens", &tokens]);
    let addr = server.line()["listening"].as_str().unwrap().to_owned();
    let hup = |s: &Running| {
        let ok = Command::new("kill")
            .args(["-HUP", &s.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        // The reload is logged, not answered: give it a moment.
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(try_token(&addr, "first-token-0123456789").contains("\"auth\":\"ok\""));
    std::fs::write(&tokens, "app second-token-0123456789\n").unwrap();
    hup(&server);
    assert_eq!(try_token(&addr, "first-token-0123456789"), "");
    assert!(try_token(&addr, "second-token-0123456789").contains("\"name\":\"app\""));
    // A broken file: the previous table stays.
    std::fs::write(&tokens, "app short\n").unwrap();
    hup(&server);
    assert!(try_token(&addr, "second-token-0123456789").contains("\"auth\":\"ok\""));
}

#[test]
fn log_format_json_gives_one_object_per_line_with_the_connection_fields() {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin!("evapi-server"))
        .args(["--bind", "127.0.0.1:0", "--log-format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut hello = String::new();
    out.read_line(&mut hello).unwrap();
    let hello: Value = serde_json::from_str(&hello).unwrap();
    let mut c = TcpStream::connect(hello["listening"].as_str().unwrap()).unwrap();
    c.write_all(b"not a netstring").unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    drop(child.stdin.take());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let closed = lines
        .iter()
        .find(|l| l["message"] == "client disconnected")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(closed["reason"], "bad-frame");
    assert_eq!(closed["level"], "INFO");
    assert_eq!(closed["span"]["conidx"], 0);
    assert_eq!(closed["span"]["connid"], 0);
    assert!(closed["span"]["peer"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
}

/// `-V` names the version and the commit the binary was built from.
#[test]
fn version_names_the_commit() {
    let out = Command::new(assert_cmd::cargo::cargo_bin!("evapi-server"))
        .arg("-V")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let rest = text
        .trim()
        .strip_prefix(concat!("evapi-server ", env!("CARGO_PKG_VERSION"), " ("))
        .unwrap_or_else(|| panic!("{text}"));
    let commit = rest.strip_suffix(')').unwrap_or_else(|| panic!("{text}"));
    assert!(
        commit == "unknown commit" || commit.chars().take(7).all(|c| c.is_ascii_hexdigit()),
        "{text}"
    );
}
