//! The server's end of remote bridges: hands runs of a zone to its bridges, and answers the
//! host calls of the runs they hold — audit records into the server's one chain, leases,
//! secrets — each only for a run the asking bridge holds.
//!
//! A run for a zone other than the embedded bridge's is stored `queued`, held by
//! `zone:<name>` (`crate::runs::dispatch`). A bridge's claim takes the oldest such run of its
//! zone with a compare-and-swap transition to `running` held by `bridge:<id>`, so two bridges
//! (on one server or several) never both get it. While the bridge renews, it keeps it; once
//! it is unheard of for the lost timeout (or revoked), the cluster sweep ends the run `lost`.
//!
//! Threats and answers:
//! - *A bridge reaching past its zone.* Every request names a run; the run must be `running`
//!   and held by the asking bridge. A secret is released only under a lease of that run for
//!   that credential, for a target of the bridge's own zone (checked against the server's
//!   target records, not the bridge's word).
//! - *A bridge forging audit history.* Records a bridge sends are forced onto its run (run
//!   id, the run's actor) and stamped with the bridge's id; the server seals them into its
//!   chain and answers only once they are durable.
//! - *A compromised bridge asking for credentials outside the grant.* Leases are issued only
//!   for credentials of the process's grant, on the grant's targets.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use super::registry::{BridgeRecord, BridgeRegistry, holder};
use super::wire::{ClaimedRun, LeaseUse, NonceCache, PolicyFile};
use crate::audit::{AuditEntry, AuditLog, MAX_TEXT_BYTES};
use crate::capabilities::leases::acquire_run_lease;
use crate::capabilities::server::{HeldLease, LinkError};
use crate::policy::PolicyEngine;
use crate::runs::cluster::ZONE_HOLDER;
use crate::runs::dispatch::Dispatcher;
use crate::runs::{ProcessStore, RunRecord, RunState, RunStore, RunsError};
use crate::runtime::RunReport;
use crate::runtime::limits::RunLimits;
use crate::targets::TargetStore;
use crate::vault::Vault;
use crate::vault::lease::{LeaseStore, NewLease};

/// Most audit entries one request may carry.
pub const MAX_AUDIT_BATCH: usize = 1024;

/// What a bridge may record: host calls of the WIT interfaces (the spine's actions). Run
/// transitions, lease revocations and the rest are the server's to write.
const BRIDGE_ACTIONS: [&str; 5] = ["ssh.", "transfer.", "credentials.", "params.", "log."];

/// Longest a claim may wait for a run.
pub const MAX_CLAIM_WAIT: Duration = Duration::from_secs(25);

/// How often a waiting claim looks at the store even without a wake-up (runs queued by
/// another server over the same database).
const CLAIM_POLL: Duration = Duration::from_secs(1);

/// Why a bridge request was refused.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The run is not (or no longer) held by this bridge: it ended, was lost, or belongs to
    /// another bridge.
    #[error("run {0} is not held by this bridge")]
    NotHeld(String),
    /// A lease, zone or grant check refused.
    #[error("{0}")]
    Denied(String),
    /// A malformed request.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Runs(#[from] RunsError),
    #[error("{0}")]
    Internal(String),
}

/// The server's end of the remote bridges; cheap to clone.
#[derive(Clone)]
pub struct BridgeHub {
    pub registry: BridgeRegistry,
    runs: RunStore,
    processes: ProcessStore,
    dispatcher: Dispatcher,
    targets: TargetStore,
    vault: Vault,
    leases: LeaseStore,
    audit: AuditLog,
    policy: PolicyEngine,
    limits: RunLimits,
    /// Nonces of signed requests seen recently.
    pub nonces: Arc<NonceCache>,
    /// Claims served and their wait, for `/metrics`.
    pub metrics: Arc<HubMetrics>,
    /// Live events of the runs bridges hold, for their streams.
    pub live: super::live::RemoteLive,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct HubMetrics {
    /// Runs handed to remote bridges.
    pub dispatched: std::sync::atomic::AtomicU64,
    /// Sum of the time those runs waited between queued and claimed, ms.
    pub dispatch_wait_ms: std::sync::atomic::AtomicU64,
    /// Claims waiting right now (bridges connected and idle).
    pub waiting_claims: std::sync::atomic::AtomicI64,
}

/// What a hub needs of the server.
pub struct HubParts {
    pub registry: BridgeRegistry,
    pub runs: RunStore,
    pub processes: ProcessStore,
    pub dispatcher: Dispatcher,
    pub targets: TargetStore,
    pub vault: Vault,
    pub leases: LeaseStore,
    pub audit: AuditLog,
    pub policy: PolicyEngine,
    pub limits: RunLimits,
}

impl BridgeHub {
    /// The hub over the server's stores.
    pub fn new(parts: HubParts) -> Self {
        BridgeHub {
            registry: parts.registry,
            runs: parts.runs,
            processes: parts.processes,
            dispatcher: parts.dispatcher,
            targets: parts.targets,
            vault: parts.vault,
            leases: parts.leases,
            audit: parts.audit,
            policy: parts.policy,
            limits: parts.limits,
            nonces: Arc::default(),
            metrics: Arc::default(),
            live: Default::default(),
        }
    }

    /// Waits up to `wait` for a run of `bridge`'s zone and hands it over, or `None`.
    pub async fn claim(
        &self,
        bridge: &BridgeRecord,
        wait: Duration,
        policy_digest: Option<&str>,
    ) -> Result<Option<ClaimedRun>, HubError> {
        use std::sync::atomic::Ordering::Relaxed;
        let deadline = tokio::time::Instant::now() + wait.min(MAX_CLAIM_WAIT);
        let woken = self.dispatcher.zone_queued();
        self.metrics.waiting_claims.fetch_add(1, Relaxed);
        let _idle = scopeguard(|| {
            self.metrics.waiting_claims.fetch_sub(1, Relaxed);
        });
        loop {
            // Registered before looking, so a run queued in between still wakes this claim.
            let notified = woken.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(run) = self.try_claim(bridge, policy_digest).await? {
                return Ok(Some(run));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let _ = tokio::time::timeout(CLAIM_POLL.min(deadline - now), notified).await;
        }
    }

    async fn try_claim(
        &self,
        bridge: &BridgeRecord,
        policy_digest: Option<&str>,
    ) -> Result<Option<ClaimedRun>, HubError> {
        let zone_holder = format!("{ZONE_HOLDER}{}", bridge.zone);
        let mut waiting: Vec<RunRecord> = Vec::new();
        for (id, held_by) in self.runs.held()? {
            if held_by == zone_holder
                && let Some(run) = self.runs.get(&id)?
                && run.state == RunState::Queued
            {
                waiting.push(run);
            }
        }
        waiting.sort_by_key(|r| (r.created_ms, r.id.clone()));
        let store = self.runs.clone().owned_by(&holder(&bridge.id));
        for run in waiting {
            let claimed = match self.prepare_claim(&run, policy_digest) {
                Ok(claimed) => claimed,
                Err(why) => {
                    self.refuse(&run, &why).await;
                    continue;
                }
            };
            let note = format!("claimed by bridge {} (zone {})", bridge.id, bridge.zone);
            let bridge_id = bridge.id.clone();
            match store
                .transition_noted(&run.id, RunState::Running, &run.actor, &note, |r| {
                    r.bridge = Some(bridge_id);
                    r.waiting = None;
                })
                .await
            {
                Ok(started) => {
                    use std::sync::atomic::Ordering::Relaxed;
                    let waited = started
                        .started_ms
                        .unwrap_or(started.created_ms)
                        .saturating_sub(started.created_ms);
                    self.metrics.dispatched.fetch_add(1, Relaxed);
                    self.metrics.dispatch_wait_ms.fetch_add(waited, Relaxed);
                    return Ok(Some(claimed));
                }
                // Another bridge took it (or it was cancelled) in between.
                Err(RunsError::BadTransition { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Everything the bridge needs for `run`, resolved against the process and the
    /// publishers trusted now; the reason if it may not start.
    fn prepare_claim(
        &self,
        run: &RunRecord,
        policy_digest: Option<&str>,
    ) -> Result<ClaimedRun, String> {
        let process = self
            .processes
            .get(&run.process_id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("process {} no longer exists", run.process_id))?;
        // A workflow's step run executes its task state's module, grant and limits.
        let process =
            crate::workflow::effective_process(&process, run).map_err(|e| e.to_string())?;
        if process.module_digest != run.module_digest {
            return Err(format!(
                "process {} changed its module since the run was requested",
                process.id
            ));
        }
        let resolved = self
            .dispatcher
            .resolve(&process, run.inputs.clone())
            .map_err(|e| e.to_string())?;
        let module = resolved.module;
        let mut targets = Vec::new();
        for name in &process.grant.targets {
            if let Some(target) = self.targets.get(name).map_err(|e| e.to_string())? {
                targets.push(target);
            }
        }
        let mut credentials = Vec::new();
        for name in process
            .grant
            .credentials
            .iter()
            .chain(&process.grant.rotations)
        {
            if let Some(info) = self.vault.info(name).map_err(|e| e.to_string())? {
                credentials.push(info);
            }
        }
        let digest = self.policy.digest();
        let policies = if policy_digest == Some(digest.as_str()) {
            None
        } else {
            let files = self.policy.files().map_err(|e| e.to_string())?;
            Some(
                files
                    .into_iter()
                    .map(|(name, text)| PolicyFile { name, text })
                    .collect(),
            )
        };
        Ok(ClaimedRun {
            run_id: run.id.clone(),
            actor: run.actor.clone(),
            module: format!("{}@{}", module.name, module.version),
            digest: module.digest.clone(),
            params: resolved.params,
            grant: process.grant.clone(),
            limits: process.limits.lower(
                self.limits
                    .for_module(module.manifest.limits.memory_bytes(), usize::MAX),
            ),
            requested: module.manifest.capabilities.to_vec(),
            scope: module.manifest.requests.clone(),
            targets,
            credentials,
            policy_digest: digest,
            policies,
        })
    }

    /// Ends a queued run that may not start (its module is no longer trusted, its process
    /// changed): `denied`, with the reason.
    async fn refuse(&self, run: &RunRecord, why: &str) {
        let note = format!("refused as it left the zone queue: {why}");
        let store = self.runs.clone();
        if let Err(e) = store
            .transition_noted(
                &run.id,
                RunState::Denied,
                crate::runs::dispatch::TRUST_ACTOR,
                &note,
                |r| {
                    r.error = Some(note.clone());
                    r.waiting = None;
                },
            )
            .await
        {
            tracing::warn!(run = %run.id, error = %e, "queued remote run not refused");
        }
    }

    /// Run `run_id`, if `bridge` holds it and it is running.
    fn held(&self, bridge: &BridgeRecord, run_id: &str) -> Result<RunRecord, HubError> {
        let not_held = || HubError::NotHeld(run_id.to_string());
        if self.runs.held_by(run_id)?.as_deref() != Some(holder(&bridge.id).as_str()) {
            return Err(not_held());
        }
        let run = self.runs.get(run_id)?.ok_or_else(not_held)?;
        if run.state != RunState::Running || run.bridge.as_deref() != Some(bridge.id.as_str()) {
            return Err(not_held());
        }
        Ok(run)
    }

    /// Appends a held run's records to the chain, forced onto the run and stamped with the
    /// bridge; their sequence numbers once durable.
    pub async fn append_audit(
        &self,
        bridge: &BridgeRecord,
        run_id: &str,
        entries: Vec<AuditEntry>,
    ) -> Result<Vec<u64>, HubError> {
        if entries.len() > MAX_AUDIT_BATCH {
            return Err(HubError::Invalid(format!(
                "at most {MAX_AUDIT_BATCH} records per request"
            )));
        }
        if let Some(bad) = entries
            .iter()
            .find(|e| !BRIDGE_ACTIONS.iter().any(|p| e.action.starts_with(p)))
        {
            return Err(HubError::Invalid(format!(
                "a bridge records host calls only, not '{}'",
                cap(bad.action.clone())
            )));
        }
        let run = self.held(bridge, run_id)?;
        let stamp = format!("bridge {}", bridge.id);
        let entries = entries
            .into_iter()
            .map(|mut entry| {
                entry.run_id = Some(run.id.clone());
                entry.actor = run.actor.clone();
                let detail = match entry.detail.take() {
                    Some(d) if !d.is_empty() => format!("{d}; {stamp}"),
                    _ => stamp.clone(),
                };
                entry.detail = Some(cap(detail));
                entry
            })
            .collect();
        let records = self
            .audit
            .append_all(entries)
            .await
            .map_err(|e| HubError::Internal(e.to_string()))?;
        Ok(records.iter().map(|r| r.seq).collect())
    }

    /// The held run's lease for a credential of its grant (see [`acquire_run_lease`]).
    pub async fn lease(
        &self,
        bridge: &BridgeRecord,
        run_id: &str,
        credential: &str,
        known: Option<&str>,
    ) -> Result<HeldLease, HubError> {
        let run = self.held(bridge, run_id)?;
        let process = self
            .processes
            .get(&run.process_id)?
            .ok_or_else(|| HubError::Denied(format!("process {} is gone", run.process_id)))?;
        // A workflow's step run holds its task state's grant, not the (empty) process grant.
        let process = crate::workflow::effective_process(&process, &run)
            .map_err(|e| HubError::Denied(e.to_string()))?;
        let grant = &process.grant;
        if !grant.credentials.contains(credential) && !grant.rotations.contains(credential) {
            return Err(HubError::Denied(format!(
                "credential '{credential}' is not in the run's grant"
            )));
        }
        let wall = u64::try_from(self.limits.wall_time.as_millis()).unwrap_or(u64::MAX);
        let deadline_ms = run
            .started_ms
            .unwrap_or(run.created_ms)
            .saturating_add(wall);
        let new = NewLease {
            run_id: &run.id,
            actor: &run.actor,
            credential,
            targets: &grant.targets,
            deadline_ms,
        };
        acquire_run_lease(&self.leases, known, new)
            .await
            .map_err(|e| match e {
                LinkError::Denied(why) => HubError::Denied(why),
                LinkError::NotFound(name) => {
                    HubError::Denied(format!("credential '{name}' not found"))
                }
                LinkError::Failed(why) => HubError::Internal(why),
            })
    }

    /// Checks uses of a held run's leases, each on a target of the bridge's zone: for each,
    /// `None` if allowed or the denial.
    pub fn check_leases(
        &self,
        bridge: &BridgeRecord,
        run_id: &str,
        uses: &[LeaseUse],
    ) -> Result<Vec<Option<String>>, HubError> {
        if uses.len() > super::wire::MAX_LEASE_CHECKS {
            return Err(HubError::Invalid(format!(
                "at most {} lease uses per check",
                super::wire::MAX_LEASE_CHECKS
            )));
        }
        let run = self.held(bridge, run_id)?;
        let mut verdicts = Vec::with_capacity(uses.len());
        for used in uses {
            let Some(target) = &used.target else {
                return Err(HubError::Invalid("a lease check names a target".into()));
            };
            let verdict = match self.in_zone(bridge, target) {
                Err(HubError::Denied(why)) => Some(why),
                Err(e) => return Err(e),
                Ok(()) => self
                    .leases
                    .check(&used.lease, &run.id, &used.credential, target)
                    .err()
                    .map(|d| d.to_string()),
            };
            verdicts.push(verdict);
        }
        Ok(verdicts)
    }

    /// The secret of a held run's credential under its lease (for a call on a target of the
    /// bridge's zone, or, without a target, to register it with the run's redactor), base64.
    pub fn secret(
        &self,
        bridge: &BridgeRecord,
        run_id: &str,
        used: &LeaseUse,
    ) -> Result<zeroize::Zeroizing<String>, HubError> {
        let run = self.held(bridge, run_id)?;
        match &used.target {
            Some(target) => {
                self.in_zone(bridge, target)?;
                self.leases
                    .check(&used.lease, &run.id, &used.credential, target)
                    .map_err(|d| HubError::Denied(d.to_string()))?;
            }
            None => {
                let lease = self
                    .leases
                    .get(&used.lease)
                    .map_err(|e| HubError::Internal(e.to_string()))?
                    .ok_or_else(|| {
                        HubError::Denied(format!("lease {} does not exist", used.lease))
                    })?;
                let active = lease.status() == crate::vault::lease::LeaseStatus::Active;
                if lease.run_id != run.id || lease.credential != used.credential || !active {
                    return Err(HubError::Denied(format!(
                        "lease {} is not an active lease of this run for '{}'",
                        used.lease, used.credential
                    )));
                }
            }
        }
        let secret = self.vault.secret(&used.credential).map_err(|e| match e {
            crate::vault::VaultError::NotFound(_) => {
                HubError::Denied(format!("credential '{}' not found", used.credential))
            }
            other => HubError::Internal(other.to_string()),
        })?;
        Ok(zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD.encode(secret.expose()),
        ))
    }

    /// Refuses a target outside the bridge's zone (by the server's record of the target).
    fn in_zone(&self, bridge: &BridgeRecord, target: &str) -> Result<(), HubError> {
        match self.targets.get(target) {
            Ok(Some(t)) if t.zone == bridge.zone => Ok(()),
            Ok(Some(t)) => Err(HubError::Denied(format!(
                "target '{target}' is in zone {}, not this bridge's zone {}",
                t.zone, bridge.zone
            ))),
            Ok(None) => Err(HubError::Denied(format!("no target named '{target}'"))),
            Err(e) => Err(HubError::Internal(e.to_string())),
        }
    }

    /// Renews a held run's claim; whether someone asked to cancel it.
    pub fn renew(
        &self,
        bridge: &BridgeRecord,
        run_id: &str,
        cancels: &crate::store::Table,
    ) -> Result<bool, HubError> {
        self.held(bridge, run_id)?;
        Ok(cancels
            .get(run_id.as_bytes())
            .map_err(RunsError::from)?
            .is_some())
    }

    /// Records how a held run ended, as the bridge reports it, and revokes its leases.
    pub async fn finish(
        &self,
        bridge: &BridgeRecord,
        run_id: &str,
        report: RunReport,
    ) -> Result<RunRecord, HubError> {
        let run = self.held(bridge, run_id)?;
        let state = crate::runs::dispatch::final_state(&report.outcome);
        let note = format!("host calls: {}; bridge {}", report.host_calls, bridge.id);
        let store = self.runs.clone().owned_by(&holder(&bridge.id));
        let ended = store
            .transition_noted(run_id, state, &run.actor, &note, |r| {
                crate::runs::dispatch::fill(r, report)
            })
            .await?;
        if let Err(e) = self
            .leases
            .revoke_run(run_id, super::RUN_END_ACTOR, &format!("run ended: {state}"))
            .await
        {
            tracing::error!(run = %run_id, error = %e, "could not revoke the run's leases");
        }
        // After the end is stored: a stream that sees its channel close finds the end.
        self.live.close(run_id);
        Ok(ended)
    }
}

/// `text` cut to the audit field cap.
fn cap(mut text: String) -> String {
    if text.len() > MAX_TEXT_BYTES {
        let mut cut = MAX_TEXT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
