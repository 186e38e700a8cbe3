//! Fuzz target; the invariants are in `invariants/auth_frame.rs`, shared with the corpus
//! replay test.
#![no_main]

#[path = "../invariants/auth_frame.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::check(data));
