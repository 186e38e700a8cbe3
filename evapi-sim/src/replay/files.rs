//! A recording on disk: its first file and the parts the recorder rotated into
//! (`FILE.1`, `FILE.2`, ...), read entry by entry into a [`Plan`].

use std::path::{Path, PathBuf};

use evapi_proto::transcript::{part_path, TranscriptError, TranscriptReader};
use evapi_proto::{AnswerReader, Framing};

use super::Plan;

/// Why a recording could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// A file could not be opened.
    #[error("cannot open {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not a transcript, or a line of it is bad.
    #[error("{}", path.display())]
    Transcript {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: TranscriptError,
    },
    /// A payload is not valid base64.
    #[error("{}: a payload in the transcript", path.display())]
    Payload {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: base64::DecodeError,
    },
}

/// A recording read into a plan.
#[derive(Debug)]
#[non_exhaustive]
pub struct Recording {
    /// What to play.
    pub plan: Plan,
    /// The framing of the first part read (`None`: no part had a header).
    pub framing: Option<Framing>,
    /// The first part read: 0 (`FILE` itself), or more when the recorder deleted the
    /// oldest parts to stay within its disk bound.
    pub first_part: u32,
}

/// The first part of the recording at `path` still on disk: 0 (`path` itself) unless
/// it is gone and numbered parts (`path.N`) are left, then the lowest N (the recorder
/// deletes the oldest parts first, so the rest follow it without a gap).
#[must_use]
pub fn first_part(path: &Path) -> u32 {
    if path.exists() {
        return 0;
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            name.to_str()?.strip_prefix(&prefix)?.parse::<u32>().ok()
        })
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(0)
}

/// Read the recording at `path` (from its first part left through the last), each line
/// bounded for frames of `max_frame` bytes, into a plan whose answers are found with
/// `reader`. Entry by entry: the transcript is never held twice.
///
/// # Errors
///
/// A part cannot be opened or read, or holds a bad line or payload.
pub fn read(
    path: &Path,
    reader: &AnswerReader,
    max_frame: usize,
) -> Result<Recording, RecordingError> {
    let first = first_part(path);
    let mut plan = Plan::default();
    let mut framing = None;
    for part in first.. {
        let path = part_path(path, part);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if part > first && e.kind() == std::io::ErrorKind::NotFound => break,
            Err(source) => return Err(RecordingError::Open { path, source }),
        };
        let entries = TranscriptReader::new(
            std::io::BufReader::new(file),
            evapi_proto::transcript::max_line(max_frame),
        )
        .map_err(|source| RecordingError::Transcript {
            path: path.clone(),
            source,
        })?;
        framing.get_or_insert(entries.header().framing);
        for entry in entries {
            let entry = entry.map_err(|source| RecordingError::Transcript {
                path: path.clone(),
                source,
            })?;
            plan.add(entry, reader)
                .map_err(|source| RecordingError::Payload {
                    path: path.clone(),
                    source,
                })?;
        }
    }
    Ok(Recording {
        plan,
        framing,
        first_part: first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("evapi-parts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_first_part_left_is_where_reading_starts() {
        let d = dir("first");
        let file = d.join("day.jsonl");
        assert_eq!(
            first_part(&file),
            0,
            "nothing there: the file itself (then an error)"
        );
        for n in [3, 2, 10] {
            std::fs::write(part_path(&file, n), "").unwrap();
        }
        std::fs::write(d.join("day.jsonl.x"), "").unwrap();
        std::fs::write(d.join("other.jsonl.1"), "").unwrap();
        assert_eq!(first_part(&file), 2);
        std::fs::write(&file, "").unwrap();
        assert_eq!(first_part(&file), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_recording_names_its_file() {
        let d = dir("missing");
        let err = read(&d.join("none.jsonl"), &AnswerReader::default(), 1024).unwrap_err();
        assert!(err.to_string().contains("none.jsonl"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
