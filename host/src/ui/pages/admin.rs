//! Users: the list (create a user, disable or enable one) and minting a user's token — an
//! enrollment token for another user (good only for them to mint their own), shown once on
//! the page that answers the post (`tokens.rs`). Each the API's answer for the signed-in
//! user, shown only in the navigation of those the policies let read it.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde_json::Value;

use super::api_error;
use crate::ui::UiState;
use crate::ui::api::enc;
use crate::ui::auth::{Console, Posted};
use crate::ui::layout::{csrf, page, time};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/users", get(users).post(create_user))
        .route("/ui/users/{name}/{change}", post(change_user))
        .route("/ui/users/tokens", post(super::tokens::mint_for_user))
}

fn list(body: &Value) -> Vec<Value> {
    body.as_array().cloned().unwrap_or_default()
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or("")
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
            p.hint { "Then mint the new user's enrollment token below (shown once) and hand it over out of band; they redeem it for their own token." }
            form.create-user method="post" action="/ui/users" {
                (csrf(&console))
                label for="u-name" { "Name (a-z 0-9 . _ -)" } input id="u-name" name="name" required;
                label for="u-roles" { "Roles (comma separated)" } input id="u-roles" name="roles" list="role-names";
                datalist id="role-names" {
                    @for r in list(&roles.body) { option value=(text(&r, "name")) {} }
                }
                button type="submit" { "Create" }
            }
        }
        section aria-labelledby="h-mint" {
            h2 id="h-mint" { "Mint an enrollment token" }
            p.hint { "Good only for that user to mint their own token; shown once, on the next page." }
            form.mint-user method="post" action="/ui/users/tokens" {
                (csrf(&console))
                label for="e-user" { "User" }
                select id="e-user" name="user" required {
                    @for u in list(&users.body).iter().filter(|u| !u["deleted_ms"].is_u64()) {
                        option value=(text(u, "name")) { (text(u, "name")) }
                    }
                }
                label for="e-label" { "Label" } input id="e-label" name="label";
                button type="submit" { "Mint" }
            }
        }
        p { a href="/ui/roles" { "Custom roles →" } }
    };
    page(&ui, &console, "Users", body).into_response()
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
