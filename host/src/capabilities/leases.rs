//! Leases on the host-call path: `credentials.acquire` binds each handle to a lease, and every
//! use of a handle checks it (after the grant, before the secret leaves the vault).
//!
//! Threat: a handle used after its run's access was withdrawn — by an administrator, by
//! expiry, or on a target its lease does not name. A refused use is `error::denied` with rule
//! `lease`, audited in the call's one record. A run reuses its live lease for a credential;
//! once a lease of the run was revoked, the run cannot acquire that credential again, so a
//! revocation cannot be undone by the guest re-acquiring.

use crate::vault::lease::{LeaseError, LeaseStatus, LeaseStore, NewLease};

use super::HostContext;
use super::credentials::CredentialHandle;
use super::grant::Denial;
use super::server::{LinkError, ServerSide};
use crate::capabilities::bindings::types::Error;

/// The audit rule that names lease refusals.
pub const LEASE_RULE: &str = "lease";

/// Why a lease could not be had or used.
pub(crate) enum Refusal {
    /// Refused by the lease (audited as denied, rule [`LEASE_RULE`]).
    Denied(Denial),
    /// Something failed (audited as allowed with the error as outcome).
    Failed(Error),
}

fn denial(detail: String) -> Denial {
    Denial {
        rule: LEASE_RULE,
        detail,
        policy: None,
    }
}

/// How `acquire` came by its lease, for the call's audit record.
pub(crate) use super::server::HeldLease as AcquiredLease;

impl AcquiredLease {
    /// The acquire record's detail.
    pub fn detail(&self) -> String {
        let how = if self.issued { "issued" } else { "reused" };
        format!("lease {} {how}", self.id)
    }
}

/// The lease a run's new handle for `new.credential` is bound to: `known` (the run's earlier
/// lease for it) while active, else a new one. A revoked earlier lease is a denial: the run
/// may not acquire that credential again. The one rule for both bridges: the embedded one
/// calls it in process, the server calls it for a remote bridge's run.
pub async fn acquire_run_lease(
    leases: &LeaseStore,
    known: Option<&str>,
    new: NewLease<'_>,
) -> Result<AcquiredLease, LinkError> {
    let credential = new.credential;
    if let Some(id) = known {
        let lease = leases
            .get(id)
            .map_err(|e| LinkError::Failed(format!("reading the lease: {e}")))?;
        match lease.as_ref().map(|l| (l, l.status())) {
            Some((l, LeaseStatus::Active)) if l.run_id == new.run_id => {
                return Ok(AcquiredLease {
                    id: l.id.clone(),
                    issued: false,
                });
            }
            Some((l, LeaseStatus::Revoked)) => {
                let why = l.revoked.as_ref().map_or("", |r| r.reason.as_str());
                return Err(LinkError::Denied(format!(
                    "lease {} for credential '{credential}' was revoked ({why}); \
                     this run may not acquire it again",
                    l.id
                )));
            }
            // Expired (a lease shorter than the run): renew below.
            _ => {}
        }
    }
    let lease = leases.issue(new).await.map_err(|e| match e {
        LeaseError::TooMany(_) => LinkError::Denied(e.to_string()),
        other => LinkError::Failed(format!("issuing the lease: {other}")),
    })?;
    Ok(AcquiredLease {
        id: lease.id,
        issued: true,
    })
}

fn refusal(e: LinkError) -> Refusal {
    match e {
        LinkError::Denied(why) => Refusal::Denied(denial(why)),
        LinkError::NotFound(name) => {
            Refusal::Failed(Error::NotFound(format!("credential '{name}'")))
        }
        LinkError::Failed(why) => Refusal::Failed(super::types::internal("issuing the lease", why)),
    }
}

impl HostContext {
    /// On a remote bridge, asks the server about every lease use of `calls` in one round
    /// trip (a fan-out over N targets would otherwise wait N times); [`Self::use_lease`] then
    /// answers from these verdicts. A failed request leaves them to be asked one by one.
    pub(crate) async fn precheck_leases(&mut self, calls: &[super::call::HostCall<'_>]) {
        let ServerSide::Remote(link) = &self.services.server else {
            return;
        };
        let mut uses = Vec::new();
        for call in calls {
            if let (Some(target), ..) = call.request.parts() {
                for handle in &call.leases {
                    let key = (handle.lease_id().to_string(), target.to_string());
                    if !uses
                        .iter()
                        .any(|(l, _, t): &(String, String, String)| (l, t) == (&key.0, &key.1))
                    {
                        uses.push((key.0, handle.name().to_string(), key.1));
                    }
                }
            }
        }
        if uses.len() < 2 {
            return;
        }
        let link = link.clone();
        if let Ok(verdicts) = link.check_leases(uses.clone()).await {
            for ((lease, _, target), verdict) in uses.into_iter().zip(verdicts) {
                self.lease_verdicts.insert((lease, target), verdict);
            }
        }
    }

    /// The lease a new handle for `credential` is bound to: the run's live lease for it, or a
    /// new one covering the grant's targets and ending by the run's deadline.
    pub(crate) async fn lease_for_acquire(
        &mut self,
        credential: &str,
    ) -> Result<AcquiredLease, Refusal> {
        let known = self.leases.get(credential).cloned();
        let lease = match &self.services.server {
            ServerSide::Local(local) => {
                let new = NewLease {
                    run_id: &self.identity.run_id,
                    actor: &self.identity.actor,
                    credential,
                    targets: &self.grant.targets,
                    deadline_ms: self.deadline_ms,
                };
                acquire_run_lease(&local.leases, known.as_deref(), new).await
            }
            ServerSide::Remote(link) => link.acquire_lease(credential.to_string(), known).await,
        }
        .map_err(refusal)?;
        self.leases.insert(credential.to_string(), lease.id.clone());
        Ok(lease)
    }

    /// Checks one use of `handle` on `target` against its lease.
    pub(crate) async fn use_lease(
        &mut self,
        handle: &CredentialHandle,
        target: &str,
    ) -> Result<(), Denial> {
        let key = (handle.lease_id().to_string(), target.to_string());
        if let Some(verdict) = self.lease_verdicts.remove(&key) {
            return match verdict {
                None => Ok(()),
                Some(denied) => Err(denial(denied)),
            };
        }
        self.services
            .server
            .check_lease(
                handle.lease_id(),
                &self.identity.run_id,
                handle.name(),
                target,
            )
            .await
            .map_err(|e| denial(e.to_string()))
    }
}

/// `detail` with the handle's lease appended, for the using call's audit record.
pub(crate) fn with_lease(detail: String, handle: &CredentialHandle) -> String {
    format!("{detail}; lease {}", handle.lease_id())
}
