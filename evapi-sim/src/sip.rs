//! A small, strict SIP message parser and response builder (RFC 3261), enough for a
//! UAS that answers INVITE, ACK, CANCEL, OPTIONS, MESSAGE and BYE over UDP.
//!
//! Why not a crate: the maintained SIP crates are full stacks with their own transport
//! and transaction layers; we need only to read a request's start line and a handful of
//! headers and to write responses that copy them, and to control exactly what counts
//! as malformed. Compact header forms (`v f t i l m c`) are understood; header folding
//! (obsolete) is accepted.

use std::borrow::Cow;
use std::fmt::Write;

/// A parsed SIP request (responses are not accepted: the simulator is a UAS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipRequest {
    /// Method, e.g. `INVITE`.
    pub method: String,
    /// Request-URI.
    pub uri: String,
    /// Headers in order, names in canonical long form (the well-known ones are static
    /// strings: no allocation per header name).
    pub headers: Vec<(Cow<'static, str>, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Why a datagram is not a usable request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SipError {
    /// Not UTF-8 text before the body.
    #[error("headers are not UTF-8")]
    NotText,
    /// No empty line ending the headers.
    #[error("no empty line after the headers")]
    NoHeaderEnd,
    /// The first line is not `METHOD URI SIP/2.0`.
    #[error("bad request line {0:?}")]
    BadRequestLine(String),
    /// It is a response, not a request.
    #[error("a response, not a request")]
    Response,
    /// A header line without `:`.
    #[error("bad header line {0:?}")]
    BadHeader(String),
    /// A mandatory header is missing.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// CSeq is not `NUMBER METHOD` matching the request line.
    #[error("bad CSeq {0:?}")]
    BadCSeq(String),
    /// Content-Length is not a number or exceeds the datagram.
    #[error("bad Content-Length {0:?}")]
    BadContentLength(String),
    /// More header lines than [`MAX_HEADERS`]: not parsed further, never answered (a
    /// reply copies every Via, so each would cost memory and reflected bytes).
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
}

/// The most header lines a request may have (a sipp INVITE has 10; one that crossed
/// several proxies a few more Vias and Record-Routes). Past it the request is dropped
/// unanswered and counted malformed: 2,700 empty `v:` lines in 8 KB made one
/// transaction hold 219 KB and a spoofed INVITE reflect 27.8x its bytes.
pub const MAX_HEADERS: usize = 70;

impl SipError {
    /// Whether the request could still be answered with a 400 (its Via, From, To,
    /// Call-ID and CSeq were readable).
    #[must_use]
    pub fn answerable(&self) -> bool {
        matches!(self, SipError::BadContentLength(_) | SipError::BadCSeq(_))
    }
}

/// Header names in long form, with their compact forms (RFC 3261 section 7.3.3).
const KNOWN: [(&str, Option<&str>); 9] = [
    ("Via", Some("v")),
    ("From", Some("f")),
    ("To", Some("t")),
    ("Call-ID", Some("i")),
    ("CSeq", None),
    ("Content-Length", Some("l")),
    ("Max-Forwards", None),
    ("Contact", Some("m")),
    ("Content-Type", Some("c")),
];

fn canonical(name: &str) -> Cow<'static, str> {
    KNOWN
        .iter()
        .find(|(long, short)| {
            name.eq_ignore_ascii_case(long) || short.is_some_and(|s| name.eq_ignore_ascii_case(s))
        })
        .map_or_else(
            || Cow::Owned(name.to_owned()),
            |(long, _)| Cow::Borrowed(*long),
        )
}

/// Parse one datagram as a request.
///
/// # Errors
///
/// A [`SipError`] naming what is wrong.
pub fn parse(datagram: &[u8]) -> Result<SipRequest, SipError> {
    let (req, rest) = parse_head(datagram)?;
    let body_len = match req.header("Content-Length") {
        None => rest.len(),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= rest.len())
            .ok_or_else(|| SipError::BadContentLength(v.to_owned()))?,
    };
    let cseq = req.header("CSeq").unwrap_or_default();
    match cseq.split_once(char::is_whitespace) {
        Some((n, m)) if n.parse::<u32>().is_ok() && m.trim() == req.method => {}
        _ => return Err(SipError::BadCSeq(cseq.to_owned())),
    }
    Ok(SipRequest {
        body: rest[..body_len].to_vec(),
        ..req
    })
}

/// The start line and headers of a request whose body or CSeq is bad, so it can be
/// answered with 400 (see [`SipError::answerable`]).
#[must_use]
pub fn parse_for_reply(datagram: &[u8]) -> Option<SipRequest> {
    parse_head(datagram).ok().map(|(req, _)| req)
}

/// Start line and headers, checked for the mandatory ones; returns the bytes after them.
fn parse_head(datagram: &[u8]) -> Result<(SipRequest, &[u8]), SipError> {
    let end = find(datagram, b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| find(datagram, b"\n\n").map(|i| (i, i + 2)))
        .ok_or(SipError::NoHeaderEnd)?;
    let head = std::str::from_utf8(&datagram[..end.0]).map_err(|_| SipError::NotText)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    if first.starts_with("SIP/2.0 ") {
        return Err(SipError::Response);
    }
    let mut parts = first.split(' ');
    let (Some(method), Some(uri), Some("SIP/2.0"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SipError::BadRequestLine(first.to_owned()));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) || uri.is_empty() {
        return Err(SipError::BadRequestLine(first.to_owned()));
    }
    let mut headers: Vec<(Cow<'static, str>, String)> = Vec::with_capacity(16);
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // Folded continuation of the previous header.
            let Some((_, value)) = headers.last_mut() else {
                return Err(SipError::BadHeader(line.to_owned()));
            };
            value.push(' ');
            value.push_str(line.trim());
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| SipError::BadHeader(line.to_owned()))?;
        let name = name.trim();
        if name.is_empty() || name.contains(' ') {
            return Err(SipError::BadHeader(line.to_owned()));
        }
        if headers.len() == MAX_HEADERS {
            return Err(SipError::TooManyHeaders);
        }
        headers.push((canonical(name), value.trim().to_owned()));
    }
    let req = SipRequest {
        method: method.to_owned(),
        uri: uri.to_owned(),
        headers,
        body: Vec::new(),
    };
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if req.header(name).is_none() {
            return Err(SipError::Missing(name));
        }
    }
    Ok((req, &datagram[end.1..]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

impl SipRequest {
    /// The first header with this (canonical) name.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order (Via can repeat, or be comma-separated).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `branch` parameter of the top Via.
    #[must_use]
    pub fn branch(&self) -> Option<&str> {
        let top = self.header("Via")?.split(',').next()?;
        param(top, "branch")
    }

    /// The sent-by (host:port) of the top Via.
    #[must_use]
    pub fn sent_by(&self) -> Option<&str> {
        let top = self.header("Via")?.split(',').next()?;
        top.split_whitespace().nth(1)?.split(';').next()
    }

    /// The CSeq number.
    #[must_use]
    pub fn cseq_number(&self) -> u32 {
        self.header("CSeq")
            .and_then(|c| c.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The URI inside a From or To value (`"Alice" <sip:a@x>;tag=1` -> `sip:a@x`).
    #[must_use]
    pub fn uri_of(&self, header: &str) -> String {
        let value = self.header(header).unwrap_or_default();
        match (value.find('<'), value.find('>')) {
            (Some(a), Some(b)) if a < b => value[a + 1..b].to_owned(),
            _ => value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }

    /// The To tag, if any.
    #[must_use]
    pub fn to_tag(&self) -> Option<&str> {
        let to = self.header("To")?;
        let params = to.rsplit_once('>').map_or(to, |(_, p)| p);
        param(params, "tag")
    }
}

fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A response to `req`: Via, From, To (with `to_tag` added when it has none and the
/// code is above 100), Call-ID and CSeq copied (RFC 3261 section 8.2.6.2).
#[must_use]
pub fn response(req: &SipRequest, code: u16, reason: &str, to_tag: Option<&str>) -> Vec<u8> {
    response_with(req, code, reason, to_tag, "")
}

/// [`response`] with `extra` header lines (each ending in CRLF) before the
/// `Server` header, e.g. `Retry-After: 5\r\n` on a 503.
#[must_use]
pub fn response_with(
    req: &SipRequest,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &str,
) -> Vec<u8> {
    let mut out = String::with_capacity(512);
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    for via in req.all("Via") {
        let _ = write!(out, "Via: {via}\r\n");
    }
    let _ = write!(out, "From: {}\r\n", req.header("From").unwrap_or_default());
    let to = req.header("To").unwrap_or_default();
    match to_tag {
        Some(tag) if code > 100 && req.to_tag().is_none() => {
            let _ = write!(out, "To: {to};tag={tag}\r\n");
        }
        _ => {
            let _ = write!(out, "To: {to}\r\n");
        }
    }
    let _ = write!(
        out,
        "Call-ID: {}\r\n",
        req.header("Call-ID").unwrap_or_default()
    );
    let _ = write!(out, "CSeq: {}\r\n", req.header("CSeq").unwrap_or_default());
    out.push_str(extra);
    out.push_str("Server: evapi-sim\r\nContent-Length: 0\r\n\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2,700 empty compact Vias in 8 KB made one transaction hold 219 KB and a spoofed
    /// INVITE reflect 27.8x its bytes: past MAX_HEADERS lines the request is dropped,
    /// not even answered, while a request at the bound is still taken.
    #[test]
    fn a_request_of_too_many_header_lines_is_dropped_unanswered() {
        let request = |vias: usize| {
            let mut text = String::from("INVITE sip:bob@example.com SIP/2.0\r\n");
            for _ in 0..vias {
                text.push_str("v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n");
            }
            text.push_str("From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c1\r\n");
            text.push_str("CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
            text.into_bytes()
        };
        // 5 other headers: at the bound with MAX_HEADERS - 5 Vias.
        assert!(parse(&request(MAX_HEADERS - 5)).is_ok());
        let over = request(MAX_HEADERS - 4);
        assert_eq!(parse(&over).unwrap_err(), SipError::TooManyHeaders);
        assert!(parse_for_reply(&over).is_none(), "no reply to reflect");
        assert!(!SipError::TooManyHeaders.answerable());
    }

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0\r\n\
        v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-proxy\r\n\
        From: \"Alice\" <sip:alice@example.org>;tag=a1\r\n\
        To: <sip:bob@example.com>\r\n\
        i: call-1@127.0.0.1\r\n\
        CSeq: 1 INVITE\r\n\
        Max-Forwards: 70\r\n\
        Subject: folded\r\n  across lines\r\n\
        l: 4\r\n\r\nv=0\r";

    #[test]
    fn parses_a_request_with_compact_and_folded_headers() {
        let r = parse(INVITE.as_bytes()).unwrap();
        assert_eq!(
            (r.method.as_str(), r.uri.as_str()),
            ("INVITE", "sip:bob@example.com")
        );
        assert_eq!(r.header("Call-ID"), Some("call-1@127.0.0.1"));
        assert_eq!(r.all("Via").count(), 2);
        assert_eq!(r.branch(), Some("z9hG4bK-1-0"));
        assert_eq!(r.sent_by(), Some("127.0.0.1:5061"));
        assert_eq!(r.cseq_number(), 1);
        assert_eq!(r.uri_of("From"), "sip:alice@example.org");
        assert_eq!(r.uri_of("To"), "sip:bob@example.com");
        assert_eq!(r.to_tag(), None);
        assert_eq!(r.header("Subject"), Some("folded across lines"));
        assert_eq!(r.body, b"v=0\r");
    }

    #[test]
    fn responses_copy_the_headers_and_add_a_to_tag() {
        let r = parse(INVITE.as_bytes()).unwrap();
        let trying = String::from_utf8(response(&r, 100, "Trying", Some("x"))).unwrap();
        assert!(
            trying.contains("\r\nTo: <sip:bob@example.com>\r\n"),
            "no tag on 100"
        );
        let busy = String::from_utf8(response(&r, 486, "Busy Here", Some("s1"))).unwrap();
        assert_eq!(
            busy,
            "SIP/2.0 486 Busy Here\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0\r\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-proxy\r\n\
             From: \"Alice\" <sip:alice@example.org>;tag=a1\r\n\
             To: <sip:bob@example.com>;tag=s1\r\n\
             Call-ID: call-1@127.0.0.1\r\n\
             CSeq: 1 INVITE\r\n\
             Server: evapi-sim\r\n\
             Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        let bad = |text: &str| parse(text.as_bytes()).unwrap_err();
        assert_eq!(bad("garbage"), SipError::NoHeaderEnd);
        assert_eq!(bad("SIP/2.0 200 OK\r\n\r\n"), SipError::Response);
        assert!(matches!(
            bad("INVITE sip:x SIP/3.0\r\n\r\n"),
            SipError::BadRequestLine(_)
        ));
        assert!(matches!(
            bad("INVITE sip:x SIP/2.0\r\nnocolon\r\n\r\n"),
            SipError::BadHeader(_)
        ));
        assert_eq!(
            bad("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n"),
            SipError::Missing("From")
        );
        let no_match = INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
        assert!(matches!(bad(&no_match), SipError::BadCSeq(_)));
        assert!(bad(&no_match).answerable());
        let long = INVITE.replace("l: 4", "l: 400");
        assert_eq!(bad(&long), SipError::BadContentLength("400".into()));
    }
}

/// The parts of a SIP response a load generator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipResponse {
    /// Status code.
    pub code: u16,
    /// Call-ID.
    pub call_id: String,
    /// The To header as sent (with the tag the UAS added).
    pub to: String,
    /// CSeq method.
    pub cseq_method: String,
}

/// Parse a response datagram; `None` when it is not one.
#[must_use]
pub fn parse_response(datagram: &[u8]) -> Option<SipResponse> {
    let end = find(datagram, b"\r\n\r\n").unwrap_or(datagram.len());
    let head = std::str::from_utf8(&datagram[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.strip_prefix("SIP/2.0 ")?;
    let code = status.split(' ').next()?.parse().ok()?;
    let (mut call_id, mut to, mut cseq_method) = (None, None, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match &*canonical(name.trim()) {
            "Call-ID" => call_id = Some(value.trim().to_owned()),
            "To" => to = Some(value.trim().to_owned()),
            "CSeq" => cseq_method = value.split_whitespace().nth(1).map(str::to_owned),
            _ => {}
        }
    }
    Some(SipResponse {
        code,
        call_id: call_id?,
        to: to?,
        cseq_method: cseq_method?,
    })
}
