//! The CLI's part in workflows: reading a definition file (JSON, or TOML by its extension) for
//! `warden process create --workflow FILE`, and printing a workflow run as its step tree for
//! `warden run get`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::workflow::Workflow;

/// The definition in `file` as JSON, parsed and checked for shape (the server validates it
/// against the registry).
pub(super) fn read_definition(file: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let is_toml = file.extension().is_some_and(|e| e == "toml");
    let workflow = if is_toml {
        Workflow::from_toml(&text)
    } else {
        Workflow::from_json(text.as_bytes())
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok(serde_json::to_value(workflow)?)
}

/// A workflow run as text: its state, then one line per step (indented by depth) with its
/// status, attempts and step runs, error or output.
pub(super) fn step_tree(run: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {} {} (attempt {})",
        run["id"].as_str().unwrap_or("?"),
        run["state"].as_str().unwrap_or("?"),
        run["workflow"]["attempt"].as_u64().unwrap_or(1)
    );
    if let Some(error) = run["error"].as_str() {
        let _ = writeln!(out, "  error: {error}");
    }
    let Some(steps) = run["workflow"]["steps"].as_object() else {
        return out;
    };
    let mut ordered: Vec<(&String, &Value)> = steps.iter().collect();
    ordered.sort_by_key(|(path, step)| (step["started_ms"].as_u64().unwrap_or(0), path.as_str()));
    for (path, step) in ordered {
        let depth = path.matches('/').count();
        let indent = "  ".repeat(depth + 1);
        let _ = write!(
            out,
            "{indent}{path} [{}] {}",
            step["kind"].as_str().unwrap_or("?"),
            step["status"].as_str().unwrap_or("?")
        );
        if let Some(attempts) = step["attempts"].as_array() {
            let runs: Vec<String> = attempts
                .iter()
                .map(|a| {
                    format!(
                        "{} {} ({} host calls)",
                        a["run_id"].as_str().unwrap_or("?"),
                        a["state"].as_str().unwrap_or("?"),
                        a["host_calls"].as_u64().unwrap_or(0)
                    )
                })
                .collect();
            let _ = write!(out, "; attempts: {}", runs.join(", "));
        }
        if let Some(next) = step["next"].as_str() {
            let _ = write!(out, " -> {next}");
        }
        if let Some(error) = step.get("error").filter(|e| !e.is_null()) {
            let _ = write!(
                out,
                "; error {}: {}",
                error["kind"].as_str().unwrap_or("?"),
                error["message"].as_str().unwrap_or("")
            );
        }
        if let Some(output) = step.get("output").filter(|o| !o.is_null()) {
            let text = output.to_string();
            let shown: String = text.chars().take(120).collect();
            let _ = write!(out, "; output {shown}");
        }
        out.push('\n');
    }
    out
}
