//! The interactive prompt.
//!
//! Readline blocks, so it runs on its own thread; the network runs on a tokio runtime
//! on another. Lines go to the async side through a bounded channel; everything the
//! async side shows (incoming messages, command output, errors) goes through rustyline's
//! external printer, which prints above the prompt and redraws the half-typed line.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use colored_json::ColorMode;
use evapi_client::client::Backoff;
use evapi_client::repl::{self as cmd, Command, COMMANDS, HELP};
use evapi_client::respond::reason_phrase;
use evapi_client::{Client, ClientConfig, SuspendMatcher};
use evapi_proto::{IdFields, TransactionId};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Config, Editor, ExternalPrinter, Helper};
use tokio::sync::mpsc;

/// Lines typed but not yet handled by the network side.
const LINE_QUEUE: usize = 64;
/// Most history entries kept.
const HISTORY_MAX: usize = 1000;

struct Commands;

impl Completer for Commands {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let word = &line[..pos];
        if word.contains(char::is_whitespace) {
            return Ok((pos, Vec::new()));
        }
        let matches = COMMANDS
            .iter()
            .filter(|c| c.starts_with(word))
            .map(|c| Pair {
                display: (*c).to_owned(),
                replacement: format!("{c} "),
            })
            .collect();
        Ok((0, matches))
    }
}

impl Hinter for Commands {
    type Hint = String;
}
impl Highlighter for Commands {}
impl Validator for Commands {}
impl Helper for Commands {}

fn history_path() -> Option<std::path::PathBuf> {
    dirs::data_dir().map(|d| d.join("evapi-client").join("history"))
}

/// Run the REPL until quit, Ctrl-D, or a fatal error.
///
/// # Errors
///
/// The terminal cannot be set up, or the first connection fails.
pub fn run(
    addr: &str,
    config: &ClientConfig,
    no_color: bool,
    matcher: SuspendMatcher,
) -> anyhow::Result<ExitCode> {
    let color = !no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let client = runtime
        .block_on(Client::connect(addr, config))
        .with_context(|| "the REPL needs a server to talk to")?;

    let rl_config = Config::builder()
        .max_history_size(HISTORY_MAX)
        .context("history size")?
        .auto_add_history(false)
        .build();
    let mut editor: Editor<Commands, rustyline::history::DefaultHistory> =
        Editor::with_config(rl_config).context("cannot set up the terminal")?;
    editor.set_helper(Some(Commands));
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let printer = editor
        .create_external_printer()
        .context("cannot print above the prompt")?;

    let (lines_tx, lines_rx) = mpsc::channel::<String>(LINE_QUEUE);
    let session = Session {
        addr: addr.to_owned(),
        config: config.clone(),
        matcher,
        color,
        printer: Box::new(printer),
        auto: None,
        last: None,
        stats: Arc::new(Stats::default()),
    };
    let net = runtime.spawn(session.run(client, lines_rx));

    println!(
        "connected to {addr} ({}); type help for commands",
        config.framing
    );
    loop {
        match editor.readline("evapi> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let quit = matches!(cmd::parse(&line), Ok(Command::Quit));
                if lines_tx.blocking_send(line).is_err() || quit {
                    break;
                }
            }
            // Ctrl-C drops the line being typed.
            Err(ReadlineError::Interrupted) => {}
            // Ctrl-D leaves.
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("cannot read the terminal"),
        }
    }
    drop(lines_tx);
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(path);
    }
    let _ = runtime.block_on(net);
    runtime.shutdown_background();
    Ok(ExitCode::SUCCESS)
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    received: AtomicU64,
    answered: AtomicU64,
}

struct Session {
    addr: String,
    config: ClientConfig,
    matcher: SuspendMatcher,
    color: bool,
    printer: Box<dyn ExternalPrinter + Send>,
    auto: Option<(u16, String)>,
    last: Option<Bytes>,
    stats: Arc<Stats>,
}

impl Session {
    fn say(&mut self, text: String) {
        let _ = self.printer.print(text);
    }

    fn render(&self, msg: &[u8]) -> String {
        match serde_json::from_slice::<serde_json::Value>(msg) {
            Ok(v) => {
                let mode = if self.color {
                    ColorMode::On
                } else {
                    ColorMode::Off
                };
                colored_json::to_colored_json(&v, mode)
                    .or_else(|_| serde_json::to_string_pretty(&v))
                    .unwrap_or_else(|_| v.to_string())
            }
            Err(_) => evapi_client::script::show(msg),
        }
    }

    async fn run(mut self, client: Client, mut lines: mpsc::Receiver<String>) {
        let (mut reader, mut writer) = client.split();
        loop {
            tokio::select! {
                line = lines.recv() => {
                    let Some(line) = line else { return };
                    match cmd::parse(&line) {
                        Ok(Command::Quit) => return,
                        Ok(command) => {
                            if let Some(payload) = self.command(command) {
                                match writer.send(&payload).await {
                                    Ok(()) => { self.stats.sent.fetch_add(1, Ordering::Relaxed); }
                                    Err(e) if e.is_disconnect() => {
                                        self.say(format!("!! send failed: {e:#}"));
                                    }
                                    Err(e) => self.say(format!("!! {e}")),
                                }
                            }
                        }
                        Err(e) => self.say(format!("!! {e}")),
                    }
                }
                msg = reader.recv() => match msg {
                    Ok(Some(msg)) => {
                        self.stats.received.fetch_add(1, Ordering::Relaxed);
                        let shown = self.render(&msg);
                        self.say(format!("<< {shown}"));
                        if let Some(answer) = self.auto_answer(&msg) {
                            if writer.send(&answer).await.is_ok() {
                                self.stats.answered.fetch_add(1, Ordering::Relaxed);
                                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                                self.say(format!(">> {}", String::from_utf8_lossy(&answer)));
                            }
                        }
                        self.last = Some(msg);
                    }
                    Ok(None) | Err(_) => {
                        let why = match msg {
                            Err(e) => format!("{e:#}"),
                            _ => "closed by the server".to_owned(),
                        };
                        self.say(format!("!! connection to {} lost: {why}; reconnecting", self.addr));
                        match Client::connect_with_retry(&self.addr, &self.config, &Backoff { attempts: None, ..Backoff::default() }).await {
                            Ok(c) => {
                                (reader, writer) = c.split();
                                self.say(format!("!! reconnected to {}", self.addr));
                            }
                            Err(e) => {
                                self.say(format!("!! {e:#}"));
                                return;
                            }
                        }
                    }
                },
            }
        }
    }

    /// Handle a command; returns a payload to send, if any.
    fn command(&mut self, command: Command) -> Option<Vec<u8>> {
        match command {
            Command::Send(text) => Some(text.into_bytes()),
            Command::Json(v) => Some(v.to_string().into_bytes()),
            Command::Continue {
                tindex,
                tlabel,
                code,
                reason,
            } => {
                let reason = reason.unwrap_or_else(|| reason_phrase(code).to_owned());
                let id = TransactionId {
                    index: tindex,
                    label: tlabel,
                };
                let answer = IdFields::new("tindex", "tlabel")
                    .answer(id, code, &reason)
                    .to_string();
                self.say(format!(">> {answer}"));
                Some(answer.into_bytes())
            }
            Command::Auto { code, reason } => {
                let reason = reason.unwrap_or_else(|| reason_phrase(code).to_owned());
                self.say(format!("-- answering every suspend with {code} {reason}"));
                self.auto = Some((code, reason));
                None
            }
            Command::AutoOff => {
                self.auto = None;
                self.say("-- automatic answers off".to_owned());
                None
            }
            Command::Last => {
                let text = match &self.last {
                    Some(m) => self.render(m),
                    None => "-- nothing received yet".to_owned(),
                };
                self.say(text);
                None
            }
            Command::Stats => {
                let s = &self.stats;
                self.say(format!(
                    "-- sent {}, received {}, answered automatically {}",
                    s.sent.load(Ordering::Relaxed),
                    s.received.load(Ordering::Relaxed),
                    s.answered.load(Ordering::Relaxed)
                ));
                None
            }
            Command::Help => {
                self.say(HELP.to_owned());
                None
            }
            Command::Nothing | Command::Quit => None,
        }
    }

    fn auto_answer(&mut self, msg: &[u8]) -> Option<Vec<u8>> {
        let (code, reason) = self.auto.as_ref()?;
        match self.matcher.parse(msg) {
            Ok(Some(s)) => Some(s.answer(*code, reason)),
            Ok(None) => None,
            Err(e) => {
                self.say(format!("!! not answered: {e}"));
                None
            }
        }
    }
}
