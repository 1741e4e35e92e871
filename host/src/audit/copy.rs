//! Copying the audit log into another (empty) database with the chain intact: every record's
//! stored bytes are moved unchanged, so every hash and link still holds, and each chunk is
//! committed with a checkpoint signed by the server key over its last record, exactly as the
//! writer would have signed it.
//!
//! Threat: a copy that loses, reorders or rewrites records while claiming success. The target
//! must start empty; each chunk must continue the target's tip; afterwards the caller verifies
//! both chains ([`super::verify`]) and compares their length and head.

use ed25519_dalek::SigningKey;

use super::AuditError;
use super::checkpoint::Checkpoint;
use super::record::AuditRecord;
use crate::store::{AuditBatch, AuditTip, Database};

/// Records per commit.
const CHUNK: usize = 1024;

/// Copies every record of `from` into `to`; returns how many.
pub fn copy_log(from: &Database, to: &Database, key: &SigningKey) -> Result<u64, AuditError> {
    append_records(to, key, &mut |next| {
        Ok(from.backend().audit_range(next, CHUNK)?)
    })
}

/// Records as stored, `(seq, canonical bytes)`, starting at the given seq: the next chunk of
/// a copy's source (empty at the end).
pub type RecordSource<'a> = &'a mut dyn FnMut(u64) -> Result<Vec<(u64, Vec<u8>)>, AuditError>;

/// Appends the records `source` yields, byte for byte, to the (empty) log of `to`, each chunk
/// committed with a checkpoint signed by `key`: the copy of [`copy_log`] and the restore of a
/// backup. Every record must decode and follow the previous one (`seq` consecutive from 0).
/// Returns how many were appended.
pub fn append_records(
    to: &Database,
    key: &SigningKey,
    source: RecordSource<'_>,
) -> Result<u64, AuditError> {
    let mut next = 0u64;
    loop {
        let chunk = source(next)?;
        let Some(&(last_seq, _)) = chunk.last() else {
            return Ok(next);
        };
        let mut rows = Vec::with_capacity(chunk.len());
        for (seq, bytes) in chunk {
            let record: AuditRecord =
                serde_json::from_slice(&bytes).map_err(|_| AuditError::Corrupt { seq })?;
            if record.seq != seq || seq != next + rows.len() as u64 {
                return Err(AuditError::Corrupt { seq });
            }
            rows.push(record.row(bytes));
        }
        let Some(last) = rows.last() else {
            return Ok(next);
        };
        let checkpoint = Checkpoint::sign(key, last.seq, &last.hash);
        let checkpoint = serde_json::to_vec(&checkpoint)
            .map_err(|e| AuditError::WriteFailed(format!("cannot encode: {e}")))?;
        let first = next;
        let mut batch = Some(AuditBatch { rows, checkpoint });
        let mut seal = |tip: &AuditTip| -> Result<AuditBatch, String> {
            let continues = match &tip.last {
                None => first == 0,
                Some(bytes) => serde_json::from_slice::<AuditRecord>(bytes)
                    .is_ok_and(|r| r.seq.checked_add(1) == Some(first)),
            };
            if !continues {
                return Err("the target audit log changed during the copy".into());
            }
            batch.take().ok_or_else(|| "chunk sealed twice".to_string())
        };
        to.backend().audit_commit(&mut seal, &[])?;
        next = last_seq + 1;
    }
}
