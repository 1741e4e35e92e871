//! Remote bridges: the list, an enrolment token for a new bridge of a zone (shown once, on the
//! page that answers the post — see `tokens.rs` for how a secret is handled), and revoking a
//! bridge (its next request is refused and the runs it holds end `lost`).
//!
//! Each action is one API call as the signed-in user (`POST /v1/bridges/tokens`,
//! `POST /v1/bridges/{id}/revoke`): the API checks `ManageTargets` and audits it
//! (`bridge.token.created`, `bridge.revoked`); a refusal is the API's message on the page.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde_json::{Value, json};

use super::api_error;
use super::tokens::shown_once;
use crate::ui::UiState;
use crate::ui::api::enc;
use crate::ui::auth::{Console, Posted};
use crate::ui::layout::{csrf, error, page, time_opt};

/// Longest enrolment token lifetime the form offers, in hours (the API's cap: 7 days).
const MAX_TTL_HOURS: u64 = 168;

/// Longest revocation reason sent. Bounds the audit record a form controls.
const MAX_REASON: usize = 256;

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/bridges", get(bridges))
        .route("/ui/bridges/tokens", post(create_token))
        .route("/ui/bridges/{id}/revoke", post(revoke))
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or("")
}

async fn bridges(State(ui): State<UiState>, console: Console) -> Response {
    let reply = ui.api.get(&console.caller, "/v1/bridges").await;
    if !reply.ok() {
        return api_error(&ui, &console, &reply);
    }
    let list = reply.body.as_array().cloned().unwrap_or_default();
    let body = html! {
        @if list.is_empty() { p.empty { "No remote bridge is enrolled; the embedded one serves every zone it is given." } }
        table.bridges {
            thead { tr { th scope="col" { "Bridge" } th scope="col" { "Zone" } th scope="col" { "Version" } th scope="col" { "Last seen" } th scope="col" { "State" } th scope="col" { "Runs in flight" } th scope="col" { "" } } }
            tbody {
                @for b in &list {
                    @let revoked = b["revoked"] == true;
                    tr {
                        td { (text(b, "name")) }
                        td { (text(b, "zone")) }
                        td { (text(b, "version")) }
                        td { (time_opt(b["last_seen_ms"].as_u64())) }
                        td { @if revoked { "revoked" } @else if b["online"] == true { "online" } @else { "offline" } }
                        td { (b["runs_in_flight"].as_u64().unwrap_or(0)) }
                        td {
                            @if !revoked {
                                @let label_id = format!("reason-{}", text(b, "id"));
                                form.revoke-bridge method="post" action={ "/ui/bridges/" (enc(text(b, "id"))) "/revoke" } {
                                    (csrf(&console))
                                    label for=(label_id) { "Reason" }
                                    input id=(label_id) name="reason" maxlength=(MAX_REASON) size="16";
                                    button.danger type="submit" aria-label={ "Revoke bridge " (text(b, "name")) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-enrol" {
            h2 id="h-enrol" { "Enrol a bridge" }
            p.hint { "A one-time token for " code { "warden bridge enroll" } " on the bridge's host; shown once, on the next page." }
            form.enrol method="post" action="/ui/bridges/tokens" {
                (csrf(&console))
                label for="b-zone" { "Zone" } input id="b-zone" name="zone" required;
                label for="b-hours" { "Valid for hours (empty: 1)" }
                input id="b-hours" name="hours" type="number" min="1" max=(MAX_TTL_HOURS);
                button type="submit" { "Create token" }
            }
        }
    };
    page(&ui, &console, "Bridges", body).into_response()
}

async fn create_token(State(ui): State<UiState>, posted: Posted) -> Response {
    let console = &posted.console;
    let f = &posted.form;
    let mut body = json!({ "zone": f.text("zone").trim() });
    let hours = f.text("hours").trim();
    if !hours.is_empty() {
        let Some(hours) = hours
            .parse::<u64>()
            .ok()
            .filter(|h| (1..=MAX_TTL_HOURS).contains(h))
        else {
            let why = error("The lifetime is a whole number of hours, 1 to 168.");
            return (
                StatusCode::BAD_REQUEST,
                page(&ui, console, "Not created", why),
            )
                .into_response();
        };
        body["ttl_secs"] = json!(hours * 3600);
    }
    let (reply, secret) = ui
        .api
        .post_secret(&console.caller, "/v1/bridges/tokens", &body, "token")
        .await;
    let Some(secret) = secret.filter(|_| reply.ok()) else {
        return api_error(&ui, console, &reply);
    };
    let r = &reply.body;
    let what = html! {
        dl.minted {
            dt { "Zone" } dd { (text(r, "zone")) }
            dt { "Expires" } dd { (time_opt(r["expires_ms"].as_u64())) }
        }
        p.hint { "It enrols one bridge, once." }
    };
    shown_once(&ui, console, "Bridge enrolment token", what, &secret)
}

async fn revoke(State(ui): State<UiState>, Path(id): Path<String>, posted: Posted) -> Response {
    let console = &posted.console;
    let reason: String = posted
        .form
        .text("reason")
        .trim()
        .chars()
        .take(MAX_REASON)
        .collect();
    let body = match reason.is_empty() {
        true => json!({}),
        false => json!({ "reason": reason }),
    };
    let uri = format!("/v1/bridges/{}/revoke", enc(&id));
    let reply = ui.api.post(&console.caller, &uri, &body).await;
    if !reply.ok() {
        return api_error(&ui, console, &reply);
    }
    Redirect::to("/ui/bridges").into_response()
}
