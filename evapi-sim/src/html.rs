//! HTML reports people look at: one self-contained file (no script, no network, no
//! fonts to fetch) with the outcome table, the latency histogram and percentile curve,
//! the rate over time and the answers per app, drawn as inline SVG by plotters.
//!
//! [`Page`] is plain data filled by `run` and `replay`; [`render`] turns it into HTML.
//! A chart that cannot be drawn becomes a line saying so, never a failed run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotters::prelude::*;

use crate::report::{Latency, Timeline, BUCKETS_US};

/// Width and height of each chart, pixels.
const CHART: (u32, u32) = (760, 320);
/// Colours of the series, in order (recorded, replayed; or one series).
const COLOURS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];
/// Colours of the rate chart's series (one per code and cause), in label order.
const SERIES: [RGBColor; 8] = [
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// A table of the page.
#[derive(Debug, Clone, Default)]
pub struct PageTable {
    /// Its caption.
    pub caption: String,
    /// Column names.
    pub header: Vec<String>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
}

/// Everything a report page shows.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The title, e.g. "evapi-sim replay day.jsonl".
    pub title: String,
    /// Whether the run passed (the banner's colour).
    pub passed: bool,
    /// One line under the title.
    pub summary: String,
    /// Outcome tables (above the charts).
    pub tables: Vec<PageTable>,
    /// Long tables (the differences), below the charts.
    pub details: Vec<PageTable>,
    /// Latency series, named (e.g. "recorded", "replayed").
    pub latency: Vec<(String, Latency)>,
    /// Counts per bin of `bin_ms` milliseconds since the start, one series per label
    /// (drawn stacked, one colour each).
    pub timeline: Timeline,
    /// What the timeline counts ("final replies", "answers"): said on its chart.
    pub timeline_of: String,
    /// The timeline's bin width, milliseconds.
    pub bin_ms: u64,
    /// Answers per app, by [`crate::report::app_label`] (conidx, address, tag, token).
    pub per_app: BTreeMap<String, u64>,
    /// How the report was made (date, version and commit, host, command line): a
    /// table at the end, so the page can be filed as evidence.
    pub provenance: Vec<(String, String)>,
}

impl Page {
    /// Fill [`Page::provenance`] for this process: the date (UTC), `version` (with its
    /// commit), the host and the command line.
    pub fn made_by(&mut self, version: &str) {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let command: Vec<String> = std::env::args().collect();
        self.provenance = vec![
            (
                "date".to_owned(),
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ),
            ("version".to_owned(), version.to_owned()),
            ("host".to_owned(), host),
            ("command".to_owned(), command.join(" ")),
        ];
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page as one HTML document.
#[must_use]
pub fn render(page: &Page) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:820px;color:#222}}\
         .banner{{padding:.6em 1em;border-radius:6px;color:#fff;background:{colour}}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}\
         th{{background:#f4f4f4}}td.n{{text-align:right}}\
         figure{{margin:1.5em 0}}figcaption{{font-weight:600;margin-bottom:.3em}}\
         </style></head><body>\n<h1>{title}</h1>\n<p class=\"banner\" id=\"verdict\">{verdict}: {summary}</p>\n",
        title = escape(&page.title),
        colour = if page.passed { "#2e7d32" } else { "#c62828" },
        verdict = if page.passed { "PASSED" } else { "FAILED" },
        summary = escape(&page.summary),
    );
    out.push_str(&tables(&page.tables));
    latency(&mut out, &page.latency);
    if !page.timeline.is_empty() {
        timeline(&mut out, page);
    }
    if !page.per_app.is_empty() {
        figure(
            &mut out,
            "per-app",
            "Answers per app",
            per_app(&page.per_app),
        );
    }
    out.push_str(&tables(&page.details));
    if !page.provenance.is_empty() {
        let made = PageTable {
            caption: "How this report was made".to_owned(),
            header: vec!["what".to_owned(), "value".to_owned()],
            rows: page
                .provenance
                .iter()
                .map(|(k, v)| vec![k.clone(), v.clone()])
                .collect(),
        };
        out.push_str("<section id=\"provenance\">");
        out.push_str(&tables(std::slice::from_ref(&made)));
        out.push_str("</section>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// The latency charts and table, for the series that measured any answer.
fn latency(out: &mut String, latency: &[(String, Latency)]) {
    let measured: Vec<&(String, Latency)> = latency.iter().filter(|(_, l)| l.count > 0).collect();
    if measured.is_empty() {
        return;
    }
    figure(
        out,
        "latency-histogram",
        "Answer latency: histogram",
        histogram(&measured),
    );
    figure(
        out,
        "latency-percentiles",
        "Answer latency: percentile curve",
        percentiles(&measured),
    );
    // Milliseconds, as on the charts: one time unit on the page.
    let ms = |us: u64| format!("{:.3} ms", us as f64 / 1000.0);
    let mut table = PageTable {
        caption: "Answer latency".into(),
        header: ["series", "count", "p50", "p90", "p99", "p99.9", "max"]
            .map(String::from)
            .to_vec(),
        rows: Vec::new(),
    };
    for (name, l) in &measured {
        table.rows.push(vec![
            name.clone(),
            l.count.to_string(),
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us),
        ]);
    }
    out.push_str(&tables(std::slice::from_ref(&table)));
}

/// The rate chart of the page's timeline.
fn timeline(out: &mut String, page: &Page) {
    let what = if page.timeline_of.is_empty() {
        "final replies"
    } else {
        page.timeline_of.as_str()
    };
    let mut caption = String::new();
    let _ = write!(
        caption,
        "{} per second over time, by code ({} ms bins; the last, lighter, may cover only part of its bin)",
        capitalised(what),
        page.bin_ms.max(1)
    );
    figure(
        out,
        "rate",
        &caption,
        rate(&page.timeline, page.bin_ms.max(1), what),
    );
}

/// `text` with its first character in upper case.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn tables(tables: &[PageTable]) -> String {
    let mut out = String::new();
    for table in tables {
        let _ = write!(
            out,
            "<table><caption>{}</caption><tr>",
            escape(&table.caption)
        );
        for h in &table.header {
            let _ = write!(out, "<th>{}</th>", escape(h));
        }
        out.push_str("</tr>");
        for row in &table.rows {
            out.push_str("<tr>");
            for cell in row {
                let numeric = cell
                    .strip_suffix(" us")
                    .or_else(|| cell.strip_suffix(" ms"))
                    .unwrap_or(cell)
                    .parse::<f64>()
                    .is_ok();
                let class = if numeric { " class=\"n\"" } else { "" };
                let _ = write!(out, "<td{class}>{}</td>", escape(cell));
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>\n");
    }
    out
}

fn figure(out: &mut String, id: &str, caption: &str, svg: Result<String, String>) {
    let _ = write!(
        out,
        "<figure id=\"{id}\"><figcaption>{}</figcaption>",
        escape(caption)
    );
    match svg {
        Ok(svg) => out.push_str(&svg),
        Err(e) => {
            let _ = write!(out, "<p>chart unavailable: {}</p>", escape(&e));
        }
    }
    out.push_str("</figure>\n");
}

/// An SVG chart: a white canvas of [`CHART`] pixels handed to `draw`.
fn svg(
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// The frame every chart shares: margins and room for the axis labels.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60);
    builder
}

fn bucket_label(i: usize) -> String {
    let us = |v: u64| {
        if v >= 1_000_000 {
            format!("{}s", v as f64 / 1e6)
        } else if v >= 1000 {
            format!("{}ms", v as f64 / 1e3)
        } else {
            format!("{v}us")
        }
    };
    match BUCKETS_US.get(i) {
        Some(le) => format!("<={}", us(*le)),
        None => format!(">{}", us(BUCKETS_US[BUCKETS_US.len() - 1])),
    }
}

/// Bars per latency bucket, one colour per series, side by side.
fn histogram(series: &[&(String, Latency)]) -> Result<String, String> {
    let buckets = BUCKETS_US.len() + 1;
    // Leave out the empty tail above the slowest answer.
    let last = series
        .iter()
        .filter_map(|(_, l)| l.buckets.iter().rposition(|b| b.count > 0))
        .max()
        .unwrap_or(0)
        .min(buckets - 1);
    let first = series
        .iter()
        .filter_map(|(_, l)| l.buckets.iter().position(|b| b.count > 0))
        .min()
        .unwrap_or(0);
    let shown = first..last + 1;
    let top = series
        .iter()
        .flat_map(|(_, l)| l.buckets.iter().map(|b| b.count))
        .max()
        .unwrap_or(1)
        .max(1);
    svg(|root| {
        let mut chart = frame(root)
            .build_cartesian_2d(
                shown.start as f64..shown.end as f64,
                0u64..top + top / 10 + 1,
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(shown.len() * 2 + 1)
            .x_label_formatter(&|x| {
                // Labels at the middle of each bucket (x = i + 0.5), none at the edges.
                if (x - x.floor() - 0.5).abs() < 0.01 {
                    bucket_label(x.floor() as usize)
                } else {
                    String::new()
                }
            })
            .y_desc("answers")
            .draw()
            .map_err(|e| e.to_string())?;
        let width = 0.8 / series.len() as f64;
        for (s, (name, l)) in series.iter().enumerate() {
            let colour = COLOURS[s % COLOURS.len()];
            chart
                .draw_series(
                    l.buckets
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| shown.contains(i))
                        .map(|(i, b)| {
                            let x0 = i as f64 + 0.1 + width * s as f64;
                            Rectangle::new([(x0, 0), (x0 + width, b.count)], colour.filled())
                        }),
                )
                .map_err(|e| e.to_string())?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// Latency (ms) at each percentile, one line per series.
fn percentiles(series: &[&(String, Latency)]) -> Result<String, String> {
    let top = series
        .iter()
        .flat_map(|(_, l)| l.curve.iter().map(|(_, us)| *us))
        .max()
        .unwrap_or(1) as f64
        / 1000.0;
    svg(|root| {
        // The x axis counts nines (HDR style): p90 at 1, p99 at 2, p99.9 at 3, so the
        // tail is not squeezed into the last pixels of a linear 0-100 axis.
        let mut chart = frame(root)
            .build_cartesian_2d(0f64..NINES, 0f64..(top * 1.1).max(0.001))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("percentile (log scale of the tail)")
            .y_desc("latency (ms)")
            .x_labels(5)
            .x_label_formatter(&|x| match x.round() as i64 {
                0 => "p0".to_owned(),
                1 => "p90".to_owned(),
                2 => "p99".to_owned(),
                3 => "p99.9".to_owned(),
                _ => "p99.99".to_owned(),
            })
            .draw()
            .map_err(|e| e.to_string())?;
        for (s, (name, l)) in series.iter().enumerate() {
            let colour = COLOURS[s % COLOURS.len()];
            let points: Vec<(f64, f64)> = l
                .curve
                .iter()
                .map(|(permille, us)| (nines(*permille), *us as f64 / 1000.0))
                .collect();
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// The percentile chart's x extent: up to p99.99.
const NINES: f64 = 4.0;

/// Where percentile `permille` (in tenths of a percent) sits on the chart's x axis:
/// -log10(1 - p), capped at [`NINES`] (the maximum, p100, is drawn there).
fn nines(permille: u32) -> f64 {
    let rest = 1.0 - f64::from(permille.min(1000)) / 1000.0;
    if rest <= 0.0 {
        NINES
    } else {
        (-rest.log10()).min(NINES)
    }
}

/// `what` per second, one stacked bar per bin of `bin_ms` with a colour per series
/// (bars, not a line: a short run has few bins, and a line between two points
/// suggests a trend that is not there); the last bin, which the run may have ended
/// inside, is drawn lighter.
fn rate(timeline: &Timeline, bin_ms: u64, what: &str) -> Result<String, String> {
    let per_s = |n: u64| n as f64 * 1000.0 / bin_ms as f64;
    let bins = timeline.bins();
    let at = |bins: &Vec<u64>, i: usize| bins.get(i).copied().unwrap_or(0);
    let top = (0..bins)
        .map(|i| per_s(timeline.series.values().map(|s| at(s, i)).sum()))
        .fold(0.0, f64::max);
    let end = bins as f64 * bin_ms as f64 / 1000.0;
    svg(|root| {
        let mut chart = frame(root)
            .build_cartesian_2d(0f64..end.max(0.001), 0f64..(top * 1.1).max(1.0))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds since the start")
            .y_desc(format!("{what} per second"))
            .draw()
            .map_err(|e| e.to_string())?;
        let width = bin_ms as f64 / 1000.0;
        let last = bins.saturating_sub(1);
        let mut below = vec![0.0; bins];
        for (s, (label, series)) in timeline.series.iter().enumerate() {
            let colour = SERIES[s % SERIES.len()];
            let bars: Vec<_> = (0..bins)
                .map(|i| {
                    let x = i as f64 * width;
                    let (y0, y1) = (below[i], below[i] + per_s(at(series, i)));
                    below[i] = y1;
                    let style = if i == last {
                        colour.mix(0.35).filled()
                    } else {
                        colour.filled()
                    };
                    Rectangle::new([(x, y0), (x + width * 0.9, y1)], style)
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(|e| e.to_string())?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// One bar per app.
fn per_app(apps: &BTreeMap<String, u64>) -> Result<String, String> {
    let names: Vec<&String> = apps.keys().collect();
    let top = apps.values().copied().max().unwrap_or(1).max(1);
    svg(|root| {
        let mut chart = frame(root)
            .build_cartesian_2d(0f64..names.len() as f64, 0u64..top + top / 10 + 1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(names.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 {
                    names.get(i).map(|n| format!("app {n}")).unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("answers")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(apps.values().enumerate().map(|(i, n)| {
                Rectangle::new(
                    [(i as f64 + 0.2, 0), (i as f64 + 0.8, *n)],
                    COLOURS[2].filled(),
                )
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(values: &[u64]) -> Latency {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for v in values {
            h.record(*v).unwrap();
        }
        Latency::of(&h)
    }

    #[test]
    fn a_page_has_its_charts_and_escapes_text() {
        let page = Page {
            title: "replay <day>".into(),
            passed: false,
            summary: "1 different".into(),
            details: Vec::new(),
            tables: vec![PageTable {
                caption: "Verdicts".into(),
                header: vec!["verdict".into(), "count".into()],
                rows: vec![vec!["matched".into(), "3".into()]],
            }],
            latency: vec![
                ("recorded".into(), latency(&[300, 400, 2000])),
                ("replayed".into(), latency(&[350, 900, 1500])),
            ],
            timeline: {
                let mut t = Timeline::default();
                for (label, ms) in [
                    ("200 answered", 10),
                    ("408 timer", 150),
                    ("200 answered", 320),
                ] {
                    t.count(label, std::time::Duration::from_millis(ms));
                }
                t
            },
            bin_ms: 100,
            per_app: [("0".to_owned(), 3)].into_iter().collect(),
            provenance: Vec::new(),
            timeline_of: "final replies".into(),
        };
        let html = render(&page);
        assert!(html.contains("<title>replay &lt;day&gt;</title>"));
        assert!(html.contains("FAILED: 1 different"));
        for id in [
            "latency-histogram",
            "latency-percentiles",
            "rate",
            "per-app",
        ] {
            assert!(html.contains(&format!("<figure id=\"{id}\">")), "{id}");
        }
        assert_eq!(html.matches("<svg").count(), 4, "four charts");
        let rate = &html[html.find("<figure id=\"rate\">").unwrap()..];
        let rate = &rate[..rate.find("</figure>").unwrap()];
        assert!(rate.contains("by code"), "{rate}");
        assert!(rate.contains("Final replies per second"), "{rate}");
        for series in ["200 answered", "408 timer"] {
            assert!(rate.contains(series), "{series} in the legend: {rate}");
        }
        assert!(!html.contains("chart unavailable"), "{html}");
        assert!(!html.contains("<script"), "self-contained, no script");
    }

    #[test]
    fn a_caption_starting_with_any_character_is_capitalised() {
        // Page is public: a library user may name the timeline in any language.
        assert_eq!(capitalised("événements"), "Événements");
        assert_eq!(capitalised("ßig"), "SSig");
        assert_eq!(capitalised(""), "");
    }

    #[test]
    fn the_percentile_axis_counts_nines() {
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(near(nines(900), 1.0));
        assert!(near(nines(990), 2.0));
        assert!(near(nines(999), 3.0));
        assert!(near(nines(1000), NINES), "the maximum at the end");
        assert!(nines(500) > 0.3 && nines(500) < 0.31);
    }
}
