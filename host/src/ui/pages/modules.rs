//! Modules and publishers: the list of task modules with upload (the signed module file the
//! CLI's `warden module push` sends, posted as a file) and retire, and the trusted
//! publishers with trust (a name and an ed25519 public key in hex) and distrust.
//!
//! Each action is one API call as the signed-in user (`POST /v1/modules`,
//! `POST /v1/modules/{digest}/retire`, `POST /v1/publishers`, `DELETE /v1/publishers/{name}`),
//! so the API checks the signature, the permission (`ManageModules`; `TrustPublishers` for
//! publishers) and audits it; a refusal is the API's message on the page. The forms are only
//! shown to those the policies let use them.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde_json::{Value, json};

use super::api_error;
use crate::policy::Action;
use crate::ui::UiState;
use crate::ui::api::enc;
use crate::ui::auth::{Console, Posted};
use crate::ui::layout::{csrf, error, page, time};
use crate::ui::multipart::Uploaded;

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/modules", get(modules).post(upload))
        .route("/ui/modules/{digest}/retire", post(retire))
        .route("/ui/publishers", post(trust))
        .route("/ui/publishers/{name}/distrust", post(distrust))
}

fn list(body: &Value) -> Vec<Value> {
    body.as_array().cloned().unwrap_or_default()
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or("")
}

async fn modules(State(ui): State<UiState>, console: Console) -> Response {
    let modules = ui.api.get(&console.caller, "/v1/modules").await;
    if !modules.ok() {
        return api_error(&ui, &console, &modules);
    }
    let publishers = ui.api.get(&console.caller, "/v1/publishers").await;
    let manage = ui.may(&console, Action::ManageModules);
    let trust = ui.may(&console, Action::TrustPublishers);
    let body = html! {
        table.modules {
            thead { tr { th scope="col" { "Module" } th scope="col" { "Digest" } th scope="col" { "Publisher" } th scope="col" { "Capabilities" } th scope="col" { "Uploaded" } th scope="col" { "Retired" } @if manage { th scope="col" { "" } } } }
            tbody {
                @for m in list(&modules.body) {
                    @let digest = text(&m, "digest");
                    @let retired = m["retired"] == true;
                    tr {
                        td { (text(&m, "name")) "@" (text(&m, "version")) }
                        td { code { (digest) } }
                        td { (text(&m, "publisher")) }
                        td { (m["manifest"]["capabilities"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")) }
                        td { (time(m["uploaded_ms"].as_u64().unwrap_or(0))) " by " (text(&m, "uploaded_by")) }
                        td { (if retired { "yes" } else { "no" }) }
                        @if manage {
                            td {
                                @if !retired {
                                    form.retire method="post" action={ "/ui/modules/" (enc(digest)) "/retire" } {
                                        (csrf(&console))
                                        button.danger type="submit" aria-label={ "Retire " (text(&m, "name")) "@" (text(&m, "version")) } { "Retire" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if manage {
            section aria-labelledby="h-upload" {
                h2 id="h-upload" { "Upload a module" }
                p.hint { "The signed module file, as " code { "warden module push" } " sends it: its signature must verify against a trusted publisher." }
                form.upload method="post" action="/ui/modules" enctype="multipart/form-data" {
                    (csrf(&console))
                    label for="m-file" { "Signed module (.wasm)" }
                    input id="m-file" name="module" type="file" accept=".wasm,application/wasm" required;
                    button type="submit" { "Upload" }
                }
            }
        }
        h2 { "Trusted publishers" }
        ul.publishers {
            @for p in list(&publishers.body) {
                li {
                    (text(&p, "name")) " " code { (text(&p, "key_id")) }
                    @if trust {
                        form.distrust method="post" action={ "/ui/publishers/" (enc(text(&p, "name"))) "/distrust" } {
                            (csrf(&console))
                            button.danger type="submit" aria-label={ "Distrust " (text(&p, "name")) } { "Distrust" }
                        }
                    }
                }
            }
        }
        @if trust {
            section aria-labelledby="h-trust" {
                h2 id="h-trust" { "Trust a publisher" }
                p.hint { "Its modules can then be uploaded and run. Distrust refuses them at their next run start." }
                form.trust method="post" action="/ui/publishers" {
                    (csrf(&console))
                    label for="pub-name" { "Name" } input id="pub-name" name="name" required;
                    label for="pub-key" { "Ed25519 public key (64 hex digits)" }
                    input id="pub-key" name="public_key" required size="66" autocomplete="off" spellcheck="false";
                    button type="submit" { "Trust" }
                }
            }
        }
    };
    page(&ui, &console, "Modules", body).into_response()
}

/// `POST /v1/modules` of the uploaded file.
async fn upload(State(ui): State<UiState>, mut uploaded: Uploaded) -> Response {
    let file = uploaded
        .parts
        .iter()
        .position(|p| p.name == "module" && p.filename.is_some())
        .map(|i| uploaded.parts.swap_remove(i));
    let console = &uploaded.console;
    let Some(file) = file.filter(|f| !f.data.is_empty()) else {
        let body = error("Choose the signed module file to upload.");
        return (
            axum::http::StatusCode::BAD_REQUEST,
            page(&ui, console, "Not uploaded", body),
        )
            .into_response();
    };
    let reply = ui
        .api
        .post_bytes(
            &console.caller,
            "/v1/modules",
            "application/wasm",
            file.data,
        )
        .await;
    if !reply.ok() {
        return api_error(&ui, console, &reply);
    }
    Redirect::to("/ui/modules").into_response()
}

async fn retire(State(ui): State<UiState>, Path(digest): Path<String>, posted: Posted) -> Response {
    let console = &posted.console;
    let uri = format!("/v1/modules/{}/retire", enc(&digest));
    let reply = ui.api.post(&console.caller, &uri, &json!({})).await;
    if !reply.ok() {
        return api_error(&ui, console, &reply);
    }
    Redirect::to("/ui/modules").into_response()
}

async fn trust(State(ui): State<UiState>, posted: Posted) -> Response {
    let console = &posted.console;
    let f = &posted.form;
    let body = json!({ "name": f.text("name").trim(), "public_key": f.text("public_key").trim() });
    let reply = ui.api.post(&console.caller, "/v1/publishers", &body).await;
    if !reply.ok() {
        return api_error(&ui, console, &reply);
    }
    Redirect::to("/ui/modules").into_response()
}

async fn distrust(State(ui): State<UiState>, Path(name): Path<String>, posted: Posted) -> Response {
    let console = &posted.console;
    let uri = format!("/v1/publishers/{}", enc(&name));
    let reply = ui
        .api
        .call(&console.caller, Method::DELETE, &uri, None)
        .await;
    if !reply.ok() {
        return api_error(&ui, console, &reply);
    }
    Redirect::to("/ui/modules").into_response()
}
