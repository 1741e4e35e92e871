//! Targets: the list, and adding one by scan and confirm — the console connects to the
//! address (the CLI's `warden target scan` code, [`crate::ssh::scan_host_key`]), shows the
//! host key it was offered and its SHA-256 fingerprint, and pins that key only when the user
//! confirms it (`POST /v1/targets`).
//!
//! Threat: pinning a key nobody checked (a man in the middle on first contact). Nothing is
//! pinned by the scan; the confirm form carries the key that was shown, and its fingerprint
//! is computed again from it. The scan itself is an outbound connection on the user's behalf,
//! so it is allowed only to those the API lets manage targets (asked through the API first,
//! a refusal audited like any other).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::json;

use super::api_error;
use crate::ui::UiState;
use crate::ui::auth::{Console, Form, Posted};
use crate::ui::layout::{csrf, error, notice, page};

/// How long a scan waits for the target. Bounds a page held open by an unreachable address.
const SCAN_TIMEOUT: Duration = Duration::from_secs(10);

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/targets", get(list).post(pin))
        .route("/ui/targets/scan", post(scan))
}

async fn list(State(ui): State<UiState>, console: Console) -> Response {
    list_page(&ui, &console, html! {}, StatusCode::OK).await
}

async fn list_page(ui: &UiState, console: &Console, extra: Markup, status: StatusCode) -> Response {
    let reply = ui.api.get(&console.caller, "/v1/targets").await;
    if !reply.ok() {
        return api_error(ui, console, &reply);
    }
    let targets = reply.body.as_array().cloned().unwrap_or_default();
    let body = html! {
        (extra)
        table.targets {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Address" } th scope="col" { "Zone" } th scope="col" { "Tags" } th scope="col" { "Pinned host key (SHA-256)" } } }
            tbody {
                @for t in &targets {
                    tr {
                        td { (t["name"].as_str().unwrap_or("")) }
                        td { (t["address"].as_str().unwrap_or("")) ":" (t["port"].as_u64().unwrap_or(22)) }
                        td { (t["zone"].as_str().unwrap_or("")) }
                        td { (t["tags"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", ")) }
                        td { code { (crate::targets::fingerprint(t["host_key"].as_str().unwrap_or("")).unwrap_or_default()) } }
                    }
                }
            }
        }
        section aria-labelledby="h-add" {
            h2 id="h-add" { "Add a target" }
            form.scan method="post" action="/ui/targets/scan" {
                (csrf(console))
                (fields(&Form::default()))
                button id="scan" type="submit" { "Scan host key" }
            }
        }
    };
    (status, page(ui, console, "Targets", body)).into_response()
}

fn fields(f: &Form) -> Markup {
    html! {
        label for="t-name" { "Name" } input id="t-name" name="name" value=(f.text("name")) required;
        label for="t-address" { "Address (host[:port])" } input id="t-address" name="address" value=(f.text("address")) required;
        label for="t-zone" { "Zone" } input id="t-zone" name="zone" value=(f.text("zone")) placeholder="default";
        label for="t-tags" { "Tags (comma separated)" } input id="t-tags" name="tags" value=(f.text("tags"));
    }
}

/// Scans the address and shows the offered key for confirmation; pins nothing.
async fn scan(State(ui): State<UiState>, posted: Posted) -> Response {
    let console = &posted.console;
    let f = &posted.form;
    // The same authorization as adding a target (audited when refused).
    let allowed = ui.api.get(&console.caller, "/v1/targets").await;
    if !allowed.ok() {
        return api_error(&ui, console, &allowed);
    }
    let scanned = match crate::targets::parse_address(f.text("address")) {
        Ok((host, port)) => crate::ssh::scan_host_key(&host, port, SCAN_TIMEOUT)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let key = match scanned {
        Ok(key) => key,
        Err(why) => {
            let message = error(&format!("The scan failed: {why}"));
            return list_page(&ui, console, message, StatusCode::BAD_GATEWAY).await;
        }
    };
    let fingerprint = crate::targets::fingerprint(&key).unwrap_or_default();
    let body = html! {
        p { "The server at " code { (f.text("address")) } " offered this host key. Check its fingerprint out of band (e.g. " code { "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub" } " on the server) before you pin it." }
        dl {
            dt { "Fingerprint" } dd { code id="fingerprint" { (fingerprint) } }
            dt { "Key" } dd { code.key id="offered-key" { (key) } }
        }
        form.pin method="post" action="/ui/targets" {
            (csrf(console))
            input type="hidden" name="name" value=(f.text("name"));
            input type="hidden" name="address" value=(f.text("address"));
            input type="hidden" name="zone" value=(f.text("zone"));
            input type="hidden" name="tags" value=(f.text("tags"));
            input type="hidden" name="host_key" value=(key);
            button id="confirm" type="submit" { "The fingerprint matches: pin it" }
        }
        p { a href="/ui/targets" { "Cancel" } }
    };
    page(&ui, console, "Confirm the host key", body).into_response()
}

/// Pins the confirmed key: `POST /v1/targets`.
async fn pin(State(ui): State<UiState>, posted: Posted) -> Response {
    let console = &posted.console;
    let f = &posted.form;
    let tags: Vec<&str> = f
        .text("tags")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    let zone = Some(f.text("zone").trim()).filter(|z| !z.is_empty());
    let body = json!({
        "name": f.text("name"),
        "address": f.text("address"),
        "host_key": f.text("host_key"),
        "zone": zone,
        "tags": tags,
    });
    let reply = ui.api.post(&console.caller, "/v1/targets", &body).await;
    if reply.ok() {
        return Redirect::to("/ui/targets").into_response();
    }
    if reply.status == StatusCode::FORBIDDEN {
        return api_error(&ui, console, &reply);
    }
    let message = html! { (error(&reply.error_message())) (notice("Nothing was pinned.")) };
    list_page(&ui, console, message, reply.status).await
}
