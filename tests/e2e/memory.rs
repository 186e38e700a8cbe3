//! Memory a peer cannot run out: the evapi-server binary's peak resident memory
//! (VmHWM) under clients that never read and under 1,000 slowloris connections; and
//! `evapi-sim replay`'s, which holds a whole transcript, within 1.5x of the file.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use evapi_tests::binary;

const PATIENCE: Duration = Duration::from_secs(20);
const MIB: u64 = 1024 * 1024;

struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(binary("evapi-server"))
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
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn wait_for(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("no line with {needle:?} in time"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn command(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Peak resident memory so far, in bytes (Linux VmHWM).
    fn peak_rss(&self) -> u64 {
        peak_rss(self.child.id())
    }
}

/// Peak resident memory of process `pid` so far, in bytes (Linux VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raise this process's open-file limit for the test's own sockets (the hard limit
/// permitting), with util-linux's prlimit.
fn raise_fd_limit(n: u32) {
    let _ = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={n}:{n}"),
        ])
        .status();
}

#[test]
fn clients_that_never_read_cannot_grow_the_server_past_their_bounds() {
    let queue_bytes = 4 * MIB;
    let mut server = Server::start(&[
        "--bind",
        "127.0.0.1:0",
        "--client-queue-bytes",
        &queue_bytes.to_string(),
        "--max-frame",
        &(2 * MIB).to_string(),
        "--control-max-line",
        &(4 * MIB).to_string(),
    ]);
    let hello = server.wait_for("listening");
    let addr = hello.split('"').nth(3).unwrap().to_owned();
    // Four clients that never read (small receive buffers, so the kernel holds little).
    let clients: Vec<TcpStream> = (0..4)
        .map(|_| {
            let c = TcpStream::connect(&addr).unwrap();
            socket2::SockRef::from(&c)
                .set_recv_buffer_size(4096)
                .unwrap();
            server.wait_for("connection-new");
            c
        })
        .collect();
    let before = server.peak_rss();
    let payload = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; MIB as usize]);
    let relay = format!(r#"{{"relay":"{payload}","encoding":"base64"}}"#);
    let started = Instant::now();
    for _ in 0..100 {
        server.command(&relay);
    }
    for _ in 0..4 {
        let closed = server.wait_for("connection-closed");
        assert!(closed.contains(r#""reason":"slow-client""#), "{closed}");
    }
    let took = started.elapsed();
    server.command(r#"{"stats":true}"#);
    let stats = server.wait_for(r#""stats""#);
    assert!(stats.contains(r#""slow_clients":4"#), "{stats}");
    let peak = server.peak_rss();
    let bound = 4 * queue_bytes + 64 * MIB;
    eprintln!(
        "peak RSS {} MiB (before the relays {} MiB), bound {} MiB; all 4 cut off in {took:?}",
        peak / MIB,
        before / MIB,
        bound / MIB
    );
    assert!(peak < bound, "peak RSS {peak} over {bound}");
    drop(clients);
}

#[test]
fn a_thousand_slowloris_connections_are_bounded_and_closed_while_an_app_is_served() {
    raise_fd_limit(4096);
    let server = Server::start(&[
        "--bind",
        "127.0.0.1:0",
        "--max-clients",
        "1001",
        "--read-timeout",
        "3s",
    ]);
    let hello = server.wait_for("listening");
    let addr = hello.split('"').nth(3).unwrap().to_owned();
    let baseline = server.peak_rss();
    // Each announces a 1 MB frame and sends 8 KiB of it, then stalls.
    let partial = [b"1000000:".as_slice(), &[b'p'; 8192]].concat();
    let mut loris = Vec::new();
    for _ in 0..1000 {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(&partial).unwrap();
        loris.push(c);
    }
    // The app is served while they hold their slots; every slowloris is closed at its
    // read timeout (lines are counted as they come: closes may start before the app's
    // message is in).
    let mut app = TcpStream::connect(&addr).unwrap();
    app.write_all(b"3:app,").unwrap();
    let started = Instant::now();
    let (mut new, mut closed, mut closed_when_served) = (0, 0, None);
    while closed < 1000 || closed_when_served.is_none() {
        let line = server
            .lines
            .recv_timeout(PATIENCE)
            .expect("notifications keep coming");
        if line.contains("connection-new") {
            new += 1;
        } else if line.contains("connection-closed") {
            assert!(line.contains(r#""reason":"read-timeout""#), "{line}");
            closed += 1;
        } else if line.contains(r#""msg":"app""#) {
            closed_when_served = Some(closed);
        }
    }
    assert_eq!(new, 1001);
    assert!(
        closed_when_served < Some(1000),
        "the app was served while slowloris connections held slots"
    );
    let peak = server.peak_rss();
    eprintln!(
        "1,000 slowloris: peak RSS {} MiB (idle {} MiB), all closed {:?} after the app's message",
        peak / MIB,
        baseline / MIB,
        started.elapsed()
    );
    // 8 KiB each plus a 16 KiB read buffer and the task: well under 100 MiB in all.
    assert!(peak < baseline + 100 * MIB, "peak {peak}");
    app.write_all(b"5:still,").unwrap();
    assert!(server.wait_for("message-received").contains("still"));
}

/// Write a proxy transcript of `pairs` small events (with transaction ids) and their
/// answers, as `evapi-client proxy --record` writes them; its size in bytes.
fn write_transcript(path: &std::path::Path, pairs: u32) -> u64 {
    use evapi_proto::transcript::{header, line, write_frame, Side};
    let mut out = line(&header(
        "2026-12-02T00:00:00Z".into(),
        "proxy",
        "127.0.0.1:8448".into(),
        evapi_proto::Framing::Netstring,
        0,
    ))
    .unwrap();
    for i in 0..pairs {
        let t = u64::from(i) * 100;
        let event = format!(
            r#"{{"event":"invite","tindex":"{}","tlabel":"{i}","callid":"{i:08x}-replay@127.0.0.1","from":"sip:alice@example.com","ruri":"sip:bob@example.com"}}"#,
            i % 4096
        );
        write_frame(&mut out, t, 1, Side::Node, event.as_bytes());
        let answer = format!(r#"{{"tindex":"{}","tlabel":"{i}","code":200}}"#, i % 4096);
        write_frame(&mut out, t + 50, 1, Side::App, answer.as_bytes());
    }
    std::fs::write(path, &out).unwrap();
    out.len() as u64
}

/// `evapi-sim replay FILE`'s peak RSS once it has read the transcript (it says it waits
/// for an app then).
fn replay_peak(file: &std::path::Path) -> u64 {
    let mut cmd = Command::new(binary("evapi-sim"));
    cmd.arg("replay").arg(file).args(["--bind", "127.0.0.1:0"]);
    let mut sim = evapi_tests::Running::spawn(cmd);
    sim.wait_stderr("waiting for an app on", Duration::from_secs(120));
    peak_rss(sim.child.id())
}

#[test]
fn replay_holds_a_transcript_in_less_than_one_and_a_half_times_its_size() {
    let dir = std::env::temp_dir().join(format!("evapi-replay-mem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let small = dir.join("small.jsonl");
    let large = dir.join("large.jsonl");
    write_transcript(&small, 10);
    let size = write_transcript(&large, 150_000);
    let baseline = replay_peak(&small);
    let peak = replay_peak(&large);
    let held = peak.saturating_sub(baseline);
    eprintln!(
        "replay of a {} MiB transcript (300,000 entries): peak RSS {} MiB, {} MiB over a 20-entry one: {:.2}x the file",
        size / MIB,
        peak / MIB,
        held / MIB,
        held as f64 / size as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(held * 2 < size * 3, "held {held} for a file of {size}");
}
