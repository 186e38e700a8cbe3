//! Errors of the framing codecs.
//!
//! One enum, [`DecodeError`], for everything a peer can send wrong, with the byte
//! offset in the stream where the decoder noticed it, and one, [`EncodeError`], for
//! payloads a framing cannot carry. Messages are written for a person reading a log.

use std::fmt;

use crate::Framing;

/// A byte shown in an error message: printable ASCII as itself, anything else escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShownByte(pub u8);

impl fmt::Display for ShownByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", self.0.escape_ascii())
    }
}

/// What was wrong with the incoming bytes. Shown through [`DecodeError`], which adds
/// where in the stream it was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// A byte other than a digit or white space where a netstring length begins.
    ExpectedDigit {
        /// The offending byte.
        found: ShownByte,
    },
    /// A byte other than a digit or `:` inside a netstring length.
    ExpectedDigitOrColon {
        /// The length digits read so far, as a number.
        len_so_far: u64,
        /// The offending byte.
        found: ShownByte,
    },
    /// More length digits than [`crate::netstring::MAX_LENGTH_DIGITS`].
    TooManyDigits {
        /// The digit limit.
        max_digits: usize,
    },
    /// A declared length above the decoder's frame limit; refused before buffering.
    FrameTooLarge {
        /// Which framing noticed.
        framing: Framing,
        /// The declared (netstring) or buffered (line) length, a lower bound.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// The byte after a netstring payload was not `,`.
    MissingComma {
        /// The payload length.
        len: usize,
        /// The byte found where `,` belongs.
        found: ShownByte,
    },
    /// The stream ended inside a frame.
    Truncated {
        /// Which framing noticed.
        framing: Framing,
        /// How many bytes of the unfinished frame had arrived.
        received: u64,
    },
}

/// A decode error: what was wrong and where, as a byte offset from the start of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeError {
    /// What was wrong.
    pub kind: DecodeErrorKind,
    /// Offset of the offending byte from the start of the stream (0-based).
    pub offset: u64,
    /// The decoder skips the bad frame and can go on: only for a frame over the limit,
    /// when the decoder was built to skip those. Otherwise every later call fails too.
    pub recoverable: bool,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.offset;
        match &self.kind {
            DecodeErrorKind::ExpectedDigit { found } => {
                write!(f, "netstring: expected a length digit at byte {at}, found {found}")
            }
            DecodeErrorKind::ExpectedDigitOrColon { len_so_far, found } => write!(
                f,
                "netstring: expected a digit or ':' after length {len_so_far} at byte {at}, found {found}"
            ),
            DecodeErrorKind::TooManyDigits { max_digits } => write!(
                f,
                "netstring: length has more than {max_digits} digits at byte {at}"
            ),
            DecodeErrorKind::FrameTooLarge { framing, len, max } => write!(
                f,
                "{framing}: frame of {len} bytes or more exceeds the limit of {max} bytes at byte {at}"
            ),
            DecodeErrorKind::MissingComma { len, found } => write!(
                f,
                "netstring: expected ',' after {len}-byte payload at byte {at}, found {found}"
            ),
            DecodeErrorKind::Truncated { framing, received } => write!(
                f,
                "{framing}: stream ended at byte {at} inside a frame ({received} bytes of it received)"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

impl DecodeError {
    /// Whether the stream merely ended early, as opposed to carrying bad bytes.
    #[must_use]
    pub fn is_truncated(&self) -> bool {
        matches!(self.kind, DecodeErrorKind::Truncated { .. })
    }

    /// Whether decoding can go on after this error (the bad frame is being skipped).
    #[must_use]
    pub fn is_recoverable(&self) -> bool {
        self.recoverable
    }

    /// Whether the error is a frame over the size limit.
    #[must_use]
    pub fn is_too_large(&self) -> bool {
        matches!(self.kind, DecodeErrorKind::FrameTooLarge { .. })
    }
}

/// A payload the chosen framing cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The payload is longer than the encoder's frame limit.
    #[error("{framing}: payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Which framing refused.
        framing: Framing,
        /// The payload length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A line-framed payload containing LF, which would split it in two.
    #[error("line: payload contains a line feed at byte {at}")]
    LineFeed {
        /// Offset of the LF in the payload.
        at: usize,
    },
    /// A line-framed payload ending in CR, which the decoder would drop.
    #[error("line: payload ends with a carriage return, which the receiver would drop")]
    TrailingCarriageReturn,
}

/// Either error, for the tokio-util codec traits, which also need I/O errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Bad bytes from the peer.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A payload the framing cannot carry.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
