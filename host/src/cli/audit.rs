//! `warden audit`: verify the hash chain, or print records as JSON lines.

use clap::Subcommand;

use super::DataArg;
use crate::audit::{self, AuditFilter, AuditLog};

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Re-walk the chain; print the record count, or name the first bad record and fail.
    Verify {
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
        AuditCommand::Verify { data } => {
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
            let filter = AuditFilter {
                run_id: run,
                action,
                ..AuditFilter::default()
            };
            for record in log.query(&filter)? {
                println!("{}", serde_json::to_string(&record)?);
            }
            Ok(0)
        }
    }
}
