//! Capabilities: the host side of every WIT interface a task imports, one file each.
//!
//! This is the spine of the product. Every host call goes the same way, top to bottom, and
//! the way is written once, in [`call`]: count it against the run's limits → authorize it
//! (the module's signed manifest ∩ the process grant ∩ the Cedar policies) → check the
//! handles' leases ([`leases`]) → write a durable *intent* record → act (with the secret
//! fetched from the vault only here, never handed to the guest) → redact → write the
//! durable *outcome* record → return. A denial is a guest-visible `error::denied`, never a
//! trap, and it is audited like any other call. A call that breaks a limit, or whose audit
//! record cannot be written, ends the run (fail closed).
//!
//! Layout: [`call`] (the spine), [`grant`] and [`scope`] (what a run and its module may
//! ask), [`leases`], and one file per WIT interface: [`credentials`], [`ssh`], [`transfer`],
//! [`rotation`], [`log`], [`params`].
//!
//! Only this module may reveal a secret, and only to the SSH layer.

pub mod admin;
pub mod argv;
pub mod bindings;
mod call;
pub mod credentials;
pub mod grant;
pub mod leases;
mod link;
pub mod log;
pub mod params;
pub mod rotation;
pub mod scope;
pub mod server;
pub mod ssh;
pub mod transfer;
mod types;

use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceTable;

use std::collections::BTreeSet;

use crate::audit::AuditLog;
use crate::policy::{HostCallRequest, PolicyEngine};
use crate::redact::Redactor;
use crate::registry::inputs::Param;
use crate::runtime::limits::RunLimits;
use crate::runtime::{EventLog, RunControl, RunStop};
use crate::ssh::SshPool;
use crate::targets::TargetStore;
use crate::vault::Vault;
use crate::vault::lease::LeaseStore;
use call::HostCall;
pub use call::INTENT_OUTCOME;
use grant::{Denial, Grant, Request};
use scope::ManifestScope;
pub use server::{LocalServer, ServerSide};

/// The long-lived services host calls act through. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    /// The registered targets, with their pinned host keys (on a remote bridge: the
    /// records of its runs' targets, sent by the server with each run).
    pub targets: TargetStore,
    /// SSH connections, pooled per (target, credential).
    pub ssh: SshPool,
    /// The audit log, the vault and the leases: in process, or over a remote bridge's link.
    pub server: ServerSide,
}

impl Services {
    /// The embedded bridge's services: the server's own stores.
    pub fn local(
        audit: AuditLog,
        vault: Vault,
        targets: TargetStore,
        ssh: SshPool,
        leases: LeaseStore,
    ) -> Self {
        Services {
            targets,
            ssh,
            server: ServerSide::Local(LocalServer {
                audit,
                vault,
                leases,
            }),
        }
    }
}

/// The server's checks on every host call beyond the grant: the interfaces the module's
/// signed manifest requested, and the Cedar policies.
#[derive(Clone)]
pub struct HostCallPolicy {
    /// The policy engine.
    pub engine: PolicyEngine,
    /// Interfaces the signed manifest lists under `capabilities`.
    pub requested: BTreeSet<String>,
    /// The manifest's narrower requests (commands, paths, target tags): every call must fit
    /// them as well as the grant.
    pub scope: crate::registry::manifest::Requests,
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
    /// The same deadline on the monotonic clock: no host call acts past it.
    deadline: tokio::time::Instant,
    /// Fires when the run is cancelled from outside.
    cancelled: CancellationToken,
    /// Fires when the run must stop for any reason (cancelled, deadline, a limit, audit
    /// failure): what an act in progress listens to.
    stop_token: CancellationToken,
    /// What the module's signed manifest narrowed its requests to.
    scope: ManifestScope,
    /// The lease each acquired credential's handles are bound to, by credential name.
    leases: std::collections::HashMap<String, String>,
    /// On a remote bridge, the server's verdicts on the lease uses of the calls being
    /// admitted, asked in one round trip per batch: (lease, target) -> denial, if any.
    lease_verdicts: std::collections::HashMap<(String, String), Option<String>>,
    pub(crate) events: EventLog,
    pub(crate) stop: Option<RunStop>,
}

/// What a call acted on, for its audit record. Never holds a secret.
#[derive(Clone, Debug, Default)]
pub(crate) struct Subject {
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
        let deadline = tokio::time::Instant::now() + limits.wall_time;
        let cancelled = control.cancel_token();
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
            deadline,
            stop_token: cancelled.child_token(),
            cancelled,
            scope: ManifestScope::default(),
            leases: Default::default(),
            lease_verdicts: Default::default(),
            events,
            stop: None,
        }
    }

    /// Also checks every host call against the module's manifest and the policies.
    pub fn with_policy(mut self, policy: HostCallPolicy) -> Self {
        self.scope = ManifestScope::from(&policy.scope);
        self.policy = Some(policy);
        self
    }

    /// Narrows every host call to what the module's signed manifest requests (commands,
    /// paths, target tags), also where no policy engine is used (`warden exec`).
    pub fn with_manifest_scope(mut self, requests: &crate::registry::manifest::Requests) -> Self {
        self.scope = ManifestScope::from(requests);
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

    /// True once the run was cancelled from outside.
    fn control_cancelled(&self) -> bool {
        self.cancelled.is_cancelled()
    }

    /// A call that reads only the run's own state (inputs, logging, a handle's name): the
    /// interface must be permitted; one record after it. Returns whether it was allowed.
    async fn local_call(&mut self, call: HostCall<'_>) -> wasmtime::Result<bool> {
        Ok(self.host_call(call, async |_| Ok(())).await?.is_ok())
    }
}
