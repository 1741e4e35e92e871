use serde_json::json;

use super::*;
use crate::registry::manifest::Manifest;

const MODULE: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn manifest() -> Manifest {
    Manifest::parse(
        r#"
name = "step"
version = "1.0.0"
capabilities = ["params"]
[inputs.user]
type = "string"
required = true
[inputs.note]
type = "string"
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn modules(digest: &str) -> Result<Manifest, String> {
    if digest == MODULE {
        Ok(manifest())
    } else {
        Err(format!("module {digest} is not in the registry"))
    }
}

fn check(definition: serde_json::Value) -> Result<(), Invalid> {
    let workflow: Workflow =
        serde_json::from_value(definition).unwrap_or_else(|e| panic!("parse: {e}"));
    validate(&workflow, &modules)
}

fn task(extra: serde_json::Value) -> serde_json::Value {
    let mut t = json!({"type": "task", "module": MODULE, "inputs": {"user.$": "$.inputs.user"}});
    if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
        t.extend(extra.clone());
    }
    t
}

fn wf(states: serde_json::Value) -> serde_json::Value {
    json!({"inputs": {"user": {"type": "string", "required": true}}, "start_at": "a", "states": states})
}

fn refused(definition: serde_json::Value, state: &str, why: &str) {
    match check(definition) {
        Err(e) => {
            assert_eq!(e.state, state, "{e}");
            assert!(e.why.contains(why), "{e}");
        }
        Ok(()) => panic!("accepted; expected a refusal at {state}: {why}"),
    }
}

#[test]
fn a_good_definition_with_every_state_passes() {
    let definition = wf(json!({
        "a": task(json!({"next": "pick"})),
        "pick": {"type": "choice", "choices": [
            {"when": {"variable": "$.steps.a.ok", "boolean_equals": true}, "next": "fan"}
        ], "default": "gate"},
        "fan": {"type": "parallel", "next": "each", "branches": [
            {"start_at": "x", "states": {"x": task(json!({"end": true}))}},
            {"start_at": "y", "states": {"y": task(json!({"end": true, "inputs": {"user.$": "$.steps.a.user"}}))}}
        ]},
        "each": {"type": "map", "items": "$.steps.a.hosts", "max_concurrency": 4, "tolerated_failures": 1,
            "iterator": {"start_at": "one", "states": {"one": task(json!({"end": true, "inputs": {"user.$": "$.item.name"}}))}},
            "next": "pause", "retry": [{"errors": ["*"], "max_attempts": 3}], "catch": [{"errors": ["branch-failed"], "next": "failed"}]},
        "pause": {"type": "wait", "seconds": 5, "next": "gate"},
        "gate": {"type": "approval", "approvals": 2, "timeout_seconds": 3600, "on_timeout": "failed", "next": "done"},
        "done": {"type": "succeed", "output": "$.steps.a"},
        "failed": {"type": "fail", "error": "gave-up", "cause": "see the steps"}
    }));
    assert_eq!(check(definition), Ok(()));
}

#[test]
fn dangling_references_are_refused_naming_the_state() {
    refused(
        wf(json!({"a": task(json!({"next": "nowhere"}))})),
        "a",
        "names no state",
    );
    refused(
        json!({"start_at": "zz", "states": {"a": task(json!({"end": true}))}}),
        "start_at",
        "start_at names no state",
    );
    refused(
        wf(
            json!({"a": {"type": "choice", "choices": [{"when": {"variable": "$.inputs.user", "exists": true}, "next": "b"}], "default": "c"},
                  "b": {"type": "succeed"}}),
        ),
        "a",
        "default names no state",
    );
    refused(
        wf(json!({"a": task(json!({"end": true, "catch": [{"errors": ["*"], "next": "gone"}]}))})),
        "a",
        "catch.next names no state",
    );
}

#[test]
fn unreachable_states_and_pause_free_loops_are_refused() {
    refused(
        wf(json!({"a": task(json!({"end": true})), "orphan": {"type": "succeed"}})),
        "orphan",
        "unreachable",
    );
    refused(
        wf(json!({"a": task(json!({"next": "b"})), "b": task(json!({"next": "a"}))})),
        "a",
        "loop with no wait or approval",
    );
    // A loop through a wait is fine.
    assert_eq!(
        check(wf(json!({
            "a": task(json!({"next": "check"})),
            "check": {"type": "choice", "choices": [{"when": {"variable": "$.steps.a.done", "boolean_equals": true}, "next": "end"}], "default": "later"},
            "later": {"type": "wait", "seconds": 60, "next": "a"},
            "end": {"type": "succeed"}
        }))),
        Ok(())
    );
    // A self-loop through a catch is a loop too.
    refused(
        wf(json!({"a": task(json!({"end": true, "catch": [{"errors": ["*"], "next": "a"}]}))})),
        "a",
        "loop",
    );
}

#[test]
fn modules_must_be_in_the_registry_and_mappings_must_point_somewhere() {
    let other = "b".repeat(64);
    refused(
        wf(json!({"a": task(json!({"end": true, "module": other}))})),
        "a",
        "not in the registry",
    );
    refused(
        wf(json!({"a": task(json!({"end": true, "module": "xyz"}))})),
        "a",
        "SHA-256",
    );
    refused(
        wf(json!({"a": task(json!({"end": true, "inputs": {"user.$": "$.inputs.nobody"}}))})),
        "a",
        "not a declared workflow input",
    );
    refused(
        wf(json!({"a": task(json!({"end": true, "inputs": {"user.$": "$.steps.later.x"}})),})),
        "a",
        "points nowhere",
    );
    // A step that only runs after this one cannot feed it.
    refused(
        wf(
            json!({"a": task(json!({"next": "b", "inputs": {"user.$": "$.steps.b.x"}})), "b": task(json!({"end": true}))}),
        ),
        "a",
        "points nowhere",
    );
    refused(
        wf(json!({"a": task(json!({"end": true, "inputs": {"user.$": "$.item"}}))})),
        "a",
        "only defined inside a map",
    );
    refused(
        wf(json!({"a": task(json!({"end": true, "inputs": {"user": "x", "colour": "red"}}))})),
        "a",
        "not declared by module step",
    );
    refused(
        wf(json!({"a": task(json!({"end": true, "inputs": {"note": "x"}}))})),
        "a",
        "requires input \"user\"",
    );
}

#[test]
fn nested_states_are_named_by_their_path() {
    refused(
        wf(json!({"a": {"type": "parallel", "end": true, "branches": [
            {"start_at": "x", "states": {"x": task(json!({"next": "ghost"}))}}
        ]}})),
        "a/0/x",
        "names no state",
    );
    refused(
        wf(
            json!({"a": {"type": "map", "items": "$.inputs.user", "end": true,
            "iterator": {"start_at": "x", "states": {"x": task(json!({"end": true, "inputs": {"user.$": "$.steps.y"}}))}}}}),
        ),
        "a/*/x",
        "points nowhere",
    );
}

#[test]
fn sizes_and_ranges_are_capped() {
    refused(
        wf(
            json!({"a": {"type": "wait", "seconds": MAX_WAIT_SECONDS + 1, "next": "b"}, "b": {"type": "succeed"}}),
        ),
        "a",
        "30 days",
    );
    refused(
        wf(json!({"a": {"type": "wait", "next": "b"}, "b": {"type": "succeed"}})),
        "a",
        "exactly one",
    );
    refused(
        wf(
            json!({"a": {"type": "approval", "approvals": 0, "timeout_seconds": 5, "next": "b"}, "b": {"type": "succeed"}}),
        ),
        "a",
        "approvals is 1",
    );
    refused(
        wf(
            json!({"a": {"type": "approval", "timeout_seconds": 0, "next": "b"}, "b": {"type": "succeed"}}),
        ),
        "a",
        "timeout_seconds",
    );
    refused(
        wf(
            json!({"a": task(json!({"end": true, "retry": [{"errors": ["*"], "max_attempts": 50}]}))}),
        ),
        "a",
        "max_attempts",
    );
    refused(
        wf(json!({"a": task(json!({"end": true, "retry": [{"errors": [], "max_attempts": 2}]}))})),
        "a",
        "retry.errors",
    );
    refused(
        wf(json!({"a": task(json!({"next": "b", "end": true})), "b": {"type": "succeed"}})),
        "a",
        "not both",
    );
    refused(wf(json!({"a": task(json!({}))})), "a", "needs `next`");
    refused(
        wf(
            json!({"a": {"type": "map", "items": "$.inputs.user", "max_concurrency": 0, "end": true,
            "iterator": {"start_at": "x", "states": {"x": {"type": "succeed"}}}}}),
        ),
        "a",
        "max_concurrency",
    );
    refused(
        wf(json!({"a": {"type": "fail", "error": "Bad Kind"}})),
        "a",
        "error is",
    );
    let mut states = serde_json::Map::new();
    for i in 0..=MAX_STATES {
        states.insert(format!("s{i}"), json!({"type": "succeed"}));
    }
    refused(
        json!({"start_at": "s0", "states": states}),
        "*",
        "over the limit",
    );
}
