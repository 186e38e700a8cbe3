//! Wire protocol of Kamailio's evapi event socket: framing codecs and message types.
//!
//! # Layout
//!
//! - [`netstring`], [`bare`], [`line`](mod@line): one module per framing, each an incremental
//!   (sans-I/O) decoder working on a [`bytes::BytesMut`] and an `encode` function.
//! - [`framing`]: the [`Framing`] choice and [`FrameCodec`], which implements
//!   tokio-util's `Decoder`/`Encoder` for whichever framing was chosen.
//! - [`error`]: [`DecodeError`] (with the byte offset in the stream) and [`EncodeError`].
//! - [`message`]: JSON conventions (events, suspend / continue for async relay).
//! - [`answer`]: the one grammar for an app's answer (ids, final code, reason phrase).
//! - [`transcript`]: recorded traffic, one JSON line per frame (record, replay).
//!
//! Deliberately absent: sockets, clocks, a runtime, and any policy on what to do with
//! a bad frame. Those belong to the server and the client.
//!
//! ```
//! use bytes::BytesMut;
//! use evapi_proto::{FrameCodec, Framing};
//!
//! let mut codec = FrameCodec::new(Framing::Netstring, 1024);
//! let mut wire = BytesMut::new();
//! codec.encode_frame(b"hello", &mut wire)?;
//! assert_eq!(&wire[..], b"5:hello,");
//!
//! let mut incoming = BytesMut::from(&b"3:abc,\n2:"[..]);
//! assert_eq!(codec.decode_frame(&mut incoming)?.as_deref(), Some(&b"abc"[..]));
//! assert_eq!(codec.decode_frame(&mut incoming)?, None); // waits for more
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod answer;
pub mod bare;
pub mod error;
pub mod framing;
pub mod line;
pub mod message;
pub mod netstring;
pub mod text;
pub mod transcript;

pub use answer::{
    check_final_code, check_reason, Answer, AnswerError, AnswerReader, ReasonError, Verdict,
};
pub use error::{CodecError, DecodeError, DecodeErrorKind, EncodeError};
pub use framing::{encode, FrameCodec, Framing, UnknownFraming};
pub use message::{
    locate_id, parse_id, Continue, Event, IdError, IdFields, Suspend, TopLevelIds, TransactionId,
};

/// Default frame limit: 1 MiB. A payload longer than this is refused both ways; without
/// a limit, one bad length prefix would make us buffer whatever the peer claims.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
