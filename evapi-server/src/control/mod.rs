//! The JSON-lines interface of the standalone server: control commands in, one reply
//! line per command, and one notification line per event route.
//!
//! Commands (one JSON object per line; an `"id"` is echoed in the reply):
//!
//! | command | reply |
//! |---|---|
//! | `{"relay": P}` | `{"ok":true,"delivered":N}` |
//! | `{"multicast": P, "tag": T}` | same |
//! | `{"unicast": P, "tag": T}` (optional `"policy"`: first, round-robin, least-queued, hash; `"key"` for hash) | same |
//! | `{"close_tag": T}` | `{"ok":true,"closed":N}` |
//! | `{"drain": true}` (stop accepting; exit once the clients have left) | `{"ok":true,"draining":N}` |
//! | `{"close": true, "conidx": N}` or `"connid": C` (older: `{"close": N}`, `{"close": {"connid": C}}`) | `{"ok":true}` |
//! | `{"set_tag": T, "conidx": N}` (or `"connid": C`) | `{"ok":true}` |
//! | `{"clients": true}` | `{"ok":true,"clients":[...]}` |
//! | `{"stats": true}` | `{"ok":true,"stats":{...}}` |
//!
//! A payload P given as a JSON string is sent as its text; any other JSON value as its
//! compact serialization; with `"encoding":"base64"` beside it, a string P is decoded
//! and sent as raw bytes. Errors come back as `{"ok":false,"error":"..."}` and the
//! server goes on.
//!
//! Commands are checked strictly, because a controller's typo must not act: exactly one
//! verb per line; the verbs that take no value (`drain`, `clients`, `stats`, and `close`
//! with its target beside it) take `true` and nothing else (`{"drain":false}` is an
//! error, not a drain); every field has its type; a field the verb does not take is an
//! error that names it.
//!
//! Notifications: `{"route":"evapi:connection-new","conidx":0,"connid":0,"srcaddr":...,
//! "srcport":...}`, likewise `evapi:connection-closed` (with `"reason"`) and
//! `evapi:message-received` (with `"msg"` for UTF-8 payloads, else `"msg_b64"`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tracing::warn;

pub mod socket;

use crate::config::UnicastPolicy;
use crate::handle::{Delivery, RelayError, Target};
use crate::routes::{ClientEnv, CloseReason, EventRoutes, Transport};
use crate::Handle;

/// The command names, for error messages.
const COMMANDS: &str =
    "relay, multicast, unicast, close, close_tag, set_tag, clients, stats, drain";

/// The verbs, and the fields each one takes beside itself and `id`.
const VERBS: [(&str, &[&str]); 9] = [
    ("relay", &["encoding"]),
    ("multicast", &["encoding", "tag"]),
    ("unicast", &["encoding", "tag", "policy", "key"]),
    ("close", &["conidx", "connid"]),
    ("close_tag", &[]),
    ("set_tag", &["conidx", "connid"]),
    ("clients", &[]),
    ("stats", &[]),
    ("drain", &[]),
];

/// The one verb of `cmd`, once every field is known to it.
fn verb(cmd: &Map<String, Value>) -> Result<&'static str, String> {
    let mut verbs = VERBS.iter().filter(|(v, _)| cmd.contains_key(*v));
    let Some(&(verb, fields)) = verbs.next() else {
        return Err(format!("unknown command: expected one of {COMMANDS}"));
    };
    if let Some((other, _)) = verbs.next() {
        return Err(format!("one command per line: got {verb} and {other}"));
    }
    if let Some(field) = cmd
        .keys()
        .find(|k| *k != verb && *k != "id" && !fields.contains(&k.as_str()))
    {
        return Err(if fields.is_empty() {
            format!("{verb} takes no field {field:?}")
        } else {
            format!(
                "{verb} takes no field {field:?}; it takes {}",
                fields.join(", ")
            )
        });
    }
    Ok(verb)
}

/// The first key given twice in the object `line` (serde_json keeps the last one
/// silently, so `{"drain":false,"drain":true}` would drain).
fn duplicate_key(line: &str) -> Option<String> {
    struct FirstDuplicate(Option<String>);
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = FirstDuplicate;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<FirstDuplicate, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut duplicate = None;
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                if duplicate.is_none() && !seen.insert(key.clone()) {
                    duplicate = Some(key);
                }
            }
            Ok(FirstDuplicate(duplicate))
        }
    }
    impl<'de> serde::Deserialize<'de> for FirstDuplicate {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(Keys)
        }
    }
    serde_json::from_str::<FirstDuplicate>(line).ok()?.0
}

/// A verb that takes no value must be given `true`: `false`, `0` or `"no"` never act.
fn must_be_true(cmd: &Map<String, Value>, key: &str) -> Result<(), String> {
    match &cmd[key] {
        Value::Bool(true) => Ok(()),
        other => Err(format!("{key}: expected true, got {}", shown(other))),
    }
}

/// Whether a control connection's first line is `{"auth":"<token>"}` with this
/// token (compared in constant time).
#[must_use]
pub fn check_auth_line(line: &[u8], token: &str) -> bool {
    crate::auth::parse_auth_frame(line)
        .is_ok_and(|given| evapi_ops::throttle::token_matches(given.as_bytes(), token.as_bytes()))
}

/// Run one control line against the server and return the reply line (no newline).
#[must_use]
pub fn execute(handle: &Handle, line: &str) -> String {
    let (id, result) = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(cmd)) => (
            cmd.get("id").cloned(),
            match duplicate_key(line) {
                Some(key) => Err(format!("{key:?} given twice")),
                None => run(handle, &cmd),
            },
        ),
        Ok(other) => (
            None,
            Err(format!("expected a JSON object, got {}", kind(&other))),
        ),
        Err(e) => (None, Err(format!("invalid JSON: {e}"))),
    };
    let mut reply = Map::new();
    if let Some(id) = id {
        reply.insert("id".to_owned(), id);
    }
    match result {
        Ok(Value::Object(fields)) => {
            reply.insert("ok".to_owned(), Value::Bool(true));
            reply.extend(fields);
        }
        Ok(_) => {
            reply.insert("ok".to_owned(), Value::Bool(true));
        }
        Err(error) => {
            reply.insert("ok".to_owned(), Value::Bool(false));
            reply.insert("error".to_owned(), Value::String(error));
        }
    }
    Value::Object(reply).to_string()
}

fn run(handle: &Handle, cmd: &Map<String, Value>) -> Result<Value, String> {
    match verb(cmd)? {
        "relay" => {
            let payload = payload(cmd, "relay")?;
            delivered(handle.relay(&payload))
        }
        "multicast" => {
            let payload = payload(cmd, "multicast")?;
            delivered(handle.multicast(&payload, tag(cmd, "tag")?))
        }
        "unicast" => {
            let payload = payload(cmd, "unicast")?;
            let policy = match cmd.get("policy") {
                None | Some(Value::Null) => handle.config().unicast_policy,
                Some(Value::String(p)) => UnicastPolicy::from_name(p).ok_or_else(|| {
                    format!(
                        "policy: unknown {p:?}; expected first, round-robin, least-queued or hash"
                    )
                })?,
                Some(other) => {
                    return Err(format!("policy: expected a string, got {}", kind(other)))
                }
            };
            let key = match cmd.get("key") {
                None | Some(Value::Null) => None,
                Some(Value::String(k)) if policy == UnicastPolicy::Hash => Some(k.as_bytes()),
                Some(Value::String(_)) => return Err("key: only with policy hash".to_owned()),
                Some(other) => return Err(format!("key: expected a string, got {}", kind(other))),
            };
            delivered(handle.unicast_by(&payload, tag(cmd, "tag")?, policy, key))
        }
        "close_tag" => {
            let n = handle
                .close_tag(tag(cmd, "close_tag")?)
                .map_err(|e| e.to_string())?;
            Ok(json!({ "closed": n }))
        }
        "drain" => {
            must_be_true(cmd, "drain")?;
            handle.drain();
            Ok(json!({ "draining": handle.connected() }))
        }
        "close" => {
            // One form for every command: the target as a field beside the verb
            // (`{"close":true,"connid":C}`, as set_tag); the older value forms still work.
            let target = if cmd.contains_key("connid") || cmd.contains_key("conidx") {
                must_be_true(cmd, "close")?;
                target_of(cmd)?
            } else {
                match &cmd["close"] {
                    Value::Object(t) => {
                        if let Some(field) = t.keys().find(|k| *k != "connid" && *k != "conidx") {
                            return Err(format!(
                                "close: unknown field {field:?}; expected conidx or connid"
                            ));
                        }
                        target_of(t)?
                    }
                    Value::Number(_) => Target::Conidx(index(&cmd["close"], "close")?),
                    Value::Bool(true) => return Err("missing \"conidx\" or \"connid\"".to_owned()),
                    other => {
                        return Err(format!(
                            "close: expected true beside conidx or connid, got {}",
                            shown(other)
                        ))
                    }
                }
            };
            handle.close(target).map_err(|e| e.to_string())?;
            Ok(Value::Null)
        }
        "set_tag" => {
            let tag = tag(cmd, "set_tag")?;
            handle
                .set_tag(target_of(cmd)?, tag)
                .map_err(|e| e.to_string())?;
            Ok(Value::Null)
        }
        "clients" => {
            must_be_true(cmd, "clients")?;
            Ok(json!({ "clients": handle.clients() }))
        }
        "stats" => {
            must_be_true(cmd, "stats")?;
            Ok(json!({ "stats": handle.stats() }))
        }
        other => unreachable!("verb() returns only names from VERBS, not {other}"),
    }
}

fn delivered(result: Result<Delivery, RelayError>) -> Result<Value, String> {
    let d = result.map_err(|e| e.to_string())?;
    let mut reply = json!({ "delivered": d.queued });
    if d.dropped > 0 {
        reply["dropped"] = Value::from(d.dropped);
    }
    Ok(reply)
}

fn payload(cmd: &Map<String, Value>, key: &str) -> Result<Vec<u8>, String> {
    let value = &cmd[key];
    let encoding = match cmd.get("encoding") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => Some(e.as_str()),
        Some(other) => {
            return Err(format!(
                "encoding: expected a string (\"base64\"), got {}",
                kind(other)
            ))
        }
    };
    match (encoding, value) {
        (None, Value::String(s)) => Ok(s.clone().into_bytes()),
        (None, Value::Null | Value::Bool(_)) => Err(format!(
            "{key}: expected a string, an object, an array or a number, got {value}"
        )),
        (None, other) => Ok(other.to_string().into_bytes()),
        (Some("base64"), Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("{key}: invalid base64: {e}")),
        (Some("base64"), other) => Err(format!(
            "{key}: base64 payload must be a string, got {}",
            kind(other)
        )),
        (Some(enc), _) => Err(format!("unknown encoding {enc:?}: expected \"base64\"")),
    }
}

fn tag<'a>(cmd: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match cmd.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("{key}: expected a string, got {}", kind(other))),
        None => Err(format!("missing \"{key}\"")),
    }
}

fn target_of(fields: &Map<String, Value>) -> Result<Target, String> {
    if fields.contains_key("connid") && fields.contains_key("conidx") {
        return Err("give conidx or connid, not both".to_owned());
    }
    if let Some(n) = fields.get("connid") {
        let id = n
            .as_u64()
            .ok_or_else(|| format!("connid: expected a non-negative integer, got {n}"))?;
        Ok(Target::Connid(id))
    } else if let Some(n) = fields.get("conidx") {
        Ok(Target::Conidx(index(n, "conidx")?))
    } else {
        Err("missing \"conidx\" or \"connid\"".to_owned())
    }
}

fn index(value: &Value, key: &str) -> Result<usize, String> {
    value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{key}: expected a non-negative integer, got {value}"))
}

/// A value as an error message shows it: short ones as written, long ones by their kind.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= 32 {
        text
    } else {
        kind(value).to_owned()
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One notification line's fields.
#[derive(Serialize)]
struct Notification<'a> {
    route: &'static str,
    conidx: usize,
    connid: u64,
    srcaddr: IpAddr,
    srcport: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
    /// Only when not plain TCP, so Kamailio-shaped lines stay as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    transport: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg_b64: Option<String>,
}

impl<'a> Notification<'a> {
    fn new(route: &'static str, client: &'a ClientEnv) -> Self {
        Self {
            route,
            conidx: client.conidx,
            connid: client.connid,
            srcaddr: client.srcaddr,
            srcport: client.srcport,
            tag: client.tag.as_deref(),
            transport: (client.transport != Transport::Tcp).then(|| client.transport.name()),
            tls_subject: client.tls_subject.as_deref(),
            auth: client.auth.as_deref(),
            reason: None,
            msg: None,
            msg_b64: None,
        }
    }

    fn line(&self) -> String {
        serde_json::to_string(self).expect("notification fields always serialize")
    }
}

/// Event routes that turn every route into a notification line on a bounded channel
/// (the binary writes them to stdout). When the channel is full (the controller does not
/// read stdout), notifications are dropped and counted rather than waited for: a
/// stalled controller must not stall intake from every client.
#[derive(Debug, Clone)]
pub struct JsonLines {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

impl JsonLines {
    /// Routes that send their lines to `tx`.
    #[must_use]
    pub fn new(tx: mpsc::Sender<String>) -> Self {
        Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Notifications dropped because the channel was full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn emit(&self, line: String) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(line) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // A log line for the first drop and then every 1,000th, not one per drop.
            if n == 1 || n.is_multiple_of(1000) {
                warn!(
                    dropped = n,
                    "notification queue full (is stdout read?): notifications dropped"
                );
            }
        }
    }
}

impl EventRoutes for JsonLines {
    // The notification is written once the client is accepted, so a controller that
    // relays on reading it always reaches that client.
    async fn connection_accepted(&self, _: &Handle, client: &ClientEnv) {
        self.emit(Notification::new("evapi:connection-new", client).line());
    }

    async fn message_received(&self, _: &Handle, client: &ClientEnv, msg: Bytes) {
        let mut n = Notification::new("evapi:message-received", client);
        match std::str::from_utf8(&msg) {
            Ok(text) => {
                n.msg = Some(text);
                self.emit(n.line());
            }
            Err(_) => {
                n.msg_b64 = Some(base64::engine::general_purpose::STANDARD.encode(&msg));
                self.emit(n.line());
            }
        }
    }

    async fn connection_closed(&self, _: &Handle, client: &ClientEnv, reason: CloseReason) {
        let mut n = Notification::new("evapi:connection-closed", client);
        n.reason = Some(reason.name());
        self.emit(n.line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, NoRoutes, Server};

    fn reply(handle: &Handle, line: &str) -> Value {
        serde_json::from_str(&execute(handle, line)).expect("replies are JSON")
    }

    fn error(handle: &Handle, line: &str) -> String {
        let r = reply(handle, line);
        assert_eq!(r["ok"], false, "{line} was accepted: {r}");
        r["error"].as_str().expect("an error text").to_owned()
    }

    /// Regression (issue 24): `{"drain":false}`, `0`, `"no"` drained the server.
    #[test]
    fn verbs_without_a_value_take_true_only() {
        let handle = Server::new(Config::default(), NoRoutes).handle();
        for verb in ["drain", "clients", "stats"] {
            for value in ["false", "0", "1", "\"no\"", "\"true\"", "null", "[]", "{}"] {
                let e = error(&handle, &format!(r#"{{"{verb}":{value}}}"#));
                assert_eq!(e, format!("{verb}: expected true, got {value}"));
            }
        }
        assert!(!handle.is_draining(), "a refused drain drained");
        assert_eq!(reply(&handle, r#"{"stats":true}"#)["ok"], true);
        assert_eq!(reply(&handle, r#"{"drain":true,"id":7}"#)["id"], 7);
        assert!(handle.is_draining());
    }

    #[test]
    fn close_takes_true_beside_its_target_or_the_older_forms() {
        let handle = Server::new(Config::default(), NoRoutes).handle();
        assert_eq!(
            error(&handle, r#"{"close":false,"connid":3}"#),
            "close: expected true, got false"
        );
        assert_eq!(
            error(&handle, r#"{"close":"3"}"#),
            r#"close: expected true beside conidx or connid, got "3""#
        );
        assert_eq!(
            error(&handle, r#"{"close":{"connid":3,"x":1}}"#),
            r#"close: unknown field "x"; expected conidx or connid"#
        );
        assert_eq!(
            error(&handle, r#"{"close":true,"connid":-1}"#),
            "connid: expected a non-negative integer, got -1"
        );
        assert_eq!(
            error(&handle, r#"{"close":true,"conidx":"0"}"#),
            r#"conidx: expected a non-negative integer, got "0""#
        );
        // Well-formed, and no such client: an error from the server, not a type error.
        for line in [
            r#"{"close":true,"connid":3}"#,
            r#"{"close":{"conidx":0}}"#,
            r#"{"close":0}"#,
        ] {
            assert!(
                !error(&handle, line).contains("expected"),
                "{line} was read as ill-typed"
            );
        }
    }

    #[test]
    fn every_field_has_its_type() {
        let handle = Server::new(Config::default(), NoRoutes).handle();
        for (line, expected) in [
            (
                r#"{"multicast":"x","tag":1}"#,
                "tag: expected a string, got a number",
            ),
            (r#"{"multicast":"x"}"#, r#"missing "tag""#),
            (
                r#"{"unicast":"x","tag":"a","policy":2}"#,
                "policy: expected a string, got a number",
            ),
            (
                r#"{"unicast":"x","tag":"a","key":[]}"#,
                "key: expected a string, got an array",
            ),
            (
                r#"{"relay":"x","encoding":true}"#,
                r#"encoding: expected a string ("base64"), got a boolean"#,
            ),
            (
                r#"{"relay":1,"encoding":"base64"}"#,
                "relay: base64 payload must be a string, got a number",
            ),
            (
                r#"{"close_tag":false}"#,
                "close_tag: expected a string, got a boolean",
            ),
            (
                r#"{"set_tag":7,"conidx":0}"#,
                "set_tag: expected a string, got a number",
            ),
            (r#"{"set_tag":"a"}"#, r#"missing "conidx" or "connid""#),
        ] {
            assert_eq!(error(&handle, line), expected, "{line}");
        }
    }

    /// Found in review of the strict checks.
    #[test]
    fn duplicates_both_targets_and_odd_payloads_are_refused() {
        let handle = Server::new(Config::default(), NoRoutes).handle();
        assert_eq!(
            error(&handle, r#"{"drain":false,"drain":true}"#),
            r#""drain" given twice"#
        );
        assert!(!handle.is_draining());
        assert_eq!(
            error(&handle, r#"{"close":true}"#),
            r#"missing "conidx" or "connid""#
        );
        for line in [
            r#"{"set_tag":"x","conidx":99,"connid":0}"#,
            r#"{"close":true,"conidx":1,"connid":0}"#,
            r#"{"close":{"conidx":1,"connid":0}}"#,
        ] {
            assert_eq!(
                error(&handle, line),
                "give conidx or connid, not both",
                "{line}"
            );
        }
        for v in ["null", "false"] {
            assert_eq!(
                error(&handle, &format!(r#"{{"relay":{v}}}"#)),
                format!("relay: expected a string, an object, an array or a number, got {v}")
            );
        }
        assert_eq!(
            error(&handle, r#"{"unicast":"x","tag":"a","key":"k"}"#),
            "key: only with policy hash"
        );
        assert_eq!(
            reply(
                &handle,
                r#"{"unicast":"x","tag":"a","policy":"hash","key":"k"}"#
            )["ok"],
            false,
            "no client has the tag: a delivery error, not a type error"
        );
    }

    #[test]
    fn one_verb_per_line_and_no_unknown_fields() {
        let handle = Server::new(Config::default(), NoRoutes).handle();
        assert_eq!(
            error(&handle, r#"{"relay":"x","drain":true}"#),
            "one command per line: got relay and drain"
        );
        assert!(!handle.is_draining());
        assert_eq!(
            error(&handle, r#"{"drain":true,"conidx":1}"#),
            r#"drain takes no field "conidx""#
        );
        assert_eq!(
            error(&handle, r#"{"relay":"x","tags":"a"}"#),
            r#"relay takes no field "tags"; it takes encoding"#
        );
        assert_eq!(
            error(&handle, r#"{"nope":true}"#),
            format!("unknown command: expected one of {COMMANDS}")
        );
        assert_eq!(
            error(&handle, "[1]"),
            "expected a JSON object, got an array"
        );
    }
}
