//! The embedded backend: one sled database under the data directory. Each table is a sled
//! tree of the same name; a batch is one multi-tree sled transaction followed by one flush.
//! Typed columns are not stored (sled has nowhere to index them; domain modules keep their own
//! index tables). The audit log lives in the trees of [`super::sled_audit`].
//!
//! Threat: a torn or interleaved write. sled transactions are serializable across trees, and
//! a batch is acknowledged only after the flush that makes it durable.

use std::collections::HashMap;
use std::sync::RwLock;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::sled_audit;
use super::table::{
    AuditQuery, AuditRow, AuditTip, Backend, Batch, Expect, Op, Scan, Seal, StoreError, TableDef,
};

/// Committed audit rows indexed together (fewer, larger index batches).
const INDEX_BATCH: usize = 256;

/// What the audit commit keeps in memory: the tip it wrote last (sled is this process's
/// alone, so nobody else moves it) and the committed rows the index does not cover yet.
#[derive(Default)]
pub(crate) struct AuditCache {
    pub tip: Option<AuditTip>,
    pub unindexed: Vec<AuditRow>,
}

/// The sled backend; one per process (sled locks its directory).
pub struct SledBackend {
    db: sled::Db,
    /// Held while the audit index catches up (see `sled_audit::ensure_index`).
    indexing: std::sync::Mutex<()>,
    /// The audit tip this process wrote last, and committed rows not indexed yet.
    audit: std::sync::Mutex<AuditCache>,
    trees: RwLock<HashMap<&'static str, sled::Tree>>,
    /// Every write (batch, audit commit) holds this shared; a consistent snapshot
    /// ([`Backend::quiesced`]) holds it exclusively, so it sees no write half applied.
    writes: RwLock<()>,
    path: String,
}

/// Why the embedded database did not open.
pub(crate) enum OpenFailure {
    /// Another process holds sled's lock on the directory.
    InUse,
    Store(StoreError),
}

impl SledBackend {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        Self::open_exclusive(path).map_err(|e| match e {
            OpenFailure::InUse => StoreError::Io(format!(
                "{} is in use by another warden process",
                path.display()
            )),
            OpenFailure::Store(e) => e,
        })
    }

    /// Opens the database at `path`, telling "another process holds it" from other failures.
    pub(crate) fn open_exclusive(path: &std::path::Path) -> Result<Self, OpenFailure> {
        let db = match sled::Config::new().path(path).open() {
            Ok(db) => db,
            // sled reports its lock as a plain `Other` error with this text (sled 0.34).
            Err(sled::Error::Io(e)) if e.to_string().starts_with("could not acquire lock") => {
                return Err(OpenFailure::InUse);
            }
            Err(e) => return Err(OpenFailure::Store(sled_error(e))),
        };
        let backend = Self::from_db(db, path.display().to_string());
        sled_audit::ensure_index(&backend).map_err(OpenFailure::Store)?;
        Ok(backend)
    }

    pub(crate) fn from_db(db: sled::Db, path: String) -> Self {
        Self {
            db,
            indexing: std::sync::Mutex::new(()),
            audit: std::sync::Mutex::default(),
            trees: RwLock::new(HashMap::new()),
            writes: RwLock::new(()),
            path,
        }
    }

    pub(crate) fn tree(&self, name: &'static str) -> Result<sled::Tree, StoreError> {
        if let Some(tree) = self.trees.read().ok().and_then(|t| t.get(name).cloned()) {
            return Ok(tree);
        }
        let tree = self.db.open_tree(name).map_err(sled_error)?;
        if let Ok(mut trees) = self.trees.write() {
            trees.insert(name, tree.clone());
        }
        Ok(tree)
    }

    /// Held (shared) by every write; see [`Self::writes`]. Take it before the audit cache.
    pub(crate) fn write_guard(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.writes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `batch` inside an open multi-tree transaction (no flush): shared by
    /// [`Backend::apply`] and the audit commit. The caller holds [`Self::write_guard`].
    pub(crate) fn apply_unflushed(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut names: Vec<&'static str> = batch.ops.iter().map(|op| op.table().name).collect();
        names.sort_unstable();
        names.dedup();
        let trees = names
            .iter()
            .map(|name| self.tree(name))
            .collect::<Result<Vec<_>, _>>()?;
        let index = |name: &str| names.iter().position(|n| *n == name);
        let result = trees.as_slice().transaction(|views| {
            for op in &batch.ops {
                let Some(view) = index(op.table().name).and_then(|i| views.get(i)) else {
                    return Err(ConflictableTransactionError::Abort(StoreError::Io(
                        "batch table missing".into(),
                    )));
                };
                let current = view.get(op.key())?;
                if !expectation_holds(op.expect(), current.as_deref()) {
                    return Err(ConflictableTransactionError::Abort(StoreError::conflict(
                        op.table().name,
                        op.key(),
                    )));
                }
                match op {
                    Op::Put { key, value, .. } => {
                        view.insert(key.as_slice(), value.as_slice())?;
                    }
                    Op::Delete { key, .. } => {
                        view.remove(key.as_slice())?;
                    }
                }
            }
            Ok(())
        });
        result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => sled_error(e),
        })
    }

    /// The audit cache (see [`AuditCache`]).
    pub(crate) fn audit_cache(&self) -> std::sync::MutexGuard<'_, AuditCache> {
        self.audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One audit-index catch-up at a time.
    pub(crate) fn index_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.indexing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(sled_error)
    }
}

fn expectation_holds(expect: &Expect, current: Option<&[u8]>) -> bool {
    match expect {
        Expect::Any => true,
        Expect::Absent => current.is_none(),
        Expect::Present => current.is_some(),
        Expect::Equals(old) => current == Some(old.as_slice()),
    }
}

pub(crate) fn sled_error(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl Backend for SledBackend {
    fn kind(&self) -> &'static str {
        "sled"
    }

    fn location(&self) -> String {
        self.path.clone()
    }

    fn get(&self, table: &'static TableDef, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.tree(table.name)?.get(key).map_err(sled_error)?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        table: &'static TableDef,
        scan: &Scan,
    ) -> Result<super::table::Rows, StoreError> {
        let tree = self.tree(table.name)?;
        let start = scan.start();
        let end = scan.end();
        let iter = match &end {
            Some(end) if *end <= start => return Ok(Vec::new()),
            Some(end) => tree.range(start..end.clone()),
            None => tree.range(start..),
        };
        let limit = scan.limit.unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut rows = Vec::new();
        let mut push = |item: sled::Result<(sled::IVec, sled::IVec)>| -> Result<bool, StoreError> {
            let (key, value) = item.map_err(sled_error)?;
            rows.push((key.to_vec(), value.to_vec()));
            Ok(rows.len() < limit)
        };
        if scan.reverse {
            for item in iter.rev() {
                if !push(item)? {
                    break;
                }
            }
        } else {
            for item in iter {
                if !push(item)? {
                    break;
                }
            }
        }
        Ok(rows)
    }

    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        {
            let _writing = self.write_guard();
            self.apply_unflushed(batch)?;
        }
        self.flush()
    }

    fn quiesced(&self, read: &mut dyn FnMut() -> Result<(), StoreError>) -> Result<(), StoreError> {
        let _no_writes = self
            .writes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        read()
    }

    fn audit_commit(
        &self,
        seal: Seal<'_>,
        then: &[Batch],
    ) -> Result<super::table::Committed, StoreError> {
        sled_audit::commit(self, seal, then)
    }

    fn audit_tip(&self) -> Result<AuditTip, StoreError> {
        sled_audit::tip(self)
    }

    fn audit_after_commit(&self) {
        if let Err(e) = sled_audit::index_committed(self, INDEX_BATCH) {
            tracing::warn!(error = %e, "audit index not updated; the next query retries");
        }
    }

    fn audit_range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        sled_audit::range(self, from, limit)
    }

    fn audit_query(&self, query: &AuditQuery) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        sled_audit::query(self, query)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    const T: TableDef = TableDef {
        name: "quiesce_test",
        columns: &[],
        columns_of: None,
    };

    fn put(backend: &SledBackend, key: &[u8]) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put(&T, key.to_vec(), b"v".to_vec(), Expect::Absent);
        backend.apply(&batch)
    }

    /// A snapshot sees no write that starts while it reads: batches and audit commits wait
    /// until it ends, then apply.
    #[test]
    fn writes_wait_while_a_snapshot_reads() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(SledBackend::open(&dir.path().join("db")).unwrap());
        put(&backend, b"before").unwrap();
        backend
            .quiesced(&mut || {
                let writer = backend.clone();
                let batch = std::thread::spawn(move || put(&writer, b"during"));
                let auditor = backend.clone();
                let audit = std::thread::spawn(move || {
                    let mut seal = |_: &AuditTip| Ok(super::super::AuditBatch::default());
                    let mut then = Batch::new();
                    then.put(&T, b"audited".to_vec(), b"v".to_vec(), Expect::Absent);
                    auditor.audit_commit(&mut seal, &[then]).map(drop)
                });
                std::thread::sleep(Duration::from_millis(300));
                assert!(backend.get(&T, b"before")?.is_some());
                assert_eq!(
                    backend.get(&T, b"during")?,
                    None,
                    "a batch applied mid-snapshot"
                );
                assert!(!batch.is_finished() && !audit.is_finished());
                // Reads go on.
                assert_eq!(backend.scan(&T, &Scan::all())?.len(), 1);
                std::thread::spawn(move || {
                    batch.join().unwrap().unwrap();
                    audit.join().unwrap().unwrap();
                });
                Ok(())
            })
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while backend.get(&T, b"during").unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the write never applied"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
