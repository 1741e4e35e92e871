//! The one error type of the HTTP API: a status, a stable machine-readable `code`, and a
//! message. A 5xx body says nothing internal; the detail goes to the server log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
        let body = json!({ "error": { "code": self.code, "message": self.message } });
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
