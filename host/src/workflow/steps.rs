//! The executable states of the engine: a `task` (its step run: started with its mapped
//! inputs, awaited, its output parsed), a `parallel` (branches joined), a `map` (iterations
//! bounded by `max_concurrency`, failures counted against the tolerance), a `wait`, and the
//! `retry` / `catch` rules around them. Split from `engine.rs`, which walks the states.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use super::definition::*;
use super::engine::{CANCELLED, Exec, Failure, Flow, failure};
use super::expr::{Path, Scope};
use super::progress::*;
use crate::runs::{RunRecord, RunState, RunsError, now_ms};

impl Exec {
    /// A task, parallel or map state with its `retry` and `catch` rules.
    pub(super) async fn with_retries(
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
            .filter(|p| adopt && p.status == StepStatus::Running && p.run_attempt == self.attempt)
            .and_then(|p| p.attempts.last().cloned());
        let mut child_id = match in_flight {
            Some(attempt) => attempt.run_id,
            None => self.start_task(task, name, path, def_path, scope).await?,
        };
        let mut restarted = false;
        let child = loop {
            let ended = tokio::select! {
                ended = runs.wait_finished(&child_id) => ended,
                _ = self.cancelled() => {
                    let _ = self.dispatcher.cancel(&child_id, &self.actor).await;
                    runs.wait_finished(&child_id).await
                }
            };
            match ended {
                Ok(child) => break child,
                // Recorded as an attempt, but the server stopped before the step run was
                // created: it never ran, so it may start now.
                Err(RunsError::NotFound(_)) if !restarted => {
                    restarted = true;
                    let never = StepAttempt {
                        run_id: child_id.clone(),
                        state: RunState::Cancelled,
                        host_calls: 0,
                        started_ms: now_ms(),
                        finished_ms: Some(now_ms()),
                        error: Some("never created: the server stopped first".into()),
                    };
                    self.writer.finished(path, never);
                    child_id = self.start_task(task, name, path, def_path, scope).await?;
                }
                Err(e) => {
                    return Err(failure(kinds::FAILED, format!("step run {child_id}: {e}")));
                }
            }
        };
        // The step's next record (success, retry, catch or failure) writes the attempt's end.
        self.writer.finished(
            path,
            StepAttempt {
                run_id: child.id.clone(),
                state: child.state,
                host_calls: child.host_calls,
                started_ms: child.started_ms.unwrap_or(child.created_ms),
                finished_ms: child.finished_ms,
                error: child.error.clone(),
            },
        );
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
        // The attempt is recorded before its step run exists, so that a restart in between
        // finds it (and finds no run: it never started) rather than starting a second one.
        let id = uuid::Uuid::new_v4().to_string();
        let attempt = StepAttempt {
            run_id: id.clone(),
            state: RunState::Queued,
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
            format!("attempt {n}: step run {id}"),
            move |r| {
                r.status = StepStatus::Running;
                if r.attempts.len() < MAX_RECORDED_ATTEMPTS {
                    r.attempts.push(attempt);
                }
            },
        )
        .await?;
        let started = self
            .dispatcher
            .start_as(
                &process,
                inputs,
                &self.actor,
                &self.actor,
                Some((id.clone(), step)),
            )
            .await;
        if let Err(e) = started {
            let refused = StepAttempt {
                run_id: id,
                state: RunState::Denied,
                host_calls: 0,
                started_ms: now_ms(),
                finished_ms: Some(now_ms()),
                error: Some(e.to_string()),
            };
            self.writer.finished(path, refused);
            return Err(failure(kinds::REFUSED, e.to_string()));
        }
        Ok(id)
    }

    pub(super) async fn wait(
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

/// A finished step run's output (its result, parsed when it is JSON) or its failure.
pub(super) fn step_output(child: &RunRecord) -> Result<Value, Failure> {
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
