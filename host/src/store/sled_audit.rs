//! The audit log in sled: tree [`RECORDS`] maps big-endian `seq` to the record's canonical
//! JSON (so sled iterates in sequence order), tree [`META`] holds the signed checkpoint under
//! [`CHECKPOINT_KEY`].
//!
//! Index trees answer queries without scanning the log: `audit_by_run`, `audit_by_actor`,
//! `audit_by_action` and `audit_by_resource` map `value NUL seq` (big-endian), `audit_by_time`
//! maps `time_ms seq`, all to nothing. They are kept off the commit's path: committed rows wait
//! in memory and are indexed in bulk after acknowledged commits
//! ([`super::Backend::audit_after_commit`]) — one atomic batch per tree, then the "indexed
//! through" mark — and before any query; opening the database indexes what the mark does not
//! cover (the tail a crash lost, or a whole log from before the index). An index only narrows the search: every candidate is
//! decoded and checked against every filter, so a value that itself contains NUL cannot make a
//! record match another's query.
//!
//! One commit = one multi-tree transaction for the records and checkpoint, then the `then`
//! batches (each its own transaction, after the records, so the sled log can lose them with or
//! after their records but never keep them without), then one flush. sled's directory lock
//! makes this process the only writer.

use super::sled_backend::{SledBackend, sled_error};
use super::table::{
    AuditQuery, AuditRow, AuditTip, Batch, Committed, Expect, Seal, StoreError, TableDef,
};

/// Tree of records by big-endian seq.
pub const RECORDS: TableDef = TableDef {
    name: "audit",
    columns: &[],
    columns_of: None,
};
/// Tree of the signed checkpoint.
pub const META: TableDef = TableDef {
    name: "audit_meta",
    columns: &[],
    columns_of: None,
};
/// The checkpoint's key in [`META`].
pub const CHECKPOINT_KEY: &[u8] = b"head";

const BY_RUN: TableDef = TableDef {
    name: "audit_by_run",
    columns: &[],
    columns_of: None,
};
const BY_ACTOR: TableDef = TableDef {
    name: "audit_by_actor",
    columns: &[],
    columns_of: None,
};
const BY_ACTION: TableDef = TableDef {
    name: "audit_by_action",
    columns: &[],
    columns_of: None,
};
const BY_RESOURCE: TableDef = TableDef {
    name: "audit_by_resource",
    columns: &[],
    columns_of: None,
};
const BY_TIME: TableDef = TableDef {
    name: "audit_by_time",
    columns: &[],
    columns_of: None,
};
/// In [`META`]: the big-endian seq up to which the index trees cover the records.
const INDEXED_THROUGH_KEY: &[u8] = b"indexed-through";

/// The index trees.
const INDEXES: [&TableDef; 5] = [&BY_RUN, &BY_ACTOR, &BY_ACTION, &BY_RESOURCE, &BY_TIME];

/// Records indexed per transaction while building the index of an older log.
const INDEX_BUILD_CHUNK: usize = 4096;

/// The index keys of one record, per index tree (in [`INDEXES`] order).
fn index_keys(row: &AuditRow) -> [Option<Vec<u8>>; 5] {
    let seq = row.seq.to_be_bytes();
    let by_value = |value: &str| {
        let mut key = Vec::with_capacity(value.len() + 9);
        key.extend_from_slice(value.as_bytes());
        key.push(0);
        key.extend_from_slice(&seq);
        key
    };
    let mut by_time = row.time_ms.to_be_bytes().to_vec();
    by_time.extend_from_slice(&seq);
    [
        row.run_id.as_deref().map(by_value),
        Some(by_value(&row.actor)),
        Some(by_value(&row.action)),
        row.resource.as_deref().map(by_value),
        Some(by_time),
    ]
}

/// Writes the index entries of `rows` (one atomic batch per tree) and then the mark saying
/// the index covers them. Not flushed: the caller's flush makes it durable.
fn write_index(backend: &SledBackend, rows: &[AuditRow]) -> Result<(), StoreError> {
    let Some(last) = rows.last() else {
        return Ok(());
    };
    let mut batches: [sled::Batch; 5] = Default::default();
    for row in rows {
        for (batch, key) in batches.iter_mut().zip(index_keys(row)) {
            if let Some(key) = key {
                batch.insert(key, &[] as &[u8]);
            }
        }
    }
    for (table, batch) in INDEXES.iter().zip(batches) {
        backend
            .tree(table.name)?
            .apply_batch(batch)
            .map_err(sled_error)?;
    }
    backend
        .tree(META.name)?
        .insert(INDEXED_THROUGH_KEY, &last.seq.to_be_bytes())
        .map_err(sled_error)?;
    Ok(())
}

/// Indexes the records after the "indexed through" mark: what the last commits wrote, the
/// tail a crash left unindexed, or a whole log written before the index existed. Resumable
/// (index entries are idempotent; the mark moves only after its entries); one at a time.
pub(crate) fn ensure_index(backend: &SledBackend) -> Result<(), StoreError> {
    let _one_at_a_time = backend.index_lock();
    let through = backend
        .tree(META.name)?
        .get(INDEXED_THROUGH_KEY)
        .map_err(sled_error)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes);
    let mut from = through.map_or(0, |t| t.saturating_add(1));
    let mut indexed_any = false;
    loop {
        let chunk = range(backend, from, INDEX_BUILD_CHUNK)?;
        let Some(&(last, _)) = chunk.last() else {
            break;
        };
        let rows: Vec<AuditRow> = chunk
            .iter()
            .filter_map(|(seq, bytes)| {
                let fields = serde_json::from_slice::<QueryFields>(bytes).ok()?;
                Some(fields.row(*seq))
            })
            .collect();
        write_index(backend, &rows)?;
        indexed_any = true;
        match last.checked_add(1) {
            Some(next) => from = next,
            None => break,
        }
    }
    // Made durable by the next commit's flush; lost entries are redone from the mark.
    let _ = indexed_any;
    Ok(())
}

pub(crate) fn commit(
    backend: &SledBackend,
    seal: Seal<'_>,
    then: &[Batch],
) -> Result<Committed, StoreError> {
    // Shared with other writes, exclusive of a snapshot (taken before the cache: a snapshot
    // reads the tip while it holds the writes off).
    let _writing = backend.write_guard();
    // This process owns the database (sled locks it), so the tip it wrote last is the tip.
    let mut cache = backend.audit_cache();
    let tip = match &cache.tip {
        Some(tip) => tip.clone(),
        None => tip(backend)?,
    };
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
            Expect::Absent,
        );
    }
    batch.put(
        &META,
        CHECKPOINT_KEY.to_vec(),
        sealed.checkpoint.clone(),
        Expect::Any,
    );
    backend.apply_unflushed(&batch)?;
    let outcomes = then
        .iter()
        .map(|batch| backend.apply_unflushed(batch))
        .collect();
    // One fsync for the records, the checkpoint and the writes that follow them.
    backend.flush()?;
    cache.tip = Some(AuditTip {
        last: sealed.rows.last().map(|r| r.canonical.clone()),
        checkpoint: Some(sealed.checkpoint.clone()),
    });
    cache
        .unindexed
        .extend(sealed.rows.iter().map(|row| AuditRow {
            canonical: Vec::new(),
            ..row.clone()
        }));
    Ok((sealed, outcomes))
}

/// Indexes the rows committed since the last call, from memory, once enough of them wait
/// (`at_least`; 0: all of them). What a crash loses from memory is redone from the mark when
/// the database opens ([`ensure_index`]).
pub(crate) fn index_committed(backend: &SledBackend, at_least: usize) -> Result<(), StoreError> {
    let _one_at_a_time = backend.index_lock();
    let rows = {
        let mut cache = backend.audit_cache();
        if cache.unindexed.is_empty() || cache.unindexed.len() < at_least {
            return Ok(());
        }
        std::mem::take(&mut cache.unindexed)
    };
    if let Err(e) = write_index(backend, &rows) {
        // Put them back in front (seq order), to be retried.
        let mut cache = backend.audit_cache();
        let later = std::mem::replace(&mut cache.unindexed, rows);
        cache.unindexed.extend(later);
        return Err(e);
    }
    Ok(())
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

/// The records matching `query`, from the most selective index its filters allow.
pub(crate) fn query(
    backend: &SledBackend,
    query: &AuditQuery,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    // Whatever the writer has not indexed yet.
    index_committed(backend, 0)?;
    let after = query.after_seq.map_or(0, |s| s.saturating_add(1));
    if query.after_seq == Some(u64::MAX) || query.limit == 0 {
        return Ok(Vec::new());
    }
    let by_value = [
        (&BY_RUN, &query.run_id),
        (&BY_RESOURCE, &query.resource),
        (&BY_ACTOR, &query.actor),
        (&BY_ACTION, &query.action),
    ]
    .into_iter()
    .find_map(|(table, value)| value.as_deref().map(|v| (table, v)));
    let records = backend.tree(RECORDS.name)?;
    let mut found = Vec::new();
    let mut check = |seq: u64| -> Result<bool, StoreError> {
        if let Some(bytes) = records.get(seq.to_be_bytes()).map_err(sled_error)? {
            match serde_json::from_slice::<QueryFields>(&bytes) {
                Ok(fields) if !fields.matches(query) => {}
                // A matching record, or one too damaged to tell: the caller reports that.
                _ => found.push((seq, bytes.to_vec())),
            }
        }
        Ok(found.len() < query.limit)
    };
    let index_seq = |key: &[u8]| -> Option<u64> {
        let tail = key.len().checked_sub(8).and_then(|at| key.get(at..))?;
        Some(u64::from_be_bytes(tail.try_into().ok()?))
    };
    if let Some((table, value)) = by_value {
        let mut prefix = value.as_bytes().to_vec();
        prefix.push(0);
        let mut start = prefix.clone();
        start.extend_from_slice(&after.to_be_bytes());
        for item in backend.tree(table.name)?.range(start..) {
            let (key, _) = item.map_err(sled_error)?;
            if !key.starts_with(&prefix) || key.len() != prefix.len() + 8 {
                break;
            }
            let Some(seq) = index_seq(&key) else { break };
            if !check(seq)? {
                break;
            }
        }
    } else if query.since_ms.is_some() || query.until_ms.is_some() {
        // Time order is sequence order (the chain keeps time non-decreasing), so this
        // visits the window's records in seq order.
        let since = query.since_ms.unwrap_or(0).to_be_bytes();
        for item in backend.tree(BY_TIME.name)?.range(since..) {
            let (key, _) = item.map_err(sled_error)?;
            let Some(time) = key.get(..8).and_then(|t| <[u8; 8]>::try_from(t).ok()) else {
                break;
            };
            if query
                .until_ms
                .is_some_and(|until| u64::from_be_bytes(time) > until)
            {
                break;
            }
            let Some(seq) = index_seq(&key) else { break };
            if seq < after {
                continue;
            }
            if !check(seq)? {
                break;
            }
        }
    } else {
        for item in records.range(after.to_be_bytes()..) {
            let (key, _) = item.map_err(sled_error)?;
            let Some(seq) = index_seq(&key) else { continue };
            if !check(seq)? {
                break;
            }
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

    /// The index columns of the record stored under `seq`.
    fn row(self, seq: u64) -> AuditRow {
        AuditRow {
            seq,
            time_ms: self.time_ms,
            run_id: self.run_id,
            actor: self.actor,
            action: self.action,
            resource: self.target,
            credential: None,
            hash: String::new(),
            prev_hash: String::new(),
            canonical: Vec::new(),
        }
    }
}
