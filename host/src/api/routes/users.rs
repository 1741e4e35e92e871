//! `/v1/users` and `/v1/roles`: create, disable, enable and delete users; create custom
//! roles and set the credentials and targets they grant use of. Changing an administrator
//! (or making one) needs the `ManageAdministrators` action, so a Super Administrator cannot
//! promote itself out of its process restriction. Tokens are in `tokens.rs`.
//!
//! Threat: an account that outlives its owner's access (disable and delete take effect at
//! the next request), a name reused by someone else (a deleted user leaves a tombstone), and
//! an administrator locking everyone out by disabling itself (refused).

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Body;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::policy::{Action, Resource};
use crate::users::{Role, RoleGrants, TokenRequest, User, builtin, parse_privilege};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(delete_user))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
        .routes(routes!(list_roles, create_role))
        .routes(routes!(set_role_grants))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    #[schema(pattern = r"^[a-z0-9._-]{1,64}$")]
    name: String,
    /// Built-in roles (e.g. `Operator`) or custom ones, at most 64.
    #[serde(default)]
    #[schema(max_items = 64, value_type = Vec<String>)]
    roles: BTreeSet<String>,
    /// Also mint an enrollment token the new user redeems for their own token.
    #[serde(default)]
    enroll: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewRole {
    #[schema(pattern = r"^[a-z0-9._-]{1,64}$")]
    name: String,
    #[schema(value_type = Vec<PrivilegeName>)]
    privileges: Vec<String>,
    /// Credentials its holders may name in process grants.
    #[serde(default)]
    #[schema(max_items = 256, value_type = Vec<String>)]
    credentials: BTreeSet<String>,
    /// Targets its holders may name in process grants.
    #[serde(default)]
    #[schema(max_items = 256, value_type = Vec<String>)]
    targets: BTreeSet<String>,
}

/// A privilege a custom role may give.
#[derive(ToSchema)]
#[allow(dead_code)]
enum PrivilegeName {
    ManagePrivilegedProcess,
    ExecutePrivilegedProcess,
    ApproveRun,
}

/// A user as created, with its enrollment token when one was asked for.
#[derive(Serialize, ToSchema)]
struct CreatedUser {
    #[serde(flatten)]
    user: User,
    #[serde(skip_serializing_if = "Option::is_none")]
    enrollment: Option<Enrollment>,
}

/// An enrollment token: shown once, good only for its user to mint their own token.
#[derive(Serialize, ToSchema)]
struct Enrollment {
    id: String,
    token: String,
    expires_ms: u64,
}

fn gives_admin(roles: &BTreeSet<String>) -> bool {
    roles
        .iter()
        .filter_map(|r| builtin(r))
        .any(|r| r.is_administrator())
}

/// The action needed to change `roles`' holder.
pub(super) fn user_action(roles: &BTreeSet<String>) -> Action {
    if gives_admin(roles) {
        Action::ManageAdministrators
    } else {
        Action::ManageUsers
    }
}

impl AppState {
    /// Loads user `name` and authorizes managing it (ManageAdministrators for an
    /// administrator); 404 when there is none.
    pub(super) async fn authorize_user_admin(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<User, ApiError> {
        let user = self
            .users
            .get_user(name)?
            .ok_or_else(|| ApiError::not_found(format!("user '{name}'")))?;
        self.authorize(caller, user_action(&user.roles), Resource::System, "users")
            .await?;
        Ok(user)
    }
}

/// Users and their roles (deleted users appear with `deleted_ms`).
#[utoipa::path(get, path = "/v1/users", responses((status = 200, description = "users", body = Vec<User>)))]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<User>>, ApiError> {
    state
        .authorize_system(&caller, Action::ManageUsers, "users")
        .await?;
    Ok(Json(state.users.list_users()?))
}

/// Create a user with roles; with `"enroll": true` the response also carries an
/// enrollment token (shown once) that the user redeems for their own token.
#[utoipa::path(post, path = "/v1/users", request_body = NewUser, responses((status = 201, description = "created", body = CreatedUser), (status = 400, description = "`invalid`: a name or role the store refuses (an unknown role, too many)"), (status = 409, description = "`conflict`: exists, or a deleted user's reserved name")))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<NewUser>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
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
    let mut enrollment = None;
    if req.enroll {
        let issued = state.users.issue(&TokenRequest {
            user: &user.name,
            label: "enrollment",
            minted_by: &caller.user.name,
            ttl: None,
            enrolled_by: None,
        })?;
        super::tokens::audit_issued(&state, &caller, &issued.info).await?;
        enrollment = Some(Enrollment {
            id: issued.info.id,
            token: issued.token.expose_secret().to_string(),
            expires_ms: issued.info.expires_ms,
        });
    }
    Ok((StatusCode::CREATED, Json(CreatedUser { user, enrollment })))
}

/// Refuses changing one's own account this way (it would lock the caller out).
fn not_self(caller: &Caller, name: &str) -> Result<(), ApiError> {
    if caller.user.name == name {
        return Err(ApiError::conflict(
            "you cannot disable or delete your own account",
        ));
    }
    Ok(())
}

/// Disable a user: its tokens are refused from the next request on.
#[utoipa::path(post, path = "/v1/users/{name}/disable", params(("name" = String, Path, description = "user name")), responses((status = 200, description = "disabled", body = User), (status = 403, description = "`forbidden`: not allowed"), (status = 404, description = "`not_found`: unknown"), (status = 409, description = "`conflict`: one's own account, or a deleted user")))]
async fn disable_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<User>, ApiError> {
    state.authorize_user_admin(&caller, &name).await?;
    not_self(&caller, &name)?;
    let user = state.users.set_disabled(&name, true)?;
    state
        .audit_ok(&caller.user.name, "user.disable", name)
        .await?;
    Ok(Json(user))
}

/// Enable a disabled user again.
#[utoipa::path(post, path = "/v1/users/{name}/enable", params(("name" = String, Path, description = "user name")), responses((status = 200, description = "enabled", body = User), (status = 404, description = "`not_found`: unknown"), (status = 409, description = "`conflict`: a deleted user")))]
async fn enable_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<User>, ApiError> {
    state.authorize_user_admin(&caller, &name).await?;
    let user = state.users.set_disabled(&name, false)?;
    state
        .audit_ok(&caller.user.name, "user.enable", name)
        .await?;
    Ok(Json(user))
}

/// Delete a user: every token is revoked, its roles dropped; its name stays reserved so
/// its runs, approvals and audit records remain attributable.
#[utoipa::path(delete, path = "/v1/users/{name}", params(("name" = String, Path, description = "user name")), responses((status = 204, description = "deleted"), (status = 403, description = "`forbidden`: not allowed"), (status = 404, description = "`not_found`: unknown"), (status = 409, description = "`conflict`: one's own account, or deleted already")))]
async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.authorize_user_admin(&caller, &name).await?;
    not_self(&caller, &name)?;
    let (_, revoked) = state.users.delete_user(&name)?;
    state
        .audit_ok(
            &caller.user.name,
            "user.delete",
            format!("{name} ({revoked} tokens revoked)"),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Custom roles, their privileges and the credentials and targets they grant use of.
#[utoipa::path(get, path = "/v1/roles", responses((status = 200, description = "roles", body = Vec<Role>)))]
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
/// `ExecutePrivilegedProcess`, `ApproveRun`) and, optionally, the credentials and targets
/// its holders may name in process grants.
#[utoipa::path(post, path = "/v1/roles", request_body = NewRole, responses((status = 201, description = "created", body = Role), (status = 400, description = "`invalid`: an unknown privilege, a name the store refuses, too many grants"), (status = 409, description = "`conflict`: exists")))]
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
    let grants = RoleGrants {
        credentials: req.credentials,
        targets: req.targets,
    };
    let role = state
        .users
        .create_role_granting(&req.name, privileges, grants)?;
    state
        .audit_ok(&caller.user.name, "role.create", describe_role(&role))
        .await?;
    Ok((StatusCode::CREATED, Json(role)))
}

/// Replace the credentials and targets a custom role grants use of.
#[utoipa::path(put, path = "/v1/roles/{name}/grants", params(("name" = String, Path, description = "role name")), request_body = RoleGrants, responses((status = 200, description = "updated", body = Role), (status = 400, description = "`invalid`: a built-in role, or too many grants"), (status = 404, description = "`not_found`: unknown role")))]
async fn set_role_grants(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(grants): Body<RoleGrants>,
) -> Result<Json<Role>, ApiError> {
    state
        .authorize_system(&caller, Action::ManageUsers, "roles")
        .await?;
    let role = state.users.set_role_grants(&name, grants)?;
    state
        .audit_ok(&caller.user.name, "role.grants", describe_role(&role))
        .await?;
    Ok(Json(role))
}

fn describe_role(role: &Role) -> String {
    let join = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(", ");
    format!(
        "{}: privileges [{}] credentials [{}] targets [{}]",
        role.name,
        role.privileges
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        join(&role.credentials),
        join(&role.targets)
    )
}
