//! Fuzz the simulator's SIP request parser with arbitrary datagrams; the invariants are
//! in `invariants/sip_parse.rs`, shared with the corpus replay test.
#![no_main]

#[path = "../invariants/sip_parse.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::check(data));
