//! Approvals (four eyes): a run of a process that requires N approvals waits in
//! `awaiting-approval` until N distinct approvers, none of them its requester, have approved
//! exactly what it will execute.
//!
//! Threats this module stops:
//! - approving one thing and running another: an approval binds to a [`binding_digest`]
//!   (SHA-256 over the process id, the module digest, the signed manifest, the run's inputs
//!   and the process's grant). The digest is recomputed from the stored run and process
//!   every time approvals are counted, so a changed module, grant or input leaves earlier
//!   approvals unmatched; they are marked invalidated and audited `run.approval.invalidated`;
//! - self-approval and one person approving twice: the requester is refused here (and by the
//!   Cedar `no-self-approval` policy, which the API consults first), and approvals are
//!   counted per distinct approver. The requester of a scheduled run (actor
//!   `schedule:<id>`) is the user who created the schedule ([`Approvals::requester`]); when
//!   that schedule is gone the requester cannot be established and nobody may approve;
//! - an approval left lying around for later: each expires after the configured TTL
//!   ([`DEFAULT_APPROVAL_TTL`]) and then no longer counts;
//! - an unaudited decision: every grant, refusal, rejection and invalidation is audited
//!   durably before its effect is stored or returned (fail closed).
//!
//! Who may approve (the ApproveRun privilege, the process shared with them) is the policies'
//! call, made by the API before it calls [`Approvals::approve`].
//!
//! Storage: table [`APPROVALS`] maps a run id to the JSON list of its [`Approval`]s. A write
//! is a compare-and-swap against the list as read, so two servers approving one run at once
//! cannot lose either approval: the loser is refused and asked to retry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{Batch, Database, Expect, StoreError, Table, TableDef};
use sha2::{Digest, Sha256};

use super::dispatch::{Dispatcher, StartError};
use super::schedule::ScheduleStore;
use super::{Process, ProcessStore, RunRecord, RunState, RunStore, RunsError, now_ms};
use crate::audit::{AuditEntry, AuditError, AuditLog, Decision};
use crate::capabilities::grant::Grant;
use crate::registry::manifest::Manifest;

/// Tree holding each run's approvals.
pub const APPROVALS: TableDef = TableDef {
    name: "approvals",
    columns: &[],
    columns_of: None,
};

/// How long an approval counts unless the server is configured otherwise.
pub const DEFAULT_APPROVAL_TTL: Duration = Duration::from_secs(24 * 3600);

/// Most approvals kept per run. Valid approvals are at most one per approver and a run
/// starts once it has [`super::MAX_REQUIRED_APPROVALS`]; invalid ones are pruned when a new
/// approval arrives. The cap is the backstop against a record that grows without bound.
pub const MAX_APPROVALS_PER_RUN: usize = 64;

/// Longest rejection reason kept. It reaches the run record and the audit log.
pub const MAX_REASON_BYTES: usize = 1024;

/// Why an approval operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The run is not waiting for approvals (already started, ended, or never needed any).
    #[error("run {run} is {state}, not awaiting approval")]
    NotAwaiting { run: String, state: RunState },
    /// The requester tried to approve (or reject) their own run.
    #[error("the requester of a run cannot approve or reject it")]
    SelfApproval,
    /// This approver already holds a valid approval of exactly this request.
    #[error("{0} has already approved this request")]
    AlreadyApproved(String),
    /// The process changed its module since the run was requested, or was deleted: the run
    /// can never execute what was requested and must be requested again.
    #[error("{0}")]
    Stale(String),
    /// The request cannot be resolved any more (its inputs no longer fit the manifest, the
    /// module was retired, …).
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("{0}")]
    Invalid(String),
    /// A scheduled run whose schedule is gone: who requested it cannot be established.
    #[error("the schedule {0} that requested this run is gone; nobody can approve it")]
    NoRequester(String),
    #[error(transparent)]
    Runs(#[from] RunsError),
    #[error("audit: {0}")]
    Audit(#[from] AuditError),
    #[error("approval storage error: {0}")]
    Storage(#[from] StoreError),
    /// The run's approvals changed (on another server) between reading and writing them.
    #[error("the approvals of run {0} changed meanwhile; retry")]
    Concurrent(String),
    #[error("stored approvals of run {0} are corrupt")]
    Corrupt(String),
    #[error("cannot encode approvals: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One approver's approval of one exact request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Approval {
    pub approver: String,
    /// The [`binding_digest`] of the request as the approver saw it.
    pub binding: String,
    pub granted_ms: u64,
    pub expires_ms: u64,
    /// Set when a change to the run or its process made this approval stop matching.
    #[serde(default)]
    pub invalidated_ms: Option<u64>,
}

impl Approval {
    /// Whether it counts towards a request whose binding is now `binding`.
    pub fn is_valid(&self, binding: &str, now_ms: u64) -> bool {
        self.invalidated_ms.is_none() && self.binding == binding && now_ms < self.expires_ms
    }
}

/// What an approver approves, exactly: serialised canonically (fixed field order, sorted
/// maps and sets) and hashed by [`binding_digest`].
#[derive(Serialize)]
struct Binding<'a> {
    process_id: &'a str,
    module_digest: &'a str,
    manifest: &'a Manifest,
    inputs: &'a BTreeMap<String, serde_json::Value>,
    grant: &'a Grant,
}

/// The digest an approval binds to: SHA-256 (hex) over a domain prefix and the canonical
/// JSON of the process id, module digest, signed manifest, the run's inputs (process
/// defaults merged) and the process's grant (targets, credentials, commands, paths).
pub fn binding_digest(
    process_id: &str,
    module_digest: &str,
    manifest: &Manifest,
    inputs: &BTreeMap<String, serde_json::Value>,
    grant: &Grant,
) -> Result<String, serde_json::Error> {
    let binding = Binding {
        process_id,
        module_digest,
        manifest,
        inputs,
        grant,
    };
    let mut hasher = Sha256::new();
    hasher.update(b"warden approval binding v1\n");
    hasher.update(serde_json::to_vec(&binding)?);
    Ok(hex::encode(hasher.finalize()))
}

/// An approval as the request shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ApprovalStatus {
    pub approver: String,
    pub granted_ms: u64,
    pub expires_ms: u64,
    /// Whether it counts now.
    pub valid: bool,
    /// Why not: `expired`, `invalidated` (the request changed after it was given).
    pub why_not: Option<String>,
}

/// Everything an approver needs to decide, and where the run stands.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ApprovalRequest {
    pub run_id: String,
    pub state: RunState,
    pub requester: String,
    pub process_id: String,
    pub process_name: Option<String>,
    /// `name@version` of the module.
    pub module: Option<String>,
    pub module_digest: String,
    /// The interfaces the signed manifest lets the module import.
    pub capabilities: Vec<String>,
    /// The whole signed manifest (inputs, narrower requests).
    #[schema(value_type = Option<Object>)]
    pub manifest: Option<Manifest>,
    /// The run's inputs, process defaults merged.
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// The process's grant: targets, credentials, command and path patterns.
    pub grant: Option<Grant>,
    pub required_approvals: u32,
    /// The digest a new approval would bind to; `None` when the run cannot be approved.
    pub binding: Option<String>,
    /// Why the run cannot be approved as it stands (process changed module or is gone,
    /// inputs no longer fit the manifest).
    pub blocked: Option<String>,
    pub approvals: Vec<ApprovalStatus>,
    /// Distinct valid approvals.
    pub valid_approvals: usize,
    /// A workflow run: the run path of the `approval` state waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// A workflow run: the outputs (by step path) the gate's binding covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<BTreeMap<String, serde_json::Value>>,
}

/// What an approval did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ApproveOutcome {
    /// The request after the approval.
    pub request: ApprovalRequest,
    /// Whether this approval completed the set and the run was queued.
    pub started: bool,
}

/// The request resolved against the process as it is now.
struct Resolved {
    process: Process,
    binding: String,
}

/// Approval records and the decisions on them. Cheap to clone; clones share one lock, so
/// approvals, input changes and invalidations of all runs happen one at a time (they are
/// rare, human-paced operations).
#[derive(Clone)]
pub struct Approvals {
    table: Table,
    runs: RunStore,
    processes: ProcessStore,
    schedules: ScheduleStore,
    /// Inbound triggers, whose creators requested the runs their events start.
    triggers: crate::triggers::store::TriggerStore,
    dispatcher: Dispatcher,
    audit: AuditLog,
    ttl: Duration,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Approvals {
    /// Opens (creating if needed) the approvals tree in `db`; approvals last
    /// [`DEFAULT_APPROVAL_TTL`].
    pub fn open(
        db: &Database,
        runs: RunStore,
        processes: ProcessStore,
        schedules: ScheduleStore,
        dispatcher: Dispatcher,
        audit: AuditLog,
    ) -> Result<Self, ApprovalError> {
        Ok(Approvals {
            table: db.table(&APPROVALS),
            runs,
            processes,
            schedules,
            triggers: crate::triggers::store::TriggerStore::open(db),
            dispatcher,
            audit,
            ttl: DEFAULT_APPROVAL_TTL,
            lock: Arc::default(),
        })
    }

    /// The same store with approvals lasting `ttl` (at least one second).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// How long a new approval lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The user accountable for requesting `run`, whom four eyes exclude from approving it:
    /// its actor, or for a scheduled run (`schedule:<id>`) the user who created the schedule,
    /// or for a triggered run (`trigger:<id>`) the user who created the trigger.
    pub fn requester(&self, run: &RunRecord) -> Result<String, ApprovalError> {
        if let Some(id) = run.actor.strip_prefix("trigger:") {
            let trigger = self
                .triggers
                .get(id)
                .map_err(|e| ApprovalError::Invalid(e.to_string()))?;
            return match trigger {
                Some(t) => Ok(t.created_by),
                None => Err(ApprovalError::NoRequester(id.to_string())),
            };
        }
        let Some(id) = run.actor.strip_prefix("schedule:") else {
            return Ok(run.actor.clone());
        };
        let schedule = self
            .schedules
            .get(id)
            .map_err(|e| ApprovalError::Invalid(e.to_string()))?;
        match schedule {
            Some(s) => Ok(s.created_by),
            None => Err(ApprovalError::NoRequester(id.to_string())),
        }
    }

    /// Whether `who` requested `run` (its actor or, for a scheduled run, the schedule's
    /// creator); a run whose requester cannot be established counts as requested by
    /// everyone (fail closed).
    fn is_requester(&self, run: &RunRecord, who: &str) -> Result<bool, ApprovalError> {
        Ok(match self.requester(run) {
            Ok(requester) => requester == who || run.actor == who,
            Err(ApprovalError::NoRequester(_)) => true,
            Err(e) => return Err(e),
        })
    }

    /// The approval request of a run (any state; a run that never needed approvals shows
    /// none).
    pub fn request(&self, run_id: &str) -> Result<ApprovalRequest, ApprovalError> {
        let run = self.load_run(run_id)?;
        if run.workflow.is_some() {
            return self.gate_view(&run, now_ms());
        }
        Ok(self.view(&run, now_ms())?.0)
    }

    /// `approver` approves the run as it stands now. When that makes the required number of
    /// distinct valid approvals, the run is queued and executes. The requester is refused
    /// (audited `run.approval.refused`).
    ///
    /// `seen` is the binding the approver reviewed (from [`Self::request`]); when given, an
    /// approval of anything else (the run or its process changed since) is refused as stale
    /// and audited, so what was reviewed is exactly what gets approved.
    pub async fn approve(
        &self,
        run_id: &str,
        approver: &str,
        seen: Option<&str>,
    ) -> Result<ApproveOutcome, ApprovalError> {
        self.approve_via(run_id, approver, seen, "").await
    }

    /// [`Self::approve`], noting in the audit record how the approver authenticated (`via`,
    /// e.g. the API token's id and who enrolled it), so an approval made with a token that
    /// someone else once held is attributable.
    pub async fn approve_via(
        &self,
        run_id: &str,
        approver: &str,
        seen: Option<&str>,
        via: &str,
    ) -> Result<ApproveOutcome, ApprovalError> {
        let _guard = self.lock.lock().await;
        let run = self.load_run(run_id)?;
        if self.is_requester(&run, approver)? {
            self.audit_refusal(
                &run,
                approver,
                "self-approval: the requester (for a scheduled run, the schedule's creator) \
                 cannot approve",
            )
            .await?;
            return Err(ApprovalError::SelfApproval);
        }
        if run.workflow.is_some() {
            return self.approve_gate(&run, approver, seen, via).await;
        }
        let resolved = match self.resolve(&run) {
            Ok(resolved) => resolved,
            Err(e @ ApprovalError::Start(StartError::Untrusted(..))) => {
                self.audit_refusal(&run, approver, &e.to_string()).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if let Some(seen) = seen.filter(|seen| *seen != resolved.binding) {
            let reason = format!(
                "stale: the approver reviewed binding sha256:{seen}, the run now binds sha256:{}",
                resolved.binding
            );
            self.audit_refusal(&run, approver, &reason).await?;
            return Err(ApprovalError::Stale(reason));
        }
        let now = now_ms();
        let (stored, mut approvals) = self.load_stored(run_id)?;
        if approvals
            .iter()
            .any(|a| a.approver == approver && a.is_valid(&resolved.binding, now))
        {
            return Err(ApprovalError::AlreadyApproved(approver.to_string()));
        }
        approvals.retain(|a| a.is_valid(&resolved.binding, now));
        if approvals.len() >= MAX_APPROVALS_PER_RUN {
            return Err(ApprovalError::Invalid(format!(
                "run {run_id} already holds {MAX_APPROVALS_PER_RUN} approvals"
            )));
        }
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        approvals.push(Approval {
            approver: approver.to_string(),
            binding: resolved.binding.clone(),
            granted_ms: now,
            expires_ms: now.saturating_add(ttl_ms),
            invalidated_ms: None,
        });
        let requester = self.requester(&run)?;
        let count = distinct_valid(&approvals, &requester, &resolved.binding, now);
        let required = resolved.process.required_approvals;
        let started = count >= usize::try_from(required).unwrap_or(usize::MAX);
        // The run's place in the queue is reserved before the approval is recorded: a full
        // queue refuses the approval itself, so no run is left approved but never started.
        let admission = if started {
            let process_id = &resolved.process.id;
            Some(
                self.dispatcher
                    .admit(&run.actor, process_id, approver)
                    .await?,
            )
        } else {
            None
        };
        self.audit
            .append(entry(
                &run,
                approver,
                "run.approval.granted",
                Decision::Allowed,
                format!(
                    "approval {count} of {required}, binding sha256:{}, expires in {} s{via}",
                    resolved.binding,
                    self.ttl.as_secs()
                ),
            ))
            .await?;
        self.store(run_id, &approvals, stored).await?;
        if let Some(admission) = admission {
            self.dispatcher
                .start_approved(&run, &resolved.process, approver, admission)
                .await?;
        }
        let run = self.load_run(run_id)?;
        Ok(ApproveOutcome {
            request: self.view(&run, now_ms())?.0,
            started,
        })
    }

    /// `approver` rejects the run: it becomes `denied` and never executes. The requester
    /// cancels instead (refused here, audited).
    pub async fn reject(
        &self,
        run_id: &str,
        approver: &str,
        reason: &str,
    ) -> Result<RunRecord, ApprovalError> {
        if reason.len() > MAX_REASON_BYTES || reason.chars().any(char::is_control) {
            return Err(ApprovalError::Invalid(format!(
                "reason: at most {MAX_REASON_BYTES} bytes, no control characters"
            )));
        }
        let _guard = self.lock.lock().await;
        let run = self.load_run(run_id)?;
        if self.is_requester(&run, approver)? {
            self.audit_refusal(
                &run,
                approver,
                "self-rejection: the requester cancels instead",
            )
            .await?;
            return Err(ApprovalError::SelfApproval);
        }
        let why = if reason.is_empty() {
            format!("rejected by {approver}")
        } else {
            format!("rejected by {approver}: {reason}")
        };
        if run.workflow.is_some() {
            return self.reject_gate(&run, approver, why).await;
        }
        if run.state != RunState::AwaitingApproval {
            return Err(not_awaiting(&run));
        }
        self.audit
            .append(entry(
                &run,
                approver,
                "run.approval.rejected",
                Decision::Denied {
                    reason: why.clone(),
                    policy: None,
                },
                why.clone(),
            ))
            .await?;
        Ok(self
            .runs
            .transition(run_id, RunState::Denied, approver, |r| r.error = Some(why))
            .await?)
    }

    /// The requester replaces the inputs of their run while it awaits approval. The new
    /// inputs are checked against the manifest; every approval given so far stops counting
    /// (audited `run.approval.invalidated`).
    pub async fn change_inputs(
        &self,
        run_id: &str,
        actor: &str,
        inputs: BTreeMap<String, serde_json::Value>,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let _guard = self.lock.lock().await;
        let run = self.load_run(run_id)?;
        if run.state != RunState::AwaitingApproval {
            return Err(not_awaiting(&run));
        }
        let process = self.current_process(&run)?;
        let merged = self.dispatcher.resolve(&process, inputs)?.inputs;
        let run = self.runs.replace_inputs(run_id, actor, merged).await?;
        self.invalidate(&run, actor, "the run's inputs changed")
            .await?;
        Ok(self.view(&run, now_ms())?.0)
    }

    /// After `process` was edited: invalidates (and audits) the approvals of its runs
    /// awaiting approval that no longer match. Returns how many approvals it invalidated.
    pub async fn process_changed(
        &self,
        process_id: &str,
        actor: &str,
    ) -> Result<usize, ApprovalError> {
        let _guard = self.lock.lock().await;
        let mut total = 0;
        for id in self.runs.ids_in_state(RunState::AwaitingApproval)? {
            let Some(run) = self.runs.get(&id)? else {
                continue;
            };
            if run.process_id == process_id {
                total += self
                    .invalidate(&run, actor, "the process was edited")
                    .await?;
            }
        }
        Ok(total)
    }

    /// Marks every unexpired approval of `run` that does not match its current binding as
    /// invalidated, audited first. Returns how many.
    async fn invalidate(
        &self,
        run: &RunRecord,
        actor: &str,
        why: &str,
    ) -> Result<usize, ApprovalError> {
        let binding = self.resolve(run).ok().map(|r| r.binding);
        let now = now_ms();
        let (stored, mut approvals) = self.load_stored(&run.id)?;
        let mut stale = Vec::new();
        for approval in &mut approvals {
            let live = approval.invalidated_ms.is_none() && now < approval.expires_ms;
            if live && binding.as_deref() != Some(approval.binding.as_str()) {
                approval.invalidated_ms = Some(now);
                stale.push(approval.approver.clone());
            }
        }
        if stale.is_empty() {
            return Ok(0);
        }
        let detail = format!("{why}; approvals no longer valid: {}", stale.join(", "));
        self.audit
            .append(entry(
                run,
                actor,
                "run.approval.invalidated",
                Decision::Allowed,
                detail,
            ))
            .await?;
        self.store(&run.id, &approvals, stored).await?;
        Ok(stale.len())
    }

    /// The request view of `run` at `now`, and the resolved binding if there is one.
    fn view(
        &self,
        run: &RunRecord,
        now: u64,
    ) -> Result<(ApprovalRequest, Option<String>), ApprovalError> {
        let process = self.processes.get(&run.process_id)?;
        let resolved = self.resolve(run);
        let (binding, blocked) = match &resolved {
            Ok(r) => (Some(r.binding.clone()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let module = self
            .dispatcher
            .modules()
            .get(&run.module_digest)
            .map_err(|e| ApprovalError::Start(StartError::Registry(e.to_string())))?;
        let approvals = self.load(&run.id)?;
        let statuses = approvals
            .iter()
            .map(|a| {
                let why_not = if a.invalidated_ms.is_some()
                    || binding.as_deref() != Some(a.binding.as_str())
                {
                    Some("invalidated".to_string())
                } else if now >= a.expires_ms {
                    Some("expired".to_string())
                } else {
                    None
                };
                ApprovalStatus {
                    approver: a.approver.clone(),
                    granted_ms: a.granted_ms,
                    expires_ms: a.expires_ms,
                    valid: why_not.is_none(),
                    why_not,
                }
            })
            .collect();
        let requester = self.requester(run).unwrap_or_else(|_| run.actor.clone());
        let valid_approvals = binding
            .as_deref()
            .map_or(0, |b| distinct_valid(&approvals, &requester, b, now));
        let request = ApprovalRequest {
            run_id: run.id.clone(),
            state: run.state,
            requester: run.actor.clone(),
            process_id: run.process_id.clone(),
            process_name: process.as_ref().map(|p| p.name.clone()),
            module: module.as_ref().map(|m| format!("{}@{}", m.name, m.version)),
            module_digest: run.module_digest.clone(),
            capabilities: module
                .as_ref()
                .map(|m| m.manifest.capabilities.clone())
                .unwrap_or_default(),
            manifest: module.map(|m| m.manifest),
            inputs: run.inputs.clone(),
            grant: process.as_ref().map(|p| p.grant.clone()),
            required_approvals: process.as_ref().map_or(0, |p| p.required_approvals),
            binding: binding.clone(),
            blocked,
            approvals: statuses,
            valid_approvals,
            step: None,
            outputs: None,
        };
        Ok((request, binding))
    }

    /// The run's binding against its process as it is now; fails when the run cannot be
    /// approved at all.
    fn resolve(&self, run: &RunRecord) -> Result<Resolved, ApprovalError> {
        if run.state != RunState::AwaitingApproval {
            return Err(not_awaiting(run));
        }
        let process = self.current_process(run)?;
        let resolved = self.dispatcher.resolve(&process, run.inputs.clone())?;
        let binding = binding_digest(
            &process.id,
            &resolved.module.digest,
            &resolved.module.manifest,
            &resolved.inputs,
            &process.grant,
        )?;
        Ok(Resolved { process, binding })
    }

    /// The run's process, provided it still runs the module the run was requested with.
    fn current_process(&self, run: &RunRecord) -> Result<Process, ApprovalError> {
        let process = self.processes.get(&run.process_id)?.ok_or_else(|| {
            ApprovalError::Stale(format!(
                "process {} was deleted; the run cannot start",
                run.process_id
            ))
        })?;
        if process.module_digest != run.module_digest {
            return Err(ApprovalError::Stale(format!(
                "process {} now runs module {}, not the requested {}; request a new run",
                process.id, process.module_digest, run.module_digest
            )));
        }
        Ok(process)
    }

    async fn audit_refusal(
        &self,
        run: &RunRecord,
        approver: &str,
        reason: &str,
    ) -> Result<(), ApprovalError> {
        let decision = Decision::Denied {
            reason: reason.to_string(),
            policy: None,
        };
        self.audit
            .append(entry(
                run,
                approver,
                "run.approval.refused",
                decision,
                reason.to_string(),
            ))
            .await?;
        Ok(())
    }

    fn load_run(&self, run_id: &str) -> Result<RunRecord, ApprovalError> {
        Ok(self
            .runs
            .get(run_id)?
            .ok_or_else(|| RunsError::NotFound(format!("run {run_id}")))?)
    }

    fn load(&self, run_id: &str) -> Result<Vec<Approval>, ApprovalError> {
        Ok(self.load_stored(run_id)?.1)
    }

    /// A run's approvals with the bytes they are stored as (`None`: none yet).
    fn load_stored(&self, run_id: &str) -> Result<(Option<Vec<u8>>, Vec<Approval>), ApprovalError> {
        match self.table.get(run_id.as_bytes())? {
            Some(bytes) => {
                let approvals = serde_json::from_slice(&bytes)
                    .map_err(|_| ApprovalError::Corrupt(run_id.to_string()))?;
                Ok((Some(bytes), approvals))
            }
            None => Ok((None, Vec::new())),
        }
    }

    /// Stores a run's approvals in place of exactly `stored` (as read) and waits until they
    /// are durable; [`ApprovalError::Concurrent`] if they changed meanwhile.
    async fn store(
        &self,
        run_id: &str,
        approvals: &[Approval],
        stored: Option<Vec<u8>>,
    ) -> Result<(), ApprovalError> {
        let expect = stored.map_or(Expect::Absent, Expect::Equals);
        let mut batch = Batch::new();
        batch.put(
            &APPROVALS,
            run_id.as_bytes(),
            serde_json::to_vec(approvals)?,
            expect,
        );
        match self.table.database().apply_async(batch).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_conflict() => Err(ApprovalError::Concurrent(run_id.to_string())),
            Err(e) => Err(e.into()),
        }
    }
}

/// Distinct approvers other than `requester` with a valid approval of `binding`.
fn distinct_valid(approvals: &[Approval], requester: &str, binding: &str, now: u64) -> usize {
    approvals
        .iter()
        .filter(|a| a.approver != requester && a.is_valid(binding, now))
        .map(|a| a.approver.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

fn not_awaiting(run: &RunRecord) -> ApprovalError {
    ApprovalError::NotAwaiting {
        run: run.id.clone(),
        state: run.state,
    }
}

fn entry(
    run: &RunRecord,
    actor: &str,
    action: &str,
    decision: Decision,
    detail: String,
) -> AuditEntry {
    let outcome = match &decision {
        Decision::Allowed => "ok",
        Decision::Denied { .. } => "denied",
    };
    AuditEntry {
        run_id: Some(run.id.clone()),
        actor: actor.to_string(),
        action: action.to_string(),
        target: None,
        credential: None,
        decision,
        outcome: outcome.to_string(),
        duration_us: 0,
        detail: Some(detail),
    }
}

#[path = "approval_gate.rs"]
mod gate;

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(approver: &str, binding: &str, expires_ms: u64) -> Approval {
        Approval {
            approver: approver.into(),
            binding: binding.into(),
            granted_ms: 0,
            expires_ms,
            invalidated_ms: None,
        }
    }

    #[test]
    fn only_distinct_unexpired_matching_non_requester_approvals_count() {
        let list = vec![
            approval("bob", "b1", 100),
            approval("bob", "b1", 100),
            approval("carol", "b0", 100),
            approval("dave", "b1", 10),
            approval("alice", "b1", 100),
        ];
        assert_eq!(distinct_valid(&list, "alice", "b1", 50), 1);
        let mut erin = approval("erin", "b1", 100);
        assert_eq!(
            distinct_valid(&[erin.clone(), list[0].clone()], "x", "b1", 50),
            2
        );
        erin.invalidated_ms = Some(1);
        assert_eq!(distinct_valid(&[erin, list[0].clone()], "x", "b1", 50), 1);
    }

    #[test]
    fn binding_changes_with_every_bound_field() {
        let manifest = Manifest {
            name: "m".into(),
            version: "1".into(),
            description: String::new(),
            capabilities: vec!["log".into()],
            inputs: BTreeMap::new(),
            requests: Default::default(),
            limits: Default::default(),
        };
        let inputs = BTreeMap::from([("name".to_string(), serde_json::json!("Ada"))]);
        let grant = Grant::default();
        let digest = "ab".repeat(32);
        let base = binding_digest("p", &digest, &manifest, &inputs, &grant).unwrap_or_default();
        assert_eq!(base.len(), 64);
        let again = binding_digest("p", &digest, &manifest, &inputs, &grant).unwrap_or_default();
        assert_eq!(base, again, "the serialisation is canonical");

        let other_inputs = BTreeMap::from([("name".to_string(), serde_json::json!("Bob"))]);
        let mut more_caps = manifest.clone();
        more_caps.capabilities.push("ssh".into());
        let mut wider = grant.clone();
        wider.targets.insert("db1".into());
        let mut creds = grant.clone();
        creds.credentials.insert("root".into());
        let changed = [
            binding_digest("q", &digest, &manifest, &inputs, &grant),
            binding_digest("p", &"cd".repeat(32), &manifest, &inputs, &grant),
            binding_digest("p", &digest, &more_caps, &inputs, &grant),
            binding_digest("p", &digest, &manifest, &other_inputs, &grant),
            binding_digest("p", &digest, &manifest, &inputs, &wider),
            binding_digest("p", &digest, &manifest, &inputs, &creds),
        ];
        for (i, other) in changed.into_iter().enumerate() {
            assert_ne!(other.unwrap_or_default(), base, "field {i} is not bound");
        }
    }
}
