//! `/v1/audit`: query the log and verify its chain (full audit), and the Password
//! Auditor's resource view (records about targets and credentials only, projected to
//! structured fields).
//!
//! Both views show only the records the viewer may see ([`crate::api::audit_scope`]): a
//! Super Administrator does not see the runs, commands or ids of another administrator's
//! unshared process here either. Filters and `limit` apply to what is visible.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::audit_scope::AuditScope;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::audit::{AuditFilter, AuditRecord, MAX_QUERY_RECORDS};
use crate::policy::Action;
use crate::policy::{ResourceAuditRecord, resource_audit_view};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(query_audit))
        .routes(routes!(verify_audit))
        .routes(routes!(resource_audit))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    run: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    /// The target or credential-bearing resource the record is about.
    resource: Option<String>,
    /// Only records after this sequence number: the `x-warden-next-after` of the last page.
    after: Option<u64>,
    limit: Option<usize>,
}

impl From<AuditQuery> for AuditFilter {
    fn from(q: AuditQuery) -> Self {
        AuditFilter {
            run_id: q.run,
            actor: q.actor,
            action: q.action,
            since_ms: q.since_ms,
            until_ms: q.until_ms,
            resource: q.resource,
            after_seq: q.after,
            limit: q.limit,
        }
    }
}

/// Response header naming the cursor of the next page (absent on the last page).
pub const NEXT_AFTER_HEADER: &str = "x-warden-next-after";

/// Audit records matching the filters, in sequence order.
#[utoipa::path(get, path = "/v1/audit", params(
    ("run" = Option<String>, Query, description = "run id"),
    ("actor" = Option<String>, Query, description = "actor"),
    ("action" = Option<String>, Query, description = "action, e.g. ssh.exec"),
    ("since_ms" = Option<u64>, Query, description = "from this time (Unix ms)"),
    ("until_ms" = Option<u64>, Query, description = "until this time (Unix ms)"),
    ("resource" = Option<String>, Query, description = "target the record is about"),
    ("after" = Option<u64>, Query, description = "only records after this seq (pagination)"),
    ("limit" = Option<usize>, Query, description = "at most this many")),
    responses(
        (status = 200, description = "records the caller may see, in sequence order, from a page of at most `limit` (capped at 10,000) matching records",
            headers(("x-warden-next-after" = u64, description = "cursor of the next page (a seq, for `after`); absent on the last page"))),
        (status = 400, description = "a query parameter does not parse (e.g. `after` is not a number)"),
        (status = 401, description = "missing or invalid token"),
        (status = 403, description = "may not view the audit log"),
        (status = 503, description = "`database-unavailable`: nothing was read; retry", headers(("Retry-After" = u64, description = "seconds to wait"))),
    ))]
async fn query_audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<(axum::http::HeaderMap, Json<Vec<AuditRecord>>), ApiError> {
    state
        .authorize_system(&caller, Action::ViewAudit, "audit")
        .await?;
    let limit = q.limit.unwrap_or(MAX_QUERY_RECORDS).min(MAX_QUERY_RECORDS);
    let filter = AuditFilter {
        limit: Some(limit),
        ..q.into()
    };
    let mut scope = AuditScope::new(&state, &caller);
    let page = state.audit.query(&filter)?;
    // A full page may have more after it; the cursor is the last record scanned (visible or
    // not), so records the caller may not see never make pagination stop early.
    let next = match page.last() {
        Some(last) if page.len() >= limit => Some(last.seq.to_string()),
        _ => None,
    };
    let mut visible = Vec::new();
    for record in page {
        if scope.visible(&record)? {
            visible.push(record);
        }
    }
    Ok((
        crate::api::routes::runs::next_page_header(NEXT_AFTER_HEADER, next),
        Json(visible),
    ))
}

/// Re-walks the hash chain and checks the signed checkpoint.
#[utoipa::path(get, path = "/v1/audit/verify", responses((status = 200, description = "the verdict")))]
async fn verify_audit(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    state
        .authorize_system(&caller, Action::ViewAudit, "audit")
        .await?;
    Ok(Json(match state.audit.verify() {
        Ok(report) => json!({ "ok": true, "count": report.count, "head_hash": report.head_hash }),
        Err(e) => json!({ "ok": false, "error": e.to_string(), "seq": e.seq() }),
    }))
}

/// The resource view: records about targets and credentials, without run ids, details or
/// hashes (see `policies/README.md`).
#[utoipa::path(get, path = "/v1/audit/resources", params(
    ("since_ms" = Option<u64>, Query, description = "from this time (Unix ms)"),
    ("limit" = Option<usize>, Query, description = "at most this many")),
    responses((status = 200, description = "projected records")))]
async fn resource_audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<ResourceAuditRecord>>, ApiError> {
    state
        .authorize_system(&caller, Action::ViewResourceAudit, "resource audit")
        .await?;
    let limit = q.limit.unwrap_or(MAX_QUERY_RECORDS);
    let filter = AuditFilter {
        limit: None,
        ..q.into()
    };
    let mut scope = AuditScope::new(&state, &caller);
    let mut view = Vec::new();
    for record in state.audit.query(&filter)? {
        if view.len() >= limit {
            break;
        }
        let Some(projected) = resource_audit_view(&record) else {
            continue;
        };
        if scope.visible(&record)? {
            view.push(projected);
        }
    }
    Ok(Json(view))
}
