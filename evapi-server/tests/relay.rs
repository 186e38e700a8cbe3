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
