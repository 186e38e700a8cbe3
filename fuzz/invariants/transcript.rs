//! Invariants of the transcript reader and of a replay's plan and timing, shared by the
//! `transcript` fuzz target and the corpus replay test. A transcript is input: it may
//! come from anywhere (docs/replay.md tells users to keep them in their repository).
//!
//! Invariants, beyond "no panic":
//! - the reader gives every line of at most `MAX_LINE` bytes (an entry or an error) and
//!   refuses a longer one with an error, never buffering past the bound;
//! - every entry read writes back to a line that reads back as the same entry;
//! - a frame's payload gives its bytes back, and bytes made into a payload come back
//!   unchanged;
//! - a replay's plan takes every entry (a bad payload is an error, not a panic), and
//!   every planned event's time, at any speed the last 8 bytes make, is within
//!   `MAX_OFFSET`.
use evapi_proto::transcript::{line, Entry, Payload, TranscriptError, TranscriptReader};
use evapi_proto::AnswerReader;
use evapi_sim::replay::{offset, Plan, MAX_OFFSET};

/// Lines longer than this are refused.
const MAX_LINE: usize = 4096;
/// Entries looked at per input at most (a fuzz input is small anyway).
const MAX_ENTRIES: usize = 10_000;

/// Check every invariant on one input; panics on a violation.
pub(crate) fn check(data: &[u8]) {
    let payload = Payload::of(data);
    assert_eq!(payload.bytes().expect("our own payload decodes"), data);

    let speed = data
        .get(data.len().saturating_sub(8)..)
        .and_then(|b| b.try_into().ok())
        .map(|b: [u8; 8]| f64::from_le_bytes(b).abs())
        .filter(|f| f.is_finite() && *f > 0.0)
        .unwrap_or(1.0);

    let Ok(reader) = TranscriptReader::new(data, MAX_LINE) else {
        return;
    };
    let ids = AnswerReader::default();
    let mut plan = Plan::default();
    for entry in reader.take(MAX_ENTRIES) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(TranscriptError::TooLong { max, .. }) => {
                assert_eq!(max, MAX_LINE);
                break;
            }
            Err(_) => continue,
        };
        let written = line(&entry).expect("an entry encodes");
        let back: Entry = serde_json::from_slice(&written).expect("its line reads back");
        assert_eq!(back, entry, "an entry round-trips");
        if let Entry::Frame { payload, .. } = &entry {
            if let Ok(bytes) = payload.bytes() {
                assert_eq!(Payload::of(&bytes).bytes().expect("decodes"), bytes);
            }
        }
        let _ = plan.add(entry, &ids);
    }
    for event in &plan.events {
        assert!(offset(event.at_us, speed) <= MAX_OFFSET);
        assert!(offset(event.at_us, f64::MIN_POSITIVE) <= MAX_OFFSET);
    }
}
