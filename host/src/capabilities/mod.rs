//! Capabilities: the host side of every WIT interface a task imports, one file each.
//!
//! This is the spine of the product. Every host call goes the same way, top to bottom:
//! count it against the run's limits → ask the grant ([`grant::Grant::authorize`]) → act
//! (with the secret fetched from the vault only here, never handed to the guest) →
//! redact → write one durable audit record → return. A denial is a guest-visible
//! `error::denied`, never a trap, and it is audited like any other call. A call that
//! breaks a limit, or whose audit record cannot be written, ends the run (fail closed).
//!
//! Only this module may reveal a secret, and only to the SSH layer.

pub mod credentials;
pub mod grant;
pub mod log;
pub mod params;
pub mod ssh;
pub mod transfer;
mod types;

use std::time::Instant;

use wasmtime::component::ResourceTable;

use crate::audit::{AuditEntry, AuditLog, Decision};
use crate::redact::Redactor;
use crate::runtime::bindings::params::Param;
use crate::runtime::bindings::types::Error;
use crate::runtime::limits::{LimitExceeded, RunLimits};
use crate::runtime::{EventLog, RunStop};
use crate::ssh::SshPool;
use crate::targets::TargetStore;
use crate::vault::Vault;
use grant::{Denial, Grant};

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
    ) -> Self {
        let events = EventLog::new(limits.output_bytes);
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
            events,
            stop: None,
        }
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
        };
        let _ = self.deny::<()>(call, Subject::default(), denial).await?;
        Err(self.end_run(RunStop::Limit(exceeded)))
    }

    /// Records a denial and returns it to the guest as `error::denied`.
    async fn deny<T>(
        &mut self,
        call: Call,
        subject: Subject,
        denial: Denial,
    ) -> wasmtime::Result<Result<T, Error>> {
        let decision = Decision::Denied {
            reason: denial.detail.clone(),
            policy: Some(denial.rule.into()),
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
