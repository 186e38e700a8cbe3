//! evapi-client against Kamailio 5.6's evapi module.

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use evapi_tests::kamailio::{self, Kamailio, Options};
use evapi_tests::wire::Raw;
use evapi_tests::{binary, sipp, Running};

fn client(kam: &Kamailio, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary("evapi-client"));
    cmd.arg("--addr").arg(kam.evapi.to_string()).args(args);
    cmd
}

#[test]
#[ignore = "needs kamailio (apt-get install kamailio kamailio-extra-modules); .ci/run runs it"]
fn listen_receives_kamailio_relays_byte_exact_and_send_reaches_message_received() {
    kamailio::require();
    let kam = Kamailio::start(&Options::default());
    let mut listen = Running::spawn(client(&kam, &["listen", "--count", "2"]));
    assert!(kam.wait_clients(1, Duration::from_secs(5)));

    // A raw client sees the frame bytes exactly as Kamailio writes them.
    let mut raw = Raw::connect(kam.evapi);
    raw.send_parts(&[b"12:hello, world,"]);
    assert_eq!(raw.until(b"hello, world,"), b"19:echo:1:hello, world,");

    // evapi-client send goes through message-received; the echo comes back to it.
    let out = evapi_tests::succeed(&mut client(
        &kam,
        &["send", "from the client", "--expect-reply"],
    ));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "echo:2:from the client\n"
    );

    let status = listen.child.wait().unwrap();
    let mut printed = String::new();
    listen
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    assert!(status.success());
    assert_eq!(printed, "echo:1:hello, world\necho:2:from the client\n");
}

#[test]
#[ignore = "needs kamailio (apt-get install kamailio kamailio-extra-modules); .ci/run runs it"]
fn a_run_script_passes_against_kamailio() {
    kamailio::require();
    let kam = Kamailio::start(&Options::default());
    let script = std::env::temp_dir().join(format!("kamailio-{}.evapi", std::process::id()));
    std::fs::write(
        &script,
        "timeout 3s\n\
         send ping\n\
         expect echo:0:ping\n\
         send {\"event\":\"x\",\"n\":1}\n\
         expect-contains \"n\":1\n\
         send tag:billing\n\
         expect tagged:0:billing\n\
         send mcast:billing:to the billing apps\n\
         expect to the billing apps\n\
         expect-none 300ms\n",
    )
    .unwrap();
    let out = client(&kam, &["run"]).arg(&script).output().unwrap();
    let _ = std::fs::remove_file(&script);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 10 steps, 4 sent, 4 received\n"
    );
}

#[test]
#[ignore = "needs kamailio and sipp (apt-get install kamailio kamailio-extra-modules sip-tester); .ci/run runs it"]
fn respond_resumes_every_invite_kamailio_suspends_for_a_sipp_burst() {
    kamailio::require();
    sipp::require();
    let kam = Kamailio::start(&Options::default());
    let app = Running::spawn(client(
        &kam,
        &["respond", "--code", "486", "--count", "500"],
    ));
    assert!(kam.wait_clients(1, Duration::from_secs(5)));
    let out = sipp::burst_486(&kam.sip.to_string(), 500, 250);
    assert_eq!(
        out.status.code(),
        Some(0),
        "sipp: failed calls\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Every call ended with the responder's 486 (sipp's scenario requires it), and
    // Kamailio sent exactly one event per call: the responder, which exits after its
    // 500th answer, answered 500 suspends and saw nothing else.
    let (out, err, code) = app.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("answered 500, ignored 0, invalid 0 on 1 connection(s)"),
        "{out}"
    );
    let log = kam.log();
    assert!(!log.contains("t_continue"), "t_continue trouble:\n{log}");
}

#[test]
#[ignore = "needs kamailio (apt-get install kamailio kamailio-extra-modules); .ci/run runs it"]
fn the_kamailio_snippet_in_the_client_guide_is_a_valid_config() {
    kamailio::require();
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/client.md"),
    )
    .unwrap();
    let start = guide
        .find("```text\nloadmodule \"tm.so\"")
        .expect("the snippet is in docs/client.md")
        + "```text\n".len();
    let end = start + guide[start..].find("```").unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = std::env::temp_dir().join(format!("client-guide-{}.cfg", std::process::id()));
    std::fs::write(
        &cfg,
        format!(
            "#!KAMAILIO\nlisten=udp:127.0.0.1:{port}\n{}",
            &guide[start..end]
        ),
    )
    .unwrap();
    let out = Command::new("kamailio")
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&cfg);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && log.contains("config file ok"),
        "{log}"
    );
}
