//! `evapi-sim`: the simulator as a program. Parses arguments, installs logging (stderr),
//! runs the subcommand and maps the result to an exit code: 0 every expectation held,
//! 1 some failed (listed), 2 a bad scenario file or an I/O error.

mod cli;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    cli::init_logging(args.verbose, args.quiet);
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("evapi-sim: {err:#}");
            ExitCode::from(2)
        }
    }
}
