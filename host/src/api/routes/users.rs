//! `/v1/users`, `/v1/roles`, API tokens. Changing an administrator (or making one) needs
//! the `ManageAdministrators` action, so a Super Administrator cannot promote itself out
//! of its process restriction. A token is shown once, in the response that creates it.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Body;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::policy::{Action, Resource};
use crate::users::{Role, User, builtin, parse_privilege};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(issue_token))
        .routes(routes!(list_roles, create_role))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    #[serde(default)]
    roles: BTreeSet<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[serde(default)]
    label: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRole {
    name: String,
    privileges: Vec<String>,
}

fn gives_admin(roles: &BTreeSet<String>) -> bool {
    roles
        .iter()
        .filter_map(|r| builtin(r))
        .any(|r| r.is_administrator())
}

/// The action needed to change `roles`' holder.
fn user_action(roles: &BTreeSet<String>) -> Action {
    if gives_admin(roles) {
        Action::ManageAdministrators
    } else {
        Action::ManageUsers
    }
}

/// Users and their roles.
#[utoipa::path(get, path = "/v1/users", responses((status = 200, description = "users")))]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<User>>, ApiError> {
    state
        .authorize_system(&caller, Action::ManageUsers, "users")
        .await?;
    Ok(Json(state.users.list_users()?))
}

/// Create a user with roles.
#[utoipa::path(post, path = "/v1/users", responses((status = 201, description = "created"), (status = 409, description = "exists")))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    state
        .authorize(&caller, user_action(&req.roles), Resource::System, "users")
        .await?;
    let user = state.users.create_user(&req.name, req.roles)?;
    state
        .audit_ok(
            &caller.user.name,
            "user.create",
            format!(
                "{} roles [{}]",
                user.name,
                user.roles.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Issue an API token for a user; the token is in this response only.
#[utoipa::path(post, path = "/v1/users/{name}/tokens", params(("name" = String, Path, description = "user name")), responses((status = 201, description = "the token, shown once")))]
async fn issue_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body<NewToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = state
        .users
        .get_user(&name)?
        .ok_or_else(|| ApiError::not_found(format!("user '{name}'")))?;
    state
        .authorize(
            &caller,
            user_action(&user.roles),
            Resource::System,
            "tokens",
        )
        .await?;
    let label = body.label;
    let issued = state.users.issue_token(&name, &label)?;
    state
        .audit_ok(
            &caller.user.name,
            "token.issue",
            format!("{} for {}", issued.info.id, name),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": issued.info.id, "user": name, "token": issued.token.expose_secret() })),
    ))
}

/// Custom roles and their privileges.
#[utoipa::path(get, path = "/v1/roles", responses((status = 200, description = "roles")))]
async fn list_roles(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Role>>, ApiError> {
    state
        .authorize_system(&caller, Action::ManageUsers, "roles")
        .await?;
    Ok(Json(state.users.list_roles()?))
}

/// Create a custom role from privileges (`ManagePrivilegedProcess`,
/// `ExecutePrivilegedProcess`, `ApproveRun`).
#[utoipa::path(post, path = "/v1/roles", responses((status = 201, description = "created")))]
async fn create_role(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<NewRole>,
) -> Result<(StatusCode, Json<Role>), ApiError> {
    state
        .authorize_system(&caller, Action::ManageUsers, "roles")
        .await?;
    let privileges = req
        .privileges
        .iter()
        .map(|p| {
            parse_privilege(p)
                .ok_or_else(|| ApiError::bad_request("invalid", format!("unknown privilege '{p}'")))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    let role = state.users.create_role(&req.name, privileges)?;
    state
        .audit_ok(&caller.user.name, "role.create", role.name.clone())
        .await?;
    Ok((StatusCode::CREATED, Json(role)))
}
