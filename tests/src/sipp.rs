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
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/sipp/uac-486.xml");
    let scenario =
        std::env::temp_dir().join(format!("evapi-uac-{code}-{}.xml", std::process::id()));
    let text = std::fs::read_to_string(&template).expect("the sipp scenario");
    std::fs::write(
        &scenario,
        text.replace("response=\"486\"", &format!("response=\"{code}\"")),
    )
    .expect("write the sipp scenario");
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
