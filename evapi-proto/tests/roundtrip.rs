use bytes::{Bytes, BytesMut};
use evapi_proto::{FrameCodec, Framing};
use proptest::collection::vec;
use proptest::prelude::*;

const MAX: usize = 4096;

/// Piece boundaries of `len` bytes cut at `cuts` (taken modulo `len + 1`).
fn bounds(len: usize, cuts: &[usize]) -> Vec<usize> {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    bounds.extend([0, len]);
    bounds.sort_unstable();
    bounds.dedup();
    bounds
}

/// Feed `wire` to a fresh decoder in pieces cut at `cuts`, collecting every message.
fn decode_chunked(framing: Framing, wire: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut codec = FrameCodec::new(framing, MAX);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for pair in bounds(wire.len(), cuts).windows(2) {
        buf.extend_from_slice(&wire[pair[0]..pair[1]]);
        while let Some(m) = codec.decode_frame(&mut buf).expect("valid stream") {
            out.push(m);
        }
    }
    while let Some(m) = codec.decode_frame_eof(&mut buf).expect("valid end") {
        out.push(m);
    }
    out
}

fn whitespace() -> impl Strategy<Value = Vec<u8>> {
    vec(prop::sample::select(vec![b' ', b'\t', b'\r', b'\n']), 0..4)
}

proptest! {
    #[test]
    fn netstring_any_payloads_any_chunks_any_whitespace(
        frames in vec((vec(any::<u8>(), 0..300), whitespace()), 0..20),
        cuts in vec(any::<usize>(), 0..30),
    ) {
        let codec = FrameCodec::new(Framing::Netstring, MAX);
        let mut wire = BytesMut::new();
        for (payload, ws) in &frames {
            wire.extend_from_slice(ws);
            codec.encode_frame(payload, &mut wire).expect("under limit");
        }
        let got = decode_chunked(Framing::Netstring, &wire, &cuts);
        let want: Vec<&[u8]> = frames.iter().map(|(p, _)| p.as_slice()).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn line_any_lf_free_payloads_any_chunks(
        frames in vec("[^\n]{0,200}", 0..20),
        cuts in vec(any::<usize>(), 0..30),
    ) {
        // A payload ending in CR cannot be line-framed (the encoder refuses it).
        let frames: Vec<String> = frames.into_iter().filter(|f| !f.ends_with('\r')).collect();
        let codec = FrameCodec::new(Framing::Line, MAX);
        let mut wire = BytesMut::new();
        for payload in &frames {
            codec.encode_frame(payload.as_bytes(), &mut wire).expect("encodable");
        }
        let got = decode_chunked(Framing::Line, &wire, &cuts);
        let want: Vec<&[u8]> = frames.iter().map(|p| p.as_bytes()).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn bare_delivers_each_read_as_one_message_and_loses_nothing(
        payloads in vec(vec(any::<u8>(), 0..300), 0..20),
        cuts in vec(any::<usize>(), 0..30),
    ) {
        let codec = FrameCodec::new(Framing::Bare, MAX);
        let mut wire = BytesMut::new();
        for p in &payloads {
            codec.encode_frame(p, &mut wire).expect("under limit");
        }
        let all = payloads.concat();
        prop_assert_eq!(&wire[..], &all[..], "bare adds nothing");
        let got = decode_chunked(Framing::Bare, &wire, &cuts);
        prop_assert_eq!(got.concat(), all);
        // Exactly one message per non-empty read.
        let reads = bounds(wire.len(), &cuts).len().saturating_sub(1);
        prop_assert_eq!(got.len(), reads);
    }

    #[test]
    fn netstring_garbage_after_good_frames_loses_none_of_them(
        good in vec(vec(any::<u8>(), 0..50), 0..5),
        garbage in vec(any::<u8>(), 1..64),
    ) {
        let codec = FrameCodec::new(Framing::Netstring, 64);
        let mut wire = BytesMut::new();
        for p in &good {
            codec.encode_frame(p, &mut wire).expect("under limit");
        }
        wire.extend_from_slice(&garbage);
        let mut codec = FrameCodec::new(Framing::Netstring, 64);
        let mut got = Vec::new();
        while let Ok(Some(m)) = codec.decode_frame_eof(&mut wire) {
            got.push(m);
        }
        prop_assert!(got.len() >= good.len());
        for (g, want) in got.iter().zip(&good) {
            prop_assert_eq!(&g[..], &want[..]);
        }
    }
}
