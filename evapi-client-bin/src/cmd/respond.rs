//! `evapi-client respond`: answer every suspend event, on sockets or over NATS.

use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use evapi_client::respond::{self, Counts, Responder, Stop};
use evapi_client::{Client, ClientConfig, ReplyTemplate};
use evapi_nats::NatsOptions;
use tokio_util::sync::CancellationToken;

use super::shared::{final_code, reason_phrase, IdArgs};
use super::Ctx;

/// Answer every suspend event (async relay) automatically; the load-test partner.
#[derive(Debug, clap::Args)]
pub(crate) struct RespondArgs {
    /// SIP code to answer with.
    #[arg(long, env = "EVAPI_CODE", default_value_t = 200, value_parser = final_code)]
    pub code: u16,
    /// Reason phrase (default: the code's usual phrase); one line, at most 128 bytes.
    #[arg(long, env = "EVAPI_REASON", value_parser = reason_phrase)]
    pub reason: Option<String>,
    /// Answer template: JSON where "$tindex", "$tlabel", "$code", "$reason" and
    /// "$some.path" (into the event) are replaced, and "${...}" inside strings.
    #[arg(long, env = "EVAPI_REPLY", value_name = "TEMPLATE")]
    pub reply: Option<String>,
    /// Wait this long before each answer.
    #[arg(long, env = "EVAPI_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub delay: Duration,
    /// Answer every event within this long of its arrival: when the answer would come
    /// later (--delay past it), --fallback-code goes at the deadline instead and the
    /// late answer is dropped (counted, never sent). Choose it below the node's
    /// fr_inv_timer.
    #[arg(long, env = "EVAPI_DEADLINE", value_parser = humantime::parse_duration, requires = "fallback_code")]
    pub deadline: Option<Duration>,
    /// The fallback answer's SIP code (e.g. 503).
    #[arg(long, env = "EVAPI_FALLBACK_CODE", value_parser = final_code, requires = "deadline")]
    pub fallback_code: Option<u16>,
    /// The fallback's reason phrase (default: the code's usual phrase).
    #[arg(long, env = "EVAPI_FALLBACK_REASON", value_parser = reason_phrase, requires = "deadline")]
    pub fallback_reason: Option<String>,
    /// Events in hand at once (read, not yet answered: waiting for --delay or the
    /// deadline), over every connection together [default: 64 over NATS, 10000 on
    /// sockets]. On a socket, past it the socket is not read and the node holds its
    /// events; over NATS a slow app takes only this many, the rest go to the other apps.
    #[arg(long, env = "EVAPI_MAX_IN_FLIGHT", value_parser = at_least_one)]
    pub max_in_flight: Option<usize>,
    /// Connections to open (each answers what it receives).
    #[arg(long, env = "EVAPI_CONNECTIONS", default_value_t = 1)]
    pub connections: usize,
    /// Exit when a node closes the connection or it is lost (exit 2 unless --count was
    /// reached), as a one-shot script expects. Without it, respond connects again
    /// (jittered backoff, for ever) and serves the node when it is back.
    #[arg(long, env = "EVAPI_EXIT_ON_CLOSE")]
    pub exit_on_close: bool,
    /// Exit after this many answers in all.
    #[arg(long, env = "EVAPI_COUNT")]
    pub count: Option<u64>,
    /// Serve Prometheus metrics on this address (GET /metrics): answered, ignored,
    /// invalid, expired, given back, fallbacks, events in hand.
    #[arg(long, env = "EVAPI_METRICS", value_parser = evapi_cli::addr::evapi_text)]
    pub metrics: Option<String>,
    #[command(flatten)]
    pub ids: IdArgs,
}

impl RespondArgs {
    /// Answer until --count, SIGINT or SIGTERM; print the summary.
    pub(crate) async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let mut responder = Responder::with(self.code, self.reason, self.delay, self.ids.matcher());
        if let (Some(after), Some(code)) = (self.deadline, self.fallback_code) {
            responder.deadline = Some(evapi_client::respond::Deadline {
                after,
                code,
                reason: self
                    .fallback_reason
                    .unwrap_or_else(|| evapi_client::respond::reason_phrase(code).to_owned()),
            });
        }
        if let Some(reply) = &self.reply {
            responder.template = Some(ReplyTemplate::parse(reply)?);
        }
        let counts = Arc::new(Counts::default());
        if let Some(at) = &self.metrics {
            let collector = Box::new(crate::metrics::RespondMetrics(Arc::clone(&counts)));
            crate::metrics::serve(at, "respond", collector, std::future::pending()).await?;
        }
        if let Some(options) = &ctx.nats {
            let max_in_flight = self
                .max_in_flight
                .unwrap_or(evapi_nats::DEFAULT_MAX_IN_FLIGHT);
            return over_nats(
                options,
                &responder,
                ctx.ack_wait,
                max_in_flight,
                self.count,
                counts,
            )
            .await;
        }
        let responder =
            responder.max_in_flight(self.max_in_flight.unwrap_or(respond::DEFAULT_MAX_HELD));
        let several = ctx.nodes.len() > 1;
        let mut targets = Vec::new();
        if several {
            // A node down at the start does not hold up the others: each is connected
            // by its own task, when it answers.
            targets.extend(ctx.nodes.iter().map(|node| (node.clone(), None)));
        } else {
            // One node: it must be there (within --wait), once per connection.
            let node = evapi_client::nodes::Node::at(ctx.node_addr.clone());
            for _ in 0..self.connections.max(1) {
                let client = Client::connect(&ctx.node_addr, &ctx.config).await?;
                targets.push((node.clone(), Some(client)));
            }
        }
        let over = if several {
            format!("{} node(s)", targets.len())
        } else {
            format!("{} connection(s)", targets.len())
        };
        let run = Serving {
            config: ctx.config.clone(),
            responder: Arc::new(responder),
            counts,
            remaining: self.count.map(|n| Arc::new(AtomicU64::new(n))),
            stop: CancellationToken::new(),
        };
        run.serve(targets, self.exit_on_close, self.count, &over)
            .await
    }
}

/// A count of at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// What every connection of a responder on sockets shares.
struct Serving {
    config: ClientConfig,
    responder: Arc<Responder>,
    counts: Arc<Counts>,
    remaining: Option<Arc<AtomicU64>>,
    stop: CancellationToken,
}

impl Serving {
    /// Serve each target (a node, and its first connection when already open), one task
    /// each, until --count, SIGINT or SIGTERM (or, with `exit_on_close`, until a
    /// connection ends); print the summary.
    async fn serve(
        self,
        targets: Vec<(evapi_client::nodes::Node, Option<Client>)>,
        exit_on_close: bool,
        count: Option<u64>,
        over: &str,
    ) -> anyhow::Result<ExitCode> {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (node, first) in targets {
            let (config, responder, counts, remaining, stop) = (
                self.config.clone(),
                Arc::clone(&self.responder),
                Arc::clone(&self.counts),
                self.remaining.clone(),
                self.stop.clone(),
            );
            tasks.spawn(async move {
                let remaining = remaining.as_deref();
                if !exit_on_close {
                    return respond::serve_node(
                        &node, &config, first, &responder, &counts, remaining, &stop,
                    )
                    .await
                    .map_err(anyhow::Error::from);
                }
                let client = match first {
                    Some(client) => client,
                    None => Client::connect(&node.addr, &config).await?,
                };
                match respond::run(client, &responder, &counts, remaining, &stop).await? {
                    Stop::Done => Ok(()),
                    Stop::Closed if stop.is_cancelled() => Ok(()),
                    Stop::Closed => Err(anyhow::anyhow!(
                        "connection to {} closed by the server",
                        node.addr
                    )),
                }
            });
        }
        let mut failure = None;
        let mut interrupted = false;
        // SIGINT or SIGTERM: stop answering and print the summary.
        let mut signals = evapi_ops::signal::Signals::new();
        loop {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    None => break,
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => {
                        failure.get_or_insert(e);
                        // One-shot: the first connection to end ends the run.
                        self.stop.cancel();
                    }
                    Some(Err(e)) => {
                        failure.get_or_insert(anyhow::anyhow!("responder task failed: {e}"));
                        self.stop.cancel();
                    }
                },
                _ = signals.stop(), if !interrupted => {
                    interrupted = true;
                    self.stop.cancel();
                }
            }
        }
        let answered = summary(&self.counts, started, over);
        // Reaching --count, or Ctrl-C, is success even if the server then closed.
        let reached = count.is_some_and(|n| answered >= n);
        match failure {
            Some(e) if !reached && !interrupted => Err(e),
            _ => Ok(ExitCode::SUCCESS),
        }
    }
}

async fn over_nats(
    options: &NatsOptions,
    responder: &Responder,
    ack_wait: Duration,
    max_in_flight: usize,
    count: Option<u64>,
    counts: Arc<Counts>,
) -> anyhow::Result<ExitCode> {
    let nats = options.connect(None).await?;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let taking = evapi_nats::Taking {
        ack_wait,
        max_in_flight,
        stream: options.stream,
    };
    let respond = evapi_nats::respond(nats, responder, taking, &counts, count, stop.clone());
    tokio::pin!(respond);
    let result = tokio::select! {
        r = &mut respond => r,
        // Stop taking, and wait for the answers sent to be confirmed (at most
        // ANSWER_CONFIRM each; unconfirmed ones are given back).
        () = evapi_ops::signal::terminated() => {
            stop.cancel();
            respond.await
        }
    };
    let c = counts.snapshot();
    println!(
        "answered {}, ignored {}, invalid {}, expired {} over NATS in {:.2}s",
        c.answered,
        c.ignored,
        c.invalid,
        c.expired,
        started.elapsed().as_secs_f64(),
    );
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Print the summary line of a run on `over` (its connections or nodes) since
/// `started`; the answers.
fn summary(counts: &Counts, started: Instant, over: &str) -> u64 {
    let secs = started.elapsed().as_secs_f64();
    let c = counts.snapshot();
    let answered = c.answered;
    println!(
        "answered {answered}, ignored {}, invalid {} on {over} in {secs:.2}s ({:.0}/s){}",
        c.ignored,
        c.invalid,
        answered as f64 / secs.max(1e-9),
        fallbacks(counts),
    );
    answered
}

/// ", N with the fallback (the handler late)" when any went so.
fn fallbacks(counts: &Counts) -> String {
    match counts.snapshot().fallback {
        0 => String::new(),
        n => format!(", {n} with the fallback (the handler late)"),
    }
}
