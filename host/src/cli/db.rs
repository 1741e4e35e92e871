//! `warden db`: the state's database. `status` (which backend, where, schema version),
//! `migrate` (bring a PostgreSQL schema up to this binary's), `grants` (the SQL for the
//! server's role), `copy` (move an embedded sled data directory into an empty PostgreSQL
//! database, audit chain included and verified).

use anyhow::{Context, bail};
use clap::Subcommand;

use super::DataArg;
use crate::audit;
use crate::store::{self, DatabaseLocation, postgres};

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Show which database holds the state, where, and its schema version.
    Status {
        #[command(flatten)]
        data: DataArg,
    },
    /// Apply pending schema migrations to a PostgreSQL database (`serve` also does at start).
    Migrate {
        /// The database (`postgres://user@host/db`).
        #[arg(
            long,
            value_name = "URL",
            env = "WARDEN_DATABASE_URL",
            hide_env_values = true
        )]
        database: String,
    },
    /// Print the SQL that grants a server role what `warden serve` needs and no more (no
    /// UPDATE, DELETE or TRUNCATE of audit rows); run it as the schema owner.
    Grants {
        /// The role the servers connect as (a plain lower-case identifier).
        #[arg(long, default_value = postgres::SERVER_ROLE)]
        role: String,
    },
    /// Copy an embedded data directory's state into an empty PostgreSQL database, keeping
    /// the audit chain byte for byte and verifying it afterwards. Stop the server first.
    Copy {
        /// The data directory whose sled database is copied (its keys stay where they are).
        #[arg(long, value_name = "DIR")]
        from: std::path::PathBuf,
        /// The target database (`postgres://user@host/db`); it must hold no Warden state.
        #[arg(long, value_name = "URL")]
        to: String,
        #[command(flatten)]
        master_key: super::vault::MasterKeyArgs,
    },
}

pub fn run(cmd: DbCommand) -> anyhow::Result<i32> {
    match cmd {
        DbCommand::Status { data } => status(&data),
        DbCommand::Migrate { database } => {
            let (from, to) = postgres::migrate(&database)?;
            if from == to {
                println!("schema is at version {to}; nothing to do");
            } else {
                println!("schema migrated from version {from} to {to}");
            }
            Ok(0)
        }
        DbCommand::Grants { role } => {
            print!("{}", postgres::server_role_grants(&role)?);
            Ok(0)
        }
        DbCommand::Copy {
            from,
            to,
            master_key,
        } => copy(from, &to, master_key),
    }
}

fn status(data: &DataArg) -> anyhow::Result<i32> {
    match data.location() {
        DatabaseLocation::Embedded => {
            let db = store::open_database(&data.data, &DatabaseLocation::Embedded)
                .with_context(|| format!("opening {}", data.data.display()))?;
            println!("backend: sled (embedded)");
            println!("location: {}", db.backend().location());
        }
        DatabaseLocation::Postgres(url) => {
            let status = postgres::status(&url)?;
            println!("backend: postgres");
            println!("location: {}", status.location);
            println!("server: {}", status.server_version);
            println!(
                "schema: version {} (this warden: {})",
                status.schema_version, status.binary_version
            );
            if status.schema_version < status.binary_version {
                println!("pending migrations: run `warden db migrate` (or start the server)");
            }
            if status.schema_version > status.binary_version {
                println!("the schema is newer than this warden: upgrade warden");
                return Ok(1);
            }
        }
    }
    Ok(0)
}

fn copy(
    from: std::path::PathBuf,
    to: &str,
    master_key: super::vault::MasterKeyArgs,
) -> anyhow::Result<i32> {
    let source = DataArg {
        data: from,
        database: None,
        master_key,
    };
    let dir = source.open()?;
    let target = store::open_database(dir.root(), &DatabaseLocation::Postgres(to.into()))
        .context("opening the target database")?;
    if !store::copy::is_empty(&target)? {
        bail!("the target database already holds Warden state; copy only into an empty one");
    }
    let key = dir.server_key.verifying_key();
    let before = audit::verify(&dir.db, &key).context("the source audit log does not verify")?;
    let report = store::copy::copy_tables(&dir.db, &target)?;
    let copied = audit::copy_log(&dir.db, &target, &dir.server_key)?;
    let after = audit::verify(&target, &key).context("the copied audit log does not verify")?;
    if after != before || copied != before.count {
        bail!(
            "the copied audit log differs: {} records (head {:?}) became {} (head {:?})",
            before.count,
            before.head_hash,
            after.count,
            after.head_hash
        );
    }
    for (table, rows) in &report.tables {
        println!("{table}: {rows} rows");
    }
    println!(
        "audit: {} records, chain verified (head {})",
        after.count,
        after.head_hash.as_deref().unwrap_or("-")
    );
    println!(
        "copied {} into {}; serve it with --data {} --database <URL>",
        dir.root().display(),
        target.backend().location(),
        dir.root().display()
    );
    Ok(0)
}
