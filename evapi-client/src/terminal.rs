//! The interactive prompt.
//!
//! Readline blocks, so it runs on its own thread; the network runs on a tokio runtime
//! on another. One printing thread is the only writer of output lines: the network side
//! queues a command's output there before it answers the command, and what arrives
//! unasked (messages, automatic answers, connection changes) in the order it happens,
//! so a command's output and the notices it causes appear in the order they happened,
//! and no line is ever written into the middle of another. After each command the
//! terminal thread waits until the printer has written everything queued before it
//! draws the next prompt. On a terminal the printer goes through rustyline's external
//! printer, which prints above the prompt and redraws the half-typed line. The network
//! side answers every line at once, connected or not, so quit and Ctrl-D never wait on
//! a reconnection, and a line typed while disconnected is refused, never queued.
//!
//! With stdin not a terminal (a pipe, a file), there is no prompt: commands are read,
//! their results and the messages that arrive are printed as lines, and the exit code
//! says whether every command succeeded.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use colored_json::ColorMode;
use evapi_client::client::Backoff;
use evapi_client::repl::{self as cmd, Command, Which, COMMANDS, HELP};
use evapi_client::respond::reason_phrase;
use evapi_client::{Client, ClientConfig, SuspendMatcher};
use evapi_proto::{IdFields, TransactionId};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Config, Editor, ExternalPrinter as _, Helper};
use tokio::sync::{mpsc, oneshot};

/// Lines typed but not yet handled by the network side.
const LINE_QUEUE: usize = 64;
/// Most history entries kept.
const HISTORY_MAX: usize = 1000;

/// Completion: command names, and `#N` of pending suspends after `continue `.
struct Commands {
    /// Numbers of the suspends still pending, kept by the network side.
    pending: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Completer for Commands {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let word = &line[..pos];
        if let Some(partial) = word.strip_prefix("continue #") {
            let numbers = self.pending.lock().map(|p| p.clone()).unwrap_or_default();
            let numbers: Vec<String> = numbers.iter().map(u64::to_string).collect();
            return Ok(("continue #".len(), candidates(&numbers, partial, "#")));
        }
        if let Some((start, options)) = option_words(word) {
            return Ok((start, candidates(options, &word[start..], "")));
        }
        if word.contains(char::is_whitespace) {
            return Ok((pos, Vec::new()));
        }
        Ok((0, candidates(&COMMANDS, word, "")))
    }
}

/// The `words` that start with `partial`, shown with `shown_prefix`, each completed
/// with a space after it.
fn candidates(words: &[impl AsRef<str>], partial: &str, shown_prefix: &str) -> Vec<Pair> {
    words
        .iter()
        .map(AsRef::as_ref)
        .filter(|w| w.starts_with(partial))
        .map(|w| Pair {
            display: format!("{shown_prefix}{w}"),
            replacement: format!("{w} "),
        })
        .collect()
}

impl Hinter for Commands {
    type Hint = String;
}
impl Highlighter for Commands {}
impl Validator for Commands {}
impl Helper for Commands {}

/// The fixed words a command takes after its name, for completion: where the word
/// being typed starts in `line`, and the candidates.
fn option_words(line: &str) -> Option<(usize, &'static [&'static str])> {
    let (command, _) = line.split_once(' ')?;
    let options: &'static [&'static str] = match command {
        "auto" => &["--pending", "off"],
        "timestamps" => &["on", "off"],
        "filter" => &["off"],
        "help" => &COMMANDS,
        _ => return None,
    };
    let start = line.rfind(' ').map_or(0, |i| i + 1);
    Some((start, options))
}

fn history_path() -> Option<std::path::PathBuf> {
    dirs::data_dir().map(|d| d.join("evapi-client").join("history"))
}

/// A typed line on its way to the network side, and where its output goes back.
struct Request {
    line: String,
    reply: oneshot::Sender<Reply>,
}

/// What a line produced. The network side queues `lines` on the printer before it
/// answers, so they come out in order with the notices around them, none lost.
#[derive(Default)]
struct Reply {
    lines: Vec<String>,
    failed: bool,
    quit: bool,
}

/// What the network side learns from its own tasks, each tagged with the generation
/// of the connection it is about: after `connect ADDR`, news of the old one is ignored.
enum Net {
    /// A message from the server.
    Msg(u64, Bytes),
    /// The connection is gone (why).
    Lost(u64, String),
    /// A new connection (after a loss, or `connect`).
    Reconnected(u64, Box<Client>),
}

/// Run the REPL until quit, Ctrl-D, or a fatal error. On a terminal it is interactive;
/// with stdin from a pipe or file it reads commands, prints their results and the
/// messages that arrive, and exits 1 if a command failed (batch mode, like redis-cli).
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
    let interactive = std::io::stdin().is_terminal();
    let color = !no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let client = runtime
        .block_on(Client::connect(addr, config))
        .with_context(|| "the REPL needs a server to talk to")?;
    let connected = Arc::new(AtomicBool::new(true));
    let pending_numbers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (requests_tx, requests_rx) = mpsc::channel::<Request>(LINE_QUEUE);

    let mut editor = None;
    let printer: Box<dyn FnMut(String) + Send> = if interactive {
        let rl_config = Config::builder()
            .max_history_size(HISTORY_MAX)
            .context("history size")?
            .auto_add_history(false)
            .build();
        let mut ed: Editor<Commands, rustyline::history::DefaultHistory> =
            Editor::with_config(rl_config).context("cannot set up the terminal")?;
        ed.set_helper(Some(Commands {
            pending: Arc::clone(&pending_numbers),
        }));
        if let Some(path) = history_path() {
            let _ = ed.load_history(&path);
        }
        let mut printer = ed
            .create_external_printer()
            .context("cannot print above the prompt")?;
        editor = Some(ed);
        // Every line ends with its newline: rustyline adds one only while the prompt
        // is up, and a line printed between prompts would run into the next one.
        Box::new(move |text: String| {
            let _ = printer.print(text + "\n");
        })
    } else {
        Box::new(|text: String| println!("{text}"))
    };
    let (printer, print_queue) = printing_thread(printer);
    let session = Session {
        addr: addr.to_owned(),
        config: config.clone(),
        matcher,
        color,
        printer: print_queue.clone(),
        auto: None,
        last: None,
        stats: Arc::new(Stats::default()),
        connected: Arc::clone(&connected),
        pending: std::collections::VecDeque::new(),
        next_number: 1,
        pending_numbers,
        filter: None,
        timestamps: false,
    };
    let _net = runtime.spawn(session.run(client, requests_rx));

    let status = match editor {
        Some(mut editor) => {
            printer.line(format!(
                "connected to {addr} ({}); type help for commands",
                config.framing
            ));
            let status = interactive_loop(&mut editor, &requests_tx, &printer, &connected);
            if let Some(path) = history_path() {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                let _ = editor.save_history(&path);
            }
            status
        }
        None => batch_loop(&requests_tx, &printer),
    };
    drop(requests_tx);
    // Events taken over NATS and not answered go back to the other apps.
    runtime.block_on(config.settle(EXIT_WAIT));
    // Leave at once, whatever the network side is doing (e.g. reconnecting).
    runtime.shutdown_timeout(EXIT_WAIT);
    status
}

/// Lines waiting for the printing thread; past this, unasked output is dropped (and the
/// loss said once the queue has room again) rather than stalling the network side. A
/// command's own output is never dropped, and never waited for either: the printer may
/// be held by rustyline until the next prompt, which comes only after the reply.
const PRINT_QUEUE: usize = 4096;

/// Longest wait for the printer before the next prompt (see [`PrintHandle::wait_written`]).
const WRITTEN_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// What the printing thread is given: a line, or a marker it acknowledges once every
/// line queued before it has been written.
enum Print {
    Line(String),
    Written(std::sync::mpsc::SyncSender<()>),
}

/// The terminal thread's end of the printer.
struct PrintHandle(PrintQueue);

impl PrintHandle {
    /// Queue a line (the terminal thread's own, e.g. the greeting).
    fn line(&self, text: String) {
        self.0.send(text);
    }

    /// Wait until every line queued so far is written: the next prompt comes after a
    /// command's output and after the notices queued before that output. At most
    /// [`WRITTEN_WAIT`]: rustyline's external printer takes a line only while a prompt
    /// is up when it was handed one during the prompt, so a printer caught that way
    /// resumes only at the next prompt (the order of the lines holds either way; they
    /// then appear above that prompt).
    fn wait_written(&self) {
        let (done, written) = std::sync::mpsc::sync_channel(1);
        if self.0.tx.send(Print::Written(done)).is_ok() {
            let _ = written.recv_timeout(WRITTEN_WAIT);
        }
    }

    /// Wait until every line queued so far is written, however long it takes: in batch
    /// mode (no rustyline), so every result is out before the next command and before
    /// the exit.
    fn wait_all_written(&self) {
        let (done, written) = std::sync::mpsc::sync_channel(1);
        if self.0.tx.send(Print::Written(done)).is_ok() {
            let _ = written.recv();
        }
    }
}

/// The network side's end of the printer. The channel is unbounded, and bounded by
/// use: unasked lines enter only while fewer than [`PRINT_QUEUE`] lines wait, and asked
/// lines are the output of one command at a time (the terminal waits for each reply).
#[derive(Clone)]
struct PrintQueue {
    tx: mpsc::UnboundedSender<Print>,
    /// Lines queued and not yet written (the printer counts them down).
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    /// Unasked lines dropped since the queue was last full.
    dropped: u64,
}

impl PrintQueue {
    /// Queue a line that arrived unasked; never waits (the queue full, it is dropped and
    /// the loss said later).
    fn unasked(&mut self, text: String) {
        let full = |q: &Self| q.waiting.load(Ordering::Acquire) >= PRINT_QUEUE;
        if self.dropped > 0 && !full(self) {
            let notice = format!(
                "!! {} lines of output dropped (terminal too slow)",
                self.dropped
            );
            self.dropped = 0;
            self.send(notice);
        }
        if full(self) {
            self.dropped += 1;
        } else {
            self.send(text);
        }
    }

    /// Queue a command's output: never dropped, never waited for.
    fn asked(&self, lines: Vec<String>) {
        for line in lines {
            self.send(line);
        }
    }

    fn send(&self, line: String) {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Print::Line(line)).is_err() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Start the one thread that writes output lines with `print`.
fn printing_thread(mut print: Box<dyn FnMut(String) + Send>) -> (PrintHandle, PrintQueue) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Print>();
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&waiting);
    std::thread::spawn(move || {
        while let Some(item) = rx.blocking_recv() {
            match item {
                Print::Line(text) => {
                    print(text);
                    counted.fetch_sub(1, Ordering::AcqRel);
                }
                Print::Written(done) => {
                    let _ = done.send(());
                }
            }
        }
    });
    let queue = PrintQueue {
        tx,
        waiting,
        dropped: 0,
    };
    (PrintHandle(queue.clone()), queue)
}

/// How long leaving waits for the network side to finish what it is doing.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Hand `line` to the network side and wait for its output (the network side answers
/// every line at once, connected or not).
fn execute(requests: &mpsc::Sender<Request>, line: String) -> Option<Reply> {
    let (reply, rx) = oneshot::channel();
    requests.blocking_send(Request { line, reply }).ok()?;
    rx.blocking_recv().ok()
}

fn interactive_loop(
    editor: &mut Editor<Commands, rustyline::history::DefaultHistory>,
    requests: &mpsc::Sender<Request>,
    printer: &PrintHandle,
    connected: &AtomicBool,
) -> anyhow::Result<ExitCode> {
    printer.wait_written();
    loop {
        let prompt = if connected.load(Ordering::Acquire) {
            "evapi> "
        } else {
            "evapi (disconnected)> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let Some(reply) = execute(requests, line) else {
                    return Ok(ExitCode::SUCCESS);
                };
                printer.wait_written();
                if reply.quit {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            // Ctrl-C drops the line being typed.
            Err(ReadlineError::Interrupted) => {}
            // Ctrl-D leaves.
            Err(ReadlineError::Eof) => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e).context("cannot read the terminal"),
        }
    }
}

fn batch_loop(requests: &mpsc::Sender<Request>, printer: &PrintHandle) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for line in std::io::stdin().lines() {
        let line = line.context("cannot read stdin")?;
        let Some(reply) = execute(requests, line) else {
            break;
        };
        printer.wait_all_written();
        failed |= reply.failed;
        if reply.quit {
            break;
        }
    }
    printer.wait_all_written();
    Ok(if failed {
        ExitCode::from(crate::cmd::EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
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
    /// The printing thread: what arrives unasked (messages, automatic answers,
    /// connection changes) and each command's output, in the order they happen.
    printer: PrintQueue,
    auto: Option<(u16, String)>,
    last: Option<Bytes>,
    stats: Arc<Stats>,
    connected: Arc<AtomicBool>,
    /// Suspend events not answered yet, oldest first.
    pending: std::collections::VecDeque<Pending>,
    /// The number the next pending suspend gets.
    next_number: u64,
    /// The pending numbers, for completion on the terminal thread.
    pending_numbers: Arc<std::sync::Mutex<Vec<u64>>>,
    /// Show only incoming messages containing this (`filter TEXT`).
    filter: Option<String>,
    /// Prefix incoming messages with their arrival time.
    timestamps: bool,
}

/// `connect`'s address with the default port, as `--addr` takes it.
fn evapi_cli_addr(text: &str) -> String {
    evapi_cli::addr::with_port(text, evapi_cli::addr::EVAPI_PORT)
}

/// Most suspends kept in the pending list; past this the oldest is forgotten (said once
/// per drop), so a flood of events cannot grow the REPL without bound.
const PENDING_MAX: usize = 10_000;

/// A suspend event waiting for an answer typed by hand.
struct Pending {
    number: u64,
    id: TransactionId,
    fields: IdFields,
    since: std::time::Instant,
    summary: String,
}

/// Messages read ahead of the session; past this the reader waits (TCP pushes back).
const NET_QUEUE: usize = 1024;

/// Read messages into `net` until the connection ends, then say why.
async fn read_messages(
    mut reader: evapi_client::client::Reader,
    net: mpsc::Sender<Net>,
    generation: u64,
) {
    loop {
        let event = match reader.recv().await {
            Ok(Some(msg)) => Net::Msg(generation, msg),
            Ok(None) => Net::Lost(generation, "closed by the server".to_owned()),
            Err(e) => Net::Lost(generation, format!("{e:#}")),
        };
        let lost = matches!(event, Net::Lost(..));
        if net.send(event).await.is_err() || lost {
            return;
        }
    }
}

impl Session {
    fn say(&mut self, text: String) {
        self.printer.unasked(text);
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

    async fn run(mut self, client: Client, mut requests: mpsc::Receiver<Request>) {
        let (net_tx, mut net) = mpsc::channel::<Net>(NET_QUEUE);
        let (reader, writer) = client.split();
        let mut writer = Some(writer);
        let mut generation = 0u64;
        tokio::spawn(read_messages(reader, net_tx.clone(), generation));
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(Request { line, reply }) = request else { return };
                    let parsed = cmd::parse(&line);
                    if let Ok(Command::Connect(addr)) = parsed {
                        // Another server: the old connection's news is stale from now on.
                        generation += 1;
                        writer = None;
                        self.connected.store(false, Ordering::Release);
                        let dropped = self.pending.len();
                        self.pending.clear();
                        self.publish_pending();
                        self.addr = evapi_cli_addr(&addr);
                        self.reconnect(&net_tx, generation);
                        let mut out = Reply::default();
                        out.lines.push(format!("-- connecting to {}", self.addr));
                        if dropped > 0 {
                            out.lines.push(format!("-- {dropped} pending suspends of the old server dropped"));
                        }
                        self.printer.asked(std::mem::take(&mut out.lines));
                        let _ = reply.send(out);
                        continue;
                    }
                    let mut out = self.line(parsed, &mut writer).await;
                    let quit = out.quit;
                    self.printer.asked(std::mem::take(&mut out.lines));
                    let _ = reply.send(out);
                    if quit {
                        return;
                    }
                }
                event = net.recv() => match event {
                    Some(Net::Msg(g, _) | Net::Lost(g, _)) if g != generation => {}
                    Some(Net::Msg(_, msg)) => {
                        self.stats.received.fetch_add(1, Ordering::Relaxed);
                        if self.filter.as_ref().is_none_or(|f| evapi_client::script::contains(&msg, f.as_bytes())) {
                            let shown = self.render(&msg);
                            let stamp = if self.timestamps {
                                format!("{} ", humantime::format_rfc3339_millis(std::time::SystemTime::now()))
                            } else {
                                String::new()
                            };
                            self.say(format!("{stamp}<< {shown}"));
                        }
                        if let Some(answer) = self.suspend(&msg) {
                            if let Some(w) = writer.as_mut() {
                                if w.send(&answer).await.is_ok() {
                                    self.stats.answered.fetch_add(1, Ordering::Relaxed);
                                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                                    self.say(format!(">> {}", String::from_utf8_lossy(&answer)));
                                }
                            }
                        }
                        self.last = Some(msg);
                    }
                    Some(Net::Lost(_, why)) => {
                        writer = None;
                        self.connected.store(false, Ordering::Release);
                        self.say(format!(
                            "!! connection to {} lost: {why}; reconnecting (lines typed meanwhile are not sent)",
                            self.addr
                        ));
                        self.reconnect(&net_tx, generation);
                    }
                    // A connection made for an older generation is simply dropped.
                    Some(Net::Reconnected(g, _)) if g != generation => {}
                    Some(Net::Reconnected(_, client)) => {
                        let (reader, w) = (*client).split();
                        writer = Some(w);
                        tokio::spawn(read_messages(reader, net_tx.clone(), generation));
                        self.connected.store(true, Ordering::Release);
                        self.say(format!("-- connected to {}", self.addr));
                    }
                    None => return,
                },
            }
        }
    }

    /// Connect to `self.addr` in the background, retrying until it works; the result
    /// comes back as a [`Net`] event of `generation`.
    fn reconnect(&self, net: &mpsc::Sender<Net>, generation: u64) {
        let (addr, config, tx) = (self.addr.clone(), self.config.clone(), net.clone());
        tokio::spawn(async move {
            let backoff = Backoff {
                attempts: None,
                ..Backoff::default()
            };
            let event = match Client::connect_with_retry(&addr, &config, &backoff).await {
                Ok(c) => Net::Reconnected(generation, Box::new(c)),
                Err(e) => Net::Lost(generation, format!("{e:#}")),
            };
            let _ = tx.send(event).await;
        });
    }

    /// Run one typed line; its output comes back to the terminal thread.
    async fn line(
        &mut self,
        parsed: Result<Command, cmd::UsageError>,
        writer: &mut Option<evapi_client::client::Writer>,
    ) -> Reply {
        let mut out = Reply::default();
        let command = match parsed {
            Ok(Command::Quit) => {
                out.quit = true;
                return out;
            }
            Ok(c) => c,
            Err(e) => {
                out.lines.push(format!("!! {e}"));
                out.failed = true;
                return out;
            }
        };
        let Some(w) = writer.as_mut() else {
            if sends(&command) {
                out.lines.push(format!(
                    "!! not connected (reconnecting to {}): not sent",
                    self.addr
                ));
                out.failed = true;
            } else {
                let _ = self.command(command, &mut out.lines, &mut out.failed);
            }
            return out;
        };
        for payload in self.command(command, &mut out.lines, &mut out.failed) {
            match w.send(&payload).await {
                Ok(()) => {
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    out.lines.push(format!("!! send failed: {e:#}"));
                    out.failed = true;
                    break;
                }
            }
        }
        out
    }

    /// Handle a command, its output into `out` (`failed` set on a refusal); returns
    /// the payloads to send.
    fn command(
        &mut self,
        command: Command,
        out: &mut Vec<String>,
        failed: &mut bool,
    ) -> Vec<Vec<u8>> {
        match command {
            Command::Send(text) => vec![text.into_bytes()],
            Command::Json(v) => vec![v.to_string().into_bytes()],
            Command::Continue {
                which,
                code,
                reason,
            } => {
                let reason = reason.unwrap_or_else(|| reason_phrase(code).to_owned());
                let Some((id, fields)) = self.take_pending(which, out) else {
                    *failed = true;
                    return Vec::new();
                };
                let answer = fields.answer(id, code, &reason).to_string();
                out.push(format!(">> {answer}"));
                vec![answer.into_bytes()]
            }
            Command::Pending => {
                if self.pending.is_empty() {
                    out.push("-- no suspend is waiting for an answer".to_owned());
                }
                for p in &self.pending {
                    out.push(format!(
                        "#{:<4} {:>6.1}s  {} {}  {}",
                        p.number,
                        p.since.elapsed().as_secs_f64(),
                        p.fields.index,
                        p.id,
                        p.summary
                    ));
                }
                Vec::new()
            }
            Command::Auto {
                code,
                reason,
                pending,
            } => {
                let reason = reason.unwrap_or_else(|| reason_phrase(code).to_owned());
                out.push(format!("-- answering every suspend with {code} {reason}"));
                let mut answers = Vec::new();
                if pending {
                    for p in self.pending.drain(..) {
                        answers.push(
                            p.fields
                                .answer(p.id, code, &reason)
                                .to_string()
                                .into_bytes(),
                        );
                    }
                    out.push(format!("-- and the {} pending", answers.len()));
                    self.publish_pending();
                }
                self.auto = Some((code, reason));
                answers
            }
            Command::AutoOff => {
                self.auto = None;
                out.push("-- automatic answers off".to_owned());
                Vec::new()
            }
            Command::Last => {
                let text = match &self.last {
                    Some(m) => self.render(m),
                    None => "-- nothing received yet".to_owned(),
                };
                out.push(text);
                Vec::new()
            }
            Command::Stats => {
                let s = &self.stats;
                out.push(format!(
                    "-- sent {}, received {}, answered automatically {}",
                    s.sent.load(Ordering::Relaxed),
                    s.received.load(Ordering::Relaxed),
                    s.answered.load(Ordering::Relaxed)
                ));
                Vec::new()
            }
            Command::Help(None) => {
                out.push(HELP.to_owned());
                Vec::new()
            }
            Command::Help(Some(name)) => {
                match cmd::help_on(&name) {
                    Some(text) => out.push(text),
                    None => {
                        out.push(format!("!! no command {name:?}; help lists them"));
                        *failed = true;
                    }
                }
                Vec::new()
            }
            Command::Filter(text) => {
                out.push(match &text {
                    Some(t) => format!("-- showing only messages that contain {t}"),
                    None => "-- showing every message".to_owned(),
                });
                self.filter = text;
                Vec::new()
            }
            Command::Timestamps(on) => {
                self.timestamps = on;
                out.push(format!("-- timestamps {}", if on { "on" } else { "off" }));
                Vec::new()
            }
            // Handled by the session loop, which owns the connection.
            Command::Connect(_) => Vec::new(),
            Command::Nothing | Command::Quit => Vec::new(),
        }
    }

    /// A suspend event: answered at once when `auto` is on (the answer is returned),
    /// otherwise added to the pending list.
    fn suspend(&mut self, msg: &[u8]) -> Option<Vec<u8>> {
        let s = match self.matcher.parse(msg) {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => {
                self.say(format!("!! a suspend with bad ids, not answerable: {e}"));
                return None;
            }
        };
        if let Some((code, reason)) = &self.auto {
            return Some(s.answer(*code, reason));
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
                self.say(format!(
                    "!! pending list full: #{} ({}) forgotten",
                    old.number, old.id
                ));
            }
        }
        self.pending.push_back(Pending {
            number,
            id,
            fields,
            since: std::time::Instant::now(),
            summary,
        });
        self.publish_pending();
        self.say(format!(
            "-- pending #{number}: continue CODE answers the oldest, continue #{number} CODE this one"
        ));
        None
    }

    /// The transaction a `continue` answers, taken off the pending list; `None` after
    /// saying why (nothing pending, no such number).
    fn take_pending(
        &mut self,
        which: Which,
        out: &mut Vec<String>,
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
                out.push("!! no suspend is waiting for an answer".to_owned());
                return None;
            }
            Which::Oldest => 0,
            Which::Number(n) => match self.pending.iter().position(|p| p.number == n) {
                Some(at) => at,
                None => {
                    out.push(format!("!! no pending suspend #{n} (see pending)"));
                    return None;
                }
            },
        };
        let p = self.pending.remove(at)?;
        self.publish_pending();
        Some((p.id, p.fields))
    }

    fn publish_pending(&self) {
        if let Ok(mut numbers) = self.pending_numbers.lock() {
            numbers.clear();
            numbers.extend(self.pending.iter().map(|p| p.number));
        }
    }
}

/// Characters of an event shown in the pending list.
const SUMMARY_LEN: usize = 60;

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

    #[test]
    fn options_complete_after_their_command() {
        assert_eq!(
            option_words("auto 486 --pe"),
            Some((9, &["--pending", "off"][..]))
        );
        assert_eq!(option_words("timestamps o").map(|(at, _)| at), Some(11));
        assert!(option_words("help c").is_some_and(|(_, words)| words.contains(&"continue")));
        assert_eq!(option_words("send x"), None);
        assert_eq!(
            option_words("auto"),
            None,
            "no space yet: the command itself"
        );
    }
}
