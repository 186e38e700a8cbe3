//! The evapi side of the simulator's "routing script": the server routes that hand app
//! messages to the transaction owner, and setting a registered tag.

use bytes::Bytes;
use evapi_server::{ClientEnv, EventRoutes, Handle, Target};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::router::Delivery;

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
    // Counted once accepted: the run starts sending when every app can receive.
    async fn connection_accepted(&self, _: &Handle, client: &ClientEnv) {
        info!(conidx = client.conidx, srcaddr = %client.srcaddr, srcport = client.srcport, "app connected");
        let _ = self.tx.send(Inbound::Connected).await;
    }

    async fn message_received(&self, _: &Handle, client: &ClientEnv, msg: Bytes) {
        let _ = self.tx.send(Inbound::Message(client.clone(), msg)).await;
    }
}

/// Set `client`'s tag, as `evapi_set_tag` in message-received would, after the
/// router recognised a `{"tag": T}` registration. Returns whether the tag was set.
pub fn set_tag(handle: &Handle, client: &ClientEnv, tag: &str) -> bool {
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

/// Hand `event` to the evapi server as the route says; whether any app got it.
pub fn deliver(handle: &Handle, to: Delivery<'_>, event: &[u8]) -> bool {
    let sent = match to {
        Delivery::All => handle.relay(event),
        Delivery::Multicast(tag) => handle.multicast(event, tag),
        Delivery::Unicast { tag, policy, key } => {
            handle.unicast_by(event, tag, policy, Some(key.as_bytes()))
        }
    };
    matches!(sent, Ok(d) if d.queued > 0)
}
