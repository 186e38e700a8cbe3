use evapi_proto::Framing;
use evapi_server::{Admit, Config, Target};
use tokio::net::{TcpListener, TcpStream};

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

/// Routes whose connection-new waits until the test says how to decide.
struct Deciding {
    decide: std::sync::Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Admit>>>,
    seen: tokio::sync::mpsc::Sender<u64>,
}

impl evapi_server::EventRoutes for Deciding {
    async fn connection_new(
        &self,
        _: &evapi_server::Handle,
        client: &evapi_server::ClientEnv,
    ) -> Admit {
        let _ = self.seen.send(client.connid).await;
        self.decide
            .lock()
            .await
            .recv()
            .await
            .unwrap_or(Admit::Reject)
    }
}

/// A connection is pending until connection-new accepts it: relays, multicasts and
/// unicasts sent meanwhile never reach it, and a rejected one never gets any.
#[tokio::test]
async fn relays_never_reach_a_connection_that_connection_new_has_not_accepted() {
    let (decide_tx, decide_rx) = tokio::sync::mpsc::channel(4);
    let (seen_tx, mut seen) = tokio::sync::mpsc::channel(4);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = evapi_server::Server::new(
        Config::default(),
        Deciding {
            decide: std::sync::Arc::new(tokio::sync::Mutex::new(decide_rx)),
            seen: seen_tx,
        },
    );
    let handle = server.handle();
    tokio::spawn(server.run(listener, std::future::pending()));

    // First client: rejected after relays were attempted while it was pending.
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut rejected = tokio_util::codec::Framed::new(stream, evapi_proto::FrameCodec::default());
    let connid = seen.recv().await.unwrap();
    handle.set_tag(Target::Connid(connid), "t").unwrap();
    assert!(matches!(
        handle.relay(b"early"),
        Err(evapi_server::RelayError::NoClient)
    ));
    assert!(handle.multicast(b"early", "t").is_err());
    assert!(handle.unicast(b"early", "t").is_err());
    decide_tx.send(Admit::Reject).await.unwrap();
    expect_eof(&mut rejected).await;

    // Second client: pending, then accepted; only what comes after reaches it.
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut accepted = tokio_util::codec::Framed::new(stream, evapi_proto::FrameCodec::default());
    let _ = seen.recv().await.unwrap();
    assert!(handle.relay(b"before").is_err());
    decide_tx.send(Admit::Accept).await.unwrap();
    tokio::time::timeout(PATIENCE, async {
        while handle.relay(b"after").is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("accepted within PATIENCE");
    assert_eq!(recv(&mut accepted).await, "after");
}
