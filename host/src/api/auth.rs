//! Authentication and authorisation for the HTTP API.
//!
//! Threat: an unauthenticated or under-privileged caller. Every `/v1` route takes a
//! [`Caller`], which exists only for a valid `Authorization: Bearer` API token (compared in
//! constant time by the user store) that has not expired, of a user that is neither
//! disabled nor deleted; the use of an expired token is audited (`token.expired`). An
//! enrollment token (minted for the user by someone else) is accepted on one route only:
//! the user minting their own token. Handlers then ask [`AppState::authorize`], which
//! consults the Cedar policies and audits every denial with the policy that refused.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::audit::{AuditEntry, Decision};
use crate::policy::{Action, Principal, Resource};
use crate::users::{Authenticated, TokenInfo, TokenKind, User};

/// Longest `Authorization` header accepted. Blocks oversized headers reaching the parser.
const MAX_AUTH_HEADER: usize = 256;

/// A caller the web console authenticated already (its session, see [`crate::ui`]), handed to
/// the API handlers in-process as a request extension: the console calls the very handlers
/// the API serves, so its pages pass the same authorization. A request from the network
/// cannot carry an extension; only the console's own in-process requests have one.
#[derive(Clone, Debug)]
pub struct InProcessCaller(pub Caller);

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user.
    pub user: User,
    /// Its roles and privileges, as the policies see them.
    pub principal: Principal,
    /// The token it presented.
    pub token: TokenInfo,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(InProcessCaller(caller)) = parts.extensions.get::<InProcessCaller>() {
            return Ok(caller.clone());
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_AUTH_HEADER)
            .ok_or_else(ApiError::unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(ApiError::unauthorized)?;
        let (user, token) = match state.users.authenticate_token(token)? {
            Authenticated::Valid { user, token } => (user, token),
            Authenticated::Expired(token) => {
                state.audit_expired(&token).await?;
                return Err(ApiError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "token_expired",
                    "the API token has expired; mint a new one",
                ));
            }
            Authenticated::Invalid => return Err(ApiError::unauthorized()),
        };
        let own_tokens = format!("/v1/users/{}/tokens", user.name);
        if token.kind == TokenKind::Enrollment
            && !(parts.method == axum::http::Method::POST && parts.uri.path() == own_tokens)
        {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "enrollment_token",
                format!("an enrollment token only mints its user's own token: POST {own_tokens}"),
            ));
        }
        let principal = state.users.principal(&user)?;
        if let Some(slot) = parts.extensions.get::<super::request_log::CallerSlot>() {
            slot.set(&user.name, &token.id);
        }
        Ok(Caller {
            user,
            principal,
            token,
        })
    }
}

impl AppState {
    /// Audits the use of an expired token (the request is refused with 401).
    async fn audit_expired(&self, token: &TokenInfo) -> Result<(), ApiError> {
        self.audit
            .append(AuditEntry {
                run_id: None,
                actor: token.user.clone(),
                action: "token.expired".into(),
                target: None,
                credential: None,
                decision: Decision::Denied {
                    reason: format!("token {} expired", token.id),
                    policy: None,
                },
                outcome: "denied".into(),
                duration_us: 0,
                detail: Some(format!(
                    "token {} expired at {}",
                    token.id, token.expires_ms
                )),
            })
            .await?;
        Ok(())
    }
}

impl AppState {
    /// Allows the request or returns 403; a denial is audited with the policy id.
    pub async fn authorize(
        &self,
        caller: &Caller,
        action: Action,
        resource: Resource<'_>,
        what: &str,
    ) -> Result<(), ApiError> {
        let decision = self.policy.authorize(&caller.principal, action, resource);
        if decision.allowed {
            return Ok(());
        }
        let policy = decision.policy();
        super::Metrics::bump(&self.metrics.denials);
        self.audit
            .append(AuditEntry {
                run_id: None,
                actor: caller.user.name.clone(),
                action: format!("api.{action:?}"),
                target: None,
                credential: None,
                decision: Decision::Denied {
                    reason: format!("{action:?} on {what}"),
                    policy: Some(policy.clone()),
                },
                outcome: "denied".into(),
                duration_us: 0,
                detail: None,
            })
            .await?;
        Err(ApiError::forbidden(&policy))
    }

    /// [`AppState::authorize`] for an action on the server as a whole.
    pub async fn authorize_system(
        &self,
        caller: &Caller,
        action: Action,
        what: &str,
    ) -> Result<(), ApiError> {
        self.authorize(caller, action, Resource::System, what).await
    }

    /// Audits an allowed API operation.
    pub async fn audit_ok(
        &self,
        caller: &str,
        action: &str,
        detail: String,
    ) -> Result<(), ApiError> {
        self.audit_allowed(caller, action, None, None, Some(detail))
            .await
    }

    /// Audits an allowed operation on a target (visible in the resource-audit view).
    pub async fn audit_target(
        &self,
        caller: &str,
        action: &str,
        target: &str,
    ) -> Result<(), ApiError> {
        self.audit_allowed(caller, action, Some(target), None, None)
            .await
    }

    /// Audits an allowed operation on a credential (visible in the resource-audit view).
    pub async fn audit_credential(
        &self,
        caller: &str,
        action: &str,
        credential: &str,
    ) -> Result<(), ApiError> {
        self.audit_allowed(caller, action, None, Some(credential), None)
            .await
    }

    async fn audit_allowed(
        &self,
        caller: &str,
        action: &str,
        target: Option<&str>,
        credential: Option<&str>,
        detail: Option<String>,
    ) -> Result<(), ApiError> {
        self.audit
            .append(AuditEntry {
                run_id: None,
                actor: caller.to_string(),
                action: action.to_string(),
                target: target.map(str::to_string),
                credential: credential.map(str::to_string),
                decision: Decision::Allowed,
                outcome: "ok".into(),
                duration_us: 0,
                detail,
            })
            .await?;
        Ok(())
    }
}
