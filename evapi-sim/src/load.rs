//! `evapi-sim load`: a SIP UAC load generator with microsecond latency, for comparing
//! servers where sipp's millisecond response times cannot tell them apart.
//!
//! It sends INVITEs at a fixed rate over UDP, retransmits them on Timer A (500 ms,
//! doubling) until a response arrives, acknowledges each final response (same branch for
//! a non-2xx, RFC 3261 17.1.1.3; a new one for a 2xx), and records the time from the
//! first INVITE sent to the final response received in an HDR histogram. A call with no
//! final response within the timeout fails.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::time::{Instant, MissedTickBehavior};

use crate::report::Latency;
use crate::sip;

/// RFC 3261 T1: first INVITE retransmit interval.
const TIMER_A: Duration = Duration::from_millis(500);
/// How often the sender wakes to send what the rate allows.
const TICK: Duration = Duration::from_millis(1);

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The server (UDP).
    pub target: SocketAddr,
    /// Calls per second.
    pub rate: u64,
    /// Calls in all.
    pub calls: u64,
    /// Final codes a call may get to count as successful.
    pub expect: ExpectedCodes,
    /// The request URI (and To) of call `n`: `{n}` is its number from 0; `None`:
    /// `sip:callee{n}@TARGET`.
    pub ruri: Option<String>,
    /// A call without a final response after this long fails.
    pub timeout: Duration,
}

/// Which final codes count as a successful call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedCodes {
    /// Any of these.
    Codes(Vec<u16>),
    /// Any final response (an app with a rule answers several codes).
    AnyFinal,
}

impl ExpectedCodes {
    /// Whether `code` counts as a success.
    #[must_use]
    pub fn accepts(&self, code: u16) -> bool {
        match self {
            Self::Codes(codes) => codes.contains(&code),
            Self::AnyFinal => (200..700).contains(&code),
        }
    }
}

impl std::fmt::Display for ExpectedCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Codes(codes) => {
                let codes: Vec<String> = codes.iter().map(u16::to_string).collect();
                f.write_str(&codes.join(" or "))
            }
            Self::AnyFinal => f.write_str("any final"),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Calls sent.
    pub calls: u64,
    /// Calls that got the expected final code.
    pub ok: u64,
    /// Calls that got another final code or none.
    pub failed: u64,
    /// Final codes received, by code (the expected one included), and `"none"` for
    /// calls that got none before the timeout: what a failure was.
    pub codes: std::collections::BTreeMap<String, u64>,
    /// INVITEs retransmitted (Timer A).
    pub retransmissions: u64,
    /// First INVITE to final response, microseconds, successful calls.
    pub latency: Latency,
    /// Achieved send rate, calls per second.
    pub rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Provisional,
    Done,
}

struct Call {
    first_sent: Instant,
    interval: Duration,
    state: State,
}

/// Run the load and report.
///
/// # Errors
///
/// The local UDP socket cannot be opened.
pub async fn run(options: &LoadOptions) -> std::io::Result<LoadReport> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let local = socket.local_addr()?;
    let tag = std::process::id();
    let mut calls: Vec<Call> = Vec::with_capacity(options.calls as usize);
    let mut retrans: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut latency = Histogram::<u64>::new(3).expect("3 significant figures is a valid precision");
    let (mut ok, mut failed, mut retransmissions, mut done) = (0u64, 0u64, 0u64, 0u64);
    let mut codes: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let start = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut buf = vec![0u8; 65_535];
    let mut last_sent = start;
    while done < options.calls {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                let due = ((now - start).as_secs_f64() * options.rate as f64) as u64;
                while (calls.len() as u64) < due.min(options.calls) {
                    let n = calls.len() as u64;
                    socket.send_to(&invite(n, tag, local, options), options.target).await?;
                    calls.push(Call { first_sent: now, interval: TIMER_A, state: State::Waiting });
                    retrans.push(Reverse((now + TIMER_A, n)));
                    last_sent = now;
                }
                while let Some(Reverse((at, n))) = retrans.peek().copied() {
                    if at > now {
                        break;
                    }
                    retrans.pop();
                    let call = &mut calls[n as usize];
                    if call.state == State::Done {
                        continue;
                    }
                    if now - call.first_sent >= options.timeout {
                        call.state = State::Done;
                        failed += 1;
                        *codes.entry("none".to_owned()).or_default() += 1;
                        done += 1;
                        continue;
                    }
                    if call.state == State::Waiting {
                        socket.send_to(&invite(n, tag, local, options), options.target).await?;
                        retransmissions += 1;
                        call.interval = (call.interval * 2).min(Duration::from_secs(4));
                    }
                    retrans.push(Reverse((now + call.interval, n)));
                }
            }
            got = socket.recv_from(&mut buf) => {
                let (len, _) = got?;
                let now = Instant::now();
                let Some(resp) = sip::parse_response(&buf[..len]) else { continue };
                if resp.cseq_method != "INVITE" {
                    continue;
                }
                let Some(n) = call_number(&resp.call_id, tag) else { continue };
                let Some(call) = calls.get_mut(n as usize) else { continue };
                if resp.code < 200 {
                    if call.state == State::Waiting {
                        call.state = State::Provisional;
                    }
                    continue;
                }
                // Acknowledge every final, also retransmitted ones.
                socket.send_to(&ack(n, tag, local, options, &resp), options.target).await?;
                if call.state == State::Done {
                    continue;
                }
                call.state = State::Done;
                done += 1;
                *codes.entry(resp.code.to_string()).or_default() += 1;
                if options.expect.accepts(resp.code) {
                    ok += 1;
                    let us = u64::try_from((now - call.first_sent).as_micros()).unwrap_or(u64::MAX);
                    let _ = latency.record(us.max(1));
                } else {
                    failed += 1;
                }
            }
        }
    }
    let sending = (last_sent - start).as_secs_f64().max(1e-3);
    Ok(LoadReport {
        calls: options.calls,
        ok,
        failed,
        codes,
        retransmissions,
        latency: Latency::of(&latency),
        rate: options.calls.saturating_sub(1) as f64 / sending,
    })
}

fn call_id(n: u64, tag: u32) -> String {
    format!("load-{tag}-{n}@evapi-sim")
}

fn call_number(call_id: &str, tag: u32) -> Option<u64> {
    let rest = call_id.strip_prefix(&format!("load-{tag}-"))?;
    rest.split('@').next()?.parse().ok()
}

fn headers(n: u64, tag: u32, local: SocketAddr, branch: &str) -> String {
    format!(
        "Via: SIP/2.0/UDP {local};branch={branch}\r\n\
         From: <sip:load@{local}>;tag=l{n}\r\n\
         Call-ID: {}\r\n\
         Contact: <sip:load@{local}>\r\n\
         Max-Forwards: 70\r\n",
        call_id(n, tag)
    )
}

/// Call `n`'s request URI.
fn ruri(n: u64, options: &LoadOptions) -> String {
    match &options.ruri {
        Some(template) => template.replace("{n}", &n.to_string()),
        None => format!("sip:callee{n}@{}", options.target),
    }
}

fn invite(n: u64, tag: u32, local: SocketAddr, options: &LoadOptions) -> Vec<u8> {
    let ruri = ruri(n, options);
    format!(
        "INVITE {ruri} SIP/2.0\r\n{}To: <{ruri}>\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        headers(n, tag, local, &format!("z9hG4bK-load-{tag}-{n}"))
    )
    .into_bytes()
}

fn ack(
    n: u64,
    tag: u32,
    local: SocketAddr,
    options: &LoadOptions,
    resp: &sip::SipResponse,
) -> Vec<u8> {
    let ruri = ruri(n, options);
    let branch = if resp.code < 300 {
        format!("z9hG4bK-load-{tag}-{n}-ack")
    } else {
        format!("z9hG4bK-load-{tag}-{n}")
    };
    format!(
        "ACK {ruri} SIP/2.0\r\n{}To: {}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        headers(n, tag, local, &branch),
        resp.to
    )
    .into_bytes()
}
