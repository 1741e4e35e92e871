//! The PostgreSQL backend (being written): connection pool, migrations, tables, audit rows.

use super::table::{
    AuditQuery, AuditTip, Backend, Batch, Committed, Scan, Seal, StoreError, TableDef,
};

/// A PostgreSQL database holding Warden's state.
pub struct PgBackend {
    url_without_password: String,
}

impl PgBackend {
    /// Connects to `url` and brings the schema up to date.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let _ = url;
        Err(StoreError::Unavailable(
            "the PostgreSQL backend is not built yet".into(),
        ))
    }
}

impl Backend for PgBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }
    fn location(&self) -> String {
        self.url_without_password.clone()
    }
    fn get(&self, _: &'static TableDef, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError::Unavailable("unimplemented".into()))
    }
    fn scan(&self, _: &'static TableDef, _: &Scan) -> Result<super::table::Rows, StoreError> {
        Err(StoreError::Unavailable("unimplemented".into()))
    }
    fn apply(&self, _: &Batch) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("unimplemented".into()))
    }
    fn audit_commit(&self, _: Seal<'_>, _: &[Batch]) -> Result<Committed, StoreError> {
        Err(StoreError::Unavailable("unimplemented".into()))
    }
    fn audit_tip(&self) -> Result<AuditTip, StoreError> {
        Err(StoreError::Unavailable("unimplemented".into()))
    }
    fn audit_range(&self, _: u64, _: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Err(StoreError::Unavailable("unimplemented".into()))
    }
    fn audit_query(&self, _: &AuditQuery) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Err(StoreError::Unavailable("unimplemented".into()))
    }
}

/// What `warden db status` reports about a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbStatus {
    /// The schema version found (0: no Warden schema yet).
    pub schema_version: u32,
    /// The newest schema version this binary knows.
    pub binary_version: u32,
    /// The server's version string.
    pub server_version: String,
    /// The URL without its password.
    pub location: String,
}

/// Connects without changing anything and reports the schema state.
pub fn status(url: &str) -> Result<DbStatus, StoreError> {
    let _ = url;
    Err(StoreError::Unavailable("unimplemented".into()))
}

/// Applies pending migrations; returns the versions before and after.
pub fn migrate(url: &str) -> Result<(u32, u32), StoreError> {
    let _ = url;
    Err(StoreError::Unavailable("unimplemented".into()))
}
