use std::time::{Duration, Instant};

use evapi_ops::http::{HTTP_HEADER_TIMEOUT, HTTP_MAX_HEAD};
use evapi_server::admin::serve;
use evapi_server::{Config, NoRoutes, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::PATIENCE;

async fn listener() -> std::net::SocketAddr {
    let server = Server::new(Config::default(), NoRoutes);
    let handle = server.handle();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let registry = evapi_server::metrics::registry(&handle);
    tokio::spawn(serve(l, registry, handle, None, std::future::pending()));
    addr
}

/// The operators' HTTP listener is a new input path: a client that never finishes its
/// request head is closed at the header timeout, and a head over the size bound is
/// refused without being buffered whole.
#[tokio::test]
async fn http_heads_are_bounded_in_time_and_size() {
    let addr = listener().await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(HTTP_HEADER_TIMEOUT + PATIENCE, slow.read_to_end(&mut rest))
        .await
        .expect("closed at the header timeout")
        .unwrap();
    assert!(started.elapsed() >= HTTP_HEADER_TIMEOUT - Duration::from_millis(500));

    let mut big = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(HTTP_MAX_HEAD * 2)
    );
    let _ = big.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, big.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        !text.contains(" 200 "),
        "an oversized head is not served: {text}"
    );

    // A normal request still works.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    ok.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("evapi_clients 0"), "{answer}");
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(PATIENCE, c.read_to_string(&mut answer)).await;
    answer
}

/// Regression (issue 24): 40 silent connections, reopened as they were closed, held the
/// 16 connections of the listener: 2 of 10 scrapes were served. The oldest connection is
/// now closed to make room, so every scrape is served while 40 stay open.
#[tokio::test]
async fn silent_connections_cannot_keep_a_scraper_out() {
    let addr = listener().await;
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    for n in 0..10 {
        // More silent ones between scrapes, as an attacker reopening them would.
        for _ in 0..4 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        let answer = scrape(addr).await;
        assert!(
            answer.starts_with("HTTP/1.1 200 "),
            "scrape {n}: {answer:?}"
        );
    }
}

/// The admin bearer token is throttled like the socket's tokens (issue 24: 5,823
/// guesses a second): after a few wrong ones the address is refused before its guess
/// is compared, even with the right token; a right token in between does not reset
/// the count.
#[tokio::test]
async fn wrong_bearer_tokens_are_throttled() {
    let server = Server::new(Config::default(), NoRoutes);
    let handle = server.handle();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let token = "admin-token-0123456789";
    let registry = evapi_server::metrics::registry(&handle);
    tokio::spawn(serve(
        l,
        registry,
        handle,
        Some(token.into()),
        std::future::pending(),
    ));
    let get = |bearer: &'static str| async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = tokio::time::timeout(PATIENCE, c.read_to_string(&mut answer)).await;
        answer
    };
    let free = evapi_ops::throttle::THROTTLE_FREE_FAILURES;
    for n in 0..free {
        let answer = get("wrong-token-0000000000").await;
        assert!(answer.starts_with("HTTP/1.1 401 "), "guess {n}: {answer}");
    }
    // A good token between guesses does not wipe the address's failures (else anyone
    // holding one token, say a tenant's, could guess others without end).
    let answer = get("admin-token-0123456789").await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let answer = get("wrong-token-0000000000").await;
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    let answer = get("admin-token-0123456789").await;
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    tokio::time::sleep(evapi_ops::throttle::THROTTLE_FIRST).await;
    let answer = get("admin-token-0123456789").await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

/// Connect to `addr` from `ip` (a loopback address of 127.0.0.0/8).
async fn connect_from(ip: [u8; 4], addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((ip, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// One throttle for the server's doors (issue 24: "the same throttle for
/// --control-token and the admin bearer token"): an address that guessed control tokens
/// is refused at the admin API with the right bearer token, and wrong guesses at the
/// control socket from many addresses count against the one global ceiling
/// (`--max-auth-failures`), so the admin's next token check waits for the next window.
#[tokio::test]
async fn the_doors_share_one_throttle_and_one_global_ceiling() {
    use evapi_ops::throttle::{GLOBAL_WINDOW, THROTTLE_FREE_FAILURES};
    use evapi_server::control::socket::{serve as control, ControlLimits, ControlListener};
    use tokio::io::{AsyncBufReadExt, BufReader};

    let config = Config {
        max_auth_failures: 2,
        ..Config::default()
    };
    let handle = Server::new(config, NoRoutes).handle();
    let admin_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin_l.local_addr().unwrap();
    let registry = evapi_server::metrics::registry(&handle);
    let token = "admin-token-0123456789";
    tokio::spawn(serve(
        admin_l,
        registry,
        handle.clone(),
        Some(token.into()),
        std::future::pending(),
    ));
    let control_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_addr = control_l.local_addr().unwrap();
    let limits = ControlLimits {
        max_line: 1 << 20,
        max_connections: 8,
        token: Some("control-token-0123456789".into()),
        auth_timeout: Duration::from_secs(5),
        idle_timeout: None,
    };
    tokio::spawn(control(ControlListener::Tcp(control_l), handle, limits));

    let guess = |ip: [u8; 4]| async move {
        let c = connect_from(ip, control_addr).await;
        let (rd, mut wr) = c.into_split();
        wr.write_all(b"{\"auth\":\"wrong-token-0000000000\"}\n")
            .await
            .unwrap();
        let mut line = String::new();
        let _ = tokio::time::timeout(PATIENCE, BufReader::new(rd).read_line(&mut line)).await;
        line
    };
    let admin = |ip: [u8; 4]| async move {
        let mut c = connect_from(ip, admin_addr).await;
        let req = format!(
            "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = tokio::time::timeout(PATIENCE, c.read_to_string(&mut answer)).await;
        answer
    };

    // Global ceiling: 2 wrong guesses from 2 addresses within one window; the admin's
    // right token from a third address is checked only once that window has ended.
    let before = Instant::now();
    for n in 1..=2 {
        let reply = guess([127, 0, 5, n]).await;
        assert!(reply.contains("authentication failed"), "{reply}");
    }
    let guessed_in = before.elapsed();
    assert!(
        guessed_in < GLOBAL_WINDOW,
        "two guesses took {guessed_in:?}: machine too slow for this test"
    );
    let answer = admin([127, 0, 5, 3]).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        before.elapsed() >= GLOBAL_WINDOW,
        "the admin's token was checked {:?} after the ceiling was reached, within its window",
        before.elapsed()
    );

    // One throttle: an address blocked for control guesses is refused at the admin API.
    tokio::time::sleep(GLOBAL_WINDOW).await;
    for _ in 0..=THROTTLE_FREE_FAILURES {
        guess([127, 0, 6, 1]).await;
    }
    let answer = admin([127, 0, 6, 1]).await;
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    let answer = admin([127, 0, 6, 2]).await;
    assert!(
        answer.starts_with("HTTP/1.1 200 "),
        "another address is served: {answer}"
    );
}
