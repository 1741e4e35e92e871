//! One log line per HTTP request: method, matched route, status, duration and caller.
//!
//! Threat: credentials and secrets reaching the server's log (and from there a log
//! shipper). The line is built from a fixed set of fields only: the route *template*
//! (`/v1/runs/{id}`), never the request's path, query string, headers or body, and the
//! caller as the authenticated user's name and its token's id, never the bearer token. A
//! request that never authenticated is logged with caller `-`.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// The tracing target of request lines (enabled at `info` by default for `warden serve`).
pub const TARGET: &str = "warden::request";

/// Who made the request, filled by the [`super::auth::Caller`] extractor once the token is
/// valid; read by [`log_request`] when the response is ready.
#[derive(Clone, Default)]
pub struct CallerSlot(Arc<OnceLock<(String, String)>>);

impl CallerSlot {
    /// Records the caller (user name, token id). The first value set stays.
    pub fn set(&self, user: &str, token_id: &str) {
        let _ = self.0.set((user.to_string(), token_id.to_string()));
    }
}

/// The middleware (`axum::middleware::from_fn(log_request)` on the whole router, so that
/// the matched route is known).
pub async fn log_request(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_string(), |p| p.as_str().to_string());
    let slot = CallerSlot::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (caller, token_id) = slot
        .0
        .get()
        .map_or(("-", "-"), |(u, t)| (u.as_str(), t.as_str()));
    tracing::info!(
        target: TARGET,
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        duration_ms = (duration_ms * 1000.0).round() / 1000.0,
        caller,
        token_id,
        "request"
    );
    response
}
