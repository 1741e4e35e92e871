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
    path: String,
}

impl SledBackend {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(path).open().map_err(sled_error)?;
        let backend = Self::from_db(db, path.display().to_string());
        sled_audit::ensure_index(&backend)?;
        Ok(backend)
    }

    pub(crate) fn from_db(db: sled::Db, path: String) -> Self {
        Self {
            db,
            indexing: std::sync::Mutex::new(()),
            audit: std::sync::Mutex::default(),
            trees: RwLock::new(HashMap::new()),
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

    /// Applies `batch` inside an open multi-tree transaction (no flush): shared by
    /// [`Backend::apply`] and the audit commit.
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
        self.apply_unflushed(batch)?;
        self.flush()
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
