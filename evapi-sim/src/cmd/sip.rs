//! `evapi-sim sip`.

use std::process::ExitCode;

use anyhow::Context as _;
use evapi_cli::exit::CANNOT_START as EXIT_BAD_SCENARIO;
use evapi_proto::{Framing, IdFields};
use evapi_sim::router::RouterConfig;
use evapi_sim::template::Template;

use super::shared::{parse_id_fields, OutputArgs};

/// Real SIP over UDP (for sipp): INVITEs are suspended and resumed by the apps on the
/// evapi socket. Counters are printed on SIGINT/SIGTERM.
#[derive(Debug, clap::Args)]
pub(crate) struct SipArgs {
    /// UDP address for SIP (the port defaults to 5060).
    #[arg(long, env = "EVAPI_LISTEN", default_value = "127.0.0.1:5060", value_parser = evapi_cli::addr::sip)]
    pub listen: std::net::SocketAddr,
    /// TCP address of the evapi socket (the port defaults to 8448).
    #[arg(long, env = "EVAPI_BIND", default_value = "127.0.0.1:8448", value_parser = evapi_cli::addr::evapi)]
    pub bind: std::net::SocketAddr,
    /// Framing of the evapi socket (Kamailio's netstring_format: netstring=1, bare=0).
    #[arg(long, env = "EVAPI_FRAMING", default_value = "netstring")]
    pub framing: Framing,
    /// Apps that may connect to the evapi socket at once (Kamailio's max_clients).
    #[arg(long, env = "EVAPI_MAX_CLIENTS", default_value_t = evapi_server::config::DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,
    /// Workers for message-received (0: run it on the connection's task, the fastest
    /// for the simulator, whose route only hands the answer over).
    #[arg(long, env = "EVAPI_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// Final code when fr_inv_timer fires.
    #[arg(long, env = "EVAPI_CODE_ON_TIMEOUT", default_value_t = evapi_sim::tm::DEFAULT_TIMEOUT_CODE)]
    pub code_on_timeout: u16,
    /// Final response timeout of an INVITE (Kamailio's fr_inv_timer).
    #[arg(long, env = "EVAPI_FR_INV_TIMER", default_value = "120s", value_parser = humantime::parse_duration)]
    pub fr_inv_timer: std::time::Duration,
    /// Event template (Kamailio pseudo-variables).
    #[arg(long, env = "EVAPI_EVENT", default_value = evapi_sim::scenario::DEFAULT_EVENT)]
    pub event: String,
    /// Send each event to the first app with this tag (evapi_async_unicast) instead of
    /// to all apps.
    #[arg(
        long,
        env = "EVAPI_UNICAST",
        value_name = "TAG",
        conflicts_with = "multicast"
    )]
    pub unicast: Option<String>,
    /// Send each event to every app with this tag (evapi_async_multicast).
    #[arg(long, env = "EVAPI_MULTICAST", value_name = "TAG")]
    pub multicast: Option<String>,
    /// Where answers carry the transaction ids, as INDEX,LABEL dotted paths (e.g.
    /// tr_index,tr_label); tried before tindex/tlabel, data.index/data.label, index/label.
    #[arg(long, env = "EVAPI_ID_FIELDS", value_name = "INDEX,LABEL", value_parser = parse_id_fields)]
    pub id_fields: Option<IdFields>,
    /// INVITEs waiting for their final reply at once; more are answered 503 Service
    /// Unavailable without a transaction, so a flood cannot grow memory without bound.
    #[arg(long, env = "EVAPI_MAX_TRANSACTIONS", default_value_t = DEFAULT_MAX_TRANSACTIONS)]
    pub max_transactions: usize,
    /// Longest SIP request taken, in bytes; a longer one is answered 513 Message Too
    /// Large at once and makes no transaction, so what the transactions hold stays a
    /// small multiple of this times --max-transactions.
    #[arg(long, env = "EVAPI_MAX_REQUEST_BYTES", default_value_t = evapi_sim::front::DEFAULT_MAX_REQUEST_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(512..=65535))]
    pub max_request_bytes: usize,
    /// Reason phrase when the app's answer has none, built on the way back, e.g.
    /// 'decided by app $evapi(conidx) for $rU' (default: the code's usual phrase).
    #[arg(long, env = "EVAPI_REASON", value_name = "TEMPLATE")]
    pub reason: Option<String>,
    /// Which app of the --unicast tag gets each event: first (as Kamailio),
    /// round-robin, least-queued, or hash (by Call-ID: a call stays on one app).
    #[arg(long, env = "EVAPI_UNICAST_POLICY", default_value = "first", value_parser = parse_policy)]
    pub unicast_policy: evapi_server::UnicastPolicy,
    /// When an INVITE's event reaches no app, answer it at once with this code (e.g.
    /// 503) instead of holding it until --fr-inv-timer, as Kamailio does.
    #[arg(long, env = "EVAPI_NO_APP_REPLY", value_name = "CODE")]
    pub no_app_reply: Option<u16>,
    /// Seconds in a Retry-After header on every 503 (no app, or --max-transactions).
    #[arg(long, env = "EVAPI_RETRY_AFTER", value_name = "SECS")]
    pub retry_after: Option<u32>,
    /// Serve Prometheus metrics (the socket's and the transactions') at GET /metrics,
    /// and the socket's admin API, on this address.
    #[arg(long, env = "EVAPI_METRICS", value_parser = evapi_cli::addr::evapi)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Bearer token for admin requests on --metrics (required for them off loopback).
    #[arg(long, env = "EVAPI_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
    /// Most retransmissions of one final response (RFC 3261 Timer G gives 10 before
    /// Timer H). Each goes to whatever address the INVITE came from: lower it when
    /// the SIP port is reachable by others (a forged source makes us a reflector).
    #[arg(long, env = "EVAPI_FINAL_RETRANSMITS", default_value_t = evapi_sim::ist::DEFAULT_FINAL_RETRANSMITS)]
    pub final_retransmits: u32,
    /// Send 100 Trying for an INVITE whose final response is not there this long after
    /// it came (RFC 3261 section 17.2.1 requires one unless the answer comes within
    /// 200 ms); a retransmitted INVITE gets it at once. 0s: at once, always.
    #[arg(long, env = "EVAPI_TRYING_AFTER", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub trying_after: std::time::Duration,
    /// Receive buffer of the SIP socket, in bytes: what a burst can queue while the
    /// simulator is busy. Past net.core.rmem_max it needs CAP_NET_ADMIN (root); the
    /// size obtained is printed, and datagrams dropped when it is full are counted
    /// ("kernel drops").
    #[arg(long, env = "EVAPI_SIP_RCVBUF", default_value_t = evapi_sim::udp::DEFAULT_RCVBUF)]
    pub sip_rcvbuf: usize,
    /// TLS, tokens, rate limit and keepalive of the evapi socket, as evapi-server's.
    #[command(flatten)]
    pub security: evapi_server::args::SecurityArgs,
    /// On exit: the HTML report and the JUnit health checks (no drops, timeouts,
    /// refused or invalid answers, undelivered events, unacknowledged finals).
    #[command(flatten)]
    pub outputs: OutputArgs,
}

/// Default `--max-transactions`: 100,000 waiting INVITEs (a few hundred MB at most,
/// most of it the kept headers).
const DEFAULT_MAX_TRANSACTIONS: usize = 100_000;

fn parse_policy(s: &str) -> Result<evapi_server::UnicastPolicy, String> {
    evapi_server::UnicastPolicy::from_name(s)
        .ok_or_else(|| format!("{s:?}: expected first, round-robin, least-queued or hash"))
}

impl SipArgs {
    /// The SIP front over UDP with its embedded socket, until SIGINT or SIGTERM; its
    /// counters printed and written where asked.
    pub(crate) fn run(&self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
        let Some(mut options) = sip_options(self) else {
            return Ok(ExitCode::from(EXIT_BAD_SCENARIO));
        };
        self.security.apply(&mut options.server)?;
        let (listen, bind) = (&self.listen, &self.bind);
        let counters = runtime.block_on(async {
            let socket = tokio::net::UdpSocket::bind(listen)
                .await
                .with_context(|| format!("cannot bind SIP address {listen}"))?;
            let rcvbuf = evapi_sim::udp::size_receive_buffer(&socket, self.sip_rcvbuf);
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("cannot bind evapi address {bind}"))?;
            if let Some(addr) = self.metrics {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind metrics address {addr}"))?;
                eprintln!("metrics on http://{}/metrics", l.local_addr()?);
                options.metrics = Some((l, self.control_token.clone().map(Into::into)));
            }
            eprintln!(
                "SIP on udp:{} , evapi socket on {}",
                socket.local_addr()?,
                listener.local_addr()?
            );
            eprintln!("SIP receive buffer: {rcvbuf} bytes");
            anyhow::Ok(
                evapi_sim::uas::run(socket, listener, options, evapi_ops::signal::terminated())
                    .await,
            )
        })?;
        print!("{}", counters.summary());
        self.outputs
            .write(|| counters.page(), || evapi_sim::junit::sip(&counters))?;
        Ok(ExitCode::SUCCESS)
    }
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
            max_request_bytes: sip.max_request_bytes,
        },
        metrics: None,
    })
}
