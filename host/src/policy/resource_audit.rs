//! The Password Auditor's view of the audit log: records about resources and accounts only,
//! in structured fields only.
//!
//! Threat: an auditor of passwords learning what task automation did — which commands ran,
//! with which inputs, in which runs, what paths and what a target printed — through the
//! audit records they are allowed to read. The view keeps only records that name a target
//! or a credential, and of those only the fields that say who touched which resource, when,
//! and whether it was allowed and succeeded. Every free-text field (a denial's reason, an
//! outcome's error message, details) is left out: a target's stderr or a path in an error
//! would otherwise reach the auditor.

use serde::Serialize;

use crate::audit::{AuditRecord, Decision};

/// Whether the recorded operation was allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResourceDecision {
    Allowed,
    Denied,
}

/// How the recorded operation ended, as a closed set of words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// It did what was asked.
    Ok,
    /// It was refused (by policy, the grant, the lease, ...).
    Denied,
    /// A lease (or similar grant) was revoked.
    Revoked,
    /// It was allowed but failed (the detail, free text, is not in this view).
    Failed,
}

/// One record of the resource audit; structured fields of [`AuditRecord`] only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ResourceAuditRecord {
    pub seq: u64,
    pub time_ms: u64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub credential: Option<String>,
    pub decision: ResourceDecision,
    /// The policy ids that denied (identifiers, not text), for a denial.
    pub policy: Option<String>,
    pub outcome: OutcomeKind,
}

/// The resource-audit projection of one audit record, or `None` when the record is not in
/// the resource audit.
///
/// Definition (also in `policies/README.md`): the resource audit is the records whose
/// `target` or `credential` field is set — credential create, secret update, new version,
/// rotation and lease; target add and update; and every host call that used a target or a
/// credential. Each is projected to `seq`, `time_ms`, `actor`, `action`, `target`,
/// `credential`, `decision` (`allowed` or `denied`), `policy` (the denying policy ids) and
/// `outcome` (one of `ok`, `denied`, `revoked`, `failed`). Left out: `run_id`,
/// `duration_us`, `detail` (command text, paths, run inputs), the denial's reason and the
/// outcome's text (error messages, target output), `prev_hash` and `hash`. Records with
/// neither a target nor a credential (run lifecycle, module and process changes, user
/// management, log lines) are not in the view at all. The API further drops records of
/// processes the viewer may not see (`ViewProcessAudit`).
pub fn resource_audit_view(record: &AuditRecord) -> Option<ResourceAuditRecord> {
    let entry = &record.entry;
    if entry.target.is_none() && entry.credential.is_none() {
        return None;
    }
    let (decision, policy) = match &entry.decision {
        Decision::Allowed => (ResourceDecision::Allowed, None),
        // Policy ids are kebab-case names; anything else in the field is not shown.
        Decision::Denied { policy, .. } => (
            ResourceDecision::Denied,
            policy.clone().filter(|p| {
                p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b',')
            }),
        ),
    };
    let outcome = match (decision, entry.outcome.as_str()) {
        (ResourceDecision::Denied, _) | (_, "denied") => OutcomeKind::Denied,
        (_, "ok") => OutcomeKind::Ok,
        (_, "revoked") => OutcomeKind::Revoked,
        _ => OutcomeKind::Failed,
    };
    Some(ResourceAuditRecord {
        seq: record.seq,
        time_ms: record.time_ms,
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        target: entry.target.clone(),
        credential: entry.credential.clone(),
        decision,
        policy,
        outcome,
    })
}
