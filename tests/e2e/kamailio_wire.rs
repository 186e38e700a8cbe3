//! Differential wire tests: the same client byte streams to Kamailio 5.6 and to
//! evapi-server running the same echo routing (`tests/interop/kamailio.cfg`,
//! `evapi_tests::echo`). Where Kamailio loses or corrupts data, the test asserts our
//! correct result and pins Kamailio's behaviour, named; docs/kamailio-compat.md lists
//! every difference.

use std::time::Duration;

use evapi_server::Config;
use evapi_tests::echo::Ours;
use evapi_tests::kamailio::{self, Kamailio, Options};
use evapi_tests::wire::{without_conidx, Raw};

/// Send `parts` on a fresh connection and return what came back, conidx hidden;
/// `expect_len` is the length of the answer expected from this peer (0: none).
fn exchange(addr: std::net::SocketAddr, parts: &[&[u8]], expect_len: usize) -> Vec<u8> {
    let mut raw = Raw::connect(addr);
    std::thread::sleep(evapi_tests::wire::GAP);
    raw.send_parts(parts);
    without_conidx(&raw.collect(expect_len))
}

struct Case {
    name: &'static str,
    parts: Vec<&'static [u8]>,
    /// What a correct server sends back.
    correct: &'static [u8],
    /// What Kamailio 5.6 sends back, when it differs, and which of its behaviours that is.
    kamailio: Option<(&'static [u8], &'static str)>,
}

fn cases() -> Vec<Case> {
    let mut cases = vec![
        Case { name: "several frames in one write", parts: vec![b"5:hello,5:world,"], correct: b"12:echo:#:hello,12:echo:#:world,", kamailio: None },
        Case { name: "white space between frames", parts: vec![b"5:hello,\r\n 5:world,\n"], correct: b"12:echo:#:hello,12:echo:#:world,", kamailio: None },
        Case { name: "leading zeros in the length", parts: vec![b"005:hello,"], correct: b"12:echo:#:hello,", kamailio: None },
        Case { name: "UTF-8 payload", parts: vec!["6:h\u{e9}llo,".as_bytes()], correct: "13:echo:#:h\u{e9}llo,".as_bytes(), kamailio: None },
        Case { name: "',' and ':' inside the payload", parts: vec![b"9:a,b:c,d:e,"], correct: b"16:echo:#:a,b:c,d:e,", kamailio: None },
        Case { name: "binary payload", parts: vec![b"3:\xff\xfe\xfd,"], correct: b"10:echo:#:\xff\xfe\xfd,", kamailio: None },
        Case {
            name: "NUL byte in the payload",
            parts: vec![b"5:ab\x00cd,"],
            correct: b"12:echo:#:ab\x00cd,",
            kamailio: Some((b"12:echo:#:ab,", "the relayed text stops at the NUL while the length still counts it: a corrupt frame")),
        },
        Case {
            name: "length above 32 bits",
            parts: vec![b"4294967301:hello,"],
            correct: b"<EOF>",
            kamailio: Some((b"12:echo:#:hello,", "the length wraps modulo 2^32 (4294967301 reads as 5)")),
        },
        Case {
            name: "eleven length digits",
            parts: vec![b"00000000005:hello,"],
            correct: b"<EOF>",
            kamailio: Some((b"12:echo:#:hello,", "any number of digits is accepted")),
        },
        Case {
            name: "empty frame",
            parts: vec![b"0:,"],
            correct: b"7:echo:#:,",
            kamailio: Some((b"", "an empty frame never reaches message-received")),
        },
        Case {
            name: "garbage before a good frame",
            parts: vec![b"x5:hello,"],
            correct: b"<EOF>",
            kamailio: Some((b"", "the read is dropped silently and the connection stays open")),
        },
    ];
    // One frame split at every position, in two writes.
    let frame: &'static [u8] = b"5:hello,";
    for cut in 1..frame.len() {
        let kamailio = match cut {
            1 => Some((
                &b""[..],
                "a frame split inside its length digits is dropped",
            )),
            7 => Some((
                &b""[..],
                "a frame split just before its trailing ',' is dropped",
            )),
            _ => None,
        };
        cases.push(Case {
            name: Box::leak(format!("5:hello, split after byte {cut}").into_boxed_str()),
            parts: vec![&frame[..cut], &frame[cut..]],
            correct: b"12:echo:#:hello,",
            kamailio,
        });
    }
    cases
}

fn shown(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

#[test]
#[ignore = "needs kamailio (apt-get install kamailio kamailio-extra-modules); .ci/run runs it"]
fn the_same_streams_give_the_same_results_except_where_kamailio_loses_data() {
    kamailio::require();
    let kam = Kamailio::start(&Options::default());
    let ours = Ours::start(Config::default());
    let mut report = String::new();
    let len = |b: &[u8]| if b == b"<EOF>" { 1 } else { b.len() };
    for case in cases() {
        let got_ours = exchange(ours.addr, &case.parts, len(case.correct));
        assert_eq!(shown(&got_ours), shown(case.correct), "ours, {}", case.name);
        let (want_kam, why) = case.kamailio.unwrap_or((case.correct, "same"));
        let got_kam = exchange(kam.evapi, &case.parts, len(want_kam));
        // A split write may reach Kamailio in one read when the machine is busy; it
        // then delivers correctly. Either outcome is accepted for split cases.
        let coalesced = case.parts.len() > 1 && got_kam == case.correct;
        assert!(
            got_kam == want_kam || coalesced,
            "kamailio, {}: got {}, expected {} ({why})",
            case.name,
            shown(&got_kam),
            shown(want_kam)
        );
        report.push_str(&format!(
            "{:<40} ours {:<28} kamailio {}\n",
            case.name,
            shown(&got_ours),
            shown(&got_kam)
        ));
    }
    eprintln!("{report}");
}

/// `payload` as one netstring.
fn ns(payload: &str) -> Vec<u8> {
    format!("{}:{payload},", payload.len()).into_bytes()
}

/// Send `who-NAME` and read until its echo: the sender's conidx.
fn conidx_of(raw: &mut Raw, name: &str) -> usize {
    let msg = format!("who-{name}");
    raw.send_parts(&[&ns(&msg)]);
    let got = String::from_utf8_lossy(&raw.until(msg.as_bytes())).into_owned();
    let end = got.find(&format!(":{msg}")).expect("own echo");
    let start = got[..end].rfind("echo:").expect("echo prefix") + 5;
    got[start..end].parse().expect("conidx")
}

#[test]
#[ignore = "needs kamailio (apt-get install kamailio kamailio-extra-modules); .ci/run runs it"]
fn conidx_assignment_and_reuse_and_the_ninth_client() {
    kamailio::require();
    let kam = Kamailio::start(&Options::default());
    let ours = Ours::start(Config::default());
    for (peer, addr) in [("ours", ours.addr), ("kamailio", kam.evapi)] {
        let mut clients: Vec<Raw> = (0..3).map(|_| Raw::connect(addr)).collect();
        let ids: Vec<usize> = clients
            .iter_mut()
            .enumerate()
            .map(|(i, c)| conidx_of(c, &i.to_string()))
            .collect();
        assert_eq!(ids, [0, 1, 2], "{peer}: lowest free slot first");
        drop(clients.remove(1));
        if peer == "kamailio" {
            assert!(kam.wait_log("evapi connection-closed conidx=1", Duration::from_secs(5)));
        } else {
            while ours.handle.connected() != 2 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let mut d = Raw::connect(addr);
        assert_eq!(
            conidx_of(&mut d, "d"),
            1,
            "{peer}: the freed slot is reused"
        );
        clients.push(d);
        for i in 0..5 {
            let mut c = Raw::connect(addr);
            assert_eq!(conidx_of(&mut c, &format!("more{i}")), 3 + i, "{peer}");
            clients.push(c);
        }
        // Eight connected: the ninth is accepted and closed at once.
        let mut ninth = Raw::connect(addr);
        assert_eq!(ninth.drain(), b"<EOF>", "{peer}: ninth client closed");
        // The others are untouched.
        assert_eq!(conidx_of(&mut clients[0], "still"), 0, "{peer}");
    }
}

#[test]
#[ignore = "needs kamailio (apt-get install kamailio kamailio-extra-modules); .ci/run runs it"]
fn multicast_and_unicast_by_tag_and_tags_do_not_outlive_their_client() {
    kamailio::require();
    let kam = Kamailio::start(&Options::default());
    let ours = Ours::start(Config::default());
    for (peer, addr) in [("ours", ours.addr), ("kamailio", kam.evapi)] {
        let mut a = Raw::connect(addr);
        let mut b = Raw::connect(addr);
        let mut c = Raw::connect(addr);
        // Each sees its own echo only once the peer has registered it: after this,
        // relays reach all three.
        for (name, client) in [("a", &mut a), ("b", &mut b), ("c", &mut c)] {
            let _ = conidx_of(client, name);
        }
        let _ = (a.drain(), b.drain(), c.drain());
        a.send_parts(&[&ns("tag:billing")]);
        let seen = String::from_utf8_lossy(&c.until(b"tagged:0:billing")).into_owned();
        assert!(seen.contains("tagged:0:billing"), "{peer}: {seen}");
        b.send_parts(&[&ns("tag:billing")]);
        let _ = c.until(b"tagged:1:billing");
        let _ = (a.drain(), b.drain(), c.drain());

        c.send_parts(&[&ns("mcast:billing:hi")]);
        assert_eq!(a.drain(), b"2:hi,", "{peer}: multicast reaches a");
        assert_eq!(b.drain(), b"2:hi,", "{peer}: multicast reaches b");
        assert_eq!(c.drain(), b"", "{peer}: not tagged, nothing");
        c.send_parts(&[&ns("ucast:billing:one")]);
        assert_eq!(
            a.drain(),
            b"3:one,",
            "{peer}: unicast goes to the first tagged client"
        );
        assert_eq!(b.drain(), b"", "{peer}");

        // a leaves; d takes slot 0. Does d inherit a's tag?
        let closed = "evapi connection-closed conidx=0";
        let before = kam.log().matches(closed).count();
        drop(a);
        if peer == "kamailio" {
            assert!(kam.wait_log_count(closed, before + 1, Duration::from_secs(5)));
        } else {
            while ours.handle.connected() != 2 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let mut d = Raw::connect(addr);
        assert_eq!(conidx_of(&mut d, "d"), 0, "{peer}");
        let _ = (b.drain(), c.drain(), d.drain());
        c.send_parts(&[&ns("ucast:billing:again")]);
        let (to_b, to_d) = (b.drain(), d.drain());
        if peer == "ours" {
            assert_eq!(
                (to_b.as_slice(), to_d.as_slice()),
                (&b"5:again,"[..], &b""[..]),
                "ours: d has no tag"
            );
        } else {
            // Kamailio 5.6: the tag stays with the slot, so d, which never set a tag,
            // gets the unicast meant for the billing app.
            assert_eq!(
                (to_b.as_slice(), to_d.as_slice()),
                (&b""[..], &b"5:again,"[..]),
                "kamailio: stale tag"
            );
        }
    }
}

/// Bare framing (`netstring_format 0`): one read is one message, up to 32 KiB; the
/// echo comes back as bare bytes. A 20 KB write is one message on both.
#[test]
#[ignore = "needs kamailio (apt-get install kamailio kamailio-extra-modules); .ci/run runs it"]
fn bare_framing_is_one_message_per_read_on_both() {
    kamailio::require();
    let kam = Kamailio::start(&Options {
        netstring: false,
        ..Options::default()
    });
    let ours = Ours::start(Config {
        framing: evapi_proto::Framing::Bare,
        ..Config::default()
    });
    let big = "b".repeat(20_000);
    for (peer, addr) in [("ours", ours.addr), ("kamailio", kam.evapi)] {
        let got = exchange(addr, &[b"hello"], "echo:0:hello".len());
        assert_eq!(shown(&got), shown(b"echo:#:hello"), "{peer}");
        let want = format!("echo:#:{big}");
        let got = exchange(addr, &[big.as_bytes()], want.len() - 1 + 1);
        assert_eq!(got.len(), want.len(), "{peer}: one echo of the whole write");
        assert_eq!(got, want.as_bytes(), "{peer}");
    }
}
