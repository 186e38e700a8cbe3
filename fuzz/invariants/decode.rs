//! Invariants of the decoders under arbitrary bytes cut into arbitrary reads, shared by
//! the `decode` fuzz target and the corpus replay test (`tests/fuzz_replay.rs`).
//!
//! Invariants checked, beyond "no panic":
//! - the frames decoded from the stream do not depend on how it was cut into reads;
//! - a netstring decoder never holds more than `MAX_FRAME + 1` bytes for a frame
//!   beyond what the peer actually sent (no allocation driven by a length prefix);
//! - every frame decoded re-encodes to bytes that decode back to the same frame.
use bytes::BytesMut;
use evapi_proto::{FrameCodec, Framing};

const MAX_FRAME: usize = 256;

/// Frames and whether the stream ended in an error, feeding `data` in reads of the
/// sizes given by `cuts` (each 1..=64), then ending the stream.
fn run(framing: Framing, data: &[u8], cuts: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut codec = FrameCodec::new(framing, MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = data;
    let mut sizes = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = sizes
            .next()
            .map_or(rest.len(), |&c| usize::from(c % 64) + 1)
            .min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match codec.decode_frame(&mut buf) {
                Ok(Some(f)) => frames.push(f.to_vec()),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
        if framing == Framing::Netstring {
            assert!(
                buf.capacity() <= 2 * (MAX_FRAME + 1) + data.len() + 64,
                "buffer grew to {} for {} input bytes",
                buf.capacity(),
                data.len()
            );
        }
    }
    loop {
        match codec.decode_frame_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f.to_vec()),
            Ok(None) => return (frames, false),
            Err(_) => return (frames, true),
        }
    }
}

/// Check every invariant on one input; panics on a violation.
pub(crate) fn check(input: &[u8]) {
    let Some((&ncuts, rest)) = input.split_first() else {
        return;
    };
    let ncuts = usize::from(ncuts % 16).min(rest.len());
    let (cuts, data) = rest.split_at(ncuts);
    for framing in [Framing::Netstring, Framing::Line] {
        let whole = run(framing, data, &[]);
        let chunked = run(framing, data, cuts);
        assert_eq!(
            whole, chunked,
            "{framing}: result depends on read boundaries"
        );
        let codec = FrameCodec::new(framing, MAX_FRAME);
        for frame in &whole.0 {
            let mut wire = BytesMut::new();
            if codec.encode_frame(frame, &mut wire).is_ok() {
                let (again, failed) = run(framing, &wire, &[]);
                assert!(!failed, "{framing}: re-encoded frame fails to decode");
                assert_eq!(
                    again,
                    vec![frame.clone()],
                    "{framing}: round trip changed a frame"
                );
            }
        }
    }
    // Bare: every byte comes out once, in order, whatever the reads.
    let (frames, failed) = run(Framing::Bare, data, cuts);
    assert!(!failed);
    assert_eq!(frames.concat(), data);
}
