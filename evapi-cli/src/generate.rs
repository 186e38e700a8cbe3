//! Man pages and shell completions from the clap definitions, for packaging:
//! `evapi-server --generate man > evapi-server.1`, `--generate bash|zsh|fish`.
//! The flag is handled before argument parsing (so it works beside required
//! subcommands) and is not listed in `--help`.

use std::io::Write;
use std::process::ExitCode;

/// What `--generate` can make.
pub const KINDS: [&str; 4] = ["man", "bash", "zsh", "fish"];

/// When the program was started as `PROGRAM --generate KIND`: write that to stdout
/// and return the exit code; otherwise `None` and the program goes on.
pub fn if_asked(command: impl FnOnce() -> clap::Command) -> Option<ExitCode> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("--generate") {
        return None;
    }
    let kind = args.next().unwrap_or_default();
    let mut cmd = command();
    let name = cmd.get_name().to_owned();
    let mut out = Vec::new();
    let written = match kind.as_str() {
        "man" => clap_mangen::Man::new(cmd).render(&mut out),
        "bash" | "zsh" | "fish" => {
            let shell = match kind.as_str() {
                "bash" => clap_complete::Shell::Bash,
                "zsh" => clap_complete::Shell::Zsh,
                _ => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
            Ok(())
        }
        other => {
            eprintln!(
                "{name}: --generate {other:?}: expected one of {}",
                KINDS.join(", ")
            );
            return Some(ExitCode::from(crate::exit::CANNOT_START));
        }
    };
    let wrote = written.and_then(|()| std::io::stdout().write_all(&out));
    Some(match wrote {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: --generate {kind}: {e}");
            ExitCode::from(crate::exit::CANNOT_START)
        }
    })
}
