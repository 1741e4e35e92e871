//! The PostgreSQL backend (being written): connection pool, migrations, tables, audit rows.

use super::table::{
    AuditBatch, AuditQuery, AuditTip, Backend, Batch, Scan, Seal, StoreError, TableDef,
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
    fn scan(&self, _: &'static TableDef, _: &Scan) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        Err(StoreError::Unavailable("unimplemented".into()))
    }
    fn apply(&self, _: &Batch) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("unimplemented".into()))
    }
    fn audit_commit(
        &self,
        _: Seal<'_>,
        _: &[Batch],
    ) -> Result<(AuditBatch, Vec<Result<(), StoreError>>), StoreError> {
        Err(StoreError::Unavailable("unimplemented".into()))
    }
    fn audit_tip(&self) -> Result<AuditTip, StoreError> {
        Err(StoreError::Unavailable("unimplemented".into()))
    }
    fn audit_range(&self, _: u64, _: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Err(StoreError::Unavailable("unimplemented".into()))
    }
    fn audit_query(&self, _: &AuditQuery) -> Result<Vec<Vec<u8>>, StoreError> {
        Err(StoreError::Unavailable("unimplemented".into()))
    }
}
