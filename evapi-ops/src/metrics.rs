//! Prometheus helpers shared by every exporter of the toolkit (the event socket, the
//! NATS bridge, the simulator): one-line encoders for a collector's `encode`, and the
//! classic text format for scrapers that do not ask for OpenMetrics.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Encode one counter.
///
/// # Errors
///
/// When the encoder fails (a formatting error).
pub fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Encode one gauge.
///
/// # Errors
///
/// When the encoder fails (a formatting error).
pub fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Encode one gauge with a fractional value (seconds, ratios).
///
/// # Errors
///
/// When the encoder fails (a formatting error).
pub fn gauge_f64(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Encode a counter with one label, one series per `(label value, count)`.
///
/// # Errors
///
/// When the encoder fails (a formatting error).
pub fn labelled_counter<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    series: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (value, n) in series {
        let labels = [(label, value)];
        let metric = ConstCounter::new(n);
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// OpenMetrics text (what prometheus-client writes) as the classic Prometheus text
/// format: a counter family `x` is named `x_total` in its `# HELP`/`# TYPE` lines, as
/// its samples are; `# UNIT` and `# EOF` lines go.
#[must_use]
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let head = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match head {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;

    #[derive(Debug)]
    struct Two;

    impl Collector for Two {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            counter(&mut encoder, "x_requests", "Requests.", 3)?;
            gauge(&mut encoder, "x_open", "Open now.", -1)?;
            labelled_counter(
                &mut encoder,
                "x_refused",
                "Refused.",
                "why",
                [("a", 1), ("b", 2)],
            )
        }
    }

    #[test]
    fn classic_names_counters_total_in_help_and_type_and_drops_eof() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Two));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE x_requests counter"), "{text}");
        let classic = classic(&text);
        assert!(
            classic.contains("# TYPE x_requests_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# HELP x_requests_total Requests.\n"),
            "{classic}"
        );
        assert!(classic.contains("x_requests_total 3\n"), "{classic}");
        assert!(
            classic.contains("# TYPE x_open gauge\nx_open -1\n"),
            "{classic}"
        );
        assert!(
            classic.contains("x_refused_total{why=\"b\"} 2\n"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"), "{classic}");
    }
}
