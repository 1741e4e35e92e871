//! Runs: the filtered, paginated list, and a run's page with its live events (server-sent
//! events passed through from `/v1/runs/{id}/events`), output, host calls and cancel.
//!
//! A workflow run's page shows its step tree (`steps.rs`) between the summary and the
//! events; a step run's page links back to its workflow run.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api_error;
use crate::policy::Action;
use crate::ui::UiState;
use crate::ui::api::enc;
use crate::ui::auth::{Console, Posted};
use crate::ui::layout::{csrf, error, page, state, time, time_opt};

/// Runs on one page of the list.
const PAGE: usize = 50;

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/runs", get(list))
        .route("/ui/runs/{id}", get(run_page))
        .route("/ui/runs/{id}/events", get(events))
        .route("/ui/runs/{id}/cancel", post(cancel))
}

/// Every run state, for the filter.
const STATES: [&str; 10] = [
    "awaiting-approval",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timed-out",
    "denied",
    "interrupted",
    "lost",
];

#[derive(Deserialize, Default)]
pub struct Filter {
    #[serde(default)]
    state: String,
    #[serde(default)]
    process: String,
    #[serde(default)]
    user: String,
    /// A time, UTC: RFC 3339 or the `datetime-local` field's `YYYY-MM-DDTHH:MM[:SS]`.
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    before: String,
}

/// A time field as RFC 3339 for the API: a `datetime-local` value (no zone) is read as UTC,
/// anything else is passed on for the API to accept or refuse.
fn rfc3339(field: &str) -> String {
    let field = field.trim();
    let local = |format| chrono::NaiveDateTime::parse_from_str(field, format).ok();
    match local("%Y-%m-%dT%H:%M").or_else(|| local("%Y-%m-%dT%H:%M:%S")) {
        Some(t) => t
            .and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => field.to_string(),
    }
}

/// `id → name` of the processes the user may view (from the API's list).
pub async fn process_names(ui: &UiState, console: &Console) -> BTreeMap<String, String> {
    let reply = ui.api.get(&console.caller, "/v1/processes").await;
    let mut names = BTreeMap::new();
    for p in reply.body.as_array().into_iter().flatten() {
        if let (Some(id), Some(name)) = (p["id"].as_str(), p["name"].as_str()) {
            names.insert(id.to_string(), name.to_string());
        }
    }
    names
}

/// A table of runs.
pub fn table(runs: &[Value], names: &BTreeMap<String, String>) -> Markup {
    html! {
        @if runs.is_empty() {
            p.empty { "No runs." }
        } @else {
            table.runs {
                thead { tr { th scope="col" { "Run" } th scope="col" { "Process" } th scope="col" { "State" } th scope="col" { "By" } th scope="col" { "Created" } } }
                tbody {
                    @for run in runs {
                        @let id = run["id"].as_str().unwrap_or("");
                        @let pid = run["process_id"].as_str().unwrap_or("");
                        tr {
                            td { a href={ "/ui/runs/" (enc(id)) } { code { (id.get(..8).unwrap_or(id)) } } }
                            td { (names.get(pid).map_or(pid, String::as_str)) }
                            td { (state(run["state"].as_str().unwrap_or(""))) }
                            td { (run["actor"].as_str().unwrap_or("")) }
                            td { (time(run["created_ms"].as_u64().unwrap_or(0))) }
                        }
                    }
                }
            }
        }
    }
}

async fn list(State(ui): State<UiState>, console: Console, Query(f): Query<Filter>) -> Response {
    let mut uri = format!("/v1/runs?limit={PAGE}");
    let (since, until) = (rfc3339(&f.since), rfc3339(&f.until));
    for (name, value) in [
        ("state", &f.state),
        ("process", &f.process),
        ("user", &f.user),
        ("since", &since),
        ("until", &until),
        ("before", &f.before),
    ] {
        if !value.is_empty() {
            uri.push_str(&format!("&{name}={}", enc(value.trim())));
        }
    }
    let reply = ui.api.get(&console.caller, &uri).await;
    if !reply.ok() {
        return api_error(&ui, &console, &reply);
    }
    let names = process_names(&ui, &console).await;
    // The API filters by state, process, user and time, and pages through what it may show.
    let runs: Vec<Value> = reply.body.as_array().cloned().unwrap_or_default();
    let next = reply.header("x-warden-next-before").map(|cursor| {
        format!(
            "/ui/runs?state={}&process={}&user={}&since={}&until={}&before={}",
            enc(&f.state),
            enc(&f.process),
            enc(&f.user),
            enc(&f.since),
            enc(&f.until),
            enc(cursor)
        )
    });
    let body = html! {
        // htmx swaps in the filtered page's <main> (and pushes its URL); without script the
        // form is an ordinary GET.
        form.filters method="get" action="/ui/runs" hx-get="/ui/runs" hx-target="#main"
            hx-select="#main" hx-swap="outerHTML" hx-push-url="true" {
            label for="f-state" { "State" }
            select id="f-state" name="state" {
                option value="" { "any" }
                @for s in STATES {
                    option value=(s) selected[f.state == s] { (s) }
                }
            }
            label for="f-process" { "Process" }
            select id="f-process" name="process" {
                option value="" { "any" }
                @for (id, name) in &names {
                    option value=(id) selected[&f.process == id] { (name) }
                }
            }
            label for="f-user" { "Started by" }
            input id="f-user" name="user" value=(f.user) size="12";
            label for="f-since" { "Since (UTC)" }
            input id="f-since" name="since" type="datetime-local" step="1" value=(f.since);
            label for="f-until" { "Until (UTC)" }
            input id="f-until" name="until" type="datetime-local" step="1" value=(f.until);
            button type="submit" { "Filter" }
        }
        (table(&runs, &names))
        @if let Some(next) = next {
            p { a.next href=(next) rel="next" { "Older runs →" } }
        }
    };
    page(&ui, &console, "Runs", body).into_response()
}

fn is_active(state: &str) -> bool {
    matches!(state, "awaiting-approval" | "queued" | "running")
}

/// One event of a run's log, as the page and `app.js` both show it.
fn event_line(event: &Value) -> Markup {
    let level = event["level"].as_str().unwrap_or("info");
    html! {
        li class={ "ev ev-" (level) } {
            span.at { "+" (event["at_ms"].as_u64().unwrap_or(0)) " ms" }
            " " span.level { (level) } " "
            span.msg { (event["message"].as_str().unwrap_or("")) }
        }
    }
}

async fn run_page(State(ui): State<UiState>, console: Console, Path(id): Path<String>) -> Response {
    let reply = ui
        .api
        .get(&console.caller, &format!("/v1/runs/{}", enc(&id)))
        .await;
    if !reply.ok() {
        return api_error(&ui, &console, &reply);
    }
    let run = &reply.body;
    let run_state = run["state"].as_str().unwrap_or("");
    let names = process_names(&ui, &console).await;
    let pid = run["process_id"].as_str().unwrap_or("");
    // Host calls come from the audit log: only for those who may read it (asked first, so a
    // page view is not an audited denial).
    let calls = match ui.may(&console, Action::ViewAudit) {
        true => {
            let uri = format!("/v1/audit?run={}&limit=200", enc(&id));
            let audit = ui.api.get(&console.caller, &uri).await;
            audit.ok().then_some(audit.body)
        }
        false => None,
    };
    let events_url = format!("/ui/runs/{}/events", enc(&id));
    let body = html! {
        section.summary aria-label="run" {
            dl {
                dt { "Run" } dd { code { (id) } }
                dt { "Process" } dd { (names.get(pid).map_or(pid, String::as_str)) }
                dt { "State" } dd id="run-state" { (state(run_state)) }
                dt { "Started by" } dd { (run["actor"].as_str().unwrap_or("")) }
                dt { "Created" } dd { (time(run["created_ms"].as_u64().unwrap_or(0))) }
                dt { "Started" } dd { (time_opt(run["started_ms"].as_u64())) }
                dt { "Finished" } dd { (time_opt(run["finished_ms"].as_u64())) }
                dt { "Module" } dd { code { (run["module_digest"].as_str().unwrap_or("")) } }
                (super::steps::parent_link(run))
            }
            h2 { "Inputs" }
            (inputs_table(&run["inputs"]))
            @if is_active(run_state) {
                form.cancel id="cancel-form" method="post" action={ "/ui/runs/" (enc(&id)) "/cancel" } {
                    (csrf(&console))
                    button.danger type="submit" { "Cancel run" }
                }
            }
            @if run_state == "awaiting-approval" {
                p { a href={ "/ui/approvals/" (enc(&id)) } { "Approval request" } }
            }
        }
        (super::steps::step_tree(run))
        section aria-label="events" {
            h2 { "Events" }
            ol id="events" data-events-url=[is_active(run_state).then_some(&events_url)] {
                @for event in run["events"].as_array().into_iter().flatten() {
                    (event_line(event))
                }
            }
        }
        section aria-label="result" {
            h2 { "Result" }
            pre id="run-result" { (run["result"].as_str().unwrap_or("")) }
            @if let Some(e) = run["error"].as_str() { (error(e)) }
            h3 { "Standard output" }
            pre id="run-stdout" { (run["stdout"].as_str().unwrap_or("")) }
            h3 { "Standard error" }
            pre id="run-stderr" { (run["stderr"].as_str().unwrap_or("")) }
        }
        @if let Some(calls) = calls {
            section aria-label="host calls" {
                h2 { "Host calls" }
                (host_calls(&calls))
            }
        }
    };
    page(&ui, &console, "Run", body).into_response()
}

/// A run's (or approval's) inputs as a table, values as JSON text.
pub fn inputs_table(inputs: &Value) -> Markup {
    html! {
        @match inputs.as_object() {
            Some(map) if !map.is_empty() => {
                table.inputs {
                    @for (name, value) in map {
                        tr { th scope="row" { (name) } td { code { (value.to_string()) } } }
                    }
                }
            }
            _ => { p.empty { "None." } }
        }
    }
}

fn host_calls(records: &Value) -> Markup {
    html! {
        table.calls {
            thead { tr { th scope="col" { "#" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Credential" } th scope="col" { "Decision" } th scope="col" { "Detail" } th scope="col" { "Time" } } }
            tbody {
                @for r in records.as_array().into_iter().flatten() {
                    tr {
                        td { (r["seq"].as_u64().unwrap_or(0)) }
                        td { (r["action"].as_str().unwrap_or("")) }
                        td { (r["target"].as_str().unwrap_or("")) }
                        td { (r["credential"].as_str().unwrap_or("")) }
                        td { (decision(&r["decision"])) }
                        td { (r["detail"].as_str().unwrap_or("")) }
                        td { (time(r["time_ms"].as_u64().unwrap_or(0))) }
                    }
                }
            }
        }
    }
}

/// An audit decision as text: `allowed`, or `denied: reason (policy)`.
pub fn decision(d: &Value) -> String {
    match d["verdict"].as_str() {
        Some("denied") => format!(
            "denied: {} ({})",
            d["reason"].as_str().unwrap_or(""),
            d["policy"].as_str().unwrap_or("-")
        ),
        Some(verdict) => verdict.to_string(),
        None => d.as_str().map_or_else(|| d.to_string(), str::to_string),
    }
}

/// The run's event stream, passed through from the API as the signed-in user.
async fn events(State(ui): State<UiState>, console: Console, Path(id): Path<String>) -> Response {
    let uri = format!("/v1/runs/{}/events", enc(&id));
    let mut response = ui
        .api
        .raw(&console.caller, axum::http::Method::GET, &uri, None)
        .await;
    if !response.status().is_success() {
        let reply = crate::ui::api::Reply {
            status: response.status(),
            headers: Default::default(),
            body: Value::Null,
        };
        return api_error(&ui, &console, &reply);
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

async fn cancel(State(ui): State<UiState>, Path(id): Path<String>, posted: Posted) -> Response {
    let console = posted.console;
    let uri = format!("/v1/runs/{}/cancel", enc(&id));
    let reply = ui.api.post(&console.caller, &uri, &json!({})).await;
    if !reply.ok() {
        return api_error(&ui, &console, &reply);
    }
    Redirect::to(&format!("/ui/runs/{}", enc(&id))).into_response()
}
