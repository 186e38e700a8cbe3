//! `evapi-client proxy`: a recording proxy between a node and its apps.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::shared::{finish_recording, RecordingArgs};
use super::Ctx;

/// A transparent proxy between a node's evapi socket (--upstream) and its apps,
/// recording every frame both ways to a transcript (--record; format: transcript.md in
/// the docs, /usr/share/doc/evapi-client when packaged).
///
/// Point the apps at --listen instead of the node. Bytes pass unchanged; a copy of
/// each direction is framed (--framing) to timestamp whole frames. Ends on Ctrl-C
/// or SIGTERM, with the transcript flushed.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  evapi-client proxy --listen 127.0.0.1:8449 --upstream 127.0.0.1:8448 --record day.jsonl
  evapi-client proxy --listen 127.0.0.1:8449 --upstream 10.0.0.5:8448 \\
      --record /var/log/evapi/day.jsonl --rotate-bytes 100000000   # day.jsonl, day.jsonl.1, ...
  evapi-sim replay day.jsonl                        # then: play it to an app")]
pub(crate) struct ProxyArgs {
    /// Where apps connect.
    #[arg(long, env = "EVAPI_LISTEN", value_parser = evapi_cli::addr::evapi_text)]
    pub listen: String,
    /// The node's evapi socket.
    #[arg(long, env = "EVAPI_UPSTREAM", value_parser = evapi_cli::addr::evapi_text)]
    pub upstream: String,
    /// Write the transcript here (without it the proxy only forwards).
    #[arg(long, env = "EVAPI_RECORD", value_name = "FILE")]
    pub record: Option<PathBuf>,
    #[command(flatten)]
    pub recording: RecordingArgs,
    /// Apps connected through the proxy at once; past it the connection quiet the
    /// longest (no byte either way) is closed to make room for the new one.
    #[arg(long, env = "EVAPI_MAX_CLIENTS", default_value_t = evapi_record::proxy::DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,
    /// Close a connection with no byte either way for this long (default: never).
    #[arg(long, env = "EVAPI_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
}

impl ProxyArgs {
    /// Forward (and record) until SIGINT or SIGTERM.
    pub(crate) async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let recorder = match self.record {
            Some(path) => {
                Some(
                    self.recording
                        .recorder(path, "proxy", &self.upstream, ctx.framing)?,
                )
            }
            None => None,
        };
        let config = evapi_record::proxy::ProxyConfig {
            upstream: self.upstream,
            framing: ctx.framing,
            max_frame: ctx.max_frame,
            max_clients: self.max_clients,
            connect_timeout: ctx.connect_timeout,
            idle_timeout: self.idle_timeout,
        };
        forward(&self.listen, config, recorder).await
    }
}

async fn forward(
    listen: &str,
    config: evapi_record::proxy::ProxyConfig,
    recorder: Option<evapi_record::recorder::Recorder>,
) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!(
        "evapi-client proxy: apps connect to {}, forwarded to {}{}",
        listener
            .local_addr()
            .map_or_else(|_| listen.to_owned(), |a| a.to_string()),
        config.upstream,
        if recorder.is_some() {
            ", recording"
        } else {
            ""
        },
    );
    let recorder = recorder.map(Arc::new);
    let counts = evapi_record::proxy::run(
        listener,
        config,
        recorder.clone(),
        evapi_ops::signal::terminated(),
    )
    .await;
    eprintln!(
        "evapi-client proxy: {} connection(s), {} refused; frames from the node {}, from apps {}",
        counts.connections.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
        counts.node_frames.load(Ordering::Relaxed),
        counts.app_frames.load(Ordering::Relaxed),
    );
    if let Some(recorder) = recorder {
        let recorder = Arc::try_unwrap(recorder)
            .map_err(|_| anyhow::anyhow!("a connection still holds the transcript"))?;
        finish_recording(recorder).await?;
    }
    Ok(ExitCode::SUCCESS)
}
