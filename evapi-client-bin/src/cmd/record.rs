//! `evapi-client record`: what a node sends, to a transcript.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use evapi_client::Client;

use super::shared::{finish_recording, RecordingArgs};
use super::Ctx;

/// Record what a node's socket (--addr) sends, as one more listening client, to a
/// transcript (transcript.md in the docs, /usr/share/doc/evapi-client when packaged).
/// Ends on Ctrl-C, SIGTERM, --count or --duration.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  evapi-client --addr 127.0.0.1:8448 record events.jsonl --duration 1h
  evapi-client record events.jsonl --count 1000")]
pub(crate) struct RecordArgs {
    /// The transcript file.
    pub file: PathBuf,
    /// Stop after this many frames.
    #[arg(long, env = "EVAPI_COUNT")]
    pub count: Option<u64>,
    /// Stop after this long.
    #[arg(long, env = "EVAPI_DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub recording: RecordingArgs,
}

impl RecordArgs {
    /// Record until --count, --duration, SIGINT or SIGTERM.
    pub(crate) async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let recorder = self
            .recording
            .recorder(self.file, "record", &ctx.addr, ctx.framing)?;
        let (addr, config, count, duration) =
            (ctx.addr.as_str(), &ctx.config, self.count, self.duration);
        use evapi_proto::transcript::{Entry, Payload, Side};
        let mut client = Client::connect(addr, config).await?;
        recorder.record(
            Entry::Open {
                t: recorder.t(),
                conn: 1,
                peer: "recorder".to_owned(),
            },
            0,
        );
        let until = duration.map(|d| tokio::time::Instant::now() + d);
        let mut frames = 0u64;
        let ended = loop {
            if count.is_some_and(|n| frames >= n) {
                break None;
            }
            let next = tokio::select! {
                next = client.recv() => next,
                () = evapi_ops::signal::terminated() => break None,
                () = async { tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now)).await }, if until.is_some() => break None,
            };
            match next {
                Ok(Some(frame)) => {
                    frames += 1;
                    recorder.record(
                        Entry::Frame {
                            t: recorder.t(),
                            conn: 1,
                            from: Side::Node,
                            payload: Payload::of(&frame),
                        },
                        frame.len(),
                    );
                }
                Ok(None) => break Some(None),
                Err(e) => break Some(Some(e.to_string())),
            }
        };
        if let Some(error) = &ended {
            recorder.record(
                Entry::Close {
                    t: recorder.t(),
                    conn: 1,
                    by: Side::Node,
                    error: error.clone(),
                },
                0,
            );
        }
        eprintln!("evapi-client record: {frames} frame(s) from {addr}");
        finish_recording(recorder).await?;
        match ended {
            Some(Some(error)) => anyhow::bail!("connection to {addr} failed: {error}"),
            _ => Ok(ExitCode::SUCCESS),
        }
    }
}
