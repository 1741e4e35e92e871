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
        queue_metrics(&state.dispatcher.queue().stats()),
        state.notify.metrics_text(),
    ]
    .concat()
}

/// The run queue's gauges (slots, running, queued) and refusal counters.
fn queue_metrics(q: &crate::runs::queue::QueueStats) -> String {
    let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let mut out = String::new();
    for (name, help, value) in [
        (
            "warden_run_slots",
            "Runs the instance pool can execute at once.",
            as_u64(q.slots),
        ),
        (
            "warden_runs_running",
            "Runs holding an execution slot.",
            as_u64(q.running),
        ),
        (
            "warden_runs_queued",
            "Runs admitted and waiting for an execution slot.",
            as_u64(q.queued),
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    }
    out.push_str(concat!(
        "# HELP warden_runs_refused_total Runs refused admission to the run queue.\n",
        "# TYPE warden_runs_refused_total counter\n",
    ));
    for (reason, value) in [
        ("queue_full", q.refused_queue_full),
        ("caller_limit", q.refused_caller_limit),
    ] {
        out.push_str(&format!(
            "warden_runs_refused_total{{reason=\"{reason}\"}} {value}\n"
        ));
    }
    out
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
