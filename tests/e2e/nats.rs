//! Scale-out over NATS JetStream with the real nats-server: SIP nodes (`evapi-sim
//! sip`) each joined to NATS by `evapi-client bridge`, responders (`evapi-client
//! respond --nats`) sharing the work, sipp sending the calls.

use std::process::Command;
use std::time::Duration;

use evapi_tests::nats::Nats;
use evapi_tests::{binary, sipp, Running};

/// A SIP node and its bridge.
struct Node {
    sim: sipp::SimNode,
    sip: String,
    _bridge: Running,
}

impl Node {
    fn start(name: &str, nats: &Nats) -> Self {
        let mut sim = sipp::SimNode::start(&[]);
        let mut bridge = Command::new(binary("evapi-client"));
        bridge
            .args([
                "--addr", &sim.evapi, "--wait", "10s", "bridge", "--nats", &nats.url,
            ])
            .args(["--node", name]);
        let bridge = Running::spawn(bridge);
        // The bridge is the node's app.
        sim.wait_for_app();
        Self {
            sip: sim.sip.clone(),
            sim,
            _bridge: bridge,
        }
    }

    /// SIGTERM; the node's counters.
    fn finish(self) -> String {
        self.sim.finish()
    }
}

fn responder(nats: &Nats, extra: &[&str]) -> Running {
    let mut cmd = Command::new(binary("evapi-client"));
    cmd.args([
        "respond",
        "--nats",
        &nats.url,
        "--code",
        "486",
        "--ack-wait",
        "1s",
    ])
    .args(extra);
    Running::spawn(cmd)
}

fn assert_sipp_ok(out: &std::process::Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "sipp reported failed calls:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "needs nats-server and sipp (apt-get install nats-server sip-tester)"]
fn two_nodes_and_three_responders_answer_every_call_from_its_own_node() {
    sipp::require();
    let nats = Nats::start();
    let (a, b) = (Node::start("node-a", &nats), Node::start("node-b", &nats));
    let _responders: Vec<Running> = (0..3).map(|_| responder(&nats, &[])).collect();
    let (sip_a, sip_b) = (a.sip.clone(), b.sip.clone());
    let burst_b = std::thread::spawn(move || sipp::burst_486(&sip_b, 200, 100));
    assert_sipp_ok(&sipp::burst_486(&sip_a, 200, 100));
    assert_sipp_ok(&burst_b.join().unwrap());
    for counters in [a.finish(), b.finish()] {
        for row in [
            "  final 486                     200",
            "  timeouts                        0",
            "  refused continues               0",
            "  invalid answers                 0",
        ] {
            assert!(counters.contains(row), "{row:?} in\n{counters}");
        }
    }
}

/// A responder that takes events and dies (`kill -9`) before answering: its events
/// are redelivered after the ack wait (1 s) to the other responder; every call is
/// answered once.
#[test]
#[ignore = "needs nats-server and sipp (apt-get install nats-server sip-tester)"]
fn a_responder_killed_mid_run_loses_no_call() {
    sipp::require();
    let nats = Nats::start();
    let node = Node::start("node-c", &nats);
    // For the first 1.5 s the doomed one is the only responder, and a slow one: it
    // takes the events and answers none. Then it is killed and another takes over.
    let mut doomed = responder(&nats, &["--delay", "30s"]);
    let sip = node.sip.clone();
    let burst = std::thread::spawn(move || sipp::burst_timed(&sip, 100, 50, 486));
    std::thread::sleep(Duration::from_millis(1500));
    doomed.child.kill().unwrap();
    let _ = doomed.child.wait();
    let _survivor = responder(&nats, &[]);
    let (out, times) = burst.join().unwrap();
    assert_sipp_ok(&out);
    let counters = node.finish();
    for row in [
        "  final 486                     100",
        "  timeouts                        0",
        "  refused continues               0",
    ] {
        assert!(counters.contains(row), "{row:?} in\n{counters}");
    }
    // The calls of the first 1.5 s waited for the redelivery (the ack wait, 1 s, after
    // the kill), then were answered: sipp's response times show it.
    assert_eq!(times.len(), 100, "a response time per call");
    let waited = times.iter().filter(|ms| **ms >= 1000).count();
    assert!(waited > 0, "no call waited for a redelivery: {times:?}");
    eprintln!(
        "{waited} of 100 calls waited for a redelivery; slowest {} ms",
        times.iter().max().unwrap_or(&0)
    );
}
