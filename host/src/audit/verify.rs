//! Offline and online verification of the audit chain.
//!
//! Detects an attacker (or bug) that edits, deletes, reorders, appends or truncates records:
//! every stored value must be canonical, hash to its `hash`, link to its predecessor, sit under
//! its own sequence number with no gaps, and the last record must be the head named by the
//! checkpoint the host signed. Errors name the first bad sequence number and why.

use ed25519_dalek::VerifyingKey;

use super::checkpoint::Checkpoint;
use super::record::{AuditRecord, GENESIS_HASH};
use crate::store::{AuditTip, Database, StoreError};

/// Records read per round trip while walking the chain.
const VERIFY_CHUNK: usize = 4096;

/// Outcome of a successful verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of records in the chain.
    pub count: u64,
    /// Hex hash of the last record; `None` for an empty log.
    pub head_hash: Option<String>,
}

/// Why verification failed, naming the first bad record where there is one.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("audit record {seq}: {problem}")]
    Record { seq: u64, problem: RecordProblem },
    #[error("audit checkpoint: {0}")]
    Checkpoint(CheckpointProblem),
    #[error("audit storage error: {0}")]
    Storage(#[from] StoreError),
}

impl VerifyError {
    /// The first bad sequence number, when the failure is about one record.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::Record { seq, .. } => Some(*seq),
            Self::Checkpoint(_) | Self::Storage(_) => None,
        }
    }
}

/// What is wrong with one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordProblem {
    #[error("missing: the sequence has a gap here (record deleted)")]
    Missing,
    #[error("missing: the signed checkpoint names it but the log ends before it (truncated)")]
    Truncated,
    #[error("stored under a key that is not an 8-byte sequence number")]
    BadKey,
    #[error("stored value is not a valid record")]
    Unparseable,
    #[error("stored value is not in canonical form (edited)")]
    NotCanonical,
    #[error("seq field does not match the key it is stored under")]
    SeqMismatch,
    #[error("prev_hash does not match the previous record's hash")]
    BrokenLink,
    #[error("hash does not match the record's contents")]
    HashMismatch,
    #[error("differs from the head the host signed (rewritten)")]
    NotSignedHead,
    #[error("follows the signed head: appended without the host's key")]
    BeyondCheckpoint,
}

/// What is wrong with the signed checkpoint itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointProblem {
    #[error("records exist but no signed checkpoint does")]
    Missing,
    #[error("stored checkpoint is not readable")]
    Unreadable,
    #[error("signature does not verify (forged or signed by another key)")]
    BadSignature,
}

/// Walks the whole log in `db` from seq 0 and checks it against the signed checkpoint.
///
/// Safe to run while the log is being appended to: records committed after the walk started
/// are covered by re-reading the checkpoint, which is committed atomically with them.
pub fn verify(db: &Database, key: &VerifyingKey) -> Result<VerifyReport, VerifyError> {
    let mut checkpoint = read_checkpoint(db, key)?;
    let mut walker = Walker::new();
    let mut from = 0;
    loop {
        let chunk = db.backend().audit_range(from, VERIFY_CHUNK)?;
        let Some(&(last, _)) = chunk.last() else {
            break;
        };
        for (seq, value) in chunk {
            if !covers(checkpoint.as_ref(), walker.next_seq) {
                // A concurrent batch may have committed this record and its new checkpoint.
                checkpoint = read_checkpoint(db, key)?;
            }
            walker.check(seq, &value)?;
            if !covers(checkpoint.as_ref(), walker.next_seq - 1) {
                return Err(beyond(checkpoint.as_ref(), walker.next_seq - 1));
            }
        }
        match last.checked_add(1) {
            Some(next) => from = next,
            None => break,
        }
    }
    walker.finish(checkpoint.as_ref())
}

fn covers(checkpoint: Option<&Checkpoint>, seq: u64) -> bool {
    checkpoint.is_some_and(|c| seq <= c.seq)
}

fn beyond(checkpoint: Option<&Checkpoint>, seq: u64) -> VerifyError {
    match checkpoint {
        None => VerifyError::Checkpoint(CheckpointProblem::Missing),
        Some(_) => VerifyError::Record {
            seq,
            problem: RecordProblem::BeyondCheckpoint,
        },
    }
}

/// Reads and authenticates the checkpoint; `None` if none was ever written.
pub(crate) fn read_checkpoint(
    db: &Database,
    key: &VerifyingKey,
) -> Result<Option<Checkpoint>, VerifyError> {
    authentic_checkpoint(db.backend().audit_tip()?.checkpoint.as_deref(), key)
}

fn authentic_checkpoint(
    bytes: Option<&[u8]>,
    key: &VerifyingKey,
) -> Result<Option<Checkpoint>, VerifyError> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let checkpoint: Checkpoint = serde_json::from_slice(bytes)
        .map_err(|_| VerifyError::Checkpoint(CheckpointProblem::Unreadable))?;
    if !checkpoint.is_authentic(key) {
        return Err(VerifyError::Checkpoint(CheckpointProblem::BadSignature));
    }
    Ok(Some(checkpoint))
}

/// Where the chain continues: what the writer needs to append the next record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub next_seq: u64,
    pub prev_hash: String,
    pub last_time_ms: u64,
}

/// Checks, in O(1), that the last record is intact and is the signed head.
///
/// Run when the log is opened, so the writer never signs a new checkpoint over records an
/// attacker appended or rewrote at the tail while the host was down (that would launder them).
/// Damage further back stays visible to [`verify`] because it breaks the chain's linkage.
pub(crate) fn check_head(tip: &AuditTip, key: &VerifyingKey) -> Result<Head, VerifyError> {
    let checkpoint = authentic_checkpoint(tip.checkpoint.as_deref(), key)?;
    let (last, checkpoint) = match (tip.last.as_deref(), checkpoint) {
        (None, None) => return Ok(Head::genesis()),
        (None, Some(_)) => return Err(record_error(0, RecordProblem::Truncated)),
        (Some(_), None) => return Err(VerifyError::Checkpoint(CheckpointProblem::Missing)),
        (Some(last), Some(checkpoint)) => (last, checkpoint),
    };
    let seq = serde_json::from_slice::<AuditRecord>(last)
        .map_err(|_| record_error(checkpoint.seq, RecordProblem::Unparseable))?
        .seq;
    if seq < checkpoint.seq {
        return Err(record_error(seq + 1, RecordProblem::Truncated));
    }
    if seq > checkpoint.seq {
        return Err(record_error(
            checkpoint.seq + 1,
            RecordProblem::BeyondCheckpoint,
        ));
    }
    let record = check_record(seq, seq, last)?;
    if record.hash != checkpoint.hash {
        return Err(record_error(seq, RecordProblem::NotSignedHead));
    }
    Ok(Head {
        next_seq: seq + 1,
        prev_hash: record.hash,
        last_time_ms: record.time_ms,
    })
}

impl Head {
    pub(crate) fn genesis() -> Self {
        Self {
            next_seq: 0,
            prev_hash: GENESIS_HASH.to_owned(),
            last_time_ms: 0,
        }
    }
}

/// Checks records one after another, in key order.
struct Walker {
    next_seq: u64,
    prev_hash: String,
}

impl Walker {
    fn new() -> Self {
        Self {
            next_seq: 0,
            prev_hash: GENESIS_HASH.to_owned(),
        }
    }

    fn check(&mut self, seq: u64, value: &[u8]) -> Result<(), VerifyError> {
        let expected = self.next_seq;
        if seq == u64::MAX {
            return Err(record_error(expected, RecordProblem::BadKey));
        }
        if seq != expected {
            // Keys are sorted and unique, so a different key means `expected` was removed.
            return Err(record_error(expected, RecordProblem::Missing));
        }
        let record = check_record(seq, seq, value)?;
        if record.prev_hash != self.prev_hash {
            return Err(record_error(seq, RecordProblem::BrokenLink));
        }
        self.prev_hash = record.hash;
        self.next_seq = seq + 1;
        Ok(())
    }

    fn finish(self, checkpoint: Option<&Checkpoint>) -> Result<VerifyReport, VerifyError> {
        let Some(checkpoint) = checkpoint else {
            // No record was seen, or `verify_trees` would already have failed.
            return Ok(VerifyReport {
                count: 0,
                head_hash: None,
            });
        };
        if self.next_seq <= checkpoint.seq {
            return Err(record_error(self.next_seq, RecordProblem::Truncated));
        }
        if self.prev_hash != checkpoint.hash {
            return Err(record_error(checkpoint.seq, RecordProblem::NotSignedHead));
        }
        Ok(VerifyReport {
            count: self.next_seq,
            head_hash: Some(self.prev_hash),
        })
    }
}

/// Checks one stored record on its own: parse, canonical form, seq (against `stored_seq`, the
/// sequence number it is stored under) and hash.
fn check_record(seq: u64, stored_seq: u64, value: &[u8]) -> Result<AuditRecord, VerifyError> {
    let record: AuditRecord =
        serde_json::from_slice(value).map_err(|_| record_error(seq, RecordProblem::Unparseable))?;
    // Re-encoding must reproduce the stored bytes: catches edits serde would tolerate.
    match record.canonical() {
        Ok(bytes) if bytes == value => {}
        _ => return Err(record_error(seq, RecordProblem::NotCanonical)),
    }
    if stored_seq != record.seq {
        return Err(record_error(seq, RecordProblem::SeqMismatch));
    }
    match record.recompute_hash() {
        Ok(hash) if hash == record.hash => Ok(record),
        _ => Err(record_error(seq, RecordProblem::HashMismatch)),
    }
}

fn record_error(seq: u64, problem: RecordProblem) -> VerifyError {
    VerifyError::Record { seq, problem }
}
