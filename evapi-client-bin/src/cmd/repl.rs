//! `evapi-client repl`: the interactive prompt (its terminal is `crate::terminal`).

use std::process::ExitCode;

use super::shared::IdArgs;
use super::Ctx;

/// Interactive prompt: incoming messages shown above it, commands to send and answer.
#[derive(Debug, clap::Args)]
pub struct ReplArgs {
    /// No colours (NO_COLOR is respected too).
    #[arg(long, env = "EVAPI_NO_COLOR")]
    pub no_color: bool,
    #[command(flatten)]
    pub ids: IdArgs,
}

impl ReplArgs {
    /// Run the prompt until quit, Ctrl-D or the end of stdin (it owns its runtime).
    pub(crate) fn run(&self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        crate::terminal::run(&ctx.addr, &ctx.config, self.no_color, self.ids.matcher())
    }
}
