//! Fuzz the decoders with arbitrary bytes cut into arbitrary reads; the invariants are in
//! `invariants/decode.rs`, shared with the corpus replay test of the main workspace.
#![no_main]

#[path = "../invariants/decode.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|input: &[u8]| invariants::check(input));
