//! Custom roles: the list, creating one from the privileges a custom role can grant
//! (Manage Privileged Process, Execute Privileged Process, Approve Run) and the credentials
//! and targets its holders may name in grants, and replacing those credentials and targets.
//! A role is assigned by naming it when a user is created (the users page).
//!
//! Each action is one API call as the signed-in user (`POST /v1/roles`,
//! `PUT /v1/roles/{name}/grants`): the API checks `ManageUsers`, validates the privileges
//! and names, and audits it (`role.create`, `role.grants`); a refusal is its message.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde_json::{Value, json};

use super::api_error;
use crate::ui::UiState;
use crate::ui::api::enc;
use crate::ui::auth::{Console, Form, Posted};
use crate::ui::layout::{csrf, page, time};
use crate::users::PRIVILEGES;

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/roles", get(roles).post(create_role))
        .route("/ui/roles/{name}/grants", post(set_grants))
}

fn names(v: &Value, field: &str) -> String {
    v[field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A comma-separated field as a list of names.
fn list_field(form: &Form, name: &str) -> Vec<String> {
    form.text(name)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

async fn roles(State(ui): State<UiState>, console: Console) -> Response {
    let reply = ui.api.get(&console.caller, "/v1/roles").await;
    if !reply.ok() {
        return api_error(&ui, &console, &reply);
    }
    let body = html! {
        table.roles {
            thead { tr { th scope="col" { "Role" } th scope="col" { "Privileges" } th scope="col" { "Created" } th scope="col" { "Credentials and targets it grants" } } }
            tbody {
                @for r in reply.body.as_array().into_iter().flatten() {
                    @let name = r["name"].as_str().unwrap_or("");
                    tr {
                        td { (name) }
                        td { (names(r, "privileges")) }
                        td { (time(r["created_ms"].as_u64().unwrap_or(0))) }
                        td {
                            form.grants method="post" action={ "/ui/roles/" (enc(name)) "/grants" } {
                                (csrf(&console))
                                label for={ "g-cred-" (name) } { "Credentials" }
                                input id={ "g-cred-" (name) } name="credentials" value=(names(r, "credentials"));
                                label for={ "g-tgt-" (name) } { "Targets" }
                                input id={ "g-tgt-" (name) } name="targets" value=(names(r, "targets"));
                                button type="submit" aria-label={ "Save the grants of " (name) } { "Save" }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-new-role" {
            h2 id="h-new-role" { "Create a role" }
            form.create-role method="post" action="/ui/roles" {
                (csrf(&console))
                label for="r-name" { "Name (a-z 0-9 . _ -)" } input id="r-name" name="name" required;
                fieldset {
                    legend { "Privileges" }
                    @for p in PRIVILEGES {
                        @let id = format!("r-{}", p.as_str());
                        input id=(id) type="checkbox" name="privilege" value=(p.as_str());
                        label for=(id) { (p.as_str()) }
                    }
                }
                label for="r-credentials" { "Credentials it grants use of (comma separated)" }
                input id="r-credentials" name="credentials";
                label for="r-targets" { "Targets it grants use of (comma separated)" }
                input id="r-targets" name="targets";
                button type="submit" { "Create" }
            }
        }
    };
    page(&ui, &console, "Custom roles", body).into_response()
}

async fn create_role(State(ui): State<UiState>, posted: Posted) -> Response {
    let console = &posted.console;
    let f = &posted.form;
    let body = json!({
        "name": f.text("name").trim(),
        "privileges": f.all("privilege"),
        "credentials": list_field(f, "credentials"),
        "targets": list_field(f, "targets"),
    });
    let reply = ui.api.post(&console.caller, "/v1/roles", &body).await;
    if !reply.ok() {
        return api_error(&ui, console, &reply);
    }
    Redirect::to("/ui/roles").into_response()
}

async fn set_grants(
    State(ui): State<UiState>,
    Path(name): Path<String>,
    posted: Posted,
) -> Response {
    let console = &posted.console;
    let f = &posted.form;
    let body = json!({
        "credentials": list_field(f, "credentials"),
        "targets": list_field(f, "targets"),
    });
    let uri = format!("/v1/roles/{}/grants", enc(&name));
    let reply = ui
        .api
        .call(&console.caller, Method::PUT, &uri, Some(&body))
        .await;
    if !reply.ok() {
        return api_error(&ui, console, &reply);
    }
    Redirect::to("/ui/roles").into_response()
}
