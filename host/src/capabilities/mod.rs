//! Capabilities: the host side of every WIT interface a task imports, one file each.
//!
//! This is the spine of the product. Every host call goes the same way, top to bottom:
//! count it against the run's limits → ask the grant ([`grant::Grant::authorize`]) → check
//! the handle's lease ([`leases`]) → act
//! (with the secret fetched from the vault only here, never handed to the guest) →
//! redact → write one durable audit record → return. A denial is a guest-visible
//! `error::denied`, never a trap, and it is audited like any other call. A call that
//! breaks a limit, or whose audit record cannot be written, ends the run (fail closed).
//!
//! Only this module may reveal a secret, and only to the SSH layer.

pub mod admin;
pub mod argv;
pub mod credentials;
pub mod grant;
pub mod leases;
pub mod log;
pub mod params;
pub mod rotation;
pub mod ssh;
pub mod transfer;
mod types;

use std::time::Instant;

use wasmtime::component::ResourceTable;

use std::collections::BTreeSet;

use crate::audit::{AuditEntry, AuditLog, Decision};
use crate::policy::{HostCallRequest, PolicyEngine};
use crate::redact::Redactor;
use crate::runtime::bindings::params::Param;
use crate::runtime::bindings::types::Error;
use crate::runtime::limits::{LimitExceeded, RunLimits};
use crate::runtime::{EventLog, RunControl, RunStop};
use crate::ssh::SshPool;
use crate::targets::TargetStore;
use crate::vault::Vault;
use crate::vault::lease::LeaseStore;
use grant::{Denial, Grant, Request};

/// The long-lived services host calls act through. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    /// Where every host call is recorded.
    pub audit: AuditLog,
    /// Where credentials' secrets are kept.
    pub vault: Vault,
    /// The registered targets, with their pinned host keys.
    pub targets: TargetStore,
    /// SSH connections, pooled per (target, credential).
    pub ssh: SshPool,
    /// Run-scoped leases on credentials.
    pub leases: LeaseStore,
}

/// The server's checks on every host call beyond the grant: the interfaces the module's
/// signed manifest requested, and the Cedar policies.
#[derive(Clone)]
pub struct HostCallPolicy {
    /// The policy engine.
    pub engine: PolicyEngine,
    /// Interfaces the signed manifest lists under `capabilities`.
    pub requested: BTreeSet<String>,
}

/// Who runs what: identifies a run in audit records.
#[derive(Clone, Debug)]
pub struct RunIdentity {
    /// The run's id.
    pub run_id: String,
    /// The principal the run acts for (a user, or a schedule).
    pub actor: String,
    /// The task module, `name@version` or its digest.
    pub module: String,
}

/// The per-run state every host call works on: the narrow view of the store that the
/// generated `Host` traits are implemented for.
pub struct HostContext {
    pub(crate) identity: RunIdentity,
    grant: Grant,
    params: Vec<Param>,
    services: Services,
    limits: RunLimits,
    handles: ResourceTable,
    live_handles: usize,
    host_calls: u64,
    redactor: Redactor,
    policy: Option<HostCallPolicy>,
    /// The run's deadline (start + wall-time limit), Unix ms: no lease outlives it.
    deadline_ms: u64,
    /// The lease each acquired credential's handles are bound to, by credential name.
    leases: std::collections::HashMap<String, String>,
    pub(crate) events: EventLog,
    pub(crate) stop: Option<RunStop>,
}

/// A host call in progress: what it is and when it started.
struct Call {
    action: &'static str,
    started: Instant,
}

/// What a call acted on, for its audit record. Never holds a secret.
#[derive(Default)]
struct Subject {
    target: Option<String>,
    credential: Option<String>,
    detail: Option<String>,
}

impl HostContext {
    /// State for a new run.
    pub fn new(
        identity: RunIdentity,
        grant: Grant,
        params: Vec<Param>,
        services: Services,
        limits: RunLimits,
        control: &RunControl,
    ) -> Self {
        let events = EventLog::new(limits.output_bytes, control);
        let wall_ms = u64::try_from(limits.wall_time.as_millis()).unwrap_or(u64::MAX);
        let deadline_ms = crate::vault::lease::now_ms().saturating_add(wall_ms);
        HostContext {
            identity,
            grant,
            params,
            services,
            limits,
            handles: ResourceTable::new(),
            live_handles: 0,
            host_calls: 0,
            redactor: Redactor::new(),
            policy: None,
            deadline_ms,
            leases: Default::default(),
            events,
            stop: None,
        }
    }

    /// Also checks every host call against the module's manifest and the policies.
    pub fn with_policy(mut self, policy: HostCallPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Decides one host call: the grant must permit it and, on a server, the module must
    /// have requested the interface and the policies must permit it. A policy denial
    /// names the policy that refused.
    async fn authorize(&mut self, capability: &str, request: &Request<'_>) -> Result<(), Denial> {
        let grant = self.grant.authorize(request);
        let Some(policy) = &self.policy else {
            return grant;
        };
        let (target, credential, command, path) = request.parts();
        let sudo = request.sudo();
        let owned = |v: Option<&str>| v.map(str::to_string);
        let (engine, run_id, module) = (
            policy.engine.clone(),
            self.identity.run_id.clone(),
            self.identity.module.clone(),
        );
        let (capability, module_requested, grant_permits) = (
            capability.to_string(),
            policy.requested.contains(capability),
            grant.is_ok(),
        );
        let (target, credential, command, path) = (
            owned(target),
            owned(credential),
            owned(command),
            owned(path),
        );
        // Host calls run on the guest's fiber stack, where Cedar's stack-depth guard cannot
        // measure the stack and refuses every request; evaluate on a blocking-pool thread.
        let decision = tokio::task::spawn_blocking(move || {
            engine.authorize_host_call(&HostCallRequest {
                run_id: &run_id,
                module: &module,
                capability: &capability,
                target: target.as_deref(),
                credential: credential.as_deref(),
                command: command.as_deref(),
                path: path.as_deref(),
                module_requested,
                grant_permits,
                sudo,
            })
        })
        .await;
        let Ok(decision) = decision else {
            return Err(Denial {
                rule: "policy",
                detail: "policy evaluation failed".into(),
                policy: None,
            });
        };
        if decision.allowed {
            return grant;
        }
        let detail = match grant {
            Err(denial) => format!("{} (policy {})", denial.detail, decision.policy()),
            Ok(()) => format!("call refused by policy {}", decision.policy()),
        };
        Err(Denial {
            rule: "policy",
            detail,
            policy: Some(decision.policy()),
        })
    }

    /// Host calls the guest has made so far.
    pub fn host_calls(&self) -> u64 {
        self.host_calls
    }

    /// The redactor holding every secret this run has touched.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Starts a host call: counts it and checks its argument bytes. A call that breaks a
    /// limit is still audited (as denied), then ends the run.
    async fn begin(&mut self, action: &'static str, arg_bytes: usize) -> wasmtime::Result<Call> {
        let call = Call {
            action,
            started: Instant::now(),
        };
        if self.services.audit.is_failed() {
            return Err(self.end_run(RunStop::AuditFailed("audit log is failed".into())));
        }
        self.host_calls += 1;
        let exceeded = if self.host_calls > self.limits.host_calls {
            Some(LimitExceeded::HostCalls {
                limit: self.limits.host_calls,
            })
        } else if arg_bytes > self.limits.call_bytes {
            let limit = self.limits.call_bytes;
            Some(LimitExceeded::CallBytes {
                call: action.into(),
                bytes: arg_bytes,
                limit,
            })
        } else {
            None
        };
        let Some(exceeded) = exceeded else {
            return Ok(call);
        };
        let denial = Denial {
            rule: "limits",
            detail: exceeded.to_string(),
            policy: None,
        };
        let _ = self.deny::<()>(call, Subject::default(), denial).await?;
        Err(self.end_run(RunStop::Limit(exceeded)))
    }

    /// Decides and audits a call that touches no target or credential (inputs, logging, a
    /// handle's name). Returns whether it was allowed; a denial is audited, not trapped.
    async fn interface_call(
        &mut self,
        call: Call,
        capability: &str,
        subject: Subject,
    ) -> wasmtime::Result<bool> {
        match self.authorize(capability, &Request::Interface).await {
            Ok(()) => {
                self.finish(call, subject, Decision::Allowed, Ok(()))
                    .await?
                    .ok();
                Ok(true)
            }
            Err(denial) => {
                self.deny::<()>(call, subject, denial).await?.ok();
                Ok(false)
            }
        }
    }

    /// Records a denial and returns it to the guest as `error::denied`.
    async fn deny<T>(
        &mut self,
        call: Call,
        subject: Subject,
        denial: Denial,
    ) -> wasmtime::Result<Result<T, Error>> {
        // The audit names the Cedar policies that refused, or else the grant/limit rule.
        let policy = denial
            .policy
            .clone()
            .unwrap_or_else(|| denial.rule.to_string());
        let decision = Decision::Denied {
            reason: denial.detail.clone(),
            policy: Some(policy),
        };
        self.finish(
            call,
            subject,
            decision,
            Err(Error::Denied(denial.to_string())),
        )
        .await
    }

    /// Writes the call's audit record and only then hands the result to the guest. If
    /// the record cannot be written durably the run ends instead (fail closed).
    async fn finish<T>(
        &mut self,
        call: Call,
        subject: Subject,
        decision: Decision,
        result: Result<T, Error>,
    ) -> wasmtime::Result<Result<T, Error>> {
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(e) => self.redactor.redact_str(&types::describe(e)),
        };
        let entry = AuditEntry {
            run_id: Some(self.identity.run_id.clone()),
            actor: self.identity.actor.clone(),
            action: call.action.to_string(),
            target: subject.target,
            credential: subject.credential,
            decision,
            outcome,
            duration_us: u64::try_from(call.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            detail: subject.detail.map(|d| self.redactor.redact_str(&d)),
        };
        if let Err(e) = self.services.audit.append(entry).await {
            tracing::error!(run = %self.identity.run_id, error = %e, "audit write failed");
            return Err(self.end_run(RunStop::AuditFailed(e.to_string())));
        }
        Ok(result)
    }

    /// Notes why the run must end and returns the trap that ends it.
    fn end_run(&mut self, stop: RunStop) -> wasmtime::Error {
        let error = wasmtime::Error::msg(stop.to_string());
        self.stop.get_or_insert(stop);
        error
    }
}
