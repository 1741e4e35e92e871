//! Validation of a workflow definition at process create and update: every rule a runnable
//! definition must meet, each refusal naming the state (by its path, `outer/0/inner`) and why.
//!
//! Threat: a definition that runs what nobody vetted or never ends. Refused here: a module not
//! in the registry or not signed by a trusted publisher, an input mapping that reads nothing
//! (an undeclared run input, a step that cannot have run yet, `$.item` outside a `map`) or
//! feeds a module an input it does not declare, a `next` that names no state, a state nothing
//! reaches, a loop with no `wait` or `approval` on it (it would spin), and sizes past the caps
//! in [`super::definition`]. Whether the author may grant each step's credentials and targets
//! is the API's check (it knows the caller), made on every step's grant.

use std::collections::{BTreeMap, BTreeSet};

use super::definition::*;
use super::expr::{Path, Root, check_condition};
use crate::registry::manifest::Manifest;
use crate::runs::is_sha256_hex;

/// A definition refused: the state at fault (its path) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("workflow state `{state}`: {why}")]
pub struct Invalid {
    pub state: String,
    pub why: String,
}

fn invalid(state: &str, why: impl Into<String>) -> Invalid {
    Invalid {
        state: state.to_string(),
        why: why.into(),
    }
}

/// The module a task names, as the registry answers: its signed manifest if it is present,
/// active and signed by a publisher trusted now; else why not.
pub type ModuleLookup<'a> = &'a dyn Fn(&str) -> Result<Manifest, String>;

/// Checks `workflow` against every rule of the module doc.
pub fn validate(workflow: &Workflow, modules: ModuleLookup<'_>) -> Result<(), Invalid> {
    let mut count = 0;
    workflow.walk("", &mut |_, _| count += 1);
    if count > MAX_STATES {
        return Err(invalid(
            "*",
            format!("{count} states, over the limit of {MAX_STATES}"),
        ));
    }
    let encoded = serde_json::to_vec(workflow).map_err(|e| invalid("*", e.to_string()))?;
    if encoded.len() > MAX_DEFINITION_BYTES {
        return Err(invalid(
            "*",
            format!("definition is over {MAX_DEFINITION_BYTES} bytes"),
        ));
    }
    for name in workflow.inputs.keys() {
        if !valid_state_name(name) {
            return Err(invalid(
                "inputs",
                format!("input name {name:?} is not valid"),
            ));
        }
    }
    let context = Context {
        inputs: &workflow.inputs,
        modules,
    };
    check_level(workflow, "", &Visible::default(), &context)
}

struct Context<'a> {
    inputs: &'a BTreeMap<String, crate::registry::manifest::InputSpec>,
    modules: ModuleLookup<'a>,
}

/// What paths may read inside one definition level: the steps of enclosing levels that ran
/// before it, and whether a `map` item exists.
#[derive(Clone, Default)]
struct Visible {
    steps: BTreeSet<String>,
    item: bool,
}

/// State names are path segments: `[A-Za-z0-9_-]{1,64}` (no `.`, `/` or `#`).
fn valid_state_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

fn check_level(
    level: &Workflow,
    prefix: &str,
    outer: &Visible,
    cx: &Context<'_>,
) -> Result<(), Invalid> {
    let here = |name: &str| join(prefix, name);
    if level.states.is_empty() {
        return Err(invalid(&here("*"), "a workflow needs at least one state"));
    }
    if !prefix.is_empty() && !level.inputs.is_empty() {
        return Err(invalid(
            prefix,
            "only the top-level workflow declares inputs",
        ));
    }
    if !level.states.contains_key(&level.start_at) {
        return Err(invalid(
            &here("start_at"),
            format!("start_at names no state: {:?}", level.start_at),
        ));
    }
    for (name, state) in &level.states {
        if !valid_state_name(name) {
            return Err(invalid(
                &here(name),
                "state names are 1-64 of A-Z a-z 0-9 _ -",
            ));
        }
        for (field, next) in state.successors() {
            if !level.states.contains_key(next) {
                return Err(invalid(
                    &here(name),
                    format!("{field} names no state in this branch: {next:?}"),
                ));
            }
        }
    }
    let graph = Graph::of(level);
    check_reachable(level, &graph, prefix)?;
    check_loops(level, &graph, prefix)?;
    for (name, state) in &level.states {
        let path = here(name);
        let visible = Visible {
            steps: outer
                .steps
                .iter()
                .cloned()
                .chain(graph.ancestors(name).into_iter().filter(|s| {
                    matches!(
                        level.states.get(s),
                        Some(State::Task(_) | State::Parallel(_) | State::Map(_))
                    )
                }))
                .collect(),
            item: outer.item,
        };
        check_state(state, &path, &visible, cx)?;
    }
    Ok(())
}

fn check_state(
    state: &State,
    path: &str,
    visible: &Visible,
    cx: &Context<'_>,
) -> Result<(), Invalid> {
    if let Some(t) = state.transition() {
        match (t.next, t.end) {
            (Some(_), true) => return Err(invalid(path, "give `next` or `end`, not both")),
            (None, false) => return Err(invalid(path, "needs `next` or `end: true`")),
            _ => {}
        }
    }
    check_rules(state, path)?;
    match state {
        State::Task(task) => check_task(task, path, visible, cx),
        State::Choice(choice) => {
            if choice.choices.is_empty() || choice.choices.len() > MAX_RULES {
                return Err(invalid(
                    path,
                    format!("a choice takes 1 to {MAX_RULES} rules"),
                ));
            }
            for rule in &choice.choices {
                let paths = check_condition(&rule.when).map_err(|why| invalid(path, why))?;
                for p in &paths {
                    check_path(p, path, visible, cx)?;
                }
            }
            Ok(())
        }
        State::Parallel(parallel) => {
            if parallel.branches.is_empty() || parallel.branches.len() > MAX_BRANCHES {
                return Err(invalid(
                    path,
                    format!("a parallel state takes 1 to {MAX_BRANCHES} branches"),
                ));
            }
            for (i, branch) in parallel.branches.iter().enumerate() {
                check_level(branch, &format!("{path}/{i}"), visible, cx)?;
            }
            Ok(())
        }
        State::Map(map) => {
            let items =
                Path::parse(&map.items).map_err(|why| invalid(path, format!("items: {why}")))?;
            check_path(&items, path, visible, cx)?;
            if map.max_concurrency == 0 || map.max_concurrency > MAX_MAP_CONCURRENCY {
                return Err(invalid(
                    path,
                    format!("max_concurrency is 1 to {MAX_MAP_CONCURRENCY}"),
                ));
            }
            if map.tolerated_failures.is_some() && map.tolerated_failure_percentage.is_some() {
                return Err(invalid(
                    path,
                    "give tolerated_failures or tolerated_failure_percentage, not both",
                ));
            }
            if let Some(p) = map.tolerated_failure_percentage
                && !(0.0..=100.0).contains(&p)
            {
                return Err(invalid(path, "tolerated_failure_percentage is 0 to 100"));
            }
            let inner = Visible {
                steps: visible.steps.clone(),
                item: true,
            };
            check_level(&map.iterator, &format!("{path}/*"), &inner, cx)
        }
        State::Wait(wait) => match (wait.seconds, wait.until_ms) {
            (Some(s), None) if s <= MAX_WAIT_SECONDS => Ok(()),
            (Some(_), None) => Err(invalid(
                path,
                format!("a wait lasts at most {MAX_WAIT_SECONDS} s (30 days)"),
            )),
            (None, Some(until)) => {
                let latest = crate::runs::now_ms().saturating_add(MAX_WAIT_SECONDS * 1000);
                if until > latest {
                    return Err(invalid(path, "until_ms is more than 30 days away"));
                }
                Ok(())
            }
            _ => Err(invalid(
                path,
                "a wait needs exactly one of `seconds` and `until_ms`",
            )),
        },
        State::Approval(gate) => {
            if gate.approvals == 0 || gate.approvals > MAX_GATE_APPROVALS {
                return Err(invalid(
                    path,
                    format!("approvals is 1 to {MAX_GATE_APPROVALS}"),
                ));
            }
            if gate.timeout_seconds == 0 || gate.timeout_seconds > MAX_APPROVAL_TIMEOUT_SECONDS {
                return Err(invalid(path, "timeout_seconds is 1 to 2592000 (30 days)"));
            }
            Ok(())
        }
        State::Succeed(succeed) => match &succeed.output {
            Some(output) => {
                let p =
                    Path::parse(output).map_err(|why| invalid(path, format!("output: {why}")))?;
                check_path(&p, path, visible, cx)
            }
            None => Ok(()),
        },
        State::Fail(fail) => {
            if !valid_kind(&fail.error) {
                return Err(invalid(
                    path,
                    "error is 1-64 of a-z 0-9 - (a kind a catch can match)",
                ));
            }
            if fail.cause.len() > 1024 {
                return Err(invalid(path, "cause is over 1024 bytes"));
            }
            Ok(())
        }
    }
}

fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_rules(state: &State, path: &str) -> Result<(), Invalid> {
    let retry = state.retry();
    if retry.len() > MAX_RULES || state.catch().is_some_and(|c| c.len() > MAX_RULES) {
        return Err(invalid(
            path,
            format!("at most {MAX_RULES} retry and catch rules"),
        ));
    }
    let kinds_ok = |errors: &[String]| {
        !errors.is_empty()
            && errors.len() <= MAX_RULES
            && errors.iter().all(|e| e == kinds::ANY || valid_kind(e))
    };
    for rule in retry {
        if !kinds_ok(&rule.errors) {
            return Err(invalid(
                path,
                "retry.errors lists 1-16 error kinds (or `*`)",
            ));
        }
        if rule.max_attempts < 2 || rule.max_attempts > MAX_ATTEMPTS {
            return Err(invalid(
                path,
                format!("retry.max_attempts is 2 to {MAX_ATTEMPTS} (the first attempt included)"),
            ));
        }
        let interval_ok = rule.interval_seconds.is_finite()
            && (0.0..=MAX_RETRY_INTERVAL_SECONDS as f64).contains(&rule.interval_seconds);
        if !interval_ok {
            return Err(invalid(path, "retry.interval_seconds is 0 to 3600"));
        }
        if !(rule.backoff_rate.is_finite() && (1.0..=10.0).contains(&rule.backoff_rate)) {
            return Err(invalid(path, "retry.backoff_rate is 1 to 10"));
        }
    }
    for rule in state.catch().unwrap_or_default() {
        if !kinds_ok(&rule.errors) {
            return Err(invalid(
                path,
                "catch.errors lists 1-16 error kinds (or `*`)",
            ));
        }
    }
    Ok(())
}

fn check_task(
    task: &TaskState,
    path: &str,
    visible: &Visible,
    cx: &Context<'_>,
) -> Result<(), Invalid> {
    if !is_sha256_hex(&task.module) {
        return Err(invalid(path, "module is a lowercase hex SHA-256 digest"));
    }
    let manifest = (cx.modules)(&task.module).map_err(|why| invalid(path, why))?;
    crate::runs::check_grant(&task.grant).map_err(|e| invalid(path, e.to_string()))?;
    if task.limits.timeout_seconds == Some(0) || task.limits.host_calls == Some(0) {
        return Err(invalid(path, "limits are at least 1"));
    }
    let mut given = BTreeSet::new();
    for (key, value) in &task.inputs {
        let (name, from_path) = match key.strip_suffix(".$") {
            Some(name) => (name, true),
            None => (key.as_str(), false),
        };
        if !manifest.inputs.contains_key(name) {
            let declared: Vec<_> = manifest.inputs.keys().cloned().collect();
            return Err(invalid(
                path,
                format!(
                    "input {name:?} is not declared by module {} (declared: {})",
                    manifest.name,
                    declared.join(", ")
                ),
            ));
        }
        if !given.insert(name.to_string()) {
            return Err(invalid(path, format!("input {name:?} is given twice")));
        }
        if from_path {
            let texts: Vec<Option<&str>> = match value {
                serde_json::Value::Array(items) if items.len() <= 64 => {
                    items.iter().map(|v| v.as_str()).collect()
                }
                one => vec![one.as_str()],
            };
            for text in texts {
                let text = text.ok_or_else(|| {
                    invalid(
                        path,
                        format!("input {key:?} must be a path or a list of paths"),
                    )
                })?;
                let p = Path::parse(text)
                    .map_err(|why| invalid(path, format!("input {name:?}: {why}")))?;
                check_path(&p, path, visible, cx)?;
            }
        }
    }
    for (name, spec) in &manifest.inputs {
        if spec.required && spec.default.is_none() && !given.contains(name) {
            return Err(invalid(
                path,
                format!(
                    "module {} requires input {name:?}, which is not mapped",
                    manifest.name
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a path that can read nothing where it is used.
fn check_path(p: &Path, at: &str, visible: &Visible, cx: &Context<'_>) -> Result<(), Invalid> {
    match &p.root {
        Root::Inputs => match p.input_name() {
            Some(name) if cx.inputs.contains_key(name) => Ok(()),
            Some(name) => Err(invalid(
                at,
                format!("$.inputs.{name} is not a declared workflow input"),
            )),
            None => Ok(()),
        },
        Root::Step(name) if visible.steps.contains(name) => Ok(()),
        Root::Step(name) => Err(invalid(
            at,
            format!(
                "$.steps.{name} points nowhere: no task, parallel or map state of that name \
                 runs before this one"
            ),
        )),
        Root::Item if visible.item => Ok(()),
        Root::Item => Err(invalid(
            at,
            "$.item is only defined inside a map's iterator",
        )),
    }
}

/// The successor graph of one definition level.
struct Graph<'a> {
    next: BTreeMap<&'a str, Vec<&'a str>>,
}

impl<'a> Graph<'a> {
    fn of(level: &'a Workflow) -> Self {
        let next = level
            .states
            .iter()
            .map(|(name, state)| {
                let succ = state.successors().into_iter().map(|(_, n)| n).collect();
                (name.as_str(), succ)
            })
            .collect();
        Graph { next }
    }

    fn reachable_from(&self, start: &'a str, skip: &dyn Fn(&str) -> bool) -> BTreeSet<&'a str> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(s) = stack.pop() {
            if !seen.insert(s) {
                continue;
            }
            for n in self.next.get(s).into_iter().flatten() {
                if !skip(n) {
                    stack.push(n);
                }
            }
        }
        seen
    }

    /// States from which `target` can be reached (its possible predecessors in a run).
    fn ancestors(&self, target: &str) -> Vec<String> {
        self.next
            .keys()
            .filter(|s| **s != target || self.reaches_itself(s))
            .filter(|s| {
                self.next
                    .get(*s)
                    .into_iter()
                    .flatten()
                    .any(|n| self.reachable_from(n, &|_| false).contains(target))
            })
            .map(|s| s.to_string())
            .collect()
    }

    fn reaches_itself(&self, s: &str) -> bool {
        self.next
            .get(s)
            .into_iter()
            .flatten()
            .any(|n| self.reachable_from(n, &|_| false).contains(s))
    }
}

fn check_reachable(level: &Workflow, graph: &Graph<'_>, prefix: &str) -> Result<(), Invalid> {
    let reached = graph.reachable_from(&level.start_at, &|_| false);
    match level.states.keys().find(|s| !reached.contains(s.as_str())) {
        Some(lost) => Err(invalid(
            &join(prefix, lost),
            format!(
                "unreachable: no path from start_at {:?} leads here",
                level.start_at
            ),
        )),
        None => Ok(()),
    }
}

/// A loop must pass through a `wait` or an `approval`: without them, the states that remain
/// must have no cycle.
fn check_loops(level: &Workflow, graph: &Graph<'_>, prefix: &str) -> Result<(), Invalid> {
    let pauses = |s: &str| {
        matches!(
            level.states.get(s),
            Some(State::Wait(_) | State::Approval(_))
        )
    };
    for name in level.states.keys().filter(|s| !pauses(s)) {
        let successors = graph.next.get(name.as_str()).into_iter().flatten();
        let loops = successors
            .filter(|n| !pauses(n))
            .any(|n| graph.reachable_from(n, &pauses).contains(name.as_str()));
        if loops {
            return Err(invalid(
                &join(prefix, name),
                "is on a loop with no wait or approval state: it would repeat without pause",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
