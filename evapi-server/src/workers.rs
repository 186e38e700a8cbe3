//! The worker pool that runs `message-received` (and, behind it, `connection-closed`),
//! so a slow handler never stalls reading.
//!
//! A connection is pinned to one worker (`connid % workers`), which keeps its messages
//! in arrival order and runs its connection-closed after its last message. Each
//! worker's queue is bounded: with `queue_limit = 0` a full queue makes the reader wait
//! (nothing lost; TCP pushes back on the client); with `queue_limit = N` the queue
//! holds N and further messages are dropped and counted, as Kamailio's context_mlimit.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{warn, Instrument};

use crate::config::DEFAULT_WORKER_QUEUE;
use crate::routes::{ClientEnv, CloseReason, EventRoutes};
use crate::Handle;

/// Work for a worker.
#[derive(Debug)]
pub(crate) enum Job {
    Message {
        client: ClientEnv,
        msg: Bytes,
    },
    Closed {
        client: ClientEnv,
        reason: CloseReason,
    },
}

/// Senders to the workers; empty when handlers run on the connection tasks.
#[derive(Debug, Clone)]
pub(crate) struct Workers {
    queues: Arc<[mpsc::Sender<Job>]>,
    drop_when_full: bool,
}

impl Workers {
    pub(crate) fn spawn<R: EventRoutes>(
        handle: &Handle,
        routes: &Arc<R>,
        tracker: &TaskTracker,
    ) -> Self {
        let config = handle.config();
        let capacity = if config.queue_limit > 0 {
            config.queue_limit
        } else {
            DEFAULT_WORKER_QUEUE
        };
        let queues: Vec<_> = (0..config.workers)
            .map(|id| {
                let (tx, rx) = mpsc::channel(capacity);
                let span = tracing::info_span!("worker", id);
                tracker.spawn(work(rx, handle.clone(), Arc::clone(routes)).instrument(span));
                tx
            })
            .collect();
        Self {
            queues: queues.into(),
            drop_when_full: config.queue_limit > 0,
        }
    }

    fn queue(&self, connid: u64) -> Option<&mpsc::Sender<Job>> {
        let n = self.queues.len() as u64;
        (n > 0).then(|| &self.queues[(connid % n) as usize])
    }

    /// Hand a message to the connection's worker. Returns it back when there are no
    /// workers (the caller runs the route itself).
    pub(crate) async fn message(
        &self,
        handle: &Handle,
        client: ClientEnv,
        msg: Bytes,
    ) -> Option<(ClientEnv, Bytes)> {
        let Some(queue) = self.queue(client.connid) else {
            return Some((client, msg));
        };
        let job = Job::Message { client, msg };
        if self.drop_when_full {
            if let Err(mpsc::error::TrySendError::Full(Job::Message { client, .. })) =
                queue.try_send(job)
            {
                let dropped = handle
                    .shared
                    .counters
                    .worker_dropped
                    .fetch_add(1, Ordering::Relaxed);
                if dropped.is_power_of_two() || dropped == 0 {
                    warn!(
                        conidx = client.conidx,
                        dropped = dropped + 1,
                        "worker queue over queue_limit: message dropped"
                    );
                }
            }
        } else {
            // Err only when the workers are gone, i.e. the server is being torn down.
            let _ = queue.send(job).await;
        }
        None
    }

    /// Hand connection-closed to the connection's worker, behind its messages. Returns
    /// false when there are no workers.
    pub(crate) async fn closed(&self, client: ClientEnv, reason: CloseReason) -> bool {
        let Some(queue) = self.queue(client.connid) else {
            return false;
        };
        let _ = queue.send(Job::Closed { client, reason }).await;
        true
    }
}

async fn work<R: EventRoutes>(mut rx: mpsc::Receiver<Job>, handle: Handle, routes: Arc<R>) {
    while let Some(job) = rx.recv().await {
        match job {
            Job::Message { client, msg } => routes.message_received(&handle, &client, msg).await,
            Job::Closed { client, reason } => {
                routes.connection_closed(&handle, &client, reason).await
            }
        }
    }
}
