//! The workflow interpreter: drives one workflow run through its states, executing each task
//! step as a step run on the dispatcher, and records every step transition (audited) in the
//! workflow run's record.
//!
//! Replay: the engine always walks a run from `start_at`. A step its record shows `succeeded`
//! is not executed again (its output is reused), one shown `caught` takes the recorded catch, a
//! `wait` keeps its recorded wake-up time and an `approval` its gate. So a restart (the server
//! resumes every workflow run left running) and a resume (`run resume`, a new attempt of a
//! failed or interrupted run) continue exactly where the run stood. A task step whose step run
//! was in flight when the server stopped adopts that run's end (`interrupted`, which `retry`
//! or `catch` may handle) rather than running the task a second time.
//!
//! Threat: a step run with more than its step's grant, a run that never ends, a cancelled run
//! that keeps acting. Step runs get exactly their task state's grant ([`super::step_process`]);
//! every state is entered at most [`MAX_VISITS`] times; cancelling the workflow run cancels the
//! step runs in flight and stops the engine before it starts anything else.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};

use super::definition::*;
use super::expr::{Path, Scope, eval};
use super::live::WorkflowControl;
use super::progress::*;
use crate::audit::{AuditEntry, Decision};
use crate::registry::manifest::Manifest;
use crate::runs::dispatch::{Dispatcher, StartError};
use crate::runs::{Process, RunRecord, RunState, RunsError, now_ms};

/// Who ends a workflow run the engine could not drive.
pub const ENGINE_ACTOR: &str = "system:workflow";

/// Starts a workflow run of `process` (whose definition is `workflow`) for `actor`: checks the
/// inputs against the definition's declared inputs, records the run `running` and drives it in
/// the background.
pub async fn start(
    dispatcher: &Dispatcher,
    process: &Process,
    workflow: &Workflow,
    inputs: BTreeMap<String, Value>,
    actor: &str,
) -> Result<RunRecord, StartError> {
    let mut merged = process.default_inputs.clone();
    merged.extend(inputs);
    check_inputs(workflow, &merged)?;
    let mut record = RunRecord::new_queued(
        uuid::Uuid::new_v4().to_string(),
        process.id.clone(),
        process.module_digest.clone(),
        actor.to_string(),
        merged,
    );
    record.workflow = Some(WorkflowProgress::new(&process.module_digest));
    let note = format!(
        "workflow {} ({} states)",
        process.module,
        workflow.states.len()
    );
    let record = dispatcher.runs().create_running(record, &note).await?;
    drive(dispatcher, process, &record.id);
    Ok(record)
}

/// Checks a workflow run's inputs like a module's: declared names only, required ones present,
/// values of the declared types.
pub(crate) fn check_inputs(
    workflow: &Workflow,
    inputs: &BTreeMap<String, Value>,
) -> Result<(), StartError> {
    let manifest = Manifest {
        name: "workflow".into(),
        version: "1".into(),
        description: String::new(),
        capabilities: Vec::new(),
        inputs: workflow.inputs.clone(),
        requests: Default::default(),
        limits: Default::default(),
    };
    let given = inputs
        .iter()
        .map(|(k, v)| Ok((k.clone(), crate::runs::dispatch::json_to_toml(k, v)?)))
        .collect::<Result<BTreeMap<_, _>, crate::registry::manifest::ManifestError>>()?;
    manifest.resolve_inputs(&given)?;
    Ok(())
}

/// Drives workflow run `run_id` of `process` in the background, unless it is driven here
/// already.
pub fn drive(dispatcher: &Dispatcher, process: &Process, run_id: &str) {
    let Some(workflow) = process.workflow.clone() else {
        return;
    };
    let Some(control) = dispatcher.workflows().insert(run_id) else {
        return;
    };
    let exec = Exec {
        dispatcher: dispatcher.clone(),
        process: Arc::new(process.clone()),
        run_id: run_id.to_string(),
        control,
        prior: Mutex::default(),
        writer: Default::default(),
        actor: String::new(),
        attempt: 0,
    };
    tokio::spawn(async move { exec.run(Arc::new(workflow)).await });
}

/// Resumes, at server start, the workflow runs a previous process left running (`ids`, from
/// `RunStore::recover_all`).
pub async fn resume_all(
    dispatcher: &Dispatcher,
    processes: &crate::runs::ProcessStore,
    ids: Vec<String>,
) -> Result<usize, RunsError> {
    let runs = dispatcher.runs().clone();
    let mut resumed = 0;
    for id in ids {
        let Some(run) = runs.get(&id)? else { continue };
        let process = processes.get(&run.process_id)?;
        match process {
            Some(p) if p.module_digest == run.module_digest && p.workflow.is_some() => {
                // Held by this server from now on (the cluster sweep would otherwise end it as
                // a run of the stopped server).
                runs.update_workflow(&id, |_| Ok(adopted_entry(&run.actor)))
                    .await?;
                drive(dispatcher, &p, &id);
                resumed += 1;
            }
            _ => {
                let why = "the workflow's process was deleted or changed its definition while \
                           the server was stopped";
                runs.transition(&id, RunState::Interrupted, ENGINE_ACTOR, |r| {
                    r.error = Some(why.into())
                })
                .await?;
            }
        }
    }
    Ok(resumed)
}

/// One workflow run being driven.
pub(super) struct Exec {
    pub(super) dispatcher: Dispatcher,
    pub(super) process: Arc<Process>,
    pub(super) run_id: String,
    pub(super) control: Arc<WorkflowControl>,
    /// The steps as recorded when the engine (re)started, then as this engine recorded them:
    /// what replay reuses.
    pub(super) prior: Mutex<BTreeMap<String, StepRecord>>,
    /// Step updates waiting to be written together (see `record.rs`).
    pub(super) writer: super::record::StepWriter,
    pub(super) actor: String,
    pub(super) attempt: u32,
}

/// How a state ended: go on (with its output, to `next` or the branch's end), or fail.
pub(super) enum Flow {
    Next {
        output: Option<Value>,
        next: Option<String>,
    },
    Succeed(Value),
}

pub(super) type Failure = StepError;

pub(super) fn failure(kind: &str, message: impl Into<String>) -> Failure {
    StepError {
        kind: kind.to_string(),
        message: message.into(),
    }
}

pub(super) const CANCELLED: &str = "cancelled";

fn join(prefix: &str, part: &str) -> String {
    if prefix.is_empty() {
        part.to_string()
    } else {
        format!("{prefix}/{part}")
    }
}

impl Exec {
    async fn run(mut self, workflow: Arc<Workflow>) {
        let runs = self.dispatcher.runs().clone();
        let run = match runs.get(&self.run_id) {
            Ok(Some(run)) => run,
            _ => {
                self.dispatcher.workflows().remove(&self.run_id);
                return;
            }
        };
        self.actor = run.actor.clone();
        let progress = run.workflow.clone().unwrap_or_default();
        self.attempt = progress.attempt;
        *self.prior.lock().unwrap_or_else(PoisonError::into_inner) = progress.steps;
        let scope = Scope {
            inputs: Arc::new(run.inputs.clone()),
            item: None,
            outputs: HashMap::new(),
        };
        let result = self.level(&workflow, "", "", scope).await;
        let cancelled = self.control.cancelled.load(Ordering::SeqCst);
        let ended = match result {
            _ if cancelled => {
                runs.transition(&self.run_id, RunState::Cancelled, &self.actor, |r| {
                    r.error = Some("cancelled".into())
                })
                .await
            }
            Ok(output) => {
                // Like a task's: a string as itself, anything else as its JSON text.
                let text = match &output {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                runs.transition(&self.run_id, RunState::Succeeded, &self.actor, |r| {
                    if let Some(p) = r.workflow.as_mut() {
                        p.output = Some(output);
                    }
                    r.result = Some(text);
                })
                .await
            }
            Err(e) => {
                let state = if e.kind == kinds::INTERRUPTED {
                    RunState::Interrupted
                } else {
                    RunState::Failed
                };
                runs.transition(&self.run_id, state, &self.actor, |r| {
                    r.error = Some(format!("{}: {}", e.kind, e.message))
                })
                .await
            }
        };
        if let Err(e) = ended {
            tracing::warn!(run = %self.run_id, error = %e, "workflow run end not recorded");
        }
        self.dispatcher.workflows().remove(&self.run_id);
    }

    /// The workflow run as stored now.
    pub(super) fn run_record(&self) -> Option<RunRecord> {
        self.dispatcher.runs().get(&self.run_id).ok().flatten()
    }

    /// Whose approvals of this run never count (the approval API refuses them first, with
    /// the schedule and trigger rules; this is the engine's own check).
    pub(super) fn requester(&self, run: &RunRecord) -> String {
        run.actor.clone()
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.control.cancelled.load(Ordering::SeqCst)
    }

    pub(super) fn prior(&self, path: &str) -> Option<StepRecord> {
        self.prior
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .cloned()
    }

    /// Runs one definition level from its `start_at` to its end; its output is the output of
    /// the last state that had one.
    pub(super) fn level<'a>(
        &'a self,
        level: &'a Workflow,
        run_prefix: &'a str,
        def_prefix: &'a str,
        mut scope: Scope,
    ) -> futures::future::BoxFuture<'a, Result<Value, Failure>> {
        Box::pin(async move {
            let mut name = level.start_at.clone();
            let mut visits: HashMap<String, u32> = HashMap::new();
            let mut last = Value::Null;
            loop {
                if self.is_cancelled() {
                    return Err(failure(CANCELLED, "the run was cancelled"));
                }
                let visit = visits.entry(name.clone()).or_insert(0);
                *visit += 1;
                if *visit > MAX_VISITS {
                    return Err(failure(
                        kinds::FAILED,
                        format!("state {name} entered more than {MAX_VISITS} times"),
                    ));
                }
                let part = if *visit == 1 {
                    name.clone()
                } else {
                    format!("{name}#{visit}")
                };
                let path = join(run_prefix, &part);
                let def_path = join(def_prefix, &name);
                let Some(state) = level.states.get(&name) else {
                    return Err(failure(kinds::FAILED, format!("no state {name}")));
                };
                let flow = self
                    .state(state, &name, &path, &def_path, &mut scope, &last)
                    .await?;
                match flow {
                    Flow::Succeed(output) => return Ok(output),
                    Flow::Next { output, next } => {
                        if let Some(output) = output {
                            scope.outputs.insert(name.clone(), output.clone());
                            last = output;
                        }
                        match next {
                            Some(next) => name = next,
                            None => return Ok(last),
                        }
                    }
                }
            }
        })
    }

    async fn state(
        &self,
        state: &State,
        name: &str,
        path: &str,
        def_path: &str,
        scope: &mut Scope,
        last: &Value,
    ) -> Result<Flow, Failure> {
        let kind = state.kind();
        let prior = self.prior(path);
        let then = state.transition().and_then(|t| t.next.map(str::to_string));
        // Replay: a state that ended is not run (or recorded) again.
        match (&prior, state) {
            (Some(p), State::Task(_) | State::Parallel(_) | State::Map(_) | State::Approval(_))
                if p.status == StepStatus::Succeeded =>
            {
                return Ok(Flow::Next {
                    output: Some(p.output.clone().unwrap_or(Value::Null)),
                    next: then,
                });
            }
            (Some(p), State::Wait(_)) if p.status == StepStatus::Succeeded => {
                return Ok(Flow::Next {
                    output: None,
                    next: then,
                });
            }
            (Some(p), State::Choice(_))
                if p.status == StepStatus::Succeeded && p.next.is_some() =>
            {
                return Ok(Flow::Next {
                    output: None,
                    next: p.next.clone(),
                });
            }
            (Some(p), _) if p.status == StepStatus::Caught => {
                let error = p.error.clone().unwrap_or_else(|| failure("", ""));
                return Ok(Flow::Next {
                    output: Some(json!({"error": error.kind, "cause": error.message})),
                    next: p.next.clone(),
                });
            }
            _ => {}
        }
        match state {
            State::Choice(choice) => {
                let chosen = choice
                    .choices
                    .iter()
                    .find(|rule| eval(&rule.when, scope))
                    .map(|rule| rule.next.clone())
                    .or_else(|| choice.default.clone());
                let Some(next) = chosen else {
                    let e = failure(kinds::FAILED, "no choice matched and there is no default");
                    self.fail_step(path, name, kind, &e).await?;
                    return Err(e);
                };
                let n = next.clone();
                self.record(path, name, kind, format!("-> {next}"), move |r| {
                    r.status = StepStatus::Succeeded;
                    r.next = Some(n);
                    r.finished_ms = Some(now_ms());
                })
                .await?;
                Ok(Flow::Next {
                    output: None,
                    next: Some(next),
                })
            }
            State::Succeed(succeed) => {
                let output = match &succeed.output {
                    Some(p) => Path::parse(p).ok().and_then(|p| p.resolve(scope)),
                    None => Some(last.clone()),
                }
                .unwrap_or(Value::Null);
                self.record(path, name, kind, "succeeded".into(), |r| {
                    r.status = StepStatus::Succeeded;
                    r.finished_ms = Some(now_ms());
                })
                .await?;
                Ok(Flow::Succeed(output))
            }
            State::Fail(fail) => {
                let e = failure(&fail.error, fail.cause.clone());
                self.fail_step(path, name, kind, &e).await?;
                Err(e)
            }
            State::Wait(wait) => {
                self.wait(wait, name, path, prior.as_ref()).await?;
                Ok(Flow::Next {
                    output: None,
                    next: then,
                })
            }
            State::Approval(gate) => self.gate(gate, name, path, prior.as_ref(), scope).await,
            State::Task(_) | State::Parallel(_) | State::Map(_) => {
                self.with_retries(state, name, path, def_path, scope, then)
                    .await
            }
        }
    }

    pub(super) async fn fail_step(
        &self,
        path: &str,
        name: &str,
        kind: &str,
        e: &Failure,
    ) -> Result<(), Failure> {
        let error = e.clone();
        self.record(
            path,
            name,
            kind,
            format!("failed: {}: {}", e.kind, e.message),
            move |r| {
                r.status = if error.kind == CANCELLED {
                    StepStatus::Cancelled
                } else {
                    StepStatus::Failed
                };
                r.error = Some(error);
                r.finished_ms = Some(now_ms());
            },
        )
        .await
        .map(|_| ())
    }

    /// Sleeps `duration`, or less if the run is cancelled (then false).
    pub(super) async fn sleep(&self, duration: Duration) -> bool {
        let woken = self.control.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if self.is_cancelled() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return true,
                _ = &mut woken => {
                    if self.is_cancelled() {
                        return false;
                    }
                    woken.set(self.control.wake.notified());
                    woken.as_mut().enable();
                }
            }
        }
    }
}

/// The audit record of a workflow run taken up again after a restart.
fn adopted_entry(actor: &str) -> AuditEntry {
    AuditEntry {
        run_id: None,
        actor: actor.to_string(),
        action: "workflow.resumed".into(),
        target: None,
        credential: None,
        decision: Decision::Allowed,
        outcome: "running".into(),
        duration_us: 0,
        detail: Some(
            "taken up again after a server restart; steps that ended are not run again".into(),
        ),
    }
}
