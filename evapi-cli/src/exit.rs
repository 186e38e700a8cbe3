//! Exit codes, the same in every binary.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | a run that failed: an expectation, a lost connection, a failed call |
//! | 2 | cannot start: bad flags, a bad file, an address that cannot be used |
//! | 130 | interrupted (Ctrl-C) where a run reports what it had |

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// A run that failed (expectations, lost connection).
pub const FAILED: u8 = 1;
/// Cannot start: bad flags, bad file, address unavailable. clap's own usage errors
/// exit with 2 too.
pub const CANNOT_START: u8 = 2;

/// Interrupted (Ctrl-C) after reporting what was done, as shells report SIGINT.
pub const INTERRUPTED: u8 = 130;

/// Print `err` with its causes (`{:#}`) after the program's name, and give `code`.
#[must_use]
pub fn fail(program: &str, err: &anyhow::Error, code: u8) -> ExitCode {
    eprintln!("{program}: {err:#}");
    ExitCode::from(code)
}
