//! Managing processes: create one from a module (name, description, grant, approvals),
//! share it with users and roles, and add or delete its cron schedules — each form a call to
//! the API (`POST /v1/processes`, `/share`, `/schedules`), which checks the grant against
//! what the user may use and audits the change.
//!
//! Editing a process (`PUT /v1/processes/{id}`) replaces its whole definition, so the edit
//! form carries every field, prefilled; the API bumps the revision, so approvals given to a
//! run of the old definition stop counting.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use maud::{Markup, html};
use serde_json::{Value, json};

use crate::policy::Action;
use crate::ui::UiState;
use crate::ui::api::enc;
use crate::ui::auth::{Console, Form, Posted};
use crate::ui::layout::{csrf, page, time_opt};

/// (`POST /ui/processes`, [`create`], is routed beside the list in `processes.rs`.)
pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/processes/{id}/share", post(share))
        .route("/ui/processes/{id}/edit", post(edit))
        .route("/ui/processes/{id}/schedules", post(add_schedule))
        .route(
            "/ui/processes/{id}/schedules/{schedule}/delete",
            post(delete_schedule),
        )
}

/// Comma- or line-separated names, trimmed, empty ones dropped.
fn names(text: &str) -> Vec<String> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Lines, trimmed, empty ones dropped (command and path patterns may hold commas).
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The "create a process" form, for those the policies let manage processes.
pub async fn create_form(ui: &UiState, console: &Console) -> Markup {
    if !ui.may(console, Action::ManageProcess) {
        return html! {};
    }
    let modules = ui.api.get(&console.caller, "/v1/modules").await;
    let modules = modules.body.as_array().cloned().unwrap_or_default();
    html! {
        section aria-labelledby="h-create" {
            h2 id="h-create" { "Create a process" }
            form.create method="post" action="/ui/processes" {
                (csrf(console))
                (definition_fields(&modules, &Value::Null))
                button type="submit" { "Create" }
            }
        }
    }
}

/// The fields of a process's definition, prefilled from `p` (`Null` for a new one).
fn definition_fields(modules: &[Value], p: &Value) -> Markup {
    let grant = &p["grant"];
    let joined = |v: &Value, sep: &str| {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(sep)
    };
    let current = p["module_digest"].as_str().unwrap_or("");
    let defaults = match &p["default_inputs"] {
        Value::Null => "{}".to_string(),
        v => v.to_string(),
    };
    html! {
        label for="p-name" { "Name (A-Z a-z 0-9 . _ -)" } input id="p-name" name="name" required value=(p["name"].as_str().unwrap_or(""));
        label for="p-description" { "Description" } input id="p-description" name="description" value=(p["description"].as_str().unwrap_or(""));
        label for="p-module" { "Module" }
        select id="p-module" name="module_digest" required {
            @for m in modules.iter().filter(|m| m["retired"] != true) {
                @let digest = m["digest"].as_str().unwrap_or("");
                option value=(digest) selected[digest == current] {
                    (m["name"].as_str().unwrap_or("")) "@" (m["version"].as_str().unwrap_or(""))
                    " (" (m["publisher"].as_str().unwrap_or("")) ")"
                }
            }
        }
        label for="p-targets" { "Targets (comma separated)" } input id="p-targets" name="targets" value=(joined(&grant["targets"], ", "));
        label for="p-credentials" { "Credentials (comma separated)" } input id="p-credentials" name="credentials" value=(joined(&grant["credentials"], ", "));
        label for="p-commands" { "Command patterns (one per line)" } textarea id="p-commands" name="commands" rows="2" { (joined(&grant["commands"], "\n")) }
        label for="p-paths" { "Path patterns (one per line)" } textarea id="p-paths" name="paths" rows="2" { (joined(&grant["paths"], "\n")) }
        label for="p-defaults" { "Default inputs (a JSON object)" } textarea id="p-defaults" name="default_inputs" rows="2" { (defaults) }
        label for="p-approvals" { "Approvals required" } input id="p-approvals" name="required_approvals" type="number" min="0" value=(p["required_approvals"].as_u64().unwrap_or(0));
        label for="p-retry" { input id="p-retry" name="retry_on_lost" type="checkbox" value="true" checked[p["retry_on_lost"] == true]; " Start again when a remote bridge loses a run (only for tasks safe to repeat)" }
    }
}

/// Sharing and schedules of a process, on its page, for those who may manage processes.
pub async fn manage_section(ui: &UiState, console: &Console, id: &str, p: &Value) -> Markup {
    let schedules = ui
        .api
        .get(
            &console.caller,
            &format!("/v1/processes/{}/schedules", enc(id)),
        )
        .await;
    let schedules = schedules.body.as_array().cloned().unwrap_or_default();
    let manage = ui.may(console, Action::ManageProcess);
    let modules = match manage {
        true => ui.api.get(&console.caller, "/v1/modules").await.body,
        false => Value::Null,
    };
    let modules = modules.as_array().cloned().unwrap_or_default();
    let joined = |v: &Value| {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    html! {
        section aria-labelledby="h-schedules" {
            h2 id="h-schedules" { "Schedules" }
            @if schedules.is_empty() { p.empty { "None." } }
            @else {
                table.schedules {
                    thead { tr { th scope="col" { "Cron (UTC)" } th scope="col" { "Catch up" } th scope="col" { "By" } th scope="col" { "Last fired" } @if manage { th scope="col" { "" } } } }
                    tbody {
                        @for s in &schedules {
                            tr {
                                td { code { (s["cron"].as_str().unwrap_or("")) } }
                                td { (if s["catch_up"] == true { "yes" } else { "no" }) }
                                td { (s["created_by"].as_str().unwrap_or("")) }
                                td { (time_opt(s["last_fired_ms"].as_u64())) }
                                @if manage {
                                    td {
                                        form method="post" action={ "/ui/processes/" (enc(id)) "/schedules/" (enc(s["id"].as_str().unwrap_or(""))) "/delete" } {
                                            (csrf(console))
                                            button.danger type="submit" { "Delete" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if manage {
                form.schedule method="post" action={ "/ui/processes/" (enc(id)) "/schedules" } {
                    (csrf(console))
                    label for="s-cron" { "Cron (5 fields, or 6 with seconds; UTC)" } input id="s-cron" name="cron" required placeholder="0 3 * * *";
                    label for="s-inputs" { "Inputs (a JSON object)" } textarea id="s-inputs" name="inputs" rows="2" { "{}" }
                    label for="s-catch" { input id="s-catch" name="catch_up" type="checkbox" value="true" checked; " Catch up a missed occurrence at start" }
                    button type="submit" { "Add schedule" }
                }
            }
        }
        @if manage {
            section aria-labelledby="h-edit" {
                h2 id="h-edit" { "Edit the definition" }
                details {
                    summary { "Edit" }
                    form.edit method="post" action={ "/ui/processes/" (enc(id)) "/edit" } {
                        (csrf(console))
                        (definition_fields(&modules, p))
                        button type="submit" { "Save" }
                    }
                }
            }
            section aria-labelledby="h-share" {
                h2 id="h-share" { "Sharing" }
                p { "Shared with users: " (joined(&p["shared_users"])) "; roles: " (joined(&p["shared_roles"])) }
                form.share method="post" action={ "/ui/processes/" (enc(id)) "/share" } {
                    (csrf(console))
                    label for="sh-users" { "Share with users (comma separated)" } input id="sh-users" name="users";
                    label for="sh-roles" { "Share with roles (comma separated)" } input id="sh-roles" name="roles";
                    button type="submit" { "Share" }
                }
            }
        }
    }
}

/// The API's refusal as a page, or back to `to`.
fn answer(ui: &UiState, console: &Console, reply: &crate::ui::api::Reply, to: &str) -> Response {
    if reply.ok() {
        return Redirect::to(to).into_response();
    }
    let body = crate::ui::layout::error(&reply.error_message());
    (reply.status, page(ui, console, "Not done", body)).into_response()
}

fn process_body(f: &Form) -> Value {
    json!({
        "name": f.text("name"),
        "description": f.text("description"),
        "module_digest": f.text("module_digest"),
        "grant": {
            "targets": names(f.text("targets")),
            "credentials": names(f.text("credentials")),
            "commands": lines(f.text("commands")),
            "paths": lines(f.text("paths")),
        },
        "required_approvals": f.text("required_approvals").trim().parse::<u32>().unwrap_or(0),
        // Defaults that are not JSON go as text, for the API to refuse.
        "default_inputs": match f.text("default_inputs").trim() {
            "" => json!({}),
            text => serde_json::from_str(text).unwrap_or_else(|_| json!(text)),
        },
        "retry_on_lost": f.text("retry_on_lost") == "true",
    })
}

pub(super) async fn create(State(ui): State<UiState>, posted: Posted) -> Response {
    let console = &posted.console;
    let reply = ui
        .api
        .post(
            &console.caller,
            "/v1/processes",
            &process_body(&posted.form),
        )
        .await;
    let to = format!(
        "/ui/processes/{}",
        enc(reply.body["id"].as_str().unwrap_or(""))
    );
    answer(&ui, console, &reply, &to)
}

async fn edit(State(ui): State<UiState>, Path(id): Path<String>, posted: Posted) -> Response {
    let console = &posted.console;
    let uri = format!("/v1/processes/{}", enc(&id));
    let mut body = process_body(&posted.form);
    // What the form does not show (rotations, raw shell, the rotation policy) stays as it is.
    let current = ui.api.get(&console.caller, &uri).await;
    if !current.ok() {
        return answer(&ui, console, &current, "");
    }
    if let (Some(old), Some(new)) = (
        current.body["grant"].as_object(),
        body["grant"].as_object_mut(),
    ) {
        for (field, value) in old {
            new.entry(field.clone()).or_insert_with(|| value.clone());
        }
    }
    let reply = ui
        .api
        .call(&console.caller, Method::PUT, &uri, Some(&body))
        .await;
    answer(&ui, console, &reply, &uri.replacen("/v1/", "/ui/", 1))
}

async fn share(State(ui): State<UiState>, Path(id): Path<String>, posted: Posted) -> Response {
    let console = &posted.console;
    let f = &posted.form;
    let body = json!({ "users": names(f.text("users")), "roles": names(f.text("roles")) });
    let uri = format!("/v1/processes/{}/share", enc(&id));
    let reply = ui.api.post(&console.caller, &uri, &body).await;
    answer(&ui, console, &reply, &format!("/ui/processes/{}", enc(&id)))
}

async fn add_schedule(
    State(ui): State<UiState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Response {
    let console = &posted.console;
    let f = &posted.form;
    // Inputs that are not a JSON object go as they are, for the API to refuse.
    let inputs = match f.text("inputs").trim() {
        "" => json!({}),
        text => serde_json::from_str(text).unwrap_or_else(|_| json!(text)),
    };
    let body = json!({ "cron": f.text("cron"), "inputs": inputs, "catch_up": f.text("catch_up") == "true" });
    let uri = format!("/v1/processes/{}/schedules", enc(&id));
    let reply = ui.api.post(&console.caller, &uri, &body).await;
    answer(&ui, console, &reply, &format!("/ui/processes/{}", enc(&id)))
}

async fn delete_schedule(
    State(ui): State<UiState>,
    Path((id, schedule)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let console = &posted.console;
    let uri = format!("/v1/processes/{}/schedules/{}", enc(&id), enc(&schedule));
    let reply = ui
        .api
        .call(&console.caller, Method::DELETE, &uri, None)
        .await;
    answer(&ui, console, &reply, &format!("/ui/processes/{}", enc(&id)))
}
