//! A SIP request as the routing model sees it: what the pseudo-variables read.
//! The simulator generates these from a scenario; the SIP front parses them off UDP.

use std::net::SocketAddr;

/// The parts of a request that routing and templates use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `$rm`.
    pub method: String,
    /// `$ru`.
    pub ruri: String,
    /// `$fu`.
    pub from_uri: String,
    /// `$tu`.
    pub to_uri: String,
    /// `$ci`.
    pub call_id: String,
    /// `$cs`.
    pub cseq: u32,
    /// `$si`, `$sp`.
    pub source: SocketAddr,
}

impl Request {
    /// What templates read of a SIP request `req` that came from `peer`.
    #[must_use]
    pub fn from_sip(req: &crate::sip::SipRequest, peer: SocketAddr) -> Self {
        Self {
            method: req.method.clone(),
            ruri: req.uri.clone(),
            from_uri: req.uri_of("From"),
            to_uri: req.uri_of("To"),
            call_id: req.header("Call-ID").unwrap_or_default().to_owned(),
            cseq: req.cseq_number(),
            source: peer,
        }
    }

    /// The key tm hashes to find the transaction's slot: Call-ID and CSeq number.
    #[must_use]
    pub fn transaction_key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.call_id.len() + 12);
        key.extend_from_slice(self.call_id.as_bytes());
        key.push(b' ');
        key.extend_from_slice(self.cseq.to_string().as_bytes());
        key
    }

    /// Whether this is an INVITE (which uses `fr_inv_timer`).
    #[must_use]
    pub fn is_invite(&self) -> bool {
        self.method.eq_ignore_ascii_case("INVITE")
    }
}
