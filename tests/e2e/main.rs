//! End-to-end tests across the binaries, one module per pairing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

// evapi-sim with evapi-client respond as the app under test.
mod sim_with_client;
// sipp drives evapi-sim sip over UDP; evapi-client respond answers on the evapi socket.
mod sipp;
// The same byte streams against Kamailio 5.6 and evapi-server.
mod kamailio_wire;
// evapi-client (listen, send, run, respond) against Kamailio 5.6.
mod kamailio_client;
// Command blocks of README.md and docs/ run as written.
mod docs;
// TLS, tokens, pending connections, rates, Unix sockets (library, real sockets).
mod security;
// TLS with openssl s_client and Python's ssl, certificates from the docs' recipe.
mod tls_interop;
// Peak RSS of the server binary under stalled readers and 1,000 slowloris connections.
mod memory;
// Prometheus metrics and the admin API of the binaries, checked with promtool.
mod metrics;
// Scale-out over NATS JetStream: bridges, shared responders, a responder crash.
mod nats;
// The SIP front of evapi-sim under datagram bursts: receive buffer, kernel drops.
mod sip_front;
// Record through the proxy between Kamailio and an app, replay, compare (issue 16).
mod replay;
// Apps on evapi_client::app (the allow_list example) serving two nodes under sipp.
mod apps;
// HTML and JUnit reports: rendered by headless Chromium, checked by xmllint (issue 16).
mod reports;
// A Python app (examples/python) judged call by call by a cases file (issue 35).
mod cases;
