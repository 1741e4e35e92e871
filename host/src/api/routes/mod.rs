//! Route handlers, one file per resource.

pub mod approvals;
pub mod audit;
pub mod bridges;
pub mod credentials;
pub mod leases;
pub mod modules;
pub mod notify;
pub mod processes;
pub mod runs;
pub mod schedules;
pub mod system;
pub mod targets;
pub mod tokens;
pub mod triggers;
pub mod users;

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body whose rejection (bad JSON, wrong type, too large) is an [`ApiError`] with a
/// stable code rather than axum's plain-text reply.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => {
                let status = rejection.status();
                let code = match status {
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE => "too_large",
                    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                    _ => "invalid_json",
                };
                Err(ApiError::new(status, code, rejection.body_text()))
            }
        }
    }
}

/// A query string whose rejection (a parameter that does not parse, an unknown one) is an
/// [`ApiError`] (`invalid_query`) rather than axum's plain-text reply.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_query",
                rejection.body_text(),
            )),
        }
    }
}
