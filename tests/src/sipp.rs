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
    Command::new("sipp")
        .arg(target)
        .arg("-sf")
        .arg(&scenario)
        .args(["-m", &calls.to_string(), "-r", &rate.to_string()])
        .args(["-l", &(rate * 2).to_string(), "-i", "127.0.0.1", "-p"])
        .arg(local.to_string())
        .args(["-nostdin", "-timeout", "30s", "-timeout_error", "-nd"])
        .output()
        .expect("sipp starts")
}
