//! `/v1/audit`: query the log and verify its chain (full audit), and the Password
//! Auditor's resource view (records about targets and credentials only, projected to
//! structured fields).
//!
//! Both views show only the records the viewer may see ([`crate::api::audit_scope`]): a
//! Super Administrator does not see the runs, commands or ids of another administrator's
//! unshared process here either. Filters and `limit` apply to what is visible.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Params;
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only records of this run (its id).
    run: Option<String>,
    /// Only records of this actor.
    actor: Option<String>,
    /// Only records of this action, e.g. `ssh.exec`.
    action: Option<String>,
    /// From this time (Unix ms).
    since_ms: Option<u64>,
    /// Until this time (Unix ms).
    until_ms: Option<u64>,
    /// The target or credential-bearing resource the record is about.
    resource: Option<String>,
    /// Only records after this sequence number: the `x-warden-next-after` of the last page.
    after: Option<u64>,
    /// At most this many (capped at 10,000).
    limit: Option<u32>,
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
            limit: q.limit.map(|n| n as usize),
        }
    }
}

/// Response header naming the cursor of the next page (absent on the last page).
pub const NEXT_AFTER_HEADER: &str = "x-warden-next-after";

/// Audit records matching the filters, in sequence order.
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery),
    responses(
        (status = 200, description = "records the caller may see, in sequence order, from a page of at most `limit` (capped at 10,000) matching records", body = Vec<AuditRecord>,
            headers(("x-warden-next-after" = u64, description = "cursor of the next page (a seq, for `after`); absent on the last page"))),
        (status = 400, description = "`invalid_query`: a query parameter does not parse (e.g. `after` is not a number)"),
        (status = 401, description = "missing or invalid token"),
        (status = 403, description = "may not view the audit log"),
        (status = 503, description = "`database-unavailable`: nothing was read; retry", headers(("Retry-After" = u64, description = "seconds to wait"))),
    ))]
async fn query_audit(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<AuditQuery>,
) -> Result<(axum::http::HeaderMap, Json<Vec<AuditRecord>>), ApiError> {
    state
        .authorize_system(&caller, Action::ViewAudit, "audit")
        .await?;
    let limit = q
        .limit
        .map_or(MAX_QUERY_RECORDS, |n| n as usize)
        .min(MAX_QUERY_RECORDS);
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
#[utoipa::path(get, path = "/v1/audit/verify", responses((status = 200, description = "the verdict", body = Verdict)))]
async fn verify_audit(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Verdict>, ApiError> {
    state
        .authorize_system(&caller, Action::ViewAudit, "audit")
        .await?;
    Ok(Json(match state.audit.verify() {
        Ok(report) => Verdict::Verified {
            ok: true,
            count: report.count,
            head_hash: report.head_hash,
        },
        Err(e) => Verdict::Broken {
            ok: false,
            error: e.to_string(),
            seq: e.seq(),
        },
    }))
}

/// The audit chain's verdict: `ok` with the count and head hash, or where it broke.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum Verdict {
    /// The chain and the checkpoint verify.
    Verified {
        /// `true`.
        ok: bool,
        /// Records verified.
        count: u64,
        /// The newest record's hash (none for an empty log).
        head_hash: Option<String>,
    },
    /// The chain or the checkpoint does not verify.
    Broken {
        /// `false`.
        ok: bool,
        /// What broke.
        error: String,
        /// Where it broke, when known.
        seq: Option<u64>,
    },
}

/// The resource view: records about targets and credentials, without run ids, details or
/// hashes (see `policies/README.md`).
#[utoipa::path(get, path = "/v1/audit/resources", params(AuditQuery),
    responses((status = 200, description = "projected records, in sequence order", body = Vec<ResourceAuditRecord>)))]
async fn resource_audit(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<AuditQuery>,
) -> Result<Json<Vec<ResourceAuditRecord>>, ApiError> {
    state
        .authorize_system(&caller, Action::ViewResourceAudit, "resource audit")
        .await?;
    let limit = q.limit.map_or(MAX_QUERY_RECORDS, |n| n as usize);
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
