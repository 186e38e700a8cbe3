//! The `evapi-sim` program: one module per subcommand, each with its flags (a
//! `clap::Args` struct) and its `run`; [`Args`] holds the global flags and [`run`] picks
//! the runtime and dispatches. To add a subcommand: a module here with `XArgs` and
//! `run`, a variant in [`Command`], an arm in [`run`]. The logic lives in the
//! `evapi_sim` library; these modules only wire flags, runtime and output.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod demo;
mod load;
mod replay;
mod run;
mod shared;
mod sip;

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
pub(crate) struct Args {
    #[command(flatten)]
    pub verbosity: evapi_cli::Verbosity,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    Demo(demo::DemoArgs),
    Run(run::RunArgs),
    Load(load::LoadArgs),
    Sip(Box<sip::SipArgs>),
    Replay(Box<replay::ReplayArgs>),
}

/// Default log level (see `evapi_cli::Verbosity` for the ladder).
pub(crate) const LOG_LEVEL: &str = "warn";

/// Run the subcommand.
///
/// # Errors
///
/// I/O errors (exit 2).
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The SIP front is one loop that owns its tables; on one thread it needs no
    // cross-thread wake-ups, which is most of what it would spend on two.
    let runtime = if matches!(args.command, Command::Sip(_) | Command::Load(_)) {
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
        Command::Demo(demo) => demo.run(&runtime),
        Command::Run(run) => run.run(&runtime),
        Command::Load(load) => load.run(&runtime),
        Command::Sip(sip) => sip.run(&runtime),
        Command::Replay(replay) => runtime.block_on(replay.run()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Args::command().debug_assert();
    }
}
