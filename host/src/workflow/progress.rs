//! Where a workflow run stands, as stored in its run record: one [`StepRecord`] per state
//! visited, by its run path, and the attempt (resume count) of the run.
//!
//! Run paths name each visit of a state uniquely and the same way every time the engine
//! replays the run: `name` (first visit; later visits `name#2`, `name#3`), a `parallel`
//! branch `name/BRANCH/inner`, a `map` iteration `name/INDEX/inner`. The engine replays a run
//! from its start after a restart or a resume: a step recorded `succeeded` (or `caught`) is not
//! executed again, its output is reused. Everything here is bounded: outputs are capped at
//! [`MAX_STEP_OUTPUT_BYTES`] and a run records at most [`MAX_STEP_RECORDS`] steps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::runs::RunState;
use crate::runs::approval::Approval;

/// Largest step output kept (encoded JSON); a larger one is a step failure.
pub const MAX_STEP_OUTPUT_BYTES: usize = 64 << 10;
/// Most step records one run keeps.
pub const MAX_STEP_RECORDS: usize = 4096;
/// Most attempts recorded per step (retries, and again after each resume).
pub const MAX_RECORDED_ATTEMPTS: usize = 64;

/// A workflow run's progress.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkflowProgress {
    /// The definition's digest (the process's `module_digest` when the run was created).
    pub definition: String,
    /// 1, plus one for every resume.
    pub attempt: u32,
    /// Every step visited, by run path.
    pub steps: BTreeMap<String, StepRecord>,
    /// The run's output: the last step's output when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
}

/// Where one visit of one state stands.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Copy)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Executing (a task, a branch or a map in progress).
    Running,
    /// A `wait` sleeping, or an `approval` waiting for approvers.
    Waiting,
    Succeeded,
    /// Failed; the failure was routed by a `catch` (replayed as such, never re-executed).
    Caught,
    Failed,
    /// Stopped because the run was cancelled.
    Cancelled,
}

/// One visit of one state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// The state's name and type (`task`, `choice`, …).
    pub state: String,
    pub kind: String,
    pub status: StepStatus,
    /// The run attempt (see [`WorkflowProgress::attempt`]) that last executed it.
    pub run_attempt: u32,
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// A task's executions: one child run per attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<StepAttempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    /// Where the step went next (a choice's branch, a catch's target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// A `wait`: when it ends (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_ms: Option<u64>,
    /// An `approval`: the gate's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
}

/// One execution of a task step: a run of its own (its host calls are audited under it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepAttempt {
    pub run_id: String,
    pub state: RunState,
    pub host_calls: u64,
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a step failed: a kind `retry` and `catch` rules match, and a message for people.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepError {
    pub kind: String,
    pub message: String,
}

/// An approval gate in progress.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Gate {
    pub required: u32,
    /// When it times out (Unix ms).
    pub deadline_ms: u64,
    /// What approvers approve: the digest of the definition, the inputs and the outputs so
    /// far (see `gate::binding`).
    pub binding: String,
    #[serde(default)]
    pub approvals: Vec<Approval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<String>,
    /// What approvers are asked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// The steps (run paths) whose outputs the binding covers.
    #[serde(default)]
    pub bound_steps: Vec<String>,
}

impl WorkflowProgress {
    /// A new run's progress.
    pub fn new(definition: &str) -> Self {
        WorkflowProgress {
            definition: definition.to_string(),
            attempt: 1,
            steps: BTreeMap::new(),
            output: None,
        }
    }

    /// The gate waiting for approvals, if one is: its run path and state.
    pub fn open_gate(&self) -> Option<(&str, &Gate)> {
        self.steps
            .iter()
            .find_map(|(path, step)| match (&step.gate, step.status) {
                (Some(gate), StepStatus::Waiting) => Some((path.as_str(), gate)),
                _ => None,
            })
    }
}

/// Where a child run sits in its workflow: stored on the child's run record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepRef {
    /// The workflow run.
    pub run: String,
    /// The step's run path (`provision/3/create`).
    pub path: String,
    /// The task state's path in the definition (`provision/*/create`): where its module,
    /// grant and limits are read from.
    pub definition_path: String,
    /// The digest of the definition the workflow run follows.
    pub definition: String,
}
