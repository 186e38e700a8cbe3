//! A scenario run: the embedded event socket, the built-in responders, the traffic, and
//! the transaction table, driven to the end and reported.
//!
//! One task owns the [`crate::tm::Table`] and everything that changes it: new
//! requests (by rate or concurrency), answers from the apps (through the server's
//! message-received route and a bounded channel), and the table's timers (slept on with
//! tokio, deadlines from [`Table::poll_timeout`](crate::tm::Table::poll_timeout)).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use evapi_client::ClientConfig;
use evapi_server::{ClientEnv, Config, Handle, RelayError, Server};
use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::answer;
use crate::apps::{self, Inbound, SimRoutes};
use crate::report::{Latency, Report};
use crate::request::Request;
use crate::responders;
use crate::scenario::{Action, Loaded};
use crate::template::Vars;
use crate::tm::{Expired, Table};

/// Source address the generated requests claim (`$si`, `$sp`).
const GENERATED_SOURCE: &str = "127.0.0.1:5060";

/// Options from the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Listen here instead of the scenario's address.
    pub bind: Option<String>,
    /// If the address is taken, use an ephemeral port instead (the demo does).
    pub fallback_to_ephemeral: bool,
    /// Show a progress bar on stderr (only drawn on a terminal, after a second).
    pub progress: bool,
}

/// A run that could not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The listen address is unusable.
    #[error("cannot bind {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A built-in responder could not connect.
    #[error("built-in responder failed")]
    Responder(#[source] evapi_client::ClientError),
}

/// Per-transaction data: tiny, so 100,000 suspended transactions stay small.
#[derive(Debug, Clone, Copy)]
struct Call;

/// Run the scenario to the end.
///
/// # Errors
///
/// The address cannot be bound, or a built-in responder cannot connect.
pub async fn run(loaded: &Loaded, options: &RunOptions) -> Result<Report, RunError> {
    let sc = &loaded.scenario;
    let bind = options
        .bind
        .clone()
        .unwrap_or_else(|| sc.server.bind.clone());
    let listener = match TcpListener::bind(&bind).await {
        Ok(l) => l,
        Err(e) if options.fallback_to_ephemeral => {
            warn!(addr = %bind, error = %e, "address taken, using an ephemeral port");
            TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|source| RunError::Bind {
                    addr: "127.0.0.1:0".to_owned(),
                    source,
                })?
        }
        Err(source) => return Err(RunError::Bind { addr: bind, source }),
    };
    let addr = listener.local_addr().map_err(|source| RunError::Bind {
        addr: bind.clone(),
        source,
    })?;
    eprintln!("evapi socket on {addr} ({})", sc.server.framing);

    let (tx, mut inbound) = mpsc::channel(apps::INBOUND_QUEUE);
    let config = Config {
        framing: sc.server.framing,
        max_clients: sc.server.max_clients,
        workers: sc.server.workers,
        ..Config::default()
    };
    let server = Server::new(config, SimRoutes::new(tx));
    let handle = server.handle();
    let server_task = tokio::spawn(server.run(listener, std::future::pending()));

    let stop = CancellationToken::new();
    let mut responder_tasks = tokio::task::JoinSet::new();
    let client_config = ClientConfig {
        framing: sc.server.framing,
        ..ClientConfig::default()
    };
    for spec in &sc.responders {
        let (spec, addr, cfg, ids, stop) = (
            spec.clone(),
            addr.to_string(),
            client_config.clone(),
            sc.answers.id_fields(),
            stop.clone(),
        );
        responder_tasks.spawn(responders::run(spec, addr, cfg, ids, stop));
    }

    let mut engine = Engine::new(loaded, handle.clone());
    let apps = sc.responders.len() + sc.external;
    let tags = responders::tagged(&sc.responders);
    if sc.external > 0 {
        eprintln!(
            "waiting for {} external app(s) to connect to {addr}",
            sc.external
        );
    }
    // Readiness: every app connected, every built-in tag registered.
    let (mut connected, mut tagged) = (0usize, 0usize);
    while connected < apps || tagged < tags {
        tokio::select! {
            msg = inbound.recv() => match msg {
                Some(Inbound::Connected) => connected += 1,
                Some(Inbound::Message(client, msg)) => {
                    if engine.register(&client, &msg) { tagged += 1 }
                }
                None => break,
            },
            Some(done) = responder_tasks.join_next(), if !responder_tasks.is_empty() => {
                if let Ok(Err(e)) = done {
                    stop.cancel();
                    return Err(RunError::Responder(e));
                }
            }
        }
    }

    let report = engine.drive(&mut inbound, options.progress).await;
    stop.cancel();
    while responder_tasks.join_next().await.is_some() {}
    handle.shutdown();
    let _ = server_task.await;
    Ok(report)
}

struct Engine<'a> {
    loaded: &'a Loaded,
    handle: Handle,
    table: Table<Call>,
    fields: evapi_proto::IdFields,
    latency: Histogram<u64>,
    finals: BTreeMap<u16, u64>,
    refused: BTreeMap<&'static str, u64>,
    timeouts: u64,
    invalid: u64,
    undelivered: u64,
    open: u64,
    done: u64,
    event: String,
    source: SocketAddr,
}

impl<'a> Engine<'a> {
    fn new(loaded: &'a Loaded, handle: Handle) -> Self {
        let sc = &loaded.scenario;
        Self {
            loaded,
            handle,
            table: Table::new(sc.timers.tm()),
            fields: sc.answers.id_fields(),
            latency: Histogram::new(3).expect("3 significant figures is a valid precision"),
            finals: BTreeMap::new(),
            refused: BTreeMap::new(),
            timeouts: 0,
            invalid: 0,
            undelivered: 0,
            open: 0,
            done: 0,
            event: String::new(),
            source: GENERATED_SOURCE
                .parse()
                .expect("GENERATED_SOURCE is a socket address"),
        }
    }

    fn register(&self, client: &ClientEnv, msg: &[u8]) -> bool {
        apps::register(&self.handle, &self.fields, client, msg)
    }

    async fn drive(&mut self, inbound: &mut mpsc::Receiver<Inbound>, progress: bool) -> Report {
        let traffic = self.loaded.scenario.traffic.clone();
        let start = Instant::now();
        let bar = crate::progress::Bar::new(traffic.count, progress);
        let mut next = 0u64;
        let mut expired: Vec<Expired<Call>> = Vec::new();
        while self.done < traffic.count {
            let now = Instant::now();
            let by_rate = if traffic.rate == 0 {
                traffic.count
            } else {
                let elapsed = now.duration_since(start).as_secs_f64();
                ((elapsed * traffic.rate as f64) as u64 + 1).min(traffic.count)
            };
            while next < by_rate && (traffic.concurrency == 0 || self.open < traffic.concurrency) {
                self.issue(next, &traffic, now);
                next += 1;
            }
            let mut wake = self.table.poll_timeout().map(Instant::from_std);
            if traffic.rate > 0
                && next < traffic.count
                && (traffic.concurrency == 0 || self.open < traffic.concurrency)
            {
                let due = start + Duration::from_secs_f64(next as f64 / traffic.rate as f64);
                wake = Some(wake.map_or(due, |w| w.min(due)));
            }
            tokio::select! {
                biased;
                msg = inbound.recv() => {
                    let Some(msg) = msg else { break };
                    self.inbound(msg);
                    while let Ok(msg) = inbound.try_recv() {
                        self.inbound(msg);
                    }
                }
                () = sleep_until(wake) => {
                    self.table.handle_timeout(Instant::now().into_std(), &mut expired);
                    for e in expired.drain(..) {
                        debug!(tindex = e.id.index, tlabel = e.id.label, "final response timer fired");
                        self.timeouts += 1;
                        self.finish(e.code);
                    }
                }
            }
            bar.set(self.done);
        }
        bar.finish();
        let linger = Instant::now() + self.loaded.scenario.linger;
        while let Ok(Some(msg)) = tokio::time::timeout_at(linger, inbound.recv()).await {
            self.inbound(msg);
        }
        let mut report = Report {
            name: self.loaded.scenario.name.clone(),
            requests: traffic.count,
            finals: std::mem::take(&mut self.finals),
            timeouts: self.timeouts,
            refused: std::mem::take(&mut self.refused),
            invalid_answers: self.invalid,
            undelivered: self.undelivered,
            latency: Latency::of(&self.latency),
            duration_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            checks: Vec::new(),
            passed: true,
        };
        report.check(&self.loaded.scenario.expect);
        report
    }

    fn issue(&mut self, n: u64, traffic: &crate::scenario::Traffic, now: Instant) {
        let num = n.to_string();
        let request = Request {
            method: traffic.method.clone(),
            ruri: traffic.ruri.replace("{n}", &num),
            from_uri: traffic.from.replace("{n}", &num),
            to_uri: traffic.to.replace("{n}", &num),
            call_id: format!("sim-{num}@evapi-sim"),
            cseq: 1,
            source: self.source,
        };
        let now_std = now.into_std();
        let id = self.table.create(
            &request.transaction_key(),
            request.is_invite(),
            Call,
            now_std,
        );
        self.open += 1;
        self.event.clear();
        self.loaded.event.render(
            &Vars {
                request: &request,
                tid: Some(id),
                evapi: None,
            },
            &mut self.event,
        );
        let route = &self.loaded.scenario.route;
        if route.action != Action::Relay {
            // `evapi_async_*` suspends first; an event nobody receives leaves the
            // transaction waiting for its timer, as in Kamailio.
            let _ = self.table.suspend(id, now_std);
        }
        let sent = match (route.action, route.tag.as_deref()) {
            (Action::Relay | Action::AsyncRelay, _) => self.handle.relay(self.event.as_bytes()),
            (Action::AsyncMulticast, Some(tag)) => {
                self.handle.multicast(self.event.as_bytes(), tag)
            }
            (Action::AsyncUnicast, Some(tag)) => self.handle.unicast(self.event.as_bytes(), tag),
            (_, None) => Err(RelayError::NoTag(String::new())),
        };
        match sent {
            Ok(d) if d.queued > 0 => {}
            Ok(_) | Err(_) => {
                self.undelivered += 1;
                debug!(tindex = id.index, tlabel = id.label, "event reached no app");
            }
        }
        if route.action == Action::Relay {
            let _ = self.table.reply(id, route.relay_code, now_std);
            self.finish(route.relay_code);
        }
    }

    fn inbound(&mut self, msg: Inbound) {
        let Inbound::Message(client, msg) = msg else {
            return;
        };
        if self.register(&client, &msg) {
            return;
        }
        let sc = &self.loaded.scenario;
        match answer::read(&msg, &self.fields, &sc.answers.actions) {
            Ok(decision) => {
                let now = std::time::Instant::now();
                match self.table.resume(decision.id, decision.code, now) {
                    Ok((_, created)) => {
                        let us = u64::try_from(now.duration_since(created).as_micros())
                            .unwrap_or(u64::MAX);
                        let _ = self.latency.record(us.max(1));
                        self.finish(decision.code);
                    }
                    Err(refusal) => {
                        *self.refused.entry(refusal.name()).or_default() += 1;
                        debug!(conidx = client.conidx, %refusal, "continue refused");
                    }
                }
            }
            Err(why) => {
                self.invalid += 1;
                debug!(conidx = client.conidx, reason = %why, msg = %String::from_utf8_lossy(&msg), "not a valid answer");
            }
        }
    }

    fn finish(&mut self, code: u16) {
        *self.finals.entry(code).or_default() += 1;
        self.open -= 1;
        self.done += 1;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
