//! Client side of a Kamailio-evapi-compatible event socket: the core every evapi app
//! and tool is built on.
//!
//! # Layout
//!
//! - [`app`]: an app in a few lines: a handler per event over several nodes, ordered
//!   concurrency per call, deadlines with a fallback answer ([`app::App`]).
//! - [`client`]: [`Client`]: connect (timeout, retry with backoff), send, receive, split;
//!   [`Connector`] plugs in another carrier than a socket (the `evapi-nats` crate's
//!   NATS route is one).
//! - [`suspend`]: recognise async-relay suspend events under the field names found in
//!   the wild, and build the answers that resume them ([`SuspendMatcher`], [`ReplyTemplate`]).
//! - [`respond`]: the fast auto-responder loop.
//! - [`nodes`]: several nodes served by one app, each reconnected on its own.
//! - [`transport`]: TCP, TLS (rustls) or Unix socket under one stream type, and TLS
//!   settings from PEM files.
//!
//! Elsewhere in the workspace: `evapi-nats` (the bridge and apps over NATS JetStream),
//! `evapi-record` (the recording proxy and recorder), and the `evapi-client` binary
//! (package `evapi-client-bin`: REPL, scripts, `top`).

pub mod app;
pub mod backoff;
pub mod client;
pub mod nodes;
pub mod respond;
pub mod suspend;
pub mod transport;

pub use backoff::Backoff;
pub use client::{Client, ClientConfig, ClientError, Connector, Reader, Secret, Writer};
pub use suspend::{ReplyTemplate, SuspendMatcher, Suspended};
