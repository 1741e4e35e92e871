//! `/v1/runs/{id}/approval`, `/approve`, `/reject`, `/inputs`: the four-eyes approval of runs
//! (logic in [`crate::runs::approval`]).
//!
//! Who may approve or reject is the policies' call (`ApproveRun` on the run's process, with
//! the requester in the context so `no-self-approval` applies); a refusal is audited
//! `run.approval.refused` with the policy that refused. The approval module then refuses the
//! requester again in code, so a policy edit cannot re-enable self-approval. The requester
//! of a scheduled run is the schedule's creator ([`crate::runs::approval::Approvals::requester`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Body;
use super::processes::process_ref;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::{AppState, Metrics};
use crate::audit::{AuditEntry, Decision};
use crate::policy::{Action, Resource};
use crate::runs::approval::{ApprovalError, ApprovalRequest, ApproveOutcome};
use crate::runs::dispatch::StartError;
use crate::runs::{MAX_LIST_RUNS, Process, RunCursor, RunFilter, RunRecord, RunState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_approvals))
        .routes(routes!(get_approval))
        .routes(routes!(approve_run))
        .routes(routes!(reject_run))
        .routes(routes!(change_inputs))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct RejectRequest {
    #[serde(default)]
    reason: String,
}

/// What an approver sends: optionally the binding digest they reviewed (from `GET
/// /v1/runs/{id}/approval`), so a change made since is refused instead of approved.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct ApproveRequest {
    /// The `binding` of the request the approver reviewed.
    #[serde(default)]
    binding: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InputsRequest {
    inputs: BTreeMap<String, serde_json::Value>,
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        use ApprovalError as E;
        match e {
            e @ E::NotAwaiting { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_awaiting_approval", e.to_string())
            }
            e @ E::SelfApproval => {
                ApiError::new(StatusCode::FORBIDDEN, "self_approval", e.to_string())
            }
            e @ E::AlreadyApproved(_) => {
                ApiError::new(StatusCode::CONFLICT, "already_approved", e.to_string())
            }
            e @ (E::Stale(_) | E::Start(StartError::ProcessChanged(_))) => {
                ApiError::new(StatusCode::CONFLICT, "stale_request", e.to_string())
            }
            E::Start(StartError::Inputs(e)) => {
                ApiError::bad_request("invalid_inputs", e.to_string())
            }
            E::Start(e @ StartError::Untrusted(..)) => {
                ApiError::new(StatusCode::FORBIDDEN, "untrusted_module", e.to_string())
            }
            e @ E::NoRequester(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "no_requester", e.to_string())
            }
            E::Start(StartError::ModuleUnavailable(d)) => ApiError::new(
                StatusCode::CONFLICT,
                "module_unavailable",
                format!("module {d} is unknown or retired"),
            ),
            E::Start(StartError::Runs(e)) | E::Runs(e) => e.into(),
            E::Start(StartError::Refused(refusal)) => refusal.into(),
            E::Start(StartError::Zones(why)) => ApiError::bad_request("grant_spans_zones", why),
            e @ E::Invalid(_) => ApiError::bad_request("invalid", e.to_string()),
            e @ E::Concurrent(_) => {
                ApiError::new(StatusCode::CONFLICT, "concurrent_change", e.to_string())
            }
            other => ApiError::failure(other),
        }
    }
}

impl AppState {
    /// The run and its process, if the caller may see the run's approval request: its
    /// requester, or one who may view or approve runs of its process. Others get 404.
    async fn approval_scope(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(RunRecord, Option<Process>), ApiError> {
        let not_found = || ApiError::not_found(format!("run {id}"));
        let run = self.runs.get(id)?.ok_or_else(not_found)?;
        let process = self.processes.get(&run.process_id)?;
        if run.actor == caller.user.name {
            return Ok((run, process));
        }
        let Some(process) = process else {
            return Err(not_found());
        };
        if self.may_view(caller, &process)? || self.approves_for(caller, &process)? {
            Ok((run, Some(process)))
        } else {
            Err(not_found())
        }
    }

    /// Whether `caller` approves runs of `process` at all (whoever requested them): who may
    /// see a run's approval request. Not audited.
    fn approves_for(&self, caller: &Caller, process: &Process) -> Result<bool, ApiError> {
        let owner_is_admin = self.owner_is_admin(process)?;
        let resource = Resource::Run {
            process: process_ref(process, owner_is_admin),
            // Names no user, so no-self-approval does not apply to this question.
            requester: "",
        };
        Ok(self
            .policy
            .authorize(&caller.principal, Action::ApproveRun, resource)
            .allowed)
    }

    /// The policies' verdict on `caller` approving `run`: `Err(policy)` names the refusing
    /// policy. Not audited.
    fn may_approve(
        &self,
        caller: &Caller,
        process: &Process,
        run: &RunRecord,
    ) -> Result<Result<(), String>, ApiError> {
        let requester = match self.approvals.requester(run) {
            Ok(requester) => requester,
            Err(ApprovalError::NoRequester(_)) => return Ok(Err("no-requester".into())),
            Err(e) => return Err(e.into()),
        };
        let owner_is_admin = self.owner_is_admin(process)?;
        let resource = Resource::Run {
            process: process_ref(process, owner_is_admin),
            requester: &requester,
        };
        let decision = self
            .policy
            .authorize(&caller.principal, Action::ApproveRun, resource);
        Ok(if decision.allowed {
            Ok(())
        } else {
            Err(decision.policy())
        })
    }

    /// Allows `caller` to approve or reject `id`, or audits `run.approval.refused` and
    /// returns 403 (404 when the caller may not see the run at all).
    async fn authorize_approval(
        &self,
        caller: &Caller,
        id: &str,
        what: &str,
    ) -> Result<RunRecord, ApiError> {
        let (run, process) = self.approval_scope(caller, id).await?;
        let process =
            process.ok_or_else(|| ApiError::not_found(format!("process {}", run.process_id)))?;
        let Err(policy) = self.may_approve(caller, &process, &run)? else {
            return Ok(run);
        };
        Metrics::bump(&self.metrics.denials);
        self.audit
            .append(AuditEntry {
                run_id: Some(run.id.clone()),
                actor: caller.user.name.clone(),
                action: "run.approval.refused".into(),
                target: None,
                credential: None,
                decision: Decision::Denied {
                    reason: format!("{what} of a run started by {}", run.actor),
                    policy: Some(policy.clone()),
                },
                outcome: "denied".into(),
                duration_us: 0,
                detail: None,
            })
            .await?;
        Err(ApiError::forbidden(&policy))
    }
}

/// Runs of history an inbox page looks through by default (and at most). Bounds a request's
/// work on a long history: on sled a state is not indexed, so the inbox walks the time index.
const INBOX_WINDOW: usize = 1_000;
const MAX_INBOX_WINDOW: usize = 10_000;

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct InboxQuery {
    /// Look through this many of the newest runs (older than `before`): default 1,000, at
    /// most 10,000.
    window: Option<u32>,
    /// Only runs older than this cursor (`created_ms:id`): the previous page's
    /// `x-warden-next-before`.
    #[param(pattern = r"^[0-9]{1,19}:[A-Za-z0-9._-]{1,64}$")]
    before: Option<String>,
}

/// Runs awaiting approval whose request the caller may see (as `GET
/// /v1/runs/{id}/approval` decides: its requester, or one who may view or approve runs of its
/// process), newest first: an approver's inbox. A page looks through `window` runs of history
/// (1,000 by default); `x-warden-next-before` names where the next page starts.
#[utoipa::path(get, path = "/v1/approvals", params(InboxQuery),
    responses(
        (status = 200, description = "runs awaiting approval that the caller may see the request of, newest first", body = Vec<RunRecord>,
            headers(("x-warden-next-before" = String, description = "cursor of the next page; absent when the history is exhausted"))),
        (status = 400, description = "`invalid`: `before` is not `created_ms:id`")))]
async fn list_approvals(
    State(state): State<AppState>,
    caller: Caller,
    super::Params(q): super::Params<InboxQuery>,
) -> Result<(axum::http::HeaderMap, Json<Vec<RunRecord>>), ApiError> {
    let window = q
        .window
        .map_or(INBOX_WINDOW, |n| n as usize)
        .clamp(1, MAX_INBOX_WINDOW);
    let mut before = q
        .before
        .as_deref()
        .map(str::parse::<RunCursor>)
        .transpose()?;
    let (mut seen, mut visible, mut next) = (0, Vec::new(), None);
    while seen < window {
        let limit = MAX_LIST_RUNS.min(window - seen);
        let filter = RunFilter {
            before: before.clone(),
            limit: Some(limit),
            ..RunFilter::default()
        };
        let page = state.runs.list(&filter)?;
        seen += page.len();
        let full = page.len() >= limit;
        before = page.last().map(RunCursor::after);
        for run in page {
            // Not visible is a silent filter (404 inside), as for the run list.
            if run.state == RunState::AwaitingApproval
                && state.approval_scope(&caller, &run.id).await.is_ok()
            {
                visible.push(run);
            }
        }
        if !full {
            break;
        }
        next = before.clone();
    }
    let header = next.filter(|_| seen >= window).map(|c| c.to_string());
    Ok((
        super::runs::next_page_header(super::runs::NEXT_BEFORE_HEADER, header),
        Json(visible),
    ))
}

/// The approval request of a run: module digest, manifest (capabilities), inputs, the
/// process's grant (targets, credentials), the binding digest an approval binds to, and
/// the approvals so far with their validity.
#[utoipa::path(get, path = "/v1/runs/{id}/approval", params(("id" = String, Path, description = "run id")), responses((status = 200, description = "the approval request", body = ApprovalRequest), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn get_approval(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ApprovalRequest>, ApiError> {
    let (run, _) = state.approval_scope(&caller, &id).await?;
    Ok(Json(state.approvals.request(&run.id)?))
}

/// Approve a run awaiting approval, exactly as it stands now (or, with `binding` in the
/// body, only if it still binds to what the approver reviewed). Needs the ApproveRun
/// privilege on its process; never the run's requester. When this completes the required
/// approvals the run is queued and executes (`started`).
#[utoipa::path(post, path = "/v1/runs/{id}/approve", params(("id" = String, Path, description = "run id")), request_body = ApproveRequest, responses((status = 200, description = "approved; `started` says whether the run was queued", body = ApproveOutcome), (status = 400, description = "`invalid_inputs`, `grant_spans_zones` or `invalid`: the run cannot start as it stands"), (status = 403, description = "`forbidden`: not an approver of this run; `self_approval`; `untrusted_module`; `no_requester`"), (status = 404, description = "`not_found`: unknown or not visible"), (status = 409, description = "`not_awaiting_approval`, `already_approved`, `stale_request`, `module_unavailable` or `concurrent_change`"), (status = 429, description = "the approval would start the run, but its requester (or its process) has its maximum of runs waiting; the approval was not recorded", headers(("Retry-After" = u64, description = "seconds to wait before retrying"))), (status = 503, description = "the approval would start the run, but the server's run queue is full; the approval was not recorded", headers(("Retry-After" = u64, description = "seconds to wait before retrying")))))]
async fn approve_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<ApproveRequest>,
) -> Result<Json<ApproveOutcome>, ApiError> {
    let run = state.authorize_approval(&caller, &id, "approval").await?;
    let seen = req.binding.as_deref();
    let via = match &caller.token.enrolled_by {
        Some(by) => format!(", with token {} (enrolled by {by})", caller.token.id),
        None => format!(", with token {}", caller.token.id),
    };
    let outcome = state
        .approvals
        .approve_via(&run.id, &caller.user.name, seen, &via)
        .await?;
    if outcome.started {
        Metrics::bump(&state.metrics.runs_started);
    }
    Ok(Json(outcome))
}

/// Reject a run awaiting approval: it becomes `denied` and never executes.
#[utoipa::path(post, path = "/v1/runs/{id}/reject", params(("id" = String, Path, description = "run id")), request_body = RejectRequest, responses((status = 200, description = "the denied run", body = RunRecord), (status = 400, description = "`invalid`: a reason too long"), (status = 403, description = "`forbidden`: not an approver of this run; `no_requester`"), (status = 404, description = "`not_found`: unknown or not visible"), (status = 409, description = "`not_awaiting_approval` or `concurrent_change`")))]
async fn reject_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<RejectRequest>,
) -> Result<Json<RunRecord>, ApiError> {
    let run = state.authorize_approval(&caller, &id, "rejection").await?;
    Ok(Json(
        state
            .approvals
            .reject(&run.id, &caller.user.name, &req.reason)
            .await?,
    ))
}

/// Replace the inputs of one's own run while it awaits approval. Every approval given so
/// far stops counting.
#[utoipa::path(put, path = "/v1/runs/{id}/inputs", params(("id" = String, Path, description = "run id")), request_body = InputsRequest, responses((status = 200, description = "the approval request with the new inputs", body = ApprovalRequest), (status = 400, description = "`invalid_inputs`: inputs do not match the manifest"), (status = 403, description = "`not_requester`: not the run's requester"), (status = 404, description = "`not_found`: unknown or not visible"), (status = 409, description = "`not_awaiting_approval` or `concurrent_change`")))]
async fn change_inputs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<InputsRequest>,
) -> Result<Json<ApprovalRequest>, ApiError> {
    let (run, _) = state.approval_scope(&caller, &id).await?;
    if run.actor != caller.user.name {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_requester",
            "only the run's requester may change its inputs",
        ));
    }
    Ok(Json(
        state
            .approvals
            .change_inputs(&run.id, &caller.user.name, req.inputs)
            .await?,
    ))
}
