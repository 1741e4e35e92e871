//! Audit: search with filters (paged with the API's `after=` cursor), a record's detail, the
//! "verify chain" action, and the Password Auditor's resource view — each the API's answer
//! for the user (`/v1/audit`, `/v1/audit/verify`, `/v1/audit/resources`), so the scoping the
//! API applies (another administrator's unshared process, the projection of the resource
//! view) is the console's too.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::api_error;
use super::runs::decision;
use crate::ui::api::enc;
use crate::ui::auth::{Console, Posted};
use crate::ui::layout::{csrf, error, notice, page, time};
use crate::ui::{UiState, Verified, now_ms};

/// Records on one page of the search.
const PAGE: usize = 100;

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/audit", get(search))
        .route("/ui/audit/verify", post(verify))
        .route("/ui/audit/resources", get(resources))
}

#[derive(Deserialize, Default)]
struct Search {
    #[serde(default)]
    run: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    after: String,
}

async fn search(State(ui): State<UiState>, console: Console, Query(q): Query<Search>) -> Response {
    search_page(&ui, &console, &q, None).await
}

async fn search_page(
    ui: &UiState,
    console: &Console,
    q: &Search,
    message: Option<maud::Markup>,
) -> Response {
    let mut uri = format!("/v1/audit?limit={PAGE}");
    let filters = [
        ("run", &q.run),
        ("actor", &q.actor),
        ("action", &q.action),
        ("resource", &q.resource),
        ("after", &q.after),
    ];
    for (name, value) in filters {
        if !value.is_empty() {
            uri.push_str(&format!("&{name}={}", enc(value)));
        }
    }
    let reply = ui.api.get(&console.caller, &uri).await;
    if !reply.ok() {
        return api_error(ui, console, &reply);
    }
    let records = reply.body.as_array().cloned().unwrap_or_default();
    let next = reply.header("x-warden-next-after").map(|after| {
        format!(
            "/ui/audit?run={}&actor={}&action={}&resource={}&after={}",
            enc(&q.run),
            enc(&q.actor),
            enc(&q.action),
            enc(&q.resource),
            enc(after)
        )
    });
    let body = html! {
        @if let Some(m) = message { (m) }
        form.verify method="post" action="/ui/audit/verify" {
            (csrf(console))
            button id="verify" type="submit" { "Verify chain" }
        }
        form.filters method="get" action="/ui/audit" hx-get="/ui/audit" hx-target="#main"
            hx-select="#main" hx-swap="outerHTML" hx-push-url="true" {
            label for="a-run" { "Run" } input id="a-run" name="run" value=(q.run) size="10";
            label for="a-actor" { "Actor" } input id="a-actor" name="actor" value=(q.actor) size="10";
            label for="a-action" { "Action" } input id="a-action" name="action" value=(q.action) size="12";
            label for="a-resource" { "Target or credential" } input id="a-resource" name="resource" value=(q.resource) size="12";
            button type="submit" { "Search" }
        }
        @if records.is_empty() { p.empty { "No records." } }
        @else {
            table.audit {
                thead { tr { th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Credential" } th scope="col" { "Decision" } th scope="col" { "Record" } } }
                tbody {
                    @for r in &records {
                        tr {
                            td { (r["seq"].as_u64().unwrap_or(0)) }
                            td { (time(r["time_ms"].as_u64().unwrap_or(0))) }
                            td { (r["actor"].as_str().unwrap_or("")) }
                            td { (r["action"].as_str().unwrap_or("")) }
                            td { (r["target"].as_str().unwrap_or("")) }
                            td { (r["credential"].as_str().unwrap_or("")) }
                            td { (decision(&r["decision"])) }
                            td { details { summary { "detail" } (detail(r)) } }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next { p { a.next href=(next) rel="next" { "Later records →" } } }
    };
    page(ui, console, "Audit", body).into_response()
}

/// A record's every field, as text.
fn detail(record: &Value) -> maud::Markup {
    html! {
        dl.record {
            @for (k, v) in record.as_object().into_iter().flatten() {
                dt { (k) }
                dd { (v.as_str().map_or_else(|| v.to_string(), str::to_string)) }
            }
        }
    }
}

async fn verify(State(ui): State<UiState>, posted: Posted) -> Response {
    let console = &posted.console;
    let reply = ui.api.get(&console.caller, "/v1/audit/verify").await;
    if !reply.ok() {
        return api_error(&ui, console, &reply);
    }
    let ok = reply.body["ok"] == true;
    let verified = Verified {
        ok,
        count: reply.body["count"].as_u64().unwrap_or(0),
        error: reply.body["error"].as_str().unwrap_or("").to_string(),
        at_ms: now_ms(),
    };
    ui.remember_verified(verified.clone());
    let message = match ok {
        true => notice(&format!(
            "The chain verifies: {} records, head {}.",
            verified.count,
            reply.body["head_hash"].as_str().unwrap_or("")
        )),
        false => error(&format!("The chain does NOT verify: {}", verified.error)),
    };
    search_page(&ui, console, &Search::default(), Some(message)).await
}

#[derive(Deserialize, Default)]
struct Since {
    #[serde(default)]
    since_ms: Option<u64>,
}

async fn resources(
    State(ui): State<UiState>,
    console: Console,
    Query(q): Query<Since>,
) -> Response {
    let mut uri = format!("/v1/audit/resources?limit={PAGE}");
    if let Some(since) = q.since_ms {
        uri.push_str(&format!("&since_ms={since}"));
    }
    let reply = ui.api.get(&console.caller, &uri).await;
    if !reply.ok() {
        return api_error(&ui, &console, &reply);
    }
    let records = reply.body.as_array().cloned().unwrap_or_default();
    let body = html! {
        p.hint { "Records about targets and credentials: who used or changed which, when, and the decision." }
        @if records.is_empty() { p.empty { "No records." } }
        @else {
            table.audit {
                thead { tr { th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Credential" } th scope="col" { "Decision" } th scope="col" { "Policy" } th scope="col" { "Outcome" } } }
                tbody {
                    @for r in &records {
                        tr {
                            td { (r["seq"].as_u64().unwrap_or(0)) }
                            td { (time(r["time_ms"].as_u64().unwrap_or(0))) }
                            td { (r["actor"].as_str().unwrap_or("")) }
                            td { (r["action"].as_str().unwrap_or("")) }
                            td { (r["target"].as_str().unwrap_or("")) }
                            td { (r["credential"].as_str().unwrap_or("")) }
                            td { (r["decision"].as_str().unwrap_or("")) }
                            td { (r["policy"].as_str().unwrap_or("")) }
                            td { (r["outcome"].as_str().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    };
    page(&ui, &console, "Resource audit", body).into_response()
}
