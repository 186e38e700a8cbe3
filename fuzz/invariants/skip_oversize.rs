//! Invariants of the decoders when oversized frames are skipped (`--oversize skip`),
//! shared by the `skip_oversize` fuzz target and the corpus replay test.
//!
//! The input is read as a list of payloads (a length byte, then that many bytes, the
//! length scaled so that some payloads exceed the limit). They are written as a valid
//! stream in netstring or line framing and decoded with `skip_oversize(true)`:
//! - exactly the payloads within the limit come out, in order, and nothing else;
//! - each oversized one is reported once, as a recoverable error;
//! - the buffer never holds an oversized frame (it is skipped unbuffered);
//! - none of this depends on how the stream is cut into reads.

use bytes::BytesMut;
use evapi_proto::{FrameCodec, Framing};

const MAX_FRAME: usize = 64;

fn payloads(input: &[u8], line: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some((&len, tail)) = rest.split_first() {
        // Lengths up to 4 x the limit; the bytes cycle through the input.
        let len = usize::from(len) % (4 * MAX_FRAME);
        let mut p: Vec<u8> = tail.iter().copied().cycle().take(len).collect();
        p.resize(len, b'x');
        if line {
            // A line payload cannot hold LF, and a trailing CR is framing.
            for b in &mut p {
                if *b == b'\n' || *b == b'\r' {
                    *b = b' ';
                }
            }
        }
        out.push(p);
        rest = tail.get(len.min(tail.len())..).unwrap_or_default();
    }
    out
}

fn wire(framing: Framing, payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut w = Vec::new();
    for p in payloads {
        match framing {
            Framing::Line => {
                w.extend_from_slice(p);
                w.push(b'\n');
            }
            _ => {
                w.extend_from_slice(format!("{}:", p.len()).as_bytes());
                w.extend_from_slice(p);
                w.push(b',');
            }
        }
    }
    w
}

fn decode(framing: Framing, data: &[u8], cut: usize) -> (Vec<Vec<u8>>, usize) {
    let mut codec = FrameCodec::new(framing, MAX_FRAME).skip_oversize(true);
    let mut buf = BytesMut::new();
    let (mut frames, mut skipped) = (Vec::new(), 0);
    for chunk in data.chunks(cut.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode_frame(&mut buf) {
                Ok(Some(f)) => frames.push(f.to_vec()),
                Ok(None) => break,
                Err(e) if e.is_recoverable() => skipped += 1,
                Err(e) => panic!("{framing}: a valid stream failed: {e}"),
            }
        }
        assert!(
            buf.len() <= MAX_FRAME + 2 + cut.max(1) + 8,
            "{framing}: {} bytes buffered with a {MAX_FRAME}-byte limit",
            buf.len()
        );
    }
    (frames, skipped)
}

/// Check every invariant on one input; panics on a violation.
pub(crate) fn check(input: &[u8]) {
    let Some((&cut, rest)) = input.split_first() else {
        return;
    };
    for framing in [Framing::Netstring, Framing::Line] {
        let all = payloads(rest, framing == Framing::Line);
        let data = wire(framing, &all);
        let kept: Vec<Vec<u8>> = all
            .iter()
            .filter(|p| p.len() <= MAX_FRAME)
            .cloned()
            .collect();
        let over = all.len() - kept.len();
        for cut in [data.len().max(1), usize::from(cut % 32) + 1] {
            let (frames, skipped) = decode(framing, &data, cut);
            assert_eq!(
                frames, kept,
                "{framing}, reads of {cut}: frames within the limit"
            );
            assert_eq!(
                skipped, over,
                "{framing}, reads of {cut}: oversized frames reported"
            );
        }
    }
}
