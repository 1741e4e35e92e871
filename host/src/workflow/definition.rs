//! The workflow state language: what a workflow definition says, as JSON (or TOML from the
//! CLI). The reference, with examples, is `guest-examples/workflows/README.md`; this module holds the types and
//! their size caps, [`crate::workflow::validate`] the rules that make a definition runnable.
//!
//! A definition is a graph of named states starting at `start_at`. A `task` runs a module (by
//! digest) with its own grant and limits; `choice` branches; `parallel` runs branches (each a
//! definition of its own) at once and joins; `map` runs one sub-definition per item of a list;
//! `wait` sleeps until a duration or a time; `approval` waits for N distinct approvers;
//! `succeed` and `fail` end a branch. `task`, `parallel` and `map` take `retry` and `catch`.
//!
//! Values flow through *paths*: `$.inputs.NAME…` (the run's inputs), `$.steps.STATE…` (the
//! output of an earlier state in this branch or an enclosing one) and `$.item…` (the current
//! item of a `map`). A path continues with `.field` or `.N` (a list index). In a task's
//! `inputs`, a key ending in `.$` takes its value from a path (or a list of paths: the list of
//! their values); any other key is a literal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::capabilities::grant::Grant;
use crate::registry::manifest::InputSpec;
use crate::runtime::limits::RunLimits;

/// Most states in one definition, counting every branch and iterator.
pub const MAX_STATES: usize = 256;
/// Most branches of one `parallel` state.
pub const MAX_BRANCHES: usize = 16;
/// Most items one `map` runs.
pub const MAX_MAP_ITEMS: usize = 1000;
/// Most concurrent iterations of one `map`.
pub const MAX_MAP_CONCURRENCY: u32 = 64;
/// Longest `wait` (and the latest `until` from now): 30 days.
pub const MAX_WAIT_SECONDS: u64 = 30 * 24 * 3600;
/// Longest approval timeout: 30 days.
pub const MAX_APPROVAL_TIMEOUT_SECONDS: u64 = 30 * 24 * 3600;
/// Most attempts one retry rule allows (the first one included).
pub const MAX_ATTEMPTS: u32 = 10;
/// Longest interval between two attempts, after backoff.
pub const MAX_RETRY_INTERVAL_SECONDS: u64 = 3600;
/// Most rules in one `retry` or `catch` list, and choices in one `choice`.
pub const MAX_RULES: usize = 16;
/// Deepest nesting of `and` / `or` / `not` in one condition.
pub const MAX_CONDITION_DEPTH: usize = 8;
/// Most approvals an `approval` state may require.
pub const MAX_GATE_APPROVALS: u32 = 16;
/// Largest encoded definition.
pub const MAX_DEFINITION_BYTES: usize = 256 << 10;
/// Longest path expression, state name or error kind.
pub const MAX_NAME_BYTES: usize = 256;
/// Most times one state may be entered in one run (a loop through a `wait` or an
/// `approval`), so that a loop cannot grow the run record without bound.
pub const MAX_VISITS: u32 = 100;

/// A workflow: named states, the first one, and the inputs its runs take.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// What it does, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// The inputs a run takes, declared like a module manifest's (top level only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputSpec>,
    pub start_at: String,
    pub states: BTreeMap<String, State>,
}

/// Where a state goes when it is done: the next state's name, or (`end: true`) the end of
/// its branch with this state's output. Exactly one of the two.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition<'a> {
    pub next: Option<&'a str>,
    pub end: bool,
}

/// One state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum State {
    Task(Box<TaskState>),
    Choice(ChoiceState),
    Parallel(ParallelState),
    Map(Box<MapState>),
    Wait(WaitState),
    Approval(ApprovalState),
    Succeed(SucceedState),
    Fail(FailState),
}

impl State {
    /// The state's type as written in the definition.
    pub fn kind(&self) -> &'static str {
        match self {
            State::Task(_) => "task",
            State::Choice(_) => "choice",
            State::Parallel(_) => "parallel",
            State::Map(_) => "map",
            State::Wait(_) => "wait",
            State::Approval(_) => "approval",
            State::Succeed(_) => "succeed",
            State::Fail(_) => "fail",
        }
    }

    /// The states this one may go to next (not into its branches), with the field naming
    /// each, in definition order.
    pub fn successors(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(next) = self.transition().and_then(|t| t.next) {
            out.push(("next", next));
        }
        match self {
            State::Choice(c) => {
                out.extend(c.choices.iter().map(|r| ("choices.next", r.next.as_str())));
                if let Some(d) = &c.default {
                    out.push(("default", d.as_str()));
                }
            }
            State::Approval(a) => {
                if let Some(n) = &a.on_timeout {
                    out.push(("on_timeout", n.as_str()));
                }
                if let Some(n) = &a.on_reject {
                    out.push(("on_reject", n.as_str()));
                }
            }
            _ => {}
        }
        if let Some(catch) = self.catch() {
            out.extend(catch.iter().map(|c| ("catch.next", c.next.as_str())));
        }
        out
    }

    /// Its `catch` rules, for the states that take them.
    pub fn catch(&self) -> Option<&[Catch]> {
        match self {
            State::Task(t) => Some(&t.catch),
            State::Parallel(p) => Some(&p.catch),
            State::Map(m) => Some(&m.catch),
            _ => None,
        }
    }

    /// Its `retry` rules, for the states that take them.
    pub fn retry(&self) -> &[Retry] {
        match self {
            State::Task(t) => &t.retry,
            State::Parallel(p) => &p.retry,
            State::Map(m) => &m.retry,
            _ => &[],
        }
    }

    /// Its own transition, for the states that have one.
    pub fn transition(&self) -> Option<Transition<'_>> {
        let (next, end) = match self {
            State::Task(t) => (&t.next, t.end),
            State::Parallel(p) => (&p.next, p.end),
            State::Map(m) => (&m.next, m.end),
            State::Wait(w) => (&w.next, w.end),
            State::Approval(a) => (&a.next, a.end),
            _ => return None,
        };
        Some(Transition {
            next: next.as_deref(),
            end,
        })
    }
}

/// Runs one module.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskState {
    /// Lowercase hex SHA-256 of the module (a module in the registry, signed by a trusted
    /// publisher).
    pub module: String,
    /// The module's inputs: `"name": literal` or `"name.$": "$.path"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// What this step alone may touch. Other steps' grants do not apply to it.
    #[serde(default)]
    pub grant: Grant,
    /// Limits below the server's for this step.
    #[serde(default, skip_serializing_if = "StepLimits::is_empty")]
    pub limits: StepLimits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry: Vec<Retry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catch: Vec<Catch>,
}

/// Limits one step may set below the server's own (never above them).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepLimits {
    /// Wall time of one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Host calls of one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_calls: Option<u64>,
}

impl StepLimits {
    /// True when it sets nothing.
    pub fn is_empty(&self) -> bool {
        self.timeout_seconds.is_none() && self.host_calls.is_none()
    }

    /// `limits` with these applied: each only ever lowers the server's.
    pub fn lower(&self, mut limits: RunLimits) -> RunLimits {
        if let Some(seconds) = self.timeout_seconds {
            limits.wall_time = limits
                .wall_time
                .min(std::time::Duration::from_secs(seconds));
        }
        if let Some(calls) = self.host_calls {
            limits.host_calls = limits.host_calls.min(calls);
        }
        limits
    }
}

/// Goes to the first rule whose condition holds, else to `default`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChoiceState {
    pub choices: Vec<ChoiceRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// One branch of a `choice`: taken when `when` holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChoiceRule {
    pub when: Condition,
    pub next: String,
}

/// A test on the inputs or on earlier steps' outputs: exactly one of `and`, `or`, `not`, or
/// a `variable` (a path) with exactly one comparison.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub or: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    /// The path leads to a value (`true`) or to nothing (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// Equal JSON values (numbers compared as numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric_less_than: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric_less_than_equals: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric_greater_than: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric_greater_than_equals: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_equals: Option<String>,
    /// Byte-wise ordering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_less_than: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_greater_than: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_starts_with: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boolean_equals: Option<bool>,
}

/// Runs every branch at once; done when all are. Its output is the list of the branches'
/// outputs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParallelState {
    pub branches: Vec<Workflow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry: Vec<Retry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catch: Vec<Catch>,
}

/// Runs `iterator` once per item of the list at `items`. Its output is the list of the
/// iterations' outputs (`null` for one that failed within the tolerance).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MapState {
    /// A path to a list.
    pub items: String,
    pub iterator: Workflow,
    /// Iterations at once (default 1: one after the other).
    #[serde(default = "one")]
    pub max_concurrency: u32,
    /// Failed iterations the map tolerates (and still succeeds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failures: Option<u32>,
    /// Or: the share of iterations that may fail, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry: Vec<Retry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catch: Vec<Catch>,
}

fn one() -> u32 {
    1
}

/// Waits, then goes on: for `seconds`, or until `until_ms` (Unix ms).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WaitState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
}

/// Waits for `approvals` distinct approvers (never the run's requester). Approvers approve
/// exactly the definition, the inputs and the outputs so far.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApprovalState {
    #[serde(default = "one")]
    pub approvals: u32,
    pub timeout_seconds: u64,
    /// Where a timeout goes; without it the run fails (`approval-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<String>,
    /// Where a rejection goes; without it the run fails (`approval-rejected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_reject: Option<String>,
    /// What approvers are asked, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
}

/// Ends the branch successfully; its output is the value at `output` (a path), if given,
/// else the last step's.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SucceedState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// Ends the branch with an error of kind `error` (a `catch` above it may match it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FailState {
    pub error: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cause: String,
}

/// Try a failed state again.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Error kinds this rule applies to; `*` matches every kind.
    pub errors: Vec<String>,
    /// Attempts in all, the first included (2..=10).
    pub max_attempts: u32,
    #[serde(default = "one_second")]
    pub interval_seconds: f64,
    /// Each interval is the previous one times this (≥ 1).
    #[serde(default = "one_f64")]
    pub backoff_rate: f64,
}

fn one_second() -> f64 {
    1.0
}
fn one_f64() -> f64 {
    1.0
}

/// Where a failure goes instead of ending the run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Catch {
    /// Error kinds this rule applies to; `*` matches every kind.
    pub errors: Vec<String>,
    pub next: String,
}

/// The kinds of error the engine itself raises (a `fail` state raises its own).
pub mod kinds {
    /// The task returned an error, trapped or broke a limit other than its wall time.
    pub const FAILED: &str = "failed";
    /// The task ran past its wall time.
    pub const TIMED_OUT: &str = "timed-out";
    /// The server stopped while the step ran; its effects are unknown.
    pub const INTERRUPTED: &str = "interrupted";
    /// The remote bridge running the step was lost; its effects are unknown.
    pub const LOST: &str = "lost";
    /// The step could not start (module untrusted or retired, inputs refused, queue full).
    pub const REFUSED: &str = "refused";
    /// More iterations of a `map` failed than it tolerates, or a `parallel` branch failed.
    pub const BRANCH_FAILED: &str = "branch-failed";
    /// Nobody approved in time.
    pub const APPROVAL_TIMEOUT: &str = "approval-timeout";
    /// An approver rejected.
    pub const APPROVAL_REJECTED: &str = "approval-rejected";
    /// Every kind.
    pub const ANY: &str = "*";
}

/// Whether a rule listing `errors` applies to a failure of `kind`.
pub fn matches_kind(errors: &[String], kind: &str) -> bool {
    errors.iter().any(|e| e == kinds::ANY || e == kind)
}

impl Workflow {
    /// Parses a definition from JSON, refusing one over [`MAX_DEFINITION_BYTES`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_DEFINITION_BYTES {
            return Err(format!("definition is over {MAX_DEFINITION_BYTES} bytes"));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("definition does not parse: {e}"))
    }

    /// Parses a definition from TOML (the CLI's other format).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        if text.len() > MAX_DEFINITION_BYTES {
            return Err(format!("definition is over {MAX_DEFINITION_BYTES} bytes"));
        }
        toml::from_str(text).map_err(|e| format!("definition does not parse: {e}"))
    }

    /// SHA-256 (hex) of the definition's canonical JSON (maps sorted): what a workflow
    /// process's `module_digest` holds, and what approvals bind to.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"warden workflow v1\n");
        hasher.update(serde_json::to_vec(self).unwrap_or_default());
        hex::encode(hasher.finalize())
    }

    /// Every task state, in this definition and all nested ones, with its path of state
    /// names (`outer/inner`).
    pub fn tasks(&self) -> Vec<(String, &TaskState)> {
        let mut out = Vec::new();
        self.walk("", &mut |path, state| {
            if let State::Task(t) = state {
                out.push((path.to_string(), t.as_ref()));
            }
        });
        out
    }

    /// Calls `f` with every state's path and the state, depth first.
    pub fn walk<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a State)) {
        for (name, state) in &self.states {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            f(&path, state);
            match state {
                State::Parallel(p) => {
                    for (i, branch) in p.branches.iter().enumerate() {
                        branch.walk(&format!("{path}/{i}"), f);
                    }
                }
                State::Map(m) => m.iterator.walk(&format!("{path}/*"), f),
                _ => {}
            }
        }
    }

    /// The task state at `path` (as [`Self::tasks`] names it).
    pub fn task_at(&self, path: &str) -> Option<&TaskState> {
        self.tasks()
            .into_iter()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t)
    }
}
