//! The REPL as a library: its command language (a pure `line -> command` parser) and
//! its state ([`Session`]: commands and network news in, lines and frames out), both
//! unit tested here. The readline loop, the printer and the connection live in the
//! binary.

use serde_json::Value;

pub(crate) mod session;

pub(crate) use session::{Line, Output, Session};

/// Command names, for completion and help.
pub(crate) const COMMANDS: [&str; 14] = [
    "send",
    "json",
    "continue",
    "pending",
    "auto",
    "last",
    "stats",
    "filter",
    "timestamps",
    "connect",
    "help",
    "quit",
    "exit",
    "?",
];

/// Which suspended transaction a `continue` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// By its ids, as Kamailio gave them.
    Ids {
        /// `$T(id_index)`.
        tindex: u32,
        /// `$T(id_label)`.
        tlabel: u32,
    },
    /// The oldest one still pending.
    Oldest,
    /// By its number in the `pending` list (`#3`).
    Number(u64),
}

/// What a line asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// Send this text as it is.
    Send(String),
    /// Send this JSON (validated, sent compact).
    Json(Value),
    /// Answer a suspend by hand.
    Continue {
        /// Which transaction.
        which: Which,
        /// SIP code (default 200).
        code: u16,
        /// Reason phrase (default: the code's usual phrase).
        reason: Option<String>,
    },
    /// List the suspend events not answered yet.
    Pending,
    /// Answer every suspend automatically with this code and reason.
    Auto {
        /// SIP code.
        code: u16,
        /// Reason phrase (default: the code's usual phrase).
        reason: Option<String>,
        /// Answer the ones already pending too.
        pending: bool,
    },
    /// Stop answering automatically.
    AutoOff,
    /// Show the last message received.
    Last,
    /// Show counters.
    Stats,
    /// Show help, for one command when named.
    Help(Option<String>),
    /// Show only incoming messages that contain this text (`None`: show all).
    Filter(Option<String>),
    /// Prefix incoming messages with the time they arrived.
    Timestamps(bool),
    /// Talk to another server from now on.
    Connect(String),
    /// Leave.
    Quit,
    /// An empty line: do nothing.
    Nothing,
}

/// A command with bad arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

/// The help text.
pub(crate) const HELP: &str = "\
commands:
  send TEXT                         send TEXT as it is (the only way raw text goes out)
  json JSON                         check that JSON is valid, then send it compact
  pending                           suspend events not answered yet: #number, age, ids
  continue CODE [REASON]            answer the oldest pending suspend
  continue #N [CODE [REASON]]       answer pending suspend #N
  continue TINDEX TLABEL [CODE [REASON]]
                                    answer by ids: {\"tindex\":..,\"tlabel\":..,\"code\":..,\"reason\":..}
  auto CODE [REASON] [--pending] | auto off
                                    answer every new suspend automatically (--pending: and
                                    the ones already waiting)
  last                              show the last message received, pretty
  stats                             messages sent and received, answers sent
  filter TEXT | filter off          show only incoming messages containing TEXT
  timestamps on|off                 prefix incoming messages with their arrival time
  connect ADDR                      talk to another server (pending suspends are dropped)
  help [COMMAND]                    this text, or one command's lines
  quit                              leave (Ctrl-D too; Ctrl-C clears the line)";

/// The help lines of one command (its entry in [`HELP`] and the lines continuing it),
/// or `None` for an unknown command.
#[must_use]
pub(crate) fn help_on(command: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut taking = false;
    for line in HELP.lines().skip(1) {
        let continues = line.starts_with("    ");
        if !continues {
            let word = line.split_whitespace().next().unwrap_or_default();
            taking = word == command;
        }
        if taking {
            out.push(line);
        }
    }
    (!out.is_empty()).then(|| out.join("\n"))
}

/// Parse one line.
///
/// # Errors
///
/// A [`UsageError`] saying what the command needs.
pub(crate) fn parse(line: &str) -> Result<Command, UsageError> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Ok(Command::Nothing);
    }
    let (word, rest) = trimmed
        .split_once(char::is_whitespace)
        .map_or((trimmed, ""), |(w, r)| (w, r.trim()));
    match word {
        "send" if rest.is_empty() => Err(UsageError("usage: send TEXT".into())),
        // Keep the text exactly as typed after the first run of spaces.
        "send" => Ok(Command::Send(
            line.trim_start()["send".len()..].trim_start().to_owned(),
        )),
        "json" if rest.is_empty() => Err(UsageError("usage: json JSON".into())),
        "json" => serde_json::from_str(rest)
            .map(Command::Json)
            .map_err(|e| UsageError(format!("not valid JSON: {e}"))),
        "continue" => parse_continue(rest),
        "pending" => Ok(Command::Pending),
        "auto" if rest == "off" => Ok(Command::AutoOff),
        "auto" => {
            let (rest, pending) = match rest.strip_suffix("--pending") {
                Some(r) => (r.trim_end(), true),
                None => (rest, false),
            };
            let (code, reason) = rest
                .split_once(char::is_whitespace)
                .map_or((rest, None), |(c, r)| (c, Some(r.trim().to_owned())));
            let code: u64 = code.parse().map_err(|_| {
                UsageError("usage: auto CODE [REASON] [--pending] | auto off".into())
            })?;
            Ok(Command::Auto {
                code: sip_code(code)?,
                reason: reason.filter(|r| !r.is_empty()),
                pending,
            })
        }
        "last" => Ok(Command::Last),
        "stats" => Ok(Command::Stats),
        "help" | "?" => Ok(Command::Help((!rest.is_empty()).then(|| rest.to_owned()))),
        "filter" if rest.is_empty() => Err(UsageError("usage: filter TEXT | filter off".into())),
        "filter" if rest == "off" => Ok(Command::Filter(None)),
        "filter" => Ok(Command::Filter(Some(rest.to_owned()))),
        "timestamps" => match rest {
            "on" => Ok(Command::Timestamps(true)),
            "off" => Ok(Command::Timestamps(false)),
            _ => Err(UsageError("usage: timestamps on|off".into())),
        },
        "connect" if rest.is_empty() || rest.contains(char::is_whitespace) => {
            Err(UsageError("usage: connect ADDR".into()))
        }
        "connect" => Ok(Command::Connect(rest.to_owned())),
        "quit" | "exit" => Ok(Command::Quit),
        _ => Err(unknown(word)),
    }
}

/// An unknown command, with the closest known one when it is close (a typo such as
/// `contnue` must never go out as raw text).
fn unknown(word: &str) -> UsageError {
    let closest = COMMANDS
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .min()
        .filter(|(distance, _)| *distance <= 2);
    match closest {
        Some((_, c)) => UsageError(format!(
            "unknown command {word:?}; did you mean {c}? (send TEXT sends raw text)"
        )),
        None => UsageError(format!(
            "unknown command {word:?}; type help for commands (send TEXT sends raw text)"
        )),
    }
}

fn parse_continue(rest: &str) -> Result<Command, UsageError> {
    const USAGE: &str =
        "usage: continue CODE [REASON] | continue #N [CODE [REASON]] | continue TINDEX TLABEL [CODE [REASON]]";
    let words: Vec<&str> = rest.split_whitespace().collect();
    let number = |w: &str, what: &str| -> Result<u64, UsageError> {
        w.parse()
            .map_err(|_| UsageError(format!("{what} must be a number, got {w:?}")))
    };
    // The reason is the rest of the line after the code, as typed.
    let reason_after = |skip: usize| -> Option<String> {
        let mut r = rest.trim();
        for _ in 0..skip {
            r = r
                .split_once(char::is_whitespace)
                .map_or("", |(_, t)| t.trim_start());
        }
        (!r.is_empty()).then(|| r.to_owned())
    };
    let numeric = |w: &&str| w.bytes().all(|b| b.is_ascii_digit());
    match words.as_slice() {
        [] => Err(UsageError(USAGE.into())),
        [n, ..] if n.starts_with('#') => {
            let which = Which::Number(number(&n[1..], "N")?);
            let code = words.get(1).map(|c| number(c, "CODE")).transpose()?;
            Ok(Command::Continue {
                which,
                code: sip_code(code.unwrap_or(200))?,
                reason: if words.len() > 2 {
                    reason_after(2)
                } else {
                    None
                },
            })
        }
        [a, b, ..] if numeric(a) && numeric(b) => {
            let code = words.get(2).map(|c| number(c, "CODE")).transpose()?;
            Ok(Command::Continue {
                which: Which::Ids {
                    tindex: id(number(a, "TINDEX")?, "TINDEX")?,
                    tlabel: id(number(b, "TLABEL")?, "TLABEL")?,
                },
                code: sip_code(code.unwrap_or(200))?,
                reason: if words.len() > 3 {
                    reason_after(3)
                } else {
                    None
                },
            })
        }
        [code, ..] if numeric(code) => Ok(Command::Continue {
            which: Which::Oldest,
            code: sip_code(number(code, "CODE")?)?,
            reason: reason_after(1),
        }),
        [first, ..] => Err(UsageError(format!(
            "continue: {first:?} is not a code, #N or ids; {USAGE}"
        ))),
    }
}

fn id(n: u64, what: &str) -> Result<u32, UsageError> {
    u32::try_from(n).map_err(|_| UsageError(format!("{what} must fit in 32 bits, got {n}")))
}

/// The same rule as every answer reader (`evapi_proto::answer`): a final code.
fn sip_code(n: u64) -> Result<u16, UsageError> {
    evapi_proto::check_final_code(n)
        .map_err(|_| UsageError(format!("CODE must be a final SIP code (200-699), got {n}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commands_parse_with_defaults() {
        assert_eq!(
            parse("send  hello world ").unwrap(),
            Command::Send("hello world ".into())
        );
        assert_eq!(
            parse("json {\"a\": 1}").unwrap(),
            Command::Json(json!({"a":1}))
        );
        let ids = Which::Ids {
            tindex: 12,
            tlabel: 34,
        };
        let cont = |which, code, reason: Option<&str>| Command::Continue {
            which,
            code,
            reason: reason.map(String::from),
        };
        assert_eq!(parse("continue 12 34").unwrap(), cont(ids, 200, None));
        assert_eq!(
            parse("continue 12 34 486 Busy  Here").unwrap(),
            cont(ids, 486, Some("Busy  Here"))
        );
        // One number: a code for the oldest pending suspend.
        assert_eq!(
            parse("continue 486").unwrap(),
            cont(Which::Oldest, 486, None)
        );
        assert_eq!(
            parse("continue 486 Busy Here").unwrap(),
            cont(Which::Oldest, 486, Some("Busy Here"))
        );
        assert_eq!(
            parse("continue #3 404 Not Here").unwrap(),
            cont(Which::Number(3), 404, Some("Not Here"))
        );
        assert_eq!(
            parse("continue #3").unwrap(),
            cont(Which::Number(3), 200, None)
        );
        assert_eq!(parse("pending").unwrap(), Command::Pending);
        assert_eq!(
            parse("auto 486").unwrap(),
            Command::Auto {
                code: 486,
                reason: None,
                pending: false
            }
        );
        assert_eq!(
            parse("auto 302 Moved --pending").unwrap(),
            Command::Auto {
                code: 302,
                reason: Some("Moved".into()),
                pending: true
            }
        );
        assert_eq!(parse("auto off").unwrap(), Command::AutoOff);
        assert_eq!(parse("last").unwrap(), Command::Last);
        assert_eq!(parse("quit").unwrap(), Command::Quit);
        assert_eq!(parse("help").unwrap(), Command::Help(None));
        assert_eq!(
            parse("help continue").unwrap(),
            Command::Help(Some("continue".into()))
        );
        assert_eq!(
            parse("filter \"event\":\"suspend\"").unwrap(),
            Command::Filter(Some("\"event\":\"suspend\"".into()))
        );
        assert_eq!(parse("filter off").unwrap(), Command::Filter(None));
        assert_eq!(parse("timestamps on").unwrap(), Command::Timestamps(true));
        assert_eq!(
            parse("connect 127.0.0.1:9000").unwrap(),
            Command::Connect("127.0.0.1:9000".into())
        );
        assert_eq!(parse("   ").unwrap(), Command::Nothing);
    }

    #[test]
    fn help_on_one_command_shows_its_lines() {
        let h = help_on("continue").unwrap();
        assert_eq!(h.lines().count(), 4, "{h}");
        assert!(h
            .lines()
            .all(|l| l.contains("continue") || l.starts_with("    ")));
        assert!(help_on("auto").unwrap().contains("--pending"));
        assert_eq!(help_on("dance"), None);
    }

    #[test]
    fn anything_else_is_refused_never_sent_raw() {
        let e = |l: &str| parse(l).unwrap_err().to_string();
        assert_eq!(
            e("contnue 1 2 486"),
            "unknown command \"contnue\"; did you mean continue? (send TEXT sends raw text)"
        );
        assert_eq!(
            e("{\"event\":\"x\"}"),
            "unknown command \"{\\\"event\\\":\\\"x\\\"}\"; type help for commands (send TEXT sends raw text)"
        );
        assert_eq!(
            e("hello there"),
            "unknown command \"hello\"; did you mean help? (send TEXT sends raw text)"
        );
    }

    #[test]
    fn bad_arguments_say_what_is_needed() {
        let e = |l: &str| parse(l).unwrap_err().to_string();
        assert_eq!(e("send"), "usage: send TEXT");
        assert_eq!(e("json"), "usage: json JSON");
        assert!(e("json {nope").starts_with("not valid JSON"));
        assert_eq!(
            e("continue"),
            "usage: continue CODE [REASON] | continue #N [CODE [REASON]] | continue TINDEX TLABEL [CODE [REASON]]"
        );
        assert_eq!(
            e("continue 1"),
            "CODE must be a final SIP code (200-699), got 1"
        );
        assert!(e("continue x 1").starts_with("continue: \"x\" is not a code, #N or ids"));
        assert_eq!(e("continue #x"), "N must be a number, got \"x\"");
        assert_eq!(
            e("continue 1 2 99"),
            "CODE must be a final SIP code (200-699), got 99"
        );
        assert_eq!(
            e("continue 4294967296 1"),
            "TINDEX must fit in 32 bits, got 4294967296"
        );
        assert_eq!(
            e("auto"),
            "usage: auto CODE [REASON] [--pending] | auto off"
        );
    }
}
