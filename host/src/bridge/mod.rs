//! The bridge: executes runs. It ties one prepared task, its inputs, its grant and its
//! limits to the runtime, and brackets every run with start and end audit records: its own
//! `run.start` / `run.end`, or, for server runs, the run store's audited transitions. When a
//! run ends, for any reason, its credential leases are revoked. The server embeds one
//! bridge; remote bridges will use the same type.

mod enrol;
pub mod hub;
mod link;
pub mod live;
pub mod registry;
pub mod remote;
pub mod wire;

use std::sync::Arc;
use std::time::Instant;

use crate::audit::{AuditEntry, Decision};
use crate::capabilities::grant::Grant;
use crate::capabilities::{HostCallPolicy, HostContext, RunIdentity, Services};
use crate::registry::inputs::Param;
use crate::registry::manifest::Requests;
use crate::runtime::limits::RunLimits;
use crate::runtime::{RunControl, RunOutcome, RunReport};

/// The sandbox with Warden's capabilities linked: what a bridge runs tasks in.
pub type Runtime = crate::runtime::Runtime<HostContext>;

/// A task compiled and linked against Warden's capabilities, ready to run.
pub type PreparedTask = crate::runtime::cache::PreparedTask<HostContext>;

/// Who revokes a run's leases when it ends, in `lease.revoked` audit records.
pub const RUN_END_ACTOR: &str = "system:run-end";

/// Everything needed to execute one run.
pub struct RunSpec {
    /// Who runs what.
    pub identity: RunIdentity,
    /// The compiled task.
    pub task: Arc<PreparedTask>,
    /// Validated inputs.
    pub params: Vec<Param>,
    /// What the run may touch.
    pub grant: Grant,
    /// Its limits.
    pub limits: RunLimits,
    /// Cancel switch and live events.
    pub control: Arc<RunControl>,
}

/// What a run's host calls are checked against beyond its grant.
enum Scope<'a> {
    /// Nothing beyond the grant.
    None,
    /// The module's manifest requests.
    Manifest(&'a Requests),
    /// The manifest (interfaces and requests) and the policies.
    Policy(HostCallPolicy),
}

/// Why a run could not be executed at all.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The `run.start` record could not be written, so the run did not start.
    #[error("audit log unavailable, run not started: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// Executes runs on one runtime with one set of services.
#[derive(Clone)]
pub struct Bridge {
    runtime: Arc<Runtime>,
    services: Services,
}

impl Bridge {
    /// A bridge over `runtime` acting through `services`.
    pub fn new(runtime: Arc<Runtime>, services: Services) -> Self {
        Bridge { runtime, services }
    }

    /// The runtime (to prepare modules).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The services (audit, vault, targets, SSH).
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Runs `spec` to completion. The run starts only once `run.start` is durable, and
    /// its report is returned only once `run.end` is.
    pub async fn execute(&self, spec: RunSpec) -> Result<RunReport, BridgeError> {
        self.execute_inner(spec, Scope::None, true).await
    }

    /// [`Bridge::execute`] with every host call also narrowed to what the module's manifest
    /// requests (`warden exec --manifest`).
    pub async fn execute_in_scope(
        &self,
        spec: RunSpec,
        requests: &Requests,
    ) -> Result<RunReport, BridgeError> {
        self.execute_inner(spec, Scope::Manifest(requests), true)
            .await
    }

    /// [`Bridge::execute`] with every host call also checked against the module's signed
    /// manifest and the policies (how the server runs processes).
    pub async fn execute_with_policy(
        &self,
        spec: RunSpec,
        policy: HostCallPolicy,
    ) -> Result<RunReport, BridgeError> {
        self.execute_inner(spec, Scope::Policy(policy), true).await
    }

    /// [`Bridge::execute_with_policy`] for a run whose start and end the caller records in
    /// its own audited state transitions (the server's run store, which puts
    /// [`Bridge::describe`] and the host-call count in them). Writes no `run.start` /
    /// `run.end`: one durable record fewer at each end of every server run.
    pub async fn execute_recorded(
        &self,
        spec: RunSpec,
        policy: HostCallPolicy,
    ) -> Result<RunReport, BridgeError> {
        self.execute_inner(spec, Scope::Policy(policy), false).await
    }

    /// What a run starts with, for its start record: module, input names, credentials and
    /// targets of its grant. Never input values (they may be sensitive) nor secrets.
    pub fn describe(spec: &RunSpec) -> String {
        format!(
            "module {} ({}); inputs: [{}]; credentials: [{}]; targets: [{}]",
            spec.identity.module,
            spec.task.digest,
            spec.params
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            spec.grant
                .credentials
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            spec.grant
                .targets
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    async fn execute_inner(
        &self,
        spec: RunSpec,
        scope: Scope<'_>,
        bracket: bool,
    ) -> Result<RunReport, BridgeError> {
        let started = Instant::now();
        if bracket {
            let detail = Self::describe(&spec);
            let entry = self.entry(&spec.identity, "run.start", "started", detail, started);
            self.services.server.append_audit(vec![entry]).await?;
        }
        let host = HostContext::new(
            spec.identity.clone(),
            spec.grant,
            spec.params,
            self.services.clone(),
            spec.limits.clone(),
            &spec.control,
        );
        let host = match scope {
            Scope::Policy(policy) => host.with_policy(policy),
            Scope::Manifest(requests) => host.with_manifest_scope(requests),
            Scope::None => host,
        };
        let report = self
            .runtime
            .run(&spec.task, host, &spec.limits, &spec.control)
            .await;
        let outcome = match &report.outcome {
            RunOutcome::Succeeded { .. } => "succeeded",
            RunOutcome::Failed { .. } => "failed",
            RunOutcome::Stopped { .. } => "stopped",
            RunOutcome::Trapped { .. } => "trapped",
        };
        // Whatever the outcome, the run's leases die with it. A failure here leaves no usable
        // lease (only this run's host context could use one), and startup revokes leftovers.
        // On a remote bridge the server revokes them when the bridge reports the end (or
        // when it declares the run lost).
        let reason = format!("run ended: {outcome}");
        let run_id = &spec.identity.run_id;
        if let Some(local) = self.services.server.local()
            && let Err(e) = local
                .leases
                .revoke_run(run_id, RUN_END_ACTOR, &reason)
                .await
        {
            tracing::error!(run = %run_id, error = %e, "could not revoke the run's leases");
        }
        if bracket {
            let detail = match &report.outcome {
                RunOutcome::Succeeded { .. } => String::new(),
                RunOutcome::Failed { error } | RunOutcome::Trapped { error } => error.clone(),
                RunOutcome::Stopped { reason } => reason.to_string(),
            };
            let detail = format!("{detail}; host calls: {}", report.host_calls);
            let entry = self.entry(&spec.identity, "run.end", outcome, detail, started);
            self.services.server.append_audit(vec![entry]).await?;
        }
        Ok(report)
    }

    fn entry(
        &self,
        id: &RunIdentity,
        action: &str,
        outcome: &str,
        detail: String,
        started: Instant,
    ) -> AuditEntry {
        AuditEntry {
            run_id: Some(id.run_id.clone()),
            actor: id.actor.clone(),
            action: action.to_string(),
            target: None,
            credential: None,
            decision: Decision::Allowed,
            outcome: outcome.to_string(),
            duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            detail: Some(detail),
        }
    }
}
