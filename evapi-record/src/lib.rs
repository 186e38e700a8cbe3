//! Recording of evapi traffic: what passes between a node and its apps, written as a
//! versioned transcript (docs/transcript.md) that `evapi-sim replay` plays back.
//!
//! - [`proxy`]: a transparent proxy between a node and an app that records what
//!   passes (tokens redacted).
//! - [`recorder`]: transcripts written to disk with bounded memory, rotation and a
//!   bound on what stays on disk.
//!
//! The `evapi-client` binary puts these behind `proxy` and `record`.

pub mod proxy;
pub mod recorder;
