//! Relay fan-out and memory, printed as a table beside baselines from the same run.
//!
//! Fan-out: 200-byte payloads relayed to 1, 4 and 64 clients that read as fast as they
//! can, over loopback. Baseline: the same netstring frames written with 64 KiB writes
//! over plain loopback TCP sockets to the same number of readers (the physical limit).
//! The producer keeps at most one client queue's worth of frames in flight, so no
//! client is ever cut off as slow: the figure is what the server sustains.
//!
//! TLS: the same fan-out with every client on TLS 1.3 (rustls, ring), beside plain TCP
//! in the same run; and TLS handshakes per second against plain TCP connects (each a
//! fresh connection, connect to connection-new).
//!
//! Memory: RSS of the `evapi-server` binary idle, then with 10,000 idle clients
//! (needs `ulimit -n` above 10,100 in the shell that runs the bench).
//!
//! Run: `cargo bench -p evapi-server --bench fanout` (add `-- --quick` for a short run).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evapi_server::{Config, NoRoutes, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const PAYLOAD: usize = 200;
const FRAME: usize = PAYLOAD + 5; // "200:" + payload + ","
const WRITE_SIZE: usize = 64 * 1024;
const IDLE_CLIENTS: usize = 10_000;

struct Readers {
    counts: Vec<Arc<AtomicU64>>,
    progress: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

type Stream = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

/// A self-signed server certificate and the client setup that trusts it.
struct Tls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn tls() -> Tls {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = evapi_server::tls::provider();
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

/// Connect, over TLS when `tls` is given.
async fn connect(addr: std::net::SocketAddr, tls: Option<&Tls>) -> Stream {
    connect_from(addr, tls).await.0
}

/// [`connect`], and the local port.
async fn connect_from(addr: std::net::SocketAddr, tls: Option<&Tls>) -> (Stream, u16) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let port = tcp.local_addr().unwrap().port();
    let stream: Stream = match tls {
        None => Box::new(tcp),
        Some(t) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(&t.client));
            Box::new(connector.connect(name, tcp).await.unwrap())
        }
    };
    (stream, port)
}

/// Readers that count bytes until each has `bytes`.
fn spawn_readers(streams: Vec<Stream>, bytes: u64) -> Readers {
    let progress = Arc::new(Notify::new());
    let mut counts = Vec::new();
    let mut tasks = Vec::new();
    for mut s in streams {
        let count = Arc::new(AtomicU64::new(0));
        counts.push(Arc::clone(&count));
        let progress = Arc::clone(&progress);
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut got = 0u64;
            while got < bytes {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "server closed a reader early");
                got += n as u64;
                count.store(got / FRAME as u64, Ordering::Release);
                progress.notify_one();
            }
        }));
    }
    Readers {
        counts,
        progress,
        tasks,
    }
}

async fn ours(clients: usize, events: u64, tls: Option<&Tls>) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        max_clients: clients,
        tls: tls.map(|t| Arc::clone(&t.server)),
        ..Config::default()
    };
    let window = config.client_queue as u64;
    let server = Server::new(config, NoRoutes);
    let handle = server.handle();
    let task = tokio::spawn(server.run(listener, std::future::pending()));
    let mut streams = Vec::new();
    for _ in 0..clients {
        streams.push(connect(addr, tls).await);
    }
    // Relays reach accepted connections only: wait until connection-new ran for all.
    while handle.clients().iter().filter(|c| c.accepted).count() < clients {
        tokio::task::yield_now().await;
    }
    let payload = vec![b'e'; PAYLOAD];
    let readers = spawn_readers(streams, events * FRAME as u64);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < events {
        let slowest = readers
            .counts
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        if sent - slowest >= window {
            readers.progress.notified().await;
            continue;
        }
        let burst = (window - (sent - slowest)).min(events - sent);
        for _ in 0..burst {
            let d = handle.relay(&payload).unwrap();
            assert_eq!(d.queued, clients);
        }
        sent += burst;
    }
    for t in readers.tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    handle.shutdown();
    task.await.unwrap();
    (events * clients as u64) as f64 / secs
}

async fn baseline(clients: usize, events: u64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..clients {
        readers.push(TcpStream::connect(addr).await.unwrap());
        writers.push(listener.accept().await.unwrap().0);
    }
    let mut chunk = Vec::with_capacity(WRITE_SIZE);
    while chunk.len() + FRAME <= WRITE_SIZE {
        chunk.extend_from_slice(b"200:");
        chunk.extend_from_slice(&[b'e'; PAYLOAD]);
        chunk.push(b',');
    }
    let per_chunk = (chunk.len() / FRAME) as u64;
    let chunks = events.div_ceil(per_chunk);
    let total = chunks * chunk.len() as u64;
    let chunk = Arc::new(chunk);
    let readers = spawn_readers(
        readers.into_iter().map(|r| Box::new(r) as Stream).collect(),
        total,
    );
    let start = Instant::now();
    let mut write_tasks = Vec::new();
    for mut w in writers {
        let chunk = Arc::clone(&chunk);
        write_tasks.push(tokio::spawn(async move {
            for _ in 0..chunks {
                w.write_all(&chunk).await.unwrap();
            }
        }));
    }
    for t in write_tasks.into_iter().chain(readers.tasks) {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    (chunks * per_chunk * clients as u64) as f64 / secs
}

/// Fresh connections per second, connect to connection-new, `parallel` at a time.
async fn handshakes(tls: Option<&Tls>, count: usize, parallel: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        // Closed connections hold their slot until the server reads their EOF.
        max_clients: count + parallel,
        tls: tls.map(|t| Arc::clone(&t.server)),
        ..Config::default()
    };
    let server = Server::new(config, NoRoutes);
    let handle = server.handle();
    let task = tokio::spawn(server.run(listener, std::future::pending()));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..parallel {
        let client = tls.map(|t| Tls {
            server: Arc::clone(&t.server),
            client: Arc::clone(&t.client),
        });
        let h = handle.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..count / parallel {
                let (s, port) = connect_from(addr, client.as_ref()).await;
                // Done when the server has finished its side (handshake, connection-new).
                while !h.clients().iter().any(|c| c.srcport == port && c.accepted) {
                    tokio::task::yield_now().await;
                }
                drop(s);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    handle.shutdown();
    task.await.unwrap();
    (count / parallel * parallel) as f64 / secs
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

async fn memory() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_evapi-server"))
        .args(["--bind", "127.0.0.1:0", "-q", "--max-clients"])
        .arg(IDLE_CLIENTS.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("evapi-server binary");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let hello: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let addr = hello["listening"].as_str().unwrap().to_owned();
    // Drain notifications in the background so the server never waits on stdout.
    let drain = std::thread::spawn(move || lines.count());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = rss_kib(child.id());
    let mut clients = Vec::with_capacity(IDLE_CLIENTS);
    for _ in 0..IDLE_CLIENTS {
        match TcpStream::connect(&addr).await {
            Ok(s) => clients.push(s),
            Err(e) => {
                eprintln!(
                    "connect failed after {} clients: {e} (raise ulimit -n)",
                    clients.len()
                );
                break;
            }
        }
    }
    // Let the server finish accepting and settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = rss_kib(child.id());
    let n = clients.len().max(1) as f64;
    println!();
    println!("| memory (evapi-server binary) | RSS |");
    println!("|---|---|");
    println!("| idle | {:.1} MiB |", idle as f64 / 1024.0);
    println!(
        "| with {} idle clients | {:.1} MiB, {:.1} KiB per client |",
        clients.len(),
        loaded as f64 / 1024.0,
        (loaded.saturating_sub(idle)) as f64 / n
    );
    drop(clients);
    let _ = child.kill();
    let _ = child.wait();
    let _ = drain.join();
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `cargo bench` passes --bench; `cargo test --benches` does not: run tiny then.
    let bench = std::env::args().any(|a| a == "--bench");
    let scale = if !bench {
        100
    } else if quick {
        10
    } else {
        1
    };
    // `--clients N` measures only that row; `--no-memory` skips the memory part.
    let only: Option<usize> = std::env::args()
        .skip_while(|a| a != "--clients")
        .nth(1)
        .and_then(|n| n.parse().ok());
    let memory_too = bench && !std::env::args().any(|a| a == "--no-memory");
    // `--handshakes` measures only the new-connection rates.
    let handshakes_only = std::env::args().any(|a| a == "--handshakes");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("| clients | ours (deliveries/s) | baseline: plain TCP, 64 KiB writes | ours / baseline | ours over TLS | TLS / plain |");
        println!("|---|---|---|---|---|---|");
        let tls = tls();
        for (clients, events) in [(1usize, 2_000_000u64), (4, 500_000), (64, 50_000)] {
            if handshakes_only || only.is_some_and(|n| n != clients) {
                continue;
            }
            let events = events / scale;
            // Warm up each path once, then measure each three times, interleaved.
            let _ = ours(clients, events / 10, None).await;
            let _ = ours(clients, events / 10, Some(&tls)).await;
            let _ = baseline(clients, events / 10).await;
            let (mut o, mut t, mut b) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..3 {
                o.push(ours(clients, events, None).await);
                t.push(ours(clients, events, Some(&tls)).await);
                b.push(baseline(clients, events).await);
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (o, t, b) = (median(&mut o), median(&mut t), median(&mut b));
            println!(
                "| {clients} | {o:.0} | {b:.0} | {:.2} | {t:.0} | {:.2} |",
                o / b,
                t / o
            );
        }
        if only.is_none() {
            let count = 2000 / usize::try_from(scale.min(20)).unwrap();
            let (mut p, mut t) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                p.push(handshakes(None, count, 4).await);
                t.push(handshakes(Some(&tls), count, 4).await);
            }
            p.sort_by(f64::total_cmp);
            t.sort_by(f64::total_cmp);
            println!();
            println!("| new connections, 4 at a time | per second | TLS / plain |");
            println!("|---|---|---|");
            println!("| plain TCP | {:.0} | |", p[1]);
            println!("| TLS 1.3 handshake | {:.0} | {:.2} |", t[1], t[1] / p[1]);
        }
        if memory_too {
            memory().await;
        }
    });
}
