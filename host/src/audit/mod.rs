//! Append-only, hash-chained, signed audit log, stored through [`crate::store`].
//!
//! Threat: an attacker (or a bug) that edits, deletes, reorders or forges audit records, or a
//! host call whose record is silently lost. Every record carries the hash of its predecessor;
//! the head is signed with the host's ed25519 key after each batch; [`verify`] re-walks the
//! chain and names the first bad record. [`AuditLog::append`] returns only once the record is
//! flushed to disk, and after any write failure every append fails (fail closed, invariant 2).
//!
//! Layout:
//! - `record`: the record types, canonical encoding, chain hash and field caps.
//! - `checkpoint`: the signed head.
//! - `writer`: the single writer thread doing group commit.
//! - `verify`: chain verification, also used at open to refuse a tampered tail.
//!
//! Storage: the backend keeps each record's canonical JSON under its `seq` with the columns
//! queries filter on, and the signed checkpoint beside them (sled: `store::sled_audit`;
//! PostgreSQL: table `audit_records` and `audit_head`). Several servers may open one
//! PostgreSQL log: each commit locks the head, so the chain stays one.

mod checkpoint;
mod copy;
mod record;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use ed25519_dalek::{SigningKey, VerifyingKey};
use tokio::sync::{oneshot, watch};

/// The signed head, for exporters (`crate::notify`) that ship checkpoints in their stream.
pub(crate) use checkpoint::Checkpoint;
pub use checkpoint::authentic_head;
pub use copy::{RecordSource, append_records, copy_log};
pub use record::{
    AuditEntry, AuditRecord, Decision, GENESIS_HASH, MAX_NAME_BYTES, MAX_TEXT_BYTES,
    TRUNCATION_MARKER,
};
pub use verify::{CheckpointProblem, RecordProblem, VerifyError, VerifyReport, verify};

use crate::store::{AuditQuery, Batch, Database, StoreError};
use writer::{Pending, Writer, Written};

/// Where a caller waits for its records.
type Reply = oneshot::Receiver<Result<Written, AuditError>>;

/// Entries that may wait for the writer. A burst beyond this makes appenders wait
/// (backpressure) rather than grow memory without bound; nothing is ever dropped.
pub const QUEUE_CAPACITY: usize = 4096;

/// Most records one query returns. The limit comes from API requests; without a cap one
/// request could load the entire (never pruned) log into memory.
pub const MAX_QUERY_RECORDS: usize = 10_000;

/// Errors from opening, appending to or querying the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log has failed earlier; refusing to act without an audit record")]
    Failed,
    #[error("audit record could not be written durably: {0}")]
    WriteFailed(String),
    /// The database could not be reached; nothing of the batch was written and the log stays
    /// open (a later append may succeed).
    #[error("audit record not written: the database is unavailable: {0}")]
    Unavailable(String),
    #[error("audit writer thread is gone")]
    WriterGone,
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("audit log failed its integrity check at open: {0}")]
    Tampered(#[from] VerifyError),
    #[error("stored audit record {seq} is unreadable")]
    Corrupt { seq: u64 },
    #[error("audit storage error: {0}")]
    Storage(#[from] StoreError),
}

/// Which records [`AuditLog::query`] returns; `None` fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditFilter {
    pub run_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Inclusive lower bound on `time_ms`.
    pub since_ms: Option<u64>,
    /// Inclusive upper bound on `time_ms`.
    pub until_ms: Option<u64>,
    /// The target or other resource the record is about.
    #[serde(default)]
    pub resource: Option<String>,
    /// Only records after this sequence number (the cursor of the previous page).
    #[serde(default)]
    pub after_seq: Option<u64>,
    /// At most this many records (the first ones in sequence order), capped at
    /// [`MAX_QUERY_RECORDS`].
    pub limit: Option<usize>,
}

impl AuditFilter {
    fn effective_limit(&self) -> usize {
        self.limit
            .unwrap_or(MAX_QUERY_RECORDS)
            .min(MAX_QUERY_RECORDS)
    }

    fn to_query(&self) -> AuditQuery {
        AuditQuery {
            run_id: self.run_id.clone(),
            actor: self.actor.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            since_ms: self.since_ms,
            until_ms: self.until_ms,
            after_seq: self.after_seq,
            limit: self.effective_limit(),
        }
    }
}

/// Handle to the audit log; cheap to clone, all clones feed the same writer thread.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    queue: SyncSender<Pending>,
    failed: Arc<AtomicBool>,
    db: Database,
    verifying_key: VerifyingKey,
    /// The `seq` after the last committed record (0 for an empty log), for subscribers.
    committed: watch::Receiver<u64>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("failed", &self.is_failed())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log in `db`, continuing the chain, and starts its writer thread.
    ///
    /// Refuses ([`AuditError::Tampered`]) a log whose last record is not the head signed by
    /// this key: continuing it would sign over forged or rewritten records.
    pub fn open(db: &Database, signing_key: SigningKey) -> Result<Self, AuditError> {
        let verifying_key = signing_key.verifying_key();
        let tip = db.backend().audit_tip()?;
        let head = verify::check_head(&tip, &verifying_key)?;
        let failed = Arc::new(AtomicBool::new(false));
        let (queue, receiver) = sync_channel(QUEUE_CAPACITY);
        let (committed_tx, committed) = watch::channel(head.next_seq);
        let writer = Writer {
            committed: committed_tx,
            db: db.clone(),
            signing_key,
            head: Some((head, tip.last)),
            failed: failed.clone(),
            queue: receiver,
        };
        std::thread::Builder::new()
            .name("warden-audit-writer".into())
            .spawn(move || writer.run())
            .map_err(AuditError::Spawn)?;
        let inner = Inner {
            queue,
            failed,
            db: db.clone(),
            verifying_key,
            committed,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Appends one record and returns it once it is durably flushed.
    ///
    /// Never blocks the async runtime: a full queue is waited out on a blocking-pool thread.
    pub async fn append(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        let (pending, reply) = self.prepare(vec![entry], None)?;
        let (records, _) = self.enqueue(pending, reply).await?;
        records.into_iter().next().ok_or_else(|| self.writer_gone())
    }

    /// Appends `entries` as consecutive records in one commit and returns them once one
    /// flush made them all durable. An empty list writes nothing.
    pub async fn append_all(
        &self,
        entries: Vec<AuditEntry>,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let (pending, reply) = self.prepare(entries, None)?;
        Ok(self.enqueue(pending, reply).await?.0)
    }

    /// Appends one record and applies `then` in the same durable commit. See
    /// [`Self::append_all_then`].
    pub async fn append_then(
        &self,
        entry: AuditEntry,
        then: Batch,
    ) -> Result<(AuditRecord, Result<(), StoreError>), AuditError> {
        let (records, outcome) = self.append_all_then(vec![entry], then).await?;
        let record = records
            .into_iter()
            .next()
            .ok_or_else(|| self.writer_gone())?;
        Ok((record, outcome))
    }

    /// Appends `entries` as consecutive records and applies `then` (writes to other tables of
    /// the same database) in the same durable commit, and returns the records and whether
    /// `then` applied.
    ///
    /// `then` is applied only if the records are written, so a write it makes is never
    /// durable without the audit records before it. If its expectations do not hold it is
    /// skipped (`Err(Conflict)`) while the records still commit: the caller records that the
    /// audited change did not take effect. This is how run transitions are recorded with one
    /// commit instead of two.
    pub async fn append_all_then(
        &self,
        entries: Vec<AuditEntry>,
        then: Batch,
    ) -> Result<(Vec<AuditRecord>, Result<(), StoreError>), AuditError> {
        let (pending, reply) = self.prepare(entries, Some(then))?;
        let (records, outcome) = self.enqueue(pending, reply).await?;
        let outcome = outcome.ok_or_else(|| self.writer_gone())?;
        Ok((records, outcome))
    }

    async fn enqueue(&self, pending: Pending, reply: Reply) -> Result<Written, AuditError> {
        match self.inner.queue.try_send(pending) {
            Ok(()) => {}
            Err(TrySendError::Full(pending)) => {
                let queue = self.inner.queue.clone();
                let sent = tokio::task::spawn_blocking(move || queue.send(pending).is_ok()).await;
                if !matches!(sent, Ok(true)) {
                    return Err(self.writer_gone());
                }
            }
            Err(TrySendError::Disconnected(_)) => return Err(self.writer_gone()),
        }
        reply.await.map_err(|_| self.writer_gone())?
    }

    /// Blocking [`Self::append`] for synchronous callers (CLI).
    ///
    /// Must not be called from within an async runtime (tokio panics on `blocking_recv` there).
    pub fn append_blocking(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        let (pending, reply) = self.prepare(vec![entry], None)?;
        self.inner
            .queue
            .send(pending)
            .map_err(|_| self.writer_gone())?;
        let (records, _) = reply.blocking_recv().map_err(|_| self.writer_gone())??;
        records.into_iter().next().ok_or_else(|| self.writer_gone())
    }

    /// Watches the `seq` after the last committed record: a subscriber (`crate::notify`)
    /// wakes on a change and reads the committed records from the store. Only a wake-up: the
    /// store, not this value, is the source of truth.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.committed.clone()
    }

    /// True once a write has failed; from then on every append fails at once.
    pub fn is_failed(&self) -> bool {
        self.inner.failed.load(Ordering::SeqCst)
    }

    /// The key that verifies this log's checkpoints.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.inner.verifying_key
    }

    /// Verifies the whole chain (see [`verify`]); safe while appends continue.
    pub fn verify(&self) -> Result<VerifyReport, VerifyError> {
        verify::verify(&self.inner.db, &self.inner.verifying_key)
    }

    /// Records matching `filter`, in sequence order, at most [`MAX_QUERY_RECORDS`] (a page:
    /// pass the last `seq` as `after_seq` for the next). Answered from the backend's index.
    ///
    /// It does not verify the chain (use [`Self::verify`] for that).
    pub fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, AuditError> {
        self.inner
            .db
            .backend()
            .audit_query(&filter.to_query())?
            .into_iter()
            .map(|(seq, bytes)| {
                serde_json::from_slice(&bytes).map_err(|_| AuditError::Corrupt { seq })
            })
            .collect()
    }

    fn prepare(
        &self,
        mut entries: Vec<AuditEntry>,
        then: Option<Batch>,
    ) -> Result<(Pending, Reply), AuditError> {
        if self.is_failed() {
            return Err(AuditError::Failed);
        }
        for entry in &mut entries {
            entry.enforce_caps();
        }
        let (reply, receiver) = oneshot::channel();
        Ok((
            Pending {
                entries,
                then,
                reply,
            },
            receiver,
        ))
    }

    /// The writer thread ended unexpectedly (panic): nothing can be recorded any more.
    fn writer_gone(&self) -> AuditError {
        self.inner.failed.store(true, Ordering::SeqCst);
        AuditError::WriterGone
    }
}
