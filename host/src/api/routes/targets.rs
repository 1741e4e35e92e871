//! `/v1/targets`: SSH endpoints with pinned host keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTarget {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    name: String,
    /// `HOST[:PORT]`.
    #[schema(min_length = 1, max_length = 260)]
    address: String,
    /// OpenSSH public key line to pin.
    #[schema(min_length = 1, max_length = 8192)]
    host_key: String,
    /// The zone whose bridge reaches it (`default` when none).
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    zone: Option<String>,
    #[serde(default)]
    #[schema(max_items = 32, value_type = Vec<crate::api::openapi::Label>)]
    tags: Vec<String>,
}

/// List targets.
#[utoipa::path(get, path = "/v1/targets", responses((status = 200, description = "targets", body = Vec<Target>)))]
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
#[utoipa::path(post, path = "/v1/targets", request_body = NewTarget, responses((status = 201, description = "added", body = Target), (status = 400, description = "`invalid`: a name, address, host key, zone or tag the store refuses"), (status = 409, description = "`conflict`: exists")))]
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
#[utoipa::path(get, path = "/v1/targets/{name}", params(("name" = String, Path, description = "target name")), responses((status = 200, description = "the target", body = Target), (status = 404, description = "`not_found`: unknown")))]
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
#[utoipa::path(delete, path = "/v1/targets/{name}", params(("name" = String, Path, description = "target name")), responses((status = 204, description = "removed"), (status = 404, description = "`not_found`: unknown")))]
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
