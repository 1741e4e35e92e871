//! Credentials: metadata and versions, add a credential or replace its secret through a
//! write-only field.
//!
//! Threat: the console showing a secret. No page reads one (the API has no way to); the
//! secret field is `type=password` with no value ever rendered; after a post the browser is
//! redirected (303) so the submitted form is never re-rendered with its value, and a failed
//! post shows the API's message with empty fields. The form's values are wiped from this
//! process's memory when the form is dropped ([`crate::ui::auth::Form`]); the request and
//! API buffers in between are not (as for the API itself).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::api_error;
use crate::ui::UiState;
use crate::ui::api::enc;
use crate::ui::auth::{Console, Posted};
use crate::ui::layout::{csrf, error, notice, page, time};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/credentials", get(list).post(add))
        .route("/ui/credentials/{name}/secret", post(replace))
}

#[derive(Deserialize, Default)]
struct Done {
    #[serde(default)]
    done: String,
}

async fn list(State(ui): State<UiState>, console: Console, Query(done): Query<Done>) -> Response {
    let message = match done.done.as_str() {
        "added" => Some(notice("Credential added.")),
        "replaced" => Some(notice("Secret replaced.")),
        _ => None,
    };
    list_page(&ui, &console, message, StatusCode::OK).await
}

async fn list_page(
    ui: &UiState,
    console: &Console,
    message: Option<maud::Markup>,
    status: StatusCode,
) -> Response {
    let reply = ui.api.get(&console.caller, "/v1/credentials").await;
    if !reply.ok() {
        return api_error(ui, console, &reply);
    }
    let credentials = reply.body.as_array().cloned().unwrap_or_default();
    let mut versions = Vec::new();
    for c in &credentials {
        let name = c["name"].as_str().unwrap_or("");
        let uri = format!("/v1/credentials/{}/versions", enc(name));
        versions.push(ui.api.get(&console.caller, &uri).await.body);
    }
    let body = html! {
        @if let Some(m) = message { (m) }
        table.credentials {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Account" } th scope="col" { "Kind" } th scope="col" { "Admin" } th scope="col" { "Created" } th scope="col" { "Versions" } th scope="col" { "Replace the secret" } } }
            tbody {
                @for (c, v) in credentials.iter().zip(&versions) {
                    @let name = c["name"].as_str().unwrap_or("");
                    tr {
                        td { (name) }
                        td { (c["username"].as_str().unwrap_or("")) }
                        td { (c["kind"].as_str().unwrap_or("")) }
                        td { (if c["admin"] == true { "yes" } else { "no" }) }
                        td { (time(c["created_ms"].as_u64().unwrap_or(0))) }
                        td {
                            ul.versions {
                                @for ver in v.as_array().into_iter().flatten() {
                                    li { "v" (ver["version"].as_u64().unwrap_or(0)) " " (ver["state"].as_str().unwrap_or("")) " " (time(ver["created_ms"].as_u64().unwrap_or(0))) " by " (ver["created_by"].as_str().unwrap_or("")) }
                                }
                            }
                        }
                        td {
                            form.replace method="post" action={ "/ui/credentials/" (enc(name)) "/secret" } {
                                (csrf(console))
                                label for={ "s-" (name) } { "New secret for " (name) }
                                input id={ "s-" (name) } name="secret" type="password" autocomplete="new-password" required;
                                button type="submit" { "Replace" }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-add" {
            h2 id="h-add" { "Add a credential" }
            form.add method="post" action="/ui/credentials" {
                (csrf(console))
                label for="c-name" { "Name" } input id="c-name" name="name" required;
                label for="c-user" { "Account (user name on the targets)" } input id="c-user" name="username" required;
                label for="c-kind" { "Kind" }
                select id="c-kind" name="kind" { option value="password" { "password" } option value="ssh-key" { "ssh-key" } }
                label for="c-admin" { input id="c-admin" name="admin" type="checkbox" value="true"; " Admin credential (privileged operations only)" }
                label for="c-secret" { "Secret (write-only: never shown again)" }
                textarea id="c-secret" name="secret" rows="2" autocomplete="off" required {}
                button type="submit" { "Add" }
            }
        }
    };
    (status, page(ui, console, "Credentials", body)).into_response()
}

async fn add(State(ui): State<UiState>, posted: Posted) -> Response {
    let console = &posted.console;
    let f = &posted.form;
    let body = json!({
        "name": f.text("name"),
        "username": f.text("username"),
        "kind": f.text("kind"),
        "admin": f.text("admin") == "true",
        "secret": f.text("secret"),
    });
    let reply = ui.api.post(&console.caller, "/v1/credentials", &body).await;
    drop(body);
    if reply.ok() {
        return Redirect::to("/ui/credentials?done=added").into_response();
    }
    if reply.status == StatusCode::FORBIDDEN {
        return api_error(&ui, console, &reply);
    }
    list_page(
        &ui,
        console,
        Some(error(&reply.error_message())),
        reply.status,
    )
    .await
}

async fn replace(State(ui): State<UiState>, Path(name): Path<String>, posted: Posted) -> Response {
    let console = &posted.console;
    let uri = format!("/v1/credentials/{}/secret", enc(&name));
    let body = json!({ "secret": posted.form.text("secret") });
    let reply = ui
        .api
        .call(&console.caller, Method::PUT, &uri, Some(&body))
        .await;
    drop(body);
    if reply.ok() {
        return Redirect::to("/ui/credentials?done=replaced").into_response();
    }
    if reply.status == StatusCode::FORBIDDEN {
        return api_error(&ui, console, &reply);
    }
    list_page(
        &ui,
        console,
        Some(error(&reply.error_message())),
        reply.status,
    )
    .await
}
