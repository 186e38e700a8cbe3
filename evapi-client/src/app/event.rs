//! Events an app reads, the answers it gives, and what it is told of its connections.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use evapi_proto::{IdFields, TransactionId};
use tokio::time::Instant;

use crate::suspend::SuspendMatcher;

/// One event, from one node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Incoming {
    /// The node it came from (its name, see [`Node`](crate::nodes::Node)).
    pub node: Arc<str>,
    /// The event as the node wrote it.
    pub payload: Bytes,
    /// The event parsed, when it is JSON.
    pub json: Option<serde_json::Value>,
    /// The suspended transaction, when it is a suspend event (its answer resumes it).
    pub id: Option<TransactionId>,
    /// When it was read: deadlines count from here.
    pub arrived: Instant,
    /// Where the ids were, to answer under the same names.
    fields: Option<IdFields>,
}

impl Incoming {
    /// `payload` from `node`, read at `arrived`, recognised with `matcher`.
    #[must_use]
    pub fn new(node: Arc<str>, payload: Bytes, arrived: Instant, matcher: &SuspendMatcher) -> Self {
        let (json, id, fields) = match matcher.parse(&payload) {
            Ok(Some(s)) => (Some(s.event), Some(s.id), Some(s.fields.clone())),
            Ok(None) | Err(_) => (serde_json::from_slice(&payload).ok(), None, None),
        };
        Self {
            node,
            payload,
            json,
            id,
            arrived,
            fields,
        }
    }

    /// The text at `pointer` (RFC 6901: `/fu`, `/data/rU`) in the JSON event.
    #[must_use]
    pub fn str(&self, pointer: &str) -> Option<&str> {
        self.json.as_ref()?.pointer(pointer)?.as_str()
    }

    /// What an answer to it needs (node, ids, arrival), without the parsed JSON: kept
    /// by the deadline's watchdog while the event itself goes to the handler, so no
    /// event is deep-copied.
    pub(super) fn for_reply(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
            payload: Bytes::new(),
            json: None,
            id: self.id,
            arrived: self.arrived,
            fields: self.fields.clone(),
        }
    }

    /// The answer that resumes this event's transaction with `answer`; `None` when it is
    /// not a suspend event.
    #[must_use]
    pub fn reply(&self, answer: &Decision) -> Option<Vec<u8>> {
        let (id, fields) = self.id.zip(self.fields.as_ref())?;
        Some(
            fields
                .answer(id, answer.code, &answer.reason)
                .to_string()
                .into_bytes(),
        )
    }
}

/// What a handler answers a suspend event with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// SIP code.
    pub code: u16,
    /// Reason phrase (checked with [`evapi_proto::check_reason`] before it is sent).
    pub reason: String,
}

impl Decision {
    /// `code` with its usual reason phrase.
    #[must_use]
    pub fn new(code: u16) -> Self {
        Self {
            code,
            reason: evapi_proto::answer::reason_phrase(code).to_owned(),
        }
    }

    /// `code` with `reason`.
    #[must_use]
    pub fn with_reason(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// What happened to an app's connections, for [`Handler::notice`] (each is logged
/// too).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// First connected to `node`.
    Connected {
        /// Which node.
        node: Arc<str>,
    },
    /// The connection to `node` ended; its `unanswered` events in hand will not be
    /// answered (their ids belong to that connection: a restarted node gives them to
    /// other calls), and events may have been missed until [`Notice::Reconnected`].
    Lost {
        /// Which node.
        node: Arc<str>,
        /// Events of that connection still in hand.
        unanswered: usize,
    },
    /// Connected to `node` again after `down_for`.
    Reconnected {
        /// Which node.
        node: Arc<str>,
        /// How long it was away.
        down_for: Duration,
    },
}

/// What an app does with each event; a closure `Fn(Incoming) -> impl Future<Output =
/// Option<Decision>>` is one.
pub trait Handler: Send + Sync + 'static {
    /// The answer to `event`: `Some` resumes a suspend event's transaction (ignored for
    /// other events); `None` answers nothing (the fallback goes at the deadline, if
    /// one is set).
    fn handle(&self, event: Incoming) -> impl Future<Output = Option<Decision>> + Send;

    /// A connection was made, lost or made again (already logged; nothing by default).
    fn notice(&self, notice: Notice) {
        let _ = notice;
    }
}

impl<F, Fut> Handler for F
where
    F: Fn(Incoming) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Decision>> + Send,
{
    fn handle(&self, event: Incoming) -> impl Future<Output = Option<Decision>> + Send {
        self(event)
    }
}
