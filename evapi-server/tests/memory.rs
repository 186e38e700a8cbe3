use std::time::Duration;

use evapi_proto::{FrameCodec, Framing};
use evapi_server::{CloseReason, Config, Transport};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;

use crate::common::*;

/// In-memory connections run the same code as sockets, so time-driven behaviour can
/// be tested on a paused clock: a 30 s read timeout and a 5 s auth timeout pass in no
/// wall time at all.
#[tokio::test(start_paused = true)]
async fn in_memory_clients_on_a_paused_clock() {
    let (mut server, connector) = start_memory(Config {
        read_timeout: Duration::from_secs(30),
        ..Config::default()
    })
    .await;
    let stream = connector.connect().await.unwrap();
    let mut client = Framed::new(stream, FrameCodec::new(Framing::Netstring, 1 << 20));
    let env = server.next_new().await;
    assert_eq!(env.transport, Transport::Memory);
    let _ = server.handle.relay(b"to memory").unwrap();
    assert_eq!(client.next().await.unwrap().unwrap(), "to memory");
    client.send(&b"from memory"[..]).await.unwrap();
    assert_eq!(server.expect_msg().await.1, "from memory");

    // A slowloris in memory: half a frame, then nothing; closed at 30 s of test time.
    let mut loris = connector.connect().await.unwrap();
    let _ = server.next_new().await;
    loris.write_all(b"100:half").await.unwrap();
    let started = tokio::time::Instant::now();
    // (The helpers' own 10 s patience would fire first on a paused clock.)
    let closed = tokio::time::timeout(Duration::from_secs(60), server.events.recv()).await;
    assert!(
        matches!(closed, Ok(Some(Ev::Closed(_, CloseReason::ReadTimeout)))),
        "{closed:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(30));
}
