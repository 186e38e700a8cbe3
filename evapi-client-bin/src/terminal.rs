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

use std::borrow::Cow;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::repl::{self, self as cmd, Command, COMMANDS};
use anyhow::Context as _;
use bytes::Bytes;
use colored_json::ColorMode;
use evapi_client::Backoff;
use evapi_client::{Client, ClientConfig, SuspendMatcher};
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
    /// Whether the connection is up, kept by the network side: the prompt shows it
    /// even while a line is being typed (see [`Commands::highlight_prompt`]).
    connected: Arc<AtomicBool>,
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
/// The prompt for a connection state.
fn prompt(connected: bool) -> &'static str {
    if connected {
        "evapi> "
    } else {
        "evapi (disconnected)> "
    }
}

/// `want` in exactly `width` columns (rustyline places the cursor by the prompt the
/// line was started with): padded when shorter; when longer, the short form of a
/// lost connection (`evapi! `), the line above saying what happened.
fn fit_prompt(want: &str, width: usize) -> String {
    if want.len() <= width {
        format!("{want:width$}")
    } else {
        let short = "evapi! ";
        format!("{short:width$}")
    }
}

impl Highlighter for Commands {
    /// Called at every redraw, including after a notice printed above the prompt: the
    /// prompt follows the connection as it changes, not only after Enter.
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        shown: &'p str,
        default: bool,
    ) -> Cow<'b, str> {
        // Not ours (Ctrl-R's "(reverse-i-search)" prompt): as it is.
        if !default {
            return Cow::Borrowed(shown);
        }
        let now = prompt(self.connected.load(Ordering::Acquire));
        if now == shown {
            Cow::Borrowed(shown)
        } else {
            Cow::Owned(fit_prompt(now, shown.chars().count()))
        }
    }
}
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

/// What a line produced. The network side queues its lines on the printer before it
/// answers, so they come out in order with the notices around them, none lost.
#[derive(Default)]
struct Reply {
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
pub(crate) fn run(
    addr: &str,
    config: &ClientConfig,
    no_color: bool,
    matcher: SuspendMatcher,
    print_queue_bytes: usize,
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
            connected: Arc::clone(&connected),
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
    let (printer, print_queue) = printing_thread(printer, print_queue_bytes);
    let network = Network {
        session: repl::Session::new(addr, matcher),
        config: config.clone(),
        color,
        printer: print_queue.clone(),
        connected: Arc::clone(&connected),
        pending_numbers,
    };
    let _net = runtime.spawn(network.run(client, requests_rx));

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

/// Default `repl --print-queue-bytes`: with lines of up to a 1 MiB frame, the 4,096-line
/// bound alone let a stalled terminal's queue reach gigabytes.
pub(crate) const DEFAULT_PRINT_QUEUE_BYTES: usize = 16 * 1024 * 1024;

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
/// use: unasked lines enter only while fewer than [`PRINT_QUEUE`] lines and fewer than
/// `max_bytes` bytes wait, and asked lines are the output of one command at a time (the
/// terminal waits for each reply).
#[derive(Clone)]
struct PrintQueue {
    tx: mpsc::UnboundedSender<Print>,
    /// Lines queued and not yet written (the printer counts them down).
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    /// Their bytes.
    waiting_bytes: Arc<std::sync::atomic::AtomicUsize>,
    /// `repl --print-queue-bytes`.
    max_bytes: usize,
    /// Unasked lines dropped since the queue was last full.
    dropped: u64,
}

impl PrintQueue {
    /// Queue a line that arrived unasked; never waits (the queue full, it is dropped and
    /// the loss said later).
    fn unasked(&mut self, text: String) {
        let full = |q: &Self| {
            q.waiting.load(Ordering::Acquire) >= PRINT_QUEUE
                || q.waiting_bytes.load(Ordering::Acquire) + text.len() > q.max_bytes
        };
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
        let len = line.len();
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.waiting_bytes.fetch_add(len, Ordering::AcqRel);
        if self.tx.send(Print::Line(line)).is_err() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.waiting_bytes.fetch_sub(len, Ordering::AcqRel);
        }
    }
}

/// Start the one thread that writes output lines with `print`.
fn printing_thread(
    mut print: Box<dyn FnMut(String) + Send>,
    max_bytes: usize,
) -> (PrintHandle, PrintQueue) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Print>();
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let waiting_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&waiting);
    let counted_bytes = Arc::clone(&waiting_bytes);
    std::thread::spawn(move || {
        while let Some(item) = rx.blocking_recv() {
            match item {
                Print::Line(text) => {
                    let len = text.len();
                    print(text);
                    counted.fetch_sub(1, Ordering::AcqRel);
                    counted_bytes.fetch_sub(len, Ordering::AcqRel);
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
        waiting_bytes,
        max_bytes,
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
        match editor.readline(prompt(connected.load(Ordering::Acquire))) {
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
        ExitCode::from(evapi_cli::exit::FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The network side: the connection, and the REPL's state ([`repl::Session`]) whose
/// outputs it carries out: lines to the printer, frames to the server.
struct Network {
    session: repl::Session,
    config: ClientConfig,
    color: bool,
    /// The printing thread: what arrives unasked (messages, automatic answers,
    /// connection changes) and each command's output, in the order they happen.
    printer: PrintQueue,
    /// Whether the connection is up, for the prompt.
    connected: Arc<AtomicBool>,
    /// The pending numbers, for completion on the terminal thread.
    pending_numbers: Arc<std::sync::Mutex<Vec<u64>>>,
}

/// `connect`'s address with the default port, as `--addr` takes it.
fn evapi_cli_addr(text: &str) -> String {
    evapi_cli::addr::with_port(text, evapi_cli::addr::EVAPI_PORT)
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

impl Network {
    fn render(&self, line: repl::Line) -> String {
        match line {
            repl::Line::Message { prefix, bytes } => {
                let shown = match serde_json::from_slice::<serde_json::Value>(&bytes) {
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
                    Err(_) => crate::script::show(&bytes),
                };
                // Colours are ours; C1, DEL and bidi controls in a string are the peer's.
                format!("{prefix}{}", evapi_proto::text::json_for_terminal(&shown))
            }
            repl::Line::Text(text) => evapi_proto::text::for_terminal(&text).into_owned(),
        }
    }

    /// Carry out `out`: send its frames (while connected), then hand its lines to the
    /// printer, asked (a command's output) or not. Returns whether it failed and
    /// whether the user asked to leave.
    async fn carry_out(
        &mut self,
        mut out: repl::Output,
        writer: &mut Option<evapi_client::client::Writer>,
        automatic: bool,
        asked: bool,
    ) -> (bool, bool) {
        let mut failed = out.failed;
        if let Some(w) = writer.as_mut() {
            for frame in std::mem::take(&mut out.send) {
                match w.send(&frame).await {
                    Ok(()) => self.session.sent(automatic),
                    Err(e) => {
                        out.lines
                            .push(repl::Line::Text(format!("!! send failed: {e:#}")));
                        failed = true;
                        break;
                    }
                }
            }
        }
        self.connected
            .store(self.session.is_connected(), Ordering::Release);
        if let Ok(mut numbers) = self.pending_numbers.lock() {
            *numbers = self.session.pending_numbers();
        }
        let lines: Vec<String> = out.lines.into_iter().map(|l| self.render(l)).collect();
        if asked {
            self.printer.asked(lines);
        } else {
            for line in lines {
                self.printer.unasked(line);
            }
        }
        (failed, out.quit)
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
                    let mut parsed = cmd::parse(&line);
                    if let Ok(Command::Connect(addr)) = &mut parsed {
                        *addr = evapi_cli_addr(addr);
                    }
                    let out = self.session.line(parsed, std::time::Instant::now());
                    if let Some(addr) = &out.connect {
                        // Another server: the old connection's news is stale from now on.
                        generation += 1;
                        writer = None;
                        self.reconnect(addr.clone(), &net_tx, generation);
                    }
                    let (failed, quit) = self.carry_out(out, &mut writer, false, true).await;
                    let _ = reply.send(Reply { failed, quit });
                    if quit {
                        return;
                    }
                }
                event = net.recv() => match event {
                    Some(Net::Msg(g, _) | Net::Lost(g, _)) if g != generation => {}
                    Some(Net::Msg(_, msg)) => {
                        let out = self.session.message(msg, std::time::Instant::now(), std::time::SystemTime::now());
                        let _ = self.carry_out(out, &mut writer, true, false).await;
                    }
                    Some(Net::Lost(_, why)) => {
                        writer = None;
                        let out = self.session.lost(&why);
                        let _ = self.carry_out(out, &mut writer, false, false).await;
                        self.reconnect(self.session.addr().to_owned(), &net_tx, generation);
                    }
                    // A connection made for an older generation is simply dropped.
                    Some(Net::Reconnected(g, _)) if g != generation => {}
                    Some(Net::Reconnected(_, client)) => {
                        let (reader, w) = (*client).split();
                        writer = Some(w);
                        tokio::spawn(read_messages(reader, net_tx.clone(), generation));
                        let out = self.session.reconnected();
                        let _ = self.carry_out(out, &mut writer, false, false).await;
                    }
                    None => return,
                },
            }
        }
    }

    /// Connect to `addr` in the background, retrying until it works; the result comes
    /// back as a [`Net`] event of `generation`.
    fn reconnect(&self, addr: String, net: &mpsc::Sender<Net>, generation: u64) {
        let (config, tx) = (self.config.clone(), net.clone());
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 34: a REPL whose terminal stopped reading grew from 8 MB to 1.36 GB on
    /// 1 MiB relays: the queue was bounded in lines only. Now in bytes too, the loss
    /// counted and said once the terminal reads again.
    #[test]
    fn a_stalled_terminal_holds_at_most_the_byte_bound() {
        let (release, stalled) = std::sync::mpsc::channel::<()>();
        let printed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&printed);
        let print = Box::new(move |text: String| {
            let _ = stalled.recv();
            seen.lock().unwrap().push(text);
        });
        let (_handle, mut queue) = printing_thread(print, 3 << 20);
        let big = "x".repeat(1 << 20);
        for _ in 0..50 {
            queue.unasked(big.clone());
        }
        // The printer holds one line; at most the bound waits behind it.
        assert!(queue.waiting_bytes.load(Ordering::Acquire) <= 3 << 20);
        assert!(queue.dropped >= 46, "dropped {}", queue.dropped);
        let dropped = queue.dropped;
        for _ in 0..10 {
            let _ = release.send(());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while queue.waiting.load(Ordering::Acquire) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the printer never caught up"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        queue.unasked("after".to_owned());
        for _ in 0..2 {
            let _ = release.send(());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while queue.waiting.load(Ordering::Acquire) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the printer never caught up"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let printed = printed.lock().unwrap();
        let notice = format!("!! {dropped} lines of output dropped (terminal too slow)");
        assert_eq!(printed[printed.len() - 2], notice);
        assert_eq!(printed[printed.len() - 1], "after");
    }

    #[test]
    fn a_prompt_changed_mid_line_keeps_the_width_it_was_drawn_with() {
        let up = prompt(true);
        let down = prompt(false);
        assert_eq!(fit_prompt(down, up.len()), "evapi! ");
        let back = fit_prompt(up, down.len());
        assert_eq!(back.chars().count(), down.len());
        assert!(back.starts_with("evapi> "), "{back:?}");
    }

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
