//! Integration tests of evapi-server over real TCP on loopback, one module per concern.
#![allow(clippy::unwrap_used, missing_docs)]

// A server on 127.0.0.1:0 with routes that record every event, and framed test clients.
mod common;
// relay, multicast, unicast, set_tag, close, in every framing.
mod relay;
// allow-list, max clients, conidx reuse, connection-new decisions.
mod admission;
// several frames per packet, trickled frames, malformed input, workers and ordering.
mod input;
// clients that do not read: queue overflow and send timeout.
mod slow;
// graceful shutdown flushes queued frames.
mod shutdown;
// the evapi-server binary: control lines, notifications, exit codes.
mod binary;
// in-memory connections (no sockets), time-driven limits on a paused clock.
mod memory;
// the operators' HTTP listener: bounds on request heads.
mod http;
// The control socket's admission: pending controllers, token throttle, slots.
mod control;
