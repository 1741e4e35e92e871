//! Approvals: the inbox (runs awaiting approval that the user may see, others' first) and a
//! request's page showing exactly what is approved — module digest and publisher, signed
//! capabilities, inputs, grant, requester — with approve and reject.
//!
//! Threat: approving something other than what was shown. The approve form carries the
//! binding digest of the request as rendered; the API refuses the approval as stale
//! (`stale_request`, 409) when the run's inputs or process changed since. The requester sees
//! no approve button on their own run (and the API refuses self-approval regardless).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api_error;
use super::runs::{inputs_table, process_names, table};
use crate::ui::UiState;
use crate::ui::api::enc;
use crate::ui::auth::{Console, Posted};
use crate::ui::layout::{csrf, error, notice, page, state};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/approvals", get(inbox))
        .route("/ui/approvals/{id}", get(show))
        .route("/ui/approvals/{id}/approve", post(approve))
        .route("/ui/approvals/{id}/reject", post(reject))
}

#[derive(Deserialize, Default)]
struct Before {
    #[serde(default)]
    before: String,
}

fn inbox_uri(before: &str) -> String {
    match before {
        "" => "/v1/approvals".to_string(),
        cursor => format!("/v1/approvals?before={}", enc(cursor)),
    }
}

async fn inbox(State(ui): State<UiState>, console: Console, Query(q): Query<Before>) -> Response {
    let reply = ui.api.get(&console.caller, &inbox_uri(&q.before)).await;
    if !reply.ok() {
        return api_error(&ui, &console, &reply);
    }
    let me = console.caller.user.name.as_str();
    let (mine, others): (Vec<Value>, Vec<Value>) = reply
        .body
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .partition(|r| r["actor"].as_str() == Some(me));
    let names = process_names(&ui, &console).await;
    let further = reply
        .header("x-warden-next-before")
        .map(|c| format!("/ui/approvals?before={}", enc(c)));
    let body = html! {
        section aria-labelledby="h-others" {
            h2 id="h-others" { "Waiting for my approval" }
            @if others.is_empty() { p.empty { "Nothing waits for you." } }
            @else {
                ul.approvals {
                    @for r in &others {
                        @let id = r["id"].as_str().unwrap_or("");
                        @let pid = r["process_id"].as_str().unwrap_or("");
                        li { a href={ "/ui/approvals/" (enc(id)) } { (names.get(pid).map_or(pid, String::as_str)) " — requested by " (r["actor"].as_str().unwrap_or("")) } }
                    }
                }
            }
        }
        section aria-labelledby="h-mine" {
            h2 id="h-mine" { "My requests" }
            (table(&mine, &names))
        }
        @if let Some(further) = further {
            p { a.next href=(further) rel="next" { "Look further back in the history →" } }
        }
    };
    page(&ui, &console, "Approvals", body).into_response()
}

#[derive(Deserialize, Default)]
struct Done {
    #[serde(default)]
    done: String,
}

async fn show(
    State(ui): State<UiState>,
    console: Console,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let message = match done.done.as_str() {
        "approved" => Some(notice("Approved.")),
        "rejected" => Some(notice("Rejected.")),
        _ => None,
    };
    request_page(&ui, &console, &id, message, StatusCode::OK).await
}

async fn request_page(
    ui: &UiState,
    console: &Console,
    id: &str,
    message: Option<maud::Markup>,
    status: StatusCode,
) -> Response {
    let uri = format!("/v1/runs/{}/approval", enc(id));
    let reply = ui.api.get(&console.caller, &uri).await;
    if !reply.ok() {
        return api_error(ui, console, &reply);
    }
    let r = &reply.body;
    let digest = r["module_digest"].as_str().unwrap_or("");
    // The publisher of the module the user is asked to approve (the API let them see the
    // request, which names the module).
    let publisher = ui
        .app
        .modules
        .get(digest)
        .ok()
        .flatten()
        .map(|m| m.publisher)
        .unwrap_or_default();
    let requester = r["requester"].as_str().unwrap_or("");
    let mine = requester == console.caller.user.name;
    let strings = |v: &Value| -> String {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let grant = &r["grant"];
    let binding = r["binding"].as_str();
    let awaiting = r["state"].as_str() == Some("awaiting-approval");
    let body = html! {
        @if let Some(m) = message { (m) }
        dl.request {
            dt { "Process" } dd { (r["process_name"].as_str().unwrap_or("")) }
            dt { "Requested by" } dd id="requester" { (requester) }
            dt { "State" } dd { (state(r["state"].as_str().unwrap_or(""))) }
            dt { "Module" } dd { (r["module"].as_str().unwrap_or("")) }
            dt { "Module digest" } dd { code id="module-digest" { (digest) } }
            dt { "Publisher" } dd { (publisher) }
            dt { "Signed capabilities" } dd id="capabilities" { (strings(&r["capabilities"])) }
            dt { "Targets" } dd { (strings(&grant["targets"])) }
            dt { "Credentials" } dd { (strings(&grant["credentials"])) }
            dt { "Commands" } dd { (strings(&grant["commands"])) }
            dt { "Paths" } dd { (strings(&grant["paths"])) }
            dt { "Approvals" } dd { (r["valid_approvals"].as_u64().unwrap_or(0)) " of " (r["required_approvals"].as_u64().unwrap_or(0)) }
            dt { "Binding digest" } dd { code id="binding" { (binding.unwrap_or("—")) } }
        }
        h2 { "Inputs" }
        (inputs_table(&r["inputs"]))
        @if let Some(blocked) = r["blocked"].as_str() { (error(blocked)) }
        @if mine {
            p.hint id="own-request" { "You requested this run: someone else must approve it." }
        } @else if awaiting {
            @if let Some(binding) = binding {
                form.approve method="post" action={ "/ui/approvals/" (enc(id)) "/approve" } {
                    (csrf(console))
                    input type="hidden" name="binding" value=(binding);
                    button id="approve" type="submit" { "Approve exactly this" }
                }
            }
            form.reject method="post" action={ "/ui/approvals/" (enc(id)) "/reject" } {
                (csrf(console))
                label for="reason" { "Reason for rejecting" }
                input id="reason" name="reason" type="text";
                button id="reject" type="submit" { "Reject" }
            }
        }
        p { a href={ "/ui/runs/" (enc(id)) } { "The run" } }
    };
    (status, page(ui, console, "Approval request", body)).into_response()
}

async fn approve(State(ui): State<UiState>, Path(id): Path<String>, posted: Posted) -> Response {
    let console = &posted.console;
    // The binding the approver was shown; none means "as it stands", which the form never
    // sends (its hidden field always carries one), so an empty one is refused as stale.
    let binding = posted.form.text("binding");
    let uri = format!("/v1/runs/{}/approve", enc(&id));
    let reply = ui
        .api
        .post(&console.caller, &uri, &json!({ "binding": binding }))
        .await;
    answer(&ui, console, &id, reply, "approved").await
}

async fn reject(State(ui): State<UiState>, Path(id): Path<String>, posted: Posted) -> Response {
    let console = &posted.console;
    let uri = format!("/v1/runs/{}/reject", enc(&id));
    let body = json!({ "reason": posted.form.text("reason") });
    let reply = ui.api.post(&console.caller, &uri, &body).await;
    answer(&ui, console, &id, reply, "rejected").await
}

async fn answer(
    ui: &UiState,
    console: &Console,
    id: &str,
    reply: crate::ui::api::Reply,
    done: &str,
) -> Response {
    if reply.ok() {
        return Redirect::to(&format!("/ui/approvals/{}?done={done}", enc(id))).into_response();
    }
    if reply.status == StatusCode::NOT_FOUND {
        return api_error(ui, console, &reply);
    }
    let message = match reply.error_code() {
        "stale_request" => format!(
            "Refused as stale: the request changed since you reviewed it. Review it again. ({})",
            reply.error_message()
        ),
        _ => reply.error_message(),
    };
    request_page(ui, console, id, Some(error(&message)), reply.status).await
}
