//! The evapi side of the simulator's "routing script": the server routes that hand app
//! messages to the transaction owner, and the tag registration convention.

use bytes::Bytes;
use evapi_proto::IdFields;
use evapi_server::{Admit, ClientEnv, EventRoutes, Handle, Target};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Messages from apps waiting for the transaction owner; when full, the server's
/// worker waits (and reading from apps pauses), so nothing is lost.
pub const INBOUND_QUEUE: usize = 8192;

/// What the routes hand over.
#[derive(Debug)]
pub enum Inbound {
    /// An app connected.
    Connected,
    /// An app sent a message.
    Message(ClientEnv, Bytes),
}

/// `evapi:connection-new` and `evapi:message-received` of the simulator.
#[derive(Debug)]
pub struct SimRoutes {
    tx: mpsc::Sender<Inbound>,
}

impl SimRoutes {
    /// Routes that send to `tx`.
    #[must_use]
    pub fn new(tx: mpsc::Sender<Inbound>) -> Self {
        Self { tx }
    }
}

impl EventRoutes for SimRoutes {
    async fn connection_new(&self, _: &Handle, client: &ClientEnv) -> Admit {
        info!(conidx = client.conidx, srcaddr = %client.srcaddr, srcport = client.srcport, "app connected");
        let _ = self.tx.send(Inbound::Connected).await;
        Admit::Accept
    }

    async fn message_received(&self, _: &Handle, client: &ClientEnv, msg: Bytes) {
        let _ = self.tx.send(Inbound::Message(client.clone(), msg)).await;
    }
}

/// A `{"tag": T}` message without transaction ids registers the sender's tag (what a
/// Kamailio config would do with `evapi_set_tag` in message-received). Returns whether
/// `msg` was such a registration.
pub fn register(handle: &Handle, fields: &IdFields, client: &ClientEnv, msg: &[u8]) -> bool {
    // Cheap test first: answers go through here too, and rarely carry a tag.
    if !msg.windows(5).any(|w| w == b"\"tag\"") {
        return false;
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(msg) else {
        return false;
    };
    let Some(tag) = obj.get("tag").and_then(Value::as_str) else {
        return false;
    };
    if obj.contains_key(&fields.index) {
        return false;
    }
    match handle.set_tag(Target::Connid(client.connid), tag) {
        Ok(()) => {
            info!(conidx = client.conidx, tag, "app registered its tag");
            true
        }
        Err(e) => {
            warn!(conidx = client.conidx, error = %e, "tag not set");
            false
        }
    }
}
