use evapi_proto::Framing;
use evapi_server::{Config, RelayError, Target};

use crate::common::*;

#[tokio::test]
async fn relay_reaches_every_client_in_every_framing() {
    for framing in Framing::ALL {
        let mut server = start(config(framing)).await;
        let (mut a, _) = server.connect().await;
        let (mut b, _) = server.connect().await;
        let (mut c, _) = server.connect().await;
        let d = server.handle.relay(br#"{"event":"hello"}"#).unwrap();
        assert_eq!(d.queued, 3, "{framing}");
        for client in [&mut a, &mut b, &mut c] {
            assert_eq!(recv(client).await, r#"{"event":"hello"}"#, "{framing}");
        }
    }
}

#[tokio::test]
async fn netstring_relay_is_byte_exact_on_the_wire() {
    use tokio::io::AsyncReadExt;
    let mut server = start(config(Framing::Netstring)).await;
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    server.next_new().await;
    let _ = server.handle.relay(b"a,b:c").unwrap();
    let _ = server.handle.relay("héllo".as_bytes()).unwrap();
    let mut buf = [0u8; 17];
    raw.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, "5:a,b:c,6:héllo,".as_bytes());
}

#[tokio::test]
async fn relay_with_no_client_or_empty_payload_sends_nothing() {
    let mut server = start(config(Framing::Netstring)).await;
    assert_eq!(server.handle.relay(b"x"), Err(RelayError::NoClient));
    let (mut a, _) = server.connect().await;
    assert_eq!(server.handle.relay(b""), Err(RelayError::Empty));
    let _ = server.handle.relay(b"after").unwrap();
    assert_eq!(recv(&mut a).await, "after", "the empty relay wrote nothing");
}

#[tokio::test]
async fn multicast_and_unicast_follow_tags() {
    let mut server = start(config(Framing::Netstring)).await;
    let (mut a, ea) = server.connect().await;
    let (mut b, eb) = server.connect().await;
    let (mut c, ec) = server.connect().await;
    let h = &server.handle;
    h.set_tag(Target::Conidx(ea.conidx), "billing").unwrap();
    h.set_tag(Target::Connid(eb.connid), "routing").unwrap();
    h.set_tag(Target::Conidx(ec.conidx), "billing").unwrap();

    assert_eq!(h.multicast(b"m1", "billing").unwrap().queued, 2);
    assert_eq!(h.unicast(b"u1", "billing").unwrap().queued, 1);
    assert_eq!(h.unicast(b"u2", "routing").unwrap().queued, 1);
    assert_eq!(
        h.multicast(b"m2", "nobody"),
        Err(RelayError::NoTag("nobody".into()))
    );
    assert_eq!(
        h.unicast(b"u3", "nobody"),
        Err(RelayError::NoTag("nobody".into()))
    );
    let _ = h.relay(b"all").unwrap();

    // unicast goes to the first (lowest conidx) client with the tag: a.
    assert_eq!(recv(&mut a).await, "m1");
    assert_eq!(recv(&mut a).await, "u1");
    assert_eq!(recv(&mut a).await, "all");
    assert_eq!(recv(&mut b).await, "u2");
    assert_eq!(recv(&mut b).await, "all");
    assert_eq!(recv(&mut c).await, "m1");
    assert_eq!(recv(&mut c).await, "all");

    let tags: Vec<_> = h.clients().into_iter().map(|c| c.tag).collect();
    assert_eq!(
        tags,
        [
            Some("billing".to_owned()),
            Some("routing".to_owned()),
            Some("billing".to_owned())
        ]
    );
}

#[tokio::test]
async fn tags_of_64_bytes_or_more_are_refused_as_kamailio_does() {
    let mut server = start(config(Framing::Netstring)).await;
    let (_a, ea) = server.connect().await;
    let long = "x".repeat(64);
    let err = server
        .handle
        .set_tag(Target::Conidx(ea.conidx), &long)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tag of 64 bytes is longer than the 63-byte limit"
    );
    server
        .handle
        .set_tag(Target::Conidx(ea.conidx), &"x".repeat(63))
        .unwrap();
}

#[tokio::test]
async fn close_flushes_then_closes_and_reports_server() {
    let mut server = start(config(Framing::Netstring)).await;
    let (mut a, ea) = server.connect().await;
    let (mut b, _) = server.connect().await;
    let _ = server.handle.relay(b"bye").unwrap();
    server.handle.close(Target::Conidx(ea.conidx)).unwrap();
    assert_eq!(
        recv(&mut a).await,
        "bye",
        "queued frame flushed before close"
    );
    expect_eof(&mut a).await;
    let (env, reason) = server.expect_closed().await;
    assert_eq!((env.connid, reason.name()), (ea.connid, "server"));
    // The other client is untouched.
    assert_eq!(recv(&mut b).await, "bye");
    let _ = server.handle.relay(b"still here").unwrap();
    assert_eq!(recv(&mut b).await, "still here");
    // A connid that is gone is an error, never another client.
    assert!(server.handle.close(Target::Connid(ea.connid)).is_err());
}

#[tokio::test]
async fn control_commands_name_their_target_as_a_field_like_set_tag() {
    let mut server = start(config(Framing::Netstring)).await;
    let (mut a, ea) = server.connect().await;
    let close = format!(r#"{{"close":true,"connid":{}}}"#, ea.connid);
    assert_eq!(
        evapi_server::control::execute(&server.handle, &close),
        r#"{"ok":true}"#
    );
    assert_eq!(server.expect_closed().await.0.connid, ea.connid);
    expect_eof(&mut a).await;
    // Gone: an error naming it, never another client.
    let reply = evapi_server::control::execute(&server.handle, &close);
    assert_eq!(
        reply,
        format!(
            r#"{{"ok":false,"error":"no client with connid {}"}}"#,
            ea.connid
        )
    );
}

#[tokio::test]
async fn an_outgoing_frame_over_max_frame_is_refused_and_nothing_is_sent() {
    let config = Config {
        max_frame: 100,
        ..config(Framing::Netstring)
    };
    let mut server = start(config).await;
    let (mut a, _) = server.connect().await;
    let err = server.handle.relay(&[b'x'; 101]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "netstring: payload of 101 bytes exceeds the limit of 100 bytes"
    );
    let _ = server.handle.relay(&[b'y'; 100]).unwrap();
    assert_eq!(recv(&mut a).await, "y".repeat(100));
}

/// Three clients of one tag, and a fourth with another: how many of `n` unicasts each
/// of the three gets under `policy` (with a key per unicast from `key`).
async fn spread(
    policy: evapi_server::UnicastPolicy,
    n: usize,
    key: impl Fn(usize) -> Option<String>,
) -> Vec<usize> {
    let mut server = start(config(Framing::Netstring)).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (c, env) = server.connect().await;
        server
            .handle
            .set_tag(Target::Connid(env.connid), "app")
            .unwrap();
        clients.push(c);
    }
    let (_other, env) = server.connect().await;
    server
        .handle
        .set_tag(Target::Connid(env.connid), "other")
        .unwrap();
    for i in 0..n {
        let k = key(i);
        let payload = format!("e{i}");
        let d = server
            .handle
            .unicast_by(
                payload.as_bytes(),
                "app",
                policy,
                k.as_deref().map(str::as_bytes),
            )
            .unwrap();
        assert_eq!(d.queued, 1);
    }
    let mut counts = vec![0; 3];
    let stats = server.handle.clients();
    for (i, info) in stats.iter().take(3).enumerate() {
        counts[i] = usize::try_from(info.frames_out).unwrap();
    }
    // Frames are written asynchronously: wait until all n are out.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while counts.iter().sum::<usize>() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        for (i, info) in server.handle.clients().iter().take(3).enumerate() {
            counts[i] = usize::try_from(info.frames_out).unwrap();
        }
    }
    drop(clients);
    counts
}

#[tokio::test]
async fn unicast_policies_spread_or_pin_as_asked() {
    use evapi_server::UnicastPolicy;
    assert_eq!(
        spread(UnicastPolicy::First, 300, |_| None).await,
        [300, 0, 0],
        "first: as Kamailio"
    );
    assert_eq!(
        spread(UnicastPolicy::RoundRobin, 300, |_| None).await,
        [100, 100, 100]
    );
    // hash: 30 calls of 10 events each; every event of a call reaches one client.
    let counts = spread(UnicastPolicy::Hash, 300, |i| {
        Some(format!("call-{}", i / 10))
    })
    .await;
    assert_eq!(counts.iter().sum::<usize>(), 300);
    assert!(counts.iter().all(|n| n % 10 == 0), "{counts:?}");
    assert!(
        counts.iter().filter(|n| **n > 0).count() >= 2,
        "spread: {counts:?}"
    );
}

#[tokio::test]
async fn hash_unicast_keeps_a_key_on_its_client_and_a_command_picks_its_policy() {
    use evapi_server::UnicastPolicy;
    let mut server = start(config(Framing::Netstring)).await;
    let (mut a, ea) = server.connect().await;
    let (mut b, eb) = server.connect().await;
    let h = server.handle.clone();
    for env in [&ea, &eb] {
        h.set_tag(Target::Connid(env.connid), "app").unwrap();
    }
    // The same key, ten times: one client gets all ten.
    for i in 0..10 {
        let _ = h
            .unicast_by(
                format!("k{i}").as_bytes(),
                "app",
                UnicastPolicy::Hash,
                Some(b"call-7"),
            )
            .unwrap();
    }
    let first = tokio::select! {
        m = recv(&mut a) => (0, m),
        m = recv(&mut b) => (1, m),
    };
    assert_eq!(first.1, "k0");
    let pinned = if first.0 == 0 { &mut a } else { &mut b };
    for i in 1..10 {
        assert_eq!(recv(pinned).await, format!("k{i}"));
    }
    // least-queued: the control command form, with a policy field.
    let line = r#"{"unicast":"lq","tag":"app","policy":"least-queued"}"#;
    let reply = evapi_server::control::execute(&h, line);
    assert_eq!(reply, r#"{"ok":true,"delivered":1}"#);
    let reply =
        evapi_server::control::execute(&h, r#"{"unicast":"x","tag":"app","policy":"random"}"#);
    assert!(reply.contains("unknown \\\"random\\\""), "{reply}");
}

#[tokio::test]
async fn close_by_tag_closes_exactly_those_clients() {
    let mut server = start(config(Framing::Netstring)).await;
    let (_a, ea) = server.connect().await;
    let (mut b, eb) = server.connect().await;
    let (_c, ec) = server.connect().await;
    let h = server.handle.clone();
    h.set_tag(Target::Connid(ea.connid), "old").unwrap();
    h.set_tag(Target::Connid(eb.connid), "new").unwrap();
    h.set_tag(Target::Connid(ec.connid), "old").unwrap();
    let reply = evapi_server::control::execute(&h, r#"{"close_tag":"old"}"#);
    assert_eq!(reply, r#"{"ok":true,"closed":2}"#);
    let mut closed = vec![
        server.expect_closed().await.0.connid,
        server.expect_closed().await.0.connid,
    ];
    closed.sort_unstable();
    assert_eq!(closed, [ea.connid, ec.connid]);
    assert_eq!(h.connected(), 1);
    let _ = h.relay(b"still here").unwrap();
    assert_eq!(recv(&mut b).await, "still here");
    assert_eq!(
        h.close_tag("old"),
        Err(evapi_server::ControlError::NoTag("old".into()))
    );
    // Re-tagging moves a client between tags in the index.
    h.set_tag(Target::Connid(eb.connid), "old").unwrap();
    assert_eq!(
        h.multicast(b"m", "new"),
        Err(RelayError::NoTag("new".into()))
    );
    assert_eq!(h.multicast(b"m", "old").unwrap().queued, 1);
}

#[tokio::test]
async fn drain_stops_accepting_and_ends_when_the_clients_leave() {
    let mut server = start(config(Framing::Netstring)).await;
    let (mut a, _) = server.connect().await;
    server.handle.drain();
    // New connections are refused (the listener is closed).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::net::TcpStream::connect(server.addr).await {
            Err(_) => break,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Ok(_) => panic!("still accepting after drain"),
        }
    }
    // The connected client is still served.
    let _ = server.handle.relay(b"served").unwrap();
    assert_eq!(recv(&mut a).await, "served");
    assert!(!server.task.is_finished());
    drop(a);
    tokio::time::timeout(PATIENCE, &mut server.task)
        .await
        .expect("run returns once the last client left")
        .unwrap();
}
