//! Client side of a Kamailio-evapi-compatible event socket.
//!
//! # Layout
//!
//! - [`app`]: an app in a few lines: a handler per event over several nodes, ordered
//!   concurrency per call, deadlines with a fallback answer ([`app::App`]).
//! - [`client`]: [`Client`]: connect (timeout, retry with backoff), send, receive, split.
//! - [`suspend`]: recognise async-relay suspend events under the field names found in
//!   the wild, and build the answers that resume them ([`SuspendMatcher`], [`ReplyTemplate`]).
//! - [`respond`]: the fast auto-responder loop.
//! - [`script`]: the send/expect script language for CI, parser and runner.
//! - [`repl`]: the REPL's command parser (the readline loop is in the binary).
//! - `nats` (feature `nats`, on with `cli`): scale-out over NATS JetStream, the
//!   bridge of a node and responders that share a work queue.
//! - [`nodes`]: several nodes served by one app, each reconnected on its own.
//! - [`proxy`]: a transparent proxy between a node and an app that records what passes.
//! - [`recorder`]: transcripts written to disk (bounded memory, rotation).
//! - [`transport`]: TCP, TLS (rustls) or Unix socket under one stream type, and TLS
//!   settings from PEM files.
//!
//! The `evapi-client` binary puts these behind `repl`, `send`, `listen`, `respond`, `run`,
//! `proxy`, `record`.

pub mod app;
pub mod client;
#[cfg(feature = "nats")]
pub mod nats;
pub mod nodes;
pub mod proxy;
pub mod recorder;
pub mod repl;
pub mod respond;
pub mod script;
pub mod suspend;
pub mod transport;

pub use client::{Backoff, Client, ClientConfig, ClientError, Reader, Secret, Writer};
pub use suspend::{ReplyTemplate, SuspendMatcher, Suspended};
