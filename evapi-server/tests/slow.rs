use std::time::Duration;

use evapi_server::{Config, SlowClientPolicy};
use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::common::*;

const EVENTS: usize = 100_000;

/// Event `seq`, about 200 bytes: 20 MB in all, far more than socket buffers absorb.
fn event(seq: usize) -> String {
    format!("{{\"seq\":{seq},\"pad\":\"{}\"}}", "p".repeat(180))
}

/// A client socket with a tiny receive buffer that never reads, accepted (so every
/// relay from now on is offered to it).
async fn stalled_client(server: &mut TestServer) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    server.next_new().await;
    stream
}

/// Read frames, check they are 0, 1, 2, ... and publish how many arrived.
fn spawn_reader(mut client: Client) -> watch::Receiver<usize> {
    let (tx, rx) = watch::channel(0);
    tokio::spawn(async move {
        let mut n = 0usize;
        while let Some(Ok(frame)) = client.next().await {
            assert_eq!(frame, event(n).as_bytes(), "in order, none lost");
            n += 1;
            if n.is_multiple_of(100) || n == EVENTS {
                tx.send_replace(n);
            }
        }
    });
    rx
}

/// One client never reads, two read everything; returns the server once every event
/// reached both readers in order.
async fn stalled_one_and_two_readers(
    slow_client: SlowClientPolicy,
    send_timeout: Duration,
) -> TestServer {
    let config = Config {
        client_queue: 1024,
        slow_client,
        send_timeout,
        ..Config::default()
    };
    let mut server = start(config).await;
    let stalled = stalled_client(&mut server).await;
    let (a, _) = server.connect().await;
    let (b, _) = server.connect().await;
    let mut readers = [spawn_reader(a), spawn_reader(b)];

    for seq in 0..EVENTS {
        let payload = event(seq);
        let _ = server.handle.relay(payload.as_bytes()).unwrap();
        // Pace the producer by the readers (not by the stalled client): stay within
        // half a queue of the slower reader.
        if seq % 256 == 255 {
            for r in &mut readers {
                tokio::time::timeout(PATIENCE, r.wait_for(|n| n + 512 >= seq))
                    .await
                    .expect("readers keep up")
                    .unwrap();
            }
        }
    }
    for r in &mut readers {
        tokio::time::timeout(PATIENCE, r.wait_for(|n| *n == EVENTS))
            .await
            .expect("every event reached every reading client")
            .unwrap();
    }
    // Keep the stalled socket open until every event was checked.
    std::mem::forget(stalled);
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off_and_the_others_get_everything() {
    // The cut-off client gets its queue flushed within the send timeout before the close.
    let mut server =
        stalled_one_and_two_readers(SlowClientPolicy::Disconnect, Duration::from_millis(500)).await;
    let (_, reason) = server.expect_closed().await;
    assert_eq!(reason.name(), "slow-client");
    let stats = server.handle.stats();
    assert_eq!(stats.slow_clients, 1);
    assert_eq!(stats.connected, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_drop_policy_the_others_never_wait_for_a_client_that_never_reads() {
    // A send timeout longer than the run: the stalled client's writer waits all along
    // (a client that never reads at all is closed by the send timeout, drop or not).
    let server = stalled_one_and_two_readers(SlowClientPolicy::Drop, Duration::from_secs(60)).await;
    let stats = server.handle.stats();
    assert_eq!(stats.slow_clients, 0);
    assert_eq!(stats.connected, 3, "the stalled client stays");
    assert!(stats.dropped > 0, "its overflow was dropped");
    let stalled = server
        .handle
        .clients()
        .into_iter()
        .find(|c| c.dropped > 0)
        .expect("the stalled client");
    assert_eq!(
        stalled.dropped, stats.dropped,
        "only the stalled client lost frames"
    );
}

#[tokio::test]
async fn with_the_drop_policy_a_slow_client_stays_and_its_overflow_is_counted() {
    let config = Config {
        client_queue: 16,
        slow_client: SlowClientPolicy::Drop,
        ..Config::default()
    };
    let mut server = start(config).await;
    let _stalled = stalled_client(&mut server).await;
    let mut dropped = 0;
    for _ in 0..20_000 {
        let d = server.handle.relay(&[b'x'; 512]).unwrap();
        assert_eq!(
            d.queued + d.dropped,
            1,
            "each relay is queued or dropped, never both"
        );
        dropped += d.dropped;
    }
    let stats = server.handle.stats();
    assert_eq!(stats.dropped, dropped as u64);
    assert_eq!(stats.connected, 1, "still connected");
    let info = &server.handle.clients()[0];
    assert_eq!(info.dropped, dropped as u64);
    // Every relay is accounted for: written to the socket, still queued, or dropped.
    // 20,000 x 512 bytes is far more than the socket buffers hold, so most are dropped.
    assert_eq!(
        info.frames_out + info.queue_depth as u64 + info.dropped,
        20_000,
        "{info:?}"
    );
    assert!(
        info.queue_depth <= 16,
        "the queue stays within client_queue"
    );
    assert!(dropped > 10_000, "dropped {dropped}");
}

#[tokio::test]
async fn a_write_without_progress_for_the_send_timeout_disconnects() {
    let config = Config {
        client_queue: 1_000_000,
        client_queue_bytes: usize::MAX,
        send_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let mut server = start(config).await;
    let _stalled = stalled_client(&mut server).await;
    // Enough to fill the socket buffers on both sides; the queue never fills.
    for _ in 0..20_000 {
        let _ = server.handle.relay(&[b'y'; 1024]).unwrap();
    }
    let (_, reason) = server.expect_closed().await;
    assert_eq!(reason.name(), "send-timeout");
    assert_eq!(server.handle.stats().send_timeouts, 1);
    // The server goes on.
    let (mut c, _) = server.connect().await;
    let _ = server.handle.relay(b"next").unwrap();
    let frame = recv(&mut c).await;
    assert_eq!(frame, "next");
}

/// The send timeout is "no progress for this long", not "the whole backlog within this
/// long": a client that reads slowly but steadily is never cut off. Regression: the
/// writer gave a whole batch one deadline, so a backlog that took longer than the send
/// timeout to drain disconnected a client that was reading all along.
#[tokio::test]
async fn a_slow_but_steady_reader_is_not_cut_off_by_the_send_timeout() {
    use tokio::io::AsyncReadExt;
    let config = Config {
        send_timeout: Duration::from_millis(300),
        max_frame: 1 << 20,
        // 8 MiB queued at once: over the default byte bound, which is not what is tested.
        client_queue_bytes: 16 << 20,
        ..Config::default()
    };
    let mut server = start(config).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut reader = socket.connect(server.addr).await.unwrap();
    server.next_new().await;
    // 8 MiB queued at once: one batch for the writer.
    let frame = vec![b'z'; 64 * 1024];
    for _ in 0..128 {
        assert_eq!(server.handle.relay(&frame).unwrap().queued, 1);
    }
    let want = 128 * (frame.len() + "65536:,".len());
    // 128 KiB every 20 ms: about 6 MiB/s, so draining takes well over a second, and
    // every write makes progress within a few milliseconds.
    let mut got = 0;
    let mut buf = vec![0u8; 128 * 1024];
    while got < want {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut chunk = 0;
        while chunk < buf.len() && got < want {
            match tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf[chunk..])).await
            {
                Ok(Ok(0)) => panic!("closed after {got} of {want} bytes"),
                Ok(Ok(n)) => {
                    chunk += n;
                    got += n;
                }
                Ok(Err(e)) => panic!("read failed after {got} of {want} bytes: {e}"),
                Err(_) => panic!("no data for 5 s after {got} of {want} bytes"),
            }
        }
    }
    assert_eq!(server.handle.stats().send_timeouts, 0);
    assert_eq!(server.handle.stats().connected, 1);
}

const MIB: usize = 1 << 20;

/// Frames up to 2 MiB and a send timeout far longer than the tests that use it.
fn big_frames() -> Config {
    Config {
        max_frame: 2 * MIB,
        send_timeout: Duration::from_secs(30),
        ..Config::default()
    }
}

/// A server with `config` and four connected clients that never read.
async fn four_stalled(config: Config) -> (TestServer, Vec<TcpStream>) {
    let mut server = start(config).await;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stalled_client(&mut server).await);
    }
    (server, stalled)
}

/// Memory a stalled client can hold is bounded in bytes, not only in frames: with 1 MiB
/// frames, clients that never read are cut off once they hold --client-queue-bytes,
/// at once (not after the send timeout), and the queued total stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_their_byte_bound_are_cut_off_at_once() {
    let (mut server, _stalled) = four_stalled(Config {
        client_queue_bytes: 4 * MIB,
        ..big_frames()
    })
    .await;
    let frame = vec![b'm'; MIB];
    let mut first_full = None;
    let mut peak = 0;
    for _ in 0..100 {
        match server.handle.relay(&frame) {
            Ok(d) if d.dropped > 0 && first_full.is_none() => {
                first_full = Some(std::time::Instant::now());
            }
            _ => {}
        }
        peak = peak.max(server.handle.stats().queued_bytes);
    }
    let first_full = first_full.expect("the stalled clients' queues fill");
    for _ in 0..4 {
        let (_, reason) = server.expect_closed().await;
        assert_eq!(reason.name(), "slow-client");
    }
    let took = first_full.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "closed after {took:?}, not at once"
    );
    assert!(peak <= 4 * (4 * MIB + MIB), "peak queued {peak} bytes");
    assert_eq!(server.handle.stats().connected, 0);
    assert_eq!(
        server.handle.stats().queued_bytes,
        0,
        "their queues were released"
    );
}

/// --max-queued-bytes bounds what all clients hold together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_queued_bytes_are_bounded() {
    let (server, _stalled) = four_stalled(Config {
        client_queue_bytes: 64 * MIB,
        max_queued_bytes: 6 * MIB,
        slow_client: SlowClientPolicy::Drop,
        ..big_frames()
    })
    .await;
    let frame = vec![b't'; MIB];
    let mut dropped = 0;
    for _ in 0..20 {
        dropped += server.handle.relay(&frame).unwrap().dropped;
        assert!(server.handle.stats().queued_bytes <= 6 * MIB);
    }
    assert!(dropped > 0, "the total bound refused frames");
    assert_eq!(server.handle.stats().connected, 4, "drop policy: they stay");
}

/// A reader that keeps up: reads `total` frames of `size` bytes, publishing how many
/// arrived (for the sender's pacing); its task returns the count.
fn keeping_up(
    mut client: Client,
    size: usize,
    total: usize,
) -> (tokio::task::JoinHandle<usize>, watch::Receiver<usize>) {
    let (seen_tx, seen) = watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut n = 0usize;
        while let Some(Ok(got)) = client.next().await {
            assert_eq!(got.len(), size);
            n += 1;
            seen_tx.send_replace(n);
            if n == total {
                break;
            }
        }
        n
    });
    (reader, seen)
}

/// Regression (issue 24): a relayed frame counted once per client against
/// --max-queued-bytes although the clients share its bytes, so 66 readers that stopped
/// got the healthy one cut off as slow-client after 6 MB while the process held 19 MiB.
/// Now a shared frame counts once, and when the total is full the clients holding the
/// most are cut first: 66 stalled readers and 1 healthy one, 100 relays of 1 MiB, the
/// healthy one gets every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_six_stalled_readers_never_cut_off_the_one_that_keeps_up() {
    let mut server = start(Config {
        max_clients: 80,
        client_queue_bytes: 64 * MIB,
        max_queued_bytes: 32 * MIB,
        ..big_frames()
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..66 {
        stalled.push(stalled_client(&mut server).await);
    }
    let (healthy, _) = server.connect().await;
    let frame = vec![b'h'; MIB];
    let (reader, mut seen) = keeping_up(healthy, MIB, 100);
    let mut peak = 0;
    for i in 0..100usize {
        // A reader that keeps up: at most 4 frames behind the sender.
        tokio::time::timeout(PATIENCE, seen.wait_for(|n| n + 4 >= i))
            .await
            .expect("the healthy reader keeps up")
            .unwrap();
        let delivery = server.handle.relay(&frame).unwrap();
        assert!(
            delivery.queued >= 1,
            "the healthy reader is always a recipient"
        );
        peak = peak.max(server.handle.stats().queued_bytes);
    }
    let got = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("the healthy reader got its frames in time")
        .unwrap();
    assert_eq!(got, 100, "the healthy reader got every frame");
    assert!(peak <= 32 * MIB + MIB, "peak queued {peak} bytes");
    let stats = server.handle.stats();
    assert_eq!(
        stats.slow_clients, 66,
        "every stalled one was cut: {stats:?}"
    );
}

/// Found in review: with small frames (copied per client) a full total refused the
/// client that keeps up and cut it off. Now one with nothing queued always takes the
/// frame, and the stalled ones are cut: 3 stalled readers and 1 that keeps up, 4,000
/// relays of 4,000 bytes through a 1 MiB total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_small_frames_the_one_that_keeps_up_is_never_cut_off() {
    let mut server = start(Config {
        client_queue_bytes: 64 * MIB,
        max_queued_bytes: MIB,
        ..big_frames()
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(stalled_client(&mut server).await);
    }
    let (healthy, _) = server.connect().await;
    let frame = vec![b's'; 4000];
    let (reader, mut seen) = keeping_up(healthy, 4000, 4000);
    for i in 0..4000usize {
        tokio::time::timeout(PATIENCE, seen.wait_for(|n| n + 16 >= i))
            .await
            .expect("the healthy reader keeps up")
            .unwrap();
        let delivery = server.handle.relay(&frame).unwrap();
        assert!(
            delivery.queued >= 1,
            "relay {i}: the healthy reader is a recipient"
        );
    }
    let got = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("the healthy reader got its frames in time")
        .unwrap();
    assert_eq!(got, 4000);
    assert_eq!(server.handle.stats().slow_clients, 3);
}
