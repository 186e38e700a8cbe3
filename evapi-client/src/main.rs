//! `evapi-client`: talk to an evapi socket (ours or Kamailio's) from a terminal or a script.
//!
//! Parses arguments, installs logging (stderr), runs the subcommand and maps the result
//! to the documented exit code: 0 success, 1 expectation failed, 2 usage or I/O error.

mod bridge;
mod cli;
mod terminal;
mod top;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if let Some(code) = evapi_cli::generate::if_asked(<cli::Args as clap::CommandFactory>::command)
    {
        return code;
    }
    let args = cli::Args::parse();
    args.verbosity.init(cli::LOG_LEVEL);
    match cli::run(args) {
        Ok(code) => code,
        Err(err) if cli::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) if cli::is_unreachable(&err) => {
            eprintln!(
                "evapi-client: {err:#} (is the server up? --wait 10s keeps retrying until it is)"
            );
            ExitCode::from(evapi_cli::exit::CANNOT_START)
        }
        Err(err) => evapi_cli::exit::fail("evapi-client", &err, evapi_cli::exit::CANNOT_START),
    }
}
