//! `warden target`: register targets with pinned host keys, scan a host's key for an
//! admin to check, list targets. Trust on first use is never automatic: `scan` only
//! prints the key; pinning it is a separate, deliberate `add`.

use std::time::Duration;

use clap::Subcommand;

use super::DataArg;
use crate::targets::{self, Target, TargetStore};

#[derive(Subcommand, Debug)]
pub enum TargetCommand {
    /// Register a target with its pinned SSH host key.
    Add {
        /// The target's name.
        name: String,
        /// `HOST[:PORT]` (port 22 by default; IPv6 in brackets).
        #[arg(long)]
        address: String,
        /// The host key to pin, as an OpenSSH public key line (`ssh-ed25519 AAAA…`).
        #[arg(long = "host-key")]
        host_key: String,
        /// The zone (network) the target lives in.
        #[arg(long, default_value = "default")]
        zone: String,
        /// A tag; repeat for several.
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        data: DataArg,
    },
    /// Print a host's SSH key (and fingerprint) for an admin to check and pin.
    Scan {
        /// `HOST[:PORT]`.
        address: String,
    },
    /// List targets.
    List {
        #[command(flatten)]
        data: DataArg,
    },
}

pub async fn run(cmd: TargetCommand) -> anyhow::Result<i32> {
    match cmd {
        TargetCommand::Add {
            name,
            address,
            host_key,
            zone,
            tags,
            data,
        } => {
            let (host, port) = targets::parse_address(&address)?;
            let target = Target {
                name: name.clone(),
                address: host,
                port,
                host_key,
                zone,
                tags,
            };
            let dir = data.open()?;
            TargetStore::open(&dir.db)?.add(target)?;
            println!("added target '{name}'");
            Ok(0)
        }
        TargetCommand::Scan { address } => {
            let (host, port) = targets::parse_address(&address)?;
            let key = crate::ssh::scan_host_key(&host, port, Duration::from_secs(10)).await?;
            println!("{key}");
            eprintln!("fingerprint: {}", targets::fingerprint(&key)?);
            eprintln!(
                "check it out of band, then: warden target add NAME --address {address} --host-key '{key}'"
            );
            Ok(0)
        }
        TargetCommand::List { data } => {
            let dir = data.open()?;
            for t in TargetStore::open(&dir.db)?.list()? {
                println!(
                    "{}\t{}:{}\t{}\t{}",
                    t.name,
                    t.address,
                    t.port,
                    t.zone,
                    t.tags.join(",")
                );
            }
            Ok(0)
        }
    }
}
