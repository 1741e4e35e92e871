//! Shell completions and man pages generated from the clap definitions (hidden commands
//! the Debian package and `.ci/ops` run at build time): `warden completions SHELL` prints
//! a completion script, `warden man DIR` writes `warden.1` and one page per subcommand.

use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;

/// `warden completions SHELL`.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// `warden man DIR`.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Where to write the pages (created if needed).
    dir: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<i32> {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "warden", &mut std::io::stdout());
    Ok(0)
}

pub fn man(args: ManArgs) -> anyhow::Result<i32> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    // `warden.1` and one `warden-SUB.1` per visible subcommand, recursively.
    clap_mangen::generate_to(super::Cli::command(), dir)
        .with_context(|| format!("writing man pages to {}", dir.display()))?;
    println!("wrote man pages to {}", dir.display());
    Ok(0)
}
