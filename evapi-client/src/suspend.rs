//! Recognising async-relay suspend events and building the answers that resume them.
//!
//! Kamailio's `evapi_async_relay` sends an event carrying the suspended transaction's
//! `$T(id_index)` / `$T(id_label)`; the app answers with those ids and a decision.
//! Field names vary in the wild, so a [`SuspendMatcher`] tries a list of
//! [`IdFields`] (by default top-level `tindex`/`tlabel`, then `data.index`/`data.label`)
//! and answers with the names the event used, unless told to use others.
//! A [`ReplyTemplate`] shapes the answer from fields of the event.

use evapi_proto::{locate_id, IdError, IdFields, TransactionId};
use serde_json::{Map, Value};

/// A suspend event that was recognised.
#[derive(Debug, Clone, PartialEq)]
pub struct Suspended<'m> {
    /// The transaction to resume.
    pub id: TransactionId,
    /// Where the ids were found.
    pub fields: &'m IdFields,
    /// The whole event.
    pub event: Value,
}

/// Finds transaction ids in events.
#[derive(Debug, Clone)]
pub struct SuspendMatcher {
    candidates: Vec<IdFields>,
    answer_as: Option<IdFields>,
}

impl Default for SuspendMatcher {
    fn default() -> Self {
        Self {
            candidates: IdFields::defaults(),
            answer_as: None,
        }
    }
}

impl SuspendMatcher {
    /// A matcher that tries `custom` first, then the defaults.
    #[must_use]
    pub fn with_fields(custom: IdFields) -> Self {
        let mut candidates = vec![custom];
        candidates.extend(IdFields::defaults());
        Self {
            candidates,
            answer_as: None,
        }
    }

    /// Answer with these field names whatever the event used.
    #[must_use]
    pub fn answer_as(mut self, fields: IdFields) -> Self {
        self.answer_as = Some(fields);
        self
    }

    /// Whether the first place looked at is top-level `tindex`/`tlabel` and answers use
    /// those names too, so [`evapi_proto::TopLevelIds`] can stand in for a full parse.
    #[must_use]
    pub fn top_level_first(&self) -> bool {
        let top = |f: &IdFields| f.index == "tindex" && f.label == "tlabel";
        self.candidates.first().is_some_and(top) && self.answer_as.as_ref().is_none_or(top)
    }

    /// The suspend in `msg`, if it is one: `Ok(None)` for a message that is not JSON or
    /// has no id fields.
    ///
    /// # Errors
    ///
    /// An [`IdError`] when the id fields are there but not valid ids.
    pub fn parse(&self, msg: &[u8]) -> Result<Option<Suspended<'_>>, IdError> {
        let Ok(event) = serde_json::from_slice::<Value>(msg) else {
            return Ok(None);
        };
        let Some((id, found)) = locate_id(&event, &self.candidates)? else {
            return Ok(None);
        };
        let fields = self.answer_as.as_ref().unwrap_or(found);
        Ok(Some(Suspended { id, fields, event }))
    }
}

impl Suspended<'_> {
    /// `{"tindex":N,"tlabel":N,"code":C,"reason":R}` under the event's field names.
    #[must_use]
    pub fn answer(&self, code: u16, reason: &str) -> Vec<u8> {
        self.fields
            .answer(self.id, code, reason)
            .to_string()
            .into_bytes()
    }
}

/// An answer template: JSON where the string `"$name"` is replaced by a value (keeping
/// its JSON type) and `${name}` inside a longer string by its text.
///
/// Names: `tindex`, `tlabel`, `code`, `reason`, or a dotted path into the event
/// (`data.rU`, `event`). A path that is missing gives `null` (or empty text).
///
/// ```
/// use evapi_client::suspend::{ReplyTemplate, SuspendMatcher};
///
/// let t = ReplyTemplate::parse(r#"{"tindex":"$tindex","tlabel":"$tlabel","code":"$code","to":"sip:${data.rU}@gw"}"#).unwrap();
/// let m = SuspendMatcher::default();
/// let s = m.parse(br#"{"tindex":"1","tlabel":"2","data":{"rU":"bob"}}"#).unwrap().unwrap();
/// assert_eq!(t.render(&s, 302, "Moved"), br#"{"tindex":1,"tlabel":2,"code":302,"to":"sip:bob@gw"}"#);
/// ```
#[derive(Debug, Clone)]
pub struct ReplyTemplate {
    template: Value,
}

/// A template that is not JSON.
#[derive(Debug, thiserror::Error)]
#[error("reply template is not valid JSON")]
pub struct ReplyTemplateError(#[source] serde_json::Error);

impl ReplyTemplate {
    /// Parse a template.
    ///
    /// # Errors
    ///
    /// [`ReplyTemplateError`] when `text` is not JSON.
    pub fn parse(text: &str) -> Result<Self, ReplyTemplateError> {
        serde_json::from_str(text)
            .map(|template| Self { template })
            .map_err(ReplyTemplateError)
    }

    /// The answer for `suspended`, as bytes to send.
    #[must_use]
    pub fn render(&self, suspended: &Suspended<'_>, code: u16, reason: &str) -> Vec<u8> {
        let vars = Vars {
            s: suspended,
            code,
            reason,
        };
        fill(&self.template, &vars).to_string().into_bytes()
    }
}

struct Vars<'a, 'm> {
    s: &'a Suspended<'m>,
    code: u16,
    reason: &'a str,
}

impl Vars<'_, '_> {
    fn get(&self, name: &str) -> Value {
        match name {
            "tindex" => self.s.id.index.into(),
            "tlabel" => self.s.id.label.into(),
            "code" => self.code.into(),
            "reason" => self.reason.into(),
            path => path
                .split('.')
                .try_fold(&self.s.event, |v, key| v.get(key))
                .cloned()
                .unwrap_or(Value::Null),
        }
    }

    fn text(&self, name: &str) -> String {
        match self.get(name) {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

fn fill(template: &Value, vars: &Vars<'_, '_>) -> Value {
    match template {
        Value::String(s) => match s.strip_prefix('$') {
            Some(name) if !name.starts_with('{') => vars.get(name),
            _ => Value::String(interpolate(s, vars)),
        },
        Value::Array(items) => items.iter().map(|v| fill(v, vars)).collect(),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill(v, vars)))
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

fn interpolate(s: &str, vars: &Vars<'_, '_>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&vars.text(&rest[start + 2..start + 2 + len]));
        rest = &rest[start + 2 + len + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_shapes_found_in_the_wild_and_answers_in_kind() {
        let m = SuspendMatcher::default();
        let top = m
            .parse(br#"{"event":"suspend","tindex":"12","tlabel":34}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            top.answer(486, "Busy Here"),
            br#"{"tindex":12,"tlabel":34,"code":486,"reason":"Busy Here"}"#
        );
        let doc = m
            .parse(br#"{"event":"suspend","data":{"index":"5","label":"6"}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            doc.answer(200, "OK"),
            br#"{"data":{"index":5,"label":6},"code":200,"reason":"OK"}"#
        );
        let cgr = SuspendMatcher::with_fields(IdFields::new("tr_index", "tr_label"));
        let s = cgr
            .parse(br#"{"tr_index":1,"tr_label":2}"#)
            .unwrap()
            .unwrap();
        assert_eq!(s.fields.index, "tr_index");
        let forced = SuspendMatcher::default().answer_as(IdFields::new("tindex", "tlabel"));
        let s = forced
            .parse(br#"{"data":{"index":5,"label":6}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            s.answer(200, "OK"),
            br#"{"tindex":5,"tlabel":6,"code":200,"reason":"OK"}"#
        );
    }

    #[test]
    fn other_messages_are_not_suspends_and_bad_ids_are_errors() {
        let m = SuspendMatcher::default();
        assert!(m.parse(b"not json").unwrap().is_none());
        assert!(m.parse(br#"{"event":"hello"}"#).unwrap().is_none());
        let err = m.parse(br#"{"tindex":"x","tlabel":1}"#).unwrap_err();
        assert_eq!(err.field, "tindex");
    }

    #[test]
    fn templates_keep_types_interpolate_text_and_tolerate_missing_paths() {
        let m = SuspendMatcher::default();
        let s = m
            .parse(br#"{"tindex":1,"tlabel":2,"data":{"n":7,"u":"bob"}}"#)
            .unwrap()
            .unwrap();
        let t = ReplyTemplate::parse(
            r#"{"id":["$tindex","$tlabel"],"n":"$data.n","t":"${data.u}/${data.n}/${nope}","r":"$reason","lit":"a$b"}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(t.render(&s, 200, "OK")).unwrap(),
            r#"{"id":[1,2],"n":7,"t":"bob/7/","r":"OK","lit":"a$b"}"#
        );
        assert!(ReplyTemplate::parse("{nope").is_err());
    }
}
