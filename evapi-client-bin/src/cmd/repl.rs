//! `evapi-client repl`: the interactive prompt (its terminal is `crate::terminal`).

use std::process::ExitCode;

use super::shared::IdArgs;
use super::Ctx;

/// Interactive prompt: incoming messages shown above it, commands to send and answer.
#[derive(Debug, clap::Args)]
pub(crate) struct ReplArgs {
    /// No colours (NO_COLOR is respected too).
    #[arg(long, env = "EVAPI_NO_COLOR")]
    pub no_color: bool,
    /// Bytes of incoming output waiting for a terminal that does not keep up (a hung
    /// SSH session); past it incoming lines are dropped, counted, and the loss is said
    /// once the terminal reads again. A command's own output is never dropped.
    #[arg(long, env = "EVAPI_PRINT_QUEUE_BYTES", default_value_t = crate::terminal::DEFAULT_PRINT_QUEUE_BYTES)]
    pub print_queue_bytes: usize,
    #[command(flatten)]
    pub ids: IdArgs,
}

impl ReplArgs {
    /// Run the prompt until quit, Ctrl-D or the end of stdin (it owns its runtime).
    pub(crate) fn run(&self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        crate::terminal::run(
            &ctx.addr,
            &ctx.config,
            self.no_color,
            self.ids.matcher(),
            self.print_queue_bytes,
        )
    }
}
