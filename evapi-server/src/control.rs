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

use crate::config::UnicastPolicy;
use crate::handle::{Delivery, RelayError, Target};
use crate::routes::{ClientEnv, CloseReason, EventRoutes, Transport};
use crate::Handle;

/// The command names, for error messages.
const COMMANDS: &str =
    "relay, multicast, unicast, close, close_tag, set_tag, clients, stats, drain";

/// Whether a control connection's first line is `{"auth":"<token>"}` with this
/// token (compared in constant time).
#[must_use]
pub fn check_auth_line(line: &[u8], token: &str) -> bool {
    crate::auth::parse_auth_frame(line)
        .is_ok_and(|given| crate::auth::token_matches(given.as_bytes(), token.as_bytes()))
}

/// Run one control line against the server and return the reply line (no newline).
#[must_use]
pub fn execute(handle: &Handle, line: &str) -> String {
    let (id, result) = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(cmd)) => (cmd.get("id").cloned(), run(handle, &cmd)),
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
    if cmd.contains_key("relay") {
        let payload = payload(cmd, "relay")?;
        delivered(handle.relay(&payload))
    } else if cmd.contains_key("multicast") {
        let payload = payload(cmd, "multicast")?;
        delivered(handle.multicast(&payload, tag(cmd, "tag")?))
    } else if cmd.contains_key("unicast") {
        let payload = payload(cmd, "unicast")?;
        let policy = match cmd.get("policy") {
            None | Some(Value::Null) => handle.config().unicast_policy,
            Some(Value::String(p)) => UnicastPolicy::from_name(p).ok_or_else(|| {
                format!("policy: unknown {p:?}; expected first, round-robin, least-queued or hash")
            })?,
            Some(other) => return Err(format!("policy: expected a string, got {}", kind(other))),
        };
        let key = match cmd.get("key") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.as_bytes()),
            Some(other) => return Err(format!("key: expected a string, got {}", kind(other))),
        };
        delivered(handle.unicast_by(&payload, tag(cmd, "tag")?, policy, key))
    } else if cmd.contains_key("close_tag") {
        let n = handle
            .close_tag(tag(cmd, "close_tag")?)
            .map_err(|e| e.to_string())?;
        Ok(json!({ "closed": n }))
    } else if cmd.contains_key("drain") {
        handle.drain();
        Ok(json!({ "draining": handle.connected() }))
    } else if let Some(target) = cmd.get("close") {
        // One form for every command: the target as a field beside the verb
        // (`{"close":true,"connid":C}`, as set_tag); the older value forms still work.
        let target = match target {
            _ if cmd.contains_key("connid") || cmd.contains_key("conidx") => target_of(cmd)?,
            Value::Object(t) => target_of(t)?,
            n => Target::Conidx(index(n, "close")?),
        };
        handle.close(target).map_err(|e| e.to_string())?;
        Ok(Value::Null)
    } else if cmd.contains_key("set_tag") {
        let tag = tag(cmd, "set_tag")?;
        handle
            .set_tag(target_of(cmd)?, tag)
            .map_err(|e| e.to_string())?;
        Ok(Value::Null)
    } else if cmd.contains_key("clients") {
        Ok(json!({ "clients": handle.clients() }))
    } else if cmd.contains_key("stats") {
        Ok(json!({ "stats": handle.stats() }))
    } else {
        Err(format!("unknown command: expected one of {COMMANDS}"))
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
