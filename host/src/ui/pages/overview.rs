//! The overview: runs in flight, recent failures, approvals waiting for the user, the audit
//! chain's last verification on this server, remote bridges offline. Each list is an API
//! call as the user (the Super Administrator's counts leave out unshared processes because
//! the API's lists do); the audit and bridge parts only for those the policies let read them.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde_json::Value;

use super::runs::{process_names, table};
use crate::policy::Action;
use crate::ui::UiState;
use crate::ui::auth::Console;
use crate::ui::layout::{auditor_only, page, time};

/// Runs shown in each list of the overview.
const SHOWN: usize = 10;

/// Runs of history the overview looks through: one page of the newest runs (on sled a run's
/// state is not indexed, so a filtered list would walk the whole history; the Runs page,
/// filtered by state, pages further back).
const WINDOW: usize = 100;

pub async fn show(State(ui): State<UiState>, console: Console) -> Response {
    if auditor_only(&console) {
        return Redirect::to("/ui/audit/resources").into_response();
    }
    let newest = ui
        .api
        .get(&console.caller, &format!("/v1/runs?limit={WINDOW}"))
        .await;
    let newest = newest.body.as_array().cloned().unwrap_or_default();
    let in_state = |states: &[&str]| -> Vec<Value> {
        newest
            .iter()
            .filter(|r| states.contains(&r["state"].as_str().unwrap_or("")))
            .take(SHOWN)
            .cloned()
            .collect()
    };
    let in_flight = in_state(&["running", "queued"]);
    let failed = in_state(&["failed", "timed-out", "lost", "interrupted"]);
    let me = console.caller.user.name.as_str();
    let inbox = ui
        .api
        .get(&console.caller, &format!("/v1/approvals?window={WINDOW}"))
        .await;
    let waiting: Vec<Value> = inbox
        .body
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["actor"].as_str() != Some(me))
        .take(SHOWN)
        .collect();
    let names = process_names(&ui, &console).await;
    let verified = match ui.may(&console, Action::ViewAudit) {
        true => Some(ui.last_verified()),
        false => None,
    };
    let offline = match ui.may(&console, Action::ManageTargets) {
        true => {
            let reply = ui.api.get(&console.caller, "/v1/bridges").await;
            let bridges = reply.body.as_array().cloned().unwrap_or_default();
            Some(
                bridges
                    .into_iter()
                    .filter(|b| b["online"] == false && b["revoked"] == false)
                    .collect::<Vec<_>>(),
            )
        }
        false => None,
    };
    let body = html! {
        section aria-labelledby="h-flight" {
            h2 id="h-flight" { "In flight " span.count { (in_flight.len()) } }
            p.hint { "Among the " (WINDOW) " newest runs. " a href="/ui/runs?state=running" { "All running runs" } }
            (table(&in_flight, &names))
        }
        section aria-labelledby="h-wait" {
            h2 id="h-wait" { "Waiting for my approval " span.count { (waiting.len()) } }
            (table(&waiting, &names))
            p { a href="/ui/approvals" { "All approvals" } }
        }
        section aria-labelledby="h-failed" {
            h2 id="h-failed" { "Recent failures " span.count { (failed.len()) } }
            p.hint { "Among the " (WINDOW) " newest runs. " a href="/ui/runs?state=failed" { "All failed runs" } }
            (table(&failed, &names))
        }
        @if let Some(verified) = verified {
            section aria-labelledby="h-audit" {
                h2 id="h-audit" { "Audit chain" }
                @match verified {
                    Some(v) if v.ok => p.notice { "Verified up to record " (v.count) " at " (time(v.at_ms)) "." },
                    Some(v) => p.error role="alert" { "Verification FAILED at " (time(v.at_ms)) ": " (v.error) },
                    None => p { "Not verified since this server started." },
                }
                p { a href="/ui/audit" { "Verify the chain" } }
            }
        }
        @if let Some(offline) = offline {
            section aria-labelledby="h-bridges" {
                h2 id="h-bridges" { "Bridges offline " span.count { (offline.len()) } }
                ul {
                    @for b in &offline {
                        li { (b["name"].as_str().unwrap_or("")) " (zone " (b["zone"].as_str().unwrap_or("")) "), last seen " (time(b["last_seen_ms"].as_u64().unwrap_or(0))) }
                    }
                }
            }
        }
    };
    page(&ui, &console, "Overview", body).into_response()
}
