//! `evapi_client::app::App` against in-process servers: a node that drops the app and a
//! node that stops reading never harm the other node or a newer connection.

use std::io::Write as _;
use std::sync::mpsc;
use std::time::Duration;

use evapi_client::app::{App, Decision, Handler, Incoming, Notice};
use evapi_client::nodes::Node;
use evapi_client::ClientConfig;
use evapi_proto::Framing;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// Answers 200; takes 500 ms for events that say `"slow":true`; reports notices.
struct Slow(std::sync::Mutex<mpsc::Sender<Notice>>);

impl Handler for Slow {
    async fn handle(&self, event: Incoming) -> Option<Decision> {
        if event.json.as_ref().and_then(|j| j.get("slow")).is_some() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Some(Decision::new(200))
    }

    fn notice(&self, notice: Notice) {
        let _ = self.0.lock().unwrap().send(notice);
    }
}

fn suspend(index: u32, slow: bool) -> String {
    let slow = if slow { r#","slow":true"# } else { "" };
    format!(r#"{{"event":"suspend","tindex":{index},"tlabel":1,"ci":"call-{index}"{slow}}}"#)
}

fn answered(msg: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(msg).unwrap()["tindex"]
        .as_u64()
        .unwrap()
}

/// Node a drops the app while an answer is being worked out: the notice says one event
/// in hand will not be answered, the app is back on a within the backoff, and a's new
/// connection gets only answers to its own events (never the old one's); node b is
/// served throughout.
#[test]
fn a_node_that_drops_the_app_is_served_again_and_gets_no_stale_answer() {
    let a = start(Framing::Netstring);
    let b = start(Framing::Netstring);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (notices_tx, notices) = mpsc::channel();
    let app = App::new(
        [
            Node::parse(&format!("sip-a={}", a.addr), |s| Ok(s.to_owned())).unwrap(),
            Node::parse(&format!("sip-b={}", b.addr), |s| Ok(s.to_owned())).unwrap(),
        ],
        ClientConfig::default(),
    );
    let counters = app.counters();
    let stop = CancellationToken::new();
    let running = runtime.spawn(app.run(Slow(notices_tx.into()), stop.clone()));
    let first = a.connected();
    b.connected();

    a.relay(&suspend(1, true));
    // Let the app take it, then drop the app.
    std::thread::sleep(Duration::from_millis(100));
    a.handle
        .close(evapi_server::Target::Connid(first.connid))
        .unwrap();
    let lost = loop {
        if let n @ Notice::Lost { .. } = notices.recv_timeout(PATIENCE).unwrap() {
            break n;
        }
    };
    assert!(
        matches!(&lost, Notice::Lost { node, unanswered: 1 } if &**node == "sip-a"),
        "{lost:?}"
    );
    let again = loop {
        match a.next() {
            Ev::New(c) => break c,
            Ev::Closed(_) | Ev::Msg(_) => {}
        }
    };
    assert_ne!(again.connid, first.connid);
    let back = loop {
        if let n @ Notice::Reconnected { .. } = notices.recv_timeout(PATIENCE).unwrap() {
            break n;
        }
    };
    assert!(
        matches!(&back, Notice::Reconnected { node, down_for } if &**node == "sip-a" && *down_for < Duration::from_secs(2)),
        "{back:?}"
    );
    b.relay(&suspend(2, false));
    assert_eq!(answered(&b.msg()), 2, "b served throughout");
    a.relay(&suspend(3, false));
    assert_eq!(answered(&a.msg()), 3);
    // The slow answer to event 1 is due by now: dropped, not sent on the new connection.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(counters.snapshot().stale, 1);
    a.relay(&suspend(4, false));
    assert_eq!(
        answered(&a.msg()),
        4,
        "the next message on a is event 4's answer"
    );
    stop.cancel();
    runtime.block_on(running).unwrap();
}

/// A node that sends events but never reads its answers: the app keeps answering the
/// other node at once, and the stalled node's answers past its queue are dropped and
/// counted rather than held.
#[test]
fn a_node_that_stops_reading_does_not_delay_the_other() {
    let healthy = start(Framing::Netstring);
    // A small receive buffer (inherited by the accepted socket); the app's send buffer
    // (up to 4 MB on Linux) and its answer queue (4,096) still take about 80,000
    // answers before the queue overflows: 100,000 events.
    let stalled = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stalled.set_recv_buffer_size(4096).unwrap();
    stalled
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    stalled.listen(1).unwrap();
    let stalled: std::net::TcpListener = stalled.into();
    let stalled_addr = stalled.local_addr().unwrap().to_string();
    let flood = std::thread::spawn(move || {
        let (mut s, _) = stalled.accept().unwrap();
        let mut batch = Vec::new();
        for i in 0..100_000u32 {
            let e = suspend(i, false);
            batch.extend_from_slice(format!("{}:{e},", e.len()).as_bytes());
            if batch.len() > 64 * 1024 {
                if s.write_all(&batch).is_err() {
                    return s;
                }
                batch.clear();
            }
        }
        let _ = s.write_all(&batch);
        s // never read; kept open until the test ends
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = App::new(
        [Node::at(healthy.addr.clone()), Node::at(stalled_addr)],
        ClientConfig::default(),
    );
    let counters = app.counters();
    let stop = CancellationToken::new();
    let (notices_tx, _notices) = mpsc::channel();
    let running = runtime.spawn(app.run(Slow(notices_tx.into()), stop.clone()));
    healthy.connected();
    let _stalled = flood.join().unwrap();
    // The stalled node's answers fill their queue.
    let deadline = std::time::Instant::now() + PATIENCE;
    while counters.snapshot().undeliverable == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled node's answers were not dropped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..10 {
        healthy.relay(&suspend(1_000_000 + i, false));
        assert_eq!(answered(&healthy.msg()), u64::from(1_000_000 + i));
    }
    stop.cancel();
    runtime.block_on(running).unwrap();
}
