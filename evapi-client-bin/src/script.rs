//! Scripted send/expect checks for CI: a small line-based language, its parser, and
//! a runner that stops at the first failed step.
//!
//! ```text
//! # comments and blank lines are ignored
//! timeout 2s                      # default wait for later expect steps (default 5s)
//! # send: the rest of the line is sent as is (no escapes, so no comment after it)
//! send {"event":"ping"}
//! # expect: the next message is exactly this
//! expect pong
//! # expect-contains: the next message contains this text
//! expect-contains "code":200
//! expect-json {"code":200}        # the next message is JSON containing this subset
//! expect-none 500ms               # nothing arrives for this long
//! sleep 100ms
//! close                           # close the connection; a later step reconnects
//! ```
//!
//! A `#` after white space starts an end-of-line comment on every step but `send`,
//! `expect` and `expect-contains`, whose text runs to the end of the line: there a
//! ` #` is refused with an error, never sent.
//!
//! Each `expect*` step takes the next message; it does not skip non-matching ones.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use evapi_client::client::{Client, ClientConfig, ClientError};

/// Step keywords, for error messages.
const KEYWORDS: &str =
    "send, expect, expect-contains, expect-json, expect-none, sleep, close, timeout";

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// 1-based line number in the script.
    pub line: usize,
    /// The line as written, trimmed.
    pub source: String,
    /// What to do.
    pub kind: StepKind,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub(crate) enum StepKind {
    /// Send this text.
    Send(String),
    /// The next message equals this text.
    Expect(String),
    /// The next message contains this text.
    ExpectContains(String),
    /// The next message is JSON that contains this JSON (objects by subset, the rest equal).
    ExpectJson(Value),
    /// No message arrives for this long.
    ExpectNone(Duration),
    /// Wait.
    Sleep(Duration),
    /// Close the connection.
    Close,
    /// Set the default expect timeout for later steps.
    Timeout(Duration),
}

/// A script line that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub(crate) struct SyntaxError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Parse a whole script; nothing runs if any line is wrong.
///
/// # Errors
///
/// The first [`SyntaxError`].
pub(crate) fn parse(text: &str) -> Result<Vec<Step>, SyntaxError> {
    let mut steps = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let source = raw.trim();
        if source.is_empty() || source.starts_with('#') {
            continue;
        }
        let (word, rest) = source
            .split_once(char::is_whitespace)
            .map_or((source, ""), |(w, r)| (w, r.trim_start()));
        let err = |reason: String| SyntaxError { line, reason };
        // A text step's text runs to the end of the line, so it cannot carry a comment:
        // a " #" there is refused rather than sent (a forgotten comment would go out as
        // payload). Other steps may end with a comment.
        let text_step = matches!(word, "send" | "expect" | "expect-contains");
        let rest = if text_step {
            if let Some(at) = comment_start(rest) {
                return Err(err(format!(
                    "{word}: the text contains \"{}\", which looks like a comment; the text \
                     of {word} runs to the end of the line, so put the comment on a line of \
                     its own",
                    &rest[at..]
                )));
            }
            rest
        } else {
            strip_comment(word, rest)
        };
        let need_text = |what: &str| {
            if rest.is_empty() {
                Err(err(format!("{word} needs {what}")))
            } else {
                Ok(rest.to_owned())
            }
        };
        let duration = || {
            humantime::parse_duration(rest).map_err(|e| {
                err(format!(
                    "{word} needs a duration such as 500ms or 2s, got {rest:?} ({e})"
                ))
            })
        };
        let kind = match word {
            "send" => StepKind::Send(need_text("a payload")?),
            "expect" => StepKind::Expect(need_text("the expected message")?),
            "expect-contains" => StepKind::ExpectContains(need_text("the text to look for")?),
            "expect-json" => StepKind::ExpectJson(
                serde_json::from_str(&need_text("a JSON value")?)
                    .map_err(|e| err(format!("expect-json needs valid JSON: {e}")))?,
            ),
            "expect-none" => StepKind::ExpectNone(duration()?),
            "sleep" => StepKind::Sleep(duration()?),
            "timeout" => StepKind::Timeout(duration()?),
            "close" if rest.is_empty() => StepKind::Close,
            "close" => return Err(err("close takes nothing after it".to_owned())),
            other => {
                return Err(err(format!(
                    "unknown step {other:?}: expected one of {KEYWORDS}"
                )))
            }
        };
        steps.push(Step {
            line,
            source: source.to_owned(),
            kind,
        });
    }
    Ok(steps)
}

/// Where an end-of-line comment starts: a `#` after white space.
fn comment_start(text: &str) -> Option<usize> {
    text.char_indices()
        .find(|&(i, c)| c == '#' && text[..i].ends_with(char::is_whitespace))
        .map(|(i, _)| i)
}

/// `rest` without an end-of-line comment; for `expect-json` only a `#` after the JSON
/// value counts (a `#` inside a JSON string is data).
fn strip_comment<'a>(word: &str, rest: &'a str) -> &'a str {
    if word == "expect-json" {
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        if let Some(Ok(_)) = values.next() {
            let end = values.byte_offset();
            let tail = rest[end..].trim_start();
            if tail.starts_with('#') {
                return rest[..end].trim_end();
            }
        }
        return rest;
    }
    if rest.starts_with('#') {
        return "";
    }
    match comment_start(rest) {
        Some(at) => rest[..at].trim_end(),
        None => rest,
    }
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// 1-based line number of the step.
    pub line: usize,
    /// The step as written.
    pub step: String,
    /// What the step wanted.
    pub expected: String,
    /// What came instead.
    pub got: String,
    /// A line diff of expected and received JSON, pretty-printed, when both are JSON.
    pub diff: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "step failed at line {}: {}", self.line, self.step)?;
        writeln!(f, "  expected: {}", self.expected)?;
        write!(f, "  got:      {}", self.got)?;
        if let Some(diff) = &self.diff {
            write!(f, "\n  diff (- expected, + got):\n{diff}")?;
        }
        Ok(())
    }
}

/// A run that did not pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RunError {
    /// A step's expectation failed.
    #[error("{0}")]
    Failed(Failure),
    /// The connection could not be made or broke on a send.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// How a passing run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Steps run.
    pub steps: usize,
    /// Messages sent.
    pub sent: usize,
    /// Messages received and matched.
    pub received: usize,
}

/// Run `steps` against `addr`, connecting on the first step that needs a connection.
///
/// # Errors
///
/// [`RunError::Failed`] at the first failed expectation, [`RunError::Client`] when the
/// server cannot be reached or a send fails.
pub(crate) async fn run(
    steps: &[Step],
    addr: &str,
    config: &ClientConfig,
    default_timeout: Duration,
) -> Result<Summary, RunError> {
    let mut timeout = default_timeout;
    let mut client: Option<Client> = None;
    let mut summary = Summary {
        steps: 0,
        sent: 0,
        received: 0,
    };
    for step in steps {
        summary.steps += 1;
        let fail = |expected: String, got: String, diff: Option<String>| {
            RunError::Failed(Failure {
                line: step.line,
                step: step.source.clone(),
                expected,
                got,
                diff,
            })
        };
        match &step.kind {
            StepKind::Timeout(d) => timeout = *d,
            StepKind::Sleep(d) => tokio::time::sleep(*d).await,
            StepKind::Close => client = None,
            StepKind::Send(text) => {
                let c = connected(&mut client, addr, config).await?;
                c.send(text.as_bytes()).await?;
                summary.sent += 1;
            }
            StepKind::ExpectNone(d) => {
                let c = connected(&mut client, addr, config).await?;
                match next(c, *d).await {
                    Next::Timeout => {}
                    Next::Msg(m) => {
                        return Err(fail(
                            format!("no message for {}", humantime::format_duration(*d)),
                            show(&m),
                            None,
                        ))
                    }
                    Next::Closed(why) => {
                        return Err(fail(
                            format!("no message for {}", humantime::format_duration(*d)),
                            why,
                            None,
                        ))
                    }
                }
            }
            kind => {
                let c = connected(&mut client, addr, config).await?;
                let expected = match kind {
                    StepKind::Expect(t) => format!("exactly {t}"),
                    StepKind::ExpectContains(t) => format!("a message containing {t}"),
                    StepKind::ExpectJson(v) => format!("JSON containing {v}"),
                    _ => unreachable!("the other kinds are handled above"),
                };
                let msg = match next(c, timeout).await {
                    Next::Msg(m) => m,
                    Next::Timeout => {
                        return Err(fail(
                            expected,
                            format!("nothing within {}", humantime::format_duration(timeout)),
                            None,
                        ))
                    }
                    Next::Closed(why) => return Err(fail(expected, why, None)),
                };
                let ok = match kind {
                    StepKind::Expect(t) => msg == t.as_bytes(),
                    StepKind::ExpectContains(t) => contains(&msg, t.as_bytes()),
                    StepKind::ExpectJson(want) => match serde_json::from_slice::<Value>(&msg) {
                        Ok(got) if json_contains(&got, want) => true,
                        Ok(got) => {
                            return Err(fail(expected, show(&msg), Some(json_diff(want, &got))))
                        }
                        Err(_) => {
                            return Err(fail(expected, format!("{} (not JSON)", show(&msg)), None))
                        }
                    },
                    _ => unreachable!("the other kinds are handled above"),
                };
                if !ok {
                    return Err(fail(expected, show(&msg), None));
                }
                summary.received += 1;
            }
        }
    }
    Ok(summary)
}

enum Next {
    Msg(Bytes),
    Timeout,
    Closed(String),
}

async fn next(client: &mut Client, wait: Duration) -> Next {
    match tokio::time::timeout(wait, client.recv()).await {
        Err(_) => Next::Timeout,
        Ok(Ok(Some(m))) => Next::Msg(m),
        Ok(Ok(None)) => Next::Closed("the connection closed by the server".to_owned()),
        Ok(Err(e)) => Next::Closed(format!("{e}: {}", source_text(&e))),
    }
}

fn source_text(e: &ClientError) -> String {
    std::error::Error::source(e).map_or_else(String::new, ToString::to_string)
}

async fn connected<'c>(
    client: &'c mut Option<Client>,
    addr: &str,
    config: &ClientConfig,
) -> Result<&'c mut Client, ClientError> {
    if client.is_none() {
        *client = Some(Client::connect(addr, config).await?);
    }
    Ok(client.as_mut().expect("connected just above"))
}

/// Whether `haystack` contains `needle` (an empty needle is in everything).
#[must_use]
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A message as a person should see it: text when UTF-8, escaped bytes otherwise.
#[must_use]
pub(crate) fn show(msg: &[u8]) -> String {
    match std::str::from_utf8(msg) {
        Ok(text) => evapi_proto::text::for_terminal(text).into_owned(),
        Err(_) => format!("(binary) {}", msg.escape_ascii()),
    }
}

/// Whether `got` contains `want`: objects by subset of keys (recursively), arrays
/// element by element with equal length, everything else equal.
#[must_use]
pub(crate) fn json_contains(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| g.get(k).is_some_and(|gv| json_contains(gv, wv))),
        (Value::Array(g), Value::Array(w)) => {
            g.len() == w.len() && g.iter().zip(w).all(|(gv, wv)| json_contains(gv, wv))
        }
        _ => got == want,
    }
}

fn json_diff(want: &Value, got: &Value) -> String {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    let (a, b) = (pretty(want), pretty(got));
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_step_kind_and_skips_comments() {
        let steps = parse(
            "# a comment\n\nsend {\"a\": 1}\nexpect pong\nexpect-contains \"code\":200\n\
             expect-json {\"code\":200}\nexpect-none 500ms\nsleep 1s\nclose\ntimeout 2s\n",
        )
        .unwrap();
        let kinds: Vec<_> = steps.iter().map(|s| (s.line, s.kind.clone())).collect();
        assert_eq!(
            kinds,
            [
                (3, StepKind::Send("{\"a\": 1}".into())),
                (4, StepKind::Expect("pong".into())),
                (5, StepKind::ExpectContains("\"code\":200".into())),
                (6, StepKind::ExpectJson(json!({"code":200}))),
                (7, StepKind::ExpectNone(Duration::from_millis(500))),
                (8, StepKind::Sleep(Duration::from_secs(1))),
                (9, StepKind::Close),
                (10, StepKind::Timeout(Duration::from_secs(2))),
            ]
        );
    }

    #[test]
    fn syntax_errors_name_the_line_and_the_reason() {
        let e = |text: &str| parse(text).unwrap_err().to_string();
        assert_eq!(
            e("send x\nexpekt y"),
            "line 2: unknown step \"expekt\": expected one of send, expect, expect-contains, \
             expect-json, expect-none, sleep, close, timeout"
        );
        assert_eq!(e("send"), "line 1: send needs a payload");
        assert!(e("\n\nexpect-json {nope").starts_with("line 3: expect-json needs valid JSON"));
        assert!(e("sleep soon").starts_with("line 1: sleep needs a duration such as 500ms or 2s"));
        assert_eq!(e("close now"), "line 1: close takes nothing after it");
    }

    /// Regression: docs/client.md's example stopped at line 2 (`timeout 2s   # ...` was
    /// not a duration), and a comment after `send` went out as payload.
    #[test]
    fn end_of_line_comments_work_or_are_refused_never_sent() {
        let steps = parse(
            "timeout 2s   # default wait\nsleep 10ms\t# nap\nclose # bye\n\
             expect-json {\"a\":\"x # y\"}  # a hash inside JSON is data\nexpect-none 1s #",
        )
        .unwrap();
        let kinds: Vec<&StepKind> = steps.iter().map(|s| &s.kind).collect();
        assert_eq!(
            kinds,
            [
                &StepKind::Timeout(Duration::from_secs(2)),
                &StepKind::Sleep(Duration::from_millis(10)),
                &StepKind::Close,
                &StepKind::ExpectJson(json!({"a": "x # y"})),
                &StepKind::ExpectNone(Duration::from_secs(1)),
            ]
        );
        let e = parse("send {\"event\":\"ping\"}   # say hello")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "line 1: send: the text contains \"# say hello\", which looks like a comment; the \
             text of send runs to the end of the line, so put the comment on a line of its own"
        );
        // A hash with no white space before it is text.
        assert_eq!(
            parse("send a#b").unwrap()[0].kind,
            StepKind::Send("a#b".into())
        );
    }

    #[test]
    fn json_subset_matching() {
        let got = json!({"code":200,"reason":"OK","data":{"a":1,"b":[1,{"c":2,"d":3}]}});
        assert!(json_contains(&got, &json!({"code":200})));
        assert!(json_contains(&got, &json!({"data":{"b":[1,{"c":2}]}})));
        assert!(!json_contains(&got, &json!({"code":486})));
        assert!(
            !json_contains(&got, &json!({"data":{"b":[1]}})),
            "arrays match in length"
        );
        assert!(!json_contains(&got, &json!({"missing":null})));
    }
}
