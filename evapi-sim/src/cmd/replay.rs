//! `evapi-sim replay`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use evapi_cli::exit::FAILED as EXIT_FAILED;
use evapi_proto::IdFields;

use super::shared::{parse_id_fields, OutputArgs};

/// Play a recorded transcript's events (evapi-client proxy --record) to an app, as
/// the node did, and compare its answers with the recorded ones by transaction id.
/// Exit 1 on any difference (beyond --ignore), missing, extra or refused answer.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  evapi-sim replay day.jsonl --bind 127.0.0.1:8448          # then start the app on :8448
  evapi-sim replay day.jsonl --speed 10 --ignore ts --ignore data.host
  evapi-sim replay day.jsonl --speed answers --junit replay.xml --report replay.json")]
pub(crate) struct ReplayArgs {
    /// The transcript (its rotated parts FILE.1, FILE.2, ... follow on their own).
    pub file: PathBuf,
    /// The evapi socket the app connects to.
    #[arg(long, env = "EVAPI_BIND", default_value = "127.0.0.1:8448", value_parser = evapi_cli::addr::evapi)]
    pub bind: std::net::SocketAddr,
    /// A factor on the recorded timing (1: as recorded, 10: ten times faster), max (all
    /// at once) or answers (each event once the one before was answered).
    #[arg(long, env = "EVAPI_SPEED", default_value = "1")]
    pub speed: evapi_sim::replay::Speed,
    /// Longest the replay may take at a --speed factor (the events' span divided by
    /// it); past it the replay is refused before it starts: a transcript's times are
    /// input, and one event at t = 2^64-1 would hold the run for a year.
    #[arg(long, env = "EVAPI_MAX_DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub max_duration: std::time::Duration,
    /// A dotted field path left out of the comparison (repeatable), e.g. ts, data.host.
    #[arg(
        long = "ignore",
        env = "EVAPI_IGNORE",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub ignore: Vec<String>,
    /// How long an answer is awaited (then it is missing; a later one is refused as
    /// late, as Kamailio's fr_inv_timer would).
    #[arg(long, env = "EVAPI_ANSWER_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub answer_timeout: std::time::Duration,
    /// How long to wait for the app to connect.
    #[arg(long, env = "EVAPI_WAIT_APP", default_value = "30s", value_parser = humantime::parse_duration)]
    pub wait_app: std::time::Duration,
    /// Where answers carry the transaction ids, as INDEX,LABEL dotted paths; tried
    /// before tindex/tlabel, data.index/data.label, index/label.
    #[arg(long, env = "EVAPI_ID_FIELDS", value_name = "INDEX,LABEL", value_parser = parse_id_fields)]
    pub id_fields: Option<IdFields>,
    /// Write the JSON report here.
    #[arg(long, env = "EVAPI_REPORT")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub outputs: OutputArgs,
    /// Longest frame, in bytes (also bounds a transcript line).
    #[arg(long, env = "EVAPI_MAX_FRAME", default_value_t = evapi_proto::DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// TLS, tokens, rate limit and keepalive of the evapi socket, as evapi-server's.
    #[command(flatten)]
    pub security: evapi_server::args::SecurityArgs,
}

impl ReplayArgs {
    /// Read the recording, play it to the app that connects, and judge its answers.
    pub(crate) async fn run(&self) -> anyhow::Result<ExitCode> {
        let reader = evapi_proto::AnswerReader::with_fields(self.id_fields.clone());
        let evapi_sim::replay::Recording {
            mut plan,
            framing,
            first_part,
            ..
        } = evapi_sim::replay::read(&self.file, &reader, self.max_frame)?;
        if first_part > 0 {
            eprintln!(
                "evapi-sim replay: {} is gone (the recorder deleted its oldest parts to stay within --record-max-bytes); replaying from part {first_part}",
                self.file.display()
            );
        }
        if plan.gaps > 0 {
            eprintln!(
                "evapi-sim replay: the transcript has {} gap(s) (unframed bytes or lost records): some events may be missing",
                plan.gaps
            );
        }
        let playing = evapi_sim::replay::playing_time(&plan, self.speed);
        if let Some(takes) = playing.filter(|t| *t > self.max_duration) {
            anyhow::bail!(
                "the events span {} at --speed {}: longer than --max-duration {}; replay with --speed max or answers, a higher factor, or raise --max-duration",
                humantime::format_duration(takes),
                self.speed,
                humantime::format_duration(self.max_duration)
            );
        }
        let judge =
            evapi_sim::replay::Judge::new(&mut plan, reader, &self.ignore, self.answer_timeout);
        let mut server = evapi_server::Config {
            framing: framing.unwrap_or_default(),
            max_frame: self.max_frame,
            ..evapi_server::Config::default()
        };
        self.security.apply(&mut server)?;
        let listener = tokio::net::TcpListener::bind(self.bind)
            .await
            .with_context(|| format!("cannot bind evapi address {}", self.bind))?;
        eprintln!(
            "evapi-sim replay: {} events ({} suspended, {} answers recorded); waiting for an app on {}",
            plan.events.len(),
            plan.suspended(),
            plan.answered(),
            listener.local_addr()?
        );
        let report =
            evapi_sim::replay::play(listener, server, plan, judge, self.speed, self.wait_app)
                .await?;
        print!("{}", report.summary());
        if let Some(path) = &self.report {
            std::fs::write(path, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let title = format!("evapi-sim replay {}", self.file.display());
        self.outputs
            .write(|| report.page(&title), || evapi_sim::junit::replay(&report))?;
        Ok(if report.failed() {
            ExitCode::from(EXIT_FAILED)
        } else {
            ExitCode::SUCCESS
        })
    }
}
