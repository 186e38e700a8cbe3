//! Command blocks of the docs that are run as written (ports made free, the workspace's
//! binaries first on PATH). Others are checked where they live: the client guide's
//! script (evapi-client tests), the simulator's CI recipe (sim_with_client), the
//! Kamailio snippet (kamailio_client), the errors quoted in the protocol reference
//! (evapi-proto tests).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use evapi_tests::{binary, Running};

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first ```sh block of `doc` that contains `marker`.
fn sh_block(doc: &str, marker: &str) -> String {
    evapi_tests::doc_block(doc, "sh", marker)
}

/// Run `script` with bash, the workspace binaries first on PATH.
fn bash(script: &str) -> (String, String, i32) {
    let bin_dir = binary("evapi-server").parent().unwrap().to_owned();
    for b in ["evapi-client", "evapi-sim"] {
        let _ = binary(b);
    }
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script])
        .current_dir(root())
        .env("PATH", path);
    Running::spawn(cmd).finish(Duration::from_secs(60))
}

/// The shell session in docs/server.md: every line it promises, and no server left
/// behind (it used to kill the coproc's subshell, not the server).
#[test]
fn the_shell_session_in_the_server_guide_runs_and_stops_the_server() {
    let session = sh_block("docs/server.md", "coproc SRV");
    let script = format!(
        "{session}\nsleep 0.5\n\
         if (exec 3<>\"/dev/tcp/127.0.0.1/$port\") 2>/dev/null; then echo LEAKED; else echo STOPPED; fi\n"
    );
    let (out, err, code) = bash(&script);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains(r#""route":"evapi:connection-new""#),
        "{out}"
    );
    assert!(
        lines[1].contains(r#""route":"evapi:message-received""#)
            && lines[1].contains(r#""msg":"hello""#),
        "{out}"
    );
    assert!(lines[2].contains(r#""reason":"peer""#), "{out}");
    assert!(lines[3].contains(r#""frames_in":1"#), "{out}");
    assert_eq!(lines.last(), Some(&"STOPPED"), "{out}");
}

/// The demo, the README's first command (run on its embedded defaults).
#[test]
fn the_readme_demo_passes() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains("cargo build --release --locked --bins && target/release/evapi-sim demo")
    );
    let (out, err, code) = bash("evapi-sim demo --bind 127.0.0.1:0");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("final 200               10000")
            && out.contains("\n  PASSED\n")
            && out.contains("What it means: the 10,000 INVITEs were all sent at once"),
        "{out}"
    );
}

/// The sipp recipe in docs/simulator.md, ports made free, every call answered.
#[test]
#[ignore = "needs sipp (apt-get install sip-tester); .ci/run runs it"]
fn the_sipp_recipe_in_the_simulator_guide_runs() {
    evapi_tests::sipp::require();
    let recipe = sh_block("docs/simulator.md", "sipp 127.0.0.1:5060");
    let udp = || {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string()
    };
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let dir = std::env::temp_dir().join(format!("evapi-sipp-recipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = recipe
        .replace("5060", &udp())
        .replace("8448", &tcp)
        .replace("5070", &udp())
        .replace(
            "counters.txt",
            &dir.join("counters.txt").display().to_string(),
        );
    let (out, err, code) = bash(&script);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("  final 486                   10000"), "{out}");
    assert!(out.contains("  timeouts                        0"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Every ```sh block of README.md and docs/ says whether a test runs it (and which,
/// by name, which must exist) or why it is not run.
#[test]
fn every_shell_block_in_the_docs_is_run_or_says_why_not() {
    let mut docs = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    let sources: String = [
        "tests/e2e",
        "tests/client",
        "evapi-sim/tests",
        "evapi-server/tests",
    ]
    .iter()
    .flat_map(|d| std::fs::read_dir(root().join(d)).unwrap())
    .map(|e| e.unwrap().path())
    .filter(|p| p.extension().is_some_and(|x| x == "rs"))
    .map(|p| std::fs::read_to_string(p).unwrap())
    .collect();
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with("```sh") {
                continue;
            }
            let before = if i > 0 { lines[i - 1] } else { "" };
            let where_ = format!("{}:{}", doc.display(), i + 1);
            if let Some(rest) = before.strip_prefix("<!-- run: ") {
                let test = rest.split([' ', '(']).next().unwrap_or_default();
                assert!(
                    sources.contains(&format!("fn {test}(")),
                    "{where_}: no test named {test}"
                );
            } else {
                assert!(
                    before.starts_with("<!-- not run: ") && before.len() > 20,
                    "{where_}: a ```sh block needs <!-- run: TEST --> or <!-- not run: REASON --> above it"
                );
            }
        }
    }
}

/// The REPL batch example in docs/client.md, against a server of ours.
#[test]
fn the_repl_batch_example_in_the_client_guide_runs() {
    let example = sh_block("docs/client.md", "evapi-client repl --no-color");
    let mut server = Command::new(binary("evapi-server"));
    server.args(["--bind", "127.0.0.1:0", "-q"]);
    let mut server = Running::spawn(server);
    let mut stdout = std::io::BufReader::new(server.child.stdout.take().unwrap());
    let mut hello = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut hello).unwrap();
    let addr = hello
        .split("\"listening\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let (out, err, code) = bash(&format!("export EVAPI_ADDR={addr}\n{example}"));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "-- sent 1, received 0, answered automatically 0\n");
}

/// The first ```yaml block of `doc` that contains `marker`.
fn yaml_block(doc: &str, marker: &str) -> String {
    evapi_tests::doc_block(doc, "yaml", marker)
}

/// The Prometheus configuration and alert rules in docs/operations.md: `promtool check
/// config` accepts them (rules included), and a rule unit test shows the no-app alert
/// fires when no client is connected, and not while one is.
#[test]
#[ignore = "needs promtool (apt-get install prometheus)"]
fn the_scrape_config_and_alert_rules_in_the_operations_guide_pass_promtool() {
    evapi_tests::require_tool("promtool", "prometheus");
    let pki = evapi_tests::certs::Pki::new();
    let dir = pki.dir();
    pki.write(
        "prometheus.yml",
        &yaml_block("docs/operations.md", "scrape_configs"),
    );
    pki.write(
        "evapi-alerts.yml",
        &yaml_block("docs/operations.md", "groups:"),
    );
    pki.write(
        "evapi-alerts.test.yml",
        r#"rule_files: [evapi-alerts.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'evapi_clients{instance="a"}'
        values: '1 1 0 0 0'
    alert_rule_test:
      - eval_time: 1m
        alertname: EvapiNoApp
        exp_alerts: []
      - eval_time: 4m
        alertname: EvapiNoApp
        exp_alerts:
          - exp_labels: { severity: critical, instance: a }
            exp_annotations:
              summary: "No app is connected to the evapi socket on a"
"#,
    );
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["test", "rules", "evapi-alerts.test.yml"][..],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
