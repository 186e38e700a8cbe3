//! [`Server`]: the accept loop and graceful shutdown.
//!
//! It takes an already bound listener (the binary binds; tests bind port 0) and a
//! shutdown future. Shutdown stops accepting, tells every connection to close (each
//! flushes its queue within the send timeout), waits for the connection and worker
//! tasks under [`Config::shutdown_timeout`](crate::Config::shutdown_timeout), and returns.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::connection::{self, Ctx};
use crate::refusals::{Refusals, SUMMARY_EVERY};
use crate::routes::EventRoutes;
use crate::transport::Listener;
use crate::workers::Workers;
use crate::{Config, Handle};

/// Pause after a failed accept (for example out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How often a draining server looks whether its last client left.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// One warning line for what was refused since the last one (nothing when nothing was).
fn log_refusals(refusals: &Refusals) {
    if let Some(counts) = refusals.take_summary() {
        warn!(refused = %counts, every = ?SUMMARY_EVERY, "connections refused or failed before becoming apps");
    }
}

/// An evapi event socket with the embedder's routes.
#[derive(Debug)]
pub struct Server<R> {
    handle: Handle,
    routes: Arc<R>,
}

impl<R: EventRoutes> Server<R> {
    /// A server with these settings and routes; nothing runs until [`run`](Self::run).
    #[must_use]
    pub fn new(config: Config, routes: R) -> Self {
        Self {
            handle: Handle::new(config),
            routes: Arc::new(routes),
        }
    }

    /// A handle to relay, tag, close and inspect; usable before and after `run` starts.
    #[must_use]
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Serve `listener` until `shutdown` resolves or [`Handle::shutdown`] is called,
    /// then close every connection gracefully and return.
    pub async fn run(self, listener: impl Into<Listener>, shutdown: impl Future<Output = ()>) {
        let mut listener = listener.into();
        let shared = Arc::clone(&self.handle.shared);
        let config = &shared.config;
        let tracker = TaskTracker::new();
        let ctx = Arc::new(Ctx {
            handle: self.handle.clone(),
            workers: Workers::spawn(&self.handle, &self.routes, &tracker),
            routes: self.routes,
            permits: Arc::new(Semaphore::new(config.max_clients)),
        });
        info!(addr = %listener.describe(), framing = %config.framing, workers = config.workers,
              max_clients = config.max_clients, tls = shared.tls_on(),
              auth = shared.tokens().is_some(), "listening");
        tokio::pin!(shutdown);
        let mut summary = tokio::time::interval(SUMMARY_EVERY);
        summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drained = false;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = shared.shutdown.cancelled() => break,
                () = shared.draining.cancelled() => {
                    drained = true;
                    break;
                }
                _ = summary.tick() => log_refusals(&shared.refusals),
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => connection::accepted(stream, peer, &ctx, &tracker),
                    Err(e) => {
                        error!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        drop(listener);
        if drained {
            // Draining: no new connections (the listener is closed); the clients
            // finish on their own, unless shutdown comes first.
            info!(
                connected = shared.registry.len(),
                "draining: not accepting, waiting for clients to leave"
            );
            while shared.registry.len() > 0 {
                tokio::select! {
                    () = &mut shutdown => break,
                    () = shared.shutdown.cancelled() => break,
                    () = tokio::time::sleep(DRAIN_POLL) => {}
                }
            }
        }
        log_refusals(&shared.refusals);
        info!(connected = shared.registry.len(), "shutting down");
        shared.shutdown.cancel();
        // The workers end once the last connection drops its copy of their queues.
        drop(ctx);
        tracker.close();
        if tokio::time::timeout(config.shutdown_timeout, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                tasks = tracker.len(),
                "shutdown deadline passed with tasks still running"
            );
        }
        info!("stopped");
    }
}
