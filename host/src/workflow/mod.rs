//! Workflows: processes made of several tasks, with branches, fan-out, waits, approvals,
//! retries, and resume from the step that failed.
//!
//! A workflow process stores a definition ([`definition::Workflow`], the state language) in
//! place of a module; its `module_digest` is the definition's digest. A run of it is a
//! *workflow run*: its record holds the [`WorkflowProgress`] of every step, and each task step
//! executes as a run of its own (a *step run*, whose record names its workflow run and step in
//! [`StepRef`]), through the same dispatcher, queue, bridge, grant checks and audit as any run.
//! A single-module process is unchanged.
//!
//! Threats this module stops:
//! - one step reaching what another step was granted: every task state has its own grant, and
//!   a step run executes with exactly that grant (the dispatcher, and a remote bridge's claim,
//!   read it from the definition by the step's definition path); leases are held by the step
//!   run, so they end with it;
//! - a definition that runs unvetted code or never ends: [`validate`] refuses modules not in
//!   the registry or not trusted, dangling references, unreachable states, loops without a
//!   pause, and sizes over the caps;
//! - approvals that outlive what they approved: an `approval` state binds to the definition's
//!   digest, the run's inputs and the outputs so far ([`gate`]), and four eyes hold (the
//!   requester never approves their own run);
//! - progress lost or invented: every step transition is an audited, compare-and-swapped write
//!   of the workflow run's record, and the engine replays a run from its record after a
//!   restart or a resume, never re-executing a step that succeeded.
//!
//! Layout: `definition` (the language), `expr` (paths and conditions), `validate`, `progress`
//! (what a run records), `engine` (the interpreter walking the states), `steps` (task,
//! parallel, map, wait, retry and catch), `gate` (approval states), `live` (the runs driven
//! here). The language reference is `guest-examples/workflows/README.md`.

pub mod definition;
pub mod engine;
pub mod expr;
pub mod gate;
pub mod live;
pub mod progress;
mod record;
mod steps;
pub mod validate;

pub use definition::{StepLimits, Workflow};
pub use progress::{StepRef, StepStatus, WorkflowProgress};

use crate::runs::{Process, RunRecord, RunsError};

/// The process a run executes as: `process` itself, or for a step run the step's task (its
/// module, grant and limits) in `process`'s definition. Refused if the definition changed
/// since the workflow run started, or the step is not a task of the same module.
pub fn effective_process(process: &Process, run: &RunRecord) -> Result<Process, RunsError> {
    let Some(step) = &run.step else {
        return Ok(process.clone());
    };
    let changed = || RunsError::Invalid {
        field: "workflow",
        why: format!(
            "process {} changed its definition since workflow run {} started",
            process.id, step.run
        ),
    };
    let workflow = process.workflow.as_ref().ok_or_else(changed)?;
    if process.module_digest != step.definition {
        return Err(changed());
    }
    let task = workflow
        .task_at(&step.definition_path)
        .ok_or_else(changed)?;
    if task.module != run.module_digest {
        return Err(changed());
    }
    Ok(step_process(process, task))
}

/// The single-task process one task state of `process`'s workflow runs as.
pub fn step_process(process: &Process, task: &definition::TaskState) -> Process {
    Process {
        module_digest: task.module.clone(),
        module: format!("step@{}", &task.module[..12.min(task.module.len())]),
        grant: task.grant.clone(),
        default_inputs: Default::default(),
        required_approvals: 0,
        retry_on_lost: false,
        limits: task.limits.clone(),
        workflow: None,
        ..process.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::runs::RunState;

    fn process() -> Process {
        let module = "ab".repeat(32);
        let workflow: Workflow = serde_json::from_value(json!({
            "start_at": "a",
            "states": {
                "a": { "type": "task", "module": module, "end": true,
                       "grant": { "credentials": ["db-pw"], "targets": ["db-1"] },
                       "limits": { "timeout_seconds": 5 } }
            }
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let mut p: Process = serde_json::from_value(json!({
            "id": "p1", "name": "flow", "description": "", "owner": "alice",
            "module_digest": workflow.digest(), "module": "workflow@x", "grant": {},
            "default_inputs": {}, "shared_users": [], "shared_roles": [],
            "required_approvals": 0, "revision": 1, "created_ms": 0, "updated_ms": 0
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        p.workflow = Some(workflow);
        p
    }

    fn step_run(p: &Process, path: &str, module: &str, definition: &str) -> RunRecord {
        let mut run = RunRecord::new_queued(
            "r2".into(),
            p.id.clone(),
            module.into(),
            "alice".into(),
            Default::default(),
        );
        run.step = Some(StepRef {
            run: "r1".into(),
            path: path.into(),
            definition_path: path.into(),
            definition: definition.into(),
        });
        run
    }

    #[test]
    fn a_step_run_executes_with_exactly_its_task_states_grant_and_limits() {
        let p = process();
        let run = step_run(&p, "a", &"ab".repeat(32), &p.module_digest);
        let step = effective_process(&p, &run).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(step.grant.credentials, ["db-pw".to_string()].into());
        assert_eq!(step.module_digest, "ab".repeat(32));
        assert_eq!(step.limits.timeout_seconds, Some(5));
        assert!(step.workflow.is_none());
        assert_eq!(run.state, RunState::Queued);
        // A run that is no step runs as the process itself.
        let mut plain = run.clone();
        plain.step = None;
        assert_eq!(effective_process(&p, &plain).ok(), Some(p.clone()));
    }

    #[test]
    fn a_step_run_of_a_changed_definition_another_module_or_no_such_step_is_refused() {
        let p = process();
        let module = "ab".repeat(32);
        for run in [
            step_run(&p, "a", &module, &"cd".repeat(32)),
            step_run(&p, "a", &"ef".repeat(32), &p.module_digest),
            step_run(&p, "zz", &module, &p.module_digest),
        ] {
            assert!(effective_process(&p, &run).is_err(), "{:?}", run.step);
        }
        let mut single = p.clone();
        single.workflow = None;
        assert!(effective_process(&single, &step_run(&p, "a", &module, &p.module_digest)).is_err());
    }
}
