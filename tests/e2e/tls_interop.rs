//! TLS with peers we did not write: certificates made by the openssl command line as
//! docs/security.md says, the evapi-server binary with mutual TLS and tokens, and
//! `openssl s_client` and Python's `ssl` module as apps.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use evapi_tests::{binary, stdout_lines, wait_for, Kill};

const PATIENCE: Duration = Duration::from_secs(15);

/// Run the docs' certificate recipe in `dir`.
fn make_certificates(dir: &Path) {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/security.md"))
            .unwrap();
    let recipe = doc
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("openssl req -x509"))
        .expect("the recipe block in docs/security.md");
    let out = Command::new("bash")
        .args(["-euc", recipe])
        .current_dir(dir)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "the recipe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
        "tokens",
    ] {
        assert!(dir.join(file).exists(), "the recipe makes {file}");
    }
}

#[test]
#[ignore = "needs openssl and python3 (apt-get install openssl python3)"]
fn the_certificate_recipe_in_the_security_guide_works_with_openssl_and_python() {
    evapi_tests::require_tool("openssl", "openssl");
    let pki = evapi_tests::certs::Pki::new();
    let dir = pki.dir();
    make_certificates(dir);
    let tokens = std::fs::read_to_string(dir.join("tokens")).unwrap();
    let token = tokens.split_whitespace().nth(1).unwrap().to_owned();

    let mut server = Command::new(binary("evapi-server"));
    server
        .args(["--bind", "127.0.0.1:0", "--tls-cert", "server.pem"])
        .args(["--tls-key", "server.key", "--tls-client-ca", "ca.pem"])
        .args(["--auth-tokens", "tokens", "-q"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut server = Kill(server.spawn().unwrap());
    let mut control = server.0.stdin.take().unwrap();
    let notes = stdout_lines(&mut server.0);
    let hello = wait_for(&notes, "listening", PATIENCE);
    let addr = hello.split('"').nth(3).unwrap().to_owned();
    let port = addr.rsplit(':').next().unwrap().to_owned();

    // openssl s_client as an app: token, a message, then a relay comes back.
    let mut s_client = Command::new("openssl");
    s_client
        .args(["s_client", "-connect", &addr, "-CAfile", "ca.pem"])
        .args(["-cert", "client.pem", "-key", "client.key"])
        .args(["-quiet", "-verify_return_error"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut s_client = Kill(s_client.spawn().unwrap());
    let auth = format!(r#"{{"auth":"{token}"}}"#);
    let mut s_in = s_client.0.stdin.take().unwrap();
    write!(s_in, "{}:{auth},7:openssl,", auth.len()).unwrap();
    s_in.flush().unwrap();
    let new = wait_for(&notes, "connection-new", PATIENCE);
    assert!(
        new.contains(r#""tls_subject":"billing-app""#) && new.contains(r#""auth":"billing""#),
        "{new}"
    );
    assert!(wait_for(&notes, "message-received", PATIENCE).contains(r#""msg":"openssl""#));
    writeln!(control, r#"{{"relay":"to-openssl"}}"#).unwrap();
    control.flush().unwrap();
    let mut s_out = s_client.0.stdout.take().unwrap();
    let want = r#"30:{"auth":"ok","name":"billing"},10:to-openssl,"#;
    let mut got = vec![0u8; want.len()];
    s_out.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), want);
    drop(s_in);
    drop(s_client);
    wait_for(&notes, "connection-closed", PATIENCE);

    // Python's ssl module as an app.
    let python = format!(
        r#"
import socket, ssl
ctx = ssl.create_default_context(cafile="ca.pem")
ctx.load_cert_chain("client.pem", "client.key")
with socket.create_connection(("127.0.0.1", {port})) as raw:
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        auth = b'{{"auth":"{token}"}}'
        tls.sendall(str(len(auth)).encode() + b":" + auth + b"," + b"6:python,")
        got = b""
        while not got.endswith(b"}},"):
            chunk = tls.recv(256)
            if not chunk:
                break
            got += chunk
        print(got.decode(), flush=True)
        print(tls.version(), flush=True)
"#
    );
    let out = Command::new("python3")
        .args(["-c", &python])
        .current_dir(dir)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(r#"30:{"auth":"ok","name":"billing"},"#),
        "{stdout}"
    );
    assert!(stdout.contains("TLSv1.3"), "{stdout}");
    assert!(wait_for(&notes, "message-received", PATIENCE).contains(r#""msg":"python""#));

    // Our own client binary with the same files and the token from the environment.
    evapi_tests::succeed(
        Command::new(binary("evapi-client"))
            .args(["--addr", &addr, "--tls-ca", "ca.pem"])
            .args(["--tls-cert", "client.pem", "--tls-key", "client.key"])
            .args(["send", "from-evapi-client"])
            .env("EVAPI_TOKEN", &token)
            .current_dir(dir),
    );
    assert!(wait_for(&notes, "message-received", PATIENCE).contains(r#""msg":"from-evapi-client""#));
    // A wrong token: exit 2 and a one-line reason that does not show the token.
    let out = Command::new(binary("evapi-client"))
        .args(["--addr", &addr, "--tls-ca", "ca.pem"])
        .args(["--tls-cert", "client.pem", "--tls-key", "client.key"])
        .args(["send", "x"])
        .env("EVAPI_TOKEN", "not-the-token-0123456789")
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("authentication with") && !stderr.contains("not-the-token"),
        "{stderr}"
    );

    // openssl without a client certificate: refused, nothing relayed, no route.
    let refused = Command::new("openssl")
        .args(["s_client", "-connect", &addr, "-CAfile", "ca.pem", "-quiet"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(refused.stdout.is_empty(), "{:?}", refused.stdout);
    // openssl may exit before the server has seen the handshake fail (TLS 1.3 checks
    // the client's certificate after the client's last flight): ask until it has.
    let deadline = std::time::Instant::now() + PATIENCE;
    let stats = loop {
        writeln!(control, r#"{{"stats":true}}"#).unwrap();
        control.flush().unwrap();
        let stats = wait_for(&notes, r#""stats""#, PATIENCE);
        if stats.contains(r#""tls_failed":1"#) || std::time::Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(stats.contains(r#""tls_failed":1"#), "{stats}");
    assert!(stats.contains(r#""accepted":3"#), "{stats}");
    assert!(stats.contains(r#""auth_failed":1"#), "{stats}");
}
