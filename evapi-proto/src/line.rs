//! Line framing (our addition, for NDJSON tools): one message per LF-terminated line.
//!
//! A CR just before the LF is dropped, so `nc` and Windows tools work. An empty line
//! is an empty message. At the end of the stream, a last line without LF is still a
//! message (tools such as `printf` often omit it). Encoding refuses a payload that
//! contains LF, or that ends in CR (the receiver would drop it), rather than
//! silently change it.
//!
//! The limit: a line longer than `max_frame` bytes (CR and LF not counted) is an
//! error, noticed without buffering more than `max_frame + 2` bytes of it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind, EncodeError};
use crate::{Framing, DEFAULT_MAX_FRAME};

/// Incremental line decoder.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    max_frame: usize,
    /// How far into the buffer we already looked for LF, so each byte is scanned once.
    scanned: usize,
    consumed: u64,
    error: Option<DecodeError>,
    /// Skip lines over the limit (reporting each) instead of failing the stream.
    skip_oversize: bool,
    /// Inside a line being skipped: drop bytes up to and including the next LF.
    discarding: bool,
}

impl Default for LineDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl LineDecoder {
    /// A decoder that refuses lines longer than `max_frame` bytes.
    #[must_use]
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            scanned: 0,
            consumed: 0,
            error: None,
            skip_oversize: false,
            discarding: false,
        }
    }

    /// Skip a line over the limit instead of failing: the decoder reports it once (a
    /// [`DecodeError`] with `recoverable` set), drops it up to its LF, and goes on.
    #[must_use]
    pub fn skip_oversize(mut self, skip: bool) -> Self {
        self.skip_oversize = skip;
        self
    }

    fn too_large(&mut self, len: usize) -> DecodeError {
        let err = DecodeError {
            kind: DecodeErrorKind::FrameTooLarge {
                framing: Framing::Line,
                len: len as u64,
                max: self.max_frame,
            },
            offset: self.consumed + self.max_frame as u64,
            recoverable: self.skip_oversize,
        };
        if self.skip_oversize {
            self.discarding = true;
        } else {
            self.error = Some(err.clone());
        }
        err
    }

    /// Drop the line being skipped; true once its LF was consumed.
    fn discard(&mut self, buf: &mut BytesMut) -> bool {
        match memchr::memchr(b'\n', buf) {
            Some(lf) => {
                buf.advance(lf + 1);
                self.consumed += lf as u64 + 1;
                self.discarding = false;
                self.scanned = 0;
                true
            }
            None => {
                self.consumed += buf.len() as u64;
                buf.clear();
                self.scanned = 0;
                false
            }
        }
    }

    /// Take the next complete line out of `buf`, without its CR LF.
    ///
    /// # Errors
    ///
    /// [`DecodeErrorKind::FrameTooLarge`] for a line longer than the limit; every later
    /// call returns the same error.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        if self.discarding && !self.discard(buf) {
            return Ok(None);
        }
        // Never look further than the longest legal line plus its CR LF.
        let horizon = buf.len().min(self.max_frame.saturating_add(2));
        match memchr::memchr(b'\n', &buf[self.scanned..horizon]) {
            Some(rel) => {
                let lf = self.scanned + rel;
                let end = if lf > 0 && buf[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                if end > self.max_frame {
                    return Err(self.too_large(end));
                }
                let line = buf.split_to(end).freeze();
                buf.advance(lf + 1 - end);
                self.consumed += lf as u64 + 1;
                self.scanned = 0;
                Ok(Some(line))
            }
            None if horizon == self.max_frame.saturating_add(2) => Err(self.too_large(horizon)),
            None => {
                self.scanned = horizon;
                Ok(None)
            }
        }
    }

    /// Like [`decode`](Self::decode); at the end of the stream a last line without LF
    /// is delivered as it is.
    ///
    /// # Errors
    ///
    /// Those of [`decode`](Self::decode).
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        if buf.len() > self.max_frame {
            return Err(self.too_large(buf.len()));
        }
        self.consumed += buf.len() as u64;
        self.scanned = 0;
        Ok(Some(buf.split().freeze()))
    }
}

/// Append `payload` and LF to `dst`.
///
/// # Errors
///
/// [`EncodeError::LineFeed`] when the payload contains LF,
/// [`EncodeError::TrailingCarriageReturn`] when it ends in CR, and
/// [`EncodeError::TooLarge`] when it is longer than `max_frame`. Nothing is written then.
pub fn encode(payload: &[u8], max_frame: usize, dst: &mut BytesMut) -> Result<(), EncodeError> {
    if payload.len() > max_frame {
        return Err(EncodeError::TooLarge {
            framing: Framing::Line,
            len: payload.len(),
            max: max_frame,
        });
    }
    if let Some(at) = memchr::memchr(b'\n', payload) {
        return Err(EncodeError::LineFeed { at });
    }
    if payload.last() == Some(&b'\r') {
        return Err(EncodeError::TrailingCarriageReturn);
    }
    dst.reserve(payload.len() + 1);
    dst.put_slice(payload);
    dst.put_u8(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(d: &mut LineDecoder, buf: &mut BytesMut) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(frame) = d.decode(buf).expect("valid stream") {
            out.push(frame);
        }
        out
    }

    #[test]
    fn one_message_per_line_cr_dropped_empty_lines_kept() {
        let mut d = LineDecoder::default();
        let mut buf = BytesMut::from(&b"{\"a\":1}\r\nb\n\nc\rd\n"[..]);
        assert_eq!(decode_all(&mut d, &mut buf), ["{\"a\":1}", "b", "", "c\rd"]);
    }

    #[test]
    fn reassembles_across_reads_and_scans_each_byte_once() {
        let mut d = LineDecoder::default();
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert!(decode_all(&mut d, &mut buf).is_empty());
        assert_eq!(d.scanned, 3);
        buf.extend_from_slice(b"lo\r");
        assert!(decode_all(&mut d, &mut buf).is_empty());
        buf.extend_from_slice(b"\nworld\n");
        assert_eq!(decode_all(&mut d, &mut buf), ["hello", "world"]);
    }

    #[test]
    fn last_line_without_lf_is_delivered_at_eof() {
        let mut d = LineDecoder::default();
        let mut buf = BytesMut::from(&b"a\nb"[..]);
        assert_eq!(d.decode_eof(&mut buf).expect("ok"), Some(Bytes::from("a")));
        assert_eq!(d.decode_eof(&mut buf).expect("ok"), Some(Bytes::from("b")));
        assert_eq!(d.decode_eof(&mut buf).expect("ok"), None);
    }

    #[test]
    fn refuses_a_line_over_the_limit_without_buffering_it_all() {
        let mut d = LineDecoder::new(4);
        // Exactly at the limit, with CR LF: fine.
        let mut buf = BytesMut::from(&b"abcd\r\n"[..]);
        assert_eq!(decode_all(&mut d, &mut buf), ["abcd"]);
        // Six bytes and no LF yet: already more than 4 + CR LF allows.
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        let err = d.decode(&mut buf).expect_err("too long");
        assert!(err.is_too_large());
        assert_eq!(err.offset, 10);
        let mut d = LineDecoder::new(4);
        let mut buf = BytesMut::from(&b"abcde\n"[..]);
        assert!(d.decode(&mut buf).expect_err("5 > 4").is_too_large());
    }

    #[test]
    fn with_skip_oversize_a_long_line_is_reported_dropped_and_passed() {
        let mut stream = b"abc\n".to_vec();
        stream.extend_from_slice(&[b'x'; 40]);
        stream.extend_from_slice(b"\nok\n");
        for step in [stream.len(), 1, 7] {
            let mut d = LineDecoder::new(10).skip_oversize(true);
            let mut buf = BytesMut::new();
            let (mut lines, mut errors) = (Vec::new(), 0);
            for chunk in stream.chunks(step) {
                buf.extend_from_slice(chunk);
                loop {
                    match d.decode(&mut buf) {
                        Ok(Some(l)) => lines.push(l),
                        Ok(None) => break,
                        Err(e) => {
                            assert!(e.is_recoverable());
                            errors += 1;
                        }
                    }
                }
            }
            assert_eq!(lines, ["abc", "ok"], "step {step}");
            assert_eq!(errors, 1, "step {step}");
        }
    }

    #[test]
    fn encode_appends_lf_and_refuses_what_would_not_survive() {
        let mut dst = BytesMut::new();
        encode(b"{\"a\":1}", 100, &mut dst).expect("plain line");
        encode(b"", 100, &mut dst).expect("empty line");
        assert_eq!(&dst[..], b"{\"a\":1}\n\n");
        assert_eq!(
            encode(b"a\nb", 100, &mut dst),
            Err(EncodeError::LineFeed { at: 1 })
        );
        assert_eq!(
            encode(b"a\r", 100, &mut dst),
            Err(EncodeError::TrailingCarriageReturn)
        );
        assert!(matches!(
            encode(b"abcde", 4, &mut dst),
            Err(EncodeError::TooLarge { len: 5, .. })
        ));
        assert_eq!(&dst[..], b"{\"a\":1}\n\n", "nothing written on error");
    }
}
