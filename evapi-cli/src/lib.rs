//! Conventions shared by the three binaries (`evapi-server`, `evapi-client`,
//! `evapi-sim`), written once so they cannot drift:
//!
//! - [`Verbosity`]: the `-v`/`-q` flags and the log subscriber (stderr, `RUST_LOG`
//!   overrides), one ladder of levels for every binary.
//! - [`addr`]: one address grammar for every address flag: `IP`, `IP:port`,
//!   `[v6]:port`, `host:port` (and `host`), with a default port.
//! - [`exit`]: the exit codes and how an error is printed.
//! - [`generate`]: man pages and shell completions for packaging (`--generate KIND`).
//!
//! Only the binaries depend on this crate (behind each crate's `cli` feature); the
//! libraries never print and never install a subscriber.

/// `--version` of the binaries: the version and the commit they were built from
/// (`git describe`, "-dirty" with uncommitted changes).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("EVAPI_COMMIT"), ")");

pub mod addr;
pub mod exit;
pub mod generate;

use clap::ArgAction;

/// Log levels from quietest to loudest; `-v` moves one step right, `-q` one step left.
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// The `-v` / `-q` flags, flattened into each binary's arguments.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
#[command(next_help_heading = "Logging")]
pub struct Verbosity {
    /// More logging on stderr, one level per -v (error, warn, info, debug, trace).
    /// RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Less logging on stderr, one level per -q.
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,

    /// Log lines for people (text) or one JSON object per line for log collectors
    /// (json: timestamp, level, message, and the fields such as conidx, connid, peer,
    /// reason).
    #[arg(long, env = "EVAPI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Verbosity {
    /// The level these flags give, starting from the binary's `default` (one of
    /// [`LEVELS`]).
    #[must_use]
    pub fn level(&self, default: &str) -> &'static str {
        let base = LEVELS.iter().position(|l| *l == default).unwrap_or(1);
        let at = (base + usize::from(self.verbose)).saturating_sub(usize::from(self.quiet));
        LEVELS[at.min(LEVELS.len() - 1)]
    }

    /// Install the subscriber: stderr (stdout carries data), colours only on a
    /// terminal, `RUST_LOG` over the flags.
    pub fn init(&self, default: &str) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(self.level(default)));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init(),
            // Span fields (conidx, connid, peer) flattened into each line's fields.
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .init(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ladder_for_every_binary() {
        let v = |verbose, quiet| Verbosity {
            verbose,
            quiet,
            log_format: LogFormat::Text,
        };
        assert_eq!(v(0, 0).level("warn"), "warn");
        assert_eq!(v(1, 0).level("warn"), "info");
        assert_eq!(v(2, 0).level("warn"), "debug");
        assert_eq!(v(9, 0).level("warn"), "trace");
        assert_eq!(v(0, 1).level("warn"), "error");
        assert_eq!(v(0, 5).level("warn"), "error");
        assert_eq!(v(1, 0).level("info"), "debug");
        assert_eq!(v(0, 1).level("info"), "warn");
    }
}
