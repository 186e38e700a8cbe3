//! `evapi-server`: the event socket as a standalone program.
//!
//! Parses arguments, installs logging (stderr), runs [`cli::run`] and maps its result to
//! an exit code: 0 after a clean shutdown, 2 when the server could not start (bad flags,
//! an address that cannot be bound), as every evapi binary.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    if let Some(code) = evapi_cli::generate::if_asked(<cli::Args as clap::CommandFactory>::command)
    {
        return code;
    }
    let args = cli::Args::parse();
    args.verbosity.init(cli::LOG_LEVEL);
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => evapi_cli::exit::fail("evapi-server", &err, evapi_cli::exit::CANNOT_START),
    }
}
