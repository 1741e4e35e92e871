//! Processes: the list the user may view, and a process's page with the start-a-run form,
//! generated from the signed manifest's typed inputs, showing what the run may touch
//! (capabilities, targets, credentials by name, commands, paths) before it starts.
//!
//! The form's values are typed per the manifest and sent to `POST /v1/processes/{id}/runs`,
//! so the API's own validation decides (a value that does not parse as its type is sent as
//! text, and the API refuses it with its message). The manifest is read from the module
//! store only after the API has let the user view the process (its inputs and capabilities
//! are what the user is about to run; an operator who may not read modules sees no more).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::api_error;
use crate::registry::manifest::{InputKind, InputSpec, Manifest};
use crate::ui::UiState;
use crate::ui::api::enc;
use crate::ui::auth::{Console, Form, Posted};
use crate::ui::layout::{csrf, error, page, time};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route(
            "/ui/processes",
            get(list).post(super::process_admin::create),
        )
        .route("/ui/processes/{id}", get(show))
        .route("/ui/processes/{id}/start", post(start))
}

async fn list(State(ui): State<UiState>, console: Console) -> Response {
    let reply = ui.api.get(&console.caller, "/v1/processes").await;
    if !reply.ok() {
        return api_error(&ui, &console, &reply);
    }
    let processes = reply.body.as_array().cloned().unwrap_or_default();
    let create = super::process_admin::create_form(&ui, &console).await;
    let body = html! {
        @if processes.is_empty() {
            p.empty { "No process is shared with you." }
        } @else {
            table.processes {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Description" } th scope="col" { "Module" } th scope="col" { "Owner" } th scope="col" { "Approvals" } th scope="col" { "Updated" } } }
                tbody {
                    @for p in &processes {
                        tr {
                            td { a href={ "/ui/processes/" (enc(p["id"].as_str().unwrap_or(""))) } { (p["name"].as_str().unwrap_or("")) } }
                            td { (p["description"].as_str().unwrap_or("")) }
                            td { code { (p["module"].as_str().unwrap_or("")) } }
                            td { (p["owner"].as_str().unwrap_or("")) }
                            td { (p["required_approvals"].as_u64().unwrap_or(0)) }
                            td { (time(p["updated_ms"].as_u64().unwrap_or(0))) }
                        }
                    }
                }
            }
        }
        (create)
    };
    page(&ui, &console, "Processes", body).into_response()
}

async fn show(State(ui): State<UiState>, console: Console, Path(id): Path<String>) -> Response {
    process_page(&ui, &console, &id, None).await
}

/// The manifest of the module a visible process runs.
fn manifest_of(ui: &UiState, process: &Value) -> Option<Manifest> {
    let digest = process["module_digest"].as_str()?;
    ui.app
        .modules
        .get(digest)
        .ok()
        .flatten()
        .map(|m| m.manifest)
}

async fn process_page(
    ui: &UiState,
    console: &Console,
    id: &str,
    failed: Option<(StatusCode, String)>,
) -> Response {
    let reply = ui
        .api
        .get(&console.caller, &format!("/v1/processes/{}", enc(id)))
        .await;
    if !reply.ok() {
        return api_error(ui, console, &reply);
    }
    let p = &reply.body;
    let manifest = manifest_of(ui, p);
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    let grant = &p["grant"];
    let manage = super::process_admin::manage_section(ui, console, id, p).await;
    let body = html! {
        p.description { (p["description"].as_str().unwrap_or("")) }
        dl {
            dt { "Module" } dd { code { (p["module"].as_str().unwrap_or("")) } " " code.digest { (p["module_digest"].as_str().unwrap_or("")) } }
            dt { "Owner" } dd { (p["owner"].as_str().unwrap_or("")) }
            dt { "Approvals required" } dd { (p["required_approvals"].as_u64().unwrap_or(0)) }
        }
        section aria-labelledby="h-touch" {
            h2 id="h-touch" { "What a run may touch" }
            dl.touch {
                dt { "Capabilities" }
                dd id="capabilities" { @if let Some(m) = &manifest { (m.capabilities.join(", ")) } }
                dt { "Targets" } dd id="targets" { (names(&grant["targets"]).join(", ")) }
                dt { "Credentials" } dd id="credentials" { (names(&grant["credentials"]).join(", ")) }
                dt { "Rotates" } dd { (names(&grant["rotations"]).join(", ")) }
                dt { "Commands" } dd { (names(&grant["commands"]).join(" · ")) }
                dt { "Paths" } dd { (names(&grant["paths"]).join(", ")) }
            }
        }
        section aria-labelledby="h-start" {
            h2 id="h-start" { "Start a run" }
            @if let Some((_, message)) = &failed { (error(message)) }
            form.start method="post" action={ "/ui/processes/" (enc(id)) "/start" } {
                (csrf(console))
                @if let Some(m) = &manifest {
                    @for (name, spec) in &m.inputs {
                        (input_field(name, spec, &p["default_inputs"][name.as_str()]))
                    }
                }
                button type="submit" { "Start" }
            }
        }
        (manage)
    };
    let status = failed.map_or(StatusCode::OK, |(s, _)| s);
    let title = p["name"].as_str().unwrap_or("Process");
    (status, page(ui, console, title, body)).into_response()
}

fn input_field(name: &str, spec: &InputSpec, process_default: &Value) -> Markup {
    let field = format!("in.{name}");
    let dom_id = format!("in-{name}");
    let default = match process_default {
        Value::Null => spec.default.as_ref().map(|d| d.to_string()),
        other => Some(other.to_string()),
    };
    let placeholder = default.map(|d| format!("default: {d}")).unwrap_or_default();
    let required = spec.required && spec.default.is_none() && process_default.is_null();
    html! {
        div.field {
            label for=(dom_id) { (name) @if required { " *" } }
            @match spec.kind {
                InputKind::String => input id=(dom_id) name=(field) type="text" placeholder=(placeholder) required[required];,
                InputKind::Int => input id=(dom_id) name=(field) type="number" step="1" placeholder=(placeholder) required[required];,
                InputKind::Float => input id=(dom_id) name=(field) type="number" step="any" placeholder=(placeholder) required[required];,
                InputKind::Bool => select id=(dom_id) name=(field) {
                    option value="" { (if placeholder.is_empty() { "(not set)".to_string() } else { placeholder.clone() }) }
                    option value="true" { "true" }
                    option value="false" { "false" }
                },
                InputKind::StringList => textarea id=(dom_id) name=(field) rows="3" placeholder=(placeholder) {},
            }
            @if !spec.description.is_empty() { p.hint { (spec.description) } }
        }
    }
}

/// The form's inputs typed per the manifest; an empty field is left out (the process's or
/// the manifest's default applies). A value that does not parse goes as text, for the API
/// to refuse with its own message.
pub fn typed_inputs(manifest: Option<&Manifest>, form: &Form) -> serde_json::Map<String, Value> {
    let mut inputs = serde_json::Map::new();
    for (key, value) in &form.0 {
        let Some(name) = key.strip_prefix("in.") else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        let kind = manifest.and_then(|m| m.inputs.get(name)).map(|s| s.kind);
        let typed = match kind {
            Some(InputKind::Int) => value
                .trim()
                .parse::<i64>()
                .map_or_else(|_| json!(value), |n| json!(n)),
            Some(InputKind::Float) => value
                .trim()
                .parse::<f64>()
                .map_or_else(|_| json!(value), |n| json!(n)),
            Some(InputKind::Bool) => match value.as_str() {
                "true" => json!(true),
                "false" => json!(false),
                other => json!(other),
            },
            Some(InputKind::StringList) => json!(
                value
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
            ),
            Some(InputKind::String) | None => json!(value),
        };
        inputs.insert(name.to_string(), typed);
    }
    inputs
}

async fn start(State(ui): State<UiState>, Path(id): Path<String>, posted: Posted) -> Response {
    let console = posted.console;
    let process = ui
        .api
        .get(&console.caller, &format!("/v1/processes/{}", enc(&id)))
        .await;
    if !process.ok() {
        return api_error(&ui, &console, &process);
    }
    let manifest = manifest_of(&ui, &process.body);
    let inputs = typed_inputs(manifest.as_ref(), &posted.form);
    let uri = format!("/v1/processes/{}/runs", enc(&id));
    let reply = ui
        .api
        .post(&console.caller, &uri, &json!({ "inputs": inputs }))
        .await;
    match reply.body["id"].as_str() {
        Some(run) if reply.ok() => Redirect::to(&format!("/ui/runs/{}", enc(run))).into_response(),
        _ => {
            let failed = (reply.status, reply.error_message());
            process_page(&ui, &console, &id, Some(failed)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_inputs_per_the_manifest_and_leaves_bad_values_to_the_api() {
        let manifest = Manifest::parse(
            "name = \"t\"\nversion = \"1\"\ncapabilities = [\"params\"]\n\
             [inputs.s]\ntype = \"string\"\n[inputs.n]\ntype = \"int\"\n\
             [inputs.f]\ntype = \"float\"\n[inputs.b]\ntype = \"bool\"\n\
             [inputs.l]\ntype = \"string-list\"\n",
        )
        .unwrap();
        let form = Form(
            [
                ("_csrf", "x"),
                ("in.s", "<b>hi</b>"),
                ("in.n", "42"),
                ("in.f", "2.5"),
                ("in.b", "false"),
                ("in.l", "a\r\n\r\nb \n"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let typed = typed_inputs(Some(&manifest), &form);
        assert_eq!(
            Value::Object(typed),
            json!({"s": "<b>hi</b>", "n": 42, "f": 2.5, "b": false, "l": ["a", "b"]})
        );
        let bad = Form(vec![
            ("in.n".into(), "4x".into()),
            ("in.s".into(), String::new()),
        ]);
        assert_eq!(
            Value::Object(typed_inputs(Some(&manifest), &bad)),
            json!({"n": "4x"})
        );
    }
}
