//! The plan of a replay: the transcript read entry by entry.

use std::collections::HashMap;

use evapi_proto::transcript::{Entry, Side};
use evapi_proto::{AnswerReader, TransactionId};
use serde_json::Value;

/// One event to play.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Microseconds since the first event.
    pub at_us: u64,
    /// The payload, as recorded.
    pub payload: Vec<u8>,
    /// Its transaction ids, when it carries them (then an answer is expected).
    pub ids: Option<TransactionId>,
}

#[derive(Debug, Clone)]
pub(super) struct Recorded {
    pub(super) payload: Vec<u8>,
    pub(super) latency_us: u64,
}

/// A suspended event of the recording: when it went out, and the app's answer if the
/// recording has one. One map for both halves keeps a large transcript's plan small.
#[derive(Debug, Clone)]
pub(super) struct Suspended {
    sent: u64,
    pub(super) answer: Option<Recorded>,
}

/// What to play and what the recording says the answers were.
///
/// Built one entry at a time ([`Plan::add`]), so a transcript is never held twice: the
/// plan keeps the payloads (moved out of the entries) and one map entry per suspended
/// event.
#[derive(Debug, Default)]
pub struct Plan {
    /// The node's frames, in order.
    pub events: Vec<Planned>,
    recorded: HashMap<TransactionId, Suspended>,
    answered: usize,
    /// `t` of the first event.
    first: Option<u64>,
    /// App frames in the recording that answered no recorded event (or carried no ids).
    pub unpaired: u64,
    /// Raw (unframed) chunks and lost entries in the transcript: the plan may miss
    /// frames.
    pub gaps: u64,
}

impl Plan {
    /// Build the plan from a transcript's entries.
    ///
    /// # Errors
    ///
    /// A payload that is not valid base64.
    pub fn new(
        entries: impl IntoIterator<Item = Entry>,
        reader: &AnswerReader,
    ) -> Result<Self, base64::DecodeError> {
        let mut plan = Plan::default();
        for entry in entries {
            plan.add(entry, reader)?;
        }
        Ok(plan)
    }

    /// Add the transcript's next entry.
    ///
    /// # Errors
    ///
    /// A payload that is not valid base64.
    pub fn add(&mut self, entry: Entry, reader: &AnswerReader) -> Result<(), base64::DecodeError> {
        match entry {
            Entry::Frame {
                t, from, payload, ..
            } => {
                let payload = payload.into_bytes()?;
                let ids = ids_of(reader, &payload);
                match from {
                    Side::Node => {
                        let start = *self.first.get_or_insert(t);
                        if let Some(id) = ids {
                            self.recorded.insert(
                                id,
                                Suspended {
                                    sent: t,
                                    answer: None,
                                },
                            );
                        }
                        self.events.push(Planned {
                            at_us: t.saturating_sub(start),
                            payload,
                            ids,
                        });
                    }
                    Side::App => match ids.and_then(|id| self.recorded.get_mut(&id)) {
                        Some(suspended) if suspended.answer.is_none() => {
                            suspended.answer = Some(Recorded {
                                payload,
                                latency_us: t.saturating_sub(suspended.sent),
                            });
                            self.answered += 1;
                        }
                        _ => self.unpaired += 1,
                    },
                }
            }
            Entry::Raw { .. } | Entry::Lost { .. } => self.gaps += 1,
            Entry::Open { .. } | Entry::Close { .. } => {}
        }
        Ok(())
    }

    /// Events that carry transaction ids.
    #[must_use]
    pub fn suspended(&self) -> usize {
        self.events.iter().filter(|e| e.ids.is_some()).count()
    }

    /// Recorded answers.
    #[must_use]
    pub fn answered(&self) -> usize {
        self.answered
    }

    /// The recorded answers, by the ids of the events they answered (taken by the
    /// judge; the plan keeps the events and the counts).
    pub(super) fn take_answers(&mut self) -> HashMap<TransactionId, Suspended> {
        std::mem::take(&mut self.recorded)
    }
}

pub(super) fn ids_of(reader: &AnswerReader, payload: &[u8]) -> Option<TransactionId> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    reader.ids(&value).ok().flatten().map(|(id, _)| id)
}
