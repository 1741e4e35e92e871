//! `warden vault rekey`, and where the offline commands and the server get the vault master
//! key (`--master-key-env VAR`, `--master-key-command CMD`, `--master-key-file FILE`, or
//! `DATA/master.key`).
//!
//! Threat: key material on a terminal, in a log or in argv. The key is only ever named by its
//! public fingerprint; the command's line holds a program, never a key.

use anyhow::Context;
use clap::Subcommand;

use super::DataArg;
use crate::store::{self, DataDir, DataDirError, DatabaseLocation};
use crate::vault::MasterKeySource;

/// Where the vault master key comes from; the data directory's `master.key` by default.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MasterKeyArgs {
    /// Read the vault master key (64 hex characters) from this environment variable instead
    /// of DATA/master.key.
    #[arg(long, value_name = "VAR", conflicts_with = "master_key_command")]
    pub master_key_env: Option<String>,
    /// Run this command and read the vault master key (64 hex characters) from its standard
    /// output, e.g. a KMS/HSM helper. Split on whitespace and run without a shell.
    #[arg(long, value_name = "CMD", conflicts_with = "master_key_file")]
    pub master_key_command: Option<String>,
    /// Read the vault master key (32 bytes, no access for group or others) from this file
    /// instead of DATA/master.key, e.g. a systemd credential (`LoadCredential`).
    #[arg(long, value_name = "FILE", conflicts_with = "master_key_env")]
    pub master_key_file: Option<std::path::PathBuf>,
}

impl DataArg {
    /// The master key source these options name.
    pub fn key_source(&self) -> anyhow::Result<MasterKeySource> {
        let keys = &self.master_key;
        if let Some(var) = &keys.master_key_env {
            return Ok(MasterKeySource::Env(var.clone()));
        }
        if let Some(command) = &keys.master_key_command {
            let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
            anyhow::ensure!(!argv.is_empty(), "--master-key-command is empty");
            return Ok(MasterKeySource::Command(argv));
        }
        if let Some(path) = &keys.master_key_file {
            return Ok(MasterKeySource::File(path.clone()));
        }
        Ok(DataDir::default_key_source(&self.data))
    }

    /// Where the state is: `--database` (or its environment variable), else sled in DATA.
    pub fn location(&self) -> DatabaseLocation {
        DatabaseLocation::from_flag(self.database.as_deref())
    }

    /// Opens the data directory with the chosen master key and database.
    pub fn open(&self) -> anyhow::Result<DataDir> {
        let source = self.key_source()?;
        DataDir::open_at(&self.data, &source, &self.location())
            .with_context(|| format!("opening {}", self.data.display()))
    }
}

#[derive(Subcommand, Debug)]
pub enum VaultCommand {
    /// Replace the vault master key: write a new DATA/master.key (mode 0600) and re-wrap every
    /// credential's data keys under it. Run it with the server stopped; if it is interrupted,
    /// run it again to finish.
    Rekey {
        #[command(flatten)]
        data: DataArg,
    },
}

pub fn run(cmd: VaultCommand) -> anyhow::Result<i32> {
    match cmd {
        VaultCommand::Rekey { data } => {
            if data.master_key.master_key_env.is_some() {
                return Err(DataDirError::RekeyNeedsKeyFile("--master-key-env").into());
            }
            if data.master_key.master_key_command.is_some() {
                return Err(DataDirError::RekeyNeedsKeyFile("--master-key-command").into());
            }
            if data.master_key.master_key_file.is_some() {
                return Err(DataDirError::RekeyNeedsKeyFile("--master-key-file").into());
            }
            let report = store::rekey_master_key(&data.data, &data.location())
                .with_context(|| format!("rekeying {}", data.data.display()))?;
            println!(
                "rekeyed {}: {} credential(s) re-wrapped, {} already under the new key; \
                 new master key {} (fingerprint) in master.key; the old key no longer opens \
                 the vault",
                data.data.display(),
                report.rekeyed,
                report.already_current,
                report.key_id
            );
            Ok(0)
        }
    }
}
