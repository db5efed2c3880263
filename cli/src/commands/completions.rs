//! `loupe completions bash|zsh|fish`: a completion script on stdout.

use clap::CommandFactory;
use clap_complete::Shell as Target;

use crate::cli::{Cli, Shell};
use crate::error::CliError;
use crate::exit;

/// Prints the completion script for `shell`.
pub fn run(shell: Shell) -> Result<u8, CliError> {
    let target = match shell {
        Shell::Bash => Target::Bash,
        Shell::Zsh => Target::Zsh,
        Shell::Fish => Target::Fish,
    };
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(target, &mut command, "loupe", &mut out);
    crate::output::print_text(&String::from_utf8_lossy(&out))?;
    Ok(exit::OK)
}
