//! Tests of the evapi-sim binary, one module per concern.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

// Every shipped scenario runs and meets its expectations; summaries and reports snapshotted.
mod scenarios;
// Bad scenario files (exit 2) and failed expectations (exit 1).
mod errors;
// SIP over UDP: real datagrams against the UAS, an evapi app answering.
mod sip;
// Routes and traffic shapes beyond the shipped scenarios, on a paused clock.
mod routes;
