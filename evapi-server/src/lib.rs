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
//! - `args` (feature `cli`): the security flags shared by the binaries that run a socket.
//! - [`transport`]: the [`Listener`] seam (TCP, Unix socket, in-memory streams for
//!   tests and same-process clients); `tls` (feature `tls`): rustls setup and client
//!   identity; [`auth`]: tokens and the first-frame handshake; [`rate`]: the
//!   per-client rate limit.
//! - `metrics` and `admin` (feature `http`): Prometheus metrics read from the server's
//!   counters at scrape time, and the admin API, served by `evapi_ops::http`.
//! - `registry`, `connection`, `outbox`, `writer`, `workers` (private): the client
//!   table, the per-connection reader, the per-client send queue, the batched vectored
//!   writer, the worker pool.
//!
//! What every binary of the toolkit shares with this one (the pending pool, the failure
//! throttle, signals, PEM files, the HTTP listener) is in `evapi-ops`.
//!
//! # Features
//!
//! `tls` (rustls, mutual TLS), `http` (Prometheus metrics and the admin API over HTTP)
//! and `cli` (the binary; turns the other two on) are on by default. An embedder that
//! wants the socket alone takes `default-features = false`: then neither rustls, hyper
//! nor prometheus-client is built, and [`Config::tls`] has no value to hold.
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

#[cfg(feature = "http")]
pub mod admin;
#[cfg(feature = "cli")]
pub mod args;
pub mod auth;
pub mod config;
mod connection;
pub mod control;
pub mod handle;
#[cfg(feature = "http")]
pub mod metrics;
mod outbox;
pub mod rate;
mod refusals;
mod registry;
pub mod routes;
pub mod server;
#[cfg(feature = "tls")]
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
