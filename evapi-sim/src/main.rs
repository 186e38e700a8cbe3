//! `evapi-sim`: the simulator as a program. Parses arguments, installs logging (stderr),
//! runs the subcommand and maps the result to an exit code: 0 every expectation held,
//! 1 some failed (listed), 2 a bad scenario file or an I/O error.

mod cmd;
mod progress;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc (its version 2, see the workspace manifest) gives memory freed after a burst
/// back to the system (glibc's malloc kept it: RSS stayed at the burst's peak); see
/// docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if let Some(code) = evapi_cli::generate::if_asked(<cmd::Args as clap::CommandFactory>::command)
    {
        return code;
    }
    let args = cmd::Args::parse();
    args.verbosity.init(cmd::LOG_LEVEL);
    match cmd::run(args) {
        Ok(code) => code,
        Err(err) => evapi_cli::exit::fail("evapi-sim", &err, evapi_cli::exit::CANNOT_START),
    }
}
