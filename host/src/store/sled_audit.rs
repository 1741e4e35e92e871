//! The audit log in sled: tree [`RECORDS`] maps big-endian `seq` to the record's canonical
//! JSON (so sled iterates in sequence order), tree [`META`] holds the signed checkpoint under
//! [`CHECKPOINT_KEY`].
//!
//! One commit = one multi-tree transaction for the records and checkpoint, then the `then`
//! batches (each its own transaction, after the records, so the sled log can lose them with or
//! after their records but never keep them without), then one flush. sled's directory lock
//! makes this process the only writer.

use super::sled_backend::{SledBackend, sled_error};
use super::table::{AuditBatch, AuditQuery, AuditTip, Batch, Seal, StoreError, TableDef};

/// Tree of records by big-endian seq.
pub const RECORDS: TableDef = TableDef {
    name: "audit",
    columns: &[],
};
/// Tree of the signed checkpoint.
pub const META: TableDef = TableDef {
    name: "audit_meta",
    columns: &[],
};
/// The checkpoint's key in [`META`].
pub const CHECKPOINT_KEY: &[u8] = b"head";

pub(crate) fn commit(
    backend: &SledBackend,
    seal: Seal<'_>,
    then: &[Batch],
) -> Result<(AuditBatch, Vec<Result<(), StoreError>>), StoreError> {
    let tip = tip(backend)?;
    let sealed = seal(&tip).map_err(StoreError::Io)?;
    if sealed.rows.is_empty() {
        return Ok((sealed, Vec::new()));
    }
    let mut batch = Batch::new();
    for row in &sealed.rows {
        batch.put(
            &RECORDS,
            row.seq.to_be_bytes().to_vec(),
            row.canonical.clone(),
            super::table::Expect::Absent,
        );
    }
    batch.put(
        &META,
        CHECKPOINT_KEY.to_vec(),
        sealed.checkpoint.clone(),
        super::table::Expect::Any,
    );
    backend.apply_unflushed(&batch)?;
    let outcomes = then
        .iter()
        .map(|batch| backend.apply_unflushed(batch))
        .collect();
    // One fsync for the records, the checkpoint and the writes that follow them.
    backend.flush()?;
    Ok((sealed, outcomes))
}

pub(crate) fn tip(backend: &SledBackend) -> Result<AuditTip, StoreError> {
    let last = backend
        .tree(RECORDS.name)?
        .last()
        .map_err(sled_error)?
        .map(|(_, v)| v.to_vec());
    let checkpoint = backend
        .tree(META.name)?
        .get(CHECKPOINT_KEY)
        .map_err(sled_error)?
        .map(|v| v.to_vec());
    Ok(AuditTip { last, checkpoint })
}

pub(crate) fn range(
    backend: &SledBackend,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let mut rows = Vec::new();
    for item in backend.tree(RECORDS.name)?.range(from.to_be_bytes()..) {
        if rows.len() >= limit {
            break;
        }
        let (key, value) = item.map_err(sled_error)?;
        // A key that is not 8 bytes is reported as seq u64::MAX: verification flags it.
        let seq = <[u8; 8]>::try_from(key.as_ref()).map_or(u64::MAX, u64::from_be_bytes);
        rows.push((seq, value.to_vec()));
    }
    Ok(rows)
}

/// Scans the log for matching records (no index yet).
pub(crate) fn query(backend: &SledBackend, query: &AuditQuery) -> Result<Vec<Vec<u8>>, StoreError> {
    let from = query.after_seq.map_or(0, |s| s.saturating_add(1));
    let mut found = Vec::new();
    for item in backend.tree(RECORDS.name)?.range(from.to_be_bytes()..) {
        if found.len() >= query.limit {
            break;
        }
        let (_, value) = item.map_err(sled_error)?;
        let Ok(fields) = serde_json::from_slice::<QueryFields>(&value) else {
            continue;
        };
        if fields.matches(query) {
            found.push(value.to_vec());
        }
    }
    Ok(found)
}

/// The fields of a stored record that a query filters on.
#[derive(serde::Deserialize)]
struct QueryFields {
    time_ms: u64,
    run_id: Option<String>,
    actor: String,
    action: String,
    target: Option<String>,
}

impl QueryFields {
    fn matches(&self, q: &AuditQuery) -> bool {
        (q.run_id.is_none() || q.run_id == self.run_id)
            && q.actor.as_ref().is_none_or(|a| *a == self.actor)
            && q.action.as_ref().is_none_or(|a| *a == self.action)
            && (q.resource.is_none() || q.resource == self.target)
            && q.since_ms.is_none_or(|t| self.time_ms >= t)
            && q.until_ms.is_none_or(|t| self.time_ms <= t)
    }
}
