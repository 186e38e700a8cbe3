//! A [`NatsApp`] behind an in-process pipe that behaves like an evapi socket.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use bytes::Bytes;
use evapi_proto::{FrameCodec, Framing, TransactionId};
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use tracing::warn;

use super::{AppConfig, AppMode, NatsApp, NatsEvent, DEFAULT_MAX_IN_FLIGHT};
use crate::{NatsError, DEFAULT_ACK_WAIT};
use evapi_client::client::{ClientConfig, ClientError, Connector};
use evapi_client::suspend::SuspendMatcher;
use evapi_client::transport::Io;

/// Capacity of the in-process pipe between an app and its NATS side.
const PIPE_BYTES: usize = 256 * 1024;

/// Connect `config`'s NATS and return a stream that behaves like an evapi socket (its
/// frames are the events, and frames written to it are routed to the nodes), and the
/// task that pipes it: once the stream is dropped, the task gives back what the app
/// took and did not answer, then ends (await it before the program exits).
///
/// # Errors
///
/// NATS cannot be reached or refuses the subscription.
pub async fn app_io(
    config: &AppConfig,
    framing: Framing,
    max_frame: usize,
) -> Result<(Io, tokio::task::JoinHandle<()>), ClientError> {
    let failed = |e: NatsError| ClientError::Transport {
        addr: config.nats.url.clone(),
        source: Box::new(e),
    };
    let nats = config.nats.connect(None).await.map_err(failed)?;
    let app = match config.mode {
        AppMode::Take => {
            let wait = if config.ack_wait.is_zero() {
                DEFAULT_ACK_WAIT
            } else {
                config.ack_wait
            };
            NatsApp::take_at_most(nats, wait, DEFAULT_MAX_IN_FLIGHT, config.nats.stream).await
        }
        AppMode::Observe => NatsApp::observe(nats, config.node.as_deref()).await,
    }
    .map_err(failed)?;
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    let framed = Framed::new(ours, FrameCodec::new(framing, max_frame));
    let task = tokio::spawn(pipe(
        app,
        framed,
        config.node.clone(),
        config.matcher.clone(),
        max_frame,
    ));
    Ok((Io::Memory(theirs), task))
}

/// An [`AppConfig`] and the pipes of the connections made with it: the
/// [`Connector`] that makes [`Client`](evapi_client::Client)s take apps' events from
/// NATS instead of a socket. Set it with [`over_nats`]; no state outside it.
#[derive(Debug, Clone)]
pub struct NatsRoute {
    app: std::sync::Arc<AppConfig>,
    pipes: std::sync::Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// `config` with connections over NATS: each is an in-process pipe to the NATS side
/// (see [`app_io`]); the address is then only a name in messages. Call
/// [`ClientConfig::settle`] before the program exits, so that what an app took and did
/// not answer is given back at once instead of after the ack wait.
#[must_use]
pub fn over_nats(mut config: ClientConfig, app: AppConfig) -> ClientConfig {
    config.connector = Some(std::sync::Arc::new(NatsRoute::new(app)));
    config
}

impl NatsRoute {
    /// A route for connections made with `app`.
    #[must_use]
    pub fn new(app: AppConfig) -> Self {
        Self {
            app: std::sync::Arc::new(app),
            pipes: std::sync::Arc::default(),
        }
    }

    /// A new pipe to the NATS side, kept until [`NatsRoute::settle`].
    async fn open(&self, framing: Framing, max_frame: usize) -> Result<Io, ClientError> {
        let (io, task) = app_io(&self.app, framing, max_frame).await?;
        let mut pipes = self.pipes.lock().unwrap_or_else(PoisonError::into_inner);
        pipes.retain(|t| !t.is_finished());
        pipes.push(task);
        Ok(io)
    }

    /// Wait, at most `patience`, for the pipes whose app side is closed to finish.
    async fn wait_for_pipes(&self, patience: Duration) {
        let pipes = std::mem::take(&mut *self.pipes.lock().unwrap_or_else(PoisonError::into_inner));
        let _ = tokio::time::timeout(patience, futures_util::future::join_all(pipes)).await;
    }
}

impl Connector for NatsRoute {
    fn connect(
        &self,
        framing: Framing,
        max_frame: usize,
    ) -> Pin<Box<dyn Future<Output = Result<Io, ClientError>> + Send + '_>> {
        Box::pin(self.open(framing, max_frame))
    }

    fn settle(&self, patience: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.wait_for_pipes(patience))
    }
}

/// Events taken and not yet answered, by transaction id (two nodes may use the same
/// ids: the oldest event with those ids gets the next answer carrying them).
type Taken = HashMap<TransactionId, VecDeque<NatsEvent>>;

async fn pipe(
    mut app: NatsApp,
    mut framed: Framed<tokio::io::DuplexStream, FrameCodec>,
    node: Option<String>,
    matcher: SuspendMatcher,
    max_frame: usize,
) {
    let mut taken = Taken::new();
    loop {
        tokio::select! {
            event = app.next() => {
                let Some(event) = event else { break };
                let payload = event.payload.clone();
                if payload.len() > max_frame {
                    // Not for this app's framing: taken, it goes to no one (answered by
                    // nobody, the node's timer ends the call); watched, it is skipped.
                    warn!(bytes = payload.len(), max_frame, node = %event.node, "event larger than --max-frame, skipped");
                    if let Some(msg) = &event.msg {
                        let _ = msg.ack_with(AckKind::Term).await;
                    }
                    continue;
                }
                if app.takes() {
                    match matcher.parse(&payload) {
                        Ok(Some(s)) => taken.entry(s.id).or_default().push_back(event),
                        _ => {
                            if let Err(e) = app.ack(&event).await {
                                warn!(error = %e, "cannot acknowledge an event");
                            }
                        }
                    }
                }
                if framed.send(payload).await.is_err() {
                    break;
                }
            }
            frame = framed.next() => match frame {
                Some(Ok(frame)) => route(&app, &mut taken, node.as_deref(), &matcher, frame).await,
                Some(Err(e)) => {
                    warn!(error = %e, "bad frame from the app");
                    break;
                }
                None => break,
            },
        }
    }
    // The app left: what it took and did not answer goes to another app at once
    // (after the server stopped handing events to this one).
    app.stop_taking().await;
    for event in taken.into_values().flatten() {
        let _ = app.give_back(&event).await;
    }
    // Answers and acknowledgements reach the server before the program exits.
    let _ = app.flush().await;
}

/// Send `frame` to the node whose event it answers, or to `node`.
async fn route(
    app: &NatsApp,
    taken: &mut Taken,
    node: Option<&str>,
    matcher: &SuspendMatcher,
    frame: Bytes,
) {
    let id = matcher.parse(&frame).ok().flatten().map(|s| s.id);
    let event = id.and_then(|id| {
        let queue = taken.get_mut(&id)?;
        let event = queue.pop_front();
        if queue.is_empty() {
            taken.remove(&id);
        }
        event
    });
    let result = match (event, node) {
        (Some(event), _) => app.answer(&event, frame).await,
        (None, Some(node)) => app.send(node, frame).await,
        (None, None) => {
            warn!(
                frame = ?String::from_utf8_lossy(&frame[..frame.len().min(120)]),
                "not sent: it answers no event taken here, and no --node says where to send it"
            );
            Ok(())
        }
    };
    if let Err(e) = result {
        warn!(error = %e, "cannot send to NATS");
    }
}
