//! The fuzz targets' invariants (`fuzz/invariants/`), run on stable in every test run:
//! over the committed seeds (`fuzz/seeds/<target>/`, where libFuzzer also starts
//! from and where crashes become regression seeds), then over random inputs from
//! proptest. libFuzzer itself needs nightly: `cargo +nightly fuzz run <target>`, which
//! `.ci/run` does for 60 s per target when a nightly toolchain is present.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use proptest::prelude::*;

#[path = "../fuzz/invariants/auth_frame.rs"]
mod auth_frame;
#[path = "../fuzz/invariants/control_line.rs"]
mod control_line;
#[path = "../fuzz/invariants/decode.rs"]
mod decode;
#[path = "../fuzz/invariants/sip_parse.rs"]
mod sip_parse;
#[path = "../fuzz/invariants/skip_oversize.rs"]
mod skip_oversize;
#[path = "../fuzz/invariants/template.rs"]
mod template;
#[path = "../fuzz/invariants/transcript.rs"]
mod transcript;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

fn replay(target: &str, check: fn(&[u8])) {
    for (path, input) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| check(&input));
        assert!(
            outcome.is_ok(),
            "{target}: the seed {path} breaks an invariant"
        );
    }
}

#[test]
fn control_line_corpus() {
    replay("control_line", control_line::check);
}

#[test]
fn auth_frame_corpus() {
    replay("auth_frame", auth_frame::check);
}

#[test]
fn decode_corpus() {
    replay("decode", decode::check);
}

#[test]
fn sip_parse_corpus() {
    replay("sip_parse", sip_parse::check);
}

#[test]
fn skip_oversize_corpus() {
    replay("skip_oversize", skip_oversize::check);
}

#[test]
fn template_corpus() {
    replay("template", template::check);
}

#[test]
fn transcript_corpus() {
    replay("transcript", transcript::check);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decode_random(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        decode::check(&input);
    }

    #[test]
    fn decode_random_netstrings(
        cuts in proptest::collection::vec(any::<u8>(), 0..8),
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
    ) {
        // Mostly valid streams, so the round trip and chunking invariants get exercised.
        let mut input = vec![u8::try_from(cuts.len()).unwrap()];
        input.extend_from_slice(&cuts);
        for f in &frames {
            input.extend_from_slice(format!("{}:", f.len()).as_bytes());
            input.extend_from_slice(f);
            input.push(b',');
        }
        decode::check(&input);
    }

    #[test]
    fn sip_parse_random(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        sip_parse::check(&input);
    }

    #[test]
    fn skip_oversize_random(input in proptest::collection::vec(any::<u8>(), 0..900)) {
        skip_oversize::check(&input);
    }

    #[test]
    fn control_line_random(
        cmd in "(relay|multicast|unicast|close|set_tag|clients|stats|auth|id|tag|conidx|encoding)",
        value in "(\"[a-zA-Z0-9=+/ ]{0,12}\"|-?[0-9]{1,20}|true|null|\\{\"connid\":[0-9]{1,3}\\}|\"base64\")",
        extra in "(,\"(tag|id|conidx|encoding)\":(\"[a-z]{0,4}\"|[0-9]{1,3}|\"base64\"))?",
    ) {
        control_line::check(format!("{{\"{cmd}\":{value}{extra}}}").as_bytes());
    }

    #[test]
    fn auth_frame_random(input in "\\{\"auth\":(\"[a-z0-9-]{0,30}\"|[0-9]+|null)(,\"[a-z]{1,4}\":1)?\\}") {
        auth_frame::check(input.as_bytes());
    }

    #[test]
    fn template_random(
        template in "[ {\\[]?(\"?[a-z:,\\\\\" {}\\[\\]]{0,6}(\\$(ci|fu|ru|rU|rd|tU|cs|sp|T\\(id_index\\)|evapi\\(msg\\)|evapi\\(conidx\\)|\\$)))*[\" }\\]]{0,3}",
        values in proptest::collection::vec("\\PC{0,8}|[\"\\\\\u{0}-\u{1f}\u{2028}\u{85},:{}\\[\\]]{0,8}", 0..8),
    ) {
        let mut input = template.into_bytes();
        for v in values {
            input.push(0);
            input.extend_from_slice(v.as_bytes());
        }
        template::check(&input);
    }

    #[test]
    fn transcript_random(
        t in proptest::num::u64::ANY,
        lines in proptest::collection::vec("\\{\"kind\":\"(frame|open|close|raw|lost)\",\"t\":[0-9]{1,20},\"conn\":[0-9]{1,3},\"from\":\"(node|app)\",\"(text|b64)\":\"[a-zA-Z0-9+/=\\\\\"{}:,]{0,40}\"\\}", 0..12),
    ) {
        let mut input = b"{\"format\":\"evapi-transcript\",\"version\":1,\"started\":\"2026-12-01T10:00:00Z\",\"source\":\"proxy\",\"node\":\"n\",\"framing\":\"netstring\",\"part\":0}\n".to_vec();
        for l in lines {
            input.extend_from_slice(l.as_bytes());
            input.push(b'\n');
        }
        // The speed, from the last 8 bytes.
        input.extend_from_slice(&t.to_le_bytes());
        transcript::check(&input);
    }
}
