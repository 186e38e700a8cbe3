//! Memory per transaction in the SIP front of `evapi-sim sip` (both cores: the SIP
//! transaction layer and the async-relay router with its tm table), measured as the
//! growth of the process's RSS with mimalloc, the binary's allocator:
//!
//! - *suspended*: INVITEs waiting for the app's answer past 200 ms (100 Trying sent);
//! - *held*: answered (486) and ACKed, kept through Timer I and tm's wait timer, which
//!   is where most transactions of a load test sit (5 s at whatever the rate is).
//!
//! Each state is measured in a fresh process (the bench runs itself twice), so memory
//! freed by one does not hide the other's.
//!
//! Run: `cargo bench -p evapi-sim --bench sip_memory` (100,000 transactions; 10,000
//! when run as a test).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use evapi_proto::AnswerReader;
use evapi_server::{ClientEnv, UnicastPolicy};
use evapi_sim::ist::{Invite, UasTransactions};
use evapi_sim::request::Request;
use evapi_sim::router::{Router, RouterConfig};
use evapi_sim::scenario::{Action, Answers, DEFAULT_EVENT};
use evapi_sim::sip;
use evapi_sim::template::Template;
use evapi_sim::tm::TmConfig;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// sipp's INVITE, call `i`.
fn invite(i: usize) -> String {
    format!(
        "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-3141-{i}-0\r\n\
         From: <sip:caller@127.0.0.1:5070>;tag=3141SIPpTag00{i}\r\n\
         To: <sip:service@127.0.0.1:5060>\r\n\
         Call-ID: {i}-3141@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@127.0.0.1:5070>\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn ack(i: usize) -> String {
    format!(
        "ACK sip:service@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-3141-{i}-0\r\n\
         From: <sip:caller@127.0.0.1:5070>;tag=3141SIPpTag00{i}\r\n\
         To: <sip:service@127.0.0.1:5060>;tag=x\r\n\
         Call-ID: {i}-3141@127.0.0.1\r\n\
         CSeq: 1 ACK\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn router() -> Router<evapi_sim::ist::TxKey> {
    Router::new(RouterConfig {
        action: Action::AsyncRelay,
        tag: None,
        relay_code: 200,
        event: Template::parse(DEFAULT_EVENT).unwrap(),
        reason: None,
        reader: AnswerReader::default(),
        actions: Answers::default().actions,
        tm: TmConfig::default(),
        max_transactions: None,
        unicast_policy: UnicastPolicy::First,
        no_app_reply: None,
    })
}

/// Bytes of RSS per transaction with `n` of them in `state`.
fn measure(n: usize, state: &str) -> f64 {
    let peer: SocketAddr = (Ipv4Addr::LOCALHOST, 5070).into();
    let app = ClientEnv::tcp(0, 1, (Ipv4Addr::LOCALHOST, 40000).into());
    let mut ist = UasTransactions::new();
    let mut router = router();
    let now = Instant::now();
    // Warm the allocator and the formatting paths before the baseline.
    drop((invite(0), ack(0)));
    let before = rss_kib();
    for i in 0..n {
        let req = sip::parse(invite(i).as_bytes()).unwrap();
        let key = evapi_sim::ist::key(&req);
        let Invite::New(key) = ist.invite_keyed(now, key, &req, peer) else {
            panic!("a new INVITE")
        };
        let id = router
            .request(now, &Request::from_sip(&req, peer), key.clone())
            .id;
        ist.set_tid(&key, id);
        if state == "held" {
            let answer = format!(
                r#"{{"tindex":{},"tlabel":{},"code":486}}"#,
                id.index, id.label
            );
            let _ = router.message(now, &app, answer.as_bytes());
            let reply = router.poll_reply().expect("a reply");
            assert!(ist.respond(now, &reply.data, reply.code, &reply.reason));
            ist.ack(now, &sip::parse(ack(i).as_bytes()).unwrap());
        }
        while ist.poll_transmit().is_some() {}
    }
    // 200 ms on: a suspended transaction has sent (and keeps) its 100 Trying.
    ist.handle_timeout(now + evapi_sim::ist::DEFAULT_TRYING_AFTER);
    while ist.poll_transmit().is_some() {}
    let after = rss_kib();
    // Still there (and in the state measured) when RSS was read.
    assert_eq!(ist.len(), n);
    if state == "held" {
        // Held ones leave after their timers.
        ist.handle_timeout(now + Duration::from_secs(60));
        router.handle_timeout(now + Duration::from_secs(200));
        assert!(ist.is_empty());
    }
    after.saturating_sub(before) as f64 * 1024.0 / n as f64
}

fn main() {
    if let Ok(state) = std::env::var("SIP_MEMORY_STATE") {
        let n: usize = std::env::var("SIP_MEMORY_N").unwrap().parse().unwrap();
        println!("{:.0}", measure(n, &state));
        return;
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let n = if bench { 100_000 } else { 10_000 };
    let me = std::env::current_exe().unwrap();
    let run = |state: &str| -> String {
        let out = std::process::Command::new(&me)
            .env("SIP_MEMORY_STATE", state)
            .env("SIP_MEMORY_N", n.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    println!("| SIP front, {n} transactions | bytes of RSS per transaction |");
    println!("|---|---|");
    println!("| suspended (waiting for the app) | {} |", run("suspended"));
    println!(
        "| answered and ACKed, held through the wait timers | {} |",
        run("held")
    );
}
