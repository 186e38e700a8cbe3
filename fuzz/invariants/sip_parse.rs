//! Invariants of the simulator's SIP request parser under arbitrary datagrams, shared by
//! the `sip_parse` fuzz target and the corpus replay test (`tests/fuzz_replay.rs`).
//!
//! Invariants, beyond "no panic":
//! - a parsed request's headers can be answered: the response we build from it is
//!   recognised by the parser as a response (never as a request, never malformed text);
//! - whatever `parse` accepts, `parse_for_reply` accepts too, with the same headers.
use evapi_sim::sip::{self, SipError};

/// Check every invariant on one datagram; panics on a violation.
pub(crate) fn check(data: &[u8]) {
    match sip::parse(data) {
        Ok(req) => {
            let resp = sip::response(&req, 486, "Busy Here", Some("t1"));
            assert_eq!(sip::parse(&resp), Err(SipError::Response));
            let head = sip::parse_for_reply(data).expect("a parsed request has a head");
            assert_eq!(head.headers, req.headers);
            assert_eq!(req.branch(), head.branch());
        }
        Err(e) => {
            if e.answerable() {
                assert!(
                    sip::parse_for_reply(data).is_some(),
                    "{e}: head must be readable"
                );
            }
        }
    }
}
