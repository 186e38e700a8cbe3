//! Fuzz the decoders' skip mode for oversized frames; the invariants are in
//! `invariants/skip_oversize.rs`, shared with the corpus replay test.
#![no_main]

#[path = "../invariants/skip_oversize.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|input: &[u8]| invariants::check(input));
