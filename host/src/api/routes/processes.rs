//! `/v1/processes`: create, read, update, share and delete processes, and start runs of
//! them. Who may do what is the policies' call ([`crate::policy`]); a Super Administrator,
//! for one, does not see another administrator's process until it is shared.
//!
//! Threat: a process author widening their own reach through the grant. Creating or
//! updating a process whose grant names a credential (to use or to rotate) or a target
//! needs `UseCredential` / `UseTarget` on each; a refusal is a 403 naming what is missing,
//! audited. And a module whose publisher was distrusted since: the run start is refused
//! (`untrusted_module`) and audited `run.refused`.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Body;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::{AppState, Metrics};
use crate::audit::{AuditEntry, Decision};
use crate::capabilities::grant::Grant;
use crate::policy::{Action, ProcessRef, Resource};
use crate::registry::store::ModuleInfo;
use crate::runs::dispatch::StartError;
use crate::runs::{NewProcess, Process, RunRecord};
use crate::workflow::{StepLimits, Workflow};
use axum::http::StatusCode as Status;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_processes, create_process))
        .routes(routes!(get_process, update_process, delete_process))
        .routes(routes!(share_process))
        .routes(routes!(start_run))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ProcessRequest {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    name: String,
    #[serde(default)]
    #[schema(max_length = 4096)]
    description: String,
    /// The task module's digest (none for a workflow: its digest is the definition's).
    #[serde(default)]
    #[schema(pattern = r"^([0-9a-f]{64})?$")]
    module_digest: String,
    /// A workflow definition instead of one module (see `guest-examples/workflows/README.md`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    workflow: Option<Workflow>,
    /// Limits below the server's for every run.
    #[serde(default)]
    limits: StepLimits,
    #[serde(default)]
    grant: Grant,
    #[serde(default)]
    default_inputs: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    #[schema(maximum = 16)]
    required_approvals: u32,
    /// Start a run that a remote bridge lost again automatically (only for tasks safe to
    /// repeat).
    #[serde(default)]
    retry_on_lost: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ShareRequest {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    #[serde(default)]
    inputs: BTreeMap<String, serde_json::Value>,
}

impl AppState {
    /// Whether a process's owner holds an administrator role (the Super Administrator rule).
    pub(crate) fn owner_is_admin(&self, process: &Process) -> Result<bool, ApiError> {
        Ok(match self.users.get_user(&process.owner)? {
            Some(owner) => self.users.principal(&owner)?.is_administrator(),
            None => false,
        })
    }

    /// Authorizes `action` on `process`. A caller who may not even view it gets 404, so
    /// unshared processes do not reveal that they exist.
    pub(crate) async fn authorize_process(
        &self,
        caller: &Caller,
        action: Action,
        process: &Process,
    ) -> Result<(), ApiError> {
        let owner_is_admin = self.owner_is_admin(process)?;
        let can_see = [Action::ViewProcess, Action::ExecuteProcess]
            .into_iter()
            .any(|a| {
                self.policy
                    .authorize(
                        &caller.principal,
                        a,
                        Resource::Process(process_ref(process, owner_is_admin)),
                    )
                    .allowed
            });
        let what = format!("process {}", process.id);
        let decided = self
            .authorize(
                caller,
                action,
                Resource::Process(process_ref(process, owner_is_admin)),
                &what,
            )
            .await;
        match decided {
            // Audited as denied either way; one that may not even see it learns nothing.
            Err(_) if !can_see => Err(ApiError::not_found(what)),
            other => other,
        }
    }

    /// Whether the caller may see `process` (for listings: a silent filter, not audited).
    pub(crate) fn may_view(&self, caller: &Caller, process: &Process) -> Result<bool, ApiError> {
        let owner_is_admin = self.owner_is_admin(process)?;
        let resource = Resource::Process(process_ref(process, owner_is_admin));
        Ok(self
            .policy
            .authorize(&caller.principal, Action::ViewProcess, resource)
            .allowed)
    }

    /// Refuses (403 `grant_not_permitted`, audited) a grant naming a credential or a target
    /// the caller may not use.
    pub(crate) async fn authorize_grant(
        &self,
        caller: &Caller,
        grant: &Grant,
    ) -> Result<(), ApiError> {
        let credentials = grant.credentials.iter().chain(&grant.rotations);
        let named = credentials
            .map(|c| {
                (
                    Action::UseCredential,
                    Resource::Credential(c),
                    "credential",
                    c,
                )
            })
            .chain(
                grant
                    .targets
                    .iter()
                    .map(|t| (Action::UseTarget, Resource::Target(t), "target", t)),
            );
        for (action, resource, kind, name) in named {
            let decision = self.policy.authorize(&caller.principal, action, resource);
            if decision.allowed {
                continue;
            }
            let why = format!(
                "the grant names {kind} '{name}', which you may not use ({} denied by policy {})",
                action.as_str(),
                decision.policy()
            );
            Metrics::bump(&self.metrics.denials);
            self.audit
                .append(AuditEntry {
                    run_id: None,
                    actor: caller.user.name.clone(),
                    action: format!("api.{action:?}"),
                    target: (kind == "target").then(|| name.clone()),
                    credential: (kind == "credential").then(|| name.clone()),
                    decision: Decision::Denied {
                        reason: why.clone(),
                        policy: Some(decision.policy()),
                    },
                    outcome: "denied".into(),
                    duration_us: 0,
                    detail: None,
                })
                .await?;
            return Err(ApiError::new(Status::FORBIDDEN, "grant_not_permitted", why));
        }
        Ok(())
    }

    /// Audits a run start refused because its module no longer verifies.
    pub(crate) async fn audit_refused_start(
        &self,
        actor: &str,
        process: &Process,
        error: &StartError,
    ) -> Result<(), ApiError> {
        self.audit
            .append(AuditEntry {
                run_id: None,
                actor: actor.to_string(),
                action: "run.refused".into(),
                target: None,
                credential: None,
                decision: Decision::Denied {
                    reason: error.to_string(),
                    policy: Some("registry".into()),
                },
                outcome: "denied".into(),
                duration_us: 0,
                detail: Some(format!("process {}", process.id)),
            })
            .await?;
        Ok(())
    }

    pub(crate) fn load_process(&self, id: &str) -> Result<Process, ApiError> {
        self.processes
            .get(id)?
            .ok_or_else(|| ApiError::not_found(format!("process {id}")))
    }
}

/// The API error for a run that could not be started (or resolved).
pub(crate) fn start_error(e: StartError) -> ApiError {
    match e {
        StartError::Inputs(e) => ApiError::bad_request("invalid_inputs", e.to_string()),
        StartError::ModuleUnavailable(d) => ApiError::bad_request(
            "module_unavailable",
            format!("module {d} is unknown or retired"),
        ),
        e @ StartError::Untrusted(..) => {
            ApiError::new(Status::FORBIDDEN, "untrusted_module", e.to_string())
        }
        StartError::Runs(e) => e.into(),
        StartError::Refused(refusal) => refusal.into(),
        StartError::Zones(why) => ApiError::bad_request("grant_spans_zones", why),
        other => ApiError::failure(other),
    }
}

/// What a process request executes, checked: its module, or its workflow's definition.
struct Definition {
    module_digest: String,
    module: String,
}

impl AppState {
    /// Checks what `req` would execute and what it may touch, as `caller` may grant it: the
    /// module (registered, active), or every rule of the workflow definition (its modules
    /// trusted now) and each task state's grant as if it were a process's.
    async fn definition(
        &self,
        caller: &Caller,
        req: &ProcessRequest,
    ) -> Result<Definition, ApiError> {
        let Some(workflow) = &req.workflow else {
            self.check_process_grant(caller, &req.grant).await?;
            let module = active_module(self, &req.module_digest)?;
            return Ok(Definition {
                module_digest: module.digest.clone(),
                module: format!("{}@{}", module.name, module.version),
            });
        };
        let digest = workflow.digest();
        if !req.module_digest.is_empty() && req.module_digest != digest {
            return Err(ApiError::bad_request(
                "invalid_workflow",
                "give a workflow or a module_digest, not both",
            ));
        }
        let lookup = |d: &str| -> Result<crate::registry::manifest::Manifest, String> {
            let module = self
                .modules
                .get(d)
                .map_err(|e| e.to_string())?
                .filter(|m| !m.retired)
                .ok_or_else(|| format!("module {d} is not in the registry (or retired)"))?;
            self.modules
                .check_trusted(&module)
                .map_err(|e| format!("module {d} is not signed by a trusted publisher: {e}"))?;
            Ok(module.manifest)
        };
        crate::workflow::validate::validate(workflow, &lookup)
            .map_err(|e| ApiError::bad_request("invalid_workflow", e.to_string()))?;
        for (path, task) in workflow.tasks() {
            self.check_process_grant(caller, &task.grant)
                .await
                .map_err(|e| e.context(&format!("workflow state `{path}`")))?;
        }
        Ok(Definition {
            module_digest: digest.clone(),
            module: format!("workflow@{}", &digest[..12]),
        })
    }

    /// The checks on one grant: the caller may use what it names, its credentials fit
    /// together, and its targets are in one zone.
    async fn check_process_grant(&self, caller: &Caller, grant: &Grant) -> Result<(), ApiError> {
        self.authorize_grant(caller, grant).await?;
        self.check_grant_credentials(grant)?;
        self.targets
            .zone_of(&grant.targets)
            .map_err(|why| ApiError::bad_request("grant_spans_zones", why))?;
        Ok(())
    }
}

/// A registered, not retired module, or 400 `unknown_module`.
fn active_module(state: &AppState, digest: &str) -> Result<ModuleInfo, ApiError> {
    state
        .modules
        .get(digest)
        .map_err(ApiError::internal)?
        .filter(|m| !m.retired)
        .ok_or_else(|| {
            ApiError::bad_request("unknown_module", format!("no active module {digest}"))
        })
}

pub(crate) fn process_ref(p: &Process, owner_is_admin: bool) -> ProcessRef<'_> {
    ProcessRef {
        id: &p.id,
        owner: &p.owner,
        owner_is_admin,
        shared_users: &p.shared_users,
        shared_roles: &p.shared_roles,
    }
}

/// The processes the caller may view.
#[utoipa::path(get, path = "/v1/processes", responses((status = 200, description = "visible processes", body = Vec<Process>)))]
async fn list_processes(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Process>>, ApiError> {
    let mut visible = Vec::new();
    for p in state.processes.list()? {
        if state.may_view(&caller, &p)? {
            visible.push(p);
        }
    }
    Ok(Json(visible))
}

/// Create a process bound to a registered module.
#[utoipa::path(post, path = "/v1/processes", request_body = ProcessRequest, responses((status = 201, description = "created", body = Process), (status = 400, description = "`invalid`, `unknown_module`, `invalid_grant`, `grant_spans_zones`; for a `workflow`, `invalid_workflow` naming the state at fault"), (status = 401, description = "missing or invalid token"), (status = 403, description = "`forbidden`; `grant_not_permitted`: a grant (for a workflow, a task state's, named in the message) names a credential or target the caller may not use"), (status = 409, description = "name taken")))]
async fn create_process(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<ProcessRequest>,
) -> Result<(StatusCode, Json<Process>), ApiError> {
    state
        .authorize_system(&caller, Action::ManageProcess, "processes")
        .await?;
    let what = state.definition(&caller, &req).await?;
    let process = state.processes.create(NewProcess {
        name: req.name,
        description: req.description,
        owner: caller.user.name.clone(),
        module_digest: what.module_digest,
        module: what.module,
        workflow: req.workflow,
        limits: req.limits,
        grant: req.grant,
        default_inputs: req.default_inputs,
        shared_users: BTreeSet::new(),
        shared_roles: BTreeSet::new(),
        required_approvals: req.required_approvals,
        retry_on_lost: req.retry_on_lost,
    })?;
    state
        .audit_ok(
            &caller.user.name,
            "process.create",
            format!("{} ({})", process.name, process.id),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(process)))
}

/// One process.
#[utoipa::path(get, path = "/v1/processes/{id}", params(("id" = String, Path, description = "process id")), responses((status = 200, description = "the process", body = Process), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn get_process(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Process>, ApiError> {
    let process = state.load_process(&id)?;
    state
        .authorize_process(&caller, Action::ViewProcess, &process)
        .await?;
    Ok(Json(process))
}

/// Replace a process's definition (name, module, grant, inputs, approvals).
#[utoipa::path(put, path = "/v1/processes/{id}", params(("id" = String, Path, description = "process id")), request_body = ProcessRequest, responses((status = 200, description = "updated", body = Process), (status = 400, description = "as for create, including `invalid_workflow`; the process is left as it was"), (status = 401, description = "missing or invalid token"), (status = 403, description = "`forbidden` or `grant_not_permitted`"), (status = 404, description = "unknown or not visible"), (status = 409, description = "name taken")))]
async fn update_process(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<ProcessRequest>,
) -> Result<Json<Process>, ApiError> {
    let process = state.load_process(&id)?;
    state
        .authorize_process(&caller, Action::ManageProcess, &process)
        .await?;
    let what = state.definition(&caller, &req).await?;
    let updated = state.processes.update(&id, |p| {
        p.name = req.name;
        p.description = req.description;
        p.module_digest = what.module_digest;
        p.module = what.module;
        p.workflow = req.workflow;
        p.limits = req.limits;
        p.grant = req.grant;
        p.default_inputs = req.default_inputs;
        p.required_approvals = req.required_approvals;
        p.retry_on_lost = req.retry_on_lost;
    })?;
    state
        .audit_ok(
            &caller.user.name,
            "process.update",
            format!("{} revision {}", updated.id, updated.revision),
        )
        .await?;
    // Runs awaiting approval bind to the old definition: their approvals stop counting.
    state
        .approvals
        .process_changed(&id, &caller.user.name)
        .await?;
    Ok(Json(updated))
}

/// Delete a process.
#[utoipa::path(delete, path = "/v1/processes/{id}", params(("id" = String, Path, description = "process id")), responses((status = 204, description = "deleted"), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn delete_process(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let process = state.load_process(&id)?;
    state
        .authorize_process(&caller, Action::ManageProcess, &process)
        .await?;
    state.processes.delete(&id)?;
    state.schedules.delete_all(&id).await?;
    state.triggers.delete_all(&id).await?;
    state
        .audit_ok(&caller.user.name, "process.delete", id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Share a process with users and roles (who may then execute it).
#[utoipa::path(post, path = "/v1/processes/{id}/share", params(("id" = String, Path, description = "process id")), request_body = ShareRequest, responses((status = 200, description = "shared", body = Process), (status = 400, description = "`invalid`: a user or role name is not valid, or too many shares"), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn share_process(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<ShareRequest>,
) -> Result<Json<Process>, ApiError> {
    let process = state.load_process(&id)?;
    state
        .authorize_process(&caller, Action::ManageProcess, &process)
        .await?;
    let updated = state.processes.share(&id, &req.users, &req.roles)?;
    state
        .audit_ok(
            &caller.user.name,
            "process.share",
            format!(
                "{id}: users [{}] roles [{}]",
                req.users.join(", "),
                req.roles.join(", ")
            ),
        )
        .await?;
    Ok(Json(updated))
}

/// Start a run of a process with inputs; the run executes asynchronously, or waits for
/// approvals when the process requires them (state `awaiting-approval`). A run beyond the
/// server's execution capacity waits `queued` and starts, in order, as slots free; when the
/// caller's share or the server's queue is full the run is refused with `Retry-After` and
/// nothing is created (the refusal is audited `run.refused`).
#[utoipa::path(post, path = "/v1/processes/{id}/runs", params(("id" = String, Path, description = "process id")), request_body = StartRequest, responses((status = 202, description = "started (recorded as queued, then running), queued for a free execution slot, or awaiting approval", body = RunRecord), (status = 400, description = "`invalid_inputs`: inputs do not match the manifest; `module_unavailable`; `grant_spans_zones`"), (status = 403, description = "`forbidden`: not shared with the caller; `untrusted_module`"), (status = 404, description = "`not_found`: unknown or not visible"), (status = 429, description = "`user_run_limit` or `process_run_limit`: the caller (or this process) already has its maximum of runs waiting; no run was created; retry after `Retry-After` seconds", headers(("Retry-After" = u64, description = "seconds to wait before retrying"))), (status = 503, description = "`queue_full`: the server's run queue is full; no run was created; retry after `Retry-After` seconds", headers(("Retry-After" = u64, description = "seconds to wait before retrying")))))]
async fn start_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<StartRequest>,
) -> Result<(StatusCode, Json<RunRecord>), ApiError> {
    let process = state.load_process(&id)?;
    state
        .authorize_process(&caller, Action::ExecuteProcess, &process)
        .await?;
    let inputs = body.inputs;
    let run = match state
        .dispatcher
        .start(&process, inputs, &caller.user.name)
        .await
    {
        Ok(run) => run,
        Err(e @ StartError::Untrusted(..)) => {
            state
                .audit_refused_start(&caller.user.name, &process, &e)
                .await?;
            return Err(start_error(e));
        }
        Err(e) => return Err(start_error(e)),
    };
    Metrics::bump(&state.metrics.runs_started);
    Ok((StatusCode::ACCEPTED, Json(run)))
}
