//! The REPL's command language: a pure `line -> command` parser, unit tested on its own.
//! The readline loop that uses it lives in the binary.

use serde_json::Value;

/// Command names, for completion and help.
pub const COMMANDS: [&str; 9] = [
    "send", "json", "continue", "auto", "last", "stats", "help", "quit", "exit",
];

/// What a line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Send this text as it is.
    Send(String),
    /// Send this JSON (validated, sent compact).
    Json(Value),
    /// Answer a suspend by hand.
    Continue {
        /// `$T(id_index)`.
        tindex: u32,
        /// `$T(id_label)`.
        tlabel: u32,
        /// SIP code (default 200).
        code: u16,
        /// Reason phrase (default: the code's usual phrase).
        reason: Option<String>,
    },
    /// Answer every suspend automatically with this code and reason.
    Auto {
        /// SIP code.
        code: u16,
        /// Reason phrase (default: the code's usual phrase).
        reason: Option<String>,
    },
    /// Stop answering automatically.
    AutoOff,
    /// Show the last message received.
    Last,
    /// Show counters.
    Stats,
    /// Show help.
    Help,
    /// Leave.
    Quit,
    /// An empty line: do nothing.
    Nothing,
}

/// A command with bad arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The help text.
pub const HELP: &str = "\
commands:
  send TEXT                         send TEXT as it is (the only way raw text goes out)
  json JSON                         check that JSON is valid, then send it compact
  continue TINDEX TLABEL [CODE [REASON]]
                                    answer a suspend: {\"tindex\":..,\"tlabel\":..,\"code\":..,\"reason\":..}
  auto CODE [REASON] | auto off     answer every suspend event automatically
  last                              show the last message received, pretty
  stats                             messages sent and received, answers sent
  help                              this text
  quit                              leave (Ctrl-D too; Ctrl-C clears the line)";

/// Parse one line.
///
/// # Errors
///
/// A [`UsageError`] saying what the command needs.
pub fn parse(line: &str) -> Result<Command, UsageError> {
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
        "auto" if rest == "off" => Ok(Command::AutoOff),
        "auto" => {
            let (code, reason) = rest
                .split_once(char::is_whitespace)
                .map_or((rest, None), |(c, r)| (c, Some(r.trim().to_owned())));
            let code: u64 = code
                .parse()
                .map_err(|_| UsageError("usage: auto CODE [REASON] | auto off".into()))?;
            Ok(Command::Auto {
                code: sip_code(code)?,
                reason: reason.filter(|r| !r.is_empty()),
            })
        }
        "last" => Ok(Command::Last),
        "stats" => Ok(Command::Stats),
        "help" | "?" => Ok(Command::Help),
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
    const USAGE: &str = "usage: continue TINDEX TLABEL [CODE [REASON]]";
    let mut args = rest
        .splitn(4, char::is_whitespace)
        .filter(|a| !a.is_empty());
    let mut num = |what: &str| -> Result<Option<u64>, UsageError> {
        args.next()
            .map(|a| {
                a.parse()
                    .map_err(|_| UsageError(format!("{what} must be a number, got {a:?}")))
            })
            .transpose()
    };
    let tindex = num("TINDEX")?.ok_or_else(|| UsageError(USAGE.into()))?;
    let tlabel = num("TLABEL")?.ok_or_else(|| UsageError(USAGE.into()))?;
    let code = num("CODE")?.unwrap_or(200);
    let reason = args
        .next()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(String::from);
    Ok(Command::Continue {
        tindex: id(tindex, "TINDEX")?,
        tlabel: id(tlabel, "TLABEL")?,
        code: sip_code(code)?,
        reason,
    })
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
        assert_eq!(
            parse("continue 12 34").unwrap(),
            Command::Continue {
                tindex: 12,
                tlabel: 34,
                code: 200,
                reason: None
            }
        );
        assert_eq!(
            parse("continue 12 34 486 Busy Here").unwrap(),
            Command::Continue {
                tindex: 12,
                tlabel: 34,
                code: 486,
                reason: Some("Busy Here".into())
            }
        );
        assert_eq!(
            parse("auto 486").unwrap(),
            Command::Auto {
                code: 486,
                reason: None
            }
        );
        assert_eq!(
            parse("auto 302 Moved").unwrap(),
            Command::Auto {
                code: 302,
                reason: Some("Moved".into())
            }
        );
        assert_eq!(parse("auto off").unwrap(), Command::AutoOff);
        assert_eq!(parse("last").unwrap(), Command::Last);
        assert_eq!(parse("quit").unwrap(), Command::Quit);
        assert_eq!(parse("   ").unwrap(), Command::Nothing);
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
            e("continue 1"),
            "usage: continue TINDEX TLABEL [CODE [REASON]]"
        );
        assert_eq!(e("continue x 1"), "TINDEX must be a number, got \"x\"");
        assert_eq!(
            e("continue 1 2 99"),
            "CODE must be a final SIP code (200-699), got 99"
        );
        assert_eq!(
            e("continue 4294967296 1"),
            "TINDEX must fit in 32 bits, got 4294967296"
        );
        assert_eq!(e("auto"), "usage: auto CODE [REASON] | auto off");
    }
}
