//! Transcripts: what passed on an evapi socket, one JSON object per line, so a day of
//! real traffic can be kept, read, diffed and replayed (docs/transcript.md is the
//! user's reference, `docs/transcript.schema.json` the machine's).
//!
//! A transcript file starts with a [`Header`] line naming the format and its version;
//! every other line is an [`Entry`]: a connection opened or closed, a frame (with its
//! time offset, connection, direction and payload), a stretch of bytes that could not
//! be framed, or records lost because the disk fell behind. Payloads are kept as text
//! when they are UTF-8 and as base64 otherwise, so any byte sequence round-trips.
//!
//! Here: the types, one line's encoding and a bounded line reader. Not here: files,
//! rotation, clocks, sockets (the recorder and the replayer own those).

use std::io::{BufRead, Read};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::Framing;

/// The `format` of every transcript's header line.
pub const FORMAT: &str = "evapi-transcript";
/// The version this code writes and reads. A reader refuses a higher one: a new
/// version may mean something it would misread.
pub const VERSION: u32 = 1;

/// The first line of every transcript file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] when written by this code.
    pub version: u32,
    /// Wall-clock start of the recording (RFC 3339, UTC); every `t` counts from it.
    pub started: String,
    /// What recorded it: `"proxy"` (both directions) or `"record"` (a listening client:
    /// what the node sent only).
    pub source: String,
    /// The node's evapi socket.
    pub node: String,
    /// How frames were delimited on the wire.
    pub framing: Framing,
    /// Which file of a rotated recording this is (0: the first).
    #[serde(default)]
    pub part: u32,
}

/// Who sent a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The evapi node (Kamailio): events.
    Node,
    /// The application: answers and other messages.
    App,
}

impl Side {
    /// `"node"` or `"app"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Side::Node => "node",
            Side::App => "app",
        }
    }
}

/// One line after the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    /// A connection (an app, or the recorder itself) opened.
    Open {
        /// Microseconds since [`Header::started`].
        t: u64,
        /// Connection number, from 1, unique within the recording.
        conn: u64,
        /// The app's address as the recorder saw it.
        peer: String,
    },
    /// A complete frame.
    Frame {
        /// Microseconds since [`Header::started`] when its last byte arrived.
        t: u64,
        /// Its connection.
        conn: u64,
        /// Who sent it.
        from: Side,
        /// The payload (without framing).
        #[serde(flatten)]
        payload: Payload,
    },
    /// Bytes that could not be framed (a framing error): from here on this direction
    /// of the connection is kept as raw chunks, still forwarded unchanged.
    Raw {
        /// Microseconds since [`Header::started`].
        t: u64,
        /// Its connection.
        conn: u64,
        /// Who sent them.
        from: Side,
        /// Why they are not frames (the first time), or `None`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The bytes.
        #[serde(flatten)]
        payload: Payload,
    },
    /// A connection closed.
    Close {
        /// Microseconds since [`Header::started`].
        t: u64,
        /// Its connection.
        conn: u64,
        /// Which side closed it first.
        by: Side,
        /// An error, if it was one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Entries the recorder could not write in time and dropped (its buffer was full):
    /// the traffic itself was forwarded, only its record is missing.
    Lost {
        /// Microseconds since [`Header::started`].
        t: u64,
        /// How many entries.
        entries: u64,
    },
}

impl Entry {
    /// Its time offset in microseconds.
    #[must_use]
    pub fn t(&self) -> u64 {
        match self {
            Entry::Open { t, .. }
            | Entry::Frame { t, .. }
            | Entry::Raw { t, .. }
            | Entry::Close { t, .. }
            | Entry::Lost { t, .. } => *t,
        }
    }
}

/// A payload: `{"text": ...}` when UTF-8, `{"b64": ...}` (standard alphabet, padded)
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// UTF-8 text.
    Text(String),
    /// Anything else, base64.
    B64(String),
}

impl Payload {
    /// Text when `bytes` are UTF-8, base64 otherwise.
    #[must_use]
    pub fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Payload::Text(text.to_owned()),
            Err(_) => Payload::B64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    /// The bytes.
    ///
    /// # Errors
    ///
    /// When a `b64` payload is not valid base64.
    pub fn bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match self {
            Payload::Text(text) => Ok(text.as_bytes().to_vec()),
            Payload::B64(b64) => base64::engine::general_purpose::STANDARD.decode(b64),
        }
    }

    /// The bytes, moved out of a text payload rather than copied.
    ///
    /// # Errors
    ///
    /// When a `b64` payload is not valid base64.
    pub fn into_bytes(self) -> Result<Vec<u8>, base64::DecodeError> {
        match self {
            Payload::Text(text) => Ok(text.into_bytes()),
            Payload::B64(b64) => base64::engine::general_purpose::STANDARD.decode(b64),
        }
    }
}

/// A header line for a recording that started at `started` (RFC 3339).
#[must_use]
pub fn header(started: String, source: &str, node: String, framing: Framing, part: u32) -> Header {
    Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        started,
        source: source.to_owned(),
        node,
        framing,
        part,
    }
}

/// The file of part `n` of a recording at `path`: part 0 is `path`, then `path.1`,
/// `path.2`, ... (a recorder rotates into these; a replayer reads them in order).
#[must_use]
pub fn part_path(path: &std::path::Path, n: u32) -> std::path::PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    std::path::PathBuf::from(name)
}

/// One line of a transcript: JSON and a newline.
///
/// # Errors
///
/// Never for these types in practice (serde_json fails only on maps with non-string
/// keys, which they do not have); the error is passed on rather than unwrapped.
pub fn line<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = serde_json::to_vec(value)?;
    out.push(b'\n');
    Ok(out)
}

/// Append the line of a frame entry to `out`: the same bytes as [`line()`] of an
/// [`Entry::Frame`] with [`Payload::of`]`(bytes)` (a property test holds them equal),
/// without building the entry: a recorder writing hundreds of thousands of frames a
/// second spends its time here.
pub fn write_frame(out: &mut Vec<u8>, t: u64, conn: u64, from: Side, bytes: &[u8]) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"kind\":\"frame\",\"t\":");
    out.extend_from_slice(n.format(t).as_bytes());
    out.extend_from_slice(b",\"conn\":");
    out.extend_from_slice(n.format(conn).as_bytes());
    out.extend_from_slice(b",\"from\":\"");
    out.extend_from_slice(from.name().as_bytes());
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            out.extend_from_slice(b"\",\"text\":");
            // Writing a str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, text);
        }
        Err(_) => {
            out.extend_from_slice(b"\",\"b64\":\"");
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .as_bytes(),
            );
            out.push(b'"');
        }
    }
    out.extend_from_slice(b"}\n");
}

/// Why a transcript could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranscriptError {
    /// Reading failed.
    #[error("line {line}: cannot read")]
    Io {
        /// 1-based line number.
        line: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The first line is not a transcript header.
    #[error("line 1: not an evapi transcript (no {FORMAT:?} header): {0}")]
    NotATranscript(String),
    /// A version this code does not know.
    #[error("line 1: transcript version {0}; this build reads version {VERSION}")]
    Version(u32),
    /// A line longer than the bound.
    #[error("line {line}: longer than {max} bytes")]
    TooLong {
        /// 1-based line number.
        line: u64,
        /// The bound.
        max: usize,
    },
    /// A line that is not a valid entry.
    #[error("line {line}: not a transcript entry")]
    Entry {
        /// 1-based line number.
        line: u64,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
}

/// The longest line [`TranscriptReader`] accepts for frames of at most `max_frame` bytes:
/// base64 grows a payload by 4/3, JSON escaping of text by up to 6 (`\u0001`); the
/// rest of a line is small.
#[must_use]
pub fn max_line(max_frame: usize) -> usize {
    max_frame.saturating_mul(6).saturating_add(1024)
}

/// Reads a transcript line by line, each line bounded (a corrupt or hostile file
/// cannot make it buffer without end).
#[derive(Debug)]
pub struct TranscriptReader<R> {
    input: R,
    header: Header,
    line: u64,
    max: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> TranscriptReader<R> {
    /// Read the header of `input`; lines longer than `max` bytes are refused.
    ///
    /// # Errors
    ///
    /// When the first line is not a header of a known version.
    pub fn new(input: R, max: usize) -> Result<Self, TranscriptError> {
        let mut reader = Self {
            input,
            header: header(String::new(), "", String::new(), Framing::Netstring, 0),
            line: 0,
            max,
            buf: Vec::new(),
        };
        let first = reader
            .next_line()?
            .ok_or_else(|| TranscriptError::NotATranscript("empty file".into()))?;
        let header: Header = serde_json::from_slice(first)
            .map_err(|e| TranscriptError::NotATranscript(e.to_string()))?;
        if header.format != FORMAT {
            return Err(TranscriptError::NotATranscript(format!(
                "format {:?}",
                header.format
            )));
        }
        if header.version > VERSION {
            return Err(TranscriptError::Version(header.version));
        }
        reader.header = header;
        Ok(reader)
    }

    /// The header.
    #[must_use]
    pub fn header(&self) -> &Header {
        &self.header
    }

    fn next_line(&mut self) -> Result<Option<&[u8]>, TranscriptError> {
        loop {
            self.buf.clear();
            self.line += 1;
            let line = self.line;
            let limit = u64::try_from(self.max)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            let n = self
                .input
                .by_ref()
                .take(limit)
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| TranscriptError::Io { line, source })?;
            if n == 0 {
                return Ok(None);
            }
            if self.buf.last() != Some(&b'\n') && self.buf.len() > self.max {
                return Err(TranscriptError::TooLong {
                    line,
                    max: self.max,
                });
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(&self.buf));
        }
    }
}

impl<R: BufRead> Iterator for TranscriptReader<R> {
    type Item = Result<Entry, TranscriptError>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = self.line + 1;
        match self.next_line() {
            Ok(None) => None,
            Ok(Some(bytes)) => Some(
                serde_json::from_slice(bytes)
                    .map_err(|source| TranscriptError::Entry { line, source }),
            ),
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lines: &[&str]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    }

    const HEADER: &str = r#"{"format":"evapi-transcript","version":1,"started":"2026-12-01T10:00:00.000000Z","source":"proxy","node":"127.0.0.1:8448","framing":"netstring","part":0}"#;

    #[test]
    fn entries_round_trip_and_read_back() {
        let entries = vec![
            Entry::Open {
                t: 0,
                conn: 1,
                peer: "127.0.0.1:40000".into(),
            },
            Entry::Frame {
                t: 1500,
                conn: 1,
                from: Side::Node,
                payload: Payload::of(br#"{"tindex":1,"tlabel":2}"#),
            },
            Entry::Frame {
                t: 1800,
                conn: 1,
                from: Side::App,
                payload: Payload::of(&[0xff, 0x00, b'a']),
            },
            Entry::Close {
                t: 2000,
                conn: 1,
                by: Side::App,
                error: None,
            },
            Entry::Lost {
                t: 2100,
                entries: 3,
            },
        ];
        let mut bytes = line(&header("x".into(), "proxy", "n".into(), Framing::Bare, 0)).unwrap();
        for e in &entries {
            bytes.extend(line(e).unwrap());
        }
        let reader = TranscriptReader::new(&bytes[..], 1 << 20).unwrap();
        assert_eq!(reader.header().framing, Framing::Bare);
        let back: Vec<Entry> = reader.map(Result::unwrap).collect();
        assert_eq!(back, entries);
        let Entry::Frame { payload, .. } = &back[2] else {
            panic!("a frame")
        };
        assert_eq!(payload.bytes().unwrap(), [0xff, 0x00, b'a']);
    }

    #[test]
    fn the_documented_line_shapes_parse() {
        let text = file(&[
            HEADER,
            r#"{"kind":"open","t":0,"conn":1,"peer":"127.0.0.1:5555"}"#,
            r#"{"kind":"frame","t":12,"conn":1,"from":"node","text":"{\"event\":\"x\"}"}"#,
            r#"{"kind":"frame","t":20,"conn":1,"from":"app","b64":"/wA="}"#,
            "",
            r#"{"kind":"raw","t":30,"conn":1,"from":"app","error":"bad netstring","text":"zz"}"#,
            r#"{"kind":"close","t":40,"conn":1,"by":"node"}"#,
        ]);
        let entries: Vec<Entry> = TranscriptReader::new(&text[..], 4096)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[4].t(), 40);
    }

    #[test]
    fn the_example_in_the_format_reference_reads() {
        let doc = include_str!("../../docs/transcript.md");
        let start = doc.find("```json\n").expect("an example") + "```json\n".len();
        let example = &doc[start..start + doc[start..].find("```").expect("its end")];
        let reader = TranscriptReader::new(example.as_bytes(), 4096).unwrap();
        assert_eq!(reader.header().source, "proxy");
        let kinds: Vec<Entry> = reader.map(Result::unwrap).collect();
        assert_eq!(kinds.len(), 4);
        assert!(matches!(kinds[3], Entry::Close { by: Side::App, .. }));
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let err = TranscriptReader::new(&b"{\"kind\":\"open\"}\n"[..], 4096).unwrap_err();
        assert!(err.to_string().contains("not an evapi transcript"), "{err}");
        let newer = HEADER.replace("\"version\":1", "\"version\":9");
        let err = TranscriptReader::new(&file(&[&newer])[..], 4096).unwrap_err();
        assert!(matches!(err, TranscriptError::Version(9)), "{err}");
        let text = file(&[HEADER, "{\"kind\":\"frame\",\"t\":\"soon\"}"]);
        let err = TranscriptReader::new(&text[..], 4096)
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().starts_with("line 2:"), "{err}");
        let long = format!(
            "{{\"kind\":\"open\",\"t\":0,\"conn\":1,\"peer\":\"{}\"}}",
            "x".repeat(5000)
        );
        let text = file(&[HEADER, &long]);
        let err = TranscriptReader::new(&text[..], 4096)
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, TranscriptError::TooLong { line: 2, .. }),
            "{err}"
        );
    }

    proptest::proptest! {
        #[test]
        fn write_frame_writes_what_line_writes(bytes: Vec<u8>, text: String, t: u64, conn: u64, app: bool) {
            let from = if app { Side::App } else { Side::Node };
            for payload in [bytes.as_slice(), text.as_bytes()] {
                let mut fast = Vec::new();
                write_frame(&mut fast, t, conn, from, payload);
                let entry = Entry::Frame { t, conn, from, payload: Payload::of(payload) };
                proptest::prop_assert_eq!(&fast, &line(&entry).unwrap());
            }
        }

        #[test]
        fn any_payload_round_trips(bytes: Vec<u8>) {
            let e = Entry::Frame { t: 1, conn: 1, from: Side::App, payload: Payload::of(&bytes) };
            let back: Entry = serde_json::from_slice(&line(&e).unwrap()).unwrap();
            let Entry::Frame { payload, .. } = back else { panic!("a frame") };
            proptest::prop_assert_eq!(payload.bytes().unwrap(), bytes);
        }
    }
}
