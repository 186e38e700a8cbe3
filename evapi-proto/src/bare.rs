//! Bare framing, Kamailio's `netstring_format=0`: payload bytes as they are.
//!
//! Outgoing, a payload is written unchanged. Incoming, whatever one read of the
//! socket returned is one message, which is what Kamailio does. TCP is a byte stream,
//! so this is only as reliable as the peer's timing: two quick writes may arrive as
//! one message, and one large write may arrive as several. Use netstring or line
//! framing when message boundaries matter.
//!
//! A read longer than the frame limit is delivered as several messages of at most
//! the limit each (Kamailio likewise cuts at its read buffer size).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::{Framing, DEFAULT_MAX_FRAME};

/// Decoder for bare framing: each buffered chunk is one message.
#[derive(Debug, Clone)]
pub struct BareDecoder {
    max_frame: usize,
}

impl Default for BareDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl BareDecoder {
    /// A decoder that delivers at most `max_frame` bytes per message (at least 1).
    #[must_use]
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame: max_frame.max(1),
        }
    }

    /// Take everything buffered (up to the limit) as one message.
    ///
    /// # Errors
    ///
    /// None: every byte sequence is a valid bare message. The `Result` keeps the
    /// signature of the other decoders.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let n = buf.len().min(self.max_frame);
        Ok(Some(buf.split_to(n).freeze()))
    }
}

/// Append the payload to `dst` unchanged.
///
/// # Errors
///
/// [`EncodeError::TooLarge`] when the payload is longer than `max_frame`.
pub fn encode(payload: &[u8], max_frame: usize, dst: &mut BytesMut) -> Result<(), EncodeError> {
    if payload.len() > max_frame {
        return Err(EncodeError::TooLarge {
            framing: Framing::Bare,
            len: payload.len(),
            max: max_frame,
        });
    }
    dst.put_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_chunk_is_one_message() {
        let mut d = BareDecoder::default();
        let mut buf = BytesMut::from(&b"{\"a\":1}{\"b\":2}"[..]);
        assert_eq!(
            d.decode(&mut buf).expect("infallible"),
            Some(Bytes::from("{\"a\":1}{\"b\":2}"))
        );
        assert_eq!(d.decode(&mut buf).expect("infallible"), None);
    }

    #[test]
    fn a_chunk_over_the_limit_is_cut() {
        let mut d = BareDecoder::new(3);
        let mut buf = BytesMut::from(&b"abcdefg"[..]);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut buf).expect("infallible") {
            out.push(m);
        }
        assert_eq!(out, ["abc", "def", "g"]);
    }

    #[test]
    fn encode_writes_the_payload_unchanged() {
        let mut dst = BytesMut::new();
        encode(b"5:not,a netstring\n", 100, &mut dst).expect("under limit");
        assert_eq!(&dst[..], b"5:not,a netstring\n");
        assert!(encode(b"abcd", 3, &mut dst).is_err());
    }
}
