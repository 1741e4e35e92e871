//! Administration lists: modules and trusted publishers, users and roles (create a user,
//! disable or enable one), one's own API tokens (with revoke), and remote bridges — each the API's answer for the user, shown only
//! in the navigation of those the policies let read it.
//!
//! Nothing here mints a token or shows one: a token is a secret, minted with the CLI.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde_json::Value;

use super::api_error;
use crate::ui::UiState;
use crate::ui::api::enc;
use crate::ui::auth::{Console, Posted};
use crate::ui::layout::{csrf, page, time, time_opt};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/modules", get(modules))
        .route("/ui/users", get(users).post(create_user))
        .route("/ui/users/{name}/{change}", post(change_user))
        .route("/ui/tokens", get(tokens))
        .route("/ui/tokens/{id}/revoke", post(revoke))
        .route("/ui/bridges", get(bridges))
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
    let body = html! {
        table.modules {
            thead { tr { th scope="col" { "Module" } th scope="col" { "Digest" } th scope="col" { "Publisher" } th scope="col" { "Capabilities" } th scope="col" { "Uploaded" } th scope="col" { "Retired" } } }
            tbody {
                @for m in list(&modules.body) {
                    tr {
                        td { (text(&m, "name")) "@" (text(&m, "version")) }
                        td { code { (text(&m, "digest")) } }
                        td { (text(&m, "publisher")) }
                        td { (m["manifest"]["capabilities"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")) }
                        td { (time(m["uploaded_ms"].as_u64().unwrap_or(0))) " by " (text(&m, "uploaded_by")) }
                        td { (if m["retired"] == true { "yes" } else { "no" }) }
                    }
                }
            }
        }
        h2 { "Trusted publishers" }
        ul.publishers {
            @for p in list(&publishers.body) {
                li { (text(&p, "name")) " " code { (text(&p, "key_id")) } }
            }
        }
    };
    page(&ui, &console, "Modules", body).into_response()
}

async fn users(State(ui): State<UiState>, console: Console) -> Response {
    let users = ui.api.get(&console.caller, "/v1/users").await;
    if !users.ok() {
        return api_error(&ui, &console, &users);
    }
    let roles = ui.api.get(&console.caller, "/v1/roles").await;
    let body = html! {
        table.users {
            thead { tr { th scope="col" { "User" } th scope="col" { "Roles" } th scope="col" { "Created" } th scope="col" { "State" } th scope="col" { "" } } }
            tbody {
                @for u in list(&users.body) {
                    tr {
                        td { (text(&u, "name")) }
                        td { (u["roles"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")) }
                        td { (time(u["created_ms"].as_u64().unwrap_or(0))) }
                        td { @if u["deleted_ms"].is_u64() { "deleted" } @else if u["disabled"] == true { "disabled" } @else { "active" } }
                        td {
                            @if !u["deleted_ms"].is_u64() {
                                @let change = if u["disabled"] == true { "enable" } else { "disable" };
                                form method="post" action={ "/ui/users/" (enc(text(&u, "name"))) "/" (change) } {
                                    (csrf(&console))
                                    button type="submit" aria-label={ (change) " " (text(&u, "name")) } { (change) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-new-user" {
            h2 id="h-new-user" { "Create a user" }
            p.hint { "The console shows no token: mint the new user's enrollment token with the API (" code { "POST /v1/users/NAME/tokens" } ") or create the user with " code { "warden user create" } ", and hand it over out of band." }
            form.create-user method="post" action="/ui/users" {
                (csrf(&console))
                label for="u-name" { "Name (a-z 0-9 . _ -)" } input id="u-name" name="name" required;
                label for="u-roles" { "Roles (comma separated)" } input id="u-roles" name="roles";
                button type="submit" { "Create" }
            }
        }
        h2 { "Custom roles" }
        ul.roles {
            @for r in list(&roles.body) {
                li { (text(&r, "name")) }
            }
        }
    };
    page(&ui, &console, "Users and roles", body).into_response()
}

async fn create_user(State(ui): State<UiState>, posted: Posted) -> Response {
    let console = &posted.console;
    let f = &posted.form;
    let roles: Vec<&str> = f
        .text("roles")
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    let body = serde_json::json!({ "name": f.text("name"), "roles": roles });
    let reply = ui.api.post(&console.caller, "/v1/users", &body).await;
    if !reply.ok() {
        return api_error(&ui, console, &reply);
    }
    Redirect::to("/ui/users").into_response()
}

async fn change_user(
    State(ui): State<UiState>,
    Path((name, change)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let console = &posted.console;
    let change = match change.as_str() {
        "enable" | "disable" => change,
        _ => return (axum::http::StatusCode::NOT_FOUND, "not found").into_response(),
    };
    let uri = format!("/v1/users/{}/{change}", enc(&name));
    let reply = ui
        .api
        .post(&console.caller, &uri, &serde_json::json!({}))
        .await;
    if !reply.ok() {
        return api_error(&ui, console, &reply);
    }
    Redirect::to("/ui/users").into_response()
}

async fn tokens(State(ui): State<UiState>, console: Console) -> Response {
    let uri = format!("/v1/users/{}/tokens", enc(&console.caller.user.name));
    let reply = ui.api.get(&console.caller, &uri).await;
    if !reply.ok() {
        return api_error(&ui, &console, &reply);
    }
    let current = console.caller.token.id.clone();
    let body = html! {
        p.hint { "Mint a token with " code { "warden token create" } ". Revoking the token this session was opened with signs you out." }
        table.tokens {
            thead { tr { th scope="col" { "Token" } th scope="col" { "Label" } th scope="col" { "Kind" } th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "" } } }
            tbody {
                @for t in list(&reply.body) {
                    @let id = text(&t, "id");
                    tr {
                        td { code { (id) } @if id == current { " (this session)" } }
                        td { (text(&t, "label")) }
                        td { (text(&t, "kind")) }
                        td { (time(t["created_ms"].as_u64().unwrap_or(0))) }
                        td { (time_opt(t["expires_ms"].as_u64())) }
                        td {
                            form method="post" action={ "/ui/tokens/" (enc(id)) "/revoke" } {
                                (csrf(&console))
                                button.danger type="submit" aria-label={ "Revoke token " (id) } { "Revoke" }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&ui, &console, "My API tokens", body).into_response()
}

async fn revoke(State(ui): State<UiState>, Path(id): Path<String>, posted: Posted) -> Response {
    let console = &posted.console;
    let uri = format!("/v1/tokens/{}", enc(&id));
    let reply = ui
        .api
        .call(&console.caller, Method::DELETE, &uri, None)
        .await;
    if !reply.ok() {
        return api_error(&ui, console, &reply);
    }
    Redirect::to("/ui/tokens").into_response()
}

async fn bridges(State(ui): State<UiState>, console: Console) -> Response {
    let reply = ui.api.get(&console.caller, "/v1/bridges").await;
    if !reply.ok() {
        return api_error(&ui, &console, &reply);
    }
    let body = html! {
        @if list(&reply.body).is_empty() { p.empty { "No remote bridge is enrolled; the embedded one serves every zone it is given." } }
        table.bridges {
            thead { tr { th scope="col" { "Bridge" } th scope="col" { "Zone" } th scope="col" { "Version" } th scope="col" { "Last seen" } th scope="col" { "State" } th scope="col" { "Runs in flight" } } }
            tbody {
                @for b in list(&reply.body) {
                    tr {
                        td { (text(&b, "name")) }
                        td { (text(&b, "zone")) }
                        td { (text(&b, "version")) }
                        td { (time_opt(b["last_seen_ms"].as_u64())) }
                        td { @if b["revoked"] == true { "revoked" } @else if b["online"] == true { "online" } @else { "offline" } }
                        td { (b["runs_in_flight"].as_u64().unwrap_or(0)) }
                    }
                }
            }
        }
    };
    page(&ui, &console, "Bridges", body).into_response()
}
