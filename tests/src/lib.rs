//! Helpers for the end-to-end and interop suites: find (or build) the workspace's
//! binaries and run them as children killed on drop; run Kamailio as a test peer
//! ([`kamailio`]); run our server with the same routing as the Kamailio config
//! ([`echo`]); drive SIP load with sipp ([`sipp`]); exchange raw bytes ([`wire`]);
//! make certificates ([`certs`]); run nats-server with JetStream ([`nats`]).
//!
//! Cargo only hands a package's own binaries to its tests, so this crate locates them
//! in the target directory next to the test executable, building them first if needed.

pub mod certs;
pub mod echo;
pub mod kamailio;
pub mod nats;
pub mod sipp;
pub mod wire;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::Once;

static BUILD: Once = Once::new();

/// Fail unless an outside program the suite talks to is installed. Tests that need one
/// are `#[ignore = "needs ..."]`, so a plain `cargo test` lists them as ignored with the
/// reason instead of passing them silently; `.ci/run` (and
/// `cargo test -- --include-ignored`) runs them, and then a missing program is a failure
/// with the packages to install.
///
/// # Panics
///
/// When the program cannot be run.
pub fn require_tool(program: &str, packages: &str) {
    let found = Command::new(program)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{program} is needed by this test but not installed: apt-get install {packages}"
    );
}

/// Where [`binary`] takes the binaries from without building them: `.ci/run` sets it to
/// the test build's directory once that build is done (nextest runs each test in a
/// process of its own, and a cargo call in each one queued on cargo's lock for tens of
/// seconds); point it at `/usr/bin` to test installed packages.
pub const BINARIES_ENV: &str = "EVAPI_TEST_BINARIES";

/// Path of a workspace binary (`evapi-server`, `evapi-client`, `evapi-sim`).
///
/// From [`BINARIES_ENV`] when it is set. Otherwise `cargo build` runs once per test
/// executable: after `cargo test --workspace` it is a no-op (the test build made the
/// binaries, with the same features), and `cargo test -p evapi-tests` alone never runs
/// stale ones. Its flags select the same kinds of target as the test build (`--tests`
/// turns dev-dependencies on): without them cargo resolves features differently and
/// rebuilds tokio, hyper and the evapi libraries mid-test.
///
/// # Panics
///
/// When the test executable's location is unexpected or the build fails: the suite
/// cannot run without the binaries.
#[must_use]
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(BINARIES_ENV) {
        let path = PathBuf::from(dir).join(name);
        assert!(
            path.exists(),
            "{} is not there ({BINARIES_ENV} is set)",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in target/<profile>/deps");
    let path = dir.join(name);
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--workspace", "--bins", "--tests", "--quiet"]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building the binaries failed");
    });
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A child process, killed and reaped on drop.
#[derive(Debug)]
pub struct Running {
    /// The process.
    pub child: Child,
    /// Once [`Running::wait_stderr`] started reading stderr: its lines as they come, and
    /// everything read so far (for [`Running::finish`]).
    stderr_seen: Option<StderrSeen>,
}

#[derive(Debug)]
struct StderrSeen {
    lines: std::sync::mpsc::Receiver<String>,
    all: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Running {
    /// Start `cmd` with stdout and stderr piped.
    ///
    /// # Panics
    ///
    /// When the program cannot be started.
    #[must_use]
    pub fn spawn(mut cmd: Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the program starts");
        Self {
            child,
            stderr_seen: None,
        }
    }

    /// Wait until a stderr line contains `needle` (a readiness line, instead of a
    /// sleep), and return that line; stderr is read on a thread from then on and kept
    /// for [`Running::finish`].
    ///
    /// # Panics
    ///
    /// When no such line comes within `patience` (with what stderr said).
    pub fn wait_stderr(&mut self, needle: &str, patience: std::time::Duration) -> String {
        if self.stderr_seen.is_none() {
            let stderr = self.child.stderr.take().expect("stderr is piped");
            let (tx, lines) = std::sync::mpsc::channel();
            let all = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let kept = std::sync::Arc::clone(&all);
            let reader = std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut all) = kept.lock() {
                        all.push_str(&line);
                        all.push('\n');
                    }
                    let _ = tx.send(line);
                }
            });
            self.stderr_seen = Some(StderrSeen { lines, all, reader });
        }
        let seen = self.stderr_seen.as_ref().expect("set above");
        let deadline = std::time::Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match seen.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no stderr line with {needle:?} within {patience:?}; stderr:\n{}",
                    seen.all.lock().map(|a| a.clone()).unwrap_or_default()
                ),
            }
        }
    }

    /// Read stderr lines until one contains `needle`; returns that line and a reader
    /// for the rest.
    ///
    /// # Panics
    ///
    /// When stderr ends first.
    pub fn stderr_line(&mut self, needle: &str) -> (String, BufReader<ChildStderr>) {
        let stderr = self.child.stderr.take().expect("stderr is piped");
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).expect("stderr readable");
            assert!(n > 0, "stderr ended before a line containing {needle:?}");
            if line.contains(needle) {
                return (line.trim_end().to_owned(), reader);
            }
        }
    }
}

impl Running {
    /// Wait for the program to exit within `deadline`; its stdout, stderr and exit code.
    ///
    /// # Panics
    ///
    /// When it is still running at the deadline (it is killed first), so a hung program
    /// fails the test in seconds instead of holding CI until its time limit. Its output
    /// is read after it exits: for programs that print little (a pipe holds 64 KiB).
    #[must_use]
    pub fn finish(mut self, deadline: std::time::Duration) -> (String, String, i32) {
        use std::io::Read;
        use wait_timeout::ChildExt as _;
        let Some(status) = self
            .child
            .wait_timeout(deadline)
            .expect("the child can be waited on")
        else {
            let _ = self.child.kill();
            panic!("the program did not exit within {deadline:?}");
        };
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        if let Some(seen) = self.stderr_seen.take() {
            let _ = seen.reader.join();
            err = seen.all.lock().map(|a| a.clone()).unwrap_or_default();
        }
        (out, err, status.code().unwrap_or(-1))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child started by the caller (with the stdio it needs), killed on drop.
#[derive(Debug)]
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `cmd` to its end and return its output, which must say success: a failure
/// shows the program's stderr.
///
/// # Panics
///
/// When the program cannot start or exits with an error.
pub fn succeed(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("the program starts");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The stdout lines of `child` as they come (a thread reads them).
///
/// # Panics
///
/// When stdout is not piped.
pub fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line of `lines` that contains `needle`, each within `patience`.
///
/// # Panics
///
/// When no such line comes in time.
pub fn wait_for(
    lines: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    patience: std::time::Duration,
) -> String {
    loop {
        let line = lines
            .recv_timeout(patience)
            .unwrap_or_else(|_| panic!("no line with {needle:?} in time"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// Check JUnit files against `docs/junit.xsd` with xmllint (libxml2-utils).
///
/// # Panics
///
/// When one is not valid (with xmllint's message) or xmllint cannot run.
pub fn check_junit(files: &[&std::path::Path]) {
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/junit.xsd");
    let out = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&schema)
        .args(files)
        .output()
        .expect("xmllint runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first fenced block of `lang` in `doc` (a path from the repository root, e.g.
/// `docs/scale-out.md`) that contains `marker`: doc examples run as written.
///
/// # Panics
///
/// When the file cannot be read or has no such block.
#[must_use]
pub fn doc_block(doc: &str, lang: &str, marker: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(doc);
    let text = std::fs::read_to_string(&path).expect("the doc is readable");
    text.split(&format!("```{lang}\n"))
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains(marker))
        .unwrap_or_else(|| panic!("no {lang} block with {marker:?} in {doc}"))
        .to_owned()
}
