//! Flags shared by the binaries that run an event socket (`evapi-server`, and
//! `evapi-sim sip` for its own socket): TLS, tokens, rate limits, keepalive; and
//! loading and reloading what they name. Behind the `cli` feature.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tracing::{info, warn};

use crate::auth::Tokens;
use crate::config::Keepalive;
use crate::rate::Rate;
use crate::tls::TlsFiles;
use crate::{Config, Handle};

/// TLS, authentication, rate and liveness flags, shared with `evapi-sim`'s socket.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "TLS and authentication")]
pub struct SecurityArgs {
    /// Serve TLS with this certificate chain (PEM, leaf first); needs --tls-key.
    /// evapi-server reloads it on SIGHUP.
    #[arg(
        long,
        env = "EVAPI_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "EVAPI_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by a CA in this PEM file (mutual TLS); the
    /// certificate's subject becomes the client's identity (tls_subject).
    #[arg(
        long,
        env = "EVAPI_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// A TLS handshake must finish within this long, or the connection is closed.
    #[arg(long, env = "EVAPI_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// Require a token: one `name token` pair per line (# comments); a client's first
    /// frame must be {"auth":"TOKEN"}. evapi-server reloads it on SIGHUP.
    #[arg(long, env = "EVAPI_AUTH_TOKENS", value_name = "FILE")]
    pub auth_tokens: Option<PathBuf>,

    /// With --auth-tokens, the first frame must arrive within this long.
    #[arg(long, env = "EVAPI_AUTH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub auth_timeout: Duration,

    /// Connections still in their TLS handshake or before their token, at once. They
    /// hold no --max-clients slot; when this many are pending, the oldest of the
    /// address with the most pending is closed to make room, so silent connections
    /// cannot lock the apps out.
    #[arg(long, env = "EVAPI_MAX_PENDING", default_value_t = crate::config::DEFAULT_MAX_PENDING, value_name = "N")]
    pub max_pending: usize,

    /// Pending connections from one IP address at once; past it that address's oldest
    /// pending connection is closed (and counts as a failed authentication).
    #[arg(long, env = "EVAPI_MAX_PENDING_PER_IP", default_value_t = crate::config::DEFAULT_MAX_PENDING_PER_IP, value_name = "N")]
    pub max_pending_per_ip: usize,

    /// Failed authentications per second from all addresses together (app tokens,
    /// --control-token and the admin bearer token alike); past it every token check
    /// waits for the next second (guessing from many addresses is held to about this
    /// rate). 0: no global ceiling.
    #[arg(long, env = "EVAPI_MAX_AUTH_FAILURES", default_value_t = crate::config::DEFAULT_MAX_AUTH_FAILURES, value_name = "PER_SECOND")]
    pub max_auth_failures: u32,

    /// Frames per second one client may send (empty ones included); past it, reading
    /// that client pauses (nothing is lost; TCP pushes back). Default: no limit.
    #[arg(long, env = "EVAPI_MAX_RATE", value_name = "FRAMES")]
    pub max_rate: Option<u32>,

    /// Bytes per second one client may send; as --max-rate.
    #[arg(long, env = "EVAPI_MAX_RATE_BYTES", value_name = "BYTES")]
    pub max_rate_bytes: Option<u64>,

    /// TCP keepalive: silence before the first probe, or "off" for the system's
    /// timings. A dead peer frees its slot after this plus 6 probes.
    #[arg(long, env = "EVAPI_KEEPALIVE", default_value = "60s", value_parser = parse_keepalive)]
    pub keepalive: Duration,

    /// TCP keepalive: time between probes.
    #[arg(long, env = "EVAPI_KEEPALIVE_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,
}

impl SecurityArgs {
    /// The TLS files, when TLS is asked for.
    #[must_use]
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// Fill `config`'s TLS, token, rate and keepalive fields, loading the files.
    ///
    /// # Errors
    ///
    /// A TLS or token file that cannot be loaded, named in the message.
    pub fn apply(&self, config: &mut Config) -> anyhow::Result<()> {
        if let Some(files) = self.tls_files() {
            config.tls = Some(crate::tls::server_config(&files).context("cannot set up TLS")?);
        }
        if let Some(path) = &self.auth_tokens {
            config.tokens =
                Some(Arc::new(Tokens::load(path).with_context(|| {
                    format!("bad token file {}", path.display())
                })?));
        }
        config.handshake_timeout = self.handshake_timeout;
        config.auth_timeout = self.auth_timeout;
        config.max_pending = self.max_pending;
        config.max_pending_per_ip = self.max_pending_per_ip;
        config.max_auth_failures = self.max_auth_failures;
        config.max_rate = Rate {
            frames: self.max_rate,
            bytes: self.max_rate_bytes,
        };
        // "off" parses as zero.
        config.keepalive = (!self.keepalive.is_zero()).then_some(Keepalive {
            idle: self.keepalive,
            interval: self.keepalive_interval,
        });
        Ok(())
    }

    /// Reload the TLS and token files into a running server (on SIGHUP); on an error the
    /// old ones stay, and the error says which file.
    ///
    /// # Errors
    ///
    /// A file that cannot be loaded.
    pub fn reload(&self, handle: &Handle) -> anyhow::Result<()> {
        if let Some(files) = self.tls_files() {
            let tls = crate::tls::server_config(&files).context("TLS not reloaded")?;
            handle.set_tls(tls)?;
            info!("TLS certificate and key reloaded");
        }
        if let Some(path) = &self.auth_tokens {
            let tokens = Tokens::load(path)
                .with_context(|| format!("tokens not reloaded from {}", path.display()))?;
            let n = tokens.len();
            handle.set_tokens(Arc::new(tokens))?;
            info!(tokens = n, "tokens reloaded");
        }
        Ok(())
    }
}

/// A duration, or "off" (zero).
fn parse_keepalive(s: &str) -> Result<Duration, String> {
    if s == "off" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a duration such as 60s, or off"))
}

/// Wait for SIGHUP and reload TLS and tokens each time.
pub async fn reload_on_hangup(security: SecurityArgs, handle: Handle) {
    use evapi_ops::signal::{Signal, Signals};
    let mut signals = Signals::new();
    if !signals.watches_hangup() {
        warn!("cannot listen for SIGHUP; no reloads");
        return;
    }
    loop {
        if signals.recv().await != Signal::Hangup {
            continue;
        }
        info!("SIGHUP: reloading");
        if let Err(e) = security.reload(&handle) {
            warn!(
                error = format!("{e:#}"),
                "reload failed; the previous settings stay"
            );
        }
    }
}
