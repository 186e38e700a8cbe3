//! Fuzz target; the invariants are in `invariants/control_line.rs`, shared with the corpus
//! replay test.
#![no_main]

#[path = "../invariants/control_line.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::check(data));
