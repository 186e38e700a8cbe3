//! The app's answer to an async-relay event: one grammar for every reader.
//!
//! The simulator, the client's responder and its REPL read and build answers with these
//! rules, so an answer that one part of the toolkit accepts, every part accepts:
//!
//! - **Ids** are found under the first of [`IdFields::DEFAULTS`] present (top-level
//!   `tindex`/`tlabel`, `data.index`/`data.label` as in the evapi module's own example,
//!   top-level `index`/`label`), after any names a caller adds; numbers or numeric
//!   strings. An answer that mirrors the event it answers therefore works whatever shape
//!   the event template had.
//! - **Decision**: `code` (a final SIP code, 200-699, number or numeric string) with an
//!   optional `reason`, or an `action` name that the reader maps to a final reply.
//! - **Reason** must be a valid RFC 3261 Reason-Phrase (section 25.1): no CR, LF or other
//!   control character (HTAB allowed), at most [`MAX_REASON_LEN`] bytes. Anything else
//!   is refused, never cleaned up and sent: an app must not be able to write SIP headers.
//!
//! What an action means, and what happens to a transaction, belong to the reader.

use serde_json::Value;

use crate::message::{locate_id, IdError, IdFields, TransactionId};

/// Longest reason phrase accepted, in bytes. Kamailio keeps reply reasons short; a cap
/// keeps one answer from inflating every retransmission of the reply it produces.
pub const MAX_REASON_LEN: usize = 128;

/// Lowest final SIP status code (RFC 3261 section 21: 1xx are provisional).
pub const MIN_FINAL_CODE: u16 = 200;
/// Highest SIP status code (RFC 3261 section 21.6, 6xx global failures).
pub const MAX_FINAL_CODE: u16 = 699;

/// What the app decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Reply with this final code.
    Code(u16),
    /// A named action (e.g. `forward`), which the reader maps to a reply.
    Action(String),
}

/// A well-formed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The transaction to resume.
    pub id: TransactionId,
    /// Where the ids were found (index into the reader's candidates).
    pub shape: usize,
    /// The decision.
    pub verdict: Verdict,
    /// The reason phrase, already checked with [`check_reason`].
    pub reason: Option<String>,
}

/// A reason phrase that may not go into a SIP status line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReasonError {
    /// A control character (CR, LF, NUL, the C1 controls such as U+0085 NEL) or a line or
    /// paragraph separator (U+2028, U+2029), which some reader could take as the end of
    /// the status line: its code point and byte offset.
    #[error("reason contains control character {0:#04x} at byte {1}")]
    Control(u32, usize),
    /// Longer than [`MAX_REASON_LEN`].
    #[error("reason is {0} bytes, more than {max}", max = MAX_REASON_LEN)]
    TooLong(usize),
}

/// Why a message is not a valid answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// Not a JSON object.
    #[error("not a JSON object")]
    NotJson,
    /// None of the id shapes is present.
    #[error("no transaction ids (looked for {0})")]
    NoIds(String),
    /// Ids present but not valid.
    #[error(transparent)]
    BadId(#[from] IdError),
    /// Neither a code nor an action.
    #[error("neither \"code\" nor \"action\"")]
    NoDecision,
    /// A code that is not a final SIP code.
    #[error("\"code\" must be a final SIP code ({MIN_FINAL_CODE}-{MAX_FINAL_CODE}), got {0}")]
    BadCode(String),
    /// `reason` is not a string.
    #[error("\"reason\" must be a string, got {0}")]
    ReasonType(String),
    /// `reason` is a string that may not go into a status line.
    #[error(transparent)]
    BadReason(#[from] ReasonError),
    /// `action` is not a string.
    #[error("\"action\" must be a string, got {0}")]
    ActionType(String),
    /// An `action` the reader has no reply for.
    #[error("unknown action {0:?}")]
    UnknownAction(String),
}

/// Check that `reason` can be a SIP Reason-Phrase (RFC 3261 section 25.1).
///
/// # Errors
///
/// A [`ReasonError`] for a control character (Unicode category Cc other than HTAB, or a
/// line or paragraph separator) or a phrase over [`MAX_REASON_LEN`] bytes.
pub fn check_reason(reason: &str) -> Result<(), ReasonError> {
    if reason.len() > MAX_REASON_LEN {
        return Err(ReasonError::TooLong(reason.len()));
    }
    match reason
        .char_indices()
        .find(|&(_, c)| (c.is_control() && c != '\t') || c == '\u{2028}' || c == '\u{2029}')
    {
        Some((at, c)) => Err(ReasonError::Control(u32::from(c), at)),
        None => Ok(()),
    }
}

/// Check that `code` is a final SIP status code (200-699).
///
/// # Errors
///
/// [`AnswerError::BadCode`] naming the value.
pub fn check_final_code(code: u64) -> Result<u16, AnswerError> {
    u16::try_from(code)
        .ok()
        .filter(|c| (MIN_FINAL_CODE..=MAX_FINAL_CODE).contains(c))
        .ok_or_else(|| AnswerError::BadCode(code.to_string()))
}

fn final_code(value: &Value) -> Result<u16, AnswerError> {
    let parsed = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s)
            if !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.trim().parse().ok()
        }
        _ => None,
    };
    match parsed {
        Some(code) => check_final_code(code).map_err(|_| AnswerError::BadCode(value.to_string())),
        None => Err(AnswerError::BadCode(value.to_string())),
    }
}

/// The usual reason phrase of a SIP status code (RFC 3261 section 21), or a generic one
/// for its class.
#[must_use]
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        405 => "Method Not Allowed",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        c if c < 200 => "Provisional",
        c if c < 300 => "Success",
        c if c < 400 => "Redirection",
        c if c < 500 => "Client Error",
        c if c < 600 => "Server Error",
        _ => "Global Failure",
    }
}

/// Reads answers: where the ids may be, and the rules above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerReader {
    candidates: Vec<IdFields>,
}

impl Default for AnswerReader {
    fn default() -> Self {
        Self {
            candidates: IdFields::defaults(),
        }
    }
}

impl AnswerReader {
    /// A reader that tries `extra` first (a scenario's or `--id-fields` names), then the
    /// defaults; duplicates are dropped.
    #[must_use]
    pub fn with_fields(extra: impl IntoIterator<Item = IdFields>) -> Self {
        let mut candidates: Vec<IdFields> = Vec::new();
        for f in extra.into_iter().chain(IdFields::defaults()) {
            if !candidates.contains(&f) {
                candidates.push(f);
            }
        }
        Self { candidates }
    }

    /// The id shapes tried, in order.
    #[must_use]
    pub fn candidates(&self) -> &[IdFields] {
        &self.candidates
    }

    /// The ids in `value`, if any shape is present.
    ///
    /// # Errors
    ///
    /// The [`IdError`] of the first shape present but invalid.
    pub fn ids(&self, value: &Value) -> Result<Option<(TransactionId, usize)>, IdError> {
        Ok(locate_id(value, &self.candidates)?.map(|(id, fields)| {
            let shape = self
                .candidates
                .iter()
                .position(|c| std::ptr::eq(c, fields))
                .unwrap_or(0);
            (id, shape)
        }))
    }

    /// Read `msg` as an answer.
    ///
    /// # Errors
    ///
    /// An [`AnswerError`] saying what is wrong.
    pub fn read(&self, msg: &[u8]) -> Result<Answer, AnswerError> {
        let value: Value = serde_json::from_slice(msg).map_err(|_| AnswerError::NotJson)?;
        self.read_value(&value)
    }

    /// Read an already parsed message as an answer.
    ///
    /// # Errors
    ///
    /// An [`AnswerError`] saying what is wrong.
    pub fn read_value(&self, value: &Value) -> Result<Answer, AnswerError> {
        if !value.is_object() {
            return Err(AnswerError::NotJson);
        }
        let (id, shape) = self
            .ids(value)?
            .ok_or_else(|| AnswerError::NoIds(self.describe()))?;
        let reason = match value.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                check_reason(s)?;
                Some(s.clone())
            }
            Some(other) => return Err(AnswerError::ReasonType(other.to_string())),
        };
        let verdict = match (value.get("code"), value.get("action")) {
            (Some(code), _) => Verdict::Code(final_code(code)?),
            (None, Some(Value::String(a))) => Verdict::Action(a.clone()),
            (None, Some(other)) => return Err(AnswerError::ActionType(other.to_string())),
            (None, None) => return Err(AnswerError::NoDecision),
        };
        Ok(Answer {
            id,
            shape,
            verdict,
            reason,
        })
    }

    fn describe(&self) -> String {
        self.candidates
            .iter()
            .map(|f| format!("{}/{}", f.index, f.label))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(msg: &str) -> Result<Answer, AnswerError> {
        AnswerReader::default().read(msg.as_bytes())
    }

    fn err(msg: &str) -> String {
        read(msg).expect_err(msg).to_string()
    }

    #[test]
    fn every_default_shape_is_read() {
        for (msg, shape) in [
            (r#"{"tindex":"1","tlabel":2,"code":486}"#, 0),
            (r#"{"data":{"index":"1","label":"2"},"code":486}"#, 1),
            (r#"{"index":1,"label":2,"code":"486"}"#, 2),
        ] {
            let a = read(msg).expect(msg);
            assert_eq!(a.id, TransactionId { index: 1, label: 2 }, "{msg}");
            assert_eq!((a.verdict, a.shape), (Verdict::Code(486), shape), "{msg}");
        }
    }

    #[test]
    fn the_event_of_the_module_documentation_answered_in_its_own_shape() {
        // The evapi module's async example sends {"event":"suspend","data":{"index":..,
        // "label":..}}; an app that echoes the event with a code must be understood.
        let a = read(
            r#"{ "event": "suspend", "data": { "index": "123", "label": "456" }, "code": 404, "reason": "Not Here" }"#,
        )
        .expect("mirrored event");
        assert_eq!(
            (a.id.index, a.id.label, a.reason.as_deref()),
            (123, 456, Some("Not Here"))
        );
    }

    #[test]
    fn custom_names_come_first() {
        let r = AnswerReader::with_fields([IdFields::new("tr_index", "tr_label")]);
        let a = r
            .read(br#"{"tr_index":7,"tr_label":8,"action":"forward"}"#)
            .expect("custom");
        assert_eq!(
            (a.id.index, a.shape, a.verdict),
            (7, 0, Verdict::Action("forward".into()))
        );
        assert_eq!(r.candidates().len(), 4);
        let again = AnswerReader::with_fields([IdFields::new("tindex", "tlabel")]);
        assert_eq!(again.candidates().len(), 3, "duplicates dropped");
    }

    #[test]
    fn codes_outside_200_to_699_are_refused() {
        for bad in [
            "99", "100", "199", "700", "-1", "65736", "486.5", "\"4x\"", "\"\"", "null", "true",
        ] {
            let msg = format!(r#"{{"tindex":1,"tlabel":1,"code":{bad}}}"#);
            assert_eq!(
                err(&msg),
                format!("\"code\" must be a final SIP code (200-699), got {bad}"),
                "{msg}"
            );
        }
        for good in ["200", "699", "\" 486 \""] {
            let msg = format!(r#"{{"tindex":1,"tlabel":1,"code":{good}}}"#);
            assert!(read(&msg).is_ok(), "{msg}");
        }
    }

    #[test]
    fn reasons_that_could_write_headers_are_refused() {
        assert_eq!(
            err(
                r#"{"tindex":1,"tlabel":1,"code":486,"reason":"Busy\r\nX-Injected: evil\r\nContact: <sip:attacker@evil>"}"#
            ),
            "reason contains control character 0x0d at byte 4"
        );
        assert_eq!(
            err(r#"{"tindex":1,"tlabel":1,"code":486,"reason":"a\nb"}"#),
            "reason contains control character 0x0a at byte 1"
        );
        assert_eq!(
            err(r#"{"tindex":1,"tlabel":1,"code":486,"reason":"a\u0000"}"#),
            "reason contains control character 0x00 at byte 1"
        );
        // Regression (issue 24): C1 controls and the Unicode line separators passed.
        for (escaped, shown) in [
            ("\\u0085", "0x85"),
            ("\\u009b", "0x9b"),
            ("\\u2028", "0x2028"),
            ("\\u2029", "0x2029"),
            ("\\u007f", "0x7f"),
        ] {
            assert_eq!(
                err(&format!(
                    r#"{{"tindex":1,"tlabel":1,"code":486,"reason":"ok{escaped}"}}"#
                )),
                format!("reason contains control character {shown} at byte 2")
            );
        }
        assert!(check_reason("Busy Here \t é ü 忙").is_ok());
        let long = "x".repeat(MAX_REASON_LEN + 1);
        assert_eq!(
            err(&format!(
                r#"{{"tindex":1,"tlabel":1,"code":486,"reason":"{long}"}}"#
            )),
            "reason is 129 bytes, more than 128"
        );
        assert_eq!(
            err(r#"{"tindex":1,"tlabel":1,"code":486,"reason":5}"#),
            "\"reason\" must be a string, got 5"
        );
        // HTAB and non-ASCII text are allowed by the grammar.
        assert!(
            read(r#"{"tindex":1,"tlabel":1,"code":486,"reason":"Besetzt\tbitte später"}"#).is_ok()
        );
    }

    #[test]
    fn invalid_answers_say_why() {
        assert_eq!(err("nope"), "not a JSON object");
        assert_eq!(err("[1]"), "not a JSON object");
        assert_eq!(
            err(r#"{"code":200}"#),
            "no transaction ids (looked for tindex/tlabel, data.index/data.label, index/label)"
        );
        assert!(
            err(r#"{"tindex":"x","tlabel":1,"code":200}"#).starts_with("tindex: expected a number")
        );
        assert_eq!(
            err(r#"{"tindex":1,"tlabel":1}"#),
            "neither \"code\" nor \"action\""
        );
        assert_eq!(
            err(r#"{"tindex":1,"tlabel":1,"action":3}"#),
            "\"action\" must be a string, got 3"
        );
    }
}
