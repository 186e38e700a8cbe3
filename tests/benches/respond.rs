//! Auto-responder throughput on one connection, beside an echo baseline in the same run.
//!
//! An in-process evapi-server relays suspend events (`{"event":"suspend","tindex":N,
//! "tlabel":N,...}`, about 120 bytes) to one client and counts what comes back through
//! message-received. **respond** is the library responder (`evapi-client respond`):
//! it parses each event, finds the ids and writes the JSON answer. **echo** (the
//! baseline) writes every frame straight back without looking at it, batched the same
//! way: the transport's limit for this exchange. **app** is the app library
//! (`evapi_client::app::App`, a handler answering 200 to every event, no ordering):
//! what `respond` would cost built on it (one parse into JSON, a task and two
//! channel hops per event). The producer keeps at most 1,024 events unanswered.
//!
//! Run: `cargo bench -p evapi-tests --bench respond` (`-- --quick` for a short run).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use evapi_client::app::{App, Decision, Incoming, OrderBy};
use evapi_client::nodes::Node;
use evapi_client::respond::{self, Counts, Responder};
use evapi_client::{Client, ClientConfig};
use evapi_server::{ClientEnv, Config, EventRoutes, Handle, Server};
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const WINDOW: u64 = 1024;

struct CountAnswers {
    answered: Arc<AtomicU64>,
    progress: Arc<Notify>,
}

impl EventRoutes for CountAnswers {
    async fn message_received(&self, _: &Handle, _: &ClientEnv, _: Bytes) {
        self.answered.fetch_add(1, Ordering::Release);
        self.progress.notify_one();
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Respond,
    Echo,
    App,
}

async fn measure(mode: Mode, events: u64) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let answered = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let server = Server::new(
        Config {
            workers: 0,
            ..Config::default()
        },
        CountAnswers {
            answered: Arc::clone(&answered),
            progress: Arc::clone(&progress),
        },
    );
    let handle = server.handle();
    let server_task = tokio::spawn(server.run(listener, std::future::pending()));
    let client = match mode {
        Mode::App => None,
        Mode::Respond | Mode::Echo => Some(
            Client::connect(&addr, &ClientConfig::default())
                .await
                .unwrap(),
        ),
    };
    let stop = CancellationToken::new();
    let stop2 = stop.clone();
    let responder = tokio::spawn(async move {
        let Some(client) = client else {
            let app =
                App::new([Node::at(addr)], ClientConfig::default()).order_by(OrderBy::Nothing);
            app.run(|_: Incoming| async { Some(Decision::new(200)) }, stop2)
                .await;
            return;
        };
        match mode {
            Mode::App => {}
            Mode::Respond => {
                let counts = Counts::default();
                let _ = respond::run(client, &Responder::new(200), &counts, None, &stop2).await;
            }
            Mode::Echo => {
                // Batched like the responder: echo all that is readable, then flush.
                let (mut rd, mut wr) = client.split();
                loop {
                    let first = tokio::select! {
                        () = stop2.cancelled() => break,
                        m = rd.recv() => m,
                    };
                    let Ok(Some(mut m)) = first else { break };
                    loop {
                        wr.feed(&m).await.unwrap();
                        match rd.recv().now_or_never() {
                            Some(Ok(Some(next))) => m = next,
                            _ => break,
                        }
                    }
                    wr.flush().await.unwrap();
                }
            }
        }
    });
    // Relays reach accepted connections only.
    while !handle.clients().iter().any(|c| c.accepted) {
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < events {
        let done = answered.load(Ordering::Acquire);
        if sent - done >= WINDOW {
            progress.notified().await;
            continue;
        }
        for _ in 0..(WINDOW - (sent - done)).min(events - sent) {
            let event = format!(
                r#"{{"event":"suspend","tindex":"{}","tlabel":"{}","rm":"INVITE","ru":"sip:bob@example.com"}}"#,
                sent % 65536,
                sent
            );
            let _ = handle.relay(event.as_bytes()).unwrap();
            sent += 1;
        }
    }
    while answered.load(Ordering::Acquire) < events {
        progress.notified().await;
    }
    let rate = events as f64 / start.elapsed().as_secs_f64();
    stop.cancel();
    responder.await.unwrap();
    handle.shutdown();
    server_task.await.unwrap();
    rate
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let quick = std::env::args().any(|a| a == "--quick");
    let events = if !bench {
        2_000
    } else if quick {
        100_000
    } else {
        1_000_000
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _ = measure(Mode::Respond, events / 10).await;
        let _ = measure(Mode::Echo, events / 10).await;
        let _ = measure(Mode::App, events / 10).await;
        let (mut r, mut e, mut a) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            r.push(measure(Mode::Respond, events).await);
            e.push(measure(Mode::Echo, events).await);
            a.push(measure(Mode::App, events).await);
        }
        for v in [&mut r, &mut e, &mut a] {
            v.sort_by(f64::total_cmp);
        }
        let (r, e, a) = (r[1], e[1], a[1]);
        println!("| one connection | answers/s |");
        println!("|---|---|");
        println!("| respond (parse, find ids, answer) | {r:.0} |");
        println!("| app library (handler answering 200) | {a:.0} |");
        println!("| echo baseline (frames back unread) | {e:.0} |");
        println!("| respond / echo | {:.2} |", r / e);
        println!("| app / respond | {:.2} |", a / r);
    });
}
