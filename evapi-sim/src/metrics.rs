//! Prometheus metrics of the simulator's async-relay core, beside the embedded
//! server's (`evapi_server::metrics`).
//!
//! The driver's loop owns the router and its counters (plain integers, no atomics on
//! the hot path); it publishes a snapshot here every [`PUBLISH_EVERY`] and when it
//! ends, and records each answer's round trip in a histogram. A scrape reads the last
//! snapshot, so counters may lag the truth by up to [`PUBLISH_EVERY`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::router::RouterCounters;

/// How often the driver publishes its counters.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Default, Clone)]
struct Snapshot {
    suspended: usize,
    counters: RouterCounters,
    kernel_drops: Option<u64>,
}

/// The simulator's metrics; cheap to clone, shared by the driver and the collector.
#[derive(Debug, Clone)]
pub(crate) struct SimMetrics {
    snapshot: Arc<Mutex<Snapshot>>,
    roundtrip: Histogram,
}

impl Default for SimMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SimMetrics {
    /// Empty metrics; buckets of the round trip from 0.5 ms to about 16 s.
    #[must_use]
    pub(crate) fn new() -> Self {
        Self {
            snapshot: Arc::default(),
            roundtrip: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        }
    }

    /// The driver's counters now, and how many transactions wait.
    pub(crate) fn publish(&self, counters: &RouterCounters, suspended: usize) {
        let mut s = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        s.counters.clone_from(counters);
        s.suspended = suspended;
    }

    /// Datagrams the kernel dropped on the SIP socket so far (see [`crate::udp`]).
    pub(crate) fn kernel_drops(&self, drops: Option<u64>) {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .kernel_drops = drops;
    }

    /// One answered transaction: suspend to answer.
    pub(crate) fn answered(&self, roundtrip: Duration) {
        self.roundtrip.observe(roundtrip.as_secs_f64());
    }

    /// Register these metrics (and the round-trip histogram) in `registry`.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "evapi_sim_async_roundtrip_seconds",
            "Suspend to the app's answer, for answered transactions.",
            self.roundtrip.clone(),
        );
        registry.register_collector(Box::new(SnapshotCollector(Arc::clone(&self.snapshot))));
    }

    /// The server's metrics (behind `handle`) with the simulator's beside them.
    #[must_use]
    pub(crate) fn registry(&self, handle: &evapi_server::Handle) -> Registry {
        let mut registry = evapi_server::metrics::registry(handle);
        self.register(&mut registry);
        registry
    }
}

#[derive(Debug)]
struct SnapshotCollector(Arc<Mutex<Snapshot>>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let c = &s.counters;
        let e = &mut encoder;
        let suspended = ConstGauge::new(i64::try_from(s.suspended).unwrap_or(i64::MAX));
        suspended.encode(e.encode_descriptor(
            "evapi_sim_transactions_suspended",
            "Transactions waiting for their final reply now.",
            None,
            suspended.metric_type(),
        )?)?;
        let codes: Vec<(String, u64)> = c.finals.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        evapi_ops::metrics::labelled_counter(
            e,
            "evapi_sim_final_replies",
            "Final replies sent, by SIP code.",
            "code",
            codes.iter().map(|(k, v)| (k.as_str(), *v)),
        )?;
        evapi_ops::metrics::labelled_counter(
            e,
            "evapi_sim_refused_continues",
            "Answers the transaction table refused (late, duplicate, unknown...), by reason.",
            "reason",
            c.refused.iter().map(|(k, v)| (*k, *v)),
        )?;
        for (name, help, value) in [
            (
                "evapi_sim_timeouts",
                "Transactions ended by fr_inv_timer.",
                c.timeouts,
            ),
            (
                "evapi_sim_invalid_answers",
                "App messages that were not valid answers.",
                c.invalid_answers,
            ),
            (
                "evapi_sim_undelivered",
                "Events that reached no app.",
                c.undelivered,
            ),
            (
                "evapi_sim_no_app",
                "Requests answered at once because no app got the event (--no-app-reply).",
                c.no_app,
            ),
            (
                "evapi_sim_busy",
                "Requests answered 503 because --max-transactions were waiting.",
                c.busy,
            ),
        ] {
            let metric = ConstCounter::new(value);
            metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        if let Some(drops) = s.kernel_drops {
            evapi_ops::metrics::counter(
                e,
                "evapi_sim_sip_kernel_drops",
                "SIP datagrams the kernel dropped because the socket's receive buffer was full.",
                drops,
            )?;
        }
        Ok(())
    }
}
