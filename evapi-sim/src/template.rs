//! Event templates with Kamailio-style pseudo-variables.
//!
//! A routing script builds the evapi event from the request:
//! `{"event":"suspend","tindex":"$T(id_index)","tlabel":"$T(id_label)","ru":"$ru"}`.
//! Supported: `$rm $ru $rU $rd $fu $fU $tu $tU $ci $cs $si $sp $T(id_index)
//! $T(id_label)` and, where an app message is at hand, `$evapi(srcaddr)`,
//! `$evapi(srcport)`, `$evapi(conidx)`, `$evapi(msg)`. `$$` is a literal `$`.
//!
//! A template that starts with `{` or `[` is JSON, and the values that go into it come
//! from the caller (a Call-ID, a From URI): a variable inside a JSON string is
//! JSON-escaped, so no header can close the string and add or change a field of the
//! event (a Call-ID of `x","tindex":"7` stays one string); outside a string only the
//! variables whose values are numbers (`$cs $sp $T(id_index) $T(id_label)
//! $evapi(srcport) $evapi(conidx)`) may stand, and any other is refused when the
//! template is parsed. Other templates (reason phrases, plain text) get values as text,
//! unescaped, as Kamailio does. A template is checked when the scenario loads, and an
//! unknown or misplaced variable is an error naming its column.

use std::fmt::Write;

use crate::request::Request;

/// One pseudo-variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pv {
    /// `$rm`: request method.
    Method,
    /// `$ru`: request URI.
    Ruri,
    /// `$rU`: user part of the request URI.
    RuriUser,
    /// `$rd`: host part of the request URI.
    RuriDomain,
    /// `$fu`: From URI.
    FromUri,
    /// `$fU`: user part of the From URI.
    FromUser,
    /// `$tu`: To URI.
    ToUri,
    /// `$tU`: user part of the To URI.
    ToUser,
    /// `$ci`: Call-ID.
    CallId,
    /// `$cs`: CSeq number.
    CSeq,
    /// `$si`: source IP.
    SrcIp,
    /// `$sp`: source port.
    SrcPort,
    /// `$T(id_index)`.
    TIndex,
    /// `$T(id_label)`.
    TLabel,
    /// `$evapi(srcaddr)`.
    EvapiSrcAddr,
    /// `$evapi(srcport)`.
    EvapiSrcPort,
    /// `$evapi(conidx)`.
    EvapiConidx,
    /// `$evapi(msg)`.
    EvapiMsg,
}

const NAMES: &[(&str, Pv)] = &[
    ("rm", Pv::Method),
    ("ru", Pv::Ruri),
    ("rU", Pv::RuriUser),
    ("rd", Pv::RuriDomain),
    ("fu", Pv::FromUri),
    ("fU", Pv::FromUser),
    ("tu", Pv::ToUri),
    ("tU", Pv::ToUser),
    ("ci", Pv::CallId),
    ("cs", Pv::CSeq),
    ("si", Pv::SrcIp),
    ("sp", Pv::SrcPort),
    ("T(id_index)", Pv::TIndex),
    ("T(id_label)", Pv::TLabel),
    ("evapi(srcaddr)", Pv::EvapiSrcAddr),
    ("evapi(srcport)", Pv::EvapiSrcPort),
    ("evapi(conidx)", Pv::EvapiConidx),
    ("evapi(msg)", Pv::EvapiMsg),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Pv, Place),
}

/// Where a variable stands, which decides how its value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Not a JSON template: the value as text, as Kamailio inserts it.
    Text,
    /// Inside a JSON string value: JSON-escaped.
    JsonString,
    /// A JSON value of its own (numeric variables only): the number, or `null`.
    JsonValue,
}

impl Pv {
    /// Whether every value of this variable is a number (or `<null>`): safe outside a
    /// JSON string, as it cannot contain a quote, a comma or a brace.
    fn is_numeric(self) -> bool {
        matches!(
            self,
            Pv::CSeq | Pv::SrcPort | Pv::TIndex | Pv::TLabel | Pv::EvapiSrcPort | Pv::EvapiConidx
        )
    }
}

/// Where a JSON template's text stands: inside a string or not (and whether that string
/// is an object key), right after a backslash or not.
#[derive(Debug, Default)]
struct JsonLexer {
    in_string: bool,
    /// The string now open is an object key.
    in_key: bool,
    escaped: bool,
    /// Open objects (`true`) and arrays (`false`), innermost last.
    containers: Vec<bool>,
    /// The last character outside strings that is not white space.
    last: Option<char>,
}

impl JsonLexer {
    fn push(&mut self, c: char) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if c == '\\' {
                self.escaped = true;
            } else if c == '"' {
                self.in_string = false;
                self.in_key = false;
                self.last = Some('"');
            }
            return;
        }
        match c {
            '"' => {
                self.in_string = true;
                // A key: the first thing in an object, or after a comma in one.
                self.in_key =
                    self.containers.last() == Some(&true) && matches!(self.last, Some('{' | ','));
            }
            '{' => self.containers.push(true),
            '[' => self.containers.push(false),
            '}' | ']' => {
                self.containers.pop();
            }
            _ => {}
        }
        if !c.is_whitespace() && c != '"' {
            self.last = Some(c);
        }
    }
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// A template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct TemplateError {
    /// 1-based column (in characters) of the offending `$`.
    pub column: usize,
    /// What is wrong.
    pub reason: String,
}

/// The message that came back over evapi, for `$evapi(...)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvapiEnv<'a> {
    /// `$evapi(srcaddr)`.
    pub srcaddr: &'a str,
    /// `$evapi(srcport)`.
    pub srcport: u16,
    /// `$evapi(conidx)`.
    pub conidx: usize,
    /// `$evapi(msg)`.
    pub msg: &'a str,
}

/// Everything a template can refer to.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The SIP request.
    pub request: &'a Request,
    /// `$T(id_index)`, `$T(id_label)`.
    pub tid: Option<evapi_proto::TransactionId>,
    /// The evapi message, when there is one.
    pub evapi: Option<EvapiEnv<'a>>,
}

impl Template {
    /// Parse `text`.
    ///
    /// # Errors
    ///
    /// A [`TemplateError`] for an unknown pseudo-variable or a lone `$`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        // A byte order mark or white space may come first; a JSON text is an object, an
        // array or a string.
        let json = text
            .trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
            .starts_with(['{', '[', '"']);
        let mut lexer = JsonLexer::default();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            if c != '$' {
                literal.push(c);
                lexer.push(c);
                continue;
            }
            let column = text[..at].chars().count() + 1;
            if chars.peek().is_some_and(|(_, c)| *c == '$') {
                chars.next();
                literal.push('$');
                lexer.push('$');
                continue;
            }
            let rest = &text[at + 1..];
            let Some((name, pv)) = NAMES
                .iter()
                .filter(|(name, _)| rest.starts_with(name))
                // Longest match, and the name must end there (no `$rux`).
                .filter(|(name, _)| {
                    name.ends_with(')')
                        || !rest[name.len()..]
                            .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                })
                .max_by_key(|(name, _)| name.len())
            else {
                let shown: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || "_()".contains(*c))
                    .collect();
                return Err(TemplateError {
                    column,
                    reason: if shown.is_empty() {
                        "'$' must start a pseudo-variable (write $$ for a literal $)".to_owned()
                    } else {
                        format!(
                            "unknown pseudo-variable ${shown} (known: {})",
                            NAMES
                                .iter()
                                .map(|(n, _)| format!("${n}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        )
                    },
                });
            };
            let refuse = |reason: String| Err(TemplateError { column, reason });
            let place = if !json {
                Place::Text
            } else if lexer.in_string && lexer.escaped {
                return refuse(format!(
                    "${name} right after a backslash: the backslash would escape its value's \
                     first character"
                ));
            } else if lexer.in_key {
                return refuse(format!(
                    "${name} in an object key: a header could name (and so replace) a field; \
                     put it in a value"
                ));
            } else if lexer.in_string {
                Place::JsonString
            } else if pv.is_numeric() {
                Place::JsonValue
            } else {
                return refuse(format!(
                    "${name} outside a JSON string: its value could change the event's \
                     fields; put it in quotes (\"${name}\")"
                ));
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(*pv, place));
            for _ in 0..name.chars().count() {
                chars.next();
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Self { parts })
    }

    /// Whether the template uses `pv`.
    #[must_use]
    pub fn uses(&self, pv: Pv) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Var(v, _) if *v == pv))
    }

    /// Append the rendered template to `out`. A variable with no value renders as
    /// Kamailio's `<null>` (as JSON's `null` where it stands as a JSON value).
    pub fn render(&self, vars: &Vars<'_>, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(pv, Place::Text) => value(*pv, vars, out),
                Part::Var(pv, Place::JsonString) => {
                    let mut raw = String::new();
                    value(*pv, vars, &mut raw);
                    json_escape(&raw, out);
                }
                Part::Var(pv, Place::JsonValue) => {
                    let mut raw = String::new();
                    value(*pv, vars, &mut raw);
                    // A number, or JSON's null where Kamailio would write <null>.
                    if raw.bytes().all(|b| b.is_ascii_digit()) && !raw.is_empty() {
                        out.push_str(&raw);
                    } else {
                        out.push_str("null");
                    }
                }
            }
        }
    }

    /// The rendered template as a new string.
    #[must_use]
    pub fn render_string(&self, vars: &Vars<'_>) -> String {
        let mut out = String::new();
        self.render(vars, &mut out);
        out
    }
}

fn value(pv: Pv, v: &Vars<'_>, out: &mut String) {
    let r = v.request;
    let null = "<null>";
    match pv {
        Pv::Method => out.push_str(&r.method),
        Pv::Ruri => out.push_str(&r.ruri),
        Pv::RuriUser => out.push_str(uri_user(&r.ruri).unwrap_or(null)),
        Pv::RuriDomain => out.push_str(uri_host(&r.ruri).unwrap_or(null)),
        Pv::FromUri => out.push_str(&r.from_uri),
        Pv::FromUser => out.push_str(uri_user(&r.from_uri).unwrap_or(null)),
        Pv::ToUri => out.push_str(&r.to_uri),
        Pv::ToUser => out.push_str(uri_user(&r.to_uri).unwrap_or(null)),
        Pv::CallId => out.push_str(&r.call_id),
        Pv::CSeq => {
            let _ = write!(out, "{}", r.cseq);
        }
        Pv::SrcIp => {
            let _ = write!(out, "{}", r.source.ip());
        }
        Pv::SrcPort => {
            let _ = write!(out, "{}", r.source.port());
        }
        Pv::TIndex | Pv::TLabel => match v.tid {
            Some(id) => {
                let n = if pv == Pv::TIndex { id.index } else { id.label };
                let _ = write!(out, "{n}");
            }
            None => out.push_str(null),
        },
        Pv::EvapiSrcAddr | Pv::EvapiSrcPort | Pv::EvapiConidx | Pv::EvapiMsg => match v.evapi {
            Some(e) => {
                let _ = match pv {
                    Pv::EvapiSrcAddr => write!(out, "{}", e.srcaddr),
                    Pv::EvapiSrcPort => write!(out, "{}", e.srcport),
                    Pv::EvapiConidx => write!(out, "{}", e.conidx),
                    _ => write!(out, "{}", e.msg),
                };
            }
            None => out.push_str(null),
        },
    }
}

/// Append `text` as the inside of a JSON string: quotes, backslashes and control
/// characters escaped (RFC 8259 section 7), and U+2028/U+2029, which some JavaScript
/// readers take as line ends.
fn json_escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// The user part of a SIP URI (`sip:alice@example.com` -> `alice`).
#[must_use]
pub fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':')?.1;
    let at = rest.find('@')?;
    Some(&rest[..at])
}

/// The host part of a SIP URI (`sip:alice@example.com:5060;transport=udp` -> `example.com`).
#[must_use]
pub fn uri_host(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':')?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let end = rest.find([':', ';', '>', '?']).unwrap_or(rest.len());
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use evapi_proto::TransactionId;

    fn request() -> Request {
        Request {
            method: "INVITE".into(),
            ruri: "sip:bob@example.com:5080;transport=udp".into(),
            from_uri: "sip:alice@example.org".into(),
            to_uri: "sip:bob@example.com".into(),
            call_id: "abc-123".into(),
            cseq: 1,
            source: "192.0.2.7:5062".parse().unwrap(),
        }
    }

    #[test]
    fn renders_every_variable() {
        let t = Template::parse(
            "$rm $ru $rU $rd $fu $fU $tu $tU $ci $cs $si $sp $T(id_index):$T(id_label) $$5 \
             $evapi(conidx) $evapi(srcaddr):$evapi(srcport) $evapi(msg)",
        )
        .unwrap();
        let r = request();
        let vars = Vars {
            request: &r,
            tid: Some(TransactionId {
                index: 12,
                label: 34,
            }),
            evapi: Some(EvapiEnv {
                srcaddr: "127.0.0.1",
                srcport: 4000,
                conidx: 2,
                msg: "{}",
            }),
        };
        assert_eq!(
            t.render_string(&vars),
            "INVITE sip:bob@example.com:5080;transport=udp bob example.com sip:alice@example.org \
             alice sip:bob@example.com bob abc-123 1 192.0.2.7 5062 12:34 $5 2 127.0.0.1:4000 {}"
        );
    }

    #[test]
    fn missing_numbers_outside_strings_render_as_json_null() {
        let t = Template::parse(r#"{"tindex":$T(id_index),"tlabel":"$T(id_label)"}"#).unwrap();
        let r = request();
        let vars = Vars {
            request: &r,
            tid: None,
            evapi: None,
        };
        let rendered = t.render_string(&vars);
        assert_eq!(rendered, r#"{"tindex":null,"tlabel":"<null>"}"#);
        serde_json::from_str::<serde_json::Value>(&rendered).unwrap();
    }

    #[test]
    fn missing_values_render_as_null() {
        let t = Template::parse("$T(id_index) $evapi(msg)").unwrap();
        let r = request();
        let vars = Vars {
            request: &r,
            tid: None,
            evapi: None,
        };
        assert_eq!(t.render_string(&vars), "<null> <null>");
    }

    #[test]
    fn unknown_variables_are_errors_with_their_column() {
        let e = Template::parse("{\"x\":\"$rx\"}").unwrap_err();
        assert_eq!(e.column, 7);
        assert!(
            e.reason
                .starts_with("unknown pseudo-variable $rx (known: $rm $ru"),
            "{}",
            e.reason
        );
        let e = Template::parse("héllo $T(id_foo)").unwrap_err();
        assert_eq!(e.column, 7);
        assert!(e.reason.starts_with("unknown pseudo-variable $T(id_foo)"));
        let e = Template::parse("costs 5$").unwrap_err();
        assert_eq!(
            e.to_string(),
            "column 8: '$' must start a pseudo-variable (write $$ for a literal $)"
        );
        assert!(Template::parse("$rux").is_err(), "no prefix match");
    }

    fn vars_with_call_id(r: &mut Request, call_id: &str) {
        r.call_id = call_id.to_owned();
    }

    /// Regression (issue 24): a Call-ID of `inj","tindex":"7",...` gave an event whose
    /// tindex/tlabel were the caller's, and the app answered them.
    #[test]
    fn a_header_cannot_add_or_change_a_field_of_a_json_event() {
        let t = Template::parse(crate::scenario::DEFAULT_EVENT).unwrap();
        let mut r = request();
        let evil = r#"inj","tindex":"7","tlabel":"7","x":"y"#;
        vars_with_call_id(&mut r, evil);
        let vars = Vars {
            request: &r,
            tid: Some(TransactionId { index: 1, label: 2 }),
            evapi: None,
        };
        let event: serde_json::Value = serde_json::from_str(&t.render_string(&vars)).unwrap();
        assert_eq!(event["tindex"], "1");
        assert_eq!(event["tlabel"], "2");
        assert_eq!(event["ci"], evil, "the Call-ID is carried unchanged");
        assert!(event.get("x").is_none());
    }

    #[test]
    fn outside_a_json_string_only_numbers_may_stand() {
        let e = Template::parse(r#"{"ci":$ci}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "column 7: $ci outside a JSON string: its value could change the event's fields; \
             put it in quotes (\"$ci\")"
        );
        assert!(Template::parse(r#"{"tindex":$T(id_index),"cs":$cs,"ci":"$ci"}"#).is_ok());
        // A quote escaped inside a string does not end it.
        assert!(Template::parse(r#"{"a":"say \"$ci\" twice"}"#).is_ok());
        assert!(Template::parse(r#"{"a":"x\\","b":$ci}"#).is_err());
        // Found in review: a backslash right before a variable, a variable in a key.
        let e = Template::parse(r#"{"ci":"\$ci","fu":$fu}"#).unwrap_err();
        assert_eq!(e.column, 9);
        assert!(e.reason.contains("right after a backslash"), "{e}");
        let e = Template::parse(r#"{"tindex":"$T(id_index)","$ci":"x"}"#).unwrap_err();
        assert!(e.reason.contains("in an object key"), "{e}");
        assert!(Template::parse(r#"{"a":{"$ci":1}}"#).is_err());
        assert!(Template::parse(r#"{"a":["$ci","$fu"],"b":{"c":"$ci"}}"#).is_ok());
        // A JSON string as the whole template, after a byte order mark.
        assert!(Template::parse("\u{feff}\"$ci\"").is_ok());
        assert!(Template::parse("\u{feff}$ci").is_ok(), "not JSON: text");
        assert!(Template::parse(" \"x\" $ci").is_err());
        // Not JSON: text, as Kamailio inserts it.
        let t = Template::parse("decided for $ci").unwrap();
        let mut r = request();
        vars_with_call_id(&mut r, "a\"b");
        let vars = Vars {
            request: &r,
            tid: None,
            evapi: None,
        };
        assert_eq!(t.render_string(&vars), "decided for a\"b");
    }

    proptest::proptest! {
        /// Any header values in, a valid JSON event out whose fields carry them unchanged,
        /// and no other field.
        #[test]
        fn any_header_value_gives_a_valid_event_with_the_value_unchanged(
            call_id in "\\PC*|[\"\\\\\u{0}-\u{1f}\u{2028},:{}]{0,16}",
            from in proptest::prelude::any::<String>(),
            ruri in "[a-z\"\\\\]{0,12}",
        ) {
            let t = Template::parse(crate::scenario::DEFAULT_EVENT).unwrap();
            let mut r = request();
            r.call_id = call_id.clone();
            r.from_uri = from.clone();
            r.ruri = ruri.clone();
            let vars = Vars {
                request: &r,
                tid: Some(TransactionId { index: 5, label: 6 }),
                evapi: None,
            };
            let rendered = t.render_string(&vars);
            let event: serde_json::Value = serde_json::from_str(&rendered)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}: {rendered}")))?;
            let fields = event.as_object().unwrap();
            let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
            proptest::prop_assert_eq!(keys, ["event", "tindex", "tlabel", "rm", "ru", "fu", "ci"]);
            proptest::prop_assert_eq!(&event["ci"], &serde_json::Value::from(call_id));
            proptest::prop_assert_eq!(&event["fu"], &serde_json::Value::from(from));
            proptest::prop_assert_eq!(&event["ru"], &serde_json::Value::from(ruri));
            proptest::prop_assert_eq!(&event["tindex"], "5");
        }
    }

    #[test]
    fn uri_parts() {
        assert_eq!(uri_user("sip:alice@example.com"), Some("alice"));
        assert_eq!(
            uri_host("sip:alice@example.com:5060;x=y"),
            Some("example.com")
        );
        assert_eq!(uri_host("sip:example.com"), Some("example.com"));
        assert_eq!(uri_user("sip:example.com"), None);
    }
}
