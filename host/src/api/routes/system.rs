//! `/healthz`, `/metrics` and `/v1/whoami`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::auth::Caller;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(whoami))
}

/// Liveness: the server answers and its audit log accepts writes.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "healthy"), (status = 503, description = "audit log failed")))]
async fn healthz(State(state): State<AppState>) -> (axum::http::StatusCode, Json<Value>) {
    if state.audit.is_failed() {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "audit-failed" })),
        );
    }
    (axum::http::StatusCode::OK, Json(json!({ "status": "ok" })))
}

/// Prometheus text metrics (counts only, nothing sensitive).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
async fn metrics(State(state): State<AppState>) -> String {
    let m = &state.metrics;
    let gauge = |name: &str, help: &str, value: u64| {
        format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n")
    };
    [
        gauge(
            "warden_runs_started_total",
            "Runs started over the API.",
            m.runs_started.load(Ordering::Relaxed),
        ),
        gauge(
            "warden_modules_uploaded_total",
            "Task modules accepted.",
            m.modules_uploaded.load(Ordering::Relaxed),
        ),
        gauge(
            "warden_modules_rejected_total",
            "Task module uploads rejected.",
            m.modules_rejected.load(Ordering::Relaxed),
        ),
        gauge(
            "warden_module_compiles_total",
            "Components compiled by this process (not loaded from the artifact cache).",
            state.bridge.runtime().compiles(),
        ),
        gauge(
            "warden_policy_denials_total",
            "API requests refused by policy.",
            m.denials.load(Ordering::Relaxed),
        ),
    ]
    .concat()
}

/// The caller's user, roles and privileges.
#[utoipa::path(get, path = "/v1/whoami", responses((status = 200, description = "the caller")))]
async fn whoami(caller: Caller) -> Json<Value> {
    let privileges: Vec<&str> = caller
        .principal
        .privileges
        .iter()
        .map(|p| p.as_str())
        .collect();
    Json(json!({ "user": caller.user.name, "roles": caller.user.roles, "privileges": privileges }))
}
