//! The single writer thread: group commit of audit records.
//!
//! One thread owns the chain head, so sequence numbers and hash links are assigned without
//! locks and can never fork. It drains every pending entry, seals them into chained records,
//! writes them and the newly signed checkpoint in one sled transaction (atomic, so a crash
//! cannot leave records without their checkpoint), flushes once and only then answers every
//! waiter. A failed write or flush marks the log failed for good: invariant 2 requires that a
//! host call whose record is not durable fails, and a log with an unknown tail cannot safely
//! continue its chain.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionResult, TransactionError};
use tokio::sync::oneshot;

use super::AuditError;
use super::checkpoint::{CHECKPOINT_KEY, Checkpoint};
use super::record::{AuditEntry, AuditRecord};
use super::verify::Head;

/// Most entries sealed into one batch. Bounds the size of one sled transaction and the delay a
/// waiter at the back of a long queue sees before its batch flushes.
pub(crate) const MAX_BATCH: usize = 1024;

/// A write to another tree that must be durable together with (and never before) its
/// audit record: see [`super::AuditLog::append_then`].
pub(crate) type AfterWrite = Box<dyn FnOnce() + Send>;

/// The entries (one or a few, always sealed consecutively) waiting for the writer, the
/// write that follows them, and the channel their caller waits on.
pub(crate) struct Pending {
    pub entries: Vec<AuditEntry>,
    pub then: Option<AfterWrite>,
    pub reply: oneshot::Sender<Result<Vec<AuditRecord>, AuditError>>,
}

pub(crate) struct Writer {
    pub records: sled::Tree,
    pub meta: sled::Tree,
    pub signing_key: SigningKey,
    pub head: Head,
    pub failed: Arc<AtomicBool>,
    pub queue: Receiver<Pending>,
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
        let mut after = Vec::new();
        for pending in batch {
            replies.push((pending.reply, pending.entries.len()));
            entries.extend(pending.entries);
            after.extend(pending.then);
        }
        match self.seal_and_persist(entries, after) {
            Ok(records) => {
                let mut records = records.into_iter();
                for (reply, count) in replies {
                    // The caller may have stopped waiting; its records are durable regardless.
                    let _ = reply.send(Ok(records.by_ref().take(count).collect()));
                }
            }
            Err(reason) => {
                // Set before answering, so no caller can append after learning of the failure.
                self.failed.store(true, Ordering::SeqCst);
                tracing::error!(%reason, "audit write failed; audit log is now closed");
                for (reply, _) in replies {
                    let _ = reply.send(Err(AuditError::WriteFailed(reason.clone())));
                }
            }
        }
    }

    /// Seals the entries onto the chain and makes them durable, with the writes that follow
    /// them; advances the head on success.
    fn seal_and_persist(
        &mut self,
        entries: Vec<AuditEntry>,
        after: Vec<AfterWrite>,
    ) -> Result<Vec<AuditRecord>, String> {
        let time_ms = now_ms().max(self.head.last_time_ms);
        let mut prev_hash = self.head.prev_hash.clone();
        let mut records = Vec::with_capacity(entries.len());
        let mut encoded = Vec::with_capacity(entries.len());
        for (seq, entry) in (self.head.next_seq..).zip(entries) {
            let record = AuditRecord::seal(seq, time_ms, entry, prev_hash)
                .map_err(|e| format!("cannot encode record {seq}: {e}"))?;
            let bytes = record
                .canonical()
                .map_err(|e| format!("cannot encode: {e}"))?;
            prev_hash = record.hash.clone();
            encoded.push((seq.to_be_bytes(), bytes));
            records.push(record);
        }
        let Some(last) = records.last() else {
            return Ok(records);
        };
        let checkpoint = Checkpoint::sign(&self.signing_key, last.seq, &last.hash);
        let checkpoint =
            serde_json::to_vec(&checkpoint).map_err(|e| format!("cannot encode: {e}"))?;
        self.persist(&encoded, &checkpoint, after)?;
        self.head = Head {
            next_seq: last.seq + 1,
            prev_hash: last.hash.clone(),
            last_time_ms: time_ms,
        };
        Ok(records)
    }

    fn persist(
        &self,
        encoded: &[([u8; 8], Vec<u8>)],
        checkpoint: &[u8],
        after: Vec<AfterWrite>,
    ) -> Result<(), String> {
        let result = (&self.records, &self.meta).transaction(
            |(records, meta)| -> ConflictableTransactionResult<(), Infallible> {
                for (key, value) in encoded {
                    records.insert(key, value.as_slice())?;
                }
                meta.insert(CHECKPOINT_KEY, checkpoint)?;
                Ok(())
            },
        );
        result.map_err(|e: TransactionError<Infallible>| format!("insert failed: {e}"))?;
        // Written after the records, so the sled log holds them after the records too: a
        // crash can lose them with or after their records, never keep them without.
        for write in after {
            write();
        }
        // One fsync for the whole batch: this is what makes group commit pay off.
        self.records
            .flush()
            .map_err(|e| format!("flush failed: {e}"))?;
        Ok(())
    }
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
