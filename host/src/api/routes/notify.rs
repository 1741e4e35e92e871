//! `/v1/notify`: sinks, the webhook allow-list, alert rules and dead letters.
//!
//! A sink exports the whole audit log, so managing one needs `ViewAudit` (it reads what the
//! sink ships) and `ManageAdministrators` (only a Privileged Administrator decides where the
//! audit goes; a Super Administrator cannot). Answers never hold a secret: sink configs name
//! vault credentials only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Body;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::notify::config::{AllowList, SinkConfig};
use crate::notify::rules::Rule;
use crate::notify::{DeadLetter, NotifyError};
use crate::policy::Action;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sinks, add_sink))
        .routes(routes!(remove_sink))
        .routes(routes!(enable_sink))
        .routes(routes!(disable_sink))
        .routes(routes!(dead_letters))
        .routes(routes!(replay))
        .routes(routes!(get_allow, set_allow))
        .routes(routes!(list_rules, add_rule))
        .routes(routes!(remove_rule))
}

impl From<NotifyError> for ApiError {
    fn from(e: NotifyError) -> Self {
        match e {
            NotifyError::Invalid(e) => ApiError::bad_request("invalid", e.0),
            NotifyError::NotFound(what) => ApiError::not_found(what),
            NotifyError::Exists(what) => ApiError::conflict(format!("{what} already exists")),
            NotifyError::Store(e) => e.into(),
            NotifyError::Audit(e) => e.into(),
        }
    }
}

async fn admin(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    state
        .authorize_system(caller, Action::ViewAudit, "notification sinks")
        .await?;
    state
        .authorize_system(caller, Action::ManageAdministrators, "notification sinks")
        .await
}

/// List sinks.
#[utoipa::path(get, path = "/v1/notify/sinks", responses((status = 200, description = "sinks", body = Vec<SinkConfig>)))]
async fn list_sinks(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<SinkConfig>>, ApiError> {
    admin(&state, &caller).await?;
    Ok(Json(state.notify.store.sinks()?))
}

/// Add a sink (a webhook's URL must be on the allow-list).
#[utoipa::path(post, path = "/v1/notify/sinks", request_body = SinkConfig, responses((status = 201, description = "added", body = SinkConfig), (status = 400, description = "`invalid`: a field out of range, or a destination the allow-list does not allow"), (status = 409, description = "`conflict`: exists")))]
async fn add_sink(
    State(state): State<AppState>,
    caller: Caller,
    Body(config): Body<SinkConfig>,
) -> Result<(StatusCode, Json<SinkConfig>), ApiError> {
    admin(&state, &caller).await?;
    state
        .notify
        .store
        .add_sink(&caller.user.name, config.clone())
        .await?;
    state.notify.reload()?;
    Ok((StatusCode::CREATED, Json(config)))
}

/// Remove a sink (its cursor too; its dead letters stay until replayed or the sink is re-added).
#[utoipa::path(delete, path = "/v1/notify/sinks/{name}", params(("name" = String, Path, description = "sink")), responses((status = 204, description = "removed"), (status = 404, description = "`not_found`: unknown sink")))]
async fn remove_sink(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&state, &caller).await?;
    state
        .notify
        .store
        .remove_sink(&caller.user.name, &name)
        .await?;
    state.notify.reload()?;
    Ok(StatusCode::NO_CONTENT)
}

/// Re-enable a sink (after a 410, say).
#[utoipa::path(post, path = "/v1/notify/sinks/{name}/enable", params(("name" = String, Path, description = "sink")), responses((status = 204, description = "enabled"), (status = 404, description = "`not_found`: unknown sink")))]
async fn enable_sink(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&state, &caller).await?;
    state
        .notify
        .store
        .set_enabled(&caller.user.name, &name, true, None)
        .await?;
    state.notify.reload()?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disable a sink.
#[utoipa::path(post, path = "/v1/notify/sinks/{name}/disable", params(("name" = String, Path, description = "sink")), responses((status = 204, description = "disabled"), (status = 404, description = "`not_found`: unknown sink")))]
async fn disable_sink(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&state, &caller).await?;
    state
        .notify
        .store
        .set_enabled(
            &caller.user.name,
            &name,
            false,
            Some("disabled by an administrator"),
        )
        .await?;
    state.notify.reload()?;
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook's dead letters.
#[utoipa::path(get, path = "/v1/notify/sinks/{name}/dead-letters", params(("name" = String, Path, description = "sink")), responses((status = 200, description = "dead letters, oldest first", body = Vec<DeadLetter>), (status = 404, description = "`not_found`: unknown sink")))]
async fn dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    admin(&state, &caller).await?;
    Ok(Json(state.notify.store.dead_letters(&name)?))
}

/// Send a webhook's dead letters once more.
#[utoipa::path(post, path = "/v1/notify/sinks/{name}/dead-letters/replay", params(("name" = String, Path, description = "sink")), responses((status = 200, description = "replayed", body = Replayed), (status = 400, description = "`invalid`: not a webhook sink"), (status = 404, description = "`not_found`: unknown sink")))]
async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Replayed>, ApiError> {
    admin(&state, &caller).await?;
    let (delivered, failed) = state.notify.store.replay(&caller.user.name, &name).await?;
    Ok(Json(Replayed { delivered, failed }))
}

/// What a replay of dead letters did.
#[derive(Serialize, ToSchema)]
struct Replayed {
    /// Letters delivered (and removed).
    delivered: usize,
    /// Letters that failed again (kept).
    failed: usize,
}

/// The webhook destination allow-list.
#[utoipa::path(get, path = "/v1/notify/allow", responses((status = 200, description = "allow-list", body = AllowList)))]
async fn get_allow(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<AllowList>, ApiError> {
    admin(&state, &caller).await?;
    Ok(Json(state.notify.store.allow_list()?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AllowBody {
    /// `HOST:PORT` or CIDR entries, at most 64.
    #[schema(max_items = 64)]
    entries: Vec<String>,
}

/// Replace the allow-list (`HOST:PORT` or CIDR entries).
#[utoipa::path(put, path = "/v1/notify/allow", request_body = AllowBody, responses((status = 204, description = "set"), (status = 400, description = "`invalid`: an entry that is neither `HOST:PORT` nor a CIDR block")))]
async fn set_allow(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<AllowBody>,
) -> Result<StatusCode, ApiError> {
    admin(&state, &caller).await?;
    let list = AllowList {
        entries: body.entries,
    };
    state
        .notify
        .store
        .set_allow_list(&caller.user.name, list)
        .await?;
    state.notify.reload()?;
    Ok(StatusCode::NO_CONTENT)
}

/// List alert rules.
#[utoipa::path(get, path = "/v1/notify/rules", responses((status = 200, description = "rules", body = Vec<Rule>)))]
async fn list_rules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Rule>>, ApiError> {
    admin(&state, &caller).await?;
    Ok(Json(state.notify.store.rules()?))
}

/// Add an alert rule.
#[utoipa::path(post, path = "/v1/notify/rules", request_body = Rule, responses((status = 201, description = "added", body = Rule), (status = 400, description = "`invalid`: a name, match or sink out of range, or a sink that does not exist"), (status = 409, description = "`conflict`: exists")))]
async fn add_rule(
    State(state): State<AppState>,
    caller: Caller,
    Body(rule): Body<Rule>,
) -> Result<(StatusCode, Json<Rule>), ApiError> {
    admin(&state, &caller).await?;
    state
        .notify
        .store
        .add_rule(&caller.user.name, rule.clone())
        .await?;
    Ok((StatusCode::CREATED, Json(rule)))
}

/// Remove an alert rule.
#[utoipa::path(delete, path = "/v1/notify/rules/{name}", params(("name" = String, Path, description = "rule")), responses((status = 204, description = "removed"), (status = 404, description = "`not_found`: unknown rule")))]
async fn remove_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&state, &caller).await?;
    state
        .notify
        .store
        .remove_rule(&caller.user.name, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
