//! Metrics and the admin API of the binaries, scraped over HTTP like Prometheus does
//! and checked with the real `promtool`; the figures must match what the run itself
//! reports.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use evapi_tests::{binary, stdout_lines, wait_for, Kill};

const PATIENCE: Duration = Duration::from_secs(20);

/// One HTTP/1.1 request; the status code and the body.
pub(crate) fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    // What curl sends for `curl -X POST -H 'Content-Type: application/json' URL`.
    let json = if method == "POST" {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    request(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{json}"),
    )
}

/// Send `head` (request line and headers, each ending in CRLF), then an empty body;
/// the status and the body of the reply.
pub(crate) fn request(addr: &str, head: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "{head}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let code = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (code, body)
}

/// `evapi-server` on port 0 with `--metrics` on port 0 and `extra` flags: the process,
/// its stdout lines, its socket's and its metrics listener's addresses.
fn server_with_metrics(
    extra: &[&str],
) -> (Kill, std::sync::mpsc::Receiver<String>, String, String) {
    let mut server = Kill(
        Command::new(binary("evapi-server"))
            .args(["--bind", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "-q"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let notes = stdout_lines(&mut server.0);
    let hello: serde_json::Value =
        serde_json::from_str(&wait_for(&notes, "listening", PATIENCE)).unwrap();
    let (addr, metrics) = (
        hello["listening"].as_str().unwrap().to_owned(),
        hello["metrics"].as_str().unwrap().to_owned(),
    );
    (server, notes, addr, metrics)
}

/// What a web page open in a browser on the operator's machine (or an SSRF bug) can
/// send to a token-less admin API on loopback: none of it acts (issue 24: a
/// cross-origin `POST /drain` with `Content-Type: text/plain` drained the server).
#[test]
fn a_web_page_cannot_drive_the_admin_api() {
    let (_server, notes, addr, metrics) = server_with_metrics(&[]);
    let _client = TcpStream::connect(&addr).unwrap();
    wait_for(&notes, "connection-new", PATIENCE);
    let page = format!("Host: {metrics}\r\nOrigin: http://evil.example\r\n");
    for (head, code, why) in [
        // A form post or fetch(..., {mode: "no-cors"}) from another site.
        (format!("POST /drain HTTP/1.1\r\n{page}Content-Type: text/plain\r\n"), 403, "foreign Origin"),
        (format!("POST /clients/0/close HTTP/1.1\r\n{page}Content-Type: application/x-www-form-urlencoded\r\n"), 403, "foreign Origin"),
        // No Origin (an old browser, a redirect), still not JSON.
        (format!("POST /drain HTTP/1.1\r\nHost: {metrics}\r\nContent-Type: text/plain\r\n"), 415, "not JSON"),
        (format!("POST /drain HTTP/1.1\r\nHost: {metrics}\r\n"), 415, "no content type"),
        // Sec-Fetch-Site tells a cross-site request even without Origin.
        (format!("POST /drain HTTP/1.1\r\nHost: {metrics}\r\nSec-Fetch-Site: cross-site\r\nContent-Type: application/json\r\n"), 403, "cross-site"),
        // DNS rebinding: the attacker's name, now resolving to 127.0.0.1.
        ("POST /drain HTTP/1.1\r\nHost: rebind.evil.example:9100\r\nContent-Type: application/json\r\n".to_owned(), 403, "a Host name"),
        ("GET /clients HTTP/1.1\r\nHost: rebind.evil.example\r\n".to_owned(), 403, "a Host name"),
        ("GET /clients HTTP/1.1\r\n".to_owned(), 403, "no Host"),
        // Found in review: two Host headers, an absolute-form request line, an encoded
        // fixed segment, metrics read through a rebound name.
        (format!("POST /drain HTTP/1.1\r\nHost: {metrics}\r\nHost: evil.example\r\nContent-Type: application/json\r\n"), 400, "two Host headers"),
        (format!("POST /drain HTTP/1.1\r\nHost: {metrics}\r\nOrigin: http://{metrics}\r\nOrigin: http://evil.example\r\nContent-Type: application/json\r\n"), 400, "two Origins"),
        (format!("POST http://evil.example/drain HTTP/1.1\r\nHost: {metrics}\r\nContent-Type: application/json\r\n"), 403, "absolute-form authority"),
        (format!("POST /%64rain HTTP/1.1\r\nHost: {metrics}\r\nContent-Type: application/json\r\n"), 404, "an encoded fixed segment"),
        ("GET /metrics HTTP/1.1\r\nHost: rebind.evil.example\r\n".to_owned(), 403, "metrics through a rebound name"),
    ] {
        let (got, body) = request(&metrics, &head);
        assert_eq!(got, code, "{why}: {body}");
        assert!(
            body.contains(r#""ok":false"#) || code == 400,
            "{why}: {body}"
        );
    }
    // Nothing acted: the client is there and the server takes new ones.
    let (code, body) = http(&metrics, "GET", "/stats", None);
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(&metrics, "GET", "/clients", None);
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["clients"].as_array().unwrap().len(), 1, "{body}");
    TcpStream::connect(&addr).expect("still accepting: not drained");
    wait_for(&notes, "connection-new", PATIENCE);
    // The listener's own origin, `localhost`, `bearer` in any case and a
    // percent-encoded tag all work.
    let (code, body) = request(
        &metrics,
        &format!("POST /tags/a%20b/close HTTP/1.1\r\nHost: {metrics}\r\nOrigin: http://{metrics}\r\nContent-Type: application/json; charset=utf-8\r\n"),
    );
    assert_eq!(code, 404, "no client has the tag \"a b\": {body}");
    assert!(
        body.contains(r#"\"a b\""#) || body.contains("a b"),
        "{body}"
    );
    let port = metrics.rsplit_once(':').unwrap().1;
    let (code, _) = request(
        &metrics,
        &format!(
            "GET /stats HTTP/1.1\r\nHost: localhost:{port}\r\nauthorization: bearer unused\r\n"
        ),
    );
    assert_eq!(code, 200);
}

/// The value of one sample line (`name{labels} value`) in a scrape.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn promtool(text: &str) {
    evapi_tests::require_tool("promtool", "prometheus");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs promtool (apt-get install prometheus)"]
fn the_servers_metrics_pass_promtool_and_admin_closes_by_tag() {
    let token = "admin-token-0123456789";
    let (mut server, notes, addr, metrics) = server_with_metrics(&["--control-token", token]);
    let mut stdin = server.0.stdin.take().unwrap();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(b"2:hi,").unwrap();
        wait_for(&notes, "message-received", PATIENCE);
        clients.push(c);
    }
    writeln!(stdin, r#"{{"set_tag":"blue","conidx":0}}"#).unwrap();
    writeln!(stdin, r#"{{"set_tag":"blue","conidx":2}}"#).unwrap();
    writeln!(stdin, r#"{{"relay":"event"}}"#).unwrap();
    stdin.flush().unwrap();
    wait_for(&notes, r#""delivered":3"#, PATIENCE);

    let (code, text) = http(&metrics, "GET", "/metrics", None);
    assert_eq!(code, 200);
    promtool(&text);
    assert_eq!(sample(&text, "evapi_clients"), Some(3.0));
    assert_eq!(sample(&text, "evapi_frames_received_total"), Some(3.0));
    assert_eq!(sample(&text, "evapi_bytes_received_total"), Some(6.0));
    assert_eq!(sample(&text, "evapi_relays_total"), Some(1.0));

    // Admin: a token is set, so it is asked for.
    assert_eq!(http(&metrics, "GET", "/clients", None).0, 401);
    assert_eq!(
        http(&metrics, "POST", "/tags/blue/close", Some("wrong")).0,
        401
    );
    // With a token a rebound page cannot act (the token is not its to add), so a host
    // name is fine; `bearer` in any case.
    let (code, body) = request(
        &metrics,
        &format!("POST /tags/blue/close HTTP/1.1\r\nHost: evapi-admin.internal\r\nauthorization: bearer {token}\r\nContent-Type: application/json\r\n"),
    );
    assert_eq!((code, body.as_str()), (200, r#"{"closed":2,"ok":true}"#));
    for _ in 0..2 {
        assert!(wait_for(&notes, "connection-closed", PATIENCE).contains(r#""reason":"server""#));
    }
    let (code, body) = http(&metrics, "GET", "/clients", Some(token));
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["clients"].as_array().unwrap().len(), 1);
    assert_eq!(list["clients"][0]["conidx"], 1, "the untagged client stays");
    assert_eq!(
        http(&metrics, "POST", "/clients/999/close", Some(token)).0,
        404
    );
    assert_eq!(http(&metrics, "GET", "/nothing", Some(token)).0, 404);

    let (_, text) = http(&metrics, "GET", "/metrics", None);
    assert_eq!(
        sample(&text, r#"evapi_disconnects_total{reason="server"}"#),
        Some(2.0)
    );
    promtool(&text);

    // evapi-client top: the remaining client, its rates from two polls.
    let top = Command::new(binary("evapi-client"))
        .args([
            "top",
            "--metrics",
            &metrics,
            "--once",
            "--interval",
            "200ms",
        ])
        .env("EVAPI_CONTROL_TOKEN", token)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&top.stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].ends_with(": 1 clients, 0 bytes queued"), "{out}");
    assert!(
        lines[1].split_whitespace().eq([
            "CONIDX", "CONNID", "PEER", "TAG", "VIA", "IDENTITY", "IN/s", "OUT/s", "QUEUE",
            "QBYTES"
        ]),
        "{out}"
    );
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[4], row[6]),
        ("1", "1", "tcp", "0"),
        "{out}"
    );
    // Without the token: a clear error, exit 2.
    let top = Command::new(binary("evapi-client"))
        .args(["top", "--metrics", &metrics, "--once"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&top.stderr);
    assert_eq!(top.status.code(), Some(2), "{err}");
    assert!(err.contains("401") && err.contains("Bearer"), "{err}");
}

#[test]
#[ignore = "needs promtool (apt-get install prometheus)"]
fn the_simulators_metrics_match_its_own_counters() {
    let mut sim = Kill(
        Command::new(binary("evapi-sim"))
            .args(["sip", "--listen", "127.0.0.1:0", "--bind", "127.0.0.1:0"])
            .args(["--metrics", "127.0.0.1:0", "--fr-inv-timer", "2s"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // "metrics on http://C/metrics" and "SIP on udp:A , evapi socket on B".
    let mut err = BufReader::new(sim.0.stderr.take().unwrap());
    let mut second = String::new();
    let mut first = String::new();
    err.read_line(&mut second).unwrap();
    err.read_line(&mut first).unwrap();
    if first.starts_with("metrics") {
        std::mem::swap(&mut first, &mut second);
    }
    let (sip, evapi) = {
        let rest = first.trim().strip_prefix("SIP on udp:").unwrap();
        let (sip, evapi) = rest.split_once(" , evapi socket on ").unwrap();
        (sip.to_owned(), evapi.to_owned())
    };
    let metrics = second
        .trim()
        .strip_prefix("metrics on http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .unwrap()
        .to_owned();
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = err.read_to_string(&mut sink);
    });
    let _responder = Kill(
        Command::new(binary("evapi-client"))
            .args([
                "--addr", &evapi, "--wait", "10s", "respond", "--code", "486",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait for the app: a scrape shows one client.
    let deadline = std::time::Instant::now() + PATIENCE;
    while sample(&http(&metrics, "GET", "/metrics", None).1, "evapi_clients") != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the responder never connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let load = Command::new(binary("evapi-sim"))
        .args([
            "load",
            &sip,
            "--rate",
            "200",
            "--calls",
            "200",
            "--expect-code",
            "486",
        ])
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    // Published every 250 ms: wait for the last calls to show.
    let deadline = std::time::Instant::now() + PATIENCE;
    let text = loop {
        let (_, text) = http(&metrics, "GET", "/metrics", None);
        if sample(&text, r#"evapi_sim_final_replies_total{code="486"}"#) == Some(200.0) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "finals never reached 200:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    promtool(&text);
    assert_eq!(sample(&text, "evapi_sim_transactions_suspended"), Some(0.0));
    assert_eq!(sample(&text, "evapi_sim_timeouts_total"), Some(0.0));
    assert_eq!(
        sample(&text, "evapi_sim_async_roundtrip_seconds_count"),
        Some(200.0)
    );
    assert_eq!(
        sample(&text, "evapi_frames_sent_total"),
        Some(200.0),
        "one event per call"
    );
    assert_eq!(
        sample(&text, "evapi_frames_received_total"),
        Some(200.0),
        "one answer per call"
    );
    // Expecting another code: exit 1, and the failure says what came instead.
    let wrong = Command::new(binary("evapi-sim"))
        .args([
            "load",
            &sip,
            "--rate",
            "200",
            "--calls",
            "20",
            "--expect-code",
            "200",
        ])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&wrong.stdout).contains(r#""codes":{"486":20}"#),
        "{}",
        String::from_utf8_lossy(&wrong.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&wrong.stderr).trim(),
        "evapi-sim load: 20 of 20 calls failed: expected 200, got 486 x20"
    );
}

#[test]
#[ignore = "needs promtool (apt-get install prometheus)"]
fn a_scenario_runs_metrics_match_its_report() {
    let pki = evapi_tests::certs::Pki::new();
    let scenario = pki.write(
        "run.json",
        r#"{
  "name": "metrics",
  "traffic": { "method": "INVITE", "count": 300, "concurrency": 50 },
  "route": { "action": "async_relay" },
  "responders": [ { "kind": "answer", "code": 486 } ],
  "linger": "4s",
  "expect": { "codes": { "486": 300 } }
}"#,
    );
    let report = pki.dir().join("report.json");
    // A free port for the metrics listener.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let run = Kill(
        Command::new(binary("evapi-sim"))
            .args(["run", scenario.to_str().unwrap(), "--bind", "127.0.0.1:0"])
            .args(["--metrics", &metrics, "--no-progress", "--report"])
            .arg(&report)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // During the linger the scrape shows the whole run.
    let deadline = std::time::Instant::now() + PATIENCE;
    let text = loop {
        if let Ok(mut s) = TcpStream::connect(&metrics) {
            let _ = s.write_all(
                b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
            let mut raw = String::new();
            let _ = s.read_to_string(&mut raw);
            if sample(&raw, r#"evapi_sim_final_replies_total{code="486"}"#) == Some(300.0) {
                break raw
                    .split_once("\r\n\r\n")
                    .map(|(_, b)| b.to_owned())
                    .unwrap();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scrape never showed 300 finals"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    promtool(&text);
    let mut run = run;
    let status = run.0.wait().unwrap();
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["finals"]["486"], 300);
    assert_eq!(
        sample(&text, "evapi_sim_timeouts_total"),
        report["timeouts"].as_f64()
    );
    assert_eq!(
        sample(&text, "evapi_sim_async_roundtrip_seconds_count"),
        report["latency"]["count"].as_f64()
    );
    assert_eq!(sample(&text, "evapi_sim_transactions_suspended"), Some(0.0));
}

/// The Grafana dashboard (packaging/grafana/evapi-dashboard.json): every query is valid
/// PromQL (promtool checks them as recording rules), and every metric it names is one
/// the toolkit exports: the event socket's as a live evapi-server serves them, the
/// simulator's and the bridge's as docs/operations.md and docs/scale-out.md list them
/// (their own tests hold those lists to the scrapes).
#[test]
#[ignore = "needs promtool (apt-get install prometheus)"]
fn the_grafana_dashboard_queries_only_metrics_we_export() {
    evapi_tests::require_tool("promtool", "prometheus");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("packaging/grafana/evapi-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            // Grafana's variables, as a rule file cannot hold them.
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*");
            exprs.push(expr);
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let pki = evapi_tests::certs::Pki::new();
    let rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| format!("      - record: dashboard:{i}\n        expr: '{e}'\n"))
        .collect();
    pki.write(
        "dashboard.yml",
        &format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    );
    let out = Command::new("promtool")
        .args(["check", "rules", "dashboard.yml"])
        .current_dir(pki.dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // What a live server exports, and what the guides list for the others.
    let (_server, _notes, _addr, metrics) = server_with_metrics(&[]);
    let (_, scraped) = http(&metrics, "GET", "/metrics", None);
    let mut known: std::collections::BTreeSet<String> = scraped
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    for doc in ["docs/operations.md", "docs/scale-out.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        known.extend(
            text.split('`')
                .filter(|w| w.starts_with("evapi_sim_") || w.starts_with("evapi_bridge_"))
                .map(str::to_owned),
        );
    }
    for expr in &exprs {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("evapi_"))
        {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                known.contains(name) || known.contains(base),
                "{name} in {expr:?} is not exported (known: {known:?})"
            );
        }
    }
}

/// An app's own metrics: `respond --metrics` counts what it answered and ignored, and
/// its scrape passes promtool.
#[test]
#[ignore = "needs promtool (apt-get install prometheus)"]
fn the_responders_metrics_count_its_answers() {
    let (mut server, notes, addr, _) = server_with_metrics(&[]);
    let mut app = Kill(
        Command::new(binary("evapi-client"))
            .args([
                "--addr",
                &addr,
                "respond",
                "--code",
                "486",
                "--metrics",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // It says where it serves them (port 0: the system picked one).
    let mut line = String::new();
    // Kept open until the end: the app may log more.
    let mut log = std::io::BufReader::new(app.0.stderr.take().unwrap());
    log.read_line(&mut line).unwrap();
    let at = line
        .trim()
        .strip_prefix("evapi-client respond: metrics on http://")
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    wait_for(&notes, "connection-new", PATIENCE);
    let stdin = server.0.stdin.as_mut().unwrap();
    for n in 1..=3 {
        writeln!(stdin, r#"{{"relay":"{{\"tindex\":{n},\"tlabel\":{n}}}"}}"#).unwrap();
        wait_for(&notes, "message-received", PATIENCE);
    }
    writeln!(stdin, r#"{{"relay":"{{\"event\":\"hello\"}}"}}"#).unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    let text = loop {
        let (_, text) = http(&at, "GET", "/metrics", None);
        if sample(&text, "evapi_respond_ignored_total") == Some(1.0) {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    promtool(&text);
    assert_eq!(
        sample(&text, "evapi_respond_answered_total"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "evapi_respond_invalid_total"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "evapi_respond_in_flight"),
        Some(0.0),
        "{text}"
    );
}
