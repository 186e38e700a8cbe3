//! The REPL's state as plain data: typed commands and news of the connection go in,
//! lines to show and frames to send come out. No socket, no terminal, no clock (time is
//! an input), so every behaviour of the prompt is unit tested here; the binary's
//! terminal owns the readline thread, the one printer and the connection, and only
//! carries out what an [`Output`] says.
//!
//! Pending suspends belong to the connection they came on: when it is lost or replaced
//! (`connect`), they are dropped with a notice, so a `continue` never answers the ids of
//! an older connection (a restarted server reuses them for other calls).

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use evapi_proto::{IdFields, TransactionId};

use super::{help_on, Command, UsageError, Which, HELP};
use evapi_client::respond::reason_phrase;
use evapi_client::SuspendMatcher;

/// Most suspends kept in the pending list; past this the oldest is forgotten (said once
/// per drop), so a flood of events cannot grow the REPL without bound.
pub(crate) const PENDING_MAX: usize = 10_000;
/// Characters of an event shown in the pending list.
const SUMMARY_LEN: usize = 60;

/// One line to show.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Line {
    /// A notice, a reply or an error, as it is.
    Text(String),
    /// A message from the server, to be rendered (pretty JSON, colours) after `prefix`.
    Message {
        /// `<< `, after the arrival time when timestamps are on; empty for `last`.
        prefix: String,
        /// The message as received.
        bytes: Bytes,
    },
}

impl Line {
    fn text(text: impl Into<String>) -> Self {
        Line::Text(text.into())
    }
}

/// What one input produced.
#[derive(Debug, Default)]
#[non_exhaustive]
pub(crate) struct Output {
    /// Lines to show, in order.
    pub lines: Vec<Line>,
    /// Frames to send, in order (report each one sent with [`Session::sent`]).
    pub send: Vec<Vec<u8>>,
    /// The command was refused or failed (batch mode exits 1).
    pub failed: bool,
    /// The user asked to leave.
    pub quit: bool,
    /// Connect to this address instead (the old connection is dropped).
    pub connect: Option<String>,
}

impl Output {
    fn say(&mut self, text: impl Into<String>) {
        self.lines.push(Line::text(text));
    }

    fn refuse(&mut self, text: impl Into<String>) {
        self.say(text);
        self.failed = true;
    }
}

/// A suspend event waiting for an answer typed by hand.
#[derive(Debug)]
struct Pending {
    number: u64,
    id: TransactionId,
    fields: IdFields,
    since: Instant,
    summary: String,
}

/// Counts shown by `stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionCounts {
    /// Frames sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Suspends answered automatically.
    pub answered: u64,
}

/// The REPL's state.
#[derive(Debug)]
pub(crate) struct Session {
    addr: String,
    matcher: SuspendMatcher,
    connected: bool,
    auto: Option<(u16, String)>,
    last: Option<Bytes>,
    counts: SessionCounts,
    /// Suspend events not answered yet, oldest first.
    pending: VecDeque<Pending>,
    /// The number the next pending suspend gets.
    next_number: u64,
    /// Show only incoming messages containing this (`filter TEXT`).
    filter: Option<String>,
    /// Prefix incoming messages with their arrival time.
    timestamps: bool,
}

impl Session {
    /// A session connected to `addr`, recognising suspends with `matcher`.
    #[must_use]
    pub(crate) fn new(addr: impl Into<String>, matcher: SuspendMatcher) -> Self {
        Self {
            addr: addr.into(),
            matcher,
            connected: true,
            auto: None,
            last: None,
            counts: SessionCounts::default(),
            pending: VecDeque::new(),
            next_number: 1,
            filter: None,
            timestamps: false,
        }
    }

    /// The address connected to (or being reconnected to).
    #[must_use]
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection is up.
    #[must_use]
    pub(crate) fn is_connected(&self) -> bool {
        self.connected
    }

    /// The counts `stats` shows.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> SessionCounts {
        self.counts
    }

    /// The numbers of the suspends pending now (for completion of `continue #`).
    #[must_use]
    pub(crate) fn pending_numbers(&self) -> Vec<u64> {
        self.pending.iter().map(|p| p.number).collect()
    }

    /// One frame of an [`Output`] went out; `automatic`: an answer given by `auto`.
    pub(crate) fn sent(&mut self, automatic: bool) {
        self.counts.sent += 1;
        if automatic {
            self.counts.answered += 1;
        }
    }

    /// A typed line (as [`super::parse`] read it) at `now`.
    pub(crate) fn line(&mut self, parsed: Result<Command, UsageError>, now: Instant) -> Output {
        let mut out = Output::default();
        let command = match parsed {
            Ok(Command::Quit) => {
                out.quit = true;
                return out;
            }
            Ok(Command::Connect(addr)) => {
                self.drop_pending(&mut out, "of the old server");
                self.addr = addr;
                self.connected = false;
                out.say(format!("-- connecting to {}", self.addr));
                out.connect = Some(self.addr.clone());
                return out;
            }
            Ok(c) => c,
            Err(e) => {
                out.refuse(format!("!! {e}"));
                return out;
            }
        };
        if !self.connected && sends(&command) {
            out.refuse(format!(
                "!! not connected (reconnecting to {}): not sent",
                self.addr
            ));
            return out;
        }
        self.command(command, now, &mut out);
        out
    }

    /// A message from the server at `now` (`wall`: the same moment by the wall clock,
    /// for timestamps).
    pub(crate) fn message(&mut self, msg: Bytes, now: Instant, wall: SystemTime) -> Output {
        let mut out = Output::default();
        self.counts.received += 1;
        let shown = self
            .filter
            .as_ref()
            .is_none_or(|f| crate::script::contains(&msg, f.as_bytes()));
        if shown {
            let prefix = if self.timestamps {
                format!("{} << ", humantime::format_rfc3339_millis(wall))
            } else {
                "<< ".to_owned()
            };
            out.lines.push(Line::Message {
                prefix,
                bytes: msg.clone(),
            });
        }
        self.suspend(&msg, now, &mut out);
        self.last = Some(msg);
        out
    }

    /// The connection is gone (`why`); the terminal reconnects.
    pub(crate) fn lost(&mut self, why: &str) -> Output {
        let mut out = Output::default();
        self.connected = false;
        out.say(format!(
            "!! connection to {} lost: {why}; reconnecting (lines typed meanwhile are not sent)",
            self.addr
        ));
        self.drop_pending(&mut out, "of the lost connection");
        out
    }

    /// Connected again (after a loss, or `connect`).
    pub(crate) fn reconnected(&mut self) -> Output {
        let mut out = Output::default();
        self.connected = true;
        out.say(format!("-- connected to {}", self.addr));
        out
    }

    fn drop_pending(&mut self, out: &mut Output, whose: &str) {
        if !self.pending.is_empty() {
            out.say(format!(
                "-- {} pending suspends {whose} dropped (their ids may belong to other calls now)",
                self.pending.len()
            ));
            self.pending.clear();
        }
    }

    /// Handle a command; its lines and frames into `out`.
    fn command(&mut self, command: Command, now: Instant, out: &mut Output) {
        match command {
            Command::Send(text) => out.send.push(text.into_bytes()),
            Command::Json(v) => out.send.push(v.to_string().into_bytes()),
            Command::Continue {
                which,
                code,
                reason,
            } => {
                let reason = reason.unwrap_or_else(|| reason_phrase(code).to_owned());
                if let Some((id, fields)) = self.take_pending(which, out) {
                    let answer = fields.answer(id, code, &reason).to_string();
                    out.say(format!(">> {answer}"));
                    out.send.push(answer.into_bytes());
                }
            }
            Command::Pending => {
                if self.pending.is_empty() {
                    out.say("-- no suspend is waiting for an answer");
                }
                for p in &self.pending {
                    out.say(format!(
                        "#{:<4} {:>6.1}s  {} {}  {}",
                        p.number,
                        now.saturating_duration_since(p.since).as_secs_f64(),
                        p.fields.index,
                        p.id,
                        p.summary
                    ));
                }
            }
            Command::Auto {
                code,
                reason,
                pending,
            } => {
                let reason = reason.unwrap_or_else(|| reason_phrase(code).to_owned());
                out.say(format!("-- answering every suspend with {code} {reason}"));
                if pending && !self.pending.is_empty() {
                    let n = self.pending.len();
                    for p in self.pending.drain(..) {
                        out.send.push(
                            p.fields
                                .answer(p.id, code, &reason)
                                .to_string()
                                .into_bytes(),
                        );
                    }
                    out.say(format!("-- and the {n} pending"));
                } else if pending {
                    out.say("-- none was pending");
                }
                self.auto = Some((code, reason));
            }
            Command::AutoOff => {
                self.auto = None;
                out.say("-- automatic answers off");
            }
            Command::Last => match &self.last {
                Some(m) => out.lines.push(Line::Message {
                    prefix: String::new(),
                    bytes: m.clone(),
                }),
                None => out.say("-- nothing received yet"),
            },
            Command::Stats => {
                let c = &self.counts;
                out.say(format!(
                    "-- sent {}, received {}, answered automatically {}",
                    c.sent, c.received, c.answered
                ));
            }
            Command::Help(None) => out.say(HELP),
            Command::Help(Some(name)) => match help_on(&name) {
                Some(text) => out.say(text),
                None => out.refuse(format!("!! no command {name:?}; help lists them")),
            },
            Command::Filter(text) => {
                out.say(match &text {
                    Some(t) => format!("-- showing only messages that contain {t}"),
                    None => "-- showing every message".to_owned(),
                });
                self.filter = text;
            }
            Command::Timestamps(on) => {
                self.timestamps = on;
                out.say(format!("-- timestamps {}", if on { "on" } else { "off" }));
            }
            // Handled in `line`.
            Command::Connect(_) | Command::Nothing | Command::Quit => {}
        }
    }

    /// A suspend event: answered at once when `auto` is on, otherwise added to the
    /// pending list.
    fn suspend(&mut self, msg: &[u8], now: Instant, out: &mut Output) {
        let s = match self.matcher.parse(msg) {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                out.say(format!("!! a suspend with bad ids, not answerable: {e}"));
                return;
            }
        };
        if let Some((code, reason)) = &self.auto {
            let answer = s.answer(*code, reason);
            out.say(format!(">> {}", String::from_utf8_lossy(&answer)));
            out.send.push(answer);
            return;
        }
        let (id, fields) = (s.id, s.fields.clone());
        let mut summary = s.event.to_string();
        if summary.len() > SUMMARY_LEN {
            let cut = (0..=SUMMARY_LEN)
                .rev()
                .find(|&i| summary.is_char_boundary(i))
                .unwrap_or(0);
            summary.truncate(cut);
            summary.push_str("...");
        }
        let number = self.next_number;
        self.next_number += 1;
        if self.pending.len() >= PENDING_MAX {
            if let Some(old) = self.pending.pop_front() {
                out.say(format!(
                    "!! pending list full: #{} ({}) forgotten",
                    old.number, old.id
                ));
            }
        }
        self.pending.push_back(Pending {
            number,
            id,
            fields,
            since: now,
            summary,
        });
        out.say(format!(
            "-- pending #{number}: continue CODE answers the oldest, continue #{number} CODE this one"
        ));
    }

    /// The transaction a `continue` answers, taken off the pending list; `None` after
    /// saying why (nothing pending, no such number).
    fn take_pending(
        &mut self,
        which: Which,
        out: &mut Output,
    ) -> Option<(TransactionId, IdFields)> {
        let at = match which {
            Which::Ids { tindex, tlabel } => {
                let id = TransactionId {
                    index: tindex,
                    label: tlabel,
                };
                // Answered by hand with the ids: use the event's own field names when
                // it is pending, else the common ones.
                match self.pending.iter().position(|p| p.id == id) {
                    Some(at) => at,
                    None => return Some((id, IdFields::new("tindex", "tlabel"))),
                }
            }
            Which::Oldest if self.pending.is_empty() => {
                out.refuse("!! no suspend is waiting for an answer");
                return None;
            }
            Which::Oldest => 0,
            Which::Number(n) => match self.pending.iter().position(|p| p.number == n) {
                Some(at) => at,
                None => {
                    out.refuse(format!("!! no pending suspend #{n} (see pending)"));
                    return None;
                }
            },
        };
        let p = self.pending.remove(at)?;
        Some((p.id, p.fields))
    }
}

/// Whether a command sends something (refused while disconnected).
fn sends(command: &Command) -> bool {
    matches!(
        command,
        Command::Send(_)
            | Command::Json(_)
            | Command::Continue { .. }
            | Command::Auto { pending: true, .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repl::parse;
    use std::time::Duration;

    fn texts(out: &Output) -> Vec<String> {
        out.lines
            .iter()
            .map(|l| match l {
                Line::Text(t) => t.clone(),
                Line::Message { prefix, bytes } => {
                    format!("{prefix}{}", String::from_utf8_lossy(bytes))
                }
            })
            .collect()
    }

    fn suspend(n: u32) -> Bytes {
        Bytes::from(format!(
            r#"{{"event":"invite","tindex":{n},"tlabel":{},"callid":"c{n}"}}"#,
            n + 100
        ))
    }

    fn typed(s: &mut Session, line: &str, now: Instant) -> Output {
        s.line(parse(line), now)
    }

    #[test]
    fn suspends_are_numbered_listed_and_answered_oldest_first_or_by_number() {
        let t0 = Instant::now();
        let mut s = Session::new("127.0.0.1:8448", SuspendMatcher::default());
        for n in 1..=3 {
            let out = s.message(suspend(n), t0, SystemTime::now());
            assert!(out.send.is_empty());
            assert!(
                texts(&out)[1].starts_with(&format!("-- pending #{n}:")),
                "{out:?}"
            );
        }
        assert_eq!(s.pending_numbers(), [1, 2, 3]);
        let list = typed(&mut s, "pending", t0 + Duration::from_millis(2500));
        assert_eq!(list.lines.len(), 3);
        assert!(
            texts(&list)[0].starts_with("#1       2.5s  tindex 1:101"),
            "{list:?}"
        );

        let out = typed(&mut s, "continue 486", t0);
        let answer: serde_json::Value = serde_json::from_slice(&out.send[0]).unwrap();
        assert_eq!(answer["tindex"], 1);
        assert_eq!(answer["code"], 486);
        let out = typed(&mut s, "continue #3 200 Welcome", t0);
        let answer: serde_json::Value = serde_json::from_slice(&out.send[0]).unwrap();
        assert_eq!(
            (answer["tindex"].clone(), answer["reason"].clone()),
            (3.into(), "Welcome".into())
        );
        assert_eq!(s.pending_numbers(), [2]);

        let out = typed(&mut s, "continue #9", t0);
        assert!(out.failed && out.send.is_empty());
        assert_eq!(texts(&out), ["!! no pending suspend #9 (see pending)"]);
    }

    #[test]
    fn auto_answers_new_suspends_and_optionally_the_pending_ones() {
        let t0 = Instant::now();
        let mut s = Session::new("a", SuspendMatcher::default());
        let _ = s.message(suspend(1), t0, SystemTime::now());
        let out = typed(&mut s, "auto 486 --pending", t0);
        assert_eq!(out.send.len(), 1);
        assert_eq!(texts(&out)[1], "-- and the 1 pending");
        let out = typed(&mut s, "auto 486 --pending", t0);
        assert!(out.send.is_empty());
        assert_eq!(
            texts(&out)[1],
            "-- none was pending",
            "never 'the 0 pending'"
        );
        let out = s.message(suspend(2), t0, SystemTime::now());
        assert_eq!(out.send.len(), 1);
        s.sent(true);
        assert_eq!(s.counts().answered, 1);
        assert!(s.pending_numbers().is_empty());
    }

    #[test]
    fn pending_suspends_do_not_outlive_their_connection() {
        let t0 = Instant::now();
        let mut s = Session::new("a", SuspendMatcher::default());
        let _ = s.message(suspend(1), t0, SystemTime::now());
        let _ = s.message(suspend(2), t0, SystemTime::now());
        let out = s.lost("closed by the server");
        assert!(!s.is_connected());
        assert_eq!(
            texts(&out)[1],
            "-- 2 pending suspends of the lost connection dropped (their ids may belong to other calls now)"
        );
        let out = typed(&mut s, "continue 200", t0);
        assert!(
            out.failed,
            "nothing to answer: no answer to an old connection's ids"
        );
        let out = typed(&mut s, "send x", t0);
        assert!(out.failed && out.send.is_empty());
        assert_eq!(
            texts(&out),
            ["!! not connected (reconnecting to a): not sent"]
        );
        assert_eq!(texts(&s.reconnected()), ["-- connected to a"]);
        assert_eq!(typed(&mut s, "send x", t0).send, [b"x".to_vec()]);

        let _ = s.message(suspend(3), t0, SystemTime::now());
        let out = typed(&mut s, "connect 127.0.0.1:9", t0);
        assert_eq!(out.connect.as_deref(), Some("127.0.0.1:9"));
        assert!(texts(&out)
            .iter()
            .any(|l| l.contains("1 pending suspends of the old server dropped")));
    }

    #[test]
    fn filter_timestamps_last_and_stats() {
        let t0 = Instant::now();
        let mut s = Session::new("a", SuspendMatcher::default());
        assert_eq!(
            texts(&typed(&mut s, "last", t0)),
            ["-- nothing received yet"]
        );
        let _ = typed(&mut s, "filter needle", t0);
        assert!(s
            .message(Bytes::from_static(b"hay"), t0, SystemTime::now())
            .lines
            .is_empty());
        let shown = s.message(Bytes::from_static(b"a needle"), t0, SystemTime::UNIX_EPOCH);
        assert_eq!(texts(&shown), ["<< a needle"]);
        let _ = typed(&mut s, "timestamps on", t0);
        let stamped = s.message(Bytes::from_static(b"needle"), t0, SystemTime::UNIX_EPOCH);
        assert_eq!(texts(&stamped), ["1970-01-01T00:00:00.000Z << needle"]);
        assert_eq!(texts(&typed(&mut s, "last", t0)), ["needle"]);
        s.sent(false);
        assert_eq!(
            texts(&typed(&mut s, "stats", t0)),
            ["-- sent 1, received 3, answered automatically 0"]
        );
    }

    #[test]
    fn usage_errors_and_unknown_help_fail_quit_quits() {
        let t0 = Instant::now();
        let mut s = Session::new("a", SuspendMatcher::default());
        assert!(typed(&mut s, "frobnicate", t0).failed);
        assert!(typed(&mut s, "help nothing", t0).failed);
        assert!(!typed(&mut s, "help auto", t0).failed);
        assert!(typed(&mut s, "quit", t0).quit);
    }
}
