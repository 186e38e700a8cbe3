//! Prometheus metrics of the event socket, in one place.
//!
//! The server counts with the atomics it keeps anyway (the ones behind
//! [`Handle::stats`]); this module reads them when Prometheus scrapes, through a
//! [`Collector`], so the hot path pays nothing for metrics. Names follow the
//! Prometheus conventions: `_total` for counters, base units, one metric per meaning
//! with labels for its dimensions. docs/operations.md lists them.

use evapi_ops::metrics::{counter, gauge, labelled_counter};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use crate::Handle;

/// Reads a server's counters at scrape time.
#[derive(Debug)]
pub struct ServerCollector {
    handle: Handle,
}

impl ServerCollector {
    /// A collector for the server behind `handle`.
    #[must_use]
    pub fn new(handle: Handle) -> Self {
        Self { handle }
    }
}

/// A registry with the server's metrics; add your own beside them.
#[must_use]
pub fn registry(handle: &Handle) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ServerCollector::new(handle.clone())));
    registry
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.handle.stats();
        let clients = self.handle.clients();
        let e = &mut encoder;
        gauge(
            e,
            "evapi_clients",
            "Clients holding an app slot now (those in connection-new included).",
            to_i64(s.connected),
        )?;
        gauge(
            e,
            "evapi_clients_pending",
            "Connections not yet accepted: in the pending pool (TLS handshake, token) or in connection-new.",
            to_i64(s.pending + clients.iter().filter(|c| !c.accepted).count()),
        )?;
        counter(
            e,
            "evapi_connections_accepted",
            "Connections that reached connection-new.",
            s.accepted,
        )?;
        labelled_counter(
            e,
            "evapi_connections_refused",
            "Connections closed before connection-new, by reason.",
            "reason",
            [
                ("max-clients", s.refused_max_clients),
                ("allow", s.refused_allow),
                ("per-ip", s.refused_per_ip),
                ("throttled", s.refused_throttled),
                ("tls", s.tls_failed),
                ("auth", s.auth_failed),
                ("evicted", s.pending_evicted),
            ],
        )?;
        counter(
            e,
            "evapi_tokens_refused",
            "Tokens checked and found wrong (the guesses actually tried).",
            s.wrong_tokens,
        )?;
        labelled_counter(
            e,
            "evapi_disconnects",
            "Connections ended after connection-new, by reason.",
            "reason",
            crate::CloseReason::ALL
                .iter()
                .map(|r| (r.name(), s.closed.get(r.name()).copied().unwrap_or(0))),
        )?;
        counter(
            e,
            "evapi_frames_sent",
            "Frames written to clients.",
            s.frames_out,
        )?;
        counter(
            e,
            "evapi_frames_received",
            "Frames received from clients.",
            s.frames_in,
        )?;
        counter(
            e,
            "evapi_bytes_sent",
            "Bytes written to clients, framing included.",
            s.bytes_out,
        )?;
        counter(
            e,
            "evapi_bytes_received",
            "Payload bytes received from clients.",
            s.bytes_in,
        )?;
        counter(
            e,
            "evapi_frames_dropped",
            "Frames not queued for a client because its queue was full.",
            s.dropped,
        )?;
        counter(
            e,
            "evapi_incoming_dropped",
            "Messages dropped because the worker queue was over --queue-limit.",
            s.worker_dropped,
        )?;
        counter(
            e,
            "evapi_decode_errors",
            "Bad frames from clients.",
            s.bad_frames,
        )?;
        counter(
            e,
            "evapi_relays",
            "Relay, multicast and unicast calls that queued a frame.",
            s.relays,
        )?;
        counter(
            e,
            "evapi_relay_no_client",
            "Relay, multicast and unicast calls that found no client (or none with the tag).",
            s.relay_no_client,
        )?;
        counter(
            e,
            "evapi_rate_limited",
            "Times a client's reading was paused for going over --max-rate.",
            s.rate_limited,
        )?;
        gauge(
            e,
            "evapi_queued_bytes",
            "Bytes queued for all clients now.",
            to_i64(s.queued_bytes),
        )?;
        gauge(
            e,
            "evapi_client_queue_bytes_max",
            "Bytes queued for the most backed-up client now.",
            to_i64(clients.iter().map(|c| c.queue_bytes).max().unwrap_or(0)),
        )?;
        Ok(())
    }
}
