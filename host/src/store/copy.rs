//! Copying every domain table from one database to another (`warden db copy`, the move from
//! sled to PostgreSQL). The audit log is copied by [`crate::audit::copy_log`], which keeps
//! the chain byte for byte.
//!
//! Threat: a copy that silently drops or merges state. The target must be empty; rows are
//! inserted with "must be absent", page by page, so nothing in the target is overwritten.

use super::table::Rows;
use super::{Batch, Database, Expect, Scan, StoreError, TableDef, catalog};

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
    for_each_page(from, &mut |def, rows| {
        insert_rows(to, def, rows)?;
        match report.tables.last_mut() {
            Some((name, copied)) if *name == def.name => *copied += rows.len() as u64,
            _ => report.tables.push((def.name, rows.len() as u64)),
        }
        Ok(())
    })?;
    Ok(report)
}

/// Calls `visit` with every row of every domain table of `from`, page by page in key order,
/// table after table (a table's first call may have no rows: an empty table). What a copy
/// and a backup walk.
pub fn for_each_page(
    from: &Database,
    visit: &mut dyn FnMut(&'static TableDef, &Rows) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for def in catalog::tables() {
        let source = from.table(def);
        let mut scan = Scan::all().limit(PAGE);
        loop {
            let rows = source.scan(&scan)?;
            visit(def, &rows)?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            if rows.len() < PAGE {
                break;
            }
            let mut next = last.clone();
            next.push(0);
            scan.from = Some(next);
        }
    }
    Ok(())
}

/// Inserts `rows` into table `def` of `to` in one batch, each only if its key is absent.
pub fn insert_rows(to: &Database, def: &'static TableDef, rows: &Rows) -> Result<(), StoreError> {
    let mut batch = Batch::new();
    for (key, value) in rows {
        batch.put(def, key.clone(), value.clone(), Expect::Absent);
    }
    to.apply(&batch)
}
