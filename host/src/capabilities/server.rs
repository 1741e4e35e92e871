//! What a bridge's host calls need from the server, and the two ways to reach it: the
//! embedded bridge reads the server's own audit log, vault and leases in process
//! ([`ServerSide::Local`]); a remote bridge asks the server over its authenticated link
//! ([`ServerSide::Remote`], implemented by `crate::bridge::remote`). The capability code above
//! this is one implementation for both: it calls the methods of [`Services`] below and never
//! knows which transport answers.
//!
//! Threat: a remote bridge that acts without a durable record, keeps secrets, or uses a
//! credential the server would refuse. Every method that a remote bridge answers goes to the
//! server for the decision: the server appends the records to its one chain (and answers only
//! once they are durable), issues and checks leases against its lease store, and releases a
//! secret only for a lease of the run on a target of the bridge's zone. The bridge keeps a
//! secret only for the call that needs it (and, as the embedded bridge does, in the run's
//! redactor until the run ends); nothing here writes one to disk.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::audit::{AuditEntry, AuditError, AuditLog};
use crate::vault::lease::{LeaseDenial, LeaseStore};
use crate::vault::{CredentialInfo, Secret, Vault};

/// The server's stores, in process: what the embedded bridge uses.
#[derive(Clone)]
pub struct LocalServer {
    /// Where every host call is recorded.
    pub audit: AuditLog,
    /// Where credentials' secrets are kept.
    pub vault: Vault,
    /// Run-scoped leases on credentials.
    pub leases: LeaseStore,
}

/// Where a bridge gets what only the server holds.
#[derive(Clone)]
pub enum ServerSide {
    /// The embedded bridge: the server's own stores.
    Local(LocalServer),
    /// A remote bridge: the server over the bridge's link, for one run.
    Remote(Arc<dyn ServerLink>),
}

/// Why the server refused or failed a request of a remote bridge's host call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LinkError {
    /// The server refused (a lease denial, a target outside the bridge's zone): the call is
    /// denied, with this reason.
    #[error("{0}")]
    Denied(String),
    /// The credential does not exist (any more).
    #[error("credential '{0}' not found")]
    NotFound(String),
    /// The server could not answer (unreachable, an error): the call fails.
    #[error("{0}")]
    Failed(String),
}

/// A lease a run holds for one credential, as acquiring a handle reports it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct HeldLease {
    /// The lease's id.
    pub id: String,
    /// Whether it was issued now (else an earlier one of the run was reused).
    pub issued: bool,
}

/// The server, as a remote bridge's run sees it. One link serves one run: every request
/// names that run, and the server checks that this bridge holds it.
pub trait ServerLink: Send + Sync {
    /// Appends `entries` to the server's chain; their sequence numbers once durable there.
    fn append_audit(&self, entries: Vec<AuditEntry>)
    -> BoxFuture<'_, Result<Vec<u64>, AuditError>>;
    /// True once an append failed: from then on the run admits no call (fail closed).
    fn audit_failed(&self) -> bool;
    /// The metadata of a credential of the run's grant (sent with the run; never a secret).
    fn credential(&self, name: &str) -> Option<CredentialInfo>;
    /// The run's lease for `credential`: `known` (the run's earlier one) if still active,
    /// else a new one.
    fn acquire_lease(
        &self,
        credential: String,
        known: Option<String>,
    ) -> BoxFuture<'_, Result<HeldLease, LinkError>>;
    /// Checks uses of leases, each (lease, credential, target), in one request: for each,
    /// `None` if allowed or the denial.
    fn check_leases(
        &self,
        uses: Vec<(String, String, String)>,
    ) -> BoxFuture<'_, Result<Vec<Option<String>>, LinkError>>;
    /// The secret of `credential` under `lease`, for a call on `target` (none: to register
    /// it with the run's redactor when the handle is acquired).
    fn secret(
        &self,
        lease: String,
        credential: String,
        target: Option<String>,
    ) -> BoxFuture<'_, Result<Secret, LinkError>>;
}

impl ServerSide {
    /// The in-process stores, on the embedded bridge.
    pub fn local(&self) -> Option<&LocalServer> {
        match self {
            ServerSide::Local(local) => Some(local),
            ServerSide::Remote(_) => None,
        }
    }

    /// True once the audit log (or the link's appends) failed.
    pub fn audit_failed(&self) -> bool {
        match self {
            ServerSide::Local(local) => local.audit.is_failed(),
            ServerSide::Remote(link) => link.audit_failed(),
        }
    }

    /// Appends `entries` durably, in one commit; their sequence numbers.
    pub async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<Vec<u64>, AuditError> {
        match self {
            ServerSide::Local(local) => Ok(local
                .audit
                .append_all(entries)
                .await?
                .iter()
                .map(|r| r.seq)
                .collect()),
            ServerSide::Remote(link) => link.append_audit(entries).await,
        }
    }

    /// A credential's metadata.
    pub fn credential(&self, name: &str) -> Result<Option<CredentialInfo>, String> {
        match self {
            ServerSide::Local(local) => local.vault.info(name).map_err(|e| e.to_string()),
            ServerSide::Remote(link) => Ok(link.credential(name)),
        }
    }

    /// Checks one use of a lease (see [`LeaseStore::check`]).
    pub async fn check_lease(
        &self,
        lease: &str,
        run_id: &str,
        credential: &str,
        target: &str,
    ) -> Result<(), LinkError> {
        match self {
            ServerSide::Local(local) => local
                .leases
                .check(lease, run_id, credential, target)
                .map(|_| ())
                .map_err(|d: LeaseDenial| LinkError::Denied(d.to_string())),
            ServerSide::Remote(link) => {
                let uses = vec![(lease.into(), credential.into(), target.into())];
                match link.check_leases(uses).await?.pop().flatten() {
                    None => Ok(()),
                    Some(denied) => Err(LinkError::Denied(denied)),
                }
            }
        }
    }

    /// The secret of `credential`: from the vault, or from the server under `lease` for a
    /// call on `target`.
    pub async fn secret(
        &self,
        lease: &str,
        credential: &str,
        target: Option<&str>,
    ) -> Result<Secret, LinkError> {
        match self {
            ServerSide::Local(local) => local.vault.secret(credential).map_err(|e| match e {
                crate::vault::VaultError::NotFound(_) => LinkError::NotFound(credential.into()),
                other => LinkError::Failed(other.to_string()),
            }),
            ServerSide::Remote(link) => {
                link.secret(lease.into(), credential.into(), target.map(str::to_string))
                    .await
            }
        }
    }
}
