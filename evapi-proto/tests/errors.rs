use std::fmt::Write;

use bytes::BytesMut;
use evapi_proto::{EncodeError, FrameCodec, Framing};

/// Decode `input` to the end and render the frames and the error a person would read.
fn render(framing: Framing, max: usize, input: &[u8]) -> String {
    let mut codec = FrameCodec::new(framing, max);
    let mut buf = BytesMut::from(input);
    let mut out = format!("{framing} max={max} input=\"{}\"\n", input.escape_ascii());
    loop {
        match codec.decode_frame_eof(&mut buf) {
            Ok(Some(frame)) => {
                writeln!(out, "  frame \"{}\"", frame.escape_ascii()).expect("String");
            }
            Ok(None) => {
                out.push_str("  end\n");
                return out;
            }
            Err(e) => {
                writeln!(out, "  error: {e}").expect("String");
                return out;
            }
        }
    }
}

#[test]
fn decode_error_messages() {
    let cases: &[(Framing, usize, &[u8])] = &[
        (Framing::Netstring, 1024, b"x"),
        (Framing::Netstring, 1024, b"3:abc,\n:"),
        (Framing::Netstring, 1024, b"12a:"),
        (Framing::Netstring, 1024, b"-5:hello,"),
        (Framing::Netstring, usize::MAX, b"12345678901:"),
        (Framing::Netstring, 1048576, b"2000000:"),
        (
            Framing::Netstring,
            1024,
            b"47:01234567890123456789012345678901234567890123456x",
        ),
        (Framing::Netstring, 1024, b"3:abc,10:abc"),
        (Framing::Netstring, 1024, b"3:a\xffc,4:\x00\x01\x02\x03;"),
        (Framing::Line, 8, b"short\n0123456789"),
        (Framing::Line, 8, b"ok\r\n0123456789\n"),
    ];
    let rendered: String = cases.iter().map(|(f, m, i)| render(*f, *m, i)).collect();
    insta::assert_snapshot!(rendered);
}

#[test]
fn encode_error_messages() {
    let mut dst = BytesMut::new();
    let cases: Vec<(Framing, usize, &[u8])> = vec![
        (Framing::Netstring, 4, b"hello"),
        (Framing::Bare, 4, b"hello"),
        (Framing::Line, 100, b"{\"a\":\n1}"),
        (Framing::Line, 100, b"ends in CR\r"),
    ];
    let rendered: String = cases
        .into_iter()
        .map(|(f, m, p)| {
            let err: EncodeError = FrameCodec::new(f, m)
                .encode_frame(p, &mut dst)
                .expect_err("each case is refused");
            format!("{f} max={m}: {err}\n")
        })
        .collect();
    assert!(dst.is_empty(), "a refused payload writes nothing");
    insta::assert_snapshot!(rendered);
}

/// Every error message quoted in docs/protocol.md is one the codecs really give (they
/// are all in the snapshots above), so the reference cannot drift from the code.
#[test]
fn the_errors_quoted_in_the_protocol_reference_are_real() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("../docs/protocol.md")).unwrap();
    let snapshots: String = ["decode", "encode"]
        .iter()
        .map(|k| {
            std::fs::read_to_string(root.join(format!(
                "tests/snapshots/integration__errors__{k}_error_messages.snap"
            )))
            .unwrap()
        })
        .collect();
    let quoted: Vec<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|q| {
            ["netstring: ", "line: ", "bare: "]
                .iter()
                .any(|p| q.starts_with(p))
        })
        .collect();
    assert!(quoted.len() >= 9, "found {quoted:?}");
    for q in quoted {
        assert!(
            snapshots.contains(q),
            "docs/protocol.md quotes {q:?}, which no codec gives"
        );
    }
}
