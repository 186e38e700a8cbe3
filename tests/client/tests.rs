//! Tests of the evapi-client binary (package evapi-client-bin) and of the client
//! library's app against an evapi-server started in-process on an ephemeral port, one
//! module per subcommand. They live here, not in the client's crates, so that no client
//! crate depends on the server (tests/layout.rs holds that arrow).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

// The in-process server and helpers to run the binary.
mod common;
// send: payloads, stdin, --expect-reply, exit codes.
mod send;
// listen: raw and --json output, --count, --match, --timeout.
mod listen;
// respond: answers to suspend events, templates, custom id fields, --count.
mod respond;
// run: every script step kind, passing and failing, syntax errors.
mod run;
// repl: a real pseudo-terminal.
mod repl;
// app: the library's App against in-process nodes (drops, stalls).
mod app;
