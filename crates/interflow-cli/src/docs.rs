//! `interflowctl completions <shell>` and `interflowctl man`: shell completion scripts and the
//! man page, generated from the same clap definition the parser uses, so they never drift from
//! the commands. Both write to stdout for packagers and installers to redirect.

use anyhow::Context as _;
use clap::{CommandFactory as _, Subcommand};

use crate::cli::Cli;
use crate::{Ctx, Outcome};

#[derive(Subcommand, Debug, Clone)]
pub enum DocsCommand {
    /// Prints a shell completion script, e.g.
    /// `interflowctl completions bash > /etc/bash_completion.d/interflowctl`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Prints the man page (roff), e.g. `interflowctl man > /usr/local/share/man/man1/interflowctl.1`.
    Man,
}

pub fn run(command: &DocsCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    let mut cmd = Cli::command();
    match command {
        DocsCommand::Completions { shell } => {
            clap_complete::generate(*shell, &mut cmd, "interflowctl", ctx.out);
        }
        DocsCommand::Man => clap_mangen::Man::new(cmd)
            .render(ctx.out)
            .context("writing the man page")?,
    }
    ctx.out.flush().context("writing output")?;
    Ok(Outcome::Success)
}
