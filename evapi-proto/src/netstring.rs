//! Netstring framing, as Kamailio's evapi module reads and writes it
//! (`netstring_format=1`, the default).
//!
//! A frame is `LEN:payload,` where `LEN` is the payload length in ASCII decimal
//! (D. J. Bernstein, "Netstrings", 1997). The encoder writes exactly that and nothing
//! else. The decoder is incremental: it consumes the length prefix as it arrives,
//! remembers where it stopped, and yields a payload only once the whole frame and its
//! trailing `,` are buffered. Between frames it skips space, tab, CR and LF, which
//! Kamailio tolerates too (clients often end a frame with a newline).
//!
//! Two deliberate departures from Bernstein's text, both Kamailio's behaviour: leading
//! zeros in the length (`005:hello,`) are accepted, and white space between frames is
//! skipped. We never send either.
//!
//! Limits: at most [`MAX_LENGTH_DIGITS`] digits, and a declared length above the
//! decoder's `max_frame` is refused as soon as the digits read so far exceed it, so a
//! peer cannot make us buffer more than `max_frame + 1` bytes of one frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind, EncodeError, ShownByte};
use crate::{Framing, DEFAULT_MAX_FRAME};

/// Most digits a length prefix may have: ten, enough for any 32-bit length, as Kamailio.
pub const MAX_LENGTH_DIGITS: usize = 10;

/// Where the decoder is inside the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames: skipping white space, waiting for the first length digit.
    Idle,
    /// Inside the length prefix: `len` is the value of the `digits` digits read so far.
    Length { len: u64, digits: usize },
    /// The length and `:` are consumed; waiting for `len` payload bytes and the `,`.
    Payload { len: usize },
    /// Skipping a frame over the limit: the rest of its length digits.
    SkipLength { len: u64, digits: usize },
    /// Skipping a frame over the limit: `left` payload bytes to drop, then its `,`.
    Discard { left: u64, len: u64 },
    /// A decode error was returned; the stream cannot be resynchronised.
    Failed,
}

/// Incremental netstring decoder (sans I/O: feed it a [`BytesMut`], take frames out).
///
/// Follows the `tokio_util::codec::Decoder` contract: `Ok(None)` when more bytes are
/// needed, `Ok(Some(frame))` after consuming exactly one frame, `Err` on corrupt input.
/// After an error every later call returns the same error: a netstring stream has no
/// way to find the next frame boundary once a length is wrong.
#[derive(Debug, Clone)]
pub struct NetstringDecoder {
    max_frame: usize,
    state: State,
    /// Bytes of the stream consumed so far, for error offsets.
    consumed: u64,
    /// Stream offset at which the current (unfinished) frame began.
    frame_start: u64,
    error: Option<DecodeError>,
    /// Skip frames over the limit (reporting each) instead of failing the stream.
    skip_oversize: bool,
}

impl Default for NetstringDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl NetstringDecoder {
    /// A decoder that refuses payloads longer than `max_frame` bytes.
    #[must_use]
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            state: State::Idle,
            consumed: 0,
            frame_start: 0,
            error: None,
            skip_oversize: false,
        }
    }

    /// Skip a frame whose declared length is over the limit instead of failing: the
    /// decoder reports it once (a [`DecodeError`] with `recoverable` set), drops its
    /// payload as it arrives without buffering it, and goes on with the next frame.
    #[must_use]
    pub fn skip_oversize(mut self, skip: bool) -> Self {
        self.skip_oversize = skip;
        self
    }

    /// The payload limit in bytes.
    #[must_use]
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes of the stream consumed so far.
    #[must_use]
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    fn fail(&mut self, kind: DecodeErrorKind, offset: u64) -> DecodeError {
        let err = DecodeError {
            kind,
            offset,
            recoverable: false,
        };
        self.state = State::Failed;
        self.error = Some(err.clone());
        err
    }

    fn advance(&mut self, buf: &mut BytesMut, n: usize) {
        buf.advance(n);
        self.consumed += n as u64;
    }

    /// Take the next complete frame out of `buf`, if there is one.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] when the bytes are not a valid netstring stream: a non-digit
    /// where a length belongs, more than [`MAX_LENGTH_DIGITS`] digits, a length above
    /// the limit, or a missing `,`. Frames before the bad bytes were already returned.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        loop {
            match self.state {
                State::Failed => {
                    return Err(self
                        .error
                        .clone()
                        .expect("Failed state always stores its error"))
                }
                State::Idle => {
                    let skip = buf
                        .iter()
                        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                        .unwrap_or(buf.len());
                    self.advance(buf, skip);
                    let Some(&b) = buf.first() else {
                        return Ok(None);
                    };
                    if !b.is_ascii_digit() {
                        return Err(self.fail(
                            DecodeErrorKind::ExpectedDigit {
                                found: ShownByte(b),
                            },
                            self.consumed,
                        ));
                    }
                    self.frame_start = self.consumed;
                    self.state = State::Length { len: 0, digits: 0 };
                }
                State::Length {
                    mut len,
                    mut digits,
                } => {
                    let mut i = 0;
                    let outcome = loop {
                        let Some(&b) = buf.get(i) else { break None };
                        let at = self.consumed + i as u64;
                        // `Idle` only enters this state at a digit, so a ':' here
                        // always follows at least one digit.
                        if b == b':' {
                            break Some(Ok(i));
                        }
                        if !b.is_ascii_digit() {
                            break Some(Err(DecodeErrorKind::ExpectedDigitOrColon {
                                len_so_far: len,
                                found: ShownByte(b),
                            }
                            .at(at)));
                        }
                        if digits == MAX_LENGTH_DIGITS {
                            break Some(Err(DecodeErrorKind::TooManyDigits {
                                max_digits: MAX_LENGTH_DIGITS,
                            }
                            .at(at)));
                        }
                        digits += 1;
                        len = len * 10 + u64::from(b - b'0');
                        if len > self.max_frame as u64 {
                            break Some(Err(DecodeErrorKind::FrameTooLarge {
                                framing: Framing::Netstring,
                                len,
                                max: self.max_frame,
                            }
                            .at(at)));
                        }
                        i += 1;
                    };
                    match outcome {
                        None => {
                            self.advance(buf, i);
                            self.state = State::Length { len, digits };
                            return Ok(None);
                        }
                        Some(Err(mut err)) if self.skip_oversize && err.is_too_large() => {
                            // Keep the digit that went over; read the rest of the length.
                            self.advance(buf, i + 1);
                            self.state = State::SkipLength { len, digits };
                            err.recoverable = true;
                            return Err(err);
                        }
                        Some(Err(err)) => return Err(self.fail(err.kind, err.offset)),
                        Some(Ok(colon)) => {
                            self.advance(buf, colon + 1);
                            // `len <= max_frame`, checked digit by digit above.
                            let len = len as usize;
                            self.state = State::Payload { len };
                        }
                    }
                }
                State::SkipLength {
                    mut len,
                    mut digits,
                } => {
                    let mut i = 0;
                    while let Some(&b) = buf.get(i) {
                        let at = self.consumed + i as u64;
                        if b == b':' {
                            self.advance(buf, i + 1);
                            self.state = State::Discard { left: len, len };
                            break;
                        }
                        if !b.is_ascii_digit() {
                            return Err(self.fail(
                                DecodeErrorKind::ExpectedDigitOrColon {
                                    len_so_far: len,
                                    found: ShownByte(b),
                                },
                                at,
                            ));
                        }
                        if digits == MAX_LENGTH_DIGITS {
                            return Err(self.fail(
                                DecodeErrorKind::TooManyDigits {
                                    max_digits: MAX_LENGTH_DIGITS,
                                },
                                at,
                            ));
                        }
                        digits += 1;
                        len = len * 10 + u64::from(b - b'0');
                        i += 1;
                    }
                    if let State::SkipLength { .. } = self.state {
                        self.advance(buf, i);
                        self.state = State::SkipLength { len, digits };
                        return Ok(None);
                    }
                }
                State::Discard { left, len } => {
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.advance(buf, n);
                    let left = left - n as u64;
                    self.state = State::Discard { left, len };
                    if left > 0 {
                        return Ok(None);
                    }
                    let Some(&end) = buf.first() else {
                        return Ok(None);
                    };
                    if end != b',' {
                        return Err(self.fail(
                            DecodeErrorKind::MissingComma {
                                len: usize::try_from(len).unwrap_or(usize::MAX),
                                found: ShownByte(end),
                            },
                            self.consumed,
                        ));
                    }
                    self.advance(buf, 1);
                    self.state = State::Idle;
                }
                State::Payload { len } => {
                    if buf.len() <= len {
                        buf.reserve(len + 1 - buf.len());
                        return Ok(None);
                    }
                    let end = buf[len];
                    if end != b',' {
                        let at = self.consumed + len as u64;
                        return Err(self.fail(
                            DecodeErrorKind::MissingComma {
                                len,
                                found: ShownByte(end),
                            },
                            at,
                        ));
                    }
                    let payload = buf.split_to(len).freeze();
                    buf.advance(1);
                    self.consumed += len as u64 + 1;
                    self.state = State::Idle;
                    return Ok(Some(payload));
                }
            }
        }
    }

    /// Like [`decode`](Self::decode), for the end of the stream: trailing white space
    /// is fine, an unfinished frame is an error.
    ///
    /// # Errors
    ///
    /// Those of [`decode`](Self::decode), and [`DecodeErrorKind::Truncated`] when the
    /// stream ends inside a frame.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if self.state == State::Idle && buf.is_empty() {
            return Ok(None);
        }
        let received = self.consumed - self.frame_start + buf.len() as u64;
        let at = self.consumed + buf.len() as u64;
        Err(self.fail(
            DecodeErrorKind::Truncated {
                framing: Framing::Netstring,
                received,
            },
            at,
        ))
    }
}

impl DecodeErrorKind {
    fn at(self, offset: u64) -> DecodeError {
        DecodeError {
            kind: self,
            offset,
            recoverable: false,
        }
    }
}

/// Bytes a netstring frame of `payload_len` bytes takes on the wire.
#[must_use]
pub fn encoded_len(payload_len: usize) -> usize {
    let mut digits = 1;
    let mut n = payload_len / 10;
    while n > 0 {
        digits += 1;
        n /= 10;
    }
    digits + 1 + payload_len + 1
}

/// Append `LEN:payload,` to `dst`, exactly as Kamailio writes it: nothing before or after.
///
/// # Errors
///
/// [`EncodeError::TooLarge`] when the payload is longer than `max_frame`; nothing is
/// written then.
pub fn encode(payload: &[u8], max_frame: usize, dst: &mut BytesMut) -> Result<(), EncodeError> {
    if payload.len() > max_frame {
        return Err(EncodeError::TooLarge {
            framing: Framing::Netstring,
            len: payload.len(),
            max: max_frame,
        });
    }
    let mut digits = itoa::Buffer::new();
    let len = digits.format(payload.len()).as_bytes();
    dst.reserve(len.len() + payload.len() + 2);
    dst.put_slice(len);
    dst.put_u8(b':');
    dst.put_slice(payload);
    dst.put_u8(b',');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(d: &mut NetstringDecoder, buf: &mut BytesMut) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(frame) = d.decode(buf).expect("valid stream") {
            out.push(frame);
        }
        out
    }

    fn wire(payload: &[u8]) -> Vec<u8> {
        let mut dst = BytesMut::new();
        encode(payload, DEFAULT_MAX_FRAME, &mut dst).expect("payload under the limit");
        dst.to_vec()
    }

    #[test]
    fn encodes_exactly_len_colon_payload_comma() {
        assert_eq!(wire(b"hello"), b"5:hello,");
        assert_eq!(wire(b""), b"0:,");
        assert_eq!(wire(b"a,b:c"), b"5:a,b:c,");
        // What Kamailio's evapi_relay("{\"event\":\"x\"}") puts on the wire.
        assert_eq!(wire(br#"{"event":"x"}"#), br#"13:{"event":"x"},"#);
        assert_eq!(encoded_len(0), 3);
        assert_eq!(encoded_len(13), 17);
        assert_eq!(encoded_len(100), wire(&[b'x'; 100]).len());
    }

    #[test]
    fn encode_refuses_over_limit_and_writes_nothing() {
        let mut dst = BytesMut::new();
        let err = encode(b"hello", 4, &mut dst).expect_err("5 > 4");
        assert!(matches!(err, EncodeError::TooLarge { len: 5, max: 4, .. }));
        assert!(dst.is_empty());
    }

    #[test]
    fn yields_every_frame_of_one_read_in_order() {
        let mut d = NetstringDecoder::default();
        let mut buf = BytesMut::from(&b"3:abc,0:,5:a,b:c,"[..]);
        assert_eq!(decode_all(&mut d, &mut buf), ["abc", "", "a,b:c"]);
        assert!(buf.is_empty());
        assert_eq!(d.consumed(), 17);
    }

    #[test]
    fn skips_white_space_between_frames() {
        let mut d = NetstringDecoder::default();
        let mut buf = BytesMut::from(&b" \t\r\n3:abc,\r\n\n 2:de,\n"[..]);
        assert_eq!(decode_all(&mut d, &mut buf), ["abc", "de"]);
        assert!(d
            .decode_eof(&mut buf)
            .expect("trailing white space is fine")
            .is_none());
    }

    #[test]
    fn accepts_leading_zeros_as_kamailio_does() {
        let mut d = NetstringDecoder::default();
        let mut buf = BytesMut::from(&b"005:hello,00:,"[..]);
        assert_eq!(decode_all(&mut d, &mut buf), ["hello", ""]);
    }

    #[test]
    fn reassembles_a_frame_fed_one_byte_at_a_time() {
        let stream = b"12:hello, world, 3:a:b,0:,";
        let mut d = NetstringDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in stream {
            buf.extend_from_slice(&[b]);
            out.extend(decode_all(&mut d, &mut buf));
        }
        assert_eq!(out, ["hello, world", "a:b", ""]);
    }

    #[test]
    fn reassembles_at_every_split_point() {
        let stream = b"5:hello,\n11:{\"a\":\"b,c\"},";
        for cut in 0..=stream.len() {
            let mut d = NetstringDecoder::default();
            let mut buf = BytesMut::from(&stream[..cut]);
            let mut out = decode_all(&mut d, &mut buf);
            buf.extend_from_slice(&stream[cut..]);
            out.extend(decode_all(&mut d, &mut buf));
            assert_eq!(out, ["hello", "{\"a\":\"b,c\"}"], "cut at {cut}");
        }
    }

    fn first_error(max: usize, input: &[u8]) -> (Vec<Bytes>, DecodeError) {
        let mut d = NetstringDecoder::new(max);
        let mut buf = BytesMut::from(input);
        let mut good = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Ok(Some(f)) => good.push(f),
                Ok(None) => panic!("no error in {input:?}"),
                Err(e) => return (good, e),
            }
        }
    }

    #[test]
    fn refuses_a_length_over_the_limit_before_buffering() {
        // The fourth digit already makes 1000 > 100: refused at byte 3, no ':' needed.
        let (_, err) = first_error(100, b"1000");
        assert!(err.is_too_large());
        assert_eq!(err.offset, 3);

        let mut d = NetstringDecoder::new(1000);
        let mut buf = BytesMut::from(&b"99999999:"[..]);
        let cap_before = buf.capacity();
        assert!(d.decode(&mut buf).is_err());
        assert_eq!(
            buf.capacity(),
            cap_before,
            "nothing reserved for a refused frame"
        );
    }

    #[test]
    fn reserves_no_more_than_the_declared_frame() {
        let mut d = NetstringDecoder::new(1 << 20);
        let mut buf = BytesMut::from(&b"1000:"[..]);
        assert_eq!(d.decode(&mut buf).expect("valid prefix"), None);
        assert!(buf.capacity() >= 1001);
        assert!(buf.capacity() < 4096, "capacity {}", buf.capacity());
    }

    #[test]
    fn refuses_more_than_ten_digits() {
        let (_, err) = first_error(usize::MAX, b"00000000001:x,");
        assert_eq!(
            err.kind,
            DecodeErrorKind::TooManyDigits {
                max_digits: MAX_LENGTH_DIGITS
            }
        );
        assert_eq!(err.offset, 10);
        // Ten digits are fine.
        let mut d = NetstringDecoder::new(usize::MAX);
        let mut buf = BytesMut::from(&b"0000000001:x,"[..]);
        assert_eq!(decode_all(&mut d, &mut buf), ["x"]);
    }

    #[test]
    fn refuses_a_non_digit_where_a_length_belongs() {
        let (_, err) = first_error(100, b"x");
        assert_eq!(
            err.kind,
            DecodeErrorKind::ExpectedDigit {
                found: ShownByte(b'x')
            }
        );
        let (_, err) = first_error(100, b"  :");
        assert_eq!(
            err.kind,
            DecodeErrorKind::ExpectedDigit {
                found: ShownByte(b':')
            }
        );
        assert_eq!(err.offset, 2);
        let (_, err) = first_error(100, b"-1:a,");
        assert_eq!(err.offset, 0);
    }

    #[test]
    fn refuses_a_non_digit_inside_the_length() {
        let (_, err) = first_error(100, b"12a:");
        assert_eq!(
            err.kind,
            DecodeErrorKind::ExpectedDigitOrColon {
                len_so_far: 12,
                found: ShownByte(b'a')
            }
        );
        assert_eq!(err.offset, 2);
        // White space inside a length is not skipped.
        let (_, err) = first_error(100, b"1 2:ab,");
        assert_eq!(err.offset, 1);
    }

    #[test]
    fn refuses_a_missing_comma_after_delivering_earlier_frames() {
        let (good, err) = first_error(100, b"3:abc,2:xyz");
        assert_eq!(good, ["abc"]);
        assert_eq!(
            err.kind,
            DecodeErrorKind::MissingComma {
                len: 2,
                found: ShownByte(b'z')
            }
        );
        assert_eq!(err.offset, 10);
    }

    #[test]
    fn with_skip_oversize_a_frame_over_the_limit_is_reported_dropped_and_passed() {
        let mut stream = b"3:abc,20:".to_vec();
        stream.extend_from_slice(&[b'x'; 20]);
        stream.extend_from_slice(b",2:ok,");
        for step in [stream.len(), 1, 3] {
            let mut d = NetstringDecoder::new(10).skip_oversize(true);
            let mut buf = BytesMut::new();
            let (mut frames, mut errors) = (Vec::new(), Vec::new());
            for chunk in stream.chunks(step) {
                buf.extend_from_slice(chunk);
                loop {
                    match d.decode(&mut buf) {
                        Ok(Some(f)) => frames.push(f),
                        Ok(None) => break,
                        Err(e) => errors.push(e),
                    }
                }
                assert!(buf.capacity() < 64, "the skipped payload is never buffered");
            }
            assert_eq!(frames, ["abc", "ok"], "step {step}");
            assert_eq!(errors.len(), 1, "step {step}");
            assert!(errors[0].is_recoverable() && errors[0].is_too_large());
            assert_eq!(errors[0].offset, 7, "the digit that went over");
        }
        // A skipped frame still needs its comma: without it the stream is lost.
        let mut d = NetstringDecoder::new(2).skip_oversize(true);
        let mut buf = BytesMut::from(&b"5:helloX2:ok,"[..]);
        assert!(d.decode(&mut buf).expect_err("too large").is_recoverable());
        let fatal = d.decode(&mut buf).expect_err("missing comma");
        assert!(!fatal.is_recoverable());
        assert_eq!(d.decode(&mut buf).expect_err("sticky"), fatal);
    }

    #[test]
    fn an_error_is_sticky() {
        let mut d = NetstringDecoder::default();
        let mut buf = BytesMut::from(&b"x3:abc,"[..]);
        let first = d.decode(&mut buf).expect_err("x is not a digit");
        assert_eq!(d.decode(&mut buf).expect_err("still failed"), first);
    }

    #[test]
    fn end_of_stream_inside_a_frame_is_truncation() {
        let mut d = NetstringDecoder::default();
        let mut buf = BytesMut::from(&b"2:ok,10:abc"[..]);
        assert_eq!(
            d.decode_eof(&mut buf).expect("first frame"),
            Some(Bytes::from("ok"))
        );
        let err = d.decode_eof(&mut buf).expect_err("frame cut short");
        assert!(err.is_truncated());
        assert_eq!(
            err.kind,
            DecodeErrorKind::Truncated {
                framing: Framing::Netstring,
                received: 6
            }
        );
        assert_eq!(err.offset, 11);
    }
}
