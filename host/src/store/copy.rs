//! Copying every domain table from one database to another (`warden db copy`, the move from
//! sled to PostgreSQL). The audit log is copied by [`crate::audit::copy_log`], which keeps
//! the chain byte for byte.
//!
//! Threat: a copy that silently drops or merges state. The target must be empty; rows are
//! inserted with "must be absent", page by page, so nothing in the target is overwritten.

use super::{Batch, Database, Expect, Scan, StoreError, catalog};

/// Rows read and written per batch.
const PAGE: usize = 256;

/// How many rows of each table were copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<(&'static str, u64)>,
}

/// True if no domain table of `db` holds a row and the audit log is empty.
pub fn is_empty(db: &Database) -> Result<bool, StoreError> {
    for table in catalog::tables() {
        if !db.table(table).scan(&Scan::all().limit(1))?.is_empty() {
            return Ok(false);
        }
    }
    Ok(db.backend().audit_tip()?.last.is_none())
}

/// Copies every row of every domain table from `from` into `to` (which must hold none of
/// those keys).
pub fn copy_tables(from: &Database, to: &Database) -> Result<CopyReport, StoreError> {
    let mut report = CopyReport::default();
    for def in catalog::tables() {
        let source = from.table(def);
        let mut scan = Scan::all().limit(PAGE);
        let mut copied = 0u64;
        loop {
            let rows = source.scan(&scan)?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            let mut next = last.clone();
            next.push(0);
            let mut batch = Batch::new();
            for (key, value) in &rows {
                batch.put(def, key.clone(), value.clone(), Expect::Absent);
            }
            to.apply(&batch)?;
            copied += rows.len() as u64;
            if rows.len() < PAGE {
                break;
            }
            scan.from = Some(next);
        }
        report.tables.push((def.name, copied));
    }
    Ok(report)
}
