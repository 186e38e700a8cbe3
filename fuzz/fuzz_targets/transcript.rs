//! Fuzz target; the invariants are in `invariants/transcript.rs`, shared with the corpus
//! replay test.
#![no_main]

#[path = "../invariants/transcript.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::check(data));
