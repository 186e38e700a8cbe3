//! An event socket compatible with Kamailio's evapi module, as a tokio library.
//!
//! Applications connect over TCP; the server relays events to them (all, by tag, or
//! to one) and hands what they send to the embedder's [event routes](EventRoutes).
//! The `evapi-server` binary runs it standalone, driven by JSON lines.
//!
//! # Layout
//!
//! - [`config`]: [`Config`], one field per evapi modparam plus our limits.
//! - [`routes`]: the [`EventRoutes`] trait (connection-new, message-received,
//!   connection-closed) and the [`ClientEnv`] they are handed.
//! - [`handle`]: [`Handle`]: relay, multicast, unicast, close, set_tag, clients, stats.
//! - [`server`]: [`Server`]: accept loop, admission, graceful shutdown.
//! - [`control`]: the JSON-lines control and notification interface of the binary.
//! - [`signal`]: waiting for SIGINT/SIGTERM, for binaries; `args` (feature `cli`):
//!   the security flags shared by the binaries that run a socket.
//! - [`transport`]: the [`Listener`] seam (TCP, Unix socket, in-memory streams for
//!   tests and same-process clients); [`tls`]: rustls setup
//!   and client identity; [`auth`]: tokens, the first-frame handshake, the slowdown
//!   of failing addresses; [`rate`]: the per-client rate limit.
//! - [`metrics`]: Prometheus metrics read from the server's counters at scrape time;
//!   [`http`]: the operators' HTTP listener (`/metrics` and the admin API).
//! - `registry`, `connection`, `outbox`, `writer`, `workers` (private): the client
//!   table, the per-connection reader, the per-client send queue, the batched vectored
//!   writer, the worker pool.
//!
//! Deliberately absent: anything about SIP or transactions. Async relay (suspend a
//! transaction, then relay) lives with the transactions, in `evapi-sim`.
//!
//! ```no_run
//! use bytes::Bytes;
//! use evapi_server::{ClientEnv, Config, EventRoutes, Handle, Server};
//!
//! struct Echo;
//!
//! impl EventRoutes for Echo {
//!     async fn message_received(&self, server: &Handle, client: &ClientEnv, msg: Bytes) {
//!         let _ = server.relay(format!("echo:{}:", client.conidx).as_bytes());
//!         let _ = server.relay(&msg);
//!     }
//! }
//!
//! # async fn example() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8448").await?;
//! Server::new(Config::default(), Echo).run(listener, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "cli")]
pub mod args;
pub mod auth;
pub mod config;
mod connection;
pub mod control;
pub mod handle;
pub mod http;
pub mod metrics;
mod outbox;
mod pending;
pub mod rate;
mod refusals;
mod registry;
pub mod routes;
pub mod server;
pub mod signal;
pub mod tls;
pub mod transport;
mod workers;
mod writer;

pub use config::{Config, OversizePolicy, SlowClientPolicy, UnicastPolicy};
pub use handle::{
    ClientInfo, ControlError, Delivery, Handle, RelayError, ReloadError, Stats, Target,
};
pub use routes::{Admit, ClientEnv, CloseReason, EventRoutes, NoRoutes, Transport};
pub use server::Server;
pub use transport::Listener;
