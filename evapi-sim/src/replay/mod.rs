//! `evapi-sim replay`: play a recorded transcript's events to an app, as the node did,
//! and judge the app's answers against the recorded ones.
//!
//! Sans-I/O: a [`Plan`] is built from the transcript's entries (the node's frames in
//! order, with their time offsets and transaction ids; the app's recorded answer to
//! each); a [`Judge`] takes `now` with every input, recreates each suspended
//! transaction in the simulator's tm table when its event goes out (so a late or second
//! answer is refused as Kamailio's `t_continue` would refuse it), and ends with a
//! [`ReplayReport`]. [`play`] is the driver: it owns the socket and the clock.
//!
//! Answers are matched by transaction id (found where answers carry them: `tindex` /
//! `tlabel`, `data.index` / `data.label`, ...). Field paths in `ignore` are left out of
//! the comparison (timestamps, ids of the app's own).
//!
//! # Layout
//!
//! - `files`: [`read`], a recording's parts on disk into a [`Plan`].
//! - `plan`: [`Plan`], the transcript read entry by entry.
//! - `judge`: [`Judge`], the answers compared with the recording (`diff`: field by field).
//! - `report`: [`ReplayReport`], its summary and HTML page.
//! - `play`: [`play`], the driver; [`Speed`], [`offset`].

use std::time::Duration;

mod diff;
mod files;
mod judge;
mod plan;
mod play;
mod report;

pub use files::{first_part, read, Recording, RecordingError};
pub use judge::Judge;
pub use plan::{Plan, Planned};
pub use play::{offset, play, playing_time, ReplayError, Speed, MAX_OFFSET};
pub use report::{Comparison, ReplayReport, ReplayedCall};

/// Default wait for an app's answer (the replay's `fr_inv_timer`).
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Differences listed in full in the report; the rest are counted.
pub const MAX_LISTED: usize = 1000;
#[cfg(test)]
mod tests {
    use super::diff::diff;
    use super::*;
    use evapi_proto::transcript::{Entry, Payload, Side};
    use evapi_proto::AnswerReader;
    use serde_json::Value;
    use std::time::Instant;

    fn frame(t: u64, from: Side, text: &str) -> Entry {
        Entry::Frame {
            t,
            conn: 1,
            from,
            payload: Payload::of(text.as_bytes()),
        }
    }

    /// Regression (issue 24): `t` = 2^64-1 with `--speed 1e-7` panicked (exit 101).
    #[test]
    fn offsets_saturate_whatever_the_transcript_and_speed() {
        assert_eq!(offset(2_000_000, 1.0), Duration::from_secs(2));
        assert_eq!(offset(2_000_000, 10.0), Duration::from_millis(200));
        for (t, f) in [
            (u64::MAX, 1e-7),
            (u64::MAX, f64::MIN_POSITIVE),
            (u64::MAX, 1.0),
            (1, f64::MIN_POSITIVE),
        ] {
            assert_eq!(offset(t, f), MAX_OFFSET, "{t} at {f}");
        }
        assert_eq!(offset(0, f64::MIN_POSITIVE), Duration::ZERO);
        assert_eq!(offset(5, f64::MAX), Duration::ZERO);
        let now = Instant::now();
        assert!(now.checked_add(MAX_OFFSET).is_some());
    }

    proptest::proptest! {
        #[test]
        fn any_offset_and_speed_give_a_time_within_the_cap(t in proptest::num::u64::ANY, f in 1e-300f64..1e300) {
            proptest::prop_assert!(offset(t, f) <= MAX_OFFSET);
        }
    }

    fn plan() -> Plan {
        Plan::new(
            [
                frame(
                    1000,
                    Side::Node,
                    r#"{"tindex":1,"tlabel":1,"ruri":"sip:a@x"}"#,
                ),
                frame(
                    1500,
                    Side::App,
                    r#"{"tindex":1,"tlabel":1,"code":486,"ts":1}"#,
                ),
                frame(2000, Side::Node, r#"{"tindex":2,"tlabel":1}"#),
                frame(2100, Side::Node, r#"{"event":"notice"}"#),
                frame(2600, Side::App, r#"{"tindex":2,"tlabel":1,"code":200}"#),
                frame(3000, Side::Node, r#"{"tindex":3,"tlabel":1}"#),
                frame(3100, Side::App, r#"{"hello":1}"#),
            ],
            &AnswerReader::default(),
        )
        .unwrap()
    }

    #[test]
    fn the_plan_pairs_recorded_answers_with_their_events() {
        let p = plan();
        assert_eq!(p.events.len(), 4);
        assert_eq!(p.events[1].at_us, 1000, "offsets from the first event");
        assert_eq!(p.suspended(), 3);
        assert_eq!(p.answered(), 2);
        assert_eq!(p.unpaired, 1);
    }

    #[test]
    fn answers_are_judged_against_the_recording() {
        let mut p = plan();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut j = Judge::new(
            &mut p,
            AnswerReader::default(),
            &["ts".to_owned()],
            Duration::from_secs(5),
        );
        for e in &p.events {
            j.sent(t0, e);
        }
        // Same as recorded but for the ignored timestamp: matched.
        j.message(ms(1), br#"{"tindex":1,"tlabel":1,"code":486,"ts":99}"#);
        // A different code: the diff names it.
        j.message(ms(2), br#"{"tindex":2,"tlabel":1,"code":503}"#);
        // A second answer is refused, as t_continue refuses it.
        j.message(ms(3), br#"{"tindex":2,"tlabel":1,"code":200}"#);
        // Ids never played.
        j.message(ms(4), br#"{"tindex":9,"tlabel":9,"code":200}"#);
        j.message(ms(5), br#"{"hello":2}"#);
        assert_eq!(j.waiting(), 1);
        j.handle_timeout(ms(5000));
        // Late: the timer ended it.
        j.message(ms(5001), br#"{"tindex":3,"tlabel":1,"code":200}"#);
        let r = j.finish();
        assert_eq!(
            (r.matched, r.different, r.missing, r.extra, r.unanswered),
            (1, 1, 0, 0, 1)
        );
        assert_eq!(r.refused.get("already-resumed"), Some(&1));
        assert_eq!(r.refused.get("unknown"), Some(&1));
        assert_eq!(r.refused.get("late"), Some(&1));
        assert_eq!(r.other_messages, 1);
        assert!(r.failed());
        let different = r
            .outcomes
            .iter()
            .find(|o| o.verdict == Comparison::Different)
            .unwrap();
        assert_eq!(different.diff, ["code: 200 -> 503"]);
        assert_eq!(r.recorded_latency.count, 2);
        assert!(
            r.summary().contains("1 matched, 1 different"),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn a_silent_app_leaves_every_recorded_answer_missing() {
        let mut p = plan();
        let t0 = Instant::now();
        let mut j = Judge::new(&mut p, AnswerReader::default(), &[], Duration::from_secs(1));
        for e in &p.events {
            j.sent(t0, e);
        }
        j.handle_timeout(t0 + Duration::from_secs(1));
        let r = j.finish();
        assert_eq!((r.missing, r.unanswered, r.matched), (2, 1, 0));
        assert!(r.failed());
    }

    #[test]
    fn diffs_name_nested_and_absent_fields() {
        let mut out = Vec::new();
        let a: Value = serde_json::json!({"code":486,"data":{"r":"busy","x":1}});
        let b: Value = serde_json::json!({"code":486,"data":{"r":"free"},"y":true});
        diff("", &a, &b, &mut out);
        assert_eq!(
            out,
            [
                "data.r: \"busy\" -> \"free\"",
                "data.x: 1 -> (absent)",
                "y: (absent) -> true"
            ]
        );
    }

    #[test]
    fn the_summary_says_how_many_failures_it_did_not_list() {
        let mut r = ReplayReport {
            different: 25,
            ..ReplayReport::default()
        };
        r.outcomes = (0..25)
            .map(|n| ReplayedCall {
                id: format!("{n}:{n}"),
                verdict: Comparison::Different,
                diff: vec!["code: 200 -> 486".into()],
                recorded_us: None,
                replayed_us: None,
            })
            .collect();
        let text = r.summary();
        assert_eq!(
            text.matches(" different: code: 200 -> 486").count(),
            20,
            "{text}"
        );
        assert!(
            text.contains("  ... and 5 more (listed, up to 1,000,"),
            "{text}"
        );
    }
}
