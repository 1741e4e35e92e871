//! The exported stream: one JSON line per audit record, each carrying its `seq`, `hash` and
//! `prev_hash`, and the signed checkpoints between them, read from the store in sequence
//! order.
//!
//! Threat: an exported stream a SIEM cannot check (edited, cut or reordered on the way). Each
//! record line holds the record exactly as the log hashed it, so a verifier holding only the
//! server's public key re-hashes it, follows `prev_hash` and checks the signed checkpoints
//! (`export_verify`). The stream carries nothing but audit records, which already never hold
//! a secret (the capabilities redact before they audit).

use serde::{Deserialize, Serialize};

use crate::audit::{AuditRecord, Checkpoint};
use crate::store::{Database, StoreError};

/// One line of the stream. (Checkpoints are the small variant; at most a chunk of lines is
/// alive at once, so boxing the record would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ExportLine {
    #[serde(rename = "audit.record")]
    Record {
        seq: u64,
        hash: String,
        prev_hash: String,
        record: AuditRecord,
    },
    /// The log's signed head: records up to `seq` are the ones the server wrote.
    #[serde(rename = "audit.checkpoint")]
    Checkpoint {
        seq: u64,
        hash: String,
        signature: String,
    },
}

impl ExportLine {
    pub fn record(record: AuditRecord) -> Self {
        ExportLine::Record {
            seq: record.seq,
            hash: record.hash.clone(),
            prev_hash: record.prev_hash.clone(),
            record,
        }
    }

    /// The stable id of this line (the webhook id, the dead-letter key): record and
    /// checkpoint of one `seq` differ.
    pub fn id(&self) -> String {
        match self {
            ExportLine::Record { seq, .. } => format!("audit-{seq}"),
            ExportLine::Checkpoint { seq, .. } => format!("checkpoint-{seq}"),
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            ExportLine::Record { seq, .. } | ExportLine::Checkpoint { seq, .. } => *seq,
        }
    }

    pub fn as_record(&self) -> Option<&AuditRecord> {
        match self {
            ExportLine::Record { record, .. } => Some(record),
            ExportLine::Checkpoint { .. } => None,
        }
    }

    /// Compact JSON, no newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Records read from the store, and the checkpoint after them when they end at the head.
#[derive(Debug, Default)]
pub struct Chunk {
    pub lines: Vec<ExportLine>,
    /// The `seq` to read from next.
    pub next: u64,
}

/// Reads committed records from `from` on, at most `limit`, never past the signed head (a
/// record the checkpoint does not cover yet is read next time), and ends the chunk with the
/// checkpoint when it reaches the head.
pub fn read_chunk(db: &Database, from: u64, limit: usize) -> Result<Chunk, StoreError> {
    let tip = db.backend().audit_tip()?;
    let Some(checkpoint) = tip
        .checkpoint
        .as_deref()
        .and_then(|bytes| serde_json::from_slice::<Checkpoint>(bytes).ok())
    else {
        return Ok(Chunk {
            lines: Vec::new(),
            next: from,
        });
    };
    if from > checkpoint.seq {
        return Ok(Chunk {
            lines: Vec::new(),
            next: from,
        });
    }
    let wanted = usize::try_from(checkpoint.seq - from + 1)
        .unwrap_or(usize::MAX)
        .min(limit);
    let mut lines = Vec::with_capacity(wanted + 1);
    let mut next = from;
    for (seq, bytes) in db.backend().audit_range(from, wanted)? {
        if seq != next || seq > checkpoint.seq {
            break;
        }
        let record: AuditRecord = serde_json::from_slice(&bytes)
            .map_err(|_| StoreError::Incompatible(format!("audit record {seq} unreadable")))?;
        lines.push(ExportLine::record(record));
        next = seq + 1;
    }
    if next == checkpoint.seq + 1 && !lines.is_empty() {
        lines.push(ExportLine::Checkpoint {
            seq: checkpoint.seq,
            hash: checkpoint.hash,
            signature: checkpoint.signature,
        });
    }
    Ok(Chunk { lines, next })
}
