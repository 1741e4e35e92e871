//! The storage interface every domain store uses: named tables of records, atomic batches of
//! conditional writes, and the audit log's rows. One [`Database`] handle, two backends
//! (sled under `--data`, PostgreSQL under `--database`); no domain module names either.
//!
//! A table maps a byte key to a record's bytes (JSON for almost all) and is ordered by key
//! (bytewise), so big-endian numbers in keys sort numerically on both backends. A table may
//! declare typed [`TableDef::columns`]: the writer supplies their values with each put; the
//! PostgreSQL backend keeps them in real, indexed columns (for operators and SQL queries),
//! sled ignores them (domain modules keep their own index tables there and on PostgreSQL
//! alike, so one code path serves both).
//!
//! Writes go through [`Batch`]es: every operation carries an [`Expect`]ation about the key's
//! current value, and a batch either applies whole (all expectations met) or not at all
//! ([`StoreError::Conflict`]). A batch that returns `Ok` is durable. This is the only way to
//! write, so compare-and-swap, insert-if-absent and multi-table updates (a record and its
//! index entries) are one mechanism on both backends.
//!
//! Threat: a write that half happens (a record without its index, a state without its audit
//! record) or that silently overwrites a concurrent one (two servers deciding one run's
//! outcome). Batches are atomic and conditional; audit records and the writes that must follow
//! them commit together ([`Backend::audit_commit`]).

use std::fmt;
use std::sync::Arc;

/// A table: its name (a sled tree, a PostgreSQL table) and its typed columns, if any.
#[derive(Debug)]
pub struct TableDef {
    pub name: &'static str,
    /// Names of the typed columns, in order. Empty for most tables.
    pub columns: &'static [&'static str],
    /// Computes the typed columns' values from a stored value (every put of this table gets
    /// them this way, so they can never disagree with the record).
    pub columns_of: Option<ColumnsOf>,
}

impl PartialEq for TableDef {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TableDef {}

/// Computes a table's typed column values from a stored value.
pub type ColumnsOf = fn(&[u8]) -> Vec<ColumnValue>;

/// Rows of a scan: `(key, value)` in scan order.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// What an audit commit wrote, and each follow-up batch's outcome.
pub type Committed = (AuditBatch, Vec<Result<(), StoreError>>);

/// The value of a typed column in one put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnValue {
    Text(String),
    Int(i64),
    Null,
}

/// What a write requires of the key's current value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Anything, including no value.
    Any,
    /// No value (insert-if-absent).
    Absent,
    /// Some value, whatever it is.
    Present,
    /// Exactly this value (compare-and-swap against what the caller read).
    Equals(Vec<u8>),
}

/// One conditional write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        table: &'static TableDef,
        key: Vec<u8>,
        value: Vec<u8>,
        /// Values of `table.columns`, in order (empty when the table has none), computed by
        /// `table.columns_of`.
        columns: Vec<ColumnValue>,
        expect: Expect,
    },
    Delete {
        table: &'static TableDef,
        key: Vec<u8>,
        expect: Expect,
    },
}

impl Op {
    pub fn table(&self) -> &'static TableDef {
        match self {
            Op::Put { table, .. } | Op::Delete { table, .. } => table,
        }
    }

    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }

    pub fn expect(&self) -> &Expect {
        match self {
            Op::Put { expect, .. } | Op::Delete { expect, .. } => expect,
        }
    }
}

/// Writes that apply together or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put of `value` under `key` if `expect` holds (with the table's typed columns
    /// computed from `value`).
    pub fn put(
        &mut self,
        table: &'static TableDef,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        expect: Expect,
    ) -> &mut Self {
        let value = value.into();
        let columns = table.columns_of.map(|of| of(&value)).unwrap_or_default();
        self.ops.push(Op::Put {
            table,
            key: key.into(),
            value,
            columns,
            expect,
        });
        self
    }

    /// Adds a delete of `key` if `expect` holds (deleting an absent key is not an error
    /// unless `expect` says it must be present).
    pub fn delete(
        &mut self,
        table: &'static TableDef,
        key: impl Into<Vec<u8>>,
        expect: Expect,
    ) -> &mut Self {
        self.ops.push(Op::Delete {
            table,
            key: key.into(),
            expect,
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Which keys a scan visits. Bounds are bytewise; `limit` caps the rows returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Only keys starting with this.
    pub prefix: Vec<u8>,
    /// Only keys `>=` this (inclusive), if set.
    pub from: Option<Vec<u8>>,
    /// Only keys `<` this (exclusive), if set.
    pub until: Option<Vec<u8>>,
    /// Newest (largest key) first.
    pub reverse: bool,
    pub limit: Option<usize>,
}

impl Scan {
    /// Every key, in order.
    pub fn all() -> Self {
        Self::default()
    }

    /// Keys starting with `prefix`, in order.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self {
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    pub fn reversed(mut self) -> Self {
        self.reverse = true;
        self
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Where the scan starts: the larger of `from` and the prefix.
    pub fn start(&self) -> Vec<u8> {
        match &self.from {
            Some(from) if from.as_slice() > self.prefix.as_slice() => from.clone(),
            _ => self.prefix.clone(),
        }
    }

    /// Where the scan ends (exclusive): the smaller of `until` and the first key past the
    /// prefix; `None` for no end.
    pub fn end(&self) -> Option<Vec<u8>> {
        let past_prefix = prefix_successor(&self.prefix);
        match (past_prefix, self.until.clone()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True if `key` lies inside the prefix and bounds (the limit aside).
    pub fn contains(&self, key: &[u8]) -> bool {
        key.starts_with(&self.prefix)
            && self.from.as_deref().is_none_or(|from| key >= from)
            && self.until.as_deref().is_none_or(|until| key < until)
    }
}

/// A query on a table's typed columns, newest first: what a backend that keeps the columns
/// (PostgreSQL) answers from its indexes. A backend without them answers `None`, and the caller
/// walks its own index tables instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Select {
    /// Columns that must equal these values.
    pub equals: Vec<(&'static str, ColumnValue)>,
    /// The column rows are ordered by, descending (ties by key, descending).
    pub order_by: &'static str,
    /// Only rows ordered before `(value of order_by, key)`: the previous page's last row.
    pub before: Option<(ColumnValue, Vec<u8>)>,
    /// Only rows whose `order_by` value is at least this.
    pub since: Option<ColumnValue>,
    pub limit: usize,
}

/// The smallest key greater than every key starting with `prefix` (none for an empty or
/// all-0xff prefix).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A batch's expectation did not hold; nothing was written.
    #[error("conflict on {table} key {key:?}: it changed underneath this write")]
    Conflict { table: &'static str, key: String },
    /// The database cannot be reached or refused the operation; nothing was written (a
    /// PostgreSQL transaction rolls back whole). Answered as 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database holds something this binary cannot use (a schema from a newer Warden,
    /// an unreadable row).
    #[error("database: {0}")]
    Incompatible(String),
    /// A local storage error (sled, the filesystem).
    #[error("storage: {0}")]
    Io(String),
}

impl StoreError {
    pub(crate) fn conflict(table: &'static str, key: &[u8]) -> Self {
        StoreError::Conflict {
            table,
            key: String::from_utf8_lossy(key).into_owned(),
        }
    }

    /// True for a failed expectation (the caller may re-read and retry).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

/// One audit record as the backend stores it: the canonical bytes the chain hashes, plus the
/// columns the API's filters use (copied out of the record, never the source of truth).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: u64,
    pub time_ms: u64,
    pub run_id: Option<String>,
    pub actor: String,
    pub action: String,
    /// The target or other resource the record is about.
    pub resource: Option<String>,
    pub credential: Option<String>,
    pub hash: String,
    pub prev_hash: String,
    /// The record's canonical JSON: exactly what verification re-hashes.
    pub canonical: Vec<u8>,
}

/// The end of the chain as stored: the last record's canonical bytes and the signed
/// checkpoint's bytes, both as found (the audit module checks them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditTip {
    pub last: Option<Vec<u8>>,
    pub checkpoint: Option<Vec<u8>>,
}

/// What one audit commit writes: consecutive rows continuing the tip, and the checkpoint
/// that signs the new head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditBatch {
    pub rows: Vec<AuditRow>,
    pub checkpoint: Vec<u8>,
}

/// Which audit records a query returns: all set fields must match. Results are in sequence
/// order, starting after `after_seq`, at most `limit`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub run_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// Only records with `seq > after_seq` (the pagination cursor).
    pub after_seq: Option<u64>,
    pub limit: usize,
}

/// Seals records onto the tip it is given: called by the backend inside its commit, with the
/// tip read under the chain's lock (so two servers never fork the chain).
pub type Seal<'a> = &'a mut dyn FnMut(&AuditTip) -> Result<AuditBatch, String>;

/// A storage backend. Every method is synchronous and returns once its effect is durable.
pub trait Backend: Send + Sync + 'static {
    /// Which backend, for `warden db status` and logs (`sled` / `postgres`).
    fn kind(&self) -> &'static str;
    /// Where it is (a path; a URL without its password).
    fn location(&self) -> String;

    fn get(&self, table: &'static TableDef, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn scan(&self, table: &'static TableDef, scan: &Scan) -> Result<Rows, StoreError>;
    /// Applies the batch atomically and durably, or returns why not (nothing written).
    fn apply(&self, batch: &Batch) -> Result<(), StoreError>;
    /// Answers `select` from typed columns, or `None` if this backend does not keep them.
    fn select(
        &self,
        table: &'static TableDef,
        select: &Select,
    ) -> Result<Option<Rows>, StoreError> {
        let _ = (table, select);
        Ok(None)
    }

    /// Runs `read` while no write (batch or audit commit) can commit, so everything it reads
    /// is one consistent state: what `warden backup` copies. A backend that cannot hold its
    /// writers off (PostgreSQL: several servers write) refuses.
    fn quiesced(&self, read: &mut dyn FnMut() -> Result<(), StoreError>) -> Result<(), StoreError> {
        let _ = read;
        Err(StoreError::Incompatible(format!(
            "a consistent snapshot of a {} database is taken with its own tools (pg_dump)",
            self.kind()
        )))
    }

    /// Appends audit rows: reads the tip under the chain's lock, calls `seal` with it, writes
    /// the rows and checkpoint, then applies each of `then` (each on its own: one that
    /// conflicts is skipped and reported, the others and the audit rows still commit) in the
    /// same durable commit. Returns the batch `seal` made and each `then`'s outcome. If `seal`
    /// fails or the write fails, nothing is written.
    fn audit_commit(&self, seal: Seal<'_>, then: &[Batch]) -> Result<Committed, StoreError>;
    /// The stored tip (for opening the log and `audit verify`).
    fn audit_tip(&self) -> Result<AuditTip, StoreError>;
    /// Called by the audit writer after it has answered a commit's waiters: a backend may do
    /// upkeep here that must not delay acknowledgements (sled indexes the new records).
    fn audit_after_commit(&self) {}
    /// Canonical bytes of records with `seq >= from`, in order, at most `limit`.
    fn audit_range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// `(seq, canonical bytes)` of the records matching `query`, in seq order, from an index
    /// (time independent of the log's length for the indexed fields).
    fn audit_query(&self, query: &AuditQuery) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
}

/// The handle every store holds: cheap to clone, shared by all stores of one server.
#[derive(Clone)]
pub struct Database {
    backend: Arc<dyn Backend>,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("kind", &self.backend.kind())
            .field("location", &self.backend.location())
            .finish()
    }
}

impl Database {
    pub fn from_backend(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// A handle on one table.
    pub fn table(&self, def: &'static TableDef) -> Table {
        Table {
            db: self.clone(),
            def,
        }
    }

    /// Applies `batch` atomically and durably.
    pub fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.backend.apply(batch)
    }

    /// [`Self::apply`] on the blocking pool, for async callers (a PostgreSQL round trip or a
    /// sled fsync should not stall a runtime worker).
    pub async fn apply_async(&self, batch: Batch) -> Result<(), StoreError> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.apply(&batch))
            .await
            .map_err(|e| StoreError::Io(format!("storage task failed: {e}")))?
    }
}

/// One table of a [`Database`].
#[derive(Clone, Debug)]
pub struct Table {
    db: Database,
    def: &'static TableDef,
}

impl Table {
    pub fn def(&self) -> &'static TableDef {
        self.def
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.backend.get(self.def, key.as_ref())
    }

    pub fn scan(&self, scan: &Scan) -> Result<Rows, StoreError> {
        self.db.backend.scan(self.def, scan)
    }

    /// Rows matching `select` from the typed columns, if the backend keeps them.
    pub fn select(&self, select: &Select) -> Result<Option<Rows>, StoreError> {
        self.db.backend.select(self.def, select)
    }

    /// Every row, in key order.
    pub fn all(&self) -> Result<Rows, StoreError> {
        self.scan(&Scan::all())
    }

    /// Writes `value` under `key` whatever was there.
    pub fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.write(key, value, Expect::Any)
    }

    /// Writes `value` under `key` if `expect` holds; `Conflict` otherwise.
    pub fn write(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        expect: Expect,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put(self.def, key, value, expect);
        self.db.apply(&batch)
    }

    /// Inserts `value` under `key` unless the key exists: `Ok(false)` if it did.
    pub fn insert_new(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        absent_is_false(self.write(key, value, Expect::Absent))
    }

    /// Replaces exactly `old` with `new`: `Ok(false)` if the stored value is not `old`.
    pub fn swap(
        &self,
        key: impl Into<Vec<u8>>,
        old: &[u8],
        new: impl Into<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        absent_is_false(self.write(key, new, Expect::Equals(old.to_vec())))
    }

    /// Deletes `key`: `Ok(false)` if it was not there.
    pub fn remove(&self, key: impl Into<Vec<u8>>) -> Result<bool, StoreError> {
        let mut batch = Batch::new();
        batch.delete(self.def, key, Expect::Present);
        absent_is_false(self.db.apply(&batch))
    }
}

fn absent_is_false(result: Result<(), StoreError>) -> Result<bool, StoreError> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}
