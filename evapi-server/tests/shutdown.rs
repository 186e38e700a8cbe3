use evapi_proto::Framing;

use crate::common::*;

#[tokio::test]
async fn shutdown_flushes_queued_frames_then_closes_and_returns() {
    let mut server = start(config(Framing::Netstring)).await;
    let (mut a, _) = server.connect().await;
    let (mut b, _) = server.connect().await;
    for i in 0..1000 {
        let _ = server
            .handle
            .relay(format!("event {i}").as_bytes())
            .unwrap();
    }
    server.handle.shutdown();
    for client in [&mut a, &mut b] {
        for i in 0..1000 {
            assert_eq!(recv(client).await, format!("event {i}"));
        }
        expect_eof(client).await;
    }
    let mut reasons = vec![
        server.expect_closed().await.1.name(),
        server.expect_closed().await.1.name(),
    ];
    reasons.dedup();
    assert_eq!(reasons, ["shutdown"]);
    tokio::time::timeout(PATIENCE, &mut server.task)
        .await
        .expect("run returns after shutdown")
        .unwrap();
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}
