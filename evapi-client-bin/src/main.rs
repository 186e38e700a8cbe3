//! `evapi-client`: talk to an evapi socket (ours or Kamailio's) from a terminal or a script.
//!
//! Parses arguments, installs logging (stderr), runs the subcommand and maps the result
//! to the documented exit code: 0 success, 1 expectation failed, 2 usage or I/O error.

mod cmd;
mod metrics;
mod repl;
mod script;
mod terminal;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if let Some(code) = evapi_cli::generate::if_asked(<cmd::Args as clap::CommandFactory>::command)
    {
        return code;
    }
    let args = cmd::Args::parse();
    args.verbosity.init(cmd::LOG_LEVEL);
    match cmd::run(args) {
        Ok(code) => code,
        Err(err) if cmd::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) if cmd::is_unreachable(&err) => {
            eprintln!(
                "evapi-client: {err:#} (is the server up? --wait 10s keeps retrying until it is)"
            );
            ExitCode::from(evapi_cli::exit::CANNOT_START)
        }
        Err(err) => evapi_cli::exit::fail("evapi-client", &err, evapi_cli::exit::CANNOT_START),
    }
}
