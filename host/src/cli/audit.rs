//! `warden audit`: verify the hash chain, or print records as JSON lines.

use clap::Subcommand;

use super::DataArg;
use crate::audit::{self, AuditFilter, AuditLog};

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Re-walk the chain; print the record count, or name the first bad record and fail.
    /// With `--export FILE --server-key PUB`: check an exported stream offline instead.
    Verify {
        #[command(flatten)]
        data: DataArg,
        /// An exported stream (a file sink's JSON lines) to check instead of the data directory.
        #[arg(long, requires = "server_key")]
        export: Option<std::path::PathBuf>,
        /// The server's audit public key (hex, or a file holding it; `warden audit server-key`).
        #[arg(long)]
        server_key: Option<String>,
    },
    /// Print the public key that verifies this server's audit checkpoints (hex).
    ServerKey {
        #[command(flatten)]
        data: DataArg,
    },
    /// Print records as JSON lines.
    Show {
        /// Only records of this run.
        #[arg(long)]
        run: Option<String>,
        /// Only records of this action (e.g. `ssh.exec`).
        #[arg(long)]
        action: Option<String>,
        #[command(flatten)]
        data: DataArg,
    },
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<i32> {
    match cmd {
        AuditCommand::Verify {
            export: Some(file),
            server_key: Some(key),
            ..
        } => crate::notify::export_verify::run_cli(&file, &key),
        AuditCommand::ServerKey { data } => {
            let dir = data.open()?;
            println!("{}", hex::encode(dir.server_key.verifying_key().as_bytes()));
            Ok(0)
        }
        AuditCommand::Verify { data, .. } => {
            let dir = data.open()?;
            match audit::verify(&dir.db, &dir.server_key.verifying_key()) {
                Ok(report) => {
                    println!("audit log OK: {} records", report.count);
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("audit log BROKEN: {e}");
                    Ok(1)
                }
            }
        }
        AuditCommand::Show { run, action, data } => {
            let dir = data.open()?;
            let log = AuditLog::open(&dir.db, dir.server_key)?;
            let mut filter = AuditFilter {
                run_id: run,
                action,
                ..AuditFilter::default()
            };
            // Page by page, so a long log is printed whole without loading it at once.
            loop {
                let page = log.query(&filter)?;
                for record in &page {
                    println!("{}", serde_json::to_string(record)?);
                }
                match page.last() {
                    Some(last) if page.len() >= audit::MAX_QUERY_RECORDS => {
                        filter.after_seq = Some(last.seq);
                    }
                    _ => return Ok(0),
                }
            }
        }
    }
}
