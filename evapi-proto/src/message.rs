//! JSON conventions on top of the opaque payloads.
//!
//! Kamailio's evapi gives payloads no structure ("it is all up to the author of the
//! routing script"); these are the shapes configs and apps commonly agree on, as typed
//! helpers. Nothing here is required to use the codecs.
//!
//! - [`Event`]: `{"event": NAME, "data": VALUE}`, the shape of Kamailio's KEMI relays.
//! - [`TransactionId`]: a suspended transaction's `$T(id_index)` / `$T(id_label)`.
//! - [`Suspend`]: an async-relay event carrying `tindex` / `tlabel` at the top level.
//! - [`Continue`]: the app's answer, `{"tindex":N,"tlabel":N,"code":C,"reason":R,...}`.
//! - [`IdFields`]: where in an event the ids live, since field names vary in the wild.
//!
//! Ids arrive as numbers or as numeric strings (configs often write
//! `"tindex":"$T(id_index)"`); both are accepted, anything else is an error naming it.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A named event: `{"event": NAME, "data": VALUE}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event name, e.g. `"suspend"` or `"call-start"`.
    pub event: String,
    /// The event's data; `null` when absent.
    #[serde(default)]
    pub data: Value,
}

/// A transaction's identity in Kamailio's tm: hash slot `index` and per-slot `label`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransactionId {
    /// `$T(id_index)`: the hash table slot.
    #[serde(deserialize_with = "de_id")]
    pub index: u32,
    /// `$T(id_label)`: the label within the slot.
    #[serde(deserialize_with = "de_id")]
    pub label: u32,
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.index, self.label)
    }
}

/// An async-relay event: the suspended transaction's ids plus whatever else the
/// config put in (kept in `fields`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspend {
    /// `$T(id_index)`.
    #[serde(deserialize_with = "de_id")]
    pub tindex: u32,
    /// `$T(id_label)`.
    #[serde(deserialize_with = "de_id")]
    pub tlabel: u32,
    /// Every other field of the event, in order.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl Suspend {
    /// The transaction this event suspended.
    #[must_use]
    pub fn id(&self) -> TransactionId {
        TransactionId {
            index: self.tindex,
            label: self.tlabel,
        }
    }
}

/// The app's answer to a suspend: which transaction, and what to do with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Continue {
    /// `$T(id_index)` of the suspended transaction.
    #[serde(deserialize_with = "de_id")]
    pub tindex: u32,
    /// `$T(id_label)` of the suspended transaction.
    #[serde(deserialize_with = "de_id")]
    pub tlabel: u32,
    /// SIP status code to reply with, when the app decided one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Reason phrase to go with `code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every other field (a routing target, an action, ...), kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Continue {
    /// An answer with a final reply code and reason.
    #[must_use]
    pub fn reply(id: TransactionId, code: u16, reason: impl Into<String>) -> Self {
        Self {
            tindex: id.index,
            tlabel: id.label,
            code: Some(code),
            reason: Some(reason.into()),
            extra: Map::new(),
        }
    }

    /// The transaction this answer resumes.
    #[must_use]
    pub fn id(&self) -> TransactionId {
        TransactionId {
            index: self.tindex,
            label: self.tlabel,
        }
    }
}

/// Only the top-level `tindex` / `tlabel` of an event; every other field is skipped
/// without being built. The fast path for the most common suspend shape: a responder
/// that answers many events per second reads just these two fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct TopLevelIds {
    /// `tindex`, when present (a number or numeric string).
    #[serde(default, deserialize_with = "de_opt_id")]
    pub tindex: Option<u32>,
    /// `tlabel`, when present.
    #[serde(default, deserialize_with = "de_opt_id")]
    pub tlabel: Option<u32>,
}

impl TopLevelIds {
    /// Both ids, when both are there.
    #[must_use]
    pub fn id(self) -> Option<TransactionId> {
        Some(TransactionId {
            index: self.tindex?,
            label: self.tlabel?,
        })
    }
}

fn de_opt_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    de_id(deserializer).map(Some)
}

/// A transaction id field that is present but not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: expected a number or numeric string from 0 to {max}, found {found}", max = u32::MAX)]
pub struct IdError {
    /// The field path, as configured (e.g. `tindex` or `data.index`).
    pub field: String,
    /// The offending value, as compact JSON.
    pub found: String,
}

/// Read one id from a JSON value: a non-negative integer, or a string of decimal digits
/// (surrounding white space allowed, as Kamailio's `{s.int}` allows), up to `u32::MAX`.
///
/// # Errors
///
/// An [`IdError`] naming `field` and the value, for anything else.
pub fn parse_id(value: &Value, field: &str) -> Result<u32, IdError> {
    let parsed = match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => parse_id_str(s),
        _ => None,
    };
    parsed.ok_or_else(|| IdError {
        field: field.to_owned(),
        found: value.to_string(),
    })
}

fn parse_id_str(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn de_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    struct IdVisitor;

    impl Visitor<'_> for IdVisitor {
        type Value = u32;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "a transaction id (number or numeric string from 0 to {})",
                u32::MAX
            )
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u32, E> {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
            parse_id_str(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    deserializer.deserialize_any(IdVisitor)
}

/// Where a suspend event keeps its transaction ids: two dotted paths into the JSON.
///
/// Names vary in the wild: top-level `tindex`/`tlabel` (common configs),
/// `data.index`/`data.label` (the evapi documentation's example), `tr_index`/`tr_label`
/// (CGRateS). [`IdFields::DEFAULTS`] recognises the first two and bare `index`/`label`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdFields {
    /// Dotted path of the index field, e.g. `tindex` or `data.index`.
    pub index: String,
    /// Dotted path of the label field.
    pub label: String,
}

impl IdFields {
    /// The paths tried by default, in order: common configs, the evapi module
    /// documentation's example, and the bare names some apps answer with.
    pub const DEFAULTS: [(&'static str, &'static str); 3] = [
        ("tindex", "tlabel"),
        ("data.index", "data.label"),
        ("index", "label"),
    ];

    /// Paths from two dotted names.
    #[must_use]
    pub fn new(index: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            index: index.into(),
            label: label.into(),
        }
    }

    /// The [`DEFAULTS`](Self::DEFAULTS) as values.
    #[must_use]
    pub fn defaults() -> Vec<IdFields> {
        Self::DEFAULTS
            .iter()
            .map(|(i, l)| IdFields::new(*i, *l))
            .collect()
    }

    /// The ids at these paths, `None` when the index field is absent.
    ///
    /// # Errors
    ///
    /// An [`IdError`] when the index is present but the label is missing or either
    /// value is not a valid id.
    pub fn find(&self, event: &Value) -> Result<Option<TransactionId>, IdError> {
        let Some(index) = lookup(event, &self.index) else {
            return Ok(None);
        };
        let index = parse_id(index, &self.index)?;
        let label = lookup(event, &self.label).ok_or_else(|| IdError {
            field: self.label.clone(),
            found: "nothing".to_owned(),
        })?;
        let label = parse_id(label, &self.label)?;
        Ok(Some(TransactionId { index, label }))
    }

    /// Build an answer for `id` that uses these field names (nested as the paths say),
    /// with `code` and `reason` at the top level.
    #[must_use]
    pub fn answer(&self, id: TransactionId, code: u16, reason: &str) -> Value {
        let mut answer = Value::Object(Map::new());
        insert(&mut answer, &self.index, Value::from(id.index));
        insert(&mut answer, &self.label, Value::from(id.label));
        if let Value::Object(map) = &mut answer {
            map.insert("code".to_owned(), Value::from(code));
            map.insert("reason".to_owned(), Value::from(reason));
        }
        answer
    }
}

/// Find the first of `candidates` whose index field is present in `event`.
///
/// # Errors
///
/// The [`IdError`] of the first candidate whose fields are present but invalid.
pub fn locate_id<'a>(
    event: &Value,
    candidates: &'a [IdFields],
) -> Result<Option<(TransactionId, &'a IdFields)>, IdError> {
    for fields in candidates {
        if let Some(id) = fields.find(event)? {
            return Ok(Some((id, fields)));
        }
    }
    Ok(None)
}

fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

fn insert(target: &mut Value, path: &str, value: Value) {
    let mut keys = path.split('.').peekable();
    let mut node = target;
    while let Some(key) = keys.next() {
        let Value::Object(map) = node else { return };
        if keys.peek().is_none() {
            map.insert(key.to_owned(), value);
            return;
        }
        node = map
            .entry(key.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_round_trips_and_data_defaults_to_null() {
        let e: Event = serde_json::from_str(r#"{"event":"call-start","data":{"ci":"x"}}"#)
            .expect("valid event");
        assert_eq!(e.event, "call-start");
        assert_eq!(e.data, json!({"ci": "x"}));
        let bare: Event = serde_json::from_str(r#"{"event":"ping"}"#).expect("no data");
        assert_eq!(bare.data, Value::Null);
        assert_eq!(
            serde_json::to_string(&bare).expect("serializable"),
            r#"{"event":"ping","data":null}"#
        );
    }

    #[test]
    fn ids_accept_numbers_and_numeric_strings() {
        let s: Suspend =
            serde_json::from_str(r#"{"event":"suspend","tindex":"1234","tlabel":56,"fU":"alice"}"#)
                .expect("quoted and bare ids");
        assert_eq!(
            s.id(),
            TransactionId {
                index: 1234,
                label: 56
            }
        );
        assert_eq!(s.fields["fU"], "alice");
        assert_eq!(s.fields["event"], "suspend");
        let c: Continue =
            serde_json::from_str(r#"{"tindex":" 7 ","tlabel":"4294967295"}"#).expect("bounds");
        assert_eq!(
            c.id(),
            TransactionId {
                index: 7,
                label: u32::MAX
            }
        );
    }

    #[test]
    fn ids_reject_anything_else_with_a_clear_error() {
        for bad in [
            r#""abc""#,
            "-1",
            "1.5",
            "4294967296",
            r#""""#,
            r#""12x""#,
            "null",
            "true",
            "[1]",
        ] {
            let text = format!(r#"{{"tindex":{bad},"tlabel":1}}"#);
            let err = serde_json::from_str::<Continue>(&text).expect_err(&text);
            assert!(
                err.to_string().contains("transaction id") || err.to_string().contains("tindex"),
                "{text}: {err}"
            );
        }
        let err = parse_id(&json!("abc"), "data.index").expect_err("not numeric");
        assert_eq!(
            err.to_string(),
            r#"data.index: expected a number or numeric string from 0 to 4294967295, found "abc""#
        );
    }

    #[test]
    fn top_level_ids_read_only_the_two_fields() {
        let ids: TopLevelIds = serde_json::from_str(
            r#"{"event":"suspend","data":{"x":[1,2]},"tindex":"5","tlabel":6}"#,
        )
        .expect("valid");
        assert_eq!(ids.id(), Some(TransactionId { index: 5, label: 6 }));
        let none: TopLevelIds = serde_json::from_str(r#"{"data":{"index":1}}"#).expect("valid");
        assert_eq!(none.id(), None);
        assert!(serde_json::from_str::<TopLevelIds>(r#"{"tindex":"x","tlabel":1}"#).is_err());
    }

    #[test]
    fn continue_keeps_unknown_fields_and_omits_absent_ones() {
        let c: Continue = serde_json::from_str(
            r#"{"tindex":1,"tlabel":2,"action":"forward","target":"sip:b@example.com"}"#,
        )
        .expect("valid continue");
        assert_eq!(c.code, None);
        assert_eq!(c.extra["action"], "forward");
        let text = serde_json::to_string(&c).expect("serializable");
        assert_eq!(
            text,
            r#"{"tindex":1,"tlabel":2,"action":"forward","target":"sip:b@example.com"}"#
        );
        let reply = Continue::reply(c.id(), 486, "Busy Here");
        assert_eq!(
            serde_json::to_value(&reply).expect("serializable"),
            json!({"tindex":1,"tlabel":2,"code":486,"reason":"Busy Here"})
        );
    }

    #[test]
    fn locates_ids_under_the_names_found_in_the_wild() {
        let defaults = IdFields::defaults();
        let top = json!({"event":"suspend","tindex":"3","tlabel":"9"});
        let (id, fields) = locate_id(&top, &defaults).expect("valid").expect("found");
        assert_eq!(
            (id.index, id.label, fields.index.as_str()),
            (3, 9, "tindex")
        );

        // The evapi documentation's example shape.
        let doc = json!({"event":"suspend","data":{"index":"11","label":"22"}});
        let (id, fields) = locate_id(&doc, &defaults).expect("valid").expect("found");
        assert_eq!(
            id,
            TransactionId {
                index: 11,
                label: 22
            }
        );
        assert_eq!(
            fields.answer(id, 200, "OK"),
            json!({"data":{"index":11,"label":22},"code":200,"reason":"OK"})
        );

        // CGRateS names are found only when asked for.
        let cgr = json!({"tr_index":1,"tr_label":2});
        assert_eq!(locate_id(&cgr, &defaults).expect("valid"), None);
        let custom = [IdFields::new("tr_index", "tr_label")];
        assert!(locate_id(&cgr, &custom).expect("valid").is_some());

        let missing_label = json!({"tindex":1});
        let err = locate_id(&missing_label, &defaults).expect_err("label missing");
        assert_eq!(err.field, "tlabel");
    }
}
