//! The Prometheus metrics of the client's long-running commands (`respond`, `bridge`):
//! their collectors, read from the libraries' snapshots at scrape time, and the
//! listener that serves them.

use std::sync::Arc;

use anyhow::Context as _;
use evapi_client::respond::Counts;
use evapi_nats::BridgeCounts;
use evapi_ops::metrics::{counter, gauge};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

/// Serve `collector` at `at` (GET /metrics) until `stop`; says where (port 0 picks one:
/// scripts and tests read the address from this line).
pub(crate) async fn serve(
    at: &str,
    command: &str,
    collector: Box<dyn Collector>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .with_context(|| format!("cannot listen on --metrics {at}"))?;
    if let Ok(addr) = listener.local_addr() {
        eprintln!("evapi-client {command}: metrics on http://{addr}/metrics");
    }
    let mut registry = Registry::default();
    registry.register_collector(collector);
    let api = evapi_ops::http::HttpApi::new(registry, None, None);
    tokio::spawn(evapi_ops::http::serve(listener, api, stop));
    Ok(())
}

/// `respond`'s counters.
#[derive(Debug)]
pub(crate) struct RespondMetrics(pub(crate) Arc<Counts>);

impl Collector for RespondMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let c = self.0.snapshot();
        let e = &mut encoder;
        counter(
            e,
            "evapi_respond_answered",
            "Events answered (sent, and over NATS confirmed or not).",
            c.answered,
        )?;
        counter(
            e,
            "evapi_respond_ignored",
            "Messages that were not suspend events.",
            c.ignored,
        )?;
        counter(
            e,
            "evapi_respond_invalid",
            "Suspend events with ids that are not numbers, not answered.",
            c.invalid,
        )?;
        counter(
            e,
            "evapi_respond_expired",
            "Events skipped unanswered over NATS: their deadline had passed.",
            c.expired,
        )?;
        counter(
            e,
            "evapi_respond_fallback",
            "Events answered with --fallback-code: the handler would have missed --deadline.",
            c.fallback,
        )?;
        counter(
            e,
            "evapi_respond_given_back",
            "Events given back to the work queue over NATS (stopping, or pulled and not started).",
            c.given_back,
        )?;
        gauge(
            e,
            "evapi_respond_in_flight",
            "Events in hand over NATS now: taken, not yet answered and confirmed.",
            i64::try_from(c.in_flight).unwrap_or(i64::MAX),
        )?;
        Ok(())
    }
}

/// The bridge's counters.
#[derive(Debug)]
pub(crate) struct BridgeMetrics(pub(crate) Arc<BridgeCounts>);

impl Collector for BridgeMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let c = self.0.snapshot();
        let e = &mut encoder;
        counter(
            e,
            "evapi_bridge_events",
            "Events read from the node and held for JetStream",
            c.events,
        )?;
        counter(
            e,
            "evapi_bridge_published",
            "Events JetStream confirmed",
            c.published,
        )?;
        counter(
            e,
            "evapi_bridge_retries",
            "Publications tried again after a failed confirmation",
            c.retries,
        )?;
        counter(
            e,
            "evapi_bridge_shed",
            "Events shed because the buffer was full",
            c.shed,
        )?;
        counter(
            e,
            "evapi_bridge_shed_answered",
            "Shed events answered with --shed-code",
            c.shed_answered,
        )?;
        counter(
            e,
            "evapi_bridge_answers",
            "Answers from NATS for the node",
            c.answers,
        )?;
        counter(
            e,
            "evapi_bridge_answers_dropped",
            "Answers from NATS too large for the node's framing, not written",
            c.answers_dropped,
        )?;
        counter(
            e,
            "evapi_bridge_answers_refused",
            "Answers from NATS naming a transaction the bridge is not waiting for (forged, second or late), not written",
            c.answers_refused,
        )?;
        counter(
            e,
            "evapi_bridge_untransacted_refused",
            "Of the refused answers, frames naming no transaction that no --allow-untransacted rule allows, or with a seal key, without their own seal",
            c.untransacted_refused,
        )?;
        counter(
            e,
            "evapi_bridge_answers_shed",
            "Answers from NATS given back to the stream for later past --answers-buffer-bytes (the node reads too slowly)",
            c.answers_shed,
        )?;
        counter(
            e,
            "evapi_bridge_answers_expired",
            "Answers dropped because the deadline of their event had passed (the call had ended at the node)",
            c.answers_expired,
        )?;
        counter(
            e,
            "evapi_bridge_answers_redelivered",
            "Answers JetStream delivered again (a bridge stopped before acknowledging them, one held them past the 5 s ack wait, or gave them back past --answers-buffer-bytes)",
            c.answers_redelivered,
        )?;
        gauge(
            e,
            "evapi_bridge_answers_buffered_bytes",
            "Bytes of answers from NATS waiting for the node",
            i64::try_from(c.answers_buffered_bytes).unwrap_or(i64::MAX),
        )?;
        counter(
            e,
            "evapi_bridge_nats_disconnects",
            "Times the NATS connection was lost",
            c.disconnects,
        )?;
        gauge(
            e,
            "evapi_bridge_buffered_bytes",
            "Bytes of events JetStream has not confirmed yet",
            i64::try_from(c.buffered_bytes).unwrap_or(i64::MAX),
        )?;
        gauge(
            e,
            "evapi_bridge_buffered_events",
            "Events JetStream has not confirmed yet",
            i64::try_from(c.buffered).unwrap_or(i64::MAX),
        )?;
        counter(
            e,
            "evapi_bridge_events_expired",
            "Events dropped unpublished because their deadline (--event-ttl) passed: their calls had ended",
            c.expired,
        )?;
        evapi_ops::metrics::gauge_f64(
            e,
            "evapi_bridge_oldest_held_seconds",
            "How long the oldest event JetStream has not confirmed has waited (0: none)",
            c.oldest_held_ms as f64 / 1000.0,
        )?;
        gauge(
            e,
            "evapi_bridge_nats_connected",
            "1 while connected to NATS",
            i64::from(c.connected),
        )?;
        gauge(
            e,
            "evapi_bridge_publishing_failing",
            "1 while JetStream refuses or does not confirm publications (NATS away, or a cluster electing a stream leader: connected but not storing)",
            i64::from(c.failing),
        )?;
        Ok(())
    }
}
