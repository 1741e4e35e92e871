//! `/v1/credentials`: create credentials and list their metadata. No endpoint ever returns
//! a secret; a secret arrives only in a request body and goes straight into the vault.
//! A credential may be created as an *admin* credential (`"admin": true`), whose secret is
//! typed only for privileged operations (`capabilities::admin`); the flag is shown in every
//! listing and audited at creation. Process grants are checked against these flags here too
//! ([`AppState::check_grant_credentials`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

use super::Body;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::capabilities::admin::check_grant_credentials;
use crate::capabilities::grant::Grant;
use crate::policy::Action;
use crate::vault::{self, CredentialInfo, CredentialKind, Secret, VersionInfo};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_credentials, add_credential))
        .routes(routes!(get_credential))
        .routes(routes!(update_secret))
        .routes(routes!(list_versions))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCredential {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    name: String,
    /// The account on the targets: 1 to 256 printable ASCII characters.
    #[schema(pattern = r"^[\x20-\x7e]{1,256}$")]
    username: String,
    #[serde(default = "default_kind")]
    #[schema(pattern = "^(password|ssh-key)$", default = "password")]
    kind: String,
    /// The secret (write-only: never returned), 1 byte to 16 KiB; wiped from memory once
    /// stored.
    #[schema(value_type = String, write_only, min_length = 1, max_length = 16384)]
    secret: Zeroizing<String>,
    /// An admin credential: used only for privileged operations (sudo, rotation's admin),
    /// never for a task's unprivileged commands or transfers.
    #[serde(default)]
    admin: bool,
}

/// A username is printable ASCII (as the document says; the vault itself takes any text
/// without control characters, which no SSH account name needs).
fn check_username(username: &str) -> Result<(), ApiError> {
    if username.is_empty()
        || username.len() > 256
        || !username.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return Err(ApiError::bad_request(
            "invalid",
            "username must be 1 to 256 printable ASCII characters",
        ));
    }
    Ok(())
}

fn default_kind() -> String {
    "password".into()
}

/// List credentials' metadata (never secrets).
#[utoipa::path(get, path = "/v1/credentials", responses((status = 200, description = "metadata", body = Vec<CredentialInfo>)))]
async fn list_credentials(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<CredentialInfo>>, ApiError> {
    state
        .authorize_system(&caller, Action::ManageCredentials, "credentials")
        .await?;
    Ok(Json(state.vault.list()?))
}

/// Create a credential.
#[utoipa::path(post, path = "/v1/credentials", request_body = NewCredential, responses((status = 201, description = "created (metadata only)", body = CredentialInfo), (status = 400, description = "`invalid`: a name, username, kind or secret the vault refuses"), (status = 409, description = "`conflict`: exists")))]
async fn add_credential(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<NewCredential>,
) -> Result<(StatusCode, Json<CredentialInfo>), ApiError> {
    state
        .authorize_system(&caller, Action::ManageCredentials, "credentials")
        .await?;
    check_username(&req.username)?;
    let kind: CredentialKind = req
        .kind
        .parse()
        .map_err(|_| ApiError::bad_request("invalid", "kind must be password or ssh-key"))?;
    let secret = Secret::from_bytes(req.secret.as_bytes().to_vec());
    let new = vault::NewCredential {
        name: &req.name,
        username: &req.username,
        kind,
        admin: req.admin,
    };
    let info =
        state
            .vault
            .add_credential(new, secret, &caller.user.name, "created over the API")?;
    let action = match info.admin {
        true => "credential.create-admin",
        false => "credential.create",
    };
    state
        .audit_credential(&caller.user.name, action, &info.name)
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// One credential's metadata.
#[utoipa::path(get, path = "/v1/credentials/{name}", params(("name" = String, Path, description = "credential name")), responses((status = 200, description = "metadata", body = CredentialInfo), (status = 404, description = "`not_found`: unknown")))]
async fn get_credential(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<CredentialInfo>, ApiError> {
    state
        .authorize_system(&caller, Action::ManageCredentials, "credentials")
        .await?;
    Ok(Json(state.vault.info(&name)?.ok_or_else(|| {
        ApiError::not_found(format!("credential '{name}'"))
    })?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SecretUpdate {
    /// The new secret (write-only), 1 byte to 16 KiB; wiped from memory once stored.
    #[schema(value_type = String, write_only, min_length = 1, max_length = 16384)]
    secret: Zeroizing<String>,
}

/// Replace a credential's secret. The answer carries metadata only.
#[utoipa::path(put, path = "/v1/credentials/{name}/secret", params(("name" = String, Path, description = "credential name")), request_body = SecretUpdate, responses((status = 200, description = "updated (metadata only)", body = CredentialInfo), (status = 400, description = "`invalid`: a secret the vault refuses"), (status = 404, description = "`not_found`: unknown"), (status = 409, description = "`conflict`: too many pending versions, or a concurrent change")))]
async fn update_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<SecretUpdate>,
) -> Result<Json<CredentialInfo>, ApiError> {
    state
        .authorize_system(&caller, Action::ManageCredentials, "credentials")
        .await?;
    let secret = Secret::from_bytes(req.secret.as_bytes().to_vec());
    state.vault.add_version(
        &name,
        secret,
        &caller.user.name,
        "secret updated over the API",
    )?;
    let info = state
        .vault
        .info(&name)?
        .ok_or_else(|| ApiError::not_found(format!("credential '{name}'")))?;
    state
        .audit_credential(&caller.user.name, "credential.update-secret", &name)
        .await?;
    Ok(Json(info))
}

/// A credential's retained versions, oldest first: number, state (current, previous,
/// pending, failed), when, by whom and why. Never a value.
#[utoipa::path(get, path = "/v1/credentials/{name}/versions", params(("name" = String, Path, description = "credential name")), responses((status = 200, description = "version metadata (never values)", body = Vec<VersionInfo>), (status = 404, description = "`not_found`: unknown")))]
async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<VersionInfo>>, ApiError> {
    state
        .authorize_system(&caller, Action::ManageCredentials, "credentials")
        .await?;
    Ok(Json(state.vault.versions(&name)?))
}

impl AppState {
    /// Refuses (400 `invalid_grant`) a grant whose credentials break the admin rules: an
    /// admin credential with a non-admin one of the same username, or sudo patterns that no
    /// granted credential may use (`capabilities::admin::check_grant_credentials`).
    pub(crate) fn check_grant_credentials(&self, grant: &Grant) -> Result<(), ApiError> {
        let mut infos = Vec::with_capacity(grant.credentials.len());
        for name in &grant.credentials {
            // A name the vault refuses (too long, bad characters) is the process store's to
            // reject; it cannot name an existing credential.
            if let Ok(Some(info)) = self.vault.info(name) {
                infos.push(info);
            }
        }
        check_grant_credentials(grant, &infos)
            .map_err(|why| ApiError::bad_request("invalid_grant", why))
    }
}
