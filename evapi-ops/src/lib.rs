//! What every evapi binary needs to be run by an operator, in one place, used by the
//! event socket (`evapi-server`), the clients and the NATS bridge (`evapi-client`) and
//! the simulator (`evapi-sim`), which otherwise meet only on the wire.
//!
//! # Layout
//!
//! - [`pool`]: the bounded pool of pending connections (oldest evicted first, a share
//!   per address), sans-I/O.
//! - [`throttle`]: secrets compared in constant time, and the slowdown of addresses
//!   that keep failing them, sans-I/O (time is an input).
//! - [`signal`]: SIGINT, SIGTERM and SIGHUP as one stream.
//! - [`time`]: sleeping until the deadline a sans-I/O core hands back.
//! - [`pem`] (feature `tls`): certificates and keys from PEM files.
//! - [`metrics`] and [`http`] (feature `http`): Prometheus helpers, and the bounded
//!   HTTP listener for `/metrics` with a pluggable admin API ([`http::Admin`]).

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod metrics;
#[cfg(feature = "tls")]
pub mod pem;
pub mod pool;
pub mod signal;
pub mod throttle;
pub mod time;
