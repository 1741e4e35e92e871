//! The step tree of a workflow run on its run page: one row per step (indented by depth) with
//! its type, status, attempts (each a link to its step run), where it went, its error or
//! output; and on a step run's page, the link back to its workflow run. Everything rendered
//! comes from the run record the API returned to this user, escaped.

use maud::{Markup, html};
use serde_json::Value;

use crate::ui::api::enc;
use crate::ui::layout::{state, time_opt};

/// Longest output shown per step; the whole record is on the API.
const SHOWN_OUTPUT: usize = 200;

/// The steps section of a workflow run, or nothing for another run.
pub fn step_tree(run: &Value) -> Markup {
    let Some(steps) = run["workflow"]["steps"].as_object() else {
        return html! {};
    };
    let mut ordered: Vec<(&String, &Value)> = steps.iter().collect();
    ordered.sort_by_key(|(path, step)| (step["started_ms"].as_u64().unwrap_or(0), path.as_str()));
    let gate = ordered
        .iter()
        .any(|(_, s)| s["status"] == "waiting" && s.get("gate").is_some_and(|g| !g.is_null()));
    let id = run["id"].as_str().unwrap_or("");
    html! {
        section aria-label="steps" {
            h2 { "Steps" }
            p { "Attempt " (run["workflow"]["attempt"].as_u64().unwrap_or(1)) " of this run." }
            @if gate {
                p { a href={ "/ui/approvals/" (enc(id)) } { "Waiting for approval: review the request" } }
            }
            table.steps {
                thead { tr {
                    th scope="col" { "Step" } th scope="col" { "Type" } th scope="col" { "Status" }
                    th scope="col" { "Step runs" } th scope="col" { "Finished" } th scope="col" { "Result" }
                } }
                tbody {
                    @for (path, step) in ordered {
                        (row(path, step))
                    }
                }
            }
        }
    }
}

fn row(path: &str, step: &Value) -> Markup {
    let depth = path.matches('/').count();
    let shown = match (
        step.get("error").filter(|e| !e.is_null()),
        step.get("output").filter(|o| !o.is_null()),
    ) {
        (Some(e), _) => format!(
            "{}: {}",
            e["kind"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        ),
        (None, Some(o)) => o.to_string(),
        (None, None) => String::new(),
    };
    let shown: String = shown.chars().take(SHOWN_OUTPUT).collect();
    html! {
        tr.step data-path=(path) {
            td { span class={ "depth-" (depth.min(6)) } { code { (path) } } }
            td { (step["kind"].as_str().unwrap_or("")) }
            td { (state(step["status"].as_str().unwrap_or(""))) }
            td {
                @for attempt in step["attempts"].as_array().into_iter().flatten() {
                    @let run = attempt["run_id"].as_str().unwrap_or("");
                    a href={ "/ui/runs/" (enc(run)) } { (attempt["state"].as_str().unwrap_or("")) }
                    " (" (attempt["host_calls"].as_u64().unwrap_or(0)) " host calls) "
                }
                @if let Some(next) = step["next"].as_str() { "→ " code { (next) } }
            }
            td { (time_opt(step["finished_ms"].as_u64())) }
            td { pre.step-output { (shown) } }
        }
    }
}

/// On a step run's page: which workflow run and step it belongs to.
pub fn parent_link(run: &Value) -> Markup {
    match (run["step"]["run"].as_str(), run["step"]["path"].as_str()) {
        (Some(parent), Some(path)) => html! {
            dt { "Workflow run" }
            dd { a href={ "/ui/runs/" (enc(parent)) } { code { (parent) } } " step " code { (path) } }
        },
        _ => html! {},
    }
}
