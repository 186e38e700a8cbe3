//! `evapi-server`: the event socket as a standalone program.
//!
//! Parses arguments, installs logging (stderr), runs [`cli::run`] and maps its result to
//! an exit code: 0 after a clean shutdown, 1 when the server could not start.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    cli::init_logging(args.verbose, args.quiet);
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("evapi-server: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
