//! The schema's versions, in the binary, applied in order inside one transaction that holds
//! an advisory lock (two servers starting at once do not race), recorded in
//! `warden.schema_version`. A database whose schema is newer than this binary's is refused.
//!
//! A database that is already current is only read (no DDL), so `warden serve` can connect
//! as a role that may not create anything, after the owner ran `warden db migrate`.
//!
//! Threat: a server writing through a schema it does not understand (a newer Warden's), and
//! a server role able to rewrite the audit log: [`server_role_grants`] gives that role no
//! UPDATE, DELETE or TRUNCATE on it, and migration 1's trigger refuses them for every role.

use deadpool_postgres::Pool;

use super::Failure;
use deadpool_postgres::GenericClient;

use super::tables::TABLES;
use crate::store::table::StoreError;

/// One schema version.
struct Migration {
    version: u32,
    sql: &'static str,
}

/// Every migration, oldest first. Never edit a released one: add the next.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("sql/0001_initial.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("sql/0002_bridges.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("sql/0003_triggers.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("sql/0004_console.sql"),
    },
];

/// The schema version this binary writes.
pub const BINARY_SCHEMA_VERSION: u32 = 4;

/// The advisory lock that serializes migrations ("WARDEN" and 1, as an i64).
const MIGRATION_LOCK: i64 = 0x5741_5244_454e_0001;

const BOOTSTRAP: &str = "CREATE SCHEMA IF NOT EXISTS warden; \
     CREATE TABLE IF NOT EXISTS warden.schema_version \
     (version int PRIMARY KEY, applied_ms bigint NOT NULL)";

/// Brings the schema up to date; returns the versions before and after.
pub(super) async fn migrate(pool: &Pool) -> Result<(u32, u32), StoreError> {
    migrate_inner(pool).await.map_err(Failure::into_store)
}

async fn migrate_inner(pool: &Pool) -> Result<(u32, u32), Failure> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let from = current_version(&tx).await?;
    if from > BINARY_SCHEMA_VERSION {
        return Err(newer(from).into());
    }
    if from == BINARY_SCHEMA_VERSION {
        return Ok((from, from));
    }
    tx.batch_execute(BOOTSTRAP).await?;
    for migration in MIGRATIONS.iter().filter(|m| m.version > from) {
        tx.batch_execute(migration.sql).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "applying schema migration {}: {} (does this role own the database? run \
                 `warden db migrate` as the owner)",
                migration.version,
                super::render(&e)
            ))
        })?;
        let version = i32::try_from(migration.version).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO warden.schema_version (version, applied_ms) VALUES ($1, $2)",
            &[&version, &now_ms()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok((from, BINARY_SCHEMA_VERSION))
}

/// The schema version and the server's version string.
pub(super) async fn status(pool: &Pool) -> Result<(u32, String), StoreError> {
    async {
        let client = pool.get().await?;
        let version = current_version(&client).await?;
        let row = client.query_one("SHOW server_version", &[]).await?;
        let server: String = row.try_get(0)?;
        Ok::<_, Failure>((version, server))
    }
    .await
    .map_err(Failure::into_store)
}

async fn current_version(client: &impl GenericClient) -> Result<u32, Failure> {
    let row = client
        .query_one(
            "SELECT to_regclass('warden.schema_version') IS NOT NULL",
            &[],
        )
        .await?;
    if !row.try_get::<_, bool>(0)? {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM warden.schema_version",
            &[],
        )
        .await?;
    let version: i32 = row.try_get(0)?;
    Ok(u32::try_from(version).unwrap_or(0))
}

fn newer(found: u32) -> StoreError {
    StoreError::Incompatible(format!(
        "database schema version {found} is newer than this warden ({BINARY_SCHEMA_VERSION}); \
         upgrade warden"
    ))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The statements an operator runs, as the schema's owner, to let `role` (the one `warden
/// serve` connects as) do its work and nothing more: read and write the generic tables,
/// read and append the audit log (no UPDATE, DELETE or TRUNCATE), update the audit head's
/// checkpoint. Run them again after an upgrade that adds tables. `role` must be a plain
/// lower-case identifier.
pub fn server_role_grants(role: &str) -> Result<String, StoreError> {
    let plain = role
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && role.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && role.len() <= 63;
    if !plain {
        return Err(StoreError::Incompatible(
            "a role name for the grants must be a plain lower-case identifier".into(),
        ));
    }
    let tables = TABLES
        .iter()
        .map(|t| format!("warden.{}", t.name))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!(
        "GRANT USAGE ON SCHEMA warden TO {role};\n\
         GRANT SELECT ON warden.schema_version TO {role};\n\
         GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {role};\n\
         GRANT SELECT, INSERT ON warden.audit_records TO {role};\n\
         REVOKE UPDATE, DELETE, TRUNCATE ON warden.audit_records FROM {role};\n\
         GRANT SELECT, UPDATE ON warden.audit_head TO {role};\n\
         REVOKE INSERT, DELETE, TRUNCATE ON warden.audit_head FROM {role};\n"
    ))
}

/// The grants for the conventional server role name, for the README.
pub const SERVER_ROLE: &str = "warden_server";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_refuse_a_role_name_that_would_inject_sql() {
        for bad in [
            "x; DROP TABLE warden.users",
            "Warden",
            "a b",
            "",
            "1role",
            "r\"x",
        ] {
            assert!(server_role_grants(bad).is_err(), "{bad:?} accepted");
        }
        let text = server_role_grants(SERVER_ROLE).unwrap();
        assert!(text.contains("REVOKE UPDATE, DELETE, TRUNCATE ON warden.audit_records"));
        assert!(!text.contains("UPDATE ON warden.audit_records"));
    }
}
