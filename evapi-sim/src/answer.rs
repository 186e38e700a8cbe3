//! Reading an app's answer: which transaction, and what it decided.
//!
//! An answer carries the transaction's ids under the scenario's field names (numbers or
//! numeric strings) and either a `code` (with an optional `reason`) or an `action` that
//! the scenario maps to a final reply, e.g. `{"action":"forward","target":"sip:..."}`.

use std::collections::BTreeMap;

use evapi_proto::{IdFields, TransactionId};
use serde_json::Value;

use crate::scenario::Outcome;

/// A valid answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The transaction to resume.
    pub id: TransactionId,
    /// Its final code.
    pub code: u16,
    /// Its reason phrase, when given.
    pub reason: Option<String>,
}

/// Why a message is not a valid answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// Not a JSON object.
    #[error("not a JSON object")]
    NotJson,
    /// No transaction ids under the configured names.
    #[error("no {0} field")]
    NoIds(String),
    /// Ids present but not valid.
    #[error(transparent)]
    BadId(#[from] evapi_proto::IdError),
    /// Neither a code nor an action.
    #[error("neither \"code\" nor \"action\"")]
    NoDecision,
    /// A code that is not a final SIP code.
    #[error("\"code\" must be a final SIP code (200-699), got {0}")]
    BadCode(String),
    /// An action the scenario does not map.
    #[error("unknown action {0:?}")]
    UnknownAction(String),
}

/// Read `msg` as an answer.
///
/// # Errors
///
/// An [`Invalid`] saying what is wrong.
pub fn read(
    msg: &[u8],
    fields: &IdFields,
    actions: &BTreeMap<String, Outcome>,
) -> Result<Decision, Invalid> {
    let value: Value = serde_json::from_slice(msg).map_err(|_| Invalid::NotJson)?;
    if !value.is_object() {
        return Err(Invalid::NotJson);
    }
    let id = fields
        .find(&value)?
        .ok_or_else(|| Invalid::NoIds(fields.index.clone()))?;
    let reason = value
        .get("reason")
        .and_then(Value::as_str)
        .map(String::from);
    if let Some(code) = value.get("code") {
        let parsed = match code {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        return match parsed.and_then(|c| u16::try_from(c).ok()) {
            Some(code) if (200..=699).contains(&code) => Ok(Decision { id, code, reason }),
            _ => Err(Invalid::BadCode(code.to_string())),
        };
    }
    if let Some(action) = value.get("action").and_then(Value::as_str) {
        let outcome = actions
            .get(action)
            .ok_or_else(|| Invalid::UnknownAction(action.to_owned()))?;
        return Ok(Decision {
            id,
            code: outcome.code,
            reason: outcome.reason.clone().or(reason),
        });
    }
    Err(Invalid::NoDecision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Answers;

    fn read_default(msg: &str) -> Result<Decision, Invalid> {
        let a = Answers::default();
        read(msg.as_bytes(), &a.id_fields(), &a.actions)
    }

    #[test]
    fn codes_and_actions_decide() {
        let d =
            read_default(r#"{"tindex":"1","tlabel":2,"code":486,"reason":"Busy Here"}"#).unwrap();
        assert_eq!(
            (d.id.index, d.id.label, d.code, d.reason.as_deref()),
            (1, 2, 486, Some("Busy Here"))
        );
        let d = read_default(r#"{"tindex":1,"tlabel":2,"code":"302"}"#).unwrap();
        assert_eq!(d.code, 302);
        let d = read_default(r#"{"tindex":1,"tlabel":2,"action":"forward","target":"sip:x@y"}"#)
            .unwrap();
        assert_eq!((d.code, d.reason.as_deref()), (200, Some("OK")));
    }

    #[test]
    fn invalid_answers_say_why() {
        let e = |m: &str| read_default(m).unwrap_err().to_string();
        assert_eq!(e("nope"), "not a JSON object");
        assert_eq!(e("[1]"), "not a JSON object");
        assert_eq!(e(r#"{"code":200}"#), "no tindex field");
        assert!(
            e(r#"{"tindex":"x","tlabel":1,"code":200}"#).starts_with("tindex: expected a number")
        );
        assert_eq!(
            e(r#"{"tindex":1,"tlabel":1}"#),
            "neither \"code\" nor \"action\""
        );
        assert_eq!(
            e(r#"{"tindex":1,"tlabel":1,"code":100}"#),
            "\"code\" must be a final SIP code (200-699), got 100"
        );
        assert_eq!(
            e(r#"{"tindex":1,"tlabel":1,"action":"dance"}"#),
            "unknown action \"dance\""
        );
    }
}
