//! The evapi side of the simulator's "routing script": the server routes that hand app
//! messages to the transaction owner, and setting a registered tag.

use bytes::Bytes;
use evapi_server::{ClientEnv, EventRoutes, Handle, Target};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::router::Fanout;

/// Messages from apps waiting for the transaction owner; when full, the server's
/// worker waits (and reading from apps pauses), so nothing is lost.
pub(crate) const INBOUND_QUEUE: usize = 8192;

/// What the routes hand over.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// An app connected.
    Connected,
    /// An app sent a message.
    Message(ClientEnv, Bytes),
}

/// `evapi:connection-new` and `evapi:message-received` of the simulator.
#[derive(Debug)]
pub(crate) struct SimRoutes {
    tx: mpsc::Sender<Inbound>,
}

impl SimRoutes {
    /// Routes that send to `tx`.
    #[must_use]
    pub(crate) fn new(tx: mpsc::Sender<Inbound>) -> Self {
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
pub(crate) fn set_tag(handle: &Handle, client: &ClientEnv, tag: &str) -> bool {
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
pub(crate) fn deliver(handle: &Handle, to: Fanout<'_>, event: &[u8]) -> bool {
    let sent = match to {
        Fanout::All => handle.relay(event),
        Fanout::Multicast(tag) => handle.multicast(event, tag),
        Fanout::Unicast { tag, policy, key } => {
            handle.unicast_by(event, tag, policy, Some(key.as_bytes()))
        }
    };
    matches!(sent, Ok(d) if d.queued > 0)
}

/// The simulator's embedded evapi socket, as every driver (scenario runs, the SIP
/// front, replay) starts it: the server with the simulator's routes and, when asked,
/// its metrics (with the simulator's beside them) and admin API over HTTP.
#[derive(Debug)]
pub(crate) struct Embedded {
    /// The running server.
    pub handle: Handle,
    /// What the routes hand over, in order.
    pub inbound: mpsc::Receiver<Inbound>,
    server: tokio::task::JoinHandle<()>,
    http: Option<tokio::task::JoinHandle<()>>,
}

/// Where the embedded socket serves metrics and admin: the listener, the admin's bearer
/// token, and the simulator's metrics to serve beside the server's.
pub(crate) type HttpSetup<'a> = (
    tokio::net::TcpListener,
    Option<std::sync::Arc<str>>,
    &'a crate::metrics::SimMetrics,
);

impl Embedded {
    /// Serve `config` on `listener` (and HTTP as `http` says) until [`Embedded::stop`].
    #[must_use]
    pub(crate) fn start(
        listener: tokio::net::TcpListener,
        config: evapi_server::Config,
        http: Option<HttpSetup<'_>>,
    ) -> Self {
        let (tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let server = evapi_server::Server::new(config, SimRoutes::new(tx));
        let handle = server.handle();
        let server = tokio::spawn(server.run(listener, std::future::pending()));
        let http = http.map(|(l, token, metrics)| {
            tokio::spawn(evapi_server::admin::serve(
                l,
                metrics.registry(&handle),
                handle.clone(),
                token,
                std::future::pending(),
            ))
        });
        Self {
            handle,
            inbound,
            server,
            http,
        }
    }

    /// Whether metrics are served (then the driver publishes its counters).
    #[must_use]
    pub(crate) fn serves_http(&self) -> bool {
        self.http.is_some()
    }

    /// Close every connection and stop serving.
    pub(crate) async fn stop(self) {
        self.handle.shutdown();
        let _ = self.server.await;
        if let Some(task) = self.http {
            task.abort();
        }
    }
}
