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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::definition::*;
use super::expr::{Path, Scope, eval};
use super::progress::*;
use crate::audit::{AuditEntry, Decision};
use crate::registry::manifest::Manifest;
use crate::runs::dispatch::{Dispatcher, StartError};
use crate::runs::{Process, RunRecord, RunState, RunStore, RunsError, now_ms};

/// Control of one workflow run driven here.
#[derive(Default)]
pub struct WorkflowControl {
    cancelled: AtomicBool,
    /// Woken on cancel and when a gate's approvals change.
    wake: Notify,
}

/// The workflow runs this server drives, by run id.
#[derive(Clone, Default)]
pub struct LiveWorkflows(Arc<Mutex<HashMap<String, Arc<WorkflowControl>>>>);

impl LiveWorkflows {
    fn get(&self, id: &str) -> Option<Arc<WorkflowControl>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn insert(&self, id: &str) -> Option<Arc<WorkflowControl>> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.contains_key(id) {
            return None;
        }
        let control = Arc::new(WorkflowControl::default());
        map.insert(id.to_string(), control.clone());
        Some(control)
    }

    fn remove(&self, id: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Wakes the engine of run `id` (its gate's approvals changed).
    pub fn wake(&self, id: &str) {
        if let Some(control) = self.get(id) {
            control.wake.notify_waiters();
        }
    }

    /// Whether this server drives workflow run `id`.
    pub fn is_live(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// Cancels workflow run `id` if this server drives it, and waits (bounded) for the engine to
    /// record its end; `None` when it is not driven here.
    pub(crate) async fn cancel(
        &self,
        runs: &RunStore,
        id: &str,
        actor: &str,
    ) -> Result<Option<RunRecord>, RunsError> {
        let Some(control) = self.get(id) else {
            return Ok(None);
        };
        tracing::info!(run = id, by = actor, "workflow run cancelled");
        control.cancelled.store(true, Ordering::SeqCst);
        control.wake.notify_waiters();
        let ended = tokio::time::timeout(Duration::from_secs(30), runs.wait_finished(id)).await;
        match ended {
            Ok(record) => record.map(Some),
            Err(_) => runs.get(id),
        }
    }
}

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
fn check_inputs(workflow: &Workflow, inputs: &BTreeMap<String, Value>) -> Result<(), StartError> {
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
        actor: String::new(),
        attempt: 0,
    };
    tokio::spawn(async move { exec.run(Arc::new(workflow)).await });
}

/// Resumes, at server start, every workflow run a previous process left running.
pub async fn resume_all(
    dispatcher: &Dispatcher,
    processes: &crate::runs::ProcessStore,
) -> Result<usize, RunsError> {
    let runs = dispatcher.runs().clone();
    let mut resumed = 0;
    for id in runs.running_workflows()? {
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
    dispatcher: Dispatcher,
    process: Arc<Process>,
    run_id: String,
    control: Arc<WorkflowControl>,
    /// The steps as recorded when the engine (re)started: what replay reuses.
    prior: Mutex<BTreeMap<String, StepRecord>>,
    actor: String,
    attempt: u32,
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

    fn prior(&self, path: &str) -> Option<StepRecord> {
        self.prior
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .cloned()
    }

    /// Records the step at `path` (creating it if new) after `edit` changed the stored
    /// record, audited `workflow.step.<status>` with `detail`. Returns the step as recorded.
    pub(super) async fn record(
        &self,
        path: &str,
        state: &str,
        kind: &str,
        detail: String,
        edit: impl FnOnce(&mut StepRecord),
    ) -> Result<StepRecord, Failure> {
        let attempt = self.attempt;
        let mut recorded = None;
        let result = self
            .dispatcher
            .runs()
            .update_workflow(&self.run_id, |progress| {
                if !progress.steps.contains_key(path) && progress.steps.len() >= MAX_STEP_RECORDS {
                    return Err(RunsError::Invalid {
                        field: "workflow",
                        why: format!("a run records at most {MAX_STEP_RECORDS} steps"),
                    });
                }
                let step = progress
                    .steps
                    .entry(path.to_string())
                    .or_insert_with(|| fresh(state, kind, attempt));
                edit(step);
                step.run_attempt = attempt;
                recorded = Some(step.clone());
                Ok(step_entry(&self.actor, path, step, &detail))
            })
            .await;
        if let Err(e) = result {
            return Err(failure(
                kinds::FAILED,
                format!("cannot record step {path}: {e}"),
            ));
        }
        let record = recorded.ok_or_else(|| failure(kinds::FAILED, "step not recorded"))?;
        self.prior
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_string(), record.clone());
        Ok(record)
    }

    /// Runs one definition level from its `start_at` to its end; its output is the output of
    /// the last state that had one.
    fn level<'a>(
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
        match (&prior, state) {
            (Some(p), State::Task(_) | State::Parallel(_) | State::Map(_))
                if p.status == StepStatus::Succeeded =>
            {
                return Ok(Flow::Next {
                    output: Some(p.output.clone().unwrap_or(Value::Null)),
                    next: then,
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

    /// A task, parallel or map state with its `retry` and `catch` rules.
    async fn with_retries(
        &self,
        state: &State,
        name: &str,
        path: &str,
        def_path: &str,
        scope: &Scope,
        then: Option<String>,
    ) -> Result<Flow, Failure> {
        let kind = state.kind();
        let mut tries: Vec<u32> = vec![1; state.retry().len()];
        let mut adopt = true;
        loop {
            let result = self
                .execute(state, name, path, def_path, scope, adopt)
                .await;
            adopt = false;
            let error = match result {
                Ok(output) => {
                    let out = output.clone();
                    self.record(path, name, kind, "succeeded".into(), move |r| {
                        r.status = StepStatus::Succeeded;
                        r.output = Some(out);
                        r.error = None;
                        r.finished_ms = Some(now_ms());
                    })
                    .await?;
                    return Ok(Flow::Next {
                        output: Some(output),
                        next: then,
                    });
                }
                Err(e) => e,
            };
            if error.kind == CANCELLED || self.is_cancelled() {
                self.fail_step(
                    path,
                    name,
                    kind,
                    &failure(CANCELLED, "the run was cancelled"),
                )
                .await?;
                return Err(failure(CANCELLED, "the run was cancelled"));
            }
            let retry = state.retry().iter().enumerate().find(|(i, rule)| {
                matches_kind(&rule.errors, &error.kind) && tries[*i] < rule.max_attempts
            });
            if let Some((i, rule)) = retry {
                let interval = rule.interval_seconds * rule.backoff_rate.powi(tries[i] as i32 - 1);
                let interval =
                    Duration::from_secs_f64(interval.min(MAX_RETRY_INTERVAL_SECONDS as f64));
                tries[i] += 1;
                let e = error.clone();
                self.record(
                    path,
                    name,
                    kind,
                    format!(
                        "retrying in {} ms after {}: {}",
                        interval.as_millis(),
                        e.kind,
                        e.message
                    ),
                    move |r| {
                        r.status = StepStatus::Running;
                        r.error = Some(e);
                    },
                )
                .await?;
                if !self.sleep(interval).await {
                    continue;
                }
                continue;
            }
            let catch = state
                .catch()
                .unwrap_or_default()
                .iter()
                .find(|rule| matches_kind(&rule.errors, &error.kind));
            if let Some(rule) = catch {
                let (e, next) = (error.clone(), rule.next.clone());
                self.record(
                    path,
                    name,
                    kind,
                    format!("caught {}: {} -> {}", e.kind, e.message, next),
                    move |r| {
                        r.status = StepStatus::Caught;
                        r.error = Some(e);
                        r.next = Some(next);
                        r.finished_ms = Some(now_ms());
                    },
                )
                .await?;
                return Ok(Flow::Next {
                    output: Some(json!({"error": error.kind, "cause": error.message})),
                    next: Some(rule.next.clone()),
                });
            }
            self.fail_step(path, name, kind, &error).await?;
            return Err(failure(
                &error.kind,
                format!("step {path}: {}", error.message),
            ));
        }
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

    async fn execute(
        &self,
        state: &State,
        name: &str,
        path: &str,
        def_path: &str,
        scope: &Scope,
        adopt: bool,
    ) -> Result<Value, Failure> {
        match state {
            State::Task(task) => self.task(task, name, path, def_path, scope, adopt).await,
            State::Parallel(parallel) => {
                self.record(
                    path,
                    name,
                    "parallel",
                    format!("{} branches", parallel.branches.len()),
                    |r| {
                        r.status = StepStatus::Running;
                    },
                )
                .await?;
                let branches = parallel.branches.iter().enumerate().map(|(i, branch)| {
                    let (rp, dp) = (format!("{path}/{i}"), format!("{def_path}/{i}"));
                    let scope = scope.branch(None);
                    async move { self.level(branch, &rp, &dp, scope).await }
                });
                let results = futures::future::join_all(branches).await;
                let mut outputs = Vec::new();
                for result in results {
                    outputs.push(result?);
                }
                Ok(Value::Array(outputs))
            }
            State::Map(map) => self.map(map, name, path, def_path, scope).await,
            _ => Err(failure(kinds::FAILED, "not an executable state")),
        }
    }

    async fn map(
        &self,
        map: &MapState,
        name: &str,
        path: &str,
        def_path: &str,
        scope: &Scope,
    ) -> Result<Value, Failure> {
        let items = Path::parse(&map.items)
            .ok()
            .and_then(|p| p.resolve(scope))
            .ok_or_else(|| failure(kinds::FAILED, format!("items {} has no value", map.items)))?;
        let Value::Array(items) = items else {
            return Err(failure(
                kinds::FAILED,
                format!("items {} is not a list", map.items),
            ));
        };
        if items.len() > MAX_MAP_ITEMS {
            return Err(failure(
                kinds::FAILED,
                format!("{} items, over the limit of {MAX_MAP_ITEMS}", items.len()),
            ));
        }
        let count = items.len();
        self.record(path, name, "map", format!("{count} items"), |r| {
            r.status = StepStatus::Running;
        })
        .await?;
        let def_inner = format!("{def_path}/*");
        let iterations = items.into_iter().enumerate().map(|(i, item)| {
            let rp = format!("{path}/{i}");
            let scope = scope.branch(Some(item));
            let def_inner = def_inner.as_str();
            async move { (i, self.level(&map.iterator, &rp, def_inner, scope).await) }
        });
        let concurrency = usize::try_from(map.max_concurrency.max(1)).unwrap_or(1);
        let mut results: Vec<(usize, Result<Value, Failure>)> = futures::stream::iter(iterations)
            .buffer_unordered(concurrency)
            .collect()
            .await;
        results.sort_by_key(|(i, _)| *i);
        let failed: Vec<&Failure> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().err())
            .collect();
        if let Some(cancel) = failed.iter().find(|e| e.kind == CANCELLED) {
            return Err((*cancel).clone());
        }
        let tolerated = match (map.tolerated_failures, map.tolerated_failure_percentage) {
            (Some(n), _) => usize::try_from(n).unwrap_or(usize::MAX),
            (None, Some(pct)) => ((count as f64) * pct / 100.0).floor() as usize,
            (None, None) => 0,
        };
        if failed.len() > tolerated {
            let first = failed
                .first()
                .map(|e| format!("{}: {}", e.kind, e.message))
                .unwrap_or_default();
            return Err(failure(
                kinds::BRANCH_FAILED,
                format!(
                    "{} of {count} iterations failed (tolerated: {tolerated}); first: {first}",
                    failed.len()
                ),
            ));
        }
        Ok(Value::Array(
            results
                .into_iter()
                .map(|(_, r)| r.unwrap_or(Value::Null))
                .collect(),
        ))
    }

    async fn task(
        &self,
        task: &TaskState,
        name: &str,
        path: &str,
        def_path: &str,
        scope: &Scope,
        adopt: bool,
    ) -> Result<Value, Failure> {
        let runs = self.dispatcher.runs().clone();
        // A step run in flight when the engine last stopped: adopt its end, never run twice.
        // (Only within one run attempt: a resume runs a failed or interrupted step again.)
        let in_flight = self
            .prior(path)
            .filter(|p| adopt && p.status == StepStatus::Running && p.run_attempt == self.attempt);
        let child_id = match in_flight.and_then(|p| p.attempts.last().cloned()) {
            Some(attempt) => attempt.run_id,
            None => self.start_task(task, name, path, def_path, scope).await?,
        };
        let child = tokio::select! {
            ended = runs.wait_finished(&child_id) => ended,
            _ = self.cancelled() => {
                let _ = self.dispatcher.cancel(&child_id, &self.actor).await;
                runs.wait_finished(&child_id).await
            }
        }
        .map_err(|e| failure(kinds::FAILED, format!("step run {child_id}: {e}")))?;
        let attempt = StepAttempt {
            run_id: child.id.clone(),
            state: child.state,
            host_calls: child.host_calls,
            started_ms: child.started_ms.unwrap_or(child.created_ms),
            finished_ms: child.finished_ms,
            error: child.error.clone(),
        };
        let summary = format!("step run {} {}", child.id, child.state);
        self.record(path, name, "task", summary, move |r| {
            if let Some(last) = r
                .attempts
                .iter_mut()
                .rev()
                .find(|a| a.run_id == attempt.run_id)
            {
                *last = attempt;
            } else if r.attempts.len() < MAX_RECORDED_ATTEMPTS {
                r.attempts.push(attempt);
            }
        })
        .await?;
        step_output(&child)
    }

    /// Waits for the run's cancellation.
    async fn cancelled(&self) {
        loop {
            let woken = self.control.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            woken.await;
        }
    }

    async fn start_task(
        &self,
        task: &TaskState,
        name: &str,
        path: &str,
        def_path: &str,
        scope: &Scope,
    ) -> Result<String, Failure> {
        let mut inputs = BTreeMap::new();
        for (key, value) in &task.inputs {
            match key.strip_suffix(".$") {
                Some(input) => {
                    let resolve = |v: &Value| {
                        let p = v.as_str().and_then(|t| Path::parse(t).ok());
                        p.and_then(|p| p.resolve(scope)).ok_or_else(|| {
                            failure(kinds::FAILED, format!("input {input}: {v} has no value"))
                        })
                    };
                    // A list of paths is the list of their values.
                    let resolved = match value {
                        Value::Array(paths) => {
                            Value::Array(paths.iter().map(resolve).collect::<Result<_, _>>()?)
                        }
                        one => resolve(one)?,
                    };
                    inputs.insert(input.to_string(), resolved);
                }
                None => {
                    inputs.insert(key.clone(), value.clone());
                }
            }
        }
        let process = super::step_process(&self.process, task);
        let step = super::StepRef {
            run: self.run_id.clone(),
            path: path.to_string(),
            definition_path: def_path.to_string(),
            definition: self.process.module_digest.clone(),
        };
        let started = self
            .dispatcher
            .start_as(&process, inputs, &self.actor, &self.actor, Some(step))
            .await;
        let child = match started {
            Ok(child) => child,
            Err(e) => return Err(failure(kinds::REFUSED, e.to_string())),
        };
        let attempt = StepAttempt {
            run_id: child.id.clone(),
            state: child.state,
            host_calls: 0,
            started_ms: now_ms(),
            finished_ms: None,
            error: None,
        };
        let n = self.prior(path).map_or(1, |p| p.attempts.len() + 1);
        self.record(
            path,
            name,
            "task",
            format!("attempt {n}: step run {}", child.id),
            move |r| {
                r.status = StepStatus::Running;
                if r.attempts.len() < MAX_RECORDED_ATTEMPTS {
                    r.attempts.push(attempt);
                }
            },
        )
        .await?;
        Ok(child.id)
    }

    async fn wait(
        &self,
        wait: &WaitState,
        name: &str,
        path: &str,
        prior: Option<&StepRecord>,
    ) -> Result<(), Failure> {
        let wake_ms = match prior.and_then(|p| p.wake_ms) {
            Some(at) => at,
            None => {
                let at = match (wait.seconds, wait.until_ms) {
                    (Some(s), _) => now_ms().saturating_add(s.saturating_mul(1000)),
                    (None, Some(until)) => until,
                    (None, None) => now_ms(),
                };
                self.record(
                    path,
                    name,
                    "wait",
                    format!("until {at} (Unix ms)"),
                    move |r| {
                        r.status = StepStatus::Waiting;
                        r.wake_ms = Some(at);
                    },
                )
                .await?;
                at
            }
        };
        let left = Duration::from_millis(wake_ms.saturating_sub(now_ms()));
        if !self.sleep(left).await {
            return Err(failure(CANCELLED, "the run was cancelled"));
        }
        self.record(path, name, "wait", "done".into(), |r| {
            r.status = StepStatus::Succeeded;
            r.finished_ms = Some(now_ms());
        })
        .await?;
        Ok(())
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

/// The audit record of a step transition.
fn step_entry(actor: &str, path: &str, step: &StepRecord, detail: &str) -> AuditEntry {
    let status = status_name(step.status);
    let decision = match (&step.status, &step.error) {
        (StepStatus::Failed, Some(e)) => Decision::Denied {
            reason: format!("{}: {}", e.kind, e.message),
            policy: None,
        },
        _ => Decision::Allowed,
    };
    AuditEntry {
        run_id: None,
        actor: actor.to_string(),
        action: format!("workflow.step.{status}"),
        target: None,
        credential: None,
        decision,
        outcome: status.into(),
        duration_us: 0,
        detail: Some(format!("step {path} ({}): {detail}", step.kind)),
    }
}

fn fresh(state: &str, kind: &str, attempt: u32) -> StepRecord {
    StepRecord {
        state: state.to_string(),
        kind: kind.to_string(),
        status: StepStatus::Running,
        run_attempt: attempt,
        started_ms: now_ms(),
        finished_ms: None,
        attempts: Vec::new(),
        output: None,
        error: None,
        next: None,
        wake_ms: None,
        gate: None,
    }
}

fn status_name(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Running => "running",
        StepStatus::Waiting => "waiting",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Caught => "caught",
        StepStatus::Failed => "failed",
        StepStatus::Cancelled => "cancelled",
    }
}

/// A finished step run's output (its result, parsed when it is JSON) or its failure.
fn step_output(child: &RunRecord) -> Result<Value, Failure> {
    let message = || child.error.clone().unwrap_or_default();
    match child.state {
        RunState::Succeeded => {
            let text = child.result.clone().unwrap_or_default();
            if text.len() > MAX_STEP_OUTPUT_BYTES {
                return Err(failure(
                    kinds::FAILED,
                    format!("output is over {MAX_STEP_OUTPUT_BYTES} bytes"),
                ));
            }
            Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
        }
        RunState::TimedOut => Err(failure(kinds::TIMED_OUT, message())),
        RunState::Interrupted => Err(failure(kinds::INTERRUPTED, message())),
        RunState::Lost => Err(failure(kinds::LOST, message())),
        RunState::Denied => Err(failure(kinds::REFUSED, message())),
        // Cancelled by someone other than the workflow (which checks its own cancellation),
        // or by a restart before it started.
        RunState::Cancelled => Err(failure(
            kinds::FAILED,
            format!("the step run was cancelled: {}", message()),
        )),
        _ => Err(failure(kinds::FAILED, message())),
    }
}
