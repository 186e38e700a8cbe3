//! The choice of framing, and one codec that speaks whichever was chosen.
//!
//! [`FrameCodec`] is what connection code holds: a [`Framing`] picks the decoder and
//! encoder, and the codec implements tokio-util's `Decoder` and `Encoder` so it plugs
//! into `FramedRead` / `FramedWrite`. The per-framing modules stay usable on their own.

use std::fmt;
use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::bare::BareDecoder;
use crate::error::{CodecError, DecodeError, EncodeError};
use crate::line::LineDecoder;
use crate::netstring::NetstringDecoder;
use crate::{bare, line, netstring, DEFAULT_MAX_FRAME};

/// How messages are delimited on the TCP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    /// `LEN:payload,` (Kamailio `netstring_format=1`, its default).
    #[default]
    Netstring,
    /// Payload bytes as they are; one socket read is one message (`netstring_format=0`).
    Bare,
    /// One message per LF-terminated line (NDJSON); our addition.
    Line,
}

impl Framing {
    /// Every framing, in documentation order.
    pub const ALL: [Framing; 3] = [Framing::Netstring, Framing::Bare, Framing::Line];

    /// The lower-case name used on command lines and in config files.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Framing::Netstring => "netstring",
            Framing::Bare => "bare",
            Framing::Line => "line",
        }
    }
}

impl Framing {
    /// A hint when a peer's first bytes look like another framing than `expected` (the
    /// usual mistake: both sides started with different framings). `None` when they fit,
    /// or say nothing clear.
    ///
    /// ```
    /// use evapi_proto::Framing;
    /// assert_eq!(
    ///     Framing::mismatch_hint(b"{\"event\":\"x\"}\n", Framing::Netstring),
    ///     Some("the bytes look like line or bare framing (no length prefix); is the peer started with --framing line or bare?")
    /// );
    /// assert_eq!(Framing::mismatch_hint(b"16:{\"event\":\"x\"},", Framing::Netstring), None);
    /// // A TLS alert from a server that speaks TLS, whatever the framing.
    /// assert!(Framing::mismatch_hint(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32], Framing::Bare)
    ///     .is_some_and(|h| h.contains("--tls")));
    /// ```
    #[must_use]
    pub fn mismatch_hint(first: &[u8], expected: Framing) -> Option<&'static str> {
        let start = first
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map_or(&[][..], |at| &first[at..]);
        // A TLS record: an alert (0x15) or a handshake (0x16), version 3.x.
        if matches!(first, [0x15 | 0x16, 0x03, ..]) {
            return Some(
                "the bytes are TLS: the peer speaks TLS; connect with --tls (and --tls-ca)",
            );
        }
        let digits = start.iter().take_while(|b| b.is_ascii_digit()).count();
        let netstring_like = digits > 0 && start.get(digits) == Some(&b':');
        match expected {
            Framing::Netstring if !start.is_empty() && digits == 0 => Some(
                "the bytes look like line or bare framing (no length prefix); is the peer \
                 started with --framing line or bare?",
            ),
            Framing::Bare | Framing::Line if netstring_like => Some(
                "the bytes look like netstring framing (a length prefix N:); is the peer \
                 started with --framing netstring?",
            ),
            _ => None,
        }
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown framing name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown framing {0:?}: expected netstring, bare or line")]
pub struct UnknownFraming(pub String);

impl FromStr for Framing {
    type Err = UnknownFraming;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Framing::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownFraming(s.to_owned()))
    }
}

#[derive(Debug, Clone)]
enum Inner {
    Netstring(NetstringDecoder),
    Bare(BareDecoder),
    Line(LineDecoder),
}

/// A decoder and encoder for one connection, in the chosen framing.
///
/// Decoded frames are [`Bytes`] sliced out of the read buffer without copying.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    framing: Framing,
    max_frame: usize,
    inner: Inner,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(Framing::default(), DEFAULT_MAX_FRAME)
    }
}

impl FrameCodec {
    /// A codec for `framing` that refuses frames longer than `max_frame` bytes, both ways.
    #[must_use]
    pub fn new(framing: Framing, max_frame: usize) -> Self {
        let inner = match framing {
            Framing::Netstring => Inner::Netstring(NetstringDecoder::new(max_frame)),
            Framing::Bare => Inner::Bare(BareDecoder::new(max_frame)),
            Framing::Line => Inner::Line(LineDecoder::new(max_frame)),
        };
        Self {
            framing,
            max_frame,
            inner,
        }
    }

    /// Skip frames over the limit instead of failing the stream (netstring and line;
    /// bare has no frames to skip). Each skipped frame is still reported once, as a
    /// [`DecodeError`] with `recoverable` set.
    #[must_use]
    pub fn skip_oversize(mut self, skip: bool) -> Self {
        self.inner = match self.inner {
            Inner::Netstring(d) => Inner::Netstring(d.skip_oversize(skip)),
            Inner::Line(d) => Inner::Line(d.skip_oversize(skip)),
            bare => bare,
        };
        self
    }

    /// The framing this codec speaks.
    #[must_use]
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The frame limit in bytes.
    #[must_use]
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Take the next complete frame out of `buf`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] on bytes that break the framing; see the framing's module.
    pub fn decode_frame(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        match &mut self.inner {
            Inner::Netstring(d) => d.decode(buf),
            Inner::Bare(d) => d.decode(buf),
            Inner::Line(d) => d.decode(buf),
        }
    }

    /// Take the next frame at the end of the stream.
    ///
    /// # Errors
    ///
    /// As [`decode_frame`](Self::decode_frame), plus a truncation error when a
    /// netstring frame was left unfinished.
    pub fn decode_frame_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        match &mut self.inner {
            Inner::Netstring(d) => d.decode_eof(buf),
            Inner::Bare(d) => d.decode(buf),
            Inner::Line(d) => d.decode_eof(buf),
        }
    }

    /// Append one framed payload to `dst`.
    ///
    /// # Errors
    ///
    /// An [`EncodeError`] when the framing cannot carry the payload; nothing is written.
    pub fn encode_frame(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), EncodeError> {
        encode(self.framing, payload, self.max_frame, dst)
    }
}

/// Append `payload` framed as `framing` to `dst`.
///
/// # Errors
///
/// An [`EncodeError`] when the framing cannot carry the payload; nothing is written.
pub fn encode(
    framing: Framing,
    payload: &[u8],
    max_frame: usize,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    match framing {
        Framing::Netstring => netstring::encode(payload, max_frame, dst),
        Framing::Bare => bare::encode(payload, max_frame, dst),
        Framing::Line => line::encode(payload, max_frame, dst),
    }
}

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        Ok(self.decode_frame(src)?)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        Ok(self.decode_frame_eof(src)?)
    }
}

impl tokio_util::codec::Encoder<Bytes> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(self.encode_frame(&item, dst)?)
    }
}

impl tokio_util::codec::Encoder<&[u8]> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(self.encode_frame(item, dst)?)
    }
}
