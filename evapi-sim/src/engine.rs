//! A scenario run: the embedded event socket, the built-in responders, the traffic, and
//! the transaction table, driven to the end and reported.
//!
//! A thin driver of the async-relay core ([`crate::router`]): one task owns the
//! [`Router`] and feeds it new requests (by rate or concurrency), answers from the apps
//! (through the server's message-received route and a bounded channel) and timer ticks,
//! all on the simulator's clock (`clock`). Progress and addresses are reported to an [`Observer`]; the
//! library prints nothing.

use std::net::SocketAddr;
use std::time::Duration;

use evapi_client::ClientConfig;
use evapi_server::{Config, Handle};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::apps::{self, Inbound};
use crate::clock;
use crate::metrics::SimMetrics;
use crate::report::Report;
use crate::request::Request;
use crate::responders;
use crate::router::{Cause, Message, Router};
use crate::scenario::Loaded;

/// Source address the generated requests claim (`$si`, `$sp`).
const GENERATED_SOURCE: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    5060,
));

/// Options from the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Listen here instead of the scenario's address.
    pub bind: Option<String>,
    /// If the address is taken, use an ephemeral port instead (the demo does).
    pub fallback_to_ephemeral: bool,
    /// Cancelled to interrupt the run (Ctrl-C): no new requests; answers are read for
    /// [`INTERRUPT_GRACE`], then the partial report is returned, marked interrupted.
    pub interrupt: Option<CancellationToken>,
    /// Serve Prometheus metrics (the socket's and the run's) and the admin API here
    /// while the run lasts.
    pub metrics: Option<SocketAddr>,
    /// Bearer token for admin requests on `metrics`.
    pub control_token: Option<std::sync::Arc<str>>,
}

/// How long an interrupted run still reads answers before it reports.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(1);

/// A snapshot of a run in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Transactions with their final reply.
    pub done: u64,
    /// Transactions the scenario will make.
    pub total: u64,
    /// Ended by their timer so far.
    pub timeouts: u64,
    /// Invalid answers so far.
    pub invalid: u64,
}

/// What a run tells its caller while it goes; every method has a do-nothing default.
pub trait Observer: Send + Sync {
    /// The evapi socket listens on `addr`.
    fn listening(&self, addr: SocketAddr) {
        let _ = addr;
    }
    /// Waiting for `count` external apps to connect to `addr`.
    fn waiting_for_apps(&self, count: usize, addr: SocketAddr) {
        let _ = (count, addr);
    }
    /// Where the run is (called after every step; throttle as needed).
    fn progress(&self, progress: &Progress) {
        let _ = progress;
    }
    /// The traffic is over (answers may still linger).
    fn finished(&self) {}
}

/// An [`Observer`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Observer for Quiet {}

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
    /// The outside apps did not all connect within `external_timeout`.
    #[error("{connected} of {expected} external app(s) connected to {addr} within {waited:?} (external_timeout)")]
    NoApp {
        /// Apps the scenario waits for.
        expected: usize,
        /// Apps that came.
        connected: usize,
        /// The evapi socket.
        addr: SocketAddr,
        /// How long the run waited.
        waited: Duration,
    },
}

/// Run the scenario to the end.
///
/// # Errors
///
/// The address cannot be bound, or a built-in responder cannot connect.
pub async fn run(
    loaded: &Loaded,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<Report, RunError> {
    let sc = &loaded.scenario;
    let bind = options
        .bind
        .clone()
        .unwrap_or_else(|| sc.server.bind.clone());
    let (listener, addr) = bind_socket(bind, options.fallback_to_ephemeral).await?;
    observer.listening(addr);

    let config = Config {
        framing: sc.server.framing,
        max_clients: sc.server.max_clients,
        workers: sc.server.workers,
        ..Config::default()
    };
    let metrics = SimMetrics::new();
    let http = match options.metrics {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .map_err(|source| RunError::Bind {
                    addr: at.to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    let mut embedded = apps::Embedded::start(
        listener,
        config,
        http.map(|l| (l, options.control_token.clone(), &metrics)),
    );
    let handle = embedded.handle.clone();

    let stop = CancellationToken::new();
    let mut responder_tasks = tokio::task::JoinSet::new();
    let mut client_config = ClientConfig::default();
    client_config.framing = sc.server.framing;
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
    engine.metrics = embedded.serves_http().then(|| metrics.clone());
    if sc.external > 0 {
        observer.waiting_for_apps(sc.external, addr);
    }
    if let Err(e) = engine
        .wait_for_apps(&mut embedded.inbound, &mut responder_tasks, addr)
        .await
    {
        stop.cancel();
        handle.shutdown();
        return Err(e);
    }

    let interrupt = options.interrupt.clone().unwrap_or_default();
    let report = engine
        .drive(&mut embedded.inbound, observer, &interrupt)
        .await;
    stop.cancel();
    while responder_tasks.join_next().await.is_some() {}
    embedded.stop().await;
    Ok(report)
}

/// The evapi socket's listener on `bind` (an ephemeral loopback port when it is taken
/// and `fallback` allows), and the address it got.
async fn bind_socket(bind: String, fallback: bool) -> Result<(TcpListener, SocketAddr), RunError> {
    let listener = match TcpListener::bind(&bind).await {
        Ok(l) => l,
        Err(e) if fallback => {
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
    let addr = listener
        .local_addr()
        .map_err(|source| RunError::Bind { addr: bind, source })?;
    Ok((listener, addr))
}

/// The driver's state: the evapi handle, the core and what the report needs.
struct Engine<'a> {
    loaded: &'a Loaded,
    handle: Handle,
    /// Each transaction's data: its call's number (from 0).
    router: Router<u64>,
    /// With cases: each call's case (by index) and its repetition (from 0).
    calls: Vec<(usize, u64)>,
    /// With cases: the app's answer of each resumed transaction, until its reply.
    answers: std::collections::HashMap<evapi_proto::TransactionId, Vec<u8>>,
    /// With cases: the verdict on each, as its calls end.
    verdicts: Vec<crate::cases::CaseVerdict>,
    stats: crate::report::RunStats,
    open: u64,
    done: u64,
    source: SocketAddr,
    /// Published to when metrics are served.
    metrics: Option<SimMetrics>,
    published: std::time::Instant,
}

impl<'a> Engine<'a> {
    fn new(loaded: &'a Loaded, handle: Handle) -> Self {
        Self {
            loaded,
            handle,
            router: Router::new(loaded.router_config()),
            calls: loaded
                .cases
                .iter()
                .enumerate()
                .flat_map(|(i, c)| (0..c.case.repeat.unwrap_or(1)).map(move |r| (i, r)))
                .collect(),
            answers: std::collections::HashMap::new(),
            verdicts: loaded
                .cases
                .iter()
                .map(|c| crate::cases::CaseVerdict::new(&c.name))
                .collect(),
            stats: crate::report::RunStats::new(clock::now()),
            open: 0,
            done: 0,
            source: GENERATED_SOURCE,
            metrics: None,
            published: clock::now(),
        }
    }

    /// Until every app is connected and every built-in tag registered: an error when
    /// the external apps do not come within the scenario's `external_timeout`, or a
    /// built-in responder fails.
    async fn wait_for_apps(
        &mut self,
        inbound: &mut mpsc::Receiver<Inbound>,
        responders: &mut tokio::task::JoinSet<Result<(), evapi_client::ClientError>>,
        addr: SocketAddr,
    ) -> Result<(), RunError> {
        let sc = &self.loaded.scenario;
        let apps = sc.responders.len() + sc.external;
        let tags = responders::tagged(&sc.responders);
        let (external, built_in, waited) = (sc.external, sc.responders.len(), sc.external_timeout);
        let (mut connected, mut tagged) = (0usize, 0usize);
        let give_up = tokio::time::Instant::now() + waited;
        while connected < apps || tagged < tags {
            tokio::select! {
                () = tokio::time::sleep_until(give_up), if external > 0 => {
                    return Err(RunError::NoApp {
                        expected: external,
                        connected: connected.saturating_sub(built_in),
                        addr,
                        waited,
                    });
                }
                msg = inbound.recv() => match msg {
                    Some(Inbound::Connected) => connected += 1,
                    Some(Inbound::Message(client, msg)) => {
                        if self.inbound(&client, &msg) { tagged += 1 }
                    }
                    None => break,
                },
                Some(done) = responders.join_next(), if !responders.is_empty() => {
                    if let Ok(Err(e)) = done {
                        return Err(RunError::Responder(e));
                    }
                }
            }
        }
        Ok(())
    }

    async fn drive(
        &mut self,
        inbound: &mut mpsc::Receiver<Inbound>,
        observer: &dyn Observer,
        interrupt: &CancellationToken,
    ) -> Report {
        let mut traffic = self.loaded.scenario.traffic.clone();
        if !self.calls.is_empty() {
            traffic.count = self.calls.len() as u64;
        }
        let start = clock::now();
        self.stats.restart(start);
        let mut next = 0u64;
        let mut interrupted = false;
        while self.done < traffic.count {
            let now = clock::now();
            let by_rate = if traffic.rate == 0 {
                traffic.count
            } else {
                issued_by(now.duration_since(start), traffic.rate).min(traffic.count)
            };
            while next < by_rate && (traffic.concurrency == 0 || self.open < traffic.concurrency) {
                self.issue(next, &traffic, now);
                next += 1;
            }
            let mut wake = self.router.poll_timeout();
            if traffic.rate > 0
                && next < traffic.count
                && (traffic.concurrency == 0 || self.open < traffic.concurrency)
            {
                let due = start + due_at(next, traffic.rate);
                wake = evapi_ops::time::earliest([wake, Some(due)]);
            }
            tokio::select! {
                biased;
                msg = inbound.recv() => {
                    let Some(Inbound::Message(client, msg)) = msg else {
                        if msg.is_none() { break }
                        continue;
                    };
                    self.inbound(&client, &msg);
                    while let Ok(msg) = inbound.try_recv() {
                        if let Inbound::Message(client, msg) = msg {
                            self.inbound(&client, &msg);
                        }
                    }
                }
                () = evapi_ops::time::sleep_until(wake) => self.router.handle_timeout(clock::now()),
                () = interrupt.cancelled() => {
                    interrupted = true;
                    break;
                }
            }
            self.replies();
            self.publish(false);
            let counters = self.router.counters();
            observer.progress(&Progress {
                done: self.done,
                total: traffic.count,
                timeouts: counters.timeouts,
                invalid: counters.invalid_answers,
            });
        }
        observer.finished();
        // Scrapes during the linger see the whole run.
        self.publish(true);
        let grace = if interrupted {
            INTERRUPT_GRACE
        } else {
            self.loaded.scenario.linger
        };
        let linger = tokio::time::Instant::now() + grace;
        while let Ok(Some(msg)) = tokio::time::timeout_at(linger, inbound.recv()).await {
            if let Inbound::Message(client, msg) = msg {
                self.inbound(&client, &msg);
            }
        }
        self.replies();
        self.publish(true);
        self.report(
            if interrupted { next } else { traffic.count },
            start,
            interrupted,
        )
    }

    /// The report of a run that started at `start` and made `requests` requests.
    fn report(&mut self, requests: u64, start: std::time::Instant, interrupted: bool) -> Report {
        let counters = self.router.counters().clone();
        let (timeline, per_app) = self.stats.take();
        let mut report = Report {
            name: self.loaded.scenario.name.clone(),
            requests,
            finals: counters.finals,
            timeouts: counters.timeouts,
            refused: counters.refused,
            invalid_answers: counters.invalid_answers,
            undelivered: counters.undelivered,
            no_app: counters.no_app,
            latency: self.stats.latency(),
            duration_ms: u64::try_from(clock::now().duration_since(start).as_millis())
                .unwrap_or(u64::MAX),
            checks: Vec::new(),
            passed: true,
            interrupted,
            timeline,
            per_app,
            cases: std::mem::take(&mut self.verdicts),
        };
        report.check(&self.loaded.scenario.expect);
        report
    }

    fn issue(&mut self, n: u64, traffic: &crate::scenario::Traffic, now: std::time::Instant) {
        let num = n.to_string();
        let fill = |given: Option<&String>, default: &str| {
            given.map_or(default, String::as_str).replace("{n}", &num)
        };
        let request = match usize::try_from(n).ok().and_then(|i| self.calls.get(i)) {
            Some(&(case, rep)) => {
                let c = &self.loaded.cases[case].case;
                Request {
                    method: fill(c.method.as_ref(), &traffic.method),
                    ruri: fill(c.ruri.as_ref(), &traffic.ruri),
                    from_uri: fill(c.from.as_ref(), &traffic.from),
                    to_uri: fill(c.to.as_ref(), &traffic.to),
                    call_id: match &c.call_id {
                        Some(id) if rep == 0 => id.replace("{n}", &num),
                        Some(id) => format!("{}-{rep}", id.replace("{n}", &num)),
                        None => format!("case-{}-{rep}@evapi-sim", case + 1),
                    },
                    cseq: 1,
                    source: self.source,
                }
            }
            None => Request {
                method: traffic.method.clone(),
                ruri: fill(None, &traffic.ruri),
                from_uri: fill(None, &traffic.from),
                to_uri: fill(None, &traffic.to),
                call_id: format!("sim-{num}@evapi-sim"),
                cseq: 1,
                source: self.source,
            },
        };
        self.open += 1;
        let relay = self.router.request(now, &request, n);
        let id = relay.id;
        if !apps::deliver(&self.handle, relay.to, relay.event) {
            self.router.undelivered(clock::now(), Some(id));
        }
    }

    /// Hand a message to the core; true when it registered a tag.
    fn inbound(&mut self, client: &evapi_server::ClientEnv, msg: &[u8]) -> bool {
        match self.router.message(clock::now(), client, msg) {
            Message::Register(tag) => apps::set_tag(&self.handle, client, &tag),
            Message::Resumed(id) => {
                self.stats.answered_by(client);
                if !self.calls.is_empty() {
                    self.answers.insert(id, msg.to_vec());
                }
                false
            }
            Message::Refused(_) | Message::Invalid(_) => false,
        }
    }

    /// Publish the counters for scrapes, at most every `PUBLISH_EVERY` unless `now`.
    fn publish(&mut self, now: bool) {
        let Some(metrics) = &self.metrics else { return };
        let t = clock::now();
        if now || t.duration_since(self.published) >= crate::metrics::PUBLISH_EVERY {
            metrics.publish(self.router.counters(), self.router.open());
            self.published = t;
        }
    }

    /// With cases: judge the call that `reply` ended against its case.
    fn judge(&mut self, reply: &crate::router::Reply<u64>) {
        let answer = self.answers.remove(&reply.id);
        let Some(&(case, _)) = usize::try_from(reply.data)
            .ok()
            .and_then(|i| self.calls.get(i))
        else {
            return;
        };
        let (ending, latency) = match reply.cause {
            Cause::Answered { latency } => (crate::cases::Ending::Answered, Some(latency)),
            Cause::TimedOut | Cause::Cancelled => (crate::cases::Ending::TimedOut, None),
            Cause::Relayed | Cause::NoApp => (crate::cases::Ending::NoApp, None),
        };
        let ended = crate::cases::Ended {
            code: reply.code,
            reason: &reply.reason,
            ending,
            latency,
            answer: answer.as_deref(),
        };
        let mismatches = self.loaded.cases[case].judge(&ended);
        self.verdicts[case].count(mismatches, latency);
    }

    /// Count the final replies the core decided.
    fn replies(&mut self) {
        while let Some(reply) = self.router.poll_reply() {
            if let (Cause::Answered { latency }, Some(m)) = (reply.cause, &self.metrics) {
                m.answered(latency);
            }
            self.stats.reply(clock::now(), reply.code, &reply.cause);
            self.judge(&reply);
            self.open -= 1;
            self.done += 1;
        }
    }
}

/// How many requests a `rate` per second has issued after `elapsed` (the first at 0).
/// Integer nanoseconds, not floats: at exactly [`due_at`]`(n)` this is `n + 1`, so a
/// wake-up at a due time always issues (with floats it could round down, and the loop
/// would wake again at the same instant without issuing: a busy spin, found on the
/// paused clock).
fn issued_by(elapsed: Duration, rate: u64) -> u64 {
    let n = elapsed.as_nanos() * u128::from(rate) / NANOS_PER_SEC;
    u64::try_from(n).unwrap_or(u64::MAX).saturating_add(1)
}

/// When request `n` (from 0) is due at `rate` per second: `ceil(n / rate)` seconds, in
/// nanoseconds.
fn due_at(n: u64, rate: u64) -> Duration {
    let nanos = (u128::from(n) * NANOS_PER_SEC).div_ceil(u128::from(rate.max(1)));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_issued_at_its_due_time_for_every_rate() {
        for rate in [1, 3, 7, 100, 333, 1000, 12_345] {
            for n in 0..2000 {
                let due = due_at(n, rate);
                assert!(issued_by(due, rate) > n, "rate {rate}, request {n}");
                if n > 0 {
                    assert!(
                        issued_by(due - Duration::from_nanos(1), rate) <= n,
                        "rate {rate}, request {n} early"
                    );
                }
            }
        }
    }
}
