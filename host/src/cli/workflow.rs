//! The CLI's part in workflows: reading a definition file (JSON, or TOML by its extension) for
//! `warden process create --workflow FILE`, and printing a workflow run as its step tree for
//! `warden run get`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::workflow::Workflow;

/// The definition in `file` as JSON (TOML for a `.toml` file), checked for shape once its
/// module names are digests (the server validates it against the registry).
pub(super) fn read_definition(file: &Path, modules: &Value) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let raw: Value = if file.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
    } else {
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
    };
    let resolved = with_module_digests(raw, modules)?;
    let workflow = Workflow::from_json(&serde_json::to_vec(&resolved)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok(serde_json::to_value(workflow)?)
}

/// `definition` with every task's `module` that names a module (`name` or `name@version`)
/// replaced by the digest of the one active module of that name in `modules` (the server's
/// `GET /v1/modules`). A digest stays as it is; an unknown or ambiguous name is an error.
pub(super) fn with_module_digests(mut definition: Value, modules: &Value) -> anyhow::Result<Value> {
    let active: Vec<(&str, &str, &str)> = modules
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["retired"] != true)
        .filter_map(|m| {
            Some((
                m["name"].as_str()?,
                m["version"].as_str()?,
                m["digest"].as_str()?,
            ))
        })
        .collect();
    let mut error = None;
    replace_modules(&mut definition, &mut |name: &str| {
        let (module, version) = match name.split_once('@') {
            Some((m, v)) => (m, Some(v)),
            None => (name, None),
        };
        let found: Vec<&str> = active
            .iter()
            .filter(|(m, v, _)| *m == module && version.is_none_or(|want| want == *v))
            .map(|(_, _, d)| *d)
            .collect();
        match found.as_slice() {
            [one] => Some(one.to_string()),
            [] => {
                error = Some(format!("no active module {name} on the server"));
                None
            }
            _ => {
                error = Some(format!(
                    "several active versions of {name}: name one as {module}@VERSION"
                ));
                None
            }
        }
    });
    match error {
        Some(e) => Err(anyhow::anyhow!(e)),
        None => Ok(definition),
    }
}

fn replace_modules(value: &mut Value, lookup: &mut dyn FnMut(&str) -> Option<String>) {
    match value {
        Value::Object(map) => {
            let is_task = map.get("type").and_then(Value::as_str) == Some("task");
            if let (true, Some(Value::String(module))) = (is_task, map.get_mut("module"))
                && !crate::runs::is_sha256_hex(module)
                && let Some(digest) = lookup(module)
            {
                *module = digest;
            }
            for child in map.values_mut() {
                replace_modules(child, lookup);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| replace_modules(v, lookup)),
        _ => {}
    }
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
