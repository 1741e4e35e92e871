//! Audit record types, their canonical encoding and the chain hash.
//!
//! A record's stored value is its canonical JSON: serde_json's compact output of the struct in
//! field order. Because that encoding is a function of the record's values, a verifier can
//! re-encode a parsed record and demand byte equality, so no edit of a stored value (even one
//! serde would tolerate, such as renaming an optional key) goes unnoticed. The hash covers the
//! same encoding minus the `hash` field, and that includes `prev_hash`, which is what links the
//! chain: changing, removing or reordering any record breaks every hash after it.
//!
//! This module also caps the free-text fields, so a guest cannot bloat the log (or the writer's
//! queue) through an error message or a denial reason.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record (seq 0): 32 zero bytes in hex.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Cap on `outcome`, `detail` and a denial `reason`, in bytes. These carry text a guest
/// influences (command output summaries, error messages); without a cap one host call could
/// write megabytes into a log that is never pruned and hold them in the writer's queue.
pub const MAX_TEXT_BYTES: usize = 4096;

/// Cap on identifier-like fields (`run_id`, `actor`, `action`, `target`, `credential`,
/// `policy`), in bytes. Some of them echo names a guest passes in (a target name); the cap
/// stops the same log-bloat attack through them.
pub const MAX_NAME_BYTES: usize = 256;

/// Appended to a field that was cut to its cap, so a reader knows the text is incomplete.
pub const TRUNCATION_MARKER: &str = "…[truncated]";

/// What a host call (or operator action) was, as handed to [`super::AuditLog::append`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub run_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub credential: Option<String>,
    pub decision: Decision,
    pub outcome: String,
    pub duration_us: u64,
    pub detail: Option<String>,
}

/// Whether the call was allowed; a denial names why and, when known, the policy that denied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Decision {
    Allowed,
    Denied {
        reason: String,
        policy: Option<String>,
    },
}

/// One stored, chained record. Serialises to exactly the bytes stored in sled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub seq: u64,
    /// Unix time in milliseconds; never decreases along the chain.
    pub time_ms: u64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// Hex SHA-256 of the previous record ([`GENESIS_HASH`] for seq 0).
    pub prev_hash: String,
    /// Hex SHA-256 of this record's canonical encoding without this field.
    pub hash: String,
}

/// The hashed view of a record: the same fields in the same order, minus `hash`.
#[derive(Serialize)]
struct HashInput<'a> {
    seq: u64,
    time_ms: u64,
    #[serde(flatten)]
    entry: &'a AuditEntry,
    prev_hash: &'a str,
}

impl AuditRecord {
    /// Builds the record that follows `prev_hash`, computing its hash.
    pub(crate) fn seal(
        seq: u64,
        time_ms: u64,
        entry: AuditEntry,
        prev_hash: String,
    ) -> Result<Self, serde_json::Error> {
        let hash = chain_hash(seq, time_ms, &entry, &prev_hash)?;
        Ok(Self {
            seq,
            time_ms,
            entry,
            prev_hash,
            hash,
        })
    }

    /// The canonical encoding stored in sled.
    pub(crate) fn canonical(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// How the storage layer keeps this record: its `canonical` bytes and the columns
    /// queries filter on.
    pub(crate) fn row(&self, canonical: Vec<u8>) -> crate::store::AuditRow {
        crate::store::AuditRow {
            seq: self.seq,
            time_ms: self.time_ms,
            run_id: self.entry.run_id.clone(),
            actor: self.entry.actor.clone(),
            action: self.entry.action.clone(),
            resource: self.entry.target.clone(),
            credential: self.entry.credential.clone(),
            hash: self.hash.clone(),
            prev_hash: self.prev_hash.clone(),
            canonical,
        }
    }

    /// Recomputes this record's hash from its contents (ignoring the stored `hash`).
    pub(crate) fn recompute_hash(&self) -> Result<String, serde_json::Error> {
        chain_hash(self.seq, self.time_ms, &self.entry, &self.prev_hash)
    }
}

fn chain_hash(
    seq: u64,
    time_ms: u64,
    entry: &AuditEntry,
    prev_hash: &str,
) -> Result<String, serde_json::Error> {
    let input = HashInput {
        seq,
        time_ms,
        entry,
        prev_hash,
    };
    let encoded = serde_json::to_vec(&input)?;
    Ok(hex::encode(Sha256::digest(&encoded)))
}

impl AuditEntry {
    /// Cuts every field to its cap; applied before an entry is queued.
    pub(crate) fn enforce_caps(&mut self) {
        for name in [&mut self.actor, &mut self.action] {
            truncate(name, MAX_NAME_BYTES);
        }
        for name in [&mut self.run_id, &mut self.target, &mut self.credential]
            .into_iter()
            .flatten()
        {
            truncate(name, MAX_NAME_BYTES);
        }
        truncate(&mut self.outcome, MAX_TEXT_BYTES);
        if let Some(detail) = &mut self.detail {
            truncate(detail, MAX_TEXT_BYTES);
        }
        if let Decision::Denied { reason, policy } = &mut self.decision {
            truncate(reason, MAX_TEXT_BYTES);
            if let Some(policy) = policy {
                truncate(policy, MAX_NAME_BYTES);
            }
        }
    }
}

/// Shortens `text` to at most `cap` bytes (marker included), on a char boundary.
fn truncate(text: &mut String, cap: usize) {
    if text.len() <= cap {
        return;
    }
    let mut end = cap.saturating_sub(TRUNCATION_MARKER.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(TRUNCATION_MARKER);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            run_id: Some("run-1".into()),
            actor: "alice".into(),
            action: "ssh.exec".into(),
            target: Some("web-1".into()),
            credential: Some("root-pw".into()),
            decision: Decision::Denied {
                reason: "no grant".into(),
                policy: None,
            },
            outcome: "denied".into(),
            duration_us: 12,
            detail: None,
        }
    }

    #[test]
    fn canonical_encoding_is_compact_in_field_order_with_hash_last() {
        let record = AuditRecord::seal(0, 5, entry(), GENESIS_HASH.into()).unwrap();
        let text = String::from_utf8(record.canonical().unwrap()).unwrap();
        let expected_prefix = concat!(
            r#"{"seq":0,"time_ms":5,"run_id":"run-1","actor":"alice","action":"ssh.exec","#,
            r#""target":"web-1","credential":"root-pw","#,
            r#""decision":{"verdict":"denied","reason":"no grant","policy":null},"#,
            r#""outcome":"denied","duration_us":12,"detail":null,"prev_hash":""#
        );
        assert!(text.starts_with(expected_prefix), "{text}");
        assert!(text.ends_with(&format!(r#","hash":"{}"}}"#, record.hash)));
        assert!(!text.contains(": ") && !text.contains(", ") && !text.contains('\n'));
    }

    #[test]
    fn hash_is_sha256_of_encoding_without_hash_field() {
        let record = AuditRecord::seal(3, 9, entry(), GENESIS_HASH.into()).unwrap();
        let text = String::from_utf8(record.canonical().unwrap()).unwrap();
        let without = text.replace(&format!(r#","hash":"{}""#, record.hash), "");
        assert_eq!(record.hash, hex::encode(Sha256::digest(without.as_bytes())));
    }

    #[test]
    fn hash_depends_on_prev_hash() {
        let a = AuditRecord::seal(1, 1, entry(), GENESIS_HASH.into()).unwrap();
        let b = AuditRecord::seal(1, 1, entry(), "ab".repeat(32)).unwrap();
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn canonical_encoding_round_trips_through_parse() {
        let record = AuditRecord::seal(7, 1, entry(), GENESIS_HASH.into()).unwrap();
        let bytes = record.canonical().unwrap();
        let parsed: AuditRecord = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed, record);
        assert_eq!(parsed.canonical().unwrap(), bytes);
    }

    #[test]
    fn caps_truncate_guest_controlled_text_with_marker() {
        let mut e = entry();
        e.outcome = "x".repeat(MAX_TEXT_BYTES * 10);
        e.detail = Some("é".repeat(MAX_TEXT_BYTES));
        e.target = Some("t".repeat(MAX_NAME_BYTES + 1));
        e.decision = Decision::Denied {
            reason: "r".repeat(MAX_TEXT_BYTES + 1),
            policy: Some("p".repeat(MAX_NAME_BYTES * 2)),
        };
        e.enforce_caps();
        assert!(e.outcome.len() <= MAX_TEXT_BYTES && e.outcome.ends_with(TRUNCATION_MARKER));
        let detail = e.detail.unwrap();
        assert!(detail.len() <= MAX_TEXT_BYTES && detail.ends_with(TRUNCATION_MARKER));
        let target = e.target.unwrap();
        assert!(target.len() <= MAX_NAME_BYTES && target.ends_with(TRUNCATION_MARKER));
        let Decision::Denied { reason, policy } = e.decision else {
            panic!("decision changed")
        };
        assert!(reason.len() <= MAX_TEXT_BYTES && reason.ends_with(TRUNCATION_MARKER));
        assert!(policy.unwrap().len() <= MAX_NAME_BYTES);
    }

    #[test]
    fn caps_leave_short_text_untouched() {
        let mut e = entry();
        e.enforce_caps();
        assert_eq!(e, entry());
    }
}
