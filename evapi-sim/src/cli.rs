//! Flags and subcommands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use evapi_proto::{Framing, IdFields};
use evapi_sim::engine::{self, RunOptions};
use evapi_sim::router::RouterConfig;
use evapi_sim::scenario::{Loaded, Scenario};
use evapi_sim::template::Template;

use evapi_cli::exit::{
    CANNOT_START as EXIT_BAD_SCENARIO, FAILED as EXIT_FAILED, INTERRUPTED as EXIT_INTERRUPTED,
};

/// SIP transaction simulator for Kamailio-style evapi async relay.
///
/// Requests are suspended, an event goes out on the embedded evapi socket, the app
/// answers, the transaction resumes with the app's decision, and the run checks what
/// every transaction ended with.
#[derive(Debug, Parser)]
#[command(
    name = "evapi-sim",
    version = evapi_cli::VERSION,
    after_help = "\
Examples:
  evapi-sim demo                                   # 10,000 INVITEs, built-in responder, summary
  evapi-sim run evapi-sim/scenarios/happy-path.json --report out.json
  evapi-sim run my-app.json --bind 127.0.0.1:8448  # a scenario with \"external\": 1 waits for your app
  evapi-sim sip --listen 127.0.0.1:5060            # SIP over UDP for sipp; answer with evapi-client respond

Exit codes: 0 every expectation held, 1 some failed, 2 bad scenario file or I/O error,
130 interrupted (Ctrl-C; the partial summary and report are still written)."
)]
pub struct Args {
    #[command(flatten)]
    pub verbosity: evapi_cli::Verbosity,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// 10,000 INVITEs through async_relay against a built-in responder, on 127.0.0.1:8448
    /// (an ephemeral port if that is taken).
    Demo {
        /// Listen here instead of 127.0.0.1:8448.
        #[arg(long, env = "EVAPI_BIND")]
        #[arg(value_parser = evapi_cli::addr::evapi)]
        bind: Option<std::net::SocketAddr>,
        /// Write the JSON report here.
        #[arg(long, env = "EVAPI_REPORT")]
        report: Option<PathBuf>,
        #[command(flatten)]
        outputs: OutputArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Run a scenario file.
    Run {
        /// The scenario (JSON; simulator.md in the docs, /usr/share/doc/evapi-sim when
        /// packaged).
        scenario: PathBuf,
        /// Listen here instead of the scenario's server.bind.
        #[arg(long, env = "EVAPI_BIND")]
        #[arg(value_parser = evapi_cli::addr::evapi)]
        bind: Option<std::net::SocketAddr>,
        /// Write the JSON report here.
        #[arg(long, env = "EVAPI_REPORT")]
        report: Option<PathBuf>,
        /// No progress bar.
        #[arg(long, env = "EVAPI_NO_PROGRESS")]
        no_progress: bool,
        #[command(flatten)]
        outputs: OutputArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// SIP load with microsecond latency: INVITEs at a fixed rate, each expecting a final
    /// code, ACKed; prints a JSON report (p50/p90/p99/max in microseconds).
    Load {
        /// The SIP server (UDP; IP, IP:port or host:port, the port defaults to 5060).
        #[arg(value_parser = evapi_cli::addr::sip)]
        target: std::net::SocketAddr,
        /// Calls per second.
        #[arg(long, env = "EVAPI_RATE", default_value_t = 1000)]
        rate: u64,
        /// Calls in all.
        #[arg(long, env = "EVAPI_CALLS", default_value_t = 10_000)]
        calls: u64,
        /// The final code a successful call gets.
        #[arg(long, env = "EVAPI_EXPECT_CODE", default_value_t = 486)]
        expect_code: u16,
        /// A call without a final response after this long fails.
        #[arg(long, env = "EVAPI_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Real SIP over UDP (for sipp): INVITEs are suspended and resumed by the apps on the
    /// evapi socket. Counters are printed on SIGINT/SIGTERM.
    Sip(Box<SipArgs>),
    /// Play a recorded transcript's events (evapi-client proxy --record) to an app, as
    /// the node did, and compare its answers with the recorded ones by transaction id.
    /// Exit 1 on any difference (beyond --ignore), missing, extra or refused answer.
    #[command(after_help = "\
Examples:
  evapi-sim replay day.jsonl --bind 127.0.0.1:8448          # then start the app on :8448
  evapi-sim replay day.jsonl --speed 10 --ignore ts --ignore data.host
  evapi-sim replay day.jsonl --speed answers --junit replay.xml --report replay.json")]
    Replay(Box<ReplayArgs>),
}

/// `evapi-sim replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The transcript (its rotated parts FILE.1, FILE.2, ... follow on their own).
    file: PathBuf,
    /// The evapi socket the app connects to.
    #[arg(long, env = "EVAPI_BIND", default_value = "127.0.0.1:8448", value_parser = evapi_cli::addr::evapi)]
    bind: std::net::SocketAddr,
    /// A factor on the recorded timing (1: as recorded, 10: ten times faster), max (all
    /// at once) or answers (each event once the one before was answered).
    #[arg(long, env = "EVAPI_SPEED", default_value = "1")]
    speed: evapi_sim::replay::Speed,
    /// Longest the replay may take at a --speed factor (the events' span divided by
    /// it); past it the replay is refused before it starts: a transcript's times are
    /// input, and one event at t = 2^64-1 would hold the run for a year.
    #[arg(long, env = "EVAPI_MAX_DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    max_duration: std::time::Duration,
    /// A dotted field path left out of the comparison (repeatable), e.g. ts, data.host.
    #[arg(
        long = "ignore",
        env = "EVAPI_IGNORE",
        value_name = "PATH",
        value_delimiter = ','
    )]
    ignore: Vec<String>,
    /// How long an answer is awaited (then it is missing; a later one is refused as
    /// late, as Kamailio's fr_inv_timer would).
    #[arg(long, env = "EVAPI_ANSWER_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    answer_timeout: std::time::Duration,
    /// How long to wait for the app to connect.
    #[arg(long, env = "EVAPI_WAIT_APP", default_value = "30s", value_parser = humantime::parse_duration)]
    wait_app: std::time::Duration,
    /// Where answers carry the transaction ids, as INDEX,LABEL dotted paths; tried
    /// before tindex/tlabel, data.index/data.label, index/label.
    #[arg(long, env = "EVAPI_ID_FIELDS", value_name = "INDEX,LABEL", value_parser = parse_id_fields)]
    id_fields: Option<IdFields>,
    /// Write the JSON report here.
    #[arg(long, env = "EVAPI_REPORT")]
    report: Option<PathBuf>,
    #[command(flatten)]
    outputs: OutputArgs,
    /// Longest frame, in bytes (also bounds a transcript line).
    #[arg(long, env = "EVAPI_MAX_FRAME", default_value_t = evapi_proto::DEFAULT_MAX_FRAME)]
    max_frame: usize,
    /// TLS, tokens, rate limit and keepalive of the evapi socket, as evapi-server's.
    #[command(flatten)]
    security: evapi_server::args::SecurityArgs,
}

/// What the demo's numbers mean, and what to try next (printed after its summary).
const DEMO_EXPLAINED: &str = concat!(
    "\n  What it means: the 10,000 INVITEs were all sent at once, so the latency above is\n",
    "  mostly queueing (each waits for the ones before it), not the responder's speed;\n",
    "  `evapi-sim load` measures calls one by one at a fixed rate.\n",
    "  Try next: `evapi-sim run SCENARIO.json --html report.html` (your traffic, your\n",
    "  checks, charts), or your own app against `evapi-sim sip` driven by sipp\n",
    "  (simulator.md in the docs).",
);

/// Reports people and CI systems read, for `demo`, `run` and `replay`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// Write an HTML report here: one self-contained file (no script, no network) with
    /// the outcome table, latency histogram and percentile curve, rate over time and
    /// answers per app.
    #[arg(long, env = "EVAPI_HTML")]
    html: Option<PathBuf>,
    /// Write a JUnit XML file here (each expectation, or each replayed transaction, a
    /// test case; a replay lists at most 1,000 failed and 1,000 passed).
    #[arg(long, env = "EVAPI_JUNIT")]
    junit: Option<PathBuf>,
}

impl OutputArgs {
    fn write(
        &self,
        page: impl FnOnce() -> evapi_sim::html::Page,
        junit: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if let Some(path) = &self.html {
            let mut page = page();
            page.made_by(&format!("evapi-sim {}", evapi_cli::VERSION));
            std::fs::write(path, evapi_sim::html::render(&page))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if let Some(path) = &self.junit {
            std::fs::write(path, junit())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// `--metrics` and its admin token, for `demo` and `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics (the socket's and the run's) at GET /metrics, and the
    /// socket's admin API, on this address while the run lasts.
    #[arg(long, env = "EVAPI_METRICS", value_parser = evapi_cli::addr::evapi)]
    metrics: Option<std::net::SocketAddr>,
    /// Bearer token for admin requests on --metrics (required for them off loopback).
    #[arg(long, env = "EVAPI_CONTROL_TOKEN", hide_env_values = true)]
    control_token: Option<String>,
}

/// Flags of `evapi-sim sip`.
#[derive(Debug, clap::Args)]
pub struct SipArgs {
    /// UDP address for SIP (the port defaults to 5060).
    #[arg(long, env = "EVAPI_LISTEN", default_value = "127.0.0.1:5060", value_parser = evapi_cli::addr::sip)]
    listen: std::net::SocketAddr,
    /// TCP address of the evapi socket (the port defaults to 8448).
    #[arg(long, env = "EVAPI_BIND", default_value = "127.0.0.1:8448", value_parser = evapi_cli::addr::evapi)]
    bind: std::net::SocketAddr,
    /// Framing of the evapi socket (Kamailio's netstring_format: netstring=1, bare=0).
    #[arg(long, env = "EVAPI_FRAMING", default_value = "netstring")]
    framing: Framing,
    /// Apps that may connect to the evapi socket at once (Kamailio's max_clients).
    #[arg(long, env = "EVAPI_MAX_CLIENTS", default_value_t = evapi_server::config::DEFAULT_MAX_CLIENTS)]
    max_clients: usize,
    /// Workers for message-received (0: run it on the connection's task, the fastest
    /// for the simulator, whose route only hands the answer over).
    #[arg(long, env = "EVAPI_WORKERS", default_value_t = 0)]
    workers: usize,
    /// Final code when fr_inv_timer fires.
    #[arg(long, env = "EVAPI_CODE_ON_TIMEOUT", default_value_t = evapi_sim::tm::DEFAULT_TIMEOUT_CODE)]
    code_on_timeout: u16,
    /// Final response timeout of an INVITE (Kamailio's fr_inv_timer).
    #[arg(long, env = "EVAPI_FR_INV_TIMER", default_value = "120s", value_parser = humantime::parse_duration)]
    fr_inv_timer: std::time::Duration,
    /// Event template (Kamailio pseudo-variables).
    #[arg(long, env = "EVAPI_EVENT", default_value = evapi_sim::scenario::DEFAULT_EVENT)]
    event: String,
    /// Send each event to the first app with this tag (evapi_async_unicast) instead of
    /// to all apps.
    #[arg(
        long,
        env = "EVAPI_UNICAST",
        value_name = "TAG",
        conflicts_with = "multicast"
    )]
    unicast: Option<String>,
    /// Send each event to every app with this tag (evapi_async_multicast).
    #[arg(long, env = "EVAPI_MULTICAST", value_name = "TAG")]
    multicast: Option<String>,
    /// Where answers carry the transaction ids, as INDEX,LABEL dotted paths (e.g.
    /// tr_index,tr_label); tried before tindex/tlabel, data.index/data.label, index/label.
    #[arg(long, env = "EVAPI_ID_FIELDS", value_name = "INDEX,LABEL", value_parser = parse_id_fields)]
    id_fields: Option<IdFields>,
    /// INVITEs waiting for their final reply at once; more are answered 503 Service
    /// Unavailable without a transaction, so a flood cannot grow memory without bound.
    #[arg(long, env = "EVAPI_MAX_TRANSACTIONS", default_value_t = DEFAULT_MAX_TRANSACTIONS)]
    max_transactions: usize,
    /// Reason phrase when the app's answer has none, built on the way back, e.g.
    /// 'decided by app $evapi(conidx) for $rU' (default: the code's usual phrase).
    #[arg(long, env = "EVAPI_REASON", value_name = "TEMPLATE")]
    reason: Option<String>,
    /// Which app of the --unicast tag gets each event: first (as Kamailio),
    /// round-robin, least-queued, or hash (by Call-ID: a call stays on one app).
    #[arg(long, env = "EVAPI_UNICAST_POLICY", default_value = "first", value_parser = parse_policy)]
    unicast_policy: evapi_server::UnicastPolicy,
    /// When an INVITE's event reaches no app, answer it at once with this code (e.g.
    /// 503) instead of holding it until --fr-inv-timer, as Kamailio does.
    #[arg(long, env = "EVAPI_NO_APP_REPLY", value_name = "CODE")]
    no_app_reply: Option<u16>,
    /// Seconds in a Retry-After header on every 503 (no app, or --max-transactions).
    #[arg(long, env = "EVAPI_RETRY_AFTER", value_name = "SECS")]
    retry_after: Option<u32>,
    /// Serve Prometheus metrics (the socket's and the transactions') at GET /metrics,
    /// and the socket's admin API, on this address.
    #[arg(long, env = "EVAPI_METRICS", value_parser = evapi_cli::addr::evapi)]
    metrics: Option<std::net::SocketAddr>,
    /// Bearer token for admin requests on --metrics (required for them off loopback).
    #[arg(long, env = "EVAPI_CONTROL_TOKEN", hide_env_values = true)]
    control_token: Option<String>,
    /// Most retransmissions of one final response (RFC 3261 Timer G gives 10 before
    /// Timer H). Each goes to whatever address the INVITE came from: lower it when
    /// the SIP port is reachable by others (a forged source makes us a reflector).
    #[arg(long, env = "EVAPI_FINAL_RETRANSMITS", default_value_t = evapi_sim::ist::DEFAULT_FINAL_RETRANSMITS)]
    final_retransmits: u32,
    /// Send 100 Trying for an INVITE whose final response is not there this long after
    /// it came (RFC 3261 section 17.2.1 requires one unless the answer comes within
    /// 200 ms); a retransmitted INVITE gets it at once. 0s: at once, always.
    #[arg(long, env = "EVAPI_TRYING_AFTER", default_value = "200ms", value_parser = humantime::parse_duration)]
    trying_after: std::time::Duration,
    /// Receive buffer of the SIP socket, in bytes: what a burst can queue while the
    /// simulator is busy. Past net.core.rmem_max it needs CAP_NET_ADMIN (root); the
    /// size obtained is printed, and datagrams dropped when it is full are counted
    /// ("kernel drops").
    #[arg(long, env = "EVAPI_SIP_RCVBUF", default_value_t = evapi_sim::udp::DEFAULT_RCVBUF)]
    sip_rcvbuf: usize,
    /// TLS, tokens, rate limit and keepalive of the evapi socket, as evapi-server's.
    #[command(flatten)]
    security: evapi_server::args::SecurityArgs,
    /// On exit: the HTML report and the JUnit health checks (no drops, timeouts,
    /// refused or invalid answers, undelivered events, unacknowledged finals).
    #[command(flatten)]
    outputs: OutputArgs,
}

/// Default `--max-transactions`: 100,000 waiting INVITEs (a few hundred MB at most,
/// most of it the kept headers).
const DEFAULT_MAX_TRANSACTIONS: usize = 100_000;

fn parse_policy(s: &str) -> Result<evapi_server::UnicastPolicy, String> {
    evapi_server::UnicastPolicy::from_name(s)
        .ok_or_else(|| format!("{s:?}: expected first, round-robin, least-queued or hash"))
}

fn parse_id_fields(s: &str) -> Result<IdFields, String> {
    match s.split_once(',') {
        Some((i, l)) if !i.trim().is_empty() && !l.trim().is_empty() => {
            Ok(IdFields::new(i.trim(), l.trim()))
        }
        _ => Err(format!(
            "expected INDEX,LABEL (e.g. tr_index,tr_label), got {s:?}"
        )),
    }
}

/// Default log level (see `evapi_cli::Verbosity` for the ladder).
pub const LOG_LEVEL: &str = "warn";

/// Run the subcommand.
///
/// # Errors
///
/// I/O errors (exit 2).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The SIP front is one loop that owns its tables; on one thread it needs no
    // cross-thread wake-ups, which is most of what it would spend on two.
    let runtime = if matches!(args.command, Command::Sip { .. } | Command::Load { .. }) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
    .context("cannot start the runtime")?;
    match args.command {
        Command::Demo {
            bind,
            report,
            outputs,
            metrics,
        } => {
            let options = RunOptions {
                fallback_to_ephemeral: bind.is_none(),
                bind: bind.map(|a| a.to_string()),
                interrupt: None,
                metrics: metrics.metrics,
                control_token: metrics.control_token.map(Into::into),
            };
            let code = runtime.block_on(scenario(
                &Scenario::demo(),
                &options,
                true,
                report.as_deref(),
                &outputs,
            ))?;
            println!("{DEMO_EXPLAINED}");
            Ok(code)
        }
        Command::Load {
            target,
            rate,
            calls,
            expect_code,
            timeout,
        } => {
            let options = evapi_sim::load::LoadOptions {
                target,
                rate: rate.max(1),
                calls: calls.max(1),
                expect_code,
                timeout,
            };
            run_load(&runtime, &options)
        }
        Command::Sip(sip) => run_sip(&runtime, &sip),
        Command::Replay(replay) => runtime.block_on(run_replay(&replay)),
        Command::Run {
            scenario: path,
            bind,
            report,
            no_progress,
            outputs,
            metrics,
        } => {
            let loaded = match Scenario::load(&path) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("evapi-sim: {e}");
                    return Ok(ExitCode::from(EXIT_BAD_SCENARIO));
                }
            };
            let options = RunOptions {
                bind: bind.map(|a| a.to_string()),
                fallback_to_ephemeral: false,
                interrupt: None,
                metrics: metrics.metrics,
                control_token: metrics.control_token.map(Into::into),
            };
            runtime.block_on(scenario(
                &loaded,
                &options,
                !no_progress,
                report.as_deref(),
                &outputs,
            ))
        }
    }
}

/// `evapi-sim load`: calls at a rate against a SIP target, the report on stdout.
fn run_load(
    runtime: &tokio::runtime::Runtime,
    options: &evapi_sim::load::LoadOptions,
) -> anyhow::Result<ExitCode> {
    let expect_code = options.expect_code;
    let report = runtime
        .block_on(evapi_sim::load::run(options))
        .context("load generator")?;
    println!("{}", serde_json::to_string(&report).context("report")?);
    if report.failed == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let got: Vec<String> = report
        .codes
        .iter()
        .filter(|(code, _)| **code != expect_code.to_string())
        .map(|(code, n)| format!("{code} x{n}"))
        .collect();
    eprintln!(
        "evapi-sim load: {} of {} calls failed: expected {expect_code}, got {}",
        report.failed,
        report.calls,
        got.join(", ")
    );
    Ok(ExitCode::from(EXIT_FAILED))
}

/// `evapi-sim sip`: the SIP front over UDP with its embedded socket, until SIGINT or
/// SIGTERM; its counters printed and written where asked.
fn run_sip(runtime: &tokio::runtime::Runtime, sip: &SipArgs) -> anyhow::Result<ExitCode> {
    let Some(mut options) = sip_options(sip) else {
        return Ok(ExitCode::from(EXIT_BAD_SCENARIO));
    };
    sip.security.apply(&mut options.server)?;
    let (listen, bind) = (&sip.listen, &sip.bind);
    let counters = runtime.block_on(async {
        let socket = tokio::net::UdpSocket::bind(listen)
            .await
            .with_context(|| format!("cannot bind SIP address {listen}"))?;
        let rcvbuf = evapi_sim::udp::size_receive_buffer(&socket, sip.sip_rcvbuf);
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot bind evapi address {bind}"))?;
        if let Some(addr) = sip.metrics {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind metrics address {addr}"))?;
            eprintln!("metrics on http://{}/metrics", l.local_addr()?);
            options.metrics = Some((l, sip.control_token.clone().map(Into::into)));
        }
        eprintln!(
            "SIP on udp:{} , evapi socket on {}",
            socket.local_addr()?,
            listener.local_addr()?
        );
        eprintln!("SIP receive buffer: {rcvbuf} bytes");
        anyhow::Ok(
            evapi_sim::uas::run(socket, listener, options, evapi_ops::signal::terminated()).await,
        )
    })?;
    print!("{}", counters.summary());
    sip.outputs
        .write(|| counters.page(), || evapi_sim::junit::sip(&counters))?;
    Ok(ExitCode::SUCCESS)
}

/// The SIP front's settings, or `None` after printing why they are unusable.
fn sip_options(sip: &SipArgs) -> Option<evapi_sim::uas::UasOptions> {
    use evapi_sim::scenario::Action;
    let template = |what: &str, text: &str| match Template::parse(text) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("evapi-sim: {what}: {e}");
            None
        }
    };
    let event = template("--event", &sip.event)?;
    let reason = match sip.reason.as_deref() {
        Some(r) => Some(template("--reason", r)?),
        None => None,
    };
    if let Err(e) = evapi_proto::check_final_code(u64::from(sip.code_on_timeout)) {
        eprintln!("evapi-sim: --code-on-timeout: {e}");
        return None;
    }
    if let Some(code) = sip.no_app_reply {
        if let Err(e) = evapi_proto::check_final_code(u64::from(code)) {
            eprintln!("evapi-sim: --no-app-reply: {e}");
            return None;
        }
    }
    let (action, tag) = match (&sip.unicast, &sip.multicast) {
        (Some(t), _) => (Action::AsyncUnicast, Some(t.clone())),
        (None, Some(t)) => (Action::AsyncMulticast, Some(t.clone())),
        (None, None) => (Action::AsyncRelay, None),
    };
    let answers = evapi_sim::scenario::Answers::default();
    let reader = match &sip.id_fields {
        Some(f) => evapi_proto::AnswerReader::with_fields([f.clone()]),
        None => answers.reader(),
    };
    Some(evapi_sim::uas::UasOptions {
        router: RouterConfig {
            action,
            tag,
            relay_code: 200,
            event,
            reason,
            reader,
            actions: answers.actions,
            tm: evapi_sim::tm::TmConfig {
                fr_inv_timer: sip.fr_inv_timer,
                timeout_code: sip.code_on_timeout,
                // Labels from a random start, as Kamailio's: answers held for this
                // node's previous life (a durable NATS stream) cannot resume new calls.
                label_seed: fastrand::u64(1..),
                ..evapi_sim::tm::TmConfig::default()
            },
            max_transactions: Some(sip.max_transactions.max(1)),
            unicast_policy: sip.unicast_policy,
            no_app_reply: sip.no_app_reply,
        },
        server: evapi_server::Config {
            framing: sip.framing,
            max_clients: sip.max_clients,
            workers: sip.workers,
            ..evapi_server::Config::default()
        },
        sip: evapi_sim::front::SipSettings {
            final_retransmits: sip.final_retransmits,
            retry_after: sip.retry_after,
            trying_after: sip.trying_after,
        },
        metrics: None,
    })
}

async fn scenario(
    loaded: &Loaded,
    options: &RunOptions,
    progress: bool,
    report_path: Option<&std::path::Path>,
    outputs: &OutputArgs,
) -> anyhow::Result<ExitCode> {
    let bar = crate::progress::Bar::new(loaded.scenario.traffic.count, progress);
    // Ctrl-C (or SIGTERM) stops the traffic; the partial report is still printed.
    let interrupt = tokio_util::sync::CancellationToken::new();
    let on_signal = interrupt.clone();
    let signals = tokio::spawn(async move {
        evapi_ops::signal::terminated().await;
        on_signal.cancel();
    });
    let options = RunOptions {
        interrupt: Some(interrupt),
        ..options.clone()
    };
    let report = engine::run(loaded, &options, &bar).await;
    signals.abort();
    let report = report?;
    println!("{}", report.summary());
    if let Some(path) = report_path {
        let json = serde_json::to_string_pretty(&report).context("report")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    outputs.write(|| report.page(), || evapi_sim::junit::run(&report))?;
    if report.interrupted {
        eprintln!("evapi-sim: interrupted; the counts above are partial");
        Ok(ExitCode::from(EXIT_INTERRUPTED))
    } else if report.passed {
        Ok(ExitCode::SUCCESS)
    } else {
        let failed: Vec<String> = report
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: expected {}, got {}", c.what, c.expected, c.actual))
            .collect();
        eprintln!("evapi-sim: expectations failed: {}", failed.join("; "));
        Ok(ExitCode::from(EXIT_FAILED))
    }
}

async fn run_replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let reader = evapi_proto::AnswerReader::with_fields(args.id_fields.clone());
    let evapi_sim::replay::Recording {
        mut plan,
        framing,
        first_part,
        ..
    } = evapi_sim::replay::read(&args.file, &reader, args.max_frame)?;
    if first_part > 0 {
        eprintln!(
            "evapi-sim replay: {} is gone (the recorder deleted its oldest parts to stay within --record-max-bytes); replaying from part {first_part}",
            args.file.display()
        );
    }
    if plan.gaps > 0 {
        eprintln!(
            "evapi-sim replay: the transcript has {} gap(s) (unframed bytes or lost records): some events may be missing",
            plan.gaps
        );
    }
    let playing = evapi_sim::replay::playing_time(&plan, args.speed);
    if let Some(takes) = playing.filter(|t| *t > args.max_duration) {
        anyhow::bail!(
            "the events span {} at --speed {}: longer than --max-duration {}; replay with --speed max or answers, a higher factor, or raise --max-duration",
            humantime::format_duration(takes),
            args.speed,
            humantime::format_duration(args.max_duration)
        );
    }
    let judge = evapi_sim::replay::Judge::new(&mut plan, reader, &args.ignore, args.answer_timeout);
    let mut server = evapi_server::Config {
        framing: framing.unwrap_or_default(),
        max_frame: args.max_frame,
        ..evapi_server::Config::default()
    };
    args.security.apply(&mut server)?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot bind evapi address {}", args.bind))?;
    eprintln!(
        "evapi-sim replay: {} events ({} suspended, {} answers recorded); waiting for an app on {}",
        plan.events.len(),
        plan.suspended(),
        plan.answered(),
        listener.local_addr()?
    );
    let report =
        evapi_sim::replay::play(listener, server, plan, judge, args.speed, args.wait_app).await?;
    print!("{}", report.summary());
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let title = format!("evapi-sim replay {}", args.file.display());
    args.outputs
        .write(|| report.page(&title), || evapi_sim::junit::replay(&report))?;
    Ok(if report.failed() {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Args::command().debug_assert();
    }
}
