//! API tokens: mint (`POST /v1/users/{name}/tokens`), list (`GET` on the same path) and
//! revoke (`DELETE /v1/tokens/{id}`). A token is shown once, in the response that mints it.
//!
//! Threat: minting a token as a way to act as someone else (run their shared processes,
//! approve as them). Only a user mints their own full tokens. Minting for another user
//! (an administrator creating or resetting an account: ManageUsers, or
//! ManageAdministrators for an administrator) yields an enrollment token that the API
//! accepts on one route only — that user minting their own token — and that is consumed
//! when it does. Every mint is audited with who minted it; the secret never is.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Body;
use super::users::user_action;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::audit::{AuditEntry, Decision};
use crate::policy::Resource;
use crate::users::{TokenInfo, TokenKind, TokenRequest};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, issue_token))
        .routes(routes!(revoke_token))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// At most 128 printable ASCII characters.
    #[serde(default)]
    #[schema(pattern = r"^[\x20-\x7e]{0,128}$")]
    label: String,
    /// Lifetime in seconds: default 30 days (1 day for an enrollment token), at most 365
    /// days (7 for an enrollment token).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31536000)]
    ttl_secs: Option<u64>,
}

/// A minted token: the secret is in this answer only.
#[derive(Serialize, ToSchema)]
struct Minted {
    id: String,
    user: String,
    kind: TokenKind,
    expires_ms: u64,
    /// The bearer token (shown once).
    token: String,
}

/// Audits a minted token: whose, by whom, which kind, until when. Never the secret.
pub(super) async fn audit_issued(
    state: &AppState,
    caller: &Caller,
    info: &TokenInfo,
) -> Result<(), ApiError> {
    let action = match info.kind {
        TokenKind::Full => "token.issue",
        TokenKind::Enrollment => "token.enroll",
    };
    let enrolled = info
        .enrolled_by
        .as_deref()
        .map(|by| format!(", redeeming an enrollment by {by}"))
        .unwrap_or_default();
    let detail = format!(
        "{} for {} minted by {}{enrolled}, expires_ms {}",
        info.id, info.user, info.minted_by, info.expires_ms
    );
    state.audit_ok(&caller.user.name, action, detail).await
}

impl AppState {
    /// Authorizes acting on `user`'s tokens: the user itself, or whoever may manage it.
    async fn authorize_tokens_of(&self, caller: &Caller, user: &str) -> Result<(), ApiError> {
        if caller.user.name == user {
            return Ok(());
        }
        let target = self
            .users
            .get_user(user)?
            .ok_or_else(|| ApiError::not_found(format!("user '{user}'")))?;
        self.authorize(
            caller,
            user_action(&target.roles),
            Resource::System,
            "tokens",
        )
        .await
    }
}

/// Mint an API token for a user; the token is in this response only. For oneself: a full
/// token (an enrollment token presented here is consumed and replaced by it). For another
/// user: an enrollment token, good only for that user to mint their own token.
#[utoipa::path(post, path = "/v1/users/{name}/tokens", params(("name" = String, Path, description = "user name")), request_body = NewToken, responses((status = 201, description = "the token, shown once", body = Minted), (status = 400, description = "`invalid`: a label or lifetime out of range, or the user has its maximum of tokens"), (status = 403, description = "`forbidden`: may not manage this user"), (status = 404, description = "`not_found`: no such user"), (status = 409, description = "`conflict`: enrollment token already used, or a deleted user")))]
async fn issue_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body<NewToken>,
) -> Result<(StatusCode, Json<Minted>), ApiError> {
    state.authorize_tokens_of(&caller, &name).await?;
    // Printable ASCII, as documented (the store refuses control characters only).
    if !body.label.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::bad_request(
            "invalid",
            "a label is at most 128 printable ASCII characters",
        ));
    }
    let ttl = body.ttl_secs.map(Duration::from_secs);
    let issued = if caller.user.name == name && caller.token.kind == TokenKind::Enrollment {
        state.users.redeem(&caller.token, &body.label, ttl)?
    } else {
        // A user's own token minted with a token that came from an enrollment keeps the
        // enrollment's minter, so the trail back to whoever held the first secret survives.
        let enrolled_by = match caller.user.name == name {
            true => caller.token.enrolled_by.as_deref(),
            false => None,
        };
        state.users.issue(&TokenRequest {
            user: &name,
            label: &body.label,
            minted_by: &caller.user.name,
            ttl,
            enrolled_by,
        })?
    };
    audit_issued(&state, &caller, &issued.info).await?;
    Ok((
        StatusCode::CREATED,
        Json(Minted {
            id: issued.info.id,
            user: name,
            kind: issued.info.kind,
            expires_ms: issued.info.expires_ms,
            token: issued.token.expose_secret().to_string(),
        }),
    ))
}

/// A user's tokens: metadata only (id, label, kind, who minted it, expiry), never secrets.
#[utoipa::path(get, path = "/v1/users/{name}/tokens", params(("name" = String, Path, description = "user name")), responses((status = 200, description = "token metadata", body = Vec<TokenInfo>), (status = 403, description = "`forbidden`: may not manage this user"), (status = 404, description = "`not_found`: no such user")))]
async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    state.authorize_tokens_of(&caller, &name).await?;
    Ok(Json(state.users.list_tokens(&name)?))
}

/// Revoke a token: it stops working at the next request. One's own, or any token of a
/// user one may manage.
#[utoipa::path(delete, path = "/v1/tokens/{id}", params(("id" = String, Path, description = "token id")), responses((status = 204, description = "revoked"), (status = 403, description = "`forbidden`: not yours and may not manage its user"), (status = 404, description = "`not_found`: unknown")))]
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let info = state
        .users
        .token_info(&id)?
        .ok_or_else(|| ApiError::not_found(format!("token {id}")))?;
    state.authorize_tokens_of(&caller, &info.user).await?;
    if !state.users.revoke_token(&id)? {
        return Err(ApiError::not_found(format!("token {id}")));
    }
    state
        .audit
        .append(AuditEntry {
            run_id: None,
            actor: caller.user.name.clone(),
            action: "token.revoke".into(),
            target: None,
            credential: None,
            decision: Decision::Allowed,
            outcome: "ok".into(),
            duration_us: 0,
            detail: Some(format!(
                "{id} of {} (minted by {})",
                info.user, info.minted_by
            )),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
