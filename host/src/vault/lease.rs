//! Leases: run-scoped, time-bounded grants to use one credential on named targets
//! (just-in-time access).
//!
//! Threat: a credential handle that outlives its purpose — used after its run ended, after an
//! administrator revoked it, past the run's deadline, or on a machine its run was never
//! granted. `credentials.acquire` issues a [`Lease`] bound to (run, credential, the targets the
//! run's grant names) that expires no later than the run's deadline; every use of the handle
//! goes through [`LeaseStore::check`] first, and every refusal is a [`LeaseDenial`]. A lease is
//! revoked when its run ends (whatever the outcome), by an administrator, and — for every
//! lease still active — when the server starts again, since no run survives a restart.
//!
//! Durability (invariant 7): issuing and revoking are durable before they are acknowledged.
//! A revocation is written before its `lease.revoked` audit record: should the record fail,
//! the lease is already unusable (failing towards less access), and the caller gets the error.
//! A lease that cannot be read is treated as refused, never as allowed.
//!
//! Storage: table [`LEASES`] maps the lease id to its JSON; [`LEASES_BY_RUN`] indexes
//! `run id NUL lease id`, and [`ACTIVE_LEASES`] holds the ids of leases not yet revoked, so
//! ending a run or restarting the server never scans every lease ever issued. A revocation is
//! a compare-and-swap against the lease as read, so it cannot be lost to a concurrent one on
//! another server.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEntry, AuditError, AuditLog, Decision};
use crate::store::{Batch, Database, Expect, Scan, StoreError, Table, TableDef};

/// Tree holding the leases, keyed by id.
pub const LEASES: TableDef = TableDef {
    name: "leases",
    columns: &[],
    columns_of: None,
};
/// Index tree: `run id NUL lease id` → empty.
pub const LEASES_BY_RUN: TableDef = TableDef {
    name: "leases_by_run",
    columns: &[],
    columns_of: None,
};
/// Tree of the ids of leases that are not revoked.
pub const ACTIVE_LEASES: TableDef = TableDef {
    name: "leases_active",
    columns: &[],
    columns_of: None,
};

/// The audit action of a revocation (not a host call: no guest asked for it).
pub const REVOKED_ACTION: &str = "lease.revoked";

/// Most leases one run may be issued. A run reuses its live lease for a credential, so it
/// needs one per granted credential plus renewals; the cap stops a guest that found a way to
/// make the host issue leases in a loop from filling the database.
pub const MAX_LEASES_PER_RUN: usize = 256;

/// Longest revocation reason, in bytes. It may come from an API request and is shown in the
/// API and the audit log; the cap keeps it from bloating either.
pub const MAX_REASON_BYTES: usize = 1024;

/// Longest "revoked by", in bytes (a user name or a system actor).
pub const MAX_BY_BYTES: usize = 256;

/// Errors from the lease store. A refused use is not an error: see [`LeaseDenial`].
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// No lease with this id.
    #[error("lease {0} not found")]
    NotFound(String),
    /// The lease was revoked before.
    #[error("lease {0} is already revoked")]
    AlreadyRevoked(String),
    /// The run holds [`MAX_LEASES_PER_RUN`] leases.
    #[error("run {0} already holds the most leases allowed ({MAX_LEASES_PER_RUN})")]
    TooMany(String),
    /// A reason or attribution over its cap or with control characters.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// A stored lease does not decode.
    #[error("stored lease {0} is corrupt")]
    Corrupt(String),
    /// The `lease.revoked` record could not be written (the lease is revoked all the same).
    #[error("audit: {0}")]
    Audit(#[from] AuditError),
    /// The task flushing the database failed.
    #[error("lease store task failed")]
    TaskFailed,
    #[error("lease storage error: {0}")]
    Storage(#[from] StoreError),
    #[error("cannot encode lease: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Who revoked a lease, when and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revocation {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// A user, or a system actor (the bridge at run end, recovery at start).
    pub by: String,
    pub reason: String,
}

/// One lease. Never holds a secret: the credential is named, not carried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lease {
    pub id: String,
    /// The run it was issued to; no other run may use it.
    pub run_id: String,
    /// The principal the run acts for.
    pub actor: String,
    /// The credential it lets the run use.
    pub credential: String,
    /// The only targets it may be used on.
    pub targets: BTreeSet<String>,
    /// Unix time in milliseconds.
    pub issued_ms: u64,
    /// Unix time in milliseconds; never after the run's deadline.
    pub expires_ms: u64,
    /// Set once, when revoked.
    pub revoked: Option<Revocation>,
}

/// Where a lease stands at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseStatus {
    Active,
    Expired,
    Revoked,
}

impl Lease {
    /// The lease's status at `now_ms`; revocation wins over expiry.
    pub fn status_at(&self, now_ms: u64) -> LeaseStatus {
        if self.revoked.is_some() {
            LeaseStatus::Revoked
        } else if now_ms >= self.expires_ms {
            LeaseStatus::Expired
        } else {
            LeaseStatus::Active
        }
    }

    /// The lease's status now.
    pub fn status(&self) -> LeaseStatus {
        self.status_at(now_ms())
    }
}

/// Why a use of a lease was refused; the text is what the guest and the audit log see.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseDenial {
    #[error("lease {0} does not exist")]
    Unknown(String),
    #[error("lease {id} was revoked by {by}: {reason}")]
    Revoked {
        id: String,
        by: String,
        reason: String,
    },
    #[error("lease {0} has expired")]
    Expired(String),
    #[error("lease {0} belongs to another run")]
    OtherRun(String),
    #[error("lease {0} is for another credential")]
    OtherCredential(String),
    #[error("target '{target}' is outside lease {id}")]
    TargetOutside { id: String, target: String },
    #[error("lease {0} could not be checked")]
    Unreadable(String),
}

/// What [`LeaseStore::issue`] binds a new lease to.
#[derive(Clone, Debug)]
pub struct NewLease<'a> {
    pub run_id: &'a str,
    pub actor: &'a str,
    pub credential: &'a str,
    pub targets: &'a BTreeSet<String>,
    /// The run's deadline (start + wall-time limit), Unix ms; the lease expires by then.
    pub deadline_ms: u64,
}

/// The lease store. Cheap to clone; clones share the trees and the configuration.
#[derive(Clone)]
pub struct LeaseStore {
    leases: Table,
    by_run: Table,
    active: Table,
    audit: AuditLog,
    max_ttl: Option<Duration>,
}

impl LeaseStore {
    /// Opens the lease tables in `db`; revocations are audited to `audit`.
    pub fn open(db: &Database, audit: AuditLog) -> Result<Self, LeaseError> {
        Ok(LeaseStore {
            leases: db.table(&LEASES),
            by_run: db.table(&LEASES_BY_RUN),
            active: db.table(&ACTIVE_LEASES),
            audit,
            max_ttl: None,
        })
    }

    /// Also caps every new lease's lifetime at `ttl` (shorter than the run, for stricter
    /// just-in-time access; a run re-acquires to renew).
    pub fn with_max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = Some(ttl);
        self
    }

    /// Issues a lease and makes it durable before returning it.
    pub async fn issue(&self, new: NewLease<'_>) -> Result<Lease, LeaseError> {
        let issued_ms = now_ms();
        let ttl_end = self.max_ttl.map_or(u64::MAX, |ttl| {
            issued_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        });
        let lease = Lease {
            id: uuid::Uuid::new_v4().to_string(),
            run_id: new.run_id.to_string(),
            actor: new.actor.to_string(),
            credential: new.credential.to_string(),
            targets: new.targets.clone(),
            issued_ms,
            expires_ms: new.deadline_ms.min(ttl_end),
            revoked: None,
        };
        if self.count_for_run(&lease.run_id) >= MAX_LEASES_PER_RUN {
            return Err(LeaseError::TooMany(lease.run_id));
        }
        let bytes = serde_json::to_vec(&lease)?;
        let index = run_key(&lease.run_id, &lease.id);
        let mut batch = Batch::new();
        batch
            .put(&LEASES, lease.id.as_bytes(), bytes, Expect::Absent)
            .put(&LEASES_BY_RUN, index, Vec::new(), Expect::Any)
            .put(&ACTIVE_LEASES, lease.id.as_bytes(), Vec::new(), Expect::Any);
        self.leases.database().apply_async(batch).await?;
        Ok(lease)
    }

    /// Decides one use of lease `id` by `run_id` with `credential` on `target`: the lease
    /// must exist, belong to that run and credential, be neither revoked nor expired, and
    /// name the target. A lease that cannot be read is refused.
    pub fn check(
        &self,
        id: &str,
        run_id: &str,
        credential: &str,
        target: &str,
    ) -> Result<Lease, LeaseDenial> {
        self.check_at(id, run_id, credential, target, now_ms())
    }

    /// [`LeaseStore::check`] at a given time.
    pub fn check_at(
        &self,
        id: &str,
        run_id: &str,
        credential: &str,
        target: &str,
        now_ms: u64,
    ) -> Result<Lease, LeaseDenial> {
        let lease = match self.get(id) {
            Ok(Some(lease)) => lease,
            Ok(None) => return Err(LeaseDenial::Unknown(id.to_string())),
            Err(e) => {
                tracing::error!(lease = %id, error = %e, "lease unreadable; refusing its use");
                return Err(LeaseDenial::Unreadable(id.to_string()));
            }
        };
        let id = lease.id.clone();
        if lease.run_id != run_id {
            return Err(LeaseDenial::OtherRun(id));
        }
        if lease.credential != credential {
            return Err(LeaseDenial::OtherCredential(id));
        }
        match (&lease.revoked, lease.status_at(now_ms)) {
            (Some(r), _) => {
                return Err(LeaseDenial::Revoked {
                    id,
                    by: r.by.clone(),
                    reason: r.reason.clone(),
                });
            }
            (None, LeaseStatus::Expired) => return Err(LeaseDenial::Expired(id)),
            _ => {}
        }
        if !lease.targets.contains(target) {
            return Err(LeaseDenial::TargetOutside {
                id,
                target: target.to_string(),
            });
        }
        Ok(lease)
    }

    /// Revokes lease `id` durably, then audits `lease.revoked`. Fails with
    /// [`LeaseError::AlreadyRevoked`] for a lease revoked before.
    pub async fn revoke(&self, id: &str, by: &str, reason: &str) -> Result<Lease, LeaseError> {
        if by.is_empty() {
            return Err(LeaseError::Invalid("revoked-by"));
        }
        validate(by, MAX_BY_BYTES, "revoked-by")?;
        validate(reason, MAX_REASON_BYTES, "reason")?;
        let revocation = Revocation {
            at_ms: now_ms(),
            by: by.to_string(),
            reason: reason.to_string(),
        };
        let lease = self.mark_revoked(id, revocation).await?;
        self.audit.append(revoked_entry(&lease)).await?;
        Ok(lease)
    }

    /// Writes the revocation onto the lease as read (compare-and-swap, re-read on a
    /// concurrent change: one of the racing revocations wins, the others find it revoked).
    async fn mark_revoked(&self, id: &str, revocation: Revocation) -> Result<Lease, LeaseError> {
        loop {
            let Some(bytes) = self.leases.get(id.as_bytes())? else {
                return Err(LeaseError::NotFound(id.to_string()));
            };
            let Ok(mut lease) = serde_json::from_slice::<Lease>(&bytes) else {
                return Err(LeaseError::Corrupt(id.to_string()));
            };
            if lease.revoked.is_some() {
                return Err(LeaseError::AlreadyRevoked(id.to_string()));
            }
            lease.revoked = Some(revocation.clone());
            let mut batch = Batch::new();
            batch
                .put(
                    &LEASES,
                    id.as_bytes(),
                    serde_json::to_vec(&lease)?,
                    Expect::Equals(bytes),
                )
                .delete(&ACTIVE_LEASES, id.as_bytes(), Expect::Any);
            match self.leases.database().apply_async(batch).await {
                Ok(()) => return Ok(lease),
                // Changed meanwhile: the next read sees why (revoked, or gone).
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Revokes every lease of `run_id` not yet revoked (the run ended); returns them.
    pub async fn revoke_run(
        &self,
        run_id: &str,
        by: &str,
        reason: &str,
    ) -> Result<Vec<Lease>, LeaseError> {
        let ids = self
            .ids_for_run(run_id)?
            .into_iter()
            .filter(|id| !matches!(self.active.get(id.as_bytes()), Ok(None)));
        self.revoke_each(ids.collect(), by, reason).await
    }

    /// Revokes every lease not yet revoked (at server start: no run survives a restart).
    pub async fn revoke_all_active(
        &self,
        by: &str,
        reason: &str,
    ) -> Result<Vec<Lease>, LeaseError> {
        let ids = self
            .active
            .all()?
            .into_iter()
            .map(|(key, _)| String::from_utf8_lossy(&key).into_owned())
            .collect();
        self.revoke_each(ids, by, reason).await
    }

    async fn revoke_each(
        &self,
        ids: Vec<String>,
        by: &str,
        reason: &str,
    ) -> Result<Vec<Lease>, LeaseError> {
        let mut revoked = Vec::new();
        for id in ids {
            match self.revoke(&id, by, reason).await {
                Ok(lease) => revoked.push(lease),
                // Revoked meanwhile (e.g. by an administrator): nothing left to do.
                Err(LeaseError::AlreadyRevoked(_) | LeaseError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(revoked)
    }

    /// One lease, whatever its status.
    pub fn get(&self, id: &str) -> Result<Option<Lease>, LeaseError> {
        let Some(bytes) = self.leases.get(id.as_bytes())? else {
            return Ok(None);
        };
        let lease = serde_json::from_slice(&bytes).map_err(|_| LeaseError::Corrupt(id.into()))?;
        Ok(Some(lease))
    }

    /// Every lease issued to `run_id`, oldest first.
    pub fn list_for_run(&self, run_id: &str) -> Result<Vec<Lease>, LeaseError> {
        let mut leases = Vec::new();
        for id in self.ids_for_run(run_id)? {
            if let Some(lease) = self.get(&id)? {
                leases.push(lease);
            }
        }
        leases.sort_by(|a, b| (a.issued_ms, &a.id).cmp(&(b.issued_ms, &b.id)));
        Ok(leases)
    }

    fn ids_for_run(&self, run_id: &str) -> Result<Vec<String>, LeaseError> {
        let prefix = run_key(run_id, "");
        let ids = self
            .by_run
            .scan(&Scan::prefix(prefix.clone()))?
            .into_iter()
            .map(|(key, _)| String::from_utf8_lossy(&key[prefix.len()..]).into_owned())
            .collect();
        Ok(ids)
    }

    fn count_for_run(&self, run_id: &str) -> usize {
        // An unreadable index counts as full: refuse rather than exceed the cap.
        self.by_run
            .scan(&Scan::prefix(run_key(run_id, "")).limit(MAX_LEASES_PER_RUN))
            .map_or(MAX_LEASES_PER_RUN, |rows| rows.len())
    }
}

/// `run id NUL lease id`: run ids never contain NUL, so one run's keys never prefix another's.
fn run_key(run_id: &str, lease_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(run_id.len() + 1 + lease_id.len());
    key.extend_from_slice(run_id.as_bytes());
    key.push(0);
    key.extend_from_slice(lease_id.as_bytes());
    key
}

fn validate(text: &str, max: usize, what: &'static str) -> Result<(), LeaseError> {
    // Both reach API output and audit lines; control characters could forge either.
    if text.len() > max || text.chars().any(char::is_control) {
        return Err(LeaseError::Invalid(what));
    }
    Ok(())
}

fn revoked_entry(lease: &Lease) -> AuditEntry {
    let (by, reason) = lease
        .revoked
        .as_ref()
        .map_or(("", ""), |r| (r.by.as_str(), r.reason.as_str()));
    AuditEntry {
        run_id: Some(lease.run_id.clone()),
        actor: by.to_string(),
        action: REVOKED_ACTION.to_string(),
        target: None,
        credential: Some(lease.credential.clone()),
        decision: Decision::Allowed,
        outcome: "revoked".to_string(),
        duration_us: 0,
        detail: Some(format!("lease {}: {reason}", lease.id)),
    }
}

/// Unix time in ms; a clock before 1970 reads as 0.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
