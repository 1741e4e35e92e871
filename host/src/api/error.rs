//! The one error type of the HTTP API: a status, a stable machine-readable `code`, and a
//! message. A 5xx body says nothing internal; the detail goes to the server log.
//!
//! Every `code` the API can return is listed once, in [`CODES`]: the OpenAPI document's
//! `ErrorCode` enum is generated from it, and a test scans the sources for codes not in it,
//! so the document and the server cannot drift apart.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Every stable error `code` of the API with what it means (the document's `ErrorCode`).
pub const CODES: &[(&str, &str)] = &[
    (
        "invalid",
        "a field or parameter is out of its allowed range or form",
    ),
    ("invalid_json", "the body is not JSON of the expected shape"),
    ("invalid_query", "a query parameter does not parse"),
    ("invalid_body", "a signed request's body does not parse"),
    ("bad_body", "the body could not be read"),
    ("too_large", "the body is over the route's limit"),
    (
        "unsupported_media_type",
        "the body is not `application/json`",
    ),
    ("unauthorized", "missing or invalid API token"),
    ("token_expired", "the API token has expired"),
    (
        "enrollment_token",
        "an enrollment token used beyond minting its user's own token",
    ),
    ("forbidden", "denied by a policy (named in the message)"),
    (
        "not_found",
        "no such resource, or not visible to the caller",
    ),
    (
        "conflict",
        "the resource exists already, or its state does not allow this",
    ),
    (
        "internal",
        "an internal error (no detail; see the server log)",
    ),
    (
        "database-unavailable",
        "the database cannot be reached; nothing was changed",
    ),
    ("unknown_module", "no active module with that digest"),
    (
        "module_unavailable",
        "the process's module is unknown or retired",
    ),
    (
        "untrusted_module",
        "the module's publisher is no longer trusted",
    ),
    ("invalid_inputs", "the inputs do not match the manifest"),
    (
        "invalid_grant",
        "the grant's credentials break the admin-credential rules",
    ),
    (
        "grant_not_permitted",
        "the grant names a credential or target the caller may not use",
    ),
    (
        "grant_spans_zones",
        "the grant's targets are in more than one zone",
    ),
    (
        "invalid_workflow",
        "the workflow definition is invalid (the state is named)",
    ),
    ("invalid_cron", "the cron expression does not parse"),
    (
        "process_changed",
        "the process changed its definition since the run started",
    ),
    ("unsigned", "the module is not signed"),
    ("bad_signature", "a signature does not verify"),
    (
        "malformed_module",
        "the module's signature section is malformed",
    ),
    ("bad_manifest", "the module's manifest is invalid"),
    ("invalid_component", "the module is not a valid component"),
    (
        "undeclared_capability",
        "the component imports an interface its manifest does not declare",
    ),
    (
        "untrusted_publisher",
        "the module is signed by a publisher this server does not trust",
    ),
    ("not_awaiting_approval", "the run is not awaiting approval"),
    ("self_approval", "a run's requester may not approve it"),
    ("already_approved", "the caller approved this run already"),
    (
        "stale_request",
        "the run's approval binding changed since it was reviewed",
    ),
    ("no_requester", "the run's requester cannot be established"),
    ("not_requester", "only the run's requester may do this"),
    (
        "concurrent_change",
        "the run changed while this request was decided; retry",
    ),
    ("queue_full", "the server's run queue is full"),
    (
        "user_run_limit",
        "the caller has its maximum of runs waiting",
    ),
    (
        "process_run_limit",
        "the process has its maximum of runs waiting",
    ),
    ("already_revoked", "the bridge is revoked already"),
    (
        "bridge_unauthenticated",
        "a bridge request's signature does not verify",
    ),
    ("bridge_revoked", "the bridge is revoked"),
    (
        "enrolment_refused",
        "the bridge enrolment token is unknown, used or expired",
    ),
    ("run_not_held", "the bridge does not hold that run"),
    (
        "too_many_events",
        "a bridge renewal carries more live events than allowed",
    ),
    ("denied", "refused by the run's grant"),
    (
        "stale_timestamp",
        "the event's timestamp is outside the tolerance",
    ),
    ("replayed", "the event id was seen before"),
    ("duplicate", "a duplicate of a recent event"),
    ("unmapped", "an input's pointer finds nothing in the event"),
    (
        "not_allowed",
        "an input's value is not on the trigger's allow-list",
    ),
    (
        "creator_inactive",
        "the trigger's creator is disabled or deleted",
    ),
    ("rate_limited", "the trigger's rate limit is reached"),
    (
        "concurrency_limited",
        "the trigger's concurrent-run limit is reached",
    ),
    ("queue_refused", "the run queue refused the trigger's run"),
    (
        "replay_store_full",
        "too many recent event ids to remember another",
    ),
    ("unavailable", "the event could not be processed now; retry"),
    ("shutting_down", "the server is shutting down"),
    (
        "audit_failed",
        "the audit log failed; the server refuses work",
    ),
];

/// The stable machine-readable code of an error: one of [`CODES`].
pub struct ErrorCode;

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let described = CODES
            .iter()
            .map(|(code, what)| format!("`{code}`: {what}"))
            .collect::<Vec<_>>()
            .join("; ");
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .enum_values(Some(CODES.iter().map(|(code, _)| *code)))
            .description(Some(described))
            .into()
    }
}

impl ToSchema for ErrorCode {}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Stable; one of the `ErrorCode` values.
    #[schema(value_type = ErrorCode)]
    pub code: &'a str,
    /// For people; never holds a secret or (for a 5xx) an internal detail.
    pub message: &'a str,
}

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header (a refusal for load, 429 or 503).
    retry_after: Option<u64>,
}

impl ApiError {
    /// The same error with its message prefixed by `what` (where it applies).
    pub fn context(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// This error with a `Retry-After: secs` header.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 403, naming the policy that refused.
    pub fn forbidden(policy: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("denied by policy {policy}"),
        )
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid API token",
        )
    }

    /// 500: logs `detail`, returns nothing of it.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// 503 (with `Retry-After`) when `error` comes from a database that cannot be reached
    /// (nothing was written: the caller may retry), else [`Self::internal`].
    pub fn failure(error: impl std::error::Error + 'static) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(e) = cause {
            if let Some(crate::store::StoreError::Unavailable(detail)) = e.downcast_ref() {
                tracing::warn!(%detail, "database unavailable");
                return Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database-unavailable",
                    "the database is unavailable; nothing was changed, retry later",
                )
                .retry_after(1);
            }
            if let Some(crate::audit::AuditError::Unavailable(detail)) = e.downcast_ref() {
                tracing::warn!(%detail, "database unavailable for the audit log");
                return Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database-unavailable",
                    "the database is unavailable; nothing was changed, retry later",
                )
                .retry_after(1);
            }
            cause = e.source();
        }
        Self::internal(error)
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::failure(e)
    }
}

impl From<crate::audit::AuditError> for ApiError {
    fn from(e: crate::audit::AuditError) -> Self {
        ApiError::failure(e)
    }
}

impl From<crate::users::UserError> for ApiError {
    fn from(e: crate::users::UserError) -> Self {
        use crate::users::UserError as E;
        match e {
            E::Storage(_) | E::Corrupt(_) => ApiError::failure(e),
            E::UserExists(_) | E::RoleExists(_) | E::Deleted(_) | E::EnrollmentUsed => {
                ApiError::conflict(e.to_string())
            }
            E::UnknownUser(_) => ApiError::not_found(e.to_string()),
            other => ApiError::bad_request("invalid", other.to_string()),
        }
    }
}

impl From<crate::runs::RunsError> for ApiError {
    fn from(e: crate::runs::RunsError) -> Self {
        use crate::runs::RunsError as E;
        match e {
            E::NotFound(what) => ApiError::not_found(what),
            E::NameTaken(name) => ApiError::conflict(format!("name '{name}' is taken")),
            e @ (E::InvalidName(..) | E::Invalid { .. } | E::RecordTooLarge { .. }) => {
                ApiError::bad_request("invalid", e.to_string())
            }
            e @ (E::BadTransition { .. } | E::Conflict(_)) => ApiError::conflict(e.to_string()),
            other => ApiError::failure(other),
        }
    }
}

impl From<crate::runs::queue::Refusal> for ApiError {
    /// 429 when the caller (or the process) is over its share of the run queue, 503 when the
    /// server's queue is full; both with `Retry-After`.
    fn from(refusal: crate::runs::queue::Refusal) -> Self {
        let status = if refusal.is_caller_limit() {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        ApiError::new(status, refusal.code(), refusal.to_string())
            .retry_after(crate::runs::queue::RETRY_AFTER_SECS)
    }
}

impl From<crate::vault::VaultError> for ApiError {
    fn from(e: crate::vault::VaultError) -> Self {
        use crate::vault::VaultError as E;
        match e {
            E::NotFound(name) => ApiError::not_found(format!("credential '{name}'")),
            E::AlreadyExists(name) => ApiError::conflict(format!("credential '{name}' exists")),
            e @ (E::Conflict(_) | E::VersionState { .. } | E::TooManyPending(..)) => {
                ApiError::conflict(e.to_string())
            }
            e @ E::VersionNotFound { .. } => ApiError::not_found(e.to_string()),
            e @ E::InvalidAttribution(..) => ApiError::bad_request("invalid", e.to_string()),
            e @ (E::InvalidName(_) | E::InvalidUsername(_) | E::InvalidSecret(_)) => {
                ApiError::bad_request("invalid", e.to_string())
            }
            other => ApiError::failure(other),
        }
    }
}

impl From<crate::targets::TargetError> for ApiError {
    fn from(e: crate::targets::TargetError) -> Self {
        use crate::targets::TargetError as E;
        match e {
            E::Storage(_) | E::Corrupt(_) => ApiError::failure(e),
            E::Duplicate(name) => ApiError::conflict(format!("target '{name}' exists")),
            E::NotFound(name) => ApiError::not_found(format!("target '{name}'")),
            other => ApiError::bad_request("invalid", other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CODES;

    /// Every code literal handed to an error constructor in the sources is listed in
    /// [`CODES`] (so in the document), and none is listed twice.
    #[test]
    fn every_code_in_the_sources_is_listed() {
        let listed: std::collections::BTreeSet<&str> = CODES.iter().map(|(c, _)| *c).collect();
        assert_eq!(listed.len(), CODES.len(), "a code is listed twice");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut dirs = vec![root];
        let mut unlisted = Vec::new();
        let mut seen = 0;
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    // Test modules (this one included) hold other literals.
                    let code_part = text.split("#[cfg(test)]").next().unwrap_or_default();
                    for code in code_literals(code_part) {
                        seen += 1;
                        if !listed.contains(code.as_str()) {
                            unlisted.push(format!("{}: {code}", path.display()));
                        }
                    }
                }
            }
        }
        assert!(seen > 40, "the scan found only {seen} codes");
        assert!(unlisted.is_empty(), "codes not in CODES: {unlisted:?}");
    }

    /// The first string literal after `bad_request(`, `refusal(` or `ApiError::new(` (past a
    /// status argument).
    fn code_literals(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for call in ["bad_request(", "refusal(", "ApiError::new("] {
            for (i, _) in text.match_indices(call) {
                let mut rest = text[i + call.len()..].trim_start();
                if call == "ApiError::new(" {
                    let Some(comma) = rest.find(',') else {
                        continue;
                    };
                    if !rest[..comma].contains("StatusCode::")
                        && !rest[..comma].contains("Status::")
                    {
                        continue;
                    }
                    rest = rest[comma + 1..].trim_start();
                }
                let Some(quoted) = rest.strip_prefix('"') else {
                    continue;
                };
                if let Some(end) = quoted.find('"') {
                    out.push(quoted[..end].to_string());
                }
            }
        }
        out
    }
}
