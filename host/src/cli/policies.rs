//! `warden policies export DIR`: the built-in Cedar schema and policies written out, as the
//! starting point of a directory for `warden serve --policies DIR`.
//!
//! Threat: an export that overwrites an administrator's edited policies. Every file is
//! created new; an existing file stops the export with its name.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum PoliciesCommand {
    /// Write the built-in schema, policies and their README into DIR (created if needed;
    /// existing files are never overwritten), and print the set's digest.
    Export {
        /// Where to write them.
        dir: PathBuf,
    },
}

pub fn run(cmd: PoliciesCommand) -> anyhow::Result<i32> {
    match cmd {
        PoliciesCommand::Export { dir } => {
            let written = crate::policy::export_builtin(&dir)
                .map_err(|e| anyhow::anyhow!("{e}; export into an empty or new directory"))?;
            for file in &written {
                println!("wrote {}", file.display());
            }
            let engine = crate::policy::PolicyEngine::load(&dir)?;
            println!(
                "built-in policy set exported to {} (sha256 {}); serve it with --policies {}",
                dir.display(),
                engine.digest(),
                dir.display()
            );
            Ok(0)
        }
    }
}
