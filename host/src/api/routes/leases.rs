//! `/v1/runs/{id}/leases` and `/v1/leases/{id}`: the credential leases runs were issued, and
//! revoking one while its run is still going.
//!
//! A lease is visible to whoever may see its run; revoking one takes what cancelling the run
//! takes (its own actor, or the right to manage the run's process). Leases never carry a
//! secret, only the credential's name.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::policy::Action;
use crate::vault::lease::{Lease, LeaseError, LeaseStatus};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(run_leases))
        .routes(routes!(get_lease))
        .routes(routes!(revoke_lease))
}

/// A lease as the API shows it: the stored record and its status now.
#[derive(Serialize, ToSchema)]
struct LeaseView {
    #[serde(flatten)]
    lease: Lease,
    status: LeaseStatus,
}

impl From<Lease> for LeaseView {
    fn from(lease: Lease) -> Self {
        let status = lease.status();
        LeaseView { lease, status }
    }
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    #[serde(default)]
    reason: Option<String>,
}

impl From<LeaseError> for ApiError {
    fn from(e: LeaseError) -> Self {
        match e {
            LeaseError::NotFound(id) => ApiError::not_found(format!("lease {id}")),
            e @ LeaseError::AlreadyRevoked(_) => ApiError::conflict(e.to_string()),
            e @ LeaseError::Invalid(_) => ApiError::bad_request("invalid", e.to_string()),
            other => ApiError::failure(other),
        }
    }
}

impl AppState {
    /// A lease whose run the caller may see; 404 otherwise, so leases of runs the caller may
    /// not see do not reveal that they exist.
    async fn visible_lease(&self, caller: &Caller, id: &str) -> Result<Lease, ApiError> {
        let not_found = || ApiError::not_found(format!("lease {id}"));
        let lease = self.leases.get(id)?.ok_or_else(not_found)?;
        self.visible_run(caller, &lease.run_id)
            .await
            .map_err(|_| not_found())?;
        Ok(lease)
    }
}

/// The leases a run was issued, oldest first.
#[utoipa::path(get, path = "/v1/runs/{id}/leases", params(("id" = String, Path, description = "run id")), responses((status = 200, description = "the run's leases", body = Vec<LeaseView>), (status = 404, description = "`not_found`: unknown run")))]
async fn run_leases(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<LeaseView>>, ApiError> {
    let run = state.visible_run(&caller, &id).await?;
    let leases = state.leases.list_for_run(&run.id)?;
    Ok(Json(leases.into_iter().map(LeaseView::from).collect()))
}

/// One lease: run, credential, targets, expiry, revocation and status.
#[utoipa::path(get, path = "/v1/leases/{id}", params(("id" = String, Path, description = "lease id")), responses((status = 200, description = "the lease", body = LeaseView), (status = 404, description = "`not_found`: unknown")))]
async fn get_lease(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LeaseView>, ApiError> {
    Ok(Json(state.visible_lease(&caller, &id).await?.into()))
}

/// Revoke a lease now: its run's next use of the credential is refused. The body is optional:
/// `{"reason": "..."}`.
#[utoipa::path(post, path = "/v1/leases/{id}/revoke", request_body(content = Option<RevokeRequest>, content_type = "application/json", description = r#"optional: {"reason": "..."}"#), params(("id" = String, Path, description = "lease id")), responses((status = 200, description = "revoked", body = LeaseView), (status = 400, description = "`invalid_json`; `invalid`: a reason too long"), (status = 403, description = "`forbidden`: may not manage the run's process"), (status = 404, description = "`not_found`: unknown"), (status = 409, description = "`conflict`: already revoked")))]
async fn revoke_lease(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<LeaseView>, ApiError> {
    let request: RevokeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RevokeRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?
    };
    let lease = state.visible_lease(&caller, &id).await?;
    if lease.actor != caller.user.name {
        let run = state.visible_run(&caller, &lease.run_id).await?;
        let process = state.load_process(&run.process_id)?;
        state
            .authorize_process(&caller, Action::ManageProcess, &process)
            .await?;
    }
    let reason = request
        .reason
        .unwrap_or_else(|| "revoked through the API".to_string());
    let revoked = state
        .leases
        .revoke(&lease.id, &caller.user.name, &reason)
        .await?;
    Ok(Json(revoked.into()))
}
