//! `phasegate completions`: shell completion scripts, generated from the command definitions.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, Exit};

/// Print a shell completion script.
///
/// bash: `phasegate completions bash > ~/.local/share/bash-completion/completions/phasegate`;
/// zsh: `phasegate completions zsh > "${fpath[1]}/_phasegate"`;
/// fish: `phasegate completions fish > ~/.config/fish/completions/phasegate.fish`.
#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

impl CompletionsArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let mut command = Cli::command();
        clap_complete::generate(
            self.shell,
            &mut command,
            "phasegate",
            &mut std::io::stdout(),
        );
        Ok(Exit::Success)
    }
}
