use evapi_proto::Framing;
use evapi_server::{Admit, Config, Target};
use tokio::net::TcpStream;

use crate::common::*;

#[tokio::test]
async fn the_ninth_client_is_closed_at_once_and_the_others_stay() {
    let mut server = start(config(Framing::Netstring)).await;
    let mut clients = Vec::new();
    for i in 0..8 {
        let (c, env) = server.connect().await;
        assert_eq!(env.conidx, i, "slots handed out lowest first");
        clients.push(c);
    }
    let ninth = TcpStream::connect(server.addr).await.unwrap();
    let mut ninth = tokio_util::codec::Framed::new(ninth, evapi_proto::FrameCodec::default());
    expect_eof(&mut ninth).await;
    assert_eq!(server.handle.stats().refused_max_clients, 1);
    assert_eq!(server.handle.relay(b"x").unwrap().queued, 8);
    for c in &mut clients {
        assert_eq!(recv(c).await, "x");
    }
    assert!(
        server.events.try_recv().is_err(),
        "no route ran for the ninth"
    );
}

#[tokio::test]
async fn conidx_is_reused_lowest_first_and_connid_never() {
    let mut server = start(config(Framing::Netstring)).await;
    let (_a, ea) = server.connect().await;
    let (b, eb) = server.connect().await;
    let (_c, ec) = server.connect().await;
    assert_eq!((ea.conidx, eb.conidx, ec.conidx), (0, 1, 2));
    // The leaving client had a tag: the next one in its slot must not get it (Kamailio
    // 5.6 leaves it with the slot; see docs/kamailio-compat.md).
    server
        .handle
        .set_tag(Target::Connid(eb.connid), "t")
        .unwrap();
    drop(b);
    let (env, reason) = server.expect_closed().await;
    assert_eq!((env.conidx, reason.name()), (1, "peer"));
    let (_d, ed) = server.connect().await;
    assert_eq!(ed.conidx, 1, "freed slot reused");
    assert!(ed.connid > ec.connid, "connid is new");
    assert!(ed.tag.is_none(), "the new client does not inherit a tag");
    assert!(
        matches!(
            server.handle.unicast(b"for t", "t"),
            Err(evapi_server::RelayError::NoTag(_))
        ),
        "nobody has the old tag"
    );
    assert!(server
        .handle
        .set_tag(Target::Connid(eb.connid), "t")
        .is_err());
}

#[tokio::test]
async fn the_allow_list_refuses_before_any_route() {
    let config = Config {
        allow: vec!["10.0.0.0/8".parse().unwrap()],
        ..Config::default()
    };
    let mut server = start(config).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut refused = tokio_util::codec::Framed::new(stream, evapi_proto::FrameCodec::default());
    expect_eof(&mut refused).await;
    assert_eq!(server.handle.stats().refused_allow, 1);
    assert!(server.events.try_recv().is_err(), "no route ran");

    let config = Config {
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        ..Config::default()
    };
    let mut server = start(config).await;
    let (mut ok, _) = server.connect().await;
    let _ = server.handle.relay(b"in").unwrap();
    assert_eq!(recv(&mut ok).await, "in");
}

#[tokio::test]
async fn connection_new_can_tag_or_reject() {
    let mut server = start_with(config(Framing::Netstring), |env| {
        if env.connid == 0 {
            Admit::AcceptWithTag("first".into())
        } else {
            Admit::Reject
        }
    })
    .await;
    let (mut a, _) = server.connect().await;
    assert_eq!(server.handle.unicast(b"hi", "first").unwrap().queued, 1);
    assert_eq!(recv(&mut a).await, "hi");

    let (mut b, eb) = server.connect().await;
    expect_eof(&mut b).await;
    let (env, reason) = server.expect_closed().await;
    assert_eq!((env.connid, reason.name()), (eb.connid, "rejected"));
    assert_eq!(server.handle.connected(), 1);
}
