//! Writing a transcript ([`evapi_proto::transcript`]) to disk while traffic flows: the
//! proxy and `record` hand entries to a [`Recorder`], a blocking writer thread puts
//! them in the file, and rotates to `FILE.1`, `FILE.2`, ... past `rotate_bytes`.
//!
//! Memory is bounded: entries waiting for the disk may hold at most `buffer_bytes` of
//! payload; past it an entry is dropped and counted, and a `lost` line says so in the
//! transcript. Disk is bounded too: past `max_bytes` in all, the oldest parts are
//! deleted, and parts are cut at a quarter of `max_bytes` at most so the bound holds
//! whatever `rotate_bytes` says (without rotation, recording stops there and what
//! follows is counted).
//! Traffic is never held back for the recording: a proxy in front of live calls
//! forwards first and records what it can.
//!
//! An app's token never reaches the disk: a frame from the app that is an
//! authentication object (`{"auth":"..."}`, the key escaped or not) is recorded as
//! `{"auth":"<redacted>"}`, and unframed bytes from an app that may hold one are
//! recorded as their length ([`RawRedaction`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use evapi_proto::transcript::{self, part_path, Entry, Side};
use evapi_proto::Framing;
use std::sync::mpsc;

/// Default `rotate_bytes`: 256 MiB per file.
pub const DEFAULT_ROTATE_BYTES: u64 = 256 * 1024 * 1024;
/// Default `max_bytes`: 1 GiB of transcript on disk, all parts together.
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024 * 1024;
/// What replaces an app's token in the transcript.
pub const REDACTED: &str = "<redacted>";
/// Default `buffer_bytes`: 64 MiB of payload waiting for the disk.
pub const DEFAULT_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// What an entry costs in the buffer besides its payload (its other fields).
const ENTRY_OVERHEAD: usize = 64;
/// How often the writer takes what is queued and flushes it: it sleeps in between
/// instead of waking for every entry, so recording a busy socket costs the traffic's
/// threads no wake-ups (at 4,000 entries/s a wake-up and a write each were the
/// proxy's main cost), and a crash loses at most this much.
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Where and how to record.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// The first file; later parts add `.1`, `.2`, ...
    pub path: PathBuf,
    /// Start a new part once a file reaches this many bytes (0: never); with
    /// `max_bytes`, at most a quarter of it.
    pub rotate_bytes: u64,
    /// Bytes on disk for all parts together (0: no bound), within one entry's line.
    /// Past it the oldest parts are deleted; without rotation, recording stops and the
    /// rest is counted ([`Written::past_max`]).
    pub max_bytes: u64,
    /// Payload bytes that may wait for the disk; past it entries are dropped (counted).
    pub buffer_bytes: usize,
    /// `"proxy"` or `"record"` (the header's `source`).
    pub source: &'static str,
    /// The node's address (the header's `node`).
    pub node: String,
    /// The framing on the wire.
    pub framing: Framing,
}

/// What was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Entries written (header lines not counted).
    pub entries: u64,
    /// Entries dropped because the buffer was full (the disk fell behind).
    pub lost: u64,
    /// Entries not written because `max_bytes` was reached without rotation.
    pub past_max: u64,
    /// Files written.
    pub files: u32,
    /// Oldest parts deleted to stay within `max_bytes`.
    pub deleted: u32,
}

/// A transcript being written. Cheap to share (`Arc`): every connection records
/// through the same one.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    tx: mpsc::Sender<(Queued, usize)>,
    queued: Arc<AtomicUsize>,
    lost: Arc<AtomicU64>,
    buffer_bytes: usize,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<std::io::Result<Written>>>>,
}

/// What waits for the writer: an entry, or a frame still as the bytes the proxy read
/// (turned into text or base64 and JSON on the writer's thread, not the traffic's).
#[derive(Debug)]
enum Queued {
    Entry(Entry),
    Frame {
        t: u64,
        conn: u64,
        from: Side,
        bytes: Bytes,
    },
}

impl Queued {
    fn t(&self) -> u64 {
        match self {
            Queued::Entry(e) => e.t(),
            Queued::Frame { t, .. } => *t,
        }
    }

    /// Append its transcript line to `out`.
    fn write(self, out: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            Queued::Entry(e) => {
                out.extend(transcript::line(&e).map_err(std::io::Error::other)?);
            }
            Queued::Frame {
                t,
                conn,
                from,
                bytes,
            } => match redacted(from, &bytes) {
                Some(safe) => transcript::write_frame(out, t, conn, from, &safe),
                None => transcript::write_frame(out, t, conn, from, &bytes),
            },
        }
        Ok(())
    }
}

/// Whether `bytes` may name the `auth` key: the word itself, or a JSON escape (a key
/// written `"\u0061uth"` is `auth` to the server).
fn may_hold_a_token(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, b"auth").is_some() || memchr::memmem::find(bytes, b"\\u").is_some()
}

/// A frame from the app that may hold a token, as it may be recorded; `None` for every
/// other frame (recorded as it was). A JSON object with an `auth` key (escaped or not)
/// has every string value replaced by [`REDACTED`] and is written as parsed (a second
/// `auth` key is gone with the first's value); a frame that may name the key but is no
/// JSON (unterminated, say) is recorded as its length only. Nothing of a token reaches
/// the disk, whatever shape the app gave it (issue 34: `{"auth":"T","auth":null}`,
/// `{"auth":"T"` were written in clear).
fn redacted(from: Side, bytes: &[u8]) -> Option<Bytes> {
    if from != Side::App || !may_hold_a_token(bytes) {
        return None;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Some(Bytes::from(format!(
            "<redacted: {} bytes naming auth, not JSON>",
            bytes.len()
        )));
    };
    let serde_json::Value::Object(mut object) = value else {
        return None;
    };
    if !object.contains_key("auth") {
        return None;
    }
    for value in object.values_mut() {
        redact_strings(value);
    }
    Some(Bytes::from(serde_json::Value::Object(object).to_string()))
}

/// Every string in `value` replaced by [`REDACTED`].
fn redact_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => REDACTED.clone_into(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_strings),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_strings),
        _ => {}
    }
}

/// Unframed bytes from an app (its framing broke), as they may be recorded: once a
/// chunk may hold a token (the `auth` key, or a JSON escape that could spell it, even
/// split across chunks), that chunk and every later one of the connection are recorded
/// as their length only. Frames are redacted exactly; unframed bytes cannot be parsed,
/// so they are redacted whole.
#[derive(Debug, Default)]
pub struct RawRedaction {
    /// The last bytes of the previous chunk (a marker split across two reads).
    tail: Vec<u8>,
    tripped: bool,
}

impl RawRedaction {
    /// What to record of `bytes`, the connection's next unframed chunk from the app.
    #[must_use]
    pub fn payload(&mut self, bytes: &[u8]) -> transcript::Payload {
        if !self.tripped {
            let mut seen = std::mem::take(&mut self.tail);
            seen.extend_from_slice(&bytes[..bytes.len().min(8)]);
            self.tripped = may_hold_a_token(&seen) || may_hold_a_token(bytes);
            self.tail = bytes[bytes.len().saturating_sub(8)..].to_vec();
        }
        if self.tripped {
            transcript::Payload::Text(format!("<redacted: {} unframed bytes>", bytes.len()))
        } else {
            transcript::Payload::of(bytes)
        }
    }
}

impl Recorder {
    /// Create (or truncate) the first file, write its header and start the writer.
    ///
    /// # Errors
    ///
    /// When the file cannot be created or written.
    pub fn start(config: RecorderConfig) -> std::io::Result<Self> {
        let started = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        let first = open_part(&config, &started, 0)?;
        let (tx, rx) = mpsc::channel::<(Queued, usize)>();
        let queued = Arc::new(AtomicUsize::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let (q, l) = (Arc::clone(&queued), Arc::clone(&lost));
        let buffer_bytes = config.buffer_bytes;
        let mut disk = Disk {
            closed: std::collections::VecDeque::new(),
            total: first.1,
            bytes: first.1,
            file: first.0,
            part_bytes: part_bytes(&config),
            config,
            started,
            full: false,
            written: Written {
                files: 1,
                ..Written::default()
            },
            reported: 0,
            last_t: 0,
            line: Vec::with_capacity(4096),
        };
        let writer = std::thread::Builder::new()
            .name("transcript".into())
            .spawn(move || {
                let mut open = true;
                while open {
                    std::thread::sleep(WRITE_EVERY);
                    let mut taken = Vec::new();
                    loop {
                        match rx.try_recv() {
                            Ok(e) => taken.push(e),
                            Err(mpsc::TryRecvError::Empty) => break,
                            Err(mpsc::TryRecvError::Disconnected) => {
                                open = false;
                                break;
                            }
                        }
                    }
                    for (queued, cost) in taken {
                        q.fetch_sub(cost, Ordering::Relaxed);
                        disk.write(queued, l.load(Ordering::Relaxed))?;
                    }
                    // What was recorded is on disk (a reader tailing the file, or a crash,
                    // sees it).
                    disk.file.flush()?;
                }
                disk.finish(l.load(Ordering::Relaxed))
            })?;
        Ok(Self {
            start: Instant::now(),
            tx,
            queued,
            lost,
            buffer_bytes,
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// Microseconds since the recording started (every entry's `t`).
    #[must_use]
    pub fn t(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Queue `entry` for the disk, carrying `payload` bytes; dropped (and counted) when
    /// the buffer is full or the writer has stopped.
    pub fn record(&self, entry: Entry, payload: usize) {
        self.queue(Queued::Entry(entry), payload);
    }

    /// Queue a frame `from` a side of connection `conn` at `t`, as the bytes read (cheap
    /// for the caller: the text or base64 and the JSON are made by the writer).
    pub fn record_frame(&self, t: u64, conn: u64, from: Side, bytes: Bytes) {
        let len = bytes.len();
        self.queue(
            Queued::Frame {
                t,
                conn,
                from,
                bytes,
            },
            len,
        );
    }

    fn queue(&self, queued: Queued, payload: usize) {
        let cost = payload.saturating_add(ENTRY_OVERHEAD);
        let before = self.queued.fetch_add(cost, Ordering::Relaxed);
        if before.saturating_add(cost) > self.buffer_bytes || self.tx.send((queued, cost)).is_err()
        {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Entries dropped so far.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Write what is queued, close the file and say what was written. Later calls to
    /// [`Recorder::record`] are dropped.
    ///
    /// # Errors
    ///
    /// The writer's I/O error, if it had one.
    pub async fn finish(self) -> std::io::Result<Written> {
        let Self { tx, writer, .. } = self;
        drop(tx);
        let handle = writer.lock().ok().and_then(|mut w| w.take());
        match handle {
            Some(handle) => tokio::task::spawn_blocking(move || {
                handle.join().unwrap_or_else(|_| {
                    Err(std::io::Error::other("the transcript writer panicked"))
                })
            })
            .await
            .map_err(std::io::Error::other)?,
            None => Ok(Written::default()),
        }
    }
}

/// The writer thread's side: the part being written, the parts closed and what was
/// written so far.
struct Disk {
    config: RecorderConfig,
    /// When the recording started (each part's header).
    started: String,
    /// Size at which a part is closed (0: never).
    part_bytes: u64,
    file: BufWriter<File>,
    /// Bytes in the part being written.
    bytes: u64,
    /// Parts already closed, oldest first, with their sizes.
    closed: std::collections::VecDeque<(PathBuf, u64)>,
    /// Bytes on disk, the part being written included.
    total: u64,
    /// The bound is reached and parts do not rotate: nothing more is written.
    full: bool,
    written: Written,
    /// Lost entries already said in a `lost` line.
    reported: u64,
    last_t: u64,
    /// One entry's line (and a `lost` line before it), reused.
    line: Vec<u8>,
}

impl Disk {
    /// Write `queued` (after a `lost` line when more than `reported` entries were
    /// dropped so far: `dropped` in all), rotating and deleting parts as the bounds say.
    fn write(&mut self, queued: Queued, dropped: u64) -> std::io::Result<()> {
        if self.full {
            self.written.past_max += 1;
            return Ok(());
        }
        self.last_t = queued.t();
        self.line.clear();
        if dropped > self.reported {
            let missing = Entry::Lost {
                t: self.last_t,
                entries: dropped - self.reported,
            };
            self.line
                .extend(transcript::line(&missing).map_err(std::io::Error::other)?);
            self.reported = dropped;
        }
        queued.write(&mut self.line)?;
        self.file.write_all(&self.line)?;
        self.bytes += self.line.len() as u64;
        self.total += self.line.len() as u64;
        self.written.entries += 1;
        let max = self.config.max_bytes;
        if self.part_bytes > 0 && self.bytes >= self.part_bytes {
            self.rotate()?;
        } else if self.part_bytes == 0 && max > 0 && self.total >= max {
            self.full = true;
        }
        Ok(())
    }

    /// Close the part being written, open the next, and delete the oldest parts until
    /// the new one has room to grow to its size within the bound.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let closing = part_path(&self.config.path, self.written.files - 1);
        self.closed.push_back((closing, self.bytes));
        let header;
        (self.file, header) = open_part(&self.config, &self.started, self.written.files)?;
        self.written.files += 1;
        self.bytes = header;
        self.total += header;
        let max = self.config.max_bytes;
        while max > 0 && self.total + self.part_bytes > max {
            let Some((oldest, size)) = self.closed.pop_front() else {
                break;
            };
            std::fs::remove_file(&oldest)?;
            self.total -= size;
            self.written.deleted += 1;
        }
        Ok(())
    }

    /// The last `lost` line (entries dropped on the way, `lost` in all, or past the
    /// bound) and what was written.
    fn finish(mut self, lost: u64) -> std::io::Result<Written> {
        self.written.lost = lost;
        let missing = lost - self.reported + self.written.past_max;
        if missing > 0 {
            let missing = Entry::Lost {
                t: self.last_t,
                entries: missing,
            };
            self.file
                .write_all(&transcript::line(&missing).map_err(std::io::Error::other)?)?;
        }
        self.file.flush()?;
        Ok(self.written)
    }
}

/// Where parts are cut: `rotate_bytes`, but at most a quarter of `max_bytes` (so that
/// deleting the oldest parts keeps the total within it); 0: never.
fn part_bytes(config: &RecorderConfig) -> u64 {
    match (config.rotate_bytes, config.max_bytes) {
        (0, _) => 0,
        (rotate, 0) => rotate,
        (rotate, max) => rotate.min((max / 4).max(1)),
    }
}

/// Create part `part` and write its header; the file and the header's size.
fn open_part(
    config: &RecorderConfig,
    started: &str,
    part: u32,
) -> std::io::Result<(BufWriter<File>, u64)> {
    let path = part_path(&config.path, part);
    let file = File::create(&path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
    })?;
    let mut file = BufWriter::with_capacity(256 * 1024, file);
    let header = transcript::header(
        started.to_owned(),
        config.source,
        config.node.clone(),
        config.framing,
        part,
    );
    let line = transcript::line(&header).map_err(std::io::Error::other)?;
    file.write_all(&line)?;
    Ok((file, line.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use evapi_proto::transcript::{Payload, Side, TranscriptReader};
    use std::path::Path;

    fn config(dir: &Path, rotate_bytes: u64, buffer_bytes: usize) -> RecorderConfig {
        RecorderConfig {
            path: dir.join("t.jsonl"),
            rotate_bytes,
            max_bytes: 0,
            buffer_bytes,
            source: "proxy",
            node: "127.0.0.1:8448".into(),
            framing: Framing::Netstring,
        }
    }

    fn frame(i: u64) -> Entry {
        Entry::Frame {
            t: i,
            conn: 1,
            from: Side::Node,
            payload: Payload::of(format!("{{\"n\":{i}}}").as_bytes()),
        }
    }

    /// A fresh directory under the system's temporary one.
    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("evapi-recorder-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read(path: &Path) -> Vec<Entry> {
        let file = std::io::BufReader::new(File::open(path).unwrap());
        TranscriptReader::new(file, 1 << 20)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[tokio::test]
    async fn rotates_into_numbered_parts_each_with_a_header() {
        let dir = tempdir("rotate");
        let rec = Recorder::start(config(&dir, 1000, DEFAULT_BUFFER_BYTES)).unwrap();
        for i in 0..100 {
            rec.record(frame(i), 10);
        }
        let written = rec.finish().await.unwrap();
        assert_eq!(written.entries, 100);
        assert!(written.files > 2, "{written:?}");
        let mut all = Vec::new();
        for part in 0..written.files {
            let path = part_path(&dir.join("t.jsonl"), part);
            let size = std::fs::metadata(&path).unwrap().len();
            // A part ends with the first line that takes it past 1,000 bytes.
            assert!(size < 1000 + 300, "part {part} has {size} bytes");
            all.extend(read(&path));
        }
        assert_eq!(all, (0..100).map(frame).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn past_the_buffer_entries_are_dropped_and_the_loss_is_written() {
        let dir = tempdir("lost");
        // Room for about two entries: a burst of 1,000 from this thread outruns the
        // writer thread.
        let rec = Recorder::start(config(&dir, 0, 2 * (10 + ENTRY_OVERHEAD))).unwrap();
        for i in 0..1000 {
            rec.record(frame(i), 10);
        }
        let lost = rec.lost();
        assert!(lost > 0);
        let written = rec.finish().await.unwrap();
        assert_eq!(written.lost, lost);
        assert_eq!(written.entries + lost, 1000);
        let entries = read(&dir.join("t.jsonl"));
        let said: u64 = entries
            .iter()
            .map(|e| match e {
                Entry::Lost { entries, .. } => *entries,
                _ => 0,
            })
            .sum();
        assert_eq!(said, lost, "every loss is in the transcript");
    }

    /// Regression (issue 24): rotation split files but deleted nothing (150 MB of
    /// traffic became 516 MB on disk).
    #[tokio::test]
    async fn past_max_bytes_the_oldest_parts_are_deleted() {
        let dir = tempdir("max");
        let rec = Recorder::start(RecorderConfig {
            max_bytes: 3000,
            ..config(&dir, 1000, DEFAULT_BUFFER_BYTES)
        })
        .unwrap();
        for i in 0..200 {
            rec.record(frame(i), 10);
        }
        let written = rec.finish().await.unwrap();
        assert_eq!(written.entries, 200);
        assert!(written.deleted > 0, "{written:?}");
        let on_disk: u64 = (0..written.files)
            .filter_map(|part| std::fs::metadata(part_path(&dir.join("t.jsonl"), part)).ok())
            .map(|m| m.len())
            .sum();
        // Within the bound (and one entry's line).
        assert!(on_disk <= 3000 + 100, "{on_disk} bytes on disk");
        assert!(
            !dir.join("t.jsonl").exists(),
            "the oldest part is the first deleted"
        );
        // What is left is the newest entries, in order, ending with the last.
        let last = read(&part_path(&dir.join("t.jsonl"), written.files - 1));
        assert_eq!(last.last(), Some(&frame(199)));
    }

    #[tokio::test]
    async fn without_rotation_recording_stops_at_max_bytes_and_says_what_it_lost() {
        let dir = tempdir("stop");
        let rec = Recorder::start(RecorderConfig {
            max_bytes: 2000,
            ..config(&dir, 0, DEFAULT_BUFFER_BYTES)
        })
        .unwrap();
        for i in 0..200 {
            rec.record(frame(i), 10);
        }
        let written = rec.finish().await.unwrap();
        assert!(
            written.past_max > 0 && written.lost == 0 && written.entries + written.past_max == 200,
            "{written:?}"
        );
        let size = std::fs::metadata(dir.join("t.jsonl")).unwrap().len();
        assert!(size < 2000 + 300, "{size}");
    }

    /// Found by a re-test of issue 24: with the default rotation (256 MiB) the bound held
    /// only once a part rotated, so `--record-max-bytes 200000` left 5 MB on disk. Parts
    /// are now cut at a quarter of the bound.
    #[tokio::test]
    async fn the_bound_holds_whatever_the_rotation_size() {
        let dir = tempdir("max-rotate");
        let rec = Recorder::start(RecorderConfig {
            max_bytes: 20_000,
            ..config(&dir, DEFAULT_ROTATE_BYTES, DEFAULT_BUFFER_BYTES)
        })
        .unwrap();
        for i in 0..2000 {
            rec.record(frame(i), 10);
        }
        let written = rec.finish().await.unwrap();
        assert_eq!(
            (written.entries, written.lost, written.past_max),
            (2000, 0, 0)
        );
        let on_disk: u64 = (0..written.files)
            .filter_map(|part| std::fs::metadata(part_path(&dir.join("t.jsonl"), part)).ok())
            .map(|m| m.len())
            .sum();
        assert!(on_disk <= 20_000 + 100, "{on_disk} bytes on disk");
        let last = read(&part_path(&dir.join("t.jsonl"), written.files - 1));
        assert_eq!(
            last.last(),
            Some(&frame(1999)),
            "the newest entries are kept"
        );
    }

    /// Regression (issue 24): an app's `{"auth":"<token>"}` was written in clear.
    #[tokio::test]
    async fn an_apps_token_is_recorded_redacted() {
        let dir = tempdir("redact");
        let rec = Recorder::start(config(&dir, 0, DEFAULT_BUFFER_BYTES)).unwrap();
        let token = "s3cret-router-token-1";
        rec.record_frame(
            1,
            1,
            Side::App,
            Bytes::from(format!(r#"{{"auth":"{token}"}}"#)),
        );
        rec.record_frame(
            2,
            1,
            Side::App,
            Bytes::from_static(br#"{"tindex":1,"tlabel":2,"code":486}"#),
        );
        // What the node sends is its own business, kept as it was.
        rec.record_frame(
            3,
            1,
            Side::Node,
            Bytes::from_static(br#"{"auth":"ok","name":"router"}"#),
        );
        rec.finish().await.unwrap();
        let text = std::fs::read_to_string(dir.join("t.jsonl")).unwrap();
        assert!(!text.contains(token), "{text}");
        let frames: Vec<String> = read(&dir.join("t.jsonl"))
            .into_iter()
            .filter_map(|e| match e {
                Entry::Frame { payload, .. } => {
                    Some(String::from_utf8(payload.bytes().unwrap().to_vec()).unwrap())
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            frames,
            [
                r#"{"auth":"<redacted>"}"#,
                r#"{"tindex":1,"tlabel":2,"code":486}"#,
                r#"{"auth":"ok","name":"router"}"#,
            ]
        );
    }

    /// Found by a re-test of issue 24: the server takes `{"\u0061uth":TOKEN}` as a
    /// login (JSON escapes in the key), and the recorder wrote it in clear.
    /// Issue 34: 4 of 17 shapes of a first frame wrote the token in clear.
    #[test]
    fn no_shape_of_an_auth_frame_writes_the_token() {
        let token = "s3cret-t0ken-0123456789";
        for frame in [
            format!(r#"{{"auth":"{token}"}}"#),
            format!(r#"{{"auth":"{token}","auth":null}}"#),
            format!(r#"{{"auth":"{token}","auth":1}}"#),
            format!(r#"{{"auth":"{token}","auth":{{"x":1}}}}"#),
            format!(r#"{{"auth":"{token}""#),
            format!(r#"{{"auth":["{token}"]}}"#),
            format!(r#"{{"auth":{{"token":"{token}"}}}}"#),
            format!(r#"{{"\u0061uth":"{token}"}}"#),
            format!(r#"{{"auth":"{token}","name":"x"}}"#),
            format!(r#"{{"x":"{token}","auth":true}}"#),
            format!(r#"  {{"auth" : "{token}" }}  "#),
            format!(r#"{{"auth":"{token}"}}}}"#),
        ] {
            let safe = redacted(Side::App, frame.as_bytes()).expect("redacted");
            let text = String::from_utf8_lossy(&safe);
            assert!(
                !text.contains(token) && !text.contains("t0ken"),
                "{frame} -> {text}"
            );
        }
        // Other frames are recorded as they are.
        assert!(redacted(Side::App, br#"{"tindex":1,"tlabel":2,"code":486}"#).is_none());
        assert!(redacted(Side::Node, br#"{"auth":"ok","name":"router"}"#).is_none());
    }

    #[test]
    fn an_escaped_auth_key_is_redacted_too() {
        let token = "s3cret-router-token-1";
        for frame in [
            format!(r#"{{"\u0061uth":"{token}"}}"#),
            format!(r#"{{"a\u0075\u0074h" : "{token}", "x":1}}"#),
        ] {
            let safe = redacted(Side::App, frame.as_bytes()).expect("redacted");
            let text = String::from_utf8(safe.to_vec()).unwrap();
            assert!(!text.contains(token), "{frame} -> {text}");
            assert!(text.contains(REDACTED), "{text}");
        }
    }

    /// Unframed bytes from an app are recorded as their length once they may hold a
    /// token, from that chunk on, a marker split across two reads included; before
    /// that, and from the node, as they were.
    #[test]
    fn unframed_app_bytes_that_may_hold_a_token_are_recorded_as_their_length() {
        let text = |p: transcript::Payload| String::from_utf8(p.bytes().unwrap()).unwrap();
        let mut raw = RawRedaction::default();
        assert_eq!(text(raw.payload(b"hello ")), "hello ");
        assert_eq!(text(raw.payload(b"{\"au")), "{\"au");
        assert_eq!(
            text(raw.payload(b"th\":\"s3cret")),
            "<redacted: 11 unframed bytes>"
        );
        assert_eq!(
            text(raw.payload(b"more\"}")),
            "<redacted: 6 unframed bytes>"
        );
        let mut escaped = RawRedaction::default();
        assert_eq!(
            text(escaped.payload(br#"{"\u0061uth":"x"}"#)),
            "<redacted: 17 unframed bytes>"
        );
    }
}
