//! Fuzz target; the invariants are in `invariants/template.rs`, shared with the corpus
//! replay test.
#![no_main]

#[path = "../invariants/template.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::check(data));
