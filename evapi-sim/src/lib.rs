//! A SIP transaction simulator for Kamailio-style evapi async relay.
//!
//! It stands in for Kamailio when you test an evapi app: requests are suspended, an
//! event goes out on the embedded evapi socket, the app answers, the transaction resumes
//! with the app's decision, and the run checks what every transaction ended with.
//!
//! # Layout
//!
//! Sans-I/O cores (time is an input, no sockets):
//!
//! - [`tm`]: the transaction table: ids, suspend, continue, timers.
//! - [`router`]: the async-relay core on top of it: event, route, answers (read with
//!   [`evapi_proto::AnswerReader`]), tag registration, the final reply decision.
//! - [`ist`]: RFC 3261 INVITE server transactions (retransmissions, Timers G/H/I, ACK).
//! - [`template`], [`request`], [`sip`]: event templates with Kamailio pseudo-variables,
//!   the request fields they read, and the SIP parser and response builder.
//!
//! Thin drivers that own sockets, tasks and the clock (`clock`, private):
//!
//! - [`engine`]: a [`scenario`] run with built-in responders (`responders`), giving a
//!   [`report`].
//! - [`uas`]: SIP over UDP (`evapi-sim sip`), so sipp can drive the SIP front
//!   ([`front`]: INVITE, CANCEL, the 503 cap and the other methods, sans-I/O).
//! - `apps` (private): the evapi-side routes that hand app messages to the driver.
//! - [`load`]: a SIP UAC load generator with microsecond latency (`evapi-sim load`).
//! - `metrics` (private): Prometheus metrics of the core, published by the drivers.
//!
//! The library prints nothing: runs report to an [`engine::Observer`] and through
//! `tracing`.

mod apps;
pub mod cases;
mod clock;
pub mod engine;
pub mod front;
pub mod html;
pub mod ist;
pub mod junit;
pub mod load;
mod metrics;
mod pages;
pub mod replay;
pub mod report;
pub mod request;
mod responders;
pub mod router;
pub mod scenario;
pub mod sip;
pub mod template;
pub mod tm;
mod trim;
pub mod uas;
pub mod udp;
