//! `/v1/targets`: SSH endpoints with pinned host keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Body;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::policy::Action;
use crate::targets::Target;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_targets, add_target))
        .routes(routes!(get_target, remove_target))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTarget {
    name: String,
    /// `HOST[:PORT]`.
    address: String,
    /// OpenSSH public key line to pin.
    host_key: String,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// List targets.
#[utoipa::path(get, path = "/v1/targets", responses((status = 200, description = "targets")))]
async fn list_targets(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Target>>, ApiError> {
    state
        .authorize_system(&caller, Action::ManageTargets, "targets")
        .await?;
    Ok(Json(state.targets.list()?))
}

/// Register a target with its pinned host key.
#[utoipa::path(post, path = "/v1/targets", responses((status = 201, description = "added"), (status = 400, description = "invalid"), (status = 409, description = "exists")))]
async fn add_target(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<NewTarget>,
) -> Result<(StatusCode, Json<Target>), ApiError> {
    state
        .authorize_system(&caller, Action::ManageTargets, "targets")
        .await?;
    let target = Target::new(
        &req.name,
        &req.address,
        &req.host_key,
        req.zone.as_deref(),
        req.tags,
    )?;
    state.targets.add(target.clone())?;
    state
        .audit_target(&caller.user.name, "target.add", &target.name)
        .await?;
    Ok((StatusCode::CREATED, Json(target)))
}

/// One target.
#[utoipa::path(get, path = "/v1/targets/{name}", params(("name" = String, Path, description = "target name")), responses((status = 200, description = "the target"), (status = 404, description = "unknown")))]
async fn get_target(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Target>, ApiError> {
    state
        .authorize_system(&caller, Action::ManageTargets, "targets")
        .await?;
    Ok(Json(state.targets.get(&name)?.ok_or_else(|| {
        ApiError::not_found(format!("target '{name}'"))
    })?))
}

/// Remove a target.
#[utoipa::path(delete, path = "/v1/targets/{name}", params(("name" = String, Path, description = "target name")), responses((status = 204, description = "removed")))]
async fn remove_target(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .authorize_system(&caller, Action::ManageTargets, "targets")
        .await?;
    state.targets.remove(&name)?;
    state
        .audit_target(&caller.user.name, "target.remove", &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
