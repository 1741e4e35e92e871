//! The single writer thread: group commit of audit records.
//!
//! One thread per server drains every pending entry, seals them into chained records and
//! hands them to the storage backend's audit commit, which writes them, the newly signed
//! checkpoint and the writes that must follow them atomically and durably, and only then
//! answers every waiter. The backend gives the writer the stored tip under the chain's lock
//! (PostgreSQL: a row lock several servers queue on; sled: the process owns the directory),
//! so sequence numbers and hash links can never fork. A tip the writer did not write itself
//! (another server's) is checked against its signed checkpoint before the chain continues.
//!
//! A failed local write (sled) marks the log failed for good: invariant 2 requires that a host
//! call whose record is not durable fails, and a log with an unknown tail cannot safely
//! continue its chain. An unreachable PostgreSQL server fails only the batch at hand: its
//! transaction rolled back whole, so the tail is known, and the next batch re-reads the tip.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use tokio::sync::oneshot;

use super::AuditError;
use super::checkpoint::Checkpoint;
use super::record::{AuditEntry, AuditRecord};
use super::verify::{Head, check_head};
use crate::store::{AuditBatch, AuditTip, Batch, Database, StoreError};

/// Most entries sealed into one batch. Bounds the size of one commit and the delay a waiter at
/// the back of a long queue sees before its batch is durable.
pub(crate) const MAX_BATCH: usize = 1024;

/// What one commit wrote: the sealed records and each follow-up write's outcome.
type Persisted = (Vec<AuditRecord>, Vec<Result<(), StoreError>>);

/// What one caller gets back: its records, and the outcome of the write that followed them.
pub(crate) type Written = (Vec<AuditRecord>, Option<Result<(), StoreError>>);

/// The entries (one or a few, always sealed consecutively) waiting for the writer, the
/// write that must be durable together with (and never before) them, and the channel their
/// caller waits on.
pub(crate) struct Pending {
    pub entries: Vec<AuditEntry>,
    pub then: Option<Batch>,
    pub reply: oneshot::Sender<Result<Written, AuditError>>,
}

pub(crate) struct Writer {
    pub db: Database,
    pub signing_key: SigningKey,
    /// The head this writer last wrote, with the stored bytes of its last record: a tip with
    /// the same bytes needs no re-check.
    pub head: Option<(Head, Option<Vec<u8>>)>,
    pub failed: Arc<AtomicBool>,
    pub queue: Receiver<Pending>,
    /// Told the `seq` after the last committed record, after each commit (subscribers).
    pub committed: tokio::sync::watch::Sender<u64>,
}

impl Writer {
    /// Runs until every [`super::AuditLog`] handle (and so every sender) is gone.
    pub(crate) fn run(mut self) {
        while let Ok(first) = self.queue.recv() {
            let mut batch = Vec::with_capacity(64);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.queue.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Pending>) {
        if self.failed.load(Ordering::SeqCst) {
            return answer_all(batch, || AuditError::Failed);
        }
        let mut replies = Vec::with_capacity(batch.len());
        let mut entries = Vec::with_capacity(batch.len());
        let mut thens = Vec::new();
        for pending in batch {
            replies.push((pending.reply, pending.entries.len(), pending.then.is_some()));
            entries.extend(pending.entries);
            thens.extend(pending.then);
        }
        match self.seal_and_persist(entries, &thens) {
            Ok((records, outcomes)) => {
                let mut records = records.into_iter();
                let mut outcomes = outcomes.into_iter();
                for (reply, count, has_then) in replies {
                    let outcome = if has_then { outcomes.next() } else { None };
                    // The caller may have stopped waiting; its records are durable regardless.
                    let _ = reply.send(Ok((records.by_ref().take(count).collect(), outcome)));
                }
                self.db.backend().audit_after_commit();
            }
            Err(error) => {
                let reason = error.to_string();
                if matches!(error, StoreError::Unavailable(_)) {
                    // Rolled back whole: nothing of this batch is stored; re-read the tip next.
                    self.head = None;
                    tracing::warn!(%reason, "audit commit failed; the database is unavailable");
                } else {
                    // Set before answering, so no caller can append after learning of it.
                    self.failed.store(true, Ordering::SeqCst);
                    tracing::error!(%reason, "audit write failed; audit log is now closed");
                }
                let unavailable = matches!(error, StoreError::Unavailable(_));
                for (reply, _, _) in replies {
                    let _ = reply.send(Err(if unavailable {
                        AuditError::Unavailable(reason.clone())
                    } else {
                        AuditError::WriteFailed(reason.clone())
                    }));
                }
            }
        }
    }

    /// Seals the entries onto the stored chain and makes them durable, with the writes that
    /// follow them; remembers the new head on success.
    fn seal_and_persist(
        &mut self,
        entries: Vec<AuditEntry>,
        thens: &[Batch],
    ) -> Result<Persisted, StoreError> {
        let key = self.signing_key.clone();
        let known = self.head.clone();
        let mut sealed: Option<(Vec<AuditRecord>, Head, Vec<u8>)> = None;
        let mut entries = Some(entries);
        let mut seal = |tip: &AuditTip| -> Result<AuditBatch, String> {
            let head = match &known {
                Some((head, last)) if *last == tip.last => head.clone(),
                _ => check_head(tip, &key.verifying_key())
                    .map_err(|e| format!("the stored audit tip is not the signed head: {e}"))?,
            };
            let entries = entries.take().ok_or("audit batch sealed twice")?;
            let (records, batch, next) = seal_batch(&key, &head, entries)?;
            let last = batch
                .rows
                .last()
                .map(|r| r.canonical.clone())
                .unwrap_or_default();
            sealed = Some((records, next, last));
            Ok(batch)
        };
        let (_, outcomes) = self.db.backend().audit_commit(&mut seal, thens)?;
        let Some((records, head, last)) = sealed else {
            return Ok((Vec::new(), outcomes));
        };
        if !records.is_empty() {
            self.committed.send_replace(head.next_seq);
            self.head = Some((head, Some(last)));
        }
        Ok((records, outcomes))
    }
}

/// Chains `entries` after `head` and signs the new head.
fn seal_batch(
    key: &SigningKey,
    head: &Head,
    entries: Vec<AuditEntry>,
) -> Result<(Vec<AuditRecord>, AuditBatch, Head), String> {
    let time_ms = now_ms().max(head.last_time_ms);
    let mut prev_hash = head.prev_hash.clone();
    let mut records = Vec::with_capacity(entries.len());
    let mut rows = Vec::with_capacity(entries.len());
    for (seq, entry) in (head.next_seq..).zip(entries) {
        let record = AuditRecord::seal(seq, time_ms, entry, prev_hash)
            .map_err(|e| format!("cannot encode record {seq}: {e}"))?;
        let canonical = record
            .canonical()
            .map_err(|e| format!("cannot encode: {e}"))?;
        prev_hash = record.hash.clone();
        rows.push(record.row(canonical));
        records.push(record);
    }
    let Some(last) = records.last() else {
        return Ok((records, AuditBatch::default(), head.clone()));
    };
    let checkpoint = Checkpoint::sign(key, last.seq, &last.hash);
    let checkpoint = serde_json::to_vec(&checkpoint).map_err(|e| format!("cannot encode: {e}"))?;
    let next = Head {
        next_seq: last.seq + 1,
        prev_hash: last.hash.clone(),
        last_time_ms: time_ms,
    };
    Ok((records, AuditBatch { rows, checkpoint }, next))
}

fn answer_all(batch: Vec<Pending>, error: impl Fn() -> AuditError) {
    for pending in batch {
        let _ = pending.reply.send(Err(error()));
    }
}

/// Unix time in ms; a clock before 1970 reads as 0 (the chain keeps time non-decreasing).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
