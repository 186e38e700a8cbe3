//! Event templates with Kamailio-style pseudo-variables.
//!
//! A routing script builds the evapi event from the request:
//! `{"event":"suspend","tindex":"$T(id_index)","tlabel":"$T(id_label)","ru":"$ru"}`.
//! Supported: `$rm $ru $rU $rd $fu $fU $tu $tU $ci $cs $si $sp $T(id_index)
//! $T(id_label)` and, where an app message is at hand, `$evapi(srcaddr)`,
//! `$evapi(srcport)`, `$evapi(conidx)`, `$evapi(msg)`. `$$` is a literal `$`.
//!
//! Values are inserted as text, unescaped, as Kamailio does; a template is checked
//! when the scenario loads, and an unknown variable is an error naming its column.

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
    Var(Pv),
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
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            if c != '$' {
                literal.push(c);
                continue;
            }
            let column = text[..at].chars().count() + 1;
            if chars.peek().is_some_and(|(_, c)| *c == '$') {
                chars.next();
                literal.push('$');
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
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(*pv));
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
        self.parts.contains(&Part::Var(pv))
    }

    /// Append the rendered template to `out`. A variable with no value renders as
    /// Kamailio's `<null>`.
    pub fn render(&self, vars: &Vars<'_>, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(pv) => value(*pv, vars, out),
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
