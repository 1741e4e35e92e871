//! `/healthz`, `/metrics` and `/v1/whoami`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(whoami))
}

/// Liveness: the server answers and its audit log accepts writes.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "healthy", body = Health), (status = 503, description = "`audit_failed`: the audit log failed; the server refuses work")))]
async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.audit.is_failed() {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "audit_failed",
            "the audit log failed; the server refuses work",
        ));
    }
    Ok(Json(Health { status: "ok" }))
}

/// What `/healthz` answers when healthy.
#[derive(Serialize, ToSchema)]
struct Health {
    /// `ok`.
    #[schema(value_type = String)]
    status: &'static str,
}

/// The caller as the server sees it.
#[derive(Serialize, ToSchema)]
struct WhoAmI {
    user: String,
    roles: std::collections::BTreeSet<String>,
    /// The privileges its roles give (e.g. `ManageProcess`).
    privileges: Vec<String>,
}

/// Prometheus text metrics (counts only, nothing sensitive).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
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
        bridge_metrics(&state),
    ]
    .concat()
}

/// Remote bridges: enrolled, online, idle claims held open, runs handed over and how long
/// they waited to be claimed.
fn bridge_metrics(state: &AppState) -> String {
    let hub = &state.hub;
    let lost_after = state.cluster.bridge_lost_after();
    let (mut enrolled, mut online) = (0u64, 0u64);
    for (bridge, _) in hub.registry.list().unwrap_or_default() {
        if bridge.revoked.is_some() {
            continue;
        }
        enrolled += 1;
        let name = crate::bridge::registry::holder(&bridge.id);
        if hub.registry.is_alive(&name, lost_after).unwrap_or(false) {
            online += 1;
        }
    }
    let m = &hub.metrics;
    let waiting = u64::try_from(m.waiting_claims.load(Ordering::Relaxed)).unwrap_or(0);
    let line = |name: &str, kind: &str, help: &str, value: u64| {
        format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n")
    };
    [
        line(
            "warden_bridges_enrolled",
            "gauge",
            "Remote bridges enrolled and not revoked.",
            enrolled,
        ),
        line(
            "warden_bridges_online",
            "gauge",
            "Remote bridges heard from within the lost timeout.",
            online,
        ),
        line(
            "warden_bridge_claims_waiting",
            "gauge",
            "Claims of idle remote bridges held open on this server.",
            waiting,
        ),
        line(
            "warden_bridge_runs_dispatched_total",
            "counter",
            "Runs this server handed to remote bridges.",
            m.dispatched.load(Ordering::Relaxed),
        ),
        line(
            "warden_bridge_dispatch_wait_ms_total",
            "counter",
            "Milliseconds those runs waited between queued and claimed (divide by the count).",
            m.dispatch_wait_ms.load(Ordering::Relaxed),
        ),
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
#[utoipa::path(get, path = "/v1/whoami", responses((status = 200, description = "the caller", body = WhoAmI)))]
async fn whoami(caller: Caller) -> Json<WhoAmI> {
    let privileges = caller
        .principal
        .privileges
        .iter()
        .map(|p| p.as_str().to_string())
        .collect();
    Json(WhoAmI {
        user: caller.user.name,
        roles: caller.user.roles,
        privileges,
    })
}
