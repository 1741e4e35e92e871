//! The Password Auditor's view of the audit log: records about resources and accounts only.
//!
//! Threat: an auditor of passwords learning what task automation did — which commands ran,
//! with which inputs, in which runs — through the audit records they are allowed to read.
//! The view keeps only records that name a target or a credential, and of those only the
//! fields that say who touched which resource, when, and whether it was allowed.

use serde::Serialize;

use crate::audit::{AuditRecord, Decision};

/// One record of the resource audit; the fields of [`AuditRecord`] this view keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResourceAuditRecord {
    pub seq: u64,
    pub time_ms: u64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub credential: Option<String>,
    pub decision: Decision,
    pub outcome: String,
}

/// The resource-audit projection of one audit record, or `None` when the record is not in
/// the resource audit.
///
/// Definition (also in `policies/README.md`): the resource audit is the records whose
/// `target` or `credential` field is set — credential create, secret update, new version,
/// rotation and lease; target add and update; and every host call that used a target or a
/// credential. Each is projected to `seq`, `time_ms`, `actor`, `action`, `target`,
/// `credential`, `decision` (with a denial's reason and policy id) and `outcome`. Left out:
/// `run_id`, `duration_us`, `detail` (command text, paths, run inputs), `prev_hash` and
/// `hash`. Records with neither a target nor a credential (run lifecycle, module and process
/// changes, user management, log lines) are not in the view at all.
pub fn resource_audit_view(record: &AuditRecord) -> Option<ResourceAuditRecord> {
    let entry = &record.entry;
    if entry.target.is_none() && entry.credential.is_none() {
        return None;
    }
    Some(ResourceAuditRecord {
        seq: record.seq,
        time_ms: record.time_ms,
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        target: entry.target.clone(),
        credential: entry.credential.clone(),
        decision: entry.decision.clone(),
        outcome: entry.outcome.clone(),
    })
}
