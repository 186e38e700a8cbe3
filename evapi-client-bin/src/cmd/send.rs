//! `evapi-client send`: send payloads, then optionally wait for replies.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use evapi_client::Client;
use tokio::io::AsyncBufReadExt as _;

use super::Ctx;

/// Send payloads and exit.
#[derive(Debug, clap::Args)]
pub(crate) struct SendArgs {
    /// Payloads to send, each one message; `-` reads one payload per stdin line.
    #[arg(required = true)]
    pub payloads: Vec<String>,
    /// Then wait for N messages (1 if no number) and print them.
    #[arg(long, env = "EVAPI_EXPECT_REPLY", num_args = 0..=1, default_missing_value = "1", value_name = "N")]
    pub expect_reply: Option<usize>,
    /// How long --expect-reply waits in all.
    #[arg(long, env = "EVAPI_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl SendArgs {
    /// Send, and print the replies asked for.
    pub(crate) async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let Self {
            payloads,
            expect_reply,
            timeout,
        } = self;
        let (addr, config) = (ctx.addr.as_str(), &ctx.config);
        let mut client = Client::connect(addr, config).await?;
        for payload in payloads {
            if payload == "-" {
                let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
                while let Some(line) = lines.next_line().await.context("cannot read stdin")? {
                    client.send(line.as_bytes()).await?;
                }
            } else {
                client.send(payload.as_bytes()).await?;
            }
        }
        let Some(n) = expect_reply else {
            return refused_meanwhile(&mut client, addr).await;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = std::io::stdout().lock();
        for got in 0..n {
            match tokio::time::timeout_at(deadline, client.recv()).await {
                Ok(Ok(Some(msg))) => {
                    out.write_all(&msg)?;
                    out.write_all(b"\n")?;
                    out.flush()?;
                }
                Ok(Ok(None)) => {
                    anyhow::bail!("connection to {addr} closed after {got} of {n} replies")
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    eprintln!(
                        "evapi-client: {got} of {n} replies within {}",
                        humantime::format_duration(timeout)
                    );
                    return Ok(ExitCode::from(evapi_cli::exit::FAILED));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// How long `send` listens after its payloads for a server that refuses them.
const REFUSAL_GRACE: Duration = Duration::from_millis(150);

/// Success, unless the server refused what was sent within [`REFUSAL_GRACE`]: it closed
/// the connection (an evapi-server closes a client whose bytes break its framing) or
/// sent bytes that are no frame (a TLS alert: the server speaks TLS). Kamailio drops a
/// bad read silently and keeps the connection: nothing to see then.
async fn refused_meanwhile(client: &mut Client, addr: &str) -> anyhow::Result<ExitCode> {
    match tokio::time::timeout(REFUSAL_GRACE, client.recv()).await {
        // Quiet, or an event for us: the server took what we sent.
        Err(_) | Ok(Ok(Some(_))) => Ok(ExitCode::SUCCESS),
        Ok(Ok(None)) => anyhow::bail!(
            "{addr} closed the connection right after the payloads: they were probably refused (does --framing match the server's? see its log)"
        ),
        Ok(Err(e)) => Err(anyhow::Error::from(e).context(format!(
            "{addr} refused the payloads"
        ))),
    }
}
