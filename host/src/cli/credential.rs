//! `warden credential`: add and list vault credentials, reconcile a crashed rotation. A secret is read from stdin or a
//! no-echo prompt, never from the command line (argv is visible to every local user).

use std::io::{IsTerminal, Read};

use clap::Subcommand;

use super::DataArg;
use crate::vault::{CredentialKind, NewCredential, Secret, Vault};

/// Largest secret read from stdin. Blocks a runaway pipe.
const MAX_SECRET_INPUT: u64 = 64 << 10;

#[derive(Subcommand, Debug)]
pub enum CredentialCommand {
    /// Add a credential; the secret is read from stdin (or a no-echo prompt).
    Add {
        /// The credential's name.
        name: String,
        /// The account it logs in as.
        #[arg(long)]
        username: String,
        /// `password` or `ssh-key` (an OpenSSH private key).
        #[arg(long, default_value = "password")]
        kind: String,
        /// An admin credential: used only for privileged operations (sudo with its password,
        /// rotation's admin), never for a task's own unprivileged commands or transfers.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        data: DataArg,
    },
    /// List credentials: names, usernames, kinds and whether each is an admin credential.
    List {
        #[command(flatten)]
        data: DataArg,
    },
    /// Resolve a rotation that crashed midway: promote the pending or keep the current
    /// version, whichever logs in to the target.
    Reconcile(super::reconcile::ReconcileArgs),
}

pub async fn run(cmd: CredentialCommand) -> anyhow::Result<i32> {
    match cmd {
        CredentialCommand::Add {
            name,
            username,
            kind,
            admin,
            data,
        } => {
            let kind: CredentialKind = kind.parse()?;
            let dir = data.open()?;
            let vault = Vault::open(&dir.db, dir.master_key)?;
            let secret = read_secret(kind)?;
            let new = NewCredential {
                name: &name,
                username: &username,
                kind,
                admin,
            };
            vault.add_credential(new, secret, crate::vault::UNATTRIBUTED, "created")?;
            let what = if admin {
                "admin credential"
            } else {
                "credential"
            };
            println!("added {what} '{name}' for user '{username}'");
            Ok(0)
        }
        CredentialCommand::List { data } => {
            let dir = data.open()?;
            let vault = Vault::open(&dir.db, dir.master_key)?;
            for info in vault.list()? {
                let role = if info.admin { "admin" } else { "-" };
                println!("{}\t{}\t{}\t{role}", info.name, info.username, info.kind);
            }
            Ok(0)
        }
        CredentialCommand::Reconcile(args) => super::reconcile::run(args).await,
    }
}

fn read_secret(kind: CredentialKind) -> anyhow::Result<Secret> {
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    if std::io::stdin().is_terminal() {
        let prompt = match kind {
            CredentialKind::Password => "password: ",
            CredentialKind::SshKey => {
                "private key (one line per prompt is not supported; pipe it on stdin): "
            }
        };
        let line = zeroize::Zeroizing::new(rpassword::prompt_password(prompt)?);
        bytes.extend_from_slice(line.as_bytes());
    } else {
        std::io::stdin()
            .take(MAX_SECRET_INPUT + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_SECRET_INPUT {
            anyhow::bail!("secret on stdin is over {MAX_SECRET_INPUT} bytes");
        }
        if kind == CredentialKind::Password {
            // A password piped with `echo` ends in a newline that is not part of it.
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
        }
    }
    if bytes.is_empty() {
        anyhow::bail!("empty secret");
    }
    Ok(Secret::from_bytes(std::mem::take(&mut *bytes)))
}
