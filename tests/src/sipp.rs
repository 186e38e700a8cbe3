//! sipp as a SIP load generator for the suites: a check that it is installed, and one
//! burst of calls with the INVITE -> 486 -> ACK scenario in `bench/sipp/uac-486.xml`.

use std::path::Path;
use std::process::{Command, Output};

/// Fail unless sipp is installed (see [`crate::require_tool`]).
///
/// # Panics
///
/// When it is missing.
pub fn require() {
    crate::require_tool("sipp", "sip-tester");
}

/// Send `calls` INVITEs at `rate` per second to `target` (host:port), each expecting a
/// 486 and acknowledging it. sipp exits 0 only when every call succeeded.
///
/// # Panics
///
/// When sipp cannot be started.
#[must_use]
pub fn burst_486(target: &str, calls: u32, rate: u32) -> Output {
    burst_expecting(target, calls, rate, 486)
}

/// [`burst_486`] expecting `code` as the final response instead.
///
/// # Panics
///
/// When sipp cannot be started or the scenario cannot be written.
#[must_use]
pub fn burst_expecting(target: &str, calls: u32, rate: u32, code: u16) -> Output {
    burst_timed(target, calls, rate, code).0
}

/// [`burst_expecting`], and each call's response time in milliseconds (INVITE sent to
/// final response), from sipp's `-trace_rtt` file (its final screen rounds them away).
///
/// # Panics
///
/// When sipp cannot be started or its file cannot be read.
#[must_use]
pub fn burst_timed(target: &str, calls: u32, rate: u32, code: u16) -> (Output, Vec<u64>) {
    burst_scenario(target, calls, rate, code, &[])
}

/// [`burst_timed`] where a call may also end with `alt` (a 503 from load shedding),
/// acknowledged and timed the same way; sipp counts it a success.
///
/// # Panics
///
/// As [`burst_timed`].
#[must_use]
pub fn burst_either(
    target: &str,
    calls: u32,
    rate: u32,
    code: u16,
    alt: u16,
) -> (Output, Vec<u64>) {
    burst_scenario(target, calls, rate, code, &[alt])
}

/// [`burst_timed`] where a call may also end with any of `alts` (e.g. 503 from load
/// shedding and 408 from the node's timer), each acknowledged and timed the same way;
/// sipp counts them successes, so a call the node ends by its timer does not hold sipp
/// until its own 30 s timeout.
///
/// # Panics
///
/// As [`burst_timed`].
#[must_use]
pub fn burst_among(
    target: &str,
    calls: u32,
    rate: u32,
    code: u16,
    alts: &[u16],
) -> (Output, Vec<u64>) {
    burst_scenario(target, calls, rate, code, alts)
}

fn burst_scenario(
    target: &str,
    calls: u32,
    rate: u32,
    code: u16,
    alts: &[u16],
) -> (Output, Vec<u64>) {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/sipp/uac-486.xml");
    let scenario = std::env::temp_dir().join(format!(
        "evapi-uac-{code}-{}-{}.xml",
        alts.iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join("-"),
        std::process::id()
    ));
    let text = std::fs::read_to_string(&template).expect("the sipp scenario");
    let final_recv = "<recv response=\"486\" rtd=\"true\"/>";
    assert!(
        text.contains(final_recv),
        "the scenario's final response step"
    );
    let mut recv = format!("<recv response=\"{code}\" rtd=\"true\"/>");
    if !alts.is_empty() {
        let optional: String = alts
            .iter()
            .map(|alt| {
                format!(
                    "<recv response=\"{alt}\" optional=\"true\" rtd=\"true\" next=\"ack\"/>\n  "
                )
            })
            .collect();
        recv = format!("{optional}{recv}\n  <label id=\"ack\"/>");
    }
    std::fs::write(&scenario, text.replace(final_recv, &recv)).expect("write the sipp scenario");
    let local = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port");
    let dir = std::env::temp_dir().join(format!("evapi-sipp-{}-{local}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("sipp work dir");
    let output = Command::new("sipp")
        .arg(target)
        .arg("-sf")
        .arg(&scenario)
        .args(["-m", &calls.to_string(), "-r", &rate.to_string()])
        .args(["-l", &(rate * 2).to_string(), "-i", "127.0.0.1", "-p"])
        .arg(local.to_string())
        .args(["-nostdin", "-timeout", "30s", "-timeout_error", "-nd"])
        .args(["-trace_rtt", "-rtt_freq", "1"])
        .current_dir(&dir)
        .output()
        .expect("sipp starts");
    // "Date_ms;response_time_ms;rtd_no" then one line per call.
    let mut times = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("sipp work dir").flatten() {
        if entry.file_name().to_string_lossy().ends_with("_rtt.csv") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            times.extend(
                text.lines()
                    .skip(1)
                    .filter_map(|l| l.split(';').nth(1)?.trim().parse::<f64>().ok())
                    .map(|ms| ms as u64),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    (output, times)
}

/// `evapi-sim sip` on free loopback ports (with `-v`, so its log says when an app
/// connects), for sipp to call.
#[derive(Debug)]
pub struct SimNode {
    /// The process.
    pub sim: crate::Running,
    /// Its SIP address (UDP).
    pub sip: String,
    /// Its evapi socket.
    pub evapi: String,
    /// Its log until an app connected; then a thread drains it.
    log: Option<std::io::BufReader<std::process::ChildStderr>>,
}

impl SimNode {
    /// Start one with these extra flags.
    ///
    /// # Panics
    ///
    /// When it does not start.
    #[must_use]
    pub fn start(extra: &[&str]) -> Self {
        let mut cmd = Command::new(crate::binary("evapi-sim"));
        cmd.args([
            "sip",
            "--listen",
            "127.0.0.1:0",
            "--bind",
            "127.0.0.1:0",
            "-v",
        ])
        .args(extra);
        let mut sim = crate::Running::spawn(cmd);
        // "SIP on udp:127.0.0.1:PORT , evapi socket on 127.0.0.1:PORT"
        let (line, log) = sim.stderr_line("SIP on udp:");
        let words: Vec<&str> = line.split_whitespace().collect();
        Self {
            sip: words[2].trim_start_matches("udp:").to_owned(),
            evapi: words[words.len() - 1].to_owned(),
            sim,
            log: Some(log),
        }
    }

    /// Wait until the node accepted an app (earlier INVITEs would reach nobody), then
    /// keep draining its log so it never blocks on stderr.
    ///
    /// # Panics
    ///
    /// When the node ends first.
    pub fn wait_for_app(&mut self) {
        use std::io::BufRead as _;
        let Some(mut log) = self.log.take() else {
            return;
        };
        let mut line = String::new();
        while !line.contains("app connected") {
            line.clear();
            let n = log.read_line(&mut line).expect("the log is readable");
            assert!(n > 0, "the simulator ended before an app connected");
        }
        drain(log);
    }

    /// SIGTERM; the counters it prints.
    ///
    /// # Panics
    ///
    /// When it does not exit cleanly.
    #[must_use]
    pub fn finish(self) -> String {
        let Self { sim, log, .. } = self;
        if let Some(log) = log {
            drain(log);
        }
        Command::new("kill")
            .args(["-TERM", &sim.child.id().to_string()])
            .status()
            .expect("kill runs");
        let (counters, _, code) = sim.finish(std::time::Duration::from_secs(30));
        assert_eq!(code, 0, "{counters}");
        counters
    }
}

fn drain(mut log: std::io::BufReader<std::process::ChildStderr>) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut log, &mut std::io::sink());
    });
}
